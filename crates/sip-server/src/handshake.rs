//! The NTLM handshake (MS-SIPAE) on REGISTER, as a function from the request and the
//! connection's authentication state to an outcome: authenticated (the REGISTER goes
//! on), or the answer to send (a challenge or a refusal). It never touches a socket.

use crate::SipContext;
use crate::auth::{self, Association, State};
use crate::ntlm;
use crate::reply::{refuse, response, tag};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use parking_lot::Mutex;
use presence_model::UserUri;
use rand::Rng;
use sip_proto::{Message, NameAddr};

pub(crate) enum Outcome {
    /// The connection is authenticated: handle the REGISTER.
    Authenticated,
    /// Send this (a 401 challenge, or a refusal) and stop.
    Answer(Message),
}

/// An unsigned 401 (the handshake's answers are never signed).
fn challenge(req: &Message, www: String) -> Outcome {
    let mut r = response(req, 401, "Unauthorized", Some(&tag()));
    r.push_header("WWW-Authenticate", www);
    Outcome::Answer(r)
}

/// The first challenge: which scheme, realm and target.
fn ask_for_ntlm(ctx: &SipContext, state: &Mutex<State>, req: &Message) -> Outcome {
    *state.lock() = State::None;
    let www = format!(
        "NTLM realm=\"{}\", targetname=\"{}\", version=4",
        auth::REALM,
        ctx.config.target_name
    );
    challenge(req, www)
}

fn windows_filetime_now() -> u64 {
    (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
        / 100) as u64
        + 116_444_736_000_000_000
}

/// Runs one step of the handshake for a REGISTER.
pub(crate) async fn handshake(ctx: &SipContext, state: &Mutex<State>, req: &Message) -> Outcome {
    let target = &ctx.config.target_name;
    let Ok(user) = UserUri::parse(NameAddr::parse(req.header("From").unwrap_or_default()).uri)
    else {
        return Outcome::Answer(refuse(req, 400, "Bad Request", "From is not a user URI"));
    };
    if ctx.accounts.sign_in_blocked(&user) {
        return Outcome::Answer(refuse(
            req,
            403,
            "Forbidden",
            "too many failed sign-ins; try again later",
        ));
    }
    let Some(p) = req.header("Authorization").map(auth::params) else {
        return ask_for_ntlm(ctx, state, req);
    };
    let data = p.get("gssapi-data").cloned().unwrap_or_default();
    if data.is_empty() {
        let challenge_bytes: [u8; 8] = rand::thread_rng().r#gen();
        let opaque = format!("{:08X}", rand::thread_rng().r#gen::<u32>());
        let msg = ntlm::challenge_message(
            &challenge_bytes,
            "PRESENCED",
            "PRESENCED",
            user.domain(),
            windows_filetime_now(),
        );
        let www = format!(
            "NTLM opaque=\"{opaque}\", gssapi-data=\"{}\", targetname=\"{target}\", realm=\"{}\", version=4",
            BASE64.encode(msg),
            auth::REALM
        );
        *state.lock() = State::Challenged {
            opaque,
            challenge: challenge_bytes,
        };
        return challenge(req, www);
    }
    let pending = match &*state.lock() {
        State::Challenged { opaque, challenge } if p.get("opaque") == Some(opaque) => {
            Some((opaque.clone(), *challenge))
        }
        _ => None,
    };
    let Some((opaque, challenge_bytes)) = pending else {
        return ask_for_ntlm(ctx, state, req);
    };
    let parsed = BASE64
        .decode(data.as_bytes())
        .ok()
        .and_then(|b| ntlm::parse_authenticate(&b).ok());
    let Some(authenticate) = parsed else {
        return Outcome::Answer(refuse(req, 400, "Bad Request", "unreadable NTLM message"));
    };
    let local = user.as_str().split('@').next().unwrap_or_default();
    let name_matches = authenticate.user.eq_ignore_ascii_case(user.as_str())
        || authenticate.user.eq_ignore_ascii_case(local);
    let accounts = ctx.accounts.clone();
    let u = user.clone();
    let hash = tokio::task::spawn_blocking(move || accounts.nt_hash(&u)).await;
    let forbidden = |reason: &str| Outcome::Answer(refuse(req, 403, "Forbidden", reason));
    let keys = match hash {
        Ok(Ok(Some(h))) if name_matches => ntlm::verify(&authenticate, &h, &challenge_bytes).ok(),
        Ok(Err(accounts::AccountError::NoLocalPassword(_))) => {
            *state.lock() = State::None;
            return forbidden(
                "this user's password lives only in the directory; SIP NTLM cannot verify it",
            );
        }
        _ => None,
    };
    let Some(keys) = keys else {
        // Only real accounts are counted: made-up names cost no memory.
        if matches!(hash, Ok(Ok(Some(_)))) {
            ctx.accounts.record_failure(&user);
        }
        *state.lock() = State::None;
        return forbidden("wrong user name or password");
    };
    ctx.accounts.clear_failures(&user);
    let mut association = Association::new(user, opaque, keys);
    // From version 4 on, the REGISTER carrying AUTHENTICATE is signed already.
    if p.contains_key("response") && !association.verify(req, target) {
        *state.lock() = State::None;
        return forbidden("invalid message signature");
    }
    *state.lock() = State::Established(association);
    Outcome::Authenticated
}
