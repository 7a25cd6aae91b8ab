//! The persistent contact list: groups and contacts, with a change counter
//! (`deltaNum` in MS-SIP's roaming-contacts) that starts at 1 and moves by exactly one
//! per change, so any client can tell whether it missed something.
//!
//! Group 1 is the default group (`~`, "Other Contacts"): it always exists and cannot
//! be deleted or renamed. Every contact is in at least one group; deleting a group
//! moves the contacts left without a group into group 1.

use crate::uri::UserUri;
use serde::{Deserialize, Serialize};

/// Most contacts in one list (MS-SIP suggests a cap of a few hundred).
pub const MAX_CONTACTS: usize = 1000;
/// Group ids run from 1 to this (MS-SIP: 1-63).
pub const MAX_GROUP_ID: u32 = 63;
/// Longest group or contact display name, in bytes.
pub const MAX_NAME_BYTES: usize = 256;
/// The default group's id and name.
pub const DEFAULT_GROUP: u32 = 1;
pub const DEFAULT_GROUP_NAME: &str = "~";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    pub id: u32,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    pub uri: UserUri,
    pub name: String,
    pub groups: Vec<u32>,
    /// Whether the owner's clients subscribe to this contact's presence.
    pub subscribed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactList {
    pub delta_num: u32,
    pub groups: Vec<Group>,
    pub contacts: Vec<Contact>,
    /// The highest group id ever handed out. New groups take ids above it while
    /// there are any, so a client that still knows a deleted group by its id (see
    /// docs/protocol-decisions.md) never confuses it with a new one.
    #[serde(default)]
    pub highest_group_id: u32,
    /// Groups deleted so far, by name: a group added again under the same name gets
    /// its old id back (while it is free), so a client that still knows the old
    /// group by name and id stays consistent with the server.
    #[serde(default)]
    pub deleted_groups: Vec<Group>,
}

