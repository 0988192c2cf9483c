//! The engine's one background thread: group-committed fsyncs, cursor persistence,
//! straggler relocation, segment GC and fault probes. Disk work runs here without the
//! topic lock; only taking the work (and the waiters) holds it.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::error::{Error, Result};
use crate::log;
use crate::topic::Topic;
use crate::Inner;

/// Wakes the sync thread early (durable publish waiting, sync_every reached, close).
pub(crate) struct SyncSignal {
    pending: Mutex<bool>,
    cv: Condvar,
}

impl Default for SyncSignal {
    fn default() -> Self {
        SyncSignal {
            pending: Mutex::new(false),
            cv: Condvar::new(),
        }
    }
}

impl SyncSignal {
    pub(crate) fn wake(&self) {
        *self.pending.lock() = true;
        self.cv.notify_one();
    }

    pub(crate) fn wait(&self, timeout: Duration) {
        let mut p = self.pending.lock();
        if !*p {
            self.cv.wait_for(&mut p, timeout);
        }
        *p = false;
    }
}

/// Directories a topic delete renamed aside but did not finish removing (a crash).
pub(crate) fn remove_deleted_leftovers(topics_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(topics_dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name()
            .to_string_lossy()
            .starts_with(crate::layout::DELETED_PREFIX)
        {
            if let Err(err) = std::fs::remove_dir_all(e.path()) {
                tracing::warn!(path = %e.path().display(), error = %err, "removing a deleted topic's directory");
            }
        }
    }
}

pub(crate) fn sync_loop(weak: Weak<Inner>) {
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
pub(crate) fn sync_round(inner: &Inner, all: bool) -> Result<()> {
    let topics: Vec<Arc<Topic>> = inner.topics.lock().values().cloned().collect();
    let mut first_err = None;
    let mut meta_dirty = false;
    for t in &topics {
        if t.is_ephemeral() {
            continue;
        }
        let opts = t.core.opts();
        // External readers only see what is in the log: put the memory tail there each
        // round (visible to them at once; fsynced by the usual policy).
        if t.core.has_external() {
            if let Err(e) = t.flush_memory() {
                tracing::warn!(topic = %t.name(), error = %e, "writing the memory tail for external readers");
            }
        }
        let (work, waiters) = {
            let mut st = t.core.state.lock();
            let pending = t.core.pending_changes(&st);
            let due = all
                || !st.waiters.is_empty()
                || pending >= opts.sync_every
                || (pending > 0 && st.last_sync.elapsed() >= opts.sync_timeout);
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

pub(crate) fn gc_round(inner: &Inner) {
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
        // The registration lock (see external.rs), held from reading the external
        // readers' cursors to unlinking: a reader registering now waits for us, and we skip
        // this round while one registers.
        let ext_lock = match crate::external::lock_topic(&t.core.dir, false, false) {
            Ok(Some(l)) => Some(l),
            Ok(None) => continue,
            // The lock file cannot be created (a full disk, say): a reader cannot register
            // either, so without a readers directory GC goes on as before.
            Err(_) if !crate::external::readers_dir(&t.core.dir).exists() => None,
            Err(e) => {
                tracing::warn!(topic = %t.name(), error = %e, "external readers' lock: no GC this round");
                continue;
            }
        };
        let ext = crate::external::scan_cursors(&t.core.dir);
        for (path, reason) in &ext.damaged {
            tracing::warn!(topic = %t.name(), file = %path.display(), reason = %reason, "damaged external reader cursor: keeping every segment of this topic");
        }
        let ext_floor = ext.floor();
        t.core.external_floor.store(
            ext_floor.unwrap_or(crate::topic::NO_EXTERNAL),
            Ordering::Release,
        );
        let floor = t.gc_floor().min(ext_floor.unwrap_or(u64::MAX));
        // Detach under the lock, unlink without it.
        let opts = t.core.opts();
        let now = crate::topic::now_ns();
        let gone = {
            let mut st = t.core.state.lock();
            st.log.as_mut().map(|log| {
                let paths =
                    log.detach_finished(floor, opts.retention_time, opts.retention_bytes, now);
                (log.dir().to_path_buf(), paths)
            })
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
        drop(ext_lock);
        // After GC, which may just have freed the space a full disk needed.
        if t.core.fault().is_some() {
            t.core.probe();
        }
    }
}
