//! Shared helpers for the integration tests of presence-model: a controllable clock,
//! contexts, publication builders and small readers of aggregate outputs.
#![allow(dead_code)]

use presence_model::container::{ContainerId, Member};
use presence_model::document::{Ctx, PresentityDoc, Stamper};
use presence_model::instance::{CategoryInstance, EndpointId, ExpireType, InstanceKey};
use presence_model::publication::{Publication, PublishError, PublishedItem};
use presence_model::summary::{self, Summary};
use presence_model::time::Timestamp;
use presence_model::uri::UserUri;
use presence_model::xml::{self, Element};
use presence_model::{BuiltinAggregator, ChangeSet};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

pub static AGG: BuiltinAggregator = BuiltinAggregator;

/// 2023-11-14T22:13:20Z, an arbitrary but fixed start time.
pub const T0: i64 = 1_700_000_000_000;

pub const STATE_NS: &str = "http://schemas.microsoft.com/2006/09/sip/state";
pub const XSI_NS: &str = "http://www.w3.org/2001/XMLSchema-instance";

/// A clock the test moves by hand, plus the engine-wide publication counter.
#[derive(Debug)]
pub struct TestClock {
    now: AtomicI64,
    seq: AtomicU64,
}

impl Default for TestClock {
    fn default() -> Self {
        Self::new()
    }
}

impl TestClock {
    pub fn new() -> Self {
        Self::at(T0)
    }

    pub fn at(ms: i64) -> Self {
        TestClock {
            now: AtomicI64::new(ms),
            seq: AtomicU64::new(0),
        }
    }

    pub fn advance_ms(&self, ms: i64) {
        self.now.fetch_add(ms, Ordering::SeqCst);
    }

    pub fn advance_secs(&self, secs: i64) {
        self.advance_ms(secs * 1000);
    }

    pub fn set(&self, t: Timestamp) {
        self.now.store(t.millis(), Ordering::SeqCst);
    }

    /// The last sequence number handed out (0 if none yet).
    pub fn last_seq(&self) -> u64 {
        self.seq.load(Ordering::SeqCst)
    }
}

impl Stamper for TestClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_millis(self.now.load(Ordering::SeqCst))
    }

    fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::SeqCst) + 1
    }
}

pub fn ctx(clock: &TestClock, online: bool) -> Ctx<'_> {
    Ctx {
        aggregator: &AGG,
        stamper: clock,
        online,
    }
}

pub fn uri(s: &str) -> UserUri {
    UserUri::parse(s).expect("valid test uri")
}

pub fn owner() -> UserUri {
    uri("alice@example.com")
}

pub fn cid(id: u64) -> ContainerId {
    ContainerId::new(id).expect("valid test container id")
}

pub fn user(s: &str) -> Member {
    Member::User(uri(s))
}

pub fn domain(s: &str) -> Member {
    Member::Domain(s.to_ascii_lowercase())
}

/// A freshly provisioned document for alice@example.com.
pub fn new_doc(clock: &TestClock) -> PresentityDoc {
    PresentityDoc::provision(owner(), &ctx(clock, true))
}

pub fn key(category: &str, instance: u32, container: u64) -> InstanceKey {
    InstanceKey::new(category, instance, cid(container))
}

pub fn get<'d>(
    doc: &'d PresentityDoc,
    category: &str,
    instance: u32,
    container: u64,
) -> Option<&'d CategoryInstance> {
    doc.instance(&key(category, instance, container))
}

// ---------------------------------------------------------------- publications

pub fn publication(
    category: &str,
    instance: u32,
    container: u64,
    version: u32,
    expire_type: ExpireType,
    expires: Option<u64>,
    value: Option<&str>,
) -> Publication {
    Publication {
        category: category.to_string(),
        instance,
        container: cid(container),
        version,
        expire_type,
        expires,
        value: value.map(str::to_string),
    }
}

