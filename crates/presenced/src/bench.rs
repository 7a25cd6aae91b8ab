//! `presenced bench fanout`: drives the real engine in-process on the hot path (an
//! endpoint publishing its machine state, watched by W colleagues each) and reports
//! throughput, publish-to-delivery latency and memory per subscription edge.
//!
//! N users each sign in one endpoint; endpoint i watches the `state` of users
//! i+1 .. i+W (mod N), so every presentity has W watchers and there are N x W edges.
//! Publishers then publish machine states alternating between Available and Busy, so
//! every publication changes the aggregate every watcher sees. A notification counts
//! as delivered when a subscriber's queue hands it out; notifications merged into one
//! still pending are counted as coalesced.

use anyhow::{Context, Result};
use presence_engine::metrics::process_resident_bytes as rss_bytes;
use presence_engine::{Delivery, Engine, EngineConfig, Session};
use presence_model::{BuiltinAggregator, ContainerId, ExpireType, Publication, UserUri};
use presence_store::Stores;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct FanoutArgs {
    pub presentities: usize,
    pub watchers: usize,
    pub publications: usize,
    pub publishers: usize,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Report {
    pub presentities: usize,
    pub watchers: usize,
    pub edges: usize,
    pub publications: usize,
    pub publications_per_s: f64,
    pub notifications: u64,
    pub notifications_per_s: f64,
    pub coalesced: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub rss_bytes: u64,
    pub bytes_per_subscription: f64,
}

/// What every benchmark prints: one JSON line (its fields), or a table for people.
pub trait BenchReport: serde::Serialize {
    fn json(&self) -> String {
        serde_json::to_string(self).expect("reports serialise")
    }
    fn table(&self) -> String;
}

/// A benchmark's figures as a Markdown table, ready for a report.
pub(crate) fn markdown_table(rows: &[(&str, String)]) -> String {
    let mut out = String::from("| metric | value |\n|---|---|\n");
    for (k, v) in rows {
        out.push_str(&format!("| {k} | {v} |\n"));
    }
    out
}

/// Provisioning batch size (one store transaction each).
const PROVISION_CHUNK: usize = 10_000;
/// How long to wait for the queues to drain after publishing.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(120);

/// Log-linear latency histogram: 8 sub-buckets per power of two of nanoseconds.
pub(crate) struct Histogram {
    buckets: Vec<AtomicU64>,
}

impl Histogram {
    pub(crate) fn new() -> Self {
        Histogram {
            buckets: (0..64 * 8).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn index(ns: u64) -> usize {
        if ns < 8 {
            return ns as usize;
        }
        let exp = 63 - ns.leading_zeros() as u64;
        let sub = (ns >> (exp - 3)) & 7;
        ((exp - 2) * 8 + sub) as usize
    }

    fn lower_bound(idx: usize) -> u64 {
        if idx < 8 {
            return idx as u64;
        }
        let (exp, sub) = ((idx / 8) as u64 + 2, (idx % 8) as u64);
        (8 + sub) << (exp - 3)
    }

    pub(crate) fn record(&self, d: Duration) {
        let ns = d.as_nanos().min(u64::MAX as u128) as u64;
        self.buckets[Self::index(ns)].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn quantile_us(&self, q: f64) -> f64 {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return 0.0;
        }
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Self::lower_bound(i) as f64 / 1000.0;
            }
        }
        0.0
    }
}

fn machine_state(availability: u32) -> String {
    format!(
        "<state xmlns=\"http://schemas.microsoft.com/2006/09/sip/state\" \
         xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" manual=\"false\" \
         xsi:type=\"machineState\"><availability>{availability}</availability></state>"
    )
}

fn publication(container: u64, version: u32, value: &str) -> Publication {
    Publication {
        category: "state".into(),
        instance: 0x3000_0001,
        container: ContainerId::new(container).expect("aggregation container"),
        version,
        expire_type: ExpireType::Endpoint,
        expires: None,
        value: Some(value.to_string()),
    }
}

async fn wait_until(deadline: Duration, mut done: impl FnMut() -> bool) -> Result<()> {
    let start = Instant::now();
    while !done() {
        anyhow::ensure!(
            start.elapsed() < deadline,
            "queues did not drain within {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

pub async fn run_fanout(args: FanoutArgs) -> Result<Report> {
    anyhow::ensure!(args.presentities >= 2, "need at least 2 presentities");
    anyhow::ensure!(
        args.watchers >= 1 && args.watchers < args.presentities,
        "watchers must be between 1 and presentities - 1"
    );
    let dir = tempfile::tempdir().context("creating a scratch data directory")?;
    let store = Stores::sqlite(dir.path())?;
    let config = EngineConfig {
        max_targets_per_subscription: args.watchers.max(1000),
        max_pending_per_subscriber: args.watchers.max(1000) * 4,
        ..EngineConfig::default()
    };
    let engine = Engine::new(store, Arc::new(BuiltinAggregator), config)?;
    let users: Vec<UserUri> = (0..args.presentities)
        .map(|i| UserUri::parse(&format!("user{i}@bench.example")))
        .collect::<Result<_, _>>()?;
    for chunk in users.chunks(PROVISION_CHUNK) {
        engine.provision(chunk)?;
    }

    let rss_before = rss_bytes();
    let sessions: Vec<Arc<Session>> = users
        .iter()
        .map(|u| engine.sign_in(u, u.as_str(), None).map(Arc::new))
        .collect::<Result<_, _>>()?;

    let latency = Arc::new(Histogram::new());
    let measuring = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut consumers = Vec::with_capacity(sessions.len());
    for s in &sessions {
        let sub = s.subscriber().clone();
        let (latency, measuring) = (latency.clone(), measuring.clone());
        consumers.push(tokio::spawn(async move {
            loop {
                let batch = sub.next().await;
                if batch.is_empty() {
                    break;
                }
                if measuring.load(Ordering::Relaxed) {
                    for d in &batch {
                        if let Delivery::Categories { queued_at, .. } = d {
                            latency.record(queued_at.elapsed());
                        }
                    }
                }
            }
        }));
    }

    let n = args.presentities;
    let state = vec!["state".to_string()];
    for (i, s) in sessions.iter().enumerate() {
        let targets: Vec<UserUri> = (1..=args.watchers)
            .map(|k| users[(i + k) % n].clone())
            .collect();
        s.subscribe("bench", &targets, &state, false)?;
    }
    let edges = n * args.watchers;
    let metrics = engine.metrics().clone();
    wait_until(DRAIN_TIMEOUT, || metrics.delivered.get() >= edges as u64).await?;
    let rss_subscribed = rss_bytes();

    // Publish.
    let delivered_0 = metrics.delivered.get();
    let coalesced_0 = metrics.coalesced.get();
    measuring.store(true, Ordering::Relaxed);
    let start = Instant::now();
    let per_thread = args.publications.div_ceil(args.publishers);
    let publish_elapsed = {
        let engine = engine.clone();
        let users = Arc::new(users.clone());
        let endpoints: Arc<Vec<_>> = Arc::new(sessions.iter().map(|s| s.endpoint()).collect());
        let publishers = args.publishers;
        let total = args.publications;
        tokio::task::spawn_blocking(move || -> Result<Duration> {
            std::thread::scope(|scope| {
                let handles: Vec<_> = (0..publishers)
                    .map(|t| {
                        let (engine, users, endpoints) = (&engine, &users, &endpoints);
                        scope.spawn(move || -> Result<()> {
                            // Thread t owns users t, t+T, t+2T...; versions are per user.
                            let mine: Vec<usize> = (t..n).step_by(publishers).collect();
                            let mut versions = vec![0u32; mine.len()];
                            let values = [machine_state(3500), machine_state(6500)];
                            let count = per_thread.min(total.saturating_sub(t * per_thread));
                            for k in 0..count {
                                let slot = k % mine.len();
                                let u = mine[slot];
                                let v = versions[slot];
                                let value = &values[(v % 2) as usize];
                                let items = [publication(2, v, value), publication(3, v, value)];
                                engine.publish(&users[u], Some(endpoints[u]), &items)?;
                                versions[slot] = v + 1;
                            }
                            Ok(())
                        })
                    })
                    .collect();
                for h in handles {
                    h.join().expect("publisher thread")?;
                }
                Ok(start.elapsed())
            })
        })
        .await??
    };
    let expected = (args.publications * args.watchers) as u64;
    wait_until(DRAIN_TIMEOUT, || {
        (metrics.delivered.get() - delivered_0) + (metrics.coalesced.get() - coalesced_0)
            >= expected
    })
    .await?;
    let total_elapsed = start.elapsed();
    let delivered = metrics.delivered.get() - delivered_0;
    let coalesced = metrics.coalesced.get() - coalesced_0;
    let rss = rss_bytes();

    for s in &sessions {
        s.sign_out();
    }
    for c in consumers {
        let _ = c.await;
    }
    Ok(Report {
        presentities: n,
        watchers: args.watchers,
        edges,
        publications: args.publications,
        publications_per_s: args.publications as f64 / publish_elapsed.as_secs_f64(),
        notifications: delivered,
        notifications_per_s: delivered as f64 / total_elapsed.as_secs_f64(),
        coalesced,
        p50_us: latency.quantile_us(0.50),
        p99_us: latency.quantile_us(0.99),
        rss_bytes: rss,
        bytes_per_subscription: rss_subscribed.saturating_sub(rss_before) as f64 / edges as f64,
    })
}

impl BenchReport for Report {
    fn table(&self) -> String {
        let rows = [
            ("presentities", self.presentities.to_string()),
            ("watchers per presentity", self.watchers.to_string()),
            ("subscription edges", self.edges.to_string()),
            ("publications", self.publications.to_string()),
            ("publications/s", format!("{:.0}", self.publications_per_s)),
            ("notifications delivered", self.notifications.to_string()),
            (
                "notifications/s",
                format!("{:.0}", self.notifications_per_s),
            ),
            ("notifications coalesced", self.coalesced.to_string()),
            ("p50 publish-to-delivery", format!("{:.1} us", self.p50_us)),
            ("p99 publish-to-delivery", format!("{:.1} us", self.p99_us)),
            (
                "resident memory",
                format!("{:.1} MiB", self.rss_bytes as f64 / 1048576.0),
            ),
            (
                "bytes per subscription",
                format!("{:.1}", self.bytes_per_subscription),
            ),
        ];
        markdown_table(&rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles() {
        let h = Histogram::new();
        for us in 1..=100u64 {
            h.record(Duration::from_micros(us));
        }
        let p50 = h.quantile_us(0.5);
        let p99 = h.quantile_us(0.99);
        assert!((43.0..=50.0).contains(&p50), "{p50}");
        assert!((88.0..=99.0).contains(&p99), "{p99}");
        for ns in [0u64, 7, 8, 9, 1000, 123_456_789] {
            let i = Histogram::index(ns);
            assert!(
                Histogram::lower_bound(i) <= ns && ns < Histogram::lower_bound(i + 1),
                "{ns}"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn small_run_delivers_every_notification() {
        let r = run_fanout(FanoutArgs {
            presentities: 50,
            watchers: 5,
            publications: 500,
            publishers: 2,
        })
        .await
        .unwrap();
        assert_eq!(r.edges, 250);
        assert_eq!(r.notifications + r.coalesced, 500 * 5);
        assert!(r.notifications > 0 && r.p50_us > 0.0);
    }
}
