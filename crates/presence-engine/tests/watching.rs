//! Watching another user: snapshots, aggregated state, sign-out, blocking, shared
//! fan-out and self subscriptions.

mod common;

use common::*;
use presence_model::aggregation::{AGGREGATE_STATE_INSTANCE, BLOCKED_AVAILABILITY};
use presence_model::membership::ContainerUpdate;
use presence_model::{ContainerId, ExpireType, Member};
use std::sync::Arc;

const ALICE: &str = "alice@example.com";
const BOB: &str = "bob@example.com";
const CAROL: &str = "carol@example.com";
const DAVE: &str = "dave@example.com";
const ERIN: &str = "erin@example.com";

#[tokio::test(start_paused = true)]
async fn watcher_gets_snapshot_then_aggregated_state() {
    let fx = Fixture::new(&[ALICE, BOB]);
    let (alice, bob) = (uri(ALICE), uri(BOB));

    let bob_s = fx.engine.sign_in(&bob, "Bob", None).unwrap();
    let result = bob_s
        .subscribe(
            "contacts",
            std::slice::from_ref(&alice),
            &names(&["state", "note"]),
            false,
        )
        .unwrap();
    assert_eq!(result.subscribed, vec![alice.clone()]);
    assert!(result.unknown.is_empty());

    // The snapshot comes at once: both categories, stripped, empty (alice is offline).
    assert_eq!(bob_s.subscriber().pending(), 1);
    let snap = recv_views(bob_s.subscriber(), &alice).await;
    assert_eq!(view_names(&snap), ["note", "state"]);
    for v in &snap {
        assert!(!v.owner, "a watcher's view must not be the owner's");
        assert!(
            v.instances.is_empty(),
            "offline alice shows nothing: {v:#?}"
        );
    }

    // Signing in alone publishes nothing a watcher could see.
    let alice_s = fx.engine.sign_in(&alice, "Alice", None).unwrap();
    assert_quiet(bob_s.subscriber()).await;

    let ep = alice_s.endpoint();
    fx.engine
        .publish(
            &alice,
            Some(ep),
            &[machine_state(2, 0, 3500), machine_state(3, 0, 3500)],
        )
        .unwrap();

    let views = recv_views(bob_s.subscriber(), &alice).await;
    assert_eq!(
        view_names(&views),
        ["state"],
        "only the changed category is sent"
    );
    let state = view(&views, "state");
    assert!(!state.owner);
    assert_eq!(state.instances.len(), 1, "{state:#?}");
    let inst = &state.instances[0];
    assert_eq!(inst.key.instance, AGGREGATE_STATE_INSTANCE);
    assert_eq!(inst.key.container, ContainerId::COLLEAGUES);
    assert!(inst.value.contains("aggregateState"), "{}", inst.value);
    assert_eq!(availability(state), 3500);

    // The raw machine state never reaches the watcher, and nothing else is pending.
    assert!(!inst.value.contains("machineState"));
    assert_quiet(bob_s.subscriber()).await;
    // Alice's session did not subscribe to anything: it gets nothing.
    assert_quiet(alice_s.subscriber()).await;

    // Engine::view agrees with what was pushed.
    let seen = fx.engine.view(&bob, &alice, &names(&["state"])).unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].key.container, ContainerId::COLLEAGUES);
}

