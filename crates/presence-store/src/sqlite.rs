//! SQLite store: one file in the data directory, WAL journal, `synchronous=FULL` so a
//! committed write survives power loss and `kill -9`. Several processes may open it at
//! once (the `user` subcommands while the server runs); SQLite's locking and a busy
//! timeout serialise them.
//!
//! **Group commit.** Every write is a job for one writer thread, which owns the
//! writing connection. It takes every job waiting (up to [`MAX_BATCH`]), runs each in
//! its own savepoint (a job that fails is rolled back alone), commits once, and only
//! then answers each caller. Writes from many presentities that arrive together so
//! share one transaction and one fsync, and each is acknowledged only after its
//! commit. Reads use a second connection and never wait for the writer (WAL).

use crate::{
    Account, AccountStore, DirectoryStore, DirectoryUser, DocumentStore, Revision, SessionRecord,
    SessionStore, StoreError, Versioned,
};
use parking_lot::Mutex;
use presence_model::document::DocRecord;
use presence_model::{Timestamp, UserUri};
use rusqlite::{Connection, OptionalExtension, params};
use std::ops::Range;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "presenced.sqlite3";
/// How long a writer waits for another process's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
const SCHEMA_VERSION: i64 = 4;
/// Most jobs in one transaction: bounds how long the first caller of a batch waits.
pub const MAX_BATCH: usize = 1024;
/// Identifiers stay below 2^53, exact in JavaScript numbers.
const MAX_ID: u64 = 1 << 53;

/// One write: runs inside the batch transaction (in its own savepoint) and returns
/// whether it succeeded, plus what to do once the batch's commit is known.
type Job = Box<dyn FnOnce(&Connection) -> (bool, Finish) + Send>;
type Finish = Box<dyn FnOnce(Result<(), &StoreError>) + Send>;

pub struct SqliteStore {
    read: Mutex<Connection>,
    jobs: Mutex<mpsc::Sender<Job>>,
}

fn unavailable(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        unavailable(e)
    }
}

fn connect(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

fn migrate(conn: &Connection) -> Result<(), StoreError> {
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
    if version < 3 {
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
    if version < SCHEMA_VERSION {
        // Identifiers used to come from the clock (start-up milliseconds x 1024);
        // the counter starts above anything handed out that way.
        let floor = (now_millis() * 1024).min(MAX_ID / 2);
        conn.execute_batch(&format!(
            "BEGIN;
             CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, next INTEGER NOT NULL);
             INSERT OR IGNORE INTO counters (name, next) VALUES ('ids', {floor});
             PRAGMA user_version = 4;
             COMMIT;"
        ))?;
    }
    Ok(())
}

fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The writer thread: one transaction and one fsync per batch of waiting jobs.
fn run_writer(conn: Connection, jobs: mpsc::Receiver<Job>) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    while let Ok(first) = jobs.recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let mut finishers = Vec::with_capacity(batch.len());
        let outcome = (|| -> Result<(), StoreError> {
            conn.execute_batch("BEGIN IMMEDIATE")?;
            for job in batch.drain(..) {
                conn.execute_batch("SAVEPOINT job")?;
                let (ok, finish) = job(&conn);
                finishers.push(finish);
                if ok {
                    conn.execute_batch("RELEASE job")?;
                } else {
                    conn.execute_batch("ROLLBACK TO job; RELEASE job")?;
                }
            }
            conn.execute_batch("COMMIT")?;
            Ok(())
        })();
        if outcome.is_err() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        // Jobs not reached before a failure were dropped with `batch`; their callers
        // see the channel close and report the store unavailable.
        batch.clear();
        for finish in finishers {
            finish(outcome.as_ref().map(|_| ()));
        }
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the store in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::DataDir {
            path: data_dir.display().to_string(),
            source,
        })?;
        let path = data_dir.join(DB_FILE);
        let writer = connect(&path)?;
        migrate(&writer)?;
        let read = connect(&path)?;
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || run_writer(writer, rx))
            .map_err(|e| StoreError::Unavailable(format!("cannot start the writer: {e}")))?;
        Ok(SqliteStore {
            read: Mutex::new(read),
            jobs: Mutex::new(tx),
        })
    }

    /// Runs `work` on the writer thread in the next batch and waits for that batch's
    /// commit. `Err` from `work` rolls back what it did, and only that.
    fn write<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.write_many(vec![work])
            .pop()
            .expect("one result per job")
    }

    /// Queues several jobs together (they land in the same batch unless it is full)
    /// and waits for all of them; one result per job.
    fn write_many<T, W>(&self, works: Vec<W>) -> Vec<Result<T, StoreError>>
    where
        T: Send + 'static,
        W: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let mut replies = Vec::with_capacity(works.len());
        {
            let jobs = self.jobs.lock();
            for work in works {
                let (tx, rx) = mpsc::sync_channel::<Result<T, StoreError>>(1);
                let job: Job = Box::new(move |conn| {
                    let result = work(conn);
                    let ok = result.is_ok();
                    let finish: Finish = Box::new(move |commit| {
                        let _ = tx.send(match commit {
                            Ok(()) => result,
                            Err(e) => Err(StoreError::Unavailable(e.to_string())),
                        });
                    });
                    (ok, finish)
                });
                let sent = jobs.send(job).is_ok();
                replies.push(sent.then_some(rx));
            }
        }
        replies
            .into_iter()
            .map(|rx| {
                rx.and_then(|rx| rx.recv().ok()).unwrap_or_else(|| {
                    Err(StoreError::Unavailable("the store's writer stopped".into()))
                })
            })
            .collect()
    }
}

