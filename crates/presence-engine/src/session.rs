//! Sessions: one signed-in endpoint with its subscriptions and delivery queue.

use crate::fanout::{self, DEFAULT_CATEGORIES};
use crate::queue::{Subscriber, Views};
use crate::{Engine, EngineError, PresentityCell};
use parking_lot::Mutex;
use presence_model::acl::Relation;
use presence_model::acl::{self, Viewer};
use presence_model::{EndpointId, SubscriberEntry, SubscriberType, UserUri};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Longest client-chosen subscription id, in bytes.
pub const MAX_SUBSCRIPTION_ID_BYTES: usize = 128;
/// Most categories in one subscription (each costs a view per watched presentity).
pub const MAX_CATEGORIES_PER_SUBSCRIPTION: usize = 64;

/// One subscription: whose queue, which categories.
pub(crate) struct Subscription {
    pub subscriber: Arc<Subscriber>,
    pub categories: Vec<Arc<str>>,
}

struct Active {
    sub: Arc<Subscription>,
    targets: Vec<Arc<PresentityCell>>,
}

/// What a subscribe request did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscribeResult {
    pub subscribed: Vec<UserUri>,
    pub unknown: Vec<UserUri>,
}

/// One presentity to watch. With `context` (MS-PRES `<context/>`: the watcher has
/// just added the presentity to a contact list), the watcher is recorded in the
/// presentity's subscriber list, unless blocked there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub uri: UserUri,
    pub context: bool,
}

/// The first state of one watched presentity, handed back to the caller instead of
/// queued (a front end that answers a subscribe request with the state in it).
pub type Snapshot = (UserUri, Views);

pub(crate) struct SessionInner {
    engine: Engine,
    endpoint: EndpointId,
    own: Arc<PresentityCell>,
    subscriber: Arc<Subscriber>,
    subs: Mutex<HashMap<String, Active>>,
    self_subscribed: AtomicBool,
    ended: AtomicBool,
}

/// A signed-in endpoint. Dropping it signs the endpoint out.
pub struct Session {
    inner: Arc<SessionInner>,
}

fn subscriber_type(r: Relation) -> SubscriberType {
    match r {
        Relation::SameEnterprise => SubscriberType::SameEnterprise,
        Relation::Federated => SubscriberType::Federated,
        Relation::PublicCloud => SubscriberType::PublicCloud,
        Relation::Other => SubscriberType::Unknown,
    }
}

impl SessionInner {
    /// Resolves this watcher's view of a presentity and builds the full snapshot of
    /// `categories` in it.
    fn snapshot(
        &self,
        state: &crate::PresentityState,
        categories: &[Arc<str>],
    ) -> (acl::View, Views) {
        let watcher = &self.subscriber.watcher;
        let relation = self.subscriber.relation;
        let view = acl::resolve_container(
            &state.doc,
            Viewer::Watcher {
                uri: watcher,
                relation,
            },
        );
        (view, fanout::snapshot(&state.doc, view, categories))
    }

    /// Queues the full snapshot of `categories` of a presentity; returns the view.
    fn push_snapshot(&self, state: &crate::PresentityState, categories: &[Arc<str>]) -> acl::View {
        let (view, snapshot) = self.snapshot(state, categories);
        self.subscriber.push_categories(
            fanout::cell_addr(state),
            state.doc.uri(),
            snapshot,
            Instant::now(),
        );
        view
    }

    fn remove_edges(&self, active: &Active) {
        for cell in &active.targets {
            let mut state = cell.state.lock();
            state.watchers.retain(|e| !Arc::ptr_eq(&e.sub, &active.sub));
        }
        self.engine
            .inner
            .metrics
            .watch_edges
            .sub(active.targets.len() as u64);
    }

    /// Drops every subscription and closes the queue. Idempotent.
    pub(crate) fn teardown(&self) {
        if self.ended.load(Ordering::SeqCst) {
            return;
        }
        let subs: Vec<Active> = {
            let mut guard = self.subs.lock();
            self.ended.store(true, Ordering::SeqCst);
            guard.drain().map(|(_, a)| a).collect()
        };
        for a in &subs {
            self.remove_edges(a);
        }
        if self.self_subscribed.load(Ordering::SeqCst) {
            let mut state = self.own.state.lock();
            state
                .self_subs
                .retain(|s| !Arc::ptr_eq(s, &self.subscriber));
        }
        self.subscriber.close();
    }
}

impl Session {
    pub(crate) fn new(
        engine: Engine,
        endpoint: EndpointId,
        own: Arc<PresentityCell>,
        subscriber: Arc<Subscriber>,
    ) -> Self {
        Session {
            inner: Arc::new(SessionInner {
                engine,
                endpoint,
                own,
                subscriber,
                subs: Mutex::new(HashMap::new()),
                self_subscribed: AtomicBool::new(false),
                ended: AtomicBool::new(false),
            }),
        }
    }

