//! The subscriber ("who added me") list, unknown users, endpoint ownership and
//! subscription limits.

mod common;

use common::*;
use presence_engine::{Delivery, EngineConfig, EngineError, SubscribeResult};
use presence_model::membership::ContainerUpdate;
use presence_model::{ContainerId, ExpireType, Member, PublishError, SubscriberType, Timestamp};
use presence_store::Account;

const ALICE: &str = "alice@example.com";
const BOB: &str = "bob@example.com";
const CAROL: &str = "carol@example.com";
const GHOST: &str = "ghost@example.com";

#[tokio::test(start_paused = true)]
async fn context_subscription_records_a_subscriber_until_acknowledged() {
    let fx = Fixture::new(&[ALICE, BOB, CAROL]);
    let (alice, bob, carol) = (uri(ALICE), uri(BOB), uri(CAROL));
    let alice_s = fx.engine.sign_in(&alice, "Alice", None).unwrap();
    alice_s.subscribe_self().unwrap();
    drain(alice_s.subscriber()).await;

    // Carol is blocked before she ever subscribes.
    fx.engine
        .update_containers(
            &alice,
            &[ContainerUpdate {
                id: ContainerId::BLOCKED,
                version: 1,
                add: vec![Member::User(carol.clone())],
                remove: vec![],
            }],
        )
        .unwrap();
    drain(alice_s.subscriber()).await;

    // Without a context nothing is recorded.
    let bob_s = fx.engine.sign_in(&bob, "Bob Builder", None).unwrap();
    bob_s
        .subscribe("plain", std::slice::from_ref(&alice), &[], false)
        .unwrap();
    assert!(
        fx.engine
            .own_snapshot(&alice)
            .unwrap()
            .subscribers
            .is_empty()
    );
    assert_quiet(alice_s.subscriber()).await;

    // With a context bob is recorded, and alice's self subscription is told.
    bob_s
        .subscribe("contacts", std::slice::from_ref(&alice), &[], true)
        .unwrap();
    let entries = fx.engine.own_snapshot(&alice).unwrap().subscribers;
    assert_eq!(entries.len(), 1, "{entries:#?}");
    let entry = &entries[0];
    assert_eq!(entry.user, bob);
    assert_eq!(entry.display_name, "Bob Builder");
    assert_eq!(entry.kind, SubscriberType::SameEnterprise);
    assert!(!entry.acknowledged);
    assert!(entry.since > Timestamp::from_millis(0));

    let d = recv_one(alice_s.subscriber()).await;
    let update = own(&d);
    assert!(
        update.categories.is_empty(),
        "no category changed: {update:#?}"
    );
    assert!(update.containers.is_none());
    let pushed = update
        .subscribers
        .as_ref()
        .expect("the subscriber list is sent");
    assert_eq!(pushed.as_slice(), entries.as_slice());

    // The watcher's own queue holds only its snapshot, stripped as for any watcher.
    let d = recv_one(bob_s.subscriber()).await;
    let (_, views) = categories(&d);
    assert!(views.iter().all(|v| !v.owner));
    assert_eq!(
        view_names(views),
        ["calendarData", "contactCard", "note", "services", "state"],
        "an empty category list means the default categories"
    );

    // Subscribing again while the entry waits for alice adds nothing, stores nothing
    // and tells nobody.
    bob_s
        .subscribe("contacts", std::slice::from_ref(&alice), &[], true)
        .unwrap();
    assert_eq!(fx.engine.own_snapshot(&alice).unwrap().subscribers.len(), 1);
    assert_quiet(alice_s.subscriber()).await;
    drain(bob_s.subscriber()).await;

    // A blocked watcher leaves no trace, and is shown the blocked view.
    let carol_s = fx.engine.sign_in(&carol, "Carol", None).unwrap();
    carol_s
        .subscribe(
            "contacts",
            std::slice::from_ref(&alice),
            &names(&["state"]),
            true,
        )
        .unwrap();
    let views = recv_views(carol_s.subscriber(), &alice).await;
    assert_eq!(availability(view(&views, "state")), 18500);
    let entries = fx.engine.own_snapshot(&alice).unwrap().subscribers;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].user, bob);
    assert_quiet(alice_s.subscriber()).await;

    // Watching oneself with a context records nothing either.
    alice_s
        .subscribe("me", std::slice::from_ref(&alice), &[], true)
        .unwrap();
    assert_eq!(fx.engine.own_snapshot(&alice).unwrap().subscribers.len(), 1);
    let batch = recv(alice_s.subscriber()).await;
    assert!(
        batch
            .iter()
            .all(|d| matches!(d, Delivery::Categories { .. })),
        "only the snapshot, no self update: {batch:#?}"
    );

    // Acknowledging deletes the entry and tells the owner's endpoints.
    fx.engine.acknowledge_subscriber(&alice, &bob).unwrap();
    assert!(
        fx.engine
            .own_snapshot(&alice)
            .unwrap()
            .subscribers
            .is_empty()
    );
    let d = recv_one(alice_s.subscriber()).await;
    assert!(
        own(&d)
            .subscribers
            .as_ref()
            .expect("list changed")
            .is_empty()
    );

    // Acknowledging someone who is not (or no longer) a subscriber fails.
    for who in [&bob, &carol] {
        match fx.engine.acknowledge_subscriber(&alice, who) {
            Err(EngineError::NotASubscriber(e)) => assert_eq!(&e.0, who),
            other => panic!("expected NotASubscriber, got {other:?}"),
        }
    }
    assert_quiet(alice_s.subscriber()).await;

    // The acknowledgement was stored.
    assert!(
        fx.reopen()
            .own_snapshot(&alice)
            .unwrap()
            .subscribers
            .is_empty()
    );
}

