//! JSON shapes of the API: instances (with decoded summaries), containers, members,
//! subscribers, and the WebSocket messages built from engine deliveries.

use crate::error::ApiError;
use presence_engine::{CategoryView, SelfUpdate, WireFormat};
use presence_model::contacts::ContactList;
use presence_model::summary::summarize;
use presence_model::{CategoryInstance, Container, Member, SubscriberEntry};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::sync::Arc;

/// One instance; `owner` adds container, version and expire type.
pub fn instance(i: &CategoryInstance, owner: bool) -> Value {
    let mut o = Map::new();
    o.insert("name".into(), json!(&*i.key.category));
    o.insert("instance".into(), json!(i.key.instance));
    if owner {
        o.insert("container".into(), json!(i.key.container.get()));
        o.insert("version".into(), json!(i.version));
        o.insert("expire_type".into(), json!(i.expiry.expire_type().as_str()));
        if let presence_model::Expiry::Time { at, .. } = i.expiry {
            o.insert("expires_at".into(), json!(at.to_rfc3339()));
        }
    }
    o.insert("publish_time".into(), json!(i.publish_time.to_rfc3339()));
    o.insert("value".into(), json!(&*i.value));
    if let Some(s) = summarize(&i.key.category, &i.value) {
        let mut m = Map::new();
        if let Some(a) = s.availability {
            m.insert("availability".into(), json!(a));
        }
        if let Some(c) = s.availability_class {
            m.insert("availability_class".into(), json!(c));
        }
        if let Some(a) = s.activity {
            m.insert("activity".into(), json!(a));
        }
        if let Some(n) = s.note {
            m.insert("note".into(), json!(n));
        }
        if let Some(d) = s.display_name {
            m.insert("display_name".into(), json!(d));
        }
        o.insert("summary".into(), Value::Object(m));
    }
    Value::Object(o)
}

pub fn member(m: &Member) -> Value {
    match m.value() {
        Some(v) => json!({"type": m.kind(), "value": v}),
        None => json!({"type": m.kind()}),
    }
}

pub fn container(c: &Container) -> Value {
    json!({
        "id": c.id.get(),
        "version": c.version,
        "members": c.members.iter().map(member).collect::<Vec<_>>(),
    })
}

pub fn contact_list(l: &ContactList) -> Value {
    json!({
        "delta_num": l.delta_num,
        "groups": l.groups.iter().map(|g| json!({"id": g.id, "name": g.name})).collect::<Vec<_>>(),
        "contacts": l.contacts.iter().map(|c| json!({
            "uri": c.uri.as_str(),
            "name": c.name,
            "groups": c.groups,
            "subscribed": c.subscribed,
        })).collect::<Vec<_>>(),
    })
}

pub fn subscriber(s: &SubscriberEntry) -> Value {
    json!({
        "user": s.user.as_str(),
        "display_name": s.display_name,
        "type": s.kind.as_str(),
        "acknowledged": s.acknowledged,
        "since": s.since.to_rfc3339(),
    })
}

/// A member as clients write it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberIn {
    #[serde(rename = "type")]
    pub kind: String,
    pub value: Option<String>,
}

impl MemberIn {
    pub fn parse(&self) -> Result<Member, ApiError> {
        Member::from_parts(&self.kind, self.value.as_deref())
            .map_err(|e| ApiError::bad_request(e.to_string()))
    }
}

/// The instances of a view as comma-separated JSON objects, encoded once per view.
fn view_fragment(view: &CategoryView) -> &str {
    view.encoded(WireFormat::Json, |v| {
        v.instances
            .iter()
            .map(|i| instance(i, v.owner).to_string())
            .collect::<Vec<_>>()
            .join(",")
    })
}

fn names_and_categories(out: &mut String, views: &[Arc<CategoryView>]) {
    out.push_str("\"names\":");
    let names: Vec<&str> = views.iter().map(|v| &*v.name).collect();
    out.push_str(&serde_json::to_string(&names).expect("strings encode"));
    out.push_str(",\"categories\":[");
    let mut first = true;
    for v in views {
        let frag = view_fragment(v);
        if frag.is_empty() {
            continue;
        }
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(frag);
    }
    out.push(']');
}

/// `{"type":"categories","uri","names","categories"}` for a watched presentity.
pub fn categories_message(uri: &str, views: &[Arc<CategoryView>]) -> String {
    let mut out = String::with_capacity(256);
    out.push_str("{\"type\":\"categories\",\"uri\":");
    out.push_str(&serde_json::to_string(uri).expect("strings encode"));
    out.push(',');
    names_and_categories(&mut out, views);
    out.push('}');
    out
}

/// `{"type":"self","names","categories","containers"?,"subscribers"?}`.
pub fn self_message(update: &SelfUpdate) -> String {
    let mut out = String::with_capacity(512);
    out.push_str("{\"type\":\"self\",");
    names_and_categories(&mut out, &update.categories);
    if let Some(c) = &update.containers {
        out.push_str(",\"containers\":");
        out.push_str(&Value::Array(c.iter().map(container).collect()).to_string());
    }
    if let Some(s) = &update.subscribers {
        out.push_str(",\"subscribers\":");
        out.push_str(&Value::Array(s.iter().map(subscriber).collect()).to_string());
    }
    if let Some(c) = &update.contacts {
        out.push_str(",\"contacts\":");
        out.push_str(&contact_list(c).to_string());
    }
    out.push('}');
    out
}

pub fn error_message(id: Option<&str>, err: &ApiError) -> String {
    let mut body = err.body();
    body["type"] = json!("error");
    if let Some(id) = id {
        body["id"] = json!(id);
    }
    body.to_string()
}
