//! NATS JetStream key-value store: the cluster-mode back end, where every node
//! reads and writes the same keys. Five buckets, `<prefix>_docs`, `_accounts`,
//! `_sessions`, `_directory` and `_meta`, each a replicated stream keeping one value
//! per key. Keys are base64url (KV keys allow only `[-/_=.a-zA-Z0-9]`); values are
//! JSON.
//!
//! **Revisions** are the stream sequence of a key's last write: higher with every
//! write of the key, but shared by the whole bucket, so not consecutive per key.
//! Compare-and-set is the server's expected-last-subject-sequence check, done by
//! the stream's leader, so it holds across nodes.
//!
//! **Reads go to the stream leader** (`STREAM.MSG.GET`), never through the KV's
//! direct get: any replica answers those, including one that is behind, and a
//! writer that retries from a stale revision only loses again. `load` promises the
//! authority's copy, and a lost compare-and-set reports the leader's revision.
//!
//! **Failures.** The server refuses a compare-and-set in two ways: 10071, the
//! revision sent is stale (a [`StoreError::Conflict`] with the leader's revision),
//! and 10164, another expected-revision write to the same key is still being
//! applied (even our own, just acknowledged): retried with the same revision after
//! a short backoff. Timeouts, "no responders" (a stream without a leader during an
//! election, 4-10 s), 10163 and lost connections are retried with a longer backoff
//! until the configured `retry_for`, then reported as
//! [`StoreError::Unavailable`]. A bucket that seems missing at run time is such an
//! election too: it is never recreated then, only at start-up.
//!
//! **Unknown outcomes.** A write whose acknowledgement timed out may have been
//! stored. Its retry then meets its own write as a conflict; when the leader holds
//! exactly the bytes we wrote, that is our write and its revision is returned. The
//! identifier counter does not do that (two nodes may write the same number): it
//! retries from a fresh read and leaves the possibly reserved range unused.
//!
//! **Deleted keys** leave a tombstone (a purge marker) with a revision of its own;
//! they read as absent, and a create (`expected` 0) writes over the tombstone.
//!
//! The ports are synchronous and may be called from a worker of another runtime,
//! where `block_on` panics. So the store owns a small runtime: each call is spawned
//! there and its caller waits on a channel. Many calls, and the writes of one
//! `save_many`, are in flight at once; that, not a faster round trip, is what gives
//! throughput against replicated, fsynced writes.

use crate::{
    Account, AccountStore, DirectoryStore, DirectoryUser, DocumentStore, Revision, SessionRecord,
    SessionStore, StoreError, Versioned,
};
use async_nats::jetstream::context::{
    GetStreamError, GetStreamErrorKind, KeyValueError, PublishError, PublishErrorKind,
};
use async_nats::jetstream::kv::{self, UpdateError, UpdateErrorKind};
use async_nats::jetstream::stream::{LastRawMessageError, LastRawMessageErrorKind, StorageType};
use async_nats::jetstream::{Context, ContextBuilder, Error as JsError, ErrorCode};
use async_nats::{ConnectErrorKind, ConnectOptions, ServerAddr};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use presence_model::document::DocRecord;
use presence_model::{Timestamp, UserUri};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::{HashMap, HashSet};
use std::fmt::{self, Display};
use std::future::Future;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};
use tokio::runtime::Handle;

const DEFAULT_BUCKET_PREFIX: &str = "presenced";
/// Survives the loss of one node of three.
const DEFAULT_REPLICAS: usize = 3;
/// Bounds every request and acknowledgement. An election answers "no responders"
/// at once rather than timing out, so a short timeout only shortens the wait for a
/// request lost with a dead node.
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
/// An election after a node dies takes 4-10 s; writes wait it out.
const DEFAULT_RETRY_FOR: Duration = Duration::from_secs(10);

const DOCS: &str = "docs";
const ACCOUNTS: &str = "accounts";
const SESSIONS: &str = "sessions";
const DIRECTORY: &str = "directory";
const META: &str = "meta";
/// The buckets' names after `<prefix>_`, for tools that manage them (a benchmark
/// deleting its scratch buckets).
pub const NATS_BUCKETS: [&str; 5] = [DOCS, ACCOUNTS, SESSIONS, DIRECTORY, META];
/// One value per key: nothing reads older revisions.
const HISTORY: i64 = 1;

/// The work is waiting on the network: two threads keep many requests in flight.
const WORKER_THREADS: usize = 2;
const THREAD_NAME: &str = "nats-store";
/// Leader reads in flight at once when a whole bucket is read: enough to hide the
/// round trip without queueing thousands of requests at the leader.
const READS_IN_FLIGHT: usize = 64;
/// Writes in flight at once for one batch (`save_many`, `save_rows`, scans that
/// delete): one replicated fsync then acknowledges many of them.
const WRITES_IN_FLIGHT: usize = 256;

/// Backoff after 10164: the write in flight is applied within about a millisecond,
/// and without a pause writers of a hot key spin (tens of thousands of refusals).
const IN_FLIGHT_BACKOFF_FIRST: Duration = Duration::from_millis(1);
const IN_FLIGHT_BACKOFF_MAX: Duration = Duration::from_millis(50);
/// Backoff after a transient failure: often enough to notice a new leader soon,
/// rarely enough not to flood a cluster that is electing one.
const TRANSIENT_BACKOFF_FIRST: Duration = Duration::from_millis(20);
const TRANSIENT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// The identifier counter's key in the meta bucket; its value is the next free
/// identifier, in decimal.
const IDS_KEY: &str = "ids";
const FIRST_ID: u64 = 1;
/// Identifiers stay below 2^53, exact in JavaScript numbers.
const MAX_ID: u64 = 1 << 53;