impl Default for ContactList {
    fn default() -> Self {
        ContactList {
            delta_num: 1,
            groups: vec![Group {
                id: DEFAULT_GROUP,
                name: DEFAULT_GROUP_NAME.into(),
            }],
            contacts: Vec::new(),
            highest_group_id: DEFAULT_GROUP,
            deleted_groups: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContactError {
    #[error(
        "the contact list changed (delta {current}); the request was made against delta {sent}"
    )]
    Stale { sent: u32, current: u32 },
    #[error("no group with id {0}")]
    NoGroup(u32),
    #[error("{0} is not a contact")]
    NoContact(UserUri),
    #[error("the default group cannot be deleted or renamed")]
    DefaultGroup,
    #[error("a group named {0:?} exists already")]
    DuplicateGroup(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    TooLarge(String),
}

fn check_name(name: &str) -> Result<(), ContactError> {
    if name.len() > MAX_NAME_BYTES || name.chars().any(char::is_control) {
        return Err(ContactError::Invalid(format!(
            "names are at most {MAX_NAME_BYTES} bytes without control characters"
        )));
    }
    Ok(())
}

impl ContactList {
    /// Checks the client's view of the list; `None` skips the check.
    fn expect(&self, delta_num: Option<u32>) -> Result<(), ContactError> {
        match delta_num {
            Some(sent) if sent != self.delta_num => Err(ContactError::Stale {
                sent,
                current: self.delta_num,
            }),
            _ => Ok(()),
        }
    }

    fn bump(&mut self) {
        self.delta_num += 1;
    }

    pub fn contact(&self, uri: &UserUri) -> Option<&Contact> {
        self.contacts.iter().find(|c| &c.uri == uri)
    }

    /// Adds or replaces a contact. Unknown group ids are refused; an empty group list
    /// means the default group.
    pub fn set_contact(
        &mut self,
        uri: UserUri,
        name: &str,
        groups: &[u32],
        subscribed: bool,
        delta_num: Option<u32>,
    ) -> Result<(), ContactError> {
        self.expect(delta_num)?;
        check_name(name)?;
        let mut groups = groups.to_vec();
        groups.sort_unstable();
        groups.dedup();
        if let Some(g) = groups
            .iter()
            .find(|g| !self.groups.iter().any(|x| x.id == **g))
        {
            return Err(ContactError::NoGroup(*g));
        }
        if groups.is_empty() {
            groups.push(DEFAULT_GROUP);
        }
        let contact = Contact {
            uri,
            name: name.to_string(),
            groups,
            subscribed,
        };
        let full = self.contacts.len() >= MAX_CONTACTS;
        match self.contacts.iter_mut().find(|c| c.uri == contact.uri) {
            Some(existing) => *existing = contact,
            None if full => {
                return Err(ContactError::TooLarge(format!(
                    "a contact list holds at most {MAX_CONTACTS} contacts"
                )));
            }
            None => self.contacts.push(contact),
        }
        self.bump();
        Ok(())
    }

    pub fn delete_contact(
        &mut self,
        uri: &UserUri,
        delta_num: Option<u32>,
    ) -> Result<(), ContactError> {
        self.expect(delta_num)?;
        let before = self.contacts.len();
        self.contacts.retain(|c| &c.uri != uri);
        if self.contacts.len() == before {
            return Err(ContactError::NoContact(uri.clone()));
        }
        self.bump();
        Ok(())
    }

    /// Adds a group under the lowest free id above every id handed out before (the
    /// lowest free one once those run out); returns it.
    pub fn add_group(&mut self, name: &str, delta_num: Option<u32>) -> Result<u32, ContactError> {
        self.expect(delta_num)?;
        check_name(name)?;
        if name.trim().is_empty() {
            return Err(ContactError::Invalid("a group needs a name".into()));
        }
        if self.groups.iter().any(|g| g.name == name) {
            return Err(ContactError::DuplicateGroup(name.to_string()));
        }
        let free = |id: &u32| !self.groups.iter().any(|g| g.id == *id);
        let used = self
            .groups
            .iter()
            .map(|g| g.id)
            .max()
            .unwrap_or(DEFAULT_GROUP);
        let floor = self.highest_group_id.max(used).min(MAX_GROUP_ID);
        let id = self
            .deleted_groups
            .iter()
            .find(|g| g.name == name)
            .map(|g| g.id)
            .filter(free)
            .or_else(|| (floor + 1..=MAX_GROUP_ID).chain(1..=floor).find(free))
            .ok_or_else(|| ContactError::TooLarge(format!("at most {MAX_GROUP_ID} groups")))?;
        self.highest_group_id = self.highest_group_id.max(id);
        self.deleted_groups.retain(|g| g.id != id && g.name != name);
        self.groups.push(Group {
            id,
            name: name.to_string(),
        });
        self.groups.sort_by_key(|g| g.id);
        self.bump();
        Ok(id)
    }

    pub fn rename_group(
        &mut self,
        id: u32,
        name: &str,
        delta_num: Option<u32>,
    ) -> Result<(), ContactError> {
        self.expect(delta_num)?;
        check_name(name)?;
        if id == DEFAULT_GROUP {
            return Err(ContactError::DefaultGroup);
        }
        if name.trim().is_empty() {
            return Err(ContactError::Invalid("a group needs a name".into()));
        }
        if self.groups.iter().any(|g| g.name == name && g.id != id) {
            return Err(ContactError::DuplicateGroup(name.to_string()));
        }
        let group = self
            .groups
            .iter_mut()
            .find(|g| g.id == id)
            .ok_or(ContactError::NoGroup(id))?;
        group.name = name.to_string();
        self.bump();
        Ok(())
    }

    pub fn delete_group(&mut self, id: u32, delta_num: Option<u32>) -> Result<(), ContactError> {
        self.expect(delta_num)?;
        if id == DEFAULT_GROUP {
            return Err(ContactError::DefaultGroup);
        }
        let Some(gone) = self.groups.iter().find(|g| g.id == id).cloned() else {
            return Err(ContactError::NoGroup(id));
        };
        self.groups.retain(|g| g.id != id);
        self.deleted_groups
            .retain(|g| g.id != gone.id && g.name != gone.name);
        self.deleted_groups.push(gone);
        for c in &mut self.contacts {
            c.groups.retain(|g| *g != id);
            if c.groups.is_empty() {
                c.groups.push(DEFAULT_GROUP);
            }
        }
        self.bump();
        Ok(())
    }
}

/// What changed from one version of a contact list to a later one: MS-SIP's
/// `contactDelta`, which a client applies to the list it already has. Computed from
/// the two lists, so a front end that skipped intermediate versions (its queue
/// coalesced them) still sends a delta that takes the client to the newer list.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ContactDelta<'a> {
    pub added_groups: Vec<&'a Group>,
    pub modified_groups: Vec<&'a Group>,
    pub deleted_groups: Vec<u32>,
    pub added_contacts: Vec<&'a Contact>,
    pub modified_contacts: Vec<&'a Contact>,
    pub deleted_contacts: Vec<&'a UserUri>,
}

impl ContactDelta<'_> {
    pub fn is_empty(&self) -> bool {
        self.added_groups.is_empty()
            && self.modified_groups.is_empty()
            && self.deleted_groups.is_empty()
            && self.added_contacts.is_empty()
            && self.modified_contacts.is_empty()
            && self.deleted_contacts.is_empty()
    }
}

