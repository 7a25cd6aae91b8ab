//! What survives a restart on the same data directory, and version conflicts.

mod common;

use common::*;
use presence_engine::EngineError;
use presence_model::membership::ContainerUpdate;
use presence_model::publication::Conflict;
use presence_model::{ContainerId, ExpireType, Member, PublishError, SubscriberType};
use std::time::Duration;

const ALICE: &str = "alice@example.com";
const BOB: &str = "bob@example.com";
const CAROL: &str = "carol@example.com";

fn personal_with(member: Member) -> ContainerUpdate {
    ContainerUpdate {
        id: ContainerId::PERSONAL,
        version: 0,
        add: vec![member],
        remove: vec![],
    }
}

/// Alice with a static note, an endpoint-bound machine state, a personal container
/// holding carol and bob in her subscriber list.
async fn populate(fx: &Fixture) -> (presence_engine::Session, presence_engine::Session) {
    let (alice, bob, carol) = (uri(ALICE), uri(BOB), uri(CAROL));
    let alice_s = fx.engine.sign_in(&alice, "Alice", None).unwrap();
    fx.engine
        .publish(
            &alice,
            Some(alice_s.endpoint()),
            &[
                note(200, 0, ExpireType::Static, None, "durable note"),
                machine_state(2, 0, 3500),
            ],
        )
        .unwrap();
    fx.engine
        .update_containers(&alice, &[personal_with(Member::User(carol))])
        .unwrap();
    let bob_s = fx.engine.sign_in(&bob, "Bob B.", None).unwrap();
    bob_s
        .subscribe(
            "c",
            std::slice::from_ref(&alice),
            &names(&["state", "note"]),
            true,
        )
        .unwrap();
    let snap = recv_views(bob_s.subscriber(), &alice).await;
    assert_eq!(availability(view(&snap, "state")), 3500);
    (alice_s, bob_s)
}

