//! SUBSCRIBE: the roaming-contacts, roaming-self and batched presence subscriptions,
//! their lifetimes, and the one-shot events SIPE asks for.
//!
//! Lifetimes (RFC 6665): `Expires` is honoured between [`MIN_EXPIRES`] (423 below
//! it) and the configured maximum (which is also the default); a refresh in the
//! dialog extends it; an expired dialog gets a final notification with
//! `Subscription-State: terminated`, and `Expires: 0` ends a dialog at once. A
//! SUBSCRIBE naming a dialog the server no longer has (it expired) opens it anew,
//! with a full snapshot, so a client that re-subscribes late still gets everything.

use crate::bodies::{self, BadBody, ROAMING_CONTACTS_TYPE};
use crate::connection::Conn;
use crate::dialogs::{AUTOEXTEND, ContactsDialog, Dialog, PresenceDialog, supports};
use crate::errors::Refusal;
use crate::notify::active;
use crate::register::ALLOW_EVENTS;
use crate::reply::{refuse, response, tag, token};
use crate::rlmi::{self, Resource};
use presence_engine::Target;
use presence_model::UserUri;
use sip_proto::{Message, NameAddr};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

pub(crate) const PRESENCE: &str = "presence";
pub(crate) const ROAMING_SELF: &str = "vnd-microsoft-roaming-self";
pub(crate) const ROAMING_CONTACTS: &str = "vnd-microsoft-roaming-contacts";
/// The shortest subscription granted, in seconds; asking for less gets 423.
pub const MIN_EXPIRES: u32 = 60;

/// What a SUBSCRIBE asked for, once its headers are read.
struct Ask {
    /// The granted lifetime in seconds (0: end the subscription).
    expires: u32,
    lifetime: Duration,
    /// Our tag: the dialog's, or a new one for a new dialog.
    local_tag: String,
    /// Whether the request named a dialog (a refresh, or a late re-subscribe).
    in_dialog: bool,
}

pub(crate) async fn subscribe(conn: &mut Conn, req: &Message) -> Message {
    let event = token(req, "Event");
    let max = conn.ctx.config.subscribe_expires;
    let expires = match req.header("Expires").map(|e| e.trim().parse::<u32>()) {
        None => max,
        Some(Ok(n)) => n.min(max),
        Some(Err(_)) => return refuse(req, 400, "Bad Request", "Expires is not a number"),
    };
    let min = MIN_EXPIRES.min(max);
    if expires != 0 && expires < min {
        let mut r = refuse(req, 423, "Interval Too Brief", "subscription too short");
        r.push_header("Min-Expires", min.to_string());
        return r;
    }
    let existing_tag = req
        .header("To")
        .and_then(|t| NameAddr::parse(t).tag())
        .map(str::to_string);
    let ask = Ask {
        expires,
        lifetime: Duration::from_secs(expires.into()),
        in_dialog: existing_tag.is_some(),
        local_tag: existing_tag.unwrap_or_else(tag),
    };
    let mut r = response(req, 200, "OK", Some(&ask.local_tag));
    r.push_header("Event", req.header("Event").unwrap_or_default());
    r.push_header("Expires", expires.to_string());
    r.push_header("Contact", conn.ob.local.contact());
    for ext in ["ms-benotify", "ms-piggyback-first-notify"] {
        r.push_header("Supported", ext);
    }
    if supports(req, AUTOEXTEND) {
        r.push_header("Supported", AUTOEXTEND);
    }
    match event.as_str() {
        // One-shot or legacy events: nothing to keep (SIPE needs only the 200).
        "vnd-microsoft-provisioning-v2"
        | "vnd-microsoft-provisioning"
        | "presence.wpending"
        | "vnd-microsoft-roaming-acl" => r,
        ROAMING_CONTACTS => roaming_contacts(conn, req, ask, r).await,
        ROAMING_SELF => roaming_self(conn, req, ask, r).await,
        PRESENCE => presence(conn, req, ask, r)
            .await
            .unwrap_or_else(|refusal| refusal.into_response(req)),
        _ => {
            let mut r = response(req, 489, "Bad Event", None);
            r.push_header("Allow-Events", ALLOW_EVENTS);
            r
        }
    }
}

