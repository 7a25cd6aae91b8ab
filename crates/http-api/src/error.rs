//! API errors: every failure is JSON `{"error": CODE, "kind": KIND, "message": TEXT}`.
//!
//! Engine errors are classified once, by [`EngineError::kind`]; [`status`] is the one
//! table from that classification to HTTP statuses, so the HTTP API and the SIP
//! server (which has its own table) cannot disagree about what an error is. `error`
//! stays the API's documented, stable code: the kind's own code, or a more precise
//! one where the API has always promised one (`unknown_group` is a `not_found`,
//! `read_only` a `forbidden`...). `kind` is the kind's code. The few errors outside the
//! engine's classification (401, 405, 415, 429) have no `kind`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use presence_engine::{EngineError, ErrorKind};
use presence_model::PublishError;
use presence_model::contacts::ContactError;
use presence_model::membership::MembershipError;
use presence_model::publication::Conflict;
use serde_json::{Value, json};

/// The HTTP status of each kind of error: the only place the API decides one.
pub fn status(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Forbidden => StatusCode::FORBIDDEN,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::Duplicate => StatusCode::CONFLICT,
        ErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorKind::Invalid => StatusCode::BAD_REQUEST,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Ended => StatusCode::GONE,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The documented `error` code of an engine error. Only the code string is chosen
/// here; the status always comes from [`status`] of the error's kind.
fn code(e: &EngineError) -> &'static str {
    match e {
        EngineError::UnknownUser(_) => "unknown_user",
        EngineError::NotASubscriber(_) => "not_a_subscriber",
        EngineError::NotYourEndpoint(_) => "invalid_endpoint",
        EngineError::Disabled(_) => "disabled",
        EngineError::Store(_) => "store_unavailable",
        EngineError::Publish(p) => match p {
            PublishError::Empty
            | PublishError::Invalid { .. }
            | PublishError::EndpointRequired { .. } => "invalid_publication",
            PublishError::Duplicate { .. } => "duplicate_key",
            PublishError::InvalidXml { .. } => "invalid_xml",
            PublishError::ReadOnly { .. } => "read_only",
            PublishError::TooLarge(_) | PublishError::Conflict(_) => e.kind().code(),
        },
        EngineError::Membership(m) => match m {
            MembershipError::Fixed(_) => "fixed_container",
            MembershipError::Invalid { .. } => "invalid_membership",
            MembershipError::TooLarge(_) | MembershipError::Conflict(_) => e.kind().code(),
        },
        EngineError::Contacts(c) => match c {
            ContactError::Stale { .. } => "delta_conflict",
            ContactError::NoGroup(_) => "unknown_group",
            ContactError::NoContact(_) => "unknown_contact",
            ContactError::DefaultGroup => "default_group",
            ContactError::DuplicateGroup(_) => "duplicate_group",
            ContactError::Invalid(_) | ContactError::TooLarge(_) => e.kind().code(),
        },
        EngineError::TooLarge(_)
        | EngineError::Ended
        | EngineError::Invalid(_)
        | EngineError::Internal(_) => e.kind().code(),
    }
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    /// The engine's classification; `None` only for errors outside it.
    pub kind: Option<ErrorKind>,
    pub message: String,
    pub conflicts: Vec<Conflict>,
}

impl ApiError {
    /// An error of one of the engine's kinds; its status comes from [`status`].
    pub fn of_kind(kind: ErrorKind, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status: status(kind),
            code,
            kind: Some(kind),
            message: message.into(),
            conflicts: Vec::new(),
        }
    }

    /// An error outside the engine's classification (authentication, throttling,
    /// HTTP method and media type): no `kind`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            kind: None,
            message: message.into(),
            conflicts: Vec::new(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::of_kind(ErrorKind::Invalid, "bad_request", message)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid bearer token is required",
        )
    }

    pub fn internal(message: impl Into<String>) -> Self {
        let message = message.into();
        tracing::error!(error = %message, "internal error");
        Self::of_kind(ErrorKind::Internal, "internal", message)
    }

    /// The JSON body of this error.
    pub fn body(&self) -> Value {
        let mut body = json!({"error": self.code, "message": self.message});
        if let Some(kind) = self.kind {
            body["kind"] = json!(kind.code());
        }
        if !self.conflicts.is_empty() {
            body["conflicts"] = self
                .conflicts
                .iter()
                .map(|c| json!({"index": c.index, "version": c.version, "current_version": c.current_version}))
                .collect();
        }
        body
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}

