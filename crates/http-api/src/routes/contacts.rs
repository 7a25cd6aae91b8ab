//! The persistent contact list: `/v1/me/contacts` and `/v1/me/groups`. Every change
//! answers with the whole new list; `delta_num`, when sent, must match the list's
//! current change counter (409 `delta_conflict` otherwise).

use super::{ApiJson, ApiPath, ApiQuery, blocking, parse_user};
use crate::AppState;
use crate::auth::AuthUser;
use crate::error::ApiError;
use crate::json;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use presence_model::UserUri;
use presence_model::contacts::{ContactError, ContactList};
use serde::Deserialize;
use serde_json::{Value, json};

/// Runs one change of the caller's contact list off the async workers.
async fn change<T: Send + 'static>(
    state: &AppState,
    auth: &AuthUser,
    contact: Option<UserUri>,
    f: impl FnMut(&mut ContactList) -> Result<T, ContactError> + Send + 'static,
) -> Result<(T, ContactList), ApiError> {
    let engine = state.engine.clone();
    let user = auth.info.uri.clone();
    blocking(move || Ok(engine.change_contacts(&user, contact.as_ref(), f)?)).await
}

pub async fn list(State(state): State<AppState>, auth: AuthUser) -> Result<Json<Value>, ApiError> {
    let snap = super::me::own_snapshot(&state, &auth).await?;
    Ok(Json(json::contact_list(&snap.contacts)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContactIn {
    #[serde(default)]
    name: String,
    #[serde(default)]
    groups: Vec<u32>,
    subscribed: Option<bool>,
    delta_num: Option<u32>,
}

pub async fn put_contact(
    State(state): State<AppState>,
    auth: AuthUser,
    Path(user): Path<String>,
    ApiJson(body): ApiJson<ContactIn>,
) -> Result<Json<Value>, ApiError> {
    let uri = parse_user(&user)?;
    if uri == auth.info.uri {
        return Err(ApiError::bad_request(
            "you cannot add yourself as a contact",
        ));
    }
    let contact = uri.clone();
    let (_, list) = change(&state, &auth, Some(uri), move |l| {
        l.set_contact(
            contact.clone(),
            &body.name,
            &body.groups,
            body.subscribed.unwrap_or(true),
            body.delta_num,
        )
    })
    .await?;
    Ok(Json(json::contact_list(&list)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeltaParam {
    delta_num: Option<u32>,
}

pub async fn delete_contact(
    State(state): State<AppState>,
    auth: AuthUser,
    Path(user): Path<String>,
    ApiQuery(q): ApiQuery<DeltaParam>,
) -> Result<Json<Value>, ApiError> {
    let uri = parse_user(&user)?;
    let (_, list) = change(&state, &auth, None, move |l| {
        l.delete_contact(&uri, q.delta_num)
    })
    .await?;
    Ok(Json(json::contact_list(&list)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupIn {
    name: String,
    delta_num: Option<u32>,
}

pub async fn add_group(
    State(state): State<AppState>,
    auth: AuthUser,
    ApiJson(body): ApiJson<GroupIn>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let (id, list) = change(&state, &auth, None, move |l| {
        l.add_group(&body.name, body.delta_num)
    })
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"id": id, "contacts": json::contact_list(&list)})),
    ))
}

pub async fn rename_group(
    State(state): State<AppState>,
    auth: AuthUser,
    ApiPath(id): ApiPath<u32>,
    ApiJson(body): ApiJson<GroupIn>,
) -> Result<Json<Value>, ApiError> {
    let (_, list) = change(&state, &auth, None, move |l| {
        l.rename_group(id, &body.name, body.delta_num)
    })
    .await?;
    Ok(Json(json::contact_list(&list)))
}

pub async fn delete_group(
    State(state): State<AppState>,
    auth: AuthUser,
    ApiPath(id): ApiPath<u32>,
    ApiQuery(q): ApiQuery<DeltaParam>,
) -> Result<Json<Value>, ApiError> {
    let (_, list) = change(&state, &auth, None, move |l| {
        l.delete_group(id, q.delta_num)
    })
    .await?;
    Ok(Json(json::contact_list(&list)))
}
