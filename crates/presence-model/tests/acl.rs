//! Access control: which container a watcher resolves to and what it may see there.

mod common;

use common::*;
use presence_model::acl::{
    self, PRIVATE_CATEGORIES, Relation, View, Viewer, is_private, resolve_container,
    visible_instances,
};
use presence_model::container::{Container, ContainerId, Member};
use presence_model::document::{ChangeSet, PresentityDoc};
use presence_model::instance::{EndpointId, InstanceKey};
use presence_model::membership::{ContainerUpdate, MembershipError};
use presence_model::publication::Conflict;
use presence_model::uri::UserUri;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

fn watcher(uri: &UserUri, relation: Relation) -> Viewer<'_> {
    Viewer::Watcher { uri, relation }
}

fn view_of(doc: &PresentityDoc, u: &str, relation: Relation) -> View {
    let u = uri(u);
    resolve_container(doc, watcher(&u, relation))
}

fn set_members(doc: &mut PresentityDoc, id: u64, members: Vec<Member>) {
    let current = doc.container(cid(id));
    let version = current.map_or(0, |c| c.version);
    let remove = current.map_or(vec![], |c| c.members.clone());
    let remove = remove
        .into_iter()
        .filter(|m| !members.contains(m))
        .collect();
    doc.update_containers(&[ContainerUpdate {
        id: cid(id),
        version,
        add: members,
        remove,
    }])
    .unwrap();
}

/// Puts members into containers the API refuses to touch (0-3), the way a corrupt or
/// hand-edited store record could.
fn force_members(
    doc: &PresentityDoc,
    clock: &TestClock,
    forced: &[(u64, Vec<Member>)],
) -> PresentityDoc {
    let mut record = doc.to_record(presence_model::document::RecordScope::Durable);
    for (id, members) in forced {
        match record.containers.iter_mut().find(|c| c.id == cid(*id)) {
            Some(c) => c.members = members.clone(),
            None => record.containers.push(Container {
                id: cid(*id),
                version: 1,
                members: members.clone(),
            }),
        }
    }
    let mut doc = PresentityDoc::restore(record, &ctx(clock, true));
    doc.reaggregate(&ctx(clock, true), &mut ChangeSet::default());
    doc
}

fn keys(list: &[&presence_model::CategoryInstance]) -> Vec<(u16, u32)> {
    list.iter()
        .map(|i| (i.key.container.get(), i.key.instance))
        .collect()
}

// ---------------------------------------------------------------- resolution

#[test]
fn the_owner_sees_everything() {
    let clock = TestClock::new();
    let ctx = ctx(&clock, true);
    let mut doc = new_doc(&clock);
    publish_ok(
        &mut doc,
        &[
            static_pub("routing", 0, 1, 0, "<routing/>"),
            static_pub("routing", 0, 200, 0, "<routing/>"),
            static_pub("note", 0, 2, 0, "<note/>"),
            static_pub("note", 0, 200, 0, "<note/>"),
        ],
        None,
        &ctx,
    );
    assert_eq!(resolve_container(&doc, Viewer::Owner), View::Owner);
    // The owner watching with their own URI is the owner too.
    assert_eq!(
        view_of(&doc, "alice@example.com", Relation::SameEnterprise),
        View::Owner
    );
    assert_eq!(
        view_of(&doc, "SIP:Alice@Example.com", Relation::Other),
        View::Owner
    );
    assert_eq!(
        keys(&visible_instances(&doc, View::Owner, "routing")),
        vec![(1, 0), (200, 0)]
    );
    assert_eq!(
        keys(&visible_instances(&doc, View::Owner, "note")),
        vec![(2, 0), (200, 0)]
    );
    assert_eq!(
        visible_instances(&doc, View::Owner, "state").len(),
        1,
        "the blocked view's aggregate"
    );
}

