//! Start-up shared by `serve` and the one-shot commands (`user ...`,
//! `directory ...`): the data directory's lock, the store the configuration names,
//! the accounts, and the engine with its directory search index.

use crate::config::{Config, StoreKind};
use accounts::Accounts;
use anyhow::{Context, Result};
use presence_engine::{Engine, EngineError};
use presence_model::BuiltinAggregator;
use presence_store::{NatsStore, Stores};
use std::path::Path;
use std::sync::Arc;

/// Name of the lock file a server (or a one-shot directory sync) holds in the data
/// directory, so two processes never run engines on the same data.
pub const LOCK_FILE: &str = "presenced.lock";

/// The store, accounts, engine and directory search index of one deployment.
pub struct Services {
    pub engine: Engine,
    pub accounts: Arc<Accounts>,
    pub stores: Stores,
    /// The cluster's store connection (cluster mode only).
    pub nats: Option<Arc<NatsStore>>,
    pub directory: Arc<directory::DirectoryIndex>,
}

/// Takes the data directory's lock; fails at once if another process holds it.
pub fn lock_data_dir(dir: &Path) -> Result<std::fs::File> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(LOCK_FILE))
        .with_context(|| format!("opening the lock file in {}", dir.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "another presenced process (a running server?) is using {}",
            dir.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => Err(e).context("locking the data directory"),
    }
}

/// The store the configuration names: SQLite in the data directory, or the NATS
/// store shared by a cluster (then also its connection, for the cluster layer).
pub fn open_stores(config: &Config) -> Result<(Stores, Option<Arc<NatsStore>>)> {
    match (&config.store.kind, &config.cluster) {
        (StoreKind::Nats, Some(cluster)) => {
            let nats = Arc::new(
                NatsStore::open(Config::nats_options(cluster)).with_context(|| {
                    format!("opening the NATS store of node {}", cluster.node_id)
                })?,
            );
            Ok((Stores::from_one(nats.clone()), Some(nats)))
        }
        _ => {
            let dir = &config.server.data_dir;
            let stores = Stores::sqlite(dir)
                .with_context(|| format!("opening the store in {}", dir.display()))?;
            Ok((stores, None))
        }
    }
}

/// The store and the accounts on it (what the `user` commands need).
pub fn open_accounts(config: &Config) -> Result<(Stores, Option<Arc<NatsStore>>, Arc<Accounts>)> {
    let (stores, nats) = open_stores(config)?;
    let accounts = Arc::new(Accounts::open(stores.clone(), &config.server.data_dir)?);
    Ok((stores, nats, accounts))
}

/// Deletes presence documents whose account is gone (a user removed while a server
/// still held them in memory, or a removal cut short); returns how many.
fn delete_orphans(stores: &Stores) -> Result<usize> {
    let mut removed = 0;
    for doc in stores.documents.load_all()? {
        if stores.accounts.get(&doc.value.uri)?.is_none() {
            stores.documents.delete(&doc.value.uri)?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Everything a server (or a one-shot sync) runs on.
pub fn open(config: &Config) -> Result<Services> {
    let (stores, nats, accounts) = open_accounts(config)?;
    // A cluster reads documents lazily; scanning them all at every node's start
    // would cost as much as the deployment is large.
    if nats.is_none() {
        let orphans = delete_orphans(&stores)?;
        if orphans > 0 {
            tracing::info!(orphans, "removed presence data of deleted users");
        }
    }
    let engine = Engine::new(
        stores.clone(),
        Arc::new(BuiltinAggregator),
        config.engine_config(),
    )
    .map_err(|e: EngineError| anyhow::anyhow!(e))
    .context("loading presence data")?;
    let directory = Arc::new(directory::DirectoryIndex::with_query_budget(
        config.limits.directory_query_burst,
        config.limits.directory_queries_per_second,
    ));
    let loaded = crate::directory_sync::load_index(&stores, &directory)?;
    if loaded > 0 {
        tracing::info!(users = loaded, "directory search index loaded");
    }
    Ok(Services {
        engine,
        accounts,
        stores,
        nats,
        directory,
    })
}
