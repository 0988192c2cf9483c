//! The engine's public value types: options, messages as published and as handed out,
//! and the figures `stats()` reports.

use std::time::Duration;

use bytes::Bytes;

use crate::error::Result;
use crate::record::RecordHeader;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineOptions {
    pub mem_queue_size: usize,
    pub max_bytes_per_file: u64,
    pub sync_every: u64,
    pub sync_timeout: Duration,
    /// Refuse publishes to a topic whose log holds this many bytes (0 = no bound).
    pub max_bytes_per_topic: u64,
    /// Keep finished messages this long for replay (0 = delete segments as soon as every
    /// channel has finished them).
    pub retention_time: Duration,
    /// Keep at least the newest this many bytes of finished messages (0 = none).
    pub retention_bytes: u64,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            mem_queue_size: 10000,
            max_bytes_per_file: 100 * 1024 * 1024,
            sync_every: 2500,
            sync_timeout: Duration::from_secs(2),
            max_bytes_per_topic: 0,
            retention_time: Duration::ZERO,
            retention_bytes: 0,
        }
    }
}

pub struct NewMessage {
    pub body: Bytes,
    /// Unix milliseconds before which the message must not be delivered (0 = now).
    pub deliver_at_ms: u64,
}

/// A message imported from another system's files (see [`crate::Topic::import`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedMessage {
    pub timestamp_ns: i64,
    pub attempts: u16,
    pub body: Bytes,
}

/// A message as handed to a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub seq: u64,
    pub id: [u8; 16],
    pub timestamp_ns: i64,
    pub deliver_at_ms: u64,
    pub attempts: u16,
    pub body: Bytes,
}

impl Message {
    pub(crate) fn from_record(h: &RecordHeader, body: Bytes) -> Message {
        Message {
            seq: h.seq,
            id: h.id,
            timestamp_ns: h.timestamp_ns,
            deliver_at_ms: h.deliver_at_ms,
            attempts: h.attempts,
            body,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Published {
    pub first_seq: u64,
    pub count: usize,
    /// [`crate::Topic::publish_deferring_spill`] left records over the memory bound for
    /// the caller to write with [`crate::Topic::spill_owed`] (always false otherwise).
    pub spill_owed: bool,
}

#[derive(Debug, Clone, Default)]
pub struct TopicStats {
    /// Messages waiting in the topic for a first channel (0 once channels exist).
    pub depth: u64,
    pub mem_depth: u64,
    pub backend_depth: u64,
    pub next_seq: u64,
    pub segments: usize,
    pub log_bytes: u64,
    /// Damaged places recovery skipped when the topic was opened.
    pub corrupt_records: u64,
    /// The storage error the topic is in now, if any.
    pub storage_error: Option<String>,
    /// Oldest sequence still stored (retained history included) and its publish time (ns).
    pub oldest_seq: u64,
    pub oldest_ts: i64,
}

#[derive(Debug, Clone, Default)]
pub struct ChannelStats {
    /// Messages not yet handed out (including ones to hand out again after a restart).
    pub depth: u64,
    /// The part of `depth` that is on disk only.
    pub backend_depth: u64,
    pub ack_floor: u64,
    pub read: u64,
    pub outstanding: u64,
    /// Publish time (Unix ns) of the oldest message this channel has not finished (0 when
    /// none): how far behind it is, in time.
    pub oldest_unfinished_ts: i64,
}

pub type DurableCallback = Box<dyn FnOnce(Result<()>) + Send>;

/// Where to move a channel's cursor (`/channel/rewind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RewindTo {
    /// The oldest message still stored (retained history included).
    Earliest,
    /// The end: everything queued is skipped.
    Latest,
    /// The first message published at or after this time (Unix ns).
    Time(i64),
    /// This sequence (clamped to what is stored).
    Seq(u64),
}

/// A topic's own settings, overriding the node-wide flags where set (`/topic/config`;
/// beyond NSQ). Stored as JSON beside the topic's segments.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TopicConfig {
    pub mem_queue_size: Option<u64>,
    pub sync_every: Option<u64>,
    /// Milliseconds.
    pub sync_timeout: Option<u64>,
    /// Milliseconds.
    pub retention_time: Option<u64>,
    pub retention_bytes: Option<u64>,
    /// The bound of `--max-bytes-per-topic` for this topic.
    pub max_bytes: Option<u64>,
}

impl TopicConfig {
    /// The node-wide options with this topic's overrides applied.
    pub fn apply(&self, node: &EngineOptions) -> EngineOptions {
        let mut o = *node;
        if let Some(v) = self.mem_queue_size {
            o.mem_queue_size = v as usize;
        }
        if let Some(v) = self.sync_every {
            o.sync_every = v.max(1);
        }
        if let Some(v) = self.sync_timeout {
            o.sync_timeout = Duration::from_millis(v);
        }
        if let Some(v) = self.retention_time {
            o.retention_time = Duration::from_millis(v);
        }
        if let Some(v) = self.retention_bytes {
            o.retention_bytes = v;
        }
        if let Some(v) = self.max_bytes {
            o.max_bytes_per_topic = v;
        }
        o
    }
}
