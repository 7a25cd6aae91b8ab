//! "Who added me": the subscriber list of a presentity.

use crate::time::Timestamp;
use crate::uri::UserUri;
use serde::{Deserialize, Serialize};

/// The network relation of a subscriber, as MS-PRES reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SubscriberType {
    SameEnterprise,
    Federated,
    PublicCloud,
    Unknown,
}

impl SubscriberType {
    pub fn as_str(self) -> &'static str {
        match self {
            SubscriberType::SameEnterprise => "sameEnterprise",
            SubscriberType::Federated => "federated",
            SubscriberType::PublicCloud => "publicCloud",
            SubscriberType::Unknown => "unknown",
        }
    }
}

/// A watcher who subscribed to this presentity with a context (typically: added the
/// owner to their contact list). The owner sees the list and acknowledges entries,
/// which deletes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriberEntry {
    pub user: UserUri,
    pub display_name: String,
    pub kind: SubscriberType,
    pub acknowledged: bool,
    pub since: Timestamp,
}