/// The header that marks a tombstone in a KV stream, and its values.
const KV_OPERATION: &str = "KV-Operation";
const KV_TOMBSTONES: [&str; 2] = ["DEL", "PURGE"];

/// Where and how to reach the NATS cluster. [`NatsOptions::new`] sets the defaults.
#[derive(Clone)]
pub struct NatsOptions {
    /// Every node's URL, this node's own first: the client tries them in order.
    pub urls: Vec<String>,
    /// Names the connection (`presenced-<node_id>`) in the server's monitoring.
    pub node_id: String,
    /// Buckets are `<prefix>_docs` and so on: `[A-Za-z0-9_-]`.
    pub bucket_prefix: String,
    /// Copies of each bucket; applies only when a bucket is created.
    pub replicas: usize,
    pub request_timeout: Duration,
    /// How long transient failures are retried before [`StoreError::Unavailable`];
    /// also bounds connecting at start-up.
    pub retry_for: Duration,
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    pub credentials_file: Option<PathBuf>,
    /// Extra root certificates (PEM) to trust for the servers.
    pub tls_ca: Option<PathBuf>,
    /// Client certificate and key (PEM), for servers that verify clients.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub require_tls: bool,
}

impl NatsOptions {
    pub fn new(urls: Vec<String>, node_id: impl Into<String>) -> NatsOptions {
        NatsOptions {
            urls,
            node_id: node_id.into(),
            bucket_prefix: DEFAULT_BUCKET_PREFIX.into(),
            replicas: DEFAULT_REPLICAS,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            retry_for: DEFAULT_RETRY_FOR,
            user: None,
            password: None,
            token: None,
            credentials_file: None,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            require_tls: false,
        }
    }

    /// The URLs for messages: credentials embedded in a URL are masked.
    fn shown_urls(&self) -> String {
        let urls: Vec<String> = self.urls.iter().map(|u| mask_userinfo(u)).collect();
        urls.join(", ")
    }

    /// What can be told wrong before connecting.
    fn check(&self) -> Result<(), StoreError> {
        let bad = |why: String| Err(StoreError::Unavailable(format!("NATS options: {why}")));
        if self.urls.is_empty() {
            return bad("no server URL".into());
        }
        if let Some(u) = self.urls.iter().find(|u| u.parse::<ServerAddr>().is_err()) {
            return bad(format!("{} is not a NATS server URL", mask_userinfo(u)));
        }
        let valid = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
        if self.bucket_prefix.is_empty() || !self.bucket_prefix.chars().all(valid) {
            return bad(format!(
                "bucket prefix {:?} must be letters, digits, '_' or '-'",
                self.bucket_prefix
            ));
        }
        if self.replicas == 0 {
            return bad("replicas must be at least 1".into());
        }
        if self.user.is_some() != self.password.is_some() {
            return bad("user and password go together".into());
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return bad("the TLS client certificate and key go together".into());
        }
        Ok(())
    }

    /// A fresh set of client options for one connection attempt (connecting
    /// consumes them).
    async fn client_options(&self) -> Result<ConnectOptions, StoreError> {
        let mut c = ConnectOptions::new()
            .name(format!("presenced-{}", self.node_id))
            .retain_servers_order()
            .connection_timeout(self.request_timeout)
            .request_timeout(Some(self.request_timeout))
            .require_tls(self.require_tls);
        if let (Some(user), Some(password)) = (&self.user, &self.password) {
            c = c.user_and_password(user.clone(), password.clone());
        }
        if let Some(token) = &self.token {
            c = c.token(token.clone());
        }
        if let Some(path) = &self.credentials_file {
            c = c.credentials_file(path).await.map_err(|e| {
                StoreError::Unavailable(format!(
                    "cannot read the NATS credentials file {}: {e}",
                    path.display()
                ))
            })?;
        }
        if let Some(ca) = &self.tls_ca {
            c = c.add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            c = c.add_client_certificate(cert.clone(), key.clone());
        }
        Ok(c)
    }
}

/// Secrets stay out of logs: the password, the token and URL credentials are masked.
impl fmt::Debug for NatsOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let masked = |s: &Option<String>| s.as_ref().map(|_| "***");
        f.debug_struct("NatsOptions")
            .field("urls", &self.shown_urls())
            .field("node_id", &self.node_id)
            .field("bucket_prefix", &self.bucket_prefix)
            .field("replicas", &self.replicas)
            .field("request_timeout", &self.request_timeout)
            .field("retry_for", &self.retry_for)
            .field("user", &self.user)
            .field("password", &masked(&self.password))
            .field("token", &masked(&self.token))
            .field("credentials_file", &self.credentials_file)
            .field("tls_ca", &self.tls_ca)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("require_tls", &self.require_tls)
            .finish()
    }
}

/// `nats://user:secret@host` → `nats://***@host`.
fn mask_userinfo(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) if scheme.is_empty() => format!("***{}", &rest[at..]),
        Some(at) => format!("{scheme}://***{}", &rest[at..]),
        None => url.to_string(),
    }
}

/// The store's own runtime, shut down in the background when dropped: dropping a
/// runtime the ordinary way waits for it, which panics inside another runtime.
struct OwnRuntime(Option<tokio::runtime::Runtime>);

impl Drop for OwnRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

pub struct NatsStore {
    inner: Arc<Inner>,
    handle: Handle,
    _runtime: OwnRuntime,
}

struct Inner {
    client: async_nats::Client,
    docs: kv::Store,
    accounts: kv::Store,
    sessions: kv::Store,
    directory: kv::Store,
    meta: kv::Store,
    retry_for: Duration,
}

