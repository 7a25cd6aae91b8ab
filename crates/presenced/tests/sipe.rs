//! End-to-end tests with the real Pidgin SIPE client (Debian's `pidgin-sipe`): a small
//! libpurple front end (`tests/sipe/harness.c`, driven by `common/sipe.rs`) signs real
//! SIPE accounts in to the real server over TCP and reports what SIPE shows of its
//! buddies, next to a WebSocket watcher of the same presentity.
//!
//! Needs `cc`, `pkg-config` and the Debian packages `pidgin-sipe libpurple-dev
//! libxml2-dev` (scripts/test installs them). `SIPE_HARNESS_DEBUG=1` puts SIPE's debug
//! log, with every SIP message, on stderr.

mod common;

use common::sipe::*;
use common::*;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::process::Stdio;

impl Sipe {
    /// The buddy list as this client shows it now.
    async fn contact_list(&mut self) -> ContactList {
        let (groups, members) = self.groups().await;
        let mut list = ContactList {
            groups: groups.into_iter().collect(),
            ..Default::default()
        };
        let mut aliases: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (buddy, group, alias) in members {
            let uri = bare(&buddy);
            list.contacts.entry(uri.clone()).or_default().0.push(group);
            aliases
                .entry(uri.clone())
                .or_default()
                .insert(shown_alias(&uri, &alias));
        }
        for (uri, (groups, alias)) in &mut list.contacts {
            groups.sort();
            // One alias per contact; copies in two groups that disagree show both.
            *alias = aliases[uri].iter().cloned().collect::<Vec<_>>().join(" / ");
        }
        list
    }

    /// Polls the buddy list until it shows `want`.
    async fn wait_for_list(&mut self, want: &ContactList) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let got = self.contact_list().await;
            if got.shown() == want.shown() {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{}: the buddy list is\n{got:#?}\nnot\n{want:#?}\nits events:\n{}",
                self.label,
                self.log.join("\n")
            );
            tokio::time::sleep(POLL).await;
        }
    }
}

/// How long a list that is right must stay right: time for a late or repeated
/// contact-list notification to arrive and be applied.
const SETTLE: std::time::Duration = std::time::Duration::from_secs(2);

/// A contact list as the tests compare it, read from a SIPE client's buddy list or
/// from `GET /v1/me/contacts`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct ContactList {
    /// Group names, as SIPE shows them.
    groups: BTreeSet<String>,
    /// Each contact by bare user ("bob@example.com"): its groups, sorted (a group
    /// listed twice is a duplicate buddy), and its alias ("" for none).
    contacts: BTreeMap<String, (Vec<String>, String)>,
}

impl ContactList {
    /// What Pidgin shows of the list: it hides groups without buddies (its default),
    /// so an empty group a client still keeps is not seen. A SIPE client that did not
    /// delete a group itself keeps it, empty (the server does not tell SIPE of deleted
    /// groups: SIPE 1.25 would crash, see docs/sip.md).
    fn shown(&self) -> ContactList {
        let used: BTreeSet<&String> = self.contacts.values().flat_map(|(g, _)| g).collect();
        ContactList {
            groups: self
                .groups
                .iter()
                .filter(|g| used.contains(g))
                .cloned()
                .collect(),
            contacts: self.contacts.clone(),
        }
    }
}

/// The list with the default group, `groups`, and `(user, groups, alias)` contacts.
fn contact_list(groups: &[&str], contacts: &[(&str, &[&str], &str)]) -> ContactList {
    let mut list = ContactList::default();
    list.groups.insert(DEFAULT_GROUP.to_string());
    list.groups.extend(groups.iter().map(|g| g.to_string()));
    for (user, groups, alias) in contacts {
        let mut groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        groups.sort();
        list.contacts
            .insert(user.to_string(), (groups, alias.to_string()));
    }
    list
}

/// A user without the `sip:` of SIPE's buddy names.
fn bare(uri: &str) -> String {
    uri.strip_prefix("sip:").unwrap_or(uri).to_ascii_lowercase()
}

/// An alias, or "" where it only stands for the user: SIPE sends a buddy without an
/// alias with its name as the displayName (which other clients then take as the
/// alias), and replaces such an alias with the display name from the user's contact
/// card once that arrives. Neither is a name the user chose.
fn shown_alias(user: &str, alias: &str) -> String {
    let display_name = USERS.iter().find(|(u, _)| *u == user).map(|(_, n)| *n);
    if bare(alias) == user || Some(alias) == display_name {
        String::new()
    } else {
        alias.to_string()
    }
}

