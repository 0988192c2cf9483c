//! A topic as the server sees it: the engine topic (the log and memory tail, shared by all
//! channels) plus the live channels and publish counters. Publishing wakes every channel;
//! each channel's cursor then reads the new messages from the same stored copy.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::RwLock;
use serde::Serialize;
use tokio::sync::oneshot;

use crate::channel::{Channel, ChannelStats};
use crate::stats::{LatencyStats, Quantiles};

pub struct Topic {
    pub name: String,
    pub inner: Arc<engine::Topic>,
    pub(crate) channels: RwLock<HashMap<String, Arc<Channel>>>,
    pub message_count: AtomicU64,
    pub message_bytes: AtomicU64,
    pub deleted: AtomicBool,
    /// Messages published while the topic is paused. NSQ keeps them in the topic (its
    /// depth) and its channels see them only after unpause; /stats shows them that way.
    paused_backlog: AtomicU64,
    /// This topic's part of the message-id key on the wire (see [`crate::guid`]).
    pub id_mask: u64,
    /// Publish-to-FIN latency over all of this topic's channels.
    pub e2e: Quantiles,
    e2e_enabled: bool,
    e2e_window: std::time::Duration,
    /// A blocking-pool thread is paying what deferred publishes left owed
    /// ([`Topic::spill_owed_in_background`]).
    spilling: AtomicBool,
}

/// Resolves once a durable publish is on stable storage.
pub type DurableWait = oneshot::Receiver<Result<(), engine::Error>>;

impl Topic {
    pub fn new(
        inner: Arc<engine::Topic>,
        e2e_enabled: bool,
        e2e_window: std::time::Duration,
    ) -> Topic {
        let id_mask = crate::guid::topic_mask(inner.name());
        Topic {
            e2e: Quantiles::new(e2e_enabled, e2e_window),
            e2e_enabled,
            e2e_window,
            name: inner.name().to_string(),
            inner,
            channels: RwLock::new(HashMap::new()),
            message_count: AtomicU64::new(0),
            message_bytes: AtomicU64::new(0),
            deleted: AtomicBool::new(false),
            paused_backlog: AtomicU64::new(0),
            id_mask,
            spilling: AtomicBool::new(false),
        }
    }

    pub fn is_paused(&self) -> bool {
        self.inner.is_paused()
    }

    pub fn is_ephemeral(&self) -> bool {
        self.inner.is_ephemeral()
    }

    /// Publish bodies (all with the same deliver time). With `durable`, the returned
    /// receiver resolves once the records are fsynced; the caller answers the client then.
    /// With `defer_spill` (and not `durable`), the write of what went over the memory
    /// bound may be left to the caller: the returned flag says to call
    /// [`Topic::spill_owed`] after answering (see `engine::Topic::publish_deferring_spill`).
    pub fn publish(
        &self,
        bodies: Vec<Bytes>,
        deliver_at_ms: u64,
        durable: bool,
        defer_spill: bool,
    ) -> Result<(Option<DurableWait>, bool), engine::Error> {
        let n = bodies.len() as u64;
        let bytes: u64 = bodies.iter().map(|b| b.len() as u64).sum();
        let msgs = bodies
            .into_iter()
            .map(|body| engine::NewMessage {
                body,
                deliver_at_ms,
            })
            .collect();
        let (wait, cb) = if durable {
            let (tx, rx) = oneshot::channel();
            let cb: Box<dyn FnOnce(Result<(), engine::Error>) + Send> = Box::new(move |r| {
                let _ = tx.send(r);
            });
            (Some(rx), Some(cb))
        } else {
            (None, None)
        };
        let published = if defer_spill && cb.is_none() {
            self.inner.publish_deferring_spill(msgs)?
        } else {
            self.inner.publish(msgs, cb)?
        };
        if self.is_paused() {
            self.paused_backlog.fetch_add(n, Ordering::Relaxed);
        }
        self.message_count.fetch_add(n, Ordering::Relaxed);
        self.message_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.notify_channels();
        Ok((wait, published.spill_owed))
    }

