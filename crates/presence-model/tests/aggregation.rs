//! The built-in aggregation, driven through PresentityDoc::publish as the engine does.

mod common;

use common::*;
use presence_model::aggregation::{
    AGGREGATE_MACHINE_STATE_INSTANCE, BLOCKED_AVAILABILITY, SERVICE_NS,
};
use presence_model::document::{ChangeSet, Ctx, PresentityDoc};
use presence_model::instance::{Author, EndpointId, Expiry};
use presence_model::xml::Element;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

const MACHINE_1: u32 = 0x3000_0001;
const MACHINE_2: u32 = 0x3000_0002;
const USER_STATE: u32 = 0x2000_0000;
const TIMED_USER_STATE: u32 = 0x2400_0000;
const CALENDAR: u32 = 0x4000_0001;
const OOF: u32 = 0x6000_0001;
const PHONE: u32 = 0x8000_0001;

/// Publishes one instance at its current version: endpoint-bound when `endpoint` is
/// given, static otherwise. Moves the clock on by a millisecond first.
#[allow(clippy::too_many_arguments)]
fn put(
    doc: &mut PresentityDoc,
    ctx: &Ctx<'_>,
    clock: &TestClock,
    endpoint: Option<u64>,
    category: &str,
    instance: u32,
    container: u64,
    value: &str,
) -> ChangeSet {
    clock.advance_ms(1);
    let version = get(doc, category, instance, container).map_or(0, |i| i.version);
    let item = match endpoint {
        Some(_) => endpoint_pub(category, instance, container, version, value),
        None => static_pub(category, instance, container, version, value),
    };
    publish_ok(doc, &[item], endpoint.map(EndpointId), ctx).1
}

fn machine(
    doc: &mut PresentityDoc,
    ctx: &Ctx<'_>,
    clock: &TestClock,
    ep: u64,
    instance: u32,
    container: u64,
    a: u32,
) {
    put(
        doc,
        ctx,
        clock,
        Some(ep),
        "state",
        instance,
        container,
        &machine_state(a),
    );
}

fn legacy(doc: &PresentityDoc, container: u64) -> Option<(u32, Option<String>)> {
    let inst = get(doc, "legacyInterop", 1, container)?;
    let root = parsed(inst);
    assert_eq!(root.name, "legacyInterop");
    let a = root
        .attr("availability")
        .expect("availability")
        .parse()
        .unwrap();
    Some((a, root.attr("token").map(str::to_string)))
}

fn element_names(el: &Element) -> Vec<String> {
    el.elements().map(|e| e.name.clone()).collect()
}

/// Asserts that `container` holds a server-written, user-bound aggregateState.
fn assert_aggregate(doc: &PresentityDoc, container: u64, availability: u32) {
    let inst = get(doc, "state", 1, container)
        .unwrap_or_else(|| panic!("no aggregateState in {container}"));
    assert_eq!(inst.author, Author::Server);
    assert_eq!(inst.expiry, Expiry::User);
    let root = parsed(inst);
    assert_eq!(root.name, "state");
    assert_eq!(root.attr("type"), Some("aggregateState"));
    assert_eq!(root.attr("xmlns"), Some(STATE_NS));
    assert_eq!(
        aggregate_availability(doc, container),
        Some(availability),
        "aggregate of container {container}"
    );
}

fn assert_blocked_view_intact(doc: &PresentityDoc) {
    let inst = get(doc, "state", 1, 32000).expect("blocked aggregate");
    assert_eq!(inst.version, 1);
    assert_eq!(inst.expiry, Expiry::Static);
    assert_eq!(inst.author, Author::Server);
    assert_eq!(
        aggregate_availability(doc, 32000),
        Some(BLOCKED_AVAILABILITY)
    );
    assert_eq!(aggregate_activity(doc, 32000), None);
    assert_eq!(legacy(doc, 32000), Some((18500, None)));
}

fn user_outputs(doc: &PresentityDoc) -> Vec<(u16, String, u32)> {
    doc.instances()
        .filter(|i| i.author == Author::Server && i.expiry == Expiry::User)
        .map(|i| {
            (
                i.key.container.get(),
                i.key.category.to_string(),
                i.key.instance,
            )
        })
        .collect()
}

// ---------------------------------------------------------------- fan-out

#[test]
fn machine_states_fan_out_to_their_target_containers() {
    let clock = TestClock::new();
    let ctx = ctx(&clock, true);
    let mut doc = new_doc(&clock);
    machine(&mut doc, &ctx, &clock, 1, MACHINE_1, 2, 3500);
    machine(&mut doc, &ctx, &clock, 1, MACHINE_1, 3, 3500);

    for c in [2, 100, 200, 400, 3, 300] {
        assert_aggregate(&doc, c, 3500);
        assert_eq!(
            aggregate_summary(&doc, c).unwrap().availability_class,
            Some("available")
        );
    }
    // 100 gets the availability and nothing else.
    assert_eq!(
        element_names(&aggregate_root(&doc, 100).unwrap()),
        vec!["availability"]
    );
    // No aggregate where none belongs.
    for c in [0, 1, 401] {
        assert!(get(&doc, "state", 1, c).is_none(), "{c}");
    }
    // legacyInterop mirrors it in 100..400, without token in 100.
    for c in [100, 200, 300, 400] {
        let (a, _) = legacy(&doc, c).unwrap_or_else(|| panic!("legacyInterop in {c}"));
        assert_eq!(a, 3500);
        let inst = get(&doc, "legacyInterop", 1, c).unwrap();
        assert_eq!((inst.author, inst.expiry), (Author::Server, Expiry::User));
    }
    for c in [2, 3] {
        assert!(get(&doc, "legacyInterop", 1, c).is_none());
    }
    // aggregateMachineState (268435456) lives in container 2 only.
    assert_eq!(AGGREGATE_MACHINE_STATE_INSTANCE, 268_435_456);
    let ams = get(&doc, "state", 268_435_456, 2).expect("aggregateMachineState");
    assert_eq!((ams.author, ams.expiry), (Author::Server, Expiry::User));
    let root = parsed(ams);
    assert_eq!(root.attr("type"), Some("aggregateMachineState"));
    assert_eq!(root.child("availability").unwrap().text(), "3500");
    assert_eq!(root.attr("endpointId"), Some("0000000000000001"));
    assert!(get(&doc, "state", 268_435_456, 3).is_none());
    assert_blocked_view_intact(&doc);
}

