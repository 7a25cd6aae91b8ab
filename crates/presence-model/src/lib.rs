//! The enhanced-presence model of Presenced: category instances, containers, access
//! control, publication rules and aggregation.
//!
//! This crate does no I/O and knows nothing of threads or async runtimes. Everything
//! that decides *who sees what* lives here, so the SIP, HTTP and WebSocket front ends
//! can never disagree. Time enters only as [`Timestamp`] values handed in by the caller.

pub mod acl;
pub mod aggregation;
pub mod contacts;
pub mod container;
pub mod document;
pub mod instance;
pub mod limits;
pub mod membership;
pub mod publication;
pub mod subscribers;
pub mod summary;
pub mod time;
pub mod uri;
pub mod xml;

pub use acl::{Relation, Viewer, resolve_container};
pub use aggregation::{Aggregator, BuiltinAggregator};
pub use container::{Container, ContainerId, Member};
pub use document::{ChangeSet, PresentityDoc};
pub use instance::{CategoryInstance, EndpointId, ExpireType, Expiry, InstanceKey};
pub use publication::{Publication, PublishError, PublishedItem};
pub use subscribers::{SubscriberEntry, SubscriberType};
pub use time::Timestamp;
pub use uri::UserUri;
