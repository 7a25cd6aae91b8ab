//! Time-bound instances and endpoint registrations with a TTL, under paused time.

mod common;

use common::*;
use presence_model::ExpireType;
use std::time::Duration;
use tokio::time::advance;

const ALICE: &str = "alice@example.com";
const BOB: &str = "bob@example.com";

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[tokio::test(start_paused = true)]
async fn time_bound_note_expires_and_watcher_is_told() {
    let fx = Fixture::new(&[ALICE, BOB]);
    let (alice, bob) = (uri(ALICE), uri(BOB));
    tokio::spawn(fx.engine.clone().run_timers());

    let bob_s = fx.engine.sign_in(&bob, "Bob", None).unwrap();
    bob_s
        .subscribe(
            "c",
            std::slice::from_ref(&alice),
            &names(&["note", "state"]),
            false,
        )
        .unwrap();
    drain(bob_s.subscriber()).await;

    // No endpoint needed for a time-bound note.
    let published = fx
        .engine
        .publish(
            &alice,
            None,
            &[note(200, 0, ExpireType::Time, Some(60), "back in a minute")],
        )
        .unwrap();
    assert_eq!(published[0].version, 1);
    let views = recv_views(bob_s.subscriber(), &alice).await;
    assert_eq!(note_text(view(&views, "note")), "back in a minute");
    let expired_before = fx.engine.metrics().expired.get();

    // Nothing happens before the deadline.
    advance(secs(59)).await;
    assert_quiet(bob_s.subscriber()).await;
    assert_eq!(
        fx.engine
            .view(&bob, &alice, &names(&["note"]))
            .unwrap()
            .len(),
        1
    );

    // At the deadline the note goes, and only the note view is sent.
    advance(secs(1)).await;
    let views = recv_views(bob_s.subscriber(), &alice).await;
    assert_eq!(view_names(&views), ["note"]);
    assert!(view(&views, "note").instances.is_empty());
    assert!(
        fx.engine
            .view(&bob, &alice, &names(&["note"]))
            .unwrap()
            .is_empty()
    );
    assert!(fx.engine.metrics().expired.get() > expired_before);
    assert_quiet(bob_s.subscriber()).await;
}

#[tokio::test(start_paused = true)]
async fn republished_time_instance_gets_the_new_deadline() {
    let fx = Fixture::new(&[ALICE, BOB]);
    let (alice, bob) = (uri(ALICE), uri(BOB));
    tokio::spawn(fx.engine.clone().run_timers());
    let bob_s = fx.engine.sign_in(&bob, "Bob", None).unwrap();
    bob_s
        .subscribe("c", std::slice::from_ref(&alice), &names(&["note"]), false)
        .unwrap();
    drain(bob_s.subscriber()).await;

    fx.engine
        .publish(
            &alice,
            None,
            &[note(200, 0, ExpireType::Time, Some(60), "first")],
        )
        .unwrap();
    recv(bob_s.subscriber()).await;

    advance(secs(30)).await;
    fx.engine
        .publish(
            &alice,
            None,
            &[note(200, 1, ExpireType::Time, Some(60), "second")],
        )
        .unwrap();
    let views = recv_views(bob_s.subscriber(), &alice).await;
    assert_eq!(note_text(view(&views, "note")), "second");

    // The first deadline (t=60) passes: the republished note is due only at t=90.
    advance(secs(35)).await;
    assert_quiet(bob_s.subscriber()).await;
    assert_eq!(
        fx.engine
            .view(&bob, &alice, &names(&["note"]))
            .unwrap()
            .len(),
        1
    );

    advance(secs(25)).await;
    let views = recv_views(bob_s.subscriber(), &alice).await;
    assert!(view(&views, "note").instances.is_empty());
}