#[tokio::test(start_paused = true)]
async fn owner_watching_herself_gets_owner_view() {
    let fx = Fixture::new(&[ALICE]);
    let alice = uri(ALICE);
    let s = fx.engine.sign_in(&alice, "Alice", None).unwrap();
    fx.engine
        .publish(&alice, Some(s.endpoint()), &[machine_state(2, 0, 3500)])
        .unwrap();
    s.subscribe(
        "me",
        std::slice::from_ref(&alice),
        &names(&["state"]),
        false,
    )
    .unwrap();
    let views = recv_views(s.subscriber(), &alice).await;
    let state = view(&views, "state");
    assert!(state.owner);
    // The owner sees every container: the machine state, the aggregates and 32000.
    let containers: Vec<u16> = state
        .instances
        .iter()
        .map(|i| i.key.container.get())
        .collect();
    for c in [2, 100, 200, 400, 32000] {
        assert!(
            containers.contains(&c),
            "container {c} missing from {containers:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn sign_out_shows_offline() {
    let fx = Fixture::new(&[ALICE, BOB]);
    let (alice, bob) = (uri(ALICE), uri(BOB));
    let bob_s = fx.engine.sign_in(&bob, "Bob", None).unwrap();
    bob_s
        .subscribe(
            "c",
            std::slice::from_ref(&alice),
            &names(&["state", "note"]),
            false,
        )
        .unwrap();
    drain(bob_s.subscriber()).await;

    let alice_s = fx.engine.sign_in(&alice, "Alice", None).unwrap();
    let ep = alice_s.endpoint();
    fx.engine
        .publish(&alice, Some(ep), &[machine_state(2, 0, 3500)])
        .unwrap();
    let views = recv_views(bob_s.subscriber(), &alice).await;
    assert_eq!(availability(view(&views, "state")), 3500);

    alice_s.sign_out();
    assert!(!alice_s.is_live());
    assert!(!fx.engine.is_live(ep));
    assert!(fx.engine.endpoints_of(&alice).is_empty());

    let views = recv_views(bob_s.subscriber(), &alice).await;
    assert_eq!(view_names(&views), ["state"]);
    let state = view(&views, "state");
    assert!(
        state.instances.is_empty(),
        "offline: no state at all, got {state:#?}"
    );
    assert_quiet(bob_s.subscriber()).await;

    // The endpoint's data is gone from the document too (the 32000 view stays).
    let own = fx.engine.own_snapshot(&alice).unwrap();
    let states: Vec<u16> = own
        .instances
        .iter()
        .filter(|i| &*i.key.category == "state")
        .map(|i| i.key.container.get())
        .collect();
    assert_eq!(states, [32000]);

    // Signing out twice (and the drop that follows) changes nothing.
    alice_s.sign_out();
    drop(alice_s);
    assert_quiet(bob_s.subscriber()).await;
}

#[tokio::test(start_paused = true)]
async fn drop_signs_out() {
    let fx = Fixture::new(&[ALICE, BOB]);
    let (alice, bob) = (uri(ALICE), uri(BOB));
    let bob_s = fx.engine.sign_in(&bob, "Bob", None).unwrap();
    let alice_s = fx.engine.sign_in(&alice, "Alice", None).unwrap();
    let ep = alice_s.endpoint();
    fx.engine
        .publish(&alice, Some(ep), &[machine_state(2, 0, 4500)])
        .unwrap();
    bob_s
        .subscribe("c", std::slice::from_ref(&alice), &names(&["state"]), false)
        .unwrap();
    let snap = recv_views(bob_s.subscriber(), &alice).await;
    assert_eq!(availability(view(&snap, "state")), 4500);

    drop(alice_s);
    assert!(!fx.engine.is_live(ep));
    let views = recv_views(bob_s.subscriber(), &alice).await;
    assert!(view(&views, "state").instances.is_empty());
}

#[tokio::test(start_paused = true)]
async fn user_bound_instances_live_until_last_endpoint() {
    let fx = Fixture::new(&[ALICE, BOB]);
    let (alice, bob) = (uri(ALICE), uri(BOB));
    let bob_s = fx.engine.sign_in(&bob, "Bob", None).unwrap();
    bob_s
        .subscribe(
            "c",
            std::slice::from_ref(&alice),
            &names(&["state", "note"]),
            false,
        )
        .unwrap();
    drain(bob_s.subscriber()).await;

    let first = fx.engine.sign_in(&alice, "Alice (desk)", None).unwrap();
    let second = fx.engine.sign_in(&alice, "Alice (phone)", None).unwrap();
    assert_eq!(fx.engine.endpoints_of(&alice).len(), 2);
    fx.engine
        .publish(
            &alice,
            Some(first.endpoint()),
            &[
                machine_state(2, 0, 3500),
                note(200, 0, ExpireType::User, None, "at my desk"),
            ],
        )
        .unwrap();
    let views = recv_views(bob_s.subscriber(), &alice).await;
    assert_eq!(view_names(&views), ["note", "state"]);
    assert_eq!(note_text(view(&views, "note")), "at my desk");
    assert_eq!(availability(view(&views, "state")), 3500);

    // The first endpoint goes: its machine state dies (so does the aggregate), the
    // user-bound note stays because the second endpoint is still there.
    first.sign_out();
    let views = recv_views(bob_s.subscriber(), &alice).await;
    assert_eq!(view_names(&views), ["state"], "the note must not change");
    assert!(view(&views, "state").instances.is_empty());
    let still = fx.engine.view(&bob, &alice, &names(&["note"])).unwrap();
    assert_eq!(
        still.len(),
        1,
        "the user-bound note survives while an endpoint remains"
    );

    // The last endpoint goes: the note dies with it.
    second.sign_out();
    let views = recv_views(bob_s.subscriber(), &alice).await;
    assert_eq!(view_names(&views), ["note"]);
    assert!(view(&views, "note").instances.is_empty());
    assert!(
        fx.engine
            .view(&bob, &alice, &names(&["note"]))
            .unwrap()
            .is_empty()
    );
    assert!(
        !fx.engine
            .own_snapshot(&alice)
            .unwrap()
            .instances
            .iter()
            .any(|i| &*i.key.category == "note")
    );
}

fn block(update_version: u32, add: Vec<Member>, remove: Vec<Member>) -> ContainerUpdate {
    ContainerUpdate {
        id: ContainerId::BLOCKED,
        version: update_version,
        add,
        remove,
    }
}

#[tokio::test(start_paused = true)]
async fn blocking_and_unblocking() {
    let fx = Fixture::new(&[ALICE, BOB, CAROL]);
    let (alice, bob, carol) = (uri(ALICE), uri(BOB), uri(CAROL));
    let alice_s = fx.engine.sign_in(&alice, "Alice", None).unwrap();
    let ep = alice_s.endpoint();
    fx.engine
        .publish(
            &alice,
            Some(ep),
            &[
                machine_state(2, 0, 3500),
                note(200, 0, ExpireType::Static, None, "hello colleagues"),
            ],
        )
        .unwrap();

    let bob_s = fx.engine.sign_in(&bob, "Bob", None).unwrap();
    let carol_s = fx.engine.sign_in(&carol, "Carol", None).unwrap();
    let cats = names(&["state", "note"]);
    for s in [&bob_s, &carol_s] {
        s.subscribe("c", std::slice::from_ref(&alice), &cats, false)
            .unwrap();
        let snap = recv_views(s.subscriber(), &alice).await;
        assert_eq!(availability(view(&snap, "state")), 3500);
        assert_eq!(note_text(view(&snap, "note")), "hello colleagues");
    }

    // Block bob.
    let changed = fx
        .engine
        .update_containers(&alice, &[block(1, vec![Member::User(bob.clone())], vec![])])
        .unwrap();
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0].id, ContainerId::BLOCKED);
    assert_eq!(changed[0].version, 2);
    assert_eq!(changed[0].members, vec![Member::User(bob.clone())]);

    let views = recv_views(bob_s.subscriber(), &alice).await;
    assert_eq!(
        view_names(&views),
        ["note", "state"],
        "a view change resends everything"
    );
    let state = view(&views, "state");
    assert!(!state.owner);
    assert_eq!(availability(state), BLOCKED_AVAILABILITY);
    assert!(
        state
            .instances
            .iter()
            .all(|i| i.key.container == ContainerId::BLOCKED)
    );
    assert!(
        view(&views, "note").instances.is_empty(),
        "the note must become invisible"
    );
    // Carol's view did not change: she is told nothing.
    assert_quiet(carol_s.subscriber()).await;

    // Alice changes her state: carol sees it, blocked bob does not.
    fx.engine
        .publish(&alice, Some(ep), &[user_state(2, 0, 6500)])
        .unwrap();
    let views = recv_views(carol_s.subscriber(), &alice).await;
    assert_eq!(availability(view(&views, "state")), 6500);
    assert_quiet(bob_s.subscriber()).await;
    let seen = fx
        .engine
        .view(&bob, &alice, &names(&["state", "note"]))
        .unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].key.container, ContainerId::BLOCKED);

    // Unblock: bob gets the real view back, with the current values.
    fx.engine
        .update_containers(&alice, &[block(2, vec![], vec![Member::User(bob.clone())])])
        .unwrap();
    let views = recv_views(bob_s.subscriber(), &alice).await;
    assert_eq!(view_names(&views), ["note", "state"]);
    let state = view(&views, "state");
    assert_eq!(availability(state), 6500);
    assert_eq!(state.instances[0].key.container, ContainerId::COLLEAGUES);
    assert_eq!(note_text(view(&views, "note")), "hello colleagues");
    assert_quiet(carol_s.subscriber()).await;

    // A stale membership version is refused and changes nothing.
    let err = fx
        .engine
        .update_containers(
            &alice,
            &[block(2, vec![Member::User(carol.clone())], vec![])],
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            presence_engine::EngineError::Membership(
                presence_model::membership::MembershipError::Conflict(_)
            )
        ),
        "{err:?}"
    );
    assert_quiet(carol_s.subscriber()).await;
}

