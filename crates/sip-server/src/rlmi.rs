//! Batched presence bodies (MS-PRES batched notifications, RFC 4662 resource lists):
//! a `multipart/related` body whose first part is an `application/rlmi+xml` list of
//! the presentities in the message, followed by one `<categories>` part per
//! presentity.

use crate::bodies::CATEGORIES_TYPE;
use crate::reply::tag;
use presence_model::UserUri;
use presence_model::xml::escape;
use std::fmt::Write;

const RLMI_NS: &str = "urn:ietf:params:xml:ns:rlmi";
const START: &str = "rlmi@presenced";

/// One presentity of a batch: its `<categories>` document, or `None` for a URI that
/// is no user here (listed as terminated, without a part).
pub(crate) struct Resource<'a> {
    pub uri: &'a UserUri,
    pub categories: Option<&'a str>,
}

/// A `multipart/related` RLMI body: (Content-Type, body).
///
/// Written for libpurple's MIME parser, which SIPE uses on Debian: it drops the last
/// four bytes of every part, taking them for a blank line (`\r\n\r\n`), so each
/// part's content is followed by one (to a standard parser, the content then ends
/// with a line break, which XML ignores); and some of its versions take everything
/// after the last `=` of the Content-Type as the boundary, so the boundary is the
/// last parameter, unquoted. It is random, and checked against the parts.
pub(crate) fn batch(
    list: &UserUri,
    version: u32,
    full_state: bool,
    resources: &[Resource],
) -> (String, String) {
    let boundary = loop {
        let b = format!("presenced-{}{}", tag(), tag());
        if !resources
            .iter()
            .any(|r| r.categories.is_some_and(|c| c.contains(&b)))
        {
            break b;
        }
    };
    let mut list_xml = format!(
        "<list xmlns=\"{RLMI_NS}\" uri=\"{}\" version=\"{version}\" fullState=\"{full_state}\">",
        escape(&list.to_sip())
    );
    for (i, r) in resources.iter().enumerate() {
        let uri = escape(&r.uri.to_sip());
        match r.categories {
            Some(_) => {
                let _ = write!(
                    list_xml,
                    "<resource uri=\"{uri}\"><instance id=\"{i}\" state=\"active\" cid=\"{i}@presenced\"/></resource>"
                );
            }
            None => {
                let _ = write!(
                    list_xml,
                    "<resource uri=\"{uri}\"><instance id=\"{i}\" state=\"terminated\" reason=\"noresource\"/></resource>"
                );
            }
        }
    }
    list_xml.push_str("</list>");
    let mut body = String::new();
    let mut part = |cid: &str, content_type: &str, content: &str| {
        let _ = write!(
            body,
            "--{boundary}\r\nContent-Transfer-Encoding: 8bit\r\nContent-ID: <{cid}>\r\n\
             Content-Type: {content_type}\r\n\r\n{content}\r\n\r\n"
        );
    };
    part(START, "application/rlmi+xml", &list_xml);
    for (i, r) in resources.iter().enumerate() {
        if let Some(c) = r.categories {
            part(&format!("{i}@presenced"), CATEGORIES_TYPE, c);
        }
    }
    let _ = write!(body, "--{boundary}--\r\n");
    let content_type = format!(
        "multipart/related; type=\"application/rlmi+xml\"; start=\"<{START}>\"; boundary={boundary}"
    );
    (content_type, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(s: &str) -> UserUri {
        UserUri::parse(s).unwrap()
    }

    #[test]
    fn a_batch_lists_every_resource_and_carries_a_part_each() {
        let (alice, bob, nobody) = (
            uri("alice@example.com"),
            uri("bob@example.com"),
            uri("nobody@example.com"),
        );
        let (ct, body) = batch(
            &alice,
            3,
            true,
            &[
                Resource {
                    uri: &bob,
                    categories: Some("<categories uri=\"sip:bob@example.com\"/>"),
                },
                Resource {
                    uri: &nobody,
                    categories: None,
                },
            ],
        );
        let boundary = ct.rsplit('=').next().unwrap();
        assert!(
            boundary.starts_with("presenced-") && !boundary.contains('"'),
            "{ct}"
        );
        assert!(ct.contains("type=\"application/rlmi+xml\""));
        let parts: Vec<&str> = body.split(&format!("--{boundary}")).collect();
        // Before the first boundary, the list, bob's part, and the closing "--".
        assert_eq!(parts.len(), 4, "{body}");
        assert!(parts[1].contains("Content-Type: application/rlmi+xml\r\n\r\n<list "));
        assert!(
            parts[1].contains("uri=\"sip:alice@example.com\" version=\"3\" fullState=\"true\"")
        );
        assert!(parts[1].contains("<resource uri=\"sip:bob@example.com\"><instance id=\"0\" state=\"active\" cid=\"0@presenced\"/>"));
        assert!(parts[1].contains(
            "<resource uri=\"sip:nobody@example.com\"><instance id=\"1\" state=\"terminated\""
        ));
        assert!(parts[2].contains("Content-ID: <0@presenced>"));
        assert!(parts[2].ends_with("\r\n\r\n<categories uri=\"sip:bob@example.com\"/>\r\n\r\n"));
        assert!(parts[3].starts_with("--\r\n"));
    }
}
