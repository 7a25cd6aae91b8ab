//! `POST /v1/sessions` (sign in) and `DELETE /v1/sessions` (sign out).

use super::{ApiJson, blocking};
use crate::AppState;
use crate::auth::AuthUser;
use crate::error::ApiError;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    user: String,
    password: String,
}

pub async fn create(
    State(state): State<AppState>,
    ApiJson(creds): ApiJson<Credentials>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let accounts = state.accounts.clone();
    let verified = blocking(move || Ok(accounts.verify(&creds.user, &creds.password)?)).await?;
    let Some(account) = verified else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "bad_credentials",
            "unknown user or wrong password",
        ));
    };
    let (accounts, ttl) = (state.accounts.clone(), state.token_ttl);
    let (token, expires_at) =
        blocking(move || Ok(accounts.issue_token(&account.uri, ttl)?)).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"token": token, "expires_at": expires_at.to_rfc3339()})),
    ))
}

pub async fn delete(State(state): State<AppState>, auth: AuthUser) -> Result<StatusCode, ApiError> {
    let accounts = state.accounts.clone();
    blocking(move || Ok(accounts.revoke_token(&auth.token)?)).await?;
    Ok(StatusCode::NO_CONTENT)
}
