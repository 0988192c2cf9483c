//! nsq-rs storage engine: per-topic append-only segmented logs written through memory
//! maps, channel cursors over them, and metadata in sled. No networking, no async runtime:
//! fsyncs, cursor persistence and segment GC run on one dedicated sync thread.
//!
//! See docs/ARCHITECTURE.md for how the server uses it and docs/FORMAT.md for the bytes
//! on disk.

mod error;
pub mod log;
pub mod meta;
pub mod reader;
pub mod record;
pub mod segment;
mod topic;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

pub use error::{Error, Result};
pub use log::RecoveryReport;
pub use topic::{
    Channel, ChannelStats, DurableCallback, EngineOptions, Message, NewMessage, Published, Topic,
    TopicStats,
};

use error::IoContext;
use meta::Meta;

/// Names as NSQ allows them (validated again here so nothing unchecked reaches a path).
pub(crate) fn valid_name(name: &str) -> bool {
    let base = name.strip_suffix("#ephemeral").unwrap_or(name);
    !name.is_empty()
        && name.len() <= 64
        && !base.is_empty()
        && base
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// Wakes the sync thread early (durable publish waiting, sync_every reached, close).
pub(crate) struct SyncSignal {
    pending: Mutex<bool>,
    cv: Condvar,
}

impl SyncSignal {
    pub(crate) fn wake(&self) {
        *self.pending.lock() = true;
        self.cv.notify_one();
    }

    fn wait(&self, timeout: Duration) {
        let mut p = self.pending.lock();
        if !*p {
            self.cv.wait_for(&mut p, timeout);
        }
        *p = false;
    }
}

struct Inner {
    dir: PathBuf,
    opts: EngineOptions,
    meta: Arc<Meta>,
    topics: Mutex<HashMap<String, Arc<Topic>>>,
    signal: Arc<SyncSignal>,
    thread: Mutex<Option<JoinHandle<()>>>,
    closed: AtomicBool,
}

/// A data directory: topic logs under `topics/`, metadata under `meta/`.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl Engine {
    pub fn open(data_path: &Path, opts: EngineOptions) -> Result<Engine> {
        std::fs::create_dir_all(data_path.join("topics")).at(data_path)?;
        let meta = Arc::new(Meta::open(&data_path.join("meta"))?);
        let signal = Arc::new(SyncSignal {
            pending: Mutex::new(false),
            cv: Condvar::new(),
        });
        let inner = Arc::new(Inner {
            dir: data_path.to_path_buf(),
            opts,
            meta,
            topics: Mutex::new(HashMap::new()),
            signal,
            thread: Mutex::new(None),
            closed: AtomicBool::new(false),
        });
        let weak = Arc::downgrade(&inner);
        let handle = std::thread::Builder::new()
            .name("nsq-engine-sync".into())
            .spawn(move || sync_loop(weak))
            .map_err(|e| Error::Io {
                path: data_path.to_path_buf(),
                source: e,
            })?;
        *inner.thread.lock() = Some(handle);
        Ok(Engine { inner })
    }

    /// Durable topics known to the registry.
    pub fn topic_names(&self) -> Vec<String> {
        self.inner.meta.topic_names().unwrap_or_default()
    }

    /// Get or create (and on first use open and recover) a topic.
    pub fn topic(&self, name: &str) -> Result<Arc<Topic>> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        if !valid_name(name) {
            return Err(Error::InvalidName(name.to_string()));
        }
        let mut topics = self.inner.topics.lock();
        if let Some(t) = topics.get(name) {
            return Ok(t.clone());
        }
        let ephemeral = name.ends_with("#ephemeral");
        let meta = (!ephemeral).then(|| self.inner.meta.clone());
        let t = Arc::new(Topic::open(
            name,
            &self.inner.dir,
            self.inner.opts.clone(),
            meta,
            self.inner.signal.clone(),
        )?);
        topics.insert(name.to_string(), t.clone());
        Ok(t)
    }

    pub fn get_topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.inner.topics.lock().get(name).cloned()
    }

    /// Remove a topic with its channels, metadata and files.
    pub fn delete_topic(&self, name: &str) -> Result<()> {
        let t = self.inner.topics.lock().remove(name);
        if let Some(t) = &t {
            t.mark_deleted();
            // Fail anyone waiting for an fsync that will not happen now.
            let waiters = std::mem::take(&mut t.core.state.lock().waiters);
            for w in waiters {
                w(Err(Error::Deleted(name.to_string())));
            }
        }
        if !name.ends_with("#ephemeral") {
            self.inner.meta.remove_topic(name)?;
            let dir = self
                .inner
                .dir
                .join("topics")
                .join(topic::topic_dir_name(name));
            if dir.exists() {
                std::fs::remove_dir_all(&dir).at(&dir)?;
            }
        }
        Ok(())
    }

    /// Flush logs and cursors, fsync, stop the sync thread. Idempotent.
    pub fn close(&self) -> Result<()> {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.inner.signal.wake();
        if let Some(h) = self.inner.thread.lock().take() {
            let _ = h.join();
        }
        let topics: Vec<Arc<Topic>> = self.inner.topics.lock().values().cloned().collect();
        let mut first_err = None;
        for t in topics {
            if let Err(e) = t.flush_memory() {
                tracing::error!(topic = %t.name(), error = %e, "writing memory tail on close");
                first_err.get_or_insert(e);
            }
        }
        sync_round(&self.inner, true)?;
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::Release);
    }
}

