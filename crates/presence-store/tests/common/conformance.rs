//! The contract of the store ports (see the crate's documentation), as one suite
//! of tests that every back end must pass. A test binary implements [`Backend`]
//! and instantiates the suite with [`suite!`].

use presence_model::document::DocRecord;
use presence_model::{Timestamp, UserUri};
use presence_store::{
    Account, DirectoryUser, Revision, SessionRecord, StoreError, Stores, Versioned,
};
use std::fmt::Debug;
use std::ops::Range;

/// A back end under test. Each test gets its own empty store and opens it once or
/// several times: the instances share the data, as processes on one SQLite file
/// or the nodes of one NATS cluster do, and an instance opened after the others
/// were dropped sees what they stored, as after a restart.
pub trait Backend {
    /// A new, empty store; `name` (the test's) is unique within the test binary.
    fn fresh(name: &str) -> Self;
    /// A new instance of the store; `n` tells instances apart (NATS: node `n`).
    fn open(&self, n: usize) -> Stores;
}

/// The suite as `#[test]`s in a module `conformance`, each on a fresh store of
/// `$backend`. The test binary declares `mod common { pub mod conformance; }`.
macro_rules! suite {
    ($backend:ident) => {
        crate::common::conformance::suite!(
            @tests $backend:
            documents_are_compare_and_set,
            stored_data_survives_a_restart,
            hot_key_read_modify_write_loses_nothing,
            save_many_answers_each_write_in_order,
            reserved_ids_never_overlap,
            accounts,
            sessions,
            directory_rows_replace_by_key_and_by_uri
        );
    };
    (@tests $backend:ident: $($test:ident),*) => {
        mod conformance {
            use crate::common::conformance::{self as suite, Backend};
            $(
                #[test]
                fn $test() {
                    suite::$test(&<super::$backend as Backend>::fresh(stringify!($test)));
                }
            )*
        }
    };
}
pub(crate) use suite;

pub fn uri(s: &str) -> UserUri {
    UserUri::parse(s).unwrap()
}

/// A minimal document, built from JSON so that fields with defaults may come and go.
pub fn record(u: &str) -> DocRecord {
    serde_json::from_value(serde_json::json!({
        "uri": u, "containers": [], "instances": [], "subscribers": [],
    }))
    .unwrap()
}

/// A document that differs from [`record`]'s.
fn changed(u: &str) -> DocRecord {
    let mut r = record(u);
    r.disabled = true;
    r
}

fn at(value: DocRecord, revision: Revision) -> Option<Versioned<DocRecord>> {
    Some(Versioned { value, revision })
}

fn sorted(mut docs: Vec<Versioned<DocRecord>>) -> Vec<Versioned<DocRecord>> {
    docs.sort_by(|a, b| a.value.uri.cmp(&b.value.uri));
    docs
}

#[track_caller]
fn assert_conflict<T: Debug>(result: Result<T, StoreError>, current: Revision) {
    match result {
        Err(StoreError::Conflict { current: c }) if c == current => {}
        other => panic!("expected a conflict at revision {current}, got {other:?}"),
    }
}

fn account(u: &str) -> Account {
    Account {
        uri: uri(u),
        display_name: "A".into(),
        password_hash: "h".into(),
        nt_hash_sealed: vec![1, 2, 3],
        created: Timestamp::from_millis(5),
        disabled: false,
    }
}

fn session(u: &str, expires_ms: i64) -> SessionRecord {
    SessionRecord {
        uri: uri(u),
        expires: Timestamp::from_millis(expires_ms),
    }
}

fn row(key: &str, u: &str, fingerprint: &str) -> DirectoryUser {
    DirectoryUser {
        key: key.into(),
        uri: uri(u),
        dn: Some(format!("cn={key}")),
        fingerprint: fingerprint.into(),
        enabled: true,
    }
}

