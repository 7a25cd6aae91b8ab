//! `GET /v1/presentities/{user}`: exactly what the caller may see of a user.

use super::{ApiQuery, blocking, parse_user};
use crate::AppState;
use crate::auth::AuthUser;
use crate::error::ApiError;
use crate::json;
use axum::Json;
use axum::extract::{Path, State};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    categories: Option<String>,
}

pub async fn get_presentity(
    State(state): State<AppState>,
    auth: AuthUser,
    Path(user): Path<String>,
    ApiQuery(params): ApiQuery<Params>,
) -> Result<Json<Value>, ApiError> {
    let target = parse_user(&user)?;
    let categories: Vec<String> = params
        .categories
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect();
    let engine = state.engine.clone();
    let viewer = auth.info.uri.clone();
    let uri = target.clone();
    let visible = blocking(move || Ok(engine.view(&viewer, &uri, &categories)?)).await?;
    // Users looking at themselves see their own data, with its container ids.
    let owner = auth.info.uri == target;
    Ok(Json(json!({
        "uri": target.as_str(),
        "categories": visible.iter().map(|i| json::instance(i, owner)).collect::<Vec<_>>(),
    })))
}
