//! `POST /v1/sessions` (sign in) and `DELETE /v1/sessions` (sign out).

use super::{ApiJson, blocking};
use crate::auth::AuthUser;
use crate::error::ApiError;
use crate::{AppState, PasswordCheck};
use accounts::AccountInfo;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use presence_model::UserUri;
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
    let verified = match &state.passwords {
        PasswordCheck::Local => {
            blocking(move || Ok(accounts.verify(&creds.user, &creds.password)?)).await?
        }
        PasswordCheck::Ldap(ldap) => ldap_verify(&state, ldap, &creds).await?,
    };
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

/// Checks a password by binding to the directory as the user. Users the sync does
/// not know are refused after a bind attempt of the same cost.
async fn ldap_verify(
    state: &AppState,
    ldap: &directory::ldap::LdapSource,
    creds: &Credentials,
) -> Result<Option<AccountInfo>, ApiError> {
    let uri = UserUri::parse(&creds.user).ok();
    let accounts = &state.accounts;
    if uri.as_ref().is_some_and(|u| accounts.sign_in_blocked(u)) {
        return Err(accounts::AccountError::TooManyFailures.into());
    }
    let _slot = accounts.check_slot()?;
    let (a, lookup) = (state.accounts.clone(), uri.clone());
    let found = blocking(move || {
        let Some(uri) = lookup else { return Ok(None) };
        let dn = a.directory_dn(&uri)?;
        let info = a.get(&uri)?;
        Ok(dn.zip(info))
    })
    .await?;
    let dn = found.as_ref().map_or(UNKNOWN_DN, |(dn, _)| dn.as_str());
    let ok = ldap
        .verify_password(dn, &creds.password)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "directory unavailable for sign-in");
            ApiError::of_kind(
                presence_engine::ErrorKind::Unavailable,
                "directory_unavailable",
                "the directory cannot check passwords right now",
            )
        })?;
    match found {
        Some((_, info)) if ok => {
            accounts.clear_failures(&info.uri);
            Ok(Some(info))
        }
        Some((_, info)) => {
            accounts.record_failure(&info.uri);
            Ok(None)
        }
        None => Ok(None),
    }
}

/// A DN no directory holds, bound to when the user is unknown so the answer takes
/// as long as for a wrong password.
const UNKNOWN_DN: &str = "cn=presenced-unknown-user";

pub async fn delete(State(state): State<AppState>, auth: AuthUser) -> Result<StatusCode, ApiError> {
    let accounts = state.accounts.clone();
    blocking(move || Ok(accounts.revoke_token(&auth.token)?)).await?;
    Ok(StatusCode::NO_CONTENT)
}
