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

#[cfg(test)]
mod tests {
    use crate::testing::*;
    use sip_proto::Method;

    #[tokio::test]
    async fn unknown_subscribers_are_not_found() {
        let fx = Fixture::new(&["alice@example.com"]);
        let (mut conn, _out) = fx.registered("alice@example.com").await;
        let req = request(
            Method::Service,
            "alice@example.com",
            "ack",
            None,
            &[(
                "Content-Type",
                "application/msrtc-presence-setsubscriber+xml",
            )],
            "<setSubscribers xmlns=\"http://schemas.microsoft.com/2006/09/sip/presence-subscribers\">\
             <subscriber user=\"bob@example.com\" acknowledged=\"true\"/></setSubscribers>",
        );
        let r = conn.answer(&req).await.unwrap();
        assert_eq!(status(&r), 404);
    }
}
