//! One presentity's data: its containers, category instances and subscriber list,
//! with the rules that change them. Every change returns a [`ChangeSet`] saying which
//! (container, category) pairs, containers and lists it touched, which is all the
//! engine needs to notify exactly the affected watchers.

use crate::aggregation::{AggregateOutput, AggregationInput, Aggregator};
use crate::contacts::{ContactError, ContactList};
use crate::container::{Container, ContainerId};
use crate::instance::{Author, CategoryInstance, EndpointId, ExpireType, Expiry, InstanceKey};
use crate::limits::*;
use crate::membership::{ContainerUpdate, MembershipError};
use crate::publication::{Conflict, Publication, PublishError, PublishedItem};
use crate::subscribers::SubscriberEntry;
use crate::time::Timestamp;
use crate::uri::UserUri;
use crate::xml;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// Namespace of contactCard values.
pub const CONTACT_CARD_NS: &str = "http://schemas.microsoft.com/2006/09/sip/contactcard";
/// Containers that carry the identity card: Default, every remote level, Blocked.
const IDENTITY_CONTAINERS: [u64; 6] = [0, 100, 200, 300, 400, 32000];
/// Instance id of the directory details card (title, department, company, office,
/// work phone): the id Lync uses for its company card.
pub const DETAILS_CARD_INSTANCE: u32 = 3;
/// Containers of the details card: colleagues, workgroup, friends and family.
const DETAILS_CONTAINERS: [u64; 3] = [200, 300, 400];

fn cid(id: u64) -> ContainerId {
    ContainerId::new(id).expect("well-known id")
}

/// Where time and publication order come from; the engine implements it.
pub trait Stamper {
    fn now(&self) -> Timestamp;
    /// A strictly increasing number, engine-wide.
    fn next_seq(&self) -> u64;
}

/// What a change needs to know about its surroundings.
pub struct Ctx<'a> {
    pub aggregator: &'a dyn Aggregator,
    pub stamper: &'a dyn Stamper,
    /// Whether the user has at least one live endpoint.
    pub online: bool,
}

/// What one change touched.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangeSet {
    /// (container, category) pairs whose instances changed.
    pub categories: BTreeSet<(ContainerId, Arc<str>)>,
    /// Containers whose membership changed (or that were created by a membership change).
    pub containers: BTreeSet<ContainerId>,
    /// The subscriber list changed.
    pub subscribers: bool,
    /// The contact list changed.
    pub contacts: bool,
    /// Something the store keeps changed.
    pub durable: bool,
    /// Something only a running server keeps changed (endpoint-bound instances,
    /// server-written user-bound ones, endpoint registrations). A cluster stores
    /// these too, so that every node sees them.
    pub live: bool,
}

impl ChangeSet {
    pub fn is_empty(&self) -> bool {
        self.categories.is_empty()
            && self.containers.is_empty()
            && !self.subscribers
            && !self.contacts
    }

    pub fn merge(&mut self, other: ChangeSet) {
        self.categories.extend(other.categories);
        self.containers.extend(other.containers);
        self.subscribers |= other.subscribers;
        self.contacts |= other.contacts;
        self.durable |= other.durable;
        self.live |= other.live;
    }

    fn touch(&mut self, inst: &CategoryInstance) {
        self.categories
            .insert((inst.key.container, inst.key.category.clone()));
        self.durable |= inst.is_durable();
        self.live |= !inst.is_durable();
    }

    /// The distinct category names that changed.
    pub fn category_names(&self) -> BTreeSet<Arc<str>> {
        self.categories.iter().map(|(_, c)| c.clone()).collect()
    }
}

/// The durable part of a presentity, as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocRecord {
    pub uri: UserUri,
    pub containers: Vec<Container>,
    pub instances: Vec<CategoryInstance>,
    pub subscribers: Vec<SubscriberEntry>,
    #[serde(default)]
    pub contacts: ContactList,
    /// The directory disabled the user: watchers see the identity card only.
    #[serde(default)]
    pub disabled: bool,
    /// Live endpoints and the node holding each; stored only in the shared form
    /// (cluster mode), where every node must know whether the user is online.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub registrations: Vec<Registration>,
}

/// A live endpoint of the user and the server node that holds its connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    pub endpoint: EndpointId,
    pub node: String,
}

