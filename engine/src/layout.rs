//! Every name the engine gives things on disk, in one place, shared by the writer and the
//! read-only view (`reader.rs`):
//!
//! ```text
//! <data-path>/meta/                        sled: registry and cursors
//! <data-path>/meta.damaged-<unix s>/        a damaged store moved aside (meta_recovery.rs)
//! <data-path>/topics/t_<topic>/            one log per durable topic
//!     <first seq, 20 digits>.seg           segments (log.rs, docs/FORMAT.md)
//!     <first seq, 20 digits>.idx           sealed-segment summaries (seal.rs)
//!     channels/c_<channel>.json            cursor snapshots (written after sled)
//!     config.json                          the topic's own settings (`TopicConfig`)
//!     readers/<name>.cursor                an external reader's position (external.rs)
//!     readers.lock                         flock: reader registration vs GC (external.rs)
//! <data-path>/topics/.deleted-<pid>-<n>/   a topic being deleted
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{IoContext, Result};
use crate::fs::Io;
use crate::meta::ChannelMeta;

pub const SEGMENT_SUFFIX: &str = ".seg";

pub fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}{SEGMENT_SUFFIX}")
}

/// List the segment files of a log directory as (first sequence, path), ascending. Files
/// that are not segments are ignored.
pub fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut names: Vec<(u64, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(dir).at(dir)? {
        let entry = entry.at(dir)?;
        let name = entry.file_name().to_string_lossy().to_string();
        if let Some(first) = name
            .strip_suffix(SEGMENT_SUFFIX)
            .and_then(|s| s.parse::<u64>().ok())
        {
            names.push((first, entry.path()));
        }
    }
    names.sort();
    Ok(names)
}

pub(crate) const DELETED_PREFIX: &str = ".deleted-";

/// Directory names carry a prefix so that names like `..` stay inside the data directory.
pub fn topic_dir_name(topic: &str) -> String {
    format!("t_{topic}")
}

pub fn channel_snapshot_name(channel: &str) -> String {
    format!("c_{channel}.json")
}

/// A channel's cursor as last persisted (the snapshot file's JSON).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CursorSnapshot {
    pub channel: String,
    pub id: u32,
    pub paused: bool,
    pub read: u64,
    pub ack_floor: u64,
    pub unacked: Vec<(u64, u64)>,
    /// Relocated copies at or past `read` that the reader skips (see DESIGN: stragglers).
    #[serde(default)]
    pub ahead: Vec<u64>,
}

impl CursorSnapshot {
    pub(crate) fn from_meta(channel: &str, m: &ChannelMeta) -> CursorSnapshot {
        CursorSnapshot {
            channel: channel.to_string(),
            id: m.id,
            paused: m.paused,
            read: m.read,
            ack_floor: m.ack_floor,
            unacked: m.unacked.clone(),
            ahead: m.ahead.clone(),
        }
    }

    pub(crate) fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    pub fn unacked_count(&self) -> u64 {
        self.unacked.iter().map(|(a, b)| b - a).sum()
    }
}

/// Write a channel's cursor snapshot atomically (temporary file + rename).
pub(crate) fn write_snapshot(
    io: &Io,
    topic_dir: &Path,
    channel: &str,
    cm: &ChannelMeta,
) -> Result<()> {
    let dir = topic_dir.join("channels");
    std::fs::create_dir_all(&dir).at(&dir)?;
    let path = dir.join(channel_snapshot_name(channel));
    let tmp = dir.join(format!(".{}.tmp", channel_snapshot_name(channel)));
    let json = CursorSnapshot::from_meta(channel, cm).to_json();
    io.write_file(&tmp, json.as_bytes()).at(&tmp)?;
    io.rename(&tmp, &path).at(&path)?;
    Ok(())
}

const TOPIC_CONFIG: &str = "config.json";

/// A topic's settings file; absent or unreadable means no overrides (logged).
pub(crate) fn read_topic_config(topic_dir: &Path) -> crate::types::TopicConfig {
    let path = topic_dir.join(TOPIC_CONFIG);
    match std::fs::read(&path) {
        Err(_) => crate::types::TopicConfig::default(),
        Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
            tracing::warn!(path = %path.display(), error = %e, "unreadable topic settings: using the node-wide flags");
            crate::types::TopicConfig::default()
        }),
    }
}

pub(crate) fn write_topic_config(
    io: &Io,
    topic_dir: &Path,
    config: &crate::types::TopicConfig,
) -> Result<()> {
    let path = topic_dir.join(TOPIC_CONFIG);
    let tmp = topic_dir.join(format!(".{TOPIC_CONFIG}.tmp"));
    let json = serde_json::to_vec_pretty(config).unwrap_or_default();
    io.write_file(&tmp, &json).at(&tmp)?;
    io.rename(&tmp, &path).at(&path)?;
    Ok(())
}