/// Runs `work` on the store's runtime and waits for it on the calling thread.
fn run_on<T: Send + 'static>(
    handle: &Handle,
    work: impl Future<Output = Result<T, StoreError>> + Send + 'static,
) -> Result<T, StoreError> {
    let (tx, rx) = mpsc::sync_channel(1);
    handle.spawn(async move {
        let _ = tx.send(work.await);
    });
    rx.recv().unwrap_or_else(|_| {
        Err(StoreError::Unavailable(
            "the NATS store's runtime stopped".into(),
        ))
    })
}

impl NatsStore {
    /// Connects, retrying for `retry_for`, and opens the buckets, creating those
    /// that do not exist yet.
    pub fn open(options: NatsOptions) -> Result<NatsStore, StoreError> {
        options.check()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(WORKER_THREADS)
            .thread_name(THREAD_NAME)
            .enable_all()
            .build()
            .map_err(|e| StoreError::Unavailable(format!("cannot start the NATS runtime: {e}")))?;
        let handle = runtime.handle().clone();
        let runtime = OwnRuntime(Some(runtime));
        let inner = run_on(&handle, connect(options))?;
        Ok(NatsStore {
            inner: Arc::new(inner),
            handle,
            _runtime: runtime,
        })
    }

    /// The store's connection, for the node's other NATS traffic (one connection
    /// per node). It runs on the store's runtime: it works while the store lives.
    pub fn client(&self) -> async_nats::Client {
        self.inner.client.clone()
    }

    /// Runs `work` with the store's state on its runtime; see [`run_on`].
    fn run<T, F>(&self, work: impl FnOnce(Arc<Inner>) -> F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        run_on(&self.handle, work(self.inner.clone()))
    }
}

async fn connect(o: NatsOptions) -> Result<Inner, StoreError> {
    let deadline = Deadline::after(o.retry_for);
    let what = format!("connecting to NATS at {}", o.shown_urls());
    let mut backoff = Backoff::new(deadline);
    let client = loop {
        match o.client_options().await?.connect(o.urls.as_slice()).await {
            Ok(client) => break client,
            // Wrong credentials or certificates do not get better by waiting.
            Err(e)
                if matches!(
                    e.kind(),
                    ConnectErrorKind::Authentication
                        | ConnectErrorKind::AuthorizationViolation
                        | ConnectErrorKind::Tls
                        | ConnectErrorKind::ServerParse
                ) =>
            {
                return Err(StoreError::Unavailable(format!("{what}: {e}")));
            }
            Err(e) => backoff.pause(Pause::Transient, &what, &e).await?,
        }
    };
    let js = ContextBuilder::new()
        .timeout(o.request_timeout)
        .build(client.clone());
    let bucket = |suffix: &str| {
        let name = format!("{}_{suffix}", o.bucket_prefix);
        open_bucket(&js, name, o.replicas, deadline)
    };
    Ok(Inner {
        client,
        docs: bucket(DOCS).await?,
        accounts: bucket(ACCOUNTS).await?,
        sessions: bucket(SESSIONS).await?,
        directory: bucket(DIRECTORY).await?,
        meta: bucket(META).await?,
        retry_for: o.retry_for,
    })
}

/// Opens the bucket, or creates it when the server says it does not exist (and
/// only then: any other failure is retried).
async fn open_bucket(
    js: &Context,
    name: String,
    replicas: usize,
    deadline: Deadline,
) -> Result<kv::Store, StoreError> {
    let what = format!("opening the bucket {name}");
    let mut backoff = Backoff::new(deadline);
    loop {
        let error: async_nats::Error = match js.get_key_value(&name).await {
            Ok(store) => return Ok(store),
            Err(e) if bucket_missing(&e) => {
                let config = kv::Config {
                    bucket: name.clone(),
                    history: HISTORY,
                    storage: StorageType::File,
                    num_replicas: replicas,
                    ..Default::default()
                };
                match js.create_key_value(config).await {
                    Ok(store) => return Ok(store),
                    // Another node may have created it meanwhile: the next round opens it.
                    Err(e) => e.into(),
                }
            }
            Err(e) => e.into(),
        };
        backoff.pause(Pause::Transient, &what, &error).await?;
    }
}

fn bucket_missing(e: &KeyValueError) -> bool {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<GetStreamError>())
        .is_some_and(|g| {
            matches!(g.kind(), GetStreamErrorKind::JetStream(j)
                if j.error_code() == ErrorCode::STREAM_NOT_FOUND)
        })
}

/// When one call gives up: `retry_for` after it started.
#[derive(Clone, Copy)]
struct Deadline {
    at: Instant,
    budget: Duration,
}

impl Deadline {
    fn after(budget: Duration) -> Deadline {
        Deadline {
            at: Instant::now() + budget,
            budget,
        }
    }

    fn remaining(self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }

    fn give_up(self, what: &str, last: &(dyn Display + Sync)) -> StoreError {
        StoreError::Unavailable(format!(
            "{what}: {last} (still failing after {:?})",
            self.budget
        ))
    }
}

enum Pause {
    /// Another write to the same key is being applied, or ours lost a race we
    /// retry: it clears within milliseconds.
    InFlight,
    /// No leader, no connection or no answer: it may take an election.
    Transient,
}

/// Jittered exponential backoff between the attempts of one operation: jitter,
/// so that writers that collided do not collide again in step.
struct Backoff {
    deadline: Deadline,
    in_flight: Duration,
    transient: Duration,
}

impl Backoff {
    fn new(deadline: Deadline) -> Backoff {
        Backoff {
            deadline,
            in_flight: IN_FLIGHT_BACKOFF_FIRST,
            transient: TRANSIENT_BACKOFF_FIRST,
        }
    }

