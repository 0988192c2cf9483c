//! nsq_inspect: look inside an nsqd data directory, stopped or while nsqd writes it.
//!
//! ```text
//! nsq_inspect --data-path DIR topics                       topics, channels, cursors, depth
//! nsq_inspect --data-path DIR segments --topic T           segments: size, records, first/last seq
//! nsq_inspect --data-path DIR verify [--topic T]           check every CRC; exit 1 on corruption
//! nsq_inspect --data-path DIR dump --topic T [--from N] [--to N] [--format text|json]
//! nsq_inspect --data-path DIR export --topic T --output FILE   bodies, one per line (offline nsq_to_file)
//! nsq_inspect --data-path DIR replay --topic T [--from X] [--to Y] [--output FILE] [--format text|json|body]
//!     a retained range, X and Y each earliest, latest, seq:N, unix ms or RFC 3339 time
//! ```

use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use engine::reader::DataDir;
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Parser, Debug)]
#[command(
    name = "nsq_inspect",
    about = "Inspect an nsqd data directory directly"
)]
struct Args {
    /// nsqd's --data-path
    #[arg(long = "data-path", default_value = ".")]
    data_path: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// list topics with their channels, cursor positions and depth
    Topics,
    /// every channel's position and how far behind it is: messages, bytes (~ whole
    /// segments) and time (age of its oldest unfinished message)
    Cursors {
        #[arg(long)]
        topic: Option<String>,
    },
    /// list a topic's segment files
    Segments {
        #[arg(long)]
        topic: String,
    },
    /// verify every record's CRC (all topics unless --topic)
    Verify {
        #[arg(long)]
        topic: Option<String>,
    },
    /// print records
    Dump {
        #[arg(long)]
        topic: String,
        #[arg(long, default_value_t = 0)]
        from: u64,
        #[arg(long, default_value_t = u64::MAX)]
        to: u64,
        #[arg(long, default_value = "text", value_parser = ["text", "json"])]
        format: String,
    },
    /// write message bodies, one per line, straight from the segments
    Export {
        #[arg(long)]
        topic: String,
        #[arg(long)]
        output: PathBuf,
        #[arg(long, default_value_t = 0)]
        from: u64,
        #[arg(long, default_value_t = u64::MAX)]
        to: u64,
    },
    /// print or export the messages of a retained range (by time or sequence): messages
    /// published from --from (included) to --to (excluded); copies targeted at one channel
    /// (relocated or imported) are left out, as they are not new messages
    Replay {
        #[arg(long)]
        topic: String,
        /// earliest, latest, seq:N, unix milliseconds or an RFC 3339 time
        #[arg(long, default_value = "earliest")]
        from: String,
        /// earliest, latest, seq:N, unix milliseconds or an RFC 3339 time (excluded)
        #[arg(long, default_value = "latest")]
        to: String,
        /// write the bodies, one per line, to this file (complete or not at all) instead
        /// of printing
        #[arg(long)]
        output: Option<PathBuf>,
        #[arg(long, default_value = "text", value_parser = ["text", "json", "body"])]
        format: String,
    },
}

/// A bound of `replay`: as `/channel/rewind`'s `to=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bound {
    Earliest,
    Latest,
    Seq(u64),
    TimeNs(i64),
}

fn parse_bound(s: &str) -> Result<Bound> {
    match s {
        "earliest" => return Ok(Bound::Earliest),
        "latest" => return Ok(Bound::Latest),
        _ => {}
    }
    if let Some(n) = s.strip_prefix("seq:") {
        return n
            .parse()
            .map(Bound::Seq)
            .with_context(|| format!("bad sequence in {s:?}"));
    }
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        let ms: i64 = s.parse().with_context(|| format!("bad time {s:?}"))?;
        return ms
            .checked_mul(1_000_000)
            .map(Bound::TimeNs)
            .with_context(|| format!("time {s:?} out of range"));
    }
    let t = chrono::DateTime::parse_from_rfc3339(s).with_context(|| {
        format!("{s:?} is not earliest, latest, seq:N, unix milliseconds or an RFC 3339 time")
    })?;
    t.timestamp_nanos_opt()
        .map(Bound::TimeNs)
        .with_context(|| format!("time {s:?} out of range"))
}

