//! Containers: access-control buckets identified by 0..=32767, each with a membership
//! list and its own membership version.

use crate::uri::{UserUri, is_domain};
use serde::{Deserialize, Serialize};

/// A container id in 0..=32767.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct ContainerId(u16);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("container id {0} is outside 0..=32767")]
pub struct InvalidContainerId(pub u64);

impl ContainerId {
    pub const MAX: u16 = 32767;
    /// Default: watchers who match no other container (identity only).
    pub const DEFAULT: ContainerId = ContainerId(0);
    /// Self: the owner's roaming data and server-provisioned user data.
    pub const SELF: ContainerId = ContainerId(1);
    /// Aggregation input set 1 (feeds 2, 100, 200, 400).
    pub const AGGREGATION_1: ContainerId = ContainerId(2);
    /// Aggregation input set 2 (feeds 3 and 300).
    pub const AGGREGATION_2: ContainerId = ContainerId(3);
    pub const EXTERNAL: ContainerId = ContainerId(100);
    pub const COLLEAGUES: ContainerId = ContainerId(200);
    pub const WORKGROUP: ContainerId = ContainerId(300);
    pub const PERSONAL: ContainerId = ContainerId(400);
    pub const BLOCKED: ContainerId = ContainerId(32000);

    pub fn new(id: u64) -> Result<Self, InvalidContainerId> {
        if id <= Self::MAX as u64 {
            Ok(ContainerId(id as u16))
        } else {
            Err(InvalidContainerId(id))
        }
    }

    pub fn get(self) -> u16 {
        self.0
    }

    /// Containers 0..=3 are local: their membership is fixed by the server, and 1..=3
    /// are never visible to anyone but the owner.
    pub fn is_local(self) -> bool {
        self.0 <= 3
    }

    /// Containers a watcher other than the owner can be resolved to by membership.
    pub fn is_remote(self) -> bool {
        self.0 >= 4
    }
}

impl TryFrom<u32> for ContainerId {
    type Error = InvalidContainerId;
    fn try_from(v: u32) -> Result<Self, Self::Error> {
        ContainerId::new(v as u64)
    }
}

impl From<ContainerId> for u32 {
    fn from(c: ContainerId) -> u32 {
        c.0 as u32
    }
}

/// One entry of a container's membership list.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "camelCase")]
pub enum Member {
    User(UserUri),
    Domain(String),
    SameEnterprise,
    Federated,
    PublicCloud,
    Everyone,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidMember {
    #[error("unknown member type {0:?}")]
    UnknownType(String),
    #[error("member type {0} needs a value")]
    MissingValue(&'static str),
    #[error("member type {0} takes no value")]
    UnexpectedValue(&'static str),
    #[error("invalid member value {0:?}")]
    BadValue(String),
}

impl Member {
    /// Builds a member from its wire form (`type` plus optional `value`), as both the
    /// SIP `<member type= value=>` element and the JSON API write it.
    pub fn from_parts(kind: &str, value: Option<&str>) -> Result<Self, InvalidMember> {
        let value = value.map(str::trim).filter(|v| !v.is_empty());
        let no_value = |m: Member, name| match value {
            None => Ok(m),
            Some(_) => Err(InvalidMember::UnexpectedValue(name)),
        };
        match kind {
            "user" => {
                let v = value.ok_or(InvalidMember::MissingValue("user"))?;
                UserUri::parse(v)
                    .map(Member::User)
                    .map_err(|_| InvalidMember::BadValue(v.to_string()))
            }
            "domain" => {
                let v = value.ok_or(InvalidMember::MissingValue("domain"))?;
                let d = v.to_ascii_lowercase();
                if is_domain(&d) {
                    Ok(Member::Domain(d))
                } else {
                    Err(InvalidMember::BadValue(v.to_string()))
                }
            }
            "sameEnterprise" => no_value(Member::SameEnterprise, "sameEnterprise"),
            "federated" => no_value(Member::Federated, "federated"),
            "publicCloud" => no_value(Member::PublicCloud, "publicCloud"),
            "everyone" => no_value(Member::Everyone, "everyone"),
            other => Err(InvalidMember::UnknownType(other.to_string())),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Member::User(_) => "user",
            Member::Domain(_) => "domain",
            Member::SameEnterprise => "sameEnterprise",
            Member::Federated => "federated",
            Member::PublicCloud => "publicCloud",
            Member::Everyone => "everyone",
        }
    }

    pub fn value(&self) -> Option<&str> {
        match self {
            Member::User(u) => Some(u.as_str()),
            Member::Domain(d) => Some(d),
            _ => None,
        }
    }
}

/// A container: id, membership version and members. The category instances that
/// live in it are kept by [`crate::PresentityDoc`], keyed by container id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    pub id: ContainerId,
    pub version: u32,
    pub members: Vec<Member>,
}

impl Container {
    pub fn new(id: ContainerId) -> Self {
        Container {
            id,
            version: 0,
            members: Vec::new(),
        }
    }

    /// The memberships every new user starts with: 100 = {federated},
    /// 200 = {sameEnterprise}, 32000 = {} (each at version 1). SIPE would add the first
    /// two itself on its first sign-in; seeding them makes HTTP-only users behave the same.
    pub fn defaults() -> Vec<Container> {
        vec![
            Container {
                id: ContainerId::EXTERNAL,
                version: 1,
                members: vec![Member::Federated],
            },
            Container {
                id: ContainerId::COLLEAGUES,
                version: 1,
                members: vec![Member::SameEnterprise],
            },
            Container {
                id: ContainerId::BLOCKED,
                version: 1,
                members: vec![],
            },
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_range_boundaries() {
        assert!(ContainerId::new(0).is_ok());
        assert!(ContainerId::new(32767).is_ok());
        assert_eq!(ContainerId::new(32768), Err(InvalidContainerId(32768)));
        assert!(ContainerId::new(3).unwrap().is_local());
        assert!(ContainerId::new(4).unwrap().is_remote());
    }

    #[test]
    fn members_from_wire() {
        assert_eq!(
            Member::from_parts("user", Some("sip:Bob@example.com")),
            Ok(Member::User(UserUri::parse("bob@example.com").unwrap()))
        );
        assert_eq!(
            Member::from_parts("domain", Some("Example.COM")),
            Ok(Member::Domain("example.com".into()))
        );
        assert_eq!(Member::from_parts("everyone", None), Ok(Member::Everyone));
        assert_eq!(
            Member::from_parts("user", None),
            Err(InvalidMember::MissingValue("user"))
        );
        assert_eq!(
            Member::from_parts("federated", Some("x")),
            Err(InvalidMember::UnexpectedValue("federated"))
        );
        assert!(matches!(
            Member::from_parts("friend", None),
            Err(InvalidMember::UnknownType(_))
        ));
        assert!(matches!(
            Member::from_parts("domain", Some("not a domain")),
            Err(InvalidMember::BadValue(_))
        ));
    }

    #[test]
    fn member_json_shape() {
        let m = Member::User(UserUri::parse("bob@example.com").unwrap());
        // Exercised through serde by the store; the JSON API writes its own shape.
        assert_eq!(m.kind(), "user");
        assert_eq!(m.value(), Some("bob@example.com"));
        assert_eq!(Member::Everyone.value(), None);
    }
}
