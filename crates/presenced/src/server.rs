//! `presenced serve`: opens the store, builds the engine and the API, listens, prints
//! the ready line and shuts down gracefully on SIGTERM or Ctrl-C.

use crate::cluster::Cluster;
use crate::config::Config;
use crate::config::{Listen, PasswordSource};
use crate::demo;
use crate::directory_sync::{self, SyncTarget};
use crate::startup;
use accounts::Accounts;
use anyhow::{Context, Result};
use http_api::{AppState, PasswordCheck};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Syncs the directory now and then every `interval`. A failed sync (directory
/// unreachable, bad credentials) changes nothing and is tried again at the next tick.
/// In a cluster only the node holding the sync lease syncs.
async fn periodic_sync(
    target: SyncTarget,
    source: directory::Source,
    interval: Duration,
    cluster: Option<Arc<Cluster>>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Some(c) = &cluster
            && !c.lead_sync().await
        {
            // Another node syncs; this one takes the result for its search index.
            let (stores, index) = (target.stores.clone(), target.index.clone());
            match tokio::task::spawn_blocking(move || directory_sync::load_index(&stores, &index))
                .await
            {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = format!("{e:#}"), "cannot reload the search index")
                }
                Err(e) => tracing::warn!(error = %e, "cannot reload the search index"),
            }
            continue;
        }
        match directory_sync::run(&target, &source, false).await {
            Ok(summary) => {
                for e in &summary.errors {
                    tracing::warn!(error = %e, "directory entry skipped");
                }
                tracing::info!(%summary, "directory sync");
            }
            Err(e) => tracing::error!(
                error = format!("{e:#}"),
                "directory sync failed; nothing changed, will retry"
            ),
        }
    }
}

/// How often expired API sessions are deleted from the store.
const SESSION_PRUNE_INTERVAL: Duration = Duration::from_secs(3600);

