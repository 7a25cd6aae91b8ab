//! The HTTP + WebSocket API of Presenced (axum). Routes translate JSON to engine
//! calls and engine deliveries to JSON; they never decide who sees what.

pub mod auth;
pub mod error;
pub mod json;
pub(crate) mod routes;

use accounts::Accounts;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, patch, post, put};
use presence_engine::Engine;
use std::sync::Arc;
use tokio::sync::watch;

/// Limits of the API; the server's configuration fills them.
#[derive(Debug, Clone)]
pub struct ApiLimits {
    /// Largest request body, in bytes (413 past it).
    pub max_body_bytes: usize,
    /// Largest WebSocket message from a client, in bytes.
    pub max_ws_message_bytes: usize,
    /// How long a WebSocket may stay unauthenticated, in seconds.
    pub ws_auth_timeout_secs: u64,
    /// How often an open WebSocket checks that its token is still valid, in seconds.
    pub ws_token_recheck_secs: u64,
}

impl Default for ApiLimits {
    fn default() -> Self {
        ApiLimits {
            max_body_bytes: 4 * 1024 * 1024,
            max_ws_message_bytes: 64 * 1024,
            ws_auth_timeout_secs: 10,
            ws_token_recheck_secs: 30,
        }
    }
}

/// Where sign-in passwords are checked: the local argon2id hashes, or a bind to the
/// LDAP directory as the user's DN (for users the directory sync knows).
#[derive(Clone)]
pub enum PasswordCheck {
    Local,
    Ldap(Arc<directory::ldap::LdapSource>),
}

#[derive(Clone)]
pub struct AppState {
    pub engine: Engine,
    pub accounts: Arc<Accounts>,
    /// Lifetime of API tokens.
    pub token_ttl: std::time::Duration,
    /// Where passwords are checked.
    pub passwords: PasswordCheck,
    /// The directory search index (with its per-user query budgets).
    pub directory: Arc<directory::DirectoryIndex>,
    pub limits: ApiLimits,
    /// Flips to true when the server shuts down; open WebSockets close.
    pub shutdown: watch::Receiver<bool>,
}

pub fn router(state: AppState) -> Router {
    let body_limit = state.limits.max_body_bytes;
    Router::new()
        .route("/", get(routes::meta::index))
        .route("/app.js", get(routes::meta::script))
        .route("/app.css", get(routes::meta::stylesheet))
        .route("/openapi.json", get(routes::meta::openapi))
        .route("/metrics", get(routes::meta::metrics))
        .route(
            "/v1/sessions",
            post(routes::sessions::create).delete(routes::sessions::delete),
        )
        .route("/v1/stream", get(routes::stream::upgrade))
        .route("/v1/me", get(routes::me::get_me))
        .route("/v1/me/publications", post(routes::me::publish))
        .route(
            "/v1/me/containers",
            get(routes::me::get_containers).patch(routes::me::patch_containers),
        )
        .route("/v1/me/subscribers", get(routes::me::get_subscribers))
        .route(
            "/v1/me/subscribers/{user}/acknowledge",
            post(routes::me::acknowledge),
        )
        .route(
            "/v1/presentities/{user}",
            get(routes::presentities::get_presentity),
        )
        .route("/v1/directory", get(routes::directory::search))
        .route("/v1/me/contacts", get(routes::contacts::list))
        .route(
            "/v1/me/contacts/{user}",
            put(routes::contacts::put_contact).delete(routes::contacts::delete_contact),
        )
        .route("/v1/me/groups", post(routes::contacts::add_group))
        .route(
            "/v1/me/groups/{id}",
            patch(routes::contacts::rename_group).delete(routes::contacts::delete_group),
        )
        .fallback(routes::meta::not_found)
        .method_not_allowed_fallback(routes::meta::method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}
