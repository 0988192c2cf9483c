//! Taking over an NSQ 1.x data directory.
//!
//! NSQ's nsqd keeps, directly under `--data-path`:
//! - `nsqd.dat` (NSQ 1.x; NSQ 0.3.x-1.0 also wrote `nsqd.<id>.dat`): JSON metadata,
//!   `{"topics": [{"name", "paused", "channels": [{"name", "paused"}]}], "version"}`;
//! - one diskqueue per topic (named `<topic>`) and per channel (`<topic>:<channel>`):
//!   data files `<name>.diskqueue.<n>.dat` (`n` as 6 digits), each a sequence of records
//!   (4-byte big-endian length, then the message as NSQ encodes it: 8-byte big-endian
//!   timestamp in ns, 2-byte big-endian attempts, 16-byte id, body), and a metadata file
//!   `<name>.diskqueue.meta.dat`, text: `depth\nreadFileNum,readPos\nwriteFileNum,writePos\n`.
//!   The queued messages are those from (readFileNum, readPos) up to (writeFileNum,
//!   writePos); a file before the write file ends at its end.
//!
//! [`import_if_present`] reads them into the engine before nsqd serves (a topic's queue
//! for every channel, a channel's queue for that channel only, keeping NSQ's timestamps
//! and attempts), syncs, and then moves NSQ's files into `nsq-imported-<unix time>/` so
//! nothing is imported twice and nothing is deleted. A damaged file is logged with its
//! name and the import of that queue stops there; nsqd still starts.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// What NSQ stores of a message (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NsqMessage {
    pub timestamp_ns: i64,
    pub attempts: u16,
    pub id: [u8; 16],
    pub body: Bytes,
}

/// Bytes before the body of a message as NSQ stores it.
const MESSAGE_HEADER: usize = 8 + 2 + 16;

impl NsqMessage {
    /// NSQ's encoding (`Message.WriteTo`).
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(MESSAGE_HEADER + self.body.len());
        v.extend_from_slice(&self.timestamp_ns.to_be_bytes());
        v.extend_from_slice(&self.attempts.to_be_bytes());
        v.extend_from_slice(&self.id);
        v.extend_from_slice(&self.body);
        v
    }

    pub fn decode(b: &[u8]) -> Option<NsqMessage> {
        if b.len() < MESSAGE_HEADER {
            return None;
        }
        let timestamp_ns = i64::from_be_bytes(b[0..8].try_into().ok()?);
        let attempts = u16::from_be_bytes(b[8..10].try_into().ok()?);
        let id: [u8; 16] = b[10..26].try_into().ok()?;
        Some(NsqMessage {
            timestamp_ns,
            attempts,
            id,
            body: Bytes::copy_from_slice(&b[MESSAGE_HEADER..]),
        })
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct NsqMetadata {
    #[serde(default, deserialize_with = "null_as_empty")]
    pub topics: Vec<NsqTopicMeta>,
    #[serde(default)]
    pub version: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct NsqTopicMeta {
    pub name: String,
    #[serde(default)]
    pub paused: bool,
    /// NSQ writes `null` for a topic without channels.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub channels: Vec<NsqChannelMeta>,
}

fn null_as_empty<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct NsqChannelMeta {
    pub name: String,
    #[serde(default)]
    pub paused: bool,
}

/// NSQ's metadata file in `data`, if any: `nsqd.dat`, else an older `nsqd.<id>.dat`.
pub fn metadata_file(data: &Path) -> Option<PathBuf> {
    let current = data.join("nsqd.dat");
    if current.is_file() {
        return Some(current);
    }
    let mut old: Vec<PathBuf> = std::fs::read_dir(data)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(is_old_metadata_name)
        })
        .collect();
    old.sort();
    old.into_iter().next()
}

fn is_old_metadata_name(n: &str) -> bool {
    n.strip_prefix("nsqd.")
        .and_then(|r| r.strip_suffix(".dat"))
        .is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
}

