//! External readers: programs outside nsqd (`nsq_to_file --data-path`, `nsq_inspect`) that
//! read a topic's segments directly and keep their position in a cursor file in the data
//! directory, so that nsqd's GC keeps every segment they have not finished, whether nsqd
//! is running or not. See docs/ARCHITECTURE.md ("External readers") and docs/FORMAT.md.
//!
//! ```text
//! <topic dir>/readers/<name>.cursor   the reader's position (JSON, written atomically)
//! <topic dir>/readers.lock            flock(2): a registration excludes a GC round
//! ```
//!
//! The cursor holds `next`, the first sequence the reader has not consumed. nsqd's GC
//! never removes a segment holding a sequence at or above the lowest `next` of the topic's
//! readers; a damaged cursor file stops GC of that topic altogether (it cannot tell what
//! the reader still needs). Only the reader writes its cursor file; nsqd only reads it.
//!
//! Registration (the first run of a reader) takes the lock exclusively while it picks its
//! start and writes the file; nsqd's GC round takes it (shared, without waiting) from
//! reading the cursors to unlinking segments. So a segment cannot vanish between the
//! reader choosing it and nsqd seeing the new cursor.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::layout::{list_segments, topic_dir_name};
use crate::log::{ScanItem, SegmentScanner, StoredRecord};

pub const READERS_DIR: &str = "readers";
pub const CURSOR_SUFFIX: &str = ".cursor";
pub const LOCK_FILE: &str = "readers.lock";

/// How long a damaged record at the end of the segment nsqd is writing must stay damaged
/// before a reader skips it (before that it may be a record still being written).
const TORN_GRACE: Duration = Duration::from_secs(2);

/// One external reader's cursor file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReaderCursor {
    /// The reader's name (shown as a channel in /stats).
    pub reader: String,
    /// First sequence the reader has not consumed yet.
    pub next: u64,
    #[serde(default)]
    pub registered_ms: u64,
    #[serde(default)]
    pub updated_ms: u64,
    /// The reader's own data, committed together with `next` (nsq_to_file: the output
    /// file and its length at this position).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<serde_json::Value>,
}

/// What the cursor files of one topic say.
#[derive(Debug, Clone, Default)]
pub struct ExternalCursors {
    pub cursors: Vec<ReaderCursor>,
    /// Files that could not be read or parsed, with the reason.
    pub damaged: Vec<(PathBuf, String)>,
}

impl ExternalCursors {
    /// The lowest sequence some reader may still need: `Some(0)` when a file is damaged
    /// (keep everything), `None` when there are no readers.
    pub fn floor(&self) -> Option<u64> {
        if !self.damaged.is_empty() {
            return Some(0);
        }
        self.cursors.iter().map(|c| c.next).min()
    }

    pub fn is_empty(&self) -> bool {
        self.cursors.is_empty() && self.damaged.is_empty()
    }
}

/// An external reader as nsqd's /stats and nsq_inspect show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalReaderInfo {
    pub name: String,
    pub next: u64,
    /// Messages stored at or after `next`.
    pub depth: u64,
    /// The part of `depth` only on disk.
    pub backend_depth: u64,
    /// Why the cursor file cannot be used, if it cannot.
    pub error: Option<String>,
}

pub fn readers_dir(topic_dir: &Path) -> PathBuf {
    topic_dir.join(READERS_DIR)
}

pub fn cursor_path(topic_dir: &Path, reader: &str) -> PathBuf {
    readers_dir(topic_dir).join(format!("{reader}{CURSOR_SUFFIX}"))
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Read and check one cursor file.
pub fn read_cursor_file(path: &Path) -> Result<ReaderCursor> {
    let bytes = std::fs::read(path).at(path)?;
    let bad = |reason: String| Error::BadCursor {
        path: path.to_path_buf(),
        reason,
    };
    let c: ReaderCursor =
        serde_json::from_slice(&bytes).map_err(|e| bad(format!("not a cursor file: {e}")))?;
    let stem = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(CURSOR_SUFFIX))
        .unwrap_or("");
    if c.reader != stem {
        return Err(bad(format!(
            "names reader {:?} but the file is for {stem:?}",
            c.reader
        )));
    }
    Ok(c)
}

