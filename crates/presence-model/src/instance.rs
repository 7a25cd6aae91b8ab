//! Category instances: one published item of one category, in one container.

use crate::container::ContainerId;
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// A signed-in device or connection of a user (a SIP registration, a WebSocket).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EndpointId(pub u64);

/// The lifetime class a publisher chooses for an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExpireType {
    /// Kept until deleted; survives sign-out and restarts.
    Static,
    /// Kept while the user has at least one endpoint; removed with the last one.
    User,
    /// Removed when the publishing endpoint goes away.
    Endpoint,
    /// Removed `expires` seconds after publication.
    Time,
}

impl ExpireType {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "static" => Some(ExpireType::Static),
            "user" => Some(ExpireType::User),
            "endpoint" => Some(ExpireType::Endpoint),
            "time" => Some(ExpireType::Time),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ExpireType::Static => "static",
            ExpireType::User => "user",
            ExpireType::Endpoint => "endpoint",
            ExpireType::Time => "time",
        }
    }
}

/// The lifetime of a stored instance, with what it needs to end it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Expiry {
    Static,
    User,
    Endpoint { endpoint: EndpointId },
    Time { at: Timestamp, secs: u64 },
}

impl Expiry {
    pub fn expire_type(&self) -> ExpireType {
        match self {
            Expiry::Static => ExpireType::Static,
            Expiry::User => ExpireType::User,
            Expiry::Endpoint { .. } => ExpireType::Endpoint,
            Expiry::Time { .. } => ExpireType::Time,
        }
    }
}

/// Who wrote an instance. Server-written instances (aggregates, directory cards)
/// are read-only to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Author {
    Client,
    Server,
}

/// Where an instance lives inside one presentity. Ordered by container first so a
/// container's instances of one category are one range of the map.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct InstanceKey {
    pub container: ContainerId,
    pub category: Arc<str>,
    pub instance: u32,
}

impl InstanceKey {
    pub fn new(category: &str, instance: u32, container: ContainerId) -> Self {
        InstanceKey {
            container,
            category: Arc::from(category),
            instance,
        }
    }
}

/// One stored category instance. The XML value is kept verbatim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CategoryInstance {
    pub key: InstanceKey,
    pub version: u32,
    pub expiry: Expiry,
    pub publish_time: Timestamp,
    /// Engine-wide publication order. Publish times have millisecond resolution;
    /// aggregation needs a strict "newer than", which this gives.
    pub seq: u64,
    pub author: Author,
    pub value: Arc<str>,
}

impl CategoryInstance {
    /// Durable instances go to the store; endpoint-bound ones and the aggregation
    /// outputs (recomputed from live endpoints) do not.
    pub fn is_durable(&self) -> bool {
        match self.expiry {
            Expiry::Endpoint { .. } => false,
            Expiry::User => self.author == Author::Client,
            Expiry::Static | Expiry::Time { .. } => true,
        }
    }
}
