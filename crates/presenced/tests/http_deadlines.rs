//! HTTP connection deadlines on the real server: headers trickled byte by byte and
//! idle connections are closed; a quiet WebSocket stays open (the server pings it).

mod common;

use common::*;
use serde_json::json;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A server whose HTTP deadlines are 1 s for headers and 3 s of idleness, with
/// WebSockets pinged every second.
fn server() -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    add_user(dir.path(), "alice@example.com", "Alice", "pw");
    let config = dir.path().join("presenced.toml");
    std::fs::write(
        &config,
        "[server]\nhttp_header_timeout_secs = 1\nhttp_idle_timeout_secs = 3\n\
         [limits]\nws_token_recheck_secs = 1\n",
    )
    .unwrap();
    let server = Server::start_with(dir.path(), &["--config", config.to_str().unwrap()]);
    (dir, server)
}

/// Reads until the server closes the connection; `false` if it is still open after
/// `within`.
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    let mut chunk = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn trickled_headers_and_idle_connections_are_closed() {
    let (_dir, server) = server();

    // Headers one byte at a time: closed by the header deadline, though bytes flow.
    let mut slow = TcpStream::connect(&server.addr).await.unwrap();
    slow.write_all(b"GET /v1/me HTTP/1.1\r\n").await.unwrap();
    let started = tokio::time::Instant::now();
    let mut closed = false;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if slow.write_all(b"X").await.is_err() {
            closed = true;
            break;
        }
        let mut probe = [0u8; 1024];
        if let Ok(r) = tokio::time::timeout(Duration::from_millis(1), slow.read(&mut probe)).await
            && matches!(r, Ok(0) | Err(_))
        {
            closed = true;
            break;
        }
    }
    assert!(closed, "a trickling client is cut off");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );

    // A keep-alive connection that answered one request, then sent nothing: waiting
    // for the next request's headers counts against the header deadline.
    let mut quiet = TcpStream::connect(&server.addr).await.unwrap();
    quiet
        .write_all(b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 12];
    quiet.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    assert!(closed_within(&mut quiet, Duration::from_secs(3)).await);

    // A request whose body stalls (its headers complete): closed once the connection
    // has been idle for the idle time, not at the header deadline.
    let mut stalled = TcpStream::connect(&server.addr).await.unwrap();
    stalled
        .write_all(
            b"POST /v1/sessions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\n\r\n{\"user\":",
        )
        .await
        .unwrap();
    assert!(
        !closed_within(&mut stalled, Duration::from_millis(2000)).await,
        "not at the header deadline"
    );
    assert!(closed_within(&mut stalled, Duration::from_secs(4)).await);

    // Meanwhile the server serves everyone else.
    let token = server.login("alice@example.com", "pw").await;
    let (status, _) = Api::new(&server, &token).get("/v1/me").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_quiet_websocket_outlives_the_idle_time() {
    let (_dir, server) = server();
    let token = server.login("alice@example.com", "pw").await;
    let mut ws = server.ws(&token).await;
    // Twice the idle time without a message either way (pings aside).
    ws.expect_silence(Duration::from_secs(6)).await;
    ws.send(json!({"op": "subscribe", "id": "s", "uris": ["alice@example.com"], "categories": ["note"]}))
        .await;
    let m = ws
        .recv_until(|m| m["type"] == "categories" || m["type"] == "subscribed")
        .await;
    assert!(
        m["type"] == "categories" || m["type"] == "subscribed",
        "{m}"
    );
}