#[test]
fn default_memberships_resolve_by_network() {
    let clock = TestClock::new();
    let doc = new_doc(&clock);
    assert_eq!(
        view_of(&doc, "bob@example.com", Relation::SameEnterprise),
        View::Container(cid(200))
    );
    assert_eq!(
        view_of(&doc, "carol@partner.com", Relation::Federated),
        View::Container(cid(100))
    );
    assert_eq!(
        view_of(&doc, "dave@live.com", Relation::PublicCloud),
        View::Container(ContainerId::DEFAULT)
    );
    assert_eq!(
        view_of(&doc, "eve@random.org", Relation::Other),
        View::Container(ContainerId::DEFAULT)
    );
}

#[test]
fn user_beats_domain_beats_network_beats_everyone_whatever_the_ids() {
    let clock = TestClock::new();
    let mut doc = new_doc(&clock);
    // Least specific classes sit in the highest containers.
    set_members(&mut doc, 100, vec![user("bob@x.com")]);
    set_members(&mut doc, 300, vec![domain("x.com"), domain("y.org")]);
    set_members(&mut doc, 400, vec![Member::SameEnterprise]);
    set_members(&mut doc, 1000, vec![Member::Everyone]);
    set_members(&mut doc, 32000, vec![Member::Everyone]);

    // bob matches all four classes: his user entry decides.
    assert_eq!(
        view_of(&doc, "bob@x.com", Relation::SameEnterprise),
        View::Container(cid(100))
    );
    // carol matches domain, network and everyone.
    assert_eq!(
        view_of(&doc, "carol@x.com", Relation::SameEnterprise),
        View::Container(cid(300))
    );
    // dave matches network and everyone.
    assert_eq!(
        view_of(&doc, "dave@z.net", Relation::SameEnterprise),
        View::Container(cid(400))
    );
    // erin matches only everyone: the highest such container.
    assert_eq!(
        view_of(&doc, "erin@z.net", Relation::Other),
        View::Container(cid(32000))
    );
}

#[test]
fn a_user_entry_in_100_beats_same_enterprise_in_400() {
    let clock = TestClock::new();
    let mut doc = new_doc(&clock);
    set_members(
        &mut doc,
        100,
        vec![Member::Federated, user("bob@example.com")],
    );
    set_members(&mut doc, 400, vec![Member::SameEnterprise]);
    assert_eq!(
        view_of(&doc, "bob@example.com", Relation::SameEnterprise),
        View::Container(cid(100))
    );
    assert_eq!(
        view_of(&doc, "carol@example.com", Relation::SameEnterprise),
        View::Container(cid(400))
    );
}

#[test]
fn within_a_class_the_highest_id_wins() {
    let clock = TestClock::new();
    let mut doc = new_doc(&clock);
    set_members(
        &mut doc,
        200,
        vec![Member::SameEnterprise, user("bob@example.com")],
    );
    set_members(&mut doc, 32000, vec![user("bob@example.com")]);
    set_members(&mut doc, 300, vec![domain("y.org")]);
    set_members(&mut doc, 401, vec![domain("y.org")]);
    set_members(&mut doc, 400, vec![Member::Federated]);
    set_members(&mut doc, 4, vec![Member::Everyone]);
    set_members(&mut doc, 1000, vec![Member::Everyone]);
    assert_eq!(
        view_of(&doc, "bob@example.com", Relation::SameEnterprise),
        View::Container(cid(32000))
    );
    assert_eq!(
        view_of(&doc, "carol@y.org", Relation::Federated),
        View::Container(cid(401))
    );
    assert_eq!(
        view_of(&doc, "dave@partner.com", Relation::Federated),
        View::Container(cid(400))
    );
    assert_eq!(
        view_of(&doc, "erin@nowhere.net", Relation::Other),
        View::Container(cid(1000))
    );
}

