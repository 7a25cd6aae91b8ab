//! Notifications: the engine's deliveries to one client, as BENOTIFYs (or NOTIFYs)
//! on the dialogs they belong to.
//!
//! - Watched presentities go to every presence dialog that lists them, as one RLMI
//!   batch per dialog and delivery batch (several presentities per message when
//!   several changed).
//! - The owner's own data goes to the roaming-self dialog, and contact-list changes
//!   to the roaming-contacts dialog as a `contactDelta` from the list that dialog's
//!   client has.

use crate::auth::State;
use crate::bodies::{self, ROAMING_CONTACTS_TYPE, ROAMING_SELF_TYPE};
use crate::connection::Local;
use crate::dialogs::{Dialog, Dialogs};
use crate::reply::tag;
use crate::rlmi::{self, Resource};
use crate::subscribe::{PRESENCE, ROAMING_CONTACTS, ROAMING_SELF};
use parking_lot::Mutex;
use presence_engine::{Delivery, Session};
use presence_model::UserUri;
use sip_proto::{Message, Method};
use std::sync::Arc;
use tokio::sync::mpsc;

/// What outgoing requests need: our address, and the connection's NTLM state to
/// sign with.
pub(crate) struct Outbound {
    pub clock: presence_engine::Clock,
    pub local: Local,
    pub auth: Arc<Mutex<State>>,
    /// The server's NTLM target name.
    pub target: String,
}

impl Outbound {
    /// The wire form of `m`, signed when the connection is authenticated.
    pub fn signed(&self, mut m: Message) -> Vec<u8> {
        if let State::Established(a) = &mut *self.auth.lock() {
            a.sign(&mut m, &self.target);
        }
        m.to_bytes()
    }

    /// A notification on `dialog` (its CSeq advanced): BENOTIFY for clients that take
    /// it, NOTIFY otherwise. `state` is the Subscription-State value.
    pub fn notify(
        &self,
        dialog: &mut Dialog,
        user: &UserUri,
        event: &str,
        state: &str,
        content: Option<(&str, String)>,
    ) -> Vec<u8> {
        dialog.cseq += 1;
        if let Some(lifetime) = dialog.autoextend {
            dialog.expires_at = tokio::time::Instant::now() + lifetime;
        }
        let method = if dialog.benotify {
            Method::Benotify
        } else {
            Method::Notify
        };
        let mut m = Message::request(method.clone(), dialog.target.clone())
            .with_header(
                "Via",
                format!(
                    "SIP/2.0/{} {};branch=z9hG4bK{}",
                    self.local.transport.via(),
                    self.local.addr,
                    tag()
                ),
            )
            .with_header(
                "From",
                format!("<{}>;tag={}", user.to_sip(), dialog.local_tag),
            )
            .with_header("To", dialog.remote.clone())
            .with_header("Call-ID", dialog.call_id.clone())
            .with_header("CSeq", format!("{} {}", dialog.cseq, method.as_str()))
            .with_header("Contact", self.local.contact())
            .with_header("Event", event)
            .with_header("Subscription-State", state);
        if let Some((content_type, body)) = content {
            m.push_header("Content-Type", content_type);
            m.body = body.into_bytes();
        }
        self.signed(m)
    }

    /// A notification with a body on a dialog that stays active.
    fn update(
        &self,
        dialog: &mut Dialog,
        user: &UserUri,
        event: &str,
        content_type: &str,
        body: String,
    ) -> Vec<u8> {
        let state = active(dialog);
        self.notify(dialog, user, event, &state, Some((content_type, body)))
    }
}

/// `active;expires=N` with the seconds left in the dialog.
pub(crate) fn active(dialog: &Dialog) -> String {
    let left = dialog
        .expires_at
        .saturating_duration_since(tokio::time::Instant::now());
    format!("active;expires={}", left.as_secs())
}

/// The messages one batch of deliveries makes, on the dialogs open now.
fn frames(dl: &mut Dialogs, user: &UserUri, ob: &Outbound, batch: &[Delivery]) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    let now = ob.clock.now();
    // Each watched presentity's document, rendered once for all dialogs.
    let watched: Vec<(&UserUri, String)> = batch
        .iter()
        .filter_map(|d| match d {
            Delivery::Categories { uri, views, .. } => {
                Some((uri, bodies::watcher_categories(uri, views, now)))
            }
            _ => None,
        })
        .collect();
    if !watched.is_empty() {
        for p in &mut dl.presence {
            let parts: Vec<Resource> = watched
                .iter()
                .filter(|(uri, _)| p.resources.contains(*uri))
                .map(|(uri, doc)| Resource {
                    uri,
                    categories: Some(doc),
                })
                .collect();
            if parts.is_empty() {
                continue;
            }
            p.rlmi_version += 1;
            let (content_type, body) = rlmi::batch(user, p.rlmi_version, false, &parts);
            frames.push(ob.update(&mut p.dialog, user, PRESENCE, &content_type, body));
        }
    }
    for d in batch {
        let Delivery::Own { update, .. } = d else {
            continue;
        };
        let has_self = !update.categories.is_empty()
            || update.containers.is_some()
            || update.subscribers.is_some();
        if has_self && let Some(dialog) = dl.roaming_self.as_mut() {
            let body = bodies::roaming_data(
                user,
                &update.categories,
                update.containers.as_deref().map(|c| &c[..]),
                update.subscribers.as_deref().map(|s| &s[..]),
            );
            frames.push(ob.update(dialog, user, ROAMING_SELF, ROAMING_SELF_TYPE, body));
        }
        if let (Some(list), Some(c)) = (&update.contacts, dl.roaming_contacts.as_mut())
            // Older or equal lists (queued before the client got its full list) are
            // nothing new to it.
            && list.delta_num > c.sent.delta_num
        {
            let body = bodies::contact_delta(&c.sent, list, c.deleted_groups);
            c.sent = list.clone();
            frames.push(ob.update(
                &mut c.dialog,
                user,
                ROAMING_CONTACTS,
                ROAMING_CONTACTS_TYPE,
                body,
            ));
        }
    }
    frames
}

/// Forwards the session's deliveries to the client until the engine ends the
/// endpoint or the connection goes.
pub(crate) async fn deliver(
    session: Arc<Session>,
    user: UserUri,
    dialogs: Arc<Mutex<Dialogs>>,
    out: mpsc::Sender<Vec<u8>>,
    ended: Arc<tokio::sync::Notify>,
    gate: Arc<tokio::sync::Mutex<()>>,
    ob: Arc<Outbound>,
) {
    let subscriber = session.subscriber().clone();
    loop {
        let batch = subscriber.next().await;
        if batch.is_empty() {
            // The engine ended the endpoint.
            ended.notify_one();
            return;
        }
        // Wait for a request being handled: its answer goes first.
        let turn = gate.lock().await;
        let frames = frames(&mut dialogs.lock(), &user, &ob, &batch);
        for f in frames {
            if out.send(f).await.is_err() {
                return;
            }
        }
        drop(turn);
        if batch.iter().any(|d| matches!(d, Delivery::Resync)) {
            let s = session.clone();
            let _ = tokio::task::spawn_blocking(move || s.resync()).await;
        }
    }
}
