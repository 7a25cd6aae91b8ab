//! End-to-end tests with the real Pidgin SIPE client (Debian's `pidgin-sipe`): a small
//! libpurple front end (`tests/sipe/harness.c`, compiled here with `cc`) signs real
//! SIPE accounts in to the real server over TCP and reports what SIPE shows of its
//! buddies, next to a WebSocket watcher of the same presentity.
//!
//! Needs `cc`, `pkg-config` and the Debian packages `pidgin-sipe libpurple-dev
//! libxml2-dev` (scripts/test installs them). `SIPE_HARNESS_DEBUG=1` puts SIPE's debug
//! log, with every SIP message, on stderr.

mod common;

use common::*;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

const HARNESS_C: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sipe/harness.c");
const SHIM_C: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sipe/xml-shim.c");

/// The compiled harness and the libxml2 shim SIPE needs on Debian 12 (see xml-shim.c).
struct Tools {
    harness: PathBuf,
    shim: PathBuf,
}

fn pkg_config(packages: &[&str]) -> Vec<String> {
    let out = std::process::Command::new("pkg-config")
        .arg("--cflags")
        .arg("--libs")
        .args(packages)
        .output()
        .expect("pkg-config (install: pkg-config libpurple-dev libxml2-dev)");
    assert!(
        out.status.success(),
        "pkg-config {packages:?}: {} (install: pidgin-sipe libpurple-dev libxml2-dev)",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// Compiles one C source; the output appears atomically (renamed into place).
fn cc(source: &str, out: &Path, extra: &[&str], packages: &[&str]) {
    let tmp = out.with_extension(format!("tmp{}", std::process::id()));
    let status = std::process::Command::new("cc")
        .args(["-std=gnu11", "-O1", "-Wall", "-Wextra", "-o"])
        .arg(&tmp)
        .arg(source)
        .args(pkg_config(packages))
        .args(extra)
        .status()
        .expect("cc (install build-essential)");
    assert!(status.success(), "compiling {source}");
    std::fs::rename(&tmp, out).unwrap();
}

fn tools() -> &'static Tools {
    static TOOLS: OnceLock<Tools> = OnceLock::new();
    TOOLS.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("sipe");
        std::fs::create_dir_all(&dir).unwrap();
        let tools = Tools {
            harness: dir.join("sipe-harness"),
            shim: dir.join("libxml-sax1-shim.so"),
        };
        cc(HARNESS_C, &tools.harness, &[], &["purple", "glib-2.0"]);
        cc(
            SHIM_C,
            &tools.shim,
            &["-shared", "-fPIC", "-ldl"],
            &["libxml-2.0"],
        );
        tools
    })
}

/// What one SIPE client shows of a buddy: (status id, message).
type Shown = (String, String);

/// One real SIPE client, driven through the harness's stdin and stdout.
struct Sipe {
    user: String,
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    /// Every line so far, for failure messages.
    log: Vec<String>,
    /// The latest status of each buddy (by SIP URI), from the buddy events.
    buddies: HashMap<String, Shown>,
    _dir: tempfile::TempDir,
}

impl Sipe {
    /// Starts the client and waits until it has signed in and has its contact list
    /// (SIPE loses buddies added before that: see the harness).
    async fn sign_in(server: &Server, user: &str) -> Sipe {
        Self::sign_in_with(server, user, "secret").await
    }

    async fn sign_in_with(server: &Server, user: &str, password: &str) -> Sipe {
        let mut sipe = Self::start(server, user, password);
        sipe.expect_line("signed-on", |l| l == "signed-on").await;
        sipe.expect_line("the contact list", |l| l == "group-added Other Contacts")
            .await;
        sipe
    }

