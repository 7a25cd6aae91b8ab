//! Directory tests against a real OpenLDAP server (Debian's slapd), started by the
//! test on a free loopback port.

mod common;

use common::slapd::{READER_PW, Slapd, seed};
use common::*;
use serde_json::json;
use std::time::Duration;

fn sync(config: &std::path::Path, data: &std::path::Path) -> (bool, String, String) {
    run(
        &["directory", "sync", "--config", config.to_str().unwrap()],
        data,
        None,
    )
}

#[test]
fn imports_1200_users_with_paging_then_nothing_changes() {
    let slapd = Slapd::start(&seed(1200, &[]));
    let config = slapd.config("", READER_PW);
    let data = tempfile::tempdir().unwrap();
    let (ok, out, err) = sync(&config, data.path());
    assert!(ok, "{err}");
    // More than the server's 500-entry size limit: only a paged search gets them all.
    assert!(
        out.contains("added 1200, updated 0, disabled 0, unchanged 0, errors 0"),
        "{out}"
    );
    let (ok, out, err) = sync(&config, data.path());
    assert!(ok, "{err}");
    assert!(
        out.contains("added 0, updated 0, disabled 0, unchanged 1200, errors 0"),
        "{out}"
    );
    let (_, list, _) = run(&["user", "list"], data.path(), None);
    assert_eq!(list.lines().count(), 1200);
    assert!(list.contains("user17@example.com\tUser 17"));
}

#[test]
fn bad_credentials_and_an_unreachable_directory_change_nothing() {
    let mut slapd = Slapd::start(&seed(3, &[]));
    let data = tempfile::tempdir().unwrap();
    let (ok, _, err) = sync(&slapd.config("", "wrong"), data.path());
    assert!(!ok);
    assert!(
        err.contains("bind as \"cn=reader,dc=example,dc=com\" refused"),
        "{err}"
    );
    assert_eq!(
        run(&["user", "list"], data.path(), None).1,
        "",
        "nothing imported"
    );

    let config = slapd.config("", READER_PW);
    let (ok, out, _) = sync(&config, data.path());
    assert!(ok && out.contains("added 3"), "{out}");
    slapd.stop();
    let (ok, _, err) = sync(&config, data.path());
    assert!(!ok);
    assert!(err.contains("unreachable"), "{err}");
    assert_eq!(
        run(&["user", "list"], data.path(), None).1.lines().count(),
        3,
        "nothing lost"
    );
    slapd.restart();
    let (ok, out, err) = sync(&config, data.path());
    assert!(ok, "{err}");
    assert!(out.contains("unchanged 3"), "{out}");
}

#[test]
fn starttls_and_ldaps_verify_the_server_certificate() {
    let slapd = Slapd::start_tls(&seed(2, &[]));
    let ca = slapd.ca_file();
    let trust = format!("tls_ca_file = \"{}\"", ca.display());
    for (url, extra) in [
        (slapd.url(), format!("starttls = true\n{trust}")),
        (slapd.ldaps_url(), trust.clone()),
    ] {
        let data = tempfile::tempdir().unwrap();
        let config = slapd.config_for(&url, "", READER_PW, &extra);
        let (ok, out, err) = sync(&config, data.path());
        assert!(ok && out.contains("added 2"), "{url}: {out}{err}");
    }
    // Without the test CA the certificate is not trusted: a clear error, no import.
    let data = tempfile::tempdir().unwrap();
    let config = slapd.config_for(&slapd.ldaps_url(), "", READER_PW, "");
    let (ok, _, err) = sync(&config, data.path());
    assert!(!ok, "an untrusted certificate must be refused");
    assert!(
        err.contains("unreachable") && err.to_lowercase().contains("certificate"),
        "{err}"
    );
    assert_eq!(run(&["user", "list"], data.path(), None).1, "");
}