/// Is `n` one of NSQ's files (metadata, diskqueue data or metadata, and their leftovers)?
fn is_nsq_file_name(n: &str) -> bool {
    n == "nsqd.dat"
        || is_old_metadata_name(n)
        || (n.starts_with("nsqd.dat.") && n.ends_with(".tmp"))
        || n.contains(".diskqueue.")
}

/// The diskqueue name NSQ gives a topic (`None`) or one of its channels.
pub fn queue_name(topic: &str, channel: Option<&str>) -> String {
    match channel {
        Some(c) => format!("{topic}:{c}"),
        None => topic.to_string(),
    }
}

pub fn queue_data_file(dir: &Path, queue: &str, n: i64) -> PathBuf {
    dir.join(format!("{queue}.diskqueue.{n:06}.dat"))
}

pub fn queue_meta_file(dir: &Path, queue: &str) -> PathBuf {
    dir.join(format!("{queue}.diskqueue.meta.dat"))
}

/// A diskqueue's metadata file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueMeta {
    pub depth: i64,
    pub read_file: i64,
    pub read_pos: i64,
    pub write_file: i64,
    pub write_pos: i64,
}

impl QueueMeta {
    pub fn parse(text: &str) -> Option<QueueMeta> {
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
        let depth = lines.next()?.parse().ok()?;
        let pair = |l: Option<&str>| -> Option<(i64, i64)> {
            let (a, b) = l?.split_once(',')?;
            Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
        };
        let (read_file, read_pos) = pair(lines.next())?;
        let (write_file, write_pos) = pair(lines.next())?;
        Some(QueueMeta {
            depth,
            read_file,
            read_pos,
            write_file,
            write_pos,
        })
    }

    pub fn to_text(&self) -> String {
        format!(
            "{}\n{},{}\n{},{}\n",
            self.depth, self.read_file, self.read_pos, self.write_file, self.write_pos
        )
    }
}

/// What reading one queue gave.
#[derive(Debug, Default)]
pub struct QueueRead {
    /// Messages handed to the sink.
    pub messages: u64,
    /// NSQ's own count of queued messages (its metadata's depth), for the log.
    pub nsq_depth: i64,
    /// Why reading stopped early (naming the file), if it did.
    pub problem: Option<String>,
}

/// Read the messages still queued in diskqueue `queue` under `dir`, handing them to
/// `sink` in batches of at most `batch`. A queue without a metadata file is empty (as NSQ
/// treats it). Damage stops the reading there; what came before was handed over. An
/// error from `sink` stops it too and is returned as the problem.
pub fn read_queue(
    dir: &Path,
    queue: &str,
    batch: usize,
    sink: &mut dyn FnMut(Vec<NsqMessage>) -> Result<(), String>,
) -> QueueRead {
    let mut out = QueueRead::default();
    let meta_path = queue_meta_file(dir, queue);
    if !meta_path.exists() {
        return out;
    }
    let meta = match std::fs::read_to_string(&meta_path) {
        Err(e) => {
            out.problem = Some(format!("{}: {e}", meta_path.display()));
            return out;
        }
        Ok(text) => match QueueMeta::parse(&text) {
            Some(m) => m,
            None => {
                out.problem = Some(format!(
                    "{}: not a diskqueue metadata file (want depth, readFileNum,readPos, writeFileNum,writePos)",
                    meta_path.display()
                ));
                return out;
            }
        },
    };
    out.nsq_depth = meta.depth;
    if meta.read_file < 0
        || meta.read_pos < 0
        || meta.write_pos < 0
        || (meta.read_file, meta.read_pos) > (meta.write_file, meta.write_pos)
    {
        out.problem = Some(format!(
            "{}: read position {},{} is past write position {},{}",
            meta_path.display(),
            meta.read_file,
            meta.read_pos,
            meta.write_file,
            meta.write_pos
        ));
        return out;
    }
    let batch = batch.max(1);
    let mut pending = Vec::with_capacity(batch.min(4096));
    let mut flush = |pending: &mut Vec<NsqMessage>, out: &mut QueueRead| -> bool {
        if pending.is_empty() {
            return true;
        }
        let n = pending.len() as u64;
        match sink(std::mem::take(pending)) {
            Ok(()) => {
                out.messages += n;
                true
            }
            Err(e) => {
                out.problem = Some(e);
                false
            }
        }
    };
    for n in meta.read_file..=meta.write_file {
        let start = if n == meta.read_file {
            meta.read_pos
        } else {
            0
        } as u64;
        let end = (n == meta.write_file).then_some(meta.write_pos as u64);
        if end == Some(start) {
            break;
        }
        let path = queue_data_file(dir, queue, n);
        let r = read_file(&path, start, end, &mut |m| {
            pending.push(m);
            if pending.len() >= batch {
                let mut p = std::mem::take(&mut pending);
                let ok = flush(&mut p, &mut out);
                return ok;
            }
            true
        });
        if out.problem.is_some() {
            return out;
        }
        if let Err(e) = r {
            flush(&mut pending, &mut out);
            out.problem
                .get_or_insert(format!("{}: {e}", path.display()));
            return out;
        }
    }
    flush(&mut pending, &mut out);
    out
}