fn sync_loop(weak: Weak<Inner>) {
    let mut last_gc = Instant::now();
    loop {
        let Some(inner) = weak.upgrade() else { return };
        if inner.closed.load(Ordering::Acquire) {
            return; // close() does the final round itself
        }
        let tick = inner
            .opts
            .sync_timeout
            .min(Duration::from_millis(250))
            .max(Duration::from_millis(1));
        let signal = inner.signal.clone();
        drop(inner);
        signal.wait(tick);
        let Some(inner) = weak.upgrade() else { return };
        if inner.closed.load(Ordering::Acquire) {
            return;
        }
        if let Err(e) = sync_round(&inner, false) {
            tracing::error!(error = %e, "sync failed");
        }
        if last_gc.elapsed() >= Duration::from_secs(1) {
            last_gc = Instant::now();
            gc_round(&inner);
        }
    }
}

/// One pass: fsync topics that are due (or have waiters), then persist dirty cursors and
/// topic watermarks. With `all`, everything is synced and persisted (shutdown).
fn sync_round(inner: &Inner, all: bool) -> Result<()> {
    let topics: Vec<Arc<Topic>> = inner.topics.lock().values().cloned().collect();
    let mut first_err = None;
    let mut meta_dirty = false;
    for t in &topics {
        if t.is_ephemeral() {
            continue;
        }
        let (handle, waiters, due) = {
            let mut st = t.core.state.lock();
            let due = all
                || !st.waiters.is_empty()
                || t.core.pending_changes(&st) >= inner.opts.sync_every
                || (t.core.pending_changes(&st) > 0
                    && st.last_sync.elapsed() >= inner.opts.sync_timeout);
            if !due {
                (None, Vec::new(), false)
            } else {
                st.unsynced = 0;
                t.core.dirty_cursors.store(0, Ordering::Release);
                st.last_sync = Instant::now();
                let waiters = std::mem::take(&mut st.waiters);
                (st.log.as_ref().and_then(|l| l.sync_handle()), waiters, true)
            }
        };
        if !due {
            continue;
        }
        let r = match handle {
            Some(h) => h.sync(),
            None => Ok(()),
        };
        if let Err(e) = &r {
            tracing::error!(topic = %t.name(), error = %e, "fsync failed");
        }
        for w in waiters {
            w(match &r {
                Ok(()) => Ok(()),
                Err(e) => Err(Error::Io {
                    path: t.core.dir.clone(),
                    source: std::io::Error::other(e.to_string()),
                }),
            });
        }
        // Cursors and the watermark after the log: a persisted read position never
        // points past records that are not yet on disk... except memory-only ones,
        // which recovery skips.
        if let Err(e) = t.persist_channels(all).and_then(|_| t.persist_meta()) {
            first_err.get_or_insert(e);
        }
        meta_dirty = true;
        if let Err(e) = r {
            first_err.get_or_insert(e);
        }
    }
    if meta_dirty {
        if let Err(e) = inner.meta.flush() {
            first_err.get_or_insert(e);
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// At most this many unfinished messages of one channel are relocated in one round; more
/// than that is a backlog, not stragglers.
const RELOCATE_MAX: usize = 1024;

fn gc_round(inner: &Inner) {
    let topics: Vec<Arc<Topic>> = inner.topics.lock().values().cloned().collect();
    for t in topics {
        if t.is_ephemeral() {
            continue;
        }
        match t.relocate_stragglers(RELOCATE_MAX) {
            Ok(0) => {}
            Ok(n) => {
                tracing::debug!(topic = %t.name(), moved = n, "stragglers relocated");
                // The copies and the cursors that point at them reach stable storage before
                // any segment holding the originals can go.
                let handle = t
                    .core
                    .state
                    .lock()
                    .log
                    .as_ref()
                    .and_then(|l| l.sync_handle());
                let r = handle
                    .map_or(Ok(()), |h| h.sync())
                    .and_then(|_| t.persist_channels(false))
                    .and_then(|_| inner.meta.flush());
                if let Err(e) = r {
                    tracing::warn!(topic = %t.name(), error = %e, "persisting relocation failed");
                    continue;
                }
            }
            Err(e) => {
                tracing::warn!(topic = %t.name(), error = %e, "straggler relocation failed");
                continue;
            }
        }
        let floor = t.gc_floor();
        let mut st = t.core.state.lock();
        if let Some(log) = st.log.as_mut() {
            match log.gc(floor) {
                Ok(0) => {}
                Ok(n) => tracing::debug!(topic = %t.name(), segments = n, "segments removed"),
                Err(e) => tracing::warn!(topic = %t.name(), error = %e, "segment GC failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests;
