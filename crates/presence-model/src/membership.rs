//! Container membership changes, applied all-or-nothing like publications.

use crate::container::{ContainerId, Member};
use crate::publication::Conflict;

/// One container's change: the membership version the client saw and the members
/// to add and remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerUpdate {
    pub id: ContainerId,
    pub version: u32,
    pub add: Vec<Member>,
    pub remove: Vec<Member>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    #[error("the membership of container {0} is fixed by the server")]
    Fixed(u16),
    #[error("update {index}: {reason}")]
    Invalid { index: usize, reason: String },
    #[error("{0}")]
    TooLarge(String),
    #[error("version conflict in {} container update(s)", .0.len())]
    Conflict(Vec<Conflict>),
}