#[test]
fn domains_match_exactly() {
    let clock = TestClock::new();
    let mut doc = new_doc(&clock);
    let wire = Member::from_parts("domain", Some("Y.Org")).unwrap();
    set_members(&mut doc, 300, vec![wire]);
    assert_eq!(
        view_of(&doc, "Carol@Y.ORG", Relation::Other),
        View::Container(cid(300))
    );
    assert_eq!(
        view_of(&doc, "carol@sub.y.org", Relation::Other),
        View::Container(cid(0))
    );
    assert_eq!(
        view_of(&doc, "carol@y.org.evil.com", Relation::Other),
        View::Container(cid(0))
    );
    assert_eq!(
        view_of(&doc, "y.org@other.com", Relation::Other),
        View::Container(cid(0))
    );
}

#[test]
fn network_classes_match_only_their_relation() {
    let clock = TestClock::new();
    let mut doc = new_doc(&clock);
    set_members(&mut doc, 300, vec![Member::PublicCloud]);
    for (relation, expected) in [
        (Relation::SameEnterprise, 200),
        (Relation::Federated, 100),
        (Relation::PublicCloud, 300),
        (Relation::Other, 0),
    ] {
        assert_eq!(
            view_of(&doc, "w@q.com", relation),
            View::Container(cid(expected)),
            "{relation:?}"
        );
    }
}

#[test]
fn nobody_matching_means_container_0() {
    let clock = TestClock::new();
    let ctx = ctx(&clock, true);
    let mut doc = new_doc(&clock);
    publish_ok(
        &mut doc,
        &[
            static_pub("contactCard", 0, 0, 0, "<contactCard/>"),
            static_pub("contactCard", 0, 200, 0, "<contactCard/>"),
            static_pub("note", 0, 200, 0, "<note/>"),
        ],
        None,
        &ctx,
    );
    let view = view_of(&doc, "eve@random.org", Relation::Other);
    assert_eq!(view, View::Container(ContainerId::DEFAULT));
    assert_eq!(
        keys(&visible_instances(&doc, view, "contactCard")),
        vec![(0, 0)]
    );
    assert!(visible_instances(&doc, view, "note").is_empty());
    assert!(visible_instances(&doc, view, "state").is_empty());
}

#[test]
fn containers_1_to_3_are_never_chosen_or_shown() {
    let clock = TestClock::new();
    let ctx = ctx(&clock, true);
    let mut doc = new_doc(&clock);
    publish_ok(
        &mut doc,
        &[
            static_pub("note", 0, 1, 0, "<note/>"),
            static_pub("note", 0, 2, 0, "<note/>"),
            static_pub("note", 0, 3, 0, "<note/>"),
            static_pub("state", 0x2000_0000, 2, 0, &user_state(3500)),
            static_pub("state", 0x2000_0000, 3, 0, &user_state(3500)),
        ],
        None,
        &ctx,
    );
    let bob = user("bob@x.com");
    let everyone = vec![
        Member::Everyone,
        Member::SameEnterprise,
        domain("x.com"),
        bob.clone(),
    ];
    let doc = force_members(
        &doc,
        &clock,
        &[
            (0, everyone.clone()),
            (1, everyone.clone()),
            (2, everyone.clone()),
            (3, everyone),
        ],
    );
    assert_eq!(
        doc.container(cid(1)).unwrap().members.len(),
        4,
        "the members are really there"
    );
    assert_eq!(
        view_of(&doc, "bob@x.com", Relation::Other),
        View::Container(cid(0))
    );
    assert_eq!(
        view_of(&doc, "bob@x.com", Relation::SameEnterprise),
        View::Container(cid(200))
    );
    assert_eq!(
        view_of(&doc, "carol@x.com", Relation::Other),
        View::Container(cid(0))
    );
    // Even asked directly, 1-3 show nothing.
    for c in 1..=3 {
        for category in ["note", "state", "services"] {
            assert!(visible_instances(&doc, View::Container(cid(c)), category).is_empty());
        }
    }
    assert_eq!(visible_instances(&doc, View::Owner, "note").len(), 3);
}

