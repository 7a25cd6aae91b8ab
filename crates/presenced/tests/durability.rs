//! Nothing acknowledged is lost: SIGKILL after acknowledged publications, restart,
//! everything is back. Endpoint data is not.

mod common;

use common::*;
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn acknowledged_writes_survive_sigkill() {
    let (dir, server, token, bob_token) = alice_and_bob().await;
    let api = Api::new(&server, &token);
    const N: u32 = 40;
    for i in 0..N {
        let (s, _) = api
            .publish(json!({"publications": [{"category": "note", "instance": i, "container": 200, "version": 0,
                                              "expire_type": "static", "value": note(&format!("n{i}"))}]}))
            .await;
        assert_eq!(s, 200);
    }
    let (s, _) = api
        .send(Method::PATCH, "/v1/me/containers", json!([{"id": 400, "version": 0, "add": [{"type": "user", "value": "bob@example.com"}]}]))
        .await;
    assert_eq!(s, 200);
    let mut bob = server.ws(&bob_token).await;
    bob.send(json!({"op": "subscribe", "id": "x", "uris": ["alice@example.com"], "context": true}))
        .await;
    bob.recv_until(|m| m["type"] == "categories").await;
    // The entry is acknowledged once the owner can read it.
    let deadline = std::time::Instant::now() + WAIT;
    while api.get("/v1/me/subscribers").await.1 == json!([]) {
        assert!(
            std::time::Instant::now() < deadline,
            "subscriber entry never appeared"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    server.kill9();

    let server = Server::start(dir.path());
    // API sessions are stored too: the token from before the crash still works.
    let api = Api::new(&server, &token);
    let (_, me) = api.get("/v1/me").await;
    let notes: Vec<_> = me["categories"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["name"] == "note")
        .collect();
    assert_eq!(notes.len(), N as usize);
    assert!(notes.iter().all(|n| n["version"] == 1));
    let (_, containers) = api.get("/v1/me/containers").await;
    let c400 = containers
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == 400)
        .unwrap();
    assert_eq!(c400["version"], 1);
    assert_eq!(
        c400["members"],
        json!([{"type": "user", "value": "bob@example.com"}])
    );
    let (_, subs) = api.get("/v1/me/subscribers").await;
    assert_eq!(subs[0]["user"], "bob@example.com");
}