/// The contact list the API gives `api`'s user.
async fn api_contact_list(api: &Api) -> ContactList {
    let (status, body) = api.get("/v1/me/contacts").await;
    assert_eq!(status, 200, "{body}");
    let group_names: HashMap<u64, String> = body["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            let name = g["name"].as_str().unwrap();
            let name = if name == "~" { DEFAULT_GROUP } else { name };
            (g["id"].as_u64().unwrap(), name.to_string())
        })
        .collect();
    let mut list = ContactList {
        groups: group_names.values().cloned().collect(),
        ..Default::default()
    };
    assert_eq!(
        list.groups.len(),
        group_names.len(),
        "a group twice: {body}"
    );
    for c in body["contacts"].as_array().unwrap() {
        let user = bare(c["uri"].as_str().unwrap());
        // SIPE subscribes to every contact it adds.
        assert_eq!(c["subscribed"], true, "{body}");
        let mut groups: Vec<String> = c["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|id| group_names[&id.as_u64().unwrap()].clone())
            .collect();
        groups.sort();
        let alias = shown_alias(&user, c["name"].as_str().unwrap_or_default());
        let twice = list
            .contacts
            .insert(user.clone(), (groups, alias))
            .is_some();
        assert!(!twice, "{user} twice: {body}");
    }
    list
}

/// Every client and the API come to show `want` (each client may take a while: the
/// change reaches it as a notification), and all still do after [`SETTLE`]: a late
/// or repeated notification must neither drop nor duplicate a buddy.
async fn expect_lists(clients: &mut [&mut Sipe], api: &Api, want: &ContactList) {
    for client in clients.iter_mut() {
        client.wait_for_list(want).await;
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let got = api_contact_list(api).await;
        if got == *want {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the API's contact list is\n{got:#?}\nnot\n{want:#?}"
        );
        tokio::time::sleep(POLL).await;
    }
    tokio::time::sleep(SETTLE).await;
    for client in clients.iter_mut() {
        let got = client.contact_list().await;
        assert_eq!(
            got.shown(),
            want.shown(),
            "{}: the buddy list changed after it was right; its events:\n{}",
            client.label,
            client.log.join("\n")
        );
    }
    assert_eq!(
        api_contact_list(api).await,
        *want,
        "the API, after settling"
    );
}

/// Stops the server the hard way (a contact-list change that was answered must be
/// stored already) and starts it again on the same data directory.
/// Kills the server, starts it again on the same data, signs alice in afresh and
/// checks that she gets `want`: the list survives the crash.
async fn restart_and_expect(server: Server, dir: &Path, want: &ContactList) -> (Server, Sipe) {
    server.kill9();
    let server = Server::start_with(dir, OPEN_SIP);
    let api = alice_api(&server).await;
    let mut alice = Sipe::sign_in(&server, "alice@example.com").await;
    expect_lists(&mut [&mut alice], &api, want).await;
    (server, alice)
}

async fn alice_api(server: &Server) -> Api {
    Api::new(server, &server.login("alice@example.com", "pw").await)
}

/// What a WebSocket watcher knows of one presentity's state and note.
#[derive(Default, Debug)]
struct WsView {
    availability: Option<u64>,
    note: Option<String>,
}

/// Applies `categories` messages about `uri` until `pred` holds.
async fn ws_until(ws: &mut Ws, view: &mut WsView, uri: &str, pred: impl Fn(&WsView) -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !pred(view) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let m: Value = tokio::time::timeout(left, ws.recv())
            .await
            .unwrap_or_else(|_| panic!("WebSocket: timed out; last view {view:?}"));
        println!("[ws] {m}");
        if m["type"] != "categories" || m["uri"] != uri {
            continue;
        }
        let entries = m["categories"].as_array().cloned().unwrap_or_default();
        if has_name(&m, "state") {
            view.availability = availability(&m["categories"]);
        }
        if has_name(&m, "note") {
            view.note = entries
                .iter()
                .find(|c| c["name"] == "note")
                .and_then(|c| c["summary"]["note"].as_str())
                .map(str::to_string);
        }
    }
}

