//! One user as the directory describes them, and the presence data made from it.

use crate::config::AttributeMap;
use presence_model::UserUri;
use presence_model::xml::Element;
use serde::{Deserialize, Serialize};

/// Namespace of contactCard values.
const CONTACT_CARD_NS: &str = "http://schemas.microsoft.com/2006/09/sip/contactcard";
/// Namespace of userProperties values.
const CATEGORIES_NS: &str = "http://schemas.microsoft.com/2006/09/sip/categories";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryEntry {
    /// Stable identity in the directory (objectGUID, entryUUID, DN or file key): a
    /// renamed user keeps it.
    pub key: String,
    /// The LDAP entry's DN (used to check passwords by binding as the user).
    pub dn: Option<String>,
    pub uri: UserUri,
    pub enabled: bool,
    pub display_name: String,
    /// Given name and surname (for search; absent in rows synced before they were
    /// read).
    #[serde(default)]
    pub given_name: String,
    #[serde(default)]
    pub surname: String,
    pub email: String,
    pub title: String,
    pub department: String,
    pub company: String,
    pub office: String,
    pub work_phone: String,
    pub mobile: String,
    pub street: String,
    pub city: String,
    pub state: String,
    pub postal_code: String,
    pub country: String,
}

/// Reads a boolean the way AD (`TRUE`/`FALSE`) and files (`true`, `1`, `yes`) write it.
pub fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Some(true),
        "false" | "0" | "no" => Some(false),
        _ => None,
    }
}

fn tel_uri(number: &str) -> String {
    let digits: String = number
        .chars()
        .filter(|c| c.is_ascii_digit() || *c == '+')
        .collect();
    format!("tel:{digits}")
}

fn text(name: &str, value: &str) -> Option<Element> {
    (!value.is_empty()).then(|| Element::new(name).with_text(value))
}

impl DirectoryEntry {
    /// Builds an entry from a record's attributes; `get` looks an attribute up by
    /// name (case-insensitively) and returns its first value.
    pub fn from_attributes(
        dn: Option<&str>,
        get: &dyn Fn(&str) -> Option<String>,
        map: &AttributeMap,
    ) -> Result<Self, String> {
        let name = dn.unwrap_or("record");
        let raw_uri = get(&map.uri).ok_or_else(|| format!("{name}: no {} attribute", map.uri))?;
        let uri = UserUri::parse(&raw_uri).map_err(|e| format!("{name}: {e}"))?;
        let enabled = match get(&map.enabled) {
            None => true,
            Some(v) => parse_bool(&v)
                .ok_or_else(|| format!("{name}: {} is {v:?}, not a boolean", map.enabled))?,
        };
        let key = map
            .key
            .iter()
            .find_map(|k| get(k))
            .or_else(|| dn.map(str::to_string))
            .unwrap_or_else(|| uri.to_string());
        let field = |attr: &str| get(attr).unwrap_or_default().trim().to_string();
        let display_name = match field(&map.display_name) {
            n if n.is_empty() => uri
                .as_str()
                .split('@')
                .next()
                .unwrap_or_default()
                .to_string(),
            n => n,
        };
        Ok(DirectoryEntry {
            key,
            dn: dn.map(str::to_string),
            enabled,
            display_name,
            given_name: field(&map.given_name),
            surname: field(&map.surname),
            email: field(&map.email),
            title: field(&map.title),
            department: field(&map.department),
            company: field(&map.company),
            office: field(&map.office),
            work_phone: field(&map.work_phone),
            mobile: field(&map.mobile),
            street: field(&map.street),
            city: field(&map.city),
            state: field(&map.state),
            postal_code: field(&map.postal_code),
            country: field(&map.country),
            uri,
        })
    }

    /// The email shown on the identity card (the directory's, else the SIP address).
    pub fn identity_email(&self) -> &str {
        if self.email.is_empty() {
            self.uri.as_str()
        } else {
            &self.email
        }
    }

    /// The directory details card (title, department, company, office, work phone), or
    /// `None` when the directory has none of them.
    pub fn details_card(&self) -> Option<String> {
        let mut card = Element::new("contactCard").with_attr("xmlns", CONTACT_CARD_NS);
        let parts = [
            text("company", &self.company),
            text("department", &self.department),
            text("title", &self.title),
            text("office", &self.office),
        ];
        for el in parts.into_iter().flatten() {
            card = card.with_child(el);
        }
        if !self.work_phone.is_empty() {
            card = card.with_child(
                Element::new("phone")
                    .with_attr("type", "work")
                    .with_child(Element::new("uri").with_text(tel_uri(&self.work_phone)))
                    .with_child(Element::new("displayString").with_text(&self.work_phone)),
            );
        }
        (!card.children.is_empty()).then(|| card.to_xml())
    }

