//! Presentities in memory and the one way they change: [`Engine::write`].
//!
//! A change is: apply the model operation to the document (all or nothing), save the
//! document with compare-and-set if the change is durable, then schedule its expiry
//! and fan it out. If another writer saved the document first (another process, or
//! another node in cluster mode), the stored document is taken in, what it changed is
//! fanned out, and the operation is applied again to it. Nothing is acknowledged or
//! notified before the store has it.

use crate::{Engine, EngineError, fanout, session, timers::TimerKey};
use parking_lot::Mutex;
use presence_model::acl::View;
use presence_model::document::{ChangeSet, Ctx, DocRecord, RecordScope};
use presence_model::{EndpointId, PresentityDoc, UserUri};
use presence_store::{Revision, StoreError, Versioned};
use std::sync::Arc;
use std::time::Duration;

/// Attempts at one change while other writers keep winning the compare-and-set.
pub const MAX_WRITE_ATTEMPTS: u32 = 8;

/// The longest pause between two attempts at one change.
const MAX_CONFLICT_PAUSE: Duration = Duration::from_millis(50);

/// A random pause of up to 2^attempt ms (capped): full jitter, from the clock's
/// low bits (no need for a cryptographic source).
fn conflict_pause(attempt: u32) -> Duration {
    let cap = Duration::from_millis(1 << attempt.min(6)).min(MAX_CONFLICT_PAUSE);
    let noise = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    cap.mul_f64(f64::from(noise % 1000) / 1000.0)
}

/// A watcher's edge to a presentity: which subscription, and the view it resolved to.
pub(crate) struct Edge {
    pub sub: Arc<session::Subscription>,
    pub view: View,
}

pub(crate) struct PresentityState {
    pub doc: PresentityDoc,
    /// The store revision `doc`'s durable part was read or written at.
    pub revision: Revision,
    pub endpoints: Vec<EndpointId>,
    pub watchers: Vec<Edge>,
    pub self_subs: Vec<Arc<crate::Subscriber>>,
}

pub struct PresentityCell {
    uri: UserUri,
    pub(crate) state: Mutex<PresentityState>,
}

impl PresentityCell {
    pub fn uri(&self) -> &UserUri {
        &self.uri
    }
}

/// What a change does to the in-memory document when its store write fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnFailure {
    /// Put the document back as it was; the caller reports the failure (the change
    /// was refused).
    Undo,
    /// Keep the change in memory and tell watchers (an endpoint that is gone is
    /// gone); the document is saved whole with the next durable write.
    Keep,
}

/// One application of an operation, not settled yet.
struct Applied<T> {
    out: T,
    changes: ChangeSet,
    backup: Option<PresentityDoc>,
}

impl Engine {
    pub(crate) fn cell(&self, doc: PresentityDoc, revision: Revision) -> Arc<PresentityCell> {
        if let Some(r) = self.replication() {
            r.follow(doc.uri());
        }
        Arc::new(PresentityCell {
            uri: doc.uri().clone(),
            state: Mutex::new(PresentityState {
                doc,
                revision,
                endpoints: Vec::new(),
                watchers: Vec::new(),
                self_subs: Vec::new(),
            }),
        })
    }

    /// A cell for a stored document, its expiry scheduled.
    pub(crate) fn restore(&self, record: Versioned<DocRecord>) -> Arc<PresentityCell> {
        let doc = PresentityDoc::restore(record.value, &self.ctx(false));
        self.observe_seq(&doc);
        self.schedule_expiry(&doc);
        self.cell(doc, record.revision)
    }

    /// Creates the presentities of new users (default containers, blocked view).
    /// Users that already exist are left alone.
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

    /// Stores and adds new documents, created only where the store has none (a
    /// compare-and-set against "absent"): a document another writer created first is
    /// loaded instead. Decided under the map's write lock, so a racing first use in
    /// this process cannot write an empty document over one that took data.
    fn insert_fresh(&self, fresh: Vec<PresentityDoc>) -> Result<(), EngineError> {
        let mut map = self.inner.presentities.write();
        let fresh: Vec<PresentityDoc> = fresh
            .into_iter()
            .filter(|d| !map.contains_key(d.uri()))
            .collect();
        let records: Vec<_> = fresh
            .iter()
            .map(|d| (d.to_record(self.inner.scope), 0))
            .collect();
        let results = self.inner.stores.documents.save_many(&records);
        let mut first_error = None;
        for (doc, result) in fresh.into_iter().zip(results) {
            let cell = match result {
                Ok(revision) => self.cell(doc, revision),
                Err(StoreError::Conflict { .. }) => {
                    match self.inner.stores.documents.load(doc.uri()) {
                        Ok(Some(stored)) => self.restore(stored),
                        Ok(None) => continue,
                        Err(e) => {
                            first_error.get_or_insert(e);
                            continue;
                        }
                    }
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                    continue;
                }
            };
            map.entry(cell.uri().clone()).or_insert(cell);
        }
        first_error.map_or(Ok(()), |e| Err(e.into()))
    }