/// Is a record at `seq` published at `ts` at or after this bound?
fn at_or_after(b: Bound, seq: u64, ts: i64) -> bool {
    match b {
        Bound::Earliest => true,
        Bound::Latest => false,
        Bound::Seq(n) => seq >= n,
        Bound::TimeNs(t) => ts >= t,
    }
}

fn write_record(
    w: &mut impl Write,
    r: &engine::log::StoredRecord,
    format: &str,
) -> std::io::Result<()> {
    let h = &r.header;
    match format {
        "json" => {
            let v = serde_json::json!({
                "seq": h.seq,
                "id": String::from_utf8_lossy(&h.id),
                "timestamp_ns": h.timestamp_ns,
                "deliver_at_ms": h.deliver_at_ms,
                "attempts": h.attempts,
                "target": h.target,
                "body": String::from_utf8_lossy(&r.body),
            });
            writeln!(w, "{v}")
        }
        "body" => {
            w.write_all(&r.body)?;
            w.write_all(b"\n")
        }
        _ => writeln!(
            w,
            "{} {} ts={} attempts={}{} {}",
            h.seq,
            String::from_utf8_lossy(&h.id),
            h.timestamp_ns,
            h.attempts,
            if h.deliver_at_ms > 0 {
                format!(" deliver_at_ms={}", h.deliver_at_ms)
            } else {
                String::new()
            },
            String::from_utf8_lossy(&r.body)
        ),
    }
}

fn main() {
    match run() {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("nsq_inspect: {e:#}");
            std::process::exit(2);
        }
    }
}

