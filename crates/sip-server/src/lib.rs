//! The SIP front end: MS-SIP / MS-PRES over TCP, for enhanced-presence clients such as
//! Pidgin's SIPE plugin and Office Communicator.
//!
//! Each TCP connection is one client. Its REGISTER makes it an endpoint of the user in
//! the engine; its subscriptions (roaming-contacts, roaming-self, batched presence) are
//! dialogs on that connection, and every notification for it is sent on the same
//! connection as a BENOTIFY, which the client does not answer. Requests are translated
//! to the same engine calls as the HTTP API, so SIP and WebSocket watchers of one
//! presentity see the same thing. Closing the connection signs the endpoint out.

pub mod auth;
mod bodies;
mod connection;
mod dialogs;
mod errors;
mod handshake;
mod notify;
pub mod ntlm;
mod register;
mod reply;
mod rlmi;
mod service;
mod soap;
mod subscribe;
#[cfg(test)]
mod testing;

pub use connection::Transport;
pub use subscribe::MIN_EXPIRES;

use accounts::Accounts;
use presence_engine::Engine;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

/// How long a client may take to complete the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings of the SIP front end.
#[derive(Debug, Clone)]
pub struct SipConfig {
    /// Accept REGISTER without authentication. Only for tests and closed labs: any
    /// client may then claim to be any user.
    pub allow_unauthenticated: bool,
    /// Parser limits (header bytes, header count, body bytes).
    pub limits: sip_proto::Limits,
    /// Registration lifetime granted, in seconds (clients refresh before it ends).
    pub register_expires: u32,
    /// Subscription lifetime granted, in seconds.
    pub subscribe_expires: u32,
    /// Most simultaneous connections.
    pub max_connections: usize,
    /// Keep-alive interval asked of clients (`ms-keep-alive ... timeout=`); a
    /// connection silent for twice this long is closed.
    pub keep_alive: Duration,
    /// How long a connection may stay unregistered (unauthenticated).
    pub register_deadline: Duration,
    /// The server's name in NTLM exchanges (`targetname`).
    pub target_name: String,
}

impl Default for SipConfig {
    fn default() -> Self {
        SipConfig {
            allow_unauthenticated: false,
            limits: sip_proto::Limits::default(),
            register_expires: 3600,
            subscribe_expires: 3600,
            max_connections: 10_000,
            keep_alive: Duration::from_secs(300),
            register_deadline: Duration::from_secs(30),
            target_name: "presenced".into(),
        }
    }
}

/// What every connection needs.
#[derive(Clone)]
pub struct SipContext {
    pub engine: Engine,
    pub accounts: Arc<Accounts>,
    /// The directory search index (SOAP `directorySearch`).
    pub directory: Arc<directory::DirectoryIndex>,
    pub config: Arc<SipConfig>,
}

impl SipContext {
    pub fn new(
        engine: Engine,
        accounts: Arc<Accounts>,
        directory: Arc<directory::DirectoryIndex>,
        config: SipConfig,
    ) -> Self {
        SipContext {
            engine,
            accounts,
            directory,
            config: Arc::new(config),
        }
    }
}

/// Reads a PEM certificate chain and private key into a TLS server configuration.
pub fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<tokio_rustls::TlsAcceptor, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| e.to_string())?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Accepts connections until `shutdown` turns true; with `tls`, each connection is
/// a TLS session first.
pub async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    ctx: SipContext,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(ctx.config.max_connections));
    let transport = if tls.is_some() {
        connection::Transport::Tls
    } else {
        connection::Transport::Tcp
    };
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.expect("never closed"),
            _ = shutdown.changed() => return,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "SIP accept failed");
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let _ = stream.set_nodelay(true);
        // The connection's own address: the one the client reached, even when the
        // listener is bound to a wildcard address.
        let Ok(addr) = stream.local_addr() else {
            continue;
        };
        let local = connection::Local { addr, transport };
        let ctx = ctx.clone();
        let shutdown = shutdown.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => connection::run(ctx, stream, peer, local, shutdown).await,
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await;
                    match handshake {
                        Ok(Ok(s)) => connection::run(ctx, s, peer, local, shutdown).await,
                        Ok(Err(e)) => tracing::info!(%peer, error = %e, "SIP TLS handshake failed"),
                        Err(_) => tracing::info!(%peer, "SIP TLS handshake timed out"),
                    }
                }
            }
            drop(permit);
        });
    }
}