/// Which part of a document a store record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordScope {
    /// What survives a restart of a single server: no endpoint-bound data, no
    /// registrations (clients register again).
    Durable,
    /// Everything, for a store that several nodes share: endpoint-bound instances
    /// and registrations too, each owned by the node holding its endpoint.
    Shared,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0} is not in the subscriber list")]
pub struct NotASubscriber(pub UserUri);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresentityDoc {
    uri: UserUri,
    containers: BTreeMap<ContainerId, Container>,
    instances: BTreeMap<InstanceKey, CategoryInstance>,
    subscribers: Vec<SubscriberEntry>,
    contacts: ContactList,
    disabled: bool,
    registrations: BTreeMap<EndpointId, Arc<str>>,
}

/// A category name: an XML-name-like token of at most [`MAX_CATEGORY_NAME_BYTES`].
pub fn valid_category(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_CATEGORY_NAME_BYTES
        && name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
}

impl PresentityDoc {
    /// A new user's document: the default memberships and the blocked view.
    pub fn provision(uri: UserUri, ctx: &Ctx<'_>) -> Self {
        let mut doc = PresentityDoc {
            uri,
            containers: Container::defaults()
                .into_iter()
                .map(|c| (c.id, c))
                .collect(),
            instances: BTreeMap::new(),
            subscribers: Vec::new(),
            contacts: ContactList::default(),
            disabled: false,
            registrations: BTreeMap::new(),
        };
        doc.ensure_fixed_outputs(ctx);
        doc
    }

    /// Rebuilds a document from the store. A [`RecordScope::Durable`] record holds no
    /// endpoint data, so such a restored user is offline until an endpoint signs in.
    pub fn restore(record: DocRecord, ctx: &Ctx<'_>) -> Self {
        let mut doc = PresentityDoc {
            uri: record.uri,
            containers: record.containers.into_iter().map(|c| (c.id, c)).collect(),
            instances: record
                .instances
                .into_iter()
                .map(|i| (i.key.clone(), i))
                .collect(),
            subscribers: record.subscribers,
            contacts: record.contacts,
            disabled: record.disabled,
            registrations: record
                .registrations
                .into_iter()
                .map(|r| (r.endpoint, Arc::from(r.node)))
                .collect(),
        };
        doc.ensure_fixed_outputs(ctx);
        doc
    }

    /// Takes the stored record another writer made in place of this document. A
    /// [`RecordScope::Durable`] record replaces the durable part only: the instances
    /// and registrations that live only here are kept. A [`RecordScope::Shared`] one
    /// replaces everything. Aggregation reruns. Returns what changed, for watchers;
    /// `durable` and `live` are false (the record is what the store holds).
    pub fn rebase(&mut self, record: DocRecord, scope: RecordScope, ctx: &Ctx<'_>) -> ChangeSet {
        let mut next = PresentityDoc::restore(record, ctx);
        if scope == RecordScope::Durable {
            for (key, inst) in &self.instances {
                if !inst.is_durable() && !next.instances.contains_key(key) {
                    next.instances.insert(key.clone(), inst.clone());
                }
            }
            next.registrations = self.registrations.clone();
        }
        let mut changes = ChangeSet::default();
        let ctx = Ctx {
            online: next.is_online(),
            ..*ctx
        };
        next.reaggregate(&ctx, &mut changes);
        let keys: BTreeSet<&InstanceKey> =
            self.instances.keys().chain(next.instances.keys()).collect();
        for key in keys {
            if self.instances.get(key) != next.instances.get(key) {
                changes
                    .categories
                    .insert((key.container, key.category.clone()));
            }
        }
        let ids: BTreeSet<ContainerId> = self
            .containers
            .keys()
            .chain(next.containers.keys())
            .copied()
            .collect();
        for id in ids {
            if self.containers.get(&id) != next.containers.get(&id) {
                changes.containers.insert(id);
            }
        }
        changes.subscribers = self.subscribers != next.subscribers;
        changes.contacts = self.contacts != next.contacts;
        changes.durable = false;
        changes.live = false;
        *self = next;
        changes
    }

    pub fn to_record(&self, scope: RecordScope) -> DocRecord {
        let shared = scope == RecordScope::Shared;
        DocRecord {
            uri: self.uri.clone(),
            containers: self.containers.values().cloned().collect(),
            instances: self
                .instances
                .values()
                .filter(|i| shared || i.is_durable())
                .cloned()
                .collect(),
            subscribers: self.subscribers.clone(),
            contacts: self.contacts.clone(),
            disabled: self.disabled,
            registrations: if shared {
                self.registrations
                    .iter()
                    .map(|(endpoint, node)| Registration {
                        endpoint: *endpoint,
                        node: node.to_string(),
                    })
                    .collect()
            } else {
                Vec::new()
            },
        }
    }