fn run() -> Result<i32> {
    let args: Args = nsq_tools::parse_args();
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        let _ = ctrlc_flag(stop);
    }
    let dir = DataDir::open(&args.data_path)
        .with_context(|| format!("{} is not an nsqd data directory", args.data_path.display()))?;
    match args.cmd {
        Cmd::Topics => {
            for t in dir.topics()? {
                let segs = dir.segments(&t, |_| {})?;
                let records: u64 = segs.iter().map(|s| s.records).sum();
                let bytes: u64 = segs.iter().map(|s| s.used_bytes).sum();
                let last = segs.iter().filter_map(|s| s.last_seq).max();
                let end = last.map(|l| l + 1).unwrap_or(0);
                println!(
                    "{}  segments={} records={} bytes={} next_seq={}",
                    t.name,
                    segs.len(),
                    records,
                    bytes,
                    end
                );
                for c in dir.cursors(&t)? {
                    println!(
                        "    {}  read={} ack_floor={} unfinished={} depth~={}{}",
                        c.channel,
                        c.read,
                        c.ack_floor,
                        c.unacked_count(),
                        end.saturating_sub(c.read) + c.unacked_count(),
                        if c.paused { " paused" } else { "" }
                    );
                }
                print_external_readers(&t.path, end);
            }
            Ok(0)
        }
        Cmd::Cursors { topic } => {
            let topics = match topic {
                Some(t) => vec![dir.topic(&t)?],
                None => dir.topics()?,
            };
            let now_ns = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as i64);
            for t in topics {
                let segs = dir.segments(&t, |_| {})?;
                let end = segs
                    .iter()
                    .filter_map(|s| s.last_seq)
                    .max()
                    .map_or(0, |l| l + 1);
                println!("{}  next_seq={end}", t.name);
                for c in dir.cursors(&t)? {
                    let lag_msgs = end.saturating_sub(c.read) + c.unacked_count();
                    let lag_bytes: u64 = segs
                        .iter()
                        .filter(|s| s.last_seq.is_some_and(|l| l >= c.ack_floor))
                        .map(|s| s.used_bytes)
                        .sum();
                    let mut oldest = None;
                    dir.records(&t, c.ack_floor, u64::MAX, |r| {
                        oldest = Some(r.header.timestamp_ns);
                        false
                    })?;
                    let age = match oldest {
                        Some(ts) if lag_msgs > 0 => {
                            format!("{:.1}s", (now_ns - ts).max(0) as f64 / 1e9)
                        }
                        _ => "-".into(),
                    };
                    println!(
                        "    {}  read={} ack_floor={} unfinished={} lag_messages={} lag_bytes~={} lag_time={}{}",
                        c.channel,
                        c.read,
                        c.ack_floor,
                        c.unacked_count(),
                        lag_msgs,
                        lag_bytes,
                        age,
                        if c.paused { " paused" } else { "" }
                    );
                }
                print_external_readers(&t.path, end);
            }
            Ok(0)
        }
        Cmd::Segments { topic } => {
            let t = dir.topic(&topic)?;
            for s in dir.segments(&t, |_| {})? {
                println!(
                    "{}  size={} used={} records={} first_seq={} last_seq={} corrupt={}",
                    s.path.display(),
                    s.file_size,
                    s.used_bytes,
                    s.records,
                    s.first_seq,
                    s.last_seq
                        .map(|v| v.to_string())
                        .unwrap_or_else(|| "-".into()),
                    s.corrupt.len()
                );
            }
            Ok(0)
        }
        Cmd::Verify { topic } => {
            let topics = match topic {
                Some(t) => vec![dir.topic(&t)?],
                None => dir.topics()?,
            };
            let mut total_bytes = 0u64;
            for t in &topics {
                for (_, p) in dir.segment_paths(t)? {
                    total_bytes += std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
                }
            }
            let bar = ProgressBar::new(total_bytes);
            bar.set_style(
                ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            if total_bytes < 64 << 20 {
                bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
            }
            let mut bad = 0usize;
            let mut records = 0u64;
            let mut base = 0u64;
            for t in &topics {
                bar.set_message(t.name.clone());
                let segs = dir.segments(t, |done| bar.set_position(base + done))?;
                for s in &segs {
                    base += s.file_size;
                    records += s.records;
                    for c in &s.corrupt {
                        bad += 1;
                        bar.suspend(|| {
                            println!(
                                "CORRUPT topic={} segment={} offset={} reason={}",
                                t.name,
                                c.path.display(),
                                c.offset,
                                c.reason
                            )
                        });
                    }
                }
                if stop.load(Ordering::Acquire) {
                    break;
                }
            }
            bar.finish_and_clear();
            println!(
                "verified {} topics, {records} valid records, {bad} corrupt",
                topics.len()
            );
            Ok(if bad > 0 { 1 } else { 0 })
        }
        Cmd::Dump {
            topic,
            from,
            to,
            format,
        } => {
            let t = dir.topic(&topic)?;
            let out = std::io::stdout();
            let mut w = BufWriter::new(out.lock());
            let mut err = None;
            dir.records(&t, from, to, |r| {
                let res = write_record(&mut w, r, &format);
                if let Err(e) = res {
                    err = Some(e);
                    return false;
                }
                !stop.load(Ordering::Acquire)
            })?;
            match err {
                Some(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(0),
                Some(e) => Err(e.into()),
                None => {
                    w.flush()?;
                    Ok(0)
                }
            }
        }
        Cmd::Replay {
            topic,
            from,
            to,
            output,
            format,
        } => {
            let from = parse_bound(&from).context("--from")?;
            let to = parse_bound(&to).context("--to")?;
            let t = dir.topic(&topic)?;
            let start_seq = match from {
                Bound::Seq(n) => n,
                _ => 0,
            };
            let end_seq = match to {
                Bound::Seq(n) => n,
                _ => u64::MAX,
            };
            let (tmp, mut w): (Option<PathBuf>, Box<dyn Write>) = match &output {
                Some(out) => {
                    let mut name = out.clone().into_os_string();
                    name.push(".partial");
                    let tmp = PathBuf::from(name);
                    let f = std::fs::File::create(&tmp)
                        .with_context(|| format!("create {}", tmp.display()))?;
                    (Some(tmp), Box::new(BufWriter::new(f)))
                }
                None => (None, Box::new(BufWriter::new(std::io::stdout().lock()))),
            };
            let format = if output.is_some() {
                "body"
            } else {
                format.as_str()
            };
            let mut n = 0u64;
            let mut err = None;
            if from != Bound::Latest {
                dir.records(&t, start_seq, end_seq, |r| {
                    let (seq, ts) = (r.header.seq, r.header.timestamp_ns);
                    if r.header.target != 0 || !at_or_after(from, seq, ts) {
                        return true;
                    }
                    if to != Bound::Latest && at_or_after(to, seq, ts) {
                        // In log order (as a rewind to a time): the range ends here.
                        return false;
                    }
                    if let Err(e) = write_record(&mut w, r, format) {
                        err = Some(e);
                        return false;
                    }
                    n += 1;
                    !stop.load(Ordering::Acquire)
                })?;
            }
            let flushed = w.flush();
            drop(w);
            let failed = err.map_or(flushed.err(), Some);
            match (tmp, output) {
                (Some(tmp), Some(out)) => {
                    if let Some(e) = failed {
                        let _ = std::fs::remove_file(&tmp);
                        return Err(e).with_context(|| format!("writing {}", tmp.display()));
                    }
                    if stop.load(Ordering::Acquire) {
                        let _ = std::fs::remove_file(&tmp);
                        eprintln!("nsq_inspect: interrupted; {} not written", out.display());
                        return Ok(1);
                    }
                    std::fs::File::open(&tmp)?.sync_all()?;
                    std::fs::rename(&tmp, &out)?;
                    eprintln!("replayed {n} messages to {}", out.display());
                    Ok(0)
                }
                _ => match failed {
                    Some(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(0),
                    Some(e) => Err(e.into()),
                    None => Ok(0),
                },
            }
        }
        Cmd::Export {
            topic,
            output,
            from,
            to,
        } => {
            let t = dir.topic(&topic)?;
            // Corrupt records are skipped by the reader: find them first, so the export
            // can say so instead of silently writing fewer messages.
            let segs = dir.segments(&t, |_| {})?;
            let mut corrupt = 0usize;
            for (i, seg) in segs.iter().enumerate() {
                let next_first = segs.get(i + 1).map_or(u64::MAX, |n| n.first_seq);
                if seg.first_seq > to || next_first <= from {
                    continue;
                }
                for c in &seg.corrupt {
                    corrupt += 1;
                    eprintln!(
                        "nsq_inspect: WARNING: corrupt record skipped: topic={} segment={} offset={} reason={}",
                        t.name,
                        c.path.display(),
                        c.offset,
                        c.reason
                    );
                }
            }
            let mut tmp_name = output.clone().into_os_string();
            tmp_name.push(".partial");
            let tmp = PathBuf::from(tmp_name);
            let f =
                std::fs::File::create(&tmp).with_context(|| format!("create {}", tmp.display()))?;
            let mut w = BufWriter::new(f);
            let mut n = 0u64;
            let mut err = None;
            dir.records(&t, from, to, |r| {
                if let Err(e) = w.write_all(&r.body).and_then(|_| w.write_all(b"\n")) {
                    err = Some(e);
                    return false;
                }
                n += 1;
                !stop.load(Ordering::Acquire)
            })?;
            if let Some(e) = err {
                let _ = std::fs::remove_file(&tmp);
                return Err(e.into());
            }
            let f = w.into_inner().map_err(|e| e.into_error())?;
            f.sync_all()?;
            // Only a complete export gets the final name.
            if stop.load(Ordering::Acquire) {
                let _ = std::fs::remove_file(&tmp);
                eprintln!(
                    "nsq_inspect: interrupted after {n} messages; {} not written",
                    output.display()
                );
                return Ok(1);
            }
            if corrupt > 0 {
                eprintln!(
                    "nsq_inspect: {corrupt} corrupt record(s) skipped; the {n} readable messages are in {} ({} not written)",
                    tmp.display(),
                    output.display()
                );
                return Ok(1);
            }
            std::fs::rename(&tmp, &output)?;
            eprintln!("exported {n} messages to {}", output.display());
            Ok(0)
        }
    }
}

/// External readers of a topic (nsq_to_file --data-path), from their cursor files.
fn print_external_readers(topic_dir: &std::path::Path, end: u64) {
    let ext = engine::external::scan_cursors(topic_dir);
    for r in &ext.cursors {
        println!(
            "    {}  external reader next={} lag_messages~={}",
            r.reader,
            r.next,
            end.saturating_sub(r.next)
        );
    }
    for (path, why) in &ext.damaged {
        println!(
            "    DAMAGED external reader cursor {}: {why}",
            path.display()
        );
    }
}

/// Set `flag` on SIGINT/SIGTERM so long scans stop cleanly.
fn ctrlc_flag(flag: Arc<AtomicBool>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(_) => return,
            };
            rt.block_on(async {
                use tokio::signal::unix::{signal, SignalKind};
                if let (Ok(mut a), Ok(mut b)) = (
                    signal(SignalKind::interrupt()),
                    signal(SignalKind::terminate()),
                ) {
                    tokio::select! { _ = a.recv() => {}, _ = b.recv() => {} }
                    flag.store(true, Ordering::Release);
                }
            });
        })?;
    Ok(())
}
