//! The store ports' contract ([`common::conformance`]) against the SQLite store.
//! Tests of SQLite's own mechanics (group commit, migrations) are unit tests in
//! `src/sqlite.rs`.

mod common {
    pub mod conformance;
}

use common::conformance::{Backend, suite};
use presence_store::Stores;

/// A store in a temporary data directory; each instance opens the same file.
struct Sqlite(tempfile::TempDir);

impl Backend for Sqlite {
    fn fresh(name: &str) -> Self {
        Sqlite(
            tempfile::Builder::new()
                .prefix(&format!("sqlite-store-{name}-"))
                .tempdir()
                .unwrap(),
        )
    }

    fn open(&self, _: usize) -> Stores {
        Stores::sqlite(self.0.path()).unwrap()
    }
}

suite!(Sqlite);
