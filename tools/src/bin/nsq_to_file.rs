//! nsq_to_file: archive topics to newline-delimited files (NSQ's flags).
//!
//! Each message is written as its body plus `\n`. A message is FINed only once its line has
//! reached the operating system (and, with `--sync-every`, the disk), so killing this
//! process loses nothing: unFINed messages are redelivered by nsqd.
//!
//! Files are written in `--work-dir` as `<name>.part` and renamed to `<name>` in
//! `--output-dir` when complete (rotation or shutdown). On start, `.part` files a killed
//! run left behind are completed and moved into place first (a torn last line or gzip
//! block is cut off: those messages were never FINed and come again).
//!
//! Rotation: when `<DATETIME>` changes, past `--rotate-size` bytes (uncompressed), or after
//! `--rotate-interval`. SIGHUP completes the current files (moved into place) and the next
//! messages go to new ones, so logrotate works as with NSQ's nsq_to_file.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::Parser;
use client::{Consumer, Outcome};
use flate2::write::GzEncoder;
use nsq_tools::{init_logging_with_prefix, parse_args, parse_duration, shutdown_signal, Source};
use tokio::sync::oneshot;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "nsq_to_file",
    version,
    about = "Write the messages of NSQ topics to rotating files"
)]
struct Args {
    /// nsq channel
    #[arg(long, default_value = "nsq_to_file")]
    channel: String,
    /// nsq topic (may be given multiple times)
    #[arg(long)]
    topic: Vec<String>,
    /// archive every topic matching this regular expression (needs --lookupd-http-address)
    #[arg(long = "topic-pattern")]
    topic_pattern: Option<String>,
    /// how frequently the topic list is refreshed
    #[arg(long = "topic-refresh", value_parser = parse_duration, default_value = "1m")]
    topic_refresh: Duration,
    /// directory to write output files to
    #[arg(long = "output-dir", default_value = "/tmp")]
    output_dir: PathBuf,
    /// directory for in-progress files before moving to output-dir (default: output-dir)
    #[arg(long = "work-dir")]
    work_dir: Option<PathBuf>,
    /// output filename format (<TOPIC>, <HOST>, <PID>, <DATETIME>, <REV> are replaced;
    /// <REV> is increased when the file already exists)
    #[arg(
        long = "filename-format",
        default_value = "<TOPIC>.<HOST><REV>.<DATETIME>.log"
    )]
    filename_format: String,
    /// strftime compatible format for <DATETIME> in filename format
    #[arg(long = "datetime-format", default_value = "%Y-%m-%d_%H")]
    datetime_format: String,
    /// value to output in log filename in place of hostname (<SHORT_HOST> and <HOSTNAME>
    /// are valid replacement tokens)
    #[arg(long = "host-identifier")]
    host_identifier: Option<String>,
    /// gzip output files
    #[arg(long)]
    gzip: bool,
    /// gzip compression level (1-9, 1=BestSpeed, 9=BestCompression)
    #[arg(long = "gzip-level", default_value_t = 6)]
    gzip_level: u32,
    /// rotate the file when it grows bigger than this many bytes (before compression)
    #[arg(long = "rotate-size", default_value_t = 0)]
    rotate_size: u64,
    /// rotate the file every duration
    #[arg(long = "rotate-interval", value_parser = parse_duration)]
    rotate_interval: Option<Duration>,
    /// sync file to disk every duration
    #[arg(long = "sync-interval", value_parser = parse_duration, default_value = "30s")]
    sync_interval: Duration,
    /// also fsync after every N messages (at most --max-in-flight at a time, and at least
    /// once a second), and FIN messages only once they are synced (0: FIN once written to
    /// the operating system)
    #[arg(long = "sync-every", default_value_t = 0)]
    sync_every: u64,
    /// skip writing empty files (always true here: files are created by their first message)
    #[arg(long = "skip-empty-files")]
    skip_empty_files: bool,
    /// set log verbosity: debug, info, warn, error, or fatal
    #[arg(long = "log-level", default_value = "info")]
    log_level: String,
    /// log message prefix
    #[arg(long = "log-prefix", default_value = "[nsq_to_file] ")]
    log_prefix: String,
    #[command(flatten)]
    source: Source,
}

