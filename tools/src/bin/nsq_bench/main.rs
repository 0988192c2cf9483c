//! nsq_bench: load generator for any NSQ-compatible nsqd, following NSQ's own bench
//! procedure (bench/bench_writer and bench/bench_reader) so figures compare:
//!
//! - `writer`: `--concurrency` connections (default: number of cores), each sending MPUB
//!   batches of `--batch-size` messages of `--size` bytes and waiting for OK, for
//!   `--runfor`. Prints msgs/s, MB/s and the MPUB round-trip latency percentiles.
//!   `--count` stops after about that many messages.
//! - `reader`: `--concurrency` connections subscribed to one channel with RDY `--rdy`,
//!   FINishing every message, until `--runfor` passes or nothing arrives for `--idle`.
//!   Prints msgs/s and MB/s. `--channels N` (or a comma list) fans out: `--concurrency`
//!   connections on each of N channels, with per-channel and total rates.
//! - `latency`: fixed-rate publish and publish-to-receive percentiles (latency.rs).
//! - `startup`: time a server command to /ping, to the first message, and its shutdown
//!   (startup.rs).
//!
//! `--server-pid` (writer, reader, latency) samples the server's CPU time and resident
//! memory from /proc before and after the run (procstat.rs).
//!
//! Runs until done or SIGINT/SIGTERM, then prints what it measured so far.

mod latency;
mod procstat;
mod startup;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::{Bytes, BytesMut};
use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use protocol::v2::{self, Command};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Parser, Debug)]
#[command(
    name = "nsq_bench",
    about = "NSQ load generator (writer and reader modes)"
)]
struct Args {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Parser, Debug, Clone)]
struct Common {
    /// nsqd TCP address
    #[arg(
        long = "nsqd-tcp-address",
        alias = "tcp-address",
        default_value = "127.0.0.1:4150"
    )]
    addr: String,
    #[arg(long, default_value = "sub_bench")]
    topic: String,
    /// message size in bytes
    #[arg(long, default_value_t = 200)]
    size: usize,
    /// how long to run, in seconds (e.g. 10 or 10s)
    #[arg(long, default_value = "10s", value_parser = parse_secs)]
    runfor: Duration,
    /// connections (default: number of CPU cores, like NSQ's bench with GOMAXPROCS)
    #[arg(long)]
    concurrency: Option<usize>,
    #[command(flatten)]
    server: ServerWatch,
}

/// Sampling the server process from /proc.
#[derive(clap::Args, Debug, Clone)]
struct ServerWatch {
    /// nsqd's pid: print its CPU seconds (utime+stime), CPU us per message and RSS
    #[arg(long = "server-pid")]
    server_pid: Option<u32>,
    /// with --server-pid, sample VmRSS at this interval for the peak within the run (e.g. 100ms)
    #[arg(long = "sample-rss", value_parser = parse_secs)]
    sample_rss: Option<Duration>,
    /// with --server-pid, also print VmRSS this long after the end (e.g. 10s)
    #[arg(long = "rss-after", value_parser = parse_secs)]
    rss_after: Option<Duration>,
}

impl ServerWatch {
    fn start(&self) -> Result<Option<procstat::Watch>> {
        match self.server_pid {
            Some(pid) => Ok(Some(procstat::Watch::start(pid, self.sample_rss)?)),
            None => Ok(None),
        }
    }
}

fn finish_watch(w: Option<procstat::Watch>, msgs: u64, s: &ServerWatch) -> Result<()> {
    match w {
        Some(w) => w.finish(msgs, s.rss_after),
        None => Ok(()),
    }
}