    /// Whether the user has a live endpoint on any node.
    pub fn is_online(&self) -> bool {
        !self.registrations.is_empty()
    }

    /// The live endpoints and the node holding each.
    pub fn registrations(&self) -> impl Iterator<Item = (EndpointId, &str)> {
        self.registrations.iter().map(|(e, n)| (*e, &**n))
    }

    /// A new live endpoint held by `node`. The user's first one reruns aggregation
    /// (the user comes online).
    pub fn register(&mut self, endpoint: EndpointId, node: &str, ctx: &Ctx<'_>) -> ChangeSet {
        let mut changes = ChangeSet {
            live: true,
            ..Default::default()
        };
        let first = self.registrations.is_empty();
        self.registrations.insert(endpoint, Arc::from(node));
        if first {
            let ctx = Ctx {
                online: true,
                ..*ctx
            };
            self.reaggregate(&ctx, &mut changes);
        }
        changes
    }

    fn ensure_fixed_outputs(&mut self, ctx: &Ctx<'_>) {
        for id in ctx.aggregator.output_containers() {
            self.containers
                .entry(id)
                .or_insert_with(|| Container::new(id));
        }
        let mut ignored = ChangeSet::default();
        for out in ctx.aggregator.fixed_outputs(&self.uri) {
            self.write_server(out, ctx, &mut ignored);
        }
    }

    pub fn uri(&self) -> &UserUri {
        &self.uri
    }

    pub fn containers(&self) -> impl Iterator<Item = &Container> {
        self.containers.values()
    }

    pub fn container(&self, id: ContainerId) -> Option<&Container> {
        self.containers.get(&id)
    }

    pub fn instances(&self) -> impl Iterator<Item = &CategoryInstance> {
        self.instances.values()
    }

    pub fn instance(&self, key: &InstanceKey) -> Option<&CategoryInstance> {
        self.instances.get(key)
    }