#[tokio::test]
async fn changes_reach_exactly_the_watchers_who_may_see_them_and_disabling_ends_sessions() {
    let slapd = Slapd::start(&seed(
        0,
        &[
            ("alice", "Alice Anders", "pw-a"),
            ("bob", "Bob Berg", "pw-b"),
            ("carol", "Carol Chen", "pw-c"),
        ],
    ));
    let config = slapd.config("[auth]\npassword_source = \"ldap\"", READER_PW);
    let data = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        data.path(),
        &[
            "--config",
            config.to_str().unwrap(),
            "--sip",
            "127.0.0.1:0",
            "--sip-allow-unauthenticated",
        ],
    );

    // The server syncs at start; sign-in checks the LDAP password.
    let deadline = std::time::Instant::now() + WAIT;
    let bob_token = loop {
        let r = reqwest::Client::new()
            .post(server.url("/v1/sessions"))
            .json(&json!({"user": "bob@example.com", "password": "pw-b"}))
            .send()
            .await
            .unwrap();
        if r.status() == 201 {
            break r.json::<serde_json::Value>().await.unwrap()["token"]
                .as_str()
                .unwrap()
                .to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "bob never could sign in"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let wrong = reqwest::Client::new()
        .post(server.url("/v1/sessions"))
        .json(&json!({"user": "bob@example.com", "password": "pw-a"}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let alice_token = server.login("alice@example.com", "pw-a").await;
    let carol_token = server.login("carol@example.com", "pw-c").await;
    let bob = Api::new(&server, &bob_token);

    // Directory data is read-only and visible while bob is signed out.
    let (_, view) = Api::new(&server, &alice_token)
        .get("/v1/presentities/bob@example.com?categories=contactCard")
        .await;
    let cards = view["categories"].as_array().unwrap();
    assert!(
        cards
            .iter()
            .any(|c| c["instance"] == 0 && c["summary"]["display_name"] == "Bob Berg"),
        "{view}"
    );
    assert!(
        cards
            .iter()
            .any(|c| c["instance"] == 3 && c["value"].as_str().unwrap().contains("Engineer")),
        "{view}"
    );
    let (s, body) = bob
        .publish(json!({"publications": [{"category": "contactCard", "instance": 3, "container": 200, "version": 1,
                                          "expire_type": "static", "value": "<contactCard/>"}]}))
        .await;
    assert_eq!(
        (s, body["error"].as_str()),
        (403, Some("read_only")),
        "{body}"
    );
    let (_, own) = bob.get("/v1/me").await;
    assert!(
        own["categories"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "userProperties" && c["container"] == 1),
        "{own}"
    );

    // Bob blocks carol: she must not learn his new title.
    let (s, _) = bob
        .send(
            reqwest::Method::PATCH,
            "/v1/me/containers",
            json!([{"id": 32000, "version": 1, "add": [{"type": "user", "value": "carol@example.com"}]}]),
        )
        .await;
    assert_eq!(s, 200);
    let mut alice = server.ws(&alice_token).await;
    let mut carol = server.ws(&carol_token).await;
    for ws in [&mut alice, &mut carol] {
        ws.send(json!({"op": "subscribe", "id": "b", "uris": ["bob@example.com"], "categories": ["contactCard", "state"]}))
            .await;
        ws.recv_until(|m| m["type"] == "categories").await;
    }
    let mut bob_ws = server.ws(&bob_token).await;
    // Bob is also signed in over SIP (a SIPE-like client on its own connection).
    let mut bob_sip = common::sip::SipClient::connect(&server, "bob@example.com").await;
    assert_eq!(common::sip::status(&bob_sip.register().await), 200);

    slapd.modify("dn: uid=bob,ou=people,dc=example,dc=com\nchangetype: modify\nreplace: title\ntitle: Chief Scientist\n");
    let m = alice
        .recv_until(|m| m["type"] == "categories" && has_name(m, "contactCard"))
        .await;
    assert!(m.to_string().contains("Chief Scientist"), "{m}");
    carol.expect_silence(Duration::from_millis(2500)).await;

    // Disabled in the directory: sessions end, the connection closes, watchers see
    // the identity card only.
    slapd.modify("dn: uid=bob,ou=people,dc=example,dc=com\nchangetype: modify\nreplace: msRTCSIP-UserEnabled\nmsRTCSIP-UserEnabled: FALSE\n");
    let closed = tokio::time::timeout(WAIT, async {
        use futures_util::StreamExt;
        loop {
            match bob_ws.stream.next().await {
                None
                | Some(Err(_))
                | Some(Ok(tokio_tungstenite::tungstenite::Message::Close(_))) => break,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "bob's connection stayed open");
    let sip_closed = tokio::time::timeout(WAIT, async {
        use tokio::io::AsyncReadExt;
        let mut rest = Vec::new();
        bob_sip.stream.read_to_end(&mut rest).await
    })
    .await;
    assert!(
        matches!(sip_closed, Ok(Ok(_))),
        "bob's SIP connection stayed open"
    );
    assert_eq!(bob.get("/v1/me").await.0, 401, "bob's token is revoked");
    let m = alice
        .recv_until(|m| m["type"] == "categories" && has_name(m, "contactCard"))
        .await;
    let cards: Vec<_> = m["categories"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["name"] == "contactCard")
        .collect();
    assert_eq!(cards.len(), 1, "identity card only: {m}");
    assert_eq!(cards[0]["instance"], 0);
    let again = reqwest::Client::new()
        .post(server.url("/v1/sessions"))
        .json(&json!({"user": "bob@example.com", "password": "pw-b"}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 401, "a disabled user cannot sign in");
}

/// Not a pass/fail test: times the import of 10,000 users from slapd. Run with
/// `cargo test -p presenced --release --test directory -- --ignored --nocapture`.
#[test]
#[ignore = "benchmark"]
fn bench_import_10000_users() {
    let slapd = Slapd::start(&seed(10_000, &[]));
    let config = slapd.config("", READER_PW);
    let data = tempfile::tempdir().unwrap();
    let start = std::time::Instant::now();
    let (ok, out, err) = sync(&config, data.path());
    let elapsed = start.elapsed();
    assert!(ok && out.contains("added 10000"), "{out}{err}");
    println!(
        "imported 10000 users from slapd in {:.2} s",
        elapsed.as_secs_f64()
    );
}