#[derive(Subcommand, Debug)]
enum Mode {
    /// publish with MPUB
    Writer {
        #[command(flatten)]
        common: Common,
        /// messages per MPUB
        #[arg(long = "batch-size", default_value_t = 200)]
        batch_size: usize,
        /// stop after about this many messages (whole batches; --runfor still applies)
        #[arg(long)]
        count: Option<u64>,
    },
    /// consume one channel and FIN everything
    Reader {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value = "ch")]
        channel: String,
        #[arg(long, default_value_t = 2500)]
        rdy: u32,
        /// stop after this long without a message
        #[arg(long, default_value = "2s", value_parser = parse_secs)]
        idle: Duration,
        /// fan-out: a number N (channels <channel>0..<channel>N-1) or a comma list of names
        #[arg(long)]
        channels: Option<String>,
    },
    /// publish at a fixed rate and report publish-to-receive latency
    Latency {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value = "lat")]
        channel: String,
        /// messages per second
        #[arg(long, default_value_t = 20_000)]
        rate: u64,
        /// pacing interval: every tick sends all messages due by then in one MPUB
        #[arg(long, default_value = "1ms", value_parser = parse_secs)]
        tick: Duration,
        /// a message sent more than this after its due time counts as late
        #[arg(long, default_value = "5ms", value_parser = parse_secs)]
        late: Duration,
        /// after --runfor, wait at most this long for the rest to arrive
        #[arg(long, default_value = "10s", value_parser = parse_secs)]
        drain: Duration,
        #[arg(long, default_value_t = 2500)]
        rdy: u32,
    },
    /// start a server, time it to /ping and the first message, then stop it and time that
    Startup {
        /// the server's HTTP address (polled at /ping)
        #[arg(long = "http-address", default_value = "127.0.0.1:4151")]
        http: String,
        #[arg(long = "nsqd-tcp-address", default_value = "127.0.0.1:4150")]
        tcp: String,
        /// with --channel, also time the first message delivered from this topic
        #[arg(long)]
        topic: Option<String>,
        #[arg(long, default_value = "ch")]
        channel: String,
        /// after /ping, publish to this many topics (t00000, ...) before the stop
        #[arg(long = "populate-topics", default_value_t = 0)]
        populate_topics: usize,
        /// messages per populated topic
        #[arg(long = "populate-messages", default_value_t = 10)]
        populate_messages: usize,
        #[arg(long, default_value = "120s", value_parser = parse_secs)]
        timeout: Duration,
        #[arg(long, value_enum, default_value = "term")]
        stop: startup::Stop,
        /// the server's stdout and stderr go here (default: discarded)
        #[arg(long = "server-log")]
        server_log: Option<std::path::PathBuf>,
        /// the server command and its arguments, after --
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
}

/// The channels a reader subscribes to: `--channel` alone, `<channel>0..<channel>N-1`
/// for `--channels N`, or the names of `--channels a,b,c`.
fn channel_list(channel: &str, spec: Option<&str>) -> Result<Vec<String>> {
    let Some(spec) = spec.map(str::trim) else {
        return Ok(vec![channel.to_string()]);
    };
    if !spec.is_empty() && spec.bytes().all(|b| b.is_ascii_digit()) {
        let n: usize = spec
            .parse()
            .with_context(|| format!("--channels {spec:?}"))?;
        return match n {
            0 => bail!("--channels must be at least 1"),
            1 => Ok(vec![channel.to_string()]),
            n => Ok((0..n).map(|i| format!("{channel}{i}")).collect()),
        };
    }
    let names: Vec<String> = spec
        .split(',')
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty())
        .collect();
    if names.is_empty() {
        bail!("--channels {spec:?}: no channel names");
    }
    Ok(names)
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, mult) = if let Some(n) = t.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else {
        (t, 1.0)
    };
    let v: f64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
    if !(0.0..=86400.0 * 7.0).contains(&(v * mult)) {
        return Err(format!("duration out of range: {s:?}"));
    }
    Ok(Duration::from_secs_f64(v * mult))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Args = nsq_tools::parse_args();
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            if let (Ok(mut a), Ok(mut b)) = (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) {
                tokio::select! { _ = a.recv() => {}, _ = b.recv() => {} }
                stop.store(true, Ordering::Release);
            }
        });
    }
    match args.mode {
        Mode::Writer {
            common,
            batch_size,
            count,
        } => {
            let w = common.server.start()?;
            let n = writer(common.clone(), batch_size, count, stop).await?;
            finish_watch(w, n, &common.server)
        }
        Mode::Reader {
            common,
            channel,
            rdy,
            idle,
            channels,
        } => {
            let channels = channel_list(&channel, channels.as_deref())?;
            let w = common.server.start()?;
            let n = reader(common.clone(), channels, rdy, idle, stop).await?;
            finish_watch(w, n, &common.server)
        }
        Mode::Latency {
            common,
            channel,
            rate,
            tick,
            late,
            drain,
            rdy,
        } => {
            let w = common.server.start()?;
            let p = latency::Params {
                channel,
                rate,
                tick,
                late,
                drain,
                rdy,
            };
            let n = latency::run(common.clone(), p, stop).await?;
            finish_watch(w, n, &common.server)
        }
        Mode::Startup {
            http,
            tcp,
            topic,
            channel,
            populate_topics,
            populate_messages,
            timeout,
            stop,
            server_log,
            command,
        } => {
            startup::run(startup::Params {
                http,
                tcp,
                first_message: topic.map(|t| (t, channel)),
                populate_topics,
                populate_messages,
                timeout,
                stop,
                log: server_log,
                command,
            })
            .await
        }
    }
}

fn concurrency(c: &Common) -> usize {
    c.concurrency
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
        .max(1)
}

pub(crate) async fn connect(addr: &str) -> Result<TcpStream> {
    let mut s = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect {addr}"))?;
    s.set_nodelay(true)?;
    s.write_all(v2::MAGIC_V2).await?;
    Ok(s)
}

