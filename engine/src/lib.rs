//! nsq-rs storage engine: per-topic append-only segmented logs written through memory
//! maps, channel cursors over them, and metadata in sled. No networking, no async runtime:
//! fsyncs, cursor persistence and segment GC run on one dedicated sync thread.
//!
//! See docs/ARCHITECTURE.md for how the server uses it and docs/FORMAT.md for the bytes
//! on disk.

#![deny(unsafe_code)]

mod channel;
mod cursor;
mod error;
pub mod external;
#[allow(unsafe_code)]
mod fs;
mod layout;
pub mod log;
pub mod meta;
mod meta_recovery;
pub mod reader;
pub mod record;
mod seal;
mod segment;
mod sync;
mod topic;
mod types;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::Mutex;

pub use channel::Channel;
pub use error::{Error, Result};
pub use log::RecoveryReport;
pub use topic::Topic;
pub use types::{
    ChannelStats, DurableCallback, EngineOptions, ImportedMessage, Message, NewMessage, Published,
    RewindTo, TopicConfig, TopicStats,
};

use error::IoContext;
use fs::Io;
use meta::Meta;
use sync::{remove_deleted_leftovers, sync_loop, sync_round, SyncSignal};

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
        let signal = Arc::new(SyncSignal::default());
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
            self.inner.opts,
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
                .join(layout::topic_dir_name(name));
            if !dir.exists() {
                return self.inner.meta.remove_topic(name);
            }
            static DELETED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = DELETED.fetch_add(1, Ordering::Relaxed);
            let aside = self.inner.dir.join("topics").join(format!(
                "{}{}-{n}",
                layout::DELETED_PREFIX,
                std::process::id()
            ));
            // Directory first: a crash after it leaves a registry entry (an empty topic),
            // never a resurrected one.
            std::fs::rename(&dir, &aside).at(&dir)?;
            self.inner.meta.remove_topic(name)?;
            aside
        };
        std::fs::remove_dir_all(&aside).at(&aside)
    }

    /// Write every topic's memory tail to its log, fsync every log, persist every cursor
    /// and flush the metadata now. Blocks on disk; for callers that must know everything
    /// is durable before they go on (the NSQ import renames NSQ's files only after this).
    pub fn sync_all(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let topics: Vec<Arc<Topic>> = self.inner.topics.lock().values().cloned().collect();
        for t in topics {
            t.flush_memory()?;
        }
        sync_round(&self.inner, true)
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

#[cfg(test)]
mod tests;
