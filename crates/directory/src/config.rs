//! The `[directory]` configuration table.

use serde::Deserialize;
use std::fmt;
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    File,
    Ldap,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectoryConfig {
    pub source: SourceKind,
    /// Seconds between two syncs inside `presenced serve`.
    #[serde(default = "default_sync_interval")]
    pub sync_interval: u64,
    /// The directory file, for `source = "file"` (TOML, JSON or LDIF, by extension).
    pub file: Option<PathBuf>,
    pub ldap: Option<LdapConfig>,
}

fn default_sync_interval() -> u64 {
    300
}

impl DirectoryConfig {
    /// The attribute mapping in force (LDAP's, which LDIF files use too).
    pub fn attributes(&self) -> AttributeMap {
        self.ldap
            .as_ref()
            .map(|l| l.attributes.clone())
            .unwrap_or_default()
    }
}

/// A secret read from the configuration; never printed.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdapConfig {
    /// `ldap://host:port` or `ldaps://host:port`.
    pub url: String,
    pub bind_dn: Option<String>,
    pub bind_password: Option<Secret>,
    /// A file holding the bind password (preferred over `bind_password`).
    pub bind_password_file: Option<PathBuf>,
    pub base_dn: String,
    #[serde(default = "default_filter")]
    pub filter: String,
    /// Entries per page of the paged search (RFC 2696).
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// Upgrade an `ldap://` connection with StartTLS.
    #[serde(default)]
    pub starttls: bool,
    /// PEM file of the CA certificates to trust for LDAPS/StartTLS (default: the
    /// system's).
    pub tls_ca_file: Option<PathBuf>,
    /// Seconds to wait for the server (connect and each operation).
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    #[serde(default)]
    pub attributes: AttributeMap,
}

fn default_filter() -> String {
    "(msRTCSIP-UserEnabled=TRUE)".into()
}

fn default_page_size() -> u32 {
    500
}

fn default_timeout() -> u64 {
    10
}

/// Which directory attribute holds which field. Defaults follow Active Directory and
/// OCS names.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct AttributeMap {
    /// Stable key; tried in order until one is present (objectGUID on AD, entryUUID
    /// on OpenLDAP), else the DN.
    pub key: Vec<String>,
    pub uri: String,
    pub enabled: String,
    pub display_name: String,
    pub given_name: String,
    pub surname: String,
    pub email: String,
    pub title: String,
    pub department: String,
    pub company: String,
    pub office: String,
    pub work_phone: String,
    pub mobile: String,
    pub street: String,
    pub city: String,
    pub state: String,
    pub postal_code: String,
    pub country: String,
}

impl Default for AttributeMap {
    fn default() -> Self {
        AttributeMap {
            key: vec!["objectGUID".into(), "entryUUID".into()],
            uri: "msRTCSIP-PrimaryUserAddress".into(),
            enabled: "msRTCSIP-UserEnabled".into(),
            display_name: "displayName".into(),
            given_name: "givenName".into(),
            surname: "sn".into(),
            email: "mail".into(),
            title: "title".into(),
            department: "department".into(),
            company: "company".into(),
            office: "physicalDeliveryOfficeName".into(),
            work_phone: "telephoneNumber".into(),
            mobile: "mobile".into(),
            street: "streetAddress".into(),
            city: "l".into(),
            state: "st".into(),
            postal_code: "postalCode".into(),
            country: "c".into(),
        }
    }
}

impl AttributeMap {
    /// Every attribute to request from the server.
    pub fn requested(&self) -> Vec<String> {
        let mut v = self.key.clone();
        v.extend(
            [
                &self.uri,
                &self.enabled,
                &self.display_name,
                &self.given_name,
                &self.surname,
                &self.email,
                &self.title,
                &self.department,
                &self.company,
                &self.office,
                &self.work_phone,
                &self.mobile,
                &self.street,
                &self.city,
                &self.state,
                &self.postal_code,
                &self.country,
            ]
            .into_iter()
            .cloned(),
        );
        v
    }
}
