//! The aggregation script: turns the per-device `state` and `device` instances a
//! user's endpoints publish into containers 2 and 3 into the user-level results
//! watchers see (aggregateState, aggregateMachineState, legacyInterop, services).
//!
//! [`Aggregator`] is a trait so a scripted aggregator can replace the built-in one.
//! [`BuiltinAggregator`] follows MS-PRES and the OCS 2007 R2 aggregation script:
//!
//! * machine states order by availability (Active < Inactive < Away < Off); the most
//!   active machine wins, ties going to the newest;
//! * the newest user state, plus every non-user state published after it, is
//!   considered, and the *least available* (highest number) of those wins; with no user
//!   state every state with an availability is considered. Of the machine states only
//!   the most active machine takes part;
//! * an activity applies only while the result lies in its [min, max] availability
//!   window; of those that apply, the highest `minAvailability` wins, then the newest;
//! * container 2's inputs feed containers 2, 100, 200 and 400; container 3's feed 3 and
//!   300 (so a Do-Not-Disturb user can still be reached by the workgroup). Container 100
//!   gets the availability only;
//! * container 32000 always shows 18500 (offline), whatever the inputs;
//! * with no endpoint signed in, no user-level result exists: watchers see offline.
//!
//! "Newer" is decided by the server's publication order, never a client clock.

use crate::container::ContainerId;
use crate::instance::{Author, CategoryInstance, Expiry, InstanceKey};
use crate::uri::UserUri;
use crate::xml::{self, Element, Node};

pub const STATE_NS: &str = "http://schemas.microsoft.com/2006/09/sip/state";
pub const SERVICE_NS: &str = "http://schemas.microsoft.com/2006/09/sip/service";
pub const CATEGORIES_NS: &str = "http://schemas.microsoft.com/2006/09/sip/categories";
pub const XSI_NS: &str = "http://www.w3.org/2001/XMLSchema-instance";

/// Availability every blocked watcher sees.
pub const BLOCKED_AVAILABILITY: u32 = 18500;
/// Instance id of the aggregate state (the "user-level" state).
pub const AGGREGATE_STATE_INSTANCE: u32 = 1;
/// Instance id of aggregateMachineState (0x10000000).
pub const AGGREGATE_MACHINE_STATE_INSTANCE: u32 = 0x1000_0000;

const SET_1_TARGETS: [u16; 4] = [2, 100, 200, 400];
const SET_2_TARGETS: [u16; 2] = [3, 300];
const REMOTE_AGGREGATE_CONTAINERS: [u16; 5] = [100, 200, 300, 400, 32000];
const SERVICE_CONTAINERS: [u16; 6] = [2, 100, 200, 300, 400, 32000];
const STATE_CONTAINERS: [u16; 7] = [2, 3, 100, 200, 300, 400, 32000];

/// One instance the aggregator wants to exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggregateOutput {
    pub key: InstanceKey,
    pub expiry: Expiry,
    pub value: String,
}

/// What an aggregator reads: the user, whether any endpoint is signed in, and the
/// client-written `state`/`device` instances of containers 2 and 3.
pub struct AggregationInput<'a> {
    pub uri: &'a UserUri,
    pub online: bool,
    pub instances: Vec<&'a CategoryInstance>,
}

pub trait Aggregator: Send + Sync {
    /// Keys the aggregator writes. Clients may not publish into them.
    fn is_output(&self, key: &InstanceKey) -> bool;
    /// Keys whose change makes the aggregation run again.
    fn is_input(&self, key: &InstanceKey) -> bool;
    /// Containers the aggregator writes into. They are created with the presentity,
    /// so aggregation never creates containers (and never breaks the container limit).
    fn output_containers(&self) -> Vec<ContainerId>;
    /// Outputs that exist whatever the inputs (the blocked container's offline view).
    fn fixed_outputs(&self, uri: &UserUri) -> Vec<AggregateOutput>;
    /// The user-bound outputs for these inputs.
    fn aggregate(&self, input: &AggregationInput<'_>) -> Vec<AggregateOutput>;
}

#[derive(Debug, Default, Clone, Copy)]
pub struct BuiltinAggregator;

/// A `state` input, decoded.
struct StateInput<'a> {
    inst: &'a CategoryInstance,
    kind: String,
    availability: Option<u32>,
    root: Element,
}

impl StateInput<'_> {
    fn activities(&self) -> impl Iterator<Item = &Element> {
        self.root.elements().filter(|e| e.name == "activity")
    }
}