fn check_restored(engine: &presence_engine::Engine) {
    let (alice, bob, carol) = (uri(ALICE), uri(BOB), uri(CAROL));
    let own = engine.own_snapshot(&alice).unwrap();

    // The static note, with its version.
    let notes: Vec<_> = own
        .instances
        .iter()
        .filter(|i| &*i.key.category == "note")
        .collect();
    assert_eq!(notes.len(), 1, "{notes:#?}");
    assert_eq!(notes[0].key.container, ContainerId::COLLEAGUES);
    assert_eq!(notes[0].version, 1);
    assert!(notes[0].value.contains("durable note"));

    // No endpoint data, and no aggregates computed from it: only 32000's fixed state.
    assert!(
        !own.instances
            .iter()
            .any(|i| i.value.contains("machineState"))
    );
    let states: Vec<u16> = own
        .instances
        .iter()
        .filter(|i| &*i.key.category == "state")
        .map(|i| i.key.container.get())
        .collect();
    assert_eq!(states, [32000]);
    assert!(engine.endpoints_of(&alice).is_empty());

    // Containers with their versions and members.
    let personal = own
        .containers
        .iter()
        .find(|c| c.id == ContainerId::PERSONAL)
        .expect("container 400 survives");
    assert_eq!(personal.version, 1);
    assert_eq!(personal.members, vec![Member::User(carol.clone())]);
    assert!(own.containers.iter().any(|c| c.id == ContainerId::BLOCKED));

    // The subscriber list.
    assert_eq!(own.subscribers.len(), 1);
    assert_eq!(own.subscribers[0].user, bob);
    assert_eq!(own.subscribers[0].display_name, "Bob B.");
    assert_eq!(own.subscribers[0].kind, SubscriberType::SameEnterprise);
    assert!(!own.subscribers[0].acknowledged);

    // Watchers see it through the restored containers: bob the note in 200 and no
    // state (alice is offline); carol container 400, which holds nothing.
    let seen = engine
        .view(&bob, &alice, &names(&["note", "state"]))
        .unwrap();
    assert_eq!(seen.len(), 1, "{seen:#?}");
    assert_eq!(&*seen[0].key.category, "note");
    assert!(
        engine
            .view(&carol, &alice, &names(&["note", "state"]))
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(start_paused = true)]
async fn restart_after_crash_keeps_durable_data_only() {
    let fx = Fixture::new(&[ALICE, BOB, CAROL]);
    // The sessions stay alive: the first engine "crashes" without signing anyone out.
    let (_alice_s, _bob_s) = populate(&fx).await;
    let restarted = fx.reopen();
    check_restored(&restarted);
}

#[tokio::test(start_paused = true)]
async fn restart_after_clean_shutdown_keeps_durable_data_only() {
    let fx = Fixture::new(&[ALICE, BOB, CAROL]);
    let sessions = populate(&fx).await;
    drop(sessions);
    let Fixture { dir, engine } = fx;
    drop(engine);
    let restarted = open_engine(dir.path(), Default::default());
    check_restored(&restarted);
}

#[tokio::test(start_paused = true)]
async fn restarted_engine_serves_watchers_and_new_sign_ins() {
    let fx = Fixture::new(&[ALICE, BOB, CAROL]);
    let (alice, bob) = (uri(ALICE), uri(BOB));
    drop(populate(&fx).await);
    let engine = fx.reopen();

    let bob_s = engine.sign_in(&bob, "Bob", None).unwrap();
    bob_s
        .subscribe(
            "c",
            std::slice::from_ref(&alice),
            &names(&["state", "note"]),
            false,
        )
        .unwrap();
    let snap = recv_views(bob_s.subscriber(), &alice).await;
    assert_eq!(note_text(view(&snap, "note")), "durable note");
    assert!(view(&snap, "state").instances.is_empty());

    let alice_s = engine.sign_in(&alice, "Alice", None).unwrap();
    engine
        .publish(
            &alice,
            Some(alice_s.endpoint()),
            &[machine_state(2, 0, 6500)],
        )
        .unwrap();
    let views = recv_views(bob_s.subscriber(), &alice).await;
    assert_eq!(availability(view(&views, "state")), 6500);
}

#[tokio::test(start_paused = true)]
async fn time_bound_instance_still_expires_after_restart() {
    let fx = Fixture::new(&[ALICE, BOB]);
    let (alice, bob) = (uri(ALICE), uri(BOB));
    fx.engine
        .publish(
            &alice,
            None,
            &[note(200, 0, ExpireType::Time, Some(60), "for a minute")],
        )
        .unwrap();
    let engine = fx.reopen();
    tokio::spawn(engine.clone().run_timers());
    assert_eq!(
        engine.view(&bob, &alice, &names(&["note"])).unwrap().len(),
        1
    );

    let bob_s = engine.sign_in(&bob, "Bob", None).unwrap();
    bob_s
        .subscribe("c", std::slice::from_ref(&alice), &names(&["note"]), false)
        .unwrap();
    drain(bob_s.subscriber()).await;

    tokio::time::advance(Duration::from_secs(58)).await;
    assert_quiet(bob_s.subscriber()).await;
    tokio::time::advance(Duration::from_secs(3)).await;
    let views = recv_views(bob_s.subscriber(), &alice).await;
    assert!(view(&views, "note").instances.is_empty());
    assert!(
        engine
            .view(&bob, &alice, &names(&["note"]))
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(start_paused = true)]
async fn stale_version_is_a_conflict_and_applies_nothing() {
    let fx = Fixture::new(&[ALICE, BOB]);
    let (alice, bob) = (uri(ALICE), uri(BOB));
    let first = fx
        .engine
        .publish(
            &alice,
            None,
            &[note(200, 0, ExpireType::Static, None, "v1")],
        )
        .unwrap();
    assert_eq!(first[0].version, 1);
    assert!(!first[0].deleted);

    let bob_s = fx.engine.sign_in(&bob, "Bob", None).unwrap();
    bob_s
        .subscribe("c", std::slice::from_ref(&alice), &names(&["note"]), false)
        .unwrap();
    drain(bob_s.subscriber()).await;
    let refused = fx.engine.metrics().publications_refused.get();

    // A batch with one good publication and one stale version: nothing is applied.
    let err = fx
        .engine
        .publish(
            &alice,
            None,
            &[
                note(400, 0, ExpireType::Static, None, "new in 400"),
                note(200, 0, ExpireType::Static, None, "stale"),
            ],
        )
        .unwrap_err();
    match err {
        EngineError::Publish(PublishError::Conflict(conflicts)) => assert_eq!(
            conflicts,
            vec![Conflict {
                index: 2,
                version: 0,
                current_version: 1
            }]
        ),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(fx.engine.metrics().publications_refused.get(), refused + 1);
    assert_quiet(bob_s.subscriber()).await;
    let own = fx.engine.own_snapshot(&alice).unwrap();
    let notes: Vec<(u16, u32)> = own
        .instances
        .iter()
        .filter(|i| &*i.key.category == "note")
        .map(|i| (i.key.container.get(), i.version))
        .collect();
    assert_eq!(notes, [(200, 1)]);

    // The refused batch was not stored either.
    let engine = fx.reopen();
    let seen = engine.view(&bob, &alice, &names(&["note"])).unwrap();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].value.contains("v1"));

    // With the current version it goes through.
    let second = fx
        .engine
        .publish(
            &alice,
            None,
            &[note(200, 1, ExpireType::Static, None, "v2")],
        )
        .unwrap();
    assert_eq!(second[0].version, 2);
    let views = recv_views(bob_s.subscriber(), &alice).await;
    assert_eq!(note_text(view(&views, "note")), "v2");

    // Deleting needs the current version too.
    let mut delete = note(200, 1, ExpireType::Static, Some(0), "");
    delete.value = None;
    assert!(matches!(
        fx.engine
            .publish(&alice, None, std::slice::from_ref(&delete)),
        Err(EngineError::Publish(PublishError::Conflict(_)))
    ));
    delete.version = 2;
    let deleted = fx.engine.publish(&alice, None, &[delete]).unwrap();
    assert!(deleted[0].deleted);
    assert_eq!(deleted[0].version, 2);
    let views = recv_views(bob_s.subscriber(), &alice).await;
    assert!(view(&views, "note").instances.is_empty());
    assert!(
        fx.reopen()
            .view(&bob, &alice, &names(&["note"]))
            .unwrap()
            .is_empty()
    );
}

/// User-bound data is kept across a restart (clients re-register within seconds, and a
/// restart should not wipe what they published); it dies when the user's last
/// endpoint on the new server goes away.
#[tokio::test(start_paused = true)]
async fn user_bound_instances_survive_a_restart_until_the_last_endpoint_leaves() {
    let fx = Fixture::new(&[ALICE, BOB]);
    let (alice, bob) = (uri(ALICE), uri(BOB));
    let alice_s = fx.engine.sign_in(&alice, "Alice", None).unwrap();
    fx.engine
        .publish(
            &alice,
            Some(alice_s.endpoint()),
            &[note(200, 0, ExpireType::User, None, "in a meeting")],
        )
        .unwrap();
    // Crash: the session is never signed out.
    let engine = fx.reopen();
    assert!(engine.endpoints_of(&alice).is_empty());
    let seen = engine.view(&bob, &alice, &names(&["note"])).unwrap();
    assert_eq!(seen.len(), 1, "kept across the restart");
    let again = engine.sign_in(&alice, "Alice", None).unwrap();
    again.sign_out();
    let seen = engine.view(&bob, &alice, &names(&["note"])).unwrap();
    assert!(seen.is_empty(), "gone with the last endpoint: {seen:#?}");
    drop(alice_s);
}

/// Aggregation decides "newer" by the engine's publication sequence. A state published
/// after a restart is newer than every state restored from the store, so the sequence
/// must continue after the highest restored one instead of starting again at 1.
#[tokio::test(start_paused = true)]
async fn publication_order_continues_across_a_restart() {
    let fx = Fixture::new(&[ALICE, BOB]);
    let (alice, bob) = (uri(ALICE), uri(BOB));
    // Before the restart: some publications push the sequence up, as a server that ran
    // for a while would have, then a static calendar state says busy (6500).
    for v in 0..5 {
        fx.engine
            .publish(
                &alice,
                None,
                &[note(400, v, ExpireType::Static, None, "filler")],
            )
            .unwrap();
    }
    fx.engine
        .publish(
            &alice,
            None,
            &[publication(
                "state",
                0x4000_0000,
                2,
                0,
                ExpireType::Static,
                None,
                state_xml("calendarState", 6500),
            )],
        )
        .unwrap();
    let restored_seq = fx
        .engine
        .own_snapshot(&alice)
        .unwrap()
        .instances
        .iter()
        .map(|i| i.seq)
        .max()
        .unwrap();

    let engine = fx.reopen();
    let alice_s = engine.sign_in(&alice, "Alice", None).unwrap();
    // After the restart alice sets herself available by hand. A user state overrides
    // every state published before it, so watchers must see 3500.
    engine
        .publish(&alice, Some(alice_s.endpoint()), &[user_state(2, 0, 3500)])
        .unwrap();
    let own = engine.own_snapshot(&alice).unwrap();
    let new_seq = own
        .instances
        .iter()
        .find(|i| i.value.contains("userState"))
        .map(|i| i.seq)
        .unwrap();
    let seen = engine.view(&bob, &alice, &names(&["state"])).unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        presence_model::summary::summarize("state", &seen[0].value).and_then(|s| s.availability),
        Some(3500),
        "the older calendar state must not override the newer user state"
    );
    assert!(
        new_seq > restored_seq,
        "seq {new_seq} of a new publication is not above restored seq {restored_seq}"
    );
}