    pub(crate) fn weak(&self) -> std::sync::Weak<SessionInner> {
        Arc::downgrade(&self.inner)
    }

    pub fn endpoint(&self) -> EndpointId {
        self.inner.endpoint
    }

    pub fn user(&self) -> &UserUri {
        &self.inner.subscriber.watcher
    }

    /// The queue this session's deliveries arrive in.
    pub fn subscriber(&self) -> &Arc<Subscriber> {
        &self.inner.subscriber
    }

    /// Subscribes to `categories` (the default list when empty) of `uris` under the
    /// client's `id`, replacing an earlier subscription with the same id. Each known
    /// presentity gets a full snapshot right away, in the queue; unknown users are
    /// reported. With `context`, the caller is recorded in each target's subscriber
    /// list (see [`Target`]).
    pub fn subscribe(
        &self,
        id: &str,
        uris: &[UserUri],
        categories: &[String],
        context: bool,
    ) -> Result<SubscribeResult, EngineError> {
        let targets: Vec<Target> = uris
            .iter()
            .map(|uri| Target {
                uri: uri.clone(),
                context,
            })
            .collect();
        self.subscribe_targets(id, &targets, categories, None)
    }

    /// Like [`Session::subscribe`], with a context flag per target, and the first
    /// snapshots returned rather than queued: the caller sends them in its answer, and
    /// every later change is queued after them.
    pub fn subscribe_returning(
        &self,
        id: &str,
        targets: &[Target],
        categories: &[String],
    ) -> Result<(SubscribeResult, Vec<Snapshot>), EngineError> {
        let mut snapshots = Vec::with_capacity(targets.len());
        let result = self.subscribe_targets(id, targets, categories, Some(&mut snapshots))?;
        Ok((result, snapshots))
    }

    fn subscribe_targets(
        &self,
        id: &str,
        targets: &[Target],
        categories: &[String],
        mut returned: Option<&mut Vec<Snapshot>>,
    ) -> Result<SubscribeResult, EngineError> {
        let inner = &self.inner;
        let engine = &inner.engine;
        let config = engine.config();
        if !self.is_live() {
            return Err(EngineError::Ended);
        }
        if id.is_empty() || id.len() > MAX_SUBSCRIPTION_ID_BYTES {
            return Err(EngineError::Invalid(format!(
                "subscription ids are 1 to {MAX_SUBSCRIPTION_ID_BYTES} bytes"
            )));
        }
        if targets.len() > config.max_targets_per_subscription {
            return Err(EngineError::TooLarge(format!(
                "{} presentities in one subscription; the limit is {}",
                targets.len(),
                config.max_targets_per_subscription
            )));
        }
        {
            let subs = inner.subs.lock();
            if !subs.contains_key(id) && subs.len() >= config.max_subscriptions_per_endpoint {
                return Err(EngineError::TooLarge(format!(
                    "an endpoint holds at most {} subscriptions",
                    config.max_subscriptions_per_endpoint
                )));
            }
        }
        if categories.len() > MAX_CATEGORIES_PER_SUBSCRIPTION {
            return Err(EngineError::TooLarge(format!(
                "{} categories in one subscription; the limit is {MAX_CATEGORIES_PER_SUBSCRIPTION}",
                categories.len()
            )));
        }
        if let Some(bad) = categories
            .iter()
            .find(|c| !presence_model::document::valid_category(c))
        {
            return Err(EngineError::Invalid(format!(
                "invalid category name {bad:?}"
            )));
        }
        let mut names: Vec<Arc<str>> = if categories.is_empty() {
            DEFAULT_CATEGORIES.iter().map(|c| Arc::from(*c)).collect()
        } else {
            categories.iter().map(|c| Arc::from(c.as_str())).collect()
        };
        names.sort();
        names.dedup();
        let mut targets = targets.to_vec();
        // One entry per presentity; asking for context anywhere asks for it.
        targets.sort_by(|a, b| a.uri.cmp(&b.uri).then(b.context.cmp(&a.context)));
        targets.dedup_by(|a, b| a.uri == b.uri);
        {
            let subs = inner.subs.lock();
            // Every watched presentity (and the self view) can be pending in the queue
            // at once; more than the queue holds would overflow on every resync.
            let watched: usize = subs
                .iter()
                .filter(|(k, _)| k.as_str() != id)
                .map(|(_, a)| a.targets.len())
                .sum();
            if watched + targets.len() + 1 > config.max_pending_per_subscriber {
                return Err(EngineError::TooLarge(format!(
                    "an endpoint watches at most {} presentities in all",
                    config.max_pending_per_subscriber - 1
                )));
            }
        }
        self.unsubscribe(id);

        let sub = Arc::new(crate::session::Subscription {
            subscriber: inner.subscriber.clone(),
            categories: names,
        });
        let watcher = inner.subscriber.watcher.clone();
        let relation = inner.subscriber.relation;
        let mut result = SubscribeResult::default();
        let mut cells = Vec::with_capacity(targets.len());
        for Target { uri, context } in targets {
            let cell = match engine.presentity(&uri) {
                Ok(cell) => cell,
                Err(EngineError::UnknownUser(u)) => {
                    result.unknown.push(u);
                    continue;
                }
                Err(e) => {
                    // Undo the edges added so far; nothing of this request stays.
                    let partial = Active {
                        sub,
                        targets: cells,
                    };
                    engine
                        .inner
                        .metrics
                        .watch_edges
                        .add(partial.targets.len() as u64);
                    inner.remove_edges(&partial);
                    return Err(e);
                }
            };
            let mut state = cell.state.lock();
            let view = match returned.as_deref_mut() {
                Some(out) => {
                    let (view, snapshot) = inner.snapshot(&state, &sub.categories);
                    out.push((uri.clone(), snapshot));
                    view
                }
                None => inner.push_snapshot(&state, &sub.categories),
            };
            state.watchers.push(crate::Edge {
                sub: sub.clone(),
                view,
            });
            if context && uri != watcher && !fanout::is_blocked(view) {
                let entry = SubscriberEntry {
                    user: watcher.clone(),
                    display_name: inner.subscriber.display_name.clone(),
                    kind: subscriber_type(relation),
                    acknowledged: false,
                    since: engine.inner.clock.now(),
                };
                let stored = engine.write_locked(
                    &mut state,
                    crate::presentity::OnFailure::Undo,
                    |s, _| Ok(((), s.doc.add_subscriber(entry.clone()))),
                    1,
                );
                if let Err(e) = stored {
                    tracing::error!(target_user = %uri, error = %e, "cannot store subscriber entry");
                }
            }
            drop(state);
            cells.push(cell);
            result.subscribed.push(uri);
        }
        engine.inner.metrics.watch_edges.add(cells.len() as u64);
        let active = Active {
            sub,
            targets: cells,
        };
        let mut subs = inner.subs.lock();
        // Teardown drains `subs` after setting `ended`; checking under the same lock
        // means a sign-out racing this request cannot leave edges behind.
        if inner.ended.load(Ordering::SeqCst) {
            drop(subs);
            inner.remove_edges(&active);
            return Err(EngineError::Ended);
        }
        subs.insert(id.to_string(), active);
        Ok(result)
    }

