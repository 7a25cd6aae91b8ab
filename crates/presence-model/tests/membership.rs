//! Container membership changes and the subscriber ("who added me") list.

mod common;

use common::*;
use presence_model::container::{Container, Member};
use presence_model::document::{ChangeSet, NotASubscriber};
use presence_model::limits::{MAX_CONTAINERS, MAX_MEMBERS_PER_CONTAINER, MAX_SUBSCRIBER_ENTRIES};
use presence_model::membership::{ContainerUpdate, MembershipError};
use presence_model::publication::Conflict;
use presence_model::subscribers::{SubscriberEntry, SubscriberType};
use presence_model::time::Timestamp;
use std::collections::BTreeSet;

fn update(id: u64, version: u32, add: Vec<Member>, remove: Vec<Member>) -> ContainerUpdate {
    ContainerUpdate {
        id: cid(id),
        version,
        add,
        remove,
    }
}

fn nth_user(n: usize) -> Member {
    user(&format!("user{n}@example.org"))
}

fn members(doc: &presence_model::PresentityDoc, id: u64) -> Vec<Member> {
    doc.container(cid(id))
        .expect("container exists")
        .members
        .clone()
}

fn version(doc: &presence_model::PresentityDoc, id: u64) -> u32 {
    doc.container(cid(id)).expect("container exists").version
}

#[test]
fn provisioned_documents_have_the_default_memberships() {
    let clock = TestClock::new();
    let doc = new_doc(&clock);
    let with_members: Vec<Container> = doc
        .containers()
        .filter(|c| c.version > 0)
        .cloned()
        .collect();
    assert_eq!(
        with_members,
        vec![
            Container {
                id: cid(100),
                version: 1,
                members: vec![Member::Federated]
            },
            Container {
                id: cid(200),
                version: 1,
                members: vec![Member::SameEnterprise]
            },
            Container {
                id: cid(32000),
                version: 1,
                members: vec![]
            },
        ]
    );
    // The aggregation targets exist from the start, empty and at version 0.
    for id in [2u64, 3, 300, 400] {
        let c = doc.container(cid(id)).expect("provisioned");
        assert_eq!((c.version, c.members.len()), (0, 0), "container {id}");
    }
}

#[test]
fn local_containers_are_fixed() {
    let clock = TestClock::new();
    let mut doc = new_doc(&clock);
    let before = doc.clone();
    for id in 0..=3u64 {
        assert_eq!(
            doc.update_containers(&[update(id, 0, vec![Member::Everyone], vec![])]),
            Err(MembershipError::Fixed(id as u16))
        );
        // Also when it is not the first of the batch, and the rest is valid.
        assert_eq!(
            doc.update_containers(&[
                update(400, 0, vec![user("bob@example.com")], vec![]),
                update(id, 0, vec![], vec![]),
            ]),
            Err(MembershipError::Fixed(id as u16))
        );
        assert_eq!(doc, before);
    }
    // 4 is the first container a client may manage.
    doc.update_containers(&[update(4, 0, vec![Member::Everyone], vec![])])
        .unwrap();
    assert_eq!(members(&doc, 4), vec![Member::Everyone]);
}

#[test]
fn stale_versions_are_reported_with_one_based_indexes_and_nothing_applies() {
    let clock = TestClock::new();
    let mut doc = new_doc(&clock);
    let before = doc.clone();
    let err = doc
        .update_containers(&[
            update(200, 1, vec![user("bob@example.com")], vec![]),
            update(100, 0, vec![Member::PublicCloud], vec![]),
            update(400, 0, vec![user("carol@example.com")], vec![]),
            update(500, 3, vec![Member::Everyone], vec![]),
            update(32000, 2, vec![user("mallory@example.com")], vec![]),
        ])
        .unwrap_err();
    assert_eq!(
        err,
        MembershipError::Conflict(vec![
            Conflict {
                index: 2,
                version: 0,
                current_version: 1
            },
            Conflict {
                index: 4,
                version: 3,
                current_version: 0
            },
            Conflict {
                index: 5,
                version: 2,
                current_version: 1
            },
        ])
    );
    assert_eq!(
        doc, before,
        "valid updates of a refused batch are not applied"
    );
    assert_eq!(version(&doc, 400), 0);
    assert!(doc.container(cid(500)).is_none());
}