#[test]
fn private_categories_never_reach_watchers() {
    let clock = TestClock::new();
    let ctx = ctx(&clock, true);
    let mut doc = new_doc(&clock);
    let mut batch = vec![];
    for (i, c) in [0u64, 100, 200, 300, 400, 32000].into_iter().enumerate() {
        batch.push(static_pub("routing", 0, c, 0, "<routing/>"));
        batch.push(static_pub("dndState", 0, c, 0, &user_state(9500)));
        batch.push(static_pub(
            "legacyInterop",
            7 + i as u32,
            c,
            0,
            "<legacyInterop/>",
        ));
    }
    publish_ok(&mut doc, &batch, None, &ctx);
    publish_ok(
        &mut doc,
        &[endpoint_pub(
            "state",
            0x3000_0001,
            2,
            0,
            &machine_state(3500),
        )],
        Some(EndpointId(1)),
        &ctx,
    );
    set_members(&mut doc, 300, vec![user("bob@example.com")]);
    set_members(&mut doc, 400, vec![user("carol@example.com")]);
    set_members(&mut doc, 32000, vec![user("mallory@example.com")]);
    assert_eq!(PRIVATE_CATEGORIES, ["routing", "dndState", "legacyInterop"]);
    let watchers = [
        ("bob@example.com", Relation::SameEnterprise, 300),
        ("carol@example.com", Relation::SameEnterprise, 400),
        ("mallory@example.com", Relation::SameEnterprise, 32000),
        ("dave@example.com", Relation::SameEnterprise, 200),
        ("erin@partner.com", Relation::Federated, 100),
        ("frank@else.org", Relation::Other, 0),
    ];
    for (w, relation, expected) in watchers {
        let view = view_of(&doc, w, relation);
        assert_eq!(view, View::Container(cid(expected)));
        for category in PRIVATE_CATEGORIES {
            assert!(is_private(category));
            assert!(
                doc.instances_in(cid(expected), category).count() > 0,
                "{category} exists in {expected}"
            );
            assert!(
                visible_instances(&doc, view, category).is_empty(),
                "{w} sees {category}"
            );
        }
    }
    // The owner does see them.
    assert_eq!(visible_instances(&doc, View::Owner, "routing").len(), 6);
    assert!(!is_private("state") && !is_private("note"));
}

#[test]
fn a_blocked_watcher_sees_only_the_offline_view() {
    let clock = TestClock::new();
    let ctx = ctx(&clock, true);
    let mut doc = new_doc(&clock);
    publish_ok(
        &mut doc,
        &[
            static_pub("note", 0, 200, 0, &note_xml("hello colleagues")),
            static_pub("note", 0, 32000, 0, "<note/>"),
            static_pub("contactCard", 0, 0, 0, "<contactCard/>"),
            static_pub("contactCard", 3, 200, 0, "<contactCard/>"),
            static_pub("calendarData", 0, 400, 0, "<calendarData/>"),
        ],
        None,
        &ctx,
    );
    publish_ok(
        &mut doc,
        &[
            endpoint_pub("state", 0x3000_0001, 2, 0, &machine_state(3500)),
            endpoint_pub("state", 0x3000_0001, 3, 0, &machine_state(3500)),
            endpoint_pub(
                "device",
                1,
                2,
                0,
                r#"<device endpointId="e1"><capabilities><text render="true"/></capabilities></device>"#,
            ),
        ],
        Some(EndpointId(1)),
        &ctx,
    );
    // Mallory is a colleague, named in the personal container and blocked.
    set_members(&mut doc, 400, vec![user("mallory@example.com")]);
    set_members(&mut doc, 32000, vec![user("mallory@example.com")]);
    assert_eq!(aggregate_availability(&doc, 200), Some(3500));

    let view = view_of(&doc, "mallory@example.com", Relation::SameEnterprise);
    assert_eq!(view, View::Container(ContainerId::BLOCKED));
    let state = visible_instances(&doc, view, "state");
    assert_eq!(keys(&state), vec![(32000, 1)]);
    let summary = presence_model::summary::summarize("state", &state[0].value).unwrap();
    assert_eq!(summary.availability, Some(18500));
    assert_eq!(summary.availability_class, Some("offline"));
    assert_eq!(
        keys(&visible_instances(&doc, view, "note")),
        vec![(32000, 0)]
    );
    let services = visible_instances(&doc, view, "services");
    assert_eq!(keys(&services), vec![(32000, 0)]);
    assert!(
        parsed(services[0]).elements().next().is_none(),
        "empty services"
    );
    for category in ["contactCard", "calendarData", "device", "legacyInterop"] {
        assert!(
            visible_instances(&doc, view, category).is_empty(),
            "{category}"
        );
    }
    // A blocked domain member is still overridden by an explicit user entry elsewhere
    // (specificity first), but a blocked user entry beats every other user entry.
    set_members(&mut doc, 32000, vec![domain("example.com")]);
    assert_eq!(
        view_of(&doc, "mallory@example.com", Relation::SameEnterprise),
        View::Container(cid(400))
    );
    assert_eq!(
        view_of(&doc, "bob@example.com", Relation::SameEnterprise),
        View::Container(ContainerId::BLOCKED)
    );
}