/// Read one frame, answering heartbeats.
pub(crate) async fn read_frame(s: &mut TcpStream, buf: &mut BytesMut) -> Result<v2::Frame> {
    loop {
        if let Some(f) = v2::parse_frame(buf, 64 << 20)? {
            if f.frame_type == v2::FRAME_TYPE_RESPONSE && f.data.as_ref() == b"_heartbeat_" {
                s.write_all(b"NOP\n").await?;
                continue;
            }
            return Ok(f);
        }
        if s.read_buf(buf).await? == 0 {
            bail!("connection closed by nsqd");
        }
    }
}

async fn writer(c: Common, batch: usize, count: Option<u64>, stop: Arc<AtomicBool>) -> Result<u64> {
    if c.size == 0 || batch == 0 {
        bail!("--size and --batch-size must be > 0");
    }
    let n = concurrency(&c);
    let body = Bytes::from(vec![b'a'; c.size]);
    let mut cmd = BytesMut::new();
    Command::Mpub {
        topic: c.topic.clone(),
        bodies: vec![body; batch],
    }
    .encode(&mut cmd);
    let cmd = cmd.freeze();
    let deadline = Instant::now() + c.runfor;
    let start = Instant::now();
    let claimed = Arc::new(AtomicU64::new(0));
    let limit = count.unwrap_or(u64::MAX);
    let mut tasks = Vec::new();
    for _ in 0..n {
        let addr = c.addr.clone();
        let cmd = cmd.clone();
        let stop = stop.clone();
        let claimed = claimed.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let mut s = connect(&addr).await?;
            let mut buf = BytesMut::with_capacity(4096);
            let mut msgs = 0u64;
            while Instant::now() < deadline && !stop.load(Ordering::Acquire) {
                if claimed.fetch_add(batch as u64, Ordering::Relaxed) >= limit {
                    break;
                }
                let t0 = Instant::now();
                s.write_all(&cmd).await?;
                let f = read_frame(&mut s, &mut buf).await?;
                if f.frame_type != v2::FRAME_TYPE_RESPONSE || f.data.as_ref() != b"OK" {
                    bail!("MPUB failed: {}", String::from_utf8_lossy(&f.data));
                }
                let _ = hist.record(t0.elapsed().as_micros().max(1) as u64);
                msgs += batch as u64;
            }
            anyhow::Ok((msgs, hist))
        }));
    }
    let mut total = 0u64;
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for t in tasks {
        let (m, h) = t.await??;
        total += m;
        hist.add(h)?;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "writer: {n} conns, {batch}/batch, {} B msgs: {total} msgs in {secs:.2}s = {:.0} msgs/s, {:.2} MB/s; MPUB round trip p50 {} us, p99 {} us, p99.9 {} us",
        c.size,
        total as f64 / secs,
        total as f64 * c.size as f64 / secs / 1e6,
        hist.value_at_quantile(0.5),
        hist.value_at_quantile(0.99),
        hist.value_at_quantile(0.999),
    );
    Ok(total)
}