fn decode_doc(uri: String, doc: &str) -> Result<DocRecord, StoreError> {
    serde_json::from_str(doc).map_err(|e| StoreError::Corrupt {
        key: uri,
        reason: e.to_string(),
    })
}

fn parse_uri(uri: &str) -> Result<UserUri, StoreError> {
    UserUri::parse(uri).map_err(|e| StoreError::Corrupt {
        key: uri.to_string(),
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

/// The compare-and-set of one document, on the writer's connection.
fn save_doc(
    conn: &Connection,
    uri: &str,
    doc: &str,
    expected: Revision,
) -> Result<Revision, StoreError> {
    let current = conn
        .prepare_cached("SELECT revision FROM presentities WHERE uri = ?1")?
        .query_row([uri], |r| r.get::<_, i64>(0))
        .optional()?
        .map_or(0, |r| r as Revision);
    if current != expected {
        return Err(StoreError::Conflict { current });
    }
    // Revisions come from one counter for all documents, as a KV bucket's sequence
    // does: a document deleted and created again never repeats a revision, so a
    // writer holding the old one cannot overwrite the new document.
    let next = conn
        .prepare_cached(
            "INSERT INTO counters (name, next)
             VALUES ('revisions', (SELECT COALESCE(MAX(revision), 0) + 1 FROM presentities))
             ON CONFLICT(name) DO UPDATE SET next = next + 1
             RETURNING next",
        )?
        .query_row([], |r| r.get::<_, i64>(0))? as Revision;
    conn.prepare_cached(
        "INSERT INTO presentities (uri, revision, doc) VALUES (?1, ?2, ?3)
         ON CONFLICT(uri) DO UPDATE SET doc = excluded.doc, revision = excluded.revision",
    )?
    .execute(params![uri, next as i64, doc])?;
    Ok(next)
}

impl DocumentStore for SqliteStore {
    fn load_all(&self) -> Result<Vec<Versioned<DocRecord>>, StoreError> {
        let conn = self.read.lock();
        let mut stmt = conn.prepare("SELECT uri, doc, revision FROM presentities")?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?))
        })?;
        rows.map(|row| {
            let (uri, doc, revision) = row?;
            Ok(Versioned {
                value: decode_doc(uri, &doc)?,
                revision: revision as Revision,
            })
        })
        .collect()
    }

    fn load(&self, uri: &UserUri) -> Result<Option<Versioned<DocRecord>>, StoreError> {
        let conn = self.read.lock();
        let row: Option<(String, i64)> = conn
            .prepare_cached("SELECT doc, revision FROM presentities WHERE uri = ?1")?
            .query_row([uri.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        row.map(|(doc, revision)| {
            Ok(Versioned {
                value: decode_doc(uri.to_string(), &doc)?,
                revision: revision as Revision,
            })
        })
        .transpose()
    }

    fn save(&self, record: &DocRecord, expected: Revision) -> Result<Revision, StoreError> {
        self.save_many(&[(record.clone(), expected)])
            .pop()
            .expect("one result")
    }

    fn save_many(&self, records: &[(DocRecord, Revision)]) -> Vec<Result<Revision, StoreError>> {
        let works = records
            .iter()
            .map(|(record, expected)| {
                // Encoded by the caller's thread, so the writer only writes.
                let doc = serde_json::to_string(record).expect("documents serialise");
                let uri = record.uri.to_string();
                let expected = *expected;
                move |conn: &Connection| save_doc(conn, &uri, &doc, expected)
            })
            .collect();
        self.write_many(works)
    }

    fn delete(&self, uri: &UserUri) -> Result<(), StoreError> {
        let uri = uri.to_string();
        self.write(move |conn| {
            conn.execute("DELETE FROM presentities WHERE uri = ?1", [uri])?;
            Ok(())
        })
    }

    fn reserve_ids(&self, count: u64) -> Result<Range<u64>, StoreError> {
        self.write(move |conn| {
            let start = conn.query_row("SELECT next FROM counters WHERE name = 'ids'", [], |r| {
                r.get::<_, i64>(0)
            })? as u64;
            let end = start
                .checked_add(count)
                .filter(|e| *e < MAX_ID)
                .ok_or_else(|| StoreError::Unavailable("identifiers exhausted".into()))?;
            conn.execute(
                "UPDATE counters SET next = ?1 WHERE name = 'ids'",
                [end as i64],
            )?;
            Ok(start..end)
        })
    }
}

impl AccountStore for SqliteStore {
    fn insert(&self, a: &Account) -> Result<bool, StoreError> {
        let a = a.clone();
        self.write(move |conn| {
            let n = conn.execute(
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
        })
    }

    fn update(&self, a: &Account) -> Result<bool, StoreError> {
        let a = a.clone();
        self.write(move |conn| {
            let n = conn.execute(
                "UPDATE accounts SET display_name = ?2, password_hash = ?3, nt_hash_sealed = ?4, disabled = ?5
                 WHERE uri = ?1",
                params![a.uri.as_str(), a.display_name, a.password_hash, a.nt_hash_sealed, a.disabled],
            )?;
            Ok(n == 1)
        })
    }

    fn get(&self, uri: &UserUri) -> Result<Option<Account>, StoreError> {
        let conn = self.read.lock();
        let row = conn
            .prepare_cached(&format!(
                "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE uri = ?1"
            ))?
            .query_row([uri.as_str()], account_from_row)
            .optional()?;
        Ok(row.map(|(_, a)| a))
    }

    fn list(&self) -> Result<Vec<Account>, StoreError> {
        let conn = self.read.lock();
        let mut stmt = conn.prepare(&format!(
            "SELECT {ACCOUNT_COLUMNS} FROM accounts ORDER BY uri"
        ))?;
        let rows = stmt.query_map([], account_from_row)?;
        rows.map(|r| r.map(|(_, a)| a).map_err(StoreError::from))
            .collect()
    }

    fn delete(&self, uri: &UserUri) -> Result<bool, StoreError> {
        let uri = uri.to_string();
        self.write(move |conn| Ok(conn.execute("DELETE FROM accounts WHERE uri = ?1", [uri])? == 1))
    }
}

impl SessionStore for SqliteStore {
    fn insert(&self, token_hash: &[u8], s: &SessionRecord) -> Result<(), StoreError> {
        let (hash, uri, expires) = (token_hash.to_vec(), s.uri.to_string(), s.expires.millis());
        self.write(move |conn| {
            conn.execute(
                "INSERT OR REPLACE INTO sessions (token_hash, uri, expires_ms) VALUES (?1, ?2, ?3)",
                params![hash, uri, expires],
            )?;
            Ok(())
        })
    }

    fn get(&self, token_hash: &[u8]) -> Result<Option<SessionRecord>, StoreError> {
        let conn = self.read.lock();
        let row: Option<(String, i64)> = conn
            .prepare_cached("SELECT uri, expires_ms FROM sessions WHERE token_hash = ?1")?
            .query_row([token_hash], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        row.map(|(uri, expires)| {
            Ok(SessionRecord {
                uri: parse_uri(&uri)?,
                expires: Timestamp::from_millis(expires),
            })
        })
        .transpose()
    }

    fn delete(&self, token_hash: &[u8]) -> Result<bool, StoreError> {
        let hash = token_hash.to_vec();
        self.write(move |conn| {
            Ok(conn.execute("DELETE FROM sessions WHERE token_hash = ?1", [hash])? == 1)
        })
    }

    fn delete_of(&self, uri: &UserUri) -> Result<usize, StoreError> {
        let uri = uri.to_string();
        self.write(move |conn| Ok(conn.execute("DELETE FROM sessions WHERE uri = ?1", [uri])?))
    }

    fn delete_expired(&self, now: Timestamp) -> Result<usize, StoreError> {
        let now = now.millis();
        self.write(move |conn| {
            Ok(conn.execute("DELETE FROM sessions WHERE expires_ms <= ?1", [now])?)
        })
    }
}

impl DirectoryStore for SqliteStore {
    fn rows(&self) -> Result<Vec<DirectoryUser>, StoreError> {
        let conn = self.read.lock();
        let mut stmt =
            conn.prepare("SELECT key, uri, dn, fingerprint, enabled FROM directory_users")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
            ))
        })?;
        rows.map(|row| {
            let (key, uri, dn, fingerprint, enabled) = row?;
            Ok(DirectoryUser {
                key,
                uri: parse_uri(&uri)?,
                dn,
                fingerprint,
                enabled,
            })
        })
        .collect()
    }

    fn dn(&self, uri: &UserUri) -> Result<Option<String>, StoreError> {
        let conn = self.read.lock();
        let dn: Option<Option<String>> = conn
            .prepare_cached("SELECT dn FROM directory_users WHERE uri = ?1")?
            .query_row([uri.as_str()], |r| r.get(0))
            .optional()?;
        Ok(dn.flatten())
    }

    fn save_rows(&self, rows: &[DirectoryUser]) -> Result<(), StoreError> {
        let works: Vec<_> = rows
            .iter()
            .cloned()
            .map(|r| {
                move |conn: &Connection| {
                    conn.prepare_cached(
                        "DELETE FROM directory_users WHERE uri = ?1 AND key <> ?2",
                    )?
                    .execute(params![r.uri.as_str(), r.key])?;
                    conn.prepare_cached(
                        "INSERT OR REPLACE INTO directory_users (key, uri, dn, fingerprint, enabled)
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                    )?
                    .execute(params![r.key, r.uri.as_str(), r.dn, r.fingerprint, r.enabled])?;
                    Ok(())
                }
            })
            .collect();
        self.write_many(works).into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    //! SQLite's own mechanics. The ports' contract is checked against this store by
    //! the conformance suite (`tests/sqlite.rs`).

    use super::*;
    use std::sync::Arc;

    fn record(u: &str) -> DocRecord {
        DocRecord {
            uri: UserUri::parse(u).unwrap(),
            containers: presence_model::Container::defaults(),
            instances: vec![],
            subscribers: vec![],
            contacts: Default::default(),
            disabled: false,
            registrations: vec![],
        }
    }

    /// Jobs queued while the writer is busy make its next batch, in one
    /// transaction: a job later in the batch sees the earlier ones' writes, readers
    /// do not, and no caller hears back, until the batch commits.
    #[test]
    fn writes_queued_together_share_one_commit() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(dir.path()).unwrap();
        let reader = connect(&dir.path().join(DB_FILE)).unwrap();
        let stored = |conn: &Connection, uri: &str| -> bool {
            conn.query_row(
                "SELECT count(*) FROM presentities WHERE uri = ?1",
                [uri],
                |r| r.get::<_, i64>(0),
            )
            .unwrap()
                == 1
        };
        let (ack, acks) = mpsc::channel();
        let acks = Arc::new(Mutex::new(acks));
        let save = |uri: &'static str| -> Job {
            let ack = ack.clone();
            let doc = serde_json::to_string(&record(uri)).unwrap();
            Box::new(move |conn| {
                let ok = save_doc(conn, uri, &doc, 0).is_ok();
                let finish: Finish =
                    Box::new(move |commit| ack.send((uri, commit.is_ok())).unwrap());
                (ok, finish)
            })
        };
        let (seen_tx, seen) = mpsc::channel();
        let probe: Job = {
            let acks = acks.clone();
            Box::new(move |conn| {
                let acked = acks.lock().try_recv().is_ok();
                let seen = (stored(conn, "a@x.com"), stored(conn, "b@x.com"));
                seen_tx
                    .send((seen, stored(&reader, "a@x.com"), acked))
                    .unwrap();
                (true, Box::new(|_| {}))
            })
        };
        let queue = s.jobs.lock().clone();
        let batch = [save("a@x.com"), save("b@x.com"), probe];
        s.write(move |_| {
            for job in batch {
                queue.send(job).unwrap();
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(
            seen.recv().unwrap(),
            ((true, true), false, false),
            "in the writer's transaction, not committed, not acknowledged"
        );
        let acks = acks.lock();
        let mut acked = [acks.recv().unwrap(), acks.recv().unwrap()];
        acked.sort();
        assert_eq!(acked, [("a@x.com", true), ("b@x.com", true)]);
        assert!(
            s.load(&UserUri::parse("b@x.com").unwrap())
                .unwrap()
                .is_some()
        );
    }

    /// Many writers at once, each on its own key: every write lands, each key's
    /// revisions rise, and no two writes share a revision (one counter for all).
    #[test]
    fn concurrent_writers_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = Arc::new(SqliteStore::open(dir.path()).unwrap());
        let threads: Vec<_> = (0..16)
            .map(|t| {
                let s = s.clone();
                std::thread::spawn(move || {
                    let r = record(&format!("u{t}@x.com"));
                    let mut revisions = vec![0];
                    for _ in 0..50 {
                        let rev = s.save(&r, *revisions.last().unwrap()).unwrap();
                        revisions.push(rev);
                    }
                    revisions
                })
            })
            .collect();
        let mut all = std::collections::BTreeSet::new();
        for t in threads {
            let revisions = t.join().unwrap();
            assert_eq!(revisions.len(), 51);
            assert!(revisions.windows(2).all(|w| w[0] < w[1]), "{revisions:?}");
            all.extend(revisions.into_iter().skip(1));
        }
        assert_eq!(all.len(), 16 * 50, "no revision given twice");
        assert_eq!(s.load_all().unwrap().len(), 16);
    }

    /// Identifiers used to come from the clock (start-up milliseconds x 1024): the
    /// counter the migration to schema 4 creates starts above any of those, and a
    /// store reopened goes on where it was (no second migration).
    #[test]
    fn identifiers_start_above_clock_ids_and_go_on_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let floor = now_millis() * 1024;
        let first = SqliteStore::open(dir.path())
            .unwrap()
            .reserve_ids(1024)
            .unwrap();
        assert!(first.start >= floor, "{first:?} below {floor}");
        let s = SqliteStore::open(dir.path()).unwrap();
        let second = s.reserve_ids(1024).unwrap();
        assert_eq!(first.end, second.start);
        assert_eq!(second.end - second.start, 1024);
        assert!(second.end < MAX_ID);
        s.save(&record("a@x.com"), 0).unwrap();
        drop(s);

        // A database of schema 3, from before the counter: migrated, data kept.
        let conn = connect(&dir.path().join(DB_FILE)).unwrap();
        conn.execute_batch("DROP TABLE counters; PRAGMA user_version = 3;")
            .unwrap();
        drop(conn);
        let floor = now_millis() * 1024;
        let s = SqliteStore::open(dir.path()).unwrap();
        let migrated = s.reserve_ids(1).unwrap();
        assert!(migrated.start >= floor, "{migrated:?} below {floor}");
        let a = s.load(&UserUri::parse("a@x.com").unwrap()).unwrap();
        assert_eq!(a.map(|v| v.revision), Some(1));
        let version: i64 = s
            .read
            .lock()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
    }
}
