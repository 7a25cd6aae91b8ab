//! Cluster mode: what one node does beside its engine so that several nodes serve
//! one deployment from one NATS JetStream store (docs/cluster.md).
//!
//! - **Changes between nodes.** After a node saves a presentity's document it
//!   publishes `{subject_prefix}.ev.{hash}` (core NATS) with the URI and the new
//!   revision. A node subscribes to the subjects of the presentities it holds in
//!   memory, so an event reaches only nodes that may have watchers of it. A node
//!   that hears of a revision newer than its own re-reads the document from the
//!   store (so a lost or reordered event is repaired by the next one) and tells its
//!   watchers what changed. Interest travels between NATS servers asynchronously,
//!   so a newly followed presentity is re-read once more after
//!   [`FOLLOW_RECHECK`].
//! - **Leases.** Each node keeps `node.{id}` in the `{bucket_prefix}_leases` bucket,
//!   renewed every third of the lease time, listing the users it holds endpoints
//!   of. A node whose lease is older than the lease time is dead: the survivors
//!   remove its endpoints' registrations and instances (watchers see the new
//!   aggregate), then delete its lease. A node that restarts removes what its
//!   previous run held before it serves. Node clocks must agree to well within the
//!   lease time (NTP).
//! - **One directory sync.** The `sync` key names the node that runs the periodic
//!   directory sync (it renews the key with its own lease); another node takes over
//!   when it is older than the lease. The other nodes reload their search index
//!   from the store at each sync interval.

use crate::config::ClusterConfig;
use anyhow::{Context, Result};
use async_nats::jetstream::kv;
use futures_util::StreamExt;
use parking_lot::Mutex;
use presence_engine::{Engine, Replication};
use presence_model::UserUri;
use presence_store::Revision;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::{Notify, mpsc};

/// How long after following a presentity it is read again, to cover events sent
/// before the other servers learnt of this node's interest.
pub const FOLLOW_RECHECK: Duration = Duration::from_secs(1);
/// The lease key of the directory sync.
const SYNC_KEY: &str = "sync";

/// What a node tells the others after saving a document.
#[derive(Debug, Serialize, Deserialize)]
struct Event {
    #[serde(rename = "u")]
    uri: UserUri,
    #[serde(rename = "r")]
    revision: Revision,
    #[serde(rename = "n")]
    node: String,
}

/// A node's lease: the users it holds endpoints of.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Lease {
    users: Vec<UserUri>,
}

enum Command {
    Saved(UserUri, Revision),
    Follow(UserUri),
}

struct Shared {
    node: String,
    subject_prefix: String,
    lease: Duration,
    client: async_nats::Client,
    leases: kv::Store,
    engine: Engine,
    /// Users with endpoints on this node (what the lease lists).
    local_users: Mutex<BTreeSet<UserUri>>,
    lease_changed: Notify,
    /// Whether this node held the directory sync lease when last checked; the
    /// holder renews it with its own lease.
    holds_sync: AtomicBool,
}

/// This node's part in the cluster; [`Replication`] for its engine.
pub struct Cluster {
    shared: Arc<Shared>,
    commands: mpsc::UnboundedSender<Command>,
}

/// How long joining waits for a new bucket's stream to answer.
const JOIN_RETRY_FOR: Duration = Duration::from_secs(15);

/// Retries `op` for [`JOIN_RETRY_FOR`] (a new stream has no leader for a moment;
/// a NATS cluster that just lost a server elects new leaders within seconds).
async fn retry_while_starting<T, E, F>(mut op: impl FnMut() -> F) -> Result<T, E>
where
    F: std::future::Future<Output = Result<T, E>>,
{
    let until = tokio::time::Instant::now() + JOIN_RETRY_FOR;
    loop {
        match op().await {
            Err(_) if tokio::time::Instant::now() < until => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            result => return result,
        }
    }
}

/// FNV-1a, 64 bits: the same on every node and every build, unlike std's hasher.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn event_subject(prefix: &str, uri: &UserUri) -> String {
    format!("{prefix}.ev.{:016x}", fnv1a(uri.as_str().as_bytes()))
}

fn lease_key(node: &str) -> String {
    format!("node.{node}")
}

/// Milliseconds since the epoch of a KV entry's server timestamp.
fn created_ms(entry: &kv::Entry) -> i128 {
    entry.created.unix_timestamp_nanos() / 1_000_000
}

fn now_ms() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i128)
}

