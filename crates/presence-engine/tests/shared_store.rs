//! Two engines on one store, as two processes or two cluster nodes: every change is
//! a compare-and-set of the document, so a writer that read an old document takes
//! in the stored one, applies its change again and loses nothing; a watcher on the
//! other engine hears of it through `remote_saved`.

mod common;

use common::*;
use presence_engine::{EngineConfig, EngineError};
use presence_model::{ExpireType, PublishError};

const ALICE: &str = "alice@example.com";
const BOB: &str = "bob@example.com";
const CAROL: &str = "carol@example.com";

fn node(id: &str) -> EngineConfig {
    EngineConfig {
        cluster_node: Some(id.to_string()),
        ..EngineConfig::default()
    }
}

#[tokio::test(start_paused = true)]
async fn a_writer_with_an_old_document_retries_and_loses_nothing() {
    let fx = Fixture::with_config(node("a"), &[ALICE, BOB, CAROL]);
    let other = open_engine(fx.dir.path(), node("b"));
    let (alice, bob, carol) = (uri(ALICE), uri(BOB), uri(CAROL));
    // Both hold alice's document.
    fx.engine.own_snapshot(&alice).unwrap();
    other.own_snapshot(&alice).unwrap();
    // A contact added through one, then through the other (which read before it).
    fx.engine
        .change_contacts(&alice, Some(&bob), |l| {
            l.set_contact(bob.clone(), "Bob", &[], true, None)
        })
        .unwrap();
    other
        .change_contacts(&alice, Some(&carol), |l| {
            l.set_contact(carol.clone(), "Carol", &[], true, None)
        })
        .unwrap();
    for engine in [&fx.engine, &other] {
        engine.remote_saved(&alice, u64::MAX);
        let contacts = engine.own_snapshot(&alice).unwrap().contacts;
        assert!(contacts.contact(&bob).is_some(), "{contacts:?}");
        assert!(contacts.contact(&carol).is_some(), "{contacts:?}");
    }
    // A publication against a version the other engine replaced is a conflict, as
    // on one engine: the retry takes in the stored document and checks again.
    let first = fx
        .engine
        .publish(
            &alice,
            None,
            &[note(200, 0, ExpireType::Static, None, "one")],
        )
        .unwrap();
    assert_eq!(first[0].version, 1);
    let stale = other.publish(
        &alice,
        None,
        &[note(200, 0, ExpireType::Static, None, "two")],
    );
    assert!(
        matches!(stale, Err(EngineError::Publish(PublishError::Conflict(_)))),
        "{stale:?}"
    );
    let second = other
        .publish(
            &alice,
            None,
            &[note(200, 1, ExpireType::Static, None, "two")],
        )
        .unwrap();
    assert_eq!(second[0].version, 2);
}

#[tokio::test(start_paused = true)]
async fn a_watcher_on_another_engine_sees_the_change_and_the_endpoints() {
    let fx = Fixture::with_config(node("a"), &[ALICE, BOB]);
    let other = open_engine(fx.dir.path(), node("b"));
    let (alice, bob) = (uri(ALICE), uri(BOB));
    let bob_s = other.sign_in(&bob, "Bob", None).unwrap();
    bob_s
        .subscribe(
            "c",
            std::slice::from_ref(&alice),
            &names(&["state", "note"]),
            false,
        )
        .unwrap();
    recv_views(bob_s.subscriber(), &alice).await;
    // Alice signs in and publishes through the first engine.
    let alice_s = fx.engine.sign_in(&alice, "Alice", None).unwrap();
    fx.engine
        .publish(
            &alice,
            Some(alice_s.endpoint()),
            &[
                machine_state(2, 0, 3500),
                note(200, 0, ExpireType::Static, None, "from a"),
            ],
        )
        .unwrap();
    // What the cluster layer does when it hears of the save.
    other.remote_saved(&alice, u64::MAX);
    let views = recv_views(bob_s.subscriber(), &alice).await;
    assert_eq!(availability(view(&views, "state")), 3500);
    assert_eq!(note_text(view(&views, "note")), "from a");
    // Alice's node dies: the survivors remove its endpoints, and she goes offline.
    assert_eq!(
        other
            .remove_node_endpoints("a", std::slice::from_ref(&alice))
            .unwrap(),
        1
    );
    let views = recv_views(bob_s.subscriber(), &alice).await;
    assert!(
        view(&views, "state").instances.is_empty(),
        "offline once her only endpoint is gone: {views:#?}"
    );
    // Doing it again changes nothing.
    assert_eq!(
        other
            .remove_node_endpoints("a", std::slice::from_ref(&alice))
            .unwrap(),
        0
    );
}