fn terminated(mut r: Message) -> Message {
    r.push_header("Subscription-State", "terminated");
    r
}

async fn roaming_contacts(conn: &mut Conn, req: &Message, ask: Ask, mut r: Message) -> Message {
    if ask.expires == 0 {
        conn.dialogs.lock().roaming_contacts = None;
        return terminated(r);
    }
    {
        let mut dl = conn.dialogs.lock();
        if let Some(c) = dl.roaming_contacts.as_mut()
            && ask.in_dialog
            && c.dialog.matches(req)
        {
            c.dialog.refresh(req, ask.lifetime);
            return r;
        }
    }
    // A new dialog: the full list rides in the answer (MS-SIP piggy-backed first
    // notification); every later change is a delta from it.
    let (engine, user) = (
        conn.ctx.engine.clone(),
        conn.user.clone().expect("registered"),
    );
    let snapshot = match conn.blocking(move || engine.own_snapshot(&user)).await {
        Ok(s) => s,
        Err(e) => return Refusal::from(e).into_response(req),
    };
    let list = Arc::new(snapshot.contacts);
    let dialog = Dialog::new(req, &ask.local_tag, ask.lifetime);
    r.push_header("Subscription-State", active(&dialog));
    r.push_header("ms-piggyback-cseq", dialog.cseq.to_string());
    r.push_header("Content-Type", ROAMING_CONTACTS_TYPE);
    r.body = bodies::contact_list(&list).into_bytes();
    conn.dialogs.lock().roaming_contacts = Some(ContactsDialog::new(req, dialog, list));
    // Contact-list changes reach the endpoint through its self view.
    let s = conn.session.clone().expect("registered");
    let _ = conn.blocking(move || s.subscribe_self()).await;
    r
}

async fn roaming_self(conn: &mut Conn, req: &Message, ask: Ask, r: Message) -> Message {
    if ask.expires == 0 {
        conn.dialogs.lock().roaming_self = None;
        return terminated(r);
    }
    {
        let mut dl = conn.dialogs.lock();
        if let Some(d) = dl.roaming_self.as_mut()
            && ask.in_dialog
            && d.matches(req)
        {
            d.refresh(req, ask.lifetime);
            return r;
        }
        dl.roaming_self = Some(Dialog::new(req, &ask.local_tag, ask.lifetime));
    }
    // The full roaming data follows, after this answer, as the dialog's first
    // BENOTIFY.
    let s = conn.session.clone().expect("registered");
    let _ = conn.blocking(move || s.subscribe_self()).await;
    r
}

