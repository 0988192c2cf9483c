//! A channel as the server sees it: the engine cursor (what is finished, what comes next,
//! durable) plus everything about delivery attempts, which lives only in memory: the
//! in-flight table with its timeouts, requeued messages, deferred messages, subscribers and
//! counters.
//!
//! Distribution across a channel's consumers is pull-based: each subscribed connection
//! takes messages when it has RDY room, so a slow client simply takes fewer. A message that
//! is requeued, times out, or whose client disconnects goes back to `requeued` and is
//! handed to whichever client asks next.

use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use edge::clock::{Clock, SystemClock};

use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::Notify;

use crate::client::{Client, ClientStats};
use crate::stats::{LatencyStats, Quantiles};

pub type MessageId = [u8; 16];

/// A message handed to a client and not yet finished.
struct InFlight {
    msg: engine::Message,
    client_id: u64,
    client: Arc<Client>,
    deadline: Instant,
}

/// A message waiting for its time (DPUB, or REQ with a delay).
struct Deferred {
    at: Instant,
    msg: engine::Message,
}

impl PartialEq for Deferred {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at && self.msg.seq == other.msg.seq
    }
}
impl Eq for Deferred {}
impl PartialOrd for Deferred {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Deferred {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.msg.seq).cmp(&(other.at, other.msg.seq))
    }
}

/// Hashes the in-flight table's keys so that sequential ids land in sequential buckets.
/// A key is the 16 hex digits of a number (the engine's ids are sequence numbers); the
/// hash keeps that number's low 57 bits as they are (the bucket index: messages handed out
/// in order are inserted and finished in neighbouring buckets, so the table is walked
/// instead of hit at random, which cost a cache miss per insert and per FIN) and puts a
/// mix of the number in the top 7 bits (hashbrown's control byte, which must vary).
/// Hash flooding is not a concern: every key inserted is an id nsqd itself generated; a
/// client can only look ids up (FIN/REQ/TOUCH), never insert one, so it cannot choose
/// colliding keys. Other bytes than hex digits hash as some digit (still deterministic).
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        match <&[u8; 16]>::try_from(bytes) {
            Ok(id) => self.0 = engine::record::hex16_lenient(id),
            Err(_) => {
                for &b in bytes {
                    self.0 = (self.0 << 8) | u64::from(b);
                }
            }
        }
    }

    /// The length prefix of the key (always 16): carries nothing.
    #[inline]
    fn write_usize(&mut self, _: usize) {}

    #[inline]
    fn finish(&self) -> u64 {
        const LOW: u64 = (1 << 57) - 1;
        (self.0 & LOW) | (self.0.wrapping_mul(K) & !LOW)
    }
}

const K: u64 = 0x9e37_79b9_7f4a_7c15;

type IdMap<V> = HashMap<MessageId, V, BuildHasherDefault<IdHasher>>;

#[derive(Default)]
struct DeliveryState {
    in_flight: IdMap<InFlight>,
    /// Deadlines of in-flight messages; stale entries (finished or touched) are skipped.
    timeouts: BinaryHeap<Reverse<(Instant, MessageId)>>,
    requeued: VecDeque<engine::Message>,
    deferred: BinaryHeap<Reverse<Deferred>>,
}

/// Why FIN/REQ/TOUCH failed; the text is what NSQ puts after "... failed ".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InFlightError {
    NotInFlight,
    NotOwner,
}

impl std::fmt::Display for InFlightError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InFlightError::NotInFlight => f.write_str("ID not in flight"),
            InFlightError::NotOwner => f.write_str("client does not own message"),
        }
    }
}

pub struct Channel {
    pub name: String,
    pub topic_name: String,
    pub cursor: Arc<engine::Channel>,
    state: Mutex<DeliveryState>,
    /// Woken when there may be something new to take: publish, requeue, timeout, unpause.
    pub notify: Notify,
    clients: Mutex<HashMap<u64, Arc<Client>>>,
    pub message_count: AtomicU64,
    pub requeue_count: AtomicU64,
    pub timeout_count: AtomicU64,
    pub deleted: AtomicBool,
    pub e2e: Quantiles,
    topic_e2e: Quantiles,
    /// Deadlines, deferred times and latencies are read from here (the system clock, or a
    /// test's manual one).
    clock: Arc<dyn Clock>,
}

