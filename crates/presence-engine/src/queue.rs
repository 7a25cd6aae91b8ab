//! Per-subscriber delivery queues.
//!
//! Each endpoint that watches anything owns one [`Subscriber`]. The engine pushes into
//! it while holding a presentity's lock, so pushing never blocks on the consumer: the
//! queue is bounded by the number of distinct presentities pending and *coalesces*
//! per presentity (a newer view of a category replaces the pending one). A consumer
//! that falls so far behind that the bound is hit loses its pending entries and gets a
//! [`Delivery::Resync`] instead, after which it asks for fresh snapshots. A slow
//! consumer therefore costs bounded memory and never stalls a publisher.

use crate::metrics::Metrics;
use parking_lot::Mutex;
use presence_model::acl::Relation;
use presence_model::contacts::ContactList;
use presence_model::{CategoryInstance, Container, SubscriberEntry, UserUri};
use rustc_hash::FxHashMap;
use smallvec::SmallVec;
use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};
use std::time::Instant;
use tokio::sync::Notify;

/// Most entries handed out by one call of [`Subscriber::next`].
pub const MAX_BATCH: usize = 256;
/// Capacity past which an emptied queue releases its memory.
const SHRINK_ABOVE: usize = 16;

/// The wire encodings a view can be cached in.
#[derive(Debug, Clone, Copy)]
pub enum WireFormat {
    Json = 0,
    Xml = 1,
}

/// The visible instances of one category for one view of a presentity. Built once per
/// distinct view and shared by every watcher that has that view; each wire encoding is
/// computed at most once, by the first front end that needs it.
#[derive(Debug)]
pub struct CategoryView {
    pub name: Arc<str>,
    /// True for the owner's own view: container ids, versions and expire types may be
    /// shown. False for everybody else: they must be stripped.
    pub owner: bool,
    pub instances: Vec<CategoryInstance>,
    encoded: [OnceLock<Box<str>>; 2],
}

impl CategoryView {
    pub fn new(name: Arc<str>, owner: bool, instances: Vec<CategoryInstance>) -> Self {
        CategoryView {
            name,
            owner,
            instances,
            encoded: [OnceLock::new(), OnceLock::new()],
        }
    }

    /// This view in `format`, encoding it with `encode` the first time only.
    pub fn encoded(
        &self,
        format: WireFormat,
        encode: impl FnOnce(&CategoryView) -> String,
    ) -> &str {
        self.encoded[format as usize].get_or_init(|| encode(self).into_boxed_str())
    }
}

/// The category views of one delivery; almost always one or two, kept inline.
pub type Views = SmallVec<[Arc<CategoryView>; 2]>;

/// Changes of the owner's own data, for self subscriptions.
#[derive(Debug, Clone, Default)]
pub struct SelfUpdate {
    /// Categories whose instances (in every container) this update fully replaces.
    pub categories: Views,
    /// The complete container list, when any container changed.
    pub containers: Option<Arc<Vec<Container>>>,
    /// The complete subscriber list, when it changed.
    pub subscribers: Option<Arc<Vec<SubscriberEntry>>>,
    /// The complete contact list, when it changed.
    pub contacts: Option<Arc<ContactList>>,
}

impl SelfUpdate {
    fn merge(&mut self, newer: SelfUpdate) {
        merge_views(&mut self.categories, newer.categories);
        if newer.containers.is_some() {
            self.containers = newer.containers;
        }
        if newer.subscribers.is_some() {
            self.subscribers = newer.subscribers;
        }
        if newer.contacts.is_some() {
            self.contacts = newer.contacts;
        }
    }
}

fn merge_views(into: &mut Views, newer: Views) {
    for v in newer {
        match into.iter_mut().find(|o| o.name == v.name) {
            Some(slot) => *slot = v,
            None => into.push(v),
        }
    }
}

/// One item handed to a front end.
#[derive(Debug, Clone)]
pub enum Delivery {
    /// A watched presentity's categories: each view fully replaces what the watcher
    /// knew of that category.
    Categories {
        uri: UserUri,
        views: Views,
        queued_at: Instant,
    },
    /// The owner's own data changed.
    Own {
        update: SelfUpdate,
        queued_at: Instant,
    },
    /// The queue overflowed and was emptied: the consumer must ask for snapshots.
    Resync,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    /// A watched presentity, by the address of its engine cell.
    Watched(usize),
    Own,
}

