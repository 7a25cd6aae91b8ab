//! One client connection: reads requests, answers them, and sends the engine's
//! deliveries as BENOTIFYs on the same connection.

use crate::SipContext;
use crate::auth::{self, Association, State};
use crate::bodies::{self, BadBody, SoapRequest};
use crate::ntlm;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use parking_lot::Mutex;
use presence_engine::{Delivery, EngineError, Session};
use presence_model::{PublishError, UserUri};
use rand::Rng;
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
/// How long a connection may stay unregistered (unauthenticated).
const REGISTER_DEADLINE: Duration = Duration::from_secs(30);
/// Body limit before REGISTER has succeeded: nothing big is needed to sign in.
const PRE_REGISTER_BODY_BYTES: usize = 16 * 1024;
/// Events the server offers; SIPE splits this list on commas without trimming.
const ALLOW_EVENTS: &str = "vnd-microsoft-provisioning,vnd-microsoft-roaming-contacts,vnd-microsoft-roaming-ACL,presence,presence.wpending,vnd-microsoft-roaming-self,vnd-microsoft-provisioning-v2";
const ROAMING_SELF_TYPE: &str = "application/vnd-microsoft-roaming-self+xml";
const ROAMING_CONTACTS_TYPE: &str = "application/vnd-microsoft-roaming-contacts+xml";
const CATEGORIES_TYPE: &str = "application/msrtc-event-categories+xml";
const FAULT_TYPE: &str = "application/msrtc-fault+xml";
/// Subscription ids this front end uses in the engine.
const PRESENCE_SUB: &str = "sip-presence";
const PRESENCE_CONTEXT_SUB: &str = "sip-presence-context";

/// A subscription dialog, as needed to send its notifications.
#[derive(Clone)]
struct Dialog {
    call_id: String,
    local_tag: String,
    /// The client's From header of the SUBSCRIBE, which is our To.
    remote: String,
    /// Where requests to the client go (its Contact).
    target: String,
    cseq: u32,
}

#[derive(Default)]
struct Dialogs {
    roaming_self: Option<Dialog>,
    roaming_contacts: Option<Dialog>,
    presence: Option<Dialog>,
}

struct Conn {
    ctx: SipContext,
    out: mpsc::Sender<Vec<u8>>,
    user: Option<UserUri>,
    session: Option<Arc<Session>>,
    dialogs: Arc<Mutex<Dialogs>>,
    local: String,
    deliveries: Option<tokio::task::JoinHandle<()>>,
    /// NTLM state, shared with the delivery task (which signs BENOTIFYs).
    auth: Arc<Mutex<State>>,
    /// Signalled when the engine ends the endpoint (registration expired, user
    /// disabled): the connection is then closed.
    ended: Arc<tokio::sync::Notify>,
}

fn tag() -> String {
    format!("{:08x}", rand::thread_rng().r#gen::<u32>())
}

/// The URI inside a name-addr (`"x" <sip:a@b>;tag=1` gives `sip:a@b`).
fn addr_uri(value: &str) -> &str {
    match (value.find('<'), value.find('>')) {
        (Some(a), Some(b)) if a < b => &value[a + 1..b],
        _ => value.split(';').next().unwrap_or(value).trim(),
    }
}

/// A `;name=value` parameter after the address.
fn param<'a>(value: &'a str, name: &str) -> Option<&'a str> {
    let after = value.rfind('>').map_or(value, |i| &value[i..]);
    after.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().trim_matches('"'))
    })
}

/// A response to `req` with its dialog headers copied (and a To tag added).
fn response(req: &Message, code: u16, reason: &str, to_tag: Option<&str>) -> Message {
    let mut r = Message::response(code, reason);
    for via in req.headers_named("Via") {
        r.push_header("Via", via);
    }
    for name in ["From", "To", "Call-ID", "CSeq"] {
        if let Some(v) = req.header(name) {
            let v = match (name, to_tag) {
                ("To", Some(t)) if param(v, "tag").is_none() => format!("{v};tag={t}"),
                _ => v.to_string(),
            };
            r.push_header(name, v);
        }
    }
    r
}