async fn presence(
    conn: &mut Conn,
    req: &Message,
    ask: Ask,
    mut r: Message,
) -> Result<Message, Refusal> {
    let session = conn.session.clone().expect("registered");
    let user = conn.user.clone().expect("registered");
    if ask.expires == 0 {
        let gone = {
            let mut dl = conn.dialogs.lock();
            let i = dl.presence.iter().position(|p| p.dialog.matches(req));
            i.map(|i| dl.presence.remove(i))
        };
        if let Some(p) = gone {
            let _ = conn
                .blocking(move || Ok(session.unsubscribe(&p.engine_id)))
                .await;
        }
        return Ok(terminated(r));
    }
    let (resources, categories) = if req.body.is_empty() {
        (Vec::new(), Vec::new())
    } else {
        bodies::parse_batch_sub(&req.body).map_err(|BadBody(why)| Refusal::bad_body(why))?
    };
    let (engine_id, before, is_new) = {
        let mut dl = conn.dialogs.lock();
        let known = dl
            .presence_of(req)
            .filter(|_| ask.in_dialog)
            .map(|p| (p.engine_id.clone(), p.resources.clone()));
        match known {
            Some((id, resources)) => (id, resources, false),
            None => (dl.new_engine_id(), BTreeSet::new(), true),
        }
    };
    let mut all: BTreeSet<UserUri> = before.clone();
    all.extend(resources.iter().map(|r| r.uri.clone()));
    let max = conn.ctx.engine.config().max_targets_per_subscription;
    if all.len() > max {
        return Err(Refusal {
            code: 413,
            reason: "Request Entity Too Large",
            why: format!("a presence subscription holds at most {max} presentities"),
            fault: None,
        });
    }
    if !is_new && resources.is_empty() {
        // A refresh without a list. One with a list (SIPE's refresh names every
        // buddy) is answered with the full state of the dialog below, as SIPE reads
        // that answer's parts to know whom to name in its next refresh.
        if let Some(p) = conn.dialogs.lock().presence_of(req) {
            p.dialog.refresh(req, ask.lifetime);
        }
        return Ok(r);
    }
    let targets: Vec<Target> = all
        .iter()
        .map(|uri| Target {
            uri: uri.clone(),
            context: resources.iter().any(|r| r.context && &r.uri == uri),
        })
        .collect();
    let id = engine_id.clone();
    let s = session.clone();
    let (result, snapshots) = conn
        .blocking(move || s.subscribe_returning(&id, &targets, &categories))
        .await?;
    let now = conn.ob.clock.now();
    let docs: Vec<(UserUri, String)> = snapshots
        .iter()
        .map(|(uri, views)| (uri.clone(), bodies::watcher_categories(uri, views, now)))
        .collect();
    let parts: Vec<Resource> = docs
        .iter()
        .map(|(uri, doc)| Resource {
            uri,
            categories: Some(doc),
        })
        .chain(result.unknown.iter().map(|uri| Resource {
            uri,
            categories: None,
        }))
        .collect();
    let mut dl = conn.dialogs.lock();
    let p = match dl.presence_of(req).filter(|_| !is_new) {
        Some(p) => p,
        None => {
            dl.presence.push(PresenceDialog {
                dialog: Dialog::new(req, &ask.local_tag, ask.lifetime),
                engine_id,
                resources: BTreeSet::new(),
                rlmi_version: 0,
            });
            dl.presence.last_mut().expect("just pushed")
        }
    };
    p.dialog.refresh(req, ask.lifetime);
    p.resources = all;
    p.rlmi_version += 1;
    // The state of every presentity in the dialog rides in the answer as one RLMI
    // batch (SIPE also reads the batch to know whom to re-subscribe to later).
    let (content_type, body) = rlmi::batch(&user, p.rlmi_version, true, &parts);
    r.push_header("Subscription-State", active(&p.dialog));
    r.push_header("ms-piggyback-cseq", p.dialog.cseq.to_string());
    r.push_header("Content-Type", content_type);
    r.body = body.into_bytes();
    Ok(r)
}

#[cfg(test)]
mod tests {
    use crate::testing::*;
    use sip_proto::Method;

    const PRESENCE: [(&str, &str); 3] = [
        ("Event", "presence"),
        ("Supported", "ms-benotify"),
        ("Content-Type", "application/msrtc-adrl-categorylist+xml"),
    ];

    fn batch(uris: &[&str], context: bool) -> String {
        let context = if context {
            "><context/></resource>"
        } else {
            "/>"
        };
        let resources: String = uris
            .iter()
            .map(|u| format!("<resource uri=\"sip:{u}\"{context}"))
            .collect();
        format!(
            "<batchSub xmlns=\"http://schemas.microsoft.com/2006/01/sip/batch-subscribe\" uri=\"sip:alice@example.com\" name=\"\">\
             <action name=\"subscribe\" id=\"1\"><adhocList>{resources}</adhocList>\
             <categoryList xmlns=\"http://schemas.microsoft.com/2006/09/sip/categorylist\"><category name=\"state\"/></categoryList></action></batchSub>"
        )
    }

