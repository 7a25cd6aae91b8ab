//! SOAP bodies of SERVICE requests (MS-SIP): the contact-list methods and the
//! directory search, and their answers.

use crate::bodies::{BadBody, bad, root};
use presence_model::UserUri;
use presence_model::xml::{Element, escape};
use std::fmt::Write;

/// A SOAP contact-list request (MS-SIP 3.7) and the `deltaNum` of the list the
/// client made it against (checked: a stale one is refused with a 409 fault).
#[derive(Debug)]
pub struct SoapContactRequest {
    pub op: SoapRequest,
    pub delta_num: Option<u32>,
}

#[derive(Debug)]
pub enum SoapRequest {
    SetContact {
        uri: UserUri,
        name: String,
        groups: Vec<u32>,
        subscribed: bool,
    },
    DeleteContact {
        uri: UserUri,
    },
    AddGroup {
        name: String,
    },
    ModifyGroup {
        id: u32,
        name: String,
    },
    DeleteGroup {
        id: u32,
    },
}

/// Most attribute rows in one `directorySearch`.
pub const MAX_SEARCH_ROWS: usize = 16;

/// A SOAP `directorySearch` (MS-SIP): attribute/value rows that must all match, and
/// how many results the client wants.
#[derive(Debug)]
pub struct DirectorySearch {
    pub rows: Vec<(String, String)>,
    pub max_results: Option<usize>,
}

/// A SOAP request of either kind SIPE sends in a SERVICE.
#[derive(Debug)]
pub enum Soap {
    Contacts(SoapContactRequest),
    DirectorySearch(DirectorySearch),
}

