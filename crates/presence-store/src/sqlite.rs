//! SQLite store: one file in the data directory, WAL journal, `synchronous=FULL` so a
//! committed write survives power loss and `kill -9`. Several processes may open it at
//! once (the `user` subcommands while the server runs); SQLite's locking and a busy
//! timeout serialise them.

use crate::{Account, DirectoryUser, Store, StoreError};
use parking_lot::Mutex;
use presence_model::document::DocRecord;
use presence_model::{Timestamp, UserUri};
use rusqlite::{Connection, OptionalExtension, params};
use std::path::Path;
use std::time::Duration;

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "presenced.sqlite3";
/// How long a writer waits for another process's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
const SCHEMA_VERSION: i64 = 3;

pub struct SqliteStore {
    conn: Mutex<Connection>,
}

impl SqliteStore {
    /// Opens (creating if needed) the store in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::DataDir {
            path: data_dir.display().to_string(),
            source,
        })?;
        let conn = Connection::open(data_dir.join(DB_FILE))?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version < 1 {
            conn.execute_batch(
                "BEGIN;
                 CREATE TABLE IF NOT EXISTS accounts (
                     uri TEXT PRIMARY KEY,
                     display_name TEXT NOT NULL,
                     password_hash TEXT NOT NULL,
                     nt_hash_sealed BLOB NOT NULL,
                     created_ms INTEGER NOT NULL
                 );
                 CREATE TABLE IF NOT EXISTS presentities (
                     uri TEXT PRIMARY KEY,
                     revision INTEGER NOT NULL,
                     doc TEXT NOT NULL
                 );
                 PRAGMA user_version = 1;
                 COMMIT;",
            )?;
        }
        if version < 2 {
            conn.execute_batch(
                "BEGIN;
                 CREATE TABLE IF NOT EXISTS sessions (
                     token_hash BLOB PRIMARY KEY,
                     uri TEXT NOT NULL,
                     expires_ms INTEGER NOT NULL
                 );
                 CREATE INDEX IF NOT EXISTS sessions_by_uri ON sessions (uri);
                 PRAGMA user_version = 2;
                 COMMIT;",
            )?;
        }
        if version < SCHEMA_VERSION {
            conn.execute_batch(
                "BEGIN;
                 ALTER TABLE accounts ADD COLUMN disabled INTEGER NOT NULL DEFAULT 0;
                 CREATE TABLE IF NOT EXISTS directory_users (
                     key TEXT PRIMARY KEY,
                     uri TEXT NOT NULL UNIQUE,
                     dn TEXT,
                     fingerprint TEXT NOT NULL,
                     enabled INTEGER NOT NULL
                 );
                 PRAGMA user_version = 3;
                 COMMIT;",
            )?;
        }
        Ok(SqliteStore {
            conn: Mutex::new(conn),
        })
    }
}

fn decode_doc(uri: String, doc: String) -> Result<DocRecord, StoreError> {
    serde_json::from_str(&doc).map_err(|e| StoreError::Corrupt {
        uri,
        reason: e.to_string(),
    })
}

fn account_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<(String, Account)> {
    let uri: String = row.get(0)?;
    let parsed = UserUri::parse(&uri).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })?;
    Ok((
        uri,
        Account {
            uri: parsed,
            display_name: row.get(1)?,
            password_hash: row.get(2)?,
            nt_hash_sealed: row.get(3)?,
            created: Timestamp::from_millis(row.get(4)?),
            disabled: row.get(5)?,
        },
    ))
}

const ACCOUNT_COLUMNS: &str =
    "uri, display_name, password_hash, nt_hash_sealed, created_ms, disabled";

impl Store for SqliteStore {
    fn load_presentities(&self) -> Result<Vec<DocRecord>, StoreError> {
        let conn = self.conn.lock();
        let mut stmt = conn.prepare("SELECT uri, doc FROM presentities")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.map(|row| {
            let (uri, doc) = row?;
            decode_doc(uri, doc)
        })
        .collect()
    }

    fn load_presentity(&self, uri: &UserUri) -> Result<Option<DocRecord>, StoreError> {
        let conn = self.conn.lock();
        let doc: Option<String> = conn
            .query_row(
                "SELECT doc FROM presentities WHERE uri = ?1",
                [uri.as_str()],
                |r| r.get(0),
            )
            .optional()?;
        doc.map(|d| decode_doc(uri.to_string(), d)).transpose()
    }