    /// Write what deferred publishes left owed to the log on a thread of tokio's
    /// blocking pool, so the connection that answered goes on reading its client's next
    /// batch instead of waiting for the `pwrite`. One such thread per topic at a time: it
    /// keeps writing while publishers keep leaving something owed, and they wait for it
    /// (`engine::Topic::publish_deferring_spill` holds what memory may owe to a few MiB).
    /// Outside a runtime (or while it shuts down) the caller writes itself.
    pub fn spill_owed_in_background(self: &Arc<Self>) {
        // Only one thread at a time; the one running takes whatever is owed when it looks
        // again below. SeqCst pairs the publisher's "publish, then set" with the writer's
        // "clear, then look": either the writer sees the new debt or the publisher sees
        // the flag clear and starts a writer.
        if self.spilling.swap(true, Ordering::SeqCst) {
            return;
        }
        let t = self.clone();
        let pay = move || loop {
            let wrote = t.inner.spill_owed();
            t.spilling.store(false, Ordering::SeqCst);
            if !wrote || !t.inner.owes_spill() || t.spilling.swap(true, Ordering::SeqCst) {
                return;
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn_blocking(pay);
            }
            Err(_) => pay(),
        }
    }

    pub fn notify_channels(&self) {
        for c in self.channels.read().values() {
            c.notify.notify_waiters();
        }
    }

    pub fn get_channel(&self, name: &str) -> Option<Arc<Channel>> {
        self.channels.read().get(name).cloned()
    }

    pub fn channels(&self) -> Vec<Arc<Channel>> {
        self.channels.read().values().cloned().collect()
    }

    /// Get or create; the bool says whether it was created now.
    pub fn channel(&self, name: &str) -> Result<(Arc<Channel>, bool), engine::Error> {
        self.channel_from(name, false)
    }

    /// Get or create; a new channel starts at the oldest retained message when `earliest`
    /// (beyond NSQ: `/channel/create?start=earliest`).
    pub fn channel_from(
        &self,
        name: &str,
        earliest: bool,
    ) -> Result<(Arc<Channel>, bool), engine::Error> {
        if let Some(c) = self.get_channel(name) {
            return Ok((c, false));
        }
        let mut channels = self.channels.write();
        if let Some(c) = channels.get(name) {
            return Ok((c.clone(), false));
        }
        let cursor = self.inner.channel_from(name, earliest)?;
        let e2e = Quantiles::new(self.e2e_enabled, self.e2e_window);
        let c = Arc::new(Channel::new(&self.name, cursor, e2e, self.e2e.clone()));
        channels.insert(name.to_string(), c.clone());
        Ok((c, true))
    }

    /// Remove a channel and its cursor; its subscribers are disconnected.
    pub fn delete_channel(&self, name: &str) -> Result<bool, engine::Error> {
        let Some(c) = self.channels.write().remove(name) else {
            return Ok(false);
        };
        c.kick_clients();
        self.inner.delete_channel(name)?;
        Ok(true)
    }

    pub fn set_paused(&self, paused: bool) -> Result<(), engine::Error> {
        self.inner.set_paused(paused)?;
        if !paused {
            self.paused_backlog.store(0, Ordering::Relaxed);
            self.notify_channels();
        }
        Ok(())
    }

    pub fn empty(&self) -> Result<(), engine::Error> {
        self.inner.empty()
    }

    pub fn stats(
        &self,
        channel_filter: Option<&str>,
        include_clients: bool,
        percentiles: &[f64],
    ) -> TopicStats {
        let mut channels: Vec<ChannelStats> = self
            .channels()
            .iter()
            .filter(|c| channel_filter.is_none_or(|f| f == c.name))
            .map(|c| c.stats(include_clients, percentiles))
            .collect();
        // External readers (nsq_to_file --data-path) as channels (beyond NSQ).
        channels.extend(
            self.inner
                .external_readers()
                .into_iter()
                .filter(|r| channel_filter.is_none_or(|f| f == r.name))
                .map(|r| ChannelStats::external(r, percentiles)),
        );
        channels.sort_by(|a, b| a.channel_name.cmp(&b.channel_name));
        let ts = self.inner.stats();
        let backlog = if self.is_paused() {
            self.paused_backlog.load(Ordering::Relaxed)
        } else {
            0
        };
        for c in &mut channels {
            c.depth = c.depth.saturating_sub(backlog);
            c.message_count = c.message_count.saturating_sub(backlog);
        }
        TopicStats {
            topic_name: self.name.clone(),
            channels,
            depth: ts.depth + backlog,
            backend_depth: ts.backend_depth,
            message_count: self.message_count.load(Ordering::Relaxed),
            message_bytes: self.message_bytes.load(Ordering::Relaxed),
            paused: self.is_paused(),
            e2e_processing_latency: self.e2e.stats(percentiles),
            e2e_processing_latency_histogram: self.e2e.histogram(),
            config: self.inner.config(),
            effective_config: EffectiveConfig::of(&self.inner.effective_options()),
            disk_bytes: ts.log_bytes,
            disk_segments: ts.segments,
            corrupt_records: ts.corrupt_records,
            storage_error: ts.storage_error.unwrap_or_default(),
        }
    }
}

