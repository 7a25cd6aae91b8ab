//! MS-PRES bodies: what clients send (publish, setContainerMembers, setSubscribers,
//! batchSub, SOAP contact methods) and what the server sends (roamingData,
//! categories, contactList, the 409 fault).

use presence_engine::{CategoryView, WireFormat};
use presence_model::Timestamp;
use presence_model::aggregation::{BLOCKED_AVAILABILITY, STATE_NS};
use presence_model::contacts::{Contact, ContactList, DEFAULT_GROUP, Group};
use presence_model::membership::ContainerUpdate;
use presence_model::publication::Conflict;
use presence_model::xml::{self, Element, escape};
use presence_model::{
    CategoryInstance, Container, ContainerId, ExpireType, Member, Publication, SubscriberEntry,
    UserUri,
};
use std::fmt::Write;
use std::sync::Arc;

pub const ROAMING_SELF_NS: &str = "http://schemas.microsoft.com/2006/09/sip/roaming-self";
pub const CATEGORIES_NS: &str = "http://schemas.microsoft.com/2006/09/sip/categories";
pub const CONTAINERS_NS: &str = "http://schemas.microsoft.com/2006/09/sip/container-management";
pub const SUBSCRIBERS_NS: &str = "http://schemas.microsoft.com/2006/09/sip/presence-subscribers";

pub const ROAMING_SELF_TYPE: &str = "application/vnd-microsoft-roaming-self+xml";
pub const ROAMING_CONTACTS_TYPE: &str = "application/vnd-microsoft-roaming-contacts+xml";
pub const CATEGORIES_TYPE: &str = "application/msrtc-event-categories+xml";
pub const FAULT_TYPE: &str = "application/msrtc-fault+xml";

/// A body that cannot be used, with the reason for the 400.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadBody(pub String);

pub(crate) fn bad(msg: impl Into<String>) -> BadBody {
    BadBody(msg.into())
}

pub(crate) fn root(body: &[u8]) -> Result<Element, BadBody> {
    let text = std::str::from_utf8(body).map_err(|_| bad("the body is not UTF-8"))?;
    xml::parse_document(text).map_err(|e| bad(e.to_string()))
}

fn num<T: std::str::FromStr>(el: &Element, attr: &str) -> Result<T, BadBody> {
    el.attr(attr)
        .ok_or_else(|| bad(format!("<{}> lacks {attr}", el.name)))?
        .parse()
        .map_err(|_| bad(format!("<{}>: {attr} is not a number", el.name)))
}

/// The publications of a `<publish>` body, for the publishing user.
pub fn parse_publish(body: &[u8], user: &UserUri) -> Result<Vec<Publication>, BadBody> {
    let publish = root(body)?;
    let pubs = publish
        .child("publications")
        .ok_or_else(|| bad("no <publications>"))?;
    if let Some(uri) = pubs.attr("uri")
        && UserUri::parse(uri).ok().as_ref() != Some(user)
    {
        return Err(bad("publications/@uri is not the registered user"));
    }
    pubs.elements()
        .filter(|e| e.name == "publication")
        .map(|p| {
            let expire_type = p.attr("expireType").unwrap_or("endpoint");
            let container: u64 = num(p, "container")?;
            Ok(Publication {
                category: p
                    .attr("categoryName")
                    .ok_or_else(|| bad("publication lacks categoryName"))?
                    .to_string(),
                instance: num(p, "instance")?,
                container: ContainerId::new(container).map_err(|e| bad(e.to_string()))?,
                version: num(p, "version")?,
                expire_type: ExpireType::parse(expire_type)
                    .ok_or_else(|| bad(format!("unknown expireType {expire_type:?}")))?,
                expires: p.attr("expires").map(|_| num(p, "expires")).transpose()?,
                value: p.elements().next().map(Element::to_xml),
            })
        })
        .collect()
}