impl Cluster {
    /// Joins the cluster: opens the lease bucket, removes what this node's previous
    /// run held, takes the lease, and starts the tasks that carry changes between
    /// nodes. Call before serving anyone.
    pub async fn join(
        config: &ClusterConfig,
        client: async_nats::Client,
        engine: Engine,
    ) -> Result<Arc<Cluster>> {
        let js = async_nats::jetstream::new(client.clone());
        let bucket = format!("{}_leases", config.bucket_prefix);
        let leases = retry_while_starting(|| async {
            match js.get_key_value(&bucket).await {
                Ok(store) => Ok(store),
                Err(_) => {
                    js.create_key_value(kv::Config {
                        bucket: bucket.clone(),
                        history: 1,
                        num_replicas: config.replicas,
                        storage: async_nats::jetstream::stream::StorageType::File,
                        ..Default::default()
                    })
                    .await
                }
            }
        })
        .await
        .with_context(|| format!("creating the lease bucket {bucket}"))?;
        let shared = Arc::new(Shared {
            node: config.node_id.clone(),
            subject_prefix: config.subject_prefix.clone(),
            lease: Duration::from_secs(config.lease_secs),
            client,
            leases,
            engine: engine.clone(),
            local_users: Mutex::new(BTreeSet::new()),
            lease_changed: Notify::new(),
            holds_sync: AtomicBool::new(false),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let cluster = Arc::new(Cluster {
            shared: shared.clone(),
            commands: tx,
        });
        engine.set_replication(cluster.clone());
        tokio::spawn(pump(shared.clone(), rx));
        // A previous run of this node died with endpoints: they are gone. (A bucket
        // created just now answers once its stream has elected a leader.)
        let previous = retry_while_starting(|| shared.leases.entry(lease_key(&shared.node)))
            .await
            .context("reading this node's previous lease")?;
        if let Some(entry) = previous
            && let Ok(lease) = serde_json::from_slice::<Lease>(&entry.value)
            && !lease.users.is_empty()
        {
            let removed = shared
                .remove_endpoints_of(&shared.node, lease.users)
                .await?;
            tracing::info!(removed, "removed the endpoints of this node's previous run");
        }
        retry_while_starting(|| shared.renew()).await?;
        tokio::spawn(keep_lease(shared.clone()));
        tokio::spawn(reap(shared));
        Ok(cluster)
    }

    /// Whether this node runs the periodic directory sync now: it holds the sync
    /// lease or has just taken it from a node that stopped renewing it.
    pub async fn lead_sync(&self) -> bool {
        self.shared.check_sync_lease().await
    }
}

impl Replication for Cluster {
    fn saved(&self, uri: &UserUri, revision: Revision) {
        let _ = self.commands.send(Command::Saved(uri.clone(), revision));
    }

    fn follow(&self, uri: &UserUri) {
        let _ = self.commands.send(Command::Follow(uri.clone()));
    }

    fn endpoints_here(&self, uri: &UserUri, any: bool) {
        let changed = {
            let mut users = self.shared.local_users.lock();
            if any {
                users.insert(uri.clone())
            } else {
                users.remove(uri)
            }
        };
        if changed {
            self.shared.lease_changed.notify_one();
        }
    }
}

impl Shared {
    /// Writes this node's lease with the users it holds now.
    async fn renew(&self) -> Result<()> {
        let lease = Lease {
            users: self.local_users.lock().iter().cloned().collect(),
        };
        self.leases
            .put(lease_key(&self.node), serde_json::to_vec(&lease)?.into())
            .await
            .context("renewing this node's lease")?;
        Ok(())
    }

    async fn remove_endpoints_of(&self, node: &str, users: Vec<UserUri>) -> Result<usize> {
        let (engine, node) = (self.engine.clone(), node.to_string());
        Ok(
            tokio::task::spawn_blocking(move || engine.remove_node_endpoints(&node, &users))
                .await??,
        )
    }

    /// Removes the endpoints of every node whose lease ran out, then its lease.
    async fn reap_dead(&self) -> Result<()> {
        let mut keys = self.leases.keys().await?;
        let mut dead = Vec::new();
        while let Some(key) = keys.next().await {
            let key = key?;
            let Some(node) = key.strip_prefix("node.") else {
                continue;
            };
            if node == self.node {
                continue;
            }
            if let Some(entry) = self.leases.entry(key.as_str()).await?
                && entry.operation == kv::Operation::Put
                && now_ms() - created_ms(&entry) > self.lease.as_millis() as i128
            {
                dead.push((node.to_string(), key.clone(), entry));
            }
        }
        for (node, key, entry) in dead {
            let lease: Lease = serde_json::from_slice(&entry.value).unwrap_or_default();
            let removed = self.remove_endpoints_of(&node, lease.users).await?;
            // Only the lease as it was read: a node that came back meanwhile keeps
            // its fresh one.
            let _ = self
                .leases
                .delete_expect_revision(key.as_str(), Some(entry.revision))
                .await;
            tracing::warn!(node, removed, "node lease expired; its endpoints are gone");
        }
        Ok(())
    }

    /// Takes or renews the directory sync lease; whether this node holds it.
    async fn check_sync_lease(&self) -> bool {
        let held = match self.try_lead_sync().await {
            Ok(lead) => lead,
            Err(e) => {
                tracing::warn!(error = %e, "cannot check the directory sync lease");
                false
            }
        };
        self.holds_sync.store(held, Ordering::Relaxed);
        held
    }

    async fn try_lead_sync(&self) -> Result<bool> {
        let me = self.node.as_bytes().to_vec();
        match self.leases.entry(SYNC_KEY).await? {
            None => Ok(self.leases.create(SYNC_KEY, me.into()).await.is_ok()),
            Some(entry) if entry.operation != kv::Operation::Put => Ok(self
                .leases
                .update(SYNC_KEY, me.into(), entry.revision)
                .await
                .is_ok()),
            Some(entry) if entry.value.as_ref() == self.node.as_bytes() => Ok(self
                .leases
                .update(SYNC_KEY, me.into(), entry.revision)
                .await
                .is_ok()),
            Some(entry) => {
                let stale = now_ms() - created_ms(&entry) > self.lease.as_millis() as i128;
                Ok(stale
                    && self
                        .leases
                        .update(SYNC_KEY, me.into(), entry.revision)
                        .await
                        .is_ok())
            }
        }
    }
}

/// Carries this node's saves out and other nodes' saves in.
async fn pump(shared: Arc<Shared>, mut commands: mpsc::UnboundedReceiver<Command>) {
    let mut followed: HashSet<String> = HashSet::new();
    let mut events = futures_util::stream::SelectAll::new();
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                None => return,
                Some(Command::Saved(uri, revision)) => {
                    let event = Event { uri, revision, node: shared.node.clone() };
                    let subject = event_subject(&shared.subject_prefix, &event.uri);
                    let payload = serde_json::to_vec(&event).expect("events serialise");
                    if let Err(e) = shared.client.publish(subject, payload.into()).await {
                        tracing::warn!(error = %e, "cannot tell other nodes of a change");
                    }
                }
                Some(Command::Follow(uri)) => {
                    let subject = event_subject(&shared.subject_prefix, &uri);
                    if !followed.insert(subject.clone()) {
                        continue;
                    }
                    match shared.client.subscribe(subject).await {
                        Ok(sub) => events.push(sub),
                        Err(e) => tracing::warn!(error = %e, "cannot follow a presentity"),
                    }
                    let engine = shared.engine.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(FOLLOW_RECHECK).await;
                        let _ = tokio::task::spawn_blocking(move || {
                            engine.remote_saved(&uri, Revision::MAX)
                        })
                        .await;
                    });
                }
            },
            Some(message) = events.next(), if !events.is_empty() => {
                let Ok(event) = serde_json::from_slice::<Event>(&message.payload) else {
                    continue;
                };
                if event.node == shared.node {
                    continue;
                }
                let engine = shared.engine.clone();
                tokio::task::spawn_blocking(move || engine.remote_saved(&event.uri, event.revision));
            }
        }
    }
}