/// SIP without authentication.
const OPEN_SIP: &[&str] = &["--sip", "127.0.0.1:0", "--sip-allow-unauthenticated"];

/// The users of [`start_server_with`], with their display names.
const USERS: &[(&str, &str)] = &[
    ("alice@example.com", "Alice"),
    ("bob@example.com", "Bob"),
    ("carol@example.com", "Carol"),
    ("dave@example.com", "Dave"),
];

/// A server with [`USERS`] (password "pw"). SIP without authentication unless `ntlm`.
fn start_server_with(ntlm: bool) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    for (u, n) in USERS {
        add_user(dir.path(), u, n, "pw");
    }
    let args: &[&str] = if ntlm {
        &["--sip", "127.0.0.1:0"]
    } else {
        OPEN_SIP
    };
    let server = Server::start_with(dir.path(), args);
    (dir, server)
}

fn start_server() -> (tempfile::TempDir, Server) {
    start_server_with(false)
}

/// Alice and Bob sign in with SIPE and put each other on their contact lists.
async fn alice_and_bob_as_buddies(server: &Server) -> (Sipe, Sipe) {
    let alice = Sipe::sign_in(server, "alice@example.com").await;
    let bob = Sipe::sign_in(server, "bob@example.com").await;
    make_buddies(alice, bob).await
}

async fn make_buddies(mut alice: Sipe, mut bob: Sipe) -> (Sipe, Sipe) {
    alice.command("add bob@example.com").await;
    bob.command("add alice@example.com").await;
    alice
        .expect_buddy("bob@example.com", "available", None)
        .await;
    bob.expect_buddy("alice@example.com", "available", None)
        .await;
    (alice, bob)
}

#[tokio::test]
async fn sipe_clients_see_each_others_presence_as_a_websocket_watcher_does() {
    let (_dir, server) = start_server();
    let (mut alice, mut bob) = alice_and_bob_as_buddies(&server).await;

    // Carol watches alice over the WebSocket API.
    let carol_token = server.login("carol@example.com", "pw").await;
    let mut carol = server.ws(&carol_token).await;
    carol
        .send(
            json!({"op": "subscribe", "id": "w", "uris": ["alice@example.com"],
                     "categories": ["state", "note"]}),
        )
        .await;
    let mut seen = WsView::default();
    ws_until(&mut carol, &mut seen, "alice@example.com", |v| {
        v.availability == Some(3500)
    })
    .await;

    // Notes, published by SIPE with the status message, reach the other client.
    alice.command("status available Hello from Alice").await;
    bob.expect_buddy("alice@example.com", "available", Some("Hello from Alice"))
        .await;
    bob.command("status available Hi from Bob").await;
    alice
        .expect_buddy("bob@example.com", "available", Some("Hi from Bob"))
        .await;
    ws_until(&mut carol, &mut seen, "alice@example.com", |v| {
        v.note.as_deref() == Some("Hello from Alice")
    })
    .await;

    // Status changes: the SIP watcher and the WebSocket watcher agree.
    alice.command("status busy In a meeting").await;
    bob.expect_buddy("alice@example.com", "busy", Some("In a meeting"))
        .await;
    ws_until(&mut carol, &mut seen, "alice@example.com", |v| {
        v.availability == Some(6500) && v.note.as_deref() == Some("In a meeting")
    })
    .await;
    alice.command("status away Gone fishing").await;
    bob.expect_buddy("alice@example.com", "away", Some("Gone fishing"))
        .await;
    ws_until(&mut carol, &mut seen, "alice@example.com", |v| {
        v.availability == Some(15500) && v.note.as_deref() == Some("Gone fishing")
    })
    .await;
    alice.quit().await;
    bob.quit().await;
}