/// The container changes of a `<setContainerMembers>` body.
pub fn parse_set_container_members(body: &[u8]) -> Result<Vec<ContainerUpdate>, BadBody> {
    let root = root(body)?;
    root.elements()
        .filter(|e| e.name == "container")
        .map(|c| {
            let id: u64 = num(c, "id")?;
            let mut update = ContainerUpdate {
                id: ContainerId::new(id).map_err(|e| bad(e.to_string()))?,
                version: num(c, "version")?,
                add: Vec::new(),
                remove: Vec::new(),
            };
            for m in c.elements().filter(|e| e.name == "member") {
                let member = Member::from_parts(m.attr("type").unwrap_or(""), m.attr("value"))
                    .map_err(|e| bad(e.to_string()))?;
                match m.attr("action") {
                    Some("add") => update.add.push(member),
                    Some("remove") => update.remove.push(member),
                    other => return Err(bad(format!("member action {other:?}"))),
                }
            }
            Ok(update)
        })
        .collect()
}

/// The users a `<setSubscribers>` body acknowledges.
pub fn parse_set_subscribers(body: &[u8]) -> Result<Vec<UserUri>, BadBody> {
    let root = root(body)?;
    root.elements()
        .filter(|e| e.name == "subscriber" && e.attr("acknowledged") == Some("true"))
        .map(|s| UserUri::parse(s.attr("user").unwrap_or("")).map_err(|e| bad(e.to_string())))
        .collect()
}

/// One resource of a batched presence subscription.
pub struct Resource {
    pub uri: UserUri,
    /// Subscribed with a context: the watcher goes into the target's subscriber list.
    pub context: bool,
}