    fn with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
        PRESENCE.iter().chain(extra).copied().collect()
    }

    #[tokio::test]
    async fn lifetimes_are_bounded() {
        let fx = Fixture::new(&["alice@example.com", "bob@example.com"]);
        let (mut conn, _out) = fx.registered("alice@example.com").await;
        let body = batch(&["bob@example.com"], false);
        let mut ask = async |call: &str, extra: &[(&'static str, &'static str)]| {
            let req = request(
                Method::Subscribe,
                "alice@example.com",
                call,
                None,
                &with(extra),
                &body,
            );
            conn.answer(&req).await.unwrap()
        };
        let r = ask("a", &[("Expires", "59")]).await;
        assert_eq!((status(&r), r.header("Min-Expires")), (423, Some("60")));
        let r = ask("b", &[("Expires", "60")]).await;
        assert_eq!((status(&r), r.header("Expires")), (200, Some("60")));
        let r = ask("c", &[("Expires", "7200")]).await;
        assert_eq!(r.header("Expires"), Some("3600"), "capped at the maximum");
        let r = ask("d", &[]).await;
        assert_eq!(r.header("Expires"), Some("3600"), "the default");
        assert!(
            r.header("Subscription-State")
                .is_some_and(|s| s.starts_with("active;expires=")),
            "{r:?}"
        );
        let r = ask("e", &[("Expires", "soon")]).await;
        assert_eq!(status(&r), 400);
        let req = request(
            Method::Subscribe,
            "alice@example.com",
            "f",
            None,
            &[("Event", "nonsense")],
            "",
        );
        let r = conn.answer(&req).await.unwrap();
        assert_eq!(status(&r), 489);
        assert!(r.header("Allow-Events").unwrap().contains("presence"));
    }

    #[tokio::test]
    async fn a_dialog_grows_and_separate_dialogs_stay_apart() {
        let fx = Fixture::new(&["alice@example.com", "bob@example.com", "carol@example.com"]);
        let (mut conn, _out) = fx.registered("alice@example.com").await;
        let user = "alice@example.com";
        let req = request(
            Method::Subscribe,
            user,
            "d1",
            None,
            &PRESENCE,
            &batch(&["bob@example.com"], false),
        );
        let first = conn.answer(&req).await.unwrap();
        assert_eq!(status(&first), 200);
        assert!(
            first
                .header("Content-Type")
                .unwrap()
                .starts_with("multipart/related;")
        );
        assert!(
            body(&first).contains(
                "<resource uri=\"sip:bob@example.com\"><instance id=\"0\" state=\"active\""
            )
        );
        let tag = to_tag(&first);

        // In the dialog, carol is added (with a context: alice just put her on her
        // list); the answer has both.
        let req = request(
            Method::Subscribe,
            user,
            "d1",
            Some(&tag),
            &PRESENCE,
            &batch(&["carol@example.com"], true),
        );
        let more = conn.answer(&req).await.unwrap();
        assert_eq!(to_tag(&more), tag, "the same dialog");
        for who in ["bob", "carol"] {
            assert!(
                body(&more).contains(&format!("uri=\"sip:{who}@example.com\">")),
                "{who}"
            );
        }
        let carol = fx
            .ctx
            .engine
            .own_snapshot(&uri("carol@example.com"))
            .unwrap();
        assert!(
            carol.subscribers.iter().any(|s| s.user == uri(user)),
            "alice is in carol's subscriber list"
        );
        let bob = fx.ctx.engine.own_snapshot(&uri("bob@example.com")).unwrap();
        assert!(bob.subscribers.is_empty(), "no context for bob");

        // A refresh naming a resource again gets the dialog's full state (SIPE reads
        // the parts to know whom to name next time); one without a body only a 200.
        let req = request(
            Method::Subscribe,
            user,
            "d1",
            Some(&tag),
            &PRESENCE,
            &batch(&["bob@example.com"], false),
        );
        let refresh = conn.answer(&req).await.unwrap();
        assert_eq!(status(&refresh), 200);
        for who in ["bob", "carol"] {
            assert!(
                body(&refresh).contains(&format!("uri=\"sip:{who}@example.com\">")),
                "{who}"
            );
        }
        let req = request(Method::Subscribe, user, "d1", Some(&tag), &PRESENCE, "");
        let bare = conn.answer(&req).await.unwrap();
        assert_eq!(status(&bare), 200);
        assert!(bare.body.is_empty());

        // A second dialog is a subscription of its own.
        let req = request(
            Method::Subscribe,
            user,
            "d2",
            None,
            &PRESENCE,
            &batch(&["bob@example.com"], false),
        );
        let d2 = conn.answer(&req).await.unwrap();
        assert_ne!(to_tag(&d2), tag);
        {
            let dl = conn.dialogs.lock();
            let sets: Vec<usize> = dl.presence.iter().map(|p| p.resources.len()).collect();
            assert_eq!(sets, vec![2, 1]);
        }
        // Ending d2 leaves d1.
        let req = request(
            Method::Subscribe,
            user,
            "d2",
            Some(&to_tag(&d2)),
            &with(&[("Expires", "0")]),
            "",
        );
        let bye = conn.answer(&req).await.unwrap();
        assert_eq!(bye.header("Subscription-State"), Some("terminated"));
        let dl = conn.dialogs.lock();
        assert_eq!(dl.presence.len(), 1);
        assert_eq!(dl.presence[0].dialog.call_id, "d1");
    }

    #[tokio::test]
    async fn unknown_presentities_are_listed_as_terminated_and_size_is_bounded() {
        let fx = Fixture::new(&["alice@example.com"]);
        let (mut conn, _out) = fx.registered("alice@example.com").await;
        let req = request(
            Method::Subscribe,
            "alice@example.com",
            "d",
            None,
            &PRESENCE,
            &batch(&["ghost@example.com"], false),
        );
        let r = conn.answer(&req).await.unwrap();
        assert_eq!(status(&r), 200);
        assert!(body(&r).contains("<resource uri=\"sip:ghost@example.com\"><instance id=\"0\" state=\"terminated\" reason=\"noresource\"/>"), "{}", body(&r));
        let many: Vec<String> = (0..1001).map(|i| format!("u{i}@example.com")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let req = request(
            Method::Subscribe,
            "alice@example.com",
            "big",
            None,
            &PRESENCE,
            &batch(&many, false),
        );
        let r = conn.answer(&req).await.unwrap();
        assert_eq!(status(&r), 413);
        let req = request(
            Method::Subscribe,
            "alice@example.com",
            "bad",
            None,
            &PRESENCE,
            "<batchSub/>",
        );
        assert_eq!(status(&conn.answer(&req).await.unwrap()), 400);
    }

    #[tokio::test]
    async fn roaming_contacts_answers_with_the_full_list_once() {
        let fx = Fixture::new(&["alice@example.com"]);
        let (mut conn, _out) = fx.registered("alice@example.com").await;
        let headers = [
            ("Event", "vnd-microsoft-roaming-contacts"),
            ("Supported", "ms-benotify"),
            ("Supported", "com.microsoft.autoextend"),
        ];
        let req = request(
            Method::Subscribe,
            "alice@example.com",
            "rc",
            None,
            &headers,
            "",
        );
        let r = conn.answer(&req).await.unwrap();
        assert_eq!(status(&r), 200);
        assert!(
            r.headers_named("Supported")
                .any(|s| s == "com.microsoft.autoextend"),
            "echoed when asked"
        );
        assert_eq!(r.header("ms-piggyback-cseq"), Some("1"));
        assert!(body(&r).starts_with("<contactList deltaNum=\"1\">"));
        let req = request(
            Method::Subscribe,
            "alice@example.com",
            "rc",
            Some(&to_tag(&r)),
            &headers,
            "",
        );
        let refresh = conn.answer(&req).await.unwrap();
        assert!(refresh.body.is_empty(), "a refresh repeats nothing");
    }
}
