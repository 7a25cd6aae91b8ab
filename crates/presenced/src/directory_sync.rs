//! Directory sync: brings accounts and server-written presence data in line with the
//! directory. Incremental and idempotent: an entry whose digest did not change since
//! the last sync is not touched (so a second run changes nothing and notifies nobody);
//! a changed entry rewrites only the cards that changed; an entry that is disabled or
//! gone disables the user (sessions end, connections close) and keeps their static
//! data for re-enabling.

use accounts::Accounts;
use anyhow::{Context, Result};
use directory::{DirectoryEntry, DirectoryIndex, Source};
use presence_engine::{DirectoryUpdate, Engine};
use presence_store::{DirectoryUser, Stores};
use std::collections::{HashMap, HashSet};
use std::io::{IsTerminal, Write};
use std::sync::Arc;

/// Users applied per engine batch (one store transaction each).
pub const SYNC_BATCH: usize = 500;

/// What one sync did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub added: usize,
    pub updated: usize,
    pub disabled: usize,
    pub unchanged: usize,
    pub errors: Vec<String>,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "added {}, updated {}, disabled {}, unchanged {}, errors {}",
            self.added,
            self.updated,
            self.disabled,
            self.unchanged,
            self.errors.len()
        )
    }
}

/// Everything a sync works on.
#[derive(Clone)]
pub struct SyncTarget {
    pub engine: Engine,
    pub accounts: Arc<Accounts>,
    pub stores: Stores,
    /// The search index, rebuilt from the store after a sync that changed anything.
    pub index: Arc<DirectoryIndex>,
}

/// Fills `index` with the directory users the store knows (the entries as last
/// synced; only enabled ones are found); returns how many are searchable.
pub fn load_index(stores: &Stores, index: &DirectoryIndex) -> Result<usize> {
    let rows = stores.directory.rows()?;
    index.replace(
        rows.iter()
            .filter(|r| r.enabled)
            .filter_map(|r| serde_json::from_str::<DirectoryEntry>(&r.fingerprint).ok()),
    );
    Ok(index.len())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Added,
    Updated,
    Disabled,
}

fn update_of(e: &DirectoryEntry) -> DirectoryUpdate {
    DirectoryUpdate {
        uri: e.uri.clone(),
        display_name: e.display_name.clone(),
        email: e.identity_email().to_string(),
        details: e.details_card(),
        properties: e.user_properties(),
        enabled: e.enabled,
    }
}

fn progress(done: usize, total: usize) {
    const WIDTH: usize = 30;
    let filled = WIDTH * done / total.max(1);
    let mut err = std::io::stderr();
    let _ = write!(
        err,
        "\r[{}{}] {done}/{total}",
        "#".repeat(filled),
        " ".repeat(WIDTH - filled)
    );
    if done == total {
        let _ = writeln!(err);
    }
    let _ = err.flush();
}

