//! Bearer tokens for the HTTP and WebSocket API.
//!
//! A token is 32 random bytes (base64url), valid for a configured time. Tokens live
//! in memory only: a restart signs every HTTP client out, which is the safe default.

use crate::AppState;
use crate::error::ApiError;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use parking_lot::Mutex;
use presence_model::{Timestamp, UserUri};
use rand::RngCore;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Most live tokens; past it the oldest are dropped.
pub const MAX_TOKENS: usize = 100_000;

#[derive(Debug, Clone)]
pub struct TokenInfo {
    pub user: UserUri,
    pub display_name: String,
    expires: Instant,
}

pub struct Tokens {
    ttl: Duration,
    map: Mutex<HashMap<String, TokenInfo>>,
}

impl Tokens {
    pub fn new(ttl: Duration) -> Self {
        Tokens {
            ttl,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// Issues a token; returns it with its expiry as a wall-clock timestamp.
    pub fn issue(&self, user: UserUri, display_name: String) -> (String, Timestamp) {
        let mut raw = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut raw);
        let token = URL_SAFE_NO_PAD.encode(raw);
        let now = Instant::now();
        let mut map = self.map.lock();
        if map.len() >= MAX_TOKENS {
            map.retain(|_, t| t.expires > now);
            if map.len() >= MAX_TOKENS {
                let oldest = map
                    .iter()
                    .min_by_key(|(_, t)| t.expires)
                    .map(|(k, _)| k.clone());
                if let Some(k) = oldest {
                    map.remove(&k);
                }
            }
        }
        map.insert(
            token.clone(),
            TokenInfo {
                user,
                display_name,
                expires: now + self.ttl,
            },
        );
        let expires_at = chrono::Utc::now().timestamp_millis() + self.ttl.as_millis() as i64;
        (token, Timestamp::from_millis(expires_at))
    }

    pub fn check(&self, token: &str) -> Option<TokenInfo> {
        let mut map = self.map.lock();
        match map.get(token) {
            Some(t) if t.expires > Instant::now() => Some(t.clone()),
            Some(_) => {
                map.remove(token);
                None
            }
            None => None,
        }
    }

    pub fn revoke(&self, token: &str) -> bool {
        self.map.lock().remove(token).is_some()
    }

    pub fn live(&self) -> usize {
        self.map.lock().len()
    }
}

/// The bearer token of a request, if it has one.
pub fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Whether the token's user still has an account (it may have been removed since
/// sign-in, by another process).
pub async fn account_exists(state: &AppState, info: &TokenInfo) -> Result<bool, ApiError> {
    let (accounts, user) = (state.accounts.clone(), info.user.clone());
    crate::routes::blocking(move || Ok(accounts.get(&user)?.is_some())).await
}

/// An authenticated caller.
pub struct AuthUser {
    pub token: String,
    pub info: TokenInfo,
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(parts).ok_or_else(ApiError::unauthorized)?;
        let info = state
            .tokens
            .check(token)
            .ok_or_else(ApiError::unauthorized)?;
        // A user removed since sign-in loses access at once.
        if !account_exists(state, &info).await? {
            state.tokens.revoke(token);
            return Err(ApiError::unauthorized());
        }
        Ok(AuthUser {
            token: token.to_string(),
            info,
        })
    }
}
