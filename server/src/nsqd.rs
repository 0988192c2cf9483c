//! The daemon's shared state: options, the storage engine, live topics, connected clients,
//! and the lookupd registration handle. Every front end (TCP, HTTP) works through this.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, RwLock};

use crate::channel::Channel;
use crate::client::Client;
use crate::lookup::{Lookup, Registration, RegistrationSource};
use crate::options::Options;
use crate::topic::Topic;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The NSQ version we report to clients and lookupd, so tools that compare versions see a
/// current NSQ.
pub const NSQ_COMPAT_VERSION: &str = "1.3.0";

pub struct Nsqd {
    opts: RwLock<Arc<Options>>,
    pub engine: engine::Engine,
    topics: RwLock<HashMap<String, Arc<Topic>>>,
    pub start_time: i64,
    /// For uptime with sub-second precision (/stats text prints it as Go does).
    started: Instant,
    next_client_id: AtomicU64,
    /// Every connected TCP client (producers and consumers), for /stats.
    pub clients: Mutex<HashMap<u64, Arc<Client>>>,
    pub lookup: OnceLock<Lookup>,
    pub tcp_addr: OnceLock<SocketAddr>,
    pub http_addr: OnceLock<SocketAddr>,
    /// Set when the HTTPS listener is up (TLS configured and --https-address given).
    pub https_addr: OnceLock<SocketAddr>,
    /// `--node-id` (fixed for the process; read on every message frame and FIN).
    pub node_id: i64,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Set while shutting down: publishes get E_PUB_FAILED / 503 EXITING.
    pub exiting: AtomicBool,
    /// A fatal condition of the daemon itself (None when healthy). Storage errors are the
    /// engine's and clear by themselves; see [`Nsqd::health`].
    health: Mutex<Option<String>>,
    pub http_client: reqwest::Client,
}

#[derive(Debug, thiserror::Error)]
pub enum NsqdError {
    #[error("storage: {0}")]
    Engine(#[from] engine::Error),
    #[error("{0}")]
    Config(String),
}

impl Nsqd {
    /// Open the data directory and bring back every durable topic and channel.
    pub fn new(opts: Options) -> Result<Arc<Nsqd>, NsqdError> {
        let data = opts.data_dir();
        if !data.is_dir() {
            // As NSQ: a mistyped --data-path is an error, not a new empty directory.
            return Err(NsqdError::Config(format!(
                "--data-path={} does not exist or is not a directory",
                data.display()
            )));
        }
        let engine = engine::Engine::open(
            &data,
            engine::EngineOptions {
                mem_queue_size: opts.mem_queue_size.max(0) as usize,
                max_bytes_per_file: opts.max_bytes_per_file.max(1024) as u64,
                sync_every: opts.sync_every.max(1) as u64,
                sync_timeout: opts.sync_timeout,
                max_bytes_per_topic: opts.max_bytes_per_topic.max(0) as u64,
                retention_time: opts.retention_time,
                retention_bytes: opts.retention_bytes.max(0) as u64,
            },
        )?;
        // NSQ's own files (a node taken over from NSQ): imported once, then moved aside.
        match crate::nsq_import::import_if_present(&engine, &data) {
            Ok(None) => {}
            Ok(Some(s)) => tracing::info!(
                topics = s.topics,
                channels = s.channels,
                messages = s.messages,
                problems = s.problems.len(),
                moved_to = %s.moved_to.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
                "NSQ data directory imported"
            ),
            Err(e) => tracing::error!(error = %e, "NSQ data directory not imported"),
        }
        let tls = if opts.tls_enabled() {
            Some(crate::tls::server_config(&opts).map_err(NsqdError::Config)?)
        } else {
            None
        };
        let http_client = reqwest::Client::builder()
            .connect_timeout(opts.http_client_connect_timeout)
            .timeout(opts.http_client_request_timeout)
            .build()
            .map_err(|e| NsqdError::Config(format!("http client: {e}")))?;
        let node_id = opts.node_id;
        let nsqd = Arc::new(Nsqd {
            node_id,
            opts: RwLock::new(Arc::new(opts)),
            engine,
            topics: RwLock::new(HashMap::new()),
            start_time: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0),
            started: Instant::now(),
            next_client_id: AtomicU64::new(1),
            clients: Mutex::new(HashMap::new()),
            lookup: OnceLock::new(),
            tcp_addr: OnceLock::new(),
            http_addr: OnceLock::new(),
            https_addr: OnceLock::new(),
            tls,
            exiting: AtomicBool::new(false),
            health: Mutex::new(None),
            http_client,
        });
        for name in nsqd.engine.topic_names()? {
            let topic = nsqd.get_topic(&name)?;
            for ch in topic.inner.channel_names() {
                topic.channel(&ch)?;
            }
            tracing::info!(topic = %name, channels = topic.channels().len(), "loaded topic");
        }
        Ok(nsqd)
    }

