//! nsq-rs storage engine: per-topic append-only segmented logs written through memory
//! maps, channel cursors over them, and metadata in sled. No networking, no async runtime:
//! fsyncs, cursor persistence and segment GC run on one dedicated sync thread.
//!
//! See docs/ARCHITECTURE.md for how the server uses it and docs/FORMAT.md for the bytes
//! on disk.

#![deny(unsafe_code)]

mod error;
#[allow(unsafe_code)]
mod fs;
pub mod log;
pub mod meta;
mod meta_recovery;
pub mod reader;
pub mod record;
mod seal;
mod segment;
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
use fs::Io;
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
    io: Io,
}

/// A data directory: topic logs under `topics/`, metadata under `meta/`.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl Engine {
    /// Open a data directory, which must exist. A metadata store that is missing, damaged
    /// or cannot be opened for lack of space is rebuilt from the topic directories and the
    /// cursor snapshots beside them (see [`meta_recovery`]).
    pub fn open(data_path: &Path, opts: EngineOptions) -> Result<Engine> {
        Engine::open_with(data_path, opts, Io::default())
    }

    #[cfg(test)]
    pub(crate) fn open_with_faults(
        data_path: &Path,
        opts: EngineOptions,
        plan: std::sync::Arc<fs::FaultPlan>,
    ) -> Result<Engine> {
        Engine::open_with(data_path, opts, Io::with_faults(plan))
    }

    fn open_with(data_path: &Path, opts: EngineOptions, io: Io) -> Result<Engine> {
        if !data_path.is_dir() {
            return Err(Error::Io {
                path: data_path.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "data path does not exist or is not a directory",
                ),
            });
        }
        let topics_dir = data_path.join("topics");
        if !topics_dir.is_dir() {
            std::fs::create_dir(&topics_dir).at(&topics_dir)?;
        }
        remove_deleted_leftovers(&topics_dir);
        let meta = Arc::new(meta_recovery::open(data_path)?);
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
            io,
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
    pub fn topic_names(&self) -> Result<Vec<String>> {
        self.inner.meta.topic_names()
    }

    /// Storage errors topics are in now, as (topic, error). Empty when healthy.
    pub fn faults(&self) -> Vec<(String, String)> {
        let topics: Vec<Arc<Topic>> = self.inner.topics.lock().values().cloned().collect();
        let mut v: Vec<(String, String)> = topics
            .iter()
            .filter_map(|t| t.core.fault().map(|f| (t.name().to_string(), f)))
            .collect();
        v.sort();
        v
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
            &self.inner.io,
        )?);
        topics.insert(name.to_string(), t.clone());
        Ok(t)
    }

    pub fn get_topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.inner.topics.lock().get(name).cloned()
    }

    /// Remove a topic with its channels, metadata and files. The directory is renamed
    /// aside while the registry lock is held (so a topic of the same name created right
    /// after starts from an empty directory) and removed after.
    pub fn delete_topic(&self, name: &str) -> Result<()> {
        let aside = {
            let mut topics = self.inner.topics.lock();
            let t = topics.remove(name);
            if let Some(t) = &t {
                t.mark_deleted();
                // Fail anyone waiting for an fsync that will not happen now.
                let waiters = std::mem::take(&mut t.core.state.lock().waiters);
                for w in waiters {
                    w(Err(Error::Deleted(name.to_string())));
                }
            }
            if name.ends_with("#ephemeral") {
                return Ok(());
            }
            let dir = self
                .inner
                .dir
                .join("topics")
                .join(topic::topic_dir_name(name));
            if !dir.exists() {
                return self.inner.meta.remove_topic(name);
            }
            static DELETED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = DELETED.fetch_add(1, Ordering::Relaxed);
            let aside = self
                .inner
                .dir
                .join("topics")
                .join(format!(".deleted-{}-{n}", std::process::id()));
            // Directory first: a crash after it leaves a registry entry (an empty topic),
            // never a resurrected one.
            std::fs::rename(&dir, &aside).at(&dir)?;
            self.inner.meta.remove_topic(name)?;
            aside
        };
        std::fs::remove_dir_all(&aside).at(&aside)
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

/// Directories a topic delete renamed aside but did not finish removing (a crash).
fn remove_deleted_leftovers(topics_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(topics_dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with(".deleted-") {
            if let Err(err) = std::fs::remove_dir_all(e.path()) {
                tracing::warn!(path = %e.path().display(), error = %err, "removing a deleted topic's directory");
            }
        }
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
/// topic watermarks. With `all`, everything is synced and persisted (shutdown). The disk
/// work runs without the topic lock: only taking the work and the waiters holds it.
fn sync_round(inner: &Inner, all: bool) -> Result<()> {
    let topics: Vec<Arc<Topic>> = inner.topics.lock().values().cloned().collect();
    let mut first_err = None;
    let mut meta_dirty = false;
    for t in &topics {
        if t.is_ephemeral() {
            continue;
        }
        let (work, waiters) = {
            let mut st = t.core.state.lock();
            let pending = t.core.pending_changes(&st);
            let due = all
                || !st.waiters.is_empty()
                || pending >= inner.opts.sync_every
                || (pending > 0 && st.last_sync.elapsed() >= inner.opts.sync_timeout);
            if !due {
                continue;
            }
            st.unsynced = 0;
            t.core.dirty_cursors.store(0, Ordering::Release);
            st.last_sync = Instant::now();
            let waiters = std::mem::take(&mut st.waiters);
            (st.log.as_mut().map(|l| l.take_sync_work()), waiters)
        };
        let r = match &work {
            Some(w) => w.run(&inner.io),
            None => Ok(()),
        };
        match &r {
            Ok(()) => {
                if work.as_ref().is_some_and(|w| !w.segments.is_empty()) {
                    t.core.clear_sync_fault();
                }
            }
            Err(e) => {
                // fsyncgate: the kernel may have dropped the data this sync was for, and
                // a later sync would not say so. The waiters fail, the segment is
                // poisoned (the next append starts a fresh one) and the topic is unhealthy
                // until a sync of new data succeeds.
                tracing::error!(topic = %t.name(), error = %e, "fsync failed");
                t.core.set_sync_fault(e);
            }
        }
        let failed = r.as_ref().err().map(|e| e.to_string());
        for w in waiters {
            w(match &failed {
                None => Ok(()),
                Some(e) => Err(Error::Io {
                    path: t.core.dir.clone(),
                    source: std::io::Error::other(e.clone()),
                }),
            });
        }
        if let Err(e) = r {
            first_err.get_or_insert(e);
            // Cursors stay as last persisted: they must not point past records that
            // may not be on disk.
            continue;
        }
        // Cursors and the watermark after the log: a persisted read position never
        // points past records that are not yet on disk... except memory-only ones,
        // which recovery skips.
        if let Err(e) = t.persist_channels(all).and_then(|_| t.persist_meta()) {
            first_err.get_or_insert(e);
        }
        meta_dirty = true;
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
        if t.core.fault().is_some() {
            t.core.probe();
        }
        match t.relocate_stragglers(RELOCATE_MAX) {
            Ok(0) => {}
            Ok(n) => {
                tracing::debug!(topic = %t.name(), moved = n, "stragglers relocated");
                // The copies and the cursors that point at them reach stable storage before
                // any segment holding the originals can go.
                let work = t.core.state.lock().log.as_mut().map(|l| l.take_sync_work());
                let r = work
                    .map_or(Ok(()), |w| w.run(&inner.io))
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
        // Detach under the lock, unlink without it.
        let gone = {
            let mut st = t.core.state.lock();
            st.log
                .as_mut()
                .map(|log| (log.dir().to_path_buf(), log.detach_below(floor)))
        };
        if let Some((dir, paths)) = gone {
            match log::remove_segments(&inner.io, &dir, &paths) {
                Ok(()) if paths.is_empty() => {}
                Ok(()) => {
                    tracing::debug!(topic = %t.name(), segments = paths.len(), "segments removed")
                }
                Err(e) => tracing::warn!(topic = %t.name(), error = %e, "segment GC failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests;
