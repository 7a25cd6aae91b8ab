//! `presenced user ...` administration, with and without a running server.

mod common;

use common::*;
use std::process::Command;

#[tokio::test]
async fn user_administration_while_serving() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let p = dir.path();
    let (ok, _, _) = run(
        &[
            "user",
            "add",
            "dave@example.com",
            "--display-name",
            "Dave",
            "--password-stdin",
        ],
        p,
        Some("first"),
    );
    assert!(ok);
    let (ok, _, err) = run(
        &["user", "add", "dave@example.com", "--password-stdin"],
        p,
        Some("x"),
    );
    assert!(!ok && err.contains("already exists"), "{err}");
    let (ok, _, err) = run(
        &["user", "add", "not-a-uri", "--password-stdin"],
        p,
        Some("x"),
    );
    assert!(!ok && err.contains("invalid user URI"), "{err}");
    let (ok, _, err) = run(
        &["user", "add", "eve@example.com", "--password-stdin"],
        p,
        Some(""),
    );
    assert!(!ok && err.contains("no password"), "{err}");
    let (ok, out, _) = run(&["user", "list"], p, None);
    assert!(ok && out.contains("dave@example.com\tDave"), "{out}");

    // Added while the server runs: usable at the next sign-in.
    let token = server.login("dave@example.com", "first").await;
    let (s, me) = Api::new(&server, &token).get("/v1/me").await;
    assert_eq!(s, 200);
    assert_eq!(me["uri"], "dave@example.com");

    let (ok, _, _) = run(
        &["user", "passwd", "dave@example.com", "--password-stdin"],
        p,
        Some("second"),
    );
    assert!(ok);
    let c = reqwest::Client::new();
    let r = c
        .post(server.url("/v1/sessions"))
        .json(&serde_json::json!({"user": "dave@example.com", "password": "first"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let dave = Api::new(&server, &server.login("dave@example.com", "second").await);
    assert_eq!(dave.get("/v1/me").await.0, 200);

    let (ok, _, _) = run(&["user", "remove", "dave@example.com"], p, None);
    assert!(ok);
    // Removed by another process: the server trusts a checked token for up to
    // accounts::TOKEN_CACHE_TTL (5 s), then asks the store again.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let status = dave.get("/v1/me").await.0;
        if status == 401 {
            break;
        }
        assert!(
            status == 200 && std::time::Instant::now() < until,
            "a removed user's token stops working (status {status})"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    let (ok, _, err) = run(&["user", "remove", "dave@example.com"], p, None);
    assert!(!ok && err.contains("no such user"), "{err}");
    let r = c
        .post(server.url("/v1/sessions"))
        .json(&serde_json::json!({"user": "dave@example.com", "password": "second"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[test]
fn demo_refuses_non_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--demo", "--http", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path())
        .env("PRESENCED_LOG", "warn")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));
}

#[test]
fn config_file_unknown_key_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("presenced.toml");
    std::fs::write(&cfg, "[server]\nhttp = \"127.0.0.1:0\"\nlisten = \"x\"\n").unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&cfg)
        .env("PRESENCED_LOG", "warn")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("listen"));
}

#[tokio::test]
async fn sigterm_shuts_down_gracefully() {
    let (_dir, mut server, token, _) = alice_and_bob().await;
    let mut ws = server.ws(&token).await;
    let pid = server.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    // Open WebSockets are closed by the server, and the process exits cleanly.
    let closed = tokio::time::timeout(WAIT, async {
        use futures_util::StreamExt;
        while let Some(Ok(m)) = ws.stream.next().await {
            if m.is_close() {
                break;
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the WebSocket was not closed");
    let deadline = std::time::Instant::now() + WAIT;
    let status = loop {
        if let Some(s) = server.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "presenced did not exit after SIGTERM"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
}

/// Starts `serve` with `env` and a soft limit of 512 open files, waits for the ready
/// line, stops it, and returns what it wrote to standard error (not a terminal here)
/// and its `/proc/PID/limits`.
fn serve_stderr(env: &[(&str, &str)]) -> (String, String) {
    use std::io::{BufRead, BufReader, Read};
    let dir = tempfile::tempdir().unwrap();
    // `sh` lowers the soft limit, then becomes the server.
    let mut child = Command::new("sh")
        .args(["-c", "ulimit -Sn 512 && exec \"$0\" \"$@\"", BIN])
        .args([
            "serve",
            "--http",
            "127.0.0.1:0",
            "--sip",
            "off",
            "--data-dir",
        ])
        .arg(dir.path())
        .env("PRESENCED_LOG", "info")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert!(ready.starts_with("presenced ready "), "{ready:?}");
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (err, limits)
}

#[test]
fn logs_are_plain_or_json_and_the_descriptor_limit_is_raised() {
    let (text, limits) = serve_stderr(&[]);
    assert!(
        !text.contains('\u{1b}'),
        "no colour codes off a terminal: {text:?}"
    );
    assert!(text.contains("open descriptor limit"), "{text}");
    assert!(text.contains("soft_before=512"), "started with 512: {text}");
    // The soft limit on open files is the hard one.
    let files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let numbers: Vec<&str> = files.split_whitespace().skip(3).take(2).collect();
    assert_eq!(numbers[0], numbers[1], "{files}");

    let (json, _) = serve_stderr(&[("PRESENCED_LOG_FORMAT", "json")]);
    let lines: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let limit = lines
        .iter()
        .find(|l| l["fields"]["message"] == "open descriptor limit")
        .unwrap_or_else(|| panic!("{json}"));
    assert_eq!(limit["fields"]["soft"], limit["fields"]["hard"], "{limit}");
    assert_eq!(limit["fields"]["soft_before"], 512, "{limit}");

    let out = Command::new(BIN)
        .args(["user", "list", "--data-dir", "/nonexistent"])
        .env("PRESENCED_LOG_FORMAT", "xml")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("PRESENCED_LOG_FORMAT is \"xml\""),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
