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
