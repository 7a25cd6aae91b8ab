//! The presence engine: presentities in memory, endpoints and their lifetimes,
//! subscriptions and fan-out, expiry timers, and the store write before every
//! acknowledgement.
//!
//! Concurrency: each presentity is one [`PresentityCell`] behind its own lock, which
//! is its single writer. Only the directory batch holds several presentity locks at
//! once, and it takes them in URI order; everything else holds at most one. Operations
//! are synchronous (they may wait for the store's fsync); async front ends call them
//! through `spawn_blocking`. Deliveries go into per-subscriber queues
//! ([`queue::Subscriber`]) which never block the writer.

mod clock;
mod fanout;
pub mod metrics;
pub mod queue;
mod session;
mod timers;

pub use clock::Clock;
pub use queue::{CategoryView, Delivery, SelfUpdate, Subscriber, Views, WireFormat};
pub use session::{Session, Snapshot, SubscribeResult, Target};

use metrics::Metrics;
use parking_lot::{Mutex, RwLock};
use presence_model::acl::{self, Relation, View, Viewer};
use presence_model::contacts::{ContactError, ContactList};
use presence_model::document::{ChangeSet, Ctx, NotASubscriber, Stamper};
use presence_model::membership::{ContainerUpdate, MembershipError};
use presence_model::{
    Aggregator, CategoryInstance, Container, EndpointId, PresentityDoc, Publication, PublishError,
    PublishedItem, SubscriberEntry, Timestamp, UserUri,
};
use presence_store::{Store, StoreError};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use timers::{TimerKey, Timers};

