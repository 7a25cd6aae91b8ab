//! `GET /v1/stream`: the WebSocket. The connection is one endpoint of the user for as
//! long as it is open. Client operations arrive as JSON text messages; deliveries from
//! the engine's queue go out as they are handed over.

use super::{blocking, parse_user};
use crate::AppState;
use crate::auth::{bearer, check};
use crate::error::ApiError;
use crate::json;
use accounts::AccountInfo;
use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use presence_engine::{Delivery, Session};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Control messages (errors, acknowledgements) waiting for the writer.
const CONTROL_QUEUE: usize = 64;

#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
enum Op {
    Auth {
        token: String,
    },
    Subscribe {
        id: String,
        uris: Vec<String>,
        #[serde(default)]
        categories: Vec<String>,
        #[serde(default)]
        context: bool,
    },
    Unsubscribe {
        id: String,
    },
    SubscribeSelf,
}

/// The bearer token of the upgrade request, if any (checked before upgrading).
pub struct MaybeToken(Option<String>);

impl FromRequestParts<AppState> for MaybeToken {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, Self::Rejection> {
        Ok(MaybeToken(bearer(parts).map(str::to_string)))
    }
}

pub async fn upgrade(
    State(state): State<AppState>,
    MaybeToken(token): MaybeToken,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let info = match token {
        Some(t) => Some((
            check(&state, &t)
                .await?
                .ok_or_else(ApiError::unauthorized)?,
            t,
        )),
        None => None,
    };
    let max = state.limits.max_ws_message_bytes;
    Ok(ws
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| run(state, socket, info)))
}

fn text(s: String) -> Message {
    Message::Text(Utf8Bytes::from(s))
}

async fn authenticate(state: &AppState, socket: &mut WebSocket) -> Option<(AccountInfo, String)> {
    let wait = Duration::from_secs(state.limits.ws_auth_timeout_secs);
    let first = tokio::time::timeout(wait, socket.next()).await;
    let info = match first {
        Ok(Some(Ok(Message::Text(t)))) => match serde_json::from_str::<Op>(&t) {
            Ok(Op::Auth { token }) => check(state, &token)
                .await
                .ok()
                .flatten()
                .map(|i| (i, token)),
            _ => None,
        },
        _ => None,
    };
    if info.is_none() {
        let err = ApiError::unauthorized();
        let _ = socket.send(text(json::error_message(None, &err))).await;
        let _ = socket.send(Message::Close(None)).await;
    }
    info
}

