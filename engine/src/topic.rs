//! Topics: the memory tail and the log a topic's channels share.
//!
//! A topic's messages have consecutive sequence numbers. The log holds a prefix of them,
//! memory (`mem`) the newest suffix: at most `mem_queue_size` messages; beyond that the
//! oldest spill to the log. A message every channel has finished leaves memory without
//! touching disk. Channels (`channel.rs`) are cursors (`cursor.rs`) over both.
//!
//! # Lock order
//!
//! Locks are taken in this order, never the reverse (a lock may be skipped):
//!
//! 1. `Inner::topics` (the engine's registry; `lib.rs`)
//! 2. `Topic::channels`, then `Channel::persist_lock` (held while one cursor is written to
//!    sled and its snapshot file; never while the server's delivery state is held)
//! 3. the server's per-channel delivery state (outside this crate), then
//!    `Channel::cursor`
//! 4. `TopicCore::floors`
//! 5. `TopicCore::state` (the memory tail and the log)
//! 6. `Topic::next_channel_id`, `TopicCore::fault`
//!
//! Disk work that may block (segment syncs, GC unlinks, summary writes) runs on the sync
//! thread (`sync.rs`) without `state`: it takes the work under the lock and does it after.
//! What still runs under `state` on the caller's thread: `pwrite` of appended records,
//! `pread` of records read back from the log, and creating a segment file at a roll.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};

use crate::channel::Channel;
use crate::error::{Error, Result};
use crate::fs::Io;
use crate::layout::{
    channel_snapshot_name, read_topic_config, topic_dir_name, write_snapshot, write_topic_config,
};
use crate::log::{Log, ReadHint, RecoveryReport, StoredRecord};
use crate::meta::{Meta, TopicMeta};
use crate::record::{message_id, RecordHeader};
use crate::sync::SyncSignal;
use crate::types::{
    DurableCallback, EngineOptions, ImportedMessage, Message, NewMessage, Published, RewindTo,
    TopicConfig, TopicStats,
};

struct MemRecord {
    header: RecordHeader,
    body: Bytes,
}

pub(crate) struct TopicState {
    pub(crate) next_seq: u64,
    mem: VecDeque<MemRecord>,
    pub(crate) log: Option<Log>,
    /// Records appended (or acks made) since the last sync round.
    pub(crate) unsynced: u64,
    pub(crate) last_sync: Instant,
    pub(crate) waiters: Vec<DurableCallback>,
    pub(crate) start_seq: u64,
    /// Sequences handed out before the last start that were never stored (the memory tail
    /// of a crashed run): nothing in this range can be delivered, so depth leaves it out.
    pub(crate) lost: std::ops::Range<u64>,
}

impl TopicState {
    /// How many of the sequences in `from..to` are in the lost range.
    pub(crate) fn lost_within(&self, from: u64, to: u64) -> u64 {
        let lo = from.max(self.lost.start);
        let hi = to.min(self.lost.end);
        hi.saturating_sub(lo)
    }

    pub(crate) fn mem_front(&self) -> u64 {
        self.mem
            .front()
            .map(|m| m.header.seq)
            .unwrap_or(self.next_seq)
    }
}