impl ContactList {
    /// The changes that turn `older` into `self`.
    pub fn delta_since<'a>(&'a self, older: &'a ContactList) -> ContactDelta<'a> {
        let mut d = ContactDelta::default();
        for g in &self.groups {
            match older.groups.iter().find(|o| o.id == g.id) {
                None => d.added_groups.push(g),
                Some(o) if o != g => d.modified_groups.push(g),
                Some(_) => {}
            }
        }
        d.deleted_groups = older
            .groups
            .iter()
            .filter(|o| !self.groups.iter().any(|g| g.id == o.id))
            .map(|o| o.id)
            .collect();
        for c in &self.contacts {
            match older.contact(&c.uri) {
                None => d.added_contacts.push(c),
                Some(o) if o != c => d.modified_contacts.push(c),
                Some(_) => {}
            }
        }
        d.deleted_contacts = older
            .contacts
            .iter()
            .filter(|o| self.contact(&o.uri).is_none())
            .map(|o| &o.uri)
            .collect();
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(s: &str) -> UserUri {
        UserUri::parse(s).unwrap()
    }

    #[test]
    fn starts_with_default_group_at_delta_one() {
        let l = ContactList::default();
        assert_eq!(l.delta_num, 1);
        assert_eq!(
            l.groups,
            vec![Group {
                id: 1,
                name: "~".into()
            }]
        );
    }

    #[test]
    fn every_change_moves_delta_by_one() {
        let mut l = ContactList::default();
        let g = l.add_group("Team", Some(1)).unwrap();
        assert_eq!((g, l.delta_num), (2, 2));
        l.set_contact(uri("bob@x.com"), "Bob", &[g], true, Some(2))
            .unwrap();
        l.set_contact(uri("carol@x.com"), "", &[], true, None)
            .unwrap();
        assert_eq!(l.contact(&uri("carol@x.com")).unwrap().groups, vec![1]);
        l.rename_group(g, "Core team", None).unwrap();
        l.delete_group(g, Some(5)).unwrap();
        assert_eq!(
            l.contact(&uri("bob@x.com")).unwrap().groups,
            vec![1],
            "moved to the default group"
        );
        l.delete_contact(&uri("bob@x.com"), Some(6)).unwrap();
        assert_eq!(l.delta_num, 7);
        assert!(l.contact(&uri("bob@x.com")).is_none());
    }

    #[test]
    fn refusals_change_nothing() {
        let mut l = ContactList::default();
        let before = l.clone();
        assert_eq!(
            l.add_group("x", Some(9)),
            Err(ContactError::Stale {
                sent: 9,
                current: 1
            })
        );
        assert_eq!(l.delete_group(1, None), Err(ContactError::DefaultGroup));
        assert_eq!(
            l.rename_group(1, "y", None),
            Err(ContactError::DefaultGroup)
        );
        assert_eq!(l.delete_group(7, None), Err(ContactError::NoGroup(7)));
        assert_eq!(
            l.set_contact(uri("bob@x.com"), "Bob", &[7], true, None),
            Err(ContactError::NoGroup(7))
        );
        assert_eq!(
            l.delete_contact(&uri("bob@x.com"), None),
            Err(ContactError::NoContact(uri("bob@x.com")))
        );
        assert!(matches!(
            l.add_group(" ", None),
            Err(ContactError::Invalid(_))
        ));
        assert!(matches!(
            l.add_group("~", None),
            Err(ContactError::DuplicateGroup(_))
        ));
        assert_eq!(l, before);
    }

    #[test]
    fn a_deleted_group_added_again_gets_its_old_id_back() {
        let mut l = ContactList::default();
        let team = l.add_group("Team", None).unwrap();
        let other = l.add_group("Other", None).unwrap();
        l.delete_group(team, None).unwrap();
        let fresh = l.add_group("Fresh", None).unwrap();
        assert!(fresh > other, "not the deleted id");
        assert_eq!(l.add_group("Team", None), Ok(team));
        // Deleted again, renamed id taken meanwhile: a new id then.
        l.delete_group(team, None).unwrap();
        l.delete_group(other, None).unwrap();
        let renamed = l.add_group("Renamed", None).unwrap();
        l.rename_group(renamed, "x", None).unwrap();
        assert_eq!(l.add_group("Other", None), Ok(other));
        assert!(l.deleted_groups.iter().all(|g| g.name != "Other"));
    }

    #[test]
    fn group_ids_are_not_reused_until_they_run_out() {
        let mut l = ContactList::default();
        let a = l.add_group("a", None).unwrap();
        l.delete_group(a, None).unwrap();
        let b = l.add_group("b", None).unwrap();
        assert_eq!((a, b), (2, 3));
        // Once the top id was handed out, the lowest free ones come back.
        for i in b + 1..=MAX_GROUP_ID {
            assert_eq!(l.add_group(&format!("g{i}"), None), Ok(i));
        }
        assert_eq!(l.add_group("again", None), Ok(a));
        assert!(matches!(
            l.add_group("full", None),
            Err(ContactError::TooLarge(_))
        ));
    }

    #[test]
    fn limits_at_the_boundary() {
        let mut l = ContactList::default();
        for i in 2..=MAX_GROUP_ID {
            assert_eq!(l.add_group(&format!("g{i}"), None), Ok(i));
        }
        assert!(matches!(
            l.add_group("one more", None),
            Err(ContactError::TooLarge(_))
        ));
        for i in 0..MAX_CONTACTS {
            l.set_contact(uri(&format!("u{i}@x.com")), "", &[], true, None)
                .unwrap();
        }
        assert!(matches!(
            l.set_contact(uri("extra@x.com"), "", &[], true, None),
            Err(ContactError::TooLarge(_))
        ));
        // Replacing an existing contact at the limit is fine.
        l.set_contact(uri("u0@x.com"), "renamed", &[], false, None)
            .unwrap();
        let long = "n".repeat(MAX_NAME_BYTES + 1);
        assert!(matches!(
            l.set_contact(uri("u1@x.com"), &long, &[], true, None),
            Err(ContactError::Invalid(_))
        ));
    }

    #[test]
    fn delta_since_lists_every_kind_of_change() {
        let mut old = ContactList::default();
        let team = old.add_group("Team", None).unwrap();
        let gone = old.add_group("Gone", None).unwrap();
        old.set_contact(uri("bob@x.com"), "", &[team], true, None)
            .unwrap();
        old.set_contact(uri("carol@x.com"), "", &[], true, None)
            .unwrap();
        old.set_contact(uri("dave@x.com"), "", &[gone], true, None)
            .unwrap();
        let mut new = old.clone();
        new.rename_group(team, "Core", None).unwrap();
        new.delete_group(gone, None).unwrap(); // dave moves to the default group
        let added = new.add_group("New", None).unwrap();
        new.set_contact(uri("erin@x.com"), "Erin", &[added], true, None)
            .unwrap();
        new.set_contact(uri("bob@x.com"), "Bobby", &[team, added], true, None)
            .unwrap();
        new.delete_contact(&uri("carol@x.com"), None).unwrap();

        let d = new.delta_since(&old);
        let ids = |gs: &[&Group]| gs.iter().map(|g| g.id).collect::<Vec<_>>();
        let uris = |cs: &[&Contact]| cs.iter().map(|c| c.uri.to_string()).collect::<Vec<_>>();
        // A deleted group's id is not handed out again.
        assert!(added > gone);
        assert_eq!(ids(&d.added_groups), vec![added]);
        assert_eq!(ids(&d.modified_groups), vec![team]);
        assert_eq!(d.deleted_groups, vec![gone]);
        assert_eq!(uris(&d.added_contacts), vec!["erin@x.com"]);
        assert_eq!(uris(&d.modified_contacts), vec!["bob@x.com", "dave@x.com"]);
        assert_eq!(d.deleted_contacts, vec![&uri("carol@x.com")]);

        let mut newer = new.clone();
        newer.delete_group(added, None).unwrap();
        let d = newer.delta_since(&new);
        assert_eq!(d.deleted_groups, vec![added]);
        assert_eq!(uris(&d.modified_contacts), vec!["bob@x.com", "erin@x.com"]);
        assert!(new.delta_since(&new).is_empty());
    }
}
