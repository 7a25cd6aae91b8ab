//! `presenced bench search`: the directory search at enterprise size. Builds the
//! index over N synthetic directory users, then measures queries in-process (one
//! thread, the index alone) and over HTTP (the real API router on a loopback port,
//! with its authentication, access checks and JSON, driven by C keep-alive
//! connections from this process: client and server share the machine, so the HTTP
//! figure is a lower bound). Reports queries/s, p50/p99 latency and the memory the
//! index costs per user.

use crate::bench::{BenchReport, Histogram};
use anyhow::{Context, Result};
use directory::{DirectoryEntry, DirectoryIndex};
use presence_engine::metrics::process_resident_bytes as rss_bytes;
use presence_engine::{Engine, EngineConfig};
use presence_model::{BuiltinAggregator, UserUri};
use presence_store::Stores;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, Clone)]
pub struct SearchArgs {
    pub users: usize,
    pub queries: usize,
    pub connections: usize,
    pub seconds: u64,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SearchReport {
    pub users: usize,
    pub build_ms: f64,
    pub index_bytes_per_user: f64,
    pub rss_bytes_per_user: f64,
    pub queries: usize,
    pub queries_per_s: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub http_connections: usize,
    pub http_queries: u64,
    pub http_queries_per_s: f64,
    pub http_p50_us: f64,
    pub http_p99_us: f64,
    pub http_errors: u64,
}

/// Users provisioned in the engine per store transaction.
const PROVISION_CHUNK: usize = 10_000;
/// Results asked per query (the API's default).
const LIMIT: usize = 20;

const GIVEN: [&str; 24] = [
    "Alice", "Anders", "Bjørn", "Chloé", "David", "Élise", "Fatima", "Gustav", "Hana", "Ingrid",
    "José", "Karin", "Lars", "Maja", "Nils", "Olivia", "Pär", "Quentin", "Rosa", "Søren", "Tomás",
    "Ulla", "Viktor", "Zoë",
];
const SURNAME_START: [&str; 16] = [
    "And", "Berg", "Carl", "Dahl", "Ek", "Fors", "Gran", "Holm", "Is", "Jo", "Karl", "Lind", "Møl",
    "Nord", "Ols", "Ström",
];
const SURNAME_END: [&str; 12] = [
    "sson", "berg", "gren", "lund", "ström", "qvist", "dal", "vik", "heim", "ner", "sen", "ås",
];
const TITLES: [&str; 8] = [
    "Engineer",
    "Manager",
    "Analyst",
    "Designer",
    "Director",
    "Consultant",
    "Accountant",
    "Architect",
];
const DEPARTMENTS: [&str; 10] = [
    "Research",
    "Sales",
    "Finance",
    "Marketing",
    "Support",
    "Legal",
    "Operations",
    "Product",
    "Security",
    "Logistics",
];

/// A small deterministic generator (the same users and queries every run).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % n
    }
}

fn synthetic_users(n: usize) -> Result<Vec<DirectoryEntry>> {
    let mut rng = Lcg(7);
    (0..n)
        .map(|i| {
            let given = GIVEN[rng.next(GIVEN.len())];
            let surname = format!(
                "{}{}",
                SURNAME_START[rng.next(SURNAME_START.len())],
                SURNAME_END[rng.next(SURNAME_END.len())]
            );
            let uri = UserUri::parse(&format!("u{i}@bench.example"))?;
            Ok(DirectoryEntry {
                key: format!("E{i}"),
                dn: None,
                enabled: true,
                display_name: format!("{given} {surname}"),
                given_name: given.to_string(),
                email: format!("{}.{}{i}@bench.example", given, surname).to_lowercase(),
                surname,
                title: TITLES[rng.next(TITLES.len())].to_string(),
                department: DEPARTMENTS[rng.next(DEPARTMENTS.len())].to_string(),
                company: "Bench".into(),
                office: format!("B{}", i % 40),
                work_phone: format!("+47 555 {i:05}"),
                mobile: String::new(),
                street: String::new(),
                city: "Oslo".into(),
                state: String::new(),
                postal_code: String::new(),
                country: "NO".into(),
                uri,
            })
        })
        .collect()
}

