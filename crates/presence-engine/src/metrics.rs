//! Engine counters, exported by the server in Prometheus text format.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn sub(&self, n: u64) {
        self.0.fetch_sub(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Default)]
pub struct Metrics {
    /// Publication batches applied.
    pub publications: Counter,
    /// Publication batches refused (conflict, invalid, read-only...).
    pub publications_refused: Counter,
    /// Queue entries handed out to front ends.
    pub delivered: Counter,
    /// Notifications merged into one already pending for the same presentity.
    pub coalesced: Counter,
    /// Queues that hit their bound and were reset to a resync.
    pub overflows: Counter,
    /// Instances removed by endpoint, user or time expiry.
    pub expired: Counter,
    /// Endpoints currently signed in (gauge).
    pub endpoints: Counter,
    /// Watcher edges (subscriber x presentity) currently live (gauge).
    pub watch_edges: Counter,
}

impl Metrics {
    /// `(name, help, kind, value)` rows for a Prometheus exposition.
    pub fn rows(&self) -> Vec<(&'static str, &'static str, &'static str, u64)> {
        vec![
            (
                "presenced_publications_total",
                "Publication batches applied.",
                "counter",
                self.publications.get(),
            ),
            (
                "presenced_publications_refused_total",
                "Publication batches refused.",
                "counter",
                self.publications_refused.get(),
            ),
            (
                "presenced_notifications_delivered_total",
                "Notifications handed to front ends.",
                "counter",
                self.delivered.get(),
            ),
            (
                "presenced_notifications_coalesced_total",
                "Notifications merged into a pending one.",
                "counter",
                self.coalesced.get(),
            ),
            (
                "presenced_queue_overflows_total",
                "Subscriber queues reset to a resync.",
                "counter",
                self.overflows.get(),
            ),
            (
                "presenced_instances_expired_total",
                "Category instances removed by expiry.",
                "counter",
                self.expired.get(),
            ),
            (
                "presenced_endpoints",
                "Endpoints signed in.",
                "gauge",
                self.endpoints.get(),
            ),
            (
                "presenced_watch_edges",
                "Live watcher-presentity subscriptions.",
                "gauge",
                self.watch_edges.get(),
            ),
        ]
    }
}

/// Resident memory of this process, from /proc (0 where unavailable).
pub fn process_resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

/// Open file descriptors of this process (0 where unavailable).
pub fn process_open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64)
}
