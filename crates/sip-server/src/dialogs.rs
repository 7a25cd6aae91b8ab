//! The subscription dialogs of one connection: roaming-self, roaming-contacts and
//! any number of presence dialogs, each with its own lifetime.
//!
//! Every SUBSCRIBE dialog is its own subscription, as OCS keeps them. SIPE opens one
//! presence dialog for its whole list and later sends each newly added buddy as a
//! one-resource SUBSCRIBE in that same dialog; a SUBSCRIBE in an existing dialog
//! therefore *adds* its resources to the dialog (and refreshes it), it does not
//! replace them. Other clients may open one dialog per buddy; those stay apart.

use presence_model::UserUri;
use presence_model::contacts::ContactList;
use sip_proto::{Message, NameAddr};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The notifier's side of a subscription dialog.
#[derive(Debug, Clone)]
pub(crate) struct Dialog {
    pub call_id: String,
    pub local_tag: String,
    /// The client's From header of the SUBSCRIBE, which is our To.
    pub remote: String,
    /// Where requests to the client go (its Contact).
    pub target: String,
    pub cseq: u32,
    /// When the subscription ends unless refreshed.
    pub expires_at: Instant,
    /// Whether the client takes BENOTIFY (unanswered NOTIFY; `Supported: ms-benotify`).
    pub benotify: bool,
    /// With `Supported: com.microsoft.autoextend`, every notification extends the
    /// dialog by its granted lifetime.
    pub autoextend: Option<Duration>,
}

/// Whether a request lists `ext` in one of its `Supported` headers.
pub(crate) fn supports(req: &Message, ext: &str) -> bool {
    req.headers_named("Supported")
        .any(|s| s.split(',').any(|x| x.trim().eq_ignore_ascii_case(ext)))
}

/// The Microsoft extension that makes notifications refresh a subscription.
pub(crate) const AUTOEXTEND: &str = "com.microsoft.autoextend";

impl Dialog {
    /// A dialog opened by `req`, living `lifetime` unless refreshed.
    pub fn new(req: &Message, local_tag: &str, lifetime: Duration) -> Dialog {
        Dialog {
            call_id: req.header("Call-ID").unwrap_or_default().to_string(),
            local_tag: local_tag.to_string(),
            remote: req.header("From").unwrap_or_default().to_string(),
            target: req
                .header("Contact")
                .map(|c| NameAddr::parse(c).uri)
                .unwrap_or_default()
                .to_string(),
            cseq: 1,
            expires_at: Instant::now() + lifetime,
            benotify: supports(req, "ms-benotify"),
            autoextend: supports(req, AUTOEXTEND).then_some(lifetime),
        }
    }

    /// A refresh: the dialog lives `lifetime` from now.
    pub fn refresh(&mut self, req: &Message, lifetime: Duration) {
        self.expires_at = Instant::now() + lifetime;
        self.autoextend = supports(req, AUTOEXTEND).then_some(lifetime);
    }

    /// Whether `req` belongs to this dialog (same Call-ID; our tag, if it names one).
    pub fn matches(&self, req: &Message) -> bool {
        let to_tag = req.header("To").and_then(|t| NameAddr::parse(t).tag());
        req.header("Call-ID") == Some(self.call_id.as_str())
            && to_tag.is_none_or(|t| t == self.local_tag)
    }
}

/// The roaming-contacts dialog and the list its client has (the last one sent), so
/// that every later change goes out as a delta from it.
pub(crate) struct ContactsDialog {
    pub dialog: Dialog,
    pub sent: Arc<ContactList>,
    /// Whether deltas may say `deletedGroup`. SIPE (up to 1.25 at least) frees a
    /// group twice when told that a group it has already emptied is gone (libpurple
    /// calls back into it while it removes the group) and crashes; Pidgin hides empty
    /// groups, so SIPE clients are not told, and group ids are never reused while
    /// others are free ([`ContactList::add_group`]).
    pub deleted_groups: bool,
}

impl ContactsDialog {
    pub fn new(req: &Message, dialog: Dialog, sent: Arc<ContactList>) -> ContactsDialog {
        let sipe = req
            .header("User-Agent")
            .is_some_and(|ua| ua.contains("Sipe/"));
        ContactsDialog {
            dialog,
            sent,
            deleted_groups: !sipe,
        }
    }
}

/// A batched presence dialog: the presentities it watches, under one engine
/// subscription id.
pub(crate) struct PresenceDialog {
    pub dialog: Dialog,
    pub engine_id: String,
    pub resources: BTreeSet<UserUri>,
    /// The RLMI `version` of the last batch sent (RFC 4662: +1 per notification).
    pub rlmi_version: u32,
}

#[derive(Default)]
pub(crate) struct Dialogs {
    pub roaming_self: Option<Dialog>,
    pub roaming_contacts: Option<ContactsDialog>,
    pub presence: Vec<PresenceDialog>,
    /// Numbers the engine subscription ids of presence dialogs.
    next_engine_id: u64,
}

/// A dialog that ended because nobody refreshed it.
pub(crate) struct Expired {
    pub dialog: Dialog,
    pub event: &'static str,
    /// The engine subscription to end (presence dialogs).
    pub engine_id: Option<String>,
}