/// How soon a failed renewal is tried again.
const RENEW_RETRY: Duration = Duration::from_secs(1);

/// Renews the lease (and the directory sync lease, if this node holds it) every
/// third of its time, at once when the users with endpoints here change, and every
/// [`RENEW_RETRY`] while renewing fails (a NATS failover must not outlast it).
async fn keep_lease(shared: Arc<Shared>) {
    let mut wait = shared.lease / 3;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shared.lease_changed.notified() => {}
        }
        wait = match shared.renew().await {
            Ok(()) => shared.lease / 3,
            Err(e) => {
                tracing::warn!(error = format!("{e:#}"), "cannot renew this node's lease");
                RENEW_RETRY
            }
        };
        if shared.holds_sync.load(Ordering::Relaxed) {
            shared.check_sync_lease().await;
        }
    }
}

/// Looks for dead nodes every third of the lease time.
async fn reap(shared: Arc<Shared>) {
    let every = shared.lease / 3;
    loop {
        tokio::time::sleep(every).await;
        if let Err(e) = shared.reap_dead().await {
            tracing::warn!(error = format!("{e:#}"), "cannot check other nodes' leases");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_stable_and_safe() {
        let uri = UserUri::parse("alice@example.com").unwrap();
        let subject = event_subject("presenced", &uri);
        assert_eq!(subject, event_subject("presenced", &uri));
        let token = subject.rsplit('.').next().unwrap();
        assert_eq!(token.len(), 16);
        assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
        // The FNV-1a test vector: "a" hashes to af63dc4c8601ec8c.
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(
            subject,
            event_subject("presenced", &UserUri::parse("bob@example.com").unwrap())
        );
    }
}
