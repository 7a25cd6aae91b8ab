//! A raw SIP client for tests, speaking the requests a SIPE client sends.

use super::{Server, WAIT};
use sip_proto::{Limits, Message, Parsed, StartLine, parse};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A byte stream to the server: plain TCP or TLS.
pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

pub struct SipClient {
    pub stream: Box<dyn Io>,
    pub buf: Vec<u8>,
    pub user: String,
    pub port: u16,
    pub cseq: u32,
}

impl SipClient {
    pub async fn connect(server: &Server, user: &str) -> SipClient {
        let stream = TcpStream::connect(server.sip.as_deref().expect("SIP enabled"))
            .await
            .unwrap();
        let port = stream.local_addr().unwrap().port();
        SipClient {
            stream: Box::new(stream),
            buf: Vec::new(),
            user: user.to_string(),
            port,
            cseq: 0,
        }
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Sends a request in SIPE's form: own URI as R-URI, From and To.
    pub async fn request(
        &mut self,
        method: &str,
        call_id: &str,
        extra: &[(&str, &str)],
        body: &str,
    ) {
        self.send_request(method, call_id, None, extra, body).await
    }

    /// Sends a request in the dialog the server tagged `to_tag`.
    pub async fn request_in_dialog(
        &mut self,
        method: &str,
        call_id: &str,
        to_tag: &str,
        extra: &[(&str, &str)],
        body: &str,
    ) {
        self.send_request(method, call_id, Some(to_tag), extra, body)
            .await
    }

    async fn send_request(
        &mut self,
        method: &str,
        call_id: &str,
        to_tag: Option<&str>,
        extra: &[(&str, &str)],
        body: &str,
    ) {
        self.cseq += 1;
        let u = &self.user;
        let to_tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
        let mut m = format!(
            "{method} sip:{target} SIP/2.0\r\nVia: SIP/2.0/tcp 127.0.0.1:{port}\r\n\
             From: <sip:{u}>;tag=t{cseq};epid=cf0b98dadeb9\r\nTo: <sip:{u}>{to_tag}\r\nCSeq: {cseq} {method}\r\n\
             Call-ID: {call_id}\r\nContact: <sip:{u}:{port};maddr=127.0.0.1;transport=tcp>;proxy=replace\r\n",
            target = if method == "REGISTER" {
                "example.com"
            } else {
                u
            },
            port = self.port,
            cseq = self.cseq,
        );
        for (k, v) in extra {
            m.push_str(&format!("{k}: {v}\r\n"));
        }
        m.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        self.send_raw(m.as_bytes()).await;
    }

    /// The next message (keep-alives skipped).
    pub async fn recv(&mut self) -> Message {
        let limits = Limits::default();
        loop {
            match parse(&self.buf, &limits).expect("server sends valid SIP") {
                Parsed::Message { message, len } => {
                    self.buf.drain(..len);
                    return message;
                }
                Parsed::KeepAlive(n) => {
                    self.buf.drain(..n);
                }
                Parsed::Incomplete => {
                    let mut chunk = [0u8; 8192];
                    let n = tokio::time::timeout(WAIT, self.stream.read(&mut chunk))
                        .await
                        .expect("timed out waiting for SIP")
                        .unwrap();
                    assert!(n > 0, "the server closed the connection");
                    self.buf.extend_from_slice(&chunk[..n]);
                }
            }
        }
    }

    pub async fn recv_until(&mut self, pred: impl Fn(&Message) -> bool) -> Message {
        loop {
            let m = self.recv().await;
            if pred(&m) {
                return m;
            }
        }
    }

    pub async fn register(&mut self) -> Message {
        self.request(
            "REGISTER",
            &format!("reg-{}", self.user),
            &[
                (
                    "Supported",
                    "gruu-10, adhoclist, msrtc-event-categories, com.microsoft.msrtc.presence",
                ),
                ("Event", "registration"),
                ("Allow-Events", "presence"),
                ("ms-keep-alive", "UAC;hop-hop=yes"),
            ],
            "",
        )
        .await;
        self.recv().await
    }
}

pub fn status(m: &Message) -> u16 {
    match m.start {
        StartLine::Response { code, .. } => code,
        _ => panic!("expected a response, got {m:?}"),
    }
}

pub fn body(m: &Message) -> String {
    String::from_utf8(m.body.clone()).unwrap()
}

pub fn is_benotify(m: &Message, event: &str) -> bool {
    m.method() == Some(&sip_proto::Method::Benotify) && m.header("Event") == Some(event)
}

pub const BENOTIFY: [(&str, &str); 4] = [
    ("Supported", "com.microsoft.autoextend"),
    ("Supported", "ms-benotify"),
    ("Proxy-Require", "ms-benotify"),
    ("Supported", "ms-piggyback-first-notify"),
];
