//! PresentityDoc::publish: versioning, all-or-nothing batches, limits, lifetimes and
//! what the store keeps.

mod common;

use common::*;
use presence_model::container::{Container, ContainerId, Member};
use presence_model::document::{ChangeSet, PresentityDoc};
use presence_model::instance::{Author, EndpointId, ExpireType, Expiry};
use presence_model::limits::{
    MAX_CONTAINERS, MAX_INSTANCES_PER_PRESENTITY, MAX_PUBLICATIONS_PER_BATCH,
    MAX_TIME_EXPIRES_SECS, MAX_VALUE_BYTES,
};
use presence_model::membership::ContainerUpdate;
use presence_model::publication::{Conflict, Publication, PublishError};
use presence_model::subscribers::{SubscriberEntry, SubscriberType};
use presence_model::time::Timestamp;
use presence_model::xml::XmlError;
use proptest::prelude::*;
use std::collections::BTreeSet;
use std::sync::Arc;

fn pairs(list: &[(u64, &str)]) -> BTreeSet<(ContainerId, Arc<str>)> {
    list.iter().map(|(c, n)| (cid(*c), Arc::from(*n))).collect()
}

/// A valid XML element of exactly `len` bytes.
fn xml_of_len(len: usize) -> String {
    let s = format!("<a>{}</a>", "x".repeat(len - 7));
    assert_eq!(s.len(), len);
    s
}

// ---------------------------------------------------------------- versions

#[test]
fn new_instance_gets_version_1_and_each_republish_adds_one() {
    let clock = TestClock::new();
    let ctx = ctx(&clock, true);
    let mut doc = new_doc(&clock);

    let (items, _) = publish_ok(
        &mut doc,
        &[static_pub("note", 0, 200, 0, &note_xml("one"))],
        None,
        &ctx,
    );
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].index, 1);
    assert_eq!(items[0].category, "note");
    assert_eq!(items[0].instance, 0);
    assert_eq!(items[0].container, cid(200));
    assert_eq!(items[0].version, 1);
    assert!(!items[0].deleted);
    assert_eq!(items[0].publish_time, Timestamp::from_millis(T0));

    let stored = get(&doc, "note", 0, 200).expect("stored");
    assert_eq!(stored.version, 1);
    assert_eq!(stored.publish_time, Timestamp::from_millis(T0));
    assert_eq!(stored.expiry, Expiry::Static);
    assert_eq!(stored.author, Author::Client);
    assert_eq!(
        &*stored.value,
        note_xml("one").as_str(),
        "value is kept verbatim"
    );

    clock.advance_ms(1234);
    let (items, _) = publish_ok(
        &mut doc,
        &[static_pub("note", 0, 200, 1, &note_xml("two"))],
        None,
        &ctx,
    );
    assert_eq!(items[0].version, 2);
    assert_eq!(items[0].publish_time, Timestamp::from_millis(T0 + 1234));
    let stored = get(&doc, "note", 0, 200).unwrap();
    assert_eq!(stored.version, 2);
    assert_eq!(stored.publish_time, Timestamp::from_millis(T0 + 1234));
    assert_eq!(&*stored.value, note_xml("two").as_str());

    clock.advance_ms(1);
    let (items, _) = publish_ok(
        &mut doc,
        &[static_pub("note", 0, 200, 2, &note_xml("three"))],
        None,
        &ctx,
    );
    assert_eq!(items[0].version, 3);
    assert_eq!(get(&doc, "note", 0, 200).unwrap().version, 3);
}

#[test]
fn same_name_and_instance_in_two_containers_are_versioned_independently() {
    let clock = TestClock::new();
    let ctx = ctx(&clock, true);
    let mut doc = new_doc(&clock);
    publish_ok(
        &mut doc,
        &[static_pub("note", 0, 200, 0, &note_xml("a"))],
        None,
        &ctx,
    );
    publish_ok(
        &mut doc,
        &[static_pub("note", 0, 200, 1, &note_xml("b"))],
        None,
        &ctx,
    );
    let (items, _) = publish_ok(
        &mut doc,
        &[static_pub("note", 0, 400, 0, &note_xml("c"))],
        None,
        &ctx,
    );
    assert_eq!(items[0].version, 1);
    assert_eq!(get(&doc, "note", 0, 200).unwrap().version, 2);
    assert_eq!(get(&doc, "note", 0, 400).unwrap().version, 1);
}

#[test]
fn results_follow_batch_order_with_one_based_indexes() {
    let clock = TestClock::new();
    let ctx = ctx(&clock, true);
    let mut doc = new_doc(&clock);
    publish_ok(
        &mut doc,
        &[static_pub("note", 0, 400, 0, &note_xml("x"))],
        None,
        &ctx,
    );
    let batch = [
        static_pub("note", 0, 200, 0, &note_xml("a")),
        static_pub("note", 0, 400, 1, &note_xml("b")),
        delete_pub("note", 7, 300, 0),
    ];
    let (items, _) = publish_ok(&mut doc, &batch, None, &ctx);
    let summary: Vec<_> = items
        .iter()
        .map(|i| (i.index, i.container.get(), i.version, i.deleted))
        .collect();
    assert_eq!(
        summary,
        vec![(1, 200, 1, false), (2, 400, 2, false), (3, 300, 0, true)]
    );
}

