//! Hard limits of the model. Each is enforced where the data enters and has a test at
//! its boundary; the server's configuration cannot raise them past these values.

/// Largest XML value of one category instance, in bytes.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// Most bytes of client-published values one presentity may hold in all (it bounds
/// the document written to the store and the owner's roaming data).
pub const MAX_VALUE_BYTES_PER_PRESENTITY: usize = 8 * 1024 * 1024;
/// Most publications in one batch.
pub const MAX_PUBLICATIONS_PER_BATCH: usize = 256;
/// Most client-published category instances one presentity may hold across all
/// containers. Server-written instances (aggregation outputs, directory data) come on
/// top; their writers bound them.
pub const MAX_INSTANCES_PER_PRESENTITY: usize = 4096;
/// Most members in one container.
pub const MAX_MEMBERS_PER_CONTAINER: usize = 1000;
/// Most containers one presentity may have (well-known ones included).
pub const MAX_CONTAINERS: usize = 64;
/// Longest category name, in bytes.
pub const MAX_CATEGORY_NAME_BYTES: usize = 64;
/// Longest lifetime of an `expireType="time"` instance, in seconds (one year).
pub const MAX_TIME_EXPIRES_SECS: u64 = 366 * 24 * 3600;
/// Most entries in a presentity's subscriber ("who added me") list; the oldest
/// acknowledged-or-not entry is dropped past it.
pub const MAX_SUBSCRIBER_ENTRIES: usize = 1000;
/// Deepest element nesting accepted in a category value.
pub const MAX_XML_DEPTH: usize = 32;
