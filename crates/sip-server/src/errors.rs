//! The SIP front end's one table from the engine's error kinds to SIP answers. The
//! HTTP API maps the same kinds in its own table (docs/api.md); docs/sip.md lists
//! both side by side.

use crate::bodies;
use crate::reply::{diagnostics, response};
use presence_engine::{EngineError, ErrorKind};
use presence_model::PublishError;
use presence_model::contacts::ContactError;
use presence_model::membership::MembershipError;
use sip_proto::Message;

/// The SIP status and reason phrase for each kind of engine error.
pub(crate) fn status(kind: ErrorKind) -> (u16, &'static str) {
    match kind {
        ErrorKind::NotFound => (404, "Not Found"),
        ErrorKind::Forbidden => (403, "Forbidden"),
        ErrorKind::Conflict | ErrorKind::Duplicate => (409, "Conflict"),
        ErrorKind::TooLarge => (413, "Request Entity Too Large"),
        ErrorKind::Invalid => (400, "Bad Request"),
        ErrorKind::Unavailable => (503, "Service Unavailable"),
        ErrorKind::Ended => (481, "Call/Transaction Does Not Exist"),
        ErrorKind::Internal => (500, "Server Internal Error"),
    }
}

/// A refused request: the status, the reason shown to the user, and for version
/// conflicts MS-PRES's WrongDelta fault, from which the client recovers (it
/// republishes with the current versions, or re-reads its contact list).
#[derive(Debug)]
pub(crate) struct Refusal {
    pub code: u16,
    pub reason: &'static str,
    pub why: String,
    pub fault: Option<String>,
}

impl Refusal {
    /// A body the client sent that cannot be used.
    pub fn bad_body(why: impl Into<String>) -> Refusal {
        Refusal {
            code: 400,
            reason: "Bad Request",
            why: why.into(),
            fault: None,
        }
    }

    pub fn into_response(self, req: &Message) -> Message {
        let mut r = diagnostics(response(req, self.code, self.reason, None), &self.why);
        if let Some(f) = self.fault {
            r.push_header("Content-Type", bodies::FAULT_TYPE);
            r.body = f.into_bytes();
        }
        r
    }
}

impl From<EngineError> for Refusal {
    fn from(e: EngineError) -> Refusal {
        let (code, reason) = status(e.kind());
        let fault = match &e {
            EngineError::Publish(PublishError::Conflict(c))
            | EngineError::Membership(MembershipError::Conflict(c)) => {
                Some(bodies::wrong_delta_fault(c))
            }
            EngineError::Contacts(ContactError::Stale { current, .. }) => {
                Some(bodies::stale_contacts_fault(*current))
            }
            _ => None,
        };
        Refusal {
            code,
            reason,
            why: e.to_string(),
            fault,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use presence_model::UserUri;

    #[test]
    fn every_kind_maps_to_an_error_status() {
        for kind in ErrorKind::ALL {
            let (code, reason) = status(kind);
            assert!((400..600).contains(&code), "{kind}: {code}");
            assert!(!reason.is_empty());
        }
        // The drifts this table replaces: limits are 413, missing things 404, a
        // store failure 503 and a crashed task 500, whatever the request.
        assert_eq!(status(ErrorKind::TooLarge).0, 413);
        assert_eq!(status(ErrorKind::NotFound).0, 404);
        assert_eq!(status(ErrorKind::Unavailable).0, 503);
        assert_eq!(status(ErrorKind::Internal).0, 500);
    }

    #[test]
    fn stale_contact_lists_get_a_fault_with_the_current_delta() {
        let r = Refusal::from(EngineError::Contacts(ContactError::Stale {
            sent: 3,
            current: 5,
        }));
        assert_eq!(r.code, 409);
        let fault = r.fault.unwrap();
        assert!(fault.contains("Client.BadCall.WrongDelta"), "{fault}");
        assert!(fault.contains("deltaNum=\"5\""), "{fault}");
        let r = Refusal::from(EngineError::Contacts(ContactError::NoGroup(9)));
        assert_eq!((r.code, r.fault.is_none()), (404, true));
        let r = Refusal::from(EngineError::UnknownUser(
            UserUri::parse("x@example.com").unwrap(),
        ));
        assert_eq!(r.code, 404);
    }
}