/// What people type: name prefixes, a given name with the start of a surname, whole
/// surnames, departments and e-mail prefixes.
fn synthetic_queries(n: usize, users: &[DirectoryEntry]) -> Vec<String> {
    let mut rng = Lcg(11);
    (0..n)
        .map(|_| {
            let u = &users[rng.next(users.len())];
            let prefix = |s: &str, len: usize| s.chars().take(len).collect::<String>();
            match rng.next(20) {
                0..=7 => prefix(&u.given_name, 2 + rng.next(3)),
                8..=13 => format!("{} {}", u.given_name, prefix(&u.surname, 2)),
                14..=16 => u.surname.clone(),
                17..=18 => u.department.clone(),
                _ => prefix(&u.email, 6),
            }
        })
        .collect()
}

/// A query-string value, percent-encoded (everything but unreserved characters).
pub fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Reads one HTTP/1.1 response with a Content-Length body; returns its status.
pub(crate) async fn read_response(
    conn: &mut tokio::net::TcpStream,
    buf: &mut Vec<u8>,
) -> Result<u16> {
    buf.clear();
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = conn.read(&mut chunk).await?;
        anyhow::ensure!(n > 0, "the server closed the connection");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&buf[..head_end])?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .context("no status")?
        .parse()?;
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .context("no Content-Length")?;
    while buf.len() < head_end + length {
        let n = conn.read(&mut chunk).await?;
        anyhow::ensure!(n > 0, "the server closed the connection");
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(status)
}