fn diagnostics(mut r: Message, reason: &str) -> Message {
    // The reason may echo client input: no quotes or control characters in a header.
    let reason: String = reason
        .chars()
        .map(|c| {
            if c == '"' {
                '\''
            } else if c.is_control() {
                ' '
            } else {
                c
            }
        })
        .collect();
    r.push_header(
        "ms-diagnostics",
        format!("1000;reason=\"{reason}\";source=\"presenced\""),
    );
    // SIPE shows a refusal's reason only from Warning (or ms-diagnostics-public).
    r.push_header("Warning", format!("310 presenced \"{reason}\""));
    r
}

fn engine_status(e: &EngineError) -> (u16, &'static str) {
    match e {
        EngineError::UnknownUser(_) | EngineError::NotASubscriber(_) => (404, "Not Found"),
        EngineError::Publish(PublishError::ReadOnly { .. }) | EngineError::Disabled(_) => {
            (403, "Forbidden")
        }
        EngineError::Membership(presence_model::membership::MembershipError::Fixed(_)) => {
            (403, "Forbidden")
        }
        EngineError::Publish(PublishError::TooLarge(_)) | EngineError::TooLarge(_) => {
            (413, "Request Entity Too Large")
        }
        EngineError::Contacts(presence_model::contacts::ContactError::Stale { .. }) => {
            (409, "Conflict")
        }
        EngineError::Ended => (481, "Call/Transaction Does Not Exist"),
        EngineError::Store(_) => (503, "Service Unavailable"),
        _ => (400, "Bad Request"),
    }
}

