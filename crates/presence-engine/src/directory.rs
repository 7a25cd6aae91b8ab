//! What the directory publishes into presentities, and what a search shows.

use crate::{Engine, EngineError};
use presence_model::UserUri;

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

impl Engine {
    /// Applies what the directory says about a batch of users: the cards are written
    /// (unchanged ones notify nobody), and users being disabled lose their endpoints
    /// first (their connections close). The documents are saved together (one commit
    /// on the embedded store) but each is its own write, so a failure leaves the
    /// others applied; the sync is idempotent and the next run completes it. A user
    /// named twice takes the last update. Returns, per update, whether anything
    /// changed.
    pub fn apply_directory(&self, updates: &[DirectoryUpdate]) -> Result<Vec<bool>, EngineError> {
        let mut last: std::collections::HashMap<&UserUri, usize> = Default::default();
        for (i, u) in updates.iter().enumerate() {
            last.insert(&u.uri, i);
        }
        let distinct: Vec<usize> = (0..updates.len())
            .filter(|i| last[&updates[*i].uri] == *i)
            .collect();
        let names: Vec<(&UserUri, &str)> = distinct
            .iter()
            .map(|i| (&updates[*i].uri, updates[*i].display_name.as_str()))
            .collect();
        self.ensure_loaded(&names)?;
        for u in updates.iter().filter(|u| !u.enabled) {
            for ep in self.endpoints_of(&u.uri) {
                self.end_endpoint(ep);
            }
        }
        let users: Vec<&UserUri> = distinct.iter().map(|i| &updates[*i].uri).collect();
        let results = self.write_batch(&users, |k, state, ctx| {
            let u = &updates[distinct[k]];
            let mut changes = state.doc.set_directory_data(
                &u.display_name,
                &u.email,
                u.details.as_deref(),
                u.properties.as_deref(),
                ctx,
            );
            changes.merge(state.doc.set_disabled(!u.enabled, ctx));
            Ok((!changes.is_empty(), changes))
        })?;
        let mut changed = vec![false; updates.len()];
        for (k, c) in results.into_iter().enumerate() {
            changed[distinct[k]] = c;
        }
        Ok(changed)
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
}
