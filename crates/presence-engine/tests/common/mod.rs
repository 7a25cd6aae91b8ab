//! Shared fixtures for the engine's integration tests: an engine on a fresh store,
//! publication builders and delivery helpers.
//!
//! The store is a test parameter: SQLite in the fixture's directory by default, or
//! NATS JetStream KV when `PRESENCED_TEST_NATS_URL` names a server (fresh buckets per
//! fixture, named after its directory). `scripts/test` runs this suite both ways.
#![allow(dead_code)]

use presence_engine::{CategoryView, Delivery, Engine, EngineConfig, SelfUpdate, Subscriber};
use presence_model::summary::summarize;
use presence_model::{BuiltinAggregator, ContainerId, ExpireType, Publication, UserUri};
use presence_store::Stores;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tempfile::TempDir;

/// How long a test waits for a delivery that must come.
pub const ARRIVAL: Duration = Duration::from_secs(5);
/// How long a test waits to be sure a delivery does not come. Under paused time this
/// also advances the clock by this much.
pub const QUIET: Duration = Duration::from_millis(100);

pub fn uri(s: &str) -> UserUri {
    UserUri::parse(s).expect("valid test uri")
}

pub fn cid(id: u64) -> ContainerId {
    ContainerId::new(id).expect("valid container id")
}

pub fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// An engine with its data directory (kept alive as long as the fixture).
pub struct Fixture {
    pub dir: TempDir,
    pub engine: Engine,
}

impl Fixture {
    pub fn new(users: &[&str]) -> Fixture {
        Fixture::with_config(EngineConfig::default(), users)
    }

    pub fn with_config(config: EngineConfig, users: &[&str]) -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        let engine = open_engine(dir.path(), config);
        let users: Vec<UserUri> = users.iter().map(|u| uri(u)).collect();
        engine.provision(&users).expect("provision");
        Fixture { dir, engine }
    }

    /// A second engine on the same data directory (a restart).
    pub fn reopen(&self) -> Engine {
        open_engine(self.dir.path(), EngineConfig::default())
    }
}

/// The environment variable that puts the suite on a NATS server.
pub const NATS_URL_ENV: &str = "PRESENCED_TEST_NATS_URL";

/// The store of a fixture's directory: what a restart or another process opens.
pub fn open_stores(dir: &Path) -> Stores {
    match std::env::var(NATS_URL_ENV) {
        Ok(url) => {
            let name = dir
                .file_name()
                .expect("a named directory")
                .to_string_lossy();
            let prefix: String = name.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
            let mut options = presence_store::NatsOptions::new(vec![url], "test");
            options.bucket_prefix = format!("t{prefix}");
            options.replicas = 1;
            Stores::nats(options).expect("open the NATS store")
        }
        Err(_) => Stores::sqlite(dir).expect("open store"),
    }
}

pub fn open_engine(dir: &Path, config: EngineConfig) -> Engine {
    Engine::new(open_stores(dir), Arc::new(BuiltinAggregator), config).expect("engine")
}

pub fn state_xml(kind: &str, availability: u32) -> String {
    format!(
        r#"<state xmlns="http://schemas.microsoft.com/2006/09/sip/state" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="{kind}"><availability>{availability}</availability></state>"#
    )
}

pub fn note_xml(text: &str) -> String {
    format!(
        r#"<note xmlns="http://schemas.microsoft.com/2006/09/sip/note"><body type="personal" uri="">{text}</body></note>"#
    )
}

pub fn publication(
    category: &str,
    instance: u32,
    container: u64,
    version: u32,
    expire_type: ExpireType,
    expires: Option<u64>,
    value: String,
) -> Publication {
    Publication {
        category: category.to_string(),
        instance,
        container: cid(container),
        version,
        expire_type,
        expires,
        value: Some(value),
    }
}

/// A machineState (endpoint-bound) in aggregation container `container`.
pub fn machine_state(container: u64, version: u32, availability: u32) -> Publication {
    publication(
        "state",
        0x3000_0000,
        container,
        version,
        ExpireType::Endpoint,
        None,
        state_xml("machineState", availability),
    )
}

/// A userState (user-bound) in aggregation container `container`.
pub fn user_state(container: u64, version: u32, availability: u32) -> Publication {
    publication(
        "state",
        0x2000_0000,
        container,
        version,
        ExpireType::User,
        None,
        state_xml("userState", availability),
    )
}

