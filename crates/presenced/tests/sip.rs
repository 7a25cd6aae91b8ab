//! SIP front end over real TCP, speaking the requests a SIPE client sends (shapes
//! taken from a captured SIPE 1.25 session), next to a WebSocket watcher.

mod common;

use common::sip::*;
use common::*;
use serde_json::json;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

fn machine_state_publish(version: u32, availability: u32) -> String {
    machine_state_publish_of("alice@example.com", version, availability)
}

fn machine_state_publish_of(user: &str, version: u32, availability: u32) -> String {
    let state = machine_state(availability);
    format!(
        "<publish xmlns=\"http://schemas.microsoft.com/2006/09/sip/rich-presence\"><publications uri=\"sip:{user}\">\
         <publication categoryName=\"state\" instance=\"1022409101\" container=\"2\" version=\"{version}\" expireType=\"endpoint\">{state}</publication>\
         <publication categoryName=\"state\" instance=\"1022409101\" container=\"3\" version=\"{version}\" expireType=\"endpoint\">{state}</publication>\
         </publications></publish>"
    )
}

#[tokio::test]
async fn sip_and_websocket_watchers_see_the_same_presence() {
    let dir = tempfile::tempdir().unwrap();
    for (u, n) in [
        ("alice@example.com", "Alice"),
        ("bob@example.com", "Bob"),
        ("carol@example.com", "Carol"),
    ] {
        add_user(dir.path(), u, n, "pw");
    }
    let server = Server::start_with(
        dir.path(),
        &["--sip", "127.0.0.1:0", "--sip-allow-unauthenticated"],
    );

    // Carol: a SIP client that adds Alice to her contact list and watches her.
    let mut carol = SipClient::connect(&server, "carol@example.com").await;
    let ok = carol.register().await;
    assert_eq!(status(&ok), 200);
    assert_eq!(ok.header("Expires"), Some("3600"));
    let supported: Vec<&str> = ok.headers_named("Supported").collect();
    assert!(
        supported.contains(&"msrtc-event-categories") && supported.contains(&"adhoclist"),
        "{supported:?}"
    );
    assert!(
        !ok.header("Allow-Events").unwrap().contains(", "),
        "SIPE needs no spaces"
    );
    let mut extra = vec![
        ("Event", "vnd-microsoft-roaming-contacts"),
        ("Accept", "application/vnd-microsoft-roaming-contacts+xml"),
    ];
    extra.extend(BENOTIFY);
    carol
        .request("SUBSCRIBE", "contacts-carol", &extra, "")
        .await;
    let ok = carol.recv().await;
    assert_eq!(status(&ok), 200);
    let exts: Vec<&str> = ok.headers_named("Supported").collect();
    assert!(
        exts.contains(&"com.microsoft.autoextend") && exts.contains(&"ms-benotify"),
        "{exts:?}"
    );
    assert!(
        body(&ok).starts_with("<contactList deltaNum=\"1\">"),
        "{}",
        body(&ok)
    );
    let soap = "<SOAP-ENV:Envelope xmlns:SOAP-ENV=\"http://schemas.xmlsoap.org/soap/envelope/\"><SOAP-ENV:Body>\
                <m:setContact xmlns:m=\"http://schemas.microsoft.com/winrtc/2002/11/sip\"><m:displayName/><m:groups>1</m:groups>\
                <m:subscribed>true</m:subscribed><m:URI>alice@example.com</m:URI><m:externalURI/><m:deltaNum>1</m:deltaNum>\
                </m:setContact></SOAP-ENV:Body></SOAP-ENV:Envelope>";
    carol
        .request(
            "SERVICE",
            "soap-1",
            &[("Content-Type", "application/SOAP+xml")],
            soap,
        )
        .await;
    // The answer comes first, then the change as a delta from the full list.
    let answer = carol.recv().await;
    assert_eq!(status(&answer), 200, "{}", body(&answer));
    let delta = carol
        .recv_until(|m| is_benotify(m, "vnd-microsoft-roaming-contacts"))
        .await;
    assert!(
        body(&delta).starts_with("<contactDelta deltaNum=\"2\" prevDeltaNum=\"1\"><addedContact uri=\"sip:alice@example.com\""),
        "{}",
        body(&delta)
    );
    // A change made against an old list is refused with the fault SIPE recovers from.
    carol
        .request(
            "SERVICE",
            "soap-stale",
            &[("Content-Type", "application/SOAP+xml")],
            soap,
        )
        .await;
    let stale = carol.recv().await;
    assert_eq!(status(&stale), 409);
    assert_eq!(
        stale.header("Content-Type"),
        Some("application/msrtc-fault+xml")
    );
    assert!(
        body(&stale).contains("Client.BadCall.WrongDelta"),
        "{}",
        body(&stale)
    );
    assert!(body(&stale).contains("deltaNum=\"2\""), "{}", body(&stale));
    let batch = "<batchSub xmlns=\"http://schemas.microsoft.com/2006/01/sip/batch-subscribe\" uri=\"sip:carol@example.com\" name=\"\">\
                 <action name=\"subscribe\" id=\"63792024\"><adhocList><resource uri=\"sip:alice@example.com\"><context/></resource></adhocList>\
                 <categoryList xmlns=\"http://schemas.microsoft.com/2006/09/sip/categorylist\"><category name=\"contactCard\"/>\
                 <category name=\"note\"/><category name=\"state\"/></categoryList></action></batchSub>";
    let mut extra = vec![
        ("Event", "presence"),
        ("Require", "adhoclist, categoryList"),
        ("Supported", "eventlist"),
        ("Content-Type", "application/msrtc-adrl-categorylist+xml"),
    ];
    extra.extend(BENOTIFY);
    carol
        .request("SUBSCRIBE", "presence-carol", &extra, batch)
        .await;
    // The answer carries the first state of every presentity, as one RLMI batch.
    let first = carol.recv_until(|m| m.method().is_none()).await;
    assert_eq!(status(&first), 200);
    assert!(
        first
            .header("Content-Type")
            .unwrap()
            .starts_with("multipart/related; type=\"application/rlmi+xml\""),
        "{first:?}"
    );
    assert!(first.header("ms-piggyback-cseq").is_some());
    let first_body = body(&first);
    assert!(
        first_body.contains(
            "<resource uri=\"sip:alice@example.com\"><instance id=\"0\" state=\"active\""
        ),
        "{first_body}"
    );
    assert!(
        first_body.contains("<categories xmlns=\"http://schemas.microsoft.com/2006/09/sip/categories\" uri=\"sip:alice@example.com\">"),
        "{first_body}"
    );
    assert!(
        first_body.contains("<availability>18500</availability>"),
        "offline, as SIPE needs it: {first_body}"
    );
    assert!(
        first_body.contains("<displayName>Alice</displayName>"),
        "{first_body}"
    );
    assert!(
        !first_body.contains("container="),
        "container ids are hidden from watchers"
    );

    // Bob: a WebSocket watcher of the same presentity.
    let bob_token = server.login("bob@example.com", "pw").await;
    let mut bob = server.ws(&bob_token).await;
    bob.send(json!({"op": "subscribe", "id": "a", "uris": ["alice@example.com"], "categories": ["state"]})).await;
    bob.recv_until(|m| m["type"] == "categories").await;

    // Alice signs in over SIP, gets her roaming data and publishes her machine state.
    let mut alice = SipClient::connect(&server, "alice@example.com").await;
    assert_eq!(status(&alice.register().await), 200);
    let mut extra = vec![
        ("Event", "vnd-microsoft-roaming-self"),
        ("Accept", "application/vnd-microsoft-roaming-self+xml"),
        ("Content-Type", "application/vnd-microsoft-roaming-self+xml"),
    ];
    extra.extend(BENOTIFY);
    let roaming_list = "<roamingList xmlns=\"http://schemas.microsoft.com/2006/09/sip/roaming-self\"><roaming type=\"categories\"/>\
                        <roaming type=\"containers\"/><roaming type=\"subscribers\"/></roamingList>";
    alice
        .request("SUBSCRIBE", "self-alice", &extra, roaming_list)
        .await;
    assert_eq!(
        status(&alice.recv_until(|m| m.method().is_none()).await),
        200
    );
    let roaming = alice
        .recv_until(|m| is_benotify(m, "vnd-microsoft-roaming-self"))
        .await;
    let roaming_body = body(&roaming);
    assert!(
        roaming_body
            .contains("<container id=\"200\" version=\"1\"><member type=\"sameEnterprise\"/>"),
        "{roaming_body}"
    );
    assert!(
        roaming_body.contains("user=\"carol@example.com\""),
        "carol subscribed with a context: {roaming_body}"
    );
    let publish = [("Content-Type", "application/msrtc-category-publish+xml")];
    alice
        .request(
            "SERVICE",
            "pub-1",
            &publish,
            &machine_state_publish(0, 3500),
        )
        .await;
    let ok = alice.recv_until(|m| m.method().is_none()).await;
    assert_eq!(status(&ok), 200, "{}", body(&ok));
    assert_eq!(
        ok.header("Content-Type"),
        Some("application/vnd-microsoft-roaming-self+xml")
    );
    assert!(body(&ok).contains("version=\"1\""), "{}", body(&ok));

    let seen = carol
        .recv_until(|m| {
            is_benotify(m, "presence") && body(m).contains("<availability>3500</availability>")
        })
        .await;
    assert!(body(&seen).contains("aggregateState"), "{}", body(&seen));
    let ws = bob
        .recv_until(|m| availability(&m["categories"]).is_some())
        .await;
    assert_eq!(
        availability(&ws["categories"]),
        Some(3500),
        "both watchers see the same availability"
    );

    // A stale version gets MS-PRES's 409 fault.
    alice
        .request(
            "SERVICE",
            "pub-2",
            &publish,
            &machine_state_publish(0, 6500),
        )
        .await;
    let conflict = alice.recv_until(|m| m.method().is_none()).await;
    assert_eq!(status(&conflict), 409);
    assert_eq!(
        conflict.header("Content-Type"),
        Some("application/msrtc-fault+xml")
    );
    assert!(
        body(&conflict).contains("<operation index=\"1\" version=\"0\" curVersion=\"1\"/>"),
        "{}",
        body(&conflict)
    );

    // Closing the connection signs Alice out: both watchers see her offline.
    drop(alice);
    let gone = carol
        .recv_until(|m| {
            is_benotify(m, "presence") && body(m).contains("<availability>18500</availability>")
        })
        .await;
    assert!(!body(&gone).contains("3500"), "{}", body(&gone));
    let ws = bob
        .recv_until(|m| has_name(m, "state") && m["categories"] == json!([]))
        .await;
    assert_eq!(ws["uri"], "alice@example.com");
}

