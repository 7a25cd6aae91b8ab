//! Configuration: one TOML file (unknown keys are errors that name the key),
//! overridden by `PRESENCED_*` environment variables, overridden by flags.

use anyhow::{Context, Result};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub const DEFAULT_HTTP: &str = "127.0.0.1:8080";
pub const DEFAULT_DATA_DIR: &str = "./presenced-data";
pub const DEFAULT_SIP: &str = "127.0.0.1:5060";

/// A listen address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listen {
    On(SocketAddr),
    Off,
}

impl std::str::FromStr for Listen {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("off") {
            return Ok(Listen::Off);
        }
        s.parse()
            .map(Listen::On)
            .map_err(|e| format!("{s:?}: {e} (an IP:PORT or \"off\")"))
    }
}

impl<'de> Deserialize<'de> for Listen {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub limits: LimitsConfig,
    pub auth: AuthConfig,
    pub federation: FederationConfig,
    /// Users from LDAP / Active Directory or a file; absent: local accounts only.
    pub directory: Option<directory::DirectoryConfig>,
    pub store: StoreConfig,
    /// Cluster mode: required when `store.kind = "nats"`.
    pub cluster: Option<ClusterConfig>,
}

/// Where durable data lives.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    pub kind: StoreKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// One SQLite file in the data directory: one server.
    #[default]
    Sqlite,
    /// NATS JetStream key-value buckets shared by a cluster of servers.
    Nats,
}

/// Shortest node lease a configuration may set, in seconds.
pub const MIN_LEASE_SECS: u64 = 3;

/// One node of a cluster on NATS JetStream (docs/cluster.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// This node's name, unique in the cluster and stable across its restarts.
    pub node_id: String,
    /// The NATS servers (`nats://` or `tls://` URLs); the local one first.
    pub nats_urls: Vec<String>,
    /// Prefix of the KV bucket names.
    #[serde(default = "default_prefix")]
    pub bucket_prefix: String,
    /// Prefix of the core NATS subjects the nodes tell each other changes on.
    #[serde(default = "default_prefix")]
    pub subject_prefix: String,
    /// Replicas of each bucket (3 for a 3-server NATS cluster).
    #[serde(default = "default_replicas")]
    pub replicas: usize,
    /// Seconds after its last renewal a silent node counts as dead and the
    /// survivors remove its endpoints.
    #[serde(default = "default_lease_secs")]
    pub lease_secs: u64,
    /// NATS authentication: user and password, a token, or a credentials file.
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    pub credentials_file: Option<PathBuf>,
    /// TLS to NATS: a CA to trust, and a client certificate and key if the servers
    /// ask for one.
    pub tls_ca: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    #[serde(default)]
    pub require_tls: bool,
}

fn default_prefix() -> String {
    "presenced".into()
}

fn default_replicas() -> usize {
    3
}

/// Long enough to outlast a NATS stream leader election (4 to 10 s) with renewals
/// every third of it.
fn default_lease_secs() -> u64 {
    30
}

/// Longest connection deadline a configuration may set, in seconds (a day).
pub const MAX_SIP_DEADLINE_SECS: u64 = 86_400;

