//! The caller's own data: `/v1/me`, publications, containers, subscribers.

use super::{ApiJson, blocking, parse_user};
use crate::AppState;
use crate::auth::AuthUser;
use crate::error::ApiError;
use crate::json::{self, MemberIn};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use presence_engine::OwnSnapshot;
use presence_model::membership::ContainerUpdate;
use presence_model::{ContainerId, EndpointId, ExpireType, Publication};
use serde::Deserialize;
use serde_json::{Value, json};

/// Everything the caller has, read off the async workers.
pub async fn own_snapshot(state: &AppState, auth: &AuthUser) -> Result<OwnSnapshot, ApiError> {
    let engine = state.engine.clone();
    let user = auth.info.uri.clone();
    blocking(move || Ok(engine.own_snapshot(&user)?)).await
}

pub async fn get_me(
    State(state): State<AppState>,
    auth: AuthUser,
) -> Result<Json<Value>, ApiError> {
    let snap = own_snapshot(&state, &auth).await?;
    Ok(Json(json!({
        "uri": auth.info.uri.as_str(),
        "categories": snap.instances.iter().map(|i| json::instance(i, true)).collect::<Vec<_>>(),
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublicationIn {
    category: String,
    instance: u32,
    container: u32,
    version: u32,
    expire_type: String,
    expires: Option<u64>,
    value: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    endpoint: Option<u64>,
    publications: Vec<PublicationIn>,
}

fn to_publication(index: usize, p: PublicationIn) -> Result<Publication, ApiError> {
    let container = ContainerId::new(p.container as u64)
        .map_err(|e| ApiError::bad_request(format!("publication {index}: {e}")))?;
    let expire_type = ExpireType::parse(&p.expire_type).ok_or_else(|| {
        ApiError::bad_request(format!(
            "publication {index}: expire_type must be static, user, endpoint or time"
        ))
    })?;
    Ok(Publication {
        category: p.category,
        instance: p.instance,
        container,
        version: p.version,
        expire_type,
        expires: p.expires,
        value: p.value,
    })
}

pub async fn publish(
    State(state): State<AppState>,
    auth: AuthUser,
    ApiJson(req): ApiJson<PublishRequest>,
) -> Result<Json<Value>, ApiError> {
    let items = req
        .publications
        .into_iter()
        .enumerate()
        .map(|(i, p)| to_publication(i + 1, p))
        .collect::<Result<Vec<_>, _>>()?;
    let engine = state.engine.clone();
    let user = auth.info.uri.clone();
    let endpoint = req.endpoint.map(EndpointId);
    let published = blocking(move || Ok(engine.publish(&user, endpoint, &items)?)).await?;
    Ok(Json(json!({
        "publications": published.iter().map(|p| json!({
            "index": p.index,
            "category": p.category,
            "instance": p.instance,
            "container": p.container.get(),
            "version": p.version,
            "publish_time": p.publish_time.to_rfc3339(),
            "deleted": p.deleted,
        })).collect::<Vec<_>>(),
    })))
}

pub async fn get_containers(
    State(state): State<AppState>,
    auth: AuthUser,
) -> Result<Json<Value>, ApiError> {
    let snap = own_snapshot(&state, &auth).await?;
    Ok(Json(Value::Array(
        snap.containers.iter().map(json::container).collect(),
    )))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerPatch {
    id: u32,
    version: u32,
    #[serde(default)]
    add: Vec<MemberIn>,
    #[serde(default)]
    remove: Vec<MemberIn>,
}

pub async fn patch_containers(
    State(state): State<AppState>,
    auth: AuthUser,
    ApiJson(patches): ApiJson<Vec<ContainerPatch>>,
) -> Result<Json<Value>, ApiError> {
    let updates = patches
        .iter()
        .map(|p| {
            Ok(ContainerUpdate {
                id: ContainerId::new(p.id as u64)
                    .map_err(|e| ApiError::bad_request(e.to_string()))?,
                version: p.version,
                add: p
                    .add
                    .iter()
                    .map(MemberIn::parse)
                    .collect::<Result<_, _>>()?,
                remove: p
                    .remove
                    .iter()
                    .map(MemberIn::parse)
                    .collect::<Result<_, _>>()?,
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    if updates.is_empty() {
        return Err(ApiError::bad_request("the patch holds no container"));
    }
    let engine = state.engine.clone();
    let user = auth.info.uri.clone();
    let changed = blocking(move || Ok(engine.update_containers(&user, &updates)?)).await?;
    Ok(Json(Value::Array(
        changed.iter().map(json::container).collect(),
    )))
}

pub async fn get_subscribers(
    State(state): State<AppState>,
    auth: AuthUser,
) -> Result<Json<Value>, ApiError> {
    let snap = own_snapshot(&state, &auth).await?;
    Ok(Json(Value::Array(
        snap.subscribers.iter().map(json::subscriber).collect(),
    )))
}

pub async fn acknowledge(
    State(state): State<AppState>,
    auth: AuthUser,
    Path(watcher): Path<String>,
) -> Result<StatusCode, ApiError> {
    let watcher = parse_user(&watcher)?;
    let engine = state.engine.clone();
    let user = auth.info.uri.clone();
    blocking(move || Ok(engine.acknowledge_subscriber(&user, &watcher)?)).await?;
    Ok(StatusCode::NO_CONTENT)
}