fn bound(el: &Element, attr: &str, default: u32) -> u32 {
    el.attr(attr)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn state_root(kind: &str) -> Element {
    Element::new("state")
        .with_attr("xmlns", STATE_NS)
        .with_attr("xmlns:xsi", XSI_NS)
        .with_attr("xsi:type", kind)
}

fn availability_el(a: u32) -> Element {
    Element::new("availability").with_text(a.to_string())
}

fn output(
    category: &str,
    instance: u32,
    container: u16,
    expiry: Expiry,
    value: String,
) -> AggregateOutput {
    AggregateOutput {
        key: InstanceKey::new(
            category,
            instance,
            ContainerId::new(container as u64).expect("well-known id"),
        ),
        expiry,
        value,
    }
}

fn legacy_interop(availability: u32, token: Option<&str>) -> String {
    let mut el = Element::new("legacyInterop")
        .with_attr("xmlns", CATEGORIES_NS)
        .with_attr("availability", availability.to_string());
    if let Some(t) = token {
        el = el.with_attr("token", t);
    }
    el.to_xml()
}

/// Elements of a state copied into the full aggregate when present.
const CARRIED: [&str; 5] = [
    "endpointLocation",
    "timeZoneBias",
    "timeZoneName",
    "timeZoneAbbreviation",
    "device",
];

impl BuiltinAggregator {
    fn decode<'a>(inst: &'a CategoryInstance) -> Option<StateInput<'a>> {
        let root = xml::parse(&inst.value).ok()?;
        let kind = root.attr("type").unwrap_or("").to_string();
        if kind == "aggregateState" || kind == "aggregateMachineState" {
            return None;
        }
        let availability = root
            .child("availability")
            .and_then(|a| a.text().parse().ok())
            .filter(|a| *a > 0);
        Some(StateInput {
            inst,
            kind,
            availability,
            root,
        })
    }

    /// Aggregates one input set; returns outputs for its targets.
    fn aggregate_set(
        &self,
        states: &[StateInput<'_>],
        set_1: bool,
        out: &mut Vec<AggregateOutput>,
    ) {
        let best_machine = states
            .iter()
            .filter(|s| s.kind == "machineState" && s.availability.is_some())
            .min_by_key(|s| (s.availability, std::cmp::Reverse(s.inst.seq)));
        let user_state = states
            .iter()
            .filter(|s| s.kind == "userState" && s.availability.is_some())
            .max_by_key(|s| s.inst.seq);
        let since = user_state.map(|u| u.inst.seq).unwrap_or(0);
        let mut considered: Vec<&StateInput> = states
            .iter()
            .filter(|s| {
                s.availability.is_some() && s.kind != "userState" && s.kind != "machineState"
            })
            .filter(|s| s.inst.seq > since || user_state.is_none())
            .collect();
        if let Some(m) = best_machine.filter(|m| m.inst.seq > since || user_state.is_none()) {
            considered.push(m);
        }
        considered.extend(user_state);
        let Some(availability) = considered.iter().filter_map(|s| s.availability).max() else {
            return;
        };
        considered.sort_by_key(|s| s.inst.seq);

        // States without availability (an out-of-office calendar state) still offer
        // activities; they are gated like every other activity.
        let activity = states
            .iter()
            .filter(|s| s.availability.is_none())
            .chain(considered.iter().copied())
            .flat_map(|s| s.activities().map(move |a| (s, a)))
            .filter(|(_, a)| {
                bound(a, "minAvailability", 0) <= availability
                    && availability <= bound(a, "maxAvailability", u32::MAX)
                    && (a.attr("token").is_some() || a.child("custom").is_some())
            })
            .max_by_key(|(s, a)| (bound(a, "minAvailability", 0), s.inst.seq))
            .map(|(_, a)| a.clone());
        let token = activity
            .as_ref()
            .and_then(|a| a.attr("token"))
            .map(str::to_string);

        let mut full = state_root("aggregateState").with_child(availability_el(availability));
        if let Some(a) = activity {
            full.children.push(Node::Element(a));
        }
        for name in CARRIED {
            if let Some(el) = considered.iter().rev().find_map(|s| s.root.child(name)) {
                full.children.push(Node::Element(el.clone()));
            }
        }
        let full = full.to_xml();
        let targets: &[u16] = if set_1 {
            &SET_1_TARGETS
        } else {
            &SET_2_TARGETS
        };
        for &c in targets {
            let value = if c == 100 {
                state_root("aggregateState")
                    .with_child(availability_el(availability))
                    .to_xml()
            } else {
                full.clone()
            };
            out.push(output(
                "state",
                AGGREGATE_STATE_INSTANCE,
                c,
                Expiry::User,
                value,
            ));
            if c >= 100 {
                let t = if c == 100 { None } else { token.as_deref() };
                out.push(output(
                    "legacyInterop",
                    1,
                    c,
                    Expiry::User,
                    legacy_interop(availability, t),
                ));
            }
        }
        if set_1 && let Some(m) = best_machine {
            let endpoint_id = m
                .root
                .attr("endpointId")
                .map(str::to_string)
                .unwrap_or_else(|| match m.inst.expiry {
                    Expiry::Endpoint { endpoint } => format!("{:016x}", endpoint.0),
                    _ => String::new(),
                });
            let value = state_root("aggregateMachineState")
                .with_attr("endpointId", endpoint_id)
                .with_child(availability_el(m.availability.unwrap_or(0)))
                .to_xml();
            out.push(output(
                "state",
                AGGREGATE_MACHINE_STATE_INSTANCE,
                2,
                Expiry::User,
                value,
            ));
        }
    }

    /// services: for each capability any device offers, the most available device
    /// that offers it (by that endpoint's machine state).
    fn services(
        &self,
        uri: &UserUri,
        input: &AggregationInput<'_>,
        machines: &[StateInput<'_>],
        out: &mut Vec<AggregateOutput>,
    ) {
        let machine_of = |inst: &CategoryInstance| match inst.expiry {
            Expiry::Endpoint { endpoint } => machines
                .iter()
                .filter(|m| {
                    m.kind == "machineState" && m.inst.expiry == Expiry::Endpoint { endpoint }
                })
                .filter_map(|m| m.availability)
                .min(),
            _ => None,
        };
        let mut best: Vec<(Element, Option<u32>, String)> = Vec::new();
        for dev in input.instances.iter().filter(|i| {
            &*i.key.category == "device" && i.key.container == ContainerId::AGGREGATION_1
        }) {
            let Ok(root) = xml::parse(&dev.value) else {
                continue;
            };
            let avail = machine_of(dev);
            let endpoint_id = root.attr("endpointId").unwrap_or("").to_string();
            for caps in root.elements().filter(|e| e.name == "capabilities") {
                for cap in caps.elements() {
                    let better = |cur: Option<u32>| match (avail, cur) {
                        (Some(a), Some(c)) => a < c,
                        (Some(_), None) => true,
                        _ => false,
                    };
                    match best.iter_mut().find(|(c, _, _)| c.name == cap.name) {
                        Some(slot) if better(slot.1) => {
                            *slot = (cap.clone(), avail, endpoint_id.clone())
                        }
                        Some(_) => {}
                        None => best.push((cap.clone(), avail, endpoint_id.clone())),
                    }
                }
            }
        }
        if best.is_empty() {
            return;
        }
        for c in SERVICE_CONTAINERS.iter().copied().filter(|c| *c != 32000) {
            let mut caps = Element::new("capabilities");
            for (cap, avail, ep) in &best {
                let mut el = Element::new(&cap.name);
                for (k, v) in &cap.attrs {
                    if c != 2 && k == "publish" {
                        continue;
                    }
                    el = el.with_attr(k, v.clone());
                }
                if let Some(a) = avail {
                    el = el.with_attr("deviceAvailability", a.to_string());
                }
                if c == 2 && !ep.is_empty() {
                    el = el.with_attr("preferredEndpointId", ep.clone());
                }
                caps = caps.with_child(el);
            }
            let services = Element::new("services")
                .with_attr("xmlns", SERVICE_NS)
                .with_child(
                    Element::new("service")
                        .with_attr("uri", uri.to_sip())
                        .with_child(caps),
                );
            out.push(output("services", 0, c, Expiry::User, services.to_xml()));
        }
    }
}

impl Aggregator for BuiltinAggregator {
    fn is_output(&self, key: &InstanceKey) -> bool {
        let c = key.container.get();
        match (&*key.category, key.instance) {
            ("state", AGGREGATE_STATE_INSTANCE) => STATE_CONTAINERS.contains(&c),
            ("state", AGGREGATE_MACHINE_STATE_INSTANCE) => c == 2,
            ("services", 0) => SERVICE_CONTAINERS.contains(&c),
            ("legacyInterop", 1) => REMOTE_AGGREGATE_CONTAINERS.contains(&c),
            _ => false,
        }
    }

    fn is_input(&self, key: &InstanceKey) -> bool {
        matches!(&*key.category, "state" | "device")
            && (key.container == ContainerId::AGGREGATION_1
                || key.container == ContainerId::AGGREGATION_2)
    }

    fn output_containers(&self) -> Vec<ContainerId> {
        STATE_CONTAINERS
            .iter()
            .map(|c| ContainerId::new(*c as u64).expect("well-known id"))
            .collect()
    }

    fn fixed_outputs(&self, _uri: &UserUri) -> Vec<AggregateOutput> {
        let blocked = BLOCKED_AVAILABILITY;
        vec![
            output(
                "state",
                AGGREGATE_STATE_INSTANCE,
                32000,
                Expiry::Static,
                state_root("aggregateState")
                    .with_child(availability_el(blocked))
                    .to_xml(),
            ),
            output(
                "legacyInterop",
                1,
                32000,
                Expiry::Static,
                legacy_interop(blocked, None),
            ),
            output(
                "services",
                0,
                32000,
                Expiry::Static,
                Element::new("services")
                    .with_attr("xmlns", SERVICE_NS)
                    .to_xml(),
            ),
        ]
    }

    fn aggregate(&self, input: &AggregationInput<'_>) -> Vec<AggregateOutput> {
        let mut out = Vec::new();
        if !input.online {
            return out;
        }
        let decoded = |container: ContainerId| -> Vec<StateInput> {
            input
                .instances
                .iter()
                .filter(|i| {
                    i.author == Author::Client
                        && &*i.key.category == "state"
                        && i.key.container == container
                })
                .filter_map(|i| Self::decode(i))
                .collect()
        };
        let set_1 = decoded(ContainerId::AGGREGATION_1);
        let set_2 = decoded(ContainerId::AGGREGATION_2);
        self.aggregate_set(&set_1, true, &mut out);
        self.aggregate_set(&set_2, false, &mut out);
        self.services(input.uri, input, &set_1, &mut out);
        out
    }
}