#[tokio::test(start_paused = true)]
async fn watchers_with_the_same_view_share_one_category_view() {
    let fx = Fixture::new(&[ALICE, BOB, CAROL, DAVE, ERIN]);
    let alice = uri(ALICE);
    let alice_s = fx.engine.sign_in(&alice, "Alice", None).unwrap();
    let ep = alice_s.endpoint();

    // erin sees container 400 (personal), everybody else 200.
    fx.engine
        .update_containers(
            &alice,
            &[ContainerUpdate {
                id: ContainerId::PERSONAL,
                version: 0,
                add: vec![Member::User(uri(ERIN))],
                remove: vec![],
            }],
        )
        .unwrap();

    let mut sessions = Vec::new();
    for w in [BOB, CAROL, DAVE, ERIN] {
        let s = fx.engine.sign_in(&uri(w), w, None).unwrap();
        s.subscribe("c", std::slice::from_ref(&alice), &names(&["state"]), false)
            .unwrap();
        drain(s.subscriber()).await;
        sessions.push(s);
    }

    fx.engine
        .publish(&alice, Some(ep), &[machine_state(2, 0, 3500)])
        .unwrap();
    let mut states = Vec::new();
    for s in &sessions {
        let views = recv_views(s.subscriber(), &alice).await;
        assert_eq!(views.len(), 1);
        states.push(views[0].clone());
    }
    let (bob, carol, dave, erin) = (&states[0], &states[1], &states[2], &states[3]);
    assert!(
        Arc::ptr_eq(bob, carol),
        "same view, same change: one shared CategoryView"
    );
    assert!(Arc::ptr_eq(bob, dave));
    assert_eq!(bob.instances[0].key.container, ContainerId::COLLEAGUES);
    assert!(
        !Arc::ptr_eq(bob, erin),
        "a different container is a different view"
    );
    assert_eq!(erin.instances[0].key.container, ContainerId::PERSONAL);
    assert_eq!(availability(bob), 3500);
    assert_eq!(availability(erin), 3500);

    // The encoded form is computed once and shared as well.
    let mut calls = 0;
    let first = bob.encoded(presence_engine::WireFormat::Json, |v| {
        calls += 1;
        format!("{} instances", v.instances.len())
    });
    assert_eq!(first, "1 instances");
    let again = carol.encoded(presence_engine::WireFormat::Json, |_| {
        calls += 1;
        String::from("recomputed")
    });
    assert_eq!(again, "1 instances");
    assert_eq!(calls, 1);
}

