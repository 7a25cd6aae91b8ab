//! API errors: every failure is JSON `{"error": CODE, "message": TEXT}` with the
//! status the contract names.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use presence_engine::EngineError;
use presence_model::PublishError;
use presence_model::contacts::ContactError;
use presence_model::membership::MembershipError;
use presence_model::publication::Conflict;
use serde_json::{Value, json};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub conflicts: Vec<Conflict>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            conflicts: Vec::new(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid bearer token is required",
        )
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    fn conflict(conflicts: Vec<Conflict>) -> Self {
        ApiError {
            conflicts,
            ..Self::new(
                StatusCode::CONFLICT,
                "version_conflict",
                "a version is out of date; nothing was applied",
            )
        }
    }

    /// The JSON body of this error.
    pub fn body(&self) -> Value {
        let mut body = json!({"error": self.code, "message": self.message});
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

impl From<PublishError> for ApiError {
    fn from(e: PublishError) -> Self {
        let msg = e.to_string();
        match e {
            PublishError::Conflict(c) => ApiError::conflict(c),
            PublishError::Duplicate { .. } => {
                ApiError::new(StatusCode::BAD_REQUEST, "duplicate_key", msg)
            }
            PublishError::Invalid { .. }
            | PublishError::EndpointRequired { .. }
            | PublishError::Empty => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_publication", msg)
            }
            PublishError::InvalidXml { .. } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_xml", msg)
            }
            PublishError::ReadOnly { .. } => ApiError::new(StatusCode::FORBIDDEN, "read_only", msg),
            PublishError::TooLarge(_) => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", msg)
            }
        }
    }
}

impl From<MembershipError> for ApiError {
    fn from(e: MembershipError) -> Self {
        let msg = e.to_string();
        match e {
            MembershipError::Conflict(c) => ApiError::conflict(c),
            MembershipError::Fixed(_) => {
                ApiError::new(StatusCode::FORBIDDEN, "fixed_container", msg)
            }
            MembershipError::Invalid { .. } => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_membership", msg)
            }
            MembershipError::TooLarge(_) => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", msg)
            }
        }
    }
}

impl From<ContactError> for ApiError {
    fn from(e: ContactError) -> Self {
        let msg = e.to_string();
        match e {
            ContactError::Stale { .. } => {
                ApiError::new(StatusCode::CONFLICT, "delta_conflict", msg)
            }
            ContactError::DuplicateGroup(_) => {
                ApiError::new(StatusCode::CONFLICT, "duplicate_group", msg)
            }
            ContactError::NoGroup(_) => ApiError::new(StatusCode::NOT_FOUND, "unknown_group", msg),
            ContactError::NoContact(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "unknown_contact", msg)
            }
            ContactError::DefaultGroup => {
                ApiError::new(StatusCode::FORBIDDEN, "default_group", msg)
            }
            ContactError::Invalid(_) => ApiError::bad_request(msg),
            ContactError::TooLarge(_) => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", msg)
            }
        }
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
        let msg = e.to_string();
        match e {
            EngineError::Publish(p) => p.into(),
            EngineError::Membership(m) => m.into(),
            EngineError::UnknownUser(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "unknown_user", msg)
            }
            EngineError::NotASubscriber(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "not_a_subscriber", msg)
            }
            EngineError::NotYourEndpoint(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_endpoint", msg)
            }
            EngineError::TooLarge(_) => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", msg)
            }
            EngineError::Invalid(_) => ApiError::bad_request(msg),
            EngineError::Contacts(c) => c.into(),
            EngineError::Disabled(_) => ApiError::new(StatusCode::FORBIDDEN, "disabled", msg),
            EngineError::Ended => ApiError::new(StatusCode::GONE, "ended", msg),
            EngineError::Store(err) => {
                tracing::error!(error = %err, "store failure");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "the store is not available; nothing was changed",
                )
            }
        }
    }
}
