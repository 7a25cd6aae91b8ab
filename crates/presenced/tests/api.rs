//! Black-box tests of the HTTP API against the real binary.

mod common;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};

async fn two_users() -> (tempfile::TempDir, Server, Api, Api) {
    let (dir, server, ta, tb) = alice_and_bob().await;
    let (alice, bob) = (Api::new(&server, &ta), Api::new(&server, &tb));
    (dir, server, alice, bob)
}

fn note_pub(container: u32, version: u32, text: &str) -> Value {
    json!({"category": "note", "instance": 0, "container": container, "version": version,
           "expire_type": "static", "value": note(text)})
}

#[tokio::test]
async fn sessions_and_authentication() {
    let (_dir, server, alice, _bob) = two_users().await;
    let c = reqwest::Client::new();
    let r = c
        .post(server.url("/v1/sessions"))
        .json(&json!({"user": "alice@example.com", "password": "wrong"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "bad_credentials");
    let r = c
        .post(server.url("/v1/sessions"))
        .json(&json!({"user": "nobody@example.com", "password": "pw"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .post(server.url("/v1/sessions"))
        .body("{not json")
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // Every /v1 route but sign-in needs a token.
    for path in [
        "/v1/me",
        "/v1/me/containers",
        "/v1/me/subscribers",
        "/v1/presentities/bob@example.com",
    ] {
        assert_eq!(
            c.get(server.url(path)).send().await.unwrap().status(),
            401,
            "{path}"
        );
        let r = c
            .get(server.url(path))
            .bearer_auth("forged")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{path}");
        assert_eq!(r.json::<Value>().await.unwrap()["error"], "unauthorized");
    }
    // Public routes.
    let spec: Value = c
        .get(server.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for path in [
        "/v1/sessions",
        "/v1/stream",
        "/v1/me/publications",
        "/v1/me/containers",
        "/v1/presentities/{user}",
        "/v1/directory",
        "/v1/me/contacts",
    ] {
        assert!(spec["paths"][path].is_object(), "openapi lacks {path}");
    }
    let metrics = c
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("presenced_publications_total"));
    for gauge in ["process_resident_memory_bytes", "process_open_fds"] {
        let value: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{gauge} ")))
            .unwrap_or_else(|| panic!("{gauge} in {metrics}"))
            .parse()
            .unwrap();
        assert!(value > 0, "{gauge}");
    }
    assert!(metrics.contains("presenced_directory_users 0"), "{metrics}");
    assert_eq!(c.get(server.url("/")).send().await.unwrap().status(), 200);
    assert_eq!(
        c.get(server.url("/no/such")).send().await.unwrap().status(),
        404
    );
    let r = c
        .put(server.url("/v1/me"))
        .bearer_auth(&alice.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"],
        "method_not_allowed"
    );
    let r = c
        .get(server.url("/v1/presentities/alice@example.com?colour=red"))
        .bearer_auth(&alice.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "bad_request");
    // The bearer scheme is case-insensitive.
    let r = c
        .get(server.url("/v1/me"))
        .header("Authorization", format!("bearer {}", alice.token))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Sign-out revokes the token.
    let (s, _) = alice.get("/v1/me").await;
    assert_eq!(s, 200);
    let r = c
        .delete(server.url("/v1/sessions"))
        .bearer_auth(&alice.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(alice.get("/v1/me").await.0, 401);
}

#[tokio::test]
async fn publications_versions_and_errors() {
    let (_dir, _server, alice, bob) = two_users().await;
    let (s, body) = alice
        .publish(json!({"publications": [note_pub(200, 0, "hello"), note_pub(400, 0, "hello")]}))
        .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["publications"][0]["version"], 1);
    assert_eq!(body["publications"][1]["container"], 400);

    // A stale version anywhere refuses the whole batch and names it by 1-based index.
    let (s, body) = alice
        .publish(json!({"publications": [note_pub(200, 1, "new"), note_pub(400, 0, "new")]}))
        .await;
    assert_eq!(s, 409, "{body}");
    assert_eq!(body["error"], "version_conflict");
    assert_eq!(
        body["conflicts"],
        json!([{"index": 2, "version": 0, "current_version": 1}])
    );
    let (_, me) = alice.get("/v1/me").await;
    let n200 = me["categories"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "note" && c["container"] == 200)
        .unwrap();
    assert_eq!(n200["version"], 1, "nothing applied");
    assert_eq!(n200["summary"]["note"], "hello");
    assert_eq!(n200["expire_type"], "static");

    let (s, body) = alice
        .publish(json!({"publications": [note_pub(200, 1, "a"), note_pub(200, 1, "b")]}))
        .await;
    assert_eq!((s, body["error"].as_str()), (400, Some("duplicate_key")));
    let mut bomb = note_pub(200, 1, "x");
    bomb["value"] = json!("<!DOCTYPE n [<!ENTITY a \"aaaa\">]><note>&a;</note>");
    let (s, body) = alice.publish(json!({"publications": [bomb]})).await;
    assert_eq!((s, body["error"].as_str()), (400, Some("invalid_xml")));
    assert_eq!(body["kind"], "bad_request", "{body}");
    let mut broken = note_pub(200, 1, "x");
    broken["value"] = json!("<note>");
    assert_eq!(
        alice.publish(json!({"publications": [broken]})).await.0,
        400
    );
    let agg = json!({"category": "state", "instance": 1, "container": 200, "version": 0, "expire_type": "static",
                     "value": machine_state(3500)});
    let (s, body) = alice.publish(json!({"publications": [agg]})).await;
    assert_eq!((s, body["error"].as_str()), (403, Some("read_only")));
    let ep = json!({"category": "state", "instance": 5, "container": 2, "version": 0, "expire_type": "endpoint",
                    "value": machine_state(3500)});
    assert_eq!(
        alice.publish(json!({"publications": [ep.clone()]})).await.0,
        400,
        "endpoint expiry needs an endpoint"
    );
    let (s, body) = alice
        .publish(json!({"endpoint": 999999, "publications": [ep]}))
        .await;
    assert_eq!(
        (s, body["error"].as_str(), body["kind"].as_str()),
        (403, Some("invalid_endpoint"), Some("forbidden")),
        "not a live endpoint: {body}"
    );
    let mut bad_container = note_pub(40000, 0, "x");
    bad_container["container"] = json!(40000);
    assert_eq!(
        alice
            .publish(json!({"publications": [bad_container]}))
            .await
            .0,
        400
    );
    let big_value = format!("<note>{}</note>", "y".repeat(70 * 1024));
    let mut big = note_pub(200, 1, "");
    big["value"] = json!(big_value);
    assert_eq!(alice.publish(json!({"publications": [big]})).await.0, 413);

    // Custom containers are created implicitly; deletion with expires 0.
    let (s, _) = alice
        .publish(json!({"publications": [note_pub(401, 0, "custom")]}))
        .await;
    assert_eq!(s, 200);
    let del = json!({"category": "note", "instance": 0, "container": 400, "version": 1, "expire_type": "static", "expires": 0});
    let (s, body) = alice.publish(json!({"publications": [del]})).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["publications"][0]["deleted"], true);

    // Bob (sameEnterprise -> container 200) sees the note, without metadata.
    let (s, view) = bob
        .get("/v1/presentities/alice@example.com?categories=note,state")
        .await;
    assert_eq!(s, 200);
    let cats = view["categories"].as_array().unwrap();
    assert_eq!(cats.len(), 1, "{view}");
    assert_eq!(cats[0]["summary"]["note"], "hello");
    assert!(cats[0].get("container").is_none() && cats[0].get("version").is_none());
    assert_eq!(bob.get("/v1/presentities/nobody@example.com").await.0, 404);
    // Looking at oneself shows one's own data with its containers.
    let (_, own) = alice
        .get("/v1/presentities/alice@example.com?categories=note,note")
        .await;
    let own_notes = own["categories"].as_array().unwrap();
    assert!(own_notes.iter().all(|n| n["container"].is_u64()), "{own}");
    assert_eq!(own_notes.len(), 2, "200 and 401, once each: {own}");
    let (s, body) = alice.publish(json!({"publications": []})).await;
    assert_eq!(
        (s, body["error"].as_str()),
        (400, Some("invalid_publication"))
    );
    assert_eq!(bob.get("/v1/presentities/not-a-user").await.0, 400);
}

#[tokio::test]
async fn oversized_bodies_get_413() {
    let dir = tempfile::tempdir().unwrap();
    add_user(dir.path(), "alice@example.com", "Alice", "pw-a");
    let config = dir.path().join("presenced.toml");
    // A small limit keeps the whole body inside socket buffers, so the client is
    // done writing when the early 413 arrives.
    std::fs::write(&config, "[limits]\nmax_body_bytes = 16384\n").unwrap();
    let server = Server::start_with(dir.path(), &["--config", config.to_str().unwrap()]);
    let alice = Api::new(&server, &server.login("alice@example.com", "pw-a").await);
    let (s, body) = alice
        .publish(json!({"publications": [note_pub(200, 0, &"x".repeat(20_000))]}))
        .await;
    assert_eq!((s, body["error"].as_str()), (413, Some("too_large")));
    let (s, _) = alice
        .publish(json!({"publications": [note_pub(200, 0, &"x".repeat(10_000))]}))
        .await;
    assert_eq!(s, 200, "under the limit is fine");
}

#[tokio::test]
async fn containers_and_blocking() {
    let (_dir, _server, alice, bob) = two_users().await;
    alice
        .publish(json!({"publications": [note_pub(200, 0, "hi colleagues")]}))
        .await;
    let (s, containers) = alice.get("/v1/me/containers").await;
    assert_eq!(s, 200);
    let blocked = containers
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == 32000)
        .unwrap();
    assert_eq!(blocked["version"], 1);
    assert_eq!(blocked["members"], json!([]));

    let patch = |v: u32| json!([{"id": 32000, "version": v, "add": [{"type": "user", "value": "sip:bob@example.com"}]}]);
    let (s, body) = alice
        .send(Method::PATCH, "/v1/me/containers", patch(0))
        .await;
    assert_eq!((s, body["error"].as_str()), (409, Some("version_conflict")));
    let (s, body) = alice
        .send(Method::PATCH, "/v1/me/containers", patch(1))
        .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body[0]["version"], 2);
    assert_eq!(
        body[0]["members"],
        json!([{"type": "user", "value": "bob@example.com"}])
    );

    // Blocked: bob sees the offline aggregate and no note.
    let (_, view) = bob.get("/v1/presentities/alice@example.com").await;
    assert_eq!(availability(&view["categories"]), Some(18500), "{view}");
    assert!(
        !view["categories"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "note")
    );

    for id in [0, 1, 2, 3] {
        let (s, body) = alice
            .send(
                Method::PATCH,
                "/v1/me/containers",
                json!([{"id": id, "version": 0, "add": [{"type": "everyone"}]}]),
            )
            .await;
        assert_eq!(
            (s, body["error"].as_str()),
            (403, Some("fixed_container")),
            "container {id}"
        );
    }
    let (s, _) = alice
        .send(
            Method::PATCH,
            "/v1/me/containers",
            json!([{"id": 400, "version": 0, "add": [{"type": "user"}]}]),
        )
        .await;
    assert_eq!(s, 400, "user member needs a value");
    let (s, _) = alice
        .send(
            Method::PATCH,
            "/v1/me/containers",
            json!([{"id": 400, "version": 0, "add": [{"type": "friend"}]}]),
        )
        .await;
    assert_eq!(s, 400);

    // Unblock: the real view is back.
    let (s, _) = alice
        .send(Method::PATCH, "/v1/me/containers", json!([{"id": 32000, "version": 2, "remove": [{"type": "user", "value": "bob@example.com"}]}]))
        .await;
    assert_eq!(s, 200);
    let (_, view) = bob
        .get("/v1/presentities/alice@example.com?categories=note")
        .await;
    assert_eq!(view["categories"][0]["summary"]["note"], "hi colleagues");
}

#[tokio::test]
async fn subscribers_list_and_acknowledge() {
    let (_dir, server, alice, bob) = two_users().await;
    let mut ws = server.ws(&bob.token).await;
    ws.send(json!({"op": "subscribe", "id": "s1", "uris": ["alice@example.com"], "categories": ["state"], "context": true}))
        .await;
    ws.recv_until(|m| m["type"] == "categories").await;
    let (s, subs) = alice.get("/v1/me/subscribers").await;
    assert_eq!(s, 200);
    assert_eq!(subs.as_array().unwrap().len(), 1, "{subs}");
    assert_eq!(subs[0]["user"], "bob@example.com");
    assert_eq!(subs[0]["display_name"], "Bob");
    assert_eq!(subs[0]["type"], "sameEnterprise");
    assert_eq!(subs[0]["acknowledged"], false);
    let (s, _) = alice
        .send(
            Method::POST,
            "/v1/me/subscribers/bob@example.com/acknowledge",
            json!({}),
        )
        .await;
    assert_eq!(s, 204);
    assert_eq!(alice.get("/v1/me/subscribers").await.1, json!([]));
    let (s, body) = alice
        .send(
            Method::POST,
            "/v1/me/subscribers/bob@example.com/acknowledge",
            json!({}),
        )
        .await;
    assert_eq!((s, body["error"].as_str()), (404, Some("not_a_subscriber")));
}

#[tokio::test]
async fn contact_list_and_groups() {
    let (_dir, server, alice, _bob) = two_users().await;
    let (s, list) = alice.get("/v1/me/contacts").await;
    assert_eq!(s, 200);
    assert_eq!(
        list,
        json!({"delta_num": 1, "groups": [{"id": 1, "name": "~"}], "contacts": []})
    );

    let (s, body) = alice
        .send(
            Method::POST,
            "/v1/me/groups",
            json!({"name": "Team", "delta_num": 1}),
        )
        .await;
    assert_eq!(s, 201, "{body}");
    let team = body["id"].as_u64().unwrap();
    assert_eq!(body["contacts"]["delta_num"], 2);
    let (s, list) = alice
        .send(
            Method::PUT,
            "/v1/me/contacts/bob@example.com",
            json!({"name": "Bobby", "groups": [team], "delta_num": 2}),
        )
        .await;
    assert_eq!(s, 200, "{list}");
    assert_eq!(
        list["contacts"],
        json!([{"uri": "bob@example.com", "name": "Bobby", "groups": [team], "subscribed": true}])
    );
    assert_eq!(list["delta_num"], 3);

    // Stale delta, unknown user, unknown group, default group, self.
    let (s, body) = alice
        .send(
            Method::PUT,
            "/v1/me/contacts/bob@example.com",
            json!({"delta_num": 2}),
        )
        .await;
    assert_eq!((s, body["error"].as_str()), (409, Some("delta_conflict")));
    let (s, body) = alice
        .send(Method::PUT, "/v1/me/contacts/ghost@example.com", json!({}))
        .await;
    assert_eq!((s, body["error"].as_str()), (404, Some("unknown_user")));
    let (s, body) = alice
        .send(
            Method::PUT,
            "/v1/me/contacts/bob@example.com",
            json!({"groups": [42]}),
        )
        .await;
    assert_eq!((s, body["error"].as_str()), (404, Some("unknown_group")));
    let (s, body) = alice
        .send(Method::DELETE, "/v1/me/groups/1", json!({}))
        .await;
    assert_eq!((s, body["error"].as_str()), (403, Some("default_group")));
    let (s, _) = alice
        .send(Method::PUT, "/v1/me/contacts/alice@example.com", json!({}))
        .await;
    assert_eq!(s, 400);
    let (s, body) = alice
        .send(Method::DELETE, "/v1/me/groups/abc", json!({}))
        .await;
    assert_eq!((s, body["error"].as_str()), (400, Some("bad_request")));

    // Deleting the group moves bob to the default group; the list is durable.
    let (s, list) = alice
        .send(
            Method::DELETE,
            &format!("/v1/me/groups/{team}?delta_num=3"),
            json!({}),
        )
        .await;
    assert_eq!(s, 200, "{list}");
    assert_eq!(list["contacts"][0]["groups"], json!([1]));
    let (s, list) = alice
        .send(Method::DELETE, "/v1/me/contacts/bob@example.com", json!({}))
        .await;
    assert_eq!(s, 200);
    assert_eq!(list["contacts"], json!([]));
    assert_eq!(list["delta_num"], 5);
    let (s, body) = alice
        .send(Method::DELETE, "/v1/me/contacts/bob@example.com", json!({}))
        .await;
    assert_eq!((s, body["error"].as_str()), (404, Some("unknown_contact")));

    // A self-subscribed endpoint hears about changes.
    let mut ws = server.ws(&alice.token).await;
    ws.send(json!({"op": "subscribe_self"})).await;
    let full = ws.recv_until(|m| m["type"] == "self").await;
    assert_eq!(full["contacts"]["delta_num"], 5);
    alice
        .send(Method::POST, "/v1/me/groups", json!({"name": "Friends"}))
        .await;
    let upd = ws
        .recv_until(|m| m["type"] == "self" && m.get("contacts").is_some())
        .await;
    assert_eq!(upd["contacts"]["delta_num"], 6);
    assert_eq!(upd["contacts"]["groups"][1]["name"], "Friends");
}
