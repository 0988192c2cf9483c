//! nsqd: an NSQ-compatible daemon on the nsq-rs storage engine.
//!
//! The binary (`src/main.rs`) only parses options and calls [`server::run`]; everything
//! else lives here so tests can drive a daemon in-process.
//!
//! - [`nsqd`]: shared state (options, engine, topics, clients)
//! - [`topic`], [`channel`], [`client`]: the delivery runtime
//! - [`protocol_v2`]: one TCP client; [`compression`], [`tls`], [`auth`]: its upgrades
//! - [`http`]: the HTTP API; [`stats`]: latency percentiles
//! - [`lookup`]: registration with nsqlookupd
//! - [`server`]: listeners, timers, signals, shutdown

#![forbid(unsafe_code)]

pub mod auth;
pub mod channel;
pub mod client;
pub mod guid;
pub use protocol::compression;
pub mod http;
mod http_admin;
mod http_config;
pub mod http_log;
pub mod https;
pub mod lookup;
pub mod md5;
pub mod metrics;
pub mod nsq_import;
pub mod nsqd;
pub mod options;
pub mod pprof;
pub mod protocol_v2;
pub mod server;
pub mod stats;
pub mod statsd;
pub mod tls;
pub mod topic;