#[tokio::test(start_paused = true)]
async fn self_subscribed_endpoint_sees_own_changes() {
    let fx = Fixture::new(&[ALICE]);
    let alice = uri(ALICE);
    let desk = fx.engine.sign_in(&alice, "Alice (desk)", None).unwrap();
    let phone = fx.engine.sign_in(&alice, "Alice (phone)", None).unwrap();

    phone.subscribe_self().unwrap();
    let full = recv_one(phone.subscriber()).await;
    let update = own(&full);
    let containers = update
        .containers
        .as_ref()
        .expect("the first update lists containers");
    assert_default_memberships(containers);
    assert!(
        update
            .subscribers
            .as_ref()
            .expect("and subscribers")
            .is_empty()
    );
    // The blocked view's fixed outputs exist from provisioning on.
    let state = update
        .categories
        .iter()
        .find(|v| &*v.name == "state")
        .expect("state of 32000");
    assert!(state.owner);

    fx.engine
        .publish(
            &alice,
            Some(desk.endpoint()),
            &[
                note(200, 0, ExpireType::Static, None, "colleagues"),
                note(400, 0, ExpireType::Static, None, "friends"),
            ],
        )
        .unwrap();
    let d = recv_one(phone.subscriber()).await;
    let update = own(&d);
    assert_eq!(view_names(&update.categories), ["note"]);
    assert!(update.containers.is_none(), "no container changed");
    assert!(
        update.subscribers.is_none(),
        "the subscriber list did not change"
    );
    let notes = &update.categories[0];
    assert!(
        notes.owner,
        "the owner's view keeps container ids and versions"
    );
    let placed: Vec<(u16, u32)> = notes
        .instances
        .iter()
        .map(|i| (i.key.container.get(), i.version))
        .collect();
    assert_eq!(placed, [(200, 1), (400, 1)]);

    // The publishing endpoint did not self-subscribe: it hears nothing.
    assert_quiet(desk.subscriber()).await;

    // A machine state: the owner sees the input and every aggregate it produced.
    fx.engine
        .publish(&alice, Some(desk.endpoint()), &[machine_state(2, 0, 3500)])
        .unwrap();
    let d = recv_one(phone.subscriber()).await;
    let update = own(&d);
    let state = update
        .categories
        .iter()
        .find(|v| &*v.name == "state")
        .expect("state changed");
    assert!(state.owner);
    let containers: Vec<u16> = state
        .instances
        .iter()
        .map(|i| i.key.container.get())
        .collect();
    for c in [2, 100, 200, 400, 32000] {
        assert!(
            containers.contains(&c),
            "container {c} missing from {containers:?}"
        );
    }
    assert!(
        state
            .instances
            .iter()
            .any(|i| i.value.contains("machineState"))
    );

    // A membership change carries the full container list.
    fx.engine
        .update_containers(
            &alice,
            &[ContainerUpdate {
                id: ContainerId::PERSONAL,
                version: 0,
                add: vec![Member::Domain("example.org".into())],
                remove: vec![],
            }],
        )
        .unwrap();
    let d = recv_one(phone.subscriber()).await;
    let update = own(&d);
    assert!(update.categories.is_empty());
    let ids: Vec<u16> = update
        .containers
        .as_ref()
        .expect("containers changed")
        .iter()
        .map(|c| c.id.get())
        .collect();
    assert!(ids.contains(&400), "{ids:?}");
}
