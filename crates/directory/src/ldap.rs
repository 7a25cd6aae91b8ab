//! The LDAP source (Active Directory or any LDAPv3 server): simple bind, LDAPS or
//! StartTLS, and a paged search (RFC 2696) under a base DN with a filter.

use crate::config::LdapConfig;
use crate::entry::DirectoryEntry;
use crate::{DirectoryError, Fetched};
use ldap3::adapters::{Adapter, EntriesOnly, PagedResults};
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, Scope, SearchEntry};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

pub struct LdapSource {
    config: LdapConfig,
    bind_password: Option<String>,
}

/// Hex of a binary attribute (objectGUID), as its stable text form.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl LdapSource {
    pub fn new(config: LdapConfig) -> Result<Self, DirectoryError> {
        let bind_password = match (&config.bind_password_file, &config.bind_password) {
            (Some(path), _) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| {
                        DirectoryError::Config(format!(
                            "bind_password_file {}: {e}",
                            path.display()
                        ))
                    })?
                    .trim_end_matches(['\r', '\n'])
                    .to_string(),
            ),
            (None, Some(secret)) => Some(secret.0.clone()),
            (None, None) => None,
        };
        if config.page_size == 0 {
            return Err(DirectoryError::Config("page_size must be positive".into()));
        }
        Ok(LdapSource {
            config,
            bind_password,
        })
    }

    fn settings(&self) -> Result<LdapConnSettings, DirectoryError> {
        let mut settings = LdapConnSettings::new()
            .set_conn_timeout(Duration::from_secs(self.config.timeout_secs))
            .set_starttls(self.config.starttls);
        if let Some(ca) = &self.config.tls_ca_file {
            settings = settings.set_config(Arc::new(tls_config(ca)?));
        }
        Ok(settings)
    }

    async fn connect(&self) -> Result<Ldap, DirectoryError> {
        let unreachable = |e: ldap3::LdapError| DirectoryError::Unreachable {
            url: self.config.url.clone(),
            reason: e.to_string(),
        };
        let (conn, mut ldap) = LdapConnAsync::with_settings(self.settings()?, &self.config.url)
            .await
            .map_err(unreachable)?;
        ldap3::drive!(conn);
        // Covers the bind that follows; each later operation sets its own.
        ldap.with_timeout(Duration::from_secs(self.config.timeout_secs));
        Ok(ldap)
    }

    /// Reads every user under the base DN that matches the filter.
    pub async fn fetch(&self) -> Result<Fetched, DirectoryError> {
        let mut ldap = self.connect().await?;
        if let Some(dn) = &self.config.bind_dn {
            let pw = self.bind_password.clone().unwrap_or_default();
            let bind_err = |reason: String| DirectoryError::Bind {
                dn: dn.clone(),
                reason,
            };
            ldap.simple_bind(dn, &pw)
                .await
                .map_err(|e| bind_err(e.to_string()))?
                .success()
                .map_err(|e| bind_err(e.to_string()))?;
        }
        let map = &self.config.attributes;
        let attrs = map.requested();
        let adapters: Vec<Box<dyn Adapter<_, _>>> = vec![
            Box::new(EntriesOnly::new()),
            Box::new(PagedResults::new(self.config.page_size as i32)),
        ];
        let search = |e: ldap3::LdapError| DirectoryError::Search(e.to_string());
        // ldap3's timeout covers the next operation only: set it again for the search.
        ldap.with_timeout(Duration::from_secs(self.config.timeout_secs));
        let mut stream = ldap
            .streaming_search_with(
                adapters,
                &self.config.base_dn,
                Scope::Subtree,
                &self.config.filter,
                attrs,
            )
            .await
            .map_err(search)?;
        let mut fetched = Fetched::default();
        while let Some(raw) = stream.next().await.map_err(search)? {
            let entry = SearchEntry::construct(raw);
            let mut values: HashMap<String, String> = HashMap::new();
            for (k, v) in &entry.attrs {
                if let Some(first) = v.first() {
                    values.insert(k.to_ascii_lowercase(), first.clone());
                }
            }
            for (k, v) in &entry.bin_attrs {
                if let Some(first) = v.first() {
                    values.insert(k.to_ascii_lowercase(), hex(first));
                }
            }
            match DirectoryEntry::from_attributes(
                Some(&entry.dn),
                &|k| values.get(&k.to_ascii_lowercase()).cloned(),
                map,
            ) {
                Ok(e) => fetched.entries.push(e),
                Err(reason) => fetched.errors.push(reason),
            }
        }
        stream.finish().await.success().map_err(search)?;
        let _ = ldap.unbind().await;
        Ok(fetched)
    }

    /// Checks a user's password by binding as the user's DN. Empty passwords are
    /// refused here: LDAP would treat them as an anonymous bind and succeed.
    pub async fn verify_password(&self, dn: &str, password: &str) -> Result<bool, DirectoryError> {
        if password.is_empty() || dn.is_empty() {
            return Ok(false);
        }
        let mut ldap = self.connect().await?;
        ldap.with_timeout(Duration::from_secs(self.config.timeout_secs));
        let ok = match ldap.simple_bind(dn, password).await {
            Ok(result) => result.success().is_ok(),
            Err(e) => {
                return Err(DirectoryError::Unreachable {
                    url: self.config.url.clone(),
                    reason: e.to_string(),
                });
            }
        };
        let _ = ldap.unbind().await;
        Ok(ok)
    }
}

fn tls_config(ca_file: &std::path::Path) -> Result<rustls::ClientConfig, DirectoryError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let bad = |reason: String| {
        DirectoryError::Config(format!("tls_ca_file {}: {reason}", ca_file.display()))
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).map_err(|e| bad(e.to_string()))? {
        roots
            .add(cert.map_err(|e| bad(e.to_string()))?)
            .map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("no certificates found".into()));
    }
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| bad(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth())
}
