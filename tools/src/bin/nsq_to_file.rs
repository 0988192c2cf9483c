//! nsq_to_file: archive topics to newline-delimited files (NSQ's flags and file naming).
//!
//! Two sources:
//! - over TCP, as NSQ's (`--nsqd-tcp-address` / `--lookupd-http-address`): a consumer per
//!   topic on `--channel`, messages FINed once written (`nsq_to_file/topic_discoverer.rs`);
//! - straight from the segments (`--data-path=DIR`, no network): the topic's log is read
//!   through the engine's external reader, registered as `--channel`, whose cursor lives
//!   in the data directory so nsqd's GC keeps what is not archived yet; works while nsqd
//!   runs and when it is stopped (`nsq_to_file/segments.rs`).
//!
//! Files are named, rotated and moved as NSQ's nsq_to_file does, and are crash-safe: see
//! `nsq_to_file/file_logger.rs`. SIGHUP closes the current files (logrotate's convention).

#[path = "../nsq_to_file/mod.rs"]
mod nsq_to_file;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use nsq_tools::{init_logging_with_prefix, parse_args, parse_duration, shutdown_signal, Source};

use nsq_to_file::file_logger::{recover_legacy_parts, FileArgs, Settings};
use nsq_to_file::segments::{archive_topic, SegmentJob};
use nsq_to_file::topic_discoverer::{
    data_dir_topics, lookupd_topics, new_matches, start_topic, Cmd, Running,
};

#[derive(Parser, Debug, Clone)]
#[command(
    name = "nsq_to_file",
    version,
    about = "Write the messages of NSQ topics to rotating files"
)]
struct Args {
    /// nsq channel (with --data-path: the external reader's name)
    #[arg(long, default_value = "nsq_to_file")]
    channel: String,
    /// nsq topic (may be given multiple times)
    #[arg(long)]
    topic: Vec<String>,
    /// archive every topic matching this regular expression (needs --lookupd-http-address
    /// or --data-path)
    #[arg(long = "topic-pattern")]
    topic_pattern: Option<String>,
    /// how frequently the topic list is refreshed
    #[arg(long = "topic-refresh", value_parser = parse_duration, default_value = "1m")]
    topic_refresh: Duration,
    #[command(flatten)]
    files: FileArgs,
    /// also fsync after every N messages (at most --max-in-flight at a time, and at least
    /// once a second), and FIN messages only once they are synced (0: FIN once written to
    /// the operating system). Reading segments, every batch is fsynced.
    #[arg(long = "sync-every", default_value_t = 0)]
    sync_every: u64,
    /// read the topics' segments in this nsqd data directory instead of consuming over
    /// the network (beyond NSQ); nsqd may be running or stopped
    #[arg(long = "data-path")]
    data_path: Option<PathBuf>,
    /// with --data-path, where a reader registered now starts: "earliest" (the oldest
    /// message stored) or "latest" (only messages stored from now on)
    #[arg(long, default_value = "earliest")]
    start: String,
    /// with --data-path, exit once every topic has been read to the end of its log
    #[arg(long = "exit-at-end")]
    exit_at_end: bool,
    /// with --data-path, remove the --channel external reader of each --topic (nsqd stops
    /// keeping segments for it) and exit
    #[arg(long)]
    unregister: bool,
    /// set log verbosity: debug, info, warn, error, or fatal
    #[arg(long = "log-level", default_value = "info")]
    log_level: String,
    /// log message prefix
    #[arg(long = "log-prefix", default_value = "[nsq_to_file] ")]
    log_prefix: String,
    #[command(flatten)]
    source: Source,
}

#[tokio::main]
async fn main() {
    let args: Args = parse_args();
    init_logging_with_prefix(&args.log_level, &args.log_prefix);
    nsq_tools::exit_on_error("nsq_to_file", run(args).await);
}

async fn run(args: Args) -> Result<()> {
    if args.topic.is_empty() == args.topic_pattern.is_none() {
        bail!("give --topic (one or more) or --topic-pattern");
    }
    for t in &args.topic {
        if !protocol::names::is_valid_topic_name(t) {
            bail!("invalid --topic {t:?}");
        }
    }
    if !protocol::names::is_valid_channel_name(&args.channel) {
        bail!("invalid --channel {:?}", args.channel);
    }
    let pattern = match &args.topic_pattern {
        Some(p) => Some(regex::Regex::new(p).context("invalid --topic-pattern")?),
        None => None,
    };
    match &args.data_path {
        Some(dp) => {
            if !args.source.nsqd_tcp_address.is_empty()
                || !args.source.lookupd_http_address.is_empty()
            {
                bail!("--data-path reads the segments directly: do not give --nsqd-tcp-address or --lookupd-http-address with it");
            }
            if args.channel.ends_with("#ephemeral") {
                bail!("--data-path: an external reader cannot be ephemeral");
            }
            if args.unregister {
                for t in &args.topic {
                    let gone = engine::external::ExternalReader::unregister(dp, t, &args.channel)?;
                    println!(
                        "{t}/{}: {}",
                        args.channel,
                        if gone {
                            "unregistered"
                        } else {
                            "was not registered"
                        }
                    );
                }
                return Ok(());
            }
            let start = match args.start.as_str() {
                "earliest" => engine::external::Start::Earliest,
                "latest" => engine::external::Start::Latest,
                other => bail!("--start must be earliest or latest, not {other:?}"),
            };
            run_segments(&args, dp.clone(), start, pattern).await
        }
        None => {
            if args.unregister || args.exit_at_end {
                bail!("--unregister and --exit-at-end need --data-path");
            }
            args.source.check()?;
            if pattern.is_some() && args.source.lookupd_http_address.is_empty() {
                bail!("--topic-pattern needs --lookupd-http-address");
            }
            run_consumers(&args, pattern).await
        }
    }
}

