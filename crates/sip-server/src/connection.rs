//! One client connection: the read loop, the writer, the answer-before-notification
//! ordering, and the dispatch of each request to its method's module.

use crate::SipContext;
use crate::auth::State;
use crate::dialogs::Dialogs;
use crate::handshake::{self, Outcome};
use crate::notify::{self, Outbound};
use crate::reply::{diagnostics, refuse, response};
use crate::{register, service, subscribe};
use parking_lot::Mutex;
use presence_engine::{EngineError, Session};
use presence_model::UserUri;
use sip_proto::{Message, Method, ParseError, Parsed, StartLine, parse};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

/// Messages waiting to be written to one client (deliveries wait when it is full,
/// and the engine's own queue coalesces meanwhile).
const OUT_QUEUE: usize = 64;
/// How long one write may take before the client is considered gone.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Body limit before REGISTER has succeeded: nothing big is needed to sign in.
const PRE_REGISTER_BODY_BYTES: usize = 16 * 1024;

/// The transport a connection arrived on, as `Via` and `Contact` name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Tls,
}

impl Transport {
    /// The `Via` protocol token.
    pub fn via(self) -> &'static str {
        match self {
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
    }

    /// The `transport=` URI parameter.
    pub fn param(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }
}

/// Our side of a connection: the address the client reached (the accepted socket's
/// own address, never a wildcard) and the transport.
#[derive(Debug, Clone)]
pub(crate) struct Local {
    pub addr: SocketAddr,
    pub transport: Transport,
}

impl Local {
    /// Our `Contact`, where the client sends in-dialog requests.
    pub fn contact(&self) -> String {
        format!("<sip:{};transport={}>", self.addr, self.transport.param())
    }
}

/// One connection's state, shared by the method modules.
pub(crate) struct Conn {
    pub ctx: SipContext,
    pub out: mpsc::Sender<Vec<u8>>,
    pub user: Option<UserUri>,
    pub session: Option<Arc<Session>>,
    pub dialogs: Arc<Mutex<Dialogs>>,
    /// What outgoing requests need (our address, the NTLM state to sign with).
    pub ob: Arc<Outbound>,
    pub deliveries: Option<tokio::task::JoinHandle<()>>,
    /// Signalled when the engine ends the endpoint (registration expired, user
    /// disabled) or the client stops reading: the connection is then closed.
    pub ended: Arc<tokio::sync::Notify>,
    /// Held while a request is handled and by the delivery task while it sends a
    /// batch: the answer to a request is queued before any notification it causes
    /// (SIPE treats a contact list that arrives before the answer as authoritative).
    pub gate: Arc<tokio::sync::Mutex<()>>,
}

impl Conn {
    pub fn new(ctx: SipContext, out: mpsc::Sender<Vec<u8>>, local: Local) -> Conn {
        let ob = Arc::new(Outbound {
            clock: *ctx.engine.clock(),
            local,
            auth: Arc::new(Mutex::new(State::None)),
            target: ctx.config.target_name.clone(),
        });
        Conn {
            ctx,
            out,
            user: None,
            session: None,
            dialogs: Arc::default(),
            ob,
            deliveries: None,
            ended: Arc::new(tokio::sync::Notify::new()),
            gate: Arc::default(),
        }
    }

    /// Queues a message for the client, signed when the connection is authenticated.
    pub async fn send(&self, m: Message) {
        let _ = self.out.send(self.ob.signed(m)).await;
    }

