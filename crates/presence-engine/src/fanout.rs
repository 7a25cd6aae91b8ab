//! Fan-out: after a change to one presentity, compute each affected view once and
//! hand the shared result to every watcher resolved to it.

use crate::PresentityState;
use crate::queue::{CategoryView, SelfUpdate, Views};
use presence_model::acl::{self, View, Viewer};
use presence_model::document::ChangeSet;
use presence_model::{ContainerId, PresentityDoc};
use smallvec::SmallVec;
use std::sync::Arc;
use std::time::Instant;

/// Categories a subscription with an empty category list receives (the default list
/// of Microsoft's client API).
pub const DEFAULT_CATEGORIES: [&str; 5] =
    ["state", "note", "contactCard", "calendarData", "services"];

fn category_view(doc: &PresentityDoc, view: View, name: &Arc<str>) -> Arc<CategoryView> {
    let instances = acl::visible_instances(doc, view, name)
        .into_iter()
        .cloned()
        .collect();
    Arc::new(CategoryView::new(
        name.clone(),
        view == View::Owner,
        instances,
    ))
}

/// The full view of `categories` for one watcher view, for a subscription's first
/// notification or a resync.
pub(crate) fn snapshot(doc: &PresentityDoc, view: View, categories: &[Arc<str>]) -> Views {
    categories
        .iter()
        .map(|n| category_view(doc, view, n))
        .collect()
}

/// Everything the owner has, as the first self notification.
pub(crate) fn own_full(doc: &PresentityDoc) -> SelfUpdate {
    let mut names: Vec<Arc<str>> = doc.instances().map(|i| i.key.category.clone()).collect();
    names.dedup();
    names.sort();
    names.dedup();
    SelfUpdate {
        categories: snapshot(doc, View::Owner, &names),
        containers: Some(Arc::new(doc.containers().cloned().collect())),
        subscribers: Some(Arc::new(doc.subscribers().to_vec())),
        contacts: Some(Arc::new(doc.contacts().clone())),
    }
}

fn own_update(doc: &PresentityDoc, changes: &ChangeSet) -> SelfUpdate {
    let names: Vec<Arc<str>> = changes.category_names().into_iter().collect();
    SelfUpdate {
        categories: snapshot(doc, View::Owner, &names),
        containers: (!changes.containers.is_empty())
            .then(|| Arc::new(doc.containers().cloned().collect())),
        subscribers: changes
            .subscribers
            .then(|| Arc::new(doc.subscribers().to_vec())),
        contacts: changes.contacts.then(|| Arc::new(doc.contacts().clone())),
    }
}

pub(crate) fn cell_addr(state: &PresentityState) -> usize {
    state as *const PresentityState as usize
}

pub(crate) fn fan_out(state: &mut PresentityState, changes: &ChangeSet) {
    if changes.is_empty() {
        return;
    }
    let addr = cell_addr(state);
    let PresentityState {
        doc,
        watchers,
        self_subs,
        ..
    } = state;
    if !self_subs.is_empty() {
        let update = own_update(doc, changes);
        for s in self_subs.iter() {
            s.push_own(update.clone());
        }
    }
    if watchers.is_empty() {
        return;
    }
    let changed_names = changes.category_names();
    // The changed category names per container, so each edge's test is a short scan.
    let mut by_container: Vec<(ContainerId, SmallVec<[&Arc<str>; 4]>)> = Vec::new();
    for (c, name) in &changes.categories {
        match by_container.last_mut() {
            Some((last, names)) if last == c => names.push(name),
            _ => by_container.push((*c, SmallVec::from_elem(name, 1))),
        }
    }
    let reresolve = !changes.containers.is_empty();
    let now = Instant::now();
    // Views computed so far in this fan-out: a presentity has a handful of distinct
    // views however many watchers it has, so a linear cache is the right size.
    let mut cache: Vec<(View, Arc<str>, Arc<CategoryView>)> = Vec::new();
    for edge in watchers.iter_mut() {
        let sub = &edge.sub;
        let mut full = false;
        if reresolve {
            let view = acl::resolve_container(
                doc,
                Viewer::Watcher {
                    uri: &sub.subscriber.watcher,
                    relation: sub.subscriber.relation,
                },
            );
            if view != edge.view {
                edge.view = view;
                full = true;
            }
        }
        let view = edge.view;
        let changed_here: &[&Arc<str>] = match view {
            View::Owner => &[],
            View::Container(c) => by_container
                .iter()
                .find(|(id, _)| *id == c)
                .map_or(&[], |(_, names)| &names[..]),
        };
        let wanted = |name: &Arc<str>| -> bool {
            full || match view {
                View::Owner => changed_names.contains(name),
                View::Container(_) => {
                    changed_here.iter().any(|n| **n == *name) && !acl::is_private(name)
                }
            }
        };
        let mut views = Views::new();
        for name in sub.categories.iter().filter(|n| wanted(n)) {
            let found = cache.iter().find(|(v, n, _)| *v == view && n == name);
            let cv = match found {
                Some((_, _, cv)) => cv.clone(),
                None => {
                    let cv = category_view(doc, view, name);
                    cache.push((view, name.clone(), cv.clone()));
                    cv
                }
            };
            views.push(cv);
        }
        if !views.is_empty() {
            sub.subscriber.push_categories(addr, doc.uri(), views, now);
        }
    }
}

/// Whether a view is the blocked one.
pub(crate) fn is_blocked(view: View) -> bool {
    view == View::Container(ContainerId::BLOCKED)
}
