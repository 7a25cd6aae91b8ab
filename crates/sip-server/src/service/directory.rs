//! SOAP `directorySearch` (MS-SIP), as SIPE sends it for "Search for Contacts" and
//! "Get Info": attribute rows that must all match, answered from the directory
//! search index. Each row shows the directory details only when the searched user's
//! containers let the caller see their details card.

use crate::connection::Conn;
use crate::errors::Refusal;
use crate::reply::{refuse, response, tag};
use crate::soap::{DirectorySearch, SearchRow, directory_search_result};
use directory::search::{Field, MAX_RESULTS};
use presence_model::UserUri;
use sip_proto::Message;

/// The index field of a directory attribute SIPE searches by.
fn field(attribute: &str) -> Option<Field> {
    Some(match attribute {
        "givenName" => Field::GivenName,
        "sn" => Field::Surname,
        "displayName" => Field::DisplayName,
        "mail" => Field::Email,
        "title" => Field::Title,
        "department" => Field::Department,
        "company" => Field::Company,
        "c" => Field::Country,
        _ => return None,
    })
}

/// The SIP-address row ("Get Info", or a search by SIP ID).
const SIP_ADDRESS: &str = "msRTCSIP-PrimaryUserAddress";

pub(crate) fn search(
    conn: &mut Conn,
    req: &Message,
    search: DirectorySearch,
) -> Result<Message, Refusal> {
    let viewer = conn.user.clone().expect("registered");
    let index = &conn.ctx.directory;
    if let Err(t) = index.admit(&viewer) {
        let mut r = refuse(req, 503, "Service Unavailable", &t.to_string());
        r.push_header("Retry-After", t.retry_after.as_secs().max(1).to_string());
        return Ok(r);
    }
    let limit = search
        .max_results
        .unwrap_or(MAX_RESULTS)
        .clamp(1, MAX_RESULTS);
    let mut address = None;
    let mut rows = Vec::new();
    for (attribute, value) in search.rows {
        if attribute == SIP_ADDRESS {
            let uri = UserUri::parse(&value)
                .map_err(|e| Refusal::bad_body(format!("{SIP_ADDRESS}: {e}")))?;
            address = Some(uri);
        } else {
            let f = field(&attribute).ok_or_else(|| {
                Refusal::bad_body(format!("cannot search by the attribute {attribute:?}"))
            })?;
            rows.push((f, value));
        }
    }
    // A SIP address names one user; the other rows must match them too.
    let found = index
        .search_fields(address.as_ref(), &rows, limit)
        .map_err(|e| Refusal {
            code: 413,
            reason: "Request Entity Too Large",
            why: e.to_string(),
            fault: None,
        })?;
    let views: Vec<bool> = found
        .entries
        .iter()
        .map(|e| {
            conn.ctx
                .engine
                .directory_view(&viewer, &e.uri)
                .is_ok_and(|v| v.details)
        })
        .collect();
    let rows: Vec<SearchRow> = found
        .entries
        .iter()
        .zip(views)
        .map(|(e, details)| SearchRow {
            uri: &e.uri,
            display_name: &e.display_name,
            email: e.identity_email(),
            details: details.then_some(&**e),
        })
        .collect();
    let mut ok = response(req, 200, "OK", Some(&tag()));
    ok.push_header("Content-Type", "application/SOAP+xml");
    ok.body = directory_search_result(&rows, found.more).into_bytes();
    Ok(ok)
}
