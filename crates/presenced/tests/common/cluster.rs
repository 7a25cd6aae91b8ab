//! Cluster-mode deployments for the black-box tests: presenced nodes on one NATS
//! JetStream cluster ([`super::nats::NatsCluster`]), each a real `presenced serve
//! --config FILE` process, plus a WebSocket watcher that keeps the latest view of
//! each watched user.
//!
//! A [`Deployment`] owns a temporary directory with one config file and data
//! directory per node (`nodeN.toml`, `nodeN/`) and each node's log (`nodeN.log`,
//! appended across restarts). Bucket and subject prefixes are unique per
//! deployment, so tests in one binary never see each other's data.

use super::nats::NatsCluster;
use super::{BIN, Server, WAIT, Ws};
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

/// The machine-state instance an endpoint publishes (0x30000001).
pub const MACHINE_INSTANCE: u32 = 0x3000_0001;

/// A prefix no other deployment of this machine uses: `t`, the pid, the time and a
/// counter (letters and digits only, valid for buckets and subjects).
pub fn unique_prefix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "t{:x}x{:x}x{}",
        std::process::id(),
        nanos,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

pub struct Deployment {
    pub dir: tempfile::TempDir,
    pub prefix: String,
    /// The NATS servers' URLs in server order.
    pub nats_urls: Vec<String>,
    pub replicas: usize,
    pub lease_secs: u64,
    /// TOML appended to every node's config (tables other than the ones written).
    pub extra_config: String,
}

impl Deployment {
    /// A deployment on `nats` with buckets of as many replicas as it has servers (at
    /// most 3) and the given node lease.
    pub fn new(nats: &NatsCluster, lease_secs: u64) -> Deployment {
        let dir = tempfile::Builder::new()
            .prefix("presenced-cluster-")
            .tempdir()
            .unwrap();
        let d = Deployment {
            dir,
            prefix: unique_prefix(),
            nats_urls: nats.urls(),
            replicas: nats.len().min(3),
            lease_secs,
            extra_config: String::new(),
        };
        // Node 1's config exists from the start: the user commands run against it.
        d.write_config(0, &d.default_urls(0));
        d
    }

    /// Appends `toml` to every node's config (a `[directory]` table, say).
    pub fn with_extra_config(mut self, toml: &str) -> Deployment {
        self.extra_config = toml.to_string();
        self.write_config(0, &self.default_urls(0));
        self
    }

    pub fn node_id(node: usize) -> String {
        format!("node{}", node + 1)
    }

    pub fn data_dir(&self, node: usize) -> PathBuf {
        self.dir.path().join(Self::node_id(node))
    }

    pub fn config_path(&self, node: usize) -> PathBuf {
        self.dir
            .path()
            .join(format!("{}.toml", Self::node_id(node)))
    }

    pub fn log_path(&self, node: usize) -> PathBuf {
        self.dir.path().join(format!("{}.log", Self::node_id(node)))
    }

    /// The name of the docs bucket's stream (`KV_<prefix>_docs`).
    pub fn docs_stream(&self) -> String {
        format!("KV_{}_docs", self.prefix)
    }

    /// Node `node`'s URL list: its "local" NATS server (node modulo servers) first,
    /// then the others in order.
    pub fn default_urls(&self, node: usize) -> Vec<String> {
        let n = self.nats_urls.len();
        (0..n)
            .map(|k| self.nats_urls[(node + k) % n].clone())
            .collect()
    }

    fn write_config(&self, node: usize, urls: &[String]) {
        let data_dir = self.data_dir(node);
        std::fs::create_dir_all(&data_dir).unwrap();
        let urls: Vec<String> = urls.iter().map(|u| format!("{u:?}")).collect();
        let text = format!(
            "[server]\ndata_dir = {data_dir:?}\n\n[store]\nkind = \"nats\"\n\n[cluster]\n\
             node_id = \"{id}\"\nnats_urls = [{urls}]\nbucket_prefix = \"{p}\"\n\
             subject_prefix = \"{p}\"\nreplicas = {replicas}\nlease_secs = {lease}\n\n{extra}",
            data_dir = data_dir.display().to_string(),
            id = Self::node_id(node),
            urls = urls.join(", "),
            p = self.prefix,
            replicas = self.replicas,
            lease = self.lease_secs,
            extra = self.extra_config,
        );
        std::fs::write(self.config_path(node), text).unwrap();
    }