#[tokio::test]
async fn sipe_blocking_shows_the_blocked_watcher_offline() {
    let (_dir, server) = start_server();
    let (mut alice, mut bob) = alice_and_bob_as_buddies(&server).await;
    let api = Api::new(&server, &server.login("alice@example.com", "pw").await);
    alice.command("status available Hello from Alice").await;
    bob.expect_buddy("alice@example.com", "available", Some("Hello from Alice"))
        .await;

    // Alice blocks bob in SIPE (libpurple's deny list): SIPE puts him into her
    // Blocked container, and he sees her offline.
    alice.command("block bob@example.com").await;
    bob.expect_buddy("alice@example.com", "offline", None).await;
    let (status, containers) = api.get("/v1/me/containers").await;
    assert_eq!(status, 200);
    let blocked = containers
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == 32000)
        .expect("container 32000");
    assert!(
        blocked["members"]
            .as_array()
            .unwrap()
            .contains(&json!({"type": "user", "value": "bob@example.com"})),
        "{containers}"
    );
    // Blocking is one-way: alice still sees bob.
    alice.command("list").await;
    assert_eq!(
        alice
            .buddies
            .get("sip:bob@example.com")
            .map(|s| s.0.as_str()),
        Some("available")
    );

    // Unblocked, bob sees her again.
    alice.command("unblock bob@example.com").await;
    bob.expect_buddy("alice@example.com", "available", Some("Hello from Alice"))
        .await;

    // Blocking through the API has the same effect on bob's SIPE.
    let blocked_version = |containers: &Value| {
        containers
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == 32000)
            .unwrap()["version"]
            .clone()
    };
    let (_, containers) = api.get("/v1/me/containers").await;
    let member = json!({"type": "user", "value": "bob@example.com"});
    let (status, changed) = api
        .send(
            reqwest::Method::PATCH,
            "/v1/me/containers",
            json!([{"id": 32000, "version": blocked_version(&containers), "add": [member]}]),
        )
        .await;
    assert_eq!(status, 200, "{changed}");
    bob.expect_buddy("alice@example.com", "offline", None).await;
    let (status, changed) = api
        .send(
            reqwest::Method::PATCH,
            "/v1/me/containers",
            json!([{"id": 32000, "version": blocked_version(&changed), "remove": [member]}]),
        )
        .await;
    assert_eq!(status, 200, "{changed}");
    bob.expect_buddy("alice@example.com", "available", Some("Hello from Alice"))
        .await;
    alice.quit().await;
    bob.quit().await;
}

#[tokio::test]
async fn sipe_sign_out_and_a_killed_client_show_offline() {
    let (_dir, server) = start_server();
    let (alice, mut bob) = alice_and_bob_as_buddies(&server).await;
    let carol_token = server.login("carol@example.com", "pw").await;
    let mut carol = server.ws(&carol_token).await;
    carol
        .send(
            json!({"op": "subscribe", "id": "w", "uris": ["alice@example.com"],
                     "categories": ["state"]}),
        )
        .await;
    let mut seen = WsView::default();
    ws_until(&mut carol, &mut seen, "alice@example.com", |v| {
        v.availability == Some(3500)
    })
    .await;

    // Alice signs out (SIPE unsubscribes and de-registers): both watchers see her
    // offline.
    alice.quit().await;
    ws_until(&mut carol, &mut seen, "alice@example.com", |v| {
        v.availability.is_none()
    })
    .await;
    bob.expect_buddy("alice@example.com", "offline", None).await;

    // A client that dies (its TCP connection just closes) is signed out as well.
    let mut alice = Sipe::sign_in(&server, "alice@example.com").await;
    alice
        .expect_buddy("bob@example.com", "available", None)
        .await;
    bob.expect_buddy("alice@example.com", "available", None)
        .await;
    drop(bob);
    alice.expect_buddy("bob@example.com", "offline", None).await;
    alice.quit().await;
}

#[tokio::test]
async fn sipe_signs_in_with_ntlm() {
    let (_dir, server) = start_server_with(true);

    // A wrong password is refused (SIPE reports a connection error). Carol's, so
    // that the server's rate limit of failed sign-ins cannot slow down alice's.
    let mut carol = Sipe::start(&server, "carol@example.com", "wrong");
    let error = carol
        .expect_line("a connection error", |l| l.starts_with("connection-error"))
        .await;
    assert!(!carol.log.iter().any(|l| l == "signed-on"), "{error}");
    drop(carol);

    // With the right passwords, SIPE signs in with NTLMv2 and every message is signed
    // both ways (SIPE drops unsigned messages and disconnects on a bad signature):
    // presence and notes still flow.
    let alice = Sipe::sign_in_with(&server, "alice@example.com", "pw").await;
    let bob = Sipe::sign_in_with(&server, "bob@example.com", "pw").await;
    let (mut alice, mut bob) = make_buddies(alice, bob).await;
    alice.command("status busy In a meeting").await;
    bob.expect_buddy("alice@example.com", "busy", Some("In a meeting"))
        .await;
    alice.quit().await;
    bob.quit().await;
}