    /// Runs an engine call on the blocking pool; a task that panicked is an internal
    /// error (500), never mistaken for anything the client did.
    pub async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, EngineError> + Send + 'static,
    ) -> Result<T, EngineError> {
        tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
            tracing::error!(error = %e, "an engine task failed");
            Err(EngineError::Internal(
                "the request failed inside the server".into(),
            ))
        })
    }

    /// Handles one message; its answer is queued before anything it causes.
    pub async fn handle(&mut self, req: Message) {
        let gate = self.gate.clone();
        let _turn = gate.lock().await;
        if let Some(answer) = self.answer(&req).await {
            self.send(answer).await;
        }
    }

    /// The answer to one message (`None` for responses and ACK, which get none).
    pub async fn answer(&mut self, req: &Message) -> Option<Message> {
        // Responses: the client answers NOTIFY; BENOTIFY gets none.
        let method = req.method()?.clone();
        if let Method::Other(_) = method {
            // Methods the server does not implement get 501, authenticated or not.
            return Some(response(req, 501, "Not Implemented", None));
        }
        if !self.ctx.config.allow_unauthenticated
            && let Some(refusal) = self.authenticate(req, &method).await
        {
            return Some(refusal);
        }
        Some(match method {
            Method::Register => register::register(self, req).await,
            Method::Ack => return None,
            Method::Options => response(req, 200, "OK", None),
            _ if self.session.is_none() => refuse(req, 403, "Forbidden", "register first"),
            Method::Subscribe => subscribe::subscribe(self, req).await,
            Method::Service => service::service(self, req).await,
            Method::Notify | Method::Benotify => response(req, 200, "OK", None),
            _ => response(req, 501, "Not Implemented", None),
        })
    }

    /// Checks a request's signature; `Some(answer)` when it may not go on.
    async fn authenticate(&mut self, req: &Message, method: &Method) -> Option<Message> {
        let auth = self.ob.auth.clone();
        let signed = match &mut *auth.lock() {
            State::Established(a) => Some(a.verify(req, &self.ctx.config.target_name)),
            _ => None,
        };
        match (signed, method) {
            (Some(true), _) => None,
            (_, Method::Register) => {
                if signed == Some(false) {
                    // A bad or missing signature on REGISTER restarts the handshake.
                    *auth.lock() = State::None;
                }
                match handshake::handshake(&self.ctx, &auth, req).await {
                    Outcome::Authenticated => None,
                    Outcome::Answer(a) => Some(a),
                }
            }
            (Some(false), _) => Some(refuse(req, 403, "Forbidden", "invalid message signature")),
            // Only REGISTER may arrive on a connection without a security association
            // (also after a failed re-authentication).
            (None, _) => Some(refuse(req, 403, "Forbidden", "authenticate first")),
        }
    }

    /// Ends the dialogs whose lifetime ran out, each with a final notification.
    async fn expire_dialogs(&mut self) {
        let gate = self.gate.clone();
        let _turn = gate.lock().await;
        let expired = self
            .dialogs
            .lock()
            .take_expired(tokio::time::Instant::now());
        let (Some(session), Some(user)) = (self.session.clone(), self.user.clone()) else {
            return;
        };
        for mut e in expired {
            if let Some(id) = e.engine_id.take() {
                let s = session.clone();
                let _ = self.blocking(move || Ok(s.unsubscribe(&id))).await;
            }
            let end = self.ob.notify(
                &mut e.dialog,
                &user,
                e.event,
                "terminated;reason=timeout",
                None,
            );
            let _ = self.out.send(end).await;
        }
    }

    pub async fn sign_out(&mut self) {
        if let Some(task) = self.deliveries.take() {
            task.abort();
        }
        if let Some(s) = self.session.take() {
            let _ = tokio::task::spawn_blocking(move || s.sign_out()).await;
        }
        *self.dialogs.lock() = Dialogs::default();
    }

    /// Starts forwarding the session's deliveries to the client.
    pub fn start_deliveries(&mut self, session: Arc<Session>, user: UserUri) {
        self.deliveries = Some(tokio::spawn(notify::deliver(
            session,
            user,
            self.dialogs.clone(),
            self.out.clone(),
            self.ended.clone(),
            self.gate.clone(),
            self.ob.clone(),
        )));
    }
}

impl Drop for Conn {
    /// However the connection ends (a panic included), its delivery task goes, and
    /// with it the last reference to the session, which signs the endpoint out.
    fn drop(&mut self) {
        if let Some(task) = self.deliveries.take() {
            task.abort();
        }
    }
}