/// Runs one sync. A failed fetch changes nothing; a failed batch leaves the users of
/// that batch to the next sync.
pub async fn run(target: &SyncTarget, source: &Source, show_progress: bool) -> Result<Summary> {
    let fetched = source.fetch().await.context("reading the directory")?;
    let directory = target.stores.directory.clone();
    let known = tokio::task::spawn_blocking(move || directory.rows()).await??;
    let by_key: HashMap<&str, &DirectoryUser> = known.iter().map(|r| (r.key.as_str(), r)).collect();
    let by_uri: HashMap<&presence_model::UserUri, &DirectoryUser> =
        known.iter().map(|r| (&r.uri, r)).collect();

    let mut summary = Summary {
        errors: fetched.errors,
        ..Default::default()
    };
    if fetched.entries.is_empty() && known.iter().any(|r| r.enabled) {
        anyhow::bail!(
            "the directory returned no users; refusing to disable all {} known users (check base_dn and filter)",
            known.iter().filter(|r| r.enabled).count()
        );
    }
    let mut seen_keys = HashSet::new();
    let mut seen_uris = HashSet::new();
    let mut work: Vec<(Kind, DirectoryEntry)> = Vec::new();
    for entry in fetched.entries {
        if !seen_uris.insert(entry.uri.clone()) {
            summary.errors.push(format!(
                "{}: listed twice; the second entry is ignored",
                entry.uri
            ));
            continue;
        }
        seen_keys.insert(entry.key.clone());
        let previous = by_key
            .get(entry.key.as_str())
            .or_else(|| by_uri.get(&entry.uri));
        // Same directory entry, new SIP address: the old address is disabled.
        if let Some(p) = previous.filter(|p| p.key == entry.key && p.uri != entry.uri && p.enabled)
            && let Ok(mut old) = serde_json::from_str::<DirectoryEntry>(&p.fingerprint)
        {
            old.enabled = false;
            work.push((Kind::Disabled, old));
        }
        match previous {
            None => work.push((Kind::Added, entry)),
            Some(p) if p.fingerprint == entry.fingerprint() && p.key == entry.key => {
                summary.unchanged += 1
            }
            Some(p) if p.enabled && !entry.enabled => work.push((Kind::Disabled, entry)),
            Some(_) => work.push((Kind::Updated, entry)),
        }
    }
    // Users the directory no longer lists are disabled, with the data last seen.
    for row in known
        .iter()
        .filter(|r| r.enabled && !seen_keys.contains(&r.key) && !seen_uris.contains(&r.uri))
    {
        match serde_json::from_str::<DirectoryEntry>(&row.fingerprint) {
            Ok(mut last) => {
                last.enabled = false;
                work.push((Kind::Disabled, last));
            }
            Err(e) => summary
                .errors
                .push(format!("{}: unreadable sync record: {e}", row.uri)),
        }
    }

    let total = work.len();
    let show_progress = show_progress && std::io::stderr().is_terminal() && total > 0;
    let mut done = 0;
    for batch in work.chunks(SYNC_BATCH) {
        let target = target.clone();
        let batch = batch.to_vec();
        let applied = tokio::task::spawn_blocking(move || -> Result<Vec<Kind>> {
            let users: Vec<_> = batch
                .iter()
                .map(|(_, e)| (e.uri.clone(), e.display_name.clone(), e.enabled))
                .collect();
            target.accounts.ensure_directory_users(&users)?;
            let updates: Vec<DirectoryUpdate> = batch.iter().map(|(_, e)| update_of(e)).collect();
            target.engine.apply_directory(&updates)?;
            let rows: Vec<DirectoryUser> = batch
                .iter()
                .map(|(_, e)| DirectoryUser {
                    key: e.key.clone(),
                    uri: e.uri.clone(),
                    dn: e.dn.clone(),
                    fingerprint: e.fingerprint(),
                    enabled: e.enabled,
                })
                .collect();
            target.stores.directory.save_rows(&rows)?;
            Ok(batch.iter().map(|(k, _)| *k).collect())
        })
        .await?;
        match applied {
            Ok(kinds) => {
                for k in kinds {
                    match k {
                        Kind::Added => summary.added += 1,
                        Kind::Updated => summary.updated += 1,
                        Kind::Disabled => summary.disabled += 1,
                    }
                }
            }
            Err(e) => summary.errors.push(format!(
                "a batch of {} users was not applied: {e:#}",
                SYNC_BATCH.min(total - done)
            )),
        }
        done = (done + SYNC_BATCH).min(total);
        if show_progress {
            progress(done, total);
        }
    }
    if total > 0 || target.index.is_empty() {
        let (stores, index) = (target.stores.clone(), target.index.clone());
        tokio::task::spawn_blocking(move || load_index(&stores, &index)).await??;
    }
    Ok(summary)
}

/// `presenced directory import|sync`: one sync in this process, refused while a server
/// holds the data directory (a running server syncs by itself).
pub async fn one_shot(config: &crate::config::Config, source: Source) -> Result<Summary> {
    let _lock = crate::startup::lock_data_dir(&config.server.data_dir)
        .context("a running server syncs the directory itself ([directory] sync_interval)")?;
    let services = crate::startup::open(config)?;
    let target = SyncTarget {
        engine: services.engine,
        accounts: services.accounts,
        stores: services.stores,
        index: services.directory,
    };
    run(&target, &source, true).await
}