/// A personal note, instance 0.
pub fn note(
    container: u64,
    version: u32,
    expire_type: ExpireType,
    expires: Option<u64>,
    text: &str,
) -> Publication {
    publication(
        "note",
        0,
        container,
        version,
        expire_type,
        expires,
        note_xml(text),
    )
}

/// Waits for the next batch; fails the test if none comes within [`ARRIVAL`].
pub async fn recv(sub: &Subscriber) -> Vec<Delivery> {
    tokio::time::timeout(ARRIVAL, sub.next())
        .await
        .expect("a delivery should have arrived")
}

/// Waits for a batch holding exactly one delivery and returns it.
pub async fn recv_one(sub: &Subscriber) -> Delivery {
    let mut batch = recv(sub).await;
    assert_eq!(
        batch.len(),
        1,
        "expected exactly one delivery, got {batch:#?}"
    );
    batch.pop().expect("one")
}

/// Fails the test if anything is delivered within [`QUIET`].
pub async fn assert_quiet(sub: &Subscriber) {
    if let Ok(batch) = tokio::time::timeout(QUIET, sub.next()).await {
        panic!("expected no delivery, got {batch:#?}");
    }
}

/// Takes whatever is queued right now (the snapshots a subscribe just pushed).
pub async fn drain(sub: &Subscriber) {
    while sub.pending() > 0 {
        recv(sub).await;
    }
}

/// The uri and views of a `Delivery::Categories`.
pub fn categories(d: &Delivery) -> (&UserUri, &[Arc<CategoryView>]) {
    match d {
        Delivery::Categories { uri, views, .. } => (uri, views),
        other => panic!("expected Delivery::Categories, got {other:#?}"),
    }
}

/// The self update of a `Delivery::Own`.
pub fn own(d: &Delivery) -> &SelfUpdate {
    match d {
        Delivery::Own { update, .. } => update,
        other => panic!("expected Delivery::Own, got {other:#?}"),
    }
}

/// Receives one `Delivery::Categories` for `from`; returns its views.
pub async fn recv_views(sub: &Subscriber, from: &UserUri) -> Vec<Arc<CategoryView>> {
    let d = recv_one(sub).await;
    let (u, views) = categories(&d);
    assert_eq!(u, from, "delivery for the wrong presentity");
    views.to_vec()
}

/// The view named `name` in `views`.
pub fn view<'a>(views: &'a [Arc<CategoryView>], name: &str) -> &'a Arc<CategoryView> {
    views
        .iter()
        .find(|v| &*v.name == name)
        .unwrap_or_else(|| panic!("no {name} view in {views:#?}"))
}

pub fn view_names(views: &[Arc<CategoryView>]) -> Vec<String> {
    let mut n: Vec<String> = views.iter().map(|v| v.name.to_string()).collect();
    n.sort();
    n
}

/// The availability of the single instance of a state view.
pub fn availability(v: &CategoryView) -> u32 {
    assert_eq!(&*v.name, "state");
    assert_eq!(v.instances.len(), 1, "expected one state instance: {v:#?}");
    summarize("state", &v.instances[0].value)
        .and_then(|s| s.availability)
        .expect("state has an availability")
}

/// The note text of the single instance of a note view.
pub fn note_text(v: &CategoryView) -> String {
    assert_eq!(&*v.name, "note");
    assert_eq!(v.instances.len(), 1, "expected one note instance: {v:#?}");
    summarize("note", &v.instances[0].value)
        .and_then(|s| s.note)
        .expect("note has text")
}

/// The memberships every provisioned user starts with: 100 = {federated},
/// 200 = {sameEnterprise}, 32000 = {} (each at version 1); any other container
/// (those the aggregator writes into) is empty.
pub fn assert_default_memberships(containers: &[presence_model::Container]) {
    use presence_model::Member;
    let find = |id: u64| {
        containers
            .iter()
            .find(|c| c.id == cid(id))
            .unwrap_or_else(|| panic!("container {id} missing from {containers:#?}"))
    };
    assert_eq!(find(100).members, vec![Member::Federated]);
    assert_eq!(find(200).members, vec![Member::SameEnterprise]);
    assert!(find(32000).members.is_empty());
    for id in [100, 200, 32000] {
        assert_eq!(find(id).version, 1, "container {id}");
    }
    for c in containers
        .iter()
        .filter(|c| ![100, 200, 32000].contains(&c.id.get()))
    {
        assert!(c.members.is_empty(), "unexpected members in {c:#?}");
    }
}