#[tokio::test(start_paused = true)]
async fn time_instance_published_after_an_earlier_one_was_deleted_expires() {
    let fx = Fixture::new(&[ALICE, BOB]);
    let (alice, bob) = (uri(ALICE), uri(BOB));
    tokio::spawn(fx.engine.clone().run_timers());
    let bob_s = fx.engine.sign_in(&bob, "Bob", None).unwrap();
    bob_s
        .subscribe("c", std::slice::from_ref(&alice), &names(&["note"]), false)
        .unwrap();
    drain(bob_s.subscriber()).await;

    // A note for a minute, withdrawn at once; then another one for five minutes.
    fx.engine
        .publish(
            &alice,
            None,
            &[note(200, 0, ExpireType::Time, Some(60), "a minute")],
        )
        .unwrap();
    let mut delete = note(200, 1, ExpireType::Time, Some(0), "");
    delete.value = None;
    fx.engine.publish(&alice, None, &[delete]).unwrap();
    fx.engine
        .publish(
            &alice,
            None,
            &[note(200, 0, ExpireType::Time, Some(300), "five minutes")],
        )
        .unwrap();
    drain(bob_s.subscriber()).await;

    advance(secs(299)).await;
    assert_quiet(bob_s.subscriber()).await;
    assert_eq!(
        fx.engine
            .view(&bob, &alice, &names(&["note"]))
            .unwrap()
            .len(),
        1
    );
    advance(secs(2)).await;
    let views = recv_views(bob_s.subscriber(), &alice).await;
    assert!(view(&views, "note").instances.is_empty());
}

#[tokio::test(start_paused = true)]
async fn time_bound_state_input_expiry_reaggregates() {
    let fx = Fixture::new(&[ALICE, BOB]);
    let (alice, bob) = (uri(ALICE), uri(BOB));
    tokio::spawn(fx.engine.clone().run_timers());
    let alice_s = fx.engine.sign_in(&alice, "Alice", None).unwrap();
    let bob_s = fx.engine.sign_in(&bob, "Bob", None).unwrap();
    bob_s
        .subscribe("c", std::slice::from_ref(&alice), &names(&["state"]), false)
        .unwrap();
    drain(bob_s.subscriber()).await;

    fx.engine
        .publish(
            &alice,
            Some(alice_s.endpoint()),
            &[machine_state(2, 0, 3500)],
        )
        .unwrap();
    recv(bob_s.subscriber()).await;
    // A busy user state for 10 minutes wins over the active machine.
    fx.engine
        .publish(
            &alice,
            None,
            &[publication(
                "state",
                0x2000_0000,
                2,
                0,
                ExpireType::Time,
                Some(600),
                state_xml("userState", 6500),
            )],
        )
        .unwrap();
    let views = recv_views(bob_s.subscriber(), &alice).await;
    assert_eq!(availability(view(&views, "state")), 6500);

    advance(secs(599)).await;
    assert_quiet(bob_s.subscriber()).await;
    advance(secs(1)).await;
    let views = recv_views(bob_s.subscriber(), &alice).await;
    assert_eq!(
        availability(view(&views, "state")),
        3500,
        "back to the machine state"
    );
}