/// Every cursor file of a topic directory (none when it has no `readers/`).
pub fn scan_cursors(topic_dir: &Path) -> ExternalCursors {
    let dir = readers_dir(topic_dir);
    let mut out = ExternalCursors::default();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return out,
        Err(e) => {
            out.damaged.push((dir, e.to_string()));
            return out;
        }
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with('.') || !name.ends_with(CURSOR_SUFFIX) {
            continue;
        }
        match read_cursor_file(&e.path()) {
            Ok(c) => out.cursors.push(c),
            // Removed between listing and reading: the reader unregistered.
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => out.damaged.push((e.path(), err.to_string())),
        }
    }
    out.cursors.sort_by(|a, b| a.reader.cmp(&b.reader));
    out
}

/// Write a cursor file atomically and durably: temporary file, fsync, rename, fsync of
/// the directory.
pub fn write_cursor_file(topic_dir: &Path, c: &ReaderCursor) -> Result<()> {
    let dir = readers_dir(topic_dir);
    std::fs::create_dir_all(&dir).at(&dir)?;
    let path = cursor_path(topic_dir, &c.reader);
    let tmp = dir.join(format!(".{}{CURSOR_SUFFIX}.tmp", c.reader));
    let json = serde_json::to_vec_pretty(c).map_err(|e| Error::Encoding(e.to_string()))?;
    let mut f = File::create(&tmp).at(&tmp)?;
    f.write_all(&json).at(&tmp)?;
    f.sync_data().at(&tmp)?;
    drop(f);
    std::fs::rename(&tmp, &path).at(&path)?;
    File::open(&dir).and_then(|d| d.sync_all()).at(&dir)?;
    Ok(())
}

/// The registration/GC lock of a topic directory. `wait`: block until held; else `None`
/// when someone else holds it.
pub(crate) fn lock_topic(topic_dir: &Path, exclusive: bool, wait: bool) -> Result<Option<File>> {
    let path = topic_dir.join(LOCK_FILE);
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .at(&path)?;
    if crate::fs::flock(&f, exclusive, wait).at(&path)? {
        Ok(Some(f))
    } else {
        Ok(None)
    }
}

/// Where a new reader starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The oldest message still stored (retained history included): an archive of
    /// everything the log holds.
    Earliest,
    /// After the last message in the log now: only what is published from now on (NSQ's
    /// channel semantics).
    Latest,
}

struct OpenSegment {
    first: u64,
    path: PathBuf,
    file: File,
    offset: u64,
    /// A newer segment was seen and this one was scanned to its end after that: it is
    /// complete.
    sealed: bool,
}

/// A registered external reader of one topic.
pub struct ExternalReader {
    topic: String,
    topic_dir: PathBuf,
    cursor: ReaderCursor,
    /// Read position: at or after `cursor.next` (read, not committed yet).
    read_next: u64,
    seg: Option<OpenSegment>,
    /// A damaged record at the tail of the segment being written: (segment, offset, first
    /// seen).
    torn: Option<(u64, u64, Instant)>,
    /// Damaged records skipped so far.
    pub skipped_damaged: u64,
}

