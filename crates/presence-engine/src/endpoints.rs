//! Endpoints (signed-in devices), their lifetimes, and the expiry timers.

use crate::presentity::OnFailure;
use crate::timers::{self, TimerKey};
use crate::{Engine, EngineError, Session, Subscriber, session};
use presence_model::document::ChangeSet;
use presence_model::{EndpointId, Timestamp, UserUri};
use std::sync::Arc;
use std::time::Duration;

/// Endpoint ids reserved from the store at a time.
const ENDPOINT_ID_BLOCK: u64 = 1024;

pub(crate) struct EndpointEntry {
    user: UserUri,
    session: std::sync::Weak<session::SessionInner>,
    /// When the registration ends unless refreshed (`None`: lives until signed out).
    /// One timer entry per endpoint: a firing that finds a later deadline re-arms.
    deadline: Option<Timestamp>,
}

impl Engine {
    /// Removes the `time` instances of `user` that are due; if the store fails,
    /// nothing is removed and the expiry is tried again later.
    fn expire_instances(&self, user: &UserUri) {
        let now = self.inner.clock.now();
        let result = self.write(user, OnFailure::Undo, |state, ctx| {
            let changes = state.doc.expire(now, ctx);
            self.inner
                .metrics
                .expired
                .add(changes.categories.len() as u64);
            Ok(((), changes))
        });
        match result {
            // Nothing due (republished or deleted since) also lands here: the write
            // scheduled whatever is still pending.
            Ok(()) | Err(EngineError::UnknownUser(_)) => {}
            Err(e) => {
                tracing::error!(user = %user, error = %e, "cannot store expiry; retrying later");
                self.inner.timers.schedule(
                    now.plus_secs(timers::RETRY_SECS),
                    TimerKey::Instances(user.clone()),
                );
            }
        }
    }

    /// A fresh endpoint id, unique across restarts and nodes (a client that
    /// reconnects must not mistake a new endpoint for its old one).
    fn next_endpoint_id(&self) -> Result<EndpointId, EngineError> {
        let mut ids = self.inner.endpoint_ids.lock();
        if ids.is_empty() {
            *ids = self.inner.stores.documents.reserve_ids(ENDPOINT_ID_BLOCK)?;
        }
        let id = ids.start;
        ids.start += 1;
        Ok(EndpointId(id))
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
        let id = self.next_endpoint_id()?;
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
        let node = self.inner.node.clone();
        let registered = self.write(user, OnFailure::Undo, |state, ctx| {
            let changes = state.doc.register(id, &node, ctx);
            if !state.endpoints.contains(&id) {
                state.endpoints.push(id);
            }
            Ok((state.endpoints.len() == 1, changes))
        });
        match registered {
            Ok(first) => {
                if let (true, Some(r)) = (first, self.replication()) {
                    r.endpoints_here(user, true);
                }
            }
            Err(e) => {
                // Undone: the endpoint never existed.
                self.inner.endpoints.lock().remove(&id);
                cell.state.lock().endpoints.retain(|x| *x != id);
                return Err(e);
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
        let result = self.write(&entry.user, OnFailure::Keep, |state, ctx| {
            state.endpoints.retain(|e| *e != id);
            let changes = self.unregister(state, id, ctx);
            Ok((state.endpoints.is_empty(), changes))
        });
        if let (Ok(true), Some(r)) = (&result, self.replication()) {
            r.endpoints_here(&entry.user, false);
        }
        match result {
            Ok(_) | Err(EngineError::UnknownUser(_)) => {}
            // The in-memory state is right and watchers were told; the store
            // catches up with the next durable write of this user.
            Err(e) => tracing::error!(user = %entry.user, error = %e, "cannot store sign-out"),
        }
        true
    }

    /// Removes one registration and what dies with it; the user goes offline with
    /// their last endpoint on any node.
    fn unregister(
        &self,
        state: &mut crate::PresentityState,
        id: EndpointId,
        ctx: &presence_model::document::Ctx<'_>,
    ) -> ChangeSet {
        let online = state.doc.registrations().any(|(e, _)| e != id);
        let ctx = presence_model::document::Ctx { online, ..*ctx };
        let changes = state.doc.remove_endpoint(id, &ctx);
        self.inner
            .metrics
            .expired
            .add(changes.categories.len() as u64);
        changes
    }

    /// Removes the endpoints that node `node` held for `users` (a node that died or
    /// restarted: its connections are gone). Idempotent, so several surviving nodes
    /// may do it at once. Returns how many endpoints were removed.
    pub fn remove_node_endpoints(
        &self,
        node: &str,
        users: &[UserUri],
    ) -> Result<usize, EngineError> {
        let mut removed = 0;
        for user in users {
            let result = self.write(user, OnFailure::Undo, |state, ctx| {
                let gone: Vec<EndpointId> = state
                    .doc
                    .registrations()
                    .filter(|(_, n)| *n == node)
                    .map(|(e, _)| e)
                    .collect();
                let mut changes = ChangeSet::default();
                for id in &gone {
                    changes.merge(self.unregister(state, *id, ctx));
                }
                Ok((gone.len(), changes))
            });
            match result {
                Ok(n) => removed += n,
                Err(EngineError::UnknownUser(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(removed)
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
