//! Topics: the memory tail and the log a topic's channels share.
//!
//! A topic's messages have consecutive sequence numbers. The log holds a prefix of them,
//! memory (`mem`) the newest suffix: at most `mem_queue_size` messages; beyond that the
//! oldest spill to the log. A message every channel has finished leaves memory without
//! touching disk. Channels (`channel.rs`) are cursors (`cursor.rs`) over both.
//!
//! This module defines the topic's structures and locks, opening and publishing; the rest
//! is in submodules: `memtail` (the memory tail, spill and trim), `records` (reads for
//! channels, appends of relocated or imported copies), `fault` (storage fault state),
//! `channels` (channel management and cursor persistence), `stats` (stats, peek,
//! external reader listing).
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
use parking_lot::{Condvar, Mutex, MutexGuard, RwLock};

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

mod channels;
mod fault;
pub(crate) mod memtail;
mod records;
mod stats;

pub(crate) use fault::FaultKind;
pub(crate) use memtail::TopicState;
use memtail::{spill_front, MemRecord};
pub(crate) use stats::trim_to_bytes;

/// The part of a topic its channels share.
pub(crate) struct TopicCore {
    pub(crate) name: String,
    pub(crate) ephemeral: bool,
    pub(crate) dir: PathBuf,
    /// Node-wide options with this topic's overrides (see `TopicConfig`) applied; read
    /// through [`TopicCore::opts`].
    opts: RwLock<EngineOptions>,
    pub(crate) state: Mutex<TopicState>,
    /// Signalled when a write made without `state` (see `TopicState::appending`) ends.
    append_done: Condvar,
    /// Every channel's ack floor (lowest sequence it has not finished), for deciding
    /// what memory can drop and what must spill.
    floors: RwLock<HashMap<u32, Arc<crate::channel::Marks>>>,
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

/// How many body bytes deferred publishes may leave owed to the log, over the memory
/// bound or by write-through, beyond what a write at work is taking (see
/// [`Topic::publish_deferring_spill`]): a few batches of big messages, and room for
/// publishers to fill the next write while one runs.
pub(crate) const DEFER_SLACK_BYTES: usize = 8 << 20;

/// How many writes (each what is over the bound plus at most `SPILL_CHUNK_BYTES` of
/// write-through) one `spill_owed` makes at most beyond those for what was owed when it
/// began, for what others left owed while it wrote; what is still owed then goes with
/// the next one.
const MAX_SPILL_ROUNDS: usize = 4;

impl TopicCore {
    /// Wait (the lock released meanwhile) until no append runs without the lock: call
    /// before anything that appends to or replaces the log's writable segment.
    pub(crate) fn wait_appending(&self, st: &mut MutexGuard<'_, TopicState>) {
        while st.appending {
            self.append_done.wait(st);
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

    /// A cursor changed (FIN and the like): counted without the topic lock, which readers
    /// and publishers need far more.
    pub(crate) fn note_dirty(&self) {
        self.note_dirty_n(1);
    }

    /// `n` cursor changes at once (wakes the sync thread when they reach `sync_every`).
    pub(crate) fn note_dirty_n(&self, n: u64) {
        let before = self.dirty_cursors.fetch_add(n, Ordering::AcqRel);
        let every = self.opts().sync_every.max(1);
        if before < every && before + n >= every {
            self.signal.wake();
        }
    }

    /// Changes not yet synced: appended records plus cursor changes.
    pub(crate) fn pending_changes(&self, st: &TopicState) -> u64 {
        st.unsynced + self.dirty_cursors.load(Ordering::Acquire)
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
                appending: false,
                appending_end: 0,
            }),
            append_done: Condvar::new(),
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
            topic.core.floors.write().insert(ch.id, ch.marks.clone());
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
        self.publish_with(msgs, on_durable, false)
    }

    /// Like [`Topic::publish`] without a durability callback, but the write of what memory
    /// owes the log (what went over the memory bound, or write-through while a channel is
    /// far behind) may be left to the caller: when `Published::spill_owed` is set, call
    /// [`Topic::spill_owed`] once the client has its answer, so the `pwrite` overlaps with
    /// the client sending its next batch instead of delaying the answer. Until then
    /// memory owes up to `DEFER_SLACK_BYTES`; a publish that finds more than that owed
    /// (the caller did not pay yet, or a write failed) writes all that is over the bound
    /// and a chunk of the rest itself, with its errors, as [`Topic::publish`] does. Never
    /// deferred at `--mem-queue-size=0`, where a message is on disk before it is
    /// acknowledged.
    pub fn publish_deferring_spill(&self, msgs: Vec<NewMessage>) -> Result<Published> {
        self.publish_with(msgs, None, true)
    }

