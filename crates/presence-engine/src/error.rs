//! The engine's errors and their one classification for every front end.

use presence_model::contacts::ContactError;
use presence_model::document::NotASubscriber;
use presence_model::membership::MembershipError;
use presence_model::{PublishError, UserUri};
use presence_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("unknown user {0}")]
    UnknownUser(UserUri),
    #[error("endpoint {0} is not a live endpoint of this user")]
    NotYourEndpoint(u64),
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error(transparent)]
    Membership(#[from] MembershipError),
    #[error(transparent)]
    NotASubscriber(#[from] NotASubscriber),
    #[error(transparent)]
    Contacts(#[from] ContactError),
    #[error("{0}")]
    TooLarge(String),
    #[error("the endpoint has signed out")]
    Ended,
    #[error("{0} is disabled in the directory")]
    Disabled(UserUri),
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("store failure: {0}")]
    Store(#[from] StoreError),
    /// A bug: a broken invariant, or a task that panicked or was cancelled while it
    /// ran engine work. Whether the work was applied is unknown.
    #[error("internal error: {0}")]
    Internal(String),
}

/// What went wrong, independent of the front end: the one classification of
/// [`EngineError`] that the HTTP API and the SIP server each map to their own status
/// codes with a single table (docs/api.md, "Errors"; docs/sip.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Something named does not exist: an unknown user, someone who is not a
    /// subscriber, no such contact, no such contact group.
    NotFound,
    /// The caller may not do this: a read-only (server-written) key, a user disabled
    /// in the directory, the membership of a fixed container, an endpoint that is not
    /// a live endpoint of the caller, renaming or deleting the default contact group.
    Forbidden,
    /// The request was made against an out-of-date version: publication or container
    /// version conflicts, a stale contact-list `deltaNum`. Nothing was applied.
    Conflict,
    /// What the request creates exists already (a contact group of that name).
    Duplicate,
    /// Over a limit: publication batch, value or per-user sizes, membership lists,
    /// the contact list, subscription sizes and counts.
    TooLarge,
    /// Malformed or invalid input (including a key repeated within one batch and
    /// values that are not acceptable XML).
    Invalid,
    /// The store failed; nothing was acknowledged or applied.
    Unavailable,
    /// The session or endpoint has ended.
    Ended,
    /// A bug in the server.
    Internal,
}

impl ErrorKind {
    /// Every kind, in declaration order.
    pub const ALL: [ErrorKind; 9] = [
        ErrorKind::NotFound,
        ErrorKind::Forbidden,
        ErrorKind::Conflict,
        ErrorKind::Duplicate,
        ErrorKind::TooLarge,
        ErrorKind::Invalid,
        ErrorKind::Unavailable,
        ErrorKind::Ended,
        ErrorKind::Internal,
    ];

    /// The stable snake_case code of this kind.
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not_found",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::Conflict => "version_conflict",
            ErrorKind::Duplicate => "already_exists",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::Invalid => "bad_request",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Ended => "ended",
            ErrorKind::Internal => "internal",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

impl EngineError {
    /// The kind of this error, looking inside the model's errors it wraps. The
    /// matches are exhaustive on purpose: a new variant anywhere must be classified.
    pub fn kind(&self) -> ErrorKind {
        match self {
            EngineError::UnknownUser(_) | EngineError::NotASubscriber(_) => ErrorKind::NotFound,
            EngineError::NotYourEndpoint(_) | EngineError::Disabled(_) => ErrorKind::Forbidden,
            EngineError::Publish(e) => match e {
                PublishError::Empty
                | PublishError::Invalid { .. }
                | PublishError::Duplicate { .. }
                | PublishError::InvalidXml { .. }
                | PublishError::EndpointRequired { .. } => ErrorKind::Invalid,
                PublishError::ReadOnly { .. } => ErrorKind::Forbidden,
                PublishError::TooLarge(_) => ErrorKind::TooLarge,
                PublishError::Conflict(_) => ErrorKind::Conflict,
            },
            EngineError::Membership(e) => match e {
                MembershipError::Fixed(_) => ErrorKind::Forbidden,
                MembershipError::Invalid { .. } => ErrorKind::Invalid,
                MembershipError::TooLarge(_) => ErrorKind::TooLarge,
                MembershipError::Conflict(_) => ErrorKind::Conflict,
            },
            EngineError::Contacts(e) => match e {
                ContactError::Stale { .. } => ErrorKind::Conflict,
                ContactError::NoGroup(_) | ContactError::NoContact(_) => ErrorKind::NotFound,
                ContactError::DefaultGroup => ErrorKind::Forbidden,
                ContactError::DuplicateGroup(_) => ErrorKind::Duplicate,
                ContactError::Invalid(_) => ErrorKind::Invalid,
                ContactError::TooLarge(_) => ErrorKind::TooLarge,
            },
            EngineError::TooLarge(_) => ErrorKind::TooLarge,
            EngineError::Ended => ErrorKind::Ended,
            EngineError::Invalid(_) => ErrorKind::Invalid,
            EngineError::Store(_) => ErrorKind::Unavailable,
            EngineError::Internal(_) => ErrorKind::Internal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use presence_model::publication::Conflict;
    use presence_model::xml::XmlError;

    fn uri() -> UserUri {
        UserUri::parse("bob@example.com").unwrap()
    }

    fn conflicts() -> Vec<Conflict> {
        vec![Conflict {
            index: 1,
            version: 0,
            current_version: 1,
        }]
    }

    #[test]
    fn every_error_has_its_kind() {
        use ErrorKind::*;
        let cases: Vec<(EngineError, ErrorKind)> = vec![
            (EngineError::UnknownUser(uri()), NotFound),
            (EngineError::NotYourEndpoint(7), Forbidden),
            (PublishError::Empty.into(), Invalid),
            (
                PublishError::Invalid {
                    index: 1,
                    reason: "bad category".into(),
                }
                .into(),
                Invalid,
            ),
            (
                PublishError::Duplicate { index: 2, first: 1 }.into(),
                Invalid,
            ),
            (
                PublishError::InvalidXml {
                    index: 1,
                    source: XmlError::Dtd,
                }
                .into(),
                Invalid,
            ),
            (
                PublishError::ReadOnly {
                    index: 1,
                    category: "state".into(),
                    instance: 1,
                    container: 200,
                }
                .into(),
                Forbidden,
            ),
            (PublishError::EndpointRequired { index: 1 }.into(), Invalid),
            (PublishError::TooLarge("too many".into()).into(), TooLarge),
            (PublishError::Conflict(conflicts()).into(), Conflict),
            (MembershipError::Fixed(2).into(), Forbidden),
            (
                MembershipError::Invalid {
                    index: 1,
                    reason: "twice".into(),
                }
                .into(),
                Invalid,
            ),
            (MembershipError::TooLarge("members".into()).into(), TooLarge),
            (MembershipError::Conflict(conflicts()).into(), Conflict),
            (NotASubscriber(uri()).into(), NotFound),
            (
                ContactError::Stale {
                    sent: 2,
                    current: 3,
                }
                .into(),
                Conflict,
            ),
            (ContactError::NoGroup(9).into(), NotFound),
            (ContactError::NoContact(uri()).into(), NotFound),
            (ContactError::DefaultGroup.into(), Forbidden),
            (
                ContactError::DuplicateGroup("Team".into()).into(),
                Duplicate,
            ),
            (ContactError::Invalid("name".into()).into(), Invalid),
            (ContactError::TooLarge("contacts".into()).into(), TooLarge),
            (EngineError::TooLarge("targets".into()), TooLarge),
            (EngineError::Ended, Ended),
            (EngineError::Disabled(uri()), Forbidden),
            (EngineError::Invalid("category".into()), Invalid),
            (
                StoreError::Corrupt {
                    key: "bob@example.com".into(),
                    reason: "x".into(),
                }
                .into(),
                Unavailable,
            ),
            (StoreError::Conflict { current: 3 }.into(), Unavailable),
            (
                EngineError::Store(StoreError::DataDir {
                    path: "/nowhere".into(),
                    source: std::io::Error::other("gone"),
                }),
                Unavailable,
            ),
            (EngineError::Internal("worker panicked".into()), Internal),
        ];
        for (err, kind) in &cases {
            assert_eq!(err.kind(), *kind, "{err:?}");
        }
        // Every kind is reachable from some error.
        for kind in ErrorKind::ALL {
            assert!(cases.iter().any(|(_, k)| *k == kind), "{kind:?}");
        }
    }

    #[test]
    fn codes_are_stable_and_distinct() {
        let codes: Vec<&str> = ErrorKind::ALL.iter().map(|k| k.code()).collect();
        assert_eq!(
            codes,
            [
                "not_found",
                "forbidden",
                "version_conflict",
                "already_exists",
                "too_large",
                "bad_request",
                "unavailable",
                "ended",
                "internal",
            ]
        );
        let unique: std::collections::HashSet<_> = codes.iter().collect();
        assert_eq!(unique.len(), codes.len());
        assert_eq!(ErrorKind::Duplicate.to_string(), "already_exists");
    }
}
