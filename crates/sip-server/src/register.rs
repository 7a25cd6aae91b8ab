//! REGISTER: signs the connection's user in as an endpoint, refreshes the
//! registration, or signs out (`Expires: 0`).

use crate::connection::Conn;
use crate::errors;
use crate::reply::{refuse, response, tag};
use presence_engine::EngineError;
use presence_model::UserUri;
use sip_proto::{Message, NameAddr};
use std::sync::Arc;
use std::time::Duration;

/// Events the server offers; SIPE splits this list on commas without trimming.
pub(crate) const ALLOW_EVENTS: &str = "vnd-microsoft-provisioning,vnd-microsoft-roaming-contacts,vnd-microsoft-roaming-ACL,presence,presence.wpending,vnd-microsoft-roaming-self,vnd-microsoft-provisioning-v2";

pub(crate) async fn register(conn: &mut Conn, req: &Message) -> Message {
    let from = req.header("From").unwrap_or_default();
    let Ok(user) = UserUri::parse(NameAddr::parse(from).uri) else {
        return refuse(req, 400, "Bad Request", "From is not a user URI");
    };
    let max = conn.ctx.config.register_expires;
    let expires: u32 = req
        .header("Expires")
        .and_then(|e| e.trim().parse().ok())
        .unwrap_or(max)
        .min(max);
    if conn.user.as_ref().is_some_and(|current| current != &user) {
        return refuse(req, 403, "Forbidden", "one user per connection");
    }
    let other_user =
        matches!(&*conn.ob.auth.lock(), crate::auth::State::Established(a) if a.user != user);
    if other_user {
        return refuse(req, 403, "Forbidden", "authenticated as another user");
    }
    let to_tag = tag();
    if expires == 0 {
        conn.sign_out().await;
        let mut r = response(req, 200, "OK", Some(&to_tag));
        r.push_header("Expires", "0");
        return r;
    }
    let ttl = Duration::from_secs(expires as u64);
    if let Some(s) = conn.session.clone() {
        let live = conn
            .blocking(move || Ok(s.refresh(ttl)))
            .await
            .unwrap_or(false);
        if !live {
            // The registration had ended (expiry, directory): sign in anew.
            conn.sign_out().await;
        }
    }
    if conn.session.is_none() {
        let accounts = conn.ctx.accounts.clone();
        let engine = conn.ctx.engine.clone();
        let u = user.clone();
        let signed_in = conn
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
                conn.start_deliveries(s.clone(), user.clone());
                conn.session = Some(s);
                conn.user = Some(user);
            }
            Err(e) => return errors::Refusal::from(e).into_response(req),
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
            conn.ctx.config.keep_alive.as_secs()
        ),
    );
    r
}

#[cfg(test)]
mod tests {
    use crate::testing::*;
    use sip_proto::Method;

    #[tokio::test]
    async fn sign_in_refresh_and_sign_out() {
        let fx = Fixture::new(&["alice@example.com", "bob@example.com"]);
        let (mut conn, _out) = fx.conn();
        let reg = |user: &str, expires: Option<&'static str>| {
            let headers: Vec<(&str, &str)> = expires.map(|e| ("Expires", e)).into_iter().collect();
            request(Method::Register, user, "reg", None, &headers, "")
        };
        let early = request(
            Method::Subscribe,
            "alice@example.com",
            "x",
            None,
            &[("Event", "presence")],
            "",
        );
        assert_eq!(
            status(&conn.answer(&early).await.unwrap()),
            403,
            "register first"
        );
        let ok = conn
            .answer(&reg("alice@example.com", Some("99999")))
            .await
            .unwrap();
        assert_eq!((status(&ok), ok.header("Expires")), (200, Some("3600")));
        assert!(
            ok.header("Allow-Events")
                .unwrap()
                .contains("vnd-microsoft-roaming-contacts")
        );
        let alice = uri("alice@example.com");
        assert_eq!(fx.ctx.engine.endpoints_of(&alice).len(), 1);
        let again = conn.answer(&reg("alice@example.com", None)).await.unwrap();
        assert_eq!(status(&again), 200);
        assert_eq!(
            fx.ctx.engine.endpoints_of(&alice).len(),
            1,
            "a refresh, not a new endpoint"
        );
        let other = conn.answer(&reg("bob@example.com", None)).await.unwrap();
        assert_eq!(status(&other), 403, "one user per connection");
        let ghost = fx
            .conn()
            .0
            .answer(&reg("ghost@example.com", None))
            .await
            .unwrap();
        assert_eq!(status(&ghost), 404);
        let bye = conn
            .answer(&reg("alice@example.com", Some("0")))
            .await
            .unwrap();
        assert_eq!(status(&bye), 200);
        assert!(fx.ctx.engine.endpoints_of(&alice).is_empty());
    }
}