    /// Ends the subscription `id`; `false` if there was none.
    pub fn unsubscribe(&self, id: &str) -> bool {
        let removed = self.inner.subs.lock().remove(id);
        match removed {
            Some(active) => {
                self.inner.remove_edges(&active);
                true
            }
            None => false,
        }
    }

    /// Subscribes this endpoint to all of its owner's data; the full state is
    /// delivered at once, changes after.
    pub fn subscribe_self(&self) -> Result<(), EngineError> {
        let inner = &self.inner;
        let mut state = inner.own.state.lock();
        // Teardown takes this lock after setting `ended`, so the check cannot race it.
        if !self.is_live() {
            return Err(EngineError::Ended);
        }
        if !inner.self_subscribed.swap(true, Ordering::SeqCst) {
            state.self_subs.push(inner.subscriber.clone());
        }
        inner.subscriber.push_own(fanout::own_full(&state.doc));
        Ok(())
    }

    /// Delivers fresh snapshots of everything this session watches (after the
    /// consumer received [`crate::Delivery::Resync`]).
    pub fn resync(&self) {
        let inner = &self.inner;
        let subs: Vec<(Arc<Subscription>, Vec<Arc<PresentityCell>>)> = inner
            .subs
            .lock()
            .values()
            .map(|a| (a.sub.clone(), a.targets.clone()))
            .collect();
        for (sub, targets) in subs {
            for cell in targets {
                let state = cell.state.lock();
                inner.push_snapshot(&state, &sub.categories);
            }
        }
        if inner.self_subscribed.load(Ordering::SeqCst) {
            let state = inner.own.state.lock();
            inner.subscriber.push_own(fanout::own_full(&state.doc));
        }
    }

    /// Extends the endpoint's registration; `false` if it already ended.
    pub fn refresh(&self, ttl: Duration) -> bool {
        self.inner.engine.refresh_endpoint(self.inner.endpoint, ttl)
    }

    pub fn is_live(&self) -> bool {
        !self.inner.ended.load(Ordering::SeqCst)
    }

    /// Signs the endpoint out: subscriptions end, its endpoint-bound data dies.
    pub fn sign_out(&self) {
        self.inner.teardown();
        self.inner.engine.end_endpoint(self.inner.endpoint);
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.sign_out();
    }
}