impl Channel {
    pub fn new(
        topic_name: &str,
        cursor: Arc<engine::Channel>,
        e2e: Quantiles,
        topic_e2e: Quantiles,
    ) -> Channel {
        Channel {
            name: cursor.name().to_string(),
            topic_name: topic_name.to_string(),
            cursor,
            state: Mutex::new(DeliveryState::default()),
            notify: Notify::new(),
            clients: Mutex::new(HashMap::new()),
            message_count: AtomicU64::new(0),
            requeue_count: AtomicU64::new(0),
            timeout_count: AtomicU64::new(0),
            deleted: AtomicBool::new(false),
            e2e,
            topic_e2e,
            clock: Arc::new(SystemClock),
        }
    }

    /// The same channel reading time from `clock` (tests move it by hand).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Channel {
        self.clock = clock;
        self
    }

    pub fn is_ephemeral(&self) -> bool {
        self.cursor.is_ephemeral()
    }

    pub fn is_paused(&self) -> bool {
        self.cursor.is_paused()
    }

    pub fn set_paused(&self, paused: bool) -> Result<(), engine::Error> {
        self.cursor.set_paused(paused)?;
        if !paused {
            self.notify.notify_waiters();
        }
        Ok(())
    }

    /// Add a subscriber; fails if `max` (> 0) consumers are already subscribed.
    pub fn add_client(&self, client: Arc<Client>, max: usize) -> Result<(), usize> {
        let mut clients = self.clients.lock();
        if max > 0 && clients.len() >= max && !clients.contains_key(&client.id) {
            return Err(max);
        }
        clients.insert(client.id, client);
        Ok(())
    }

    /// Remove a subscriber and give its in-flight messages to the others right away.
    /// Returns how many clients remain.
    pub fn remove_client(&self, client_id: u64) -> usize {
        let remaining = {
            let mut clients = self.clients.lock();
            clients.remove(&client_id);
            clients.len()
        };
        let mut requeued = 0;
        {
            let mut st = self.state.lock();
            let ids: Vec<MessageId> = st
                .in_flight
                .iter()
                .filter(|(_, f)| f.client_id == client_id)
                .map(|(id, _)| *id)
                .collect();
            for id in ids {
                if let Some(f) = st.in_flight.remove(&id) {
                    st.requeued.push_back(f.msg);
                    requeued += 1;
                }
            }
        }
        if requeued > 0 {
            self.requeue_count.fetch_add(requeued, Ordering::Relaxed);
            self.notify.notify_waiters();
        }
        remaining
    }

    pub fn client_count(&self) -> usize {
        self.clients.lock().len()
    }

    pub fn clients(&self) -> Vec<Arc<Client>> {
        self.clients.lock().values().cloned().collect()
    }

    /// Take up to `max` messages for `client` and mark them in flight. `topic_paused`
    /// stops new messages (not requeued ones), as pausing a topic does in NSQ.
    pub fn take(
        &self,
        client: &Arc<Client>,
        max: usize,
        topic_paused: bool,
        out: &mut Vec<engine::Message>,
    ) -> Result<(), engine::Error> {
        let start = out.len();
        let deadline = self.take_unmarked(client, max, topic_paused, out)?;
        self.mark_in_flight(client, deadline, out[start..].iter().cloned());
        Ok(())
    }

    /// The first half of [`Channel::take`]: up to `max` messages for `client`, with their
    /// attempts counted, appended to `out` but not yet in flight. Returns the deadline to
    /// give them. The caller must hand every one of them to [`Channel::mark_in_flight`]
    /// (by move, which spares a copy of each message) before it can send any of them and
    /// before it yields: until then they are neither queued nor in flight.
    pub fn take_unmarked(
        &self,
        client: &Arc<Client>,
        max: usize,
        topic_paused: bool,
        out: &mut Vec<engine::Message>,
    ) -> Result<Instant, engine::Error> {
        let now = self.clock.now();
        let deadline = now + client.msg_timeout();
        if max == 0 || self.cursor.is_paused() {
            return Ok(deadline);
        }
        let start = out.len();
        {
            let mut st = self.state.lock();
            while out.len() - start < max {
                match st.requeued.pop_front() {
                    Some(m) => out.push(m),
                    None => break,
                }
            }
        }
        // The cursor read runs without the delivery-state lock: it may go to disk, and FINs
        // of other clients of this channel must not wait behind it.
        let mut deferred = Vec::new();
        while !topic_paused && out.len() - start < max {
            let want = max - (out.len() - start);
            let before = out.len();
            self.cursor.next_batch(want, out)?;
            if out.len() == before {
                break;
            }
            // Every record read from the cursor entered this channel (NSQ's message_count
            // counts deferred ones too).
            self.message_count
                .fetch_add((out.len() - before) as u64, Ordering::Relaxed);
            // Deferred records (DPUB, or replayed after a restart) wait for their time.
            let now_ms = self.clock.unix_ms();
            let mut i = before;
            while i < out.len() {
                if out[i].deliver_at_ms > now_ms {
                    let m = out.swap_remove(i);
                    let wait = Duration::from_millis(m.deliver_at_ms - now_ms);
                    deferred.push(Reverse(Deferred {
                        at: now + wait,
                        msg: m,
                    }));
                } else {
                    i += 1;
                }
            }
        }
        if !deferred.is_empty() {
            self.state.lock().deferred.extend(deferred);
        }
        for m in &mut out[start..] {
            m.attempts = m.attempts.saturating_add(1);
        }
        Ok(deadline)
    }

    /// The second half of [`Channel::take`]: `msgs` (from [`Channel::take_unmarked`]) are
    /// in flight to `client` until `deadline`.
    pub fn mark_in_flight(
        &self,
        client: &Arc<Client>,
        deadline: Instant,
        msgs: impl Iterator<Item = engine::Message>,
    ) {
        let mut n = 0i64;
        {
            let mut st = self.state.lock();
            for m in msgs {
                st.timeouts.push(Reverse((deadline, m.id)));
                st.in_flight.insert(
                    m.id,
                    InFlight {
                        msg: m,
                        client_id: client.id,
                        client: client.clone(),
                        deadline,
                    },
                );
                n += 1;
            }
        }
        if n > 0 {
            client.in_flight_count.fetch_add(n, Ordering::AcqRel);
            client.message_count.fetch_add(n as u64, Ordering::Relaxed);
        }
    }

    /// FIN: the message is done; the engine records it as finished.
    pub fn finish(&self, client: &Client, id: &MessageId) -> Result<(), InFlightError> {
        let mut failed = Vec::new();
        self.finish_many(client, std::slice::from_ref(id), &mut failed);
        match failed.pop() {
            Some((_, e)) => Err(e),
            None => Ok(()),
        }
    }

    /// FIN of several ids (those one read from a client's socket brought): one lock round
    /// on the in-flight table, one clock read and one latency-histogram update for all of
    /// them. Each id that could not be finished is appended to `failed` with its index in
    /// `ids`, in order; the others are finished exactly as [`Channel::finish`] would.
    pub fn finish_many(
        &self,
        client: &Client,
        ids: &[MessageId],
        failed: &mut Vec<(usize, InFlightError)>,
    ) {
        let mut done: Vec<InFlight> = Vec::with_capacity(ids.len());
        {
            let mut st = self.state.lock();
            for (i, id) in ids.iter().enumerate() {
                match st.in_flight.entry(*id) {
                    Entry::Occupied(e) if e.get().client_id == client.id => done.push(e.remove()),
                    Entry::Occupied(_) => failed.push((i, InFlightError::NotOwner)),
                    Entry::Vacant(_) => failed.push((i, InFlightError::NotInFlight)),
                }
            }
        }
        if done.is_empty() {
            return;
        }
        let n = done.len();
        client.in_flight_count.fetch_sub(n as i64, Ordering::AcqRel);
        if let Err(e) = self.cursor.ack_many(done.iter().map(|f| f.msg.seq)) {
            tracing::error!(topic = %self.topic_name, channel = %self.name, error = %e, "ack failed");
        }
        client.finish_count.fetch_add(n as u64, Ordering::Relaxed);
        let now = self.clock.unix_ns();
        let latencies = done
            .iter()
            .map(|f| (now - f.msg.timestamp_ns).max(0) as u64);
        self.e2e.record_many(latencies.clone());
        self.topic_e2e.record_many(latencies);
    }

    /// REQ: give the message back, now or after `delay`.
    pub fn requeue(
        &self,
        client: &Client,
        id: &MessageId,
        delay: Duration,
    ) -> Result<(), InFlightError> {
        let f = self.take_in_flight(client, id)?;
        client.requeue_count.fetch_add(1, Ordering::Relaxed);
        self.requeue_count.fetch_add(1, Ordering::Relaxed);
        {
            let mut st = self.state.lock();
            if delay.is_zero() {
                st.requeued.push_back(f.msg);
            } else {
                st.deferred.push(Reverse(Deferred {
                    at: self.clock.now() + delay,
                    msg: f.msg,
                }));
            }
        }
        if delay.is_zero() {
            self.notify.notify_waiters();
        }
        Ok(())
    }

    /// TOUCH: restart the message's timeout.
    pub fn touch(&self, client: &Client, id: &MessageId) -> Result<(), InFlightError> {
        let mut st = self.state.lock();
        let deadline = self.clock.now() + client.msg_timeout();
        let f = st.in_flight.get_mut(id).ok_or(InFlightError::NotInFlight)?;
        if f.client_id != client.id {
            return Err(InFlightError::NotOwner);
        }
        f.deadline = deadline;
        st.timeouts.push(Reverse((deadline, *id)));
        Ok(())
    }

    /// The next `n` messages this channel would deliver (requeued ones first), at most
    /// `max_bytes` of bodies, with the attempts they would be delivered with; nothing is
    /// handed out, finished or counted.
    pub fn peek(&self, n: usize, max_bytes: usize) -> Result<Vec<engine::Message>, engine::Error> {
        let mut out: Vec<engine::Message> = {
            let st = self.state.lock();
            st.requeued.iter().take(n).cloned().collect()
        };
        if out.len() < n {
            out.extend(self.cursor.peek(n - out.len(), max_bytes)?);
        }
        let mut total = 0;
        let keep = out
            .iter()
            .position(|m| {
                total += m.body.len();
                total > max_bytes
            })
            .unwrap_or(out.len())
            .max(1)
            .min(out.len());
        out.truncate(keep);
        for m in &mut out {
            m.attempts = m.attempts.saturating_add(1);
        }
        Ok(out)
    }

    fn take_in_flight(&self, client: &Client, id: &MessageId) -> Result<InFlight, InFlightError> {
        let f = {
            let mut st = self.state.lock();
            match st.in_flight.entry(*id) {
                Entry::Occupied(e) if e.get().client_id == client.id => e.remove(),
                Entry::Occupied(_) => return Err(InFlightError::NotOwner),
                Entry::Vacant(_) => return Err(InFlightError::NotInFlight),
            }
        };
        client.in_flight_count.fetch_sub(1, Ordering::AcqRel);
        Ok(f)
    }

    /// Move timed-out in-flight messages back to the queue and due deferred messages into
    /// it. Called periodically by the scanner. Returns true if anything became ready.
    pub fn process_timers(&self) -> bool {
        let now = self.clock.now();
        let mut timed_out: Vec<Arc<Client>> = Vec::new();
        let mut ready = false;
        {
            let mut st = self.state.lock();
            while let Some(Reverse((at, id))) = st.timeouts.peek().copied() {
                if at > now {
                    break;
                }
                st.timeouts.pop();
                let expired = matches!(st.in_flight.get(&id), Some(f) if f.deadline <= now);
                if expired {
                    if let Some(f) = st.in_flight.remove(&id) {
                        timed_out.push(f.client.clone());
                        st.requeued.push_back(f.msg);
                        ready = true;
                    }
                }
            }
            // FIN'd and touched messages leave stale deadlines behind; when they dominate,
            // rebuild the heap so its size stays proportional to what is in flight.
            // The rebuild reuses the heap's buffer: a fresh one every few thousand FINs had
            // every push touch new memory (page faults were ~10% of a fan-out's CPU).
            if st.timeouts.len() > 2 * st.in_flight.len() + 1024 {
                let st = &mut *st;
                let mut buf = std::mem::take(&mut st.timeouts).into_vec();
                buf.clear();
                buf.extend(
                    st.in_flight
                        .iter()
                        .map(|(id, f)| Reverse((f.deadline, *id))),
                );
                st.timeouts = BinaryHeap::from(buf);
            }
            while st.deferred.peek().is_some_and(|d| d.0.at <= now) {
                if let Some(Reverse(d)) = st.deferred.pop() {
                    st.requeued.push_back(d.msg);
                    ready = true;
                }
            }
        }
        if !timed_out.is_empty() {
            self.timeout_count
                .fetch_add(timed_out.len() as u64, Ordering::Relaxed);
            for c in &timed_out {
                c.in_flight_count.fetch_sub(1, Ordering::AcqRel);
                c.notify.notify_one();
            }
        }
        if ready {
            self.notify.notify_waiters();
        }
        ready
    }

    /// Channel empty: drop everything queued, in flight and deferred, and mark every
    /// message up to the topic's end as finished.
    pub fn empty(&self) -> Result<(), engine::Error> {
        let owners: Vec<Arc<Client>> = {
            let mut st = self.state.lock();
            let owners = st.in_flight.values().map(|f| f.client.clone()).collect();
            *st = DeliveryState::default();
            owners
        };
        for c in owners {
            c.in_flight_count.fetch_sub(1, Ordering::AcqRel);
            c.notify.notify_one();
        }
        // message_count is delivered + depth; what is emptied had entered the channel and
        // stays counted (as in NSQ, where emptying never lowers it).
        let emptied = self.cursor.stats().depth;
        self.message_count.fetch_add(emptied, Ordering::Relaxed);
        self.cursor.empty()
    }

    /// Close every subscriber's connection (channel deleted).
    pub fn kick_clients(&self) {
        self.deleted.store(true, Ordering::Release);
        for c in self.clients() {
            c.kicked.store(true, Ordering::Release);
            c.notify.notify_one();
        }
        self.notify.notify_waiters();
    }

    pub fn in_flight_count(&self) -> usize {
        self.state.lock().in_flight.len()
    }

    pub fn stats(&self, include_clients: bool, percentiles: &[f64]) -> ChannelStats {
        let (in_flight, deferred, requeued) = {
            let st = self.state.lock();
            (st.in_flight.len(), st.deferred.len(), st.requeued.len())
        };
        let cs = self.cursor.stats();
        let clients: Vec<Arc<Client>> = self.clients();
        ChannelStats {
            channel_name: self.name.clone(),
            depth: cs.depth + requeued as u64,
            backend_depth: cs.backend_depth,
            in_flight_count: in_flight as u64,
            deferred_count: deferred as u64,
            // NSQ counts the messages that entered the channel: those read from the cursor
            // so far plus those waiting in it.
            message_count: self.message_count.load(Ordering::Relaxed) + cs.depth,
            requeue_count: self.requeue_count.load(Ordering::Relaxed),
            timeout_count: self.timeout_count.load(Ordering::Relaxed),
            client_count: clients.len(),
            clients: if include_clients {
                clients.iter().map(|c| c.stats()).collect()
            } else {
                Vec::new()
            },
            paused: self.is_paused(),
            e2e_processing_latency: self.e2e.stats(percentiles),
            e2e_processing_latency_histogram: self.e2e.histogram(),
            oldest_unfinished_age_ms: match cs.oldest_unfinished_ts {
                0 => 0,
                ts => (self.clock.unix_ns().saturating_sub(ts).max(0) / 1_000_000) as u64,
            },
            external: false,
            cursor_error: None,
        }
    }
}

