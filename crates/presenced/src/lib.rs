//! The `presenced` binary's library half: configuration, the server, user
//! administration and the benchmarks.

pub mod bench;
pub mod bench_publish;
pub mod bench_search;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod directory_sync;
pub mod http_serve;
pub mod server;
pub mod startup;
pub mod users;
