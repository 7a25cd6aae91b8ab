//! The file source: a TOML or JSON list of users, or an LDIF export, chosen by the
//! file's extension.
//!
//! TOML: `[[user]]` tables; JSON: `{"users": [...]}`; both with the fields of
//! [`FileUser`]. LDIF records are read through the same attribute mapping as LDAP.

use crate::config::AttributeMap;
use crate::entry::DirectoryEntry;
use crate::{DirectoryError, Fetched, ldif};
use presence_model::UserUri;
use serde::Deserialize;
use std::path::PathBuf;

/// Largest directory file read, in bytes.
pub const MAX_FILE_BYTES: u64 = 256 * 1024 * 1024;

/// One user in a TOML or JSON directory file. Only `uri` is required.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileUser {
    /// Stable key (defaults to the URI).
    pub key: Option<String>,
    pub uri: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    pub display_name: Option<String>,
    #[serde(default)]
    pub given_name: String,
    #[serde(default)]
    pub surname: String,
    #[serde(default)]
    pub email: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub department: String,
    #[serde(default)]
    pub company: String,
    #[serde(default)]
    pub office: String,
    #[serde(default)]
    pub work_phone: String,
    #[serde(default)]
    pub mobile: String,
    #[serde(default)]
    pub street: String,
    #[serde(default)]
    pub city: String,
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub postal_code: String,
    #[serde(default)]
    pub country: String,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlFile {
    #[serde(default)]
    user: Vec<FileUser>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonFile {
    users: Vec<FileUser>,
}

impl FileUser {
    fn into_entry(self) -> Result<DirectoryEntry, String> {
        let uri = UserUri::parse(&self.uri).map_err(|e| e.to_string())?;
        Ok(DirectoryEntry {
            key: self.key.unwrap_or_else(|| uri.to_string()),
            dn: None,
            enabled: self.enabled,
            display_name: self
                .display_name
                .filter(|n| !n.trim().is_empty())
                .unwrap_or_else(|| {
                    uri.as_str()
                        .split('@')
                        .next()
                        .unwrap_or_default()
                        .to_string()
                }),
            given_name: self.given_name,
            surname: self.surname,
            email: self.email,
            title: self.title,
            department: self.department,
            company: self.company,
            office: self.office,
            work_phone: self.work_phone,
            mobile: self.mobile,
            street: self.street,
            city: self.city,
            state: self.state,
            postal_code: self.postal_code,
            country: self.country,
            uri,
        })
    }
}

pub struct FileSource {
    path: PathBuf,
    attributes: AttributeMap,
}

impl FileSource {
    pub fn new(path: PathBuf, attributes: AttributeMap) -> Self {
        FileSource { path, attributes }
    }

    fn error(&self, reason: impl Into<String>) -> DirectoryError {
        DirectoryError::File {
            path: self.path.display().to_string(),
            reason: reason.into(),
        }
    }

    pub fn fetch(&self) -> Result<Fetched, DirectoryError> {
        let size = std::fs::metadata(&self.path)
            .map_err(|e| self.error(e.to_string()))?
            .len();
        if size > MAX_FILE_BYTES {
            return Err(self.error(format!("{size} bytes; the limit is {MAX_FILE_BYTES}")));
        }
        let text = std::fs::read_to_string(&self.path).map_err(|e| self.error(e.to_string()))?;
        let ext = self
            .path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        let mut fetched = Fetched::default();
        match ext.as_str() {
            "toml" | "json" => {
                let users = if ext == "toml" {
                    toml::from_str::<TomlFile>(&text)
                        .map_err(|e| self.error(e.to_string()))?
                        .user
                } else {
                    serde_json::from_str::<JsonFile>(&text)
                        .map_err(|e| self.error(e.to_string()))?
                        .users
                };
                for (i, u) in users.into_iter().enumerate() {
                    let label = format!("user {} ({})", i + 1, u.uri);
                    match u.into_entry() {
                        Ok(e) => fetched.entries.push(e),
                        Err(reason) => fetched.errors.push(format!("{label}: {reason}")),
                    }
                }
            }
            "ldif" => {
                for record in ldif::parse(&text).map_err(|e| self.error(e))? {
                    match DirectoryEntry::from_attributes(
                        Some(&record.dn),
                        &|k| record.get(k),
                        &self.attributes,
                    ) {
                        Ok(e) => fetched.entries.push(e),
                        Err(reason) => fetched.errors.push(reason),
                    }
                }
            }
            other => {
                return Err(self.error(format!(
                    "unknown extension {other:?}: use .toml, .json or .ldif"
                )));
            }
        }
        Ok(fetched)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fetch(name: &str, text: &str) -> Result<Fetched, DirectoryError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        FileSource::new(path, AttributeMap::default()).fetch()
    }

    #[test]
    fn toml_json_and_ldif() {
        let t = fetch(
            "users.toml",
            "[[user]]\nuri = \"sip:alice@example.com\"\ndisplay_name = \"Alice\"\ntitle = \"CTO\"\n\n[[user]]\nuri = \"bob@example.com\"\nenabled = false\n\n[[user]]\nuri = \"broken\"\n",
        )
        .unwrap();
        assert_eq!(t.entries.len(), 2);
        assert_eq!(t.entries[0].title, "CTO");
        assert!(!t.entries[1].enabled);
        assert_eq!(t.errors.len(), 1);
        assert!(t.errors[0].contains("user 3"));

        let j = fetch(
            "users.json",
            r#"{"users": [{"uri": "carol@example.com", "key": "k1", "department": "Sales"}]}"#,
        )
        .unwrap();
        assert_eq!(j.entries[0].key, "k1");
        assert_eq!(j.entries[0].display_name, "carol");

        let l = fetch(
            "export.ldif",
            "dn: cn=Dave,dc=example,dc=com\nmsRTCSIP-PrimaryUserAddress: sip:dave@example.com\nentryUUID: u-1\ndisplayName: Dave D\n\ndn: cn=NoSip,dc=example,dc=com\ncn: NoSip\n",
        )
        .unwrap();
        assert_eq!(l.entries.len(), 1);
        assert_eq!(
            (
                l.entries[0].key.as_str(),
                l.entries[0].display_name.as_str()
            ),
            ("u-1", "Dave D")
        );
        assert_eq!(l.errors.len(), 1);
    }

    #[test]
    fn bad_files_are_clear_errors() {
        let e = fetch("users.toml", "[[user]]\nuri = \"a@b.com\"\nshoe_size = 9\n").unwrap_err();
        assert!(e.to_string().contains("shoe_size"), "{e}");
        assert!(
            fetch("users.csv", "x")
                .unwrap_err()
                .to_string()
                .contains("extension")
        );
        let missing =
            FileSource::new("/nonexistent/users.toml".into(), AttributeMap::default()).fetch();
        assert!(matches!(missing, Err(DirectoryError::File { .. })));
    }
}
