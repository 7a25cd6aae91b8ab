//! User identities: `user@domain`, written bare everywhere inside Presenced.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// Longest accepted user URI, in bytes.
pub const MAX_URI_BYTES: usize = 256;

/// A user identity such as `alice@example.com`, lower-cased, without `sip:`.
///
/// Parsing accepts an optional `sip:` prefix, so SIP and JSON input meet in one form.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UserUri(Arc<str>);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid user URI {0:?}: expected user@domain")]
pub struct InvalidUri(pub String);

impl UserUri {
    pub fn parse(input: &str) -> Result<Self, InvalidUri> {
        let bad = || InvalidUri(input.chars().take(80).collect());
        let trimmed = input.trim();
        let bare = match trimmed.get(..4) {
            Some(p) if p.eq_ignore_ascii_case("sip:") => &trimmed[4..],
            _ => trimmed,
        };
        if bare.is_empty() || bare.len() > MAX_URI_BYTES {
            return Err(bad());
        }
        let (user, domain) = bare.split_once('@').ok_or_else(bad)?;
        let user_ok = !user.is_empty()
            && user
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-+'".contains(c));
        let domain_ok = is_domain(domain);
        if !user_ok || !domain_ok {
            return Err(bad());
        }
        Ok(UserUri(Arc::from(bare.to_ascii_lowercase())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn domain(&self) -> &str {
        self.0.split_once('@').map(|(_, d)| d).unwrap_or("")
    }

    /// The `sip:` form used on the SIP wire.
    pub fn to_sip(&self) -> String {
        format!("sip:{}", self.0)
    }
}

/// A DNS name of letters, digits and hyphens in dot-separated labels.
pub fn is_domain(domain: &str) -> bool {
    !domain.is_empty()
        && domain.len() <= 253
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

impl TryFrom<String> for UserUri {
    type Error = InvalidUri;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        UserUri::parse(&value)
    }
}

impl From<UserUri> for String {
    fn from(value: UserUri) -> Self {
        value.0.to_string()
    }
}

impl fmt::Display for UserUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for UserUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bare_and_sip_forms() {
        let a = UserUri::parse("alice@Example.com").unwrap();
        let b = UserUri::parse("SIP:alice@example.com").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.as_str(), "alice@example.com");
        assert_eq!(a.domain(), "example.com");
        assert_eq!(a.to_sip(), "sip:alice@example.com");
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "alice",
            "@example.com",
            "alice@",
            "a b@example.com",
            "alice@exa mple.com",
            "alice@-bad.com",
            "alice@example..com",
            "sip:",
        ] {
            assert!(UserUri::parse(bad).is_err(), "{bad}");
        }
        let long = format!("{}@example.com", "a".repeat(MAX_URI_BYTES));
        assert!(UserUri::parse(&long).is_err());
    }
}