async fn prune_sessions(accounts: Arc<Accounts>) {
    let mut tick = tokio::time::interval(SESSION_PRUNE_INTERVAL);
    loop {
        tick.tick().await;
        let a = accounts.clone();
        match tokio::task::spawn_blocking(move || a.prune_tokens()).await {
            Ok(Ok(n)) if n > 0 => tracing::info!(expired = n, "removed expired API sessions"),
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot prune API sessions"),
            _ => {}
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Raises the soft limit on open descriptors to the hard limit: every connection
/// costs one, and the soft limit a server is started with is often 1,024. Returns
/// (soft before, soft now, hard).
pub fn raise_descriptor_limit() -> std::io::Result<(u64, u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read or write the struct passed.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let before = limit.rlim_cur;
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok((before, limit.rlim_cur, limit.rlim_max))
}

pub async fn serve(config: Config, demo_mode: bool) -> Result<()> {
    match raise_descriptor_limit() {
        Ok((before, now, hard)) => {
            tracing::info!(
                soft_before = before,
                soft = now,
                hard,
                "open descriptor limit"
            )
        }
        Err(e) => tracing::warn!(error = %e, "cannot raise the open descriptor limit"),
    }
    if demo_mode {
        anyhow::ensure!(
            config.server.http.ip().is_loopback(),
            "--demo seeds users with a known password and only listens on loopback addresses"
        );
    }
    let _lock = startup::lock_data_dir(&config.server.data_dir)?;
    let services = startup::open(&config)?;
    let cluster = match (&config.cluster, &services.nats) {
        (Some(c), Some(nats)) => {
            let joined = Cluster::join(c, nats.client(), services.engine.clone()).await?;
            tracing::info!(node = %c.node_id, "joined the cluster");
            Some(joined)
        }
        _ => None,
    };
    let passwords = match config.auth.password_source {
        PasswordSource::Local => PasswordCheck::Local,
        PasswordSource::Ldap => {
            let ldap = config
                .directory
                .as_ref()
                .and_then(|d| d.ldap.clone())
                .context("no [directory.ldap]")?;
            PasswordCheck::Ldap(Arc::new(directory::ldap::LdapSource::new(ldap)?))
        }
    };
    let directory_task = match &config.directory {
        Some(d) => {
            let source = directory::Source::from_config(d)?;
            let target = SyncTarget {
                engine: services.engine.clone(),
                accounts: services.accounts.clone(),
                stores: services.stores.clone(),
                index: services.directory.clone(),
            };
            Some(tokio::spawn(periodic_sync(
                target,
                source,
                Duration::from_secs(d.sync_interval),
                cluster.clone(),
            )))
        }
        None => None,
    };
    if demo_mode {
        let (engine, accounts) = (services.engine.clone(), services.accounts.clone());
        tokio::task::spawn_blocking(move || demo::seed(&engine, &accounts)).await??;
    }
    let timers = tokio::spawn(services.engine.clone().run_timers());
    let pruner = tokio::spawn(prune_sessions(services.accounts.clone()));
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let state = AppState {
        engine: services.engine.clone(),
        accounts: services.accounts.clone(),
        token_ttl: Duration::from_secs(config.auth.token_ttl_secs),
        passwords,
        directory: services.directory.clone(),
        limits: config.api_limits(),
        shutdown: shutdown_rx.clone(),
    };
    let listener = tokio::net::TcpListener::bind(config.server.http)
        .await
        .with_context(|| format!("binding HTTP to {}", config.server.http))?;
    let http_addr = listener.local_addr()?;
    let mut ready = format!("presenced ready http={http_addr}");
    let sip_ctx = sip_server::SipContext::new(
        services.engine.clone(),
        services.accounts.clone(),
        services.directory.clone(),
        sip_server::SipConfig {
            allow_unauthenticated: config.server.sip_allow_unauthenticated,
            register_expires: config.server.sip_register_expires,
            subscribe_expires: config.server.sip_subscribe_expires,
            keep_alive: Duration::from_secs(config.server.sip_keep_alive_secs),
            register_deadline: Duration::from_secs(config.server.sip_register_deadline_secs),
            ..Default::default()
        },
    );
    if config.server.sip_allow_unauthenticated {
        tracing::warn!("SIP accepts REGISTER without authentication (--sip-allow-unauthenticated)");
    }
    let mut sip_tasks = Vec::new();
    if let Listen::On(addr) = config.server.sip {
        let sip = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding SIP to {addr}"))?;
        ready.push_str(&format!(" sip={}", sip.local_addr()?));
        sip_tasks.push(tokio::spawn(sip_server::serve(
            sip,
            None,
            sip_ctx.clone(),
            shutdown_rx.clone(),
        )));
    }
    if let Listen::On(addr) = config.server.sip_tls {
        let (cert, key) = config
            .server
            .tls_cert
            .as_deref()
            .zip(config.server.tls_key.as_deref())
            .context("SIP over TLS needs --tls-cert and --tls-key")?;
        let acceptor =
            sip_server::tls_acceptor(cert, key).map_err(|e| anyhow::anyhow!("TLS: {e}"))?;
        let sip = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding SIP over TLS to {addr}"))?;
        ready.push_str(&format!(" sip-tls={}", sip.local_addr()?));
        sip_tasks.push(tokio::spawn(sip_server::serve(
            sip,
            Some(acceptor),
            sip_ctx,
            shutdown_rx.clone(),
        )));
    }
    tracing::info!(%http_addr, data_dir = %config.server.data_dir.display(), "presenced listening");
    println!("{ready}");

    let app = http_api::router(state);
    let grace = Duration::from_secs(config.server.shutdown_grace_secs);
    let timeouts = crate::http_serve::HttpTimeouts {
        header: Duration::from_secs(config.server.http_header_timeout_secs),
        idle: Duration::from_secs(config.server.http_idle_timeout_secs),
    };
    let server = crate::http_serve::serve(listener, app, timeouts, shutdown_rx.clone());
    let signal = tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        let _ = shutdown_tx.send(true);
    });
    let mut stopping = shutdown_rx.clone();
    tokio::select! {
        _ = server => {}
        _ = async {
            // Give connections the grace period once the signal has come.
            let _ = stopping.wait_for(|stop| *stop).await;
            tokio::time::sleep(grace).await;
        } => tracing::warn!("grace period over; closing remaining connections"),
    }
    signal.abort();
    timers.abort();
    pruner.abort();
    for t in sip_tasks {
        t.abort();
    }
    if let Some(t) = directory_task {
        t.abort();
    }
    Ok(())
}