/// The per-topic settings in force, with `/topic/config`'s names and units (ms, bytes).
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct EffectiveConfig {
    pub mem_queue_size: u64,
    pub sync_every: u64,
    pub sync_timeout: u64,
    pub retention_time: u64,
    pub retention_bytes: u64,
    pub max_bytes: u64,
}

impl EffectiveConfig {
    pub fn of(e: &engine::EngineOptions) -> EffectiveConfig {
        EffectiveConfig {
            mem_queue_size: e.mem_queue_size as u64,
            sync_every: e.sync_every,
            sync_timeout: u64::try_from(e.sync_timeout.as_millis()).unwrap_or(u64::MAX),
            retention_time: u64::try_from(e.retention_time.as_millis()).unwrap_or(u64::MAX),
            retention_bytes: e.retention_bytes,
            max_bytes: e.max_bytes_per_topic,
        }
    }
}

/// A topic as /stats shows it (NSQ's field names).
#[derive(Debug, Clone, Serialize)]
pub struct TopicStats {
    pub topic_name: String,
    pub channels: Vec<ChannelStats>,
    pub depth: u64,
    pub backend_depth: u64,
    pub message_count: u64,
    pub message_bytes: u64,
    pub paused: bool,
    pub e2e_processing_latency: LatencyStats,
    /// Beyond NSQ: every e2e latency since start, bucketed (the /metrics histogram).
    pub e2e_processing_latency_histogram: crate::stats::HistogramStats,
    /// Beyond NSQ: the topic's own settings (`/topic/config`); `null` = the node-wide flag.
    pub config: engine::TopicConfig,
    /// Beyond NSQ: the settings in force (the flags with `config` applied).
    pub effective_config: EffectiveConfig,
    /// Beyond NSQ: bytes of the topic's log on disk and its segment count.
    pub disk_bytes: u64,
    pub disk_segments: usize,
    /// Beyond NSQ: damaged records recovery skipped when the topic was opened.
    pub corrupt_records: u64,
    /// Beyond NSQ: the storage error the topic is in ("" when none).
    pub storage_error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TCP publish's deferred spill is written by a blocking-pool thread: the caller
    /// does not wait for it, and everything owed reaches the log.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deferred_spills_are_written_in_the_background() {
        let dir = tempfile::tempdir().unwrap();
        let opts = engine::EngineOptions {
            mem_queue_size: 10,
            max_bytes_per_file: 256 * 1024,
            ..engine::EngineOptions::default()
        };
        let e = engine::Engine::open(dir.path(), opts).unwrap();
        let t = Arc::new(Topic::new(
            e.topic("t").unwrap(),
            false,
            std::time::Duration::from_secs(60),
        ));
        let c = t.inner.channel("c").unwrap();
        for b in 0..50 {
            let bodies = (0..20)
                .map(|i| Bytes::from(format!("{b}:{i}:{}", "x".repeat(3000))))
                .collect();
            let (wait, owed) = t.publish(bodies, 0, false, true).unwrap();
            assert!(wait.is_none());
            if owed {
                t.spill_owed_in_background();
            }
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while t.inner.owes_spill() || t.spilling.load(Ordering::SeqCst) {
            assert!(
                std::time::Instant::now() < deadline,
                "the spill never ended"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!(t.inner.stats().mem_depth, 0, "the channel is far behind");
        assert!(t.inner.stats().log_bytes > 50 * 20 * 3000);
        let mut got = Vec::new();
        while c.next_batch(10_000, &mut got).unwrap() > 0 {}
        let order: Vec<(usize, usize)> = got
            .iter()
            .map(|m| {
                let s = std::str::from_utf8(&m.body).unwrap();
                let mut f = s.split(':').map(|v| v.parse().unwrap_or(usize::MAX));
                (f.next().unwrap(), f.next().unwrap())
            })
            .collect();
        let want: Vec<(usize, usize)> =
            (0..50).flat_map(|b| (0..20).map(move |i| (b, i))).collect();
        assert_eq!(order, want, "every message once, in order");
        e.close().unwrap();
    }
}