/// "Within that class, the highest container id wins (so Blocked, 32000, beats every
/// other level)" -- but ids go up to 32767, and custom containers are legal.
#[test]
fn a_blocked_user_entry_beats_user_entries_in_higher_custom_containers() {
    let clock = TestClock::new();
    let ctx = ctx(&clock, true);
    let mut doc = new_doc(&clock);
    publish_ok(
        &mut doc,
        &[static_pub("note", 0, 32767, 0, &note_xml("for friends"))],
        None,
        &ctx,
    );
    set_members(&mut doc, 32000, vec![user("mallory@example.com")]);
    set_members(&mut doc, 32767, vec![user("mallory@example.com")]);
    let view = view_of(&doc, "mallory@example.com", Relation::SameEnterprise);
    assert_eq!(view, View::Container(ContainerId::BLOCKED));
    assert!(visible_instances(&doc, view, "note").is_empty());
}

// ---------------------------------------------------------------- properties

const USERS: [&str; 5] = [
    "bob@x.com",
    "carol@x.com",
    "dave@y.org",
    "erin@z.net",
    "frank@w.io",
];
const EXTRA_WATCHERS: [&str; 2] = ["gina@q.com", "henry@sub.x.com"];
const DOMAINS: [&str; 4] = ["x.com", "y.org", "z.net", "q.com"];
const RELATIONS: [Relation; 4] = [
    Relation::SameEnterprise,
    Relation::Federated,
    Relation::PublicCloud,
    Relation::Other,
];
const CONTAINER_IDS: [u16; 13] = [0, 1, 2, 3, 4, 100, 200, 300, 400, 401, 1000, 32000, 32767];
const CATEGORIES: [&str; 9] = [
    "note",
    "contactCard",
    "calendarData",
    "state",
    "device",
    "services",
    "routing",
    "dndState",
    "legacyInterop",
];
const INSTANCES: [u32; 5] = [0, 1, 2, 0x2000_0000, 0x3000_0001];

type Model = BTreeMap<u16, BTreeSet<Member>>;

fn member_strategy() -> impl Strategy<Value = Member> {
    prop_oneof![
        (0..USERS.len()).prop_map(|i| user(USERS[i])),
        (0..DOMAINS.len()).prop_map(|i| domain(DOMAINS[i])),
        Just(Member::SameEnterprise),
        Just(Member::Federated),
        Just(Member::PublicCloud),
        Just(Member::Everyone),
    ]
}

fn container_strategy() -> impl Strategy<Value = u16> {
    prop::sample::select(CONTAINER_IDS.to_vec())
}

fn watchers() -> Vec<(UserUri, Relation)> {
    let mut all = vec![];
    for u in USERS.iter().chain(EXTRA_WATCHERS.iter()) {
        for r in RELATIONS {
            all.push((uri(u), r));
        }
    }
    all
}

