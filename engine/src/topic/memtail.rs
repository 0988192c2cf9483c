//! The memory tail of a topic (its newest messages) and how it spills to the log or is
//! dropped once every channel has finished it.

use super::*;

/// See [`TopicCore::spill_need`].
#[derive(Clone, Copy, Debug)]
pub(super) struct SpillNeed {
    pub(super) over: usize,
    pub(super) owed: usize,
}

/// At most this many body bytes of write-through (owed, not over the bound) go to the log
/// in one write. 8 MiB measured a little better than 2, 4 and 16 for 16 KiB publishes
/// (docs/BENCHMARKS.md); a publish that writes a chunk itself holds the topic lock for it
/// (~5 ms at 1.6 GB/s).
pub(crate) const SPILL_CHUNK_BYTES: usize = 8 << 20;

pub(super) struct MemRecord {
    pub(super) header: RecordHeader,
    pub(super) body: Bytes,
    /// `record::body_crc(body)` for a body the log writes from where it is (bigger than
    /// `log::INLINE_BODY_MAX`), computed at publish while it was in cache.
    pub(super) body_crc: Option<u32>,
}

pub(crate) struct TopicState {
    pub(crate) next_seq: u64,
    pub(super) mem: VecDeque<MemRecord>,
    pub(crate) log: Option<Log>,
    /// Records appended (or acks made) since the last sync round.
    pub(crate) unsynced: u64,
    pub(crate) last_sync: Instant,
    pub(crate) waiters: Vec<DurableCallback>,
    pub(crate) start_seq: u64,
    /// Sequences handed out before the last start that were never stored (the memory tail
    /// of a crashed run): nothing in this range can be delivered, so depth leaves it out.
    pub(crate) lost: std::ops::Range<u64>,
    /// A batch is being written to the log without this lock (`Topic::spill_owed`): its
    /// records are still in memory and not yet in the log, and nothing else may append
    /// or replace the writable segment until it ends (`TopicCore::wait_appending`).
    pub(crate) appending: bool,
    /// While `appending`: the sequence after the last record that write takes.
    pub(crate) appending_end: u64,
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
pub(super) fn spill_front(st: &mut TopicState, n: usize, min_floor: Option<u64>) -> Result<usize> {
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
    let r = log.append_with_crcs(
        mem.iter()
            .take(n)
            .filter(unfinished)
            .map(|r| (r.header, &r.body[..], r.body_crc)),
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

impl TopicCore {
    pub(super) fn min_floor(&self) -> Option<u64> {
        self.floors
            .read()
            .values()
            .map(|r| r.floor.load(Ordering::Acquire))
            .min()
    }

    /// The slowest channel's read position (`None` without channels).
    pub(super) fn min_read(&self) -> Option<u64> {
        self.floors
            .read()
            .values()
            .map(|r| r.read.load(Ordering::Acquire))
            .min()
    }

    /// What the oldest memory records owe the log, now that memory holds `st.mem.len()`
    /// records. `over`: those beyond the memory bound, which a publish moves before it is
    /// answered (or, deferred, within `DEFER_SLACK_BYTES`). `owed`: all of them while the
    /// slowest channel (`slowest`, its read position; the topic's start without channels)
    /// is more than the bound behind the newest message, else `over`. Such a channel reads
    /// from the log for a while whatever memory holds, so new messages go to the log at
    /// once, while the read that brought them left them in cache: held in memory until
    /// the bound pushed them out, they would be copied from memory gone cold (16 KiB
    /// bodies spent most of their publish cost there), and memory would hold the bound's
    /// worth of bodies for nothing. Once the channels are within the bound again, memory
    /// is used again. What is owed but not over the bound is within the bound: it goes
    /// in chunks of `SPILL_CHUNK_BYTES` ([`TopicCore::spill_chunk`]), so the moment a
    /// channel falls behind does not write the whole bound's worth in one go.
    pub(super) fn spill_need(&self, st: &TopicState, slowest: Option<u64>) -> SpillNeed {
        let limit = self.opts().mem_queue_size;
        let over = st.mem.len().saturating_sub(limit);
        let slowest = slowest.unwrap_or(st.start_seq);
        let owed = if st.next_seq.saturating_sub(slowest) > limit as u64 {
            st.mem.len()
        } else {
            over
        };
        SpillNeed { over, owed }
    }

    /// How many of the oldest memory records one spill moves for `need`: everything over
    /// the bound, and of the rest owed as many as fit in `SPILL_CHUNK_BYTES` of bodies
    /// (at least one).
    pub(super) fn spill_chunk(&self, st: &TopicState, need: SpillNeed) -> usize {
        if need.owed <= need.over {
            return need.owed;
        }
        let mut bytes = 0usize;
        let within = st
            .mem
            .iter()
            .take(need.owed)
            .take_while(|r| {
                bytes += r.body.len();
                bytes <= SPILL_CHUNK_BYTES
            })
            .count();
        within.max(need.over).max(1)
    }

    /// Body bytes of the oldest `n` memory records that no write at work is taking to the
    /// log already.
    pub(super) fn waiting_bytes(&self, st: &TopicState, n: usize) -> usize {
        let taken = if st.appending { st.appending_end } else { 0 };
        st.mem
            .iter()
            .take(n)
            .filter(|r| r.header.seq >= taken)
            .map(|r| r.body.len())
            .sum()
    }

    /// Drop from memory what every channel has finished.
    pub(crate) fn trim_mem(&self) {
        let Some(min) = self.min_floor() else { return };
        let mut st = self.state.lock();
        let would_drop = st.mem.front().is_some_and(|m| m.header.seq < min);
        if self.retains() || (would_drop && self.external_now()) {
            // Finished messages are kept for replay: they leave memory for the log.
            self.wait_appending(&mut st);
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
    pub(super) fn drop_floor(&self, st: &TopicState, min_floor: Option<u64>) -> Option<u64> {
        let m = min_floor?;
        if st.mem.front().is_some_and(|r| r.header.seq < m) && self.external_now() {
            return None;
        }
        Some(m)
    }

    /// The floor below which spilling may skip records (finished by every channel), or
    /// `None` when every record must reach the log (retention).
    pub(super) fn spill_floor(&self) -> Option<u64> {
        if self.retains() {
            None
        } else {
            self.min_floor()
        }
    }

    pub(super) fn note_front(&self, st: &TopicState) {
        self.front_hint.store(st.mem_front(), Ordering::Release);
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

impl Topic {
    /// Clean shutdown: write the memory tail that some channel has not finished to the
    /// log, so nothing unfinished is lost across a restart.
    pub(crate) fn flush_memory(&self) -> Result<()> {
        if self.core.ephemeral {
            return Ok(());
        }
        let min_floor = self.core.spill_floor();
        let mut st = self.core.state.lock();
        self.core.wait_appending(&mut st);
        if st.log.is_none() {
            return Ok(());
        }
        let n = st.mem.len();
        let min_floor = self.core.drop_floor(&st, min_floor);
        let r = spill_front(&mut st, n, min_floor).map(|_| ());
        self.core.note_front(&st);
        r
    }
}
