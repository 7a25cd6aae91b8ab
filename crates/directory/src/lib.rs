//! The directory port: where user information comes from (a file, or LDAP / Active
//! Directory), and how it becomes presence data.
//!
//! A source yields [`DirectoryEntry`] values. Turning them into accounts and
//! server-written category instances (identity card, directory details card,
//! `userProperties`) is the sync's job (in the `presenced` binary); this crate only
//! reads directories and renders the entries' XML.

pub mod config;
pub mod entry;
pub mod file;
pub mod ldap;
pub mod ldif;
pub mod search;

pub use config::{AttributeMap, DirectoryConfig, LdapConfig, SourceKind};
pub use entry::DirectoryEntry;
pub use search::DirectoryIndex;

/// What a fetch produced: the entries, and the records that could not be used.
#[derive(Debug, Default)]
pub struct Fetched {
    pub entries: Vec<DirectoryEntry>,
    /// One line per skipped record, naming it and saying why.
    pub errors: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("cannot read {path}: {reason}")]
    File { path: String, reason: String },
    #[error("LDAP server {url} unreachable: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("LDAP bind as {dn:?} refused: {reason}")]
    Bind { dn: String, reason: String },
    #[error("LDAP search failed: {0}")]
    Search(String),
    #[error("directory configuration: {0}")]
    Config(String),
}

/// A configured directory source.
pub enum Source {
    File(file::FileSource),
    Ldap(ldap::LdapSource),
}

impl Source {
    pub fn from_config(config: &DirectoryConfig) -> Result<Self, DirectoryError> {
        match config.source {
            SourceKind::File => {
                let path = config.file.clone().ok_or_else(|| {
                    DirectoryError::Config("source = \"file\" needs `file`".into())
                })?;
                Ok(Source::File(file::FileSource::new(
                    path,
                    config.attributes(),
                )))
            }
            SourceKind::Ldap => {
                let ldap = config.ldap.clone().ok_or_else(|| {
                    DirectoryError::Config(
                        "source = \"ldap\" needs a [directory.ldap] table".into(),
                    )
                })?;
                Ok(Source::Ldap(ldap::LdapSource::new(ldap)?))
            }
        }
    }

    pub async fn fetch(&self) -> Result<Fetched, DirectoryError> {
        match self {
            Source::File(f) => f.fetch(),
            Source::Ldap(l) => l.fetch().await,
        }
    }
}