    /// Write what deferred publishes left owed to the log (see
    /// [`Topic::publish_deferring_spill`]). A failure is recorded as the topic's storage
    /// fault (the messages stay in memory, acknowledged, as any under the bound are) and
    /// the next publish meets it. Returns false when it wrote nothing because it could
    /// not (a failed write, another writer at work, the topic deleted): a caller that
    /// loops while [`Topic::owes_spill`] must stop then.
    pub fn spill_owed(&self) -> bool {
        if self.core.deleted.load(Ordering::Acquire) {
            return false;
        }
        let min_floor = self.core.spill_floor();
        let slowest = self.core.min_read();
        let mut failed = false;
        let wake = {
            let mut st = self.core.state.lock();
            // One writer at a time, and the others do not wait for it: the writer at work
            // takes what they left owed when its write ends (checked under the lock, so
            // nothing owed is left behind), and they go back to their clients. A publish
            // that finds more than the slack owed writes a chunk itself (`publish_with`).
            if st.appending {
                return false;
            }
            // All that is owed now, a chunk per round (the lock is free between them),
            // and up to MAX_SPILL_ROUNDS more for what others leave owed meanwhile. A
            // backlog paid a little per call would keep every write behind it, copying
            // bodies long gone cold. A write cut short by the end of a segment is not a
            // round: the next one goes on in the new segment.
            // (No write is at work: `waiting_bytes` counts every owed record.)
            let owed_now = self
                .core
                .waiting_bytes(&st, self.core.spill_need(&st, slowest).owed);
            let max_rounds = MAX_SPILL_ROUNDS + owed_now.div_ceil(memtail::SPILL_CHUNK_BYTES);
            let mut rounds = 0;
            while rounds < max_rounds {
                let need = self.core.spill_need(&st, slowest);
                if need.owed == 0 {
                    break;
                }
                let n = self.core.spill_chunk(&st, need);
                let min_floor = self.core.drop_floor(&st, min_floor);
                match self.spill_unlocked(&mut st, n, min_floor) {
                    Ok(cut) => {
                        self.core.clear_fault();
                        if !cut {
                            rounds += 1;
                        }
                    }
                    Err(e) => {
                        if !self.core.deleted.load(Ordering::Acquire) {
                            self.core.set_fault(&e);
                        }
                        failed = true;
                        break;
                    }
                }
            }
            self.core.note_front(&st);
            st.unsynced >= self.core.opts().sync_every
        };
        if wake {
            self.core.signal.wake();
        }
        !failed
    }

    /// Does memory owe the log anything deferred publishes left (see
    /// [`Topic::spill_owed`])?
    pub fn owes_spill(&self) -> bool {
        if self.core.ephemeral || self.core.deleted.load(Ordering::Acquire) {
            return false;
        }
        let slowest = self.core.min_read();
        let st = self.core.state.lock();
        self.core.spill_need(&st, slowest).owed > 0
    }

    /// Move the oldest `n` memory records to the log with the `pwrite` made while `st`
    /// is unlocked, so publishes into memory and reads go on meanwhile (`appending` keeps
    /// every other append out). The records stay in memory, readable there, until the
    /// log has them. A batch that does not fit in the writable segment moves what fits;
    /// the rest stays in memory, owed (a roll, when due, is made under the lock by
    /// [`Log::begin_append`] and is no disk wait). Returns whether it was cut short so.
    fn spill_unlocked(
        &self,
        st: &mut MutexGuard<'_, TopicState>,
        n: usize,
        min_floor: Option<u64>,
    ) -> Result<bool> {
        let n = n.min(st.mem.len());
        let Some(last) = st.mem.get(n.saturating_sub(1)).map(|r| r.header.seq) else {
            return Ok(false);
        };
        let unfinished = |r: &&MemRecord| min_floor.is_none_or(|m| r.header.seq >= m);
        let pending = {
            let TopicState { mem, log, .. } = &mut **st;
            let Some(log) = log.as_mut() else {
                return Err(Error::Closed);
            };
            log.begin_append(
                mem.iter()
                    .take(n)
                    .filter(unfinished)
                    .map(|r| (r.header, &r.body, r.body_crc)),
            )?
        };
        st.appending = true;
        st.appending_end = last + 1;
        let written = MutexGuard::unlocked(st, || pending.write());
        st.appending = false;
        self.core.append_done.notify_all();
        let cut = pending.cut_at();
        let planned_end = cut.unwrap_or(last + 1);
        let r = match st.log.as_mut() {
            Some(log) => log.finish_append(pending, written),
            None => Err(Error::Closed),
        };
        // Memory gives up what the log now holds (some of it may have been dropped
        // meanwhile, finished by every channel).
        let stored_end = st.log.as_ref().map_or(0, |l| l.end_seq());
        let upto = if r.is_ok() { planned_end } else { stored_end };
        let mut dropped = 0u64;
        while st.mem.front().is_some_and(|m| m.header.seq < upto) {
            st.mem.pop_front();
            dropped += 1;
        }
        st.unsynced += dropped;
        r.map(|()| cut.is_some())
    }

