//! nsq_to_file's topic discoverer and consumer side (NSQ's topic_discoverer.go): one
//! consumer and one file writer thread per topic, topics given or found by
//! `--topic-pattern` on nsqlookupd (or, reading segments, in the data directory).
//!
//! A message is FINed only once its line has reached the operating system (and, with
//! `--sync-every`, the disk), so killing this process loses nothing: unFINed messages are
//! redelivered by nsqd. The file's committed length is kept in a sidecar file in the work
//! directory, written after each batch and before its FINs; a restart cuts what came after
//! it (see `file_logger.rs`), so at most the last batch is written twice.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use client::{Consumer, Outcome};
use tokio::sync::oneshot;

use super::file_logger::{
    read_sidecar, recover_file, sidecar_path, write_sidecar, FileLogger, FileState, Settings,
};

type Done = oneshot::Sender<Result<(), String>>;

pub enum Cmd {
    Write(Bytes, Done),
    /// SIGHUP (logrotate's convention): close the current file; the next message opens
    /// a new one.
    Reopen,
    Close,
}

/// One topic's file writer, on its own thread (file IO is blocking).
struct TopicWriter {
    topic: String,
    s: Arc<Settings>,
    logger: FileLogger,
    sidecar: PathBuf,
    sync_every: u64,
    /// Messages written but waiting for an fsync before they are acknowledged.
    unsynced: Vec<Done>,
    last_sync: Instant,
    written: u64,
    last_report: Instant,
}

