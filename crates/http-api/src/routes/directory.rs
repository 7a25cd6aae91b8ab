//! `GET /v1/directory?q=TEXT&limit=N`: find colleagues in the directory by name,
//! e-mail, title or department. Each hit carries what the caller may see of the
//! user: their availability, and their title and department only when the caller
//! may see the directory details card (container access, decided by the engine).

use super::ApiQuery;
use crate::AppState;
use crate::auth::AuthUser;
use crate::error::ApiError;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::RETRY_AFTER;
use axum::response::{IntoResponse, Response};
use directory::search::{MAX_RESULTS, QueryError};
use presence_engine::ErrorKind;
use presence_model::summary::availability_class;
use serde::Deserialize;
use serde_json::{Value, json};

/// Results when the query does not say how many.
pub const DEFAULT_LIMIT: usize = 20;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    q: Option<String>,
    limit: Option<usize>,
}

pub async fn search(
    State(state): State<AppState>,
    auth: AuthUser,
    ApiQuery(params): ApiQuery<Params>,
) -> Response {
    let limit = params.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_RESULTS).contains(&limit) {
        return ApiError::bad_request(format!("limit is 1 to {MAX_RESULTS}")).into_response();
    }
    let viewer = &auth.info.uri;
    if let Err(t) = state.directory.admit(viewer) {
        let err = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "throttled", t.to_string());
        let secs = t.retry_after.as_secs().max(1).to_string();
        return (err.status, [(RETRY_AFTER, secs)], Json(err.body())).into_response();
    }
    let found = match state
        .directory
        .search(params.q.as_deref().unwrap_or(""), limit)
    {
        Ok(found) => found,
        Err(e @ QueryError::Empty) => return ApiError::bad_request(e.to_string()).into_response(),
        Err(e @ QueryError::TooLong) => {
            return ApiError::of_kind(ErrorKind::TooLarge, "too_large", e.to_string())
                .into_response();
        }
    };
    let results: Vec<Value> = found
        .entries
        .iter()
        .map(|e| {
            // A user the engine does not know (yet) shows as the directory lists them.
            let view = state.engine.directory_view(viewer, &e.uri).ok();
            let details = view.is_some_and(|v| v.details);
            let shown = |s: &str| (details && !s.is_empty()).then(|| s.to_string());
            let availability = view.and_then(|v| v.availability);
            json!({
                "uri": e.uri.as_str(),
                "display_name": e.display_name,
                "title": shown(&e.title),
                "department": shown(&e.department),
                "availability": availability,
                "availability_class": availability.map(availability_class),
            })
        })
        .collect();
    Json(json!({"results": results, "more": found.more})).into_response()
}