    /// The presentity of `user`. A user created elsewhere (the `user add` command
    /// while the server runs, another node) is loaded from the store on first use;
    /// a user with an account but no document yet gets one.
    pub(crate) fn presentity(&self, user: &UserUri) -> Result<Arc<PresentityCell>, EngineError> {
        if let Some(cell) = self.inner.presentities.read().get(user) {
            return Ok(cell.clone());
        }
        let Some(stored) = self.inner.stores.documents.load(user)? else {
            let Some(account) = self.inner.stores.accounts.get(user)? else {
                return Err(EngineError::UnknownUser(user.clone()));
            };
            self.ensure_loaded(&[(user, &account.display_name)])?;
            return self
                .inner
                .presentities
                .read()
                .get(user)
                .cloned()
                .ok_or_else(|| EngineError::UnknownUser(user.clone()));
        };
        let cell = self.restore(stored);
        let mut map = self.inner.presentities.write();
        Ok(map.entry(user.clone()).or_insert(cell).clone())
    }

    pub fn exists(&self, user: &UserUri) -> Result<bool, EngineError> {
        match self.presentity(user) {
            Ok(_) => Ok(true),
            Err(EngineError::UnknownUser(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Loads or creates the presentities of `users` (new ones get the default
    /// memberships and an identity card from the name given).
    pub(crate) fn ensure_loaded(&self, users: &[(&UserUri, &str)]) -> Result<(), EngineError> {
        let mut fresh = Vec::new();
        for (uri, name) in users {
            if self.inner.presentities.read().contains_key(*uri) {
                continue;
            }
            match self.inner.stores.documents.load(uri)? {
                Some(stored) => {
                    let cell = self.restore(stored);
                    self.inner
                        .presentities
                        .write()
                        .entry((*uri).clone())
                        .or_insert(cell);
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

    pub(crate) fn schedule_expiry(&self, doc: &PresentityDoc) {
        if let Some(at) = doc.next_expiry() {
            self.inner
                .timers
                .schedule(at, TimerKey::Instances(doc.uri().clone()));
        }
    }

    /// The one way a presentity changes: see the module documentation. `op` must
    /// leave the document untouched when it fails (the model's operations are all or
    /// nothing), and may run more than once.
    pub(crate) fn write<T>(
        &self,
        user: &UserUri,
        on_failure: OnFailure,
        op: impl FnMut(&mut PresentityState, &Ctx<'_>) -> Result<(T, ChangeSet), EngineError>,
    ) -> Result<T, EngineError> {
        let cell = self.presentity(user)?;
        let mut state = cell.state.lock();
        self.write_locked(&mut state, on_failure, op, 1)
    }

    /// [`write`](Self::write) on a presentity whose lock is held, from attempt
    /// `attempt` on.
    pub(crate) fn write_locked<T>(
        &self,
        state: &mut PresentityState,
        on_failure: OnFailure,
        mut op: impl FnMut(&mut PresentityState, &Ctx<'_>) -> Result<(T, ChangeSet), EngineError>,
        mut attempt: u32,
    ) -> Result<T, EngineError> {
        loop {
            let applied = self.apply(state, on_failure, &mut op)?;
            let saved = self.must_save(&applied.changes).then(|| {
                self.inner
                    .stores
                    .documents
                    .save(&state.doc.to_record(self.inner.scope), state.revision)
            });
            if let Some(out) = self.settle(state, applied, saved, attempt)? {
                return Ok(out);
            }
            attempt += 1;
        }
    }

    fn apply<T>(
        &self,
        state: &mut PresentityState,
        on_failure: OnFailure,
        op: &mut impl FnMut(&mut PresentityState, &Ctx<'_>) -> Result<(T, ChangeSet), EngineError>,
    ) -> Result<Applied<T>, EngineError> {
        let backup = (on_failure == OnFailure::Undo).then(|| state.doc.clone());
        let online = state.doc.is_online();
        let (out, changes) = op(state, &self.ctx(online))?;
        Ok(Applied {
            out,
            changes,
            backup,
        })
    }

    /// Finishes one application given its store write (`None`: nothing durable).
    /// `Ok(None)`: another writer won; the document was refreshed from the store and
    /// the operation must be applied again.
    fn settle<T>(
        &self,
        state: &mut PresentityState,
        applied: Applied<T>,
        saved: Option<Result<Revision, StoreError>>,
        attempt: u32,
    ) -> Result<Option<T>, EngineError> {
        match saved {
            None => {}
            Some(Ok(revision)) => {
                state.revision = revision;
                if let Some(r) = self.replication() {
                    r.saved(state.doc.uri(), revision);
                }
            }
            Some(Err(e)) => {
                let kept = applied.backup.is_none();
                if let Some(backup) = applied.backup {
                    state.doc = backup;
                }
                if matches!(e, StoreError::Conflict { .. }) && attempt < MAX_WRITE_ATTEMPTS {
                    // Writers racing on one document (other nodes) back off by a
                    // random, growing pause, so that one of them gets through.
                    if attempt > 1 {
                        std::thread::sleep(conflict_pause(attempt));
                    }
                    self.refresh(state)?;
                    return Ok(None);
                }
                if kept {
                    self.schedule_expiry(&state.doc);
                    fanout::fan_out(state, &applied.changes);
                }
                return Err(e.into());
            }
        }
        self.schedule_expiry(&state.doc);
        fanout::fan_out(state, &applied.changes);
        Ok(Some(applied.out))
    }

    /// Whether a change goes to the store: durable data always; what only a running
    /// server keeps, when the store is shared by a cluster.
    fn must_save(&self, changes: &ChangeSet) -> bool {
        changes.durable || (self.inner.scope == RecordScope::Shared && changes.live)
    }

    /// Another node saved `uri` at `revision`: a presentity held here that is older
    /// takes in the stored document and tells its watchers.
    /// A user the directory disabled meanwhile loses the endpoints this node holds.
    pub fn remote_saved(&self, uri: &UserUri, revision: Revision) {
        let Some(cell) = self.inner.presentities.read().get(uri).cloned() else {
            return;
        };
        let disabled_here = {
            let mut state = cell.state.lock();
            if state.revision >= revision {
                return;
            }
            if let Err(e) = self.refresh(&mut state) {
                tracing::warn!(user = %uri, error = %e, "cannot read a document another node saved");
                return;
            }
            if state.doc.is_disabled() {
                state.endpoints.clone()
            } else {
                Vec::new()
            }
        };
        for id in disabled_here {
            self.end_endpoint(id);
        }
    }

    /// Takes in the stored document (written by someone else since this one was
    /// read) and tells watchers what that changed.
    pub(crate) fn refresh(&self, state: &mut PresentityState) -> Result<(), EngineError> {
        let uri = state.doc.uri().clone();
        let Some(stored) = self.inner.stores.documents.load(&uri)? else {
            return Err(EngineError::UnknownUser(uri));
        };
        let online = state.doc.is_online();
        let changes = state
            .doc
            .rebase(stored.value, self.inner.scope, &self.ctx(online));
        state.revision = stored.revision;
        self.observe_seq(&state.doc);
        self.schedule_expiry(&state.doc);
        fanout::fan_out(state, &changes);
        Ok(())
    }

    /// Applies `op` to several presentities (locked in URI order, so this cannot
    /// deadlock with anything else, which holds at most one), saving their documents
    /// together so they can share one commit. Each presentity is its own write: one
    /// that fails does not undo the others. `users` must be distinct. Returns each
    /// `op`'s result in order, or the first failure after all others are settled.
    pub(crate) fn write_batch<T>(
        &self,
        users: &[&UserUri],
        mut op: impl FnMut(usize, &mut PresentityState, &Ctx<'_>) -> Result<(T, ChangeSet), EngineError>,
    ) -> Result<Vec<T>, EngineError> {
        let mut cells = Vec::with_capacity(users.len());
        for (i, u) in users.iter().enumerate() {
            cells.push((i, self.presentity(u)?));
        }
        cells.sort_by(|a, b| a.1.uri().cmp(b.1.uri()));
        if cells.windows(2).any(|w| w[0].1.uri() == w[1].1.uri()) {
            return Err(EngineError::Internal("a user repeated in one batch".into()));
        }
        let mut guards: Vec<_> = cells.iter().map(|(i, c)| (*i, c.state.lock())).collect();
        let mut applied = Vec::with_capacity(guards.len());
        for (i, state) in guards.iter_mut() {
            let i = *i;
            applied.push(self.apply(state, OnFailure::Undo, &mut |s, ctx| op(i, s, ctx))?);
        }
        let writes: Vec<(usize, (DocRecord, Revision))> = guards
            .iter()
            .zip(&applied)
            .enumerate()
            .filter(|(_, (_, a))| self.must_save(&a.changes))
            .map(|(k, ((_, s), _))| (k, (s.doc.to_record(self.inner.scope), s.revision)))
            .collect();
        let records: Vec<_> = writes.iter().map(|(_, w)| w.clone()).collect();
        let mut saved: Vec<Option<Result<Revision, StoreError>>> =
            applied.iter().map(|_| None).collect();
        for ((k, _), result) in writes
            .iter()
            .zip(self.inner.stores.documents.save_many(&records))
        {
            saved[*k] = Some(result);
        }
        let mut outs: Vec<Option<T>> = users.iter().map(|_| None).collect();
        let mut first_error = None;
        for (((i, state), applied), saved) in guards.iter_mut().zip(applied).zip(saved) {
            let i = *i;
            let result = match self.settle(state, applied, saved, 1) {
                Ok(Some(out)) => Ok(out),
                Ok(None) => self.write_locked(state, OnFailure::Undo, |s, ctx| op(i, s, ctx), 2),
                Err(e) => Err(e),
            };
            match result {
                Ok(out) => outs[i] = Some(out),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(outs.into_iter().map(|o| o.expect("every user")).collect()),
        }
    }
}
