//! A channel of a topic: a cursor over the topic's log (see `cursor.rs`) plus what the
//! topic needs to know of it (its floor, for trimming memory and GC).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::cursor::Cursor;
use crate::error::Result;
use crate::meta::ChannelMeta;
use crate::topic::trim_to_bytes;
use crate::topic::TopicCore;
use crate::types::{ChannelStats, Message, RewindTo};

/// A channel's positions as the topic sees them without the channel's lock.
pub(crate) struct Marks {
    /// Lowest unfinished sequence (outstanding's first, else `read`): what memory may drop
    /// and GC may remove below.
    pub(crate) floor: AtomicU64,
    /// The next sequence the channel reads for the first time: how far behind the newest
    /// message it is (see `TopicCore::spill_need`).
    pub(crate) read: AtomicU64,
}

pub struct Channel {
    pub(crate) name: String,
    pub(crate) id: u32,
    pub(crate) ephemeral: bool,
    core: Arc<TopicCore>,
    paused: AtomicBool,
    /// Where this channel is, shared with the topic (see [`Marks`]).
    pub(crate) marks: Arc<Marks>,
    cursor: Mutex<Cursor>,
    /// Changed since last persisted.
    pub(crate) dirty: AtomicBool,
    pub(crate) deleted: AtomicBool,
    /// Floor at the last memory trim (see `TopicCore::maybe_trim`).
    last_trim: AtomicU64,
    /// Held across taking a snapshot of the cursor and writing it (sled and the snapshot
    /// file), so two writers (the sync thread and a rewind) never interleave: the later
    /// snapshot is always the one that stays, and they never share the temporary file.
    pub(crate) persist_lock: Mutex<()>,
}

impl Channel {
    pub(crate) fn new(
        core: &Arc<TopicCore>,
        name: &str,
        id: u32,
        start: u64,
        ephemeral: bool,
    ) -> Channel {
        Channel {
            name: name.to_string(),
            id,
            ephemeral,
            core: core.clone(),
            paused: AtomicBool::new(false),
            marks: Arc::new(Marks {
                floor: AtomicU64::new(start),
                read: AtomicU64::new(start),
            }),
            cursor: Mutex::new(Cursor::at(start)),
            dirty: AtomicBool::new(true),
            deleted: AtomicBool::new(false),
            last_trim: AtomicU64::new(start),
            persist_lock: Mutex::new(()),
        }
    }