/// Serves one connection until the client closes it or the server shuts down.
pub(crate) async fn run<S>(
    ctx: SipContext,
    stream: S,
    peer: SocketAddr,
    local: Local,
    mut shutdown: watch::Receiver<bool>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(OUT_QUEUE);
    let mut conn = Conn::new(ctx, tx, local);
    let ended = conn.ended.clone();
    let writer_gone = ended.clone();
    let writer = tokio::spawn(async move {
        while let Some(bytes) = rx.recv().await {
            match tokio::time::timeout(WRITE_TIMEOUT, wr.write_all(&bytes)).await {
                Ok(Ok(())) => {}
                // A client that does not read (or is gone) is disconnected.
                _ => {
                    writer_gone.notify_one();
                    return;
                }
            }
        }
        let _ = wr.shutdown().await;
    });
    let limits = conn.ctx.config.limits;
    let pre_register = sip_proto::Limits {
        max_body_bytes: limits.max_body_bytes.min(PRE_REGISTER_BODY_BYTES),
        ..limits
    };
    // Keep-alives come every `keep_alive`; twice that in silence means the client is gone.
    let idle = conn.ctx.config.keep_alive * 2;
    let register_by = tokio::time::Instant::now() + conn.ctx.config.register_deadline;
    let max_buffer = limits.max_header_bytes + limits.max_body_bytes + 4;
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 16 * 1024];
    // Bytes of a refused message (its body) still to arrive and be dropped.
    let mut discard = 0usize;
    'read: loop {
        let registered = conn.session.is_some();
        let next_expiry = conn.dialogs.lock().next_expiry();
        let n = tokio::select! {
            r = tokio::time::timeout(idle, rd.read(&mut chunk)) => match r {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => n,
                Err(_) => {
                    tracing::info!(%peer, "SIP connection idle too long; closing it");
                    break;
                }
            },
            _ = tokio::time::sleep_until(register_by), if !registered => {
                tracing::info!(%peer, "no REGISTER in time; closing the SIP connection");
                break;
            }
            _ = tokio::time::sleep_until(next_expiry.unwrap_or(register_by)), if next_expiry.is_some() => {
                conn.expire_dialogs().await;
                continue;
            }
            _ = shutdown.changed() => break,
            _ = ended.notified() => {
                tracing::info!(%peer, "endpoint ended; closing the SIP connection");
                break;
            }
        };
        let skipped = discard.min(n);
        discard -= skipped;
        buf.extend_from_slice(&chunk[skipped..n]);
        loop {
            let limits = if conn.session.is_some() {
                limits
            } else {
                pre_register
            };
            match parse(&buf, &limits) {
                Ok(Parsed::Incomplete) => {
                    if buf.len() > max_buffer {
                        break 'read;
                    }
                    break;
                }
                Ok(Parsed::KeepAlive(n)) => {
                    buf.drain(..n);
                }
                Ok(Parsed::Message { message, len }) => {
                    buf.drain(..len);
                    conn.handle(message).await;
                }
                Err(e) => {
                    tracing::info!(%peer, error = %e, "refusing a malformed SIP message");
                    answer_error(&conn, &e).await;
                    match e.skip() {
                        // The refused message may not have arrived whole yet: what
                        // is missing is dropped as it comes.
                        Some(n) => {
                            let here = n.min(buf.len());
                            buf.drain(..here);
                            discard = n - here;
                            if discard > 0 {
                                break;
                            }
                        }
                        // The framing is lost: nothing after this can be trusted.
                        None => break 'read,
                    }
                }
            }
        }
    }
    conn.sign_out().await;
    drop(conn);
    // Let queued answers go out (each write is bounded by its timeout).
    let abort = writer.abort_handle();
    if tokio::time::timeout(WRITE_TIMEOUT, writer).await.is_err() {
        abort.abort();
    }
}

/// Answers a message that could not be used, when enough of it is known to address
/// the answer (a request's Via, From, To, Call-ID and CSeq).
async fn answer_error(conn: &Conn, e: &ParseError) {
    let Some(partial) = e.partial() else { return };
    if !matches!(partial.start, StartLine::Request { .. }) {
        return;
    }
    let reason = match e.status() {
        413 => "Request Entity Too Large",
        505 => "Version Not Supported",
        _ => "Bad Request",
    };
    conn.send(diagnostics(
        response(partial, e.status(), reason, None),
        &e.to_string(),
    ))
    .await;
}