#[tokio::test(start_paused = true)]
async fn endpoint_without_refresh_ends_after_ttl() {
    let fx = Fixture::new(&[ALICE, BOB]);
    let (alice, bob) = (uri(ALICE), uri(BOB));
    tokio::spawn(fx.engine.clone().run_timers());

    let bob_s = fx.engine.sign_in(&bob, "Bob", None).unwrap();
    bob_s
        .subscribe("c", std::slice::from_ref(&alice), &names(&["state"]), false)
        .unwrap();
    drain(bob_s.subscriber()).await;

    let alice_s = fx
        .engine
        .sign_in(&alice, "Alice (SIP)", Some(secs(30)))
        .unwrap();
    let ep = alice_s.endpoint();
    alice_s.subscribe_self().unwrap();
    drain(alice_s.subscriber()).await;
    fx.engine
        .publish(&alice, Some(ep), &[machine_state(2, 0, 3500)])
        .unwrap();
    assert_eq!(
        availability(view(&recv_views(bob_s.subscriber(), &alice).await, "state")),
        3500
    );
    drain(alice_s.subscriber()).await;

    advance(secs(29)).await;
    assert_quiet(bob_s.subscriber()).await;
    assert!(fx.engine.is_live(ep));
    assert!(alice_s.is_live());

    advance(secs(1)).await;
    let views = recv_views(bob_s.subscriber(), &alice).await;
    assert!(
        view(&views, "state").instances.is_empty(),
        "alice is offline"
    );
    assert!(!fx.engine.is_live(ep));
    assert!(!alice_s.is_live());
    assert!(fx.engine.endpoints_of(&alice).is_empty());
    let own = fx.engine.own_snapshot(&alice).unwrap();
    assert!(
        !own.instances
            .iter()
            .any(|i| i.value.contains("machineState")),
        "the endpoint's instances are gone"
    );
    // The expired session's queue is closed: next() returns an empty batch.
    let batch = tokio::time::timeout(ARRIVAL, alice_s.subscriber().next())
        .await
        .expect("a closed queue answers at once");
    assert!(batch.is_empty(), "{batch:#?}");
    // It cannot be revived, and its endpoint cannot publish any more.
    assert!(!alice_s.refresh(secs(30)));
    let err = fx
        .engine
        .publish(&alice, Some(ep), &[machine_state(2, 0, 3500)])
        .unwrap_err();
    assert!(
        matches!(err, presence_engine::EngineError::NotYourEndpoint(id) if id == ep.0),
        "{err:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn refreshed_endpoint_lives_on() {
    let fx = Fixture::new(&[ALICE, BOB]);
    let (alice, bob) = (uri(ALICE), uri(BOB));
    tokio::spawn(fx.engine.clone().run_timers());
    let bob_s = fx.engine.sign_in(&bob, "Bob", None).unwrap();
    bob_s
        .subscribe("c", std::slice::from_ref(&alice), &names(&["state"]), false)
        .unwrap();
    drain(bob_s.subscriber()).await;

    let alice_s = fx
        .engine
        .sign_in(&alice, "Alice (SIP)", Some(secs(30)))
        .unwrap();
    let ep = alice_s.endpoint();
    fx.engine
        .publish(&alice, Some(ep), &[machine_state(2, 0, 3500)])
        .unwrap();
    recv(bob_s.subscriber()).await;

    // Refreshed at t=20 for 30 s: the original t=30 deadline is void, t=50 counts.
    advance(secs(20)).await;
    assert!(alice_s.refresh(secs(30)));
    advance(secs(25)).await; // t=45
    assert_quiet(bob_s.subscriber()).await;
    assert!(fx.engine.is_live(ep));
    assert!(alice_s.is_live());

    // Refreshed again at t=45: lives past t=50 too.
    assert!(alice_s.refresh(secs(30)));
    advance(secs(10)).await; // t=55
    assert_quiet(bob_s.subscriber()).await;
    assert!(fx.engine.is_live(ep));

    // No more refreshes: ends at t=75.
    advance(secs(20)).await; // t=75.x
    let views = recv_views(bob_s.subscriber(), &alice).await;
    assert!(view(&views, "state").instances.is_empty());
    assert!(!fx.engine.is_live(ep));
}

#[tokio::test(start_paused = true)]
async fn endpoint_without_ttl_never_expires() {
    let fx = Fixture::new(&[ALICE]);
    let alice = uri(ALICE);
    tokio::spawn(fx.engine.clone().run_timers());
    let s = fx.engine.sign_in(&alice, "Alice (web)", None).unwrap();
    advance(secs(24 * 3600)).await;
    tokio::task::yield_now().await;
    assert!(fx.engine.is_live(s.endpoint()));
    assert!(s.is_live());
}

/// A client refreshing its registration in a loop costs one timer entry, not one per
/// refresh; the endpoint still ends at the last deadline.
#[tokio::test(start_paused = true)]
async fn refreshes_keep_one_timer_per_endpoint() {
    let fx = Fixture::new(&[ALICE]);
    let alice = uri(ALICE);
    tokio::spawn(fx.engine.clone().run_timers());
    let s = fx.engine.sign_in(&alice, "Alice", Some(secs(30))).unwrap();
    for _ in 0..1000 {
        assert!(s.refresh(secs(60)));
    }
    assert_eq!(fx.engine.pending_timers(), 1);
    advance(secs(59)).await;
    tokio::task::yield_now().await;
    assert!(
        fx.engine.is_live(s.endpoint()),
        "the first deadline was moved"
    );
    advance(secs(2)).await;
    for _ in 0..50 {
        tokio::task::yield_now().await;
        if !fx.engine.is_live(s.endpoint()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        !fx.engine.is_live(s.endpoint()),
        "ended at the last deadline"
    );
}