#[tokio::test]
async fn refusals_and_hostile_input() {
    let dir = tempfile::tempdir().unwrap();
    add_user(dir.path(), "alice@example.com", "Alice", "pw");
    let closed = Server::start_with(dir.path(), &["--sip", "127.0.0.1:0"]);
    let mut c = SipClient::connect(&closed, "alice@example.com").await;
    let r = c.register().await;
    assert_eq!(status(&r), 401, "an NTLM challenge by default");
    assert_eq!(
        r.header("WWW-Authenticate"),
        Some("NTLM realm=\"SIP Communications Service\", targetname=\"presenced\", version=4")
    );
    drop(closed);

    let dir = tempfile::tempdir().unwrap();
    add_user(dir.path(), "alice@example.com", "Alice", "pw");
    let server = Server::start_with(
        dir.path(),
        &["--sip", "127.0.0.1:0", "--sip-allow-unauthenticated"],
    );
    let mut c = SipClient::connect(&server, "nobody@example.com").await;
    assert_eq!(status(&c.register().await), 404, "unknown users");

    let mut c = SipClient::connect(&server, "alice@example.com").await;
    // Requests before REGISTER are refused.
    c.request(
        "SERVICE",
        "early",
        &[("Content-Type", "application/msrtc-category-publish+xml")],
        "<publish/>",
    )
    .await;
    assert_eq!(status(&c.recv().await), 403);
    assert_eq!(status(&c.register().await), 200);
    // Keep-alives between messages are fine; a missing header gets 400 and the
    // connection goes on; unknown methods 501; bodies with DTDs 400.
    c.send_raw(b"\r\n\r\n").await;
    c.send_raw(b"SERVICE sip:alice@example.com SIP/2.0\r\nVia: SIP/2.0/tcp 127.0.0.1:1\r\nFrom: <sip:alice@example.com>;tag=1\r\nTo: <sip:alice@example.com>\r\nCSeq: 9 SERVICE\r\nContent-Length: 0\r\n\r\n").await;
    let r = c.recv().await;
    assert_eq!(status(&r), 400);
    assert!(r.header("ms-diagnostics").unwrap().contains("Call-ID"));
    c.request("FROBNICATE", "x", &[], "").await;
    assert_eq!(status(&c.recv().await), 501);
    // A bad request line whose body has not arrived yet: answered, the body dropped
    // as it comes, and the connection goes on.
    c.send_raw(b"FOO BAR\r\nCall-ID: part\r\nCSeq: 1 FOO\r\nContent-Length: 10\r\n\r\n")
        .await;
    assert_eq!(status(&c.recv().await), 400);
    tokio::time::sleep(Duration::from_millis(50)).await;
    c.send_raw(b"01234").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    c.send_raw(b"56789").await;
    c.request("OPTIONS", "after-partial", &[], "").await;
    assert_eq!(status(&c.recv().await), 200);
    // A publication that is valid but for its DTD is refused, and nothing of it is
    // applied; without the DTD the same publication is taken.
    let note_publish = |text: &str| {
        format!(
            "<publish xmlns=\"http://schemas.microsoft.com/2006/09/sip/rich-presence\"><publications uri=\"sip:alice@example.com\">\
             <publication categoryName=\"note\" instance=\"0\" container=\"400\" version=\"0\" expireType=\"static\">{}</publication>\
             </publications></publish>",
            note(text)
        )
    };
    let publish = [("Content-Type", "application/msrtc-category-publish+xml")];
    let bomb = format!(
        "<!DOCTYPE publish [<!ENTITY lol \"lol\">]>{}",
        note_publish("&lol;")
    );
    c.request("SERVICE", "bomb", &publish, &bomb).await;
    let refused = c.recv().await;
    assert_eq!(status(&refused), 400);
    assert!(
        refused
            .header("ms-diagnostics")
            .unwrap()
            .contains("document type declarations"),
        "refused for its DTD: {refused:?}"
    );
    let api = Api::new(&server, &server.login("alice@example.com", "pw").await);
    let (_, me) = api.get("/v1/me").await;
    assert!(!me.to_string().contains("lol"), "nothing applied: {me}");
    c.request("SERVICE", "no-bomb", &publish, &note_publish("lol"))
        .await;
    assert_eq!(status(&c.recv().await), 200, "the same without the DTD");
    // An oversized body is refused with 413 and the connection closed.
    let huge = format!(
        "SERVICE sip:alice@example.com SIP/2.0\r\nFrom: <sip:alice@example.com>;tag=1\r\nTo: <sip:alice@example.com>\r\nCall-ID: big\r\nCSeq: 10 SERVICE\r\nContent-Length: {}\r\n\r\n",
        2 * 1024 * 1024
    );
    c.send_raw(huge.as_bytes()).await;
    assert_eq!(status(&c.recv().await), 413);
    // A garbage start line is answered 400; with no Content-Length its framing is
    // lost, so the connection is then closed...
    let mut g = SipClient::connect(&server, "alice@example.com").await;
    g.send_raw(b"GARBAGE\r\n\r\n").await;
    assert_eq!(status(&g.recv().await), 400);
    let mut rest = Vec::new();
    let n = tokio::time::timeout(WAIT, g.stream.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 0, "closed after the answer");
    // ...while the server keeps serving everyone else.
    let mut again = SipClient::connect(&server, "alice@example.com").await;
    assert_eq!(status(&again.register().await), 200);
    tokio::time::sleep(Duration::from_millis(50)).await;
}