    /// Starts the client (it signs in on its own).
    fn start(server: &Server, user: &str, password: &str) -> Sipe {
        let tools = tools();
        let dir = tempfile::tempdir().unwrap();
        // A server with only SIP over TLS is reached over TLS.
        let (addr, transport) = match (&server.sip, &server.tls_sip) {
            (Some(a), _) => (a.as_str(), "tcp"),
            (None, Some(a)) => (a.as_str(), "tls"),
            (None, None) => panic!("SIP enabled"),
        };
        let mut child = Command::new(&tools.harness)
            .arg(user)
            .arg(addr)
            .env("SIPE_TRANSPORT", transport)
            .arg(dir.path())
            .arg(password)
            .env("LD_PRELOAD", &tools.shim)
            // No D-Bus: no session service, no NetworkManager "offline".
            .env(
                "DBUS_SESSION_BUS_ADDRESS",
                "unix:path=/nonexistent/presenced-test",
            )
            .env(
                "DBUS_SYSTEM_BUS_ADDRESS",
                "unix:path=/nonexistent/presenced-test",
            )
            .env_remove("DISPLAY")
            .env("HOME", dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start the SIPE harness");
        let stdin = child.stdin.take().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Sipe {
            user: user.to_string(),
            child,
            stdin,
            lines,
            log: Vec::new(),
            buddies: HashMap::new(),
            _dir: dir,
        }
    }

    /// The next line (panics after [`WAIT`] or when the harness exits).
    async fn next_line(&mut self, deadline: tokio::time::Instant, what: &str) -> String {
        let line = tokio::time::timeout_at(deadline, self.lines.next_line())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{}: timed out waiting for {what}; its events:\n{}",
                    self.user,
                    self.log.join("\n")
                )
            })
            .unwrap()
            .unwrap_or_else(|| {
                panic!(
                    "{}: the harness exited while waiting for {what}; its events:\n{}",
                    self.user,
                    self.log.join("\n")
                )
            });
        println!("[{}] {line}", self.user);
        if let Some((event, rest)) = line.split_once(' ')
            && matches!(
                event,
                "buddy-status" | "buddy-signed-on" | "buddy-signed-off"
            )
        {
            let mut parts = rest.splitn(3, ' ');
            let name = parts.next().unwrap_or_default().to_string();
            let status = parts.next().unwrap_or_default().to_string();
            let message = parts.next().unwrap_or_default().to_string();
            self.buddies.insert(name, (status, message));
        }
        self.log.push(line.clone());
        line
    }

    /// Panics on a connection error nobody waits for.
    fn no_error(&self, line: &str, what: &str) {
        assert!(
            !line.starts_with("connection-error"),
            "{}: {line} (waiting for {what}); its events:\n{}",
            self.user,
            self.log.join("\n")
        );
    }

    async fn expect_line(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let line = self.next_line(deadline, what).await;
            if pred(&line) {
                return line;
            }
            self.no_error(&line, what);
        }
    }

    /// Sends a command and waits for its `ok`.
    async fn command(&mut self, cmd: &str) {
        self.stdin
            .write_all(format!("{cmd}\n").as_bytes())
            .await
            .unwrap();
        self.stdin.flush().await.unwrap();
        let verb = cmd.split(' ').next().unwrap();
        let answer = self
            .expect_line(&format!("the answer to {cmd:?}"), |l| {
                l.starts_with("ok ") || l.starts_with("error ")
            })
            .await;
        assert_eq!(answer, format!("ok {verb}"), "{}: {cmd}", self.user);
    }

    /// Waits until SIPE shows `buddy` with `status` and, if given, the `note`. SIPE's
    /// status message is the note, after the activity for some statuses ("Busy - note").
    async fn expect_buddy(&mut self, buddy: &str, status: &str, note: Option<&str>) {
        let uri = format!("sip:{buddy}");
        let what = format!("{uri} shown as {status} with note {note:?}");
        let matches = |s: Option<&Shown>| {
            s.is_some_and(|(st, msg)| {
                st == status && note.is_none_or(|n| msg == n || msg.ends_with(&format!(" - {n}")))
            })
        };
        let deadline = tokio::time::Instant::now() + WAIT;
        while !matches(self.buddies.get(&uri)) {
            let line = self.next_line(deadline, &what).await;
            self.no_error(&line, &what);
        }
    }

    /// Signs out and waits for the harness to exit.
    async fn quit(mut self) {
        self.command("quit").await;
        self.expect_line("signed-off", |l| l == "signed-off").await;
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("the harness exits after quit")
            .unwrap();
        assert!(status.success(), "{}: harness {status}", self.user);
    }
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

/// A server with alice, bob and carol (password "pw"). SIP without authentication
/// unless `ntlm`.
fn start_server_with(ntlm: bool) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    for (u, n) in [
        ("alice@example.com", "Alice"),
        ("bob@example.com", "Bob"),
        ("carol@example.com", "Carol"),
    ] {
        add_user(dir.path(), u, n, "pw");
    }
    let args: &[&str] = if ntlm {
        &["--sip", "127.0.0.1:0"]
    } else {
        &["--sip", "127.0.0.1:0", "--sip-allow-unauthenticated"]
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