#[test]
fn stale_versions_are_all_reported_and_nothing_is_applied() {
    let clock = TestClock::new();
    let ctx = ctx(&clock, true);
    let mut doc = new_doc(&clock);
    publish_ok(
        &mut doc,
        &[
            static_pub("note", 0, 200, 0, &note_xml("a")),
            static_pub("note", 0, 400, 0, &note_xml("b")),
            static_pub("note", 1, 400, 0, &note_xml("c")),
        ],
        None,
        &ctx,
    );
    publish_ok(
        &mut doc,
        &[
            static_pub("note", 0, 400, 1, &note_xml("b2")),
            static_pub("note", 1, 400, 1, &note_xml("c2")),
        ],
        None,
        &ctx,
    );
    let before = doc.clone();

    let batch = [
        // valid: a new key
        static_pub("note", 0, 300, 0, &note_xml("new")),
        // stale: 200 holds version 1
        static_pub("note", 0, 200, 0, &note_xml("stale")),
        // valid update of 400 (version 2)
        static_pub("note", 0, 400, 2, &note_xml("ok")),
        // stale: a new key sent with a version
        static_pub("note", 5, 200, 5, &note_xml("ghost")),
        // valid aggregation input: must not run the aggregation either
        endpoint_pub("state", 0x3000_0001, 2, 0, &machine_state(3500)),
        // stale delete (note 1 in 400 is at version 2)
        delete_pub("note", 1, 400, 1),
        // new container: must not be created
        static_pub("note", 0, 401, 0, &note_xml("new container")),
    ];
    let err = publish_err(&mut doc, &batch, Some(EndpointId(1)), &ctx);
    assert_eq!(
        err,
        PublishError::Conflict(vec![
            Conflict {
                index: 2,
                version: 0,
                current_version: 1
            },
            Conflict {
                index: 4,
                version: 5,
                current_version: 0
            },
            Conflict {
                index: 6,
                version: 1,
                current_version: 2
            },
        ])
    );
    assert_eq!(doc, before, "a refused batch changes nothing");
    assert!(get(&doc, "note", 0, 300).is_none());
    assert!(get(&doc, "state", 0x3000_0001, 2).is_none());
    assert!(get(&doc, "state", 1, 200).is_none(), "no aggregation ran");
    assert!(doc.container(cid(401)).is_none());
    assert_eq!(get(&doc, "note", 0, 400).unwrap().version, 2);
}

#[test]
fn conflict_reports_every_stale_item_in_a_single_item_batch() {
    let clock = TestClock::new();
    let ctx = ctx(&clock, true);
    let mut doc = new_doc(&clock);
    publish_ok(
        &mut doc,
        &[static_pub("note", 0, 200, 0, &note_xml("a"))],
        None,
        &ctx,
    );
    let err = publish_err(
        &mut doc,
        &[static_pub("note", 0, 200, 2, &note_xml("b"))],
        None,
        &ctx,
    );
    assert_eq!(
        err,
        PublishError::Conflict(vec![Conflict {
            index: 1,
            version: 2,
            current_version: 1
        }])
    );
}

#[test]
fn duplicate_key_in_one_batch_is_refused() {
    let clock = TestClock::new();
    let ctx = ctx(&clock, true);
    let mut doc = new_doc(&clock);
    let before = doc.clone();
    let batch = [
        static_pub("note", 0, 200, 0, &note_xml("a")),
        static_pub("note", 0, 400, 0, &note_xml("same name, other container")),
        static_pub("note", 1, 200, 0, &note_xml("other instance")),
        static_pub("note", 0, 200, 0, &note_xml("again")),
    ];
    assert_eq!(
        publish_err(&mut doc, &batch, None, &ctx),
        PublishError::Duplicate { index: 4, first: 1 }
    );
    assert_eq!(doc, before);

    // A delete repeating a write's key is a duplicate too.
    let batch = [
        static_pub("note", 0, 300, 0, &note_xml("a")),
        static_pub("note", 0, 200, 0, &note_xml("b")),
        delete_pub("note", 0, 200, 0),
    ];
    assert_eq!(
        publish_err(&mut doc, &batch, None, &ctx),
        PublishError::Duplicate { index: 3, first: 2 }
    );
    assert_eq!(doc, before);
}

#[test]
fn empty_batch_bad_names_and_missing_values_are_invalid() {
    let clock = TestClock::new();
    let ctx = ctx(&clock, true);
    let mut doc = new_doc(&clock);
    let before = doc.clone();
    assert!(matches!(
        publish_err(&mut doc, &[], None, &ctx),
        PublishError::Empty
    ));
    for bad in ["", "9lives", "has space", "x<y", "a".repeat(65).as_str()] {
        let batch = [
            static_pub("note", 0, 200, 0, &note_xml("ok")),
            static_pub(bad, 0, 200, 0, &note_xml("bad")),
        ];
        assert!(
            matches!(
                publish_err(&mut doc, &batch, None, &ctx),
                PublishError::Invalid { index: 2, .. }
            ),
            "{bad:?}"
        );
    }
    // 64 bytes is the longest accepted name.
    publish_ok(
        &mut doc,
        &[static_pub(&"a".repeat(64), 0, 200, 0, "<a/>")],
        None,
        &ctx,
    );
    let mut doc = before.clone();
    let missing = publication("note", 0, 200, 0, ExpireType::Static, None, None);
    assert!(matches!(
        publish_err(&mut doc, &[missing], None, &ctx),
        PublishError::Invalid { index: 1, .. }
    ));
    assert_eq!(doc, before);
}

// ---------------------------------------------------------------- deletion

#[test]
fn expires_zero_deletes_with_the_current_version() {
    let clock = TestClock::new();
    let ctx = ctx(&clock, true);
    let mut doc = new_doc(&clock);
    publish_ok(
        &mut doc,
        &[static_pub("note", 0, 200, 0, &note_xml("a"))],
        None,
        &ctx,
    );
    publish_ok(
        &mut doc,
        &[static_pub("note", 0, 200, 1, &note_xml("b"))],
        None,
        &ctx,
    );

    // Wrong version: refused, still there.
    assert_eq!(
        publish_err(&mut doc, &[delete_pub("note", 0, 200, 1)], None, &ctx),
        PublishError::Conflict(vec![Conflict {
            index: 1,
            version: 1,
            current_version: 2
        }])
    );
    assert!(get(&doc, "note", 0, 200).is_some());

    clock.advance_ms(10);
    let (items, changes) = publish_ok(&mut doc, &[delete_pub("note", 0, 200, 2)], None, &ctx);
    assert_eq!(items.len(), 1);
    assert!(items[0].deleted);
    assert_eq!(
        items[0].version, 2,
        "a deletion reports the version the instance had"
    );
    assert_eq!(items[0].publish_time, Timestamp::from_millis(T0 + 10));
    assert!(get(&doc, "note", 0, 200).is_none());
    assert_eq!(changes.categories, pairs(&[(200, "note")]));
    assert!(changes.durable);

    // The key starts over.
    let (items, _) = publish_ok(
        &mut doc,
        &[static_pub("note", 0, 200, 0, &note_xml("c"))],
        None,
        &ctx,
    );
    assert_eq!(items[0].version, 1);
}