impl Dialogs {
    pub fn new_engine_id(&mut self) -> String {
        self.next_engine_id += 1;
        format!("sip-presence-{}", self.next_engine_id)
    }

    pub fn presence_of(&mut self, req: &Message) -> Option<&mut PresenceDialog> {
        self.presence.iter_mut().find(|p| p.dialog.matches(req))
    }

    /// The earliest moment a dialog expires.
    pub fn next_expiry(&self) -> Option<Instant> {
        let own = self.roaming_self.iter();
        let contacts = self.roaming_contacts.iter().map(|c| &c.dialog);
        let presence = self.presence.iter().map(|p| &p.dialog);
        own.chain(contacts)
            .chain(presence)
            .map(|d| d.expires_at)
            .min()
    }

    /// Removes and returns every dialog whose lifetime ended by `now`.
    pub fn take_expired(&mut self, now: Instant) -> Vec<Expired> {
        let mut out = Vec::new();
        if self
            .roaming_self
            .as_ref()
            .is_some_and(|d| d.expires_at <= now)
        {
            out.push(Expired {
                dialog: self.roaming_self.take().expect("checked"),
                event: crate::subscribe::ROAMING_SELF,
                engine_id: None,
            });
        }
        if self
            .roaming_contacts
            .as_ref()
            .is_some_and(|c| c.dialog.expires_at <= now)
        {
            out.push(Expired {
                dialog: self.roaming_contacts.take().expect("checked").dialog,
                event: crate::subscribe::ROAMING_CONTACTS,
                engine_id: None,
            });
        }
        let (gone, live): (Vec<_>, Vec<_>) = std::mem::take(&mut self.presence)
            .into_iter()
            .partition(|p| p.dialog.expires_at <= now);
        self.presence = live;
        out.extend(gone.into_iter().map(|p| Expired {
            dialog: p.dialog,
            event: crate::subscribe::PRESENCE,
            engine_id: Some(p.engine_id),
        }));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sip_proto::Method;

    fn subscribe(call_id: &str, to_tag: Option<&str>) -> Message {
        let to = match to_tag {
            Some(t) => format!("<sip:alice@example.com>;tag={t}"),
            None => "<sip:alice@example.com>".into(),
        };
        Message::request(Method::Subscribe, "sip:alice@example.com")
            .with_header("From", "<sip:alice@example.com>;tag=abc;epid=1")
            .with_header("To", to)
            .with_header("Call-ID", call_id)
            .with_header(
                "Contact",
                "<sip:10.0.0.1:5061;transport=tls>;+sip.instance=x",
            )
            .with_header("Supported", "ms-benotify")
    }

    #[test]
    fn dialogs_are_told_apart_by_call_id_and_tag() {
        let d = Dialog::new(&subscribe("c1", None), "t1", Duration::from_secs(60));
        assert_eq!(d.target, "sip:10.0.0.1:5061;transport=tls");
        assert!(d.benotify);
        assert_eq!(d.autoextend, None, "not asked for");
        assert!(d.matches(&subscribe("c1", Some("t1"))));
        assert!(d.matches(&subscribe("c1", None)));
        assert!(!d.matches(&subscribe("c1", Some("other"))));
        assert!(!d.matches(&subscribe("c2", Some("t1"))));
    }

    #[test]
    fn sipe_is_not_told_of_deleted_groups() {
        let list = Arc::new(ContactList::default());
        let plain = subscribe("c", None);
        let sipe = subscribe("c", None)
            .with_header("User-Agent", "Purple/2.14.12 Sipe/1.25.0 (linux-x86_64)");
        let d = |req: &Message| Dialog::new(req, "t", Duration::from_secs(60));
        assert!(ContactsDialog::new(&plain, d(&plain), list.clone()).deleted_groups);
        assert!(!ContactsDialog::new(&sipe, d(&sipe), list).deleted_groups);
    }

    #[test]
    fn expiry_takes_only_what_is_due() {
        let mut ds = Dialogs::default();
        let dialog =
            |call: &str, secs| Dialog::new(&subscribe(call, None), "t", Duration::from_secs(secs));
        ds.roaming_self = Some(dialog("self", 100));
        for (call, secs) in [("p1", 10), ("p2", 50)] {
            let engine_id = ds.new_engine_id();
            ds.presence.push(PresenceDialog {
                dialog: dialog(call, secs),
                engine_id,
                resources: BTreeSet::new(),
                rlmi_version: 0,
            });
        }
        // Taken after the dialogs were made: `now + 10 s` is past p1's end.
        let now = Instant::now();
        assert_eq!(ds.next_expiry(), Some(ds.presence[0].dialog.expires_at));
        assert!(ds.take_expired(now + Duration::from_secs(9)).is_empty());
        let gone = ds.take_expired(now + Duration::from_secs(10));
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].dialog.call_id, "p1");
        assert_eq!(gone[0].engine_id.as_deref(), Some("sip-presence-1"));
        assert_eq!(ds.next_expiry(), Some(ds.presence[0].dialog.expires_at));
        let gone = ds.take_expired(now + Duration::from_secs(1000));
        assert_eq!(gone.len(), 2);
        assert_eq!(ds.next_expiry(), None);
    }
}