    /// `presenced user add` against the cluster store, through node 1's config.
    pub fn add_user(&self, user: &str, name: &str, password: &str) {
        let mut child = Command::new(BIN)
            .args([
                "user",
                "add",
                user,
                "--display-name",
                name,
                "--password-stdin",
                "--config",
            ])
            .arg(self.config_path(0))
            .env("PRESENCED_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "user add {user}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Adds `users` (uri, display name), all with `password`: the first alone (it
    /// creates the buckets and node 1's secret key), the others two at a time.
    pub fn add_users(&self, users: &[(String, String)], password: &str) {
        let Some((first, rest)) = users.split_first() else {
            return;
        };
        self.add_user(&first.0, &first.1, password);
        std::thread::scope(|s| {
            for half in [0, 1] {
                s.spawn(move || {
                    for (u, n) in rest.iter().skip(half).step_by(2) {
                        self.add_user(u, n, password);
                    }
                });
            }
        });
    }

    /// Starts node `node` with its default URL order. `extra` goes to `serve` (SIP is
    /// off unless it names `--sip`).
    pub fn start(&self, node: usize, extra: &[&str]) -> Server {
        self.start_with_urls(node, &self.default_urls(node), extra)
    }

    /// Starts node `node` connected to `urls` (in that order). Every node gets node
    /// 1's secret key (users must have been added first).
    pub fn start_with_urls(&self, node: usize, urls: &[String], extra: &[&str]) -> Server {
        self.write_config(node, urls);
        if node != 0 {
            let key = self.data_dir(0).join("secret.key");
            assert!(
                key.is_file(),
                "add users before starting nodes: {} is missing",
                key.display()
            );
            std::fs::copy(&key, self.data_dir(node).join("secret.key")).unwrap();
        }
        let sip_off: &[&str] = if extra.contains(&"--sip") {
            &[]
        } else {
            &["--sip", "off"]
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(node))
            .unwrap();
        let mut child = Command::new(BIN)
            .args(["serve", "--http", "127.0.0.1:0", "--config"])
            .arg(self.config_path(node))
            .args(sip_off)
            .args(extra)
            .env("PRESENCED_LOG", "info,async_nats=warn")
            // Errors without a backtrace (panics keep theirs): the logs stay readable.
            .env("RUST_LIB_BACKTRACE", "0")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
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
        // Joining a fresh cluster creates buckets and waits for their leaders.
        let line = match rx.recv_timeout(Duration::from_secs(40)) {
            Ok(line) => line,
            Err(e) => panic!(
                "{} printed no ready line ({e}); its log:\n{}",
                Self::node_id(node),
                self.log(node)
            ),
        };
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
            data_dir: self.data_dir(node),
        }
    }

    /// The last 60 lines of node `node`'s log.
    pub fn log(&self, node: usize) -> String {
        let text = std::fs::read_to_string(self.log_path(node)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    /// Every node's log tail, for failure messages.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for node in 0..9 {
            if self.log_path(node).exists() {
                s.push_str(&format!(
                    "--- {} ---\n{}\n",
                    Self::node_id(node),
                    self.log(node)
                ));
            }
        }
        s
    }
}

/// An HTTP client that gives up after `secs` (a node waiting on a dead store must
/// not hang a test).
pub fn client(secs: u64) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(secs))
        .build()
        .unwrap()
}

/// Signs in on `server`; panics unless 201.
pub async fn sign_in(server: &Server, user: &str, password: &str) -> String {
    let r = client(30)
        .post(server.url("/v1/sessions"))
        .json(&json!({"user": user, "password": password}))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    assert_eq!(status, 201, "sign-in of {user} on {}: {body}", server.base);
    body["token"].as_str().unwrap().to_string()
}

