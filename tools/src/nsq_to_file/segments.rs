//! nsq_to_file straight from the segments (`--data-path`, no network): each topic is read
//! through the engine's external reader (`engine::external`), registered under the
//! channel name, whose cursor file in the data directory keeps nsqd's GC off every segment
//! not archived yet, whether nsqd runs or not.
//!
//! A batch is written to the file, which is flushed and fsynced; only then the cursor file
//! is advanced, together with the file's name and committed length. After a kill -9, the
//! restart cuts the file back to that length and reads again from that cursor, so every
//! message is written exactly once (a rotation commits the cursor at the record where the
//! new file starts).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use engine::external::{ExternalReader, Start};

use super::file_logger::{recover_file, FileLogger, FileState, Settings};

/// How one topic is archived.
#[derive(Debug, Clone)]
pub struct SegmentJob {
    pub data_path: PathBuf,
    pub topic: String,
    pub reader: String,
    pub start: Start,
    /// Messages per batch (one fsync and one cursor write each).
    pub batch: usize,
    /// Stop once the log has been read to its end (instead of waiting for more).
    pub exit_at_end: bool,
    /// How often to look for new records once caught up.
    pub poll: Duration,
    /// Bumped on each SIGHUP: close the current file (logrotate's convention).
    pub hup: Arc<AtomicU64>,
}

fn state_json(st: Option<FileState>) -> Result<Option<serde_json::Value>> {
    Ok(match st {
        Some(st) => Some(serde_json::to_value(st)?),
        None => None,
    })
}

/// Archive one topic until `stop` (or, with `exit_at_end`, until caught up). Returns the
/// number of messages written.
pub fn archive_topic(job: &SegmentJob, s: &Arc<Settings>, stop: &AtomicBool) -> Result<u64> {
    let (mut r, registered) =
        ExternalReader::open(&job.data_path, &job.topic, &job.reader, job.start)
            .with_context(|| format!("topic {}: reader {}", job.topic, job.reader))?;
    if registered {
        tracing::info!(topic = %job.topic, reader = %job.reader, next = r.cursor().next, "registered as an external reader");
    } else {
        tracing::info!(topic = %job.topic, reader = %job.reader, next = r.cursor().next, "resuming");
    }
    if let Some(v) = r.cursor().state.clone() {
        let st: FileState = serde_json::from_value(v)
            .with_context(|| format!("topic {}: the cursor's file state", job.topic))?;
        recover_file(s, &st)?;
    }
    let mut logger = FileLogger::new(s.clone(), &job.topic);
    let mut recs = Vec::with_capacity(job.batch);
    let mut written = 0u64;
    let mut last_report = Instant::now();
    let mut hup_seen = job.hup.load(Ordering::Acquire);
    let result = (|| -> Result<()> {
        loop {
            if stop.load(Ordering::Acquire) {
                return Ok(());
            }
            let hup = job.hup.load(Ordering::Acquire);
            if hup != hup_seen {
                hup_seen = hup;
                logger.close()?;
                r.commit(r.cursor().next, None)?;
            }
            recs.clear();
            let pos = r.read(job.batch, 8 << 20, &mut recs)?;
            if recs.is_empty() {
                if pos > r.cursor().next {
                    // Only records meant for one of nsqd's channels: nothing to write.
                    let st = logger.commit(true)?;
                    r.commit(pos, state_json(st)?)?;
                }
                if job.exit_at_end {
                    return Ok(());
                }
                if logger.expired() {
                    logger.close()?;
                    r.commit(r.cursor().next, None)?;
                }
                std::thread::sleep(job.poll);
                continue;
            }
            for rec in &recs {
                if logger.needs_rotation() {
                    // Everything before this record is in the closed (fsynced) file.
                    let st = logger.update_file()?;
                    r.commit(rec.header.seq, state_json(Some(st))?)?;
                }
                logger.write(&rec.body)?;
            }
            let st = logger.commit(true)?;
            r.commit(pos, state_json(st)?)?;
            written += recs.len() as u64;
            if last_report.elapsed() >= Duration::from_secs(10) {
                last_report = Instant::now();
                tracing::info!(topic = %job.topic, messages = written, next = pos, file = logger.name().unwrap_or("-"), "progress");
            }
        }
    })();
    if r.skipped_damaged > 0 {
        tracing::warn!(topic = %job.topic, records = r.skipped_damaged, "damaged records were skipped");
    }
    match result {
        Ok(()) => {
            logger.close()?;
            r.commit(r.cursor().next, None)?;
            tracing::info!(topic = %job.topic, messages = written, next = r.cursor().next, "stopped");
            Ok(written)
        }
        // The file keeps what was committed; the next run cuts the rest and goes on.
        Err(e) => Err(e),
    }
}
