//! The store ports: where durable presence data, user accounts, API sessions and
//! directory rows live.
//!
//! The design serves two back ends with one shape: the embedded default
//! ([`SqliteStore`], one file, one node) and a key-value store with per-key
//! revisions (NATS JetStream KV in cluster mode, where any node may write any key).
//! So:
//! - every write touches one key and is idempotent; nothing promises atomicity across
//!   keys (a batch is a set of independent writes that may share one commit);
//! - presentity documents carry a [`Revision`] and are written with compare-and-set
//!   ([`DocumentStore::save`] with the revision the writer read); a writer that lost
//!   the race gets [`StoreError::Conflict`] with the current revision and retries
//!   from a fresh read;
//! - identifiers that must be unique across nodes come from the store
//!   ([`DocumentStore::reserve_ids`]);
//! - the four kinds of data are four ports, so a back end may keep them apart.
//!
//! Errors say what the caller can do about them ([`StoreError`]); no back end's own
//! error type leaks out.

mod nats;
mod sqlite;

pub use nats::{NATS_BUCKETS, NatsOptions, NatsStore};
pub use sqlite::{DB_FILE, SqliteStore};

use presence_model::document::DocRecord;
use presence_model::{Timestamp, UserUri};
use std::ops::Range;
use std::sync::Arc;

/// The version of one stored key. Every write of the key gives it a new, higher
/// revision; `0` means "absent" in a compare-and-set.
pub type Revision = u64;

/// A stored value with the revision it was read at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned<T> {
    pub value: T,
    pub revision: Revision,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store could not be reached or could not write (disk full, I/O error, no
    /// quorum). Nothing was stored; the write may be retried later.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// A compare-and-set lost: the key is at `current` (0: absent), not at the
    /// revision the writer expected. Nothing was stored.
    #[error("the stored record changed meanwhile (now at revision {current})")]
    Conflict { current: Revision },
    #[error("stored record for {key} is corrupt: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("cannot open the data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
}

/// A user account. Secrets are stored only as an argon2id hash (HTTP sign-in) and an
/// NT hash sealed with the server's data key (what SIP NTLM authentication needs).
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Account {
    pub uri: UserUri,
    pub display_name: String,
    pub password_hash: String,
    pub nt_hash_sealed: Vec<u8>,
    pub created: Timestamp,
    /// Disabled by the directory: no sign-in, no sessions.
    pub disabled: bool,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("uri", &self.uri)
            .field("display_name", &self.display_name)
            .field("created", &self.created)
            .finish_non_exhaustive()
    }
}

/// An API session, stored under the hash of its token.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SessionRecord {
    pub uri: UserUri,
    pub expires: Timestamp,
}

/// What the last directory sync saw of one user.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DirectoryUser {
    /// The directory's stable key (objectGUID, entryUUID, DN or file key).
    pub key: String,
    pub uri: UserUri,
    /// The LDAP DN, used to check the user's password with a bind.
    pub dn: Option<String>,
    /// Digest of the entry, to tell changed entries from unchanged ones.
    pub fingerprint: String,
    pub enabled: bool,
}

/// Presentity documents (containers, durable category instances, subscriber list,
/// contact list), one key per presentity.
pub trait DocumentStore: Send + Sync + 'static {
    fn load_all(&self) -> Result<Vec<Versioned<DocRecord>>, StoreError>;
    /// The current document, read from the authority (never a stale replica), so a
    /// writer that lost a compare-and-set can retry from it.
    fn load(&self, uri: &UserUri) -> Result<Option<Versioned<DocRecord>>, StoreError>;
    /// Writes the document durably if the key is at `expected` (0: absent) and
    /// returns the new revision; [`StoreError::Conflict`] otherwise.
    fn save(&self, record: &DocRecord, expected: Revision) -> Result<Revision, StoreError>;
    /// Several independent [`save`](Self::save)s that may share one commit; one
    /// result per record, in order.
    fn save_many(&self, records: &[(DocRecord, Revision)]) -> Vec<Result<Revision, StoreError>> {
        records.iter().map(|(r, rev)| self.save(r, *rev)).collect()
    }
    /// Deletes the document whatever its revision (idempotent).
    fn delete(&self, uri: &UserUri) -> Result<(), StoreError>;
    /// Reserves `count` identifiers that no other caller of this store, on any node
    /// and after any restart, gets. They stay below 2^53 (exact in JavaScript).
    fn reserve_ids(&self, count: u64) -> Result<Range<u64>, StoreError>;
}