/// One publication of a static note in `container`, against `version`.
pub fn note_publication(container: u32, version: u64, text: &str) -> Value {
    json!({"publications": [{"category": "note", "instance": 0, "container": container,
        "version": version, "expire_type": "static", "value": super::note(text)}]})
}

/// An endpoint's machine state into containers 2 and 3, against `version`, as
/// state instance [`MACHINE_INSTANCE`].
pub fn machine_publication(endpoint: u64, version: u64, availability: u32) -> Value {
    machine_publication_as(MACHINE_INSTANCE, endpoint, version, availability)
}

/// [`machine_publication`] under another instance id (each device of one user
/// publishes its own).
pub fn machine_publication_as(
    instance: u32,
    endpoint: u64,
    version: u64,
    availability: u32,
) -> Value {
    let value = super::machine_state(availability);
    json!({"endpoint": endpoint, "publications": [
        {"category": "state", "instance": instance, "container": 2, "version": version,
         "expire_type": "endpoint", "value": value},
        {"category": "state", "instance": instance, "container": 3, "version": version,
         "expire_type": "endpoint", "value": value},
    ]})
}

/// The owner's instance (category, instance, container) in a `GET /v1/me` answer.
pub fn own_instance<'a>(
    me: &'a Value,
    category: &str,
    instance: u64,
    container: u64,
) -> Option<&'a Value> {
    me["categories"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == category && c["instance"] == instance && c["container"] == container)
}

/// What a watcher sees of one user: category name to its instances.
pub type View = HashMap<String, Vec<Value>>;

/// The aggregate availability in a view (None: offline, no state).
pub fn view_availability(view: &View) -> Option<u64> {
    view.get("state")?
        .iter()
        .find_map(|c| c["summary"]["availability"].as_u64())
}

/// The note text in a view.
pub fn view_note(view: &View) -> Option<String> {
    view.get("note")?
        .iter()
        .find_map(|c| c["summary"]["note"].as_str().map(str::to_string))
}

/// A WebSocket endpoint that watches users and keeps the latest view of each, as a
/// client applies `categories` messages (docs/api.md).
pub struct Watcher {
    pub ws: Ws,
    pub views: HashMap<String, View>,
    /// Every message received, for failure messages.
    pub seen: Vec<Value>,
}

impl Watcher {
    /// Opens a WebSocket on `server` and subscribes to `uris` (id "w"), then waits
    /// for the first snapshot of each.
    pub async fn subscribe(
        server: &Server,
        token: &str,
        uris: &[&str],
        categories: &[&str],
    ) -> Watcher {
        let ws = server.ws(token).await;
        let mut w = Watcher {
            ws,
            views: HashMap::new(),
            seen: Vec::new(),
        };
        w.ws.send(json!({"op": "subscribe", "id": "w", "uris": uris, "categories": categories}))
            .await;
        for uri in uris {
            w.wait_for(uri, WAIT, "the first snapshot", |_| true).await;
        }
        w
    }

    fn apply(&mut self, m: &Value) {
        if m["type"] != "categories" {
            return;
        }
        let uri = m["uri"].as_str().unwrap_or_default().to_string();
        let view = self.views.entry(uri).or_default();
        for name in m["names"].as_array().into_iter().flatten() {
            let name = name.as_str().unwrap_or_default();
            let entries = m["categories"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|c| c["name"] == name)
                .cloned()
                .collect();
            view.insert(name.to_string(), entries);
        }
    }