/// Read the records of one data file from `start` to `end` (or to its end). `each`
/// returns false to stop.
fn read_file(
    path: &Path,
    start: u64,
    end: Option<u64>,
    each: &mut dyn FnMut(NsqMessage) -> bool,
) -> Result<(), String> {
    let mut f = File::open(path).map_err(|e| e.to_string())?;
    let size = f.metadata().map_err(|e| e.to_string())?.len();
    let limit = end.unwrap_or(size);
    if limit > size {
        return Err(format!(
            "write position {limit} is past the end of the file ({size} bytes)"
        ));
    }
    f.seek(SeekFrom::Start(start)).map_err(|e| e.to_string())?;
    let mut r = BufReader::with_capacity(256 * 1024, f);
    let mut pos = start;
    while pos < limit {
        let mut len = [0u8; 4];
        if limit - pos < 4 {
            return Err(format!("torn record length at offset {pos}"));
        }
        r.read_exact(&mut len)
            .map_err(|e| format!("offset {pos}: {e}"))?;
        let len = i32::from_be_bytes(len);
        if len < MESSAGE_HEADER as i32 || (len as u64) > limit - pos - 4 {
            return Err(format!("bad record length {len} at offset {pos}"));
        }
        let mut buf = vec![0u8; len as usize];
        r.read_exact(&mut buf)
            .map_err(|e| format!("offset {pos}: {e}"))?;
        let Some(m) = NsqMessage::decode(&buf) else {
            return Err(format!("bad message at offset {pos}"));
        };
        pos += 4 + len as u64;
        if !each(m) {
            return Ok(());
        }
    }
    Ok(())
}

/// What an import did, for the log and for tests.
#[derive(Debug, Default)]
pub struct ImportSummary {
    pub topics: usize,
    pub channels: usize,
    pub messages: u64,
    /// Where NSQ's files were moved (None if they could not be).
    pub moved_to: Option<PathBuf>,
    /// Problems met (each names a file); the import went on past them.
    pub problems: Vec<String>,
}

const BATCH: usize = 1024;

