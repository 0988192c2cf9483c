//! Opening the metadata store so that it can never make a data directory unusable.
//!
//! The segments hold the messages and every durable channel's cursor is also written, after
//! sled, to a snapshot file beside the topic's segments (`channels/c_<name>.json`). So when
//! the store is missing, damaged, or cannot be opened because the disk is full, the registry
//! is rebuilt from the topic directories and the snapshots, and the operator is told once,
//! with the path. Where sled and a snapshot disagree (a crash between the two writes), the
//! cursor that has made less progress wins: a message may be delivered again, never lost.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Error, IoContext, Result};
use crate::meta::{to_ranges, ChannelMeta, Meta, TopicMeta};
use crate::reader::{CursorSnapshot, DataDir};

pub(crate) fn open(data_path: &Path) -> Result<Meta> {
    let started = std::time::Instant::now();
    let dir = data_path.join("meta");
    let existed = dir.exists();
    let opened = std::panic::catch_unwind(|| Meta::open(&dir)).unwrap_or_else(|_| {
        Err(Error::Encoding(
            "the metadata store panicked while opening".into(),
        ))
    });
    let meta = match opened {
        Ok(m) => m,
        Err(e) if is_no_space(&e) => {
            tracing::error!(path = %dir.display(), error = %e,
                "metadata store cannot be opened: the disk is full. Running with metadata in memory, rebuilt from the cursor snapshots; queued messages are served, publishes fail until there is room. Free space and restart to persist metadata again");
            Meta::temporary()?
        }
        Err(e) if !is_damage(&e) => {
            // Permissions, a read-only file system, a lock held by another nsqd, ...:
            // nothing to rebuild; say so and what to check.
            let reason = match e {
                Error::Meta(sled::Error::Io(io)) => io.to_string(),
                other => other.to_string(),
            };
            return Err(Error::MetaUnavailable { path: dir, reason });
        }
        Err(e) => {
            let secs = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let aside = data_path.join(format!("meta.damaged-{secs}"));
            std::fs::rename(&dir, &aside).at(&dir)?;
            tracing::error!(path = %dir.display(), moved_to = %aside.display(), error = %e,
                "metadata store is damaged: moved it aside and rebuilding it from the topic directories and cursor snapshots (unfinished messages may be delivered again)");
            Meta::open(&dir)?
        }
    };
    let opened_ms = started.elapsed().as_secs_f64() * 1e3;
    let rebuilt = reconcile(&meta, data_path)?;
    tracing::debug!(path = %dir.display(), open_ms = opened_ms,
        reconcile_ms = started.elapsed().as_secs_f64() * 1e3 - opened_ms, "metadata store opened");
    if rebuilt > 0 && existed {
        tracing::warn!(path = %dir.display(), entries = rebuilt, "metadata store was missing entries: restored them from the data directory");
    } else if rebuilt > 0 {
        tracing::warn!(path = %dir.display(), entries = rebuilt, "metadata store was missing: rebuilt it from the data directory");
    }
    Ok(meta)
}

/// Errors that mean the store's files are damaged (as opposed to unreachable).
fn is_damage(e: &Error) -> bool {
    matches!(
        e,
        Error::Meta(sled::Error::Corruption { .. })
            | Error::Meta(sled::Error::Unsupported(_))
            | Error::Meta(sled::Error::ReportableBug(_))
            | Error::Encoding(_)
    )
}

fn is_no_space(e: &Error) -> bool {
    match e {
        Error::Meta(sled::Error::Io(io)) => crate::fs::is_no_space(io),
        other => other.is_no_space(),
    }
}

/// Add every topic directory and cursor snapshot the store does not know, and merge
/// cursors where the two disagree. Returns how many entries changed.
fn reconcile(meta: &Meta, data_path: &Path) -> Result<usize> {
    let data = DataDir::open(data_path)?;
    let mut changed = 0;
    for t in data.topics()? {
        if !crate::valid_name(&t.name) {
            continue;
        }
        let snapshots = data.cursors(&t)?;
        let stored = meta.topic(&t.name)?;
        let max_id = snapshots.iter().map(|c| c.id).max().unwrap_or(0);
        match stored {
            None => {
                meta.put_topic(
                    &t.name,
                    &TopicMeta {
                        next_channel_id: max_id + 1,
                        ..TopicMeta::default()
                    },
                )?;
                changed += 1;
            }
            Some(mut tm) if tm.next_channel_id <= max_id => {
                tm.next_channel_id = max_id + 1;
                meta.put_topic(&t.name, &tm)?;
                changed += 1;
            }
            Some(_) => {}
        }
        let channels = meta.channels(&t.name)?;
        for snap in snapshots {
            if !crate::valid_name(&snap.channel) {
                continue;
            }
            let from_snap = snapshot_meta(&snap);
            let merged = match channels.iter().find(|(n, _)| *n == snap.channel) {
                None => from_snap,
                Some((_, cm)) if *cm == from_snap => continue,
                Some((_, cm)) => merge(cm, &from_snap),
            };
            tracing::warn!(topic = %t.name, channel = %snap.channel, read = merged.read,
                "restoring channel cursor from its snapshot file");
            meta.put_channel(&t.name, &snap.channel, &merged)?;
            changed += 1;
        }
    }
    if changed > 0 {
        meta.flush()?;
    }
    Ok(changed)
}

fn snapshot_meta(c: &CursorSnapshot) -> ChannelMeta {
    ChannelMeta {
        id: c.id,
        paused: c.paused,
        read: c.read,
        ack_floor: c.ack_floor,
        unacked: c.unacked.clone(),
        ahead: c.ahead.clone(),
    }
}

/// The cursor that redelivers everything either one would: the lower read position, and
/// every sequence unfinished in either below it.
fn merge(a: &ChannelMeta, b: &ChannelMeta) -> ChannelMeta {
    let read = a.read.min(b.read);
    let mut unacked = BTreeSet::new();
    for m in [a, b] {
        for &(lo, hi) in &m.unacked {
            unacked.extend((lo..hi).filter(|&s| s < read || m.ahead.contains(&s)));
        }
        // What this side had read past but the merged cursor has not is read again.
    }
    let mut ahead: Vec<u64> = a.ahead.iter().chain(&b.ahead).copied().collect();
    ahead.sort_unstable();
    ahead.dedup();
    ahead.retain(|&s| s >= read);
    ChannelMeta {
        id: a.id,
        paused: a.paused || b.paused,
        read,
        ack_floor: a.ack_floor.min(b.ack_floor),
        unacked: to_ranges(unacked),
        ahead,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_never_loses_an_unfinished_message() {
        let a = ChannelMeta {
            id: 1,
            paused: false,
            read: 100,
            ack_floor: 10,
            unacked: vec![(10, 11), (50, 52)],
            ahead: vec![],
        };
        let b = ChannelMeta {
            read: 80,
            ack_floor: 20,
            unacked: vec![(20, 21)],
            ..a.clone()
        };
        let m = merge(&a, &b);
        assert_eq!(m.read, 80);
        assert_eq!(m.ack_floor, 10);
        // 50 and 51 are at or past 80? No: below it, unfinished in `a`, so kept.
        assert_eq!(m.unacked, vec![(10, 11), (20, 21), (50, 52)]);
    }
}
