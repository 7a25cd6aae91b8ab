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