#[tokio::test]
async fn sipe_signs_in_with_ntlm_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    for (u, n) in [("alice@example.com", "Alice"), ("bob@example.com", "Bob")] {
        add_user(dir.path(), u, n, "pw");
    }
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
        ],
    );
    let alice = Sipe::sign_in_with(&server, "alice@example.com", "pw").await;
    let bob = Sipe::sign_in_with(&server, "bob@example.com", "pw").await;
    let (mut alice, mut bob) = make_buddies(alice, bob).await;
    bob.command("status away Back soon").await;
    alice
        .expect_buddy("bob@example.com", "away", Some("Back soon"))
        .await;
    alice.quit().await;
    bob.quit().await;
}

/// Runs a SIPp scenario (Debian's sip-tester) against `addr`: `calls` calls at `rate`
/// per second, one TCP connection each. Returns whether every call succeeded, and
/// SIPp's output.
fn sipp(addr: &str, scenario: &str, calls: u32, rate: u32) -> (bool, String) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sipp")
        .join(scenario);
    let out = std::process::Command::new("sipp")
        .arg(addr)
        .arg("-sf")
        .arg(&path)
        .args([
            "-t",
            "tn",
            "-max_socket",
            "100",
            "-nostdin",
            "-timeout",
            "60s",
        ])
        .args(["-m", &calls.to_string(), "-r", &rate.to_string()])
        .stdin(Stdio::null())
        .output()
        .expect("sipp (Debian package sip-tester)");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[tokio::test]
async fn sipp_hostile_input_while_sipe_clients_keep_working() {
    let (_dir, server) = start_server_with(true);
    let alice = Sipe::sign_in_with(&server, "alice@example.com", "pw").await;
    let bob = Sipe::sign_in_with(&server, "bob@example.com", "pw").await;
    let (mut alice, mut bob) = make_buddies(alice, bob).await;
    let addr = server.sip.clone().unwrap();
    for (scenario, calls, rate) in [
        ("malformed-start-line.xml", 20, 50),
        ("missing-header.xml", 20, 50),
        ("unknown-method.xml", 20, 50),
        ("oversized-body.xml", 10, 20),
        ("register-flood.xml", 300, 100),
    ] {
        let a = addr.clone();
        let (ok, out) = tokio::task::spawn_blocking(move || sipp(&a, scenario, calls, rate))
            .await
            .unwrap();
        assert!(ok, "{scenario}: {out}");
    }
    // An XML bomb needs a registered connection; that server lets SIPp in without NTLM.
    let (_dir2, open) = start_server();
    let a = open.sip.clone().unwrap();
    let (ok, out) = tokio::task::spawn_blocking(move || sipp(&a, "xml-bomb.xml", 10, 20))
        .await
        .unwrap();
    assert!(ok, "xml-bomb.xml: {out}");

    // Meanwhile the real clients were served, and still are.
    alice.command("status busy After the storm").await;
    bob.expect_buddy("alice@example.com", "busy", Some("After the storm"))
        .await;
    alice.quit().await;
    bob.quit().await;
}

/// Alice's first client acts, her second client (another endpoint of the same user)
/// and the API must follow, and bob's client makes presence to watch.
async fn alice_twice_and_bob(server: &Server) -> (Sipe, Sipe, Sipe) {
    let alice = Sipe::sign_in(server, "alice@example.com").await;
    let alice2 = Sipe::sign_in(server, "alice@example.com").await;
    let bob = Sipe::sign_in(server, "bob@example.com").await;
    (alice, alice2, bob)
}

