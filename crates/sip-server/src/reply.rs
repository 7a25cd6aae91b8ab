//! Building answers: a response with the request's dialog headers, and the
//! diagnostics a refusal carries.

use rand::Rng;
use sip_proto::{Message, NameAddr};

/// A fresh tag (for To tags, branches and dialog ids).
pub(crate) fn tag() -> String {
    format!("{:08x}", rand::thread_rng().r#gen::<u32>())
}

/// A response to `req` with its dialog headers copied (and a To tag added when the
/// request had none).
pub(crate) fn response(req: &Message, code: u16, reason: &str, to_tag: Option<&str>) -> Message {
    let mut r = Message::response(code, reason);
    for via in req.headers_named("Via") {
        r.push_header("Via", via);
    }
    for name in ["From", "To", "Call-ID", "CSeq"] {
        if let Some(v) = req.header(name) {
            let v = match (name, to_tag) {
                ("To", Some(t)) if NameAddr::parse(v).tag().is_none() => format!("{v};tag={t}"),
                _ => v.to_string(),
            };
            r.push_header(name, v);
        }
    }
    r
}

/// Adds the reason for a refusal, where SIPE and other clients look for it.
pub(crate) fn diagnostics(mut r: Message, reason: &str) -> Message {
    // The reason may echo client input: no quotes or control characters in a header.
    let reason: String = reason
        .chars()
        .map(|c| {
            if c == '"' {
                '\''
            } else if c.is_control() {
                ' '
            } else {
                c
            }
        })
        .collect();
    r.push_header(
        "ms-diagnostics",
        format!("1000;reason=\"{reason}\";source=\"presenced\""),
    );
    // SIPE shows a refusal's reason only from Warning (or ms-diagnostics-public).
    r.push_header("Warning", format!("310 presenced \"{reason}\""));
    r
}

/// A header's main value without parameters, lowercased (`Event: Presence;id=1`
/// gives `presence`); empty when the header is missing.
pub(crate) fn token(req: &Message, name: &str) -> String {
    req.header(name)
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// A refusal with its reason.
pub(crate) fn refuse(req: &Message, code: u16, reason: &str, why: &str) -> Message {
    diagnostics(response(req, code, reason, None), why)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sip_proto::Method;

    #[test]
    fn responses_copy_dialog_headers_and_tag_once() {
        let req = Message::request(Method::Subscribe, "sip:a@b")
            .with_header("Via", "SIP/2.0/TCP 1.2.3.4:5;branch=z9hG4bK1")
            .with_header("Via", "SIP/2.0/TCP 5.6.7.8:9;branch=z9hG4bK2")
            .with_header("From", "<sip:a@b>;tag=f")
            .with_header("To", "<sip:a@b>")
            .with_header("Call-ID", "c")
            .with_header("CSeq", "1 SUBSCRIBE");
        let r = response(&req, 200, "OK", Some("t1"));
        assert_eq!(r.headers_named("Via").count(), 2);
        assert_eq!(r.header("To"), Some("<sip:a@b>;tag=t1"));
        let again = response(&r, 200, "OK", Some("t2"));
        assert_eq!(
            again.header("To"),
            Some("<sip:a@b>;tag=t1"),
            "an existing tag stays"
        );
    }

    #[test]
    fn diagnostics_cannot_break_the_header() {
        let req = Message::request(Method::Service, "sip:a@b");
        let r = refuse(&req, 400, "Bad Request", "bad \"x\"\r\nInjected: 1");
        let w = r.header("Warning").unwrap();
        assert_eq!(w, "310 presenced \"bad 'x'  Injected: 1\"");
    }
}
