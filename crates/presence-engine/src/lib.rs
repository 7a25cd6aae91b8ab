//! The presence engine: presentities in memory, endpoints and their lifetimes,
//! subscriptions and fan-out, expiry timers, and the store write before every
//! acknowledgement.
//!
//! Concurrency: each presentity is one [`PresentityCell`] behind its own lock, which
//! is its single writer in this process. Only the directory batch holds several
//! presentity locks at once, and it takes them in URI order; everything else holds at
//! most one. Every change goes through one transaction helper
//! ([`Engine::write`](presentity)): apply the model operation, save the document with
//! compare-and-set if the change is durable (retrying from the stored document when
//! another writer got there first), then fan out. Operations are synchronous (they
//! may wait for the store's commit); async front ends call them through
//! `spawn_blocking`. Deliveries go into per-subscriber queues ([`queue::Subscriber`])
//! which never block the writer.

mod clock;
mod directory;
mod endpoints;
mod error;
mod fanout;
pub mod metrics;
mod ops;
mod presentity;
pub mod queue;
mod session;
mod timers;

pub use clock::Clock;
pub use directory::{DirectoryUpdate, DirectoryView};
pub use error::{EngineError, ErrorKind};
pub use ops::OwnSnapshot;
pub use presentity::PresentityCell;
pub use queue::{CategoryView, Delivery, SelfUpdate, Subscriber, Views, WireFormat};
pub use session::{Session, Snapshot, SubscribeResult, Target};

pub(crate) use presentity::{Edge, PresentityState};

use metrics::Metrics;
use parking_lot::{Mutex, RwLock};
use presence_model::document::{Ctx, RecordScope, Stamper};
use presence_model::{Aggregator, EndpointId, PresentityDoc, Timestamp, UserUri};
use presence_store::{Revision, Stores};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use timers::Timers;

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Distinct presentities that may wait in one subscriber's queue before it is
    /// reset to a resync.
    pub max_pending_per_subscriber: usize,
    /// Most presentities in one subscription.
    pub max_targets_per_subscription: usize,
    /// Most subscriptions one endpoint may hold.
    pub max_subscriptions_per_endpoint: usize,
    /// External domains whose users count as `federated`.
    pub federated_domains: Vec<String>,
    /// External domains whose users count as `publicCloud`.
    pub public_cloud_domains: Vec<String>,
    /// This node's id when the store is shared by a cluster (`None`: a single
    /// server). A shared store keeps whole documents, endpoint data included, and
    /// is read lazily rather than loaded at start.
    pub cluster_node: Option<String>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_pending_per_subscriber: 4096,
            max_targets_per_subscription: 1000,
            max_subscriptions_per_endpoint: 64,
            federated_domains: Vec::new(),
            public_cloud_domains: Vec::new(),
            cluster_node: None,
        }
    }
}

/// How a cluster node tells the others about the documents it saves, and learns of
/// theirs (the server's cluster layer implements it over NATS). Called with a
/// presentity's lock held: implementations must only queue work.
pub trait Replication: Send + Sync + 'static {
    /// This node saved `uri`'s document at `revision`.
    fn saved(&self, uri: &UserUri, revision: Revision);
    /// This node holds `uri` in memory from now on and must hear of changes others
    /// make (then call [`Engine::remote_saved`]).
    fn follow(&self, uri: &UserUri);
    /// `uri` has endpoints on this node (`true`) or no longer has any (`false`).
    fn endpoints_here(&self, uri: &UserUri, any: bool);
}

pub(crate) struct Inner {
    stores: Stores,
    /// What a saved record holds: the durable part, or everything (cluster).
    scope: RecordScope,
    /// The node holding this process's endpoints (named in their registrations).
    node: Arc<str>,
    replication: std::sync::OnceLock<Arc<dyn Replication>>,
    aggregator: Arc<dyn Aggregator>,
    config: EngineConfig,
    presentities: RwLock<HashMap<UserUri, Arc<PresentityCell>>>,
    endpoints: Mutex<HashMap<EndpointId, endpoints::EndpointEntry>>,
    /// Endpoint ids reserved from the store and not handed out yet.
    endpoint_ids: Mutex<std::ops::Range<u64>>,
    seq: AtomicU64,
    clock: Clock,
    timers: Timers,
    metrics: Arc<Metrics>,
}

impl Stamper for Inner {
    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// A cheap handle on the engine.
#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: Arc<Inner>,
}

impl Engine {
    /// Builds the engine and loads every stored presentity.
    pub fn new(
        stores: Stores,
        aggregator: Arc<dyn Aggregator>,
        config: EngineConfig,
    ) -> Result<Self, EngineError> {
        let (scope, node) = match &config.cluster_node {
            Some(node) => (RecordScope::Shared, node.clone()),
            None => (RecordScope::Durable, "local".to_string()),
        };
        // A single server holds every presentity; a cluster node loads those it
        // needs when it first needs them.
        let records = match scope {
            RecordScope::Durable => stores.documents.load_all()?,
            RecordScope::Shared => Vec::new(),
        };
        let inner = Arc::new(Inner {
            stores,
            scope,
            node: Arc::from(node),
            replication: std::sync::OnceLock::new(),
            aggregator,
            config,
            presentities: RwLock::new(HashMap::new()),
            endpoints: Mutex::new(HashMap::new()),
            endpoint_ids: Mutex::new(0..0),
            seq: AtomicU64::new(0),
            clock: Clock::start(),
            timers: Timers::default(),
            metrics: Arc::new(Metrics::default()),
        });
        let engine = Engine { inner };
        let mut map = engine.inner.presentities.write();
        for record in records {
            let cell = engine.restore(record);
            map.insert(cell.uri().clone(), cell);
        }
        drop(map);
        Ok(engine)
    }

    pub(crate) fn ctx(&self, online: bool) -> Ctx<'_> {
        Ctx {
            aggregator: &*self.inner.aggregator,
            stamper: &*self.inner,
            online,
        }
    }

    /// Publication order must continue after every instance this process has seen
    /// (restored, or written by another node), or those would count as newer than
    /// what is published next.
    pub(crate) fn observe_seq(&self, doc: &PresentityDoc) {
        if let Some(max) = doc.instances().map(|i| i.seq).max() {
            self.inner.seq.fetch_max(max, Ordering::Relaxed);
        }
    }

    /// Connects the engine to its cluster (once, before it serves anyone).
    pub fn set_replication(&self, replication: Arc<dyn Replication>) {
        if self.inner.replication.set(replication).is_err() {
            tracing::warn!("replication was already set");
        }
    }

    pub(crate) fn replication(&self) -> Option<&Arc<dyn Replication>> {
        self.inner.replication.get()
    }

    /// Deadlines waiting in the timer heap.
    pub fn pending_timers(&self) -> usize {
        self.inner.timers.len()
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    pub fn clock(&self) -> &Clock {
        &self.inner.clock
    }
}