#[tokio::test]
async fn sip_over_tls_with_a_verified_certificate() {
    let dir = tempfile::tempdir().unwrap();
    add_user(dir.path(), "alice@example.com", "Alice", "pw");
    let certs = tempfile::tempdir().unwrap();
    common::slapd::make_certificates(certs.path());
    let (cert, key) = (
        certs.path().join("server.pem"),
        certs.path().join("server.key"),
    );
    let server = Server::start_with(
        dir.path(),
        &[
            "--sip",
            "off",
            "--sip-tls",
            "127.0.0.1:0",
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
            "--sip-allow-unauthenticated",
        ],
    );
    let addr = server.tls_sip.clone().expect("sip-tls= in the ready line");
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    for c in rustls::pki_types::CertificateDer::pem_file_iter(certs.path().join("ca.pem")).unwrap()
    {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = TcpStream::connect(&addr).await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(
            rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap(),
            tcp,
        )
        .await
        .expect("the server certificate verifies against the test CA");
    let mut c = SipClient {
        stream: Box::new(tls),
        buf: Vec::new(),
        user: "alice@example.com".into(),
        port,
        cseq: 0,
    };
    let ok = c.register().await;
    assert_eq!(status(&ok), 200);
    assert_eq!(ok.header("Expires"), Some("3600"));
    // Over TLS, our Contact and Via say TLS, with the address the client reached.
    let mut extra = vec![
        ("Event", "vnd-microsoft-roaming-self"),
        ("Content-Type", "application/vnd-microsoft-roaming-self+xml"),
    ];
    extra.extend(BENOTIFY);
    c.request("SUBSCRIBE", "self-tls", &extra, "").await;
    let ok = c.recv().await;
    assert_eq!(status(&ok), 200);
    assert_eq!(
        ok.header("Contact"),
        Some(format!("<sip:{addr};transport=tls>").as_str())
    );
    let n = c
        .recv_until(|m| is_benotify(m, "vnd-microsoft-roaming-self"))
        .await;
    assert!(
        n.header("Via")
            .unwrap()
            .starts_with(&format!("SIP/2.0/TLS {addr};branch=")),
        "{n:?}"
    );
    assert_eq!(
        n.header("Contact"),
        Some(format!("<sip:{addr};transport=tls>").as_str())
    );
}

/// A batched presence SUBSCRIBE body for `uris`, as SIPE writes it.
fn batch_sub(watcher: &str, uris: &[&str]) -> String {
    let resources: String = uris
        .iter()
        .map(|u| format!("<resource uri=\"sip:{u}\"/>"))
        .collect();
    format!(
        "<batchSub xmlns=\"http://schemas.microsoft.com/2006/01/sip/batch-subscribe\" uri=\"sip:{watcher}\" name=\"\">\
         <action name=\"subscribe\" id=\"63792024\"><adhocList>{resources}</adhocList>\
         <categoryList xmlns=\"http://schemas.microsoft.com/2006/09/sip/categorylist\"><category name=\"state\"/></categoryList></action></batchSub>"
    )
}

const PRESENCE_SUB: [(&str, &str); 6] = [
    ("Event", "presence"),
    ("Require", "adhoclist, categoryList"),
    ("Supported", "eventlist"),
    ("Content-Type", "application/msrtc-adrl-categorylist+xml"),
    ("Supported", "ms-benotify"),
    ("Supported", "ms-piggyback-first-notify"),
];

/// A presence BENOTIFY on dialog `call_id` that shows `user` at `availability`.
fn shows(m: &sip_proto::Message, call_id: &str, user: &str, availability: u32) -> bool {
    let b = body(m);
    is_benotify(m, "presence")
        && m.header("Call-ID") == Some(call_id)
        && b.contains(&format!("uri=\"sip:{user}\">"))
        && b.contains(&format!("<availability>{availability}</availability>"))
}

#[tokio::test]
async fn presence_dialogs_are_separate_subscriptions_with_lifetimes() {
    let dir = tempfile::tempdir().unwrap();
    for (u, n) in [
        ("alice@example.com", "Alice"),
        ("bob@example.com", "Bob"),
        ("carol@example.com", "Carol"),
    ] {
        add_user(dir.path(), u, n, "pw");
    }
    // Subscriptions live at most 3 s here, so that expiry can be watched.
    let config = dir.path().join("presenced.toml");
    std::fs::write(&config, "[server]\nsip_subscribe_expires = 3\n").unwrap();
    let server = Server::start_with(
        dir.path(),
        &[
            "--config",
            config.to_str().unwrap(),
            "--sip",
            "127.0.0.1:0",
            "--sip-allow-unauthenticated",
        ],
    );
    let mut alice = SipClient::connect(&server, "alice@example.com").await;
    let mut bob = SipClient::connect(&server, "bob@example.com").await;
    let mut carol = SipClient::connect(&server, "carol@example.com").await;
    for c in [&mut alice, &mut bob, &mut carol] {
        assert_eq!(status(&c.register().await), 200);
    }
    let publish = [("Content-Type", "application/msrtc-category-publish+xml")];
    let mut versions = std::collections::HashMap::new();
    let mut set = async |c: &mut SipClient, availability: u32| {
        let v = versions.entry(c.user.clone()).or_insert(0);
        let doc = machine_state_publish_of(&c.user.clone(), *v, availability);
        c.request("SERVICE", "pub", &publish, &doc).await;
        let ok = c.recv_until(|m| m.method().is_none()).await;
        assert_eq!(status(&ok), 200, "{}", body(&ok));
        *v += 1;
    };

    // Lifetimes: too short is refused with the minimum; too long is cut down.
    let mut short = PRESENCE_SUB.to_vec();
    short.push(("Expires", "1"));
    alice
        .request(
            "SUBSCRIBE",
            "short",
            &short,
            &batch_sub("alice@example.com", &["bob@example.com"]),
        )
        .await;
    let r = alice.recv().await;
    assert_eq!((status(&r), r.header("Min-Expires")), (423, Some("3")));

    // Dialog d1 watches bob; the answer carries bob's state.
    let mut long = PRESENCE_SUB.to_vec();
    long.push(("Expires", "99999"));
    alice
        .request(
            "SUBSCRIBE",
            "d1",
            &long,
            &batch_sub("alice@example.com", &["bob@example.com"]),
        )
        .await;
    let d1 = alice.recv().await;
    assert_eq!((status(&d1), d1.header("Expires")), (200, Some("3")));
    assert!(
        body(&d1).contains("uri=\"sip:bob@example.com\">"),
        "{}",
        body(&d1)
    );
    let d1_tag = sip_proto::NameAddr::parse(d1.header("To").unwrap())
        .tag()
        .unwrap()
        .to_string();
    // A SUBSCRIBE in d1 for carol adds her: bob stays watched (SIPE adds each new
    // buddy this way).
    alice
        .request_in_dialog(
            "SUBSCRIBE",
            "d1",
            &d1_tag,
            &PRESENCE_SUB,
            &batch_sub("alice@example.com", &["carol@example.com"]),
        )
        .await;
    let more = alice.recv().await;
    assert_eq!(status(&more), 200);
    assert!(body(&more).contains("uri=\"sip:carol@example.com\">"));
    // Dialog d2, separate, watches carol too.
    alice
        .request(
            "SUBSCRIBE",
            "d2",
            &PRESENCE_SUB,
            &batch_sub("alice@example.com", &["carol@example.com"]),
        )
        .await;
    let d2 = alice.recv().await;
    assert_eq!(status(&d2), 200);
    let d2_tag = sip_proto::NameAddr::parse(d2.header("To").unwrap())
        .tag()
        .unwrap()
        .to_string();

    set(&mut bob, 3500).await;
    alice
        .recv_until(|m| shows(m, "d1", "bob@example.com", 3500))
        .await;
    set(&mut carol, 6500).await;
    let mut seen = std::collections::HashSet::new();
    while seen.len() < 2 {
        let m = alice.recv().await;
        for d in ["d1", "d2"] {
            if shows(&m, d, "carol@example.com", 6500) {
                seen.insert(d);
            }
        }
    }

    // Unsubscribing d2 ends it at once.
    let mut end = PRESENCE_SUB.to_vec();
    end.push(("Expires", "0"));
    alice
        .request_in_dialog("SUBSCRIBE", "d2", &d2_tag, &end, "")
        .await;
    let bye = alice.recv_until(|m| m.method().is_none()).await;
    assert_eq!(status(&bye), 200);
    assert_eq!(bye.header("Subscription-State"), Some("terminated"));

    // Nobody refreshes d1: it ends with a final notification.
    let last = alice
        .recv_until(|m| {
            m.header("Call-ID") == Some("d1")
                && m.header("Subscription-State")
                    .is_some_and(|s| s.starts_with("terminated"))
        })
        .await;
    assert_eq!(
        last.header("Subscription-State"),
        Some("terminated;reason=timeout")
    );
    // After that, changes reach no dialog.
    set(&mut carol, 15500).await;
    set(&mut bob, 6500).await;
    let quiet = tokio::time::timeout(
        Duration::from_millis(500),
        alice.recv_until(|m| is_benotify(m, "presence")),
    )
    .await;
    assert!(quiet.is_err(), "a notification after the end: {quiet:?}");
    // Re-subscribing late in the old dialog starts over with a full snapshot.
    alice
        .request_in_dialog(
            "SUBSCRIBE",
            "d1",
            &d1_tag,
            &PRESENCE_SUB,
            &batch_sub("alice@example.com", &["bob@example.com"]),
        )
        .await;
    let again = alice.recv().await;
    assert_eq!(status(&again), 200);
    assert!(
        body(&again).contains("<availability>6500</availability>"),
        "{}",
        body(&again)
    );
}

/// Whether the server closes `c` within `within` (reading and dropping anything sent).
async fn closed_within(c: &mut SipClient, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    let mut chunk = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, c.stream.read(&mut chunk)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn connection_deadlines_close_silent_and_unregistered_clients() {
    let dir = tempfile::tempdir().unwrap();
    add_user(dir.path(), "alice@example.com", "Alice", "pw");
    // Short deadlines so that the test need not wait the defaults (30 s, 600 s).
    let config = dir.path().join("presenced.toml");
    std::fs::write(
        &config,
        "[server]\nsip_register_deadline_secs = 1\nsip_keep_alive_secs = 1\n",
    )
    .unwrap();
    let server = Server::start_with(
        dir.path(),
        &[
            "--config",
            config.to_str().unwrap(),
            "--sip",
            "127.0.0.1:0",
            "--sip-allow-unauthenticated",
        ],
    );

    // Nothing before REGISTER: closed once the deadline passes, not before.
    let started = tokio::time::Instant::now();
    let mut silent = SipClient::connect(&server, "alice@example.com").await;
    assert!(closed_within(&mut silent, Duration::from_secs(5)).await);
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );

    // Before REGISTER only small bodies are taken: 16 KiB.
    let mut early = SipClient::connect(&server, "alice@example.com").await;
    let big = "x".repeat(16 * 1024 + 1);
    early
        .request(
            "SERVICE",
            "early-big",
            &[("Content-Type", "application/msrtc-category-publish+xml")],
            &big,
        )
        .await;
    assert_eq!(status(&early.recv().await), 413);

    // Registered, then silent for twice the keep-alive interval: closed.
    let mut quiet = SipClient::connect(&server, "alice@example.com").await;
    let ok = quiet.register().await;
    assert_eq!(status(&ok), 200);
    assert!(ok.header("ms-keep-alive").unwrap().contains("timeout=1"));
    assert!(closed_within(&mut quiet, Duration::from_secs(5)).await);

    // A client that sends its CRLF keep-alives stays.
    let mut alive = SipClient::connect(&server, "alice@example.com").await;
    assert_eq!(status(&alive.register().await), 200);
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        alive.send_raw(b"\r\n\r\n").await;
    }
    alive.request("OPTIONS", "still-here", &[], "").await;
    assert_eq!(
        status(&alive.recv().await),
        200,
        "open after 4 s of keep-alives"
    );
}