    /// Waits before the next attempt, or gives up once the deadline has passed,
    /// naming what failed and how.
    async fn pause(
        &mut self,
        pause: Pause,
        what: &str,
        error: &(dyn Display + Sync),
    ) -> Result<(), StoreError> {
        let remaining = self.deadline.remaining();
        if remaining.is_zero() {
            return Err(self.deadline.give_up(what, error));
        }
        let (step, max) = match pause {
            Pause::InFlight => (&mut self.in_flight, IN_FLIGHT_BACKOFF_MAX),
            Pause::Transient => (&mut self.transient, TRANSIENT_BACKOFF_MAX),
        };
        // Between half the step and the full step.
        let half = step.as_micros() as u64 / 2;
        let delay = Duration::from_micros(half + rand::random_range(0..=half));
        *step = (*step * 2).min(max);
        tokio::time::sleep(delay.min(remaining)).await;
        Ok(())
    }
}

/// What a failed request means for the next attempt.
enum Failure {
    /// 10071: the revision sent is not the key's.
    Stale,
    /// 10164: another expected-revision write to the key was in flight; ours was
    /// refused, the same revision may be sent again.
    InFlight,
    /// May pass on a later attempt. `maybe_applied`: the server may have carried the
    /// request out (an acknowledgement that never came).
    Transient { maybe_applied: bool },
    /// No retry can help (an invalid key, a value over the size limit).
    Permanent,
}