/// Creates and updates are compare-and-set: a stale update, a create over an
/// existing document and an update of an absent one lose with the current
/// revision and write nothing. A deleted document reads as absent (deleting is
/// idempotent) and can be created again.
pub fn documents_are_compare_and_set(b: &impl Backend) {
    let s = b.open(0);
    let docs = &s.documents;
    let a1 = docs.save(&record("a@x.com"), 0).unwrap();
    let b1 = docs.save(&record("b@x.com"), 0).unwrap();
    let a2 = docs.save(&record("a@x.com"), a1).unwrap();
    assert!(a1 > 0 && b1 > 0, "0 means absent");
    assert!(a2 > a1, "every write gives a higher revision");
    // Writers that read a1, read nothing or made a revision up lost the race.
    assert_conflict(docs.save(&changed("a@x.com"), a1), a2);
    assert_conflict(docs.save(&changed("a@x.com"), 0), a2);
    assert_conflict(docs.save(&changed("a@x.com"), a2 + 1000), a2);
    assert_conflict(docs.save(&changed("new@x.com"), a2), 0);
    assert_eq!(
        docs.load(&uri("a@x.com")).unwrap(),
        at(record("a@x.com"), a2)
    );
    assert_eq!(docs.load(&uri("new@x.com")).unwrap(), None);

    docs.delete(&uri("b@x.com")).unwrap();
    docs.delete(&uri("b@x.com")).unwrap();
    docs.delete(&uri("never@x.com")).unwrap();
    assert_eq!(docs.load(&uri("b@x.com")).unwrap(), None);
    assert_conflict(docs.save(&changed("b@x.com"), b1), 0);
    let b2 = docs.save(&changed("b@x.com"), 0).unwrap();
    assert!(
        b2 > b1,
        "created again, with a revision a writer of the old document never held"
    );
    assert_eq!(
        sorted(docs.load_all().unwrap()),
        vec![
            Versioned {
                value: record("a@x.com"),
                revision: a2
            },
            Versioned {
                value: changed("b@x.com"),
                revision: b2
            },
        ]
    );
}

/// What one instance stored, in all four ports, another opened after it was
/// dropped sees (SQLite: the file reopened; NATS: another node's new store on the
/// same buckets), and compare-and-set goes on from the stored revisions.
pub fn stored_data_survives_a_restart(b: &impl Backend) {
    let (a1, a2, b1);
    {
        let s = b.open(0);
        a1 = s.documents.save(&record("a@x.com"), 0).unwrap();
        b1 = s.documents.save(&record("b@x.com"), 0).unwrap();
        a2 = s.documents.save(&changed("a@x.com"), a1).unwrap();
        s.documents.save(&record("c@x.com"), 0).unwrap();
        s.documents.delete(&uri("c@x.com")).unwrap();
        assert!(s.accounts.insert(&account("a@x.com")).unwrap());
        s.sessions.insert(b"t1", &session("a@x.com", 100)).unwrap();
        s.directory.save_rows(&[row("k1", "a@x.com", "1")]).unwrap();
    }
    let s = b.open(1);
    assert_eq!(
        sorted(s.documents.load_all().unwrap()),
        vec![
            Versioned {
                value: changed("a@x.com"),
                revision: a2
            },
            Versioned {
                value: record("b@x.com"),
                revision: b1
            },
        ]
    );
    assert_eq!(s.documents.load(&uri("c@x.com")).unwrap(), None);
    assert_eq!(
        s.accounts.get(&uri("a@x.com")).unwrap(),
        Some(account("a@x.com"))
    );
    assert_eq!(
        s.sessions.get(b"t1").unwrap(),
        Some(session("a@x.com", 100))
    );
    assert_eq!(s.directory.rows().unwrap(), vec![row("k1", "a@x.com", "1")]);
    assert_conflict(s.documents.save(&record("a@x.com"), a1), a2);
    let a3 = s.documents.save(&record("a@x.com"), a2).unwrap();
    assert!(a3 > a2);
    assert_eq!(
        s.documents.load(&uri("a@x.com")).unwrap(),
        at(record("a@x.com"), a3)
    );
}

