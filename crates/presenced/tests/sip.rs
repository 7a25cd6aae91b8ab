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
    let state = machine_state(availability);
    format!(
        "<publish xmlns=\"http://schemas.microsoft.com/2006/09/sip/rich-presence\"><publications uri=\"sip:alice@example.com\">\
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
    // The 200 and the contact-list notification may come in either order.
    let (mut answered, mut delta) = (false, None);
    while !answered || delta.is_none() {
        let m = carol.recv().await;
        if m.method().is_none() {
            assert_eq!(status(&m), 200);
            answered = true;
        } else if is_benotify(&m, "vnd-microsoft-roaming-contacts")
            && body(&m).contains("deltaNum=\"2\"")
        {
            delta = Some(m);
        }
    }
    let delta = delta.unwrap();
    assert!(
        body(&delta).contains("uri=\"alice@example.com\""),
        "{}",
        body(&delta)
    );
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
    assert_eq!(
        status(&carol.recv_until(|m| m.method().is_none()).await),
        200
    );
    let first = carol.recv_until(|m| is_benotify(m, "presence")).await;
    let first_body = body(&first);
    assert!(
        first_body.contains("uri=\"sip:alice@example.com\""),
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
    let bomb = "<!DOCTYPE lolz [<!ENTITY lol \"lol\">]><publish>&lol;</publish>";
    c.request(
        "SERVICE",
        "bomb",
        &[("Content-Type", "application/msrtc-category-publish+xml")],
        bomb,
    )
    .await;
    assert_eq!(status(&c.recv().await), 400);
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
}