/// If `data` holds NSQ's metadata file, import NSQ's topics, channels and queued
/// messages into `engine`, then move NSQ's files aside. `Ok(None)` when there is nothing
/// of NSQ's here. An error means nothing was moved (the import runs again next start).
pub fn import_if_present(
    engine: &engine::Engine,
    data: &Path,
) -> Result<Option<ImportSummary>, String> {
    let Some(meta_path) = metadata_file(data) else {
        return Ok(None);
    };
    let text =
        std::fs::read_to_string(&meta_path).map_err(|e| format!("{}: {e}", meta_path.display()))?;
    let meta: NsqMetadata = serde_json::from_str(&text).map_err(|e| {
        format!(
            "{}: not NSQ metadata ({e}); NSQ's files left in place, nothing imported",
            meta_path.display()
        )
    })?;
    tracing::info!(file = %meta_path.display(), version = %meta.version, topics = meta.topics.len(), "importing NSQ data directory");
    let mut sum = ImportSummary::default();
    for t in &meta.topics {
        if t.name.ends_with("#ephemeral") || !protocol::names::is_valid_topic_name(&t.name) {
            sum.problems.push(format!(
                "{}: topic {:?} skipped (not a durable topic name)",
                meta_path.display(),
                t.name
            ));
            continue;
        }
        let topic = engine
            .topic(&t.name)
            .map_err(|e| format!("topic {}: {e}", t.name))?;
        topic
            .set_paused(t.paused)
            .map_err(|e| format!("topic {}: {e}", t.name))?;
        sum.topics += 1;
        let mut channels = Vec::new();
        for c in &t.channels {
            if c.name.ends_with("#ephemeral") || !protocol::names::is_valid_channel_name(&c.name) {
                sum.problems.push(format!(
                    "{}: channel {:?} of topic {} skipped (not a durable channel name)",
                    meta_path.display(),
                    c.name,
                    t.name
                ));
                continue;
            }
            let ch = topic
                .channel(&c.name)
                .map_err(|e| format!("topic {} channel {}: {e}", t.name, c.name))?;
            ch.set_paused(c.paused)
                .map_err(|e| format!("topic {} channel {}: {e}", t.name, c.name))?;
            channels.push(c);
        }
        for c in channels {
            let r = import_queue(data, &topic, Some(&c.name));
            tracing::info!(topic = %t.name, channel = %c.name, paused = c.paused, messages = r.messages, nsq_depth = r.nsq_depth, "imported NSQ channel");
            sum.channels += 1;
            sum.messages += r.messages;
            sum.problems.extend(r.problem);
        }
        let r = import_queue(data, &topic, None);
        tracing::info!(topic = %t.name, paused = t.paused, channels = t.channels.len(), messages = r.messages, nsq_depth = r.nsq_depth, "imported NSQ topic");
        sum.messages += r.messages;
        sum.problems.extend(r.problem);
    }
    for p in &sum.problems {
        tracing::error!(problem = %p, "NSQ import: stopped there; the rest was imported");
    }
    // Everything durable before NSQ's copies move: a crash before this point imports
    // again (duplicates, never loss).
    if let Err(e) = engine.sync_all().or_else(|_| engine.sync_all()) {
        return Err(format!(
            "syncing the imported data failed ({e}); NSQ's files left in place"
        ));
    }
    sum.moved_to = move_aside(data, &meta_path);
    Ok(Some(sum))
}

fn import_queue(data: &Path, topic: &engine::Topic, channel: Option<&str>) -> QueueRead {
    let name = queue_name(topic.name(), channel);
    read_queue(data, &name, BATCH, &mut |batch| {
        let msgs = batch
            .into_iter()
            .map(|m| engine::ImportedMessage {
                timestamp_ns: m.timestamp_ns,
                attempts: m.attempts,
                body: m.body,
            })
            .collect();
        topic
            .import(channel, msgs)
            .map(|_| ())
            .map_err(|e| format!("storing queue {name}: {e}"))
    })
}