/// The same sequence of publications without a restart: the user state, published
/// last, overrides the calendar state.
#[tokio::test(start_paused = true)]
async fn newer_user_state_overrides_older_calendar_state_without_restart() {
    let fx = Fixture::new(&[ALICE, BOB]);
    let (alice, bob) = (uri(ALICE), uri(BOB));
    fx.engine
        .publish(
            &alice,
            None,
            &[publication(
                "state",
                0x4000_0000,
                2,
                0,
                ExpireType::Static,
                None,
                state_xml("calendarState", 6500),
            )],
        )
        .unwrap();
    let alice_s = fx.engine.sign_in(&alice, "Alice", None).unwrap();
    let seen = fx.engine.view(&bob, &alice, &names(&["state"])).unwrap();
    assert_eq!(
        availability_of(&seen),
        6500,
        "the calendar state alone decides"
    );
    fx.engine
        .publish(&alice, Some(alice_s.endpoint()), &[user_state(2, 0, 3500)])
        .unwrap();
    let seen = fx.engine.view(&bob, &alice, &names(&["state"])).unwrap();
    assert_eq!(availability_of(&seen), 3500);
}

fn availability_of(instances: &[presence_model::CategoryInstance]) -> u32 {
    assert_eq!(instances.len(), 1, "{instances:#?}");
    presence_model::summary::summarize("state", &instances[0].value)
        .and_then(|s| s.availability)
        .expect("availability")
}