impl ExternalReader {
    /// Open reader `name` of `topic`, registering it at `start` if it has no cursor file
    /// yet. Returns the reader and whether it was registered now. The topic must exist
    /// in the data directory.
    pub fn open(
        data_path: &Path,
        topic: &str,
        name: &str,
        start: Start,
    ) -> Result<(ExternalReader, bool)> {
        if !crate::valid_name(topic) || topic.ends_with("#ephemeral") {
            return Err(Error::InvalidName(topic.to_string()));
        }
        if !crate::valid_name(name) || name.ends_with("#ephemeral") {
            return Err(Error::InvalidName(name.to_string()));
        }
        let topic_dir = data_path.join("topics").join(topic_dir_name(topic));
        if !topic_dir.is_dir() {
            return Err(Error::Io {
                path: topic_dir,
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("topic {topic:?} has no directory in this data path (publish to it or create it first)"),
                ),
            });
        }
        let path = cursor_path(&topic_dir, name);
        let (cursor, registered) = if path.exists() {
            (read_cursor_file(&path)?, false)
        } else {
            // Exclusive: no GC round runs between choosing the start and the cursor file
            // being there for the next round to see.
            let lock = lock_topic(&topic_dir, true, true)?;
            let next = match start {
                Start::Earliest => list_segments(&topic_dir)?.first().map_or(0, |s| s.0),
                Start::Latest => log_end(&topic_dir)?,
            };
            let now = now_ms();
            let c = ReaderCursor {
                reader: name.to_string(),
                next,
                registered_ms: now,
                updated_ms: now,
                state: None,
            };
            write_cursor_file(&topic_dir, &c)?;
            drop(lock);
            (c, true)
        };
        let earliest = list_segments(&topic_dir)?.first().map(|s| s.0);
        if let Some(e) = earliest {
            if cursor.next < e {
                return Err(Error::BadCursor {
                    path,
                    reason: format!(
                        "stale: it is at sequence {} but the oldest message stored is {e}; the messages between are gone (the file is older than the data, or an nsqd that does not know external readers removed them). Remove the file to register again",
                        cursor.next
                    ),
                });
            }
        }
        Ok((
            ExternalReader {
                topic: topic.to_string(),
                topic_dir,
                read_next: cursor.next,
                cursor,
                seg: None,
                torn: None,
                skipped_damaged: 0,
            },
            registered,
        ))
    }

    /// Remove reader `name` of `topic` (nsqd's GC stops keeping segments for it). Returns
    /// whether it existed.
    pub fn unregister(data_path: &Path, topic: &str, name: &str) -> Result<bool> {
        if !crate::valid_name(topic) || !crate::valid_name(name) {
            return Err(Error::InvalidName(format!("{topic}/{name}")));
        }
        let topic_dir = data_path.join("topics").join(topic_dir_name(topic));
        let path = cursor_path(&topic_dir, name);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e).at(&path),
        }
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The cursor as last committed.
    pub fn cursor(&self) -> &ReaderCursor {
        &self.cursor
    }

    /// The next sequence [`ExternalReader::read`] looks at.
    pub fn read_position(&self) -> u64 {
        self.read_next
    }

    /// Read up to `max` records (and about `max_bytes` of bodies) from the read position
    /// on, skipping records targeted at one of nsqd's channels (relocated or imported
    /// copies, not new messages). Returns the read position after them: commit it once
    /// they are consumed. Fewer than `max` (possibly none) means the reader has caught up
    /// with what the log holds now.
    pub fn read(
        &mut self,
        max: usize,
        max_bytes: usize,
        out: &mut Vec<StoredRecord>,
    ) -> Result<u64> {
        let mut bytes = 0usize;
        let mut got = 0usize;
        loop {
            if self.seg.is_none() && !self.open_segment()? {
                return Ok(self.read_next);
            }
            let Some(seg) = self.seg.as_mut() else {
                return Ok(self.read_next);
            };
            let limit = seg.file.metadata().at(&seg.path)?.len();
            let mut sc = SegmentScanner::new(&seg.file, &seg.path, limit, seg.offset);
            let at_end = loop {
                if got >= max || bytes >= max_bytes {
                    seg.offset = sc.offset;
                    return Ok(self.read_next);
                }
                match sc.next_item()? {
                    ScanItem::Record { record, .. } => {
                        let seq = record.header.seq;
                        if seq < self.read_next {
                            continue;
                        }
                        self.read_next = seq + 1;
                        self.torn = None;
                        if record.header.target != 0 {
                            continue;
                        }
                        bytes += record.body.len();
                        got += 1;
                        out.push(record);
                    }
                    ScanItem::Corrupt { offset, reason, .. } => {
                        let key = (seg.first, offset);
                        let settled = seg.sealed
                            || self.torn.is_some_and(|(s, o, t)| {
                                (s, o) == key && t.elapsed() >= TORN_GRACE
                            });
                        if !settled {
                            // Perhaps a record nsqd is writing right now: look again later.
                            if self.torn.is_none_or(|(s, o, _)| (s, o) != key) {
                                self.torn = Some((key.0, key.1, Instant::now()));
                            }
                            seg.offset = offset;
                            break true;
                        }
                        tracing::warn!(segment = %seg.path.display(), offset, reason, "damaged record skipped");
                        self.skipped_damaged += 1;
                        self.torn = None;
                        let lo = self.read_next.max(seg.first);
                        if sc.resync(offset, lo..u64::MAX)?.is_none() {
                            seg.offset = sc.offset;
                            break true;
                        }
                    }
                    ScanItem::End { offset } => {
                        seg.offset = offset;
                        break true;
                    }
                }
            };
            if at_end {
                // Is there a newer segment? Then this one is complete once scanned again
                // (records may have been appended between our scan and the roll).
                let segs = list_segments(&self.topic_dir)?;
                let Some(&(next_first, _)) = segs.iter().find(|(f, _)| *f > seg.first) else {
                    return Ok(self.read_next);
                };
                if !seg.sealed {
                    seg.sealed = true;
                    continue;
                }
                // Nothing below the next segment's first sequence exists anywhere else.
                self.read_next = self.read_next.max(next_first);
                self.seg = None;
                self.torn = None;
            }
        }
    }

    /// Open the segment holding the read position. Ok(false): no segment yet.
    fn open_segment(&mut self) -> Result<bool> {
        let segs = list_segments(&self.topic_dir)?;
        let Some(&(first, _)) = segs.first() else {
            return Ok(false);
        };
        if self.read_next < first {
            return Err(Error::BadCursor {
                path: cursor_path(&self.topic_dir, &self.cursor.reader),
                reason: format!(
                    "sequences {}..{first} were removed before this reader read them (was the cursor file replaced, or did an nsqd without external-reader support run GC?)",
                    self.read_next
                ),
            });
        }
        let idx = segs.partition_point(|(f, _)| *f <= self.read_next) - 1;
        let (first, path) = segs[idx].clone();
        let file = match File::open(&path) {
            Ok(f) => f,
            // Removed after listing: only possible below our cursor, so list again.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e).at(&path),
        };
        self.seg = Some(OpenSegment {
            first,
            path,
            file,
            offset: 0,
            sealed: idx + 1 < segs.len(),
        });
        Ok(true)
    }

    /// Persist the position `next` (at most the read position), with the reader's own
    /// `state`: nsqd's GC may now remove what lies below it. Durable on return.
    pub fn commit(&mut self, next: u64, state: Option<serde_json::Value>) -> Result<()> {
        let c = ReaderCursor {
            reader: self.cursor.reader.clone(),
            next: next.min(self.read_next).max(self.cursor.next),
            registered_ms: self.cursor.registered_ms,
            updated_ms: now_ms(),
            state,
        };
        write_cursor_file(&self.topic_dir, &c)?;
        self.cursor = c;
        Ok(())
    }

    /// Go back to the committed position (the records read since are read again).
    pub fn reset_to_committed(&mut self) {
        self.read_next = self.cursor.next;
        self.seg = None;
        self.torn = None;
    }
}

