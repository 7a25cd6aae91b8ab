//! The operations owners perform on their presentity, and what watchers may see.

use crate::presentity::OnFailure;
use crate::{Engine, EngineError};
use presence_model::acl::{self, Relation, Viewer};
use presence_model::contacts::{ContactError, ContactList};
use presence_model::membership::ContainerUpdate;
use presence_model::{
    CategoryInstance, Container, EndpointId, ExpireType, Publication, PublishedItem,
    SubscriberEntry, UserUri,
};

/// Everything the owner has, for `GET /v1/me` and the first self notification.
#[derive(Debug, Clone)]
pub struct OwnSnapshot {
    pub instances: Vec<CategoryInstance>,
    pub containers: Vec<Container>,
    pub subscribers: Vec<SubscriberEntry>,
    pub contacts: ContactList,
}

impl Engine {
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

    /// Applies a publication batch for `user`, published from `endpoint` (which
    /// must be one of the user's live endpoints) or from no endpoint.
    pub fn publish(
        &self,
        user: &UserUri,
        endpoint: Option<EndpointId>,
        items: &[Publication],
    ) -> Result<Vec<PublishedItem>, EngineError> {
        // Only batches that may touch durable data pay for a backup copy; an
        // endpoint's own state lives in memory only and cannot fail to store.
        let durable = items
            .iter()
            .any(|p| p.expire_type != ExpireType::Endpoint || p.is_delete());
        let on_failure = if durable {
            OnFailure::Undo
        } else {
            OnFailure::Keep
        };
        let result = self.write(user, on_failure, |state, ctx| {
            if let Some(ep) = endpoint
                && !state.endpoints.contains(&ep)
            {
                return Err(EngineError::NotYourEndpoint(ep.0));
            }
            state.doc.publish(items, endpoint, ctx).map_err(|e| {
                self.inner.metrics.publications_refused.inc();
                EngineError::from(e)
            })
        });
        if result.is_ok() {
            self.inner.metrics.publications.inc();
        }
        result
    }

    /// Applies membership changes; returns the changed containers.
    pub fn update_containers(
        &self,
        user: &UserUri,
        updates: &[ContainerUpdate],
    ) -> Result<Vec<Container>, EngineError> {
        self.write(user, OnFailure::Undo, |state, _| {
            let changes = state.doc.update_containers(updates)?;
            let changed = changes
                .containers
                .iter()
                .filter_map(|id| state.doc.container(*id).cloned())
                .collect();
            Ok((changed, changes))
        })
    }

    pub fn acknowledge_subscriber(
        &self,
        user: &UserUri,
        watcher: &UserUri,
    ) -> Result<(), EngineError> {
        self.write(user, OnFailure::Undo, |state, _| {
            Ok(((), state.doc.acknowledge_subscriber(watcher)?))
        })
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
        mut change: impl FnMut(&mut ContactList) -> Result<T, ContactError>,
    ) -> Result<(T, ContactList), EngineError> {
        if let Some(c) = contact
            && !self.exists(c)?
        {
            return Err(EngineError::UnknownUser(c.clone()));
        }
        self.write(user, OnFailure::Undo, |state, _| {
            let (out, changes) = state.doc.change_contacts(&mut change)?;
            Ok(((out, state.doc.contacts().clone()), changes))
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
}