/// Reads the error chain. async-nats reports 10164 as a generic update error with
/// a misleading text; only the JetStream error inside carries the code.
fn classify(error: &(dyn std::error::Error + 'static)) -> Failure {
    let mut cur = Some(error);
    while let Some(e) = cur {
        if let Some(u) = e.downcast_ref::<UpdateError>() {
            match u.kind() {
                UpdateErrorKind::WrongLastRevision => return Failure::Stale,
                UpdateErrorKind::TimedOut => {
                    return Failure::Transient {
                        maybe_applied: true,
                    };
                }
                UpdateErrorKind::InvalidKey => return Failure::Permanent,
                UpdateErrorKind::Other => {}
            }
        }
        if let Some(p) = e.downcast_ref::<PublishError>() {
            match p.kind() {
                PublishErrorKind::WrongLastSequence => return Failure::Stale,
                // No responders: the message reached no stream, so it is not stored.
                PublishErrorKind::StreamNotFound | PublishErrorKind::MaxAckPending => {
                    return Failure::Transient {
                        maybe_applied: false,
                    };
                }
                PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe => {
                    return Failure::Transient {
                        maybe_applied: true,
                    };
                }
                PublishErrorKind::MaxPayloadExceeded => return Failure::Permanent,
                PublishErrorKind::WrongLastMessageId | PublishErrorKind::Other => {}
            }
        }
        if let Some(j) = e.downcast_ref::<JsError>() {
            return from_code(j.error_code());
        }
        if let Some(r) = e.downcast_ref::<LastRawMessageError>() {
            match r.kind() {
                LastRawMessageErrorKind::JetStream(j) => return from_code(j.error_code()),
                LastRawMessageErrorKind::InvalidSubject => return Failure::Permanent,
                LastRawMessageErrorKind::NoMessageFound | LastRawMessageErrorKind::Other => {}
            }
        }
        cur = e.source();
    }
    Failure::Transient {
        maybe_applied: true,
    }
}

/// A JetStream error is the server's answer, so the request was not carried out.
/// Other codes than the two conflicts (10163, stream not found while a new leader
/// is elected, storage trouble) are retried and end as Unavailable if they last.
fn from_code(code: ErrorCode) -> Failure {
    match code {
        ErrorCode::STREAM_WRONG_LAST_SEQUENCE => Failure::Stale,
        ErrorCode::STREAM_WRONG_LAST_SEQUENCE_CONSTANT => Failure::InFlight,
        _ => Failure::Transient {
            maybe_applied: false,
        },
    }
}

/// What the stream leader holds for a key.
struct Slot {
    /// The last write of the key, a tombstone's too; 0 when there was none.
    revision: Revision,
    /// None when the key is absent or deleted.
    value: Option<Bytes>,
}

impl Slot {
    /// The revision as callers see it: 0 for absent.
    fn current(&self) -> Revision {
        if self.value.is_some() {
            self.revision
        } else {
            0
        }
    }
}

/// A live key with its value, from a scan of a bucket.
struct Live {
    key: String,
    revision: Revision,
    value: Bytes,
}

/// The leader's copy of one key.
async fn read(kv: &kv::Store, key: &str, deadline: Deadline) -> Result<Slot, StoreError> {
    let subject = &format!("{}{key}", kv.prefix);
    let last = unconditional(
        format!("reading from {}", kv.name),
        deadline,
        move || async move {
            match kv.stream.get_last_raw_message_by_subject(subject).await {
                Ok(m) => Ok(Some(m)),
                Err(e) if matches!(e.kind(), LastRawMessageErrorKind::NoMessageFound) => Ok(None),
                Err(e) => Err(e),
            }
        },
    )
    .await?;
    Ok(match last {
        Some(m) => {
            let tombstone = m
                .headers
                .get(KV_OPERATION)
                .is_some_and(|op| KV_TOMBSTONES.contains(&op.as_str()));
            Slot {
                revision: m.sequence,
                value: (!tombstone).then_some(m.payload),
            }
        }
        None => Slot {
            revision: 0,
            value: None,
        },
    })
}

/// Sends a request that names no revision (a read, a put, a purge) until it is
/// answered: a permanent failure ends it at once; any other is retried after a
/// transient pause until the deadline.
async fn unconditional<T, E, F>(
    what: String,
    deadline: Deadline,
    mut request: impl FnMut() -> F,
) -> Result<T, StoreError>
where
    F: Future<Output = Result<T, E>>,
    E: std::error::Error + Sync + 'static,
{
    let mut backoff = Backoff::new(deadline);
    loop {
        let error = match request().await {
            Ok(answer) => return Ok(answer),
            Err(e) => e,
        };
        if let Failure::Permanent = classify(&error) {
            return Err(StoreError::Unavailable(format!("{what}: {error}")));
        }
        backoff.pause(Pause::Transient, &what, &error).await?;
    }
}

/// The attempts of one conditional request (a compare-and-set write or delete),
/// and what each failure means for the next.
struct Attempts {
    what: String,
    backoff: Backoff,
    /// An attempt that failed may have been carried out all the same (its
    /// acknowledgement never came).
    maybe_applied: bool,
}

/// What is left to do after a failed conditional request.
enum Next {
    /// Send it again, with the same revision (the pause is over).
    Retry,
    /// 10071: the revision sent is not the key's; the caller reads the key to
    /// tell a lost race from its own write or from a state that has passed.
    Stale,
}

impl Attempts {
    fn new(what: String, deadline: Deadline) -> Attempts {
        Attempts {
            what,
            backoff: Backoff::new(deadline),
            maybe_applied: false,
        }
    }

    /// Waits before the next attempt, or gives up once the deadline has passed.
    async fn pause(
        &mut self,
        pause: Pause,
        error: &(dyn Display + Sync),
    ) -> Result<(), StoreError> {
        self.backoff.pause(pause, &self.what, error).await
    }

    /// After a failed attempt: 10071 goes back to the caller; 10164 is retried
    /// after a short pause; a transient failure after a longer one, noting whether
    /// the attempt may have been carried out; a permanent failure ends the request.
    async fn failed<E>(&mut self, error: &E) -> Result<Next, StoreError>
    where
        E: std::error::Error + Sync + 'static,
    {
        match classify(error) {
            Failure::Stale => return Ok(Next::Stale),
            Failure::InFlight => self.pause(Pause::InFlight, error).await?,
            Failure::Transient { maybe_applied } => {
                self.maybe_applied |= maybe_applied;
                self.pause(Pause::Transient, error).await?;
            }
            Failure::Permanent => {
                return Err(StoreError::Unavailable(format!("{}: {error}", self.what)));
            }
        }
        Ok(Next::Retry)
    }
}

/// Compare-and-set of one key: stores `value` if the key is at `expected` (0:
/// absent or deleted) and returns the new revision. `idempotent`: after an attempt
/// whose outcome is unknown, the leader holding exactly `value` counts as our write.
async fn write(
    kv: &kv::Store,
    key: &str,
    value: Bytes,
    expected: Revision,
    idempotent: bool,
    deadline: Deadline,
) -> Result<Revision, StoreError> {
    let mut attempts = Attempts::new(format!("writing to {}", kv.name), deadline);
    // What the server is asked to find: `expected`, or the tombstone a create
    // writes over.
    let mut sent = expected;
    loop {
        let error = match kv.update(key, value.clone(), sent).await {
            Ok(revision) => return Ok(revision),
            Err(e) => e,
        };
        if let Next::Retry = attempts.failed(&error).await? {
            continue;
        }
        let slot = read(kv, key, deadline).await?;
        if idempotent && attempts.maybe_applied && slot.value.as_ref() == Some(&value) {
            return Ok(slot.revision);
        }
        let current = slot.current();
        if current != expected {
            return Err(StoreError::Conflict { current });
        }
        // The key is where the caller expected: a tombstone to create over, or a
        // refusal from a state that has passed.
        if slot.revision == sent {
            attempts.pause(Pause::InFlight, &error).await?;
        } else {
            sent = slot.revision;
        }
    }
}

/// Stores `value` whatever the key held.
async fn put(
    kv: &kv::Store,
    key: &str,
    value: Bytes,
    deadline: Deadline,
) -> Result<(), StoreError> {
    let what = format!("writing to {}", kv.name);
    unconditional(what, deadline, move || kv.put(key, value.clone())).await?;
    Ok(())
}

/// Deletes the key whatever it held (idempotent).
async fn purge(kv: &kv::Store, key: &str, deadline: Deadline) -> Result<(), StoreError> {
    let what = format!("deleting from {}", kv.name);
    unconditional(what, deadline, move || kv.purge(key)).await
}

/// Deletes the key if it is still at `revision`; `false` if it changed meanwhile.
async fn purge_at(
    kv: &kv::Store,
    key: &str,
    revision: Revision,
    deadline: Deadline,
) -> Result<bool, StoreError> {
    let mut attempts = Attempts::new(format!("deleting from {}", kv.name), deadline);
    loop {
        let error = match kv.purge_expect_revision(key, Some(revision)).await {
            Ok(()) => return Ok(true),
            Err(e) => e,
        };
        if let Next::Stale = attempts.failed(&error).await? {
            // After an unknown outcome, a key now deleted was most likely ours.
            return Ok(attempts.maybe_applied && read(kv, key, deadline).await?.value.is_none());
        }
    }
}

/// What a read-modify-write does with the key it read.
enum Change<T> {
    /// Answer this without writing.
    Done(T),
    /// Store the value over what was read, then answer this. `idempotent` as in
    /// [`write`].
    Write {
        value: Bytes,
        idempotent: bool,
        answer: T,
    },
    /// Delete what was read, then answer this.
    Delete(T),
}

/// Read-modify-write of one key: `change` sees the leader's copy and says what to
/// do, which is done only if the key is still as read. When another write got in
/// between, it starts again from a fresh read after a short pause, until the
/// deadline.
async fn read_modify_write<T>(
    kv: &kv::Store,
    key: &str,
    deadline: Deadline,
    what: &str,
    mut change: impl FnMut(&Slot) -> Result<Change<T>, StoreError>,
) -> Result<T, StoreError> {
    let mut backoff = Backoff::new(deadline);
    loop {
        let slot = read(kv, key, deadline).await?;
        let done = match change(&slot)? {
            Change::Done(answer) => Some(answer),
            Change::Write {
                value,
                idempotent,
                answer,
            } => match write(kv, key, value, slot.current(), idempotent, deadline).await {
                Ok(_) => Some(answer),
                Err(StoreError::Conflict { .. }) => None,
                Err(e) => return Err(e),
            },
            Change::Delete(answer) => purge_at(kv, key, slot.revision, deadline)
                .await?
                .then_some(answer),
        };
        if let Some(answer) = done {
            return Ok(answer);
        }
        backoff
            .pause(Pause::InFlight, what, &"the key kept changing")
            .await?;
    }
}

/// Deletes the key if it exists; `false` if it did not.
async fn delete_existing(
    kv: &kv::Store,
    key: &str,
    deadline: Deadline,
) -> Result<bool, StoreError> {
    let what = format!("deleting from {}", kv.name);
    read_modify_write(kv, key, deadline, &what, |slot| {
        Ok(match slot.value {
            None => Change::Done(false),
            Some(_) => Change::Delete(true),
        })
    })
    .await
}

/// The live keys of a bucket, as the stream leader delivers them.
async fn keys(kv: &kv::Store, deadline: Deadline) -> Result<Vec<String>, StoreError> {
    let what = format!("listing {}", kv.name);
    let mut backoff = Backoff::new(deadline);
    loop {
        let listing = async {
            let keys = kv.keys().await?;
            Ok::<_, async_nats::Error>(keys.try_collect::<Vec<String>>().await?)
        };
        let error: async_nats::Error =
            match tokio::time::timeout(deadline.remaining(), listing).await {
                Ok(Ok(keys)) => return Ok(keys),
                Ok(Err(e)) => e,
                Err(elapsed) => elapsed.into(),
            };
        backoff.pause(Pause::Transient, &what, &error).await?;
    }
}

/// Every live key of a bucket with its value, each read from the leader.
async fn read_all(kv: &kv::Store, deadline: Deadline) -> Result<Vec<Live>, StoreError> {
    let keys = keys(kv, deadline).await?;
    let slots: Vec<Result<(String, Slot), StoreError>> = futures_util::stream::iter(keys)
        .map(|key| async move {
            let slot = read(kv, &key, deadline).await?;
            Ok((key, slot))
        })
        .buffered(READS_IN_FLIGHT)
        .collect()
        .await;
    let mut live = Vec::with_capacity(slots.len());
    for slot in slots {
        // A key deleted between the listing and its read is gone: skipped.
        if let (
            key,
            Slot {
                revision,
                value: Some(value),
            },
        ) = slot?
        {
            live.push(Live {
                key,
                revision,
                value,
            });
        }
    }
    Ok(live)
}

/// Runs `works` with at most [`WRITES_IN_FLIGHT`] at once; results in order.
async fn all_in_order<T>(
    works: impl IntoIterator<Item = impl Future<Output = Result<T, StoreError>>>,
) -> Vec<Result<T, StoreError>> {
    futures_util::stream::iter(works)
        .buffered(WRITES_IN_FLIGHT)
        .collect()
        .await
}

fn key_of(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The URI a key was made from, for messages about a corrupt record.
fn uri_of_key(key: &str) -> String {
    URL_SAFE_NO_PAD
        .decode(key)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .unwrap_or_else(|| key.to_string())
}

fn encode<T: Serialize>(value: &T, key: impl FnOnce() -> String) -> Result<Bytes, StoreError> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|e| StoreError::Corrupt {
            key: key(),
            reason: format!("cannot encode: {e}"),
        })
}

