//! SERVICE: MS-PRES operations, one module per body type. Each turns the request
//! into one engine call and the engine's result into the answer.

mod contacts;
mod directory;
mod members;
mod publish;
mod subscribers;

use crate::bodies::BadBody;
use crate::connection::Conn;
use crate::errors::Refusal;
use crate::reply::token;
use crate::soap::{self, Soap};
use sip_proto::Message;

pub(crate) async fn service(conn: &mut Conn, req: &Message) -> Message {
    let content_type = token(req, "Content-Type");
    let outcome = match content_type.as_str() {
        "application/msrtc-category-publish+xml" => publish::publish(conn, req).await,
        "application/msrtc-setcontainermembers+xml" => members::set_members(conn, req).await,
        "application/msrtc-presence-setsubscriber+xml" => {
            subscribers::set_subscribers(conn, req).await
        }
        "application/soap+xml" => match soap::parse_soap(&req.body) {
            Err(BadBody(why)) => Err(Refusal::bad_body(why)),
            Ok(Soap::Contacts(request)) => contacts::change(conn, req, request).await,
            Ok(Soap::DirectorySearch(search)) => directory::search(conn, req, search),
        },
        _ => Err(Refusal {
            code: 415,
            reason: "Unsupported Media Type",
            why: format!("unsupported body type {content_type:?}"),
            fault: None,
        }),
    };
    outcome.unwrap_or_else(|refusal| refusal.into_response(req))
}