#[test]
fn the_input_sets_are_independent() {
    let clock = TestClock::new();
    let ctx = ctx(&clock, true);
    let mut doc = new_doc(&clock);
    machine(&mut doc, &ctx, &clock, 1, MACHINE_1, 3, 6500);
    assert_aggregate(&doc, 3, 6500);
    assert_aggregate(&doc, 300, 6500);
    assert_eq!(legacy(&doc, 300).map(|l| l.0), Some(6500));
    for c in [2, 100, 200, 400] {
        assert!(get(&doc, "state", 1, c).is_none(), "{c}");
    }
    assert!(get(&doc, "state", AGGREGATE_MACHINE_STATE_INSTANCE, 2).is_none());

    machine(&mut doc, &ctx, &clock, 1, MACHINE_1, 2, 3500);
    assert_aggregate(&doc, 200, 3500);
    assert_aggregate(&doc, 300, 6500);
}

#[test]
fn aggregate_machine_state_reports_the_most_active_device() {
    let clock = TestClock::new();
    let ctx = ctx(&clock, true);
    let mut doc = new_doc(&clock);
    let with_id = |id: &str, a: u32| {
        state_xml("machineState", Some(a), "").replacen(
            "<state ",
            &format!(r#"<state endpointId="{id}" "#),
            1,
        )
    };
    put(
        &mut doc,
        &ctx,
        &clock,
        Some(1),
        "state",
        MACHINE_1,
        2,
        &with_id("aaaa", 15500),
    );
    put(
        &mut doc,
        &ctx,
        &clock,
        Some(2),
        "state",
        MACHINE_2,
        2,
        &with_id("bbbb", 3500),
    );
    let ams = parsed(get(&doc, "state", AGGREGATE_MACHINE_STATE_INSTANCE, 2).unwrap());
    assert_eq!(ams.attr("endpointId"), Some("bbbb"));
    assert_eq!(ams.child("availability").unwrap().text(), "3500");

    // Equal availability: the newest machine.
    put(
        &mut doc,
        &ctx,
        &clock,
        Some(1),
        "state",
        MACHINE_1,
        2,
        &with_id("aaaa", 3500),
    );
    let ams = parsed(get(&doc, "state", AGGREGATE_MACHINE_STATE_INSTANCE, 2).unwrap());
    assert_eq!(ams.attr("endpointId"), Some("aaaa"));
}

// ---------------------------------------------------------------- availability

#[test]
fn a_newer_machine_state_counts_against_the_user_state() {
    let clock = TestClock::new();
    let ctx = ctx(&clock, true);
    let mut doc = new_doc(&clock);
    put(
        &mut doc,
        &ctx,
        &clock,
        None,
        "state",
        USER_STATE,
        2,
        &user_state(3500),
    );
    assert_aggregate(&doc, 200, 3500);
    machine(&mut doc, &ctx, &clock, 1, MACHINE_1, 2, 15500);
    assert_aggregate(&doc, 200, 15500);
    assert_eq!(
        aggregate_summary(&doc, 200).unwrap().availability_class,
        Some("away")
    );
}

#[test]
fn a_newer_user_state_overrides_older_machine_states() {
    let clock = TestClock::new();
    let ctx = ctx(&clock, true);
    let mut doc = new_doc(&clock);
    machine(&mut doc, &ctx, &clock, 1, MACHINE_1, 2, 15500);
    assert_aggregate(&doc, 200, 15500);
    put(
        &mut doc,
        &ctx,
        &clock,
        None,
        "state",
        USER_STATE,
        2,
        &user_state(3500),
    );
    assert_aggregate(&doc, 200, 3500);
    // Once the machine publishes again, it is newer than the user state.
    machine(&mut doc, &ctx, &clock, 1, MACHINE_1, 2, 5000);
    assert_aggregate(&doc, 200, 5000);
}

#[test]
fn of_several_machines_only_the_most_active_counts() {
    for order in [
        [(1, MACHINE_1, 3500), (2, MACHINE_2, 15500)],
        [(2, MACHINE_2, 15500), (1, MACHINE_1, 3500)],
    ] {
        let clock = TestClock::new();
        let ctx = ctx(&clock, true);
        let mut doc = new_doc(&clock);
        for (ep, inst, a) in order {
            machine(&mut doc, &ctx, &clock, ep, inst, 2, a);
        }
        assert_aggregate(&doc, 200, 3500);
        let ams = parsed(get(&doc, "state", AGGREGATE_MACHINE_STATE_INSTANCE, 2).unwrap());
        assert_eq!(
            ams.attr("endpointId"),
            Some("0000000000000001"),
            "{order:?}"
        );
    }
}

#[test]
fn only_the_newest_user_state_counts() {
    let clock = TestClock::new();
    let ctx = ctx(&clock, true);
    let mut doc = new_doc(&clock);
    machine(&mut doc, &ctx, &clock, 1, MACHINE_1, 2, 3500);
    put(
        &mut doc,
        &ctx,
        &clock,
        None,
        "state",
        USER_STATE,
        2,
        &user_state(9500),
    );
    assert_aggregate(&doc, 200, 9500);
    put(
        &mut doc,
        &ctx,
        &clock,
        None,
        "state",
        TIMED_USER_STATE,
        2,
        &user_state(6500),
    );
    assert_aggregate(&doc, 200, 6500);
    // Republishing the first makes it the newest again.
    put(
        &mut doc,
        &ctx,
        &clock,
        None,
        "state",
        USER_STATE,
        2,
        &user_state(9500),
    );
    assert_aggregate(&doc, 200, 9500);
    // Deleting it falls back to the other user state.
    let v = get(&doc, "state", USER_STATE, 2).unwrap().version;
    publish_ok(
        &mut doc,
        &[delete_pub("state", USER_STATE, 2, v)],
        None,
        &ctx,
    );
    assert_aggregate(&doc, 200, 6500);
}

#[test]
fn the_least_available_of_the_considered_states_wins() {
    let clock = TestClock::new();
    let ctx = ctx(&clock, true);
    let mut doc = new_doc(&clock);
    put(
        &mut doc,
        &ctx,
        &clock,
        None,
        "state",
        USER_STATE,
        2,
        &user_state(6500),
    );
    machine(&mut doc, &ctx, &clock, 1, MACHINE_1, 2, 3500);
    assert_aggregate(&doc, 200, 6500);
    // A newer phone state counts too.
    put(
        &mut doc,
        &ctx,
        &clock,
        Some(1),
        "state",
        PHONE,
        2,
        &state_xml(
            "phoneState",
            Some(7000),
            r#"<activity token="in-a-conference"/>"#,
        ),
    );
    assert_aggregate(&doc, 200, 7000);
    assert_eq!(
        aggregate_activity(&doc, 200).as_deref(),
        Some("in-a-conference")
    );
}

#[test]
fn client_published_aggregates_and_unavailable_states_are_ignored() {
    let clock = TestClock::new();
    let ctx = ctx(&clock, true);
    let mut doc = new_doc(&clock);
    // A client cannot write instance 1, but may put an aggregateState-typed value
    // elsewhere; it is not an input.
    put(
        &mut doc,
        &ctx,
        &clock,
        None,
        "state",
        5,
        2,
        &state_xml("aggregateState", Some(18500), ""),
    );
    put(
        &mut doc,
        &ctx,
        &clock,
        None,
        "state",
        6,
        2,
        &state_xml("userState", Some(0), ""),
    );
    put(
        &mut doc,
        &ctx,
        &clock,
        None,
        "state",
        7,
        2,
        "<state><availability>soon</availability></state>",
    );
    assert!(
        get(&doc, "state", 1, 200).is_none(),
        "nothing to aggregate yet"
    );
    machine(&mut doc, &ctx, &clock, 1, MACHINE_1, 2, 3500);
    assert_aggregate(&doc, 200, 3500);
}

#[test]
fn dnd_splits_between_the_input_sets() {
    let clock = TestClock::new();
    let ctx = ctx(&clock, true);
    let mut doc = new_doc(&clock);
    machine(&mut doc, &ctx, &clock, 1, MACHINE_1, 2, 3500);
    machine(&mut doc, &ctx, &clock, 1, MACHINE_1, 3, 3500);
    publish_ok(
        &mut doc,
        &[
            time_pub("state", TIMED_USER_STATE, 2, 0, 86_400, &user_state(9500)),
            time_pub(
                "state",
                TIMED_USER_STATE,
                3,
                0,
                86_400,
                &state_xml(
                    "userState",
                    Some(6900),
                    r#"<activity token="urgent-interruptions-only"/>"#,
                ),
            ),
        ],
        None,
        &ctx,
    );
    for c in [2, 100, 200, 400] {
        assert_aggregate(&doc, c, 9500);
    }
    for c in [3, 300] {
        assert_aggregate(&doc, c, 6900);
    }
    assert_eq!(
        aggregate_summary(&doc, 200).unwrap().availability_class,
        Some("do-not-disturb")
    );
    assert_eq!(
        aggregate_summary(&doc, 300).unwrap().availability_class,
        Some("busy")
    );
    assert_eq!(
        aggregate_activity(&doc, 300).as_deref(),
        Some("urgent-interruptions-only")
    );
    assert_eq!(aggregate_activity(&doc, 200), None);
    assert_eq!(
        legacy(&doc, 300),
        Some((6900, Some("urgent-interruptions-only".into())))
    );
    assert_eq!(legacy(&doc, 200), Some((9500, None)));
    assert_eq!(legacy(&doc, 100), Some((9500, None)));
    assert_blocked_view_intact(&doc);

    // When the DND lapses, both views go back to the machine.
    doc.expire(
        presence_model::time::Timestamp::from_millis(T0 + 86_400_000 + 10),
        &ctx,
    );
    assert_aggregate(&doc, 200, 3500);
    assert_aggregate(&doc, 300, 3500);
    assert_eq!(aggregate_activity(&doc, 300), None);
}

// ---------------------------------------------------------------- activities

fn meeting(availability: Option<u32>) -> String {
    state_xml(
        "calendarState",
        availability,
        r#"<activity token="in-a-meeting" minAvailability="6500" maxAvailability="8999"/><meetingSubject>Plan</meetingSubject>"#,
    )
}

#[test]
fn an_activity_applies_only_within_its_window() {
    let clock = TestClock::new();
    let ctx = ctx(&clock, true);
    let mut doc = new_doc(&clock);
    machine(&mut doc, &ctx, &clock, 1, MACHINE_1, 2, 3500);
    // A calendar state without availability only offers its activity.
    put(
        &mut doc,
        &ctx,
        &clock,
        Some(1),
        "state",
        CALENDAR,
        2,
        &meeting(None),
    );
    for (a, applies) in [
        (3500, false),
        (6499, false),
        (6500, true),
        (8999, true),
        (9000, false),
        (15500, false),
    ] {
        machine(&mut doc, &ctx, &clock, 1, MACHINE_1, 2, a);
        assert_aggregate(&doc, 200, a);
        let want = applies.then(|| "in-a-meeting".to_string());
        assert_eq!(aggregate_activity(&doc, 200), want, "at {a}");
        assert_eq!(aggregate_activity(&doc, 400), want, "at {a}");
        assert_eq!(aggregate_activity(&doc, 2), want, "at {a}");
        assert_eq!(
            aggregate_activity(&doc, 100),
            None,
            "100 never shows activities"
        );
        assert_eq!(legacy(&doc, 200), Some((a, want.clone())));
        assert_eq!(legacy(&doc, 100), Some((a, None)));
    }
}

#[test]
fn a_meeting_with_availability_shows_until_something_less_available_wins() {
    let clock = TestClock::new();
    let ctx = ctx(&clock, true);
    let mut doc = new_doc(&clock);
    machine(&mut doc, &ctx, &clock, 1, MACHINE_1, 2, 3500);
    put(
        &mut doc,
        &ctx,
        &clock,
        Some(1),
        "state",
        CALENDAR,
        2,
        &meeting(Some(6500)),
    );
    assert_aggregate(&doc, 200, 6500);
    assert_eq!(
        aggregate_activity(&doc, 200).as_deref(),
        Some("in-a-meeting")
    );
    let root = aggregate_root(&doc, 200).unwrap();
    assert_eq!(
        root.child("activity").unwrap().attr("maxAvailability"),
        Some("8999")
    );
    assert_eq!(
        element_names(&aggregate_root(&doc, 100).unwrap()),
        vec!["availability"]
    );
    machine(&mut doc, &ctx, &clock, 1, MACHINE_1, 2, 15500);
    assert_aggregate(&doc, 200, 15500);
    assert_eq!(aggregate_activity(&doc, 200), None);
    assert_eq!(legacy(&doc, 200), Some((15500, None)));
}

#[test]
fn out_of_office_is_absent_while_available() {
    let clock = TestClock::new();
    let ctx = ctx(&clock, true);
    let mut doc = new_doc(&clock);
    machine(&mut doc, &ctx, &clock, 1, MACHINE_1, 2, 3500);
    put(
        &mut doc,
        &ctx,
        &clock,
        None,
        "state",
        OOF,
        2,
        &state_xml(
            "calendarState",
            None,
            r#"<activity token="out-of-office" minAvailability="12000"/>"#,
        ),
    );
    assert_aggregate(&doc, 200, 3500);
    assert_eq!(aggregate_activity(&doc, 200), None);
    for (a, applies) in [(11999, false), (12000, true), (15500, true), (18500, true)] {
        machine(&mut doc, &ctx, &clock, 1, MACHINE_1, 2, a);
        let want = applies.then(|| "out-of-office".to_string());
        assert_eq!(aggregate_activity(&doc, 200), want, "at {a}");
    }
}

#[test]
fn the_highest_minimum_then_the_newest_activity_wins() {
    let clock = TestClock::new();
    let ctx = ctx(&clock, true);
    let mut doc = new_doc(&clock);
    machine(&mut doc, &ctx, &clock, 1, MACHINE_1, 2, 15500);
    put(
        &mut doc,
        &ctx,
        &clock,
        None,
        "state",
        0x4000_0002,
        2,
        &state_xml(
            "calendarState",
            None,
            r#"<activity token="in-a-meeting" minAvailability="6500"/>"#,
        ),
    );
    assert_eq!(
        aggregate_activity(&doc, 200).as_deref(),
        Some("in-a-meeting")
    );
    put(
        &mut doc,
        &ctx,
        &clock,
        None,
        "state",
        OOF,
        2,
        &state_xml(
            "calendarState",
            None,
            r#"<activity token="out-of-office" minAvailability="12000"/>"#,
        ),
    );
    assert_eq!(
        aggregate_activity(&doc, 200).as_deref(),
        Some("out-of-office")
    );
    // Same minimum: the newer one.
    put(
        &mut doc,
        &ctx,
        &clock,
        None,
        "state",
        0x6000_0002,
        2,
        &state_xml(
            "calendarState",
            None,
            r#"<activity token="off-work" minAvailability="12000"/>"#,
        ),
    );
    assert_eq!(aggregate_activity(&doc, 200).as_deref(), Some("off-work"));
    // A newer activity with a lower minimum does not displace it.
    put(
        &mut doc,
        &ctx,
        &clock,
        None,
        "state",
        0x4000_0002,
        2,
        &state_xml(
            "calendarState",
            None,
            r#"<activity token="in-a-meeting" minAvailability="6500"/>"#,
        ),
    );
    assert_eq!(aggregate_activity(&doc, 200).as_deref(), Some("off-work"));
    // Below 12000 only the meeting remains.
    machine(&mut doc, &ctx, &clock, 1, MACHINE_1, 2, 9500);
    assert_eq!(
        aggregate_activity(&doc, 200).as_deref(),
        Some("in-a-meeting")
    );
}

#[test]
fn custom_activities_count_and_empty_ones_do_not() {
    let clock = TestClock::new();
    let ctx = ctx(&clock, true);
    let mut doc = new_doc(&clock);
    machine(&mut doc, &ctx, &clock, 1, MACHINE_1, 2, 3500);
    put(
        &mut doc,
        &ctx,
        &clock,
        None,
        "state",
        USER_STATE,
        2,
        &state_xml(
            "userState",
            Some(3500),
            r#"<activity minAvailability="0"/>"#,
        ),
    );
    assert_eq!(aggregate_activity(&doc, 200), None);
    put(
        &mut doc,
        &ctx,
        &clock,
        None,
        "state",
        USER_STATE,
        2,
        &state_xml(
            "userState",
            Some(3500),
            r#"<activity><custom LCID="1033">Lunch</custom></activity>"#,
        ),
    );
    assert_eq!(aggregate_activity(&doc, 200).as_deref(), Some("Lunch"));
    assert_eq!(
        legacy(&doc, 200),
        Some((3500, None)),
        "a custom activity has no token"
    );
}

#[test]
fn carried_elements_reach_full_aggregates_only() {
    let clock = TestClock::new();
    let ctx = ctx(&clock, true);
    let mut doc = new_doc(&clock);
    put(
        &mut doc,
        &ctx,
        &clock,
        Some(1),
        "state",
        MACHINE_1,
        2,
        &state_xml(
            "machineState",
            Some(3500),
            "<timeZoneBias>-60</timeZoneBias><device>computer</device><endpointLocation>Office</endpointLocation>",
        ),
    );
    let full = aggregate_root(&doc, 200).unwrap();
    assert_eq!(full.child("timeZoneBias").unwrap().text(), "-60");
    assert_eq!(full.child("device").unwrap().text(), "computer");
    assert_eq!(full.child("endpointLocation").unwrap().text(), "Office");
    assert_eq!(aggregate_root(&doc, 2).unwrap(), full);
    assert_eq!(aggregate_root(&doc, 400).unwrap(), full);
    assert_eq!(
        element_names(&aggregate_root(&doc, 100).unwrap()),
        vec!["availability"]
    );
}

// ---------------------------------------------------------------- blocked, offline

#[test]
fn the_blocked_view_is_always_offline() {
    let clock = TestClock::new();
    let ctx = ctx(&clock, true);
    let mut doc = new_doc(&clock);
    assert_blocked_view_intact(&doc);
    let services = parsed(get(&doc, "services", 0, 32000).unwrap());
    assert_eq!(services.attr("xmlns"), Some(SERVICE_NS));
    assert!(services.children.is_empty());
    machine(&mut doc, &ctx, &clock, 1, MACHINE_1, 2, 3500);
    machine(&mut doc, &ctx, &clock, 1, MACHINE_1, 3, 3500);
    put(
        &mut doc,
        &ctx,
        &clock,
        None,
        "state",
        USER_STATE,
        2,
        &user_state(9500),
    );
    assert_blocked_view_intact(&doc);
    doc.remove_endpoint(EndpointId(1), &common::ctx(&clock, false));
    assert_blocked_view_intact(&doc);
    assert!(get(&doc, "services", 0, 32000).is_some());
}

#[test]
fn the_last_endpoint_leaving_removes_every_user_bound_output() {
    let clock = TestClock::new();
    let online = ctx(&clock, true);
    let mut doc = new_doc(&clock);
    machine(&mut doc, &online, &clock, 1, MACHINE_1, 2, 3500);
    machine(&mut doc, &online, &clock, 1, MACHINE_1, 3, 3500);
    put(
        &mut doc,
        &online,
        &clock,
        Some(1),
        "device",
        1,
        2,
        r#"<device endpointId="e1"><capabilities><text render="true"/></capabilities></device>"#,
    );
    put(
        &mut doc,
        &online,
        &clock,
        None,
        "state",
        USER_STATE,
        2,
        &user_state(6500),
    );
    clock.advance_ms(1);
    publish_ok(
        &mut doc,
        &[user_pub("note", 0, 200, 0, &note_xml("bye"))],
        None,
        &online,
    );
    publish_ok(
        &mut doc,
        &[user_pub("state", 0x2100_0000, 3, 0, &user_state(6500))],
        None,
        &online,
    );
    assert!(user_outputs(&doc).len() > 10, "{:?}", user_outputs(&doc));

    let changes = doc.remove_endpoint(EndpointId(1), &ctx(&clock, false));
    assert_eq!(
        user_outputs(&doc),
        vec![],
        "no user-level result without an endpoint"
    );
    assert!(
        doc.instances().all(|i| i.expiry != Expiry::User),
        "client user-bound instances go too"
    );
    assert!(
        doc.instances()
            .all(|i| !matches!(i.expiry, Expiry::Endpoint { .. }))
    );
    // Static data stays, including the static user state.
    assert!(get(&doc, "state", USER_STATE, 2).is_some());
    assert_blocked_view_intact(&doc);
    for pair in [
        (2, "state"),
        (200, "state"),
        (300, "state"),
        (200, "legacyInterop"),
        (200, "services"),
        (200, "note"),
    ] {
        assert!(
            changes
                .categories
                .contains(&(cid(pair.0), Arc::from(pair.1))),
            "{pair:?} in {changes:?}"
        );
    }
    assert!(
        !changes
            .categories
            .contains(&(cid(32000), Arc::from("state")))
    );

    // Signing in again brings the aggregate back, with the static user state.
    machine(&mut doc, &online, &clock, 2, MACHINE_2, 2, 3500);
    assert_aggregate(&doc, 200, 6500);
}

#[test]
fn an_endpoint_leaving_while_others_remain_recomputes() {
    let clock = TestClock::new();
    let ctx = ctx(&clock, true);
    let mut doc = new_doc(&clock);
    machine(&mut doc, &ctx, &clock, 1, MACHINE_1, 2, 3500);
    machine(&mut doc, &ctx, &clock, 2, MACHINE_2, 2, 15500);
    publish_ok(
        &mut doc,
        &[user_pub("note", 0, 200, 0, "<note/>")],
        None,
        &ctx,
    );
    assert_aggregate(&doc, 200, 3500);
    let changes = doc.remove_endpoint(EndpointId(1), &ctx);
    assert!(get(&doc, "state", MACHINE_1, 2).is_none());
    assert!(get(&doc, "state", MACHINE_2, 2).is_some());
    assert!(
        get(&doc, "note", 0, 200).is_some(),
        "user-bound data stays while online"
    );
    assert_aggregate(&doc, 200, 15500);
    let ams = parsed(get(&doc, "state", AGGREGATE_MACHINE_STATE_INSTANCE, 2).unwrap());
    assert_eq!(ams.attr("endpointId"), Some("0000000000000002"));
    assert!(changes.categories.contains(&(cid(200), Arc::from("state"))));
}

// ---------------------------------------------------------------- services

fn device(endpoint_id: &str, caps: &[&str]) -> String {
    let caps: String = caps
        .iter()
        .map(|c| format!(r#"<{c} capture="true" render="true" publish="false"/>"#))
        .collect();
    format!(
        r#"<device xmlns="http://schemas.microsoft.com/2006/09/sip/device" endpointId="{endpoint_id}"><capabilities preferred="false" uri="sip:alice@example.com">{caps}</capabilities></device>"#
    )
}

/// capability name -> its attributes, from the services instance of a container.
fn services_of(doc: &PresentityDoc, container: u64) -> BTreeMap<String, BTreeMap<String, String>> {
    let inst =
        get(doc, "services", 0, container).unwrap_or_else(|| panic!("no services in {container}"));
    assert_eq!((inst.author, inst.expiry), (Author::Server, Expiry::User));
    let root = parsed(inst);
    assert_eq!(root.name, "services");
    let service = root.child("service").expect("service");
    assert_eq!(service.attr("uri"), Some("sip:alice@example.com"));
    service
        .child("capabilities")
        .expect("capabilities")
        .elements()
        .map(|e| (e.name.clone(), e.attrs.iter().cloned().collect()))
        .collect()
}

fn attrs(list: &[(&str, &str)]) -> BTreeMap<String, String> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn services_are_the_union_of_device_capabilities_from_the_most_available_device() {
    let clock = TestClock::new();
    let ctx = ctx(&clock, true);
    let mut doc = new_doc(&clock);
    put(
        &mut doc,
        &ctx,
        &clock,
        Some(1),
        "device",
        1,
        2,
        &device("ep1", &["text", "voice"]),
    );
    machine(&mut doc, &ctx, &clock, 1, MACHINE_1, 2, 15500);
    put(
        &mut doc,
        &ctx,
        &clock,
        Some(2),
        "device",
        2,
        2,
        &device("ep2", &["text", "video"]),
    );
    machine(&mut doc, &ctx, &clock, 2, MACHINE_2, 2, 3500);

    let own = services_of(&doc, 2);
    assert_eq!(
        own.keys().cloned().collect::<BTreeSet<_>>(),
        BTreeSet::from(["text", "video", "voice"].map(String::from))
    );
    let full = |ep: &str, a: &str| {
        attrs(&[
            ("capture", "true"),
            ("render", "true"),
            ("publish", "false"),
            ("deviceAvailability", a),
            ("preferredEndpointId", ep),
        ])
    };
    assert_eq!(
        own["text"],
        full("ep2", "3500"),
        "the most available device"
    );
    assert_eq!(own["voice"], full("ep1", "15500"));
    assert_eq!(own["video"], full("ep2", "3500"));

    // Remote copies drop preferredEndpointId and publish.
    for c in [100, 200, 300, 400] {
        let remote = services_of(&doc, c);
        assert_eq!(remote.len(), 3);
        assert_eq!(
            remote["text"],
            attrs(&[
                ("capture", "true"),
                ("render", "true"),
                ("deviceAvailability", "3500")
            ]),
            "container {c}"
        );
        assert_eq!(remote["voice"]["deviceAvailability"], "15500");
    }
    // The blocked container keeps its empty services.
    let blocked = get(&doc, "services", 0, 32000).unwrap();
    assert_eq!(blocked.expiry, Expiry::Static);
    assert!(parsed(blocked).children.is_empty());

    // The machines swap: so does the preferred device.
    machine(&mut doc, &ctx, &clock, 1, MACHINE_1, 2, 3500);
    machine(&mut doc, &ctx, &clock, 2, MACHINE_2, 2, 15500);
    let own = services_of(&doc, 2);
    assert_eq!(own["text"]["preferredEndpointId"], "ep1");
    assert_eq!(own["video"]["preferredEndpointId"], "ep2");
    assert_eq!(own["video"]["deviceAvailability"], "15500");

    // A device leaving takes its capabilities along.
    doc.remove_endpoint(EndpointId(2), &ctx);
    let own = services_of(&doc, 2);
    assert_eq!(
        own.keys().cloned().collect::<BTreeSet<_>>(),
        BTreeSet::from(["text", "voice"].map(String::from))
    );
}

#[test]
fn devices_in_container_3_or_without_capabilities_offer_nothing() {
    let clock = TestClock::new();
    let ctx = ctx(&clock, true);
    let mut doc = new_doc(&clock);
    put(
        &mut doc,
        &ctx,
        &clock,
        Some(1),
        "device",
        1,
        3,
        &device("ep1", &["text"]),
    );
    put(
        &mut doc,
        &ctx,
        &clock,
        Some(2),
        "device",
        2,
        2,
        r#"<device endpointId="ep2"/>"#,
    );
    for c in [2, 100, 200, 300, 400] {
        assert!(get(&doc, "services", 0, c).is_none(), "{c}");
    }
    // A device without a machine state: no deviceAvailability.
    put(
        &mut doc,
        &ctx,
        &clock,
        Some(2),
        "device",
        2,
        2,
        &device("ep2", &["text"]),
    );
    let own = services_of(&doc, 2);
    assert!(!own["text"].contains_key("deviceAvailability"));
    assert_eq!(own["text"]["preferredEndpointId"], "ep2");
}

// ---------------------------------------------------------------- versions of outputs

#[test]
fn unchanged_outputs_keep_their_version() {
    let clock = TestClock::new();
    let ctx = ctx(&clock, true);
    let mut doc = new_doc(&clock);
    machine(&mut doc, &ctx, &clock, 1, MACHINE_1, 2, 3500);
    let first = get(&doc, "state", 1, 200).unwrap().clone();
    let first_ams = get(&doc, "state", AGGREGATE_MACHINE_STATE_INSTANCE, 2)
        .unwrap()
        .clone();
    assert_eq!(first.version, 1);

    clock.advance_secs(5);
    let changes = put(
        &mut doc,
        &ctx,
        &clock,
        Some(1),
        "state",
        MACHINE_1,
        2,
        &machine_state(3500),
    );
    assert_eq!(
        get(&doc, "state", MACHINE_1, 2).unwrap().version,
        2,
        "the input did change"
    );
    assert_eq!(
        get(&doc, "state", 1, 200).unwrap(),
        &first,
        "same version, time and sequence"
    );
    assert_eq!(
        get(&doc, "state", AGGREGATE_MACHINE_STATE_INSTANCE, 2).unwrap(),
        &first_ams
    );
    assert_eq!(changes.categories.len(), 1, "{changes:?}");

    put(
        &mut doc,
        &ctx,
        &clock,
        Some(1),
        "state",
        MACHINE_1,
        2,
        &machine_state(5000),
    );
    let second = get(&doc, "state", 1, 200).unwrap();
    assert_eq!(second.version, 2);
    assert!(second.publish_time > first.publish_time);
    assert!(second.seq > first.seq);
    assert_eq!(
        get(&doc, "state", AGGREGATE_MACHINE_STATE_INSTANCE, 2)
            .unwrap()
            .version,
        2
    );
}

#[test]
fn an_activity_change_does_not_touch_the_availability_only_view() {
    let clock = TestClock::new();
    let ctx = ctx(&clock, true);
    let mut doc = new_doc(&clock);
    machine(&mut doc, &ctx, &clock, 1, MACHINE_1, 2, 6500);
    let v100 = get(&doc, "state", 1, 100).unwrap().version;
    let l100 = get(&doc, "legacyInterop", 1, 100).unwrap().version;
    let v200 = get(&doc, "state", 1, 200).unwrap().version;
    let changes = put(
        &mut doc,
        &ctx,
        &clock,
        Some(1),
        "state",
        PHONE,
        2,
        &state_xml(
            "phoneState",
            Some(6500),
            r#"<activity token="on-the-phone" minAvailability="6500" maxAvailability="8999"/>"#,
        ),
    );
    assert_eq!(
        aggregate_activity(&doc, 200).as_deref(),
        Some("on-the-phone")
    );
    assert_eq!(get(&doc, "state", 1, 200).unwrap().version, v200 + 1);
    assert_eq!(get(&doc, "state", 1, 100).unwrap().version, v100);
    assert_eq!(get(&doc, "legacyInterop", 1, 100).unwrap().version, l100);
    assert!(!changes.categories.contains(&(cid(100), Arc::from("state"))));
    assert!(
        !changes
            .categories
            .contains(&(cid(100), Arc::from("legacyInterop")))
    );
    assert!(
        changes
            .categories
            .contains(&(cid(200), Arc::from("legacyInterop")))
    );
}

#[test]
fn removing_the_last_input_removes_the_outputs() {
    let clock = TestClock::new();
    let ctx = ctx(&clock, true);
    let mut doc = new_doc(&clock);
    put(
        &mut doc,
        &ctx,
        &clock,
        None,
        "state",
        USER_STATE,
        3,
        &user_state(3500),
    );
    assert_aggregate(&doc, 300, 3500);
    let v = get(&doc, "state", USER_STATE, 3).unwrap().version;
    let (_, changes) = publish_ok(
        &mut doc,
        &[delete_pub("state", USER_STATE, 3, v)],
        None,
        &ctx,
    );
    assert!(get(&doc, "state", 1, 3).is_none());
    assert!(get(&doc, "state", 1, 300).is_none());
    assert!(get(&doc, "legacyInterop", 1, 300).is_none());
    assert_eq!(
        changes.categories,
        [(3, "state"), (300, "state"), (300, "legacyInterop")]
            .into_iter()
            .map(|(c, n)| (cid(c), Arc::from(n)))
            .collect()
    );
    assert_blocked_view_intact(&doc);
}

// ---------------------------------------------------------------- properties

mod properties {
    use super::*;
    use proptest::prelude::*;

    /// (xsi:type, instance, publishing endpoint)
    const SLOTS: [(&str, u32, Option<u64>); 6] = [
        ("userState", USER_STATE, None),
        ("userState", TIMED_USER_STATE, None),
        ("machineState", MACHINE_1, Some(1)),
        ("machineState", MACHINE_2, Some(2)),
        ("calendarState", CALENDAR, Some(1)),
        ("phoneState", PHONE, Some(2)),
    ];
    const AVAILABILITIES: [u32; 7] = [3500, 5000, 6500, 9500, 12500, 15500, 18500];

    #[derive(Debug, Clone)]
    enum Step {
        Publish { slot: usize, availability: u32 },
        Delete { slot: usize },
        Leave { endpoint: u64 },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            6 => (0..SLOTS.len(), prop::sample::select(AVAILABILITIES.to_vec()))
                .prop_map(|(slot, availability)| Step::Publish { slot, availability }),
            2 => (0..SLOTS.len()).prop_map(|slot| Step::Delete { slot }),
            1 => (1u64..=2).prop_map(|endpoint| Step::Leave { endpoint }),
        ]
    }

    /// The rule as the documentation states it, over a log of (slot, availability,
    /// order of publication): the newest user state plus every non-user state published
    /// after it (of the machines only the most active, newest on ties), least available
    /// wins; with no user state, every state counts.
    fn reference(live: &BTreeMap<usize, (u32, u64)>) -> (Option<u32>, Option<u32>) {
        let kind = |slot: &usize| SLOTS[*slot].0;
        let best_machine = live
            .iter()
            .filter(|(s, _)| kind(s) == "machineState")
            .min_by(|a, b| a.1.0.cmp(&b.1.0).then(b.1.1.cmp(&a.1.1)))
            .map(|(s, v)| (*s, *v));
        let newest_user = live
            .iter()
            .filter(|(s, _)| kind(s) == "userState")
            .max_by_key(|(_, v)| v.1)
            .map(|(s, v)| (*s, *v));
        let mut considered = vec![];
        match newest_user {
            Some((_, (a, order))) => {
                considered.push(a);
                for (s, (a, o)) in live {
                    if kind(s) != "userState" && kind(s) != "machineState" && *o > order {
                        considered.push(*a);
                    }
                }
                if let Some((_, (a, _))) = best_machine.filter(|m| m.1.1 > order) {
                    considered.push(a);
                }
            }
            None => {
                for (s, (a, _)) in live {
                    if kind(s) != "machineState" {
                        considered.push(*a);
                    }
                }
                considered.extend(best_machine.map(|m| m.1.0));
            }
        }
        (considered.into_iter().max(), best_machine.map(|m| m.1.0))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn aggregate_follows_the_documented_rule(steps in prop::collection::vec(step(), 1..16)) {
            let clock = TestClock::new();
            let ctx = ctx(&clock, true);
            let mut doc = new_doc(&clock);
            let mut live: BTreeMap<usize, (u32, u64)> = BTreeMap::new();
            let mut order = 0u64;
            for step in steps {
                match step {
                    Step::Publish { slot, availability } => {
                        let (kind, instance, endpoint) = SLOTS[slot];
                        put(&mut doc, &ctx, &clock, endpoint, "state", instance, 2, &state_xml(kind, Some(availability), ""));
                        order += 1;
                        live.insert(slot, (availability, order));
                    }
                    Step::Delete { slot } => {
                        let (_, instance, _) = SLOTS[slot];
                        let version = get(&doc, "state", instance, 2).map_or(0, |i| i.version);
                        publish_ok(&mut doc, &[delete_pub("state", instance, 2, version)], None, &ctx);
                        live.remove(&slot);
                    }
                    Step::Leave { endpoint } => {
                        doc.remove_endpoint(EndpointId(endpoint), &ctx);
                        live.retain(|slot, _| SLOTS[*slot].2 != Some(endpoint));
                    }
                }
                let (aggregate, machine) = reference(&live);
                for c in [2, 100, 200, 400] {
                    prop_assert_eq!(aggregate_availability(&doc, c), aggregate, "container {} after {:?}", c, live);
                }
                if aggregate.is_some() {
                    prop_assert_eq!(element_names(&aggregate_root(&doc, 100).unwrap()), vec!["availability"]);
                    prop_assert_eq!(legacy(&doc, 200).map(|l| l.0), aggregate);
                } else {
                    prop_assert!(get(&doc, "legacyInterop", 1, 200).is_none());
                }
                let ams = get(&doc, "state", AGGREGATE_MACHINE_STATE_INSTANCE, 2)
                    .map(|i| parsed(i).child("availability").unwrap().text().parse::<u32>().unwrap());
                prop_assert_eq!(ams, machine);
                prop_assert!(get(&doc, "state", 1, 300).is_none(), "container 3 has no input");
                prop_assert_eq!(aggregate_availability(&doc, 32000), Some(BLOCKED_AVAILABILITY));
            }
        }
    }
}