/// A refused SERVICE: status, reason phrase, diagnostics and an optional fault body.
type Refusal = (u16, &'static str, String, Option<String>);

/// The answer to an engine error; version conflicts carry MS-PRES's WrongDelta fault.
fn refusal(e: EngineError) -> Refusal {
    use presence_model::membership::MembershipError;
    match e {
        EngineError::Publish(PublishError::Conflict(c))
        | EngineError::Membership(MembershipError::Conflict(c)) => (
            409,
            "Conflict",
            "version conflict".into(),
            Some(bodies::wrong_delta_fault(&c)),
        ),
        e => {
            let (code, reason) = engine_status(&e);
            (code, reason, e.to_string(), None)
        }
    }
}

impl Conn {
    async fn send(&self, mut m: Message) {
        if let State::Established(a) = &mut *self.auth.lock() {
            a.sign(&mut m, &self.ctx.config.target_name);
        }
        let _ = self.out.send(m.to_bytes()).await;
    }

    /// An unsigned 401 (the handshake's answers are never signed).
    async fn challenge(&self, req: &Message, www: String) {
        *self.auth.lock() = State::None;
        let mut r = response(req, 401, "Unauthorized", Some(&tag()));
        r.push_header("WWW-Authenticate", www);
        let _ = self.out.send(r.to_bytes()).await;
    }

    /// Runs the NTLM handshake on a REGISTER; `true` once the connection is
    /// authenticated (the request then goes on), `false` when an answer was sent.
    async fn handshake(&mut self, req: &Message) -> bool {
        let target = self.ctx.config.target_name.clone();
        let Ok(user) = UserUri::parse(addr_uri(req.header("From").unwrap_or_default())) else {
            self.send(diagnostics(
                response(req, 400, "Bad Request", None),
                "From is not a user URI",
            ))
            .await;
            return false;
        };
        if self.ctx.accounts.sign_in_blocked(&user) {
            let r = diagnostics(
                response(req, 403, "Forbidden", None),
                "too many failed sign-ins; try again later",
            );
            self.send(r).await;
            return false;
        }
        let Some(p) = req.header("Authorization").map(auth::params) else {
            let www = format!(
                "NTLM realm=\"{}\", targetname=\"{target}\", version=4",
                auth::REALM
            );
            self.challenge(req, www).await;
            return false;
        };
        let data = p.get("gssapi-data").cloned().unwrap_or_default();
        if data.is_empty() {
            let challenge: [u8; 8] = rand::thread_rng().r#gen();
            let opaque = format!("{:08X}", rand::thread_rng().r#gen::<u32>());
            let filetime = (std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos()
                / 100) as u64
                + 116_444_736_000_000_000;
            let msg = ntlm::challenge_message(
                &challenge,
                "PRESENCED",
                "PRESENCED",
                user.domain(),
                filetime,
            );
            let www = format!(
                "NTLM opaque=\"{opaque}\", gssapi-data=\"{}\", targetname=\"{target}\", realm=\"{}\", version=4",
                BASE64.encode(msg),
                auth::REALM
            );
            self.challenge(req, www).await;
            *self.auth.lock() = State::Challenged { opaque, challenge };
            return false;
        }
        let pending = match &*self.auth.lock() {
            State::Challenged { opaque, challenge } if p.get("opaque") == Some(opaque) => {
                Some((opaque.clone(), *challenge))
            }
            _ => None,
        };
        let Some((opaque, challenge)) = pending else {
            let www = format!(
                "NTLM realm=\"{}\", targetname=\"{target}\", version=4",
                auth::REALM
            );
            self.challenge(req, www).await;
            return false;
        };
        let parsed = BASE64
            .decode(data.as_bytes())
            .ok()
            .and_then(|b| ntlm::parse_authenticate(&b).ok());
        let Some(authenticate) = parsed else {
            self.send(diagnostics(
                response(req, 400, "Bad Request", None),
                "unreadable NTLM message",
            ))
            .await;
            return false;
        };
        let local = user.as_str().split('@').next().unwrap_or_default();
        let name_matches = authenticate.user.eq_ignore_ascii_case(user.as_str())
            || authenticate.user.eq_ignore_ascii_case(local);
        let accounts = self.ctx.accounts.clone();
        let u = user.clone();
        let hash = tokio::task::spawn_blocking(move || accounts.nt_hash(&u)).await;
        let refuse = |reason: &str| diagnostics(response(req, 403, "Forbidden", None), reason);
        let keys = match hash {
            Ok(Ok(Some(h))) if name_matches => ntlm::verify(&authenticate, &h, &challenge).ok(),
            Ok(Err(accounts::AccountError::NoLocalPassword(_))) => {
                *self.auth.lock() = State::None;
                self.send(refuse(
                    "this user's password lives only in the directory; SIP NTLM cannot verify it",
                ))
                .await;
                return false;
            }
            _ => None,
        };
        let Some(keys) = keys else {
            // Only real accounts are counted: made-up names cost no memory.
            if matches!(hash, Ok(Ok(Some(_)))) {
                self.ctx.accounts.record_failure(&user);
            }
            *self.auth.lock() = State::None;
            self.send(refuse("wrong user name or password")).await;
            return false;
        };
        self.ctx.accounts.clear_failures(&user);
        let mut association = Association::new(user, opaque, keys);
        // From version 4 on, the REGISTER carrying AUTHENTICATE is signed already.
        if p.contains_key("response") && !association.verify(req, &target) {
            *self.auth.lock() = State::None;
            self.send(refuse("invalid message signature")).await;
            return false;
        }
        *self.auth.lock() = State::Established(association);
        true
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, EngineError> + Send + 'static,
    ) -> Result<T, EngineError> {
        tokio::task::spawn_blocking(f)
            .await
            .unwrap_or(Err(EngineError::Ended))
    }

    async fn handle(&mut self, req: Message) {
        let Some(method) = req.method().cloned() else {
            return; // Responses: the client answers NOTIFY; BENOTIFY gets none.
        };
        if let Method::Other(_) = method {
            // Methods the server does not implement get 501, authenticated or not.
            return self
                .send(response(&req, 501, "Not Implemented", None))
                .await;
        }
        if !self.ctx.config.allow_unauthenticated {
            let signed = match &mut *self.auth.lock() {
                State::Established(a) => Some(a.verify(&req, &self.ctx.config.target_name)),
                _ => None,
            };
            match (signed, &method) {
                (Some(true), _) => {}
                (_, Method::Register) => {
                    if signed == Some(false) {
                        // A bad or missing signature on REGISTER restarts the handshake.
                        *self.auth.lock() = State::None;
                    }
                    if !self.handshake(&req).await {
                        return;
                    }
                }
                (Some(false), _) => {
                    let r = diagnostics(
                        response(&req, 403, "Forbidden", None),
                        "invalid message signature",
                    );
                    return self.send(r).await;
                }
                // Only REGISTER may arrive on a connection without a security
                // association (also after a failed re-authentication).
                (None, _) => {
                    let r =
                        diagnostics(response(&req, 403, "Forbidden", None), "authenticate first");
                    return self.send(r).await;
                }
            }
        }
        match method {
            Method::Register => self.register(&req).await,
            Method::Ack => {}
            Method::Options => self.send(response(&req, 200, "OK", None)).await,
            _ if self.session.is_none() => {
                let r = diagnostics(response(&req, 403, "Forbidden", None), "register first");
                self.send(r).await;
            }
            Method::Subscribe => self.subscribe(&req).await,
            Method::Service => self.service(&req).await,
            Method::Notify | Method::Benotify => self.send(response(&req, 200, "OK", None)).await,
            _ => {
                self.send(response(&req, 501, "Not Implemented", None))
                    .await
            }
        }
    }

    async fn register(&mut self, req: &Message) {
        let from = req.header("From").unwrap_or_default();
        let Ok(user) = UserUri::parse(addr_uri(from)) else {
            self.send(diagnostics(
                response(req, 400, "Bad Request", None),
                "From is not a user URI",
            ))
            .await;
            return;
        };
        let expires: u32 = req
            .header("Expires")
            .and_then(|e| e.trim().parse().ok())
            .unwrap_or(self.ctx.config.register_expires)
            .min(self.ctx.config.register_expires);
        if let Some(current) = &self.user
            && current != &user
        {
            self.send(diagnostics(
                response(req, 403, "Forbidden", None),
                "one user per connection",
            ))
            .await;
            return;
        }
        let other_user = matches!(&*self.auth.lock(), State::Established(a) if a.user != user);
        if other_user {
            let r = diagnostics(
                response(req, 403, "Forbidden", None),
                "authenticated as another user",
            );
            self.send(r).await;
            return;
        }
        let to_tag = tag();
        if expires == 0 {
            self.sign_out().await;
            let mut r = response(req, 200, "OK", Some(&to_tag));
            r.push_header("Expires", "0");
            self.send(r).await;
            return;
        }
        let ttl = Duration::from_secs(expires as u64);
        if let Some(s) = self.session.clone() {
            let live = self
                .blocking(move || Ok(s.refresh(ttl)))
                .await
                .unwrap_or(false);
            if !live {
                // The registration had ended (expiry, directory): sign in anew.
                self.sign_out().await;
            }
        }
        match &self.session {
            Some(_) => {}
            None => {
                let accounts = self.ctx.accounts.clone();
                let engine = self.ctx.engine.clone();
                let u = user.clone();
                let signed_in = self
                    .blocking(move || {
                        let name = match accounts.get(&u) {
                            Ok(Some(info)) if !info.disabled => info.display_name,
                            Ok(Some(_)) => return Err(EngineError::Disabled(u)),
                            _ => return Err(EngineError::UnknownUser(u)),
                        };
                        engine.sign_in(&u, &name, Some(ttl))
                    })
                    .await;
                match signed_in {
                    Ok(s) => {
                        let s = Arc::new(s);
                        self.deliveries = Some(tokio::spawn(deliver(
                            s.clone(),
                            user.clone(),
                            self.dialogs.clone(),
                            self.out.clone(),
                            self.ended.clone(),
                            Outbound {
                                clock: *self.ctx.engine.clock(),
                                local: self.local.clone(),
                                expires: self.ctx.config.subscribe_expires,
                                auth: self.auth.clone(),
                                target: self.ctx.config.target_name.clone(),
                            },
                        )));
                        self.session = Some(s);
                        self.user = Some(user);
                    }
                    Err(e) => {
                        let (code, reason) = engine_status(&e);
                        self.send(diagnostics(
                            response(req, code, reason, None),
                            &e.to_string(),
                        ))
                        .await;
                        return;
                    }
                }
            }
        }
        let mut r = response(req, 200, "OK", Some(&to_tag));
        if let Some(c) = req.header("Contact") {
            r.push_header("Contact", format!("{c};expires={expires}"));
        }
        r.push_header("Expires", expires.to_string());
        r.push_header("Allow-Events", ALLOW_EVENTS);
        // One value per Supported line: SIPE compares whole header values.
        r.push_header("Supported", "msrtc-event-categories");
        r.push_header("Supported", "adhoclist");
        r.push_header("Supported", "com.microsoft.msrtc.presence");
        r.push_header("Server", "RTC/3.5");
        r.push_header(
            "ms-keep-alive",
            format!(
                "UAS; tcp=no; hop-hop=yes; end=no; timeout={}",
                self.ctx.config.keep_alive.as_secs()
            ),
        );
        self.send(r).await;
    }

    fn new_dialog(&self, req: &Message, local_tag: &str) -> Dialog {
        Dialog {
            call_id: req.header("Call-ID").unwrap_or_default().to_string(),
            local_tag: local_tag.to_string(),
            remote: req.header("From").unwrap_or_default().to_string(),
            target: req
                .header("Contact")
                .map(addr_uri)
                .unwrap_or_default()
                .to_string(),
            cseq: 1,
        }
    }

    async fn subscribe(&mut self, req: &Message) {
        let session = self.session.clone().expect("registered");
        let user = self.user.clone().expect("registered");
        let event = req.header("Event").unwrap_or_default().to_ascii_lowercase();
        let expires: u32 = req
            .header("Expires")
            .and_then(|e| e.trim().parse().ok())
            .unwrap_or(self.ctx.config.subscribe_expires)
            .min(self.ctx.config.subscribe_expires);
        let existing_tag = req
            .header("To")
            .and_then(|t| param(t, "tag"))
            .map(str::to_string);
        let local_tag = existing_tag.clone().unwrap_or_else(tag);
        let mut r = response(req, 200, "OK", Some(&local_tag));
        r.push_header("Event", req.header("Event").unwrap_or_default());
        r.push_header("Expires", expires.to_string());
        r.push_header("Contact", format!("<sip:{};transport=tcp>", self.local));
        // Subscriptions live as long as the connection, so every notification extends
        // them (auto-extend); later notifications come as BENOTIFY.
        for ext in [
            "com.microsoft.autoextend",
            "ms-benotify",
            "ms-piggyback-first-notify",
        ] {
            r.push_header("Supported", ext);
        }
        let fresh = existing_tag.is_none();
        match event.as_str() {
            "vnd-microsoft-provisioning-v2"
            | "vnd-microsoft-provisioning"
            | "presence.wpending"
            | "vnd-microsoft-roaming-acl" => {
                self.send(r).await;
            }
            "vnd-microsoft-roaming-contacts" => {
                if expires == 0 {
                    self.dialogs.lock().roaming_contacts = None;
                    return self.send(r).await;
                }
                self.dialogs.lock().roaming_contacts = Some(self.new_dialog(req, &local_tag));
                if fresh {
                    let (engine, u) = (self.ctx.engine.clone(), user.clone());
                    if let Ok(snap) = self.blocking(move || engine.own_snapshot(&u)).await {
                        r.push_header("ms-piggyback-cseq", "1");
                        r.push_header("Content-Type", ROAMING_CONTACTS_TYPE);
                        r.body = bodies::contact_list(&snap.contacts).into_bytes();
                    }
                }
                self.send(r).await;
                // Contact-list changes reach the endpoint through its self view.
                let s = session.clone();
                let _ = self.blocking(move || s.subscribe_self()).await;
            }
            "vnd-microsoft-roaming-self" => {
                if expires == 0 {
                    self.dialogs.lock().roaming_self = None;
                    return self.send(r).await;
                }
                self.dialogs.lock().roaming_self = Some(self.new_dialog(req, &local_tag));
                self.send(r).await;
                // The full roaming data follows as the first BENOTIFY of the dialog.
                let s = session.clone();
                let _ = self.blocking(move || s.subscribe_self()).await;
            }
            "presence" => {
                if expires == 0 {
                    self.dialogs.lock().presence = None;
                    let s = session.clone();
                    let _ = self
                        .blocking(move || {
                            s.unsubscribe(PRESENCE_SUB);
                            s.unsubscribe(PRESENCE_CONTEXT_SUB);
                            Ok(())
                        })
                        .await;
                    return self.send(r).await;
                }
                let parsed = if req.body.is_empty() {
                    Ok((Vec::new(), Vec::new()))
                } else {
                    bodies::parse_batch_sub(&req.body)
                };
                let (resources, categories) = match parsed {
                    Ok(p) => p,
                    Err(BadBody(reason)) => {
                        return self
                            .send(diagnostics(
                                response(req, 400, "Bad Request", None),
                                &reason,
                            ))
                            .await;
                    }
                };
                if resources.len() > self.ctx.engine.config().max_targets_per_subscription {
                    let r = diagnostics(
                        response(req, 413, "Request Entity Too Large", None),
                        "too many resources",
                    );
                    return self.send(r).await;
                }
                self.dialogs.lock().presence = Some(self.new_dialog(req, &local_tag));
                self.send(r).await;
                if resources.is_empty() {
                    return;
                }
                let (plain, with_context): (Vec<_>, Vec<_>) =
                    resources.into_iter().partition(|r| !r.context);
                let s = session.clone();
                let result = self
                    .blocking(move || {
                        let uris = |v: Vec<bodies::Resource>| {
                            v.into_iter().map(|r| r.uri).collect::<Vec<_>>()
                        };
                        if !plain.is_empty() {
                            s.subscribe(PRESENCE_SUB, &uris(plain), &categories, false)?;
                        }
                        if !with_context.is_empty() {
                            s.subscribe(
                                PRESENCE_CONTEXT_SUB,
                                &uris(with_context),
                                &categories,
                                true,
                            )?;
                        }
                        Ok(())
                    })
                    .await;
                if let Err(e) = result {
                    tracing::warn!(error = %e, "SIP presence subscription failed");
                }
            }
            _ => {
                let r = response(req, 489, "Bad Event", None);
                self.send(r).await;
            }
        }
    }

    async fn service(&mut self, req: &Message) {
        let user = self.user.clone().expect("registered");
        let session = self.session.clone().expect("registered");
        let content_type = req
            .header("Content-Type")
            .unwrap_or_default()
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        let engine = self.ctx.engine.clone();
        let body = req.body.clone();
        let outcome: Result<Message, Refusal> = match content_type.as_str() {
            "application/msrtc-category-publish+xml" => {
                let items = bodies::parse_publish(&body, &user);
                match items {
                    Err(BadBody(reason)) => Err((400, "Bad Request", reason, None)),
                    Ok(items) => {
                        let (u, ep) = (user.clone(), session.endpoint());
                        let names: Vec<String> = items.iter().map(|p| p.category.clone()).collect();
                        let r = self
                            .blocking(move || {
                                engine.publish(&u, Some(ep), &items)?;
                                engine.own_snapshot(&u)
                            })
                            .await;
                        match r {
                            Ok(snap) => {
                                let mut ok = response(req, 200, "OK", Some(&tag()));
                                ok.push_header("Content-Type", ROAMING_SELF_TYPE);
                                let views = owner_views(&snap.instances, &names);
                                ok.body =
                                    bodies::roaming_data(&user, &views, None, None).into_bytes();
                                Ok(ok)
                            }
                            Err(e) => Err(refusal(e)),
                        }
                    }
                }
            }
            "application/msrtc-setcontainermembers+xml" => {
                match bodies::parse_set_container_members(&body) {
                    Err(BadBody(reason)) => Err((400, "Bad Request", reason, None)),
                    Ok(updates) => {
                        let u = user.clone();
                        match self
                            .blocking(move || engine.update_containers(&u, &updates))
                            .await
                        {
                            Ok(changed) => {
                                let mut ok = response(req, 200, "OK", Some(&tag()));
                                ok.push_header("Content-Type", ROAMING_SELF_TYPE);
                                ok.body = bodies::roaming_data(&user, &[], Some(&changed), None)
                                    .into_bytes();
                                Ok(ok)
                            }
                            Err(e) => Err(refusal(e)),
                        }
                    }
                }
            }
            "application/msrtc-presence-setsubscriber+xml" => {
                match bodies::parse_set_subscribers(&body) {
                    Err(BadBody(reason)) => Err((400, "Bad Request", reason, None)),
                    Ok(users) => {
                        let u = user.clone();
                        let r = self
                            .blocking(move || {
                                users
                                    .iter()
                                    .try_for_each(|w| engine.acknowledge_subscriber(&u, w))
                            })
                            .await;
                        match r {
                            Ok(()) => Ok(response(req, 200, "OK", Some(&tag()))),
                            // MS-PRES: an unknown subscriber is a 400.
                            Err(e) => Err((400, "Bad Request", e.to_string(), None)),
                        }
                    }
                }
            }
            "application/soap+xml" => match bodies::parse_soap(&body) {
                Err(BadBody(reason)) => Err((400, "Bad Request", reason, None)),
                Ok(soap) => {
                    let u = user.clone();
                    let r = self
                        .blocking(move || {
                            let contact = match &soap {
                                SoapRequest::SetContact { uri, .. } => Some(uri.clone()),
                                _ => None,
                            };
                            engine
                                .change_contacts(&u, contact.as_ref(), move |l| match soap {
                                    SoapRequest::SetContact {
                                        uri,
                                        name,
                                        groups,
                                        subscribed,
                                    } => l
                                        .set_contact(uri, &name, &groups, subscribed, None)
                                        .map(|_| None),
                                    SoapRequest::DeleteContact { uri } => {
                                        l.delete_contact(&uri, None).map(|_| None)
                                    }
                                    SoapRequest::AddGroup { name } => {
                                        l.add_group(&name, None).map(Some)
                                    }
                                    SoapRequest::ModifyGroup { id, name } => {
                                        l.rename_group(id, &name, None).map(|_| None)
                                    }
                                    SoapRequest::DeleteGroup { id } => {
                                        l.delete_group(id, None).map(|_| None)
                                    }
                                })
                                .map(|(group, _)| group)
                        })
                        .await;
                    match r {
                        Ok(group) => {
                            let mut ok = response(req, 200, "OK", Some(&tag()));
                            if let Some(id) = group {
                                ok.push_header("Content-Type", "application/SOAP+xml");
                                ok.body = bodies::soap_add_group_result(id).into_bytes();
                            }
                            Ok(ok)
                        }
                        Err(e) => Err(refusal(e)),
                    }
                }
            },
            _ => Err((
                415,
                "Unsupported Media Type",
                format!("unsupported body type {content_type:?}"),
                None,
            )),
        };
        let reply = match outcome {
            Ok(r) => r,
            Err((code, reason, why, fault)) => {
                let mut r = diagnostics(response(req, code, reason, None), &why);
                if let Some(f) = fault {
                    r.push_header("Content-Type", FAULT_TYPE);
                    r.body = f.into_bytes();
                }
                r
            }
        };
        self.send(reply).await;
    }

    async fn sign_out(&mut self) {
        if let Some(task) = self.deliveries.take() {
            task.abort();
        }
        if let Some(s) = self.session.take() {
            let _ = tokio::task::spawn_blocking(move || s.sign_out()).await;
        }
        *self.dialogs.lock() = Dialogs::default();
    }
}

/// Owner views of the named categories, for a publish's roaming-self answer.
fn owner_views(
    instances: &[presence_model::CategoryInstance],
    names: &[String],
) -> Vec<Arc<presence_engine::CategoryView>> {
    let mut names: Vec<&String> = names.iter().collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .map(|n| {
            let own: Vec<_> = instances
                .iter()
                .filter(|i| &*i.key.category == n.as_str())
                .cloned()
                .collect();
            Arc::new(presence_engine::CategoryView::new(
                Arc::from(n.as_str()),
                true,
                own,
            ))
        })
        .collect()
}

/// What outgoing requests need: our address, the lifetime to announce, and the
/// connection's NTLM state to sign with.
struct Outbound {
    clock: presence_engine::Clock,
    local: String,
    expires: u32,
    auth: Arc<Mutex<State>>,
    target: String,
}

/// A BENOTIFY on `dialog` (its CSeq advanced), signed when the connection is.
fn benotify(
    dialog: &mut Dialog,
    user: &UserUri,
    ob: &Outbound,
    event: &str,
    content_type: &str,
    body: String,
) -> Vec<u8> {
    dialog.cseq += 1;
    let mut m = Message::request(Method::Benotify, dialog.target.clone())
        .with_header(
            "Via",
            format!("SIP/2.0/TCP {};branch=z9hG4bK{}", ob.local, tag()),
        )
        .with_header(
            "From",
            format!("<{}>;tag={}", user.to_sip(), dialog.local_tag),
        )
        .with_header("To", dialog.remote.clone())
        .with_header("Call-ID", dialog.call_id.clone())
        .with_header("CSeq", format!("{} BENOTIFY", dialog.cseq))
        .with_header("Event", event)
        .with_header(
            "Subscription-State",
            format!("active;expires={}", ob.expires),
        )
        .with_header("Content-Type", content_type);
    m.body = body.into_bytes();
    if let State::Established(a) = &mut *ob.auth.lock() {
        a.sign(&mut m, &ob.target);
    }
    m.to_bytes()
}

/// Forwards the session's deliveries to the client as BENOTIFYs on the dialogs they
/// belong to; deliveries for a dialog the client has not opened are dropped.
async fn deliver(
    session: Arc<Session>,
    user: UserUri,
    dialogs: Arc<Mutex<Dialogs>>,
    out: mpsc::Sender<Vec<u8>>,
    ended: Arc<tokio::sync::Notify>,
    ob: Outbound,
) {
    let subscriber = session.subscriber().clone();
    loop {
        let batch = subscriber.next().await;
        if batch.is_empty() {
            // The engine ended the endpoint.
            ended.notify_one();
            return;
        }
        for d in batch {
            let mut frames = Vec::new();
            {
                let mut dl = dialogs.lock();
                match &d {
                    Delivery::Categories { uri, views, .. } => {
                        if let Some(dialog) = dl.presence.as_mut() {
                            let body = bodies::watcher_categories(uri, views, ob.clock.now());
                            frames.push(benotify(
                                dialog,
                                &user,
                                &ob,
                                "presence",
                                CATEGORIES_TYPE,
                                body,
                            ));
                        }
                    }
                    Delivery::Own { update, .. } => {
                        let has_self = !update.categories.is_empty()
                            || update.containers.is_some()
                            || update.subscribers.is_some();
                        if has_self && let Some(dialog) = dl.roaming_self.as_mut() {
                            let body = bodies::roaming_data(
                                &user,
                                &update.categories,
                                update.containers.as_deref().map(|c| &c[..]),
                                update.subscribers.as_deref().map(|s| &s[..]),
                            );
                            frames.push(benotify(
                                dialog,
                                &user,
                                &ob,
                                "vnd-microsoft-roaming-self",
                                ROAMING_SELF_TYPE,
                                body,
                            ));
                        }
                        if let (Some(c), Some(dialog)) =
                            (&update.contacts, dl.roaming_contacts.as_mut())
                        {
                            let body = bodies::contact_list(c);
                            frames.push(benotify(
                                dialog,
                                &user,
                                &ob,
                                "vnd-microsoft-roaming-contacts",
                                ROAMING_CONTACTS_TYPE,
                                body,
                            ));
                        }
                    }
                    Delivery::Resync => {}
                }
            }
            if matches!(d, Delivery::Resync) {
                let s = session.clone();
                let _ = tokio::task::spawn_blocking(move || s.resync()).await;
            }
            for f in frames {
                if out.send(f).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Serves one connection until the client closes it or the server shuts down.
pub(crate) async fn run<S>(
    ctx: SipContext,
    stream: S,
    peer: SocketAddr,
    local: Option<SocketAddr>,
    mut shutdown: watch::Receiver<bool>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(OUT_QUEUE);
    let ended = Arc::new(tokio::sync::Notify::new());
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
    let limits = ctx.config.limits;
    let pre_register = sip_proto::Limits {
        max_body_bytes: limits.max_body_bytes.min(PRE_REGISTER_BODY_BYTES),
        ..limits
    };
    // Keep-alives come every `keep_alive`; twice that in silence means the client is gone.
    let idle = ctx.config.keep_alive * 2;
    let register_by = tokio::time::Instant::now() + REGISTER_DEADLINE;
    let mut conn = Conn {
        ctx,
        out: tx,
        user: None,
        session: None,
        dialogs: Arc::default(),
        local: local.map(|a| a.to_string()).unwrap_or_default(),
        deliveries: None,
        auth: Arc::new(Mutex::new(State::None)),
        ended: ended.clone(),
    };
    let max_buffer = limits.max_header_bytes + limits.max_body_bytes + 4;
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 16 * 1024];
    'read: loop {
        let registered = conn.session.is_some();
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
            _ = shutdown.changed() => break,
            _ = ended.notified() => {
                tracing::info!(%peer, "endpoint ended; closing the SIP connection");
                break;
            }
        };
        buf.extend_from_slice(&chunk[..n]);
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
                        Some(n) => {
                            buf.drain(..n);
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
