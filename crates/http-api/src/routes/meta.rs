//! Public routes: the index page, the OpenAPI document, metrics, and the JSON 404.

use crate::AppState;
use crate::error::ApiError;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse};
use std::fmt::Write;

const OPENAPI: &str = include_str!("../../openapi.json");

pub async fn index() -> Html<&'static str> {
    Html(include_str!("../../static/index.html"))
}

pub async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../../static/app.js"),
    )
}

pub async fn stylesheet() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("../../static/app.css"),
    )
}

pub async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let mut out = String::new();
    let mut rows = state.engine.metrics().rows();
    rows.push((
        "presenced_timers",
        "Deadlines waiting in the timer heap.",
        "gauge",
        state.engine.pending_timers() as u64,
    ));
    rows.push((
        "presenced_directory_users",
        "Directory users that search can find.",
        "gauge",
        state.directory.len() as u64,
    ));
    rows.push((
        "process_resident_memory_bytes",
        "Resident memory of the server process.",
        "gauge",
        presence_engine::metrics::process_resident_bytes(),
    ));
    rows.push((
        "process_open_fds",
        "Open file descriptors of the server process (connections among them).",
        "gauge",
        presence_engine::metrics::process_open_fds(),
    ));

    for (name, help, kind, value) in rows {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
}

pub async fn not_found() -> ApiError {
    ApiError::of_kind(
        presence_engine::ErrorKind::NotFound,
        "not_found",
        "no such route",
    )
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}