/// The resolution rule written out independently: the most specific class that
/// matches decides (user, domain, network relation, everyone); within it Blocked
/// (32000) if it matches, else the highest container id from 4 up; otherwise 0.
fn reference(model: &Model, w: &UserUri, relation: Relation) -> u16 {
    let (_, wdomain) = w.as_str().split_once('@').unwrap();
    let network = match relation {
        Relation::SameEnterprise => Some(Member::SameEnterprise),
        Relation::Federated => Some(Member::Federated),
        Relation::PublicCloud => Some(Member::PublicCloud),
        Relation::Other => None,
    };
    let by_user = |m: &Member| *m == Member::User(w.clone());
    let by_domain = |m: &Member| matches!(m, Member::Domain(d) if d == wdomain);
    let by_network = |m: &Member| network.as_ref() == Some(m);
    let by_everyone = |m: &Member| *m == Member::Everyone;
    let classes: [&dyn Fn(&Member) -> bool; 4] = [&by_user, &by_domain, &by_network, &by_everyone];
    for class in classes {
        let mut best = None;
        for (id, members) in model {
            if *id >= 4 && members.iter().any(class) {
                best = Some(match best {
                    Some(32000) => 32000,
                    _ if *id == 32000 => 32000,
                    b => b.map_or(*id, |b: u16| b.max(*id)),
                });
            }
        }
        if let Some(b) = best {
            return b;
        }
    }
    0
}

fn model_of(doc: &PresentityDoc) -> Model {
    doc.containers()
        .map(|c| (c.id.get(), c.members.iter().cloned().collect()))
        .collect()
}

fn versions_of(doc: &PresentityDoc) -> BTreeMap<u16, u32> {
    doc.containers().map(|c| (c.id.get(), c.version)).collect()
}

#[derive(Debug, Clone)]
struct Pub {
    category: &'static str,
    instance: u32,
    container: u16,
    availability: u32,
}

fn pub_strategy() -> impl Strategy<Value = Pub> {
    (
        prop::sample::select(CATEGORIES.to_vec()),
        prop::sample::select(INSTANCES.to_vec()),
        container_strategy(),
        prop::sample::select(vec![3500u32, 6500, 9500, 15500]),
    )
        .prop_map(|(category, instance, container, availability)| Pub {
            category,
            instance,
            container,
            availability,
        })
}

/// Builds a document from random publications (refused ones are skipped) and random
/// memberships, including members forced into containers 0-3. Returns the document
/// and the membership it is meant to have.
fn build(
    clock: &TestClock,
    pubs: &[Pub],
    memberships: &[(u16, Vec<Member>)],
) -> (PresentityDoc, Model) {
    let ctx = ctx(clock, true);
    let mut doc = new_doc(clock);
    for p in pubs {
        let value = if p.category == "state" {
            let kind = if p.instance == 0x3000_0001 {
                "machineState"
            } else {
                "userState"
            };
            state_xml(
                kind,
                Some(p.availability),
                r#"<activity token="on-the-phone"/>"#,
            )
        } else {
            format!("<{}/>", p.category)
        };
        let item = static_pub(p.category, p.instance, p.container as u64, 0, &value);
        let version = doc.instance(&InstanceKey::new(
            p.category,
            p.instance,
            cid(p.container as u64),
        ));
        let item = presence_model::Publication {
            version: version.map_or(0, |i| i.version),
            ..item
        };
        let _ = doc.publish(&[item], Some(EndpointId(1)), &ctx);
    }
    let mut model = model_of(&doc);
    let mut forced = vec![];
    for (id, members) in memberships {
        let set: BTreeSet<Member> = members.iter().cloned().collect();
        model.insert(*id, set.clone());
        forced.push((*id as u64, set.into_iter().collect::<Vec<_>>()));
    }
    let doc = force_members(&doc, clock, &forced);
    assert_eq!(model_of(&doc), model);
    (doc, model)
}

fn is_blocked_user(model: &Model, w: &UserUri) -> bool {
    model
        .get(&32000)
        .is_some_and(|m| m.contains(&Member::User(w.clone())))
}

