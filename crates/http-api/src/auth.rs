//! Bearer tokens for the HTTP and WebSocket API. Tokens are issued and checked by
//! [`accounts::Accounts`] (stored as hashes, so they survive restarts); this module
//! reads them from requests.

use crate::AppState;
use crate::error::ApiError;
use crate::routes::blocking;
use accounts::AccountInfo;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;

/// The bearer token of a request, if it has one (the scheme is case-insensitive).
pub fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The account behind a token, if the token is live and the account still exists.
pub async fn check(state: &AppState, token: &str) -> Result<Option<AccountInfo>, ApiError> {
    let (accounts, token) = (state.accounts.clone(), token.to_string());
    blocking(move || Ok(accounts.check_token(&token)?)).await
}

/// An authenticated caller.
pub struct AuthUser {
    pub token: String,
    pub info: AccountInfo,
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(parts).ok_or_else(ApiError::unauthorized)?;
        let info = check(state, token)
            .await?
            .ok_or_else(ApiError::unauthorized)?;
        Ok(AuthUser {
            token: token.to_string(),
            info,
        })
    }
}
