//! `presenced bench publish`: durable publications from many users at once. Each
//! writer publishes a static note (kept in the store, so each is acknowledged only
//! after its commit) for its own users, version after version. Measured twice:
//! in-process (W threads calling the engine) and over HTTP (the real API on a
//! loopback port, W keep-alive connections from this process, one signed-in user
//! each; client and server share the machine, so the HTTP figure is a lower bound).
//! Reports publications/s and p50/p99 acknowledgement latency, on the embedded
//! SQLite store or on a NATS JetStream cluster.

use crate::bench::{BenchReport, Histogram};
use crate::bench_search::read_response;
use anyhow::{Context, Result};
use presence_engine::{Engine, EngineConfig};
use presence_model::{BuiltinAggregator, ContainerId, ExpireType, Publication, UserUri};
use presence_store::Stores;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

/// Which store the benchmark writes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BenchStore {
    /// SQLite in a scratch directory.
    Sqlite,
    /// A NATS JetStream cluster at these URLs (fresh buckets, deleted afterwards).
    Nats(Vec<String>),
}

#[derive(Debug, Clone)]
pub struct PublishArgs {
    pub store: BenchStore,
    /// Users publishing; each writer takes its share.
    pub users: usize,
    /// Writers in flight at once (threads in-process, connections over HTTP).
    pub writers: usize,
    /// Duration of each of the two runs.
    pub seconds: u64,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PublishReport {
    pub store: &'static str,
    pub users: usize,
    pub writers: usize,
    pub publications: u64,
    pub publications_per_s: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub errors: u64,
    pub http_publications: u64,
    pub http_publications_per_s: f64,
    pub http_p50_us: f64,
    pub http_p99_us: f64,
    pub http_errors: u64,
}

/// The container the notes go to (colleagues).
const CONTAINER: u64 = 200;

fn note(user: usize, n: u64) -> String {
    format!(
        "<note xmlns=\"http://schemas.microsoft.com/2006/09/sip/note\">\
         <body type=\"personal\" uri=\"\">user {user} note {n}</body></note>"
    )
}

fn durable_note(version: u32, value: String) -> Publication {
    Publication {
        category: "note".into(),
        instance: 0,
        container: ContainerId::new(CONTAINER).expect("valid container"),
        version,
        expire_type: ExpireType::Static,
        expires: None,
        value: Some(value),
    }
}

/// Counters shared by the writers of one run.
#[derive(Default)]
struct Tally {
    done: AtomicU64,
    errors: AtomicU64,
}

pub async fn run_publish(args: PublishArgs) -> Result<PublishReport> {
    anyhow::ensure!(args.writers >= 1, "need at least one writer");
    anyhow::ensure!(
        args.users >= args.writers,
        "need at least as many users as writers"
    );
    let dir = tempfile::tempdir().context("creating a scratch data directory")?;
    let prefix = format!("bench_{}", std::process::id());
    let (stores, nats) = match &args.store {
        BenchStore::Sqlite => (Stores::sqlite(dir.path())?, None),
        BenchStore::Nats(urls) => {
            let mut options = presence_store::NatsOptions::new(urls.clone(), "bench");
            options.bucket_prefix = prefix.clone();
            let nats = Arc::new(presence_store::NatsStore::open(options)?);
            (Stores::from_one(nats.clone()), Some(nats))
        }
    };
    let cluster_node = nats.as_ref().map(|_| "bench".to_string());
    let accounts = Arc::new(accounts::Accounts::open(stores.clone(), dir.path())?);
    let engine = Engine::new(
        stores.clone(),
        Arc::new(BuiltinAggregator),
        EngineConfig {
            cluster_node,
            ..EngineConfig::default()
        },
    )?;
    let users: Vec<UserUri> = (0..args.users)
        .map(|i| UserUri::parse(&format!("user{i}@bench.example")))
        .collect::<Result<_, _>>()?;
    engine.provision(&users)?;
    let seconds = Duration::from_secs(args.seconds);

    // In-process: W threads, each cycling through its own users.
    let local = Arc::new(Histogram::new());
    let tally = Arc::new(Tally::default());
    let started = Instant::now();
    let until = started + seconds;
    let threads: Vec<_> = (0..args.writers)
        .map(|w| {
            let (engine, local, tally) = (engine.clone(), local.clone(), tally.clone());
            let mine: Vec<(usize, UserUri)> = users
                .iter()
                .cloned()
                .enumerate()
                .skip(w)
                .step_by(args.writers)
                .collect();
            std::thread::spawn(move || {
                let mut versions = vec![0u32; mine.len()];
                let mut n = 0u64;
                while Instant::now() < until {
                    let k = (n as usize) % mine.len();
                    let (i, user) = &mine[k];
                    let t = Instant::now();
                    let result =
                        engine.publish(user, None, &[durable_note(versions[k], note(*i, n))]);
                    local.record(t.elapsed());
                    match result {
                        Ok(items) => {
                            versions[k] = items[0].version;
                            tally.done.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => {
                            tally.errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    n += 1;
                }
            })
        })
        .collect();
    for t in threads {
        t.join().map_err(|_| anyhow::anyhow!("a writer panicked"))?;
    }
    let local_secs = started.elapsed().as_secs_f64();

    // Over HTTP: one signed-in user per connection.
    let mut tokens = Vec::with_capacity(args.writers);
    for (i, user) in users.iter().take(args.writers).enumerate() {
        accounts.add(user, &format!("User {i}"), "bench-password")?;
        tokens.push(accounts.issue_token(user, Duration::from_secs(3600))?.0);
    }
    let (_shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let state = http_api::AppState {
        engine: engine.clone(),
        accounts,
        token_ttl: Duration::from_secs(3600),
        passwords: http_api::PasswordCheck::Local,
        directory: Arc::new(directory::DirectoryIndex::new()),
        limits: http_api::ApiLimits::default(),
        shutdown: shutdown_rx,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, http_api::router(state)).await });
    let remote = Arc::new(Histogram::new());
    let http = Arc::new(Tally::default());
    let started = Instant::now();
    let until = started + seconds;
    let mut clients = Vec::new();
    for (i, token) in tokens.into_iter().enumerate() {
        let (engine, user) = (engine.clone(), users[i].clone());
        let (remote, http) = (remote.clone(), http.clone());
        clients.push(tokio::spawn(async move {
            let mut conn = tokio::net::TcpStream::connect(addr).await?;
            conn.set_nodelay(true)?;
            let mut buf = Vec::with_capacity(16 * 1024);
            let mut n = 0u64;
            // The version the in-process run left; then the one each answer gives.
            let mut version = engine
                .own_snapshot(&user)?
                .instances
                .iter()
                .find(|x| &*x.key.category == "note")
                .map_or(0, |x| x.version);
            while Instant::now() < until {
                let body = json!({"publications": [{
                    "category": "note", "instance": 0, "container": CONTAINER,
                    "version": version, "expire_type": "static", "value": note(i, n),
                }]})
                .to_string();
                let request = format!(
                    "POST /v1/me/publications HTTP/1.1\r\nHost: bench\r\n\
                     Authorization: Bearer {token}\r\nContent-Type: application/json\r\n\
                     Content-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                let t = Instant::now();
                conn.write_all(request.as_bytes()).await?;
                let status = read_response(&mut conn, &mut buf).await?;
                remote.record(t.elapsed());
                if status == 200 {
                    let start = buf
                        .windows(4)
                        .position(|w| w == b"\r\n\r\n")
                        .map_or(0, |i| i + 4);
                    let answer: serde_json::Value = serde_json::from_slice(&buf[start..])?;
                    version = answer["publications"][0]["version"]
                        .as_u64()
                        .and_then(|v| u32::try_from(v).ok())
                        .context("no version in the answer")?;
                    http.done.fetch_add(1, Ordering::Relaxed);
                } else {
                    http.errors.fetch_add(1, Ordering::Relaxed);
                }
                n += 1;
            }
            anyhow::Ok(())
        }));
    }
    for c in clients {
        c.await??;
    }
    let http_secs = started.elapsed().as_secs_f64();
    server.abort();
    if let Some(nats) = &nats {
        drop_buckets(nats.client(), &prefix).await;
    }
    let (done, http_done) = (
        tally.done.load(Ordering::Relaxed),
        http.done.load(Ordering::Relaxed),
    );
    Ok(PublishReport {
        store: match args.store {
            BenchStore::Sqlite => "sqlite",
            BenchStore::Nats(_) => "nats",
        },
        users: args.users,
        writers: args.writers,
        publications: done,
        publications_per_s: done as f64 / local_secs,
        p50_us: local.quantile_us(0.50),
        p99_us: local.quantile_us(0.99),
        errors: tally.errors.load(Ordering::Relaxed),
        http_publications: http_done,
        http_publications_per_s: http_done as f64 / http_secs,
        http_p50_us: remote.quantile_us(0.50),
        http_p99_us: remote.quantile_us(0.99),
        http_errors: http.errors.load(Ordering::Relaxed),
    })
}

/// Deletes the benchmark's buckets (the store's and nothing else).
async fn drop_buckets(client: async_nats::Client, prefix: &str) {
    let js = async_nats::jetstream::new(client);
    for kind in presence_store::NATS_BUCKETS {
        if let Err(e) = js.delete_key_value(format!("{prefix}_{kind}")).await {
            eprintln!("cannot delete the benchmark's bucket {prefix}_{kind}: {e}");
        }
    }
}

impl BenchReport for PublishReport {
    fn table(&self) -> String {
        let rows = [
            ("store", self.store.to_string()),
            ("users", self.users.to_string()),
            ("writers in flight", self.writers.to_string()),
            ("in-process publications", self.publications.to_string()),
            (
                "in-process publications/s",
                format!("{:.0}", self.publications_per_s),
            ),
            (
                "in-process p50 / p99 ack",
                format!("{:.0} / {:.0} us", self.p50_us, self.p99_us),
            ),
            ("in-process errors", self.errors.to_string()),
            ("HTTP publications", self.http_publications.to_string()),
            (
                "HTTP publications/s",
                format!("{:.0}", self.http_publications_per_s),
            ),
            (
                "HTTP p50 / p99 ack",
                format!("{:.0} / {:.0} us", self.http_p50_us, self.http_p99_us),
            ),
            ("HTTP errors", self.http_errors.to_string()),
        ];
        crate::bench::markdown_table(&rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_short_run_acknowledges_every_publication() {
        let report = run_publish(PublishArgs {
            store: BenchStore::Sqlite,
            users: 8,
            writers: 4,
            seconds: 1,
        })
        .await
        .unwrap();
        assert!(report.publications > 0 && report.http_publications > 0);
        assert_eq!((report.errors, report.http_errors), (0, 0));
        assert!(report.p50_us > 0.0 && report.p99_us >= report.p50_us);
    }
}