pub fn parse_soap(body: &[u8]) -> Result<Soap, BadBody> {
    let envelope = root(body)?;
    let soap_body = envelope.child("Body").ok_or_else(|| bad("no SOAP body"))?;
    let method = soap_body
        .elements()
        .next()
        .ok_or_else(|| bad("no SOAP body"))?;
    if method.name == "directorySearch" {
        let rows: Vec<(String, String)> = soap_body
            .child("Array")
            .map(|a| {
                a.elements()
                    .filter(|r| r.name == "row")
                    .map(|r| {
                        (
                            r.attr("attrib").unwrap_or_default().to_string(),
                            r.attr("value").unwrap_or_default().to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        if rows.is_empty() {
            return Err(bad("a directorySearch needs at least one row"));
        }
        if rows.len() > MAX_SEARCH_ROWS {
            return Err(bad(format!("at most {MAX_SEARCH_ROWS} search rows")));
        }
        let max_results = match method.child("maxResults") {
            None => None,
            Some(m) => Some(
                m.text()
                    .trim()
                    .parse()
                    .map_err(|_| bad("maxResults is not a number"))?,
            ),
        };
        return Ok(Soap::DirectorySearch(DirectorySearch { rows, max_results }));
    }
    let field = |name: &str| method.child(name).map(Element::text).unwrap_or_default();
    let uri = || UserUri::parse(&field("URI")).map_err(|e| bad(e.to_string()));
    let id = || {
        field("groupID")
            .parse::<u32>()
            .map_err(|_| bad("groupID is not a number"))
    };
    let delta_num = match method.child("deltaNum") {
        None => None,
        Some(d) => Some(
            d.text()
                .trim()
                .parse::<u32>()
                .map_err(|_| bad("deltaNum is not a number"))?,
        ),
    };
    let op = match method.name.as_str() {
        "setContact" => SoapRequest::SetContact {
            uri: uri()?,
            name: field("displayName"),
            groups: field("groups")
                .split_whitespace()
                .filter_map(|g| g.parse().ok())
                .collect(),
            subscribed: field("subscribed") != "false",
        },
        "deleteContact" => SoapRequest::DeleteContact { uri: uri()? },
        "addGroup" => SoapRequest::AddGroup {
            name: field("name"),
        },
        "modifyGroup" => SoapRequest::ModifyGroup {
            id: id()?,
            name: field("name"),
        },
        "deleteGroup" => SoapRequest::DeleteGroup { id: id()? },
        other => return Err(bad(format!("unsupported SOAP method {other}"))),
    };
    Ok(Soap::Contacts(SoapContactRequest { op, delta_num }))
}

/// One `directorySearch` result row; the directory details are `None` when the
/// caller may not see them.
pub struct SearchRow<'a> {
    pub uri: &'a UserUri,
    pub display_name: &'a str,
    pub email: &'a str,
    pub details: Option<&'a directory::DirectoryEntry>,
}

/// The 200 body of a `directorySearch`: an `Array` of `row`s, and whether more users
/// matched than were returned.
pub fn directory_search_result(rows: &[SearchRow], more: bool) -> String {
    let mut out = String::from(
        "<SOAP-ENV:Envelope xmlns:SOAP-ENV=\"http://schemas.xmlsoap.org/soap/envelope/\"><SOAP-ENV:Body>\
         <m:directorySearch xmlns:m=\"http://schemas.microsoft.com/winrtc/2002/11/sip\">",
    );
    let _ = write!(
        out,
        "<m:moreAvailable>{more}</m:moreAvailable><m:returned>{}</m:returned></m:directorySearch>\
         <m:Array xmlns:m=\"http://schemas.microsoft.com/winrtc/2002/11/sip\">",
        rows.len()
    );
    // Directory values may hold control characters, which XML cannot carry.
    let text = |s: &str| escape(&s.replace(|c: char| c.is_control(), " "));
    for r in rows {
        let d = |f: fn(&directory::DirectoryEntry) -> &str| r.details.map_or("", f);
        let _ = write!(
            out,
            "<m:row uri=\"{}\" displayName=\"{}\" title=\"{}\" office=\"{}\" phone=\"{}\" company=\"{}\" \
             city=\"{}\" state=\"{}\" country=\"{}\" email=\"{}\"/>",
            text(&r.uri.to_sip()),
            text(r.display_name),
            text(d(|e| &e.title)),
            text(d(|e| &e.office)),
            text(d(|e| &e.work_phone)),
            text(d(|e| &e.company)),
            text(d(|e| &e.city)),
            text(d(|e| &e.state)),
            text(d(|e| &e.country)),
            text(r.email),
        );
    }
    out.push_str("</m:Array></SOAP-ENV:Body></SOAP-ENV:Envelope>");
    out
}

/// The 200 body of addGroup: the new group's id.
pub fn soap_add_group_result(id: u32) -> String {
    format!(
        "<SOAP-ENV:Envelope xmlns:SOAP-ENV=\"http://schemas.xmlsoap.org/soap/envelope/\"><SOAP-ENV:Body>\
         <m:addGroup xmlns:m=\"http://schemas.microsoft.com/winrtc/2002/11/sip\"><m:groupID>{id}</m:groupID></m:addGroup>\
         </SOAP-ENV:Body></SOAP-ENV:Envelope>"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_contact_methods_with_their_delta() {
        let Ok(Soap::Contacts(soap)) = parse_soap(br#"<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/"><SOAP-ENV:Body><m:setContact xmlns:m="http://schemas.microsoft.com/winrtc/2002/11/sip"><m:displayName>Bob</m:displayName><m:groups>1 3 </m:groups><m:subscribed>true</m:subscribed><m:URI>bob@example.com</m:URI><m:externalURI /><m:deltaNum>5</m:deltaNum></m:setContact></SOAP-ENV:Body></SOAP-ENV:Envelope>"#) else {
            panic!("a contact request")
        };
        assert!(
            matches!(soap.op, SoapRequest::SetContact { ref groups, subscribed: true, .. } if groups == &vec![1, 3])
        );
        assert_eq!(soap.delta_num, Some(5));
        let bad = br#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><m:deleteContact xmlns:m="x"><m:URI>bob@example.com</m:URI><m:deltaNum>five</m:deltaNum></m:deleteContact></s:Body></s:Envelope>"#;
        assert!(parse_soap(bad).is_err());
    }

    #[test]
    fn reads_directory_searches_and_writes_their_results() {
        let body = br##"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" xmlns:m="http://schemas.microsoft.com/winrtc/2002/11/sip"><s:Body><m:directorySearch><m:filter m:href="#searchArray"/><m:maxResults>100</m:maxResults></m:directorySearch><m:Array m:id="searchArray"><m:row m:attrib="givenName" m:value="Ali"/><m:row m:attrib="sn" m:value="And"/></m:Array></s:Body></s:Envelope>"##;
        let Ok(Soap::DirectorySearch(search)) = parse_soap(body) else {
            panic!("a directory search")
        };
        assert_eq!(search.max_results, Some(100));
        assert_eq!(
            search.rows,
            vec![
                ("givenName".into(), "Ali".into()),
                ("sn".into(), "And".into())
            ]
        );
        let no_rows = br#"<s:Envelope xmlns:s="x"><s:Body><m:directorySearch xmlns:m="y"><m:maxResults>5</m:maxResults></m:directorySearch></s:Body></s:Envelope>"#;
        assert!(parse_soap(no_rows).is_err());
        let uri = UserUri::parse("bob@example.com").unwrap();
        let out = directory_search_result(
            &[SearchRow {
                uri: &uri,
                display_name: "Bob <B>",
                email: "bob@example.com",
                details: None,
            }],
            true,
        );
        assert!(
            out.contains("<m:moreAvailable>true</m:moreAvailable>"),
            "{out}"
        );
        assert!(
            out.contains(
                "<m:row uri=\"sip:bob@example.com\" displayName=\"Bob &lt;B&gt;\" title=\"\""
            ),
            "{out}"
        );
        assert!(presence_model::xml::parse(&out).is_ok());
    }
}