#[test]
fn expires_zero_deletes_whatever_the_expire_type() {
    let clock = TestClock::new();
    let ctx = ctx(&clock, true);
    let mut doc = new_doc(&clock);
    publish_ok(
        &mut doc,
        &[time_pub("note", 0, 200, 0, 60, &note_xml("a"))],
        None,
        &ctx,
    );
    let del = publication("note", 0, 200, 1, ExpireType::Time, Some(0), None);
    publish_ok(&mut doc, &[del], None, &ctx);
    assert!(get(&doc, "note", 0, 200).is_none());
    assert_eq!(doc.next_expiry(), None);

    publish_ok(
        &mut doc,
        &[endpoint_pub("note", 1, 200, 0, &note_xml("a"))],
        Some(EndpointId(3)),
        &ctx,
    );
    // A deletion needs no endpoint, even of an endpoint-type instance.
    let del = publication("note", 1, 200, 1, ExpireType::Endpoint, Some(0), None);
    publish_ok(&mut doc, &[del], None, &ctx);
    assert!(get(&doc, "note", 1, 200).is_none());
}

#[test]
fn deleting_a_missing_key_with_version_0_is_a_no_op_success() {
    let clock = TestClock::new();
    let ctx = ctx(&clock, true);
    let mut doc = new_doc(&clock);
    let before = doc.clone();
    let (items, changes) = publish_ok(&mut doc, &[delete_pub("note", 9, 555, 0)], None, &ctx);
    assert_eq!(items.len(), 1);
    assert!(items[0].deleted);
    assert_eq!(items[0].version, 0);
    assert!(changes.is_empty(), "{changes:?}");
    assert!(!changes.durable);
    assert_eq!(doc, before, "no container is created for a deletion");

    // With a non-zero version it is a conflict.
    assert_eq!(
        publish_err(&mut doc, &[delete_pub("note", 9, 555, 3)], None, &ctx),
        PublishError::Conflict(vec![Conflict {
            index: 1,
            version: 3,
            current_version: 0
        }])
    );
}

// ---------------------------------------------------------------- containers

#[test]
fn unknown_containers_are_created_implicitly() {
    let clock = TestClock::new();
    let ctx = ctx(&clock, true);
    let mut doc = new_doc(&clock);
    assert!(doc.container(cid(401)).is_none());
    assert!(doc.container(cid(32767)).is_none());
    publish_ok(
        &mut doc,
        &[
            static_pub("note", 0, 401, 0, &note_xml("a")),
            static_pub("note", 0, 32767, 0, &note_xml("b")),
        ],
        None,
        &ctx,
    );
    for id in [401, 32767] {
        assert_eq!(
            doc.container(cid(id)),
            Some(&Container {
                id: cid(id),
                version: 0,
                members: vec![]
            })
        );
        assert_eq!(get(&doc, "note", 0, id).unwrap().version, 1);
    }
    // The default memberships are untouched.
    assert_eq!(
        doc.container(cid(100)).unwrap().members,
        vec![Member::Federated]
    );
}

#[test]
fn container_ids_stop_at_32767() {
    assert!(ContainerId::new(32767).is_ok());
    assert!(ContainerId::new(32768).is_err());
    assert!(ContainerId::new(u64::MAX).is_err());
    assert_eq!(ContainerId::new(32767).unwrap().get(), 32767);
}

#[test]
fn container_limit_at_boundary() {
    let clock = TestClock::new();
    let ctx = ctx(&clock, true);
    let mut doc = new_doc(&clock);
    let existing = doc.containers().count();
    assert_eq!(
        existing, 7,
        "100, 200, 32000 and the aggregation targets 2, 3, 300, 400"
    );
    let free = MAX_CONTAINERS - existing;
    let batch: Vec<Publication> = (0..free as u64)
        .map(|i| static_pub("note", 0, 1000 + i, 0, "<a/>"))
        .collect();
    let before = doc.clone();
    let mut over = batch.clone();
    over.push(static_pub("note", 0, 5000, 0, "<a/>"));
    assert!(matches!(
        publish_err(&mut doc, &over, None, &ctx),
        PublishError::TooLarge(_)
    ));
    assert_eq!(doc, before);
    publish_ok(&mut doc, &batch, None, &ctx);
    assert_eq!(doc.containers().count(), MAX_CONTAINERS);
    assert!(matches!(
        publish_err(
            &mut doc,
            &[static_pub("note", 0, 5000, 0, "<a/>")],
            None,
            &ctx
        ),
        PublishError::TooLarge(_)
    ));
    // Existing containers still take publications.
    publish_ok(
        &mut doc,
        &[static_pub("note", 1, 1000, 0, "<a/>")],
        None,
        &ctx,
    );
}

// ---------------------------------------------------------------- read-only keys

