//! nsq_bench: load generator for any NSQ-compatible nsqd, following NSQ's own bench
//! procedure (bench/bench_writer and bench/bench_reader) so figures compare:
//!
//! - `writer`: `--concurrency` connections (default: number of cores), each sending MPUB
//!   batches of `--batch-size` messages of `--size` bytes and waiting for OK, for
//!   `--runfor`. Prints msgs/s, MB/s and the MPUB round-trip latency percentiles.
//! - `reader`: `--concurrency` connections subscribed to one channel with RDY `--rdy`,
//!   FINishing every message, until `--runfor` passes or nothing arrives for `--idle`.
//!   Prints msgs/s and MB/s.
//!
//! Runs until done or SIGINT/SIGTERM, then prints what it measured so far.

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
    },
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
        Mode::Writer { common, batch_size } => writer(common, batch_size, stop).await,
        Mode::Reader {
            common,
            channel,
            rdy,
            idle,
        } => reader(common, channel, rdy, idle, stop).await,
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

async fn connect(addr: &str) -> Result<TcpStream> {
    let mut s = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect {addr}"))?;
    s.set_nodelay(true)?;
    s.write_all(v2::MAGIC_V2).await?;
    Ok(s)
}

/// Read one frame, answering heartbeats.
async fn read_frame(s: &mut TcpStream, buf: &mut BytesMut) -> Result<v2::Frame> {
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

async fn writer(c: Common, batch: usize, stop: Arc<AtomicBool>) -> Result<()> {
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
    let mut tasks = Vec::new();
    for _ in 0..n {
        let addr = c.addr.clone();
        let cmd = cmd.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let mut s = connect(&addr).await?;
            let mut buf = BytesMut::with_capacity(4096);
            let mut msgs = 0u64;
            while Instant::now() < deadline && !stop.load(Ordering::Acquire) {
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
    Ok(())
}

async fn reader(
    c: Common,
    channel: String,
    rdy: u32,
    idle: Duration,
    stop: Arc<AtomicBool>,
) -> Result<()> {
    let n = concurrency(&c);
    let deadline = Instant::now() + c.runfor;
    let start = Instant::now();
    let count = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let last_msg = Arc::new(last_seen::LastSeen::new());
    let mut tasks = Vec::new();
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
                match tokio::time::timeout(Duration::from_millis(200), s.read_buf(&mut buf)).await {
                    Ok(Ok(0)) => bail!("connection closed by nsqd"),
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Err(e.into()),
                    Err(_) => {}
                }
            }
            anyhow::Ok(e2e)
        }));
    }
    let mut e2e = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
    for t in tasks {
        e2e.add(t.await??)?;
    }
    // Measure to the last message, not to the idle timeout.
    let secs = last_msg.since(start).as_secs_f64().max(1e-6);
    let total = count.load(Ordering::Relaxed);
    println!(
        "reader: {n} conns, RDY {rdy}: {total} msgs in {secs:.2}s = {:.0} msgs/s, {:.2} MB/s; publish-to-receipt latency p50 {} us, p99 {} us, p99.9 {} us",
        total as f64 / secs,
        bytes.load(Ordering::Relaxed) as f64 / secs / 1e6,
        e2e.value_at_quantile(0.5),
        e2e.value_at_quantile(0.99),
        e2e.value_at_quantile(0.999),
    );
    Ok(())
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