#[derive(Default)]
struct Queue {
    order: VecDeque<Key>,
    entries: FxHashMap<Key, Delivery>,
    resync: bool,
    closed: bool,
}

/// The delivery queue of one watching endpoint, plus who is watching.
pub struct Subscriber {
    pub watcher: UserUri,
    pub display_name: String,
    pub relation: Relation,
    queue: Mutex<Queue>,
    ready: Notify,
    max_pending: usize,
    metrics: Arc<Metrics>,
}

impl Subscriber {
    pub(crate) fn new(
        watcher: UserUri,
        display_name: String,
        relation: Relation,
        max_pending: usize,
        metrics: Arc<Metrics>,
    ) -> Self {
        Subscriber {
            watcher,
            display_name,
            relation,
            queue: Mutex::new(Queue::default()),
            ready: Notify::new(),
            max_pending,
            metrics,
        }
    }

    fn push(&self, key: Key, item: Delivery) {
        let mut q = self.queue.lock();
        if q.closed {
            return;
        }
        let was_empty = q.entries.is_empty() && !q.resync;
        match (q.entries.get_mut(&key), item) {
            (
                Some(Delivery::Categories { views, .. }),
                Delivery::Categories { views: newer, .. },
            ) => {
                merge_views(views, newer);
                self.metrics.coalesced.inc();
            }
            (Some(Delivery::Own { update, .. }), Delivery::Own { update: newer, .. }) => {
                update.merge(newer);
                self.metrics.coalesced.inc();
            }
            (_, item) => {
                if q.entries.len() >= self.max_pending {
                    q.entries.clear();
                    q.order.clear();
                    q.resync = true;
                    self.metrics.overflows.inc();
                } else {
                    q.entries.insert(key, item);
                    q.order.push_back(key);
                }
            }
        }
        drop(q);
        if was_empty {
            self.ready.notify_one();
        }
    }

    pub(crate) fn push_categories(
        &self,
        cell_addr: usize,
        uri: &UserUri,
        views: Views,
        queued_at: Instant,
    ) {
        self.push(
            Key::Watched(cell_addr),
            Delivery::Categories {
                uri: uri.clone(),
                views,
                queued_at,
            },
        );
    }

    pub(crate) fn push_own(&self, update: SelfUpdate) {
        self.push(
            Key::Own,
            Delivery::Own {
                update,
                queued_at: Instant::now(),
            },
        );
    }

    /// Stops deliveries; a pending or later [`Subscriber::next`] returns an empty batch.
    pub(crate) fn close(&self) {
        let mut q = self.queue.lock();
        q.closed = true;
        q.entries.clear();
        q.order.clear();
        drop(q);
        self.ready.notify_one();
    }

    /// Waits for deliveries and hands out up to [`MAX_BATCH`] of them, oldest first.
    /// An empty batch means the subscriber was closed.
    pub async fn next(&self) -> Vec<Delivery> {
        loop {
            {
                let mut q = self.queue.lock();
                if q.closed {
                    return Vec::new();
                }
                if q.resync {
                    q.resync = false;
                    return vec![Delivery::Resync];
                }
                if !q.order.is_empty() {
                    let n = q.order.len().min(MAX_BATCH);
                    let mut out = Vec::with_capacity(n);
                    for _ in 0..n {
                        let key = q.order.pop_front().expect("counted");
                        out.push(q.entries.remove(&key).expect("queued keys have entries"));
                    }
                    if !q.order.is_empty() {
                        self.ready.notify_one();
                    } else if q.entries.capacity() > SHRINK_ABOVE {
                        // A burst (a big snapshot) grew the queue; give the memory back
                        // so idle subscribers stay small.
                        q.entries.shrink_to(0);
                        q.order.shrink_to(0);
                    }
                    drop(q);
                    self.metrics.delivered.add(n as u64);
                    return out;
                }
            }
            self.ready.notified().await;
        }
    }

    /// Entries waiting to be handed out.
    pub fn pending(&self) -> usize {
        self.queue.lock().entries.len()
    }
}
