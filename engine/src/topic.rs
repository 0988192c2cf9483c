//! Topics and channels.
//!
//! A topic's messages have consecutive sequence numbers. The log holds a prefix of them,
//! memory (`mem`) the newest suffix: at most `mem_queue_size` messages; beyond that the
//! oldest spill to the log. A message every channel has read past leaves memory without
//! touching disk. A channel is a cursor: `read` (next sequence to hand out) and
//! `outstanding` (handed out, not finished); after a restart the persisted outstanding
//! set is handed out again first.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};

use crate::error::{Error, IoContext, Result};
use crate::fs::Io;
use crate::log::{Log, ReadHint, RecoveryReport, StoredRecord};
use crate::meta::{to_ranges, ChannelMeta, Meta, TopicMeta};
use crate::record::{message_id, RecordHeader};
use crate::SyncSignal;

#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub mem_queue_size: usize,
    pub max_bytes_per_file: u64,
    pub sync_every: u64,
    pub sync_timeout: Duration,
    /// Refuse publishes to a topic whose log holds this many bytes (0 = no bound).
    pub max_bytes_per_topic: u64,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            mem_queue_size: 10000,
            max_bytes_per_file: 100 * 1024 * 1024,
            sync_every: 2500,
            sync_timeout: Duration::from_secs(2),
            max_bytes_per_topic: 0,
        }
    }
}

pub struct NewMessage {
    pub body: Bytes,
    /// Unix milliseconds before which the message must not be delivered (0 = now).
    pub deliver_at_ms: u64,
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
    fn from_record(h: &RecordHeader, body: Bytes) -> Message {
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
}

pub type DurableCallback = Box<dyn FnOnce(Result<()>) + Send>;

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
    start_seq: u64,
}

impl TopicState {
    fn mem_front(&self) -> u64 {
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
    opts: EngineOptions,
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
    front_hint: AtomicU64,
    /// The storage error this topic is in, if any (a full disk, a failed write or sync).
    /// Set by the write that hit it, cleared by the next write that succeeds or by the
    /// sync thread's probe; logged once per change, not once per message.
    fault: Mutex<Option<(FaultKind, String)>>,
    pub(crate) io: Io,
}

impl TopicCore {
    fn min_floor(&self) -> Option<u64> {
        self.floors
            .read()
            .values()
            .map(|r| r.load(Ordering::Acquire))
            .min()
    }

    /// Drop from memory what every channel has finished.
    fn trim_mem(&self) {
        let Some(min) = self.min_floor() else { return };
        let mut st = self.state.lock();
        while st.mem.front().is_some_and(|m| m.header.seq < min) {
            st.mem.pop_front();
        }
        self.note_front(&st);
    }

    fn note_front(&self, st: &TopicState) {
        self.front_hint.store(st.mem_front(), Ordering::Release);
    }