#[tokio::test(start_paused = true)]
async fn unknown_users_are_reported_not_watched() {
    let fx = Fixture::new(&[ALICE, BOB]);
    let (alice, bob, ghost) = (uri(ALICE), uri(BOB), uri(GHOST));
    let other = uri("nobody@elsewhere.org");
    let bob_s = fx.engine.sign_in(&bob, "Bob", None).unwrap();

    let result = bob_s
        .subscribe(
            "c",
            &[other.clone(), alice.clone(), ghost.clone(), alice.clone()],
            &[],
            true,
        )
        .unwrap();
    assert_eq!(
        result,
        SubscribeResult {
            subscribed: vec![alice.clone()],
            unknown: vec![ghost.clone(), other.clone()],
        }
    );
    let batch = recv(bob_s.subscriber()).await;
    assert_eq!(batch.len(), 1, "one snapshot, for alice only: {batch:#?}");
    assert_eq!(categories(&batch[0]).0, &alice);
    assert_eq!(fx.engine.metrics().watch_edges.get(), 1);

    assert!(!fx.engine.exists(&ghost).unwrap());
    assert!(fx.engine.exists(&alice).unwrap());

    let err = fx
        .engine
        .publish(
            &ghost,
            None,
            &[note(200, 0, ExpireType::Static, None, "boo")],
        )
        .unwrap_err();
    assert!(
        matches!(&err, EngineError::UnknownUser(u) if *u == ghost),
        "{err:?}"
    );
    assert!(matches!(
        fx.engine.sign_in(&ghost, "Ghost", None),
        Err(EngineError::UnknownUser(_))
    ));
    assert!(matches!(
        fx.engine.own_snapshot(&ghost),
        Err(EngineError::UnknownUser(_))
    ));
    assert!(matches!(
        fx.engine.view(&bob, &ghost, &[]),
        Err(EngineError::UnknownUser(_))
    ));
    assert!(matches!(
        fx.engine.acknowledge_subscriber(&ghost, &bob),
        Err(EngineError::UnknownUser(_))
    ));
    assert!(matches!(
        fx.engine.update_containers(
            &ghost,
            &[ContainerUpdate {
                id: ContainerId::PERSONAL,
                version: 0,
                add: vec![Member::Everyone],
                remove: vec![]
            }]
        ),
        Err(EngineError::UnknownUser(_))
    ));
    // Looking a user up must not create it.
    assert!(!fx.engine.exists(&ghost).unwrap());
}

