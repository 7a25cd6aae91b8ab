//! Header names: compact forms expanded, known names in their usual spelling.

/// One header line, name in canonical spelling, value as received (trimmed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub value: String,
}

impl Header {
    pub fn new(name: &str, value: impl Into<String>) -> Self {
        Header {
            name: canonical_name(name),
            value: value.into(),
        }
    }
}

/// Compact forms (RFC 3261 7.3.3 and extensions) and their full names.
const COMPACT: [(&str, &str); 14] = [
    ("i", "Call-ID"),
    ("m", "Contact"),
    ("e", "Content-Encoding"),
    ("l", "Content-Length"),
    ("c", "Content-Type"),
    ("f", "From"),
    ("s", "Subject"),
    ("k", "Supported"),
    ("t", "To"),
    ("v", "Via"),
    ("o", "Event"),
    ("u", "Allow-Events"),
    ("r", "Refer-To"),
    ("x", "Session-Expires"),
];

/// Names whose conventional spelling is not plain title case.
const SPELLED: [&str; 8] = [
    "Call-ID",
    "CSeq",
    "WWW-Authenticate",
    "Proxy-Authenticate",
    "ms-keep-alive",
    "ms-diagnostics",
    "ms-diagnostics-public",
    "ms-benotify",
];

/// The canonical spelling of a header name: compact forms expanded, known names as
/// written in the specifications, `ms-*` names lower case, others in title case.
pub fn canonical_name(name: &str) -> String {
    let name = name.trim();
    if let Some((_, full)) = COMPACT.iter().find(|(c, _)| c.eq_ignore_ascii_case(name)) {
        return (*full).to_string();
    }
    if let Some(s) = SPELLED.iter().find(|s| s.eq_ignore_ascii_case(name)) {
        return (*s).to_string();
    }
    if name.len() > 3 && name[..3].eq_ignore_ascii_case("ms-") {
        return name.to_ascii_lowercase();
    }
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            match chars.next() {
                Some(first) => {
                    first.to_ascii_uppercase().to_string() + &chars.as_str().to_ascii_lowercase()
                }
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_names() {
        assert_eq!(canonical_name("i"), "Call-ID");
        assert_eq!(canonical_name("CALL-id"), "Call-ID");
        assert_eq!(canonical_name("cseq"), "CSeq");
        assert_eq!(canonical_name("content-type"), "Content-Type");
        assert_eq!(canonical_name("k"), "Supported");
        assert_eq!(canonical_name("o"), "Event");
        assert_eq!(canonical_name("MS-Keep-Alive"), "ms-keep-alive");
        assert_eq!(
            canonical_name("ms-client-diagnostics"),
            "ms-client-diagnostics"
        );
        assert_eq!(canonical_name("proxy-require"), "Proxy-Require");
        assert_eq!(canonical_name("subscription-state"), "Subscription-State");
    }
}
