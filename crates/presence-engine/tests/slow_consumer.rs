//! Bounded delivery queues: coalescing per presentity, the cap on watched presentities
//! that keeps a resync within the bound, overflow to a resync, and recovery through
//! `Session::resync`.

mod common;

use common::*;
use presence_engine::{Delivery, EngineConfig, EngineError, Session};
use presence_model::{ExpireType, UserUri};

const ALICE: &str = "alice@example.com";
const BOB: &str = "bob@example.com";
const CAROL: &str = "carol@example.com";
const DAVE: &str = "dave@example.com";
const ERIN: &str = "erin@example.com";

fn small_queue(max_pending: usize) -> EngineConfig {
    EngineConfig {
        max_pending_per_subscriber: max_pending,
        ..EngineConfig::default()
    }
}

/// Bob watching each of `targets` in its own subscription, snapshots consumed.
async fn bob_watching(fx: &Fixture, targets: &[&str]) -> Session {
    let s = fx.engine.sign_in(&uri(BOB), "Bob", None).unwrap();
    for t in targets {
        s.subscribe(t, &[uri(t)], &names(&["note", "state"]), false)
            .unwrap();
        drain(s.subscriber()).await;
    }
    s
}

fn set_note(fx: &Fixture, who: &str, version: u32, text: &str) {
    fx.engine
        .publish(
            &uri(who),
            None,
            &[note(200, version, ExpireType::Static, None, text)],
        )
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn repeated_changes_of_one_presentity_coalesce() {
    let fx = Fixture::with_config(small_queue(2), &[ALICE, BOB]);
    let alice = uri(ALICE);
    let bob_s = bob_watching(&fx, &[ALICE]).await;
    let coalesced = fx.engine.metrics().coalesced.get();

    for v in 0..5 {
        set_note(&fx, ALICE, v, &format!("note {v}"));
        assert_eq!(bob_s.subscriber().pending(), 1, "one entry per presentity");
    }
    assert_eq!(fx.engine.metrics().coalesced.get() - coalesced, 4);
    // A state change of the same presentity joins the same entry.
    let alice_s = fx.engine.sign_in(&alice, "Alice", None).unwrap();
    fx.engine
        .publish(
            &alice,
            Some(alice_s.endpoint()),
            &[machine_state(2, 0, 3500)],
        )
        .unwrap();
    assert_eq!(bob_s.subscriber().pending(), 1);
    assert_eq!(fx.engine.metrics().coalesced.get() - coalesced, 5);
    assert_eq!(fx.engine.metrics().overflows.get(), 0);

    // The consumer gets one delivery with the newest value of each category.
    let views = recv_views(bob_s.subscriber(), &alice).await;
    assert_eq!(view_names(&views), ["note", "state"]);
    assert_eq!(note_text(view(&views, "note")), "note 4");
    assert_eq!(availability(view(&views, "state")), 3500);
    assert_eq!(bob_s.subscriber().pending(), 0);
    assert_quiet(bob_s.subscriber()).await;
}

#[tokio::test(start_paused = true)]
async fn distinct_presentities_within_the_bound_queue_in_order() {
    let fx = Fixture::with_config(small_queue(3), &[ALICE, BOB, CAROL]);
    let bob_s = bob_watching(&fx, &[ALICE, CAROL]).await;
    set_note(&fx, CAROL, 0, "carol");
    set_note(&fx, ALICE, 0, "alice");
    assert_eq!(bob_s.subscriber().pending(), 2);
    let batch = recv(bob_s.subscriber()).await;
    let order: Vec<&UserUri> = batch.iter().map(|d| categories(d).0).collect();
    assert_eq!(order, [&uri(CAROL), &uri(ALICE)], "oldest first");
    assert_eq!(fx.engine.metrics().overflows.get(), 0);
}

/// An endpoint may watch at most `max_pending_per_subscriber - 1` presentities in all
/// (one slot is the self view), so a resync always fits into the queue.
#[tokio::test(start_paused = true)]
async fn watching_more_than_the_queue_holds_is_refused() {
    let fx = Fixture::with_config(small_queue(3), &[ALICE, BOB, CAROL, DAVE]);
    let (alice, carol, dave) = (uri(ALICE), uri(CAROL), uri(DAVE));
    let s = fx.engine.sign_in(&uri(BOB), "Bob", None).unwrap();

    // Three in one subscription: refused, and nothing of it stays.
    let err = s
        .subscribe(
            "all",
            &[alice.clone(), carol.clone(), dave.clone()],
            &[],
            true,
        )
        .unwrap_err();
    assert!(matches!(err, EngineError::TooLarge(_)), "{err:?}");
    assert_eq!(s.subscriber().pending(), 0);
    assert_eq!(fx.engine.metrics().watch_edges.get(), 0);
    assert!(
        fx.engine
            .own_snapshot(&alice)
            .unwrap()
            .subscribers
            .is_empty()
    );

    // The cap counts across subscriptions...
    s.subscribe("a", &[alice.clone(), carol.clone()], &[], false)
        .unwrap();
    drain(s.subscriber()).await;
    let err = s
        .subscribe("b", std::slice::from_ref(&dave), &[], false)
        .unwrap_err();
    assert!(matches!(err, EngineError::TooLarge(_)), "{err:?}");
    assert_eq!(s.subscriber().pending(), 0);
    assert_eq!(fx.engine.metrics().watch_edges.get(), 2);

    // ...but a replaced subscription does not count twice.
    s.subscribe("a", &[carol.clone(), dave.clone()], &[], false)
        .unwrap();
    assert_eq!(fx.engine.metrics().watch_edges.get(), 2);
    drain(s.subscriber()).await;
    set_note(&fx, ALICE, 0, "not watched any more");
    set_note(&fx, DAVE, 0, "watched now");
    let views = recv_views(s.subscriber(), &dave).await;
    assert_eq!(note_text(view(&views, "note")), "watched now");
    assert_quiet(s.subscriber()).await;
}

#[tokio::test(start_paused = true)]
async fn overflow_turns_into_one_resync_and_resync_recovers() {
    let fx = Fixture::with_config(small_queue(3), &[ALICE, BOB, CAROL, DAVE, ERIN]);
    let bob = uri(BOB);
    let s = fx.engine.sign_in(&bob, "Bob", None).unwrap();
    let sub = s.subscriber();
    let cats = names(&["note", "state"]);
    s.subscribe("contacts", &[uri(ALICE), uri(CAROL)], &cats, false)
        .unwrap();
    drain(sub).await;

    // The consumer stops reading. Both watched presentities and bob's own data change.
    set_note(&fx, ALICE, 0, "a1");
    set_note(&fx, CAROL, 0, "c1");
    s.subscribe_self().unwrap();
    assert_eq!(sub.pending(), 3);
    // The contact list is replaced while the old entries are still queued: the new
    // snapshots no longer fit.
    s.subscribe("contacts", &[uri(DAVE), uri(ERIN)], &cats, false)
        .unwrap();
    // Dave's snapshot overflowed the queue; erin's came after the reset.
    assert_eq!(fx.engine.metrics().overflows.get(), 1);
    assert_eq!(sub.pending(), 1, "the old entries are dropped");

    let batch = recv(sub).await;
    assert!(matches!(batch.as_slice(), [Delivery::Resync]), "{batch:#?}");
    let batch = recv(sub).await;
    assert_eq!(batch.len(), 1);
    assert_eq!(categories(&batch[0]).0, &uri(ERIN));
    assert_quiet(sub).await;

    // Asked for snapshots, the consumer gets everything it now watches, current.
    set_note(&fx, DAVE, 0, "d1");
    drain(sub).await;
    s.resync();
    let batch = recv(sub).await;
    assert_eq!(batch.len(), 3, "{batch:#?}");
    let mut watched: Vec<(String, Vec<String>)> = Vec::new();
    let mut own_seen = false;
    for d in &batch {
        match d {
            Delivery::Categories { uri, views, .. } => {
                assert_eq!(view_names(views), ["note", "state"], "full snapshots");
                let notes = view(views, "note")
                    .instances
                    .iter()
                    .map(|i| i.value.to_string())
                    .collect();
                watched.push((uri.to_string(), notes));
            }
            Delivery::Own { update, .. } => {
                own_seen = true;
                assert!(update.containers.is_some() && update.subscribers.is_some());
            }
            Delivery::Resync => panic!("the resync must fit into the queue"),
        }
    }
    assert!(own_seen, "the self subscription is resent");
    watched.sort();
    assert_eq!(watched.len(), 2);
    assert_eq!(watched[0].0, DAVE);
    assert_eq!(watched[0].1, [note_xml("d1")]);
    assert_eq!(watched[1].0, ERIN);
    assert!(watched[1].1.is_empty());
    assert_eq!(fx.engine.metrics().overflows.get(), 1);
    assert_quiet(sub).await;
}

#[tokio::test(start_paused = true)]
async fn resync_includes_the_self_subscription() {
    let fx = Fixture::with_config(small_queue(2), &[ALICE, BOB]);
    let bob_s = bob_watching(&fx, &[ALICE]).await;
    bob_s.subscribe_self().unwrap();
    drain(bob_s.subscriber()).await;

    bob_s.resync();
    let batch = recv(bob_s.subscriber()).await;
    assert_eq!(batch.len(), 2, "{batch:#?}");
    assert!(
        batch
            .iter()
            .any(|d| matches!(d, Delivery::Categories { uri: u, .. } if *u == uri(ALICE)))
    );
    let own_full = batch
        .iter()
        .find(|d| matches!(d, Delivery::Own { .. }))
        .expect("the self subscription is resent");
    assert!(own(own_full).containers.is_some());
    assert!(own(own_full).subscribers.is_some());
}
