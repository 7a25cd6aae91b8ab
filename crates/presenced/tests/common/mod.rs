//! Test harness: runs the real `presenced` binary on an ephemeral port and talks to it
//! over real sockets.
#![allow(dead_code)]

pub mod cluster;
pub mod nats;
pub mod sip;
pub mod sipe;
pub mod slapd;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

pub const BIN: &str = env!("CARGO_BIN_EXE_presenced");
/// Generous: these machines are slow and noisy; waiting is not what is tested.
pub const WAIT: Duration = Duration::from_secs(20);

pub struct Server {
    pub child: Child,
    pub base: String,
    pub addr: String,
    /// The SIP address, when started with `--sip`.
    pub sip: Option<String>,
    /// The SIP over TLS address, when started with `--sip-tls`.
    pub tls_sip: Option<String>,
    pub data_dir: PathBuf,
}

impl Server {
    pub fn start(data_dir: &Path) -> Server {
        Self::start_with(data_dir, &[])
    }

    pub fn start_with(data_dir: &Path, extra: &[&str]) -> Server {
        // SIP is off unless a test asks for it (its default port would collide).
        let sip_off: &[&str] = if extra.contains(&"--sip") {
            &[]
        } else {
            &["--sip", "off"]
        };
        let mut child = Command::new(BIN)
            .args(["serve", "--http", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(sip_off)
            .args(extra)
            .env("PRESENCED_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start presenced");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let line = rx.recv_timeout(WAIT).expect("ready line");
        let rest = line
            .strip_prefix("presenced ready ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        let field = |key: &str| {
            rest.split_whitespace()
                .find_map(|kv| kv.strip_prefix(key))
                .map(str::to_string)
        };
        let addr = field("http=").expect("http address");
        Server {
            child,
            base: format!("http://{addr}"),
            addr,
            sip: field("sip="),
            tls_sip: field("sip-tls="),
            data_dir: data_dir.to_path_buf(),
        }
    }

    pub fn kill9(mut self) {
        let _ = self.child.kill(); // SIGKILL on Unix
        let _ = self.child.wait();
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn login(&self, user: &str, password: &str) -> String {
        let r = reqwest::Client::new()
            .post(self.url("/v1/sessions"))
            .json(&json!({"user": user, "password": password}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "login {user}");
        r.json::<Value>().await.unwrap()["token"]
            .as_str()
            .unwrap()
            .to_string()
    }

    pub async fn ws(&self, token: &str) -> Ws {
        let mut req = format!("ws://{}/v1/stream", self.addr)
            .into_client_request()
            .unwrap();
        req.headers_mut()
            .insert("Authorization", format!("Bearer {token}").parse().unwrap());
        let (stream, _) = tokio_tungstenite::connect_async(req)
            .await
            .expect("ws connect");
        let mut ws = Ws {
            stream,
            endpoint: 0,
        };
        let hello = ws.recv().await;
        assert_eq!(hello["type"], "hello", "{hello}");
        ws.endpoint = hello["endpoint"].as_u64().expect("endpoint id");
        ws
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh data directory with alice (pw-a) and bob (pw-b), a server on it, and a
/// token for each.
pub async fn alice_and_bob() -> (tempfile::TempDir, Server, String, String) {
    let dir = tempfile::tempdir().unwrap();
    add_user(dir.path(), "alice@example.com", "Alice", "pw-a");
    add_user(dir.path(), "bob@example.com", "Bob", "pw-b");
    let server = Server::start(dir.path());
    let ta = server.login("alice@example.com", "pw-a").await;
    let tb = server.login("sip:bob@example.com", "pw-b").await;
    (dir, server, ta, tb)
}

/// Runs `presenced user add` against a data directory.
pub fn add_user(data_dir: &Path, user: &str, name: &str, password: &str) {
    let mut child = Command::new(BIN)
        .args([
            "user",
            "add",
            user,
            "--display-name",
            name,
            "--password-stdin",
            "--data-dir",
        ])
        .arg(data_dir)
        .env("PRESENCED_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    assert!(child.wait().unwrap().success(), "user add {user}");
}

/// Runs a `presenced` subcommand on a data directory; (success, stdout, stderr).
pub fn run(args: &[&str], dir: &std::path::Path, stdin: Option<&str>) -> (bool, String, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .env("PRESENCED_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut input = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            writeln!(input, "{s}").unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub struct Ws {
    pub stream: WsStream,
    /// The endpoint id from the server's hello (0 before it).
    pub endpoint: u64,
}

impl Ws {
    pub async fn send(&mut self, v: Value) {
        self.stream
            .send(Message::Text(v.to_string().into()))
            .await
            .unwrap();
    }

    /// The next JSON text message (panics after [`WAIT`]).
    pub async fn recv(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(WAIT, self.stream.next())
                .await
                .expect("timed out waiting for a WebSocket message")
                .expect("stream ended")
                .expect("ws error");
            if let Message::Text(t) = msg {
                return serde_json::from_str(&t).unwrap();
            }
        }
    }

    /// Waits for a message matching `pred`, skipping others.
    pub async fn recv_until(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let v = tokio::time::timeout(left, self.recv())
                .await
                .expect("timed out waiting for a matching message");
            if pred(&v) {
                return v;
            }
        }
    }

    /// Asserts that nothing arrives for `d`.
    pub async fn expect_silence(&mut self, d: Duration) {
        if let Ok(Some(Ok(Message::Text(t)))) = tokio::time::timeout(d, self.stream.next()).await {
            panic!("unexpected message {t}");
        }
    }
}

pub fn machine_state(availability: u32) -> String {
    format!(
        "<state xmlns=\"http://schemas.microsoft.com/2006/09/sip/state\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" xsi:type=\"machineState\"><availability>{availability}</availability></state>"
    )
}

pub fn note(text: &str) -> String {
    format!(
        "<note xmlns=\"http://schemas.microsoft.com/2006/09/sip/note\"><body type=\"personal\" uri=\"\">{text}</body></note>"
    )
}

/// The summary availability of the first `state` instance in a categories list.
pub fn availability(categories: &Value) -> Option<u64> {
    categories
        .as_array()?
        .iter()
        .find(|c| c["name"] == "state")
        .and_then(|c| c["summary"]["availability"].as_u64())
}

pub fn has_name(msg: &Value, name: &str) -> bool {
    msg["names"]
        .as_array()
        .is_some_and(|n| n.iter().any(|x| x == name))
}

pub struct Api {
    pub client: reqwest::Client,
    pub base: String,
    pub token: String,
}

impl Api {
    pub fn new(server: &Server, token: &str) -> Api {
        Api {
            client: reqwest::Client::new(),
            base: server.base.clone(),
            token: token.to_string(),
        }
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .client
            .get(format!("{}{}", self.base, path))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn send(&self, method: reqwest::Method, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .client
            .request(method, format!("{}{}", self.base, path))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn publish(&self, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::POST, "/v1/me/publications", body)
            .await
    }
}
