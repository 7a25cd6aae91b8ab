//! Handler tests without a socket: a real engine and account store on a temporary
//! data directory, and a connection whose outgoing messages land in a channel.

use crate::connection::{Conn, Local, Transport};
use crate::{SipConfig, SipContext};
use accounts::Accounts;
use presence_engine::{Engine, EngineConfig};
use presence_model::{BuiltinAggregator, UserUri};
use presence_store::Stores;
use sip_proto::{Limits, Message, Method, Parsed, StartLine, parse};
use std::sync::Arc;
use tokio::sync::mpsc;

pub(crate) fn uri(s: &str) -> UserUri {
    UserUri::parse(s).unwrap()
}

pub(crate) struct Fixture {
    _dir: tempfile::TempDir,
    pub ctx: SipContext,
}

impl Fixture {
    /// An engine with `users` (password "pw") and SIP without authentication.
    pub fn new(users: &[&str]) -> Fixture {
        Self::with_config(users, SipConfig::default())
    }

    pub fn with_config(users: &[&str], config: SipConfig) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = Stores::sqlite(dir.path()).unwrap();
        let engine = Engine::new(
            store.clone(),
            Arc::new(BuiltinAggregator),
            EngineConfig::default(),
        )
        .unwrap();
        let accounts = Accounts::open(store, dir.path()).unwrap();
        let uris: Vec<UserUri> = users.iter().map(|u| uri(u)).collect();
        for u in &uris {
            accounts.add(u, u.as_str(), "pw-pw-pw").unwrap();
        }
        engine.provision(&uris).unwrap();
        let config = SipConfig {
            allow_unauthenticated: true,
            ..config
        };
        Fixture {
            _dir: dir,
            ctx: SipContext::new(
                engine,
                Arc::new(accounts),
                Arc::new(directory::DirectoryIndex::new()),
                config,
            ),
        }
    }

    /// A connection over TLS, not registered yet, and what it sends.
    pub fn conn(&self) -> (Conn, Outbox) {
        let (tx, rx) = mpsc::channel(1024);
        let local = Local {
            addr: "192.0.2.1:5061".parse().unwrap(),
            transport: Transport::Tls,
        };
        (Conn::new(self.ctx.clone(), tx, local), Outbox(rx))
    }

    /// A connection on which `user` has registered.
    pub async fn registered(&self, user: &str) -> (Conn, Outbox) {
        let (mut conn, mut out) = self.conn();
        conn.handle(request(Method::Register, user, "reg", None, &[], ""))
            .await;
        assert_eq!(status(&out.next().await), 200);
        (conn, out)
    }
}

/// The messages a connection queued for its client.
pub(crate) struct Outbox(mpsc::Receiver<Vec<u8>>);

impl Outbox {
    pub async fn next(&mut self) -> Message {
        let bytes = tokio::time::timeout(std::time::Duration::from_secs(5), self.0.recv())
            .await
            .expect("a message in time")
            .expect("the connection is open");
        match parse(&bytes, &Limits::default()).unwrap() {
            Parsed::Message { message, .. } => message,
            other => panic!("not one message: {other:?}"),
        }
    }

    /// Nothing more is queued (after letting the delivery task run).
    pub async fn assert_empty(&mut self) {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(self.0.try_recv().is_err(), "an unexpected message");
    }
}

/// A request as SIPE sends it: the user's own URI as R-URI, From and To.
pub(crate) fn request(
    method: Method,
    user: &str,
    call_id: &str,
    to_tag: Option<&str>,
    headers: &[(&str, &str)],
    body: &str,
) -> Message {
    let to = match to_tag {
        Some(t) => format!("<sip:{user}>;tag={t}"),
        None => format!("<sip:{user}>"),
    };
    let mut m = Message::request(method.clone(), format!("sip:{user}"))
        .with_header("Via", "SIP/2.0/TLS 198.51.100.7:50000;branch=z9hG4bKx")
        .with_header("From", format!("<sip:{user}>;tag=abc;epid=1"))
        .with_header("To", to)
        .with_header("Call-ID", call_id)
        .with_header("CSeq", format!("1 {}", method.as_str()))
        .with_header(
            "Contact",
            format!("<sip:{user}@198.51.100.7:50000;transport=tls>"),
        );
    for (k, v) in headers {
        m.push_header(k, *v);
    }
    m.body = body.as_bytes().to_vec();
    m
}

pub(crate) fn status(m: &Message) -> u16 {
    match m.start {
        StartLine::Response { code, .. } => code,
        _ => panic!("expected a response, got {m:?}"),
    }
}

pub(crate) fn body(m: &Message) -> String {
    String::from_utf8(m.body.clone()).unwrap()
}

/// The tag the server put on To.
pub(crate) fn to_tag(m: &Message) -> String {
    sip_proto::NameAddr::parse(m.header("To").unwrap())
        .tag()
        .unwrap()
        .to_string()
}