    /// Read up to `max` messages for channel `target` from `from` on; returns the next
    /// position.
    fn read_from(
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
    fn read_one(&self, seq: u64) -> Result<Option<Message>> {
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
    fn append_relocated(&self, msgs: &[Message], target: u32) -> (Vec<u64>, Option<Error>) {
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
        if msgs.is_empty() {
            return Ok(Vec::new());
        }
        let min_floor = self.min_floor();
        let mut st = self.state.lock();
        let n = st.mem.len();
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
                        id: m.id,
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
    fn note_dirty(&self) {
        let n = self.dirty_cursors.fetch_add(1, Ordering::AcqRel) + 1;
        if n == self.opts.sync_every.max(1) {
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
    fn maybe_trim(&self, floor: u64, last: &AtomicU64) {
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
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// Directory names carry a prefix so that names like `..` stay inside the data directory.
pub fn topic_dir_name(topic: &str) -> String {
    format!("t_{topic}")
}

pub fn channel_snapshot_name(channel: &str) -> String {
    format!("c_{channel}.json")
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
        let next_seq = log_end.max(tm.next_seq).max(max_read);
        let core = Arc::new(TopicCore {
            name: name.to_string(),
            ephemeral,
            dir,
            opts,
            state: Mutex::new(TopicState {
                next_seq,
                mem: VecDeque::new(),
                log,
                unsynced: 0,
                last_sync: Instant::now(),
                waiters: Vec::new(),
                start_seq: tm.start_seq,
            }),
            floors: RwLock::new(HashMap::new()),
            signal,
            deleted: AtomicBool::new(false),
            dirty_cursors: AtomicU64::new(0),
            fault: Mutex::new(None),
            front_hint: AtomicU64::new(0),
            io: io.clone(),
        });
        core.note_front(&core.state.lock());
        let topic = Topic {
            core,
            paused: AtomicBool::new(tm.paused),
            channels: RwLock::new(HashMap::new()),
            next_channel_id: Mutex::new(tm.next_channel_id.max(1)),
            meta,
            recovery,
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
        let min_floor = self.core.min_floor();
        let mem_limit = self.core.opts.mem_queue_size;
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
            let mut wake = st.unsynced >= self.core.opts.sync_every;
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
        let limit = self.core.opts.max_bytes_per_topic;
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
            if channels.is_empty() {
                let log_start =
                    st.log
                        .as_ref()
                        .and_then(|l| if l.is_empty() { None } else { l.start_seq() });
                log_start
                    .unwrap_or(st.mem_front())
                    .min(st.mem_front())
                    .max(st.start_seq)
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
            s.depth = st.next_seq.saturating_sub(oldest);
            s.backend_depth = mem_front.saturating_sub(oldest);
        }
        s.storage_error = storage_error;
        s
    }

    /// Clean shutdown: write the memory tail that some channel has not finished to the
    /// log, so nothing unfinished is lost across a restart.
    pub(crate) fn flush_memory(&self) -> Result<()> {
        if self.core.ephemeral {
            return Ok(());
        }
        let min_floor = self.core.min_floor();
        let mut st = self.core.state.lock();
        if st.log.is_none() {
            return Ok(());
        }
        let n = st.mem.len();
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
                self.persist_channel(ch)?;
            }
        }
        Ok(())
    }

    fn persist_channel(&self, ch: &Channel) -> Result<()> {
        let Some(m) = &self.meta else { return Ok(()) };
        if ch.ephemeral {
            return Ok(());
        }
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

fn write_snapshot(io: &Io, topic_dir: &Path, channel: &str, cm: &ChannelMeta) -> Result<()> {
    let dir = topic_dir.join("channels");
    std::fs::create_dir_all(&dir).at(&dir)?;
    let path = dir.join(channel_snapshot_name(channel));
    let tmp = dir.join(format!(".{}.tmp", channel_snapshot_name(channel)));
    let json = crate::reader::CursorSnapshot::from_meta(channel, cm).to_json();
    io.write_file(&tmp, json.as_bytes()).at(&tmp)?;
    io.rename(&tmp, &path).at(&path)?;
    Ok(())
}

struct Cursor {
    read: u64,
    /// Handed out and not finished (below `read`, plus relocated copies at or past it).
    outstanding: BTreeSet<u64>,
    /// To hand out again first (after a restart), ascending.
    replay: VecDeque<u64>,
    hint: ReadHint,
    /// Relocated copies at or past `read`: already handed out (as their old sequence), so
    /// the reader skips them.
    ahead: BTreeSet<u64>,
    /// Old sequence -> relocated copy, for FINs of messages handed out before the move.
    alias: HashMap<u64, u64>,
}

impl Cursor {
    /// Lowest sequence this channel still needs.
    fn floor(&self) -> u64 {
        self.outstanding
            .first()
            .copied()
            .map_or(self.read, |f| f.min(self.read))
    }
}

pub struct Channel {
    name: String,
    pub(crate) id: u32,
    ephemeral: bool,
    core: Arc<TopicCore>,
    paused: AtomicBool,
    /// Lowest unfinished sequence (outstanding's first, else read), shared with the topic.
    floor_pos: Arc<AtomicU64>,
    cursor: Mutex<Cursor>,
    dirty: AtomicBool,
    deleted: AtomicBool,
    /// Floor at the last memory trim (see `TopicCore::maybe_trim`).
    last_trim: AtomicU64,
}

impl Channel {
    fn new(core: &Arc<TopicCore>, name: &str, id: u32, start: u64, ephemeral: bool) -> Channel {
        Channel {
            name: name.to_string(),
            id,
            ephemeral,
            core: core.clone(),
            paused: AtomicBool::new(false),
            floor_pos: Arc::new(AtomicU64::new(start)),
            cursor: Mutex::new(Cursor {
                read: start,
                outstanding: BTreeSet::new(),
                replay: VecDeque::new(),
                hint: ReadHint::default(),
                ahead: BTreeSet::new(),
                alias: HashMap::new(),
            }),
            dirty: AtomicBool::new(true),
            deleted: AtomicBool::new(false),
            last_trim: AtomicU64::new(start),
        }
    }

    fn restore(core: &Arc<TopicCore>, name: &str, cm: ChannelMeta) -> Channel {
        let ch = Channel::new(core, name, cm.id, cm.read, false);
        ch.paused.store(cm.paused, Ordering::Relaxed);
        {
            let mut c = ch.cursor.lock();
            c.ahead = cm.ahead.iter().copied().filter(|&s| s >= cm.read).collect();
            for (a, b) in cm.unacked {
                for s in a..b {
                    if s < cm.read || c.ahead.contains(&s) {
                        c.outstanding.insert(s);
                        c.replay.push_back(s);
                    }
                }
            }
            ch.publish_floor(&c);
        }
        ch
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn is_ephemeral(&self) -> bool {
        self.ephemeral
    }

    fn publish_floor(&self, c: &Cursor) {
        self.floor_pos.store(c.floor(), Ordering::Release);
    }

    /// Would the next [`Channel::next_batch`] read from disk (a replay after a restart, or
    /// a read position below the memory tail)? A cheap hint, for callers that must not
    /// block an async worker on disk reads.
    pub fn next_needs_disk(&self) -> bool {
        let c = self.cursor.lock();
        !c.replay.is_empty() || c.read < self.core.front_hint.load(Ordering::Acquire)
    }

    pub fn next(&self) -> Result<Option<Message>> {
        let mut v = Vec::with_capacity(1);
        self.next_batch(1, &mut v)?;
        Ok(v.pop())
    }

    /// Append up to `max` messages to hand out to `out`: first those to deliver again
    /// after a restart, then new ones. Returns how many were added.
    pub fn next_batch(&self, max: usize, out: &mut Vec<Message>) -> Result<usize> {
        if self.deleted.load(Ordering::Acquire) {
            return Ok(0);
        }
        let start = out.len();
        let mut c = self.cursor.lock();
        while out.len() - start < max {
            let Some(&seq) = c.replay.front() else {
                break;
            };
            // Taken off the replay list only once it was read: a read error leaves it there.
            let found = self.core.read_one(seq)?;
            c.replay.pop_front();
            match found {
                Some(m) => out.push(m),
                None => {
                    c.outstanding.remove(&seq);
                    self.publish_floor(&c);
                    self.dirty.store(true, Ordering::Release);
                }
            }
        }
        while out.len() - start < max {
            let room = max - (out.len() - start);
            let before = out.len();
            let from = c.read;
            let mut hint = c.hint;
            let next = self.core.read_from(from, room, self.id, &mut hint, out)?;
            c.hint = hint;
            if !c.ahead.is_empty() {
                // Relocated copies of messages already handed out are not new.
                let read = out.split_off(before);
                out.extend(read.into_iter().filter(|m| !c.ahead.contains(&m.seq)));
                c.ahead = c.ahead.split_off(&next);
            }
            for m in &out[before..] {
                c.outstanding.insert(m.seq);
            }
            if next == from {
                break;
            }
            c.read = next;
            self.publish_floor(&c);
            self.dirty.store(true, Ordering::Release);
        }
        Ok(out.len() - start)
    }

    /// FIN: `seq` is finished.
    pub fn ack(&self, seq: u64) -> Result<()> {
        let (removed, floor_moved, floor) = {
            let mut c = self.cursor.lock();
            let seq = c.alias.remove(&seq).unwrap_or(seq);
            let before = c.floor();
            let removed = c.outstanding.remove(&seq);
            let floor = c.floor();
            if floor != before {
                self.publish_floor(&c);
            }
            (removed, floor != before, floor)
        };
        if floor_moved {
            self.core.maybe_trim(floor, &self.last_trim);
        }
        if removed && !self.ephemeral {
            self.dirty.store(true, Ordering::Release);
            self.core.note_dirty();
        }
        Ok(())
    }

    /// Everything up to the topic's end is finished.
    pub fn empty(&self) -> Result<()> {
        let end = self.core.state.lock().next_seq;
        {
            let mut c = self.cursor.lock();
            c.outstanding.clear();
            c.replay.clear();
            c.ahead.clear();
            c.alias.clear();
            c.read = end;
            c.hint = ReadHint::default();
            self.publish_floor(&c);
        }
        self.dirty.store(true, Ordering::Release);
        self.core.trim_mem();
        self.core.note_dirty();
        Ok(())
    }

    pub fn set_paused(&self, paused: bool) -> Result<()> {
        self.paused.store(paused, Ordering::Release);
        self.dirty.store(true, Ordering::Release);
        self.core.note_dirty();
        Ok(())
    }

    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Acquire)
    }

    fn ack_floor(&self) -> u64 {
        self.cursor.lock().floor()
    }

    fn snapshot(&self) -> ChannelMeta {
        let c = self.cursor.lock();
        ChannelMeta {
            id: self.id,
            paused: self.is_paused(),
            read: c.read,
            ack_floor: c.floor(),
            unacked: to_ranges(c.outstanding.iter().copied()),
            ahead: c.ahead.iter().copied().collect(),
        }
    }

    /// Move this channel's unfinished messages below `boundary` to the tail of the log as
    /// copies targeted at this channel, so they stop pinning old segments. Only when the
    /// channel has read past `boundary` and there are at most `max` of them. Returns how
    /// many moved.
    fn relocate_stragglers(&self, boundary: u64, max: usize) -> Result<usize> {
        let mut c = self.cursor.lock();
        if c.read < boundary {
            return Ok(0);
        }
        let old: Vec<u64> = c.outstanding.range(..boundary).copied().collect();
        if old.is_empty() || old.len() > max {
            return Ok(0);
        }
        let mut found = Vec::with_capacity(old.len());
        for s in old {
            match self.core.read_one(s)? {
                Some(m) => found.push(m),
                None => {
                    c.outstanding.remove(&s); // gone (emptied): nothing to keep
                }
            }
        }
        let (new_seqs, failed) = self.core.append_relocated(&found, self.id);
        let moved = new_seqs.len();
        for (m, n) in found.iter().zip(new_seqs) {
            c.outstanding.remove(&m.seq);
            c.outstanding.insert(n);
            c.ahead.insert(n);
            for v in c.alias.values_mut() {
                if *v == m.seq {
                    *v = n;
                }
            }
            c.alias.insert(m.seq, n);
            if let Some(r) = c.replay.iter_mut().find(|r| **r == m.seq) {
                *r = n;
            }
        }
        let mut replay: Vec<u64> = c.replay.drain(..).collect();
        replay.sort_unstable();
        c.replay = replay.into();
        self.publish_floor(&c);
        self.dirty.store(true, Ordering::Release);
        match failed {
            None => Ok(moved),
            Some(e) => Err(e),
        }
    }

    pub fn stats(&self) -> ChannelStats {
        let (read, replay, outstanding, floor) = {
            let c = self.cursor.lock();
            (
                c.read,
                c.replay.len() as u64,
                c.outstanding.len() as u64,
                c.floor(),
            )
        };
        let st = self.core.state.lock();
        let mem_front = st.mem_front();
        let from = read.max(st.start_seq);
        ChannelStats {
            depth: st.next_seq.saturating_sub(from) + replay,
            backend_depth: mem_front.saturating_sub(from) + replay,
            ack_floor: floor,
            read,
            outstanding,
        }
    }
}