    fn publish_with(
        &self,
        msgs: Vec<NewMessage>,
        on_durable: Option<DurableCallback>,
        defer: bool,
    ) -> Result<Published> {
        if self.core.deleted.load(Ordering::Acquire) {
            return Err(Error::Deleted(self.core.name.clone()));
        }
        let ts = now_ns();
        let min_floor = self.core.spill_floor();
        let slowest = self.core.min_read();
        let mut immediate = on_durable;
        // The CRC of each big body now, while the read that brought it left it in cache:
        // a spill reads it otherwise from memory that has long gone cold.
        let crcs: Vec<Option<u32>> = msgs
            .iter()
            .map(|m| {
                (!self.core.ephemeral && m.body.len() > crate::log::INLINE_BODY_MAX)
                    .then(|| crate::record::body_crc(&m.body))
            })
            .collect();
        let defer = defer && !self.core.ephemeral && self.core.opts().mem_queue_size > 0;
        let (first, count, wake, spill_owed) = {
            let mut st = self.core.state.lock();
            self.check_bound(&st)?;
            // Deferring is allowed while what earlier publishes left owed (over the
            // bound, or write-through) is small, not counting what a write at work is
            // taking (so publishers fill the next write while it runs instead of taking
            // turns with it). Counting the write-through too is the publishers'
            // back-pressure: a writer that fell behind them would otherwise stay
            // behind, copying bodies long gone cold. Over the slack, while a write
            // runs without the lock, wait for its round: it takes a chunk, so this
            // publish may defer again; waiting for the writer to stop would wait out all
            // its rounds. Otherwise this publish writes a chunk (and all that is over the
            // bound) itself.
            let defer = defer
                && loop {
                    let need = self.core.spill_need(&st, slowest);
                    if self.core.waiting_bytes(&st, need.owed) <= DEFER_SLACK_BYTES {
                        break true;
                    }
                    if !st.appending {
                        break false;
                    }
                    self.core.append_done.wait(&mut st);
                };
            if !defer {
                // This publish may append: not while a write runs without the lock.
                self.core.wait_appending(&mut st);
            }
            let first = st.next_seq;
            let count = msgs.len();
            for (m, body_crc) in msgs.into_iter().zip(crcs) {
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
                    body_crc,
                });
            }
            let over = if self.core.ephemeral {
                st.mem.len().saturating_sub(self.core.opts().mem_queue_size)
            } else {
                let need = self.core.spill_need(&st, slowest);
                if defer {
                    need.owed
                } else {
                    self.core.spill_chunk(&st, need)
                }
            };
            let mut ours_on_disk = false;
            let spill_owed = defer && over > 0;
            if spill_owed {
                // Left for the caller's `spill_owed`, after it answered.
            } else if over > 0 && self.core.ephemeral {
                st.mem.drain(..over); // ephemeral: overflow is dropped, as in NSQ
            } else if over > 0 {
                ours_on_disk = st.mem.get(over - 1).is_some_and(|r| r.header.seq >= first);
                let min_floor = self.core.drop_floor(&st, min_floor);
                if let Err(e) = spill_front(&mut st, over, min_floor) {
                    // Deleted while this call waited for the lock: the directory may be
                    // gone (the first segment cannot be created), which is no storage fault.
                    let deleted = self.core.deleted.load(Ordering::Acquire);
                    if !deleted {
                        self.core.set_fault(&e);
                    }
                    // Not acknowledged: take back this call's messages that did not reach
                    // the log. (Older messages the log could not take stay in memory.)
                    let stored_end = st.log.as_ref().map_or(0, |l| l.end_seq());
                    while st.mem.back().is_some_and(|m| m.header.seq >= first) {
                        st.mem.pop_back();
                    }
                    st.next_seq = first.max(stored_end);
                    self.core.note_front(&st);
                    if deleted {
                        return Err(Error::Deleted(self.core.name.clone()));
                    }
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
            (first, count, wake, spill_owed)
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
            spill_owed,
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

    pub(crate) fn mark_deleted(&self) {
        self.core.deleted.store(true, Ordering::Release);
        for c in self.channels.read().values() {
            c.deleted.store(true, Ordering::Release);
        }
    }
}