/// Writers on two instances increment a counter in one document, each by reading
/// it, changing it and saving it with the revision read, again after a conflict:
/// every increment lands exactly once.
pub fn hot_key_read_modify_write_loses_nothing(b: &impl Backend) {
    const THREADS: usize = 8;
    const INCREMENTS: u32 = 25;
    let stores = [b.open(0), b.open(1)];
    let hot = uri("hot@x.com");
    let t0 = std::time::Instant::now();
    let writers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (docs, hot) = (stores[t % 2].documents.clone(), hot.clone());
            std::thread::spawn(move || {
                let mut done = 0;
                let mut conflicts = 0;
                while done < INCREMENTS {
                    let (mut doc, rev) = match docs.load(&hot).unwrap() {
                        Some(v) => (v.value, v.revision),
                        None => (record(hot.as_str()), 0),
                    };
                    doc.contacts.delta_num += 1;
                    match docs.save(&doc, rev) {
                        Ok(_) => done += 1,
                        Err(StoreError::Conflict { .. }) => conflicts += 1,
                        Err(e) => panic!("{e}"),
                    }
                }
                conflicts
            })
        })
        .collect();
    let conflicts: u32 = writers.into_iter().map(|w| w.join().unwrap()).sum();
    let total = THREADS as u32 * INCREMENTS;
    eprintln!(
        "hot key: {total} increments by {THREADS} writers in {:.2?}, {conflicts} conflicts",
        t0.elapsed()
    );
    let last = stores[0].documents.load(&hot).unwrap().unwrap();
    let first = record(hot.as_str()).contacts.delta_num;
    assert_eq!(
        last.value.contacts.delta_num - first,
        total,
        "every increment once"
    );
    // Nothing else was ever written to this store, so on both back ends the
    // revision counts the writes stored (SQLite: the key's; NATS: the bucket's):
    // a write stored twice would show.
    assert_eq!(last.revision, u64::from(total));
}

/// `save_many` answers each write, in order; one that fails (a stale revision)
/// stores nothing and does not keep the others from being stored.
pub fn save_many_answers_each_write_in_order(b: &impl Backend) {
    let s = b.open(0);
    let docs = &s.documents;
    let a1 = docs.save(&record("a@x.com"), 0).unwrap();
    let c1 = docs.save(&record("c@x.com"), 0).unwrap();
    let results = docs.save_many(&[
        (changed("a@x.com"), a1 + 1000),
        (changed("b@x.com"), 0),
        (changed("c@x.com"), c1),
    ]);
    let [stale, created, updated] = <[_; 3]>::try_from(results).expect("one result per record");
    assert_conflict(stale, a1);
    let (b1, c2) = (created.unwrap(), updated.unwrap());
    assert!(c2 > c1);
    assert_eq!(
        docs.load(&uri("a@x.com")).unwrap(),
        at(record("a@x.com"), a1)
    );
    assert_eq!(
        docs.load(&uri("b@x.com")).unwrap(),
        at(changed("b@x.com"), b1)
    );
    assert_eq!(
        docs.load(&uri("c@x.com")).unwrap(),
        at(changed("c@x.com"), c2)
    );
    assert!(docs.save_many(&[]).is_empty());
}

