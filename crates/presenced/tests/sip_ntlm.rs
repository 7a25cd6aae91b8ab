//! NTLMv2 (MS-SIPAE) sign-in over raw TCP, with a client-side NTLM written here:
//! the two 401s, the signed REGISTER, the server's signatures on everything it
//! sends, wrong passwords, rate limiting, directory-only users, and a flood of
//! unauthenticated REGISTERs while a WebSocket client goes on being served.

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use common::*;
use hmac::{Hmac, Mac};
use md5::Md5;
use rc4::{KeyInit, StreamCipher};
use serde_json::json;
use sip_proto::{Limits, Message, Parsed, StartLine, parse};
use sip_server::{auth, ntlm};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TARGET: &str = "presenced";

fn hmac_md5(key: &[u8], parts: &[&[u8]]) -> [u8; 16] {
    let mut m = <Hmac<Md5> as Mac>::new_from_slice(key).unwrap();
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

fn utf16(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

fn field(msg: &[u8], at: usize) -> &[u8] {
    let len = u16::from_le_bytes([msg[at], msg[at + 1]]) as usize;
    let off = u32::from_le_bytes(msg[at + 4..at + 8].try_into().unwrap()) as usize;
    &msg[off..off + len]
}

/// A client AUTHENTICATE message (NTLMv2, KEY_EXCH) answering `challenge`.
fn authenticate(challenge: &[u8], user: &str, password: &str) -> Vec<u8> {
    let server_challenge = &challenge[24..32];
    let info = field(challenge, 40);
    let ntowf = hmac_md5(
        &accounts::nt_hash(password),
        &[&utf16(&user.to_uppercase())],
    );
    let mut temp = vec![1, 1, 0, 0, 0, 0, 0, 0];
    temp.extend_from_slice(&[0x00, 0xbd, 0x9c, 0xc2, 0x3b, 0x7d, 0xdd, 0x01]); // a timestamp
    temp.extend_from_slice(&[7, 6, 5, 4, 3, 2, 1, 0]); // client challenge
    temp.extend_from_slice(&[0; 4]);
    temp.extend_from_slice(info);
    temp.extend_from_slice(&[0; 4]);
    let proof = hmac_md5(&ntowf, &[server_challenge, &temp]);
    let nt = [proof.as_slice(), &temp].concat();
    let base = hmac_md5(&ntowf, &[&proof]);
    let mut session_key = [9u8; 16];
    rc4::Rc4::<rc4::consts::U16>::new((&base).into()).apply_keystream(&mut session_key);
    let (lm, domain, name, host) = (vec![0u8; 24], Vec::new(), utf16(user), utf16("TEST"));
    let payload = [lm.as_slice(), &nt, &domain, &name, &host, &session_key];
    let mut m = b"NTLMSSP\0".to_vec();
    m.extend_from_slice(&3u32.to_le_bytes());
    let mut offset = 88usize;
    for p in payload {
        m.extend_from_slice(&(p.len() as u16).to_le_bytes());
        m.extend_from_slice(&(p.len() as u16).to_le_bytes());
        m.extend_from_slice(&(offset as u32).to_le_bytes());
        offset += p.len();
    }
    m.extend_from_slice(&0x6298_8255u32.to_le_bytes());
    m.extend_from_slice(&[0u8; 8 + 16]); // version, MIC
    for p in payload {
        m.extend_from_slice(p);
    }
    m
}

struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
    user: String,
    cseq: u32,
}

impl Client {
    async fn connect(addr: &str, user: &str) -> Client {
        Client {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: Vec::new(),
            user: user.into(),
            cseq: 0,
        }
    }

    fn request(
        &mut self,
        method: &str,
        call_id: &str,
        extra: &[(&str, String)],
        body: &str,
    ) -> Message {
        self.cseq += 1;
        let u = self.user.clone();
        let target = if method == "REGISTER" {
            "sip:example.com".to_string()
        } else {
            format!("sip:{u}")
        };
        let mut m = Message::request(sip_proto::Method::parse(method), target)
            .with_header("Via", "SIP/2.0/tcp 127.0.0.1:1")
            .with_header(
                "From",
                format!("<sip:{u}>;tag=f{};epid=0123456789", self.cseq),
            )
            .with_header("To", format!("<sip:{u}>"))
            .with_header("CSeq", format!("{} {method}", self.cseq))
            .with_header("Call-ID", call_id.to_string())
            .with_header("Contact", format!("<sip:{u}:1;transport=tcp>"));
        for (k, v) in extra {
            m.push_header(k, v.clone());
        }
        m.body = body.as_bytes().to_vec();
        m
    }

    async fn send(&mut self, m: &Message) {
        self.stream.write_all(&m.to_bytes()).await.unwrap();
    }

    async fn recv(&mut self) -> Option<Message> {
        loop {
            match parse(&self.buf, &Limits::default()).unwrap() {
                Parsed::Message { message, len } => {
                    self.buf.drain(..len);
                    return Some(message);
                }
                Parsed::KeepAlive(n) => {
                    self.buf.drain(..n);
                }
                Parsed::Incomplete => {
                    let mut chunk = [0u8; 8192];
                    let n = tokio::time::timeout(WAIT, self.stream.read(&mut chunk))
                        .await
                        .ok()?
                        .ok()?;
                    if n == 0 {
                        return None;
                    }
                    self.buf.extend_from_slice(&chunk[..n]);
                }
            }
        }
    }
}

fn status(m: &Message) -> u16 {
    match m.start {
        StartLine::Response { code, .. } => code,
        _ => 0,
    }
}

fn www(m: &Message) -> std::collections::HashMap<String, String> {
    auth::params(m.header("WWW-Authenticate").unwrap())
}

/// Runs the handshake with `password`; returns the last answer and the session keys.
async fn sign_in(c: &mut Client, password: &str) -> (Message, Option<ntlm::Keys>) {
    let call = format!("reg-{}", c.user);
    let r = c.request("REGISTER", &call, &[], "");
    c.send(&r).await;
    let first = c.recv().await.unwrap();
    assert_eq!(status(&first), 401);
    assert_eq!(www(&first)["targetname"], TARGET);
    let r = c.request(
        "REGISTER",
        &call,
        &[("Authorization", format!("NTLM qop=\"auth\", realm=\"{}\", targetname=\"{TARGET}\", gssapi-data=\"\", version=4", auth::REALM))],
        "",
    );
    c.send(&r).await;
    let second = c.recv().await.unwrap();
    assert_eq!(status(&second), 401);
    let p = www(&second);
    let challenge = B64.decode(&p["gssapi-data"]).unwrap();
    assert_eq!(
        u32::from_le_bytes(challenge[20..24].try_into().unwrap()),
        ntlm::CHALLENGE_FLAGS
    );
    let message = authenticate(&challenge, &c.user, password);
    // The keys, as the server will derive them (its verify is the reference).
    let parsed = ntlm::parse_authenticate(&message).unwrap();
    let keys = ntlm::verify(
        &parsed,
        &accounts::nt_hash(password),
        &challenge[24..32].try_into().unwrap(),
    )
    .ok();
    let mut r = c.request("REGISTER", &call, &[], "");
    let mut authz = format!(
        "NTLM qop=\"auth\", opaque=\"{}\", realm=\"{}\", targetname=\"{TARGET}\", gssapi-data=\"{}\", version=4",
        p["opaque"],
        auth::REALM,
        B64.encode(&message)
    );
    if let Some(k) = &keys {
        let sig = ntlm::signature(
            &k.client_sign,
            &k.client_seal,
            &auth::signing_input(&r, "abcd1234", "1", TARGET),
        );
        authz.push_str(&format!(
            ", crand=\"abcd1234\", cnum=\"1\", response=\"{sig}\""
        ));
    }
    r.push_header("Authorization", authz);
    c.send(&r).await;
    (c.recv().await.unwrap(), keys)
}

/// The server's signature on a message it sent is valid.
fn signed_by_server(m: &Message, keys: &ntlm::Keys) -> bool {
    let info = m.header("Authentication-Info").expect("signed");
    let p = auth::params(info);
    let mut unsigned = m.clone();
    unsigned.headers.retain(|h| h.name != "Authentication-Info");
    let text = auth::signing_input(&unsigned, &p["srand"], &p["snum"], TARGET);
    ntlm::signature(&keys.server_sign, &keys.server_seal, &text) == p["rspauth"]
}

#[tokio::test]
async fn ntlm_sign_in_signatures_and_refusals() {
    let dir = tempfile::tempdir().unwrap();
    add_user(dir.path(), "alice@example.com", "Alice", "s3cret");
    add_user(dir.path(), "carol@example.com", "Carol", "pw-c");
    let dora = dir.path().join("dir.toml");
    std::fs::write(&dora, "[[user]]\nuri = \"dora@example.com\"\n").unwrap();
    assert!(
        run(
            &["directory", "import", dora.to_str().unwrap()],
            dir.path(),
            None
        )
        .0
    );
    let server = Server::start_with(dir.path(), &["--sip", "127.0.0.1:0"]);
    let addr = server.sip.clone().unwrap();

    let mut alice = Client::connect(&addr, "alice@example.com").await;
    let (ok, keys) = sign_in(&mut alice, "s3cret").await;
    assert_eq!(status(&ok), 200, "{ok:?}");
    let keys = keys.unwrap();
    assert!(
        signed_by_server(&ok, &keys),
        "the 200 carries a valid rspauth"
    );

    // Signed requests are served, and the answers (and BENOTIFYs) are signed.
    let mut sub = alice.request(
        "SUBSCRIBE",
        "self-1",
        &[
            ("Event", "vnd-microsoft-roaming-self".into()),
            ("Supported", "ms-benotify".into()),
            ("Content-Type", "application/vnd-microsoft-roaming-self+xml".into()),
        ],
        "<roamingList xmlns=\"http://schemas.microsoft.com/2006/09/sip/roaming-self\"><roaming type=\"categories\"/></roamingList>",
    );
    let sig = ntlm::signature(
        &keys.client_sign,
        &keys.client_seal,
        &auth::signing_input(&sub, "0badf00d", "2", TARGET),
    );
    sub.push_header(
        "Authorization",
        format!("NTLM qop=\"auth\", opaque=\"x\", realm=\"{}\", targetname=\"{TARGET}\", crand=\"0badf00d\", cnum=\"2\", response=\"{sig}\"", auth::REALM),
    );
    alice.send(&sub).await;
    let answer = alice.recv().await.unwrap();
    assert_eq!(status(&answer), 200);
    assert!(signed_by_server(&answer, &keys));
    let notify = alice.recv().await.unwrap();
    assert_eq!(notify.method(), Some(&sip_proto::Method::Benotify));
    assert!(signed_by_server(&notify, &keys), "BENOTIFYs are signed too");

    // An unsigned request on an authenticated connection is refused.
    let bare = alice.request(
        "SERVICE",
        "svc",
        &[(
            "Content-Type",
            "application/msrtc-category-publish+xml".into(),
        )],
        "<publish/>",
    );
    alice.send(&bare).await;
    let refused = alice.recv_until_response().await;
    assert_eq!(status(&refused), 403);

    // A replayed signed request (same message number) is refused.
    alice.send(&sub).await;
    let replay = alice.recv_until_response().await;
    assert_eq!(status(&replay), 403, "{replay:?}");

    // An unsigned REGISTER restarts the handshake, and until it completes nothing
    // else is accepted on the connection.
    let again = alice.request("REGISTER", "reg-again", &[], "");
    alice.send(&again).await;
    assert_eq!(status(&alice.recv_until_response().await), 401);
    let sneaky = alice.request(
        "SERVICE",
        "svc-2",
        &[(
            "Content-Type",
            "application/msrtc-category-publish+xml".into(),
        )],
        "<publish/>",
    );
    alice.send(&sneaky).await;
    let refused = alice.recv_until_response().await;
    assert_eq!(status(&refused), 403);
    assert!(
        refused
            .header("ms-diagnostics")
            .unwrap()
            .contains("authenticate first")
    );

    // A user whose password lives only in the directory is told so.
    let mut d = Client::connect(&addr, "dora@example.com").await;
    let (r, _) = sign_in(&mut d, "anything").await;
    assert_eq!(status(&r), 403);
    assert!(
        r.header("ms-diagnostics")
            .unwrap()
            .contains("only in the directory"),
        "{r:?}"
    );

    // Wrong passwords are refused, then rate limited.
    for _ in 0..accounts::MAX_FAILURES {
        let mut c = Client::connect(&addr, "carol@example.com").await;
        let (r, _) = sign_in(&mut c, "wrong").await;
        assert_eq!(status(&r), 403);
        assert!(
            r.header("ms-diagnostics")
                .unwrap()
                .contains("wrong user name or password")
        );
    }
    let mut c = Client::connect(&addr, "carol@example.com").await;
    let r = c.request("REGISTER", "limited", &[], "");
    c.send(&r).await;
    let r = c.recv().await.unwrap();
    assert_eq!(status(&r), 403);
    assert!(
        r.header("ms-diagnostics")
            .unwrap()
            .contains("too many failed sign-ins")
    );
}

impl Client {
    async fn recv_until_response(&mut self) -> Message {
        loop {
            let m = self.recv().await.expect("a message");
            if m.method().is_none() {
                return m;
            }
        }
    }
}

#[tokio::test]
async fn a_flood_of_unauthenticated_registers_does_not_stop_the_service() {
    let (_dir, server, ta, tb) = {
        let dir = tempfile::tempdir().unwrap();
        add_user(dir.path(), "alice@example.com", "Alice", "pw-a");
        add_user(dir.path(), "bob@example.com", "Bob", "pw-b");
        let server = Server::start_with(dir.path(), &["--sip", "127.0.0.1:0"]);
        let ta = server.login("alice@example.com", "pw-a").await;
        let tb = server.login("bob@example.com", "pw-b").await;
        (dir, server, ta, tb)
    };
    let addr = server.sip.clone().unwrap();
    const CONNECTIONS: usize = 10;
    const PER_CONNECTION: usize = 50;
    let flood: Vec<_> = (0..CONNECTIONS)
        .map(|i| {
            let addr = addr.clone();
            tokio::spawn(async move {
                let mut c = Client::connect(&addr, &format!("mallory{i}@example.com")).await;
                let mut challenged = 0;
                for n in 0..PER_CONNECTION {
                    let r = c.request("REGISTER", &format!("flood-{i}-{n}"), &[], "");
                    c.send(&r).await;
                    if c.recv().await.map(|m| status(&m)) == Some(401) {
                        challenged += 1;
                    }
                }
                challenged
            })
        })
        .collect();
    // Meanwhile the HTTP/WebSocket side goes on: bob sees alice's note.
    let mut bob = server.ws(&tb).await;
    bob.send(json!({"op": "subscribe", "id": "a", "uris": ["alice@example.com"], "categories": ["note"]})).await;
    bob.recv_until(|m| m["type"] == "categories").await;
    let alice = Api::new(&server, &ta);
    let (s, _) = alice
        .publish(json!({"publications": [{"category": "note", "instance": 0, "container": 200, "version": 0,
                                          "expire_type": "static", "value": note("still here")}]}))
        .await;
    assert_eq!(s, 200);
    bob.recv_until(|m| m.to_string().contains("still here"))
        .await;
    let mut total = 0;
    for f in flood {
        total += f.await.unwrap();
    }
    assert_eq!(
        total,
        CONNECTIONS * PER_CONNECTION,
        "every REGISTER got its 401"
    );
}