async fn reader(
    c: Common,
    channels: Vec<String>,
    rdy: u32,
    idle: Duration,
    stop: Arc<AtomicBool>,
) -> Result<u64> {
    let n = concurrency(&c);
    let deadline = Instant::now() + c.runfor;
    let start = Instant::now();
    let per_channel: Vec<Arc<AtomicU64>> = channels
        .iter()
        .map(|_| Arc::new(AtomicU64::new(0)))
        .collect();
    let bytes = Arc::new(AtomicU64::new(0));
    let last_msg = Arc::new(last_seen::LastSeen::new());
    let mut tasks = Vec::new();
    for (channel, count) in channels.iter().zip(&per_channel) {
        for _ in 0..n {
            let (addr, topic, channel) = (c.addr.clone(), c.topic.clone(), channel.clone());
            let (count, bytes, stop, last_msg) =
                (count.clone(), bytes.clone(), stop.clone(), last_msg.clone());
            tasks.push(tokio::spawn(async move {
                let mut s = connect(&addr).await?;
                let mut out = BytesMut::new();
                Command::Sub { topic, channel }.encode(&mut out);
                s.write_all(&out).await?;
                let mut buf = BytesMut::with_capacity(1 << 20);
                let f = read_frame(&mut s, &mut buf).await?;
                if f.data.as_ref() != b"OK" {
                    bail!("SUB failed: {}", String::from_utf8_lossy(&f.data));
                }
                // Publish-to-receipt latency in microseconds (nsqd's timestamp to now).
                let mut e2e = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
                out.clear();
                Command::Rdy(rdy as i64).encode(&mut out);
                s.write_all(&out).await?;
                loop {
                    if Instant::now() >= deadline
                        || stop.load(Ordering::Acquire)
                        || last_msg.idle_for() > idle
                    {
                        break;
                    }
                    // Take every complete frame buffered, FIN them in one write.
                    out.clear();
                    let mut got = 0u64;
                    let now_ns = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_nanos() as i64)
                        .unwrap_or(0);
                    while let Some(f) = v2::parse_frame(&mut buf, 64 << 20)? {
                        match f.frame_type {
                            v2::FRAME_TYPE_MESSAGE => {
                                let m = v2::decode_message(f.data)?;
                                let us = ((now_ns - m.timestamp_ns) / 1000).clamp(1, 3_600_000_000);
                                e2e.record(us as u64)?;
                                bytes.fetch_add(m.body.len() as u64, Ordering::Relaxed);
                                Command::Fin(m.id).encode(&mut out);
                                got += 1;
                            }
                            v2::FRAME_TYPE_RESPONSE if f.data.as_ref() == b"_heartbeat_" => {
                                Command::Nop.encode(&mut out);
                            }
                            v2::FRAME_TYPE_ERROR => {
                                bail!("error frame: {}", String::from_utf8_lossy(&f.data))
                            }
                            _ => {}
                        }
                    }
                    if got > 0 {
                        count.fetch_add(got, Ordering::Relaxed);
                        last_msg.touch();
                    }
                    if !out.is_empty() {
                        s.write_all(&out).await?;
                    }
                    match tokio::time::timeout(Duration::from_millis(200), s.read_buf(&mut buf))
                        .await
                    {
                        Ok(Ok(0)) => bail!("connection closed by nsqd"),
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return Err(e.into()),
                        Err(_) => {}
                    }
                }
                anyhow::Ok(e2e)
            }));
        }
    }
    let mut e2e = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
    for t in tasks {
        e2e.add(t.await??)?;
    }
    // Measure to the last message, not to the idle timeout.
    let secs = last_msg.since(start).as_secs_f64().max(1e-6);
    let counts: Vec<u64> = per_channel
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .collect();
    let total: u64 = counts.iter().sum();
    if channels.len() > 1 {
        for (ch, got) in channels.iter().zip(&counts) {
            println!(
                "reader: channel {ch}: {got} msgs = {:.0} msgs/s",
                *got as f64 / secs
            );
        }
    }
    let conns = n * channels.len();
    println!(
        "reader: {conns} conns, RDY {rdy}: {total} msgs in {secs:.2}s = {:.0} msgs/s, {:.2} MB/s; publish-to-receipt latency p50 {} us, p99 {} us, p99.9 {} us",
        total as f64 / secs,
        bytes.load(Ordering::Relaxed) as f64 / secs / 1e6,
        e2e.value_at_quantile(0.5),
        e2e.value_at_quantile(0.99),
        e2e.value_at_quantile(0.999),
    );
    Ok(total)
}

mod last_seen {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{Duration, Instant};

    /// When the last message arrived, shared by all reader connections.
    pub struct LastSeen {
        origin: Instant,
        nanos: AtomicU64,
    }

    impl LastSeen {
        pub fn new() -> LastSeen {
            LastSeen {
                origin: Instant::now(),
                nanos: AtomicU64::new(0),
            }
        }
        pub fn touch(&self) {
            self.nanos
                .store(self.origin.elapsed().as_nanos() as u64, Ordering::Relaxed);
        }
        pub fn idle_for(&self) -> Duration {
            self.origin
                .elapsed()
                .saturating_sub(Duration::from_nanos(self.nanos.load(Ordering::Relaxed)))
        }
        pub fn since(&self, start: Instant) -> Duration {
            (self.origin + Duration::from_nanos(self.nanos.load(Ordering::Relaxed)))
                .saturating_duration_since(start)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_by_count_or_names() {
        assert_eq!(channel_list("ch", None).unwrap(), vec!["ch"]);
        assert_eq!(channel_list("ch", Some("1")).unwrap(), vec!["ch"]);
        assert_eq!(
            channel_list("ch", Some("3")).unwrap(),
            vec!["ch0", "ch1", "ch2"]
        );
        assert_eq!(
            channel_list("ch", Some("a, b,c")).unwrap(),
            vec!["a", "b", "c"]
        );
        assert!(channel_list("ch", Some("0")).is_err());
        assert!(channel_list("ch", Some(" , ")).is_err());
        assert!(channel_list("ch", Some("99999999999999999999999")).is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_secs("1ms").unwrap(), Duration::from_millis(1));
        assert_eq!(parse_secs("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_secs("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_secs("0.5").unwrap(), Duration::from_millis(500));
        assert!(parse_secs("x").is_err());
        assert!(parse_secs("-1s").is_err());
    }
}
