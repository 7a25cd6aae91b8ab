//! Category publication (`msrtc-category-publish+xml`). The 200 carries the owner's
//! view of the published categories, from which SIPE takes its versions.

use crate::bodies::{self, BadBody, ROAMING_SELF_TYPE};
use crate::connection::Conn;
use crate::errors::Refusal;
use crate::reply::{response, tag};
use presence_engine::CategoryView;
use presence_model::CategoryInstance;
use sip_proto::Message;
use std::sync::Arc;

pub(crate) async fn publish(conn: &mut Conn, req: &Message) -> Result<Message, Refusal> {
    let user = conn.user.clone().expect("registered");
    let endpoint = conn.session.as_ref().expect("registered").endpoint();
    let items =
        bodies::parse_publish(&req.body, &user).map_err(|BadBody(why)| Refusal::bad_body(why))?;
    let names: Vec<String> = items.iter().map(|p| p.category.clone()).collect();
    let (engine, u) = (conn.ctx.engine.clone(), user.clone());
    let snap = conn
        .blocking(move || {
            engine.publish(&u, Some(endpoint), &items)?;
            engine.own_snapshot(&u)
        })
        .await?;
    let mut ok = response(req, 200, "OK", Some(&tag()));
    ok.push_header("Content-Type", ROAMING_SELF_TYPE);
    let views = owner_views(&snap.instances, &names);
    ok.body = bodies::roaming_data(&user, &views, None, None).into_bytes();
    Ok(ok)
}

/// Owner views of the named categories.
fn owner_views(instances: &[CategoryInstance], names: &[String]) -> Vec<Arc<CategoryView>> {
    let mut names: Vec<&String> = names.iter().collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .map(|n| {
            let own: Vec<_> = instances
                .iter()
                .filter(|i| &*i.key.category == n.as_str())
                .cloned()
                .collect();
            Arc::new(CategoryView::new(Arc::from(n.as_str()), true, own))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use crate::testing::*;
    use sip_proto::Method;

    fn publish(version: u32) -> sip_proto::Message {
        let body = format!(
            "<publish xmlns=\"http://schemas.microsoft.com/2006/09/sip/rich-presence\"><publications uri=\"sip:alice@example.com\">\
             <publication categoryName=\"note\" instance=\"0\" container=\"200\" version=\"{version}\" expireType=\"static\">\
             <note xmlns=\"http://schemas.microsoft.com/2006/09/sip/note\"><body type=\"personal\" uri=\"\">Hi</body></note>\
             </publication></publications></publish>"
        );
        request(
            Method::Service,
            "alice@example.com",
            "pub",
            None,
            &[("Content-Type", "application/msrtc-category-publish+xml")],
            &body,
        )
    }

    #[tokio::test]
    async fn publishes_and_refuses_stale_versions_with_the_fault() {
        let fx = Fixture::new(&["alice@example.com"]);
        let (mut conn, _out) = fx.registered("alice@example.com").await;
        let ok = conn.answer(&publish(0)).await.unwrap();
        assert_eq!(status(&ok), 200);
        assert_eq!(
            ok.header("Content-Type"),
            Some("application/vnd-microsoft-roaming-self+xml")
        );
        assert!(
            body(&ok).contains("container=\"200\" version=\"1\""),
            "{}",
            body(&ok)
        );
        let stale = conn.answer(&publish(0)).await.unwrap();
        assert_eq!(status(&stale), 409);
        assert!(
            body(&stale).contains("curVersion=\"1\""),
            "{}",
            body(&stale)
        );
        let mut bad = publish(1);
        bad.body = b"<publish/>".to_vec();
        assert_eq!(status(&conn.answer(&bad).await.unwrap()), 400);
    }
}