pub fn static_pub(
    category: &str,
    instance: u32,
    container: u64,
    version: u32,
    value: &str,
) -> Publication {
    publication(
        category,
        instance,
        container,
        version,
        ExpireType::Static,
        None,
        Some(value),
    )
}

pub fn user_pub(
    category: &str,
    instance: u32,
    container: u64,
    version: u32,
    value: &str,
) -> Publication {
    publication(
        category,
        instance,
        container,
        version,
        ExpireType::User,
        None,
        Some(value),
    )
}

pub fn endpoint_pub(
    category: &str,
    instance: u32,
    container: u64,
    version: u32,
    value: &str,
) -> Publication {
    publication(
        category,
        instance,
        container,
        version,
        ExpireType::Endpoint,
        None,
        Some(value),
    )
}

pub fn time_pub(
    category: &str,
    instance: u32,
    container: u64,
    version: u32,
    secs: u64,
    value: &str,
) -> Publication {
    publication(
        category,
        instance,
        container,
        version,
        ExpireType::Time,
        Some(secs),
        Some(value),
    )
}

pub fn delete_pub(category: &str, instance: u32, container: u64, version: u32) -> Publication {
    publication(
        category,
        instance,
        container,
        version,
        ExpireType::Static,
        Some(0),
        None,
    )
}

/// Publishes and unwraps, with a readable failure.
pub fn publish_ok(
    doc: &mut PresentityDoc,
    items: &[Publication],
    endpoint: Option<EndpointId>,
    ctx: &Ctx<'_>,
) -> (Vec<PublishedItem>, ChangeSet) {
    match doc.publish(items, endpoint, ctx) {
        Ok(r) => r,
        Err(e) => panic!("publication refused: {e:?}"),
    }
}

pub fn publish_err(
    doc: &mut PresentityDoc,
    items: &[Publication],
    endpoint: Option<EndpointId>,
    ctx: &Ctx<'_>,
) -> PublishError {
    match doc.publish(items, endpoint, ctx) {
        Ok(r) => panic!("publication unexpectedly accepted: {r:?}"),
        Err(e) => e,
    }
}

// ---------------------------------------------------------------- values

pub fn note_xml(text: &str) -> String {
    format!(
        r#"<note xmlns="http://schemas.microsoft.com/2006/09/sip/note"><body type="personal">{}</body></note>"#,
        xml::escape(text)
    )
}

/// A `state` value of the given xsi:type, with an optional availability and extra
/// child markup (activities and the like).
pub fn state_xml(kind: &str, availability: Option<u32>, extra: &str) -> String {
    let avail = availability
        .map(|a| format!("<availability>{a}</availability>"))
        .unwrap_or_default();
    format!(
        r#"<state xmlns="{STATE_NS}" xmlns:xsi="{XSI_NS}" xsi:type="{kind}">{avail}{extra}</state>"#
    )
}

pub fn machine_state(availability: u32) -> String {
    state_xml("machineState", Some(availability), "")
}

pub fn user_state(availability: u32) -> String {
    state_xml("userState", Some(availability), "")
}

// ---------------------------------------------------------------- readers

/// The parsed value of an instance.
pub fn parsed(inst: &CategoryInstance) -> Element {
    xml::parse(&inst.value).expect("stored values are well-formed")
}

/// The aggregateState (state instance 1) of a container, parsed.
pub fn aggregate_root(doc: &PresentityDoc, container: u64) -> Option<Element> {
    get(doc, "state", 1, container).map(parsed)
}

/// The summary of the aggregateState (state instance 1) of a container.
pub fn aggregate_summary(doc: &PresentityDoc, container: u64) -> Option<Summary> {
    get(doc, "state", 1, container).and_then(|i| summary::summarize("state", &i.value))
}

pub fn aggregate_availability(doc: &PresentityDoc, container: u64) -> Option<u32> {
    aggregate_summary(doc, container).and_then(|s| s.availability)
}

pub fn aggregate_activity(doc: &PresentityDoc, container: u64) -> Option<String> {
    aggregate_summary(doc, container).and_then(|s| s.activity)
}