    /// `userProperties` for the user's own endpoints: phone lines and address.
    pub fn user_properties(&self) -> Option<String> {
        let mut props = Element::new("userProperties").with_attr("xmlns", CATEGORIES_NS);
        if !self.work_phone.is_empty() {
            props = props
                .with_child(
                    Element::new("lines").with_child(
                        Element::new("line")
                            .with_attr("lineType", "Uc")
                            .with_attr("lineServer", "")
                            .with_text(tel_uri(&self.work_phone)),
                    ),
                )
                .with_child(Element::new("telephonyMode").with_text("Uc"));
        }
        let parts = [
            text("mobile", &self.mobile),
            text("streetAddress", &self.street),
            text("l", &self.city),
            text("st", &self.state),
            text("postalCode", &self.postal_code),
            text("countryCode", &self.country),
        ];
        for el in parts.into_iter().flatten() {
            props = props.with_child(el);
        }
        (!props.children.is_empty()).then(|| props.to_xml())
    }

    /// A digest of everything the sync acts on, to tell changed entries from unchanged.
    pub fn fingerprint(&self) -> String {
        serde_json::to_string(self).expect("entries serialise")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn entry(attrs: &[(&str, &str)]) -> Result<DirectoryEntry, String> {
        let m: HashMap<String, String> = attrs
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
            .collect();
        DirectoryEntry::from_attributes(
            Some("cn=x,dc=example,dc=com"),
            &|k| m.get(&k.to_ascii_lowercase()).cloned(),
            &AttributeMap::default(),
        )
    }

    #[test]
    fn builds_from_ad_attributes() {
        let e = entry(&[
            ("msRTCSIP-PrimaryUserAddress", "sip:Alice@Example.com"),
            ("msRTCSIP-UserEnabled", "TRUE"),
            ("displayName", "Alice Anders"),
            ("mail", "alice@example.com"),
            ("title", "Engineer"),
            ("telephoneNumber", "+1 (425) 555-0100"),
            ("entryUUID", "1234"),
            ("l", "Redmond"),
        ])
        .unwrap();
        assert_eq!(e.uri.as_str(), "alice@example.com");
        assert_eq!(e.key, "1234");
        assert!(e.enabled);
        let card = presence_model::xml::parse(&e.details_card().unwrap()).unwrap();
        assert_eq!(card.child("title").unwrap().text(), "Engineer");
        assert_eq!(
            card.child("phone").unwrap().child("uri").unwrap().text(),
            "tel:+14255550100"
        );
        let props = presence_model::xml::parse(&e.user_properties().unwrap()).unwrap();
        assert_eq!(
            props
                .child("lines")
                .unwrap()
                .child("line")
                .unwrap()
                .attr("lineType"),
            Some("Uc")
        );
        assert_eq!(props.child("l").unwrap().text(), "Redmond");
    }

    #[test]
    fn defaults_and_refusals() {
        let e = entry(&[("msRTCSIP-PrimaryUserAddress", "bob@example.com")]).unwrap();
        assert_eq!((e.display_name.as_str(), e.enabled), ("bob", true));
        assert_eq!(
            e.key, "cn=x,dc=example,dc=com",
            "the DN when no key attribute"
        );
        assert_eq!(e.identity_email(), "bob@example.com");
        assert_eq!(e.details_card(), None);
        assert_eq!(e.user_properties(), None);
        assert!(
            entry(&[("displayName", "No Address")])
                .unwrap_err()
                .contains("msRTCSIP-PrimaryUserAddress")
        );
        assert!(entry(&[("msRTCSIP-PrimaryUserAddress", "not a uri")]).is_err());
        assert!(
            entry(&[
                ("msRTCSIP-PrimaryUserAddress", "c@x.com"),
                ("msRTCSIP-UserEnabled", "maybe")
            ])
            .is_err()
        );
        let off = entry(&[
            ("msRTCSIP-PrimaryUserAddress", "c@x.com"),
            ("msRTCSIP-UserEnabled", "FALSE"),
        ])
        .unwrap();
        assert!(!off.enabled);
    }
}