#[test]
fn adding_and_removing_the_same_member_is_invalid() {
    let clock = TestClock::new();
    let mut doc = new_doc(&clock);
    let before = doc.clone();
    let bob = user("bob@example.com");
    assert!(matches!(
        doc.update_containers(&[
            update(400, 0, vec![Member::Everyone], vec![]),
            update(
                200,
                1,
                vec![bob.clone(), Member::Federated],
                vec![bob.clone()]
            ),
        ]),
        Err(MembershipError::Invalid { index: 2, .. })
    ));
    assert!(matches!(
        doc.update_containers(&[update(
            300,
            0,
            vec![domain("example.org")],
            vec![domain("example.org")]
        )]),
        Err(MembershipError::Invalid { index: 1, .. })
    ));
    assert_eq!(doc, before);
}

#[test]
fn a_container_twice_in_one_batch_is_invalid() {
    let clock = TestClock::new();
    let mut doc = new_doc(&clock);
    let before = doc.clone();
    assert!(matches!(
        doc.update_containers(&[
            update(400, 0, vec![Member::Everyone], vec![]),
            update(300, 0, vec![], vec![]),
            update(400, 0, vec![user("bob@example.com")], vec![]),
        ]),
        Err(MembershipError::Invalid { index: 3, .. })
    ));
    assert_eq!(doc, before);
}

#[test]
fn a_new_container_starts_at_version_0_and_becomes_1() {
    let clock = TestClock::new();
    let mut doc = new_doc(&clock);
    let bob = user("bob@example.com");
    let changes = doc
        .update_containers(&[update(400, 0, vec![bob.clone()], vec![])])
        .unwrap();
    assert_eq!(
        changes,
        ChangeSet {
            containers: [cid(400)].into_iter().collect(),
            durable: true,
            ..Default::default()
        }
    );
    assert_eq!(
        doc.container(cid(400)),
        Some(&Container {
            id: cid(400),
            version: 1,
            members: vec![bob]
        })
    );
    // A new container must be addressed with version 0.
    assert!(matches!(
        doc.update_containers(&[update(401, 1, vec![], vec![])]),
        Err(MembershipError::Conflict(_))
    ));
}

#[test]
fn a_container_created_by_a_publication_is_at_version_0() {
    let clock = TestClock::new();
    let ctx = ctx(&clock, true);
    let mut doc = new_doc(&clock);
    publish_ok(
        &mut doc,
        &[static_pub("note", 0, 401, 0, "<note/>")],
        None,
        &ctx,
    );
    assert_eq!(version(&doc, 401), 0);
    assert!(matches!(
        doc.update_containers(&[update(401, 1, vec![Member::Everyone], vec![])]),
        Err(MembershipError::Conflict(_))
    ));
    doc.update_containers(&[update(401, 0, vec![Member::Everyone], vec![])])
        .unwrap();
    assert_eq!(version(&doc, 401), 1);
    assert!(
        doc.instance(&key("note", 0, 401)).is_some(),
        "instances stay"
    );
}

#[test]
fn each_update_adds_one_to_the_version() {
    let clock = TestClock::new();
    let mut doc = new_doc(&clock);
    let (bob, carol) = (user("bob@example.com"), user("carol@example.com"));
    doc.update_containers(&[update(200, 1, vec![bob.clone()], vec![])])
        .unwrap();
    assert_eq!(version(&doc, 200), 2);
    assert_eq!(
        members(&doc, 200),
        vec![Member::SameEnterprise, bob.clone()]
    );

    doc.update_containers(&[update(
        200,
        2,
        vec![carol.clone(), bob.clone()],
        vec![Member::SameEnterprise],
    )])
    .unwrap();
    assert_eq!(version(&doc, 200), 3);
    assert_eq!(
        members(&doc, 200),
        vec![bob.clone(), carol.clone()],
        "no duplicates"
    );

    // Several containers in one batch: each goes up by exactly one.
    let changes = doc
        .update_containers(&[
            update(200, 3, vec![], vec![bob.clone()]),
            update(100, 1, vec![Member::PublicCloud], vec![Member::Federated]),
            update(32000, 1, vec![user("mallory@example.com")], vec![]),
        ])
        .unwrap();
    assert_eq!(version(&doc, 200), 4);
    assert_eq!(version(&doc, 100), 2);
    assert_eq!(version(&doc, 32000), 2);
    assert_eq!(members(&doc, 200), vec![carol]);
    assert_eq!(members(&doc, 100), vec![Member::PublicCloud]);
    assert_eq!(
        changes.containers,
        [cid(100), cid(200), cid(32000)]
            .into_iter()
            .collect::<BTreeSet<_>>()
    );
    assert!(changes.categories.is_empty());
    assert!(!changes.subscribers);
    assert!(changes.durable);

    // The old version is now stale.
    assert_eq!(
        doc.update_containers(&[update(200, 3, vec![], vec![])]),
        Err(MembershipError::Conflict(vec![Conflict {
            index: 1,
            version: 3,
            current_version: 4
        }]))
    );
}