    /// Reads messages until the view of `uri` satisfies `pred` (checked at once as
    /// well); returns how long that took. Err, with what was seen, after `budget`.
    pub async fn try_wait_for(
        &mut self,
        uri: &str,
        budget: Duration,
        pred: impl Fn(&View) -> bool,
    ) -> Result<Duration, String> {
        let t0 = Instant::now();
        let deadline = tokio::time::Instant::now() + budget;
        loop {
            if let Some(v) = self.views.get(uri)
                && pred(v)
            {
                return Ok(t0.elapsed());
            }
            let next = tokio::time::timeout_at(deadline, self.ws.stream.next()).await;
            match next {
                Err(_) => {
                    return Err(format!(
                        "after {budget:?}, the view of {uri} is {:?}; the last messages: {}",
                        self.views.get(uri),
                        self.recent()
                    ));
                }
                Ok(None) => return Err(format!("the WebSocket ended; seen {}", self.recent())),
                Ok(Some(Err(e))) => return Err(format!("WebSocket error {e}")),
                Ok(Some(Ok(Message::Text(t)))) => {
                    let m: Value = serde_json::from_str(&t).unwrap();
                    self.apply(&m);
                    self.seen.push(m);
                }
                Ok(Some(Ok(_))) => {}
            }
        }
    }

    /// [`Self::try_wait_for`], panicking with `what` on failure.
    pub async fn wait_for(
        &mut self,
        uri: &str,
        budget: Duration,
        what: &str,
        pred: impl Fn(&View) -> bool,
    ) -> Duration {
        match self.try_wait_for(uri, budget, pred).await {
            Ok(d) => d,
            Err(e) => panic!("waiting for {what}: {e}"),
        }
    }

    /// The last few messages, as text.
    pub fn recent(&self) -> String {
        let from = self.seen.len().saturating_sub(6);
        self.seen[from..]
            .iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// One request over the NATS client protocol (a JetStream API call without a client
/// library): subscribes to a reply subject, publishes, and returns the reply as JSON
/// (None when none comes within 10 s).
pub fn nats_request(url: &str, subject: &str, payload: &Value) -> Option<Value> {
    use std::io::Read;
    let addr = url.strip_prefix("nats://").expect("nats:// URL");
    let stream = std::net::TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let body = payload.to_string();
    write!(
        w,
        "CONNECT {{\"verbose\":false,\"pedantic\":false,\"protocol\":1}}\r\n\
         SUB _INBOX.cluster_test 1\r\n\
         PUB {subject} _INBOX.cluster_test {}\r\n{body}\r\n",
        body.len()
    )
    .ok()?;
    loop {
        line.clear();
        r.read_line(&mut line).ok()?;
        let l = line.trim_end();
        if l == "PING" {
            w.write_all(b"PONG\r\n").ok()?;
        } else if l.starts_with("-ERR") {
            return None;
        } else if let Some(rest) = l.strip_prefix("MSG ") {
            let len: usize = rest.split_whitespace().last()?.parse().ok()?;
            let mut msg = vec![0; len + 2];
            r.read_exact(&mut msg).ok()?;
            return serde_json::from_slice(&msg[..len]).ok();
        }
    }
}

/// The streams of the store's five buckets.
pub fn store_streams(prefix: &str) -> Vec<String> {
    ["docs", "accounts", "sessions", "directory", "meta"]
        .iter()
        .map(|b| format!("KV_{prefix}_{b}"))
        .collect()
}

/// Moves the leadership of every stream in `streams` off server `avoid` (stream
/// leader step-downs), so that server can die without interrupting them. Panics
/// after 30 s.
pub fn lead_elsewhere(nats: &NatsCluster, streams: &[String], avoid: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let via = (0..nats.len()).find(|&i| i != avoid).unwrap();
    loop {
        let leaders: Vec<Option<String>> = streams.iter().map(|s| nats.stream_leader(s)).collect();
        let bad: Vec<(&String, &Option<String>)> = streams
            .iter()
            .zip(&leaders)
            .filter(|(_, l)| l.is_none() || l.as_deref() == Some(nats.name(avoid)))
            .collect();
        if bad.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "still led by {} or leaderless: {bad:?}",
            nats.name(avoid)
        );
        for (stream, leader) in bad {
            if leader.is_some() {
                let _ = nats_request(
                    &nats.url(via),
                    &format!("$JS.API.STREAM.LEADER.STEPDOWN.{stream}"),
                    &json!({}),
                );
            }
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}
