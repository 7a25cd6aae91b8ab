//! Publication batches: what a client asks to write, and why a batch can be refused.
//! The rules themselves are applied by [`crate::PresentityDoc::publish`].

use crate::container::ContainerId;
use crate::instance::ExpireType;
use crate::time::Timestamp;
use crate::xml::XmlError;

/// One publication of a batch. `expires == Some(0)` deletes the instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publication {
    pub category: String,
    pub instance: u32,
    pub container: ContainerId,
    /// The version the client last saw for this key; 0 for a new key.
    pub version: u32,
    pub expire_type: ExpireType,
    pub expires: Option<u64>,
    /// The XML value; absent only for deletions.
    pub value: Option<String>,
}

impl Publication {
    pub fn is_delete(&self) -> bool {
        self.expires == Some(0)
    }
}

/// A stale version inside a batch: `index` is 1-based, as the MS-PRES 409 fault has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub index: usize,
    pub version: u32,
    pub current_version: u32,
}

/// Why a whole batch was refused. Nothing of a refused batch is applied.
/// Every `index` is 1-based.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    #[error("the batch holds no publication")]
    Empty,
    #[error("publication {index}: {reason}")]
    Invalid { index: usize, reason: String },
    #[error("publication {index} repeats the key of publication {first}")]
    Duplicate { index: usize, first: usize },
    #[error("publication {index}: {source}")]
    InvalidXml { index: usize, source: XmlError },
    #[error(
        "publication {index} writes server-owned data ({category} instance {instance} in container {container})"
    )]
    ReadOnly {
        index: usize,
        category: String,
        instance: u32,
        container: u16,
    },
    #[error("publication {index}: expire type endpoint needs a live endpoint of the publisher")]
    EndpointRequired { index: usize },
    #[error("{0}")]
    TooLarge(String),
    #[error("version conflict in {} publication(s)", .0.len())]
    Conflict(Vec<Conflict>),
}

/// The result of one applied publication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedItem {
    pub index: usize,
    pub category: String,
    pub instance: u32,
    pub container: ContainerId,
    /// The new version; for a deletion, the version the deleted instance had.
    pub version: u32,
    pub publish_time: Timestamp,
    pub deleted: bool,
}