/// What file names and writing need, fixed at start.
struct Settings {
    output_dir: PathBuf,
    work_dir: PathBuf,
    filename_format: String,
    datetime_format: String,
    host: String,
    gzip: Option<u32>,
    rotate_size: u64,
    rotate_interval: Option<Duration>,
    sync_interval: Duration,
    sync_every: u64,
    /// NSQ numbers files (`<REV>` = `-000000`, `-000001`, ...) when gzip, rotation or a
    /// separate work directory is used; otherwise `<REV>` is empty and a file of the same
    /// period is appended to (also after a restart).
    numbered: bool,
}

impl Settings {
    fn from_args(a: &Args) -> Result<Settings> {
        use chrono::format::{Item, StrftimeItems};
        if StrftimeItems::new(&a.datetime_format).any(|i| matches!(i, Item::Error)) {
            bail!("invalid --datetime-format {:?}", a.datetime_format);
        }
        // `/` makes subdirectories (as in NSQ); the names stay inside --output-dir.
        if a.filename_format.starts_with('/')
            || a.filename_format
                .split('/')
                .any(|c| c == ".." || c.is_empty())
        {
            bail!("--filename-format must be a relative path without '..' or empty parts");
        }
        if (a.rotate_size > 0 || a.rotate_interval.is_some())
            && !a.filename_format.contains("<REV>")
        {
            bail!("--filename-format must contain <REV> to rotate by size or interval");
        }
        if !(1..=9).contains(&a.gzip_level) {
            bail!("--gzip-level must be 1-9");
        }
        let hostname = hostname::get()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "localhost".into());
        let short = hostname
            .split('.')
            .next()
            .unwrap_or("localhost")
            .to_string();
        let host = match &a.host_identifier {
            Some(h) => h
                .replace("<SHORT_HOST>", &short)
                .replace("<HOSTNAME>", &hostname),
            None => short,
        };
        let work_dir = a.work_dir.clone().unwrap_or_else(|| a.output_dir.clone());
        for d in [&a.output_dir, &work_dir] {
            fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        let numbered =
            a.gzip || a.rotate_size > 0 || a.rotate_interval.is_some() || work_dir != a.output_dir;
        Ok(Settings {
            numbered,
            output_dir: a.output_dir.clone(),
            work_dir,
            filename_format: a.filename_format.clone(),
            datetime_format: a.datetime_format.clone(),
            host,
            gzip: a.gzip.then_some(a.gzip_level),
            rotate_size: a.rotate_size,
            rotate_interval: a.rotate_interval,
            sync_interval: a.sync_interval,
            // Never wait for more messages than can be in flight at once.
            sync_every: a.sync_every.min(u64::from(a.source.max_in_flight.max(1))),
        })
    }

    fn datetime(&self) -> String {
        chrono::Local::now()
            .format(&self.datetime_format)
            .to_string()
    }

    fn file_name(&self, topic: &str, datetime: &str, rev: u32) -> String {
        let rev = if self.numbered {
            format!("-{rev:06}")
        } else {
            String::new()
        };
        let mut name = self
            .filename_format
            .replace("<TOPIC>", topic)
            .replace("<HOST>", &self.host)
            .replace("<PID>", &std::process::id().to_string())
            .replace("<DATETIME>", datetime)
            .replace("<REV>", &rev);
        if self.gzip.is_some() && !name.ends_with(".gz") {
            name.push_str(".gz");
        }
        name
    }
}

enum Out {
    Plain(BufWriter<File>),
    Gz(GzEncoder<BufWriter<File>>),
}

impl Out {
    fn write_all(&mut self, b: &[u8]) -> std::io::Result<()> {
        match self {
            Out::Plain(w) => w.write_all(b),
            Out::Gz(w) => w.write_all(b),
        }
    }

    /// Push everything written so far to the operating system (a gzip sync flush).
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Out::Plain(w) => w.flush(),
            Out::Gz(w) => w.flush(),
        }
    }

    fn file(&self) -> &File {
        match self {
            Out::Plain(w) => w.get_ref(),
            Out::Gz(w) => w.get_ref().get_ref(),
        }
    }

    fn finish(self) -> std::io::Result<File> {
        let w = match self {
            Out::Plain(w) => w,
            Out::Gz(w) => w.finish()?,
        };
        w.into_inner().map_err(|e| e.into_error())
    }
}

struct OpenFile {
    name: String,
    part: PathBuf,
    out: Out,
    opened: Instant,
    datetime: String,
    bytes: u64,
}

type Done = oneshot::Sender<Result<(), String>>;

enum Cmd {
    Write(Bytes, Done),
    /// SIGHUP (logrotate's convention): complete the current file; the next message opens
    /// a new one.
    Reopen,
    Close,
}

