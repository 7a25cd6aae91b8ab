//! Directory search over the API (`GET /v1/directory`) against the real server, with
//! users imported from a directory file: word-prefix matching, ranking, accents,
//! disabled users, limits, throttling, authentication, and what the caller may see.

mod common;

use common::*;
use serde_json::{Value, json};

const USERS: &str = r#"
[[user]]
uri = "alice@example.com"
display_name = "Alice Anders"
given_name = "Alice"
surname = "Anders"
title = "Engineer"
department = "Research"

[[user]]
uri = "bob@example.com"
display_name = "Bob Ali"
given_name = "Bob"
surname = "Ali"
title = "Sales Manager"
department = "Sales"

[[user]]
uri = "alicia@example.com"
display_name = "Alicia Keys"
given_name = "Alicia"
surname = "Keys"
title = "Pianist"

[[user]]
uri = "zoe@example.com"
display_name = "Zoë Ångström"
given_name = "Zoë"
surname = "Ångström"
department = "Research"

[[user]]
uri = "dave@example.com"
display_name = "Dave Gone"
enabled = false
"#;

/// A server whose directory holds the users above plus `extra` "Test Person N"s;
/// alice, bob and carol (carol only local, not in the directory) have password "pw".
fn server_with_directory(extra: usize) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    for (u, n) in [
        ("alice@example.com", "Alice"),
        ("bob@example.com", "Bob"),
        ("carol@example.com", "Carol"),
    ] {
        add_user(dir.path(), u, n, "pw");
    }
    let mut users = USERS.to_string();
    for i in 0..extra {
        users.push_str(&format!(
            "\n[[user]]\nuri = \"test{i}@example.com\"\ndisplay_name = \"Test Person {i}\"\n"
        ));
    }
    let file = dir.path().join("users.toml");
    std::fs::write(&file, users).unwrap();
    // `run` points the command at the data directory.
    let (ok, out, err) = run(
        &["directory", "import", file.to_str().unwrap()],
        dir.path(),
        None,
    );
    assert!(ok, "{out}{err}");
    let server = Server::start(dir.path());
    (dir, server)
}