/// Move NSQ's files into a fresh `nsq-imported-<unix time>/` under `data`, the metadata
/// file first (so a crash part-way never makes a second import). Returns the directory.
fn move_aside(data: &Path, meta_path: &Path) -> Option<PathBuf> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut dir = data.join(format!("nsq-imported-{now}"));
    let mut i = 1;
    while dir.exists() {
        dir = data.join(format!("nsq-imported-{now}-{i}"));
        i += 1;
    }
    if let Err(e) = std::fs::create_dir(&dir) {
        tracing::error!(dir = %dir.display(), error = %e, "NSQ import: cannot create the directory for NSQ's files; they stay in place and will be imported again at the next start");
        return None;
    }
    let mut files: Vec<PathBuf> = match std::fs::read_dir(data) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.is_file()
                    && p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(is_nsq_file_name)
            })
            .collect(),
        Err(e) => {
            tracing::error!(dir = %data.display(), error = %e, "NSQ import: listing the data path");
            Vec::new()
        }
    };
    // The metadata file(s) first.
    files.sort_by_key(|p| {
        let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        (
            !(p == meta_path || n == "nsqd.dat" || is_old_metadata_name(n)),
            p.clone(),
        )
    });
    for f in files {
        let Some(name) = f.file_name() else { continue };
        let to = dir.join(name);
        if let Err(e) = std::fs::rename(&f, &to) {
            tracing::error!(file = %f.display(), to = %to.display(), error = %e, "NSQ import: moving NSQ's file aside failed");
        }
    }
    tracing::info!(dir = %dir.display(), "NSQ's files moved aside (nothing deleted)");
    Some(dir)
}

/// Writing NSQ's format, for tests and fixtures.
pub mod write {
    use super::*;

    /// A message as NSQ would have stored it (id: 16 ASCII hex digits of `n`).
    pub fn message(n: u64, timestamp_ns: i64, attempts: u16, body: &[u8]) -> NsqMessage {
        let hex = format!("{n:016x}");
        let mut id = [b'0'; 16];
        id.copy_from_slice(&hex.as_bytes()[..16]);
        NsqMessage {
            timestamp_ns,
            attempts,
            id,
            body: Bytes::copy_from_slice(body),
        }
    }

    /// Write diskqueue `queue` under `dir` as NSQ leaves it: data files numbered from
    /// `first_file`, `files[i]` holding those records, and a metadata file whose read
    /// position is record `read.1` of file `read.0` (everything before it consumed) and
    /// whose write position is the end of the last file. Returns the metadata written.
    pub fn queue(
        dir: &Path,
        queue: &str,
        first_file: i64,
        files: &[Vec<NsqMessage>],
        read: (usize, usize),
    ) -> std::io::Result<QueueMeta> {
        let mut read_pos = 0i64;
        let mut write_pos = 0i64;
        let mut depth = 0i64;
        for (i, msgs) in files.iter().enumerate() {
            let mut bytes = Vec::new();
            for (k, m) in msgs.iter().enumerate() {
                if (i, k) == read {
                    read_pos = bytes.len() as i64;
                }
                if (i, k) >= read {
                    depth += 1;
                }
                let enc = m.encode();
                bytes.extend_from_slice(&(enc.len() as i32).to_be_bytes());
                bytes.extend_from_slice(&enc);
            }
            if (i, msgs.len()) == read {
                read_pos = bytes.len() as i64;
            }
            write_pos = bytes.len() as i64;
            std::fs::write(queue_data_file(dir, queue, first_file + i as i64), bytes)?;
        }
        let last = first_file + files.len().saturating_sub(1) as i64;
        let meta = QueueMeta {
            depth,
            read_file: first_file + read.0 as i64,
            read_pos,
            write_file: last,
            write_pos,
        };
        std::fs::write(queue_meta_file(dir, queue), meta.to_text())?;
        Ok(meta)
    }

    /// Write NSQ's `nsqd.dat`.
    pub fn metadata(dir: &Path, meta: &NsqMetadata) -> std::io::Result<()> {
        let json = serde_json::to_vec(meta).map_err(std::io::Error::other)?;
        std::fs::write(dir.join("nsqd.dat"), json)
    }