/// The resources and categories of a `<batchSub>` body.
pub fn parse_batch_sub(body: &[u8]) -> Result<(Vec<Resource>, Vec<String>), BadBody> {
    let root = root(body)?;
    let action = root.child("action").ok_or_else(|| bad("no <action>"))?;
    let list = action
        .child("adhocList")
        .ok_or_else(|| bad("no <adhocList>"))?;
    let resources = list
        .elements()
        .filter(|e| e.name == "resource")
        .map(|r| {
            Ok(Resource {
                uri: UserUri::parse(r.attr("uri").unwrap_or("")).map_err(|e| bad(e.to_string()))?,
                context: r.child("context").is_some(),
            })
        })
        .collect::<Result<_, BadBody>>()?;
    let categories = action
        .child("categoryList")
        .map(|l| {
            l.elements()
                .filter_map(|c| c.attr("name").map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    Ok((resources, categories))
}

fn category(out: &mut String, i: &CategoryInstance, owner: bool) {
    let _ = write!(
        out,
        "<category name=\"{}\" instance=\"{}\" publishTime=\"{}\"",
        escape(&i.key.category),
        i.key.instance,
        i.publish_time.to_ms_pres()
    );
    if owner {
        let _ = write!(
            out,
            " container=\"{}\" version=\"{}\" expireType=\"{}\"",
            i.key.container.get(),
            i.version,
            i.expiry.expire_type().as_str()
        );
        if let presence_model::Expiry::Time { secs, .. } = i.expiry {
            let _ = write!(out, " expires=\"{secs}\"");
        }
    }
    out.push('>');
    out.push_str(&i.value);
    out.push_str("</category>");
}

/// A `<categories>` document of one presentity: the instances of each view, and an
/// empty `<category name=.../>` for a view with none (MS-PRES: nothing visible).
///
/// Each view's XML is rendered once and cached in the view, which the engine shares
/// among every watcher with the same view of the presentity.
///
/// One exception for watchers: SIPE ignores a `state` category without a `<state>`
/// element, so a watcher's empty state view is sent as the offline aggregate (18500),
/// stamped with the time it was first rendered; the JSON side keeps "nothing visible".
pub fn watcher_categories(uri: &UserUri, views: &[Arc<CategoryView>], now: Timestamp) -> String {
    let mut out = categories_open(uri);
    for v in views {
        out.push_str(v.encoded(WireFormat::Xml, |v| render_view(v, Some(now))));
    }
    out.push_str("</categories>");
    out
}

/// A `<categories>` document as it is (the owner's roaming data).
fn categories(uri: &UserUri, views: &[Arc<CategoryView>]) -> String {
    let mut out = categories_open(uri);
    for v in views {
        out.push_str(&render_view(v, None));
    }
    out.push_str("</categories>");
    out
}

fn categories_open(uri: &UserUri) -> String {
    format!(
        "<categories xmlns=\"{CATEGORIES_NS}\" uri=\"{}\">",
        escape(&uri.to_sip())
    )
}

fn render_view(v: &CategoryView, offline_at: Option<Timestamp>) -> String {
    let mut out = String::new();
    if let Some(now) =
        offline_at.filter(|_| v.instances.is_empty() && &*v.name == "state" && !v.owner)
    {
        let _ = write!(
            out,
            "<category name=\"state\" instance=\"1\" publishTime=\"{}\"><state xmlns=\"{STATE_NS}\" \
             xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" xsi:type=\"aggregateState\">\
             <availability>{BLOCKED_AVAILABILITY}</availability></state></category>",
            now.to_ms_pres()
        );
    } else if v.instances.is_empty() {
        let _ = write!(out, "<category name=\"{}\"/>", escape(&v.name));
    }
    for i in &v.instances {
        category(&mut out, i, v.owner);
    }
    out
}

fn containers(out: &mut String, list: &[Container]) {
    let _ = write!(out, "<containers xmlns=\"{CONTAINERS_NS}\">");
    for c in list {
        let _ = write!(
            out,
            "<container id=\"{}\" version=\"{}\">",
            c.id.get(),
            c.version
        );
        for m in &c.members {
            match m.value() {
                Some(v) => {
                    let _ = write!(
                        out,
                        "<member type=\"{}\" value=\"{}\"/>",
                        m.kind(),
                        escape(v)
                    );
                }
                None => {
                    let _ = write!(out, "<member type=\"{}\"/>", m.kind());
                }
            }
        }
        out.push_str("</container>");
    }
    out.push_str("</containers>");
}

fn subscribers(out: &mut String, list: &[SubscriberEntry]) {
    let _ = write!(out, "<subscribers xmlns=\"{SUBSCRIBERS_NS}\">");
    for s in list {
        let _ = write!(
            out,
            "<subscriber user=\"{}\" displayName=\"{}\" acknowledged=\"{}\" type=\"{}\"/>",
            escape(s.user.as_str()),
            escape(&s.display_name),
            s.acknowledged,
            s.kind.as_str()
        );
    }
    out.push_str("</subscribers>");
}

/// A `roamingData` document for the owner's own endpoints. `categories` are full
/// replacements of those category names; `None` parts are left out.
pub fn roaming_data(
    uri: &UserUri,
    views: &[Arc<CategoryView>],
    container_list: Option<&[Container]>,
    subscriber_list: Option<&[SubscriberEntry]>,
) -> String {
    let mut out = format!(
        "<roamingData xmlns=\"{ROAMING_SELF_NS}\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\">"
    );
    out.push_str(&categories(uri, views));
    if let Some(c) = container_list {
        containers(&mut out, c);
    }
    if let Some(s) = subscriber_list {
        subscribers(&mut out, s);
    }
    out.push_str("</roamingData>");
    out
}

fn group_xml(out: &mut String, element: &str, g: &Group) {
    let special = if g.id == DEFAULT_GROUP {
        " specialGroupId=\"1\""
    } else {
        ""
    };
    let _ = write!(
        out,
        "<{element} id=\"{}\" name=\"{}\"{special} externalURI=\"\"/>",
        g.id,
        escape(&g.name)
    );
}

/// A contact element. `uri` is written as given: the full list carries bare
/// addresses (`bob@example.com`), the deltas `sip:` URIs, because SIPE adds the
/// scheme to the first and uses the second as it is, as the key of its buddy.
fn contact_xml(out: &mut String, element: &str, c: &Contact, uri: &str) {
    let groups: Vec<String> = c.groups.iter().map(u32::to_string).collect();
    let _ = write!(
        out,
        "<{element} uri=\"{}\" name=\"{}\" groups=\"{}\" subscribed=\"{}\" externalURI=\"\"/>",
        escape(uri),
        escape(&c.name),
        groups.join(" "),
        c.subscribed
    );
}

/// The full `contactList` of roaming-contacts, sent once per subscription.
pub fn contact_list(list: &ContactList) -> String {
    let mut out = format!("<contactList deltaNum=\"{}\">", list.delta_num);
    for g in &list.groups {
        group_xml(&mut out, "group", g);
    }
    for c in &list.contacts {
        contact_xml(&mut out, "contact", c, c.uri.as_str());
    }
    out.push_str("</contactList>");
    out
}

/// A `contactDelta` taking a client from `older` to `newer` (MS-SIP 2.2.4): SIPE
/// adds from a full list but never removes, so every change after the first list
/// must come this way. Without `deleted_groups`, removed groups are left out (see
/// [`crate::dialogs::ContactsDialog`]).
pub fn contact_delta(older: &ContactList, newer: &ContactList, deleted_groups: bool) -> String {
    let d = newer.delta_since(older);
    let mut out = format!(
        "<contactDelta deltaNum=\"{}\" prevDeltaNum=\"{}\">",
        newer.delta_num, older.delta_num
    );
    for g in &d.added_groups {
        group_xml(&mut out, "addedGroup", g);
    }
    for g in &d.modified_groups {
        group_xml(&mut out, "modifiedGroup", g);
    }
    for c in &d.added_contacts {
        contact_xml(&mut out, "addedContact", c, &c.uri.to_sip());
    }
    for c in &d.modified_contacts {
        contact_xml(&mut out, "modifiedContact", c, &c.uri.to_sip());
    }
    for uri in &d.deleted_contacts {
        let _ = write!(out, "<deletedContact uri=\"{}\"/>", escape(&uri.to_sip()));
    }
    for id in d.deleted_groups.iter().filter(|_| deleted_groups) {
        let _ = write!(out, "<deletedGroup id=\"{id}\"/>");
    }
    out.push_str("</contactDelta>");
    out
}

/// The 409 fault of a contact-list change made against a stale `deltaNum`: the client
/// re-reads its list (re-subscribes to roaming-contacts) and tries again.
pub fn stale_contacts_fault(current: u32) -> String {
    format!(
        "<Fault><Faultcode>Client.BadCall.WrongDelta</Faultcode><details>\
         <contactList deltaNum=\"{current}\"/></details></Fault>"
    )
}

/// The 409 fault of a stale publication or membership change.
pub fn wrong_delta_fault(conflicts: &[Conflict]) -> String {
    let mut out = String::from("<Fault><Faultcode>Client.BadCall.WrongDelta</Faultcode><details>");
    for c in conflicts {
        let _ = write!(
            out,
            "<operation index=\"{}\" version=\"{}\" curVersion=\"{}\"/>",
            c.index, c.version, c.current_version
        );
    }
    out.push_str("</details></Fault>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(s: &str) -> UserUri {
        UserUri::parse(s).unwrap()
    }

    #[test]
    fn reads_a_sipe_publish() {
        let body = br#"<publish xmlns="http://schemas.microsoft.com/2006/09/sip/rich-presence"><publications uri="sip:alice@example.com"><publication categoryName="state" instance="1022409101" container="2" version="0" expireType="endpoint"><state xmlns="http://schemas.microsoft.com/2006/09/sip/state" manual="false" xsi:type="machineState" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><availability>3500</availability></state></publication><publication categoryName="note" instance="0" container="200" version="3" expireType="static" expires="0"/></publications></publish>"#;
        let p = parse_publish(body, &uri("alice@example.com")).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(
            (p[0].instance, p[0].container.get(), p[0].expire_type),
            (1022409101, 2, ExpireType::Endpoint)
        );
        assert!(
            p[0].value
                .as_deref()
                .unwrap()
                .contains("<availability>3500</availability>")
        );
        assert!(p[1].is_delete() && p[1].value.is_none() && p[1].version == 3);
        assert!(
            parse_publish(body, &uri("bob@example.com")).is_err(),
            "publishing for someone else"
        );
        assert!(parse_publish(b"<publish/>", &uri("alice@example.com")).is_err());
        assert!(parse_publish(b"<!DOCTYPE x><publish/>", &uri("alice@example.com")).is_err());
    }

    #[test]
    fn reads_members_subscribers_batch_and_soap() {
        let c = parse_set_container_members(br#"<setContainerMembers xmlns="http://schemas.microsoft.com/2006/09/sip/container-management"><container id="32000" version="4"><member action="add" type="user" value="bob@example.com"/></container><container id="200" version="7"><member action="remove" type="user" value="bob@example.com"/></container></setContainerMembers>"#).unwrap();
        assert_eq!(
            (c.len(), c[0].id.get(), c[0].version, c[1].remove.len()),
            (2, 32000, 4, 1)
        );
        let s = parse_set_subscribers(br#"<setSubscribers xmlns="x"><subscriber user="john@contoso.com" acknowledged="true"/></setSubscribers>"#).unwrap();
        assert_eq!(s, vec![uri("john@contoso.com")]);
        let (r, cats) = parse_batch_sub(br#"<batchSub xmlns="x" uri="sip:alice@example.com" name=""><action name="subscribe" id="1"><adhocList><resource uri="sip:bob@example.com"/><resource uri="sip:carol@example.com"><context/></resource></adhocList><categoryList xmlns="y"><category name="state"/><category name="note"/></categoryList></action></batchSub>"#).unwrap();
        assert_eq!((r.len(), r[0].context, r[1].context), (2, false, true));
        assert_eq!(cats, vec!["state", "note"]);
    }

    #[test]
    fn writes_contact_lists_and_faults() {
        let mut l = ContactList::default();
        l.set_contact(uri("bob@example.com"), "", &[], true, None)
            .unwrap();
        assert_eq!(
            contact_list(&l),
            "<contactList deltaNum=\"2\"><group id=\"1\" name=\"~\" specialGroupId=\"1\" externalURI=\"\"/><contact uri=\"bob@example.com\" name=\"\" groups=\"1\" subscribed=\"true\" externalURI=\"\"/></contactList>"
        );
        let older = l.clone();
        let team = l.add_group("Team & co", None).unwrap();
        l.set_contact(uri("bob@example.com"), "B", &[1, team], true, None)
            .unwrap();
        l.set_contact(uri("carol@example.com"), "", &[team], true, None)
            .unwrap();
        assert_eq!(
            contact_delta(&older, &l, true),
            "<contactDelta deltaNum=\"5\" prevDeltaNum=\"2\"><addedGroup id=\"2\" name=\"Team &amp; co\" externalURI=\"\"/><addedContact uri=\"sip:carol@example.com\" name=\"\" groups=\"2\" subscribed=\"true\" externalURI=\"\"/><modifiedContact uri=\"sip:bob@example.com\" name=\"B\" groups=\"1 2\" subscribed=\"true\" externalURI=\"\"/></contactDelta>"
        );
        let newer = {
            let mut n = l.clone();
            n.delete_contact(&uri("carol@example.com"), None).unwrap();
            n.delete_group(team, None).unwrap();
            n
        };
        let d = contact_delta(&l, &newer, true);
        assert!(!contact_delta(&l, &newer, false).contains("deletedGroup"));
        assert!(
            d.contains("<deletedContact uri=\"sip:carol@example.com\"/><deletedGroup id=\"2\"/>"),
            "{d}"
        );
        assert!(
            d.contains("<modifiedContact uri=\"sip:bob@example.com\" name=\"B\" groups=\"1\""),
            "{d}"
        );
        assert!(xml::parse(&d).is_ok());
        let f = wrong_delta_fault(&[Conflict {
            index: 1,
            version: 1,
            current_version: 2,
        }]);
        assert!(f.contains("<operation index=\"1\" version=\"1\" curVersion=\"2\"/>"));
        assert!(xml::parse(&f).is_ok());
    }
}
