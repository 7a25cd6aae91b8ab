//! A small LDIF (RFC 2849) reader for content records: `dn:` then `attr: value`
//! lines, `attr:: base64` values, continuation lines starting with one space, records
//! separated by blank lines. Change records are refused.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// One LDIF record: its DN and its attribute values, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub dn: String,
    pub attrs: Vec<(String, String)>,
}

impl Record {
    /// The first value of `name`, compared case-insensitively.
    pub fn get(&self, name: &str) -> Option<String> {
        self.attrs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }
}

/// Unfolds continuation lines and drops comments.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out: Vec<(usize, String)> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if let Some(cont) = line.strip_prefix(' ')
            && let Some((_, last)) = out.last_mut()
        {
            last.push_str(cont);
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        out.push((i + 1, line.to_string()));
    }
    out
}

pub fn parse(text: &str) -> Result<Vec<Record>, String> {
    let mut records = Vec::new();
    let mut current: Option<Record> = None;
    for (lineno, line) in logical_lines(text) {
        if line.trim().is_empty() {
            records.extend(current.take());
            continue;
        }
        let Some((k, rest)) = line.split_once(':') else {
            return Err(format!("line {lineno}: expected `attribute: value`"));
        };
        let (name, value) = if let Some(b64) = rest.strip_prefix(':') {
            let bytes = STANDARD
                .decode(b64.trim())
                .map_err(|e| format!("line {lineno}: bad base64 value: {e}"))?;
            // Binary values (an objectGUID) are kept as hex, their stable text form.
            let value = String::from_utf8(bytes.clone())
                .unwrap_or_else(|_| bytes.iter().map(|b| format!("{b:02x}")).collect());
            (k.trim().to_string(), value)
        } else if rest.starts_with('<') {
            return Err(format!("line {lineno}: URL values are not supported"));
        } else {
            (k.trim().to_string(), rest.trim().to_string())
        };
        match (&mut current, name.as_str()) {
            (None, "version") if records.is_empty() => {}
            (None, n) if n.eq_ignore_ascii_case("dn") => {
                current = Some(Record {
                    dn: value,
                    attrs: Vec::new(),
                });
            }
            (None, _) => return Err(format!("line {lineno}: a record must start with dn:")),
            (Some(_), n) if n.eq_ignore_ascii_case("changetype") => {
                return Err(format!("line {lineno}: change records are not supported"));
            }
            (Some(r), _) => r.attrs.push((name, value)),
        }
    }
    records.extend(current);
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_records_folding_and_base64() {
        let text = "version: 1\n# people\ndn: cn=Alice,dc=example,dc=com\ncn: Alice\ndisplayName:: QWxpY2UgQW5kZXJz\ndescription: a long\n  line\n\ndn: cn=Bob,dc=example,dc=com\r\nmail: bob@example.com\r\n";
        let r = parse(text).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].dn, "cn=Alice,dc=example,dc=com");
        assert_eq!(r[0].get("DISPLAYNAME").as_deref(), Some("Alice Anders"));
        assert_eq!(r[0].get("description").as_deref(), Some("a long line"));
        assert_eq!(r[1].get("mail").as_deref(), Some("bob@example.com"));
    }

    #[test]
    fn colons_in_values_and_binary_values() {
        let r = parse("dn: cn=x\nipHostNumber: fe80::1\nobjectGUID:: AAEC/w==\n").unwrap();
        assert_eq!(r[0].get("ipHostNumber").as_deref(), Some("fe80::1"));
        assert_eq!(r[0].get("objectGUID").as_deref(), Some("000102ff"));
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        assert!(parse("cn: x\n").unwrap_err().contains("dn:"));
        assert!(
            parse("dn: cn=x\nchangetype: modify\n")
                .unwrap_err()
                .contains("change records")
        );
        assert!(
            parse("dn: cn=x\njpegPhoto:< file:///etc/passwd\n")
                .unwrap_err()
                .contains("URL")
        );
        assert!(
            parse("dn: cn=x\nbad line\n")
                .unwrap_err()
                .contains("line 2")
        );
        assert!(parse("dn: cn=x\na:: ***\n").unwrap_err().contains("base64"));
    }
}