fn decode<T: DeserializeOwned>(
    value: &[u8],
    key: impl FnOnce() -> String,
) -> Result<T, StoreError> {
    serde_json::from_slice(value).map_err(|e| StoreError::Corrupt {
        key: key(),
        reason: e.to_string(),
    })
}

/// Session keys are token hashes: messages name the bucket, not the key.
fn session_label() -> String {
    "a session".into()
}

impl Inner {
    fn deadline(&self) -> Deadline {
        Deadline::after(self.retry_for)
    }

    async fn load_doc(&self, key: &str) -> Result<Option<Versioned<DocRecord>>, StoreError> {
        let slot = read(&self.docs, key, self.deadline()).await?;
        slot.value
            .map(|v| {
                Ok(Versioned {
                    value: decode(&v, || uri_of_key(key))?,
                    revision: slot.revision,
                })
            })
            .transpose()
    }

    async fn load_all_docs(&self) -> Result<Vec<Versioned<DocRecord>>, StoreError> {
        read_all(&self.docs, self.deadline())
            .await?
            .into_iter()
            .map(|l| {
                Ok(Versioned {
                    value: decode(&l.value, || uri_of_key(&l.key))?,
                    revision: l.revision,
                })
            })
            .collect()
    }

    async fn reserve_ids(&self, count: u64) -> Result<Range<u64>, StoreError> {
        // A conflict: another node reserved meanwhile (or our timed-out write
        // landed, and its range stays unused); reserved again from a fresh read.
        let what = "reserving identifiers";
        read_modify_write(&self.meta, IDS_KEY, self.deadline(), what, |slot| {
            let start = match &slot.value {
                None => FIRST_ID,
                Some(v) => std::str::from_utf8(v)
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
                    .ok_or_else(|| StoreError::Corrupt {
                        key: IDS_KEY.into(),
                        reason: "not a decimal number".into(),
                    })?,
            };
            let end = start
                .checked_add(count)
                .filter(|e| *e < MAX_ID)
                .ok_or_else(|| StoreError::Unavailable("identifiers exhausted".into()))?;
            Ok(Change::Write {
                value: Bytes::from(end.to_string()),
                idempotent: false,
                answer: start..end,
            })
        })
        .await
    }