/// Engine settings (the server's configuration fills them).
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
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_pending_per_subscriber: 4096,
            max_targets_per_subscription: 1000,
            max_subscriptions_per_endpoint: 64,
            federated_domains: Vec::new(),
            public_cloud_domains: Vec::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("unknown user {0}")]
    UnknownUser(UserUri),
    #[error("endpoint {0} is not a live endpoint of this user")]
    NotYourEndpoint(u64),
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error(transparent)]
    Membership(#[from] MembershipError),
    #[error(transparent)]
    NotASubscriber(#[from] NotASubscriber),
    #[error(transparent)]
    Contacts(#[from] ContactError),
    #[error("{0}")]
    TooLarge(String),
    #[error("the endpoint has signed out")]
    Ended,
    #[error("{0} is disabled in the directory")]
    Disabled(UserUri),
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("store failure: {0}")]
    Store(#[from] StoreError),
    /// A bug: a broken invariant, or a task that panicked or was cancelled while it
    /// ran engine work. Whether the work was applied is unknown.
    #[error("internal error: {0}")]
    Internal(String),
}

/// What went wrong, independent of the front end: the one classification of
/// [`EngineError`] that the HTTP API and the SIP server each map to their own status
/// codes with a single table (docs/api.md, "Errors"; docs/sip.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Something named does not exist: an unknown user, someone who is not a
    /// subscriber, no such contact, no such contact group.
    NotFound,
    /// The caller may not do this: a read-only (server-written) key, a user disabled
    /// in the directory, the membership of a fixed container, an endpoint that is not
    /// a live endpoint of the caller, renaming or deleting the default contact group.
    Forbidden,
    /// The request was made against an out-of-date version: publication or container
    /// version conflicts, a stale contact-list `deltaNum`. Nothing was applied.
    Conflict,
    /// What the request creates exists already (a contact group of that name).
    Duplicate,
    /// Over a limit: publication batch, value or per-user sizes, membership lists,
    /// the contact list, subscription sizes and counts.
    TooLarge,
    /// Malformed or invalid input (including a key repeated within one batch and
    /// values that are not acceptable XML).
    Invalid,
    /// The store failed; nothing was acknowledged or applied.
    Unavailable,
    /// The session or endpoint has ended.
    Ended,
    /// A bug in the server.
    Internal,
}

impl ErrorKind {
    /// Every kind, in declaration order.
    pub const ALL: [ErrorKind; 9] = [
        ErrorKind::NotFound,
        ErrorKind::Forbidden,
        ErrorKind::Conflict,
        ErrorKind::Duplicate,
        ErrorKind::TooLarge,
        ErrorKind::Invalid,
        ErrorKind::Unavailable,
        ErrorKind::Ended,
        ErrorKind::Internal,
    ];

    /// The stable snake_case code of this kind.
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not_found",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::Conflict => "version_conflict",
            ErrorKind::Duplicate => "already_exists",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::Invalid => "bad_request",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Ended => "ended",
            ErrorKind::Internal => "internal",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

impl EngineError {
    /// The kind of this error, looking inside the model's errors it wraps. The
    /// matches are exhaustive on purpose: a new variant anywhere must be classified.
    pub fn kind(&self) -> ErrorKind {
        match self {
            EngineError::UnknownUser(_) | EngineError::NotASubscriber(_) => ErrorKind::NotFound,
            EngineError::NotYourEndpoint(_) | EngineError::Disabled(_) => ErrorKind::Forbidden,
            EngineError::Publish(e) => match e {
                PublishError::Empty
                | PublishError::Invalid { .. }
                | PublishError::Duplicate { .. }
                | PublishError::InvalidXml { .. }
                | PublishError::EndpointRequired { .. } => ErrorKind::Invalid,
                PublishError::ReadOnly { .. } => ErrorKind::Forbidden,
                PublishError::TooLarge(_) => ErrorKind::TooLarge,
                PublishError::Conflict(_) => ErrorKind::Conflict,
            },
            EngineError::Membership(e) => match e {
                MembershipError::Fixed(_) => ErrorKind::Forbidden,
                MembershipError::Invalid { .. } => ErrorKind::Invalid,
                MembershipError::TooLarge(_) => ErrorKind::TooLarge,
                MembershipError::Conflict(_) => ErrorKind::Conflict,
            },
            EngineError::Contacts(e) => match e {
                ContactError::Stale { .. } => ErrorKind::Conflict,
                ContactError::NoGroup(_) | ContactError::NoContact(_) => ErrorKind::NotFound,
                ContactError::DefaultGroup => ErrorKind::Forbidden,
                ContactError::DuplicateGroup(_) => ErrorKind::Duplicate,
                ContactError::Invalid(_) => ErrorKind::Invalid,
                ContactError::TooLarge(_) => ErrorKind::TooLarge,
            },
            EngineError::TooLarge(_) => ErrorKind::TooLarge,
            EngineError::Ended => ErrorKind::Ended,
            EngineError::Invalid(_) => ErrorKind::Invalid,
            EngineError::Store(_) => ErrorKind::Unavailable,
            EngineError::Internal(_) => ErrorKind::Internal,
        }
    }
}

/// A watcher's edge to a presentity: which subscription, and the view it resolved to.
pub(crate) struct Edge {
    pub sub: Arc<session::Subscription>,
    pub view: View,
}

pub(crate) struct PresentityState {
    pub doc: PresentityDoc,
    pub endpoints: Vec<EndpointId>,
    pub watchers: Vec<Edge>,
    pub self_subs: Vec<Arc<Subscriber>>,
}

pub struct PresentityCell {
    pub(crate) state: Mutex<PresentityState>,
}

struct EndpointEntry {
    user: UserUri,
    session: std::sync::Weak<session::SessionInner>,
    /// When the registration ends unless refreshed (`None`: lives until signed out).
    /// One timer entry per endpoint: a firing that finds a later deadline re-arms.
    deadline: Option<Timestamp>,
}

pub(crate) struct Inner {
    store: Arc<dyn Store>,
    aggregator: Arc<dyn Aggregator>,
    config: EngineConfig,
    presentities: RwLock<HashMap<UserUri, Arc<PresentityCell>>>,
    endpoints: Mutex<HashMap<EndpointId, EndpointEntry>>,
    next_endpoint: AtomicU64,
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

/// What the directory says about one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryUpdate {
    pub uri: UserUri,
    pub display_name: String,
    pub email: String,
    /// The details card XML (title, department...), if the directory has any.
    pub details: Option<String>,
    /// The `userProperties` XML (lines, address), if any.
    pub properties: Option<String>,
    pub enabled: bool,
}

/// What a directory search shows of one user to one viewer
/// ([`Engine::directory_view`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirectoryView {
    /// The availability the viewer may see (`None`: none, as for an offline user).
    pub availability: Option<u32>,
    /// Whether the viewer may see the directory details.
    pub details: bool,
}

/// Everything the owner has, for `GET /v1/me` and the first self notification.
#[derive(Debug, Clone)]
pub struct OwnSnapshot {
    pub instances: Vec<CategoryInstance>,
    pub containers: Vec<Container>,
    pub subscribers: Vec<SubscriberEntry>,
    pub contacts: ContactList,
}

impl Engine {
    /// Builds the engine and loads every stored presentity.
    pub fn new(
        store: Arc<dyn Store>,
        aggregator: Arc<dyn Aggregator>,
        config: EngineConfig,
    ) -> Result<Self, EngineError> {
        let inner = Arc::new(Inner {
            store,
            aggregator,
            config,
            presentities: RwLock::new(HashMap::new()),
            endpoints: Mutex::new(HashMap::new()),
            // Endpoint ids must not repeat across restarts (a client that reconnects
            // must not mistake a new endpoint for its old one), and must stay exact in
            // JavaScript numbers (below 2^53): start-up milliseconds x 1024 does both.
            next_endpoint: AtomicU64::new(
                chrono::Utc::now().timestamp_millis().max(1) as u64 * 1024,
            ),
            seq: AtomicU64::new(0),
            clock: Clock::start(),
            timers: Timers::default(),
            metrics: Arc::new(Metrics::default()),
        });
        let engine = Engine { inner };
        let records = engine.inner.store.load_presentities()?;
        // Publication order must continue after the restored instances, or restored
        // states would count as newer than everything published after a restart.
        let last_seq = records
            .iter()
            .flat_map(|r| r.instances.iter().map(|i| i.seq))
            .max()
            .unwrap_or(0);
        engine.inner.seq.store(last_seq, Ordering::Relaxed);
        let mut map = engine.inner.presentities.write();
        for record in records {
            let doc = PresentityDoc::restore(record, &engine.ctx(false));
            engine.schedule_expiry(&doc);
            map.insert(doc.uri().clone(), Self::cell(doc));
        }
        drop(map);
        Ok(engine)
    }

    fn cell(doc: PresentityDoc) -> Arc<PresentityCell> {
        Arc::new(PresentityCell {
            state: Mutex::new(PresentityState {
                doc,
                endpoints: Vec::new(),
                watchers: Vec::new(),
                self_subs: Vec::new(),
            }),
        })
    }

    pub(crate) fn ctx(&self, online: bool) -> Ctx<'_> {
        Ctx {
            aggregator: &*self.inner.aggregator,
            stamper: &*self.inner,
            online,
        }
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

    /// Creates the presentities of new users (default containers, blocked view) and
    /// stores them in one transaction. Users that already exist are left alone.
    pub fn provision(&self, users: &[UserUri]) -> Result<(), EngineError> {
        let fresh: Vec<PresentityDoc> = {
            let map = self.inner.presentities.read();
            users
                .iter()
                .filter(|u| !map.contains_key(*u))
                .map(|u| PresentityDoc::provision(u.clone(), &self.ctx(false)))
                .collect()
        };
        self.insert_fresh(fresh)
    }

    /// Stores and adds new documents, skipping users that appeared meanwhile. Decided
    /// and written under the map's write lock, so a racing first use cannot write an
    /// empty document over one that already took acknowledged data.
    fn insert_fresh(&self, fresh: Vec<PresentityDoc>) -> Result<(), EngineError> {
        let mut map = self.inner.presentities.write();
        let fresh: Vec<PresentityDoc> = fresh
            .into_iter()
            .filter(|d| !map.contains_key(d.uri()))
            .collect();
        let records: Vec<_> = fresh.iter().map(PresentityDoc::to_record).collect();
        self.inner.store.save_presentities(&records)?;
        for doc in fresh {
            map.entry(doc.uri().clone())
                .or_insert_with(|| Self::cell(doc));
        }
        Ok(())
    }

    /// The presentity of `user`. A user created by another process (the `user add`
    /// command while the server runs) is loaded from the store on first use.
    pub(crate) fn presentity(&self, user: &UserUri) -> Result<Arc<PresentityCell>, EngineError> {
        if let Some(cell) = self.inner.presentities.read().get(user) {
            return Ok(cell.clone());
        }
        let record = match self.inner.store.load_presentity(user)? {
            Some(r) => r,
            None => match self.inner.store.account(user)? {
                Some(account) => {
                    // A user's first use: default memberships plus the identity card
                    // from the account.
                    let ctx = self.ctx(false);
                    let mut doc = PresentityDoc::provision(user.clone(), &ctx);
                    doc.set_identity(&account.display_name, user.as_str(), &ctx);
                    self.insert_fresh(vec![doc])?;
                    return self
                        .inner
                        .presentities
                        .read()
                        .get(user)
                        .cloned()
                        .ok_or_else(|| EngineError::UnknownUser(user.clone()));
                }
                None => return Err(EngineError::UnknownUser(user.clone())),
            },
        };
        if let Some(max) = record.instances.iter().map(|i| i.seq).max() {
            self.inner.seq.fetch_max(max, Ordering::Relaxed);
        }
        let doc = PresentityDoc::restore(record, &self.ctx(false));
        self.schedule_expiry(&doc);
        let mut map = self.inner.presentities.write();
        Ok(map
            .entry(user.clone())
            .or_insert_with(|| Self::cell(doc))
            .clone())
    }

    pub fn exists(&self, user: &UserUri) -> Result<bool, EngineError> {
        match self.presentity(user) {
            Ok(_) => Ok(true),
            Err(EngineError::UnknownUser(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// How a watcher relates to this deployment.
    pub fn relation_of(&self, watcher: &UserUri) -> Relation {
        let domain = watcher.domain();
        if self.exists(watcher).unwrap_or(false) {
            Relation::SameEnterprise
        } else if self
            .inner
            .config
            .federated_domains
            .iter()
            .any(|d| d.eq_ignore_ascii_case(domain))
        {
            Relation::Federated
        } else if self
            .inner
            .config
            .public_cloud_domains
            .iter()
            .any(|d| d.eq_ignore_ascii_case(domain))
        {
            Relation::PublicCloud
        } else {
            Relation::Other
        }
    }

    /// Writes the document if the change is durable, then notifies. If the store
    /// fails, the caller restores its backup and nothing is acknowledged or notified.
    fn commit(&self, state: &mut PresentityState, changes: &ChangeSet) -> Result<(), EngineError> {
        if changes.durable {
            self.inner
                .store
                .save_presentities(&[state.doc.to_record()])?;
        }
        self.schedule_expiry(&state.doc);
        fanout::fan_out(state, changes);
        Ok(())
    }

    /// Applies a publication batch for `user`, published from `endpoint` (which
    /// must be one of the user's live endpoints) or from no endpoint.
    pub fn publish(
        &self,
        user: &UserUri,
        endpoint: Option<EndpointId>,
        items: &[Publication],
    ) -> Result<Vec<PublishedItem>, EngineError> {
        let cell = self.presentity(user)?;
        let mut state = cell.state.lock();
        if let Some(ep) = endpoint
            && !state.endpoints.contains(&ep)
        {
            return Err(EngineError::NotYourEndpoint(ep.0));
        }
        // Only batches that may touch durable data pay for a backup copy.
        let backup = items
            .iter()
            .any(|p| p.expire_type != presence_model::ExpireType::Endpoint || p.is_delete())
            .then(|| state.doc.clone());
        let online = !state.endpoints.is_empty();
        let result = state.doc.publish(items, endpoint, &self.ctx(online));
        let (published, changes) = match result {
            Ok(ok) => ok,
            Err(e) => {
                self.inner.metrics.publications_refused.inc();
                return Err(e.into());
            }
        };
        if let Err(e) = self.commit(&mut state, &changes) {
            if let Some(doc) = backup {
                state.doc = doc;
            }
            return Err(e);
        }
        self.inner.metrics.publications.inc();
        Ok(published)
    }

    /// Applies membership changes; returns the changed containers.
    pub fn update_containers(
        &self,
        user: &UserUri,
        updates: &[ContainerUpdate],
    ) -> Result<Vec<Container>, EngineError> {
        let cell = self.presentity(user)?;
        let mut state = cell.state.lock();
        let backup = state.doc.clone();
        let changes = state.doc.update_containers(updates)?;
        if let Err(e) = self.commit(&mut state, &changes) {
            state.doc = backup;
            return Err(e);
        }
        Ok(changes
            .containers
            .iter()
            .filter_map(|id| state.doc.container(*id).cloned())
            .collect())
    }

    pub fn acknowledge_subscriber(
        &self,
        user: &UserUri,
        watcher: &UserUri,
    ) -> Result<(), EngineError> {
        let cell = self.presentity(user)?;
        let mut state = cell.state.lock();
        let backup = state.doc.clone();
        let changes = state.doc.acknowledge_subscriber(watcher)?;
        if let Err(e) = self.commit(&mut state, &changes) {
            state.doc = backup;
            return Err(e);
        }
        Ok(())
    }

    /// Loads or creates the presentities of `users` (with identity cards from
    /// `names`), writing every new document in one transaction.
    fn ensure_loaded(&self, users: &[(&UserUri, &str)]) -> Result<(), EngineError> {
        let mut fresh = Vec::new();
        for (uri, name) in users {
            if self.inner.presentities.read().contains_key(*uri) {
                continue;
            }
            match self.inner.store.load_presentity(uri)? {
                Some(_) => {
                    self.presentity(uri)?;
                }
                None => {
                    let ctx = self.ctx(false);
                    let mut doc = PresentityDoc::provision((*uri).clone(), &ctx);
                    doc.set_identity(name, uri.as_str(), &ctx);
                    fresh.push(doc);
                }
            }
        }
        self.insert_fresh(fresh)
    }

    /// Applies what the directory says about a batch of users, all or nothing: the
    /// cards are written (unchanged ones notify nobody), and users being disabled lose
    /// their endpoints first (their connections close). Every document is written in
    /// one store transaction. Returns, per update, whether anything changed.
    pub fn apply_directory(&self, updates: &[DirectoryUpdate]) -> Result<Vec<bool>, EngineError> {
        let names: Vec<(&UserUri, &str)> = updates
            .iter()
            .map(|u| (&u.uri, u.display_name.as_str()))
            .collect();
        self.ensure_loaded(&names)?;
        for u in updates.iter().filter(|u| !u.enabled) {
            for ep in self.endpoints_of(&u.uri) {
                self.end_endpoint(ep);
            }
        }
        let mut cells = Vec::with_capacity(updates.len());
        for (i, u) in updates.iter().enumerate() {
            cells.push((i, self.presentity(&u.uri)?));
        }
        // Several presentity locks at once: taken in URI order, and no other code path
        // holds two, so this cannot deadlock.
        cells.sort_by(|a, b| updates[a.0].uri.cmp(&updates[b.0].uri));
        cells.dedup_by(|a, b| updates[a.0].uri == updates[b.0].uri);
        let mut guards: Vec<_> = cells.iter().map(|(i, c)| (*i, c.state.lock())).collect();
        let mut changed = vec![false; updates.len()];
        let mut backups = Vec::with_capacity(guards.len());
        let mut all_changes = Vec::with_capacity(guards.len());
        let mut records = Vec::new();
        for (i, state) in guards.iter_mut() {
            let u = &updates[*i];
            backups.push(state.doc.clone());
            let ctx = self.ctx(!state.endpoints.is_empty());
            let mut changes = state.doc.set_directory_data(
                &u.display_name,
                &u.email,
                u.details.as_deref(),
                u.properties.as_deref(),
                &ctx,
            );
            changes.merge(state.doc.set_disabled(!u.enabled, &ctx));
            if changes.durable {
                records.push(state.doc.to_record());
            }
            changed[*i] = !changes.is_empty();
            all_changes.push(changes);
        }
        if let Err(e) = self.inner.store.save_presentities(&records) {
            for ((_, state), backup) in guards.iter_mut().zip(backups) {
                state.doc = backup;
            }
            return Err(e.into());
        }
        for ((_, state), changes) in guards.iter_mut().zip(&all_changes) {
            fanout::fan_out(state, changes);
        }
        Ok(changed)
    }

    /// Everything the owner has.
    pub fn own_snapshot(&self, user: &UserUri) -> Result<OwnSnapshot, EngineError> {
        let cell = self.presentity(user)?;
        let state = cell.state.lock();
        Ok(OwnSnapshot {
            instances: state.doc.instances().cloned().collect(),
            containers: state.doc.containers().cloned().collect(),
            subscribers: state.doc.subscribers().to_vec(),
            contacts: state.doc.contacts().clone(),
        })
    }

    /// Changes the owner's contact list with `change` (all or nothing); returns its
    /// result and the new list. Contacts must be known users.
    pub fn change_contacts<T>(
        &self,
        user: &UserUri,
        contact: Option<&UserUri>,
        change: impl FnOnce(&mut ContactList) -> Result<T, ContactError>,
    ) -> Result<(T, ContactList), EngineError> {
        if let Some(c) = contact
            && !self.exists(c)?
        {
            return Err(EngineError::UnknownUser(c.clone()));
        }
        let cell = self.presentity(user)?;
        let mut state = cell.state.lock();
        let backup = state.doc.clone();
        let (out, changes) = state.doc.change_contacts(change)?;
        if let Err(e) = self.commit(&mut state, &changes) {
            state.doc = backup;
            return Err(e);
        }
        Ok((out, state.doc.contacts().clone()))
    }

    /// What a directory search may show `viewer` of `target`, decided by the same
    /// access rules as every other view: the availability `target`'s container for
    /// the viewer holds, and whether it holds the directory details card (title,
    /// department, office, phone, company, address).
    pub fn directory_view(
        &self,
        viewer: &UserUri,
        target: &UserUri,
    ) -> Result<DirectoryView, EngineError> {
        let visible = self.view(viewer, target, &["state".into(), "contactCard".into()])?;
        let details = visible.iter().any(|i| {
            &*i.key.category == "contactCard"
                && i.key.instance == presence_model::document::DETAILS_CARD_INSTANCE
        });
        let availability = visible
            .iter()
            .filter(|i| &*i.key.category == "state")
            .filter_map(|i| presence_model::summary::summarize("state", &i.value))
            .find_map(|s| s.availability);
        Ok(DirectoryView {
            availability,
            details,
        })
    }

    /// What `viewer` may see of `target`: the visible instances of the requested
    /// categories (all visible categories when `categories` is empty). A user looking
    /// at themselves sees everything, as the owner.
    pub fn view(
        &self,
        viewer: &UserUri,
        target: &UserUri,
        categories: &[String],
    ) -> Result<Vec<CategoryInstance>, EngineError> {
        let relation = self.relation_of(viewer);
        let cell = self.presentity(target)?;
        let state = cell.state.lock();
        let view = acl::resolve_container(
            &state.doc,
            Viewer::Watcher {
                uri: viewer,
                relation,
            },
        );
        let mut names: Vec<String> = if categories.is_empty() {
            state
                .doc
                .instances()
                .map(|i| i.key.category.to_string())
                .collect()
        } else {
            categories.to_vec()
        };
        names.sort();
        names.dedup();
        Ok(names
            .iter()
            .flat_map(|n| acl::visible_instances(&state.doc, view, n))
            .cloned()
            .collect())
    }

    fn schedule_expiry(&self, doc: &PresentityDoc) {
        if let Some(at) = doc.next_expiry() {
            self.inner
                .timers
                .schedule(at, TimerKey::Instances(doc.uri().clone()));
        }
    }

    /// Removes the `time` instances of `user` that are due.
    fn expire_instances(&self, user: &UserUri) {
        let Ok(cell) = self.presentity(user) else {
            return;
        };
        let mut state = cell.state.lock();
        let online = !state.endpoints.is_empty();
        let backup = state.doc.clone();
        let now = self.inner.clock.now();
        let changes = state.doc.expire(now, &self.ctx(online));
        if changes.is_empty() {
            // Nothing was due (the instance was republished or deleted since); the
            // timer of whatever is still pending must be set again.
            self.schedule_expiry(&state.doc);
            return;
        }
        self.inner
            .metrics
            .expired
            .add(changes.categories.len() as u64);
        if let Err(e) = self.commit(&mut state, &changes) {
            tracing::error!(user = %user, error = %e, "cannot store expiry; retrying later");
            state.doc = backup;
            self.inner.timers.schedule(
                now.plus_secs(timers::RETRY_SECS),
                TimerKey::Instances(user.clone()),
            );
        }
    }

    /// Registers a new endpoint of `user`. With a `ttl`, the endpoint expires unless
    /// refreshed (SIP registrations); without, it lives until signed out (WebSocket).
    pub fn sign_in(
        &self,
        user: &UserUri,
        display_name: &str,
        ttl: Option<Duration>,
    ) -> Result<Session, EngineError> {
        let cell = self.presentity(user)?;
        if cell.state.lock().doc.is_disabled() {
            return Err(EngineError::Disabled(user.clone()));
        }
        let id = EndpointId(self.inner.next_endpoint.fetch_add(1, Ordering::Relaxed));
        let relation = self.relation_of(user);
        let subscriber = Arc::new(Subscriber::new(
            user.clone(),
            display_name.to_string(),
            relation,
            self.inner.config.max_pending_per_subscriber,
            self.inner.metrics.clone(),
        ));
        let session = Session::new(self.clone(), id, cell.clone(), subscriber);
        self.inner.endpoints.lock().insert(
            id,
            EndpointEntry {
                user: user.clone(),
                session: session.weak(),
                deadline: None,
            },
        );
        {
            let mut state = cell.state.lock();
            state.endpoints.push(id);
            if state.endpoints.len() == 1 {
                let mut changes = ChangeSet::default();
                state.doc.reaggregate(&self.ctx(true), &mut changes);
                fanout::fan_out(&mut state, &changes);
            }
        }
        self.inner.metrics.endpoints.inc();
        if let Some(ttl) = ttl {
            self.refresh_endpoint(id, ttl);
        }
        Ok(session)
    }

    /// Sets a live endpoint's deadline `ttl` from now; `false` if it is gone.
    pub(crate) fn refresh_endpoint(&self, id: EndpointId, ttl: Duration) -> bool {
        let at = self.inner.clock.now().plus_secs(ttl.as_secs().max(1));
        {
            let mut eps = self.inner.endpoints.lock();
            let Some(entry) = eps.get_mut(&id) else {
                return false;
            };
            entry.deadline = Some(at);
        }
        self.inner.timers.schedule(at, TimerKey::Endpoint(id));
        true
    }

    pub fn is_live(&self, id: EndpointId) -> bool {
        self.inner.endpoints.lock().contains_key(&id)
    }

    /// The live endpoints of a user.
    pub fn endpoints_of(&self, user: &UserUri) -> Vec<EndpointId> {
        match self.presentity(user) {
            Ok(cell) => cell.state.lock().endpoints.clone(),
            Err(_) => Vec::new(),
        }
    }

    /// Ends an endpoint: its endpoint-bound instances die (and the user-bound ones
    /// if it was the last), aggregation reruns and watchers are told. `false` if it
    /// was already gone.
    pub(crate) fn end_endpoint(&self, id: EndpointId) -> bool {
        let Some(entry) = self.inner.endpoints.lock().remove(&id) else {
            return false;
        };
        self.inner.metrics.endpoints.sub(1);
        if let Some(session) = entry.session.upgrade() {
            session.teardown();
        }
        let Ok(cell) = self.presentity(&entry.user) else {
            return true;
        };
        let mut state = cell.state.lock();
        state.endpoints.retain(|e| *e != id);
        let online = !state.endpoints.is_empty();
        let changes = state.doc.remove_endpoint(id, &self.ctx(online));
        self.inner
            .metrics
            .expired
            .add(changes.categories.len() as u64);
        if let Err(e) = self.commit(&mut state, &changes) {
            // The in-memory state is right; the store catches up with the next
            // durable write of this user.
            tracing::error!(user = %entry.user, error = %e, "cannot store sign-out");
        }
        true
    }

    /// Handles one due timer (it may wait for the store: run it off the async
    /// workers).
    fn fire(&self, key: TimerKey, now: Timestamp) {
        match key {
            TimerKey::Instances(user) => self.expire_instances(&user),
            TimerKey::Endpoint(id) => {
                let deadline = self
                    .inner
                    .endpoints
                    .lock()
                    .get(&id)
                    .and_then(|e| e.deadline);
                match deadline {
                    Some(at) if at <= now => {
                        tracing::info!(endpoint = id.0, "endpoint registration expired");
                        self.end_endpoint(id);
                    }
                    // Refreshed since: wait for the new deadline.
                    Some(at) => self.inner.timers.schedule(at, TimerKey::Endpoint(id)),
                    None => {}
                }
            }
        }
    }

    /// Runs the expiry timers until the engine is dropped. Spawn it once.
    pub async fn run_timers(self) {
        loop {
            let now = self.inner.clock.now();
            match self.inner.timers.pop_due(now) {
                Some(key) => {
                    let engine = self.clone();
                    let _ = tokio::task::spawn_blocking(move || engine.fire(key, now)).await;
                }
                None => self.inner.timers.wait(&self.inner.clock).await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use presence_model::publication::Conflict;
    use presence_model::xml::XmlError;

    fn uri() -> UserUri {
        UserUri::parse("bob@example.com").unwrap()
    }

    fn conflicts() -> Vec<Conflict> {
        vec![Conflict {
            index: 1,
            version: 0,
            current_version: 1,
        }]
    }

    #[test]
    fn every_error_has_its_kind() {
        use ErrorKind::*;
        let cases: Vec<(EngineError, ErrorKind)> = vec![
            (EngineError::UnknownUser(uri()), NotFound),
            (EngineError::NotYourEndpoint(7), Forbidden),
            (PublishError::Empty.into(), Invalid),
            (
                PublishError::Invalid {
                    index: 1,
                    reason: "bad category".into(),
                }
                .into(),
                Invalid,
            ),
            (
                PublishError::Duplicate { index: 2, first: 1 }.into(),
                Invalid,
            ),
            (
                PublishError::InvalidXml {
                    index: 1,
                    source: XmlError::Dtd,
                }
                .into(),
                Invalid,
            ),
            (
                PublishError::ReadOnly {
                    index: 1,
                    category: "state".into(),
                    instance: 1,
                    container: 200,
                }
                .into(),
                Forbidden,
            ),
            (PublishError::EndpointRequired { index: 1 }.into(), Invalid),
            (PublishError::TooLarge("too many".into()).into(), TooLarge),
            (PublishError::Conflict(conflicts()).into(), Conflict),
            (MembershipError::Fixed(2).into(), Forbidden),
            (
                MembershipError::Invalid {
                    index: 1,
                    reason: "twice".into(),
                }
                .into(),
                Invalid,
            ),
            (MembershipError::TooLarge("members".into()).into(), TooLarge),
            (MembershipError::Conflict(conflicts()).into(), Conflict),
            (NotASubscriber(uri()).into(), NotFound),
            (
                ContactError::Stale {
                    sent: 2,
                    current: 3,
                }
                .into(),
                Conflict,
            ),
            (ContactError::NoGroup(9).into(), NotFound),
            (ContactError::NoContact(uri()).into(), NotFound),
            (ContactError::DefaultGroup.into(), Forbidden),
            (
                ContactError::DuplicateGroup("Team".into()).into(),
                Duplicate,
            ),
            (ContactError::Invalid("name".into()).into(), Invalid),
            (ContactError::TooLarge("contacts".into()).into(), TooLarge),
            (EngineError::TooLarge("targets".into()), TooLarge),
            (EngineError::Ended, Ended),
            (EngineError::Disabled(uri()), Forbidden),
            (EngineError::Invalid("category".into()), Invalid),
            (
                StoreError::Corrupt {
                    uri: "bob@example.com".into(),
                    reason: "x".into(),
                }
                .into(),
                Unavailable,
            ),
            (
                EngineError::Store(StoreError::DataDir {
                    path: "/nowhere".into(),
                    source: std::io::Error::other("gone"),
                }),
                Unavailable,
            ),
            (EngineError::Internal("worker panicked".into()), Internal),
        ];
        for (err, kind) in &cases {
            assert_eq!(err.kind(), *kind, "{err:?}");
        }
        // Every kind is reachable from some error.
        for kind in ErrorKind::ALL {
            assert!(cases.iter().any(|(_, k)| *k == kind), "{kind:?}");
        }
    }

    #[test]
    fn codes_are_stable_and_distinct() {
        let codes: Vec<&str> = ErrorKind::ALL.iter().map(|k| k.code()).collect();
        assert_eq!(
            codes,
            [
                "not_found",
                "forbidden",
                "version_conflict",
                "already_exists",
                "too_large",
                "bad_request",
                "unavailable",
                "ended",
                "internal",
            ]
        );
        let unique: std::collections::HashSet<_> = codes.iter().collect();
        assert_eq!(unique.len(), codes.len());
        assert_eq!(ErrorKind::Duplicate.to_string(), "already_exists");
    }
}