    pub fn opts(&self) -> Arc<Options> {
        self.opts.read().clone()
    }

    pub fn set_opts(&self, o: Options) {
        *self.opts.write() = Arc::new(o);
    }

    pub fn next_client_id(&self) -> u64 {
        self.next_client_id.fetch_add(1, Ordering::Relaxed)
    }

    /// None when healthy; otherwise what /ping answers with (NSQ's "NOK - ..."). Storage
    /// faults come from the engine, which clears them once the condition is gone (space
    /// freed, a fresh segment synced).
    pub fn health(&self) -> Option<String> {
        if let Some(h) = self.health.lock().clone() {
            return Some(h);
        }
        let faults = self.engine.faults();
        let (topic, err) = faults.first()?;
        let more = match faults.len() {
            1 => String::new(),
            n => format!(" (and {} more topics)", n - 1),
        };
        Some(format!("NOK - topic {topic}: {err}{more}"))
    }

    pub fn get_existing_topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics.read().get(name).cloned()
    }

    pub fn topics(&self) -> Vec<Arc<Topic>> {
        let mut v: Vec<Arc<Topic>> = self.topics.read().values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Get or create a topic (the name must already be validated).
    pub fn get_topic(&self, name: &str) -> Result<Arc<Topic>, engine::Error> {
        if let Some(t) = self.get_existing_topic(name) {
            return Ok(t);
        }
        let created = {
            let mut topics = self.topics.write();
            if let Some(t) = topics.get(name) {
                return Ok(t.clone());
            }
            let opts = self.opts();
            // Creating a topic makes its directory and first segment.
            let inner = blocking(|| self.engine.topic(name))?;
            let t = Arc::new(Topic::new(
                inner,
                !opts.e2e_processing_latency_percentiles.is_empty(),
                opts.e2e_processing_latency_window_time,
            ));
            topics.insert(name.to_string(), t.clone());
            t
        };
        tracing::info!(topic = %name, "topic created");
        if let Some(l) = self.lookup.get() {
            l.register(Registration::Topic(name.to_string()));
        }
        Ok(created)
    }

    /// Get or create a channel on a topic.
    pub fn get_channel(
        &self,
        topic: &Arc<Topic>,
        name: &str,
    ) -> Result<Arc<Channel>, engine::Error> {
        self.get_channel_from(topic, name, false)
    }

    /// Get or create a channel; a new one starts at the oldest retained message when
    /// `earliest`.
    pub fn get_channel_from(
        &self,
        topic: &Arc<Topic>,
        name: &str,
        earliest: bool,
    ) -> Result<Arc<Channel>, engine::Error> {
        if let Some(c) = topic.get_channel(name) {
            return Ok(c);
        }
        // Creating a channel writes its cursor (sled and the snapshot file).
        let (c, created) = blocking(|| topic.channel_from(name, earliest))?;
        if created {
            tracing::info!(topic = %topic.name, channel = %name, "channel created");
            if let Some(l) = self.lookup.get() {
                l.register(Registration::Channel(topic.name.clone(), name.to_string()));
            }
        }
        Ok(c)
    }

    /// The one publish path of TCP and HTTP: store `bodies` on `topic` (created on first
    /// use). A publish that loses a race with a delete of the same topic goes to the topic
    /// created after it, as in NSQ, instead of failing. With `defer_spill`, the returned
    /// flag may ask the caller to call [`Topic::spill_owed`] once it has answered.
    pub fn publish(
        &self,
        topic: &str,
        bodies: Vec<bytes::Bytes>,
        deliver_at_ms: u64,
        durable_if_sync_every_1: bool,
        defer_spill: bool,
    ) -> Result<(Arc<Topic>, Option<crate::topic::DurableWait>, bool), engine::Error> {
        let mut attempt = 0;
        loop {
            let t = self.get_topic(topic)?;
            let durable =
                durable_if_sync_every_1 && self.opts().sync_every <= 1 && !t.is_ephemeral();
            match t.publish(bodies.clone(), deliver_at_ms, durable, defer_spill) {
                Err(engine::Error::Deleted(_)) if attempt < 3 => attempt += 1,
                Err(e) => return Err(e),
                Ok((w, owed)) => return Ok((t, w, owed)),
            }
        }
    }

    pub fn delete_topic(&self, name: &str) -> Result<bool, engine::Error> {
        // The registry stays locked until the engine has let go of the topic too, so a
        // topic of the same name created meanwhile is a new one, not the dying one.
        let mut topics = self.topics.write();
        let Some(t) = topics.remove(name) else {
            return Ok(false);
        };
        t.deleted.store(true, Ordering::Release);
        for c in t.channels() {
            c.kick_clients();
            if let Some(l) = self.lookup.get() {
                l.unregister(Registration::Channel(name.to_string(), c.name.clone()));
            }
        }
        // Renames the topic's directory and removes it.
        blocking(|| self.engine.delete_topic(name))?;
        drop(topics);
        if let Some(l) = self.lookup.get() {
            l.unregister(Registration::Topic(name.to_string()));
        }
        tracing::info!(topic = %name, "topic deleted");
        Ok(true)
    }

    pub fn delete_channel(&self, topic: &Arc<Topic>, name: &str) -> Result<bool, engine::Error> {
        let deleted = blocking(|| topic.delete_channel(name))?;
        if deleted {
            tracing::info!(topic = %topic.name, channel = %name, "channel deleted");
            if let Some(l) = self.lookup.get() {
                l.unregister(Registration::Channel(topic.name.clone(), name.to_string()));
            }
            // An ephemeral topic goes away with its last channel, as in NSQ.
            if topic.is_ephemeral() && topic.channels().is_empty() {
                self.delete_topic(&topic.name)?;
            }
        }
        Ok(deleted)
    }

    /// A subscriber left: ephemeral channels vanish with their last consumer.
    pub fn client_left_channel(&self, topic: &Arc<Topic>, channel: &Arc<Channel>, client_id: u64) {
        let remaining = channel.remove_client(client_id);
        if remaining == 0 && channel.is_ephemeral() && !channel.deleted.load(Ordering::Acquire) {
            if let Err(e) = self.delete_channel(topic, &channel.name) {
                tracing::warn!(topic = %topic.name, channel = %channel.name, error = %e, "deleting ephemeral channel");
            }
        }
    }

    /// One pass over every channel's timers (in-flight timeouts, deferred messages).
    pub fn scan_timers(&self) {
        for t in self.topics() {
            for c in t.channels() {
                c.process_timers();
            }
        }
    }

    /// Flush everything to disk; called on shutdown.
    pub fn close(&self) -> Result<(), engine::Error> {
        self.exiting.store(true, Ordering::Release);
        self.engine.close()
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }
}

/// What nsqd registers with lookupd: every topic and channel it has.
pub struct NsqdRegistrations(pub std::sync::Weak<Nsqd>);

impl RegistrationSource for NsqdRegistrations {
    fn snapshot(&self) -> Vec<Registration> {
        let Some(nsqd) = self.0.upgrade() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for t in nsqd.topics() {
            out.push(Registration::Topic(t.name.clone()));
            for c in t.channels() {
                out.push(Registration::Channel(t.name.clone(), c.name.clone()));
            }
        }
        out
    }
}

/// Run `f`, which may wait on the disk (creating or removing files), without stalling the
/// other tasks of a tokio worker: on a multi-threaded runtime the worker hands its tasks
/// over first (`block_in_place`); elsewhere (a blocking thread, a plain thread, the
/// current-thread runtime of the in-process tests) `f` runs as it is.
pub(crate) fn blocking<R>(f: impl FnOnce() -> R) -> R {
    let multi_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if multi_thread {
        tokio::task::block_in_place(f)
    } else {
        f()
    }
}