/// Identifiers reserved at once on two instances never overlap, each range is as
/// long as asked, all stay below 2^53, and an instance opened later goes on above
/// them.
pub fn reserved_ids_never_overlap(b: &impl Backend) {
    let stores = [b.open(0), b.open(1)];
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let docs = stores[t as usize % 2].documents.clone();
            std::thread::spawn(move || {
                (1..=20u64)
                    .map(|i| {
                        let count = i * (t + 1);
                        let ids = docs.reserve_ids(count).unwrap();
                        assert_eq!(ids.end - ids.start, count, "{ids:?}");
                        ids
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut ranges: Vec<Range<u64>> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    ranges.sort_by_key(|r| r.start);
    for pair in ranges.windows(2) {
        assert!(pair[0].end <= pair[1].start, "{pair:?} overlap");
    }
    let end = ranges.last().unwrap().end;
    assert!(end < 1 << 53);
    drop(stores);
    let later = b.open(2).documents.reserve_ids(10).unwrap();
    assert!(later.start >= end, "{later:?} after {end}");
    assert_eq!(later.end - later.start, 10);
}

pub fn accounts(b: &impl Backend) {
    let s = b.open(0);
    let accounts = &s.accounts;
    let mut a = account("a@x.com");
    assert!(accounts.insert(&a).unwrap());
    let mut other = a.clone();
    other.display_name = "Other".into();
    assert!(
        !accounts.insert(&other).unwrap(),
        "duplicate insert refused"
    );
    assert_eq!(accounts.get(&a.uri).unwrap(), Some(a.clone()));
    a.display_name = "Ay".into();
    a.password_hash = "h2".into();
    a.nt_hash_sealed = vec![4, 5];
    a.disabled = true;
    assert!(accounts.update(&a).unwrap());
    assert_eq!(accounts.get(&a.uri).unwrap(), Some(a.clone()));
    assert!(!accounts.update(&account("ghost@x.com")).unwrap());
    assert_eq!(
        accounts.get(&uri("ghost@x.com")).unwrap(),
        None,
        "an update creates nothing"
    );
    let b = account("0b@x.com");
    assert!(accounts.insert(&b).unwrap());
    assert_eq!(
        accounts.list().unwrap(),
        vec![b.clone(), a.clone()],
        "ordered by URI"
    );
    assert!(accounts.delete(&a.uri).unwrap());
    assert!(!accounts.delete(&a.uri).unwrap());
    assert_eq!(accounts.get(&a.uri).unwrap(), None);
    assert_eq!(accounts.list().unwrap(), vec![b]);
    assert!(accounts.insert(&a).unwrap(), "inserted again");
}

pub fn sessions(b: &impl Backend) {
    let s = b.open(0);
    let sessions = &s.sessions;
    sessions.insert(b"h1", &session("a@x.com", 100)).unwrap();
    sessions.insert(b"h2", &session("a@x.com", 10)).unwrap();
    assert_eq!(sessions.get(b"h1").unwrap(), Some(session("a@x.com", 100)));
    assert_eq!(sessions.get(b"nope").unwrap(), None);
    // Renewed: a session inserted again replaces the old one.
    sessions.insert(b"h1", &session("a@x.com", 200)).unwrap();
    assert_eq!(sessions.get(b"h1").unwrap(), Some(session("a@x.com", 200)));

    assert_eq!(
        sessions.delete_expired(Timestamp::from_millis(50)).unwrap(),
        1
    );
    assert_eq!(sessions.get(b"h2").unwrap(), None);
    assert!(sessions.get(b"h1").unwrap().is_some());
    assert!(sessions.delete(b"h1").unwrap());
    assert!(!sessions.delete(b"h1").unwrap());
    assert_eq!(sessions.get(b"h1").unwrap(), None);

    sessions.insert(b"h3", &session("a@x.com", 100)).unwrap();
    sessions.insert(b"h4", &session("a@x.com", 100)).unwrap();
    sessions.insert(b"h5", &session("b@x.com", 100)).unwrap();
    assert_eq!(sessions.delete_of(&uri("a@x.com")).unwrap(), 2);
    assert_eq!(sessions.delete_of(&uri("a@x.com")).unwrap(), 0);
    assert_eq!(sessions.get(b"h3").unwrap(), None);
    assert_eq!(sessions.get(b"h5").unwrap(), Some(session("b@x.com", 100)));
}

pub fn directory_rows_replace_by_key_and_by_uri(b: &impl Backend) {
    let s = b.open(0);
    let dir = &s.directory;
    let rows = || {
        let mut rows = dir.rows().unwrap();
        rows.sort_by(|a, b| a.key.cmp(&b.key));
        rows
    };
    dir.save_rows(&[row("k1", "a@x.com", "1"), row("k2", "b@x.com", "1")])
        .unwrap();
    dir.save_rows(&[row("k1", "a@x.com", "2")]).unwrap();
    // A new key for an existing URI (the entry was recreated) replaces the old row.
    dir.save_rows(&[row("k3", "b@x.com", "1")]).unwrap();
    assert_eq!(
        rows(),
        vec![row("k1", "a@x.com", "2"), row("k3", "b@x.com", "1")]
    );
    assert_eq!(dir.dn(&uri("b@x.com")).unwrap().as_deref(), Some("cn=k3"));
    // A key that moved to another URI (the user was renamed) leaves no row behind.
    dir.save_rows(&[row("k1", "c@x.com", "3")]).unwrap();
    assert_eq!(
        rows(),
        vec![row("k1", "c@x.com", "3"), row("k3", "b@x.com", "1")]
    );
    assert_eq!(dir.dn(&uri("a@x.com")).unwrap(), None);
    assert_eq!(dir.dn(&uri("c@x.com")).unwrap().as_deref(), Some("cn=k1"));
    // A row without a DN (a file directory's).
    let mut plain = row("k4", "d@x.com", "1");
    plain.dn = None;
    dir.save_rows(std::slice::from_ref(&plain)).unwrap();
    assert_eq!(dir.dn(&uri("d@x.com")).unwrap(), None);
    assert_eq!(rows().len(), 3);
    dir.save_rows(&[]).unwrap();
    assert_eq!(rows().len(), 3);
}
