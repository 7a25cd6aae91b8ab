//! Container membership (`msrtc-setcontainermembers+xml`): the 200 carries the
//! changed containers with their new versions.

use crate::bodies::{self, BadBody, ROAMING_SELF_TYPE};
use crate::connection::Conn;
use crate::errors::Refusal;
use crate::reply::{response, tag};
use sip_proto::Message;

pub(crate) async fn set_members(conn: &mut Conn, req: &Message) -> Result<Message, Refusal> {
    let user = conn.user.clone().expect("registered");
    let updates = bodies::parse_set_container_members(&req.body)
        .map_err(|BadBody(why)| Refusal::bad_body(why))?;
    let (engine, u) = (conn.ctx.engine.clone(), user.clone());
    let changed = conn
        .blocking(move || engine.update_containers(&u, &updates))
        .await?;
    let mut ok = response(req, 200, "OK", Some(&tag()));
    ok.push_header("Content-Type", ROAMING_SELF_TYPE);
    ok.body = bodies::roaming_data(&user, &[], Some(&changed), None).into_bytes();
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use crate::testing::*;
    use presence_model::limits::MAX_MEMBERS_PER_CONTAINER;
    use sip_proto::Method;

    fn set_members(version: u32, members: &str) -> sip_proto::Message {
        request(
            Method::Service,
            "alice@example.com",
            "members",
            None,
            &[("Content-Type", "application/msrtc-setcontainermembers+xml")],
            &format!(
                "<setContainerMembers xmlns=\"http://schemas.microsoft.com/2006/09/sip/container-management\">\
                 <container id=\"32000\" version=\"{version}\">{members}</container></setContainerMembers>"
            ),
        )
    }

    #[tokio::test]
    async fn membership_changes_and_their_refusals() {
        let fx = Fixture::new(&["alice@example.com"]);
        let (mut conn, _out) = fx.registered("alice@example.com").await;
        let bob = "<member action=\"add\" type=\"user\" value=\"bob@example.com\"/>";
        // The Blocked container starts at version 1.
        let ok = conn.answer(&set_members(1, bob)).await.unwrap();
        assert_eq!(status(&ok), 200, "{}", body(&ok));
        assert!(body(&ok).contains("<container id=\"32000\" version=\"2\"><member type=\"user\" value=\"bob@example.com\"/>"), "{}", body(&ok));
        let stale = conn.answer(&set_members(1, bob)).await.unwrap();
        assert_eq!(status(&stale), 409);
        assert!(body(&stale).contains("Client.BadCall.WrongDelta"));
        // Over the membership limit: 413, as over HTTP.
        let many: String = (0..=MAX_MEMBERS_PER_CONTAINER)
            .map(|i| format!("<member action=\"add\" type=\"user\" value=\"u{i}@example.com\"/>"))
            .collect();
        let r = conn.answer(&set_members(2, &many)).await.unwrap();
        assert_eq!(status(&r), 413);
    }
}