impl ClusterConfig {
    fn validate(&self) -> Result<()> {
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 64
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        anyhow::ensure!(
            name_ok(&self.node_id),
            "cluster.node_id must be 1 to 64 letters, digits, '-' or '_'"
        );
        anyhow::ensure!(
            name_ok(&self.bucket_prefix) && name_ok(&self.subject_prefix),
            "cluster.bucket_prefix and cluster.subject_prefix must be 1 to 64 letters, \
             digits, '-' or '_'"
        );
        anyhow::ensure!(
            !self.nats_urls.is_empty()
                && self.nats_urls.iter().all(|u| {
                    ["nats://", "tls://"]
                        .iter()
                        .any(|p| u.to_ascii_lowercase().starts_with(p))
                }),
            "cluster.nats_urls must list at least one nats:// or tls:// URL"
        );
        anyhow::ensure!(
            (1..=5).contains(&self.replicas),
            "cluster.replicas must be 1 to 5"
        );
        anyhow::ensure!(
            (MIN_LEASE_SECS..=MAX_SIP_DEADLINE_SECS).contains(&self.lease_secs),
            "cluster.lease_secs must be {MIN_LEASE_SECS} to {MAX_SIP_DEADLINE_SECS}"
        );
        anyhow::ensure!(
            self.tls_cert.is_some() == self.tls_key.is_some(),
            "cluster.tls_cert and cluster.tls_key go together"
        );
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// HTTP listen address (port 0 picks a free port).
    pub http: SocketAddr,
    /// SIP over TCP listen address; `"off"` disables SIP.
    pub sip: Listen,
    /// Accept SIP REGISTER without authentication (tests and closed labs only).
    pub sip_allow_unauthenticated: bool,
    /// SIP over TLS listen address; `"off"` (the default) disables it.
    pub sip_tls: Listen,
    /// Longest SIP registration granted, in seconds (also the default).
    pub sip_register_expires: u32,
    /// Longest SIP subscription granted, in seconds (also the default); shorter
    /// requests down to 60 s are honoured.
    pub sip_subscribe_expires: u32,
    /// Keep-alive interval asked of SIP clients, in seconds; a connection silent for
    /// twice this long is closed.
    pub sip_keep_alive_secs: u64,
    /// Seconds a SIP connection may stay unregistered before it is closed.
    pub sip_register_deadline_secs: u64,
    /// PEM certificate chain for SIP over TLS.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for SIP over TLS.
    pub tls_key: Option<PathBuf>,
    pub data_dir: PathBuf,
    /// Seconds open connections get to finish after SIGTERM.
    pub shutdown_grace_secs: u64,
    /// Seconds an HTTP client has to send a request's headers.
    pub http_header_timeout_secs: u64,
    /// Seconds an HTTP connection may stay without a byte read or written before it
    /// is closed (open WebSockets are pinged more often than this).
    pub http_idle_timeout_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub max_body_bytes: usize,
    pub max_ws_message_bytes: usize,
    pub ws_auth_timeout_secs: u64,
    pub ws_token_recheck_secs: u64,
    pub max_pending_per_subscriber: usize,
    pub max_targets_per_subscription: usize,
    pub max_subscriptions_per_endpoint: usize,
    /// Directory searches one user may make at once, and more per second after that.
    pub directory_query_burst: f64,
    pub directory_queries_per_second: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Lifetime of an API bearer token, in seconds.
    pub token_ttl_secs: u64,
    /// Where sign-in passwords are checked.
    pub password_source: PasswordSource,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PasswordSource {
    /// The local argon2id hashes (`presenced user add/passwd`).
    #[default]
    Local,
    /// A bind to the LDAP directory as the user.
    Ldap,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FederationConfig {
    pub federated_domains: Vec<String>,
    pub public_cloud_domains: Vec<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            http: DEFAULT_HTTP.parse().expect("valid default"),
            sip: Listen::On(DEFAULT_SIP.parse().expect("valid default")),
            sip_allow_unauthenticated: false,
            sip_tls: Listen::Off,
            sip_register_expires: sip_server::SipConfig::default().register_expires,
            sip_subscribe_expires: sip_server::SipConfig::default().subscribe_expires,
            sip_keep_alive_secs: sip_server::SipConfig::default().keep_alive.as_secs(),
            sip_register_deadline_secs: sip_server::SipConfig::default()
                .register_deadline
                .as_secs(),
            tls_cert: None,
            tls_key: None,
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            shutdown_grace_secs: 10,
            http_header_timeout_secs: 30,
            http_idle_timeout_secs: 120,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let api = http_api::ApiLimits::default();
        let engine = presence_engine::EngineConfig::default();
        LimitsConfig {
            max_body_bytes: api.max_body_bytes,
            max_ws_message_bytes: api.max_ws_message_bytes,
            ws_auth_timeout_secs: api.ws_auth_timeout_secs,
            ws_token_recheck_secs: api.ws_token_recheck_secs,
            max_pending_per_subscriber: engine.max_pending_per_subscriber,
            max_targets_per_subscription: engine.max_targets_per_subscription,
            max_subscriptions_per_endpoint: engine.max_subscriptions_per_endpoint,
            directory_query_burst: directory::search::QUERY_BURST,
            directory_queries_per_second: directory::search::QUERIES_PER_SECOND,
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            token_ttl_secs: 12 * 3600,
            password_source: PasswordSource::Local,
        }
    }
}

impl Config {
    /// Reads the file (if any) and applies environment overrides.
    pub fn load(path: Option<&Path>) -> Result<Self> {
        let mut config = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("reading {}", p.display()))?;
                Self::parse(&text).with_context(|| format!("in {}", p.display()))?
            }
            None => Config::default(),
        };
        if let Ok(v) = std::env::var("PRESENCED_HTTP") {
            config.server.http = v.parse().context("PRESENCED_HTTP")?;
        }
        if let Ok(v) = std::env::var("PRESENCED_DATA_DIR") {
            config.server.data_dir = PathBuf::from(v);
        }
        Ok(config)
    }

    pub fn parse(text: &str) -> Result<Self> {
        let config: Config = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<()> {
        let l = &self.limits;
        anyhow::ensure!(
            l.max_targets_per_subscription < l.max_pending_per_subscriber,
            "limits.max_targets_per_subscription must be below limits.max_pending_per_subscriber, \
             or one subscription's snapshot could overflow its own queue"
        );
        anyhow::ensure!(
            l.max_body_bytes > 0 && l.max_ws_message_bytes > 0,
            "size limits must be positive"
        );
        anyhow::ensure!(
            self.auth.token_ttl_secs > 0,
            "auth.token_ttl_secs must be positive"
        );
        anyhow::ensure!(
            l.directory_query_burst >= 1.0 && l.directory_queries_per_second >= 0.01,
            "limits.directory_query_burst must be at least 1 and \
             limits.directory_queries_per_second at least 0.01"
        );
        anyhow::ensure!(
            self.server.sip_register_expires > 0
                && self.server.sip_subscribe_expires > 0
                && self.server.sip_keep_alive_secs > 0
                && self.server.sip_register_deadline_secs > 0,
            "server.sip_register_expires, sip_subscribe_expires, sip_keep_alive_secs and \
             sip_register_deadline_secs must be positive"
        );
        anyhow::ensure!(
            self.server.http_header_timeout_secs > 0
                && self.server.http_idle_timeout_secs > self.limits.ws_token_recheck_secs
                && self.server.http_header_timeout_secs <= MAX_SIP_DEADLINE_SECS
                && self.server.http_idle_timeout_secs <= MAX_SIP_DEADLINE_SECS,
            "server.http_header_timeout_secs must be positive and \
             server.http_idle_timeout_secs above limits.ws_token_recheck_secs (WebSockets \
             are pinged that often), both at most {MAX_SIP_DEADLINE_SECS}"
        );
        anyhow::ensure!(
            self.server.sip_keep_alive_secs <= MAX_SIP_DEADLINE_SECS
                && self.server.sip_register_deadline_secs <= MAX_SIP_DEADLINE_SECS,
            "server.sip_keep_alive_secs and sip_register_deadline_secs are at most \
             {MAX_SIP_DEADLINE_SECS} (a day)"
        );
        if self.auth.password_source == PasswordSource::Ldap {
            anyhow::ensure!(
                self.directory.as_ref().is_some_and(|d| d.ldap.is_some()),
                "auth.password_source = \"ldap\" needs a [directory.ldap] table"
            );
        }
        if self.server.sip_tls != Listen::Off {
            anyhow::ensure!(
                self.server.tls_cert.is_some() && self.server.tls_key.is_some(),
                "server.sip_tls needs server.tls_cert and server.tls_key"
            );
        }
        if let Some(d) = &self.directory {
            anyhow::ensure!(
                d.sync_interval > 0,
                "directory.sync_interval must be positive"
            );
        }
        match (self.store.kind, &self.cluster) {
            (StoreKind::Nats, None) => {
                anyhow::bail!("store.kind = \"nats\" needs a [cluster] table")
            }
            (StoreKind::Sqlite, Some(_)) => anyhow::bail!(
                "a [cluster] table needs store.kind = \"nats\" (the SQLite store serves one node)"
            ),
            (StoreKind::Nats, Some(c)) => c.validate()?,
            (StoreKind::Sqlite, None) => {}
        }
        Ok(())
    }

    /// The NATS store's options for this node.
    pub fn nats_options(c: &ClusterConfig) -> presence_store::NatsOptions {
        let mut options = presence_store::NatsOptions::new(c.nats_urls.clone(), &c.node_id);
        options.bucket_prefix = c.bucket_prefix.clone();
        options.replicas = c.replicas;
        options.user = c.user.clone();
        options.password = c.password.clone();
        options.token = c.token.clone();
        options.credentials_file = c.credentials_file.clone();
        options.tls_ca = c.tls_ca.clone();
        options.tls_cert = c.tls_cert.clone();
        options.tls_key = c.tls_key.clone();
        options.require_tls = c.require_tls;
        options
    }

    pub fn engine_config(&self) -> presence_engine::EngineConfig {
        presence_engine::EngineConfig {
            max_pending_per_subscriber: self.limits.max_pending_per_subscriber,
            max_targets_per_subscription: self.limits.max_targets_per_subscription,
            max_subscriptions_per_endpoint: self.limits.max_subscriptions_per_endpoint,
            federated_domains: self.federation.federated_domains.clone(),
            public_cloud_domains: self.federation.public_cloud_domains.clone(),
            cluster_node: self.cluster.as_ref().map(|c| c.node_id.clone()),
        }
    }

    pub fn api_limits(&self) -> http_api::ApiLimits {
        http_api::ApiLimits {
            max_body_bytes: self.limits.max_body_bytes,
            max_ws_message_bytes: self.limits.max_ws_message_bytes,
            ws_auth_timeout_secs: self.limits.ws_auth_timeout_secs,
            ws_token_recheck_secs: self.limits.ws_token_recheck_secs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_named() {
        let err = Config::parse("[server]\nhttpp = \"1.2.3.4:5\"\n").unwrap_err();
        assert!(format!("{err:#}").contains("httpp"), "{err:#}");
        let err = Config::parse("[nope]\n").unwrap_err();
        assert!(format!("{err:#}").contains("nope"), "{err:#}");
    }

    #[test]
    fn partial_files_keep_defaults() {
        let c = Config::parse("[server]\nhttp = \"127.0.0.1:0\"\n[federation]\nfederated_domains = [\"fabrikam.com\"]\n").unwrap();
        assert_eq!(c.server.http.port(), 0);
        assert_eq!(c.server.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert_eq!(c.engine_config().federated_domains, vec!["fabrikam.com"]);
    }

    #[test]
    fn directory_tables() {
        let c = Config::parse(
            "[auth]\npassword_source = \"ldap\"\n[directory]\nsource = \"ldap\"\nsync_interval = 60\n\
             [directory.ldap]\nurl = \"ldap://127.0.0.1:3890\"\nbase_dn = \"dc=example,dc=com\"\n\
             [directory.ldap.attributes]\ntitle = \"jobTitle\"\n",
        )
        .unwrap();
        let d = c.directory.unwrap();
        let l = d.ldap.unwrap();
        assert_eq!(l.filter, "(msRTCSIP-UserEnabled=TRUE)");
        assert_eq!(l.attributes.title, "jobTitle");
        assert_eq!(l.attributes.display_name, "displayName");
        let err = Config::parse("[directory]\nsource = \"ldap\"\n[directory.ldap]\nurl = \"x\"\nbase_dn = \"y\"\nfliter = \"z\"\n")
            .unwrap_err();
        assert!(format!("{err:#}").contains("fliter"), "{err:#}");
        let err = Config::parse("[auth]\npassword_source = \"ldap\"\n").unwrap_err();
        assert!(format!("{err:#}").contains("directory.ldap"));
    }

    #[test]
    fn inconsistent_limits_are_refused() {
        let err = Config::parse(
            "[limits]\nmax_pending_per_subscriber = 10\nmax_targets_per_subscription = 10\n",
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("max_targets_per_subscription"));
    }
}