#[test]
fn removing_an_absent_member_is_harmless() {
    let clock = TestClock::new();
    let mut doc = new_doc(&clock);
    doc.update_containers(&[update(200, 1, vec![], vec![user("nobody@example.com")])])
        .unwrap();
    assert_eq!(members(&doc, 200), vec![Member::SameEnterprise]);
}

#[test]
fn member_limit_at_boundary() {
    let clock = TestClock::new();
    let mut doc = new_doc(&clock);
    let before = doc.clone();
    let too_many: Vec<Member> = (0..=MAX_MEMBERS_PER_CONTAINER).map(nth_user).collect();
    assert!(matches!(
        doc.update_containers(&[update(400, 0, too_many.clone(), vec![])]),
        Err(MembershipError::TooLarge(_))
    ));
    assert_eq!(doc, before);

    // Exactly the limit, with a repeated entry that counts once.
    let mut exact: Vec<Member> = too_many[..MAX_MEMBERS_PER_CONTAINER].to_vec();
    exact.push(too_many[0].clone());
    doc.update_containers(&[update(400, 0, exact, vec![])])
        .unwrap();
    assert_eq!(members(&doc, 400).len(), MAX_MEMBERS_PER_CONTAINER);

    // One more is refused; re-adding a member already there is not.
    let before = doc.clone();
    assert!(matches!(
        doc.update_containers(&[update(
            400,
            1,
            vec![too_many[MAX_MEMBERS_PER_CONTAINER].clone()],
            vec![]
        )]),
        Err(MembershipError::TooLarge(_))
    ));
    assert_eq!(doc, before);
    doc.update_containers(&[update(400, 1, vec![too_many[5].clone()], vec![])])
        .unwrap();
    assert_eq!(members(&doc, 400).len(), MAX_MEMBERS_PER_CONTAINER);

    // Swapping one member for another at the limit is fine.
    doc.update_containers(&[update(
        400,
        2,
        vec![too_many[MAX_MEMBERS_PER_CONTAINER].clone()],
        vec![too_many[0].clone()],
    )])
    .unwrap();
    let now = members(&doc, 400);
    assert_eq!(now.len(), MAX_MEMBERS_PER_CONTAINER);
    assert!(!now.contains(&too_many[0]));
    assert!(now.contains(&too_many[MAX_MEMBERS_PER_CONTAINER]));
}

#[test]
fn container_limit_applies_to_membership_changes() {
    let clock = TestClock::new();
    let mut doc = new_doc(&clock);
    let free = MAX_CONTAINERS - doc.containers().count();
    let mut updates: Vec<ContainerUpdate> = (0..free as u64)
        .map(|i| update(1000 + i, 0, vec![Member::Everyone], vec![]))
        .collect();
    updates.push(update(5000, 0, vec![], vec![]));
    let before = doc.clone();
    assert!(matches!(
        doc.update_containers(&updates),
        Err(MembershipError::TooLarge(_))
    ));
    assert_eq!(doc, before);
    updates.pop();
    doc.update_containers(&updates).unwrap();
    assert_eq!(doc.containers().count(), MAX_CONTAINERS);
    assert!(matches!(
        doc.update_containers(&[update(5000, 0, vec![], vec![])]),
        Err(MembershipError::TooLarge(_))
    ));
    // Existing containers can still change.
    doc.update_containers(&[update(1000, 1, vec![], vec![Member::Everyone])])
        .unwrap();
}