pub async fn run_search(args: SearchArgs) -> Result<SearchReport> {
    anyhow::ensure!(
        args.users >= 1 && args.queries >= 1,
        "need users and queries"
    );
    anyhow::ensure!(args.connections >= 1, "need at least one connection");
    let entries = synthetic_users(args.users)?;
    let queries = Arc::new(synthetic_queries(args.queries, &entries));
    // No per-user budget here: the benchmark measures the index and the API, not
    // the throttle.
    let index = Arc::new(DirectoryIndex::with_query_budget(f64::MAX, f64::MAX));
    let rss_before = rss_bytes();
    let started = Instant::now();
    index.replace(entries.clone());
    let build_ms = started.elapsed().as_secs_f64() * 1000.0;
    let rss_per_user = rss_bytes().saturating_sub(rss_before) as f64 / args.users as f64;
    let index_bytes_per_user = index.heap_bytes() as f64 / args.users as f64;

    let local = Histogram::new();
    let started = Instant::now();
    for q in queries.iter() {
        let t = Instant::now();
        let found = index.search(q, LIMIT)?;
        std::hint::black_box(found);
        local.record(t.elapsed());
    }
    let local_secs = started.elapsed().as_secs_f64();

    // The real API over loopback: an engine that knows every user (for the access
    // checks), and one signed-in caller per connection.
    let dir = tempfile::tempdir().context("creating a scratch data directory")?;
    let store = Stores::sqlite(dir.path())?;
    let accounts = Arc::new(accounts::Accounts::open(store.clone(), dir.path())?);
    let engine = Engine::new(
        store.clone(),
        Arc::new(BuiltinAggregator),
        EngineConfig::default(),
    )?;
    let uris: Vec<UserUri> = entries.iter().map(|e| e.uri.clone()).collect();
    for chunk in uris.chunks(PROVISION_CHUNK) {
        engine.provision(chunk)?;
    }
    let mut tokens = Vec::new();
    for i in 0..args.connections {
        let caller = UserUri::parse(&format!("caller{i}@bench.example"))?;
        accounts.add(&caller, "Caller", "bench-password")?;
        engine.provision(std::slice::from_ref(&caller))?;
        tokens.push(accounts.issue_token(&caller, Duration::from_secs(3600))?.0);
    }
    let (_shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let state = http_api::AppState {
        engine,
        accounts,
        token_ttl: Duration::from_secs(3600),
        passwords: http_api::PasswordCheck::Local,
        directory: index.clone(),
        limits: http_api::ApiLimits::default(),
        shutdown: shutdown_rx,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, http_api::router(state)).await });

    let remote = Arc::new(Histogram::new());
    let (done, errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let next = Arc::new(AtomicUsize::new(0));
    let until = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let mut clients = Vec::new();
    for token in tokens {
        let (remote, done, errors, next, queries) = (
            remote.clone(),
            done.clone(),
            errors.clone(),
            next.clone(),
            queries.clone(),
        );
        clients.push(tokio::spawn(async move {
            let mut conn = tokio::net::TcpStream::connect(addr).await?;
            conn.set_nodelay(true)?;
            let mut buf = Vec::with_capacity(64 * 1024);
            while Instant::now() < until {
                let q = &queries[next.fetch_add(1, Ordering::Relaxed) % queries.len()];
                let request = format!(
                    "GET /v1/directory?q={}&limit={LIMIT} HTTP/1.1\r\nHost: bench\r\n\
                     Authorization: Bearer {token}\r\n\r\n",
                    percent_encode(q)
                );
                let t = Instant::now();
                conn.write_all(request.as_bytes()).await?;
                let status = read_response(&mut conn, &mut buf).await?;
                remote.record(t.elapsed());
                done.fetch_add(1, Ordering::Relaxed);
                if status != 200 {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            anyhow::Ok(())
        }));
    }
    for c in clients {
        c.await??;
    }
    let http_secs = started.elapsed().as_secs_f64();
    server.abort();
    let http_queries = done.load(Ordering::Relaxed);
    Ok(SearchReport {
        users: args.users,
        build_ms,
        index_bytes_per_user,
        rss_bytes_per_user: rss_per_user,
        queries: queries.len(),
        queries_per_s: queries.len() as f64 / local_secs,
        p50_us: local.quantile_us(0.50),
        p99_us: local.quantile_us(0.99),
        http_connections: args.connections,
        http_queries,
        http_queries_per_s: http_queries as f64 / http_secs,
        http_p50_us: remote.quantile_us(0.50),
        http_p99_us: remote.quantile_us(0.99),
        http_errors: errors.load(Ordering::Relaxed),
    })
}

impl BenchReport for SearchReport {
    fn table(&self) -> String {
        let rows = [
            ("directory users", format!("{}", self.users)),
            ("index build", format!("{:.0} ms", self.build_ms)),
            (
                "index heap per user",
                format!("{:.0} bytes", self.index_bytes_per_user),
            ),
            (
                "resident memory per user",
                format!("{:.0} bytes", self.rss_bytes_per_user),
            ),
            ("in-process queries", format!("{}", self.queries)),
            (
                "in-process queries/s (1 thread)",
                format!("{:.0}", self.queries_per_s),
            ),
            (
                "in-process p50 / p99",
                format!("{:.1} / {:.1} us", self.p50_us, self.p99_us),
            ),
            ("HTTP connections", format!("{}", self.http_connections)),
            ("HTTP queries", format!("{}", self.http_queries)),
            ("HTTP queries/s", format!("{:.0}", self.http_queries_per_s)),
            (
                "HTTP p50 / p99",
                format!("{:.1} / {:.1} us", self.http_p50_us, self.http_p99_us),
            ),
            ("HTTP errors", format!("{}", self.http_errors)),
        ];
        crate::bench::markdown_table(&rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_data_is_deterministic_and_findable() {
        let users = synthetic_users(500).unwrap();
        assert_eq!(users, synthetic_users(500).unwrap());
        let queries = synthetic_queries(200, &users);
        let index = DirectoryIndex::new();
        index.replace(users);
        for q in &queries {
            assert!(
                !index.search(q, LIMIT).unwrap().entries.is_empty(),
                "{q} finds its user"
            );
        }
    }
}