impl TopicWriter {
    fn run(mut self, rx: mpsc::Receiver<Cmd>) {
        let tick = Duration::from_millis(200);
        loop {
            match rx.recv_timeout(tick) {
                Ok(Cmd::Write(body, done)) => {
                    let mut batch = vec![(body, done)];
                    let (mut close, mut reopen) = (false, false);
                    while batch.len() < 4096 {
                        match rx.try_recv() {
                            Ok(Cmd::Write(b, d)) => batch.push((b, d)),
                            Ok(Cmd::Reopen) => {
                                reopen = true;
                                break;
                            }
                            Ok(Cmd::Close) => {
                                close = true;
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    self.write_batch(batch);
                    if close {
                        break;
                    }
                    if reopen {
                        self.close_file("SIGHUP");
                    }
                }
                Ok(Cmd::Reopen) => self.close_file("SIGHUP"),
                Ok(Cmd::Close) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            self.periodic();
        }
        self.close_file("exit");
        tracing::info!(topic = %self.topic, messages = self.written, "writer stopped");
    }

    fn save(&self, state: &Option<FileState>, durable: bool) -> Result<()> {
        match state {
            Some(st) => write_sidecar(&self.sidecar, st, durable),
            None => Ok(()),
        }
    }

    fn write_batch(&mut self, batch: Vec<(Bytes, Done)>) {
        let n = batch.len();
        let mut acks = Vec::with_capacity(n);
        let mut result: Result<()> = Ok(());
        for (body, done) in batch {
            if result.is_ok() {
                result = self.write_one(&body);
            }
            acks.push(done);
        }
        let result = result
            .and_then(|_| self.logger.commit(false))
            .and_then(|st| self.save(&st, false));
        match result {
            Ok(()) => {
                self.written += n as u64;
                if self.sync_every > 0 {
                    self.unsynced.extend(acks);
                    if self.unsynced.len() as u64 >= self.sync_every {
                        self.sync();
                    }
                } else {
                    for a in acks {
                        let _ = a.send(Ok(()));
                    }
                }
            }
            Err(e) => {
                tracing::error!(topic = %self.topic, "write failed: {e:#}");
                let text = format!("{e:#}");
                for a in acks {
                    let _ = a.send(Err(text.clone()));
                }
                // Start over with a new file; the messages come again.
                self.close_file("write error");
            }
        }
    }

    fn write_one(&mut self, body: &[u8]) -> Result<()> {
        if self.logger.needs_rotation() {
            // Whatever waited for a sync is synced by the close.
            let st = self.logger.update_file()?;
            self.ack_unsynced(Ok(()));
            self.save(&Some(st), true)?;
        }
        self.logger.write(body)
    }

    fn ack_unsynced(&mut self, r: Result<(), String>) {
        for a in self.unsynced.drain(..) {
            let _ = a.send(r.clone());
        }
    }

    /// fsync and acknowledge what waited for it.
    fn sync(&mut self) {
        let r = self
            .logger
            .commit(true)
            .and_then(|st| self.save(&st, true))
            .map_err(|e| format!("{e:#}"));
        self.last_sync = Instant::now();
        self.ack_unsynced(r);
    }

    fn periodic(&mut self) {
        if self.last_sync.elapsed() >= self.s.sync_interval
            || (!self.unsynced.is_empty() && self.last_sync.elapsed() >= Duration::from_secs(1))
        {
            self.sync();
        }
        if self.logger.expired() {
            self.close_file("rotation");
        }
        if self.last_report.elapsed() >= Duration::from_secs(10) {
            self.last_report = Instant::now();
            tracing::info!(
                topic = %self.topic,
                messages = self.written,
                file = self.logger.name().unwrap_or("-"),
                "progress"
            );
        }
    }

    /// Close the current file (fsynced, moved into place) and acknowledge what waited.
    fn close_file(&mut self, why: &str) {
        let r = self.logger.close().map_err(|e| format!("{e:#}"));
        if let Err(e) = &r {
            tracing::error!(topic = %self.topic, "closing file ({why}): {e}");
        } else {
            let _ = std::fs::remove_file(&self.sidecar);
        }
        self.ack_unsynced(r);
    }
}

pub struct Running {
    pub consumer: Consumer,
    pub tx: mpsc::Sender<Cmd>,
    pub thread: std::thread::JoinHandle<()>,
}

/// Start archiving one topic over TCP: first complete what a killed run left (from the
/// sidecar), then the writer thread and the consumer.
pub fn start_topic(
    source: &nsq_tools::Source,
    channel: &str,
    sync_every: u64,
    s: &Arc<Settings>,
    topic: &str,
) -> Result<Running> {
    let sidecar = sidecar_path(s, topic);
    if let Some(st) = read_sidecar(&sidecar)? {
        recover_file(s, &st)?;
        let _ = std::fs::remove_file(&sidecar);
    }
    let (tx, rx) = mpsc::channel();
    let writer = TopicWriter {
        topic: topic.to_string(),
        s: s.clone(),
        logger: FileLogger::new(s.clone(), topic),
        sidecar,
        // Never wait for more messages than can be in flight at once.
        sync_every: sync_every.min(u64::from(source.max_in_flight.max(1))),
        unsynced: Vec::new(),
        last_sync: Instant::now(),
        written: 0,
        last_report: Instant::now(),
    };
    let thread = std::thread::Builder::new()
        .name(format!("write-{topic}"))
        .spawn(move || writer.run(rx))?;
    let mut config = source.config()?;
    config.concurrency = config.max_in_flight as usize;
    let htx = tx.clone();
    let consumer = Consumer::new(topic, channel, config, move |m| {
        let (done, wait) = oneshot::channel();
        let sent = htx.send(Cmd::Write(m.body.clone(), done)).is_ok();
        async move {
            if !sent {
                return Outcome::RequeueNoBackoff(Duration::ZERO);
            }
            match wait.await {
                Ok(Ok(())) => Outcome::Finish,
                _ => Outcome::RequeueAfter(Duration::from_secs(1)),
            }
        }
    })?;
    Ok(Running {
        consumer,
        tx,
        thread,
    })
}

/// Topics nsqlookupd knows (NSQ's discoverer polls `/topics`).
pub async fn lookupd_topics(http: &reqwest::Client, lookupd: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for l in lookupd {
        let url = format!("{}/topics", client::lookup::base_url(l));
        match http.get(&url).send().await {
            Ok(r) => match r.json::<serde_json::Value>().await {
                Ok(v) => {
                    let list = v
                        .get("topics")
                        .or_else(|| v.get("data").and_then(|d| d.get("topics")));
                    for t in list.and_then(|t| t.as_array()).into_iter().flatten() {
                        if let Some(t) = t.as_str() {
                            out.push(t.to_string());
                        }
                    }
                }
                Err(e) => tracing::warn!("{url}: {e}"),
            },
            Err(e) => tracing::warn!("{url}: {e}"),
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Topics stored in a data directory (for `--topic-pattern` with `--data-path`).
pub fn data_dir_topics(data_path: &std::path::Path) -> Result<Vec<String>> {
    let dd = engine::reader::DataDir::open(data_path)
        .with_context(|| format!("opening {}", data_path.display()))?;
    Ok(dd
        .topics()?
        .into_iter()
        .map(|t| t.name)
        .filter(|n| !n.ends_with("#ephemeral"))
        .collect())
}

/// The running topics and the ones still to start, for a pattern refresh.
pub fn new_matches(
    found: Vec<String>,
    re: &regex::Regex,
    running: &HashMap<String, impl Sized>,
) -> Vec<String> {
    found
        .into_iter()
        .filter(|t| re.is_match(t) && !running.contains_key(t))
        .collect()
}