fn names(body: &Value) -> Vec<&str> {
    body["results"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"))
        .iter()
        .map(|r| r["display_name"].as_str().unwrap())
        .collect()
}

async fn find(api: &Api, q: &str) -> Value {
    let (status, body) = api
        .get(&format!(
            "/v1/directory?q={}",
            presenced::bench_search::percent_encode(q)
        ))
        .await;
    assert_eq!(status, 200, "{q}: {body}");
    body
}

#[tokio::test]
async fn finds_colleagues_by_word_prefix_ranked_and_accent_insensitively() {
    let (_dir, server) = server_with_directory(0);
    let alice = Api::new(&server, &server.login("alice@example.com", "pw").await);

    assert_eq!(names(&find(&alice, "ali and").await), vec!["Alice Anders"]);
    // An exact word beats a prefix: Bob's surname is "Ali".
    assert_eq!(
        names(&find(&alice, "ali").await),
        vec!["Bob Ali", "Alice Anders", "Alicia Keys"]
    );
    assert_eq!(
        names(&find(&alice, "ZOE angstrom").await),
        vec!["Zoë Ångström"]
    );
    assert_eq!(
        names(&find(&alice, "research").await),
        vec!["Alice Anders", "Zoë Ångström"]
    );
    assert_eq!(names(&find(&alice, "bob@exa").await), vec!["Bob Ali"]);
    assert_eq!(names(&find(&alice, "sales man").await), vec!["Bob Ali"]);
    // Disabled users and users the directory does not list are not found.
    assert!(names(&find(&alice, "dave").await).is_empty());
    assert!(names(&find(&alice, "carol").await).is_empty());

    let hit = &find(&alice, "bob ali").await["results"][0];
    assert_eq!(hit["uri"], "bob@example.com");
    assert_eq!(
        hit["title"], "Sales Manager",
        "colleagues see the details: {hit}"
    );
    assert_eq!(hit["department"], "Sales");
    assert_eq!(hit["availability"], Value::Null, "bob is offline: {hit}");
}

#[tokio::test]
async fn results_show_only_what_the_caller_may_see() {
    let (_dir, server) = server_with_directory(0);
    let alice = Api::new(&server, &server.login("alice@example.com", "pw").await);
    let bob_token = server.login("bob@example.com", "pw").await;
    let bob = Api::new(&server, &bob_token);

    // Bob comes online: alice sees his availability in the results.
    let bob_ws = server.ws(&bob_token).await;
    let publish = json!({"endpoint": bob_ws.endpoint, "publications": [
        {"category": "state", "instance": 805306369u32, "container": 2, "version": 0,
         "expire_type": "endpoint", "value": machine_state(3500)},
        {"category": "state", "instance": 805306369u32, "container": 3, "version": 0,
         "expire_type": "endpoint", "value": machine_state(3500)},
    ]});
    let (status, body) = bob.publish(publish).await;
    assert_eq!(status, 200, "{body}");
    let hit = &find(&alice, "bob").await["results"][0];
    assert_eq!(
        (
            hit["availability"].as_u64(),
            hit["availability_class"].as_str()
        ),
        (Some(3500), Some("available")),
        "{hit}"
    );

    // Bob blocks alice: she still finds him (the directory lists him), but sees
    // neither his details nor his availability.
    let (_, containers) = bob.get("/v1/me/containers").await;
    let version = containers
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == 32000)
        .unwrap()["version"]
        .clone();
    let (status, body) = bob
        .send(
            reqwest::Method::PATCH,
            "/v1/me/containers",
            json!([{"id": 32000, "version": version, "add": [{"type": "user", "value": "alice@example.com"}]}]),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let hit = &find(&alice, "bob").await["results"][0];
    assert_eq!(hit["uri"], "bob@example.com");
    assert_eq!(hit["title"], Value::Null, "{hit}");
    assert_eq!(hit["department"], Value::Null, "{hit}");
    assert_ne!(hit["availability_class"], "available", "{hit}");
    drop(bob_ws);
}

#[tokio::test]
async fn limits_errors_throttling_and_authentication() {
    let (_dir, server) = server_with_directory(60);
    let token = server.login("alice@example.com", "pw").await;
    let alice = Api::new(&server, &token);

    let body = find(&alice, "test person").await;
    assert_eq!(
        (names(&body).len(), body["more"].as_bool()),
        (20, Some(true)),
        "the default limit"
    );
    let (status, body) = alice.get("/v1/directory?q=test&limit=50").await;
    assert_eq!(status, 200);
    assert_eq!(
        (names(&body).len(), body["more"].as_bool()),
        (50, Some(true))
    );
    let (status, body) = alice
        .get("/v1/directory?q=test%20person%205&limit=50")
        .await;
    assert_eq!((status, body["more"].as_bool()), (200, Some(false)));
    assert_eq!(
        names(&body)[0],
        "Test Person 5",
        "the exact word first: {body}"
    );

    for (path, want) in [
        ("/v1/directory?q=test&limit=51", 400),
        ("/v1/directory?q=test&limit=0", 400),
        ("/v1/directory?q=%20%20", 400),
        ("/v1/directory", 400),
        ("/v1/directory?q=test&color=red", 400),
    ] {
        let (status, body) = alice.get(path).await;
        assert_eq!(status, want, "{path}: {body}");
        assert_eq!(body["error"], "bad_request");
    }
    let long = "a".repeat(300);
    let (status, body) = alice.get(&format!("/v1/directory?q={long}")).await;
    assert_eq!((status, body["error"].as_str()), (413, Some("too_large")));

    let anonymous = reqwest::get(server.url("/v1/directory?q=alice"))
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);

    // One user asking too fast is throttled (others are not).
    let client = reqwest::Client::new();
    let mut throttled = None;
    for _ in 0..40 {
        let r = client
            .get(server.url("/v1/directory?q=alice"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        if r.status() == 429 {
            throttled = Some(r);
            break;
        }
    }
    let r = throttled.expect("a 429 within 40 quick queries");
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "throttled");
    let bob = Api::new(&server, &server.login("bob@example.com", "pw").await);
    assert_eq!(names(&find(&bob, "alice").await), vec!["Alice Anders"]);
}