#[test]
fn server_written_keys_are_read_only() {
    let clock = TestClock::new();
    let ctx = ctx(&clock, true);
    let mut doc = new_doc(&clock);
    // Bring the aggregates into existence so both "is an output" and "exists,
    // server-authored" paths are exercised.
    publish_ok(
        &mut doc,
        &[endpoint_pub(
            "state",
            0x3000_0001,
            2,
            0,
            &machine_state(3500),
        )],
        Some(EndpointId(1)),
        &ctx,
    );
    let before = doc.clone();
    let cases: [(&str, u32, u64, u32); 9] = [
        ("state", 1, 100, 0),
        ("state", 1, 200, 1),
        ("state", 1, 32000, 1),
        ("state", 1, 2, 1),
        ("state", 1, 300, 0),
        ("state", 0x1000_0000, 2, 0),
        ("legacyInterop", 1, 400, 1),
        ("services", 0, 32000, 1),
        ("services", 0, 200, 0),
    ];
    for (category, instance, container, version) in cases {
        let value = state_xml("userState", Some(3500), "");
        let batch = [
            static_pub("note", 0, 200, 0, &note_xml("fine")),
            static_pub(category, instance, container, version, &value),
        ];
        assert_eq!(
            publish_err(&mut doc, &batch, None, &ctx),
            PublishError::ReadOnly {
                index: 2,
                category: category.to_string(),
                instance,
                container: container as u16,
            },
            "{category} {instance} in {container}"
        );
        // Deleting one is refused as well.
        assert!(matches!(
            publish_err(
                &mut doc,
                &[delete_pub(category, instance, container, version)],
                None,
                &ctx
            ),
            PublishError::ReadOnly { index: 1, .. }
        ));
        assert_eq!(doc, before);
    }
    // Neighbouring keys are the client's.
    publish_ok(
        &mut doc,
        &[
            static_pub("state", 2, 200, 0, &user_state(3500)),
            static_pub("state", 1, 401, 0, &user_state(3500)),
            static_pub("state", 0x1000_0000, 3, 0, &user_state(3500)),
            static_pub("legacyInterop", 1, 2, 0, "<legacyInterop/>"),
        ],
        None,
        &ctx,
    );
}

// ---------------------------------------------------------------- values

type XmlCheck = fn(&XmlError) -> bool;

#[test]
fn malformed_xml_is_refused() {
    let clock = TestClock::new();
    let ctx = ctx(&clock, true);
    let mut doc = new_doc(&clock);
    let before = doc.clone();
    let cases: [(&str, XmlCheck); 5] = [
        ("<note><body></note>", |e| {
            matches!(e, XmlError::Malformed(_))
        }),
        ("<note>", |e| matches!(e, XmlError::Malformed(_))),
        ("plain text", |e| *e == XmlError::NotOneElement),
        ("<a/><b/>", |e| *e == XmlError::NotOneElement),
        ("", |e| *e == XmlError::NotOneElement),
    ];
    for (value, check) in cases {
        let batch = [
            static_pub("note", 0, 200, 0, &note_xml("fine")),
            static_pub("note", 0, 400, 0, value),
        ];
        match publish_err(&mut doc, &batch, None, &ctx) {
            PublishError::InvalidXml { index: 2, source } => {
                assert!(check(&source), "{value:?}: {source:?}")
            }
            other => panic!("{value:?}: {other:?}"),
        }
        assert_eq!(doc, before);
    }
    let deep = format!("{}{}", "<a>".repeat(33), "</a>".repeat(33));
    assert_eq!(
        publish_err(
            &mut doc,
            &[static_pub("note", 0, 200, 0, &deep)],
            None,
            &ctx
        ),
        PublishError::InvalidXml {
            index: 1,
            source: XmlError::TooDeep
        }
    );
}

#[test]
fn dtds_and_entities_are_refused_as_dtd() {
    let clock = TestClock::new();
    let ctx = ctx(&clock, true);
    let mut doc = new_doc(&clock);
    let before = doc.clone();
    let values = [
        r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]><note>&lol2;</note>"#,
        r#"<!DOCTYPE note SYSTEM "file:///etc/passwd"><note/>"#,
        r#"<!DOCTYPE note [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><note>&xxe;</note>"#,
        "<note><body>&undeclared;</body></note>",
    ];
    for value in values {
        assert_eq!(
            publish_err(
                &mut doc,
                &[static_pub("note", 0, 200, 0, value)],
                None,
                &ctx
            ),
            PublishError::InvalidXml {
                index: 1,
                source: XmlError::Dtd
            },
            "{value}"
        );
        assert_eq!(doc, before);
    }
    // Predefined entities and character references are fine.
    publish_ok(
        &mut doc,
        &[static_pub(
            "note",
            0,
            200,
            0,
            "<note><body>&lt;&amp;&#65;&#x42;</body></note>",
        )],
        None,
        &ctx,
    );
}