    /// A topic as (name, paused, [(channel, paused)]).
    pub type TopicSpec<'a> = (&'a str, bool, &'a [(&'a str, bool)]);

    /// Metadata for the given topics.
    pub fn topics(list: &[TopicSpec]) -> NsqMetadata {
        NsqMetadata {
            version: "1.3.0".into(),
            topics: list
                .iter()
                .map(|(name, paused, chans)| NsqTopicMeta {
                    name: name.to_string(),
                    paused: *paused,
                    channels: chans
                        .iter()
                        .map(|(c, p)| NsqChannelMeta {
                            name: c.to_string(),
                            paused: *p,
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::write;
    use super::*;

    fn msgs(tag: &str, n: usize) -> Vec<NsqMessage> {
        (0..n)
            .map(|i| {
                write::message(
                    i as u64,
                    1_000 + i as i64,
                    1,
                    format!("{tag}{i}").as_bytes(),
                )
            })
            .collect()
    }

    fn collect(dir: &Path, queue: &str) -> (Vec<String>, QueueRead) {
        let mut got = Vec::new();
        let r = read_queue(dir, queue, 2, &mut |b| {
            got.extend(
                b.into_iter()
                    .map(|m| String::from_utf8_lossy(&m.body).to_string()),
            );
            Ok(())
        });
        (got, r)
    }

    #[test]
    fn message_round_trip() {
        let m = write::message(0xabc, -5, 7, b"hello");
        assert_eq!(&m.id, b"0000000000000abc");
        let e = m.encode();
        assert_eq!(e.len(), 26 + 5);
        assert_eq!(&e[0..8], &(-5i64).to_be_bytes());
        assert_eq!(&e[8..10], &[0, 7]);
        assert_eq!(NsqMessage::decode(&e), Some(m));
        assert_eq!(NsqMessage::decode(&e[..25]), None);
    }

    #[test]
    fn queue_meta_text() {
        let m = QueueMeta::parse("3\n1,52\n2,100\n").unwrap();
        assert_eq!(
            m,
            QueueMeta {
                depth: 3,
                read_file: 1,
                read_pos: 52,
                write_file: 2,
                write_pos: 100
            }
        );
        assert_eq!(QueueMeta::parse(&m.to_text()), Some(m));
        assert_eq!(QueueMeta::parse("3\n1;52\n2,100\n"), None);
        assert_eq!(QueueMeta::parse(""), None);
    }

    #[test]
    fn reads_from_read_position_across_files() {
        let dir = tempfile::tempdir().unwrap();
        let all = msgs("m", 7);
        let files = vec![all[..4].to_vec(), all[4..].to_vec()];
        let meta = write::queue(dir.path(), "t:c", 5, &files, (0, 2)).unwrap();
        assert_eq!(meta.depth, 5);
        assert_eq!(meta.read_file, 5);
        assert_eq!(meta.write_file, 6);
        let (got, r) = collect(dir.path(), "t:c");
        assert_eq!(got, ["m2", "m3", "m4", "m5", "m6"]);
        assert_eq!(r.messages, 5);
        assert!(r.problem.is_none());
        // Everything consumed: nothing; no metadata file: nothing.
        write::queue(dir.path(), "t", 0, std::slice::from_ref(&all), (0, 7)).unwrap();
        assert_eq!(collect(dir.path(), "t").0.len(), 0);
        assert_eq!(collect(dir.path(), "none").1.messages, 0);
    }

    #[test]
    fn damage_stops_the_queue_there_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let all = msgs("m", 6);
        write::queue(
            dir.path(),
            "t",
            0,
            &[all[..3].to_vec(), all[3..].to_vec()],
            (0, 0),
        )
        .unwrap();
        // Garble the length of the second file's second record.
        let f = queue_data_file(dir.path(), "t", 1);
        let mut b = std::fs::read(&f).unwrap();
        let second = 4 + all[3].encode().len();
        b[second..second + 4].copy_from_slice(&(-1i32).to_be_bytes());
        std::fs::write(&f, b).unwrap();
        let (got, r) = collect(dir.path(), "t");
        assert_eq!(got, ["m0", "m1", "m2", "m3"]);
        let p = r.problem.unwrap();
        assert!(p.contains("t.diskqueue.000001.dat"), "{p}");
        // A missing data file and a garbled metadata file are reported too.
        std::fs::remove_file(queue_data_file(dir.path(), "t", 0)).unwrap();
        let p = collect(dir.path(), "t").1.problem.unwrap();
        assert!(p.contains("t.diskqueue.000000.dat"), "{p}");
        std::fs::write(queue_meta_file(dir.path(), "t"), "x\n").unwrap();
        let p = collect(dir.path(), "t").1.problem.unwrap();
        assert!(p.contains("t.diskqueue.meta.dat"), "{p}");
    }

    #[test]
    fn metadata_json_as_nsq_writes_it() {
        let dir = tempfile::tempdir().unwrap();
        assert!(metadata_file(dir.path()).is_none());
        std::fs::write(
            dir.path().join("nsqd.123.dat"),
            r#"{"topics":[{"channels":[{"name":"c","paused":true}],"name":"t","paused":false}],"version":"1.0.0"}"#,
        )
        .unwrap();
        let p = metadata_file(dir.path()).unwrap();
        assert!(p.ends_with("nsqd.123.dat"));
        let m: NsqMetadata = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
        assert_eq!(
            m,
            write::topics(&[("t", false, &[("c", true)])]).with_version("1.0.0")
        );
        write::metadata(dir.path(), &m).unwrap();
        assert!(metadata_file(dir.path()).unwrap().ends_with("nsqd.dat"));
        // As NSQ 1.3.0's nsqd wrote it for topics without channels.
        let m: NsqMetadata = serde_json::from_str(
            r#"{"topics":[{"name":"tt","paused":false,"channels":null}],"version":"1.3.0"}"#,
        )
        .unwrap();
        assert_eq!(m, write::topics(&[("tt", false, &[])]));
        assert!(is_nsq_file_name("t:c.diskqueue.000001.dat"));
        assert!(is_nsq_file_name("t.diskqueue.meta.dat"));
        assert!(!is_nsq_file_name("nsqd-4150.log"));
        assert!(!is_nsq_file_name("nsqd.x.dat"));
    }

    impl NsqMetadata {
        fn with_version(mut self, v: &str) -> Self {
            self.version = v.into();
            self
        }
    }

    #[test]
    fn import_into_the_engine_and_move_aside() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write::metadata(
            d,
            &write::topics(&[
                ("t", true, &[("a", false), ("b", true)]),
                ("empty", false, &[]),
            ]),
        )
        .unwrap();
        write::queue(d, "t", 0, &[msgs("t", 2)], (0, 0)).unwrap();
        write::queue(d, "t:a", 0, &[msgs("a", 3)], (0, 1)).unwrap();
        write::queue(d, "t:b", 0, &[msgs("b", 1)], (0, 0)).unwrap();
        let e = engine::Engine::open(d, engine::EngineOptions::default()).unwrap();
        let s = import_if_present(&e, d).unwrap().unwrap();
        assert_eq!((s.topics, s.channels, s.messages), (2, 2, 5));
        assert!(s.problems.is_empty());
        let moved = s.moved_to.unwrap();
        assert!(moved.join("nsqd.dat").is_file());
        assert!(moved.join("t:a.diskqueue.000000.dat").is_file());
        assert!(metadata_file(d).is_none());
        let t = e.get_topic("t").unwrap();
        assert!(t.is_paused());
        let drain = |c: &str| {
            let ch = t.get_channel(c).unwrap();
            let mut out = Vec::new();
            while ch.next_batch(100, &mut out).unwrap() > 0 {}
            out.iter()
                .map(|m| String::from_utf8_lossy(&m.body).to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(drain("a"), ["a1", "a2", "t0", "t1"]);
        assert_eq!(drain("b"), ["b0", "t0", "t1"]);
        assert!(t.get_channel("b").unwrap().is_paused());
        assert!(import_if_present(&e, d).unwrap().is_none());
        e.close().unwrap();
    }
}