impl From<accounts::AccountError> for ApiError {
    fn from(e: accounts::AccountError) -> Self {
        match e {
            accounts::AccountError::Store(err) => EngineError::Store(err).into(),
            accounts::AccountError::Busy => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "busy", e.to_string())
            }
            accounts::AccountError::TooManyFailures => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_failures",
                e.to_string(),
            ),
            other => ApiError::internal(other.to_string()),
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        let kind = e.kind();
        match e {
            EngineError::Publish(PublishError::Conflict(conflicts))
            | EngineError::Membership(MembershipError::Conflict(conflicts)) => ApiError {
                conflicts,
                ..ApiError::of_kind(
                    kind,
                    kind.code(),
                    "a version is out of date; nothing was applied",
                )
            },
            EngineError::Store(err) => {
                tracing::error!(error = %err, "store failure");
                ApiError::of_kind(
                    kind,
                    "store_unavailable",
                    "the store is not available; nothing was changed",
                )
            }
            EngineError::Internal(msg) => ApiError::internal(msg),
            e => ApiError::of_kind(kind, code(&e), e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use presence_model::UserUri;
    use presence_model::xml::XmlError;
    use presence_store::StoreError;

    fn uri() -> UserUri {
        UserUri::parse("bob@example.com").unwrap()
    }

    #[test]
    fn the_status_table() {
        let table: Vec<(ErrorKind, u16)> = ErrorKind::ALL
            .iter()
            .map(|&k| (k, status(k).as_u16()))
            .collect();
        assert_eq!(
            table,
            [
                (ErrorKind::NotFound, 404),
                (ErrorKind::Forbidden, 403),
                (ErrorKind::Conflict, 409),
                (ErrorKind::Duplicate, 409),
                (ErrorKind::TooLarge, 413),
                (ErrorKind::Invalid, 400),
                (ErrorKind::Unavailable, 503),
                (ErrorKind::Ended, 410),
                (ErrorKind::Internal, 500),
            ]
        );
    }

    #[test]
    fn engine_errors_keep_their_documented_codes() {
        let conflict = vec![Conflict {
            index: 2,
            version: 0,
            current_version: 1,
        }];
        let cases: Vec<(EngineError, u16, &str)> = vec![
            (EngineError::UnknownUser(uri()), 404, "unknown_user"),
            (
                presence_model::document::NotASubscriber(uri()).into(),
                404,
                "not_a_subscriber",
            ),
            (
                ContactError::NoContact(uri()).into(),
                404,
                "unknown_contact",
            ),
            (ContactError::NoGroup(9).into(), 404, "unknown_group"),
            (EngineError::NotYourEndpoint(3), 403, "invalid_endpoint"),
            (EngineError::Disabled(uri()), 403, "disabled"),
            (
                PublishError::ReadOnly {
                    index: 1,
                    category: "state".into(),
                    instance: 1,
                    container: 200,
                }
                .into(),
                403,
                "read_only",
            ),
            (MembershipError::Fixed(2).into(), 403, "fixed_container"),
            (ContactError::DefaultGroup.into(), 403, "default_group"),
            (
                PublishError::Conflict(conflict.clone()).into(),
                409,
                "version_conflict",
            ),
            (
                MembershipError::Conflict(conflict.clone()).into(),
                409,
                "version_conflict",
            ),
            (
                ContactError::Stale {
                    sent: 2,
                    current: 3,
                }
                .into(),
                409,
                "delta_conflict",
            ),
            (
                ContactError::DuplicateGroup("Team".into()).into(),
                409,
                "duplicate_group",
            ),
            (PublishError::TooLarge("x".into()).into(), 413, "too_large"),
            (
                MembershipError::TooLarge("x".into()).into(),
                413,
                "too_large",
            ),
            (ContactError::TooLarge("x".into()).into(), 413, "too_large"),
            (EngineError::TooLarge("x".into()), 413, "too_large"),
            (PublishError::Empty.into(), 400, "invalid_publication"),
            (
                PublishError::Invalid {
                    index: 1,
                    reason: "x".into(),
                }
                .into(),
                400,
                "invalid_publication",
            ),
            (
                PublishError::EndpointRequired { index: 1 }.into(),
                400,
                "invalid_publication",
            ),
            (
                PublishError::Duplicate { index: 2, first: 1 }.into(),
                400,
                "duplicate_key",
            ),
            (
                PublishError::InvalidXml {
                    index: 1,
                    source: XmlError::Dtd,
                }
                .into(),
                400,
                "invalid_xml",
            ),
            (
                MembershipError::Invalid {
                    index: 1,
                    reason: "x".into(),
                }
                .into(),
                400,
                "invalid_membership",
            ),
            (ContactError::Invalid("x".into()).into(), 400, "bad_request"),
            (EngineError::Invalid("x".into()), 400, "bad_request"),
            (
                StoreError::Corrupt {
                    key: "bob@example.com".into(),
                    reason: "x".into(),
                }
                .into(),
                503,
                "store_unavailable",
            ),
            (EngineError::Ended, 410, "ended"),
            (EngineError::Internal("panicked".into()), 500, "internal"),
        ];
        for (err, status, code) in cases {
            let kind = err.kind();
            let debug = format!("{err:?}");
            let api = ApiError::from(err);
            assert_eq!((api.status.as_u16(), api.code), (status, code), "{debug}");
            assert_eq!(api.kind, Some(kind), "{debug}");
            let body = api.body();
            assert_eq!(body["error"], code, "{debug}");
            assert_eq!(body["kind"], kind.code(), "{debug}");
        }
    }

    #[test]
    fn version_conflicts_keep_their_list() {
        let c = Conflict {
            index: 2,
            version: 0,
            current_version: 1,
        };
        let body = ApiError::from(EngineError::Publish(PublishError::Conflict(vec![c]))).body();
        assert_eq!(
            body,
            json!({
                "error": "version_conflict",
                "kind": "version_conflict",
                "message": "a version is out of date; nothing was applied",
                "conflicts": [{"index": 2, "version": 0, "current_version": 1}],
            })
        );
    }

    #[test]
    fn errors_outside_the_classification_have_no_kind() {
        let body = ApiError::unauthorized().body();
        assert_eq!(body["error"], "unauthorized");
        assert!(body.get("kind").is_none(), "{body}");
        let body = ApiError::bad_request("x").body();
        assert_eq!(
            (&body["error"], &body["kind"]),
            (&json!("bad_request"), &json!("bad_request"))
        );
    }
}
