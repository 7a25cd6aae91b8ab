//! MS-SIPAE authentication of one connection: the two-step NTLM handshake on
//! REGISTER, then a signature on every message in both directions.

use crate::ntlm::{self, Keys};
use presence_model::UserUri;
use rand::Rng;
use sip_proto::{Message, NameAddr, StartLine};
use std::collections::HashMap;

pub const REALM: &str = "SIP Communications Service";
/// Where a connection is in the handshake.
pub enum State {
    None,
    Challenged { opaque: String, challenge: [u8; 8] },
    Established(Association),
}

/// An authenticated connection's keys and counters.
pub struct Association {
    pub user: UserUri,
    pub opaque: String,
    keys: Keys,
    snum: u32,
    /// Highest client message number seen: a replayed message is refused.
    cnum: u64,
}

/// The `name="value"` parameters of an NTLM Authorization header.
pub fn params(value: &str) -> HashMap<String, String> {
    let rest = value.trim().strip_prefix("NTLM").unwrap_or("").trim();
    let mut out = HashMap::new();
    let mut start = 0;
    let mut quoted = false;
    let mut parts = Vec::new();
    for (i, c) in rest.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(&rest[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&rest[start..]);
    for p in parts {
        if let Some((k, v)) = p.split_once('=') {
            out.insert(
                k.trim().to_ascii_lowercase(),
                v.trim().trim_matches('"').to_string(),
            );
        }
    }
    out
}

/// The text MS-SIPAE signs (version 3 and later layout).
pub fn signing_input(m: &Message, rand: &str, num: &str, target: &str) -> String {
    let (cseq, method) = m
        .header("CSeq")
        .and_then(|c| c.split_once(char::is_whitespace))
        .unwrap_or(("", ""));
    let from = NameAddr::parse(m.header("From").unwrap_or(""));
    let to = NameAddr::parse(m.header("To").unwrap_or(""));
    let (from_uri, from_tag) = (from.uri, from.tag().unwrap_or(""));
    let (to_uri, to_tag) = (to.uri, to.tag().unwrap_or(""));
    let mut s = format!(
        "<NTLM><{rand}><{num}><{REALM}><{target}><{}><{}><{}><{from_uri}><{from_tag}><{to_uri}><{to_tag}><><><{}>",
        m.header("Call-ID").unwrap_or(""),
        cseq.trim(),
        method.trim(),
        m.header("Expires").unwrap_or(""),
    );
    if let StartLine::Response { code, .. } = m.start {
        s.push_str(&format!("<{code}>"));
    }
    s
}

impl Association {
    pub fn new(user: UserUri, opaque: String, keys: Keys) -> Self {
        Association {
            user,
            opaque,
            keys,
            snum: 0,
            cnum: 0,
        }
    }

    /// Whether a client message carries a valid signature and a message number above
    /// every one seen before (no replays); a valid one advances the number.
    pub fn verify(&mut self, m: &Message, target: &str) -> bool {
        let Some(p) = m.header("Authorization").map(params) else {
            return false;
        };
        let (Some(rand), Some(num), Some(response)) =
            (p.get("crand"), p.get("cnum"), p.get("response"))
        else {
            return false;
        };
        let Ok(n) = num.parse::<u64>() else {
            return false;
        };
        let text = signing_input(m, rand, num, target);
        let valid = ntlm::signature(&self.keys.client_sign, &self.keys.client_seal, &text)
            .eq_ignore_ascii_case(response);
        if valid && n > self.cnum {
            self.cnum = n;
            return true;
        }
        false
    }

    /// Signs a server message (response or BENOTIFY) in place.
    pub fn sign(&mut self, m: &mut Message, target: &str) {
        self.snum += 1;
        let srand = format!("{:08x}", rand::thread_rng().r#gen::<u32>());
        let text = signing_input(m, &srand, &self.snum.to_string(), target);
        let sig = ntlm::signature(&self.keys.server_sign, &self.keys.server_seal, &text);
        m.push_header(
            "Authentication-Info",
            format!(
                "NTLM rspauth=\"{sig}\", srand=\"{srand}\", snum=\"{}\", opaque=\"{}\", qop=\"auth\", targetname=\"{target}\", realm=\"{REALM}\"",
                self.snum, self.opaque
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_authorization_parameters() {
        let p = params(
            r#"NTLM qop="auth", opaque="D76B55BF", realm="SIP Communications Service", targetname="ocs.example.com", gssapi-data="", version=4, crand="4db38a73", cnum="1", response="0100""#,
        );
        assert_eq!(p["realm"], "SIP Communications Service");
        assert_eq!(p["gssapi-data"], "");
        assert_eq!(p["version"], "4");
        assert_eq!(p["response"], "0100");
    }
}
