//! nsq_tail: print a topic's messages to stdout, one per line (NSQ's flags).
//!
//! Connects to every `--nsqd-tcp-address`, or to every producer `--lookupd-http-address`
//! knows for the topic, subscribes (by default on an ephemeral channel, so nothing is
//! left behind), FINs each message after printing it, and exits after `-n` messages or on
//! SIGINT/SIGTERM.

use std::io::Write;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use bytes::BytesMut;
use clap::Parser;
use protocol::v2::{self, Command};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Parser, Debug)]
#[command(name = "nsq_tail", about = "Print the messages of an NSQ topic")]
struct Args {
    #[arg(long)]
    topic: String,
    /// channel (default: a random ephemeral one)
    #[arg(long)]
    channel: Option<String>,
    /// nsqd TCP address (may be given multiple times)
    #[arg(long = "nsqd-tcp-address")]
    nsqd: Vec<String>,
    /// nsqlookupd HTTP address (may be given multiple times)
    #[arg(long = "lookupd-http-address")]
    lookupd: Vec<String>,
    /// total messages to show (will wait if starved); 0 = forever
    #[arg(short = 'n', long = "n", default_value_t = 0)]
    n: i64,
    /// print topic name where message was received
    #[arg(long = "print-topic")]
    print_topic: bool,
    /// maximum number of messages to allow in flight
    #[arg(long = "max-in-flight", default_value_t = 200)]
    max_in_flight: i64,
}

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("nsq_tail: {e:#}");
        std::process::exit(1);
    }
}

async fn run() -> Result<()> {
    let args = Args::parse();
    if !protocol::names::is_valid_topic_name(&args.topic) {
        bail!("invalid --topic {:?}", args.topic);
    }
    let channel = args
        .channel
        .clone()
        .unwrap_or_else(|| format!("tail{}#ephemeral", std::process::id() % 1_000_000));
    if !protocol::names::is_valid_channel_name(&channel) {
        bail!("invalid --channel {channel:?}");
    }
    let mut addrs = args.nsqd.clone();
    for l in &args.lookupd {
        addrs.extend(
            lookup(l, &args.topic)
                .await
                .with_context(|| format!("lookupd {l}"))?,
        );
    }
    addrs.sort();
    addrs.dedup();
    if addrs.is_empty() {
        bail!("give --nsqd-tcp-address or --lookupd-http-address (with producers for the topic)");
    }
    let left = Arc::new(AtomicI64::new(if args.n > 0 { args.n } else { i64::MAX }));
    let rdy = (args.max_in_flight / addrs.len() as i64).max(1);
    let mut tasks = tokio::task::JoinSet::new();
    for a in addrs {
        let (topic, channel, left) = (args.topic.clone(), channel.clone(), left.clone());
        let print_topic = args.print_topic;
        tasks.spawn(async move { tail(&a, &topic, &channel, rdy, print_topic, left).await });
    }
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    loop {
        tokio::select! {
            r = tasks.join_next() => match r {
                None => return Ok(()),
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(e))) => return Err(e),
                Some(Err(e)) => return Err(e.into()),
            },
            _ = int.recv() => return Ok(()),
            _ = term.recv() => return Ok(()),
        }
    }
}

/// nsqd TCP addresses of the topic's producers.
async fn lookup(lookupd: &str, topic: &str) -> Result<Vec<String>> {
    let base = if lookupd.starts_with("http") {
        lookupd.to_string()
    } else {
        format!("http://{lookupd}")
    };
    let v: serde_json::Value = reqwest::get(format!("{base}/lookup?topic={topic}"))
        .await?
        .json()
        .await?;
    // NSQ 1.x answers bare JSON; older versions wrap it in {"data": ...}.
    let producers = v
        .get("producers")
        .or_else(|| v.get("data").and_then(|d| d.get("producers")));
    let mut out = Vec::new();
    for p in producers.and_then(|p| p.as_array()).into_iter().flatten() {
        let host = p["broadcast_address"].as_str().unwrap_or("");
        if let Some(port) = p["tcp_port"].as_u64() {
            out.push(format!("{host}:{port}"));
        }
    }
    Ok(out)
}

async fn tail(
    addr: &str,
    topic: &str,
    channel: &str,
    rdy: i64,
    print_topic: bool,
    left: Arc<AtomicI64>,
) -> Result<()> {
    let mut s = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect {addr}"))?;
    s.write_all(v2::MAGIC_V2).await?;
    let mut out = BytesMut::new();
    Command::Sub {
        topic: topic.into(),
        channel: channel.into(),
    }
    .encode(&mut out);
    Command::Rdy(rdy.min(left.load(Ordering::Acquire))).encode(&mut out);
    s.write_all(&out).await?;
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let stdout = std::io::stdout();
    loop {
        out.clear();
        while let Some(f) = v2::parse_frame(&mut buf, 64 << 20)? {
            match f.frame_type {
                v2::FRAME_TYPE_MESSAGE => {
                    let m = v2::decode_message(f.data)?;
                    if left.fetch_sub(1, Ordering::AcqRel) <= 0 {
                        return Ok(());
                    }
                    {
                        let mut w = stdout.lock();
                        if print_topic {
                            write!(w, "{topic} | ")?;
                        }
                        w.write_all(&m.body)?;
                        w.write_all(b"\n")?;
                        w.flush()?;
                    }
                    Command::Fin(m.id).encode(&mut out);
                }
                v2::FRAME_TYPE_RESPONSE if f.data.as_ref() == b"_heartbeat_" => {
                    Command::Nop.encode(&mut out)
                }
                v2::FRAME_TYPE_ERROR => bail!("{addr}: {}", String::from_utf8_lossy(&f.data)),
                _ => {}
            }
        }
        if !out.is_empty() {
            s.write_all(&out).await?;
        }
        if left.load(Ordering::Acquire) <= 0 {
            return Ok(());
        }
        if s.read_buf(&mut buf).await? == 0 {
            bail!("{addr} closed the connection");
        }
    }
}