#[tokio::test]
async fn sipe_added_buddies_reach_every_client_and_the_api_and_survive_a_restart() {
    let (dir, server) = start_server();
    let (mut alice, mut alice2, mut bob) = alice_twice_and_bob(&server).await;
    let api = alice_api(&server).await;
    expect_lists(
        &mut [&mut alice, &mut alice2],
        &api,
        &contact_list(&[], &[]),
    )
    .await;

    // Add Buddy into the default group: SIPE sends setContact, and subscribes to
    // bob's presence.
    alice.command("add bob@example.com").await;
    let mut want = contact_list(&[], &[("bob@example.com", &[DEFAULT_GROUP], "")]);
    expect_lists(&mut [&mut alice, &mut alice2], &api, &want).await;
    expect_live_presence(&mut bob, &mut [&mut alice, &mut alice2]).await;

    // Add Buddy into a group that does not exist yet: SIPE sends addGroup, and
    // setContact with the new group's id from its answer.
    alice.command("add carol@example.com Project X").await;
    want = contact_list(
        &["Project X"],
        &[
            ("bob@example.com", &[DEFAULT_GROUP], ""),
            ("carol@example.com", &["Project X"], ""),
        ],
    );
    expect_lists(&mut [&mut alice, &mut alice2], &api, &want).await;
    // Carol is not signed in; both clients subscribed to her and show her offline,
    // then her presence as she signs in and changes it.
    alice
        .expect_buddy("carol@example.com", "offline", None)
        .await;
    alice2
        .expect_buddy("carol@example.com", "offline", None)
        .await;
    let mut carol = Sipe::sign_in(&server, "carol@example.com").await;
    expect_live_presence(&mut carol, &mut [&mut alice, &mut alice2]).await;
    expect_offline_after_sign_out(carol, &mut [&mut alice, &mut alice2]).await;
    // Bob is still watched live, and shown offline when he signs out.
    bob.command("status away Out to lunch").await;
    alice
        .expect_buddy("bob@example.com", "away", Some("Out to lunch"))
        .await;
    alice2
        .expect_buddy("bob@example.com", "away", Some("Out to lunch"))
        .await;
    expect_offline_after_sign_out(bob, &mut [&mut alice, &mut alice2]).await;

    // After a restart, a fresh client gets the same list from the server, and
    // presence flows again.
    drop((alice, alice2));
    let (server, mut alice) = restart_and_expect(server, dir.path(), &want).await;
    let mut bob = Sipe::sign_in(&server, "bob@example.com").await;
    expect_live_presence(&mut bob, &mut [&mut alice]).await;
    expect_offline_after_sign_out(bob, &mut [&mut alice]).await;
    alice.quit().await;
}