#[tokio::test(start_paused = true)]
async fn account_added_by_another_process_is_provisioned_on_first_use() {
    let fx = Fixture::new(&[BOB]);
    let (bob, ghost) = (uri(BOB), uri(GHOST));
    let other_process = open_stores(fx.dir.path());
    assert!(
        other_process
            .accounts
            .insert(&Account {
                uri: ghost.clone(),
                display_name: "Ghost".into(),
                password_hash: "x".into(),
                nt_hash_sealed: vec![0; 4],
                created: Timestamp::from_millis(1),
                disabled: false,
            })
            .unwrap()
    );
    let bob_s = fx.engine.sign_in(&bob, "Bob", None).unwrap();
    let result = bob_s
        .subscribe("c", std::slice::from_ref(&ghost), &names(&["state"]), false)
        .unwrap();
    assert_eq!(result.subscribed, vec![ghost.clone()]);
    assert!(result.unknown.is_empty());
    recv(bob_s.subscriber()).await;
    // The new presentity has the default containers and is stored.
    let own = fx.engine.own_snapshot(&ghost).unwrap();
    assert_default_memberships(&own.containers);
    assert!(other_process.documents.load(&ghost).unwrap().is_some());
}

#[tokio::test(start_paused = true)]
async fn endpoints_belong_to_their_user() {
    let fx = Fixture::new(&[ALICE, BOB]);
    let (alice, bob) = (uri(ALICE), uri(BOB));
    let alice_s = fx.engine.sign_in(&alice, "Alice", None).unwrap();
    let bob_s = fx.engine.sign_in(&bob, "Bob", None).unwrap();
    assert_ne!(alice_s.endpoint(), bob_s.endpoint());
    assert_eq!(fx.engine.endpoints_of(&alice), vec![alice_s.endpoint()]);

    let before = fx.engine.own_snapshot(&alice).unwrap().instances;
    let err = fx
        .engine
        .publish(&alice, Some(bob_s.endpoint()), &[machine_state(2, 0, 3500)])
        .unwrap_err();
    assert!(
        matches!(err, EngineError::NotYourEndpoint(id) if id == bob_s.endpoint().0),
        "{err:?}"
    );
    // Even a static publication is refused with a foreign endpoint.
    let err = fx
        .engine
        .publish(
            &alice,
            Some(bob_s.endpoint()),
            &[note(200, 0, ExpireType::Static, None, "x")],
        )
        .unwrap_err();
    assert!(matches!(err, EngineError::NotYourEndpoint(_)), "{err:?}");
    assert_eq!(fx.engine.own_snapshot(&alice).unwrap().instances, before);

    // An endpoint-bound publication needs an endpoint.
    let err = fx
        .engine
        .publish(&alice, None, &[machine_state(2, 0, 3500)])
        .unwrap_err();
    assert!(
        matches!(
            err,
            EngineError::Publish(PublishError::EndpointRequired { index: 1 })
        ),
        "{err:?}"
    );
    // Aggregation outputs are read-only.
    let err = fx
        .engine
        .publish(
            &alice,
            Some(alice_s.endpoint()),
            &[publication(
                "state",
                1,
                200,
                0,
                ExpireType::Static,
                None,
                state_xml("aggregateState", 3500),
            )],
        )
        .unwrap_err();
    assert!(
        matches!(err, EngineError::Publish(PublishError::ReadOnly { .. })),
        "{err:?}"
    );

    // With her own endpoint it works.
    fx.engine
        .publish(
            &alice,
            Some(alice_s.endpoint()),
            &[machine_state(2, 0, 3500)],
        )
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn subscription_limits() {
    let config = EngineConfig {
        max_targets_per_subscription: 2,
        max_subscriptions_per_endpoint: 2,
        ..EngineConfig::default()
    };
    let fx = Fixture::with_config(config, &[ALICE, BOB, CAROL]);
    let (alice, bob, carol) = (uri(ALICE), uri(BOB), uri(CAROL));
    let s = fx.engine.sign_in(&bob, "Bob", None).unwrap();

    assert!(matches!(
        s.subscribe("", std::slice::from_ref(&alice), &[], false),
        Err(EngineError::Invalid(_))
    ));
    let long = "x".repeat(129);
    assert!(matches!(
        s.subscribe(&long, std::slice::from_ref(&alice), &[], false),
        Err(EngineError::Invalid(_))
    ));
    assert!(
        s.subscribe(&"x".repeat(128), std::slice::from_ref(&alice), &[], false)
            .is_ok()
    );
    assert!(matches!(
        s.subscribe(
            "three",
            &[alice.clone(), bob.clone(), carol.clone()],
            &[],
            false
        ),
        Err(EngineError::TooLarge(_))
    ));
    s.subscribe("two", &[alice.clone(), carol.clone()], &[], false)
        .unwrap();
    assert!(matches!(
        s.subscribe("third", std::slice::from_ref(&alice), &[], false),
        Err(EngineError::TooLarge(_))
    ));
    // Replacing an existing subscription is not a new one.
    s.subscribe("two", std::slice::from_ref(&carol), &[], false)
        .unwrap();
    assert_eq!(fx.engine.metrics().watch_edges.get(), 2);
    assert!(s.unsubscribe("two"));
    assert!(!s.unsubscribe("two"));
    assert_eq!(fx.engine.metrics().watch_edges.get(), 1);
    s.subscribe("third", std::slice::from_ref(&carol), &[], false)
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn unsubscribed_watcher_hears_nothing_more() {
    let fx = Fixture::new(&[ALICE, BOB]);
    let (alice, bob) = (uri(ALICE), uri(BOB));
    let s = fx.engine.sign_in(&bob, "Bob", None).unwrap();
    s.subscribe("c", std::slice::from_ref(&alice), &names(&["note"]), false)
        .unwrap();
    drain(s.subscriber()).await;
    assert!(s.unsubscribe("c"));
    fx.engine
        .publish(
            &alice,
            None,
            &[note(200, 0, ExpireType::Static, None, "hi")],
        )
        .unwrap();
    assert_quiet(s.subscriber()).await;
    assert_eq!(fx.engine.metrics().watch_edges.get(), 0);
}

/// A session whose endpoint already ended (signed out, or its registration expired)
/// must not gain watcher edges: nothing would ever remove them.
#[tokio::test(start_paused = true)]
async fn subscribing_on_an_ended_session_leaves_no_edges() {
    let fx = Fixture::new(&[ALICE, BOB]);
    let (alice, bob) = (uri(ALICE), uri(BOB));
    let s = fx.engine.sign_in(&bob, "Bob", None).unwrap();
    s.sign_out();
    assert!(!s.is_live());
    let _ = s.subscribe("late", std::slice::from_ref(&alice), &[], true);
    drop(s);
    assert!(
        fx.engine
            .own_snapshot(&alice)
            .unwrap()
            .subscribers
            .is_empty(),
        "a dead endpoint was recorded as a subscriber"
    );
    assert_eq!(
        fx.engine.metrics().watch_edges.get(),
        0,
        "edges of a dead session remain"
    );
}

/// A colleague whose account was added by another process (the `user add` command
/// while the server runs) is a same-enterprise watcher like any other, even before
/// the engine has loaded their presentity.
#[tokio::test(start_paused = true)]
async fn view_by_a_colleague_added_by_another_process() {
    let fx = Fixture::new(&[ALICE]);
    let (alice, ghost) = (uri(ALICE), uri(GHOST));
    let alice_s = fx.engine.sign_in(&alice, "Alice", None).unwrap();
    fx.engine
        .publish(
            &alice,
            Some(alice_s.endpoint()),
            &[machine_state(2, 0, 3500)],
        )
        .unwrap();
    let other_process = open_stores(fx.dir.path());
    other_process
        .accounts
        .insert(&Account {
            uri: ghost.clone(),
            display_name: "Ghost".into(),
            password_hash: "x".into(),
            nt_hash_sealed: vec![0; 4],
            created: Timestamp::from_millis(1),
            disabled: false,
        })
        .unwrap();
    let seen = fx.engine.view(&ghost, &alice, &names(&["state"])).unwrap();
    // Once loaded (any use does it), the same call gives the colleague view.
    assert!(fx.engine.exists(&ghost).unwrap());
    let after_load = fx.engine.view(&ghost, &alice, &names(&["state"])).unwrap();
    assert_eq!(after_load.len(), 1);
    assert_eq!(after_load[0].key.container, ContainerId::COLLEAGUES);
    assert_eq!(
        seen, after_load,
        "the first view must not depend on whether the viewer was loaded"
    );
}