#[test]
fn an_undeclared_entity_in_an_attribute_is_refused() {
    let clock = TestClock::new();
    let ctx = ctx(&clock, true);
    let mut doc = new_doc(&clock);
    let err = publish_err(
        &mut doc,
        &[static_pub("note", 0, 200, 0, r#"<note a="&xxe;"/>"#)],
        None,
        &ctx,
    );
    assert!(
        matches!(err, PublishError::InvalidXml { index: 1, .. }),
        "{err:?}"
    );
}

/// Entities are refused as `Dtd` in text content (see above); an entity reference in
/// an attribute value should be classified the same way.
#[test]
fn an_undeclared_entity_in_an_attribute_is_refused_as_dtd() {
    let clock = TestClock::new();
    let ctx = ctx(&clock, true);
    let mut doc = new_doc(&clock);
    assert_eq!(
        publish_err(
            &mut doc,
            &[static_pub("note", 0, 200, 0, r#"<note a="&xxe;"/>"#)],
            None,
            &ctx
        ),
        PublishError::InvalidXml {
            index: 1,
            source: XmlError::Dtd
        }
    );
}

#[test]
fn value_size_limit_at_boundary() {
    let clock = TestClock::new();
    let ctx = ctx(&clock, true);
    let mut doc = new_doc(&clock);
    let before = doc.clone();
    let too_big = xml_of_len(MAX_VALUE_BYTES + 1);
    assert!(matches!(
        publish_err(
            &mut doc,
            &[
                static_pub("note", 0, 400, 0, "<a/>"),
                static_pub("note", 0, 200, 0, &too_big)
            ],
            None,
            &ctx
        ),
        PublishError::TooLarge(_)
    ));
    assert_eq!(doc, before);
    let exact = xml_of_len(MAX_VALUE_BYTES);
    publish_ok(
        &mut doc,
        &[static_pub("note", 0, 200, 0, &exact)],
        None,
        &ctx,
    );
    assert_eq!(
        get(&doc, "note", 0, 200).unwrap().value.len(),
        MAX_VALUE_BYTES
    );
}

#[test]
fn batch_size_limit_at_boundary() {
    let clock = TestClock::new();
    let ctx = ctx(&clock, true);
    let mut doc = new_doc(&clock);
    let before = doc.clone();
    let batch: Vec<Publication> = (0..=MAX_PUBLICATIONS_PER_BATCH as u32)
        .map(|i| static_pub("note", i, 200, 0, "<a/>"))
        .collect();
    assert!(matches!(
        publish_err(&mut doc, &batch, None, &ctx),
        PublishError::TooLarge(_)
    ));
    assert_eq!(doc, before);
    let (items, changes) = publish_ok(&mut doc, &batch[..MAX_PUBLICATIONS_PER_BATCH], None, &ctx);
    assert_eq!(items.len(), MAX_PUBLICATIONS_PER_BATCH);
    assert_eq!(items.last().unwrap().index, MAX_PUBLICATIONS_PER_BATCH);
    assert_eq!(
        doc.instances_in(cid(200), "note").count(),
        MAX_PUBLICATIONS_PER_BATCH
    );
    assert_eq!(changes.categories, pairs(&[(200, "note")]));
}

#[test]
fn instance_limit_at_boundary() {
    let clock = TestClock::new();
    let ctx = ctx(&clock, true);
    let mut doc = new_doc(&clock);
    let mut next = 0u32;
    let client = |doc: &PresentityDoc| {
        doc.instances()
            .filter(|i| i.author == Author::Client)
            .count()
    };
    while client(&doc) < MAX_INSTANCES_PER_PRESENTITY {
        let room = MAX_INSTANCES_PER_PRESENTITY - client(&doc);
        let n = room.min(MAX_PUBLICATIONS_PER_BATCH);
        let batch: Vec<Publication> = (0..n as u32)
            .map(|i| static_pub("note", next + i, 200, 0, "<a/>"))
            .collect();
        publish_ok(&mut doc, &batch, None, &ctx);
        next += n as u32;
    }
    assert_eq!(client(&doc), MAX_INSTANCES_PER_PRESENTITY);
    let before = doc.clone();
    assert!(matches!(
        publish_err(
            &mut doc,
            &[static_pub("note", next, 200, 0, "<a/>")],
            None,
            &ctx
        ),
        PublishError::TooLarge(_)
    ));
    assert_eq!(doc, before);
    // Replacing is fine at the limit, and so is a delete plus an add.
    publish_ok(
        &mut doc,
        &[static_pub("note", 0, 200, 1, "<b/>")],
        None,
        &ctx,
    );
    publish_ok(
        &mut doc,
        &[
            delete_pub("note", 1, 200, 1),
            static_pub("note", next, 200, 0, "<a/>"),
        ],
        None,
        &ctx,
    );
    assert_eq!(client(&doc), MAX_INSTANCES_PER_PRESENTITY);
}

/// The instance limit counts client publications; the aggregation outputs a
/// publication causes come on top (a bounded set the server writes).
#[test]
fn instance_limit_counts_client_publications_only() {
    let clock = TestClock::new();
    let ctx = ctx(&clock, true);
    let mut doc = new_doc(&clock);
    let mut next = 0u32;
    let client = |doc: &PresentityDoc| {
        doc.instances()
            .filter(|i| i.author == Author::Client)
            .count()
    };
    while client(&doc) < MAX_INSTANCES_PER_PRESENTITY - 1 {
        let room = MAX_INSTANCES_PER_PRESENTITY - 1 - client(&doc);
        let n = room.min(MAX_PUBLICATIONS_PER_BATCH);
        let batch: Vec<Publication> = (0..n as u32)
            .map(|i| static_pub("note", next + i, 200, 0, "<a/>"))
            .collect();
        publish_ok(&mut doc, &batch, None, &ctx);
        next += n as u32;
    }
    let machine = endpoint_pub("state", 0x3000_0001, 2, 0, &machine_state(3500));
    publish_ok(&mut doc, &[machine], Some(EndpointId(1)), &ctx);
    assert_eq!(client(&doc), MAX_INSTANCES_PER_PRESENTITY);
    let server = doc
        .instances()
        .filter(|i| i.author == Author::Server)
        .count();
    assert!(
        server > 0 && server < 32,
        "aggregation outputs on top: {server}"
    );
    let one_more = static_pub("note", next, 200, 0, "<a/>");
    assert!(matches!(
        doc.publish(&[one_more], None, &ctx),
        Err(PublishError::TooLarge(_))
    ));
}

/// The containers aggregation writes into exist from provisioning on, so aggregation
/// never creates one and never breaks the container limit.
#[test]
fn aggregation_never_creates_containers() {
    let clock = TestClock::new();
    let ctx = ctx(&clock, true);
    let mut doc = new_doc(&clock);
    for id in [2u64, 3, 100, 200, 300, 400, 32000] {
        assert!(
            doc.container(cid(id)).is_some(),
            "container {id} provisioned"
        );
    }
    let free = MAX_CONTAINERS - doc.containers().count();
    let batch: Vec<Publication> = (0..free as u64)
        .map(|i| static_pub("note", 0, 1000 + i, 0, "<a/>"))
        .collect();
    publish_ok(&mut doc, &batch, None, &ctx);
    assert_eq!(doc.containers().count(), MAX_CONTAINERS);
    publish_ok(
        &mut doc,
        &[endpoint_pub(
            "state",
            0x3000_0001,
            2,
            0,
            &machine_state(3500),
        )],
        Some(EndpointId(1)),
        &ctx,
    );
    assert_eq!(doc.containers().count(), MAX_CONTAINERS);
    assert!(matches!(
        doc.publish(&[static_pub("note", 0, 5000, 0, "<a/>")], None, &ctx),
        Err(PublishError::TooLarge(_))
    ));
}

// ---------------------------------------------------------------- lifetimes

#[test]
fn time_expiry_needs_expires_within_range() {
    let clock = TestClock::new();
    let ctx = ctx(&clock, true);
    let mut doc = new_doc(&clock);
    let before = doc.clone();
    for expires in [None, Some(MAX_TIME_EXPIRES_SECS + 1), Some(u64::MAX)] {
        let p = publication("note", 0, 200, 0, ExpireType::Time, expires, Some("<a/>"));
        let batch = [static_pub("note", 0, 400, 0, "<a/>"), p];
        assert!(
            matches!(
                publish_err(&mut doc, &batch, None, &ctx),
                PublishError::Invalid { index: 2, .. }
            ),
            "{expires:?}"
        );
        assert_eq!(doc, before);
    }
    publish_ok(
        &mut doc,
        &[
            time_pub("note", 0, 200, 0, 1, "<a/>"),
            time_pub("note", 1, 200, 0, MAX_TIME_EXPIRES_SECS, "<a/>"),
        ],
        None,
        &ctx,
    );
    assert_eq!(
        get(&doc, "note", 0, 200).unwrap().expiry,
        Expiry::Time {
            at: Timestamp::from_millis(T0 + 1000),
            secs: 1
        }
    );
    assert_eq!(
        get(&doc, "note", 1, 200).unwrap().expiry,
        Expiry::Time {
            at: Timestamp::from_millis(T0 + MAX_TIME_EXPIRES_SECS as i64 * 1000),
            secs: MAX_TIME_EXPIRES_SECS
        }
    );
}

#[test]
fn endpoint_expiry_needs_an_endpoint() {
    let clock = TestClock::new();
    let ctx = ctx(&clock, true);
    let mut doc = new_doc(&clock);
    let before = doc.clone();
    let batch = [
        static_pub("note", 0, 400, 0, "<a/>"),
        endpoint_pub("note", 0, 200, 0, "<a/>"),
    ];
    assert_eq!(
        publish_err(&mut doc, &batch, None, &ctx),
        PublishError::EndpointRequired { index: 2 }
    );
    assert_eq!(doc, before);
    publish_ok(&mut doc, &batch, Some(EndpointId(42)), &ctx);
    assert_eq!(
        get(&doc, "note", 0, 200).unwrap().expiry,
        Expiry::Endpoint {
            endpoint: EndpointId(42)
        }
    );
    assert_eq!(get(&doc, "note", 0, 400).unwrap().expiry, Expiry::Static);
}

#[test]
fn user_expiry_is_recorded() {
    let clock = TestClock::new();
    let ctx = ctx(&clock, true);
    let mut doc = new_doc(&clock);
    publish_ok(&mut doc, &[user_pub("note", 0, 200, 0, "<a/>")], None, &ctx);
    assert_eq!(get(&doc, "note", 0, 200).unwrap().expiry, Expiry::User);
}

#[test]
fn expire_removes_time_instances_at_their_deadline_only() {
    let clock = TestClock::new();
    let ctx = ctx(&clock, true);
    let mut doc = new_doc(&clock);
    assert_eq!(doc.next_expiry(), None);
    publish_ok(
        &mut doc,
        &[
            time_pub("note", 0, 200, 0, 60, &note_xml("a")),
            time_pub("note", 1, 400, 0, 30, &note_xml("b")),
            static_pub("note", 2, 200, 0, &note_xml("c")),
        ],
        None,
        &ctx,
    );
    let t30 = Timestamp::from_millis(T0 + 30_000);
    let t60 = Timestamp::from_millis(T0 + 60_000);
    assert_eq!(doc.next_expiry(), Some(t30));

    let before = doc.clone();
    let changes = doc.expire(Timestamp::from_millis(T0 + 29_999), &ctx);
    assert!(changes.is_empty());
    assert_eq!(doc, before);

    let changes = doc.expire(t30, &ctx);
    assert_eq!(changes.categories, pairs(&[(400, "note")]));
    assert!(changes.durable);
    assert!(get(&doc, "note", 1, 400).is_none());
    assert!(get(&doc, "note", 0, 200).is_some());
    assert_eq!(doc.next_expiry(), Some(t60));

    // Long past the deadline works too.
    let changes = doc.expire(Timestamp::from_millis(T0 + 3_600_000), &ctx);
    assert_eq!(changes.categories, pairs(&[(200, "note")]));
    assert!(get(&doc, "note", 0, 200).is_none());
    assert!(
        get(&doc, "note", 2, 200).is_some(),
        "static instances never expire"
    );
    assert_eq!(doc.next_expiry(), None);
}

#[test]
fn deadlines_are_publish_time_plus_expires() {
    let t = Timestamp::from_millis(T0);
    assert_eq!(t.plus_secs(0), t);
    assert_eq!(
        t.plus_secs(MAX_TIME_EXPIRES_SECS).millis(),
        T0 + MAX_TIME_EXPIRES_SECS as i64 * 1000
    );
    // Saturates rather than overflowing.
    assert_eq!(
        Timestamp::from_millis(i64::MAX - 10).plus_secs(1),
        Timestamp::from_millis(i64::MAX)
    );
}

/// `plus_secs` is documented by its use as a deadline; a huge `secs` must not move
/// the deadline into the past. Unreachable through `publish` today, which caps
/// `expires` at MAX_TIME_EXPIRES_SECS, but `Timestamp` is public API.
#[test]
fn huge_deadlines_saturate_instead_of_going_back_in_time() {
    let t = Timestamp::from_millis(T0);
    assert!(t.plus_secs(u64::MAX) >= t, "{:?}", t.plus_secs(u64::MAX));
    assert!(t.plus_secs(1 << 63) >= t, "{:?}", t.plus_secs(1 << 63));
}

#[test]
fn republishing_a_time_instance_moves_its_deadline() {
    let clock = TestClock::new();
    let ctx = ctx(&clock, true);
    let mut doc = new_doc(&clock);
    publish_ok(
        &mut doc,
        &[time_pub("note", 0, 200, 0, 10, "<a/>")],
        None,
        &ctx,
    );
    clock.advance_secs(5);
    publish_ok(
        &mut doc,
        &[time_pub("note", 0, 200, 1, 10, "<a/>")],
        None,
        &ctx,
    );
    assert_eq!(doc.next_expiry(), Some(Timestamp::from_millis(T0 + 15_000)));
    assert!(
        doc.expire(Timestamp::from_millis(T0 + 10_000), &ctx)
            .is_empty()
    );
    assert!(get(&doc, "note", 0, 200).is_some());
}

#[test]
fn expiry_of_an_aggregation_input_reruns_the_aggregation() {
    let clock = TestClock::new();
    let ctx = ctx(&clock, true);
    let mut doc = new_doc(&clock);
    publish_ok(
        &mut doc,
        &[endpoint_pub(
            "state",
            0x3000_0001,
            2,
            0,
            &machine_state(3500),
        )],
        Some(EndpointId(1)),
        &ctx,
    );
    publish_ok(
        &mut doc,
        &[time_pub("state", 0x2400_0000, 2, 0, 60, &user_state(9500))],
        None,
        &ctx,
    );
    assert_eq!(aggregate_availability(&doc, 200), Some(9500));
    let changes = doc.expire(Timestamp::from_millis(T0 + 60_000), &ctx);
    assert!(get(&doc, "state", 0x2400_0000, 2).is_none());
    assert_eq!(aggregate_availability(&doc, 200), Some(3500));
    assert!(changes.categories.contains(&(cid(200), Arc::from("state"))));
    assert!(changes.categories.contains(&(cid(2), Arc::from("state"))));
}

// ---------------------------------------------------------------- change sets

#[test]
fn change_set_lists_exactly_the_touched_pairs() {
    let clock = TestClock::new();
    let ctx = ctx(&clock, true);
    let mut doc = new_doc(&clock);
    let (_, changes) = publish_ok(
        &mut doc,
        &[
            static_pub("note", 0, 200, 0, &note_xml("a")),
            static_pub("note", 0, 400, 0, &note_xml("b")),
            static_pub("note", 1, 400, 0, &note_xml("c")),
            static_pub("contactCard", 3, 400, 0, "<contactCard/>"),
        ],
        None,
        &ctx,
    );
    assert_eq!(
        changes,
        ChangeSet {
            categories: pairs(&[(200, "note"), (400, "note"), (400, "contactCard")]),
            containers: BTreeSet::new(),
            subscribers: false,
            contacts: false,
            durable: true,
            live: false,
        }
    );
    assert_eq!(
        changes.category_names(),
        ["contactCard", "note"].into_iter().map(Arc::from).collect()
    );

    // Endpoint data is not durable.
    let (_, changes) = publish_ok(
        &mut doc,
        &[endpoint_pub("calendarData", 0, 300, 0, "<calendarData/>")],
        Some(EndpointId(1)),
        &ctx,
    );
    assert_eq!(changes.categories, pairs(&[(300, "calendarData")]));
    assert!(!changes.durable);

    // An aggregation input touches its own pair and every output that changed.
    let (_, changes) = publish_ok(
        &mut doc,
        &[endpoint_pub(
            "state",
            0x3000_0001,
            2,
            0,
            &machine_state(3500),
        )],
        Some(EndpointId(1)),
        &ctx,
    );
    assert_eq!(
        changes.categories,
        pairs(&[
            (2, "state"),
            (100, "state"),
            (200, "state"),
            (400, "state"),
            (100, "legacyInterop"),
            (200, "legacyInterop"),
            (400, "legacyInterop"),
        ])
    );
    assert!(
        !changes.durable,
        "user-bound aggregates and endpoint states are not stored"
    );

    // The same value again: only the input changes.
    let (_, changes) = publish_ok(
        &mut doc,
        &[endpoint_pub(
            "state",
            0x3000_0001,
            2,
            1,
            &machine_state(3500),
        )],
        Some(EndpointId(1)),
        &ctx,
    );
    assert_eq!(changes.categories, pairs(&[(2, "state")]));

    // A static input is durable.
    let (_, changes) = publish_ok(
        &mut doc,
        &[static_pub("state", 0x2000_0000, 3, 0, &user_state(3500))],
        None,
        &ctx,
    );
    assert_eq!(
        changes.categories,
        pairs(&[(3, "state"), (300, "state"), (300, "legacyInterop")])
    );
    assert!(changes.durable);
}

// ---------------------------------------------------------------- the store

#[test]
fn record_round_trip_keeps_durable_data_only() {
    let clock = TestClock::new();
    let ctx = ctx(&clock, true);
    let mut doc = new_doc(&clock);
    publish_ok(
        &mut doc,
        &[
            static_pub("note", 0, 200, 0, &note_xml("static")),
            time_pub("note", 1, 400, 0, 3600, &note_xml("timed")),
            user_pub("calendarData", 0, 300, 0, "<calendarData/>"),
            static_pub("state", 0x2000_0000, 2, 0, &user_state(6500)),
            time_pub("state", 0x2400_0000, 3, 0, 600, &user_state(9500)),
            user_pub("state", 0x2100_0000, 2, 0, &user_state(3500)),
            static_pub("routing", 0, 1, 0, "<routing/>"),
        ],
        None,
        &ctx,
    );
    publish_ok(
        &mut doc,
        &[
            endpoint_pub("state", 0x3000_0001, 2, 0, &machine_state(3500)),
            endpoint_pub(
                "device",
                1,
                2,
                0,
                "<device><capabilities><text/></capabilities></device>",
            ),
            endpoint_pub("note", 5, 200, 0, "<note/>"),
        ],
        Some(EndpointId(7)),
        &ctx,
    );
    doc.update_containers(&[ContainerUpdate {
        id: cid(401),
        version: 0,
        add: vec![user("bob@example.com"), domain("example.org")],
        remove: vec![],
    }])
    .unwrap();
    doc.add_subscriber(SubscriberEntry {
        user: uri("carol@example.net"),
        display_name: "Carol".into(),
        kind: SubscriberType::Federated,
        acknowledged: false,
        since: Timestamp::from_millis(T0),
    });
    assert!(
        get(&doc, "state", 1, 200).is_some(),
        "aggregates exist before"
    );
    assert!(get(&doc, "services", 0, 200).is_some());

    let record = doc.to_record(presence_model::document::RecordScope::Durable);
    assert_eq!(record.uri, owner());
    // Endpoint-bound instances and the user-bound aggregates are not stored.
    assert!(
        record
            .instances
            .iter()
            .all(|i| !matches!(i.expiry, Expiry::Endpoint { .. }))
    );
    assert!(
        record
            .instances
            .iter()
            .all(|i| !(i.author == Author::Server && i.expiry == Expiry::User))
    );
    let stored: BTreeSet<_> = record
        .instances
        .iter()
        .map(|i| {
            (
                i.key.container.get(),
                i.key.category.to_string(),
                i.key.instance,
            )
        })
        .collect();
    let expected: BTreeSet<_> = [
        (200, "note", 0),
        (400, "note", 1),
        (300, "calendarData", 0),
        (2, "state", 0x2000_0000),
        (3, "state", 0x2400_0000),
        (2, "state", 0x2100_0000),
        (1, "routing", 0),
        // the blocked view is static and server-written
        (32000, "state", 1),
        (32000, "legacyInterop", 1),
        (32000, "services", 0),
    ]
    .into_iter()
    .map(|(c, n, i)| (c, n.to_string(), i))
    .collect();
    assert_eq!(stored, expected);

    let restored = PresentityDoc::restore(record.clone(), &ctx);
    assert_eq!(
        restored.to_record(presence_model::document::RecordScope::Durable),
        record,
        "restore then record is the identity"
    );
    assert_eq!(restored.uri(), doc.uri());
    assert_eq!(
        restored.containers().collect::<Vec<_>>(),
        doc.containers().collect::<Vec<_>>()
    );
    assert_eq!(restored.subscribers(), doc.subscribers());
    for inst in doc.instances() {
        let durable_client =
            inst.author == Author::Client && !matches!(inst.expiry, Expiry::Endpoint { .. });
        let fixed = inst.key.container == ContainerId::BLOCKED;
        match restored.instance(&inst.key) {
            Some(r) => {
                assert!(durable_client || fixed, "{:?} should not survive", inst.key);
                assert_eq!(r, inst, "kept verbatim with version, time and sequence");
            }
            None => assert!(!durable_client && !fixed, "{:?} was lost", inst.key),
        }
    }
    // Restored users are offline: no user-bound aggregate exists.
    assert!(get(&restored, "state", 1, 200).is_none());
    assert!(get(&restored, "services", 0, 200).is_none());
    assert_eq!(aggregate_availability(&restored, 32000), Some(18500));
}

#[test]
fn restore_recreates_a_missing_blocked_view() {
    let clock = TestClock::new();
    let ctx = ctx(&clock, true);
    let doc = new_doc(&clock);
    let mut record = doc.to_record(presence_model::document::RecordScope::Durable);
    record.instances.clear();
    let restored = PresentityDoc::restore(record, &ctx);
    assert_eq!(aggregate_availability(&restored, 32000), Some(18500));
    assert!(get(&restored, "legacyInterop", 1, 32000).is_some());
    assert!(get(&restored, "services", 0, 32000).is_some());
}

// ---------------------------------------------------------------- properties

#[derive(Debug, Clone)]
struct Op {
    slot: usize,
    delete: bool,
    version_skew: i8,
}

fn op() -> impl Strategy<Value = Op> {
    (
        0usize..6,
        any::<bool>(),
        prop_oneof![4 => Just(0i8), 1 => -2i8..=2],
    )
        .prop_map(|(slot, delete, version_skew)| Op {
            slot,
            delete,
            version_skew,
        })
}

const SLOTS: [(u64, u32); 6] = [
    (200, 0),
    (200, 1),
    (400, 0),
    (401, 0),
    (2, 0x2000_0000),
    (3, 0x2000_0000),
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Over random batches against random history: a batch either applies completely
    /// (every key at its sent version + 1, deletions gone) or leaves the document
    /// untouched, and the conflicts listed are exactly the stale items.
    #[test]
    fn batches_are_all_or_nothing(history in prop::collection::vec(prop::collection::vec(op(), 1..4), 0..8)) {
        let clock = TestClock::new();
        let ctx = ctx(&clock, true);
        let mut doc = new_doc(&clock);
        for batch in history {
            let mut seen = BTreeSet::new();
            let batch: Vec<&Op> = batch.iter().filter(|o| seen.insert(o.slot)).collect();
            let items: Vec<Publication> = batch
                .iter()
                .map(|o| {
                    let (c, i) = SLOTS[o.slot];
                    let category = if c <= 3 { "state" } else { "note" };
                    let current = get(&doc, category, i, c).map_or(0, |x| x.version);
                    let version = (current as i64 + o.version_skew as i64).max(0) as u32;
                    if o.delete {
                        delete_pub(category, i, c, version)
                    } else {
                        static_pub(category, i, c, version, &user_state(3500 + 100 * o.slot as u32))
                    }
                })
                .collect();
            let stale: Vec<Conflict> = items
                .iter()
                .enumerate()
                .filter_map(|(n, p)| {
                    let current = doc
                        .instance(&presence_model::InstanceKey::new(&p.category, p.instance, p.container))
                        .map_or(0, |x| x.version);
                    (p.version != current).then_some(Conflict { index: n + 1, version: p.version, current_version: current })
                })
                .collect();
            let before = doc.clone();
            clock.advance_ms(1);
            match doc.publish(&items, None, &ctx) {
                Ok((results, _)) => {
                    prop_assert!(stale.is_empty());
                    prop_assert_eq!(results.len(), items.len());
                    for (p, r) in items.iter().zip(&results) {
                        let now = doc.instance(&presence_model::InstanceKey::new(&p.category, p.instance, p.container));
                        if p.is_delete() {
                            prop_assert!(now.is_none());
                            prop_assert_eq!(r.version, p.version);
                        } else {
                            let now = now.unwrap();
                            prop_assert_eq!(now.version, p.version + 1);
                            prop_assert_eq!(r.version, p.version + 1);
                            prop_assert_eq!(now.value.as_ref(), p.value.as_deref().unwrap());
                            prop_assert_eq!(now.publish_time, Timestamp::from_millis(clock_now(&clock)));
                        }
                    }
                }
                Err(e) => {
                    prop_assert_eq!(e, PublishError::Conflict(stale));
                    prop_assert_eq!(&doc, &before);
                }
            }
        }
    }
}

fn clock_now(clock: &TestClock) -> i64 {
    use presence_model::document::Stamper;
    clock.now().millis()
}