    /// The instances of one category in one container.
    pub fn instances_in(
        &self,
        container: ContainerId,
        category: &str,
    ) -> impl Iterator<Item = &CategoryInstance> + '_ {
        let start = InstanceKey::new(category, 0, container);
        let name = start.category.clone();
        self.instances
            .range(start..)
            .take_while(move |(k, _)| k.container == container && k.category == name)
            .map(|(_, v)| v)
    }

    pub fn subscribers(&self) -> &[SubscriberEntry] {
        &self.subscribers
    }

    pub fn is_disabled(&self) -> bool {
        self.disabled
    }

    /// Disables or re-enables the user (directory decision). Disabling removes the
    /// user-bound client data (the caller has ended the endpoints); static data stays
    /// for re-enabling. Every visible category changes for watchers.
    pub fn set_disabled(&mut self, disabled: bool, ctx: &Ctx<'_>) -> ChangeSet {
        if self.disabled == disabled {
            return ChangeSet::default();
        }
        self.disabled = disabled;
        let mut changes = ChangeSet {
            durable: true,
            ..Default::default()
        };
        for i in self.instances.values() {
            changes
                .categories
                .insert((i.key.container, i.key.category.clone()));
        }
        if disabled {
            self.remove_where(
                |i| i.expiry == Expiry::User && i.author == Author::Client,
                &mut changes,
            );
            self.reaggregate(ctx, &mut changes);
        }
        changes
    }

    /// Writes what the directory says about the user: the identity card, the details
    /// card (contactCard instance [`DETAILS_CARD_INSTANCE`] in 200, 300 and 400: seen
    /// by colleagues and closer, not by strangers or blocked watchers) and
    /// `userProperties` (instance 0 in the self container). `None` removes a card.
    /// Unchanged values notify nobody.
    pub fn set_directory_data(
        &mut self,
        display_name: &str,
        email: &str,
        details: Option<&str>,
        properties: Option<&str>,
        ctx: &Ctx<'_>,
    ) -> ChangeSet {
        let mut changes = self.set_identity(display_name, email, ctx);
        let cards = DETAILS_CONTAINERS
            .iter()
            .map(|c| {
                (
                    InstanceKey::new("contactCard", DETAILS_CARD_INSTANCE, cid(*c)),
                    details,
                )
            })
            .chain([(
                InstanceKey::new("userProperties", 0, ContainerId::SELF),
                properties,
            )]);
        for (key, value) in cards.collect::<Vec<_>>() {
            match value {
                Some(v) => {
                    self.containers
                        .entry(key.container)
                        .or_insert_with(|| Container::new(key.container));
                    let out = AggregateOutput {
                        key,
                        expiry: Expiry::Static,
                        value: v.to_string(),
                    };
                    self.write_server(out, ctx, &mut changes);
                }
                None => {
                    if self
                        .instances
                        .get(&key)
                        .is_some_and(|i| i.author == Author::Server)
                        && let Some(old) = self.instances.remove(&key)
                    {
                        changes.touch(&old);
                    }
                }
            }
        }
        changes
    }

    pub fn contacts(&self) -> &ContactList {
        &self.contacts
    }

    /// Changes the contact list with `change`; a refused change leaves it untouched.
    pub fn change_contacts<T>(
        &mut self,
        change: impl FnOnce(&mut ContactList) -> Result<T, ContactError>,
    ) -> Result<(T, ChangeSet), ContactError> {
        let mut list = self.contacts.clone();
        let out = change(&mut list)?;
        self.contacts = list;
        Ok((
            out,
            ChangeSet {
                contacts: true,
                durable: true,
                ..Default::default()
            },
        ))
    }

    /// Applies a publication batch all-or-nothing, then re-runs aggregation if an
    /// aggregation input changed. Rules: versions must match (0 for a new key), keys
    /// are unique within the batch, `expires = 0` deletes, values are single XML
    /// elements within [`MAX_VALUE_BYTES`], server-written keys are read-only, unknown
    /// container ids are created, and endpoint-bound instances need an endpoint.
    pub fn publish(
        &mut self,
        items: &[Publication],
        endpoint: Option<EndpointId>,
        ctx: &Ctx<'_>,
    ) -> Result<(Vec<PublishedItem>, ChangeSet), PublishError> {
        if items.is_empty() {
            return Err(PublishError::Empty);
        }
        if items.len() > MAX_PUBLICATIONS_PER_BATCH {
            return Err(PublishError::TooLarge(format!(
                "{} publications in one batch; the limit is {MAX_PUBLICATIONS_PER_BATCH}",
                items.len()
            )));
        }
        let mut seen: HashMap<InstanceKey, usize> = HashMap::new();
        let mut conflicts = Vec::new();
        let mut keys = Vec::with_capacity(items.len());
        let (mut added, mut removed) = (0usize, 0usize);
        let mut new_containers = BTreeSet::new();
        for (i, p) in items.iter().enumerate() {
            let index = i + 1;
            let invalid = |reason: String| PublishError::Invalid { index, reason };
            if !valid_category(&p.category) {
                return Err(invalid(format!("invalid category name {:?}", p.category)));
            }
            let key = InstanceKey::new(&p.category, p.instance, p.container);
            if let Some(first) = seen.insert(key.clone(), index) {
                return Err(PublishError::Duplicate { index, first });
            }
            let existing = self.instances.get(&key);
            if ctx.aggregator.is_output(&key)
                || existing.is_some_and(|e| e.author == Author::Server)
            {
                return Err(PublishError::ReadOnly {
                    index,
                    category: p.category.clone(),
                    instance: p.instance,
                    container: p.container.get(),
                });
            }
            if p.is_delete() {
                removed += usize::from(existing.is_some());
            } else {
                let value = p.value.as_deref().ok_or_else(|| {
                    invalid("a publication that is not a deletion needs a value".into())
                })?;
                if value.len() > MAX_VALUE_BYTES {
                    return Err(PublishError::TooLarge(format!(
                        "publication {index}: value of {} bytes; the limit is {MAX_VALUE_BYTES}",
                        value.len()
                    )));
                }
                xml::parse(value).map_err(|source| PublishError::InvalidXml { index, source })?;
                match p.expire_type {
                    ExpireType::Time => match p.expires {
                        Some(1..=MAX_TIME_EXPIRES_SECS) => {}
                        _ => {
                            return Err(invalid(format!(
                                "expire type time needs expires between 1 and {MAX_TIME_EXPIRES_SECS} seconds"
                            )));
                        }
                    },
                    ExpireType::Endpoint if endpoint.is_none() => {
                        return Err(PublishError::EndpointRequired { index });
                    }
                    _ => {}
                }
                added += usize::from(existing.is_none());
                if !self.containers.contains_key(&p.container) {
                    new_containers.insert(p.container);
                }
            }
            let current = existing.map_or(0, |e| e.version);
            if p.version != current {
                conflicts.push(Conflict {
                    index,
                    version: p.version,
                    current_version: current,
                });
            }
            keys.push(key);
        }
        if !conflicts.is_empty() {
            return Err(PublishError::Conflict(conflicts));
        }
        let (client_instances, mut client_bytes) = self
            .instances
            .values()
            .filter(|i| i.author == Author::Client)
            .fold((0usize, 0usize), |(n, b), i| (n + 1, b + i.value.len()));
        for (p, key) in items.iter().zip(&keys) {
            client_bytes -= self.instances.get(key).map_or(0, |i| i.value.len());
            client_bytes += p
                .value
                .as_deref()
                .filter(|_| !p.is_delete())
                .map_or(0, str::len);
        }
        if client_bytes > MAX_VALUE_BYTES_PER_PRESENTITY {
            return Err(PublishError::TooLarge(format!(
                "a presentity holds at most {MAX_VALUE_BYTES_PER_PRESENTITY} bytes of published values"
            )));
        }
        if client_instances + added - removed > MAX_INSTANCES_PER_PRESENTITY {
            return Err(PublishError::TooLarge(format!(
                "a presentity holds at most {MAX_INSTANCES_PER_PRESENTITY} category instances"
            )));
        }
        if self.containers.len() + new_containers.len() > MAX_CONTAINERS {
            return Err(PublishError::TooLarge(format!(
                "a presentity has at most {MAX_CONTAINERS} containers"
            )));
        }

        let now = ctx.stamper.now();
        let mut changes = ChangeSet::default();
        let mut results = Vec::with_capacity(items.len());
        let mut rerun = false;
        for c in new_containers {
            self.containers.insert(c, Container::new(c));
        }
        for (i, (p, key)) in items.iter().zip(keys).enumerate() {
            rerun |= ctx.aggregator.is_input(&key);
            if p.is_delete() {
                let version = match self.instances.remove(&key) {
                    Some(old) => {
                        changes.touch(&old);
                        old.version
                    }
                    None => 0,
                };
                results.push(PublishedItem {
                    index: i + 1,
                    category: p.category.clone(),
                    instance: p.instance,
                    container: p.container,
                    version,
                    publish_time: now,
                    deleted: true,
                });
                continue;
            }
            let expiry = match p.expire_type {
                ExpireType::Static => Expiry::Static,
                ExpireType::User => Expiry::User,
                ExpireType::Endpoint => Expiry::Endpoint {
                    endpoint: endpoint.expect("checked above"),
                },
                ExpireType::Time => {
                    let secs = p.expires.expect("checked above");
                    Expiry::Time {
                        at: now.plus_secs(secs),
                        secs,
                    }
                }
            };
            let inst = CategoryInstance {
                version: p.version + 1,
                expiry,
                publish_time: now,
                seq: ctx.stamper.next_seq(),
                author: Author::Client,
                value: Arc::from(p.value.as_deref().unwrap_or_default()),
                key: key.clone(),
            };
            changes.touch(&inst);
            results.push(PublishedItem {
                index: i + 1,
                category: p.category.clone(),
                instance: p.instance,
                container: p.container,
                version: inst.version,
                publish_time: now,
                deleted: false,
            });
            self.instances.insert(key, inst);
        }
        if rerun {
            self.reaggregate(ctx, &mut changes);
        }
        Ok((results, changes))
    }

    /// Re-runs aggregation and writes its outputs; outputs that did not change keep
    /// their version and publish time (and notify nobody).
    pub fn reaggregate(&mut self, ctx: &Ctx<'_>, changes: &mut ChangeSet) {
        let outputs = {
            let input = AggregationInput {
                uri: &self.uri,
                online: ctx.online,
                instances: self
                    .instances
                    .values()
                    .filter(|i| i.author == Author::Client && ctx.aggregator.is_input(&i.key))
                    .collect(),
            };
            ctx.aggregator.aggregate(&input)
        };
        let wanted: BTreeSet<&InstanceKey> = outputs.iter().map(|o| &o.key).collect();
        let stale: Vec<InstanceKey> = self
            .instances
            .values()
            .filter(|i| {
                i.author == Author::Server
                    && i.expiry == Expiry::User
                    && ctx.aggregator.is_output(&i.key)
                    && !wanted.contains(&i.key)
            })
            .map(|i| i.key.clone())
            .collect();
        for key in stale {
            if let Some(old) = self.instances.remove(&key) {
                changes.touch(&old);
            }
        }
        for out in outputs {
            self.write_server(out, ctx, changes);
        }
    }

    /// Publishes the server-owned identity card (contactCard instance 0: display name
    /// and email) into every container a watcher can see, so the user is
    /// recognisable to everybody, blocked watchers included. Clients cannot change it.
    pub fn set_identity(&mut self, display_name: &str, email: &str, ctx: &Ctx<'_>) -> ChangeSet {
        let value = xml::Element::new("contactCard")
            .with_attr("xmlns", CONTACT_CARD_NS)
            .with_child(
                xml::Element::new("identity")
                    .with_child(
                        xml::Element::new("name")
                            .with_child(xml::Element::new("displayName").with_text(display_name)),
                    )
                    .with_child(xml::Element::new("email").with_text(email)),
            )
            .to_xml();
        let mut changes = ChangeSet::default();
        for id in IDENTITY_CONTAINERS {
            let id = cid(id);
            self.containers
                .entry(id)
                .or_insert_with(|| Container::new(id));
            let out = AggregateOutput {
                key: InstanceKey::new("contactCard", 0, id),
                expiry: Expiry::Static,
                value: value.clone(),
            };
            self.write_server(out, ctx, &mut changes);
        }
        changes
    }

    fn write_server(&mut self, out: AggregateOutput, ctx: &Ctx<'_>, changes: &mut ChangeSet) {
        let version = match self.instances.get(&out.key) {
            Some(cur) if *cur.value == *out.value && cur.expiry == out.expiry => return,
            Some(cur) => cur.version + 1,
            None => 1,
        };
        let inst = CategoryInstance {
            version,
            expiry: out.expiry,
            publish_time: ctx.stamper.now(),
            seq: ctx.stamper.next_seq(),
            author: Author::Server,
            value: Arc::from(out.value),
            key: out.key.clone(),
        };
        changes.touch(&inst);
        self.instances.insert(out.key, inst);
    }

    fn remove_where(
        &mut self,
        pred: impl Fn(&CategoryInstance) -> bool,
        changes: &mut ChangeSet,
    ) -> bool {
        let doomed: Vec<InstanceKey> = self
            .instances
            .values()
            .filter(|i| pred(i))
            .map(|i| i.key.clone())
            .collect();
        let mut input_changed = false;
        for key in doomed {
            if let Some(old) = self.instances.remove(&key) {
                changes.touch(&old);
                input_changed = true;
            }
        }
        input_changed
    }

    /// An endpoint went away: its registration and endpoint-bound instances die; if
    /// it was the user's last endpoint (`ctx.online == false`) the user-bound ones die
    /// too. Aggregation reruns either way.
    pub fn remove_endpoint(&mut self, endpoint: EndpointId, ctx: &Ctx<'_>) -> ChangeSet {
        let mut changes = ChangeSet {
            live: self.registrations.remove(&endpoint).is_some(),
            ..Default::default()
        };
        let online = ctx.online;
        self.remove_where(
            |i| match i.expiry {
                Expiry::Endpoint { endpoint: e } => e == endpoint,
                Expiry::User => !online && i.author == Author::Client,
                _ => false,
            },
            &mut changes,
        );
        self.reaggregate(ctx, &mut changes);
        changes
    }

    /// Removes `time` instances whose deadline is at or before `now`.
    pub fn expire(&mut self, now: Timestamp, ctx: &Ctx<'_>) -> ChangeSet {
        let mut changes = ChangeSet::default();
        let aggregator = ctx.aggregator;
        let mut rerun = false;
        let doomed: Vec<InstanceKey> = self
            .instances
            .values()
            .filter(|i| matches!(i.expiry, Expiry::Time { at, .. } if at <= now))
            .map(|i| i.key.clone())
            .collect();
        for key in doomed {
            rerun |= aggregator.is_input(&key);
            if let Some(old) = self.instances.remove(&key) {
                changes.touch(&old);
            }
        }
        if rerun {
            self.reaggregate(ctx, &mut changes);
        }
        changes
    }

    /// The earliest deadline of a `time` instance.
    pub fn next_expiry(&self) -> Option<Timestamp> {
        self.instances
            .values()
            .filter_map(|i| match i.expiry {
                Expiry::Time { at, .. } => Some(at),
                _ => None,
            })
            .min()
    }

    /// Applies membership changes all-or-nothing. Containers 0-3 are fixed by the
    /// server; each changed container's version goes up by one.
    pub fn update_containers(
        &mut self,
        updates: &[ContainerUpdate],
    ) -> Result<ChangeSet, MembershipError> {
        let mut conflicts = Vec::new();
        let mut seen = BTreeSet::new();
        let mut new_count = 0;
        for (i, u) in updates.iter().enumerate() {
            let index = i + 1;
            if u.id.is_local() {
                return Err(MembershipError::Fixed(u.id.get()));
            }
            if !seen.insert(u.id) {
                return Err(MembershipError::Invalid {
                    index,
                    reason: format!("container {} appears twice", u.id.get()),
                });
            }
            if u.add.len() + u.remove.len() > 2 * MAX_MEMBERS_PER_CONTAINER {
                return Err(MembershipError::TooLarge(format!(
                    "update {index} lists {} members; the limit is {}",
                    u.add.len() + u.remove.len(),
                    2 * MAX_MEMBERS_PER_CONTAINER
                )));
            }
            if let Some(m) = u.add.iter().find(|m| u.remove.contains(m)) {
                return Err(MembershipError::Invalid {
                    index,
                    reason: format!(
                        "adds and removes the same member ({} {:?})",
                        m.kind(),
                        m.value()
                    ),
                });
            }
            let existing = self.containers.get(&u.id);
            new_count += usize::from(existing.is_none());
            let current = existing.map_or(0, |c| c.version);
            if u.version != current {
                conflicts.push(Conflict {
                    index,
                    version: u.version,
                    current_version: current,
                });
            }
            let members = existing.map_or(&[][..], |c| &c.members[..]);
            let after = members.iter().filter(|m| !u.remove.contains(m)).count()
                + u.add
                    .iter()
                    .collect::<BTreeSet<_>>()
                    .iter()
                    .filter(|m| !members.contains(m))
                    .count();
            if after > MAX_MEMBERS_PER_CONTAINER {
                return Err(MembershipError::TooLarge(format!(
                    "container {} would have {after} members; the limit is {MAX_MEMBERS_PER_CONTAINER}",
                    u.id.get()
                )));
            }
        }
        if !conflicts.is_empty() {
            return Err(MembershipError::Conflict(conflicts));
        }
        if self.containers.len() + new_count > MAX_CONTAINERS {
            return Err(MembershipError::TooLarge(format!(
                "a presentity has at most {MAX_CONTAINERS} containers"
            )));
        }
        let mut changes = ChangeSet {
            durable: true,
            ..Default::default()
        };
        for u in updates {
            let c = self
                .containers
                .entry(u.id)
                .or_insert_with(|| Container::new(u.id));
            c.members.retain(|m| !u.remove.contains(m));
            for m in &u.add {
                if !c.members.contains(m) {
                    c.members.push(m.clone());
                }
            }
            c.version += 1;
            changes.containers.insert(u.id);
        }
        Ok(changes)
    }

    /// Records a watcher who subscribed with a context. A repeated subscription
    /// replaces the entry (and asks the owner again).
    pub fn add_subscriber(&mut self, entry: SubscriberEntry) -> ChangeSet {
        // Already waiting for the owner: nothing to store or tell again.
        if self
            .subscribers
            .iter()
            .any(|s| s.user == entry.user && !s.acknowledged)
        {
            return ChangeSet::default();
        }
        self.subscribers.retain(|s| s.user != entry.user);
        self.subscribers.push(entry);
        if self.subscribers.len() > MAX_SUBSCRIBER_ENTRIES {
            self.subscribers.remove(0);
        }
        ChangeSet {
            subscribers: true,
            durable: true,
            ..Default::default()
        }
    }

    /// The owner acknowledged a subscriber: the entry is deleted.
    pub fn acknowledge_subscriber(&mut self, user: &UserUri) -> Result<ChangeSet, NotASubscriber> {
        let before = self.subscribers.len();
        self.subscribers.retain(|s| &s.user != user);
        if self.subscribers.len() == before {
            return Err(NotASubscriber(user.clone()));
        }
        Ok(ChangeSet {
            subscribers: true,
            durable: true,
            ..Default::default()
        })
    }
}
