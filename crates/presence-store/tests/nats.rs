//! The NATS JetStream store against real nats-server processes: the store ports'
//! contract ([`common::conformance`]) on a 3-node cluster, with each test's
//! instances on different nodes; and what is NATS's own: revisions that are the
//! bucket's sequence, use from inside another runtime, many writes in flight, and
//! a bounded wait when the servers are gone.
//!
//! The tests share one 3-node cluster (started by the first test that needs it,
//! stopped when the last one drops it); each test has its own bucket prefix.

mod common {
    pub mod cluster;
    pub mod conformance;
}

use common::cluster::{Cluster, shared_cluster};
use common::conformance::{Backend, record, suite, uri};
use presence_model::document::DocRecord;
use presence_store::{DocumentStore, NatsOptions, NatsStore, StoreError, Stores};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A store of "node" `node` (its own server first) under the test's prefix.
fn store(cluster: &Cluster, node: usize, prefix: &str) -> NatsStore {
    let mut o = NatsOptions::new(cluster.urls_from(node), format!("n{node}"));
    o.bucket_prefix = prefix.into();
    NatsStore::open(o).unwrap()
}

/// Buckets under the test's name on the shared cluster; instance `n` is a store of
/// node `n` (modulo 3).
struct Nats {
    cluster: Arc<Cluster>,
    prefix: String,
}

impl Backend for Nats {
    fn fresh(name: &str) -> Self {
        Nats {
            cluster: shared_cluster(),
            prefix: name.into(),
        }
    }

    fn open(&self, n: usize) -> Stores {
        Stores::from_one(Arc::new(store(&self.cluster, n % 3, &self.prefix)))
    }
}

suite!(Nats);

/// Revisions are the stream sequence of the bucket: higher with every write of a
/// key but not consecutive, and a document created again over its tombstone gets a
/// higher revision than before it was deleted, so a writer that read the old one
/// still loses. A new identifier counter starts at 1.
#[test]
fn revisions_are_the_sequence_of_the_bucket() {
    let c = shared_cluster();
    let s = store(&c, 0, "seq");
    assert_eq!(s.save(&record("a@x.com"), 0).unwrap(), 1);
    assert_eq!(s.save(&record("b@x.com"), 0).unwrap(), 2);
    assert_eq!(
        s.save(&record("a@x.com"), 1).unwrap(),
        3,
        "b's write took 2"
    );
    DocumentStore::delete(&s, &uri("b@x.com")).unwrap();
    let b2 = s.save(&record("b@x.com"), 0).unwrap();
    assert!(b2 > 3, "created again over the tombstone at {b2}");
    assert!(matches!(
        s.save(&record("b@x.com"), 2),
        Err(StoreError::Conflict { current }) if current == b2
    ));
    assert_eq!(s.load(&uri("b@x.com")).unwrap().unwrap().revision, b2);
    assert_eq!(s.reserve_ids(5).unwrap(), 1..6);
}

/// The ports are synchronous: a store opened, called and dropped inside another
/// runtime (where `block_on` would panic) works.
#[test]
fn a_store_works_inside_another_runtime() {
    let c = shared_cluster();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let outside = store(&c, 2, "runtime");
    rt.block_on(async move {
        let inside = store(&c, 1, "runtime");
        let rev = inside.save(&record("a@x.com"), 0).unwrap();
        assert_eq!(
            outside.load(&uri("a@x.com")).unwrap().unwrap().revision,
            rev
        );
        drop(inside);
        drop(outside);
    });
}

#[test]
fn save_many_keeps_many_writes_in_flight() {
    const DOCS: usize = 500;
    let c = shared_cluster();
    let s = store(&c, 1, "many");
    let batch: Vec<(DocRecord, u64)> = (0..DOCS)
        .map(|i| (record(&format!("u{i}@x.com")), 0))
        .collect();
    // Times one save_many of the batch.
    let save_all = |what: &str, batch: &[(DocRecord, u64)]| {
        let t0 = Instant::now();
        let results = s.save_many(batch);
        let took = t0.elapsed();
        eprintln!(
            "save_many: {DOCS} {what} in {took:.2?} ({:.0} docs/s)",
            DOCS as f64 / took.as_secs_f64()
        );
        results
    };
    let revisions: Vec<u64> = save_all("creates", &batch)
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    let again: Vec<(DocRecord, u64)> = batch
        .into_iter()
        .zip(&revisions)
        .map(|((doc, _), rev)| (doc, *rev))
        .collect();
    let updated = save_all("updates", &again);
    assert!(updated.iter().all(|r| r.is_ok()));
    let t0 = Instant::now();
    let all = s.load_all().unwrap();
    eprintln!("load_all: {} docs in {:.2?}", all.len(), t0.elapsed());
    assert_eq!(all.len(), DOCS);
}

#[test]
fn a_store_without_servers_is_unavailable_in_bounded_time() {
    const RETRY_FOR: Duration = Duration::from_millis(1500);
    // Beyond retry_for: one request in flight (its timeout) and a loaded box.
    const SLACK: Duration = Duration::from_secs(3);
    let options = |urls: Vec<String>| {
        let mut o = NatsOptions::new(urls, "lonely");
        o.replicas = 1;
        o.retry_for = RETRY_FOR;
        o
    };

    // Nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let t0 = Instant::now();
    let url = format!("nats://user:s3cret@127.0.0.1:{port}");
    match NatsStore::open(options(vec![url])) {
        Err(StoreError::Unavailable(msg)) => {
            eprintln!("open without servers: {msg}");
            assert!(msg.contains(&port.to_string()), "names the URL: {msg}");
            assert!(!msg.contains("s3cret"), "no secrets: {msg}");
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("connected to nothing"),
    }
    assert!(t0.elapsed() < RETRY_FOR + SLACK, "{:?}", t0.elapsed());

    // A server that goes away after the store opened.
    let mut lone = Cluster::start(1);
    // Created with the default patience (creating buckets can take a while on a
    // loaded box); the store under test only opens them.
    let mut setup = options(lone.urls_from(0));
    setup.retry_for = NatsOptions::new(vec![], "").retry_for;
    let rev = NatsStore::open(setup)
        .unwrap()
        .save(&record("a@x.com"), 0)
        .unwrap();
    let s = NatsStore::open(options(lone.urls_from(0))).unwrap();
    lone.kill_all();
    let t0 = Instant::now();
    match s.save(&record("a@x.com"), rev) {
        Err(StoreError::Unavailable(msg)) => eprintln!("save after the server died: {msg}"),
        other => panic!("{other:?}"),
    }
    assert!(t0.elapsed() < RETRY_FOR + SLACK, "{:?}", t0.elapsed());
    let t0 = Instant::now();
    assert!(matches!(
        s.load(&uri("a@x.com")),
        Err(StoreError::Unavailable(_))
    ));
    assert!(t0.elapsed() < RETRY_FOR + SLACK, "{:?}", t0.elapsed());
}
