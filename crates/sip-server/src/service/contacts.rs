//! The SOAP contact-list methods (MS-SIP 3.7: setContact, deleteContact, addGroup,
//! modifyGroup, deleteGroup). Each is checked against the client's `deltaNum`: a
//! request made against an older list is refused with a 409 WrongDelta fault. The
//! answer goes out before the `contactDelta` the change causes (see
//! `Conn::gate`).

use crate::connection::Conn;
use crate::errors::Refusal;
use crate::reply::{response, tag};
use crate::soap::{self, SoapContactRequest, SoapRequest};
use sip_proto::Message;

pub(crate) async fn change(
    conn: &mut Conn,
    req: &Message,
    request: SoapContactRequest,
) -> Result<Message, Refusal> {
    let user = conn.user.clone().expect("registered");
    let engine = conn.ctx.engine.clone();
    let delta = request.delta_num;
    let contact = match &request.op {
        SoapRequest::SetContact { uri, .. } => Some(uri.clone()),
        _ => None,
    };
    let (group, _) = conn
        .blocking(move || {
            engine.change_contacts(&user, contact.as_ref(), move |l| match &request.op {
                SoapRequest::SetContact {
                    uri,
                    name,
                    groups,
                    subscribed,
                } => l
                    .set_contact(uri.clone(), name, groups, *subscribed, delta)
                    .map(|_| None),
                SoapRequest::DeleteContact { uri } => l.delete_contact(uri, delta).map(|_| None),
                SoapRequest::AddGroup { name } => l.add_group(name, delta).map(Some),
                SoapRequest::ModifyGroup { id, name } => {
                    l.rename_group(*id, name, delta).map(|_| None)
                }
                SoapRequest::DeleteGroup { id } => l.delete_group(*id, delta).map(|_| None),
            })
        })
        .await?;
    let mut ok = response(req, 200, "OK", Some(&tag()));
    if let Some(id) = group {
        ok.push_header("Content-Type", "application/SOAP+xml");
        ok.body = soap::soap_add_group_result(id).into_bytes();
    }
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use crate::testing::*;
    use sip_proto::Method;

    fn soap(method: &str, fields: &str, delta: u32) -> String {
        format!(
            "<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\" xmlns:m=\"http://schemas.microsoft.com/winrtc/2002/11/sip\">\
             <s:Body><m:{method}>{fields}<m:deltaNum>{delta}</m:deltaNum></m:{method}></s:Body></s:Envelope>"
        )
    }

    fn service(body: &str) -> sip_proto::Message {
        request(
            Method::Service,
            "alice@example.com",
            "soap",
            None,
            &[("Content-Type", "application/SOAP+xml")],
            body,
        )
    }

    #[tokio::test]
    async fn answers_precede_the_deltas_they_cause() {
        let fx = Fixture::new(&["alice@example.com", "bob@example.com"]);
        let (mut conn, mut out) = fx.registered("alice@example.com").await;
        let sub = request(
            Method::Subscribe,
            "alice@example.com",
            "rc",
            None,
            &[
                ("Event", "vnd-microsoft-roaming-contacts"),
                ("Supported", "ms-benotify"),
            ],
            "",
        );
        conn.handle(sub).await;
        assert!(body(&out.next().await).starts_with("<contactList deltaNum=\"1\">"));

        conn.handle(service(&soap("addGroup", "<m:name>Team</m:name>", 1)))
            .await;
        let answer = out.next().await;
        assert_eq!(status(&answer), 200, "the answer first");
        assert!(body(&answer).contains("<m:groupID>2</m:groupID>"));
        let delta = out.next().await;
        assert_eq!(delta.method(), Some(&Method::Benotify));
        assert_eq!(
            delta.header("Event"),
            Some("vnd-microsoft-roaming-contacts")
        );
        assert_eq!(
            body(&delta),
            "<contactDelta deltaNum=\"2\" prevDeltaNum=\"1\"><addedGroup id=\"2\" name=\"Team\" externalURI=\"\"/></contactDelta>"
        );

        let set = "<m:displayName>B</m:displayName><m:groups>1 2</m:groups><m:subscribed>true</m:subscribed><m:URI>bob@example.com</m:URI>";
        conn.handle(service(&soap("setContact", set, 2))).await;
        assert_eq!(status(&out.next().await), 200);
        let delta = body(&out.next().await);
        assert!(delta.starts_with("<contactDelta deltaNum=\"3\" prevDeltaNum=\"2\"><addedContact uri=\"sip:bob@example.com\" name=\"B\" groups=\"1 2\""), "{delta}");

        // Made against delta 2, which is gone: refused with the fault, nothing changes.
        conn.handle(service(&soap(
            "deleteContact",
            "<m:URI>bob@example.com</m:URI>",
            2,
        )))
        .await;
        let stale = out.next().await;
        assert_eq!(status(&stale), 409);
        assert!(body(&stale).contains("<contactList deltaNum=\"3\"/>"));
        out.assert_empty().await;

        // Deleting the group moves bob out of it, in one delta.
        conn.handle(service(&soap("deleteGroup", "<m:groupID>2</m:groupID>", 3)))
            .await;
        assert_eq!(status(&out.next().await), 200);
        let delta = body(&out.next().await);
        assert!(
            delta.contains("<modifiedContact uri=\"sip:bob@example.com\" name=\"B\" groups=\"1\""),
            "{delta}"
        );
        assert!(delta.contains("<deletedGroup id=\"2\"/>"), "{delta}");
    }

    #[tokio::test]
    async fn refusals_follow_the_error_table() {
        let fx = Fixture::new(&["alice@example.com"]);
        let (mut conn, _out) = fx.registered("alice@example.com").await;
        let cases = [
            (soap("deleteGroup", "<m:groupID>9</m:groupID>", 1), 404),
            (soap("deleteGroup", "<m:groupID>1</m:groupID>", 1), 403),
            (soap("addGroup", "<m:name>~</m:name>", 1), 409),
            (
                soap("setContact", "<m:URI>ghost@example.com</m:URI>", 1),
                404,
            ),
            (soap("frobnicate", "", 1), 400),
        ];
        for (body, code) in cases {
            let r = conn.answer(&service(&body)).await.unwrap();
            assert_eq!(status(&r), code, "{body}");
            assert!(r.header("Warning").is_some(), "a reason the client shows");
        }
    }
}