async fn run(state: AppState, mut socket: WebSocket, info: Option<(AccountInfo, String)>) {
    let (info, token) = match info {
        Some(i) => i,
        None => match authenticate(&state, &mut socket).await {
            Some(i) => i,
            None => return,
        },
    };
    let engine = state.engine.clone();
    let (user, name) = (info.uri.clone(), info.display_name.clone());
    let session = match blocking(move || Ok(engine.sign_in(&user, &name, None)?)).await {
        Ok(s) => Arc::new(s),
        Err(e) => {
            let _ = socket.send(text(json::error_message(None, &e))).await;
            return;
        }
    };
    let hello = json!({"type": "hello", "endpoint": session.endpoint().0}).to_string();
    if socket.send(text(hello)).await.is_err() {
        end(session).await;
        return;
    }
    let (mut sink, mut stream) = socket.split();
    let (control_tx, mut control_rx) = mpsc::channel::<String>(CONTROL_QUEUE);

    let writer_session = session.clone();
    let mut shutdown = state.shutdown.clone();
    let recheck_state = state.clone();
    let mut recheck = tokio::time::interval(Duration::from_secs(
        state.limits.ws_token_recheck_secs.max(1),
    ));
    recheck.tick().await;
    let writer = tokio::spawn(async move {
        let subscriber = writer_session.subscriber().clone();
        loop {
            tokio::select! {
                batch = subscriber.next() => {
                    if batch.is_empty() {
                        break;
                    }
                    for d in batch {
                        let msg = match d {
                            Delivery::Categories { uri, views, .. } => json::categories_message(uri.as_str(), &views),
                            Delivery::Own { update, .. } => json::self_message(&update),
                            Delivery::Resync => {
                                let s = writer_session.clone();
                                let _ = tokio::task::spawn_blocking(move || s.resync()).await;
                                continue;
                            }
                        };
                        if sink.send(text(msg)).await.is_err() {
                            return;
                        }
                    }
                }
                Some(msg) = control_rx.recv() => {
                    if sink.send(text(msg)).await.is_err() {
                        return;
                    }
                }
                _ = shutdown.changed() => {
                    let _ = sink.send(Message::Close(None)).await;
                    return;
                }
                _ = recheck.tick() => {
                    // A token revoked since (sign-out, password change, removal or
                    // disabling of the user) ends the stream too.
                    if !matches!(check(&recheck_state, &token).await, Ok(Some(_))) {
                        let err = ApiError::unauthorized();
                        let _ = sink.send(text(json::error_message(None, &err))).await;
                        let _ = sink.send(Message::Close(None)).await;
                        return;
                    }
                    // A ping keeps a quiet stream from counting as an idle connection
                    // (the listener closes those), and the client's pong shows it is
                    // still there.
                    if sink.send(Message::Ping(Default::default())).await.is_err() {
                        return;
                    }
                }
            }
        }
        let _ = sink.send(Message::Close(None)).await;
    });

    while let Some(Ok(msg)) = stream.next().await {
        let reply = match msg {
            Message::Text(t) => handle_op(&session, &t).await,
            Message::Binary(_) => Some(json::error_message(
                None,
                &ApiError::bad_request("send operations as JSON text messages"),
            )),
            Message::Close(_) => break,
            Message::Ping(_) | Message::Pong(_) => None,
        };
        if let Some(r) = reply
            && control_tx.send(r).await.is_err()
        {
            break;
        }
    }
    end(session).await;
    writer.abort();
}

async fn end(session: Arc<Session>) {
    let _ = tokio::task::spawn_blocking(move || session.sign_out()).await;
}

/// Runs one client operation; returns a message for the client, if any.
async fn handle_op(session: &Arc<Session>, raw: &str) -> Option<String> {
    let op: Op = match serde_json::from_str(raw) {
        Ok(op) => op,
        Err(e) => {
            return Some(json::error_message(
                None,
                &ApiError::bad_request(format!("unreadable operation: {e}")),
            ));
        }
    };
    match op {
        Op::Auth { .. } => Some(json::error_message(
            None,
            &ApiError::bad_request("already authenticated"),
        )),
        Op::Subscribe {
            id,
            uris,
            categories,
            context,
        } => {
            let parsed: Result<Vec<_>, _> = uris.iter().map(|u| parse_user(u)).collect();
            let uris = match parsed {
                Ok(u) => u,
                Err(e) => return Some(json::error_message(Some(&id), &e)),
            };
            let s = session.clone();
            let sub_id = id.clone();
            match blocking(move || Ok(s.subscribe(&sub_id, &uris, &categories, context)?)).await {
                Ok(result) if result.unknown.is_empty() => None,
                Ok(result) => {
                    let names: Vec<&str> = result.unknown.iter().map(|u| u.as_str()).collect();
                    let err = ApiError::of_kind(
                        presence_engine::ErrorKind::NotFound,
                        "unknown_user",
                        format!("unknown user(s): {}", names.join(", ")),
                    );
                    Some(json::error_message(Some(&id), &err))
                }
                Err(e) => Some(json::error_message(Some(&id), &e)),
            }
        }
        Op::Unsubscribe { id } => {
            let s = session.clone();
            let sub_id = id.clone();
            let removed = tokio::task::spawn_blocking(move || s.unsubscribe(&sub_id))
                .await
                .unwrap_or(false);
            (!removed).then(|| {
                let err = ApiError::of_kind(
                    presence_engine::ErrorKind::NotFound,
                    "unknown_subscription",
                    format!("no subscription with id {id:?}"),
                );
                json::error_message(Some(&id), &err)
            })
        }
        Op::SubscribeSelf => {
            let s = session.clone();
            blocking(move || Ok(s.subscribe_self()?))
                .await
                .err()
                .map(|e| json::error_message(None, &e))
        }
    }
}