    async fn update_account(&self, key: String, value: Bytes) -> Result<bool, StoreError> {
        let what = "updating an account";
        read_modify_write(&self.accounts, &key, self.deadline(), what, |slot| {
            Ok(match slot.value {
                None => Change::Done(false),
                Some(_) => Change::Write {
                    value: value.clone(),
                    idempotent: true,
                    answer: true,
                },
            })
        })
        .await
    }

    async fn sessions(&self, deadline: Deadline) -> Result<Vec<(Live, SessionRecord)>, StoreError> {
        read_all(&self.sessions, deadline)
            .await?
            .into_iter()
            .map(|l| {
                let s = decode(&l.value, session_label)?;
                Ok((l, s))
            })
            .collect()
    }

    /// Deletes the sessions `doomed` picks, each only if unchanged since the scan
    /// (a session renewed meanwhile stays); returns how many.
    async fn delete_sessions(
        &self,
        doomed: impl Fn(&SessionRecord) -> bool,
    ) -> Result<usize, StoreError> {
        let deadline = self.deadline();
        // Owned before the deletes start: futures that borrow from a scan held
        // across an await are not provably Send.
        let picked: Vec<(String, Revision)> = self
            .sessions(deadline)
            .await?
            .into_iter()
            .filter(|(_, s)| doomed(s))
            .map(|(l, _)| (l.key, l.revision))
            .collect();
        let bucket = &self.sessions;
        let works = picked.into_iter().map(move |(key, revision)| async move {
            purge_at(bucket, &key, revision, deadline).await
        });
        let mut deleted = 0;
        for result in all_in_order(works).await {
            deleted += usize::from(result?);
        }
        Ok(deleted)
    }

    async fn directory_rows(&self, deadline: Deadline) -> Result<Vec<DirectoryUser>, StoreError> {
        read_all(&self.directory, deadline)
            .await?
            .into_iter()
            .map(|l| decode(&l.value, || uri_of_key(&l.key)))
            .collect()
    }

    async fn save_rows(&self, rows: Vec<(String, Bytes, DirectoryUser)>) -> Result<(), StoreError> {
        let deadline = self.deadline();
        // A row is stored under its URI, so a new row replaces the old one of its
        // URI by itself; a row left under another URI with a key now taken must go.
        let new_uris: HashSet<String> = rows.iter().map(|(_, _, r)| r.uri.to_string()).collect();
        let new_keys: HashMap<String, String> = rows
            .iter()
            .map(|(_, _, r)| (r.key.clone(), r.uri.to_string()))
            .collect();
        let existing = self.directory_rows(deadline).await?;
        let stale: Vec<String> = existing
            .iter()
            .filter(|old| {
                new_keys
                    .get(&old.key)
                    .is_some_and(|uri| uri != old.uri.as_str())
                    && !new_uris.contains(old.uri.as_str())
            })
            .map(|old| key_of(old.uri.as_str().as_bytes()))
            .collect();
        let bucket = &self.directory;
        let deletes = stale
            .into_iter()
            .map(move |key| async move { purge(bucket, &key, deadline).await });
        all_in_order(deletes)
            .await
            .into_iter()
            .collect::<Result<(), _>>()?;
        let puts = rows
            .into_iter()
            .map(move |(key, value, _)| async move { put(bucket, &key, value, deadline).await });
        all_in_order(puts).await.into_iter().collect()
    }
}

fn doc_key(uri: &UserUri) -> String {
    key_of(uri.as_str().as_bytes())
}

impl DocumentStore for NatsStore {
    fn load_all(&self) -> Result<Vec<Versioned<DocRecord>>, StoreError> {
        self.run(|inner| async move { inner.load_all_docs().await })
    }

    fn load(&self, uri: &UserUri) -> Result<Option<Versioned<DocRecord>>, StoreError> {
        let key = doc_key(uri);
        self.run(|inner| async move { inner.load_doc(&key).await })
    }

    fn save(&self, record: &DocRecord, expected: Revision) -> Result<Revision, StoreError> {
        let key = doc_key(&record.uri);
        let value = encode(record, || record.uri.to_string())?;
        self.run(|inner| async move {
            write(&inner.docs, &key, value, expected, true, inner.deadline()).await
        })
    }

    fn save_many(&self, records: &[(DocRecord, Revision)]) -> Vec<Result<Revision, StoreError>> {
        // Encoded here, so the runtime's two threads only talk to the network.
        let jobs: Vec<_> = records
            .iter()
            .map(|(record, expected)| {
                let value = encode(record, || record.uri.to_string());
                (doc_key(&record.uri), value, *expected)
            })
            .collect();
        let count = jobs.len();
        let results = self.run(|inner| async move {
            let deadline = inner.deadline();
            let works = jobs.into_iter().map(|(key, value, expected)| {
                let inner = &inner;
                async move { write(&inner.docs, &key, value?, expected, true, deadline).await }
            });
            Ok(all_in_order(works).await)
        });
        match results {
            Ok(results) => results,
            Err(e) => {
                let reason = e.to_string();
                (0..count)
                    .map(|_| Err(StoreError::Unavailable(reason.clone())))
                    .collect()
            }
        }
    }

    fn delete(&self, uri: &UserUri) -> Result<(), StoreError> {
        let key = doc_key(uri);
        self.run(|inner| async move { purge(&inner.docs, &key, inner.deadline()).await })
    }