/// One topic's file writer, on its own thread (file IO is blocking).
struct TopicWriter {
    topic: String,
    s: Arc<Settings>,
    cur: Option<OpenFile>,
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
                        self.reopen();
                    }
                }
                Ok(Cmd::Reopen) => self.reopen(),
                Ok(Cmd::Close) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            self.periodic();
        }
        if let Err(e) = self.close_file() {
            tracing::error!(topic = %self.topic, "closing file: {e:#}");
        }
        tracing::info!(topic = %self.topic, messages = self.written, "writer stopped");
    }

    fn write_batch(&mut self, batch: Vec<(Bytes, Done)>) {
        let n = batch.len();
        let mut acks = Vec::with_capacity(n);
        let mut result = Ok(());
        for (body, done) in batch {
            if result.is_ok() {
                result = self.write_one(&body);
            }
            acks.push(done);
        }
        if result.is_ok() {
            if let Some(f) = self.cur.as_mut() {
                result = f.out.flush().context("flush");
            }
        }
        match result {
            Ok(()) => {
                self.written += n as u64;
                if self.s.sync_every > 0 {
                    self.unsynced.extend(acks);
                    if self.unsynced.len() as u64 >= self.s.sync_every {
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
                if let Some(f) = self.cur.take() {
                    let _ = finalize(&self.s, f);
                }
            }
        }
    }

    fn write_one(&mut self, body: &[u8]) -> Result<()> {
        let now_dt = self.s.datetime();
        let rotate = match &self.cur {
            None => false,
            Some(f) => {
                f.datetime != now_dt
                    || (self.s.rotate_size > 0 && f.bytes >= self.s.rotate_size)
                    || self
                        .s
                        .rotate_interval
                        .is_some_and(|i| f.opened.elapsed() >= i)
            }
        };
        if rotate {
            self.close_file()?;
        }
        if self.cur.is_none() {
            self.cur = Some(open_file(&self.s, &self.topic, &now_dt)?);
        }
        let Some(f) = self.cur.as_mut() else {
            bail!("no open file");
        };
        f.out.write_all(body)?;
        f.out.write_all(b"\n")?;
        f.bytes += body.len() as u64 + 1;
        Ok(())
    }

    /// fsync and acknowledge what waited for it.
    fn sync(&mut self) {
        let r = match self.cur.as_mut() {
            Some(f) => f.out.flush().and_then(|_| f.out.file().sync_data()),
            None => Ok(()),
        };
        self.last_sync = Instant::now();
        let r = r.map_err(|e| e.to_string());
        for a in self.unsynced.drain(..) {
            let _ = a.send(r.clone());
        }
    }

    fn periodic(&mut self) {
        if self.last_sync.elapsed() >= self.s.sync_interval
            || (!self.unsynced.is_empty() && self.last_sync.elapsed() >= Duration::from_secs(1))
        {
            self.sync();
        }
        let expired = self.cur.as_ref().is_some_and(|f| {
            self.s
                .rotate_interval
                .is_some_and(|i| f.opened.elapsed() >= i)
                || f.datetime != self.s.datetime()
        });
        if expired {
            if let Err(e) = self.close_file() {
                tracing::error!(topic = %self.topic, "rotating: {e:#}");
            }
        }
        if self.last_report.elapsed() >= Duration::from_secs(10) {
            self.last_report = Instant::now();
            tracing::info!(
                topic = %self.topic,
                messages = self.written,
                file = self.cur.as_ref().map(|f| f.name.as_str()).unwrap_or("-"),
                "progress"
            );
        }
    }

    fn reopen(&mut self) {
        if let Err(e) = self.close_file() {
            tracing::error!(topic = %self.topic, "closing file on SIGHUP: {e:#}");
        }
    }

    /// Complete the current file (fsynced) and move it into the output directory; then
    /// acknowledge messages that waited for a sync.
    fn close_file(&mut self) -> Result<()> {
        let r = match self.cur.take() {
            Some(f) => finalize(&self.s, f),
            None => Ok(()),
        };
        let ack = r.as_ref().map(|_| ()).map_err(|e| format!("{e:#}"));
        for a in self.unsynced.drain(..) {
            let _ = a.send(ack.clone());
        }
        r
    }
}

fn open_file(s: &Settings, topic: &str, datetime: &str) -> Result<OpenFile> {
    let mut rev = 0;
    let name = loop {
        let name = s.file_name(topic, datetime, rev);
        let taken =
            s.output_dir.join(&name).exists() || s.work_dir.join(format!("{name}.part")).exists();
        if !taken || !s.numbered || !s.filename_format.contains("<REV>") {
            break name;
        }
        rev += 1;
    };
    if name.split('/').any(|c| c == ".." || c == ".") {
        bail!("file name {name:?} would leave the output directory");
    }
    let part = s.work_dir.join(format!("{name}.part"));
    if let Some(dir) = part.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&part)
        .with_context(|| format!("opening {}", part.display()))?;
    let w = BufWriter::with_capacity(256 * 1024, file);
    let out = match s.gzip {
        Some(level) => Out::Gz(GzEncoder::new(w, flate2::Compression::new(level))),
        None => Out::Plain(w),
    };
    tracing::info!(file = %part.display(), "opened");
    Ok(OpenFile {
        name,
        part,
        out,
        opened: Instant::now(),
        datetime: datetime.to_string(),
        bytes: 0,
    })
}

