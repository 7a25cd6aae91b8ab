//! Subscriber acknowledgement (`msrtc-presence-setsubscriber+xml`): the owner saw
//! "X added you"; the entries go.

use crate::bodies::{self, BadBody};
use crate::connection::Conn;
use crate::errors::Refusal;
use crate::reply::{response, tag};
use sip_proto::Message;

pub(crate) async fn set_subscribers(conn: &mut Conn, req: &Message) -> Result<Message, Refusal> {
    let user = conn.user.clone().expect("registered");
    let watchers =
        bodies::parse_set_subscribers(&req.body).map_err(|BadBody(why)| Refusal::bad_body(why))?;
    let engine = conn.ctx.engine.clone();
    conn.blocking(move || {
        watchers
            .iter()
            .try_for_each(|w| engine.acknowledge_subscriber(&user, w))
    })
    .await?;
    Ok(response(req, 200, "OK", Some(&tag())))
}
