//! `name-addr` / `addr-spec` header values (`From`, `To`, `Contact`, RFC 3261 20.10):
//! an optional display name, a URI, and `;name=value` parameters after it.

/// A borrowed view of one address header value. Parsing never fails: a value without
/// angle brackets is taken as an `addr-spec` whose parameters follow the first `;`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameAddr<'a> {
    /// The display name, without quotes (empty when absent).
    pub display_name: &'a str,
    /// The URI, as written (`sip:alice@example.com;transport=tcp` inside brackets
    /// keeps its URI parameters).
    pub uri: &'a str,
    /// Everything after the address: `;tag=1;epid=2`.
    params: &'a str,
}

impl<'a> NameAddr<'a> {
    pub fn parse(value: &'a str) -> NameAddr<'a> {
        let value = value.trim();
        match (value.find('<'), value.find('>')) {
            (Some(open), Some(close)) if open < close => NameAddr {
                display_name: value[..open].trim().trim_matches('"'),
                uri: value[open + 1..close].trim(),
                params: &value[close + 1..],
            },
            _ => {
                let (uri, params) = value.split_at(value.find(';').unwrap_or(value.len()));
                NameAddr {
                    display_name: "",
                    uri: uri.trim(),
                    params,
                }
            }
        }
    }

    /// The value of the header parameter `name` (case-insensitive name, quotes
    /// removed); `Some("")` for a parameter without a value.
    pub fn param(&self, name: &str) -> Option<&'a str> {
        self.params.split(';').skip(1).find_map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().trim_matches('"'))
        })
    }

    /// The `tag` parameter, which identifies a dialog's side.
    pub fn tag(&self) -> Option<&'a str> {
        self.param("tag").filter(|t| !t.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_addr_with_display_name_and_params() {
        let a =
            NameAddr::parse(r#""Alice A" <sip:alice@example.com;transport=tcp>;tag=12ab;epid=99"#);
        assert_eq!(a.display_name, "Alice A");
        assert_eq!(a.uri, "sip:alice@example.com;transport=tcp");
        assert_eq!(a.tag(), Some("12ab"));
        assert_eq!(a.param("EPID"), Some("99"));
        assert_eq!(
            a.param("transport"),
            None,
            "URI parameters are not header parameters"
        );
    }

    #[test]
    fn addr_spec_without_brackets() {
        let a = NameAddr::parse("sip:bob@example.com;tag=x");
        assert_eq!(a.uri, "sip:bob@example.com");
        assert_eq!(a.tag(), Some("x"));
        assert_eq!(a.display_name, "");
    }

    #[test]
    fn missing_and_empty_tags() {
        assert_eq!(NameAddr::parse("<sip:a@b>").tag(), None);
        assert_eq!(NameAddr::parse("<sip:a@b>;tag=").tag(), None);
        assert_eq!(NameAddr::parse("<sip:a@b>;lr").param("lr"), Some(""));
        assert_eq!(NameAddr::parse("<sip:a@b>;tag=\"q\"").tag(), Some("q"));
    }
}