#[tokio::test]
async fn sipe_moved_copied_and_aliased_buddies_and_a_renamed_group_reach_every_client() {
    let (dir, server) = start_server();
    let (mut alice, mut alice2, mut bob) = alice_twice_and_bob(&server).await;
    let api = alice_api(&server).await;
    // One change at a time, each on the other client (so through the server) before the
    // next: what is tested starts below.
    alice.command("add bob@example.com").await;
    alice2
        .wait_for_list(&contact_list(
            &[],
            &[("bob@example.com", &[DEFAULT_GROUP], "")],
        ))
        .await;
    alice.command("add carol@example.com Team").await;
    let mut want = contact_list(
        &["Team"],
        &[
            ("bob@example.com", &[DEFAULT_GROUP], ""),
            ("carol@example.com", &["Team"], ""),
        ],
    );
    expect_lists(&mut [&mut alice, &mut alice2], &api, &want).await;

    // Dragging bob onto Team: SIPE sends setContact with Team's id only. The default
    // group stays, empty.
    alice.command("move bob@example.com Team").await;
    want = contact_list(
        &["Team"],
        &[
            ("bob@example.com", &["Team"], ""),
            ("carol@example.com", &["Team"], ""),
        ],
    );
    expect_lists(&mut [&mut alice, &mut alice2], &api, &want).await;

    // Adding bob to the default group as well: one contact in two groups, shown in
    // both.
    alice.command("copy bob@example.com Other Contacts").await;
    want = contact_list(
        &["Team"],
        &[
            ("bob@example.com", &[DEFAULT_GROUP, "Team"], ""),
            ("carol@example.com", &["Team"], ""),
        ],
    );
    expect_lists(&mut [&mut alice, &mut alice2], &api, &want).await;
    // Both of bob's entries show his presence.
    expect_live_presence(&mut bob, &mut [&mut alice, &mut alice2]).await;

    // An alias: SIPE sends setContact with it as the displayName.
    alice
        .command("alias carol@example.com Carol from Accounts")
        .await;
    want = contact_list(
        &["Team"],
        &[
            ("bob@example.com", &[DEFAULT_GROUP, "Team"], ""),
            ("carol@example.com", &["Team"], "Carol from Accounts"),
        ],
    );
    expect_lists(&mut [&mut alice, &mut alice2], &api, &want).await;

    // Renaming the group: SIPE sends modifyGroup; the contacts stay in it.
    alice.command("rename-group Team|Project Y").await;
    want = contact_list(
        &["Project Y"],
        &[
            ("bob@example.com", &[DEFAULT_GROUP, "Project Y"], ""),
            ("carol@example.com", &["Project Y"], "Carol from Accounts"),
        ],
    );
    expect_lists(&mut [&mut alice, &mut alice2], &api, &want).await;
    bob.command("status busy Still here").await;
    alice
        .expect_buddy("bob@example.com", "busy", Some("Still here"))
        .await;
    alice2
        .expect_buddy("bob@example.com", "busy", Some("Still here"))
        .await;

    // Removing bob's entry in the default group only: SIPE sends setContact with the
    // group he is left in.
    alice.command("remove bob@example.com Other Contacts").await;
    want = contact_list(
        &["Project Y"],
        &[
            ("bob@example.com", &["Project Y"], ""),
            ("carol@example.com", &["Project Y"], "Carol from Accounts"),
        ],
    );
    expect_lists(&mut [&mut alice, &mut alice2], &api, &want).await;
    bob.command("status away Back at five").await;
    alice
        .expect_buddy("bob@example.com", "away", Some("Back at five"))
        .await;
    alice2
        .expect_buddy("bob@example.com", "away", Some("Back at five"))
        .await;
    expect_offline_after_sign_out(bob, &mut [&mut alice, &mut alice2]).await;

    drop((alice, alice2));
    let (server, mut alice) = restart_and_expect(server, dir.path(), &want).await;
    let mut bob = Sipe::sign_in(&server, "bob@example.com").await;
    alice
        .expect_buddy("bob@example.com", "available", None)
        .await;
    bob.command("status away Gone fishing").await;
    alice
        .expect_buddy("bob@example.com", "away", Some("Gone fishing"))
        .await;
    alice.quit().await;
    bob.quit().await;
}