/// A channel as /stats shows it (NSQ's field names).
#[derive(Debug, Clone, Serialize)]
pub struct ChannelStats {
    pub channel_name: String,
    pub depth: u64,
    pub backend_depth: u64,
    pub in_flight_count: u64,
    pub deferred_count: u64,
    pub message_count: u64,
    pub requeue_count: u64,
    pub timeout_count: u64,
    pub client_count: usize,
    pub clients: Vec<ClientStats>,
    pub paused: bool,
    pub e2e_processing_latency: LatencyStats,
    /// Beyond NSQ: every e2e latency since start, bucketed (the /metrics histogram).
    pub e2e_processing_latency_histogram: crate::stats::HistogramStats,
    /// Beyond NSQ: age of the oldest message the channel has not finished (consumer lag in
    /// time; 0 when it has finished everything).
    pub oldest_unfinished_age_ms: u64,
    /// Beyond NSQ: an external reader (nsq_to_file --data-path) reading the segments
    /// directly, shown as a channel; present only on those.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub external: bool,
    /// Beyond NSQ: why an external reader's cursor file cannot be used (only when so).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor_error: Option<String>,
}

impl ChannelStats {
    /// An external reader (engine/src/external.rs) as a channel: depth from its cursor
    /// file, nothing in flight.
    pub fn external(r: engine::external::ExternalReaderInfo, percentiles: &[f64]) -> Self {
        // No FINs reach nsqd from an external reader: empty latency figures.
        let none = crate::stats::Quantiles::new(false, Duration::ZERO);
        ChannelStats {
            channel_name: r.name,
            depth: r.depth,
            backend_depth: r.backend_depth,
            in_flight_count: 0,
            deferred_count: 0,
            message_count: 0,
            requeue_count: 0,
            timeout_count: 0,
            client_count: 0,
            clients: Vec::new(),
            paused: false,
            e2e_processing_latency: none.stats(percentiles),
            e2e_processing_latency_histogram: none.histogram(),
            oldest_unfinished_age_ms: 0,
            external: true,
            cursor_error: r.error,
        }
    }
}

#[cfg(test)]
mod tests;