    fn save_presentities(&self, records: &[DocRecord]) -> Result<(), StoreError> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO presentities (uri, revision, doc) VALUES (?1, 1, ?2)
                 ON CONFLICT(uri) DO UPDATE SET doc = excluded.doc, revision = revision + 1",
            )?;
            for record in records {
                let doc = serde_json::to_string(record).expect("documents serialise");
                stmt.execute(params![record.uri.as_str(), doc])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn delete_presentity(&self, uri: &UserUri) -> Result<(), StoreError> {
        self.conn
            .lock()
            .execute("DELETE FROM presentities WHERE uri = ?1", [uri.as_str()])?;
        Ok(())
    }

    fn delete_orphan_presentities(&self) -> Result<usize, StoreError> {
        Ok(self.conn.lock().execute(
            "DELETE FROM presentities WHERE uri NOT IN (SELECT uri FROM accounts)",
            [],
        )?)
    }

    fn insert_account(&self, a: &Account) -> Result<bool, StoreError> {
        let n = self.conn.lock().execute(
            &format!(
                "INSERT OR IGNORE INTO accounts ({ACCOUNT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
            ),
            params![
                a.uri.as_str(),
                a.display_name,
                a.password_hash,
                a.nt_hash_sealed,
                a.created.millis(),
                a.disabled
            ],
        )?;
        Ok(n == 1)
    }

    fn update_account(&self, a: &Account) -> Result<bool, StoreError> {
        let n = self.conn.lock().execute(
            "UPDATE accounts SET display_name = ?2, password_hash = ?3, nt_hash_sealed = ?4, disabled = ?5
             WHERE uri = ?1",
            params![a.uri.as_str(), a.display_name, a.password_hash, a.nt_hash_sealed, a.disabled],
        )?;
        Ok(n == 1)
    }

    fn account(&self, uri: &UserUri) -> Result<Option<Account>, StoreError> {
        let conn = self.conn.lock();
        let row = conn
            .query_row(
                &format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE uri = ?1"),
                [uri.as_str()],
                account_from_row,
            )
            .optional()?;
        Ok(row.map(|(_, a)| a))
    }

    fn accounts(&self) -> Result<Vec<Account>, StoreError> {
        let conn = self.conn.lock();
        let mut stmt = conn.prepare(&format!(
            "SELECT {ACCOUNT_COLUMNS} FROM accounts ORDER BY uri"
        ))?;
        let rows = stmt.query_map([], account_from_row)?;
        rows.map(|r| r.map(|(_, a)| a).map_err(StoreError::from))
            .collect()
    }

    fn delete_account(&self, uri: &UserUri) -> Result<bool, StoreError> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction()?;
        let n = tx.execute("DELETE FROM accounts WHERE uri = ?1", [uri.as_str()])?;
        tx.execute("DELETE FROM presentities WHERE uri = ?1", [uri.as_str()])?;
        tx.execute("DELETE FROM sessions WHERE uri = ?1", [uri.as_str()])?;
        tx.commit()?;
        Ok(n == 1)
    }

    fn insert_session(
        &self,
        token_hash: &[u8],
        uri: &UserUri,
        expires: Timestamp,
    ) -> Result<(), StoreError> {
        self.conn.lock().execute(
            "INSERT INTO sessions (token_hash, uri, expires_ms) VALUES (?1, ?2, ?3)",
            params![token_hash, uri.as_str(), expires.millis()],
        )?;
        Ok(())
    }

    fn session_account(
        &self,
        token_hash: &[u8],
        now: Timestamp,
    ) -> Result<Option<Account>, StoreError> {
        let conn = self.conn.lock();
        let columns = ACCOUNT_COLUMNS
            .split(", ")
            .map(|c| format!("a.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        let row = conn
            .query_row(
                &format!(
                    "SELECT {columns} FROM sessions s JOIN accounts a ON a.uri = s.uri
                     WHERE s.token_hash = ?1 AND s.expires_ms > ?2 AND a.disabled = 0"
                ),
                params![token_hash, now.millis()],
                account_from_row,
            )
            .optional()?;
        Ok(row.map(|(_, a)| a))
    }

    fn delete_session(&self, token_hash: &[u8]) -> Result<bool, StoreError> {
        let n = self
            .conn
            .lock()
            .execute("DELETE FROM sessions WHERE token_hash = ?1", [token_hash])?;
        Ok(n == 1)
    }

    fn sync_directory_accounts(
        &self,
        users: &[(UserUri, String, bool)],
        now: Timestamp,
    ) -> Result<usize, StoreError> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction()?;
        let mut created = 0;
        {
            let mut insert = tx.prepare_cached(&format!(
                "INSERT OR IGNORE INTO accounts ({ACCOUNT_COLUMNS}) VALUES (?1, ?2, '', x'', ?3, ?4)"
            ))?;
            let mut update = tx.prepare_cached(
                "UPDATE accounts SET display_name = ?2, disabled = ?3 WHERE uri = ?1",
            )?;
            let mut end_sessions = tx.prepare_cached("DELETE FROM sessions WHERE uri = ?1")?;
            for (uri, name, enabled) in users {
                let n = insert.execute(params![uri.as_str(), name, now.millis(), !enabled])?;
                if n == 0 {
                    update.execute(params![uri.as_str(), name, !enabled])?;
                }
                created += n;
                if !enabled {
                    end_sessions.execute([uri.as_str()])?;
                }
            }
        }
        tx.commit()?;
        Ok(created)
    }

    fn directory_users(&self) -> Result<Vec<DirectoryUser>, StoreError> {
        let conn = self.conn.lock();
        let mut stmt =
            conn.prepare("SELECT key, uri, dn, fingerprint, enabled FROM directory_users")?;
        let rows = stmt.query_map([], |r| {
            let uri: String = r.get(1)?;
            Ok((r.get(0)?, uri, r.get(2)?, r.get(3)?, r.get(4)?))
        })?;
        rows.map(|row| {
            let (key, uri, dn, fingerprint, enabled): (
                String,
                String,
                Option<String>,
                String,
                bool,
            ) = row?;
            let uri = UserUri::parse(&uri).map_err(|e| StoreError::Corrupt {
                uri: uri.clone(),
                reason: e.to_string(),
            })?;
            Ok(DirectoryUser {
                key,
                uri,
                dn,
                fingerprint,
                enabled,
            })
        })
        .collect()
    }

    fn directory_dn(&self, uri: &UserUri) -> Result<Option<String>, StoreError> {
        let conn = self.conn.lock();
        let dn: Option<Option<String>> = conn
            .query_row(
                "SELECT dn FROM directory_users WHERE uri = ?1",
                [uri.as_str()],
                |r| r.get(0),
            )
            .optional()?;
        Ok(dn.flatten())
    }

    fn save_directory_users(&self, rows: &[DirectoryUser]) -> Result<(), StoreError> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction()?;
        {
            let mut by_uri =
                tx.prepare_cached("DELETE FROM directory_users WHERE uri = ?1 AND key <> ?2")?;
            let mut upsert = tx.prepare_cached(
                "INSERT OR REPLACE INTO directory_users (key, uri, dn, fingerprint, enabled) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for r in rows {
                by_uri.execute(params![r.uri.as_str(), r.key])?;
                upsert.execute(params![
                    r.key,
                    r.uri.as_str(),
                    r.dn,
                    r.fingerprint,
                    r.enabled
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn delete_sessions_of(&self, uri: &UserUri) -> Result<usize, StoreError> {
        Ok(self
            .conn
            .lock()
            .execute("DELETE FROM sessions WHERE uri = ?1", [uri.as_str()])?)
    }

    fn delete_expired_sessions(&self, now: Timestamp) -> Result<usize, StoreError> {
        Ok(self.conn.lock().execute(
            "DELETE FROM sessions WHERE expires_ms <= ?1",
            [now.millis()],
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use presence_model::Container;

    fn uri(s: &str) -> UserUri {
        UserUri::parse(s).unwrap()
    }

    fn record(u: &str) -> DocRecord {
        DocRecord {
            uri: uri(u),
            containers: Container::defaults(),
            instances: vec![],
            subscribers: vec![],
            contacts: Default::default(),
            disabled: false,
        }
    }

    #[test]
    fn documents_round_trip_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SqliteStore::open(dir.path()).unwrap();
            s.save_presentities(&[record("a@x.com"), record("b@x.com")])
                .unwrap();
            s.save_presentities(&[record("a@x.com")]).unwrap();
        }
        let s = SqliteStore::open(dir.path()).unwrap();
        let mut all = s.load_presentities().unwrap();
        all.sort_by(|a, b| a.uri.cmp(&b.uri));
        assert_eq!(all, vec![record("a@x.com"), record("b@x.com")]);
        assert_eq!(
            s.load_presentity(&uri("b@x.com")).unwrap(),
            Some(record("b@x.com"))
        );
        s.delete_presentity(&uri("b@x.com")).unwrap();
        assert_eq!(s.load_presentity(&uri("b@x.com")).unwrap(), None);
    }

    #[test]
    fn accounts_crud() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(dir.path()).unwrap();
        let mut a = Account {
            uri: uri("a@x.com"),
            display_name: "A".into(),
            password_hash: "h".into(),
            nt_hash_sealed: vec![1, 2, 3],
            created: Timestamp::from_millis(5),
            disabled: false,
        };
        assert!(s.insert_account(&a).unwrap());
        assert!(!s.insert_account(&a).unwrap(), "duplicate insert refused");
        a.display_name = "Ay".into();
        assert!(s.update_account(&a).unwrap());
        assert_eq!(s.account(&a.uri).unwrap(), Some(a.clone()));
        assert_eq!(s.accounts().unwrap().len(), 1);
        s.save_presentities(&[record("a@x.com"), record("orphan@x.com")])
            .unwrap();
        assert_eq!(
            s.delete_orphan_presentities().unwrap(),
            1,
            "only the document without an account"
        );
        assert!(s.load_presentity(&a.uri).unwrap().is_some());
        s.insert_session(b"h1", &a.uri, Timestamp::from_millis(100))
            .unwrap();
        s.insert_session(b"h2", &a.uri, Timestamp::from_millis(10))
            .unwrap();
        assert_eq!(
            s.session_account(b"h1", Timestamp::from_millis(50))
                .unwrap(),
            Some(a.clone())
        );
        assert_eq!(
            s.session_account(b"h1", Timestamp::from_millis(100))
                .unwrap(),
            None,
            "expired"
        );
        assert_eq!(
            s.session_account(b"nope", Timestamp::from_millis(0))
                .unwrap(),
            None
        );
        assert_eq!(
            s.delete_expired_sessions(Timestamp::from_millis(50))
                .unwrap(),
            1
        );
        assert!(s.delete_session(b"h1").unwrap());
        assert!(!s.delete_session(b"h1").unwrap());
        s.insert_session(b"h3", &a.uri, Timestamp::from_millis(100))
            .unwrap();
        assert!(s.delete_account(&a.uri).unwrap());
        assert_eq!(
            s.session_account(b"h3", Timestamp::from_millis(0)).unwrap(),
            None,
            "sessions go with the account"
        );
        assert!(!s.delete_account(&a.uri).unwrap());
        assert_eq!(
            s.load_presentity(&a.uri).unwrap(),
            None,
            "document goes with the account"
        );
        assert!(
            !format!("{a:?}").contains("password_hash"),
            "no secrets in Debug"
        );
    }

    #[test]
    fn directory_rows_replace_by_key_and_uri() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(dir.path()).unwrap();
        let row = |key: &str, u: &str, fp: &str| DirectoryUser {
            key: key.into(),
            uri: uri(u),
            dn: Some(format!("cn={key}")),
            fingerprint: fp.into(),
            enabled: true,
        };
        s.save_directory_users(&[row("k1", "a@x.com", "1"), row("k2", "b@x.com", "1")])
            .unwrap();
        s.save_directory_users(&[row("k1", "a@x.com", "2")])
            .unwrap();
        // A new key for an existing URI (the entry was recreated) replaces the old row.
        s.save_directory_users(&[row("k3", "b@x.com", "1")])
            .unwrap();
        let mut rows = s.directory_users().unwrap();
        rows.sort_by(|a, b| a.key.cmp(&b.key));
        assert_eq!(
            rows,
            vec![row("k1", "a@x.com", "2"), row("k3", "b@x.com", "1")]
        );
    }
}
