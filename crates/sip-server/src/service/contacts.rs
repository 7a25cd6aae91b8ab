//! The SOAP contact-list methods (MS-SIP 3.7: setContact, deleteContact, addGroup,
//! modifyGroup, deleteGroup). Each is checked against the client's `deltaNum`: a
//! request made against an older list is refused with a 409 WrongDelta fault. The
//! answer goes out before the `contactDelta` the change causes (see
//! `Conn::gate`).

use crate::bodies::{self, BadBody, SoapRequest};
use crate::connection::Conn;
use crate::errors::Refusal;
use crate::reply::{response, tag};
use sip_proto::Message;

pub(crate) async fn soap(conn: &mut Conn, req: &Message) -> Result<Message, Refusal> {
    let user = conn.user.clone().expect("registered");
    let request = bodies::parse_soap(&req.body).map_err(|BadBody(why)| Refusal::bad_body(why))?;
    let engine = conn.ctx.engine.clone();
    let delta = request.delta_num;
    let contact = match &request.op {
        SoapRequest::SetContact { uri, .. } => Some(uri.clone()),
        _ => None,
    };
    let (group, _) = conn
        .blocking(move || {
            engine.change_contacts(&user, contact.as_ref(), move |l| match request.op {
                SoapRequest::SetContact {
                    uri,
                    name,
                    groups,
                    subscribed,
                } => l
                    .set_contact(uri, &name, &groups, subscribed, delta)
                    .map(|_| None),
                SoapRequest::DeleteContact { uri } => l.delete_contact(&uri, delta).map(|_| None),
                SoapRequest::AddGroup { name } => l.add_group(&name, delta).map(Some),
                SoapRequest::ModifyGroup { id, name } => {
                    l.rename_group(id, &name, delta).map(|_| None)
                }
                SoapRequest::DeleteGroup { id } => l.delete_group(id, delta).map(|_| None),
            })
        })
        .await?;
    let mut ok = response(req, 200, "OK", Some(&tag()));
    if let Some(id) = group {
        ok.push_header("Content-Type", "application/SOAP+xml");
        ok.body = bodies::soap_add_group_result(id).into_bytes();
    }
    Ok(ok)
}
