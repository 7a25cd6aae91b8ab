//! The `presenced` binary's library half: configuration, the server, user
//! administration and the fan-out benchmark.

pub mod bench;
pub mod config;
pub mod demo;
pub mod directory_sync;
pub mod server;
pub mod users;