/// SIPE 1.25 cannot be told that a group was deleted: on a contactDelta's
/// `deletedGroup` for a group it has emptied, `sipe_group_remove` removes the Pidgin
/// group, which makes libpurple call the protocol's `remove_group`, where SIPE sends
/// `deleteGroup` itself and frees the group; `sipe_group_remove` then frees it again
/// and the client dies (SIGSEGV). The server leaves `deletedGroup` out for SIPE: the
/// other client keeps the group, empty, which Pidgin does not show.
#[tokio::test]
async fn sipe_removed_groups_and_buddies_reach_every_client() {
    let (dir, server) = start_server();
    let (mut alice, mut alice2, bob) = alice_twice_and_bob(&server).await;
    let api = alice_api(&server).await;
    // One change at a time, each on the other client (so through the server) before the
    // next: what is tested starts below.
    alice.command("add bob@example.com").await;
    alice2
        .wait_for_list(&contact_list(
            &[],
            &[("bob@example.com", &[DEFAULT_GROUP], "")],
        ))
        .await;
    alice.command("copy bob@example.com Team").await;
    alice2
        .wait_for_list(&contact_list(
            &["Team"],
            &[("bob@example.com", &[DEFAULT_GROUP, "Team"], "")],
        ))
        .await;
    alice.command("add carol@example.com Team").await;
    let mut want = contact_list(
        &["Team"],
        &[
            ("bob@example.com", &[DEFAULT_GROUP, "Team"], ""),
            ("carol@example.com", &["Team"], ""),
        ],
    );
    expect_lists(&mut [&mut alice, &mut alice2], &api, &want).await;

    // Pidgin's Remove Group removes each buddy in it first: bob only from Team
    // (setContact with the default group), carol altogether (deleteContact); then
    // the group (deleteGroup). The other client follows live and survives.
    alice.command("remove-group Team").await;
    want = contact_list(&[], &[("bob@example.com", &[DEFAULT_GROUP], "")]);
    expect_lists(&mut [&mut alice, &mut alice2], &api, &want).await;
    // Bob is still watched, by both.
    alice
        .expect_buddy("bob@example.com", "available", None)
        .await;
    alice2
        .expect_buddy("bob@example.com", "available", None)
        .await;

    // A group deleted with contacts still in it (here through the API): a contact left
    // in no group moves to the default group, one also in another group just leaves
    // it (OCS semantics); both clients follow live.
    alice.command("add carol@example.com Friends").await;
    alice2
        .wait_for_list(&contact_list(
            &["Friends"],
            &[
                ("bob@example.com", &[DEFAULT_GROUP], ""),
                ("carol@example.com", &["Friends"], ""),
            ],
        ))
        .await;
    alice.command("copy bob@example.com Friends").await;
    want = contact_list(
        &["Friends"],
        &[
            ("bob@example.com", &[DEFAULT_GROUP, "Friends"], ""),
            ("carol@example.com", &["Friends"], ""),
        ],
    );
    expect_lists(&mut [&mut alice, &mut alice2], &api, &want).await;
    let (_, list) = api.get("/v1/me/contacts").await;
    let friends = list["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "Friends")
        .unwrap_or_else(|| panic!("no Friends group: {list}"))["id"]
        .clone();
    let (status, body) = api
        .send(
            reqwest::Method::DELETE,
            &format!("/v1/me/groups/{friends}"),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    want = contact_list(
        &[],
        &[
            ("bob@example.com", &[DEFAULT_GROUP], ""),
            ("carol@example.com", &[DEFAULT_GROUP], ""),
        ],
    );
    expect_lists(&mut [&mut alice, &mut alice2], &api, &want).await;

    // Removing a buddy: SIPE sends deleteContact; the other client drops him live.
    alice.command("remove bob@example.com").await;
    want = contact_list(&[], &[("carol@example.com", &[DEFAULT_GROUP], "")]);
    expect_lists(&mut [&mut alice, &mut alice2], &api, &want).await;
    // Carol is still watched by both: offline, then signed in.
    alice
        .expect_buddy("carol@example.com", "offline", None)
        .await;
    let mut carol = Sipe::sign_in(&server, "carol@example.com").await;
    alice
        .expect_buddy("carol@example.com", "available", None)
        .await;
    alice2
        .expect_buddy("carol@example.com", "available", None)
        .await;
    expect_live_presence(&mut carol, &mut [&mut alice, &mut alice2]).await;

    drop((alice, alice2, bob, carol));
    // The server must outlive alice's sign-out.
    let (_server, alice) = restart_and_expect(server, dir.path(), &want).await;
    alice.quit().await;
}

#[tokio::test]
async fn sipe_buddies_added_one_after_another_all_keep_live_presence() {
    let (_dir, server) = start_server();
    let (mut alice, mut alice2, bob) = alice_twice_and_bob(&server).await;
    let carol = Sipe::sign_in(&server, "carol@example.com").await;
    let dave = Sipe::sign_in(&server, "dave@example.com").await;
    let api = alice_api(&server).await;
    let names = ["bob@example.com", "carol@example.com", "dave@example.com"];
    let mut buddies = [bob, carol, dave];

    // Each buddy added makes SIPE (on both of alice's clients) send one more presence
    // SUBSCRIBE, for that buddy alone. After each, every buddy added so far must still
    // be watched: a new subscription must not replace the earlier ones.
    for added in 0..names.len() {
        alice.command(&format!("add {}", names[added])).await;
        for (i, buddy) in buddies.iter_mut().enumerate().take(added + 1) {
            let note = format!("Note {i} after {added} added");
            buddy.command(&format!("status available {note}")).await;
            alice.expect_buddy(names[i], "available", Some(&note)).await;
            alice2
                .expect_buddy(names[i], "available", Some(&note))
                .await;
        }
    }
    let contacts: Vec<(&str, &[&str], &str)> = names
        .iter()
        .map(|n| (*n, &[DEFAULT_GROUP][..], ""))
        .collect();
    expect_lists(
        &mut [&mut alice, &mut alice2],
        &api,
        &contact_list(&[], &contacts),
    )
    .await;
    for buddy in &mut buddies {
        expect_live_presence(buddy, &mut [&mut alice, &mut alice2]).await;
    }
    for buddy in buddies {
        expect_offline_after_sign_out(buddy, &mut [&mut alice, &mut alice2]).await;
    }
    alice.quit().await;
    alice2.quit().await;
}