/// Finish, fsync and move a `.part` file into place. If the target exists (a format
/// without <REV>), the new data is appended to it (gzip members concatenate validly).
fn finalize(s: &Settings, f: OpenFile) -> Result<()> {
    let file = f.out.finish().context("finishing file")?;
    file.sync_all().context("fsync")?;
    drop(file);
    place(&f.part, &s.output_dir.join(&f.name))?;
    tracing::info!(file = %s.output_dir.join(&f.name).display(), "closed");
    Ok(())
}

fn place(part: &Path, target: &Path) -> Result<()> {
    if let Some(dir) = target.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if target.exists() {
        let mut src = File::open(part)?;
        let mut dst = OpenOptions::new().append(true).open(target)?;
        std::io::copy(&mut src, &mut dst)?;
        dst.sync_all()?;
        fs::remove_file(part)?;
    } else {
        fs::rename(part, target)
            .with_context(|| format!("moving {} to {}", part.display(), target.display()))?;
    }
    if let Some(dir) = target.parent() {
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// Complete `.part` files left by a run that was killed, and move them into place.
/// Every `.part` file under `dir` (subdirectories come from `/` in --filename-format).
fn part_files(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    for e in entries {
        let e = e?;
        let path = e.path();
        if e.file_type()?.is_dir() {
            if depth < 16 {
                part_files(&path, depth + 1, out)?;
            }
        } else if path.extension().is_some_and(|x| x == "part") {
            out.push(path);
        }
    }
    Ok(())
}

fn recover(s: &Settings) -> Result<usize> {
    let mut n = 0;
    let mut parts = Vec::new();
    part_files(&s.work_dir, 0, &mut parts)?;
    for path in parts {
        let Some(rel) = path.strip_prefix(&s.work_dir).ok().and_then(|r| r.to_str()) else {
            continue;
        };
        let Some(final_name) = rel.strip_suffix(".part") else {
            continue;
        };
        let target = s.output_dir.join(final_name);
        if final_name.ends_with(".gz") {
            // Keep what decompresses; rewrite it as a complete gzip file.
            let mut data = Vec::new();
            let mut dec = flate2::read::MultiGzDecoder::new(File::open(&path)?);
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match dec.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(k) => data.extend_from_slice(&buf[..k]),
                }
            }
            cut_torn_line(&mut data);
            let tmp = path.with_extension("recovering");
            let mut enc = GzEncoder::new(File::create(&tmp)?, flate2::Compression::default());
            enc.write_all(&data)?;
            enc.finish()?.sync_all()?;
            fs::remove_file(&path)?;
            place(&tmp, &target)?;
        } else {
            let mut data = fs::read(&path)?;
            let len = data.len();
            cut_torn_line(&mut data);
            if data.len() != len {
                fs::write(&path, &data)?;
            }
            File::open(&path)?.sync_all()?;
            place(&path, &target)?;
        }
        tracing::info!(file = %target.display(), "recovered an unfinished file");
        n += 1;
    }
    Ok(n)
}

/// A line without its newline was being written when the process died; its message was not
/// FINed, so it is dropped here and comes again.
fn cut_torn_line(data: &mut Vec<u8>) {
    let keep = data.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    data.truncate(keep);
}

struct Running {
    consumer: Consumer,
    tx: mpsc::Sender<Cmd>,
    thread: std::thread::JoinHandle<()>,
}