/// A watcher whose user URI is in 32000 resolves to 32000 and sees only 32000.
fn check_blocking(doc: &PresentityDoc, model: &Model) -> Result<(), TestCaseError> {
    for (w, relation) in watchers() {
        if !is_blocked_user(model, &w) {
            continue;
        }
        let view = resolve_container(doc, watcher(&w, relation));
        prop_assert_eq!(
            view,
            View::Container(ContainerId::BLOCKED),
            "{} is a member of 32000",
            w
        );
        for category in CATEGORIES {
            for inst in visible_instances(doc, view, category) {
                prop_assert_eq!(inst.key.container, ContainerId::BLOCKED);
            }
        }
    }
    Ok(())
}

fn check_visibility(doc: &PresentityDoc, model: &Model) -> Result<(), TestCaseError> {
    for (w, relation) in watchers() {
        let view = resolve_container(doc, watcher(&w, relation));
        let expected = reference(model, &w, relation);
        prop_assert_eq!(
            view,
            View::Container(cid(expected as u64)),
            "{} {:?}",
            w,
            relation
        );
        let View::Container(c) = view else {
            unreachable!()
        };
        prop_assert!(
            c.get() == 0 || c.get() >= 4,
            "resolved to local container {}",
            c.get()
        );
        let blocked_user = is_blocked_user(model, &w);
        if blocked_user {
            prop_assert_eq!(c, ContainerId::BLOCKED, "{} is a member of 32000", w);
        }
        for category in CATEGORIES {
            let visible = visible_instances(doc, view, category);
            for inst in &visible {
                prop_assert_eq!(inst.key.container, c, "{} got {:?}", w, inst.key);
                prop_assert_eq!(&*inst.key.category, category);
                prop_assert!(!(1..=3).contains(&inst.key.container.get()));
                if blocked_user {
                    prop_assert_eq!(inst.key.container, ContainerId::BLOCKED);
                }
            }
            if acl::is_private(category) {
                prop_assert!(visible.is_empty(), "{} sees private {}", w, category);
            } else {
                // Nothing of the resolved container is withheld either.
                let all: Vec<&InstanceKey> = doc
                    .instances()
                    .filter(|i| i.key.container == c && &*i.key.category == category)
                    .map(|i| &i.key)
                    .collect();
                let got: Vec<&InstanceKey> = visible.iter().map(|i| &i.key).collect();
                prop_assert_eq!(got, all);
            }
        }
    }
    // The owner sees every instance of every category.
    for category in CATEGORIES {
        let all = doc
            .instances()
            .filter(|i| &*i.key.category == category)
            .count();
        prop_assert_eq!(visible_instances(doc, View::Owner, category).len(), all);
    }
    Ok(())
}

#[derive(Debug, Clone)]
struct Update {
    id: u16,
    stale: bool,
    add: Vec<Member>,
    remove: Vec<Member>,
}