    pub(crate) fn restore(core: &Arc<TopicCore>, name: &str, cm: ChannelMeta) -> Channel {
        let ch = Channel::new(core, name, cm.id, cm.read, false);
        ch.paused.store(cm.paused, Ordering::Relaxed);
        {
            let mut c = ch.cursor.lock();
            *c = Cursor::restore(&cm);
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
        self.marks.floor.store(c.floor(), Ordering::Release);
        self.marks.read.store(c.read, Ordering::Release);
    }

    /// Would the next [`Channel::next_batch`] read from disk (a replay after a restart, or
    /// a read position below the memory tail)? A cheap hint, for callers that must not
    /// block an async worker on disk reads.
    pub fn next_needs_disk(&self) -> bool {
        let c = self.cursor.lock();
        !c.replay.is_empty() || c.read < self.core.front_hint.load(Ordering::Acquire)
    }

    /// When [`Channel::next_needs_disk`]: is the start of that read in the page cache (so
    /// it will not wait for the disk)? A hint: `false` for a replay (scattered reads) or
    /// when the kernel cannot tell.
    pub fn next_read_cached(&self) -> bool {
        let (read, hint) = {
            let c = self.cursor.lock();
            if !c.replay.is_empty() {
                return false;
            }
            (c.read, c.hint)
        };
        let start = {
            let st = self.core.state.lock();
            st.log.as_ref().and_then(|l| l.read_start(read, &hint))
        };
        start.is_some_and(|(file, offset)| crate::fs::page_cached(&file, offset))
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
            if !c.outstanding.contains(&seq) {
                // Finished after it was queued (a forward rewind queues unfinished messages
                // whose earlier delivery may still be in flight, and its FIN can come
                // first): nothing is owed, and a delivery now would be tracked by nothing.
                c.replay.pop_front();
                continue;
            }
            // Taken off the replay list only once it was read: a read error leaves it there.
            let found = self.core.read_one(seq)?;
            c.replay.pop_front();
            match found {
                Some(m) => out.push(m),
                None => {
                    c.forget(seq);
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
                out.extend(read.into_iter().filter(|m| !c.is_already_handed_out(m.seq)));
            }
            c.advance(out[before..].iter().map(|m| m.seq), next);
            if next == from {
                break;
            }
            self.publish_floor(&c);
            self.dirty.store(true, Ordering::Release);
        }
        Ok(out.len() - start)
    }

    /// Move this channel's read position (see [`RewindTo`]); returns the sequence it reads
    /// from next. The caller persists it ([`crate::Topic::rewind_channel`] does).
    pub(crate) fn rewind(&self, to: RewindTo) -> Result<u64> {
        let seq = self.core.resolve(to)?;
        {
            let mut c = self.cursor.lock();
            c.rewind(seq);
            self.publish_floor(&c);
        }
        self.dirty.store(true, Ordering::Release);
        self.core.trim_mem();
        Ok(seq)
    }

    /// The next `n` messages this channel would hand out (at most `max_bytes` of bodies),
    /// without handing them out, finishing or counting them.
    pub fn peek(&self, n: usize, max_bytes: usize) -> Result<Vec<Message>> {
        let c = self.cursor.lock();
        let mut out = Vec::new();
        for &seq in c
            .replay
            .iter()
            .filter(|s| c.outstanding.contains(s))
            .take(n)
        {
            if let Some(m) = self.core.read_one(seq)? {
                out.push(m);
            }
        }
        let mut hint = c.hint;
        let mut from = c.read;
        while out.len() < n {
            let before = out.len();
            let next = self
                .core
                .read_from(from, n - out.len(), self.id, &mut hint, &mut out)?;
            let read = out.split_off(before);
            out.extend(read.into_iter().filter(|m| !c.is_already_handed_out(m.seq)));
            if next == from {
                break;
            }
            from = next;
        }
        trim_to_bytes(&mut out, max_bytes);
        Ok(out)
    }

    /// FIN: `seq` is finished.
    pub fn ack(&self, seq: u64) -> Result<()> {
        self.ack_many(std::iter::once(seq))
    }

    /// FIN of several (those one read from a client brought): as [`Channel::ack`] for
    /// each, with one round of the cursor lock and of the topic's bookkeeping.
    pub fn ack_many(&self, seqs: impl IntoIterator<Item = u64>) -> Result<()> {
        let (removed, floor_moved, floor) = {
            let mut c = self.cursor.lock();
            let before = c.floor();
            let removed = seqs.into_iter().filter(|&s| c.finish(s)).count() as u64;
            let floor = c.floor();
            if floor != before {
                self.publish_floor(&c);
            }
            (removed, floor != before, floor)
        };
        if floor_moved {
            self.core.maybe_trim(floor, &self.last_trim);
        }
        if removed > 0 && !self.ephemeral {
            self.dirty.store(true, Ordering::Release);
            self.core.note_dirty_n(removed);
        }
        Ok(())
    }

    /// Everything up to the topic's end is finished.
    pub fn empty(&self) -> Result<()> {
        let end = self.core.state.lock().next_seq;
        {
            let mut c = self.cursor.lock();
            c.empty(end);
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

    pub(crate) fn ack_floor(&self) -> u64 {
        self.cursor.lock().floor()
    }

    pub(crate) fn snapshot(&self) -> ChannelMeta {
        self.cursor.lock().to_meta(self.id, self.is_paused())
    }

    /// Move this channel's unfinished messages below `boundary` to the tail of the log as
    /// copies targeted at this channel, so they stop pinning old segments. Only when the
    /// channel has read past `boundary` and there are at most `max` of them. Returns how
    /// many moved.
    pub(crate) fn relocate_stragglers(&self, boundary: u64, max: usize) -> Result<usize> {
        let mut c = self.cursor.lock();
        let old = c.stragglers(boundary, max);
        if old.is_empty() {
            return Ok(0);
        }
        let mut found = Vec::with_capacity(old.len());
        for s in old {
            match self.core.read_one(s)? {
                Some(m) => found.push(m),
                None => c.forget(s), // gone (emptied): nothing to keep
            }
        }
        let (new_seqs, failed) = self.core.append_relocated(&found, self.id);
        let moved = new_seqs.len();
        for (m, n) in found.iter().zip(new_seqs) {
            c.relocated(m.seq, n);
        }
        c.sort_replay();
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
        let next = self.core.state.lock().next_seq;
        // One record read (from memory, or one pread) for the lag in time.
        let oldest_unfinished_ts = if floor < next {
            self.core
                .read_one(floor)
                .ok()
                .flatten()
                .map_or(0, |m| m.timestamp_ns)
        } else {
            0
        };
        let st = self.core.state.lock();
        let mem_front = st.mem_front();
        let from = read.max(st.start_seq);
        ChannelStats {
            oldest_unfinished_ts,
            depth: st.next_seq.saturating_sub(from) - st.lost_within(from, st.next_seq) + replay,
            backend_depth: mem_front.saturating_sub(from) - st.lost_within(from, mem_front)
                + replay,
            ack_floor: floor,
            read,
            outstanding,
        }
    }
}