/// Move the oldest `n` records of memory to the log (skipping those every channel has
/// finished). Memory gives up only what the log now holds: if the append fails part-way,
/// the rest stays in memory and nothing is lost.
fn spill_front(st: &mut TopicState, n: usize, min_floor: Option<u64>) -> Result<usize> {
    let n = n.min(st.mem.len());
    if n == 0 {
        return Ok(0);
    }
    let TopicState { mem, log, .. } = st;
    let Some(log) = log.as_mut() else {
        return Err(Error::Closed);
    };
    let unfinished = |r: &&MemRecord| min_floor.is_none_or(|m| r.header.seq >= m);
    let written = mem.iter().take(n).filter(unfinished).count();
    let r = log.append(
        mem.iter()
            .take(n)
            .filter(unfinished)
            .map(|r| (r.header, &r.body[..])),
    );
    let stored_end = log.end_seq();
    match r {
        Ok(()) => {
            mem.drain(..n);
            st.unsynced += written as u64;
            Ok(written)
        }
        Err(e) => {
            let mut dropped = 0;
            while mem.front().is_some_and(|m| m.header.seq < stored_end) && dropped < n {
                mem.pop_front();
                dropped += 1;
            }
            st.unsynced += dropped as u64;
            Err(e)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FaultKind {
    /// An append failed (full disk, I/O error): cleared by a write or a space probe that
    /// succeeds.
    Write,
    /// A sync failed: cleared once a fresh segment has been synced.
    Sync,
}

/// The part of a topic its channels share.
pub(crate) struct TopicCore {
    pub(crate) name: String,
    pub(crate) ephemeral: bool,
    pub(crate) dir: PathBuf,
    /// Node-wide options with this topic's overrides (see `TopicConfig`) applied; read
    /// through [`TopicCore::opts`].
    opts: RwLock<EngineOptions>,
    pub(crate) state: Mutex<TopicState>,
    /// Every channel's ack floor (lowest sequence it has not finished), for deciding
    /// what memory can drop and what must spill.
    floors: RwLock<HashMap<u32, Arc<AtomicU64>>>,
    signal: Arc<SyncSignal>,
    pub(crate) deleted: AtomicBool,
    /// Cursor changes since the last sync round (see `note_dirty`).
    pub(crate) dirty_cursors: AtomicU64,
    /// `mem_front()` as of the last change, readable without the topic lock: lets a
    /// channel tell cheaply whether its next read goes to disk (see
    /// [`Channel::next_needs_disk`]).
    pub(crate) front_hint: AtomicU64,
    /// The storage error this topic is in, if any (a full disk, a failed write or sync).
    /// Set by the write that hit it, cleared by the next write that succeeds or by the
    /// sync thread's probe; logged once per change, not once per message.
    fault: Mutex<Option<(FaultKind, String)>>,
    pub(crate) io: Io,
    /// The lowest cursor of the topic's external readers (`external.rs`) as of the last
    /// GC round, `NO_EXTERNAL` when it has none. While it has some, every message goes to
    /// the log (nothing leaves memory unwritten) and the sync thread spills the memory
    /// tail each round, so the readers see new messages promptly.
    pub(crate) external_floor: AtomicU64,
}

pub(crate) const NO_EXTERNAL: u64 = u64::MAX;

impl TopicCore {
    fn min_floor(&self) -> Option<u64> {
        self.floors
            .read()
            .values()
            .map(|r| r.load(Ordering::Acquire))
            .min()
    }

    /// Drop from memory what every channel has finished.
    pub(crate) fn trim_mem(&self) {
        let Some(min) = self.min_floor() else { return };
        let mut st = self.state.lock();
        let would_drop = st.mem.front().is_some_and(|m| m.header.seq < min);
        if self.retains() || (would_drop && self.external_now()) {
            // Finished messages are kept for replay: they leave memory for the log.
            let n = st.mem.iter().take_while(|m| m.header.seq < min).count();
            if let Err(e) = spill_front(&mut st, n, None) {
                self.set_fault(&e);
            }
        } else {
            while st.mem.front().is_some_and(|m| m.header.seq < min) {
                st.mem.pop_front();
            }
        }
        self.note_front(&st);
    }

    /// Does this topic keep finished messages (retention, or external readers that may
    /// not have read them)?
    pub(crate) fn retains(&self) -> bool {
        let o = self.opts();
        !self.ephemeral
            && (!o.retention_time.is_zero() || o.retention_bytes > 0 || self.has_external())
    }

    /// Does this topic have external readers (as of the last GC round)?
    pub(crate) fn has_external(&self) -> bool {
        self.external_floor.load(Ordering::Acquire) != NO_EXTERNAL
    }

    /// Has an external reader registered, even since the last GC round? Asked just before
    /// finished messages would leave memory without reaching the log (so rarely): a
    /// reader registered a moment ago must still find them in the log. Looks at the
    /// directory when the last GC round saw none.
    pub(crate) fn external_now(&self) -> bool {
        if self.has_external() {
            return true;
        }
        if self.ephemeral {
            return false;
        }
        let found = std::fs::read_dir(crate::external::readers_dir(&self.dir)).is_ok_and(|rd| {
            rd.flatten().any(|e| {
                let n = e.file_name();
                let n = n.to_string_lossy();
                !n.starts_with('.') && n.ends_with(crate::external::CURSOR_SUFFIX)
            })
        });
        if found {
            // Keep everything until the next GC round reads the real floor.
            self.external_floor.store(0, Ordering::Release);
        }
        found
    }

    /// `min_floor` for a spill that is about to skip (drop) finished records from the
    /// front of memory: `None` (drop nothing) if an external reader exists now.
    fn drop_floor(&self, st: &TopicState, min_floor: Option<u64>) -> Option<u64> {
        let m = min_floor?;
        if st.mem.front().is_some_and(|r| r.header.seq < m) && self.external_now() {
            return None;
        }
        Some(m)
    }

    /// The floor below which spilling may skip records (finished by every channel), or
    /// `None` when every record must reach the log (retention).
    fn spill_floor(&self) -> Option<u64> {
        if self.retains() {
            None
        } else {
            self.min_floor()
        }
    }

    /// Oldest sequence still stored, retained history included.
    pub(crate) fn earliest(&self, st: &TopicState) -> u64 {
        st.log
            .as_ref()
            .and_then(|l| if l.is_empty() { None } else { l.start_seq() })
            .unwrap_or(st.mem_front())
            .min(st.mem_front())
            .max(st.start_seq)
    }

    /// Resolve a rewind target to a sequence.
    pub(crate) fn resolve(&self, to: RewindTo) -> Result<u64> {
        let st = self.state.lock();
        let earliest = self.earliest(&st);
        let seq = match to {
            RewindTo::Earliest => earliest,
            RewindTo::Latest => st.next_seq,
            RewindTo::Seq(s) => s,
            RewindTo::Time(t) => {
                let in_log = match &st.log {
                    Some(l) => l.seq_at_time(t)?,
                    None => None,
                };
                in_log
                    .or_else(|| {
                        st.mem
                            .iter()
                            .find(|m| m.header.timestamp_ns >= t)
                            .map(|m| m.header.seq)
                    })
                    .unwrap_or(st.next_seq)
            }
        };
        Ok(seq.clamp(earliest, st.next_seq))
    }

    /// The options in force for this topic now.
    pub(crate) fn opts(&self) -> EngineOptions {
        *self.opts.read()
    }

    fn note_front(&self, st: &TopicState) {
        self.front_hint.store(st.mem_front(), Ordering::Release);
    }

    /// Read up to `max` messages for channel `target` from `from` on; returns the next
    /// position.
    pub(crate) fn read_from(
        &self,
        from: u64,
        max: usize,
        target: u32,
        hint: &mut ReadHint,
        out: &mut Vec<Message>,
    ) -> Result<u64> {
        let st = self.state.lock();
        let mem_front = st.mem_front();
        let mut pos = from.max(st.start_seq);
        let mut room = max;
        let for_us = |h: &RecordHeader| h.target == 0 || h.target == target;
        if pos < mem_front && room > 0 {
            if let Some(log) = &st.log {
                let mut recs: Vec<StoredRecord> = Vec::new();
                pos = log.read(
                    pos,
                    room,
                    hint,
                    |h| h.seq < mem_front && for_us(h),
                    &mut recs,
                )?;
                room -= recs.len();
                out.extend(
                    recs.into_iter()
                        .map(|r| Message::from_record(&r.header, r.body)),
                );
            }
            if room > 0 {
                pos = pos.max(mem_front); // the log is exhausted below memory
            }
        }
        if pos >= mem_front && room > 0 {
            let skip = (pos - mem_front) as usize;
            for m in st.mem.iter().skip(skip) {
                if room == 0 {
                    break;
                }
                pos = m.header.seq + 1;
                if for_us(&m.header) {
                    out.push(Message::from_record(&m.header, m.body.clone()));
                    room -= 1;
                }
            }
        }
        Ok(pos)
    }

    /// The one record at `seq`, if it still exists.
    pub(crate) fn read_one(&self, seq: u64) -> Result<Option<Message>> {
        let st = self.state.lock();
        let mem_front = st.mem_front();
        if seq < st.start_seq {
            return Ok(None);
        }
        if seq >= mem_front {
            return Ok(st
                .mem
                .get((seq - mem_front) as usize)
                .filter(|m| m.header.seq == seq)
                .map(|m| Message::from_record(&m.header, m.body.clone())));
        }
        let Some(log) = &st.log else { return Ok(None) };
        let mut recs = Vec::new();
        let mut hint = ReadHint::default();
        log.read(seq, 1, &mut hint, |_| true, &mut recs)?;
        Ok(recs
            .into_iter()
            .find(|r| r.header.seq == seq)
            .map(|r| Message::from_record(&r.header, r.body)))
    }

    /// Append copies of `msgs` at the tail, targeted at channel `target`, keeping their ids,
    /// timestamps, deliver times and attempts. The memory tail goes to the log first so the
    /// log stays a prefix of the sequence. Returns the copies' sequences.
    ///
    /// If the append fails part-way, the copies that reached the log are returned with the
    /// error: the caller must account for them (they are in the log, targeted at it).
    pub(crate) fn append_relocated(
        &self,
        msgs: &[Message],
        target: u32,
    ) -> (Vec<u64>, Option<Error>) {
        match self.try_append_relocated(msgs, target) {
            Ok(v) => (v, None),
            Err((v, e)) => (v, Some(e)),
        }
    }

    fn try_append_relocated(
        &self,
        msgs: &[Message],
        target: u32,
    ) -> std::result::Result<Vec<u64>, (Vec<u64>, Error)> {
        self.try_append_at_tail(msgs, target, true)
    }

    /// Append `msgs` at the tail of the log, targeted at channel `target` (0 = every
    /// channel), keeping their timestamps, deliver times and attempts, and their ids when
    /// `keep_ids` (else each gets the id of its own sequence).
    fn try_append_at_tail(
        &self,
        msgs: &[Message],
        target: u32,
        keep_ids: bool,
    ) -> std::result::Result<Vec<u64>, (Vec<u64>, Error)> {
        if msgs.is_empty() {
            return Ok(Vec::new());
        }
        let min_floor = self.spill_floor();
        let mut st = self.state.lock();
        let n = st.mem.len();
        let min_floor = self.drop_floor(&st, min_floor);
        if let Err(e) = spill_front(&mut st, n, min_floor) {
            self.set_fault(&e);
            self.note_front(&st);
            return Err((Vec::new(), e));
        }
        let first = st.next_seq;
        let copies: Vec<(RecordHeader, &[u8])> = msgs
            .iter()
            .enumerate()
            .map(|(i, m)| {
                (
                    RecordHeader {
                        seq: first + i as u64,
                        timestamp_ns: m.timestamp_ns,
                        deliver_at_ms: m.deliver_at_ms,
                        target,
                        attempts: m.attempts,
                        id: if keep_ids {
                            m.id
                        } else {
                            message_id(first + i as u64)
                        },
                    },
                    &m.body[..],
                )
            })
            .collect();
        let Some(log) = st.log.as_mut() else {
            return Err((Vec::new(), Error::Closed));
        };
        let r = log.append(copies.iter().map(|(h, b)| (*h, *b)));
        // Copies that reached the log keep their sequences even if the rest failed.
        let stored_end = log.end_seq();
        st.next_seq = st.next_seq.max(stored_end);
        if let Err(e) = r {
            self.set_fault(&e);
            self.note_front(&st);
            let written = (first..stored_end.clamp(first, first + msgs.len() as u64)).collect();
            return Err((written, e));
        }
        self.clear_fault();
        st.unsynced += msgs.len() as u64;
        self.note_front(&st);
        Ok((first..first + msgs.len() as u64).collect())
    }

    pub(crate) fn set_fault(&self, e: &Error) {
        self.enter_fault(FaultKind::Write, e);
    }

    pub(crate) fn set_sync_fault(&self, e: &Error) {
        self.enter_fault(FaultKind::Sync, e);
    }

    fn enter_fault(&self, kind: FaultKind, e: &Error) {
        if !e.is_storage_fault() {
            return;
        }
        let mut f = self.fault.lock();
        if f.is_none() {
            tracing::error!(topic = %self.name, error = %e, "storage error: publishes to this topic fail until it clears");
        }
        // A sync fault is the stronger condition: a write succeeding does not clear it.
        if f.as_ref().is_none_or(|(k, _)| *k == FaultKind::Write) {
            *f = Some((kind, e.to_string()));
        }
    }

    /// A write succeeded: a write fault is over.
    pub(crate) fn clear_fault(&self) {
        self.leave_fault(FaultKind::Write);
    }

    /// A sync of new data succeeded: a sync fault is over.
    pub(crate) fn clear_sync_fault(&self) {
        self.leave_fault(FaultKind::Sync);
    }

    fn leave_fault(&self, kind: FaultKind) {
        let mut f = self.fault.lock();
        let clears = f.as_ref().is_some_and(|(k, _)| *k == kind);
        if clears {
            if let Some((_, was)) = f.take() {
                tracing::info!(topic = %self.name, was = %was, "storage error cleared");
            }
        }
    }

    pub(crate) fn fault(&self) -> Option<String> {
        self.fault.lock().as_ref().map(|(_, e)| e.clone())
    }

    /// Called by the sync thread while the topic is in a fault: check whether the
    /// condition is gone without waiting for a publish (space freed; a fresh segment in
    /// place of one whose sync failed, synced).
    pub(crate) fn probe(&self) {
        let Some(kind) = self.fault.lock().as_ref().map(|(k, _)| *k) else {
            return;
        };
        let mut st = self.state.lock();
        let Some(log) = st.log.as_mut() else { return };
        let r = match kind {
            FaultKind::Write => log.probe_space(),
            FaultKind::Sync => log.replace_poisoned().and_then(|_| log.sync()),
        };
        drop(st);
        match (r, kind) {
            (Ok(()), FaultKind::Write) => self.clear_fault(),
            (Ok(()), FaultKind::Sync) => self.clear_sync_fault(),
            (Err(e), _) => tracing::debug!(topic = %self.name, error = %e, "still failing"),
        }
    }

    /// A cursor changed (FIN and the like): counted without the topic lock, which readers
    /// and publishers need far more.
    pub(crate) fn note_dirty(&self) {
        let n = self.dirty_cursors.fetch_add(1, Ordering::AcqRel) + 1;
        if n == self.opts().sync_every.max(1) {
            self.signal.wake();
        }
    }

    /// Changes not yet synced: appended records plus cursor changes.
    pub(crate) fn pending_changes(&self, st: &TopicState) -> u64 {
        st.unsynced + self.dirty_cursors.load(Ordering::Acquire)
    }

    /// Drop memory the channels finished, but only every `TRIM_STEP` sequences of floor
    /// movement: trimming takes the topic lock, and doing it per FIN costs more than the
    /// few messages it would free sooner.
    pub(crate) fn maybe_trim(&self, floor: u64, last: &AtomicU64) {
        const TRIM_STEP: u64 = 128;
        let prev = last.load(Ordering::Relaxed);
        if floor >= prev + TRIM_STEP || floor < prev {
            last.store(floor, Ordering::Relaxed);
            self.trim_mem();
        }
    }
}

pub struct Topic {
    pub(crate) core: Arc<TopicCore>,
    paused: AtomicBool,
    pub(crate) channels: RwLock<HashMap<String, Arc<Channel>>>,
    next_channel_id: Mutex<u32>,
    meta: Option<Arc<Meta>>,
    pub(crate) recovery: RecoveryReport,
    /// The node-wide options, and this topic's overrides of them.
    node_opts: EngineOptions,
    config: Mutex<TopicConfig>,
}

/// Keep the longest prefix whose bodies fit in `max_bytes` (at least one message).
pub(crate) fn trim_to_bytes(msgs: &mut Vec<Message>, max_bytes: usize) {
    let mut total = 0;
    let keep = msgs
        .iter()
        .position(|m| {
            total += m.body.len();
            total > max_bytes
        })
        .unwrap_or(msgs.len())
        .max(1)
        .min(msgs.len());
    msgs.truncate(keep);
}

pub(crate) fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

impl Topic {
    pub(crate) fn open(
        name: &str,
        data_dir: &Path,
        opts: EngineOptions,
        meta: Option<Arc<Meta>>,
        signal: Arc<SyncSignal>,
        io: &Io,
    ) -> Result<Topic> {
        let ephemeral = meta.is_none();
        let dir = data_dir.join("topics").join(topic_dir_name(name));
        let config = if ephemeral {
            TopicConfig::default()
        } else {
            read_topic_config(&dir)
        };
        let (log, recovery) = if ephemeral {
            (None, RecoveryReport::default())
        } else {
            let (l, r) = Log::open_with(io, &dir, opts.max_bytes_per_file as usize)?;
            (Some(l), r)
        };
        let tm = match &meta {
            Some(m) => m.topic(name)?.unwrap_or_default(),
            None => TopicMeta::default(),
        };
        let stored_channels = match &meta {
            Some(m) => m.channels(name)?,
            None => Vec::new(),
        };
        let log_end = log.as_ref().map(|l| l.end_seq()).unwrap_or(0);
        let max_read = stored_channels
            .iter()
            .map(|(_, c)| c.read)
            .max()
            .unwrap_or(0);
        // External readers never point past what was stored, except after a crash that
        // lost a memory tail they never saw: new messages must not reuse those sequences.
        let external = if ephemeral {
            crate::external::ExternalCursors::default()
        } else {
            crate::external::scan_cursors(&dir)
        };
        let max_external = external.cursors.iter().map(|c| c.next).max().unwrap_or(0);
        let next_seq = log_end.max(tm.next_seq).max(max_read).max(max_external);
        // Memory is empty at open: everything deliverable is in the log, below its end.
        let lost = log_end.max(tm.start_seq)..next_seq;
        let core = Arc::new(TopicCore {
            name: name.to_string(),
            ephemeral,
            dir,
            opts: RwLock::new(config.apply(&opts)),
            state: Mutex::new(TopicState {
                next_seq,
                mem: VecDeque::new(),
                log,
                unsynced: 0,
                last_sync: Instant::now(),
                waiters: Vec::new(),
                start_seq: tm.start_seq,
                lost,
            }),
            floors: RwLock::new(HashMap::new()),
            signal,
            deleted: AtomicBool::new(false),
            dirty_cursors: AtomicU64::new(0),
            fault: Mutex::new(None),
            front_hint: AtomicU64::new(0),
            io: io.clone(),
            external_floor: AtomicU64::new(external.floor().unwrap_or(NO_EXTERNAL)),
        });
        core.note_front(&core.state.lock());
        let topic = Topic {
            core,
            paused: AtomicBool::new(tm.paused),
            channels: RwLock::new(HashMap::new()),
            next_channel_id: Mutex::new(tm.next_channel_id.max(1)),
            meta,
            recovery,
            node_opts: opts,
            config: Mutex::new(config),
        };
        for (cname, cm) in stored_channels {
            let ch = Channel::restore(&topic.core, &cname, cm);
            topic
                .core
                .floors
                .write()
                .insert(ch.id, ch.floor_pos.clone());
            topic.channels.write().insert(cname, Arc::new(ch));
        }
        topic.persist_meta()?;
        Ok(topic)
    }

    pub fn name(&self) -> &str {
        &self.core.name
    }

    pub fn is_ephemeral(&self) -> bool {
        self.core.ephemeral
    }

    /// What recovery found when this topic's log was opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.recovery
    }

    pub(crate) fn topic_meta(&self) -> TopicMeta {
        let st = self.core.state.lock();
        TopicMeta {
            paused: self.paused.load(Ordering::Relaxed),
            next_channel_id: *self.next_channel_id.lock(),
            next_seq: st.next_seq,
            start_seq: st.start_seq,
        }
    }

    pub(crate) fn persist_meta(&self) -> Result<()> {
        if let Some(m) = &self.meta {
            m.put_topic(&self.core.name, &self.topic_meta())?;
        }
        Ok(())
    }

    /// Assign sequences and store the messages (memory first, oldest spill to the log).
    /// `on_durable` runs once this call's records that reached the log are fsynced (at
    /// once with Ok if none had to).
    pub fn publish(
        &self,
        msgs: Vec<NewMessage>,
        on_durable: Option<DurableCallback>,
    ) -> Result<Published> {
        if self.core.deleted.load(Ordering::Acquire) {
            return Err(Error::Deleted(self.core.name.clone()));
        }
        let ts = now_ns();
        let min_floor = self.core.spill_floor();
        let mem_limit = self.core.opts().mem_queue_size;
        let mut immediate = on_durable;
        let (first, count, wake) = {
            let mut st = self.core.state.lock();
            self.check_bound(&st)?;
            let first = st.next_seq;
            let count = msgs.len();
            for m in msgs {
                let seq = st.next_seq;
                st.next_seq += 1;
                st.mem.push_back(MemRecord {
                    header: RecordHeader {
                        seq,
                        timestamp_ns: ts,
                        deliver_at_ms: m.deliver_at_ms,
                        target: 0,
                        attempts: 0,
                        id: message_id(seq),
                    },
                    body: m.body,
                });
            }
            let over = st.mem.len().saturating_sub(mem_limit);
            let mut ours_on_disk = false;
            if over > 0 && self.core.ephemeral {
                st.mem.drain(..over); // ephemeral: overflow is dropped, as in NSQ
            } else if over > 0 {
                ours_on_disk = st.mem.get(over - 1).is_some_and(|r| r.header.seq >= first);
                let min_floor = self.core.drop_floor(&st, min_floor);
                if let Err(e) = spill_front(&mut st, over, min_floor) {
                    self.core.set_fault(&e);
                    // Not acknowledged: take back this call's messages that did not reach
                    // the log. (Older messages the log could not take stay in memory.)
                    let stored_end = st.log.as_ref().map_or(0, |l| l.end_seq());
                    while st.mem.back().is_some_and(|m| m.header.seq >= first) {
                        st.mem.pop_back();
                    }
                    st.next_seq = first.max(stored_end);
                    self.core.note_front(&st);
                    return Err(e);
                }
                self.core.clear_fault();
            }
            self.core.note_front(&st);
            let mut wake = st.unsynced >= self.core.opts().sync_every;
            if ours_on_disk {
                if let Some(cb) = immediate.take() {
                    st.waiters.push(cb);
                    wake = true;
                }
            }
            (first, count, wake)
        };
        if wake {
            self.core.signal.wake();
        }
        if let Some(cb) = immediate {
            cb(Ok(()));
        }
        Ok(Published {
            first_seq: first,
            count,
        })
    }

    /// `--max-bytes-per-topic`: refuse a publish while the log holds that much.
    fn check_bound(&self, st: &TopicState) -> Result<()> {
        let limit = self.core.opts().max_bytes_per_topic;
        if limit == 0 || self.core.ephemeral {
            return Ok(());
        }
        let held = st.log.as_ref().map_or(0, |l| l.bytes());
        if held >= limit {
            return Err(Error::TopicFull {
                topic: self.core.name.clone(),
                bytes: held,
                limit,
            });
        }
        Ok(())
    }

    pub fn channel(&self, name: &str) -> Result<Arc<Channel>> {
        self.channel_from(name, false)
    }

    /// Get or create a channel; a new one starts at the oldest message still stored
    /// (retained history included) when `earliest`, else as in NSQ (the first channel gets
    /// the backlog, later ones only new messages).
    pub fn channel_from(&self, name: &str, earliest: bool) -> Result<Arc<Channel>> {
        if let Some(c) = self.get_channel(name) {
            return Ok(c);
        }
        if !crate::valid_name(name) {
            return Err(Error::InvalidName(name.to_string()));
        }
        let mut channels = self.channels.write();
        if let Some(c) = channels.get(name) {
            return Ok(c.clone());
        }
        let id = {
            let mut n = self.next_channel_id.lock();
            let id = *n;
            *n += 1;
            id
        };
        // The first channel gets the backlog; later ones start at the end, as in NSQ.
        let start = {
            let st = self.core.state.lock();
            if channels.is_empty() || earliest {
                self.core.earliest(&st)
            } else {
                st.next_seq
            }
        };
        let ephemeral = self.core.ephemeral || name.ends_with("#ephemeral");
        let ch = Arc::new(Channel::new(&self.core, name, id, start, ephemeral));
        self.core.floors.write().insert(id, ch.floor_pos.clone());
        channels.insert(name.to_string(), ch.clone());
        drop(channels);
        // Creating a channel promises nothing about durability: if its cursor cannot be
        // written now (a full disk), the sync thread writes it later (it is dirty), and
        // consumers are served meanwhile.
        if let Err(e) = self.persist_meta().and_then(|_| self.persist_channel(&ch)) {
            tracing::warn!(topic = %self.core.name, channel = %name, error = %e, "channel created in memory; its cursor will be persisted when the disk allows");
            ch.dirty.store(true, Ordering::Release);
        }
        Ok(ch)
    }

    /// Import messages written by another system (NSQ's diskqueue files): append them at
    /// the tail of the log, keeping their timestamps and attempts (ids are this topic's
    /// own), for channel `channel` only, or for every channel when `None`. The channel
    /// must exist; its cursor is at or before the tail, so it reads them. Durable topics
    /// only. Returns how many were stored (on error, those before it stay stored).
    pub fn import(&self, channel: Option<&str>, msgs: Vec<ImportedMessage>) -> Result<usize> {
        if self.core.ephemeral {
            return Err(Error::InvalidName(self.core.name.clone()));
        }
        let target = match channel {
            None => 0,
            Some(name) => match self.get_channel(name) {
                Some(c) => c.id,
                None => return Err(Error::InvalidName(name.to_string())),
            },
        };
        let msgs: Vec<Message> = msgs
            .into_iter()
            .map(|m| Message {
                seq: 0,
                id: [0; 16],
                timestamp_ns: m.timestamp_ns,
                deliver_at_ms: 0,
                attempts: m.attempts,
                body: m.body,
            })
            .collect();
        match self.core.try_append_at_tail(&msgs, target, false) {
            Ok(v) => Ok(v.len()),
            Err((_, e)) => Err(e),
        }
    }

    /// Move a channel's read position and persist it before returning (so a restart at any
    /// moment after the answer keeps it). Returns the sequence it reads from next. Blocks
    /// on disk (cursor write and metadata flush).
    pub fn rewind_channel(&self, name: &str, to: RewindTo) -> Result<Option<u64>> {
        let Some(ch) = self.get_channel(name) else {
            return Ok(None);
        };
        let seq = ch.rewind(to)?;
        if !ch.ephemeral {
            self.persist_channel(&ch)?;
            if let Some(m) = &self.meta {
                m.flush()?;
            }
        }
        Ok(Some(seq))
    }

    /// This topic's overrides of the node-wide options.
    pub fn config(&self) -> TopicConfig {
        *self.config.lock()
    }

    /// The options in force for this topic (node-wide flags with its overrides).
    pub fn effective_options(&self) -> EngineOptions {
        self.core.opts()
    }

    /// Replace this topic's overrides: persisted (a JSON file beside its segments) before
    /// they apply, and applied at once. Blocks on disk.
    pub fn set_config(&self, config: TopicConfig) -> Result<()> {
        if self.core.ephemeral {
            return Err(Error::InvalidName(format!(
                "{}: ephemeral topics have no stored settings",
                self.core.name
            )));
        }
        write_topic_config(&self.core.io, &self.core.dir, &config)?;
        *self.config.lock() = config;
        *self.core.opts.write() = config.apply(&self.node_opts);
        // A smaller memory bound applies with the next publish; wake the sync thread for
        // a shorter sync policy.
        self.core.signal.wake();
        Ok(())
    }

    pub fn get_channel(&self, name: &str) -> Option<Arc<Channel>> {
        self.channels.read().get(name).cloned()
    }

    pub fn channel_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.channels.read().keys().cloned().collect();
        v.sort();
        v
    }

    pub fn delete_channel(&self, name: &str) -> Result<()> {
        let Some(ch) = self.channels.write().remove(name) else {
            return Ok(());
        };
        ch.deleted.store(true, Ordering::Release);
        self.core.floors.write().remove(&ch.id);
        if let Some(m) = &self.meta {
            m.remove_channel(&self.core.name, name)?;
            let snap = self
                .core
                .dir
                .join("channels")
                .join(channel_snapshot_name(name));
            let _ = std::fs::remove_file(snap);
        }
        self.core.trim_mem();
        Ok(())
    }

    /// NSQ's topic empty: drop what no channel has been handed yet. With channels, every
    /// message is already theirs, so this only matters for a channel-less topic.
    pub fn empty(&self) -> Result<()> {
        if !self.channels.read().is_empty() {
            return Ok(());
        }
        // External readers are channels too: what they have not read stays.
        if !self.core.ephemeral && !crate::external::scan_cursors(&self.core.dir).is_empty() {
            return Ok(());
        }
        let gone = {
            let mut st = self.core.state.lock();
            st.mem.clear();
            st.start_seq = st.next_seq;
            self.core.note_front(&st);
            let floor = st.start_seq;
            st.log
                .as_mut()
                .map(|log| (log.dir().to_path_buf(), log.detach_below(floor)))
        };
        self.persist_meta()?;
        if let Some((dir, paths)) = gone {
            crate::log::remove_segments(&self.core.io, &dir, &paths)?;
        }
        Ok(())
    }

    pub fn set_paused(&self, paused: bool) -> Result<()> {
        self.paused.store(paused, Ordering::Release);
        self.persist_meta()
    }

    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Acquire)
    }

    pub fn stats(&self) -> TopicStats {
        let storage_error = self.core.fault();
        let no_channels = self.channels.read().is_empty();
        let st = self.core.state.lock();
        let mem_front = st.mem_front();
        let (segments, log_bytes) = st
            .log
            .as_ref()
            .map(|l| (l.segment_count(), l.bytes()))
            .unwrap_or((0, 0));
        let mut s = TopicStats {
            mem_depth: st.mem.len() as u64,
            next_seq: st.next_seq,
            segments,
            log_bytes,
            corrupt_records: self.recovery.corrupt_records,
            ..Default::default()
        };
        if no_channels {
            let oldest = st
                .log
                .as_ref()
                .and_then(|l| if l.is_empty() { None } else { l.start_seq() })
                .unwrap_or(mem_front)
                .max(st.start_seq);
            s.depth = st.next_seq.saturating_sub(oldest) - st.lost_within(oldest, st.next_seq);
            s.backend_depth = mem_front.saturating_sub(oldest) - st.lost_within(oldest, mem_front);
        }
        s.storage_error = storage_error;
        s.oldest_seq = self.core.earliest(&st);
        s.oldest_ts = st
            .log
            .as_ref()
            .and_then(|l| l.oldest_ts())
            .or_else(|| st.mem.front().map(|m| m.header.timestamp_ns))
            .unwrap_or(0);
        s
    }

    /// The topic's external readers (`external.rs`), read from their cursor files now,
    /// with their depth as a channel's: messages stored at or after their cursor.
    pub fn external_readers(&self) -> Vec<crate::external::ExternalReaderInfo> {
        if self.core.ephemeral {
            return Vec::new();
        }
        let ext = crate::external::scan_cursors(&self.core.dir);
        let st = self.core.state.lock();
        let mem_front = st.mem_front();
        let earliest = self.core.earliest(&st);
        let mut v: Vec<crate::external::ExternalReaderInfo> = ext
            .cursors
            .iter()
            .map(|c| {
                let from = c.next.max(earliest);
                crate::external::ExternalReaderInfo {
                    name: c.reader.clone(),
                    next: c.next,
                    depth: st.next_seq.saturating_sub(from) - st.lost_within(from, st.next_seq),
                    backend_depth: mem_front.saturating_sub(from) - st.lost_within(from, mem_front),
                    error: None,
                }
            })
            .collect();
        for (path, reason) in &ext.damaged {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .map(|n| n.strip_suffix(crate::external::CURSOR_SUFFIX).unwrap_or(n))
                .unwrap_or("?")
                .to_string();
            v.push(crate::external::ExternalReaderInfo {
                name,
                next: 0,
                depth: 0,
                backend_depth: 0,
                error: Some(reason.clone()),
            });
        }
        v
    }

    /// The newest `n` messages of the topic (at most `max_bytes` of bodies), oldest first,
    /// without touching any channel.
    pub fn peek_newest(&self, n: usize, max_bytes: usize) -> Result<Vec<Message>> {
        let from = {
            let st = self.core.state.lock();
            st.next_seq
                .saturating_sub(n as u64)
                .max(self.core.earliest(&st))
        };
        let mut out = Vec::new();
        let mut hint = crate::log::ReadHint::default();
        self.core.read_from(from, n, 0, &mut hint, &mut out)?;
        trim_to_bytes(&mut out, max_bytes);
        Ok(out)
    }

    /// Clean shutdown: write the memory tail that some channel has not finished to the
    /// log, so nothing unfinished is lost across a restart.
    pub(crate) fn flush_memory(&self) -> Result<()> {
        if self.core.ephemeral {
            return Ok(());
        }
        let min_floor = self.core.spill_floor();
        let mut st = self.core.state.lock();
        if st.log.is_none() {
            return Ok(());
        }
        let n = st.mem.len();
        let min_floor = self.core.drop_floor(&st, min_floor);
        let r = spill_front(&mut st, n, min_floor).map(|_| ());
        self.core.note_front(&st);
        r
    }

    /// Persist every channel's cursor (sled + snapshot file). Called by the sync thread.
    pub(crate) fn persist_channels(&self, all: bool) -> Result<()> {
        for ch in self.channels.read().values() {
            if ch.ephemeral {
                continue;
            }
            if all || ch.dirty.swap(false, Ordering::AcqRel) {
                if let Err(e) = self.persist_channel(ch) {
                    ch.dirty.store(true, Ordering::Release); // try again next round
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    fn persist_channel(&self, ch: &Channel) -> Result<()> {
        let Some(m) = &self.meta else { return Ok(()) };
        if ch.ephemeral {
            return Ok(());
        }
        let _writer = ch.persist_lock.lock();
        let cm = ch.snapshot();
        m.put_channel(&self.core.name, &ch.name, &cm)?;
        write_snapshot(&self.core.io, &self.core.dir, &ch.name, &cm)
    }

    /// Relocate the few unfinished messages that keep old segments alive (see
    /// [`Channel::relocate_stragglers`]): for each durable channel, those below the start of
    /// the next-to-last segment. Returns how many moved.
    pub(crate) fn relocate_stragglers(&self, max: usize) -> Result<usize> {
        if self.core.ephemeral {
            return Ok(0);
        }
        let Some(boundary) = self
            .core
            .state
            .lock()
            .log
            .as_ref()
            .and_then(|l| l.relocation_boundary())
        else {
            return Ok(0);
        };
        let channels: Vec<Arc<Channel>> = self.channels.read().values().cloned().collect();
        let mut moved = 0;
        for ch in channels.iter().filter(|c| !c.ephemeral) {
            moved += ch.relocate_stragglers(boundary, max)?;
        }
        Ok(moved)
    }

    /// Lowest sequence any durable reader may still need.
    pub(crate) fn gc_floor(&self) -> u64 {
        let channels = self.channels.read();
        let durable: Vec<u64> = channels
            .values()
            .filter(|c| !c.ephemeral)
            .map(|c| c.ack_floor())
            .collect();
        if let Some(m) = durable.iter().min() {
            return *m;
        }
        if let Some(m) = channels.values().map(|c| c.ack_floor()).min() {
            return m;
        }
        self.core.state.lock().start_seq
    }

    pub(crate) fn mark_deleted(&self) {
        self.core.deleted.store(true, Ordering::Release);
        for c in self.channels.read().values() {
            c.deleted.store(true, Ordering::Release);
        }
    }
}
