//! nsq-rs client library: an async (tokio) [`Producer`] and [`Consumer`] for nsqd's TCP
//! protocol V2, working with nsq-rs and with NSQ's own nsqd.
//!
//! Publish:
//!
//! ```no_run
//! # async fn demo() -> client::Result<()> {
//! let producer = client::Producer::new("127.0.0.1:4150", client::Config::default());
//! producer.publish("events", "hello").await?;
//! producer
//!     .multi_publish("events", vec!["a".into(), "b".into()])
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! Consume, discovering nsqd through nsqlookupd; returning `Err` requeues with back-off:
//!
//! ```no_run
//! # async fn demo() -> client::Result<()> {
//! let config = client::Config {
//!     max_in_flight: 100,
//!     ..client::Config::default()
//! };
//! let consumer = client::Consumer::new("events", "archive", config, |m| async move {
//!     println!("{}", String::from_utf8_lossy(&m.body));
//!     Ok::<(), std::io::Error>(())
//! })?;
//! consumer.connect_to_lookupd("127.0.0.1:4161").await?;
//! tokio::signal::ctrl_c().await.ok();
//! consumer.stop().await; // finishes in-flight work first
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

mod config;
mod conn;
mod consumer;
mod error;
pub mod lookup;
mod producer;

pub use config::{Compression, Config, TlsConfig};
pub use consumer::{Consumer, ConsumerStats, Message, Outcome};
pub use error::{Error, Result};
pub use producer::Producer;
pub use protocol::v2::MessageId;