fn start_topic(args: &Args, s: &Arc<Settings>, topic: &str) -> Result<Running> {
    let (tx, rx) = mpsc::channel();
    let writer = TopicWriter {
        topic: topic.to_string(),
        s: s.clone(),
        cur: None,
        unsynced: Vec::new(),
        last_sync: Instant::now(),
        written: 0,
        last_report: Instant::now(),
    };
    let thread = std::thread::Builder::new()
        .name(format!("write-{topic}"))
        .spawn(move || writer.run(rx))?;
    let mut config = args.source.config()?;
    config.concurrency = config.max_in_flight as usize;
    let htx = tx.clone();
    let consumer = Consumer::new(topic, &args.channel, config, move |m| {
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

async fn lookupd_topics(http: &reqwest::Client, lookupd: &[String]) -> Vec<String> {
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

#[tokio::main]
async fn main() {
    let args: Args = parse_args();
    init_logging_with_prefix(&args.log_level, &args.log_prefix);
    nsq_tools::exit_on_error("nsq_to_file", run(args).await);
}

async fn run(args: Args) -> Result<()> {
    args.source.check()?;
    if args.topic.is_empty() == args.topic_pattern.is_none() {
        bail!("give --topic (one or more) or --topic-pattern");
    }
    let pattern = match &args.topic_pattern {
        Some(p) => {
            if args.source.lookupd_http_address.is_empty() {
                bail!("--topic-pattern needs --lookupd-http-address");
            }
            Some(regex::Regex::new(p).context("invalid --topic-pattern")?)
        }
        None => None,
    };
    for t in &args.topic {
        if !protocol::names::is_valid_topic_name(t) {
            bail!("invalid --topic {t:?}");
        }
    }
    if !protocol::names::is_valid_channel_name(&args.channel) {
        bail!("invalid --channel {:?}", args.channel);
    }
    let s = Arc::new(Settings::from_args(&args)?);
    let recovered = recover(&s)?;
    if recovered > 0 {
        tracing::info!(recovered, "completed files left by an earlier run");
    }
    let mut running: HashMap<String, Running> = HashMap::new();
    for t in &args.topic {
        let r = start_topic(&args, &s, t)?;
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
                for t in lookupd_topics(&http, &args.source.lookupd_http_address).await {
                    if re.is_match(&t) && !running.contains_key(&t) {
                        tracing::info!(topic = %t, "archiving a new topic");
                        let r = start_topic(&args, &s, &t)?;
                        args.source.connect(&r.consumer).await?;
                        running.insert(t, r);
                    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(dir: &Path, gzip: bool) -> Settings {
        Settings {
            output_dir: dir.join("out"),
            work_dir: dir.join("work"),
            filename_format: "<TOPIC>.<HOST><REV>.<DATETIME>.log".into(),
            datetime_format: "%Y".into(),
            host: "h".into(),
            gzip: gzip.then_some(6),
            rotate_size: 0,
            rotate_interval: None,
            sync_interval: Duration::from_secs(30),
            sync_every: 0,
            numbered: gzip,
        }
    }

    #[test]
    fn names_and_revisions() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), true);
        // gzip: numbered as NSQ does, so names sort in order.
        assert_eq!(s.file_name("t", "2026", 0), "t.h-000000.2026.log.gz");
        assert_eq!(s.file_name("t", "2026", 2), "t.h-000002.2026.log.gz");
        let plain = settings(dir.path(), false);
        assert_eq!(plain.file_name("t", "2026", 0), "t.h.2026.log");
    }

    #[test]
    fn torn_lines_are_cut_and_parts_recovered() {
        let mut v = b"a\nb\nc".to_vec();
        cut_torn_line(&mut v);
        assert_eq!(v, b"a\nb\n");
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), false);
        fs::create_dir_all(&s.work_dir).unwrap();
        fs::create_dir_all(&s.output_dir).unwrap();
        fs::write(s.work_dir.join("x.log.part"), b"one\ntwo\nthr").unwrap();
        // A gzip file cut short after a sync flush.
        let mut enc = GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(b"g1\ng2\n").unwrap();
        enc.flush().unwrap();
        let bytes = enc.get_ref().clone();
        fs::write(s.work_dir.join("y.log.gz.part"), bytes).unwrap();
        assert_eq!(recover(&s).unwrap(), 2);
        assert_eq!(fs::read(s.output_dir.join("x.log")).unwrap(), b"one\ntwo\n");
        let mut text = String::new();
        flate2::read::GzDecoder::new(File::open(s.output_dir.join("y.log.gz")).unwrap())
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "g1\ng2\n");
        assert!(fs::read_dir(&s.work_dir).unwrap().next().is_none());
    }
}