// ---------------------------------------------------------------- subscribers

fn entry(u: &str, name: &str, kind: SubscriberType, since: i64) -> SubscriberEntry {
    SubscriberEntry {
        user: uri(u),
        display_name: name.to_string(),
        kind,
        acknowledged: false,
        since: Timestamp::from_millis(since),
    }
}

#[test]
fn subscribers_are_added_replaced_and_acknowledged() {
    let clock = TestClock::new();
    let mut doc = new_doc(&clock);
    let bob = entry("bob@example.com", "Bob", SubscriberType::SameEnterprise, T0);
    let carol = entry(
        "carol@example.net",
        "Carol",
        SubscriberType::Federated,
        T0 + 1,
    );
    let subscribers_changed = ChangeSet {
        subscribers: true,
        durable: true,
        ..Default::default()
    };
    assert_eq!(doc.add_subscriber(bob.clone()), subscribers_changed);
    assert_eq!(doc.add_subscriber(carol.clone()), subscribers_changed);
    assert_eq!(doc.subscribers(), &[bob.clone(), carol.clone()]);

    // Subscribing again while the entry still waits for the owner changes nothing.
    let bob2 = SubscriberEntry {
        display_name: "Bob B".into(),
        since: Timestamp::from_millis(T0 + 5),
        ..bob.clone()
    };
    assert_eq!(doc.add_subscriber(bob2.clone()), ChangeSet::default());
    assert_eq!(doc.subscribers(), &[bob.clone(), carol.clone()]);

    // Acknowledging deletes the entry.
    assert_eq!(
        doc.acknowledge_subscriber(&bob.user),
        Ok(subscribers_changed)
    );
    assert_eq!(doc.subscribers(), std::slice::from_ref(&carol));

    // Twice, or for someone who never subscribed: an error, nothing changes.
    let before = doc.clone();
    assert_eq!(
        doc.acknowledge_subscriber(&bob.user),
        Err(NotASubscriber(bob.user.clone()))
    );
    let stranger = uri("stranger@example.org");
    assert_eq!(
        doc.acknowledge_subscriber(&stranger),
        Err(NotASubscriber(stranger.clone()))
    );
    assert_eq!(doc, before);
}

#[test]
fn subscriber_list_drops_the_oldest_past_its_limit() {
    let clock = TestClock::new();
    let mut doc = new_doc(&clock);
    for n in 0..MAX_SUBSCRIBER_ENTRIES {
        doc.add_subscriber(entry(
            &format!("u{n}@example.org"),
            "",
            SubscriberType::Unknown,
            n as i64,
        ));
    }
    assert_eq!(doc.subscribers().len(), MAX_SUBSCRIBER_ENTRIES);
    assert_eq!(doc.subscribers()[0].user, uri("u0@example.org"));
    doc.add_subscriber(entry(
        "late@example.org",
        "",
        SubscriberType::PublicCloud,
        0,
    ));
    assert_eq!(doc.subscribers().len(), MAX_SUBSCRIBER_ENTRIES);
    assert_eq!(doc.subscribers()[0].user, uri("u1@example.org"));
    assert_eq!(
        doc.subscribers().last().unwrap().user,
        uri("late@example.org")
    );
    assert!(
        doc.subscribers()
            .iter()
            .all(|s| s.user != uri("u0@example.org"))
    );
}

#[test]
fn subscribers_survive_the_store() {
    let clock = TestClock::new();
    let ctx = ctx(&clock, true);
    let mut doc = new_doc(&clock);
    doc.add_subscriber(entry(
        "bob@example.com",
        "Bob",
        SubscriberType::SameEnterprise,
        T0,
    ));
    doc.update_containers(&[update(400, 0, vec![user("bob@example.com")], vec![])])
        .unwrap();
    let restored = presence_model::PresentityDoc::restore(
        doc.to_record(presence_model::document::RecordScope::Durable),
        &ctx,
    );
    assert_eq!(restored.subscribers(), doc.subscribers());
    assert_eq!(
        restored.containers().collect::<Vec<_>>(),
        doc.containers().collect::<Vec<_>>()
    );
}