/// One past the last valid record in a topic directory's log (0 when empty); scans the
/// last segment.
fn log_end(topic_dir: &Path) -> Result<u64> {
    let segs = list_segments(topic_dir)?;
    let Some((first, path)) = segs.last() else {
        return Ok(0);
    };
    let file = File::open(path).at(path)?;
    let len = file.metadata().at(path)?.len();
    let mut sc = SegmentScanner::new(&file, path, len, 0);
    let mut end = *first;
    loop {
        match sc.next_item()? {
            ScanItem::Record { record, .. } => end = end.max(record.header.seq + 1),
            ScanItem::Corrupt { offset, .. } => {
                if sc.resync(offset, end..u64::MAX)?.is_none() {
                    break;
                }
            }
            ScanItem::End { .. } => break,
        }
    }
    Ok(end)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;
    use crate::{Engine, EngineOptions, NewMessage};

    fn opts(mem: usize) -> EngineOptions {
        EngineOptions {
            mem_queue_size: mem,
            max_bytes_per_file: 2048,
            sync_every: 1,
            sync_timeout: Duration::from_millis(20),
            ..EngineOptions::default()
        }
    }

    fn publish(e: &Engine, from: usize, n: usize) {
        let msgs = (from..from + n)
            .map(|i| NewMessage {
                body: Bytes::from(format!("m{i:05}")),
                deliver_at_ms: 0,
            })
            .collect();
        e.topic("t").unwrap().publish(msgs, None).unwrap();
    }

    /// Drain channel `c` and finish everything it got.
    fn consume_all(e: &Engine, c: &str) -> usize {
        let ch = e.topic("t").unwrap().channel(c).unwrap();
        let mut out = Vec::new();
        while ch.next_batch(1000, &mut out).unwrap() > 0 {}
        for m in &out {
            ch.ack(m.seq).unwrap();
        }
        out.len()
    }

    fn read_all(r: &mut ExternalReader, out: &mut Vec<String>) -> u64 {
        let mut recs = Vec::new();
        loop {
            recs.clear();
            let pos = r.read(7, 1 << 20, &mut recs).unwrap();
            out.extend(
                recs.iter()
                    .map(|x| String::from_utf8_lossy(&x.body).to_string()),
            );
            if recs.is_empty() {
                return pos;
            }
        }
    }

    fn names(from: usize, to: usize) -> Vec<String> {
        (from..to).map(|i| format!("m{i:05}")).collect()
    }

    #[test]
    fn gc_keeps_what_an_external_reader_has_not_passed() {
        let dir = tempfile::tempdir().unwrap();
        let e = Engine::open(dir.path(), opts(0)).unwrap();
        e.topic("t").unwrap().channel("c").unwrap();
        publish(&e, 0, 400);
        let (mut r, registered) =
            ExternalReader::open(dir.path(), "t", "archiver", Start::Earliest).unwrap();
        assert!(registered);
        assert_eq!(r.cursor().next, 0);
        // nsqd's channel finishes everything; GC may only go as far as the reader.
        assert_eq!(consume_all(&e, "c"), 400);
        crate::sync::gc_round(&e.inner);
        let segs_before = list_segments(&dir.path().join("topics/t_t")).unwrap();
        assert!(
            segs_before.len() > 3,
            "small segments: {}",
            segs_before.len()
        );
        assert_eq!(segs_before[0].0, 0, "nothing removed below the reader");
        // The reader reads half and commits; GC follows it, not further.
        let mut recs = Vec::new();
        let pos = r.read(200, 1 << 20, &mut recs).unwrap();
        assert_eq!(pos, 200);
        r.commit(pos, None).unwrap();
        crate::sync::gc_round(&e.inner);
        let segs = list_segments(&dir.path().join("topics/t_t")).unwrap();
        assert!(
            segs[0].0 > 0 && segs[0].0 <= 200,
            "GC followed the cursor: {segs:?}"
        );
        // /stats depth of the reader.
        let info = e.topic("t").unwrap().external_readers();
        assert_eq!(info.len(), 1);
        assert_eq!(
            (info[0].name.as_str(), info[0].next, info[0].depth),
            ("archiver", 200, 200)
        );
        // It reads the rest, across the removed segments, once each.
        let mut got: Vec<String> = recs
            .iter()
            .map(|x| String::from_utf8_lossy(&x.body).to_string())
            .collect();
        let pos = read_all(&mut r, &mut got);
        assert_eq!(got, names(0, 400));
        r.commit(pos, None).unwrap();
        // Unregistered: GC no longer waits for it.
        assert!(ExternalReader::unregister(dir.path(), "t", "archiver").unwrap());
        crate::sync::gc_round(&e.inner);
        assert_eq!(
            list_segments(&dir.path().join("topics/t_t")).unwrap().len(),
            1
        );
        e.close().unwrap();
    }

    #[test]
    fn memory_tail_reaches_the_log_for_external_readers() {
        let dir = tempfile::tempdir().unwrap();
        let e = Engine::open(dir.path(), opts(10_000)).unwrap();
        e.topic("t").unwrap().channel("c").unwrap();
        let (mut r, _) = ExternalReader::open(dir.path(), "t", "a", Start::Earliest).unwrap();
        // No GC round has seen the reader yet: messages finished by nsqd's only channel
        // while still in memory go to the log for it all the same.
        publish(&e, 0, 300);
        assert_eq!(consume_all(&e, "c"), 300);
        crate::sync::sync_round(&e.inner, false).unwrap();
        let mut got = Vec::new();
        read_all(&mut r, &mut got);
        assert_eq!(got, names(0, 300));
        e.close().unwrap();
    }

    #[test]
    fn registration_at_latest_and_restart_keeps_sequences_ahead() {
        let dir = tempfile::tempdir().unwrap();
        let e = Engine::open(dir.path(), opts(0)).unwrap();
        publish(&e, 0, 10);
        let (mut r, _) = ExternalReader::open(dir.path(), "t", "late", Start::Latest).unwrap();
        assert_eq!(r.cursor().next, 10);
        publish(&e, 10, 5);
        let mut got = Vec::new();
        let pos = read_all(&mut r, &mut got);
        assert_eq!(got, names(10, 15));
        r.commit(pos, None).unwrap();
        // Reopened: the cursor is kept and nothing is read twice.
        let (mut r, registered) =
            ExternalReader::open(dir.path(), "t", "late", Start::Earliest).unwrap();
        assert!(!registered);
        let mut again = Vec::new();
        read_all(&mut r, &mut again);
        assert!(again.is_empty());
        e.close().unwrap();
    }

    #[test]
    fn damaged_and_stale_cursor_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let e = Engine::open(dir.path(), opts(0)).unwrap();
        e.topic("t").unwrap().channel("c").unwrap();
        publish(&e, 0, 100);
        let topic_dir = dir.path().join("topics/t_t");
        // Damaged: the reader refuses it, nsqd keeps every segment and says why.
        std::fs::create_dir_all(readers_dir(&topic_dir)).unwrap();
        std::fs::write(cursor_path(&topic_dir, "bad"), b"{not json").unwrap();
        let err = ExternalReader::open(dir.path(), "t", "bad", Start::Earliest)
            .err()
            .unwrap();
        assert!(matches!(err, Error::BadCursor { .. }), "{err}");
        assert!(err.to_string().contains("not a cursor file"), "{err}");
        consume_all(&e, "c");
        crate::sync::gc_round(&e.inner);
        assert_eq!(
            list_segments(&topic_dir).unwrap()[0].0,
            0,
            "kept everything"
        );
        let info = e.topic("t").unwrap().external_readers();
        assert!(info[0].error.is_some(), "{info:?}");
        // A file naming another reader is damaged too.
        let c = ReaderCursor {
            reader: "other".into(),
            next: 0,
            registered_ms: 0,
            updated_ms: 0,
            state: None,
        };
        std::fs::write(
            cursor_path(&topic_dir, "bad"),
            serde_json::to_vec(&c).unwrap(),
        )
        .unwrap();
        let err = ExternalReader::open(dir.path(), "t", "bad", Start::Earliest)
            .err()
            .unwrap();
        assert!(err.to_string().contains("names reader"), "{err}");
        std::fs::remove_file(cursor_path(&topic_dir, "bad")).unwrap();
        // Stale: a cursor below what is still stored (segments removed without it).
        crate::sync::gc_round(&e.inner);
        let first = list_segments(&topic_dir).unwrap()[0].0;
        assert!(first > 0);
        let stale = ReaderCursor {
            reader: "stale".into(),
            ..c
        };
        write_cursor_file(&topic_dir, &stale).unwrap();
        let err = ExternalReader::open(dir.path(), "t", "stale", Start::Earliest)
            .err()
            .unwrap();
        assert!(err.to_string().contains("stale"), "{err}");
        // Names that could leave the data directory are refused.
        assert!(ExternalReader::open(dir.path(), "t", "../x", Start::Earliest).is_err());
        assert!(ExternalReader::open(dir.path(), "nope", "a", Start::Earliest).is_err());
        e.close().unwrap();
    }

    #[test]
    fn reader_works_on_a_stopped_directory_and_skips_targeted_copies() {
        let dir = tempfile::tempdir().unwrap();
        {
            let e = Engine::open(dir.path(), opts(0)).unwrap();
            let t = e.topic("t").unwrap();
            t.channel("c").unwrap();
            publish(&e, 0, 30);
            // Imported for one channel only: not a new message of the topic.
            t.import(
                Some("c"),
                vec![crate::ImportedMessage {
                    body: Bytes::from_static(b"only-for-c"),
                    timestamp_ns: 1,
                    attempts: 1,
                }],
            )
            .unwrap();
            publish(&e, 30, 5);
            e.close().unwrap();
        }
        let (mut r, _) = ExternalReader::open(dir.path(), "t", "a", Start::Earliest).unwrap();
        let mut got = Vec::new();
        let pos = read_all(&mut r, &mut got);
        assert_eq!(got, names(0, 35));
        assert_eq!(pos, 36);
        r.commit(pos, None).unwrap();
        // The reader's cursor is respected when nsqd starts again.
        let e = Engine::open(dir.path(), opts(0)).unwrap();
        let t = e.topic("t").unwrap();
        assert!(t.stats().next_seq >= 36);
        assert_eq!(t.external_readers()[0].depth, 0);
        e.close().unwrap();
    }

    #[test]
    fn torn_tail_waits_then_reads_when_complete() {
        let dir = tempfile::tempdir().unwrap();
        {
            let e = Engine::open(dir.path(), opts(0)).unwrap();
            publish(&e, 0, 3);
            e.close().unwrap();
        }
        let topic_dir = dir.path().join("topics/t_t");
        let (_, seg) = list_segments(&topic_dir).unwrap().pop().unwrap();
        let full = std::fs::read(&seg).unwrap();
        // Keep two whole records and half of the third, as while nsqd writes it.
        let file = File::open(&seg).unwrap();
        let mut sc = SegmentScanner::new(&file, &seg, full.len() as u64, 0);
        let mut offsets = Vec::new();
        while let ScanItem::Record { offset, .. } = sc.next_item().unwrap() {
            offsets.push(offset as usize);
        }
        assert_eq!(offsets.len(), 3);
        let cut = offsets[2] + (full.len() - offsets[2]) / 2;
        std::fs::write(&seg, &full[..cut]).unwrap();
        let (mut r, _) = ExternalReader::open(dir.path(), "t", "a", Start::Earliest).unwrap();
        let mut got = Vec::new();
        read_all(&mut r, &mut got);
        assert_eq!(got, names(0, 2));
        std::fs::write(&seg, &full).unwrap();
        read_all(&mut r, &mut got);
        assert_eq!(got, names(0, 3));
    }
}
