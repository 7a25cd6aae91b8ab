//! The store port: where durable presence data and user accounts live.
//!
//! The unit of storage is one *presentity document* (containers, durable category
//! instances, subscriber list), written whole after every durable change and before
//! the change is acknowledged. That shape maps one-to-one onto a key-value store with
//! per-key revisions, which is how the NATS JetStream back end of cluster mode will
//! keep it (one KV key per presentity, written with an expected revision). The embedded
//! default is [`SqliteStore`].

mod sqlite;

pub use sqlite::SqliteStore;

use presence_model::document::DocRecord;
use presence_model::{Timestamp, UserUri};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] rusqlite::Error),
    #[error("stored record for {uri} is corrupt: {reason}")]
    Corrupt { uri: String, reason: String },
    #[error("cannot open the data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
}

/// A user account. Secrets are stored only as an argon2id hash (HTTP sign-in) and an
/// NT hash sealed with the server's data key (what SIP NTLM authentication needs).
#[derive(Clone, PartialEq, Eq)]
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

/// What the last directory sync saw of one user.
#[derive(Debug, Clone, PartialEq, Eq)]
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

pub trait Store: Send + Sync + 'static {
    fn load_presentities(&self) -> Result<Vec<DocRecord>, StoreError>;
    fn load_presentity(&self, uri: &UserUri) -> Result<Option<DocRecord>, StoreError>;
    /// Writes documents durably (all or none) before returning.
    fn save_presentities(&self, records: &[DocRecord]) -> Result<(), StoreError>;
    fn delete_presentity(&self, uri: &UserUri) -> Result<(), StoreError>;
    /// Deletes documents whose account is gone (a user removed while a server still
    /// held them in memory); returns how many.
    fn delete_orphan_presentities(&self) -> Result<usize, StoreError>;

    /// Inserts a new account; `false` if the user already exists.
    fn insert_account(&self, account: &Account) -> Result<bool, StoreError>;
    /// Replaces an existing account; `false` if there is none.
    fn update_account(&self, account: &Account) -> Result<bool, StoreError>;
    fn account(&self, uri: &UserUri) -> Result<Option<Account>, StoreError>;
    fn accounts(&self) -> Result<Vec<Account>, StoreError>;
    /// Deletes the account, its presentity document and its API sessions; `false` if
    /// there was none.
    fn delete_account(&self, uri: &UserUri) -> Result<bool, StoreError>;

    /// Records an API session under the hash of its token.
    fn insert_session(
        &self,
        token_hash: &[u8],
        uri: &UserUri,
        expires: Timestamp,
    ) -> Result<(), StoreError>;
    /// The account of a live session (not expired at `now`, account still present).
    fn session_account(
        &self,
        token_hash: &[u8],
        now: Timestamp,
    ) -> Result<Option<Account>, StoreError>;
    fn delete_session(&self, token_hash: &[u8]) -> Result<bool, StoreError>;
    /// Ends every API session of a user; returns how many.
    fn delete_sessions_of(&self, uri: &UserUri) -> Result<usize, StoreError>;
    /// Creates or updates the accounts of directory users (URI, display name,
    /// enabled) in one transaction. New accounts get no local password; existing ones
    /// keep theirs. Disabled users lose their API sessions. Returns how many accounts
    /// were created.
    fn sync_directory_accounts(
        &self,
        users: &[(UserUri, String, bool)],
        now: Timestamp,
    ) -> Result<usize, StoreError>;

    fn directory_users(&self) -> Result<Vec<DirectoryUser>, StoreError>;
    /// The LDAP DN the last sync saw for a user.
    fn directory_dn(&self, uri: &UserUri) -> Result<Option<String>, StoreError>;
    /// Records sync results (all or none); a row replaces any row with the same key
    /// or the same URI.
    fn save_directory_users(&self, rows: &[DirectoryUser]) -> Result<(), StoreError>;

    /// Deletes sessions that expired before `now`; returns how many.
    fn delete_expired_sessions(&self, now: Timestamp) -> Result<usize, StoreError>;
}