fn update_strategy() -> impl Strategy<Value = Update> {
    (
        prop::sample::select(vec![
            0u16, 2, 4, 100, 200, 300, 400, 401, 1000, 32000, 32767,
        ]),
        prop::bool::weighted(0.15),
        prop::collection::vec(member_strategy(), 0..4),
        prop::collection::vec(member_strategy(), 0..3),
    )
        .prop_map(|(id, stale, add, remove)| Update {
            id,
            stale,
            add,
            remove,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Over random documents: a watcher sees only the container it resolves to, never
    /// containers 1-3 or private categories, a blocked user sees only 32000, and the
    /// resolution agrees with the reference rule.
    #[test]
    fn watchers_see_only_their_container(
        pubs in prop::collection::vec(pub_strategy(), 0..24),
        memberships in prop::collection::vec(
            (container_strategy(), prop::collection::vec(member_strategy(), 0..5)),
            0..8,
        ),
    ) {
        let clock = TestClock::new();
        let (doc, model) = build(&clock, &pubs, &memberships);
        check_visibility(&doc, &model)?;
    }

    /// The blocking invariant over random documents, including custom containers
    /// above 32000.
    #[test]
    fn blocked_users_see_only_32000(
        pubs in prop::collection::vec(pub_strategy(), 0..12),
        memberships in prop::collection::vec(
            (
                prop::sample::select(vec![300u16, 32000, 32001, 32767]),
                prop::collection::vec(member_strategy(), 0..5),
            ),
            0..8,
        ),
    ) {
        let clock = TestClock::new();
        let (doc, model) = build(&clock, &pubs, &memberships);
        check_blocking(&doc, &model)?;
    }

    /// After any sequence of membership updates (valid or not), every watcher is
    /// re-resolved according to the reference rule over an independently maintained
    /// membership model, refused batches change nothing, and accepted ones add exactly
    /// one to each updated container's version.
    #[test]
    fn resolution_follows_every_membership_update(
        pubs in prop::collection::vec(pub_strategy(), 0..12),
        batches in prop::collection::vec(prop::collection::vec(update_strategy(), 1..4), 1..10),
    ) {
        let clock = TestClock::new();
        let (mut doc, mut model) = build(&clock, &pubs, &[]);
        let mut versions = versions_of(&doc);
        check_visibility(&doc, &model)?;
        for batch in batches {
            let updates: Vec<ContainerUpdate> = batch
                .iter()
                .map(|u| {
                    let current = versions.get(&u.id).copied().unwrap_or(0);
                    ContainerUpdate {
                        id: cid(u.id as u64),
                        version: if u.stale { current + 1 } else { current },
                        add: u.add.clone(),
                        remove: u.remove.clone(),
                    }
                })
                .collect();

            // What should happen: the first structural problem in order, otherwise
            // every stale version, otherwise success.
            let mut structural = None;
            let mut conflicts = vec![];
            let mut seen = BTreeSet::new();
            for (n, u) in updates.iter().enumerate() {
                let index = n + 1;
                if u.id.get() <= 3 {
                    structural = Some(MembershipError::Fixed(u.id.get()));
                    break;
                }
                if !seen.insert(u.id) || u.add.iter().any(|m| u.remove.contains(m)) {
                    structural = Some(MembershipError::Invalid { index, reason: String::new() });
                    break;
                }
                let current = versions.get(&u.id.get()).copied().unwrap_or(0);
                if u.version != current {
                    conflicts.push(Conflict { index, version: u.version, current_version: current });
                }
            }

            let before = doc.clone();
            let result = doc.update_containers(&updates);
            match (result, structural) {
                (Err(MembershipError::Invalid { index, .. }), Some(MembershipError::Invalid { index: want, .. })) => {
                    prop_assert_eq!(index, want);
                    prop_assert_eq!(&doc, &before);
                }
                (Err(e), Some(want @ MembershipError::Fixed(_))) => {
                    prop_assert_eq!(e, want);
                    prop_assert_eq!(&doc, &before);
                }
                (Err(e), None) if !conflicts.is_empty() => {
                    prop_assert_eq!(e, MembershipError::Conflict(conflicts));
                    prop_assert_eq!(&doc, &before);
                }
                (Ok(changes), None) if conflicts.is_empty() => {
                    let touched: BTreeSet<ContainerId> = updates.iter().map(|u| u.id).collect();
                    prop_assert_eq!(&changes.containers, &touched);
                    for u in &updates {
                        let members = model.entry(u.id.get()).or_default();
                        for m in &u.remove {
                            members.remove(m);
                        }
                        members.extend(u.add.iter().cloned());
                        *versions.entry(u.id.get()).or_insert(0) += 1;
                    }
                }
                (other, structural) => {
                    prop_assert!(false, "got {:?}, expected {:?} / {:?}", other, structural, conflicts);
                }
            }
            prop_assert_eq!(model_of(&doc), model.clone());
            prop_assert_eq!(versions_of(&doc), versions.clone());
            check_visibility(&doc, &model)?;
        }
    }
}