/// User accounts, one key per user.
pub trait AccountStore: Send + Sync + 'static {
    /// Stores a new account; `false` if the user already exists.
    fn insert(&self, account: &Account) -> Result<bool, StoreError>;
    /// Replaces an existing account; `false` if there is none.
    fn update(&self, account: &Account) -> Result<bool, StoreError>;
    fn get(&self, uri: &UserUri) -> Result<Option<Account>, StoreError>;
    /// Every account, ordered by URI.
    fn list(&self) -> Result<Vec<Account>, StoreError>;
    /// Deletes the account only; `false` if there was none.
    fn delete(&self, uri: &UserUri) -> Result<bool, StoreError>;
}

/// API sessions, one key per token hash.
pub trait SessionStore: Send + Sync + 'static {
    fn insert(&self, token_hash: &[u8], session: &SessionRecord) -> Result<(), StoreError>;
    fn get(&self, token_hash: &[u8]) -> Result<Option<SessionRecord>, StoreError>;
    /// `false` if there was no such session.
    fn delete(&self, token_hash: &[u8]) -> Result<bool, StoreError>;
    /// Ends every session of a user; returns how many.
    fn delete_of(&self, uri: &UserUri) -> Result<usize, StoreError>;
    /// Deletes sessions that expired before `now`; returns how many.
    fn delete_expired(&self, now: Timestamp) -> Result<usize, StoreError>;
}

/// What the directory sync saw, one row per user.
pub trait DirectoryStore: Send + Sync + 'static {
    fn rows(&self) -> Result<Vec<DirectoryUser>, StoreError>;
    /// The LDAP DN the last sync saw for a user.
    fn dn(&self, uri: &UserUri) -> Result<Option<String>, StoreError>;
    /// Records sync results; each row replaces any row with the same key or the same
    /// URI. Rows are independent writes.
    fn save_rows(&self, rows: &[DirectoryUser]) -> Result<(), StoreError>;
}

/// The four ports of one back end.
#[derive(Clone)]
pub struct Stores {
    pub documents: Arc<dyn DocumentStore>,
    pub accounts: Arc<dyn AccountStore>,
    pub sessions: Arc<dyn SessionStore>,
    pub directory: Arc<dyn DirectoryStore>,
}

impl Stores {
    /// All four ports on one back end that implements them all.
    pub fn from_one<S>(store: Arc<S>) -> Stores
    where
        S: DocumentStore + AccountStore + SessionStore + DirectoryStore,
    {
        Stores {
            documents: store.clone(),
            accounts: store.clone(),
            sessions: store.clone(),
            directory: store,
        }
    }

    /// The embedded default: one SQLite file in `data_dir`.
    pub fn sqlite(data_dir: &std::path::Path) -> Result<Stores, StoreError> {
        Ok(Stores::from_one(Arc::new(SqliteStore::open(data_dir)?)))
    }

    /// Cluster mode: NATS JetStream key-value buckets shared by every node.
    pub fn nats(options: NatsOptions) -> Result<Stores, StoreError> {
        Ok(Stores::from_one(Arc::new(NatsStore::open(options)?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_debug_shows_no_secrets() {
        let a = Account {
            uri: UserUri::parse("a@x.com").unwrap(),
            display_name: "A".into(),
            password_hash: "argon2-hash".into(),
            nt_hash_sealed: vec![0xab, 0xcd],
            created: Timestamp::from_millis(5),
            disabled: false,
        };
        let shown = format!("{a:?}");
        assert!(shown.contains("a@x.com"), "{shown}");
        assert!(
            !shown.contains("password_hash") && !shown.contains("argon2-hash"),
            "{shown}"
        );
        assert!(
            !shown.contains("nt_hash_sealed") && !shown.contains("171"),
            "{shown}"
        );
    }
}