    fn reserve_ids(&self, count: u64) -> Result<Range<u64>, StoreError> {
        self.run(|inner| async move { inner.reserve_ids(count).await })
    }
}

impl AccountStore for NatsStore {
    fn insert(&self, account: &Account) -> Result<bool, StoreError> {
        let key = key_of(account.uri.as_str().as_bytes());
        let value = encode(account, || account.uri.to_string())?;
        self.run(|inner| async move {
            match write(&inner.accounts, &key, value, 0, true, inner.deadline()).await {
                Ok(_) => Ok(true),
                Err(StoreError::Conflict { .. }) => Ok(false),
                Err(e) => Err(e),
            }
        })
    }

    fn update(&self, account: &Account) -> Result<bool, StoreError> {
        let key = key_of(account.uri.as_str().as_bytes());
        let value = encode(account, || account.uri.to_string())?;
        self.run(|inner| async move { inner.update_account(key, value).await })
    }

    fn get(&self, uri: &UserUri) -> Result<Option<Account>, StoreError> {
        let key = key_of(uri.as_str().as_bytes());
        self.run(|inner| async move {
            let slot = read(&inner.accounts, &key, inner.deadline()).await?;
            slot.value
                .map(|v| decode(&v, || uri_of_key(&key)))
                .transpose()
        })
    }

    fn list(&self) -> Result<Vec<Account>, StoreError> {
        self.run(|inner| async move {
            let mut accounts = read_all(&inner.accounts, inner.deadline())
                .await?
                .into_iter()
                .map(|l| decode::<Account>(&l.value, || uri_of_key(&l.key)))
                .collect::<Result<Vec<_>, _>>()?;
            accounts.sort_by(|a, b| a.uri.as_str().cmp(b.uri.as_str()));
            Ok(accounts)
        })
    }

    fn delete(&self, uri: &UserUri) -> Result<bool, StoreError> {
        let key = key_of(uri.as_str().as_bytes());
        self.run(
            |inner| async move { delete_existing(&inner.accounts, &key, inner.deadline()).await },
        )
    }
}

impl SessionStore for NatsStore {
    fn insert(&self, token_hash: &[u8], session: &SessionRecord) -> Result<(), StoreError> {
        let key = key_of(token_hash);
        let value = encode(session, session_label)?;
        self.run(|inner| async move { put(&inner.sessions, &key, value, inner.deadline()).await })
    }

    fn get(&self, token_hash: &[u8]) -> Result<Option<SessionRecord>, StoreError> {
        let key = key_of(token_hash);
        self.run(|inner| async move {
            let slot = read(&inner.sessions, &key, inner.deadline()).await?;
            slot.value.map(|v| decode(&v, session_label)).transpose()
        })
    }

    fn delete(&self, token_hash: &[u8]) -> Result<bool, StoreError> {
        let key = key_of(token_hash);
        self.run(
            |inner| async move { delete_existing(&inner.sessions, &key, inner.deadline()).await },
        )
    }

    fn delete_of(&self, uri: &UserUri) -> Result<usize, StoreError> {
        let uri = uri.clone();
        self.run(|inner| async move { inner.delete_sessions(|s| s.uri == uri).await })
    }

    fn delete_expired(&self, now: Timestamp) -> Result<usize, StoreError> {
        self.run(|inner| async move {
            inner
                .delete_sessions(|s| s.expires.millis() <= now.millis())
                .await
        })
    }
}

impl DirectoryStore for NatsStore {
    fn rows(&self) -> Result<Vec<DirectoryUser>, StoreError> {
        self.run(|inner| async move { inner.directory_rows(inner.deadline()).await })
    }

    fn dn(&self, uri: &UserUri) -> Result<Option<String>, StoreError> {
        let key = key_of(uri.as_str().as_bytes());
        self.run(|inner| async move {
            let slot = read(&inner.directory, &key, inner.deadline()).await?;
            let row: Option<DirectoryUser> = slot
                .value
                .map(|v| decode(&v, || uri_of_key(&key)))
                .transpose()?;
            Ok(row.and_then(|r| r.dn))
        })
    }

    fn save_rows(&self, rows: &[DirectoryUser]) -> Result<(), StoreError> {
        let rows = rows
            .iter()
            .map(|r| {
                let value = encode(r, || r.uri.to_string())?;
                Ok((key_of(r.uri.as_str().as_bytes()), value, r.clone()))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        self.run(|inner| async move { inner.save_rows(rows).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_urls_are_masked() {
        assert_eq!(
            mask_userinfo("nats://u:secret@h:4222/x"),
            "nats://***@h:4222/x"
        );
        assert_eq!(mask_userinfo("tok@h:4222"), "***@h:4222");
        assert_eq!(mask_userinfo("nats://h:4222"), "nats://h:4222");
        let mut o = NatsOptions::new(vec!["nats://u:pw1@h".into()], "n1");
        o.password = Some("pw2".into());
        o.token = Some("tk3".into());
        let shown = format!("{o:?}");
        assert!(!shown.contains("pw1") && !shown.contains("pw2") && !shown.contains("tk3"));
    }

    #[test]
    fn options_are_checked_before_connecting() {
        let o = |f: fn(&mut NatsOptions)| {
            let mut o = NatsOptions::new(vec!["nats://127.0.0.1:4222".into()], "n1");
            f(&mut o);
            o.check()
        };
        assert!(o(|_| {}).is_ok());
        assert!(o(|o| o.urls.clear()).is_err());
        assert!(o(|o| o.bucket_prefix = "a.b".into()).is_err());
        assert!(o(|o| o.user = Some("u".into())).is_err());
        assert!(o(|o| o.tls_key = Some("k.pem".into())).is_err());
        assert!(o(|o| o.urls = vec!["http://h".into()]).is_err());
    }
}