/// Over TCP, as NSQ's nsq_to_file.
async fn run_consumers(args: &Args, pattern: Option<regex::Regex>) -> Result<()> {
    let s = Arc::new(Settings::from_args(&args.files)?);
    let legacy = recover_legacy_parts(&s)?;
    if legacy > 0 {
        tracing::info!(
            files = legacy,
            "completed .part files left by an earlier version"
        );
    }
    let mut running: HashMap<String, Running> = HashMap::new();
    let start = |t: &str| start_topic(&args.source, &args.channel, args.sync_every, &s, t);
    for t in &args.topic {
        let r = start(t)?;
        args.source.connect(&r.consumer).await?;
        running.insert(t.clone(), r);
    }
    let http = args.source.http_client();
    let stop = shutdown_signal();
    tokio::pin!(stop);
    let mut refresh = tokio::time::interval(args.topic_refresh);
    // SIGHUP closes and reopens the files (logrotate's convention, as NSQ's nsq_to_file).
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("installing the SIGHUP handler")?;
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = hup.recv() => {
                tracing::info!("SIGHUP: closing and reopening files");
                for r in running.values() {
                    let _ = r.tx.send(Cmd::Reopen);
                }
            }
            _ = refresh.tick(), if pattern.is_some() => {
                let Some(re) = &pattern else { continue };
                let found = lookupd_topics(&http, &args.source.lookupd_http_address).await;
                for t in new_matches(found, re, &running) {
                    tracing::info!(topic = %t, "archiving a new topic");
                    let r = start(&t)?;
                    args.source.connect(&r.consumer).await?;
                    running.insert(t, r);
                }
            }
        }
    }
    tracing::info!("stopping: finishing in-flight messages and closing files");
    for r in running.values() {
        r.consumer.stop().await;
    }
    for (_, r) in running {
        let _ = r.tx.send(Cmd::Close);
        let _ = tokio::task::spawn_blocking(move || r.thread.join()).await;
    }
    Ok(())
}

/// Straight from the segments: one thread per topic.
async fn run_segments(
    args: &Args,
    data_path: PathBuf,
    start: engine::external::Start,
    pattern: Option<regex::Regex>,
) -> Result<()> {
    engine::reader::DataDir::open(&data_path)
        .with_context(|| format!("--data-path {}", data_path.display()))?;
    let s = Arc::new(Settings::from_args(&args.files)?);
    let stop = Arc::new(AtomicBool::new(false));
    let hup = Arc::new(AtomicU64::new(0));
    let mut running: HashMap<String, tokio::task::JoinHandle<Result<u64>>> = HashMap::new();
    let spawn = |topic: &str| {
        let job = SegmentJob {
            data_path: data_path.clone(),
            topic: topic.to_string(),
            reader: args.channel.clone(),
            start,
            batch: args.source.max_in_flight.max(1) as usize,
            exit_at_end: args.exit_at_end,
            poll: Duration::from_millis(100),
            hup: hup.clone(),
        };
        let (s, stop) = (s.clone(), stop.clone());
        tokio::task::spawn_blocking(move || archive_topic(&job, &s, &stop))
    };
    for t in &args.topic {
        running.insert(t.clone(), spawn(t));
    }
    let sig = shutdown_signal();
    tokio::pin!(sig);
    let mut refresh = tokio::time::interval(args.topic_refresh);
    let mut check = tokio::time::interval(Duration::from_millis(100));
    let mut first_err: Option<anyhow::Error> = None;
    let mut hup_signal = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("installing the SIGHUP handler")?;
    loop {
        tokio::select! {
            _ = hup_signal.recv() => {
                tracing::info!("SIGHUP: closing and reopening files");
                hup.fetch_add(1, Ordering::AcqRel);
            }
            _ = &mut sig => {
                tracing::info!("stopping: finishing the current batches and closing files");
                break;
            }
            _ = refresh.tick(), if pattern.is_some() && !args.exit_at_end => {
                let Some(re) = &pattern else { continue };
                for t in new_matches(data_dir_topics(&data_path)?, re, &running) {
                    tracing::info!(topic = %t, "archiving a new topic");
                    running.insert(t.clone(), spawn(&t));
                }
            }
            _ = check.tick() => {
                // A topic that ended (error, or caught up with --exit-at-end).
                let done: Vec<String> = running
                    .iter()
                    .filter(|(_, h)| h.is_finished())
                    .map(|(t, _)| t.clone())
                    .collect();
                for t in done {
                    let Some(h) = running.remove(&t) else { continue };
                    match h.await {
                        Ok(Ok(n)) => tracing::info!(topic = %t, messages = n, "done"),
                        Ok(Err(e)) => {
                            tracing::error!(topic = %t, "{e:#}");
                            first_err.get_or_insert(e.context(format!("topic {t}")));
                        }
                        Err(e) => {
                            first_err.get_or_insert(anyhow::anyhow!("topic {t}: {e}"));
                        }
                    }
                }
                if first_err.is_some() || (args.exit_at_end && running.is_empty()) {
                    break;
                }
                if running.is_empty() && pattern.is_none() {
                    break;
                }
            }
        }
    }
    stop.store(true, Ordering::Release);
    for (t, h) in running {
        match h.await {
            Ok(Ok(n)) => tracing::info!(topic = %t, messages = n, "done"),
            Ok(Err(e)) => {
                first_err.get_or_insert(e.context(format!("topic {t}")));
            }
            Err(e) => {
                first_err.get_or_insert(anyhow::anyhow!("topic {t}: {e}"));
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
