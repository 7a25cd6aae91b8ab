//! WebSocket tests: live presence between two users through the real binary.

mod common;

use common::*;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn snapshots_unknown_users_and_self_subscription() {
    let (_dir, server, ta, tb) = alice_and_bob().await;
    let alice_api = Api::new(&server, &ta);

    let mut bob = server.ws(&tb).await;
    bob.send(
        json!({"op": "subscribe", "id": "w", "uris": ["alice@example.com", "ghost@example.com"],
                    "categories": ["state", "note"]}),
    )
    .await;
    let mut snapshot = None;
    let mut error = None;
    while snapshot.is_none() || error.is_none() {
        let m = bob.recv().await;
        match m["type"].as_str() {
            Some("categories") => snapshot = Some(m),
            Some("error") => error = Some(m),
            other => panic!("unexpected {other:?}"),
        }
    }
    let snapshot = snapshot.unwrap();
    assert_eq!(snapshot["uri"], "alice@example.com");
    assert_eq!(snapshot["names"], json!(["note", "state"]));
    assert_eq!(
        snapshot["categories"],
        json!([]),
        "alice is offline and has no note"
    );
    let error = error.unwrap();
    assert_eq!(error["id"], "w");
    assert_eq!(error["error"], "unknown_user");

    // Alice's own endpoint: the full self view first, then changed parts.
    let mut alice = server.ws(&ta).await;
    alice.send(json!({"op": "subscribe_self"})).await;
    let own = alice.recv_until(|m| m["type"] == "self").await;
    assert!(
        own["containers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["id"] == 200)
    );
    assert!(own["subscribers"].is_array());
    let blocked_state = own["categories"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "state" && c["container"] == 32000)
        .expect("the server's blocked view");
    assert_eq!(blocked_state["summary"]["availability"], 18500);
    let (s, _) = alice_api
        .publish(json!({"publications": [{"category": "note", "instance": 0, "container": 300, "version": 0,
                                          "expire_type": "static", "value": note("team only")}]}))
        .await;
    assert_eq!(s, 200);
    let upd = alice
        .recv_until(|m| m["type"] == "self" && has_name(m, "note"))
        .await;
    assert_eq!(upd["categories"][0]["container"], 300);
    assert_eq!(upd["categories"][0]["version"], 1);
    assert!(upd.get("containers").is_none(), "only changed parts follow");
    // Bob is not in container 300: he is told nothing.
    bob.expect_silence(Duration::from_millis(300)).await;

    alice.send(json!({"op": "unsubscribe", "id": "nope"})).await;
    let e = alice.recv_until(|m| m["type"] == "error").await;
    assert_eq!(e["error"], "unknown_subscription");
}

#[tokio::test]
async fn publish_from_endpoint_notifies_watcher_and_sign_out_goes_offline() {
    let (_dir, server, ta, tb) = alice_and_bob().await;
    let alice_api = Api::new(&server, &ta);
    let mut bob = server.ws(&tb).await;
    bob.send(json!({"op": "subscribe", "id": "w", "uris": ["alice@example.com"], "categories": ["state", "note"]}))
        .await;
    bob.recv_until(|m| m["type"] == "categories").await;

    // Alice's WebSocket is her endpoint; its id comes in the hello.
    let alice_ws = server.ws(&ta).await;
    let endpoint = alice_ws.endpoint;

    let publish = |version: u32, availability: u32| {
        json!({"endpoint": endpoint, "publications": [
            {"category": "state", "instance": 805306369u32, "container": 2, "version": version,
             "expire_type": "endpoint", "value": machine_state(availability)},
            {"category": "state", "instance": 805306369u32, "container": 3, "version": version,
             "expire_type": "endpoint", "value": machine_state(availability)},
        ]})
    };
    let (s, body) = alice_api.publish(publish(0, 3500)).await;
    assert_eq!(s, 200, "{body}");
    let m = bob
        .recv_until(|m| {
            m["type"] == "categories"
                && has_name(m, "state")
                && availability(&m["categories"]).is_some()
        })
        .await;
    assert_eq!(availability(&m["categories"]), Some(3500));
    let state = &m["categories"][0];
    assert_eq!(state["summary"]["availability_class"], "available");
    assert!(
        state.get("container").is_none(),
        "container ids are hidden from watchers"
    );

    let (s, _) = alice_api.publish(publish(1, 6500)).await;
    assert_eq!(s, 200);
    let m = bob
        .recv_until(|m| availability(&m["categories"]) == Some(6500))
        .await;
    assert_eq!(m["categories"][0]["summary"]["availability_class"], "busy");

    // A note reaches bob too (container 200 is sameEnterprise).
    let (s, _) = alice_api
        .publish(json!({"publications": [{"category": "note", "instance": 0, "container": 200, "version": 0,
                                          "expire_type": "static", "value": note("lunch")}]}))
        .await;
    assert_eq!(s, 200);
    let m = bob.recv_until(|m| has_name(m, "note")).await;
    assert_eq!(m["categories"][0]["summary"]["note"], "lunch");

    // Closing the socket signs the endpoint out: state disappears (offline).
    drop(alice_ws);
    let m = bob.recv_until(|m| has_name(m, "state")).await;
    assert_eq!(m["categories"], json!([]), "{m}");
    bob.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn websocket_authentication() {
    let dir = tempfile::tempdir().unwrap();
    add_user(dir.path(), "alice@example.com", "Alice", "pw-a");
    let server = Server::start(dir.path());
    let token = server.login("alice@example.com", "pw-a").await;

    // Token as the first message.
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/v1/stream", server.addr))
        .await
        .unwrap();
    let mut w = Ws {
        stream: ws,
        endpoint: 0,
    };
    w.send(json!({"op": "auth", "token": token})).await;
    assert_eq!(w.recv().await["type"], "hello");
    w.send(json!({"op": "dance"})).await;
    let e = w.recv().await;
    assert_eq!(
        (e["type"].as_str(), e["error"].as_str()),
        (Some("error"), Some("bad_request"))
    );

    // A wrong token in the first message is refused and the socket closed.
    (ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/v1/stream", server.addr))
        .await
        .unwrap();
    let mut w = Ws {
        stream: ws,
        endpoint: 0,
    };
    w.send(json!({"op": "auth", "token": "forged"})).await;
    assert_eq!(w.recv().await["error"], "unauthorized");

    // A wrong bearer header is refused before the upgrade.
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        format!("ws://{}/v1/stream", server.addr),
    )
    .unwrap();
    req.headers_mut()
        .insert("Authorization", "Bearer forged".parse().unwrap());
    assert!(tokio_tungstenite::connect_async(req).await.is_err());
}

#[tokio::test]
async fn a_revoked_token_ends_its_websocket() {
    let dir = tempfile::tempdir().unwrap();
    add_user(dir.path(), "alice@example.com", "Alice", "pw-a");
    let config = dir.path().join("presenced.toml");
    std::fs::write(&config, "[limits]\nws_token_recheck_secs = 1\n").unwrap();
    let server = Server::start_with(dir.path(), &["--config", config.to_str().unwrap()]);
    let token = server.login("alice@example.com", "pw-a").await;
    let mut ws = server.ws(&token).await;
    let r = reqwest::Client::new()
        .delete(server.url("/v1/sessions"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let e = ws.recv_until(|m| m["type"] == "error").await;
    assert_eq!(e["error"], "unauthorized");
}
