//! Who sees what. Every access decision of Presenced is made here.
//!
//! A watcher other than the owner is resolved to exactly one container of a
//! presentity, for all categories (the "single container" reading of the Lync
//! documentation, which MS-PRES leaves open):
//!
//! 1. the most specific member class that matches the watcher decides: an explicit
//!    `user` entry, then a `domain` entry (exact domain match; subdomains do not
//!    match), then the watcher's network class (`sameEnterprise`, `federated` or
//!    `publicCloud`), then `everyone`;
//! 2. within that class, Blocked (32000) wins if it matches; otherwise the highest
//!    container id wins. Blocked is checked first because custom containers may have
//!    ids above 32000, and being blocked must not be undone by another entry;
//! 3. a watcher who matches nothing sees container 0 (Default).
//!
//! Only containers with id 4 and up are candidates, so containers 1-3 (self and the
//! aggregation inputs) never reach another user. Private categories never do either.

use crate::container::{ContainerId, Member};
use crate::document::PresentityDoc;
use crate::instance::CategoryInstance;
use crate::uri::UserUri;

/// Categories that never reach a watcher other than the owner, whatever container
/// they sit in.
pub const PRIVATE_CATEGORIES: [&str; 3] = ["routing", "dndState", "legacyInterop"];

pub fn is_private(category: &str) -> bool {
    PRIVATE_CATEGORIES.contains(&category)
}

/// The network relation of a watcher to the presentity's deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Relation {
    /// A user homed on this server.
    SameEnterprise,
    /// A user of a configured federated partner domain.
    Federated,
    /// A user of a configured public IM cloud domain.
    PublicCloud,
    /// Anybody else.
    Other,
}

impl Relation {
    fn member(self) -> Option<Member> {
        match self {
            Relation::SameEnterprise => Some(Member::SameEnterprise),
            Relation::Federated => Some(Member::Federated),
            Relation::PublicCloud => Some(Member::PublicCloud),
            Relation::Other => None,
        }
    }
}

/// Who is looking at a presentity.
#[derive(Debug, Clone, Copy)]
pub enum Viewer<'a> {
    Owner,
    Watcher {
        uri: &'a UserUri,
        relation: Relation,
    },
}

/// What a viewer sees of a presentity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum View {
    /// Everything, with container ids, versions and expire types.
    Owner,
    /// One container's instances, stripped of their metadata.
    Container(ContainerId),
}

/// Resolves a watcher to the one container it sees (see the module docs).
pub fn resolve_container(doc: &PresentityDoc, viewer: Viewer<'_>) -> View {
    let (uri, relation) = match viewer {
        Viewer::Owner => return View::Owner,
        Viewer::Watcher { uri, .. } if uri == doc.uri() => return View::Owner,
        Viewer::Watcher { uri, relation } => (uri, relation),
    };
    let highest = |matches: &dyn Fn(&Member) -> bool| {
        let candidates = doc
            .containers()
            .filter(|c| c.id.is_remote() && c.members.iter().any(matches))
            .map(|c| c.id);
        let mut best = None;
        for id in candidates {
            if id == ContainerId::BLOCKED {
                return Some(id);
            }
            best = best.max(Some(id));
        }
        best
    };
    let by_user = highest(&|m| matches!(m, Member::User(u) if u == uri));
    let by_domain = || highest(&|m| matches!(m, Member::Domain(d) if d == uri.domain()));
    let by_relation = || {
        relation
            .member()
            .and_then(|member| highest(&|m| *m == member))
    };
    let by_everyone = || highest(&|m| *m == Member::Everyone);
    View::Container(
        by_user
            .or_else(by_domain)
            .or_else(by_relation)
            .or_else(by_everyone)
            .unwrap_or(ContainerId::DEFAULT),
    )
}

/// The instances of `category` a viewer with `view` may see, in instance order.
pub fn visible_instances<'d>(
    doc: &'d PresentityDoc,
    view: View,
    category: &str,
) -> Vec<&'d CategoryInstance> {
    match view {
        View::Owner => doc
            .instances()
            .filter(|i| &*i.key.category == category)
            .collect(),
        View::Container(c) if c.is_local() && c != ContainerId::DEFAULT => Vec::new(),
        View::Container(_) if is_private(category) => Vec::new(),
        // A user the directory disabled shows watchers nothing but the identity card.
        View::Container(c) if doc.is_disabled() => doc
            .instances_in(c, category)
            .filter(|i| &*i.key.category == "contactCard" && i.key.instance == 0)
            .collect(),
        View::Container(c) => doc.instances_in(c, category).collect(),
    }
}
