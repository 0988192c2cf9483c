//! to_nsq: publish stdin, split on a delimiter (newline by default), to a topic on every
//! given nsqd (NSQ's flags). Exits when stdin ends or on SIGINT/SIGTERM.

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use bytes::Bytes;
use clap::Parser;
use client::Producer;
use nsq_tools::{apply_opt, init_logging, parse_args, shutdown_signal};
use tokio::sync::mpsc;

#[derive(Parser, Debug)]
#[command(
    name = "to_nsq",
    version,
    about = "Publish lines from stdin to an NSQ topic"
)]
struct Args {
    /// NSQ topic to publish to
    #[arg(long)]
    topic: String,
    /// destination nsqd TCP address (may be given multiple times; each gets every message)
    #[arg(long = "nsqd-tcp-address")]
    nsqd_tcp_address: Vec<String>,
    /// character to split input from stdin
    #[arg(long, default_value = "\n")]
    delimiter: String,
    /// throttle messages to n/second; 0 to disable
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// option to pass through to the producer, as key=value (may be given multiple times)
    #[arg(long = "producer-opt")]
    producer_opt: Vec<String>,
    /// set log verbosity: debug, info, warn, error, or fatal
    #[arg(long = "log-level", default_value = "warn")]
    log_level: String,
}

#[tokio::main]
async fn main() {
    let args: Args = parse_args();
    init_logging(&args.log_level);
    match run(args).await {
        Ok(n) => eprintln!("to_nsq: published {n} messages"),
        Err(e) => {
            eprintln!("to_nsq: {e:#}");
            std::process::exit(1);
        }
    }
}

async fn run(args: Args) -> Result<u64> {
    if !protocol::names::is_valid_topic_name(&args.topic) {
        bail!("invalid --topic {:?}", args.topic);
    }
    if args.nsqd_tcp_address.is_empty() {
        bail!("give at least one --nsqd-tcp-address");
    }
    let delim = match args.delimiter.as_bytes() {
        [b] => *b,
        _ => bail!("--delimiter must be a single byte"),
    };
    let mut config = client::Config::default();
    for o in &args.producer_opt {
        apply_opt(&mut config, o)?;
    }
    let producers: Vec<Producer> = args
        .nsqd_tcp_address
        .iter()
        .map(|a| Producer::new(a.clone(), config.clone()))
        .collect();
    for p in &producers {
        p.connect().await?;
    }

    // Reading stdin blocks, so it happens on a thread that hands records over.
    let (tx, mut rx) = mpsc::channel::<Bytes>(4096);
    std::thread::spawn(move || {
        let mut r = BufReader::with_capacity(1 << 20, std::io::stdin().lock());
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(delim, &mut buf) {
                Ok(0) => return,
                Ok(_) => {
                    if buf.last() == Some(&delim) {
                        buf.pop();
                    }
                    if !buf.is_empty() && tx.blocking_send(Bytes::from(buf.clone())).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    eprintln!("to_nsq: reading stdin: {e}");
                    return;
                }
            }
        }
    });

    let stop = shutdown_signal();
    tokio::pin!(stop);
    let started = Instant::now();
    let mut sent: u64 = 0;
    // Without a rate limit, what is already read goes out in MPUB batches.
    let batch_max = if args.rate == 0 { 200 } else { 1 };
    loop {
        let first = tokio::select! {
            _ = &mut stop => break,
            m = rx.recv() => match m { Some(m) => m, None => break },
        };
        let mut batch = vec![first];
        while batch.len() < batch_max {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        let n = batch.len() as u64;
        for p in &producers {
            if batch.len() == 1 {
                p.publish(&args.topic, batch[0].clone()).await?;
            } else {
                p.multi_publish(&args.topic, batch.clone()).await?;
            }
        }
        sent += n;
        if args.rate > 0 {
            let due = started + Duration::from_secs_f64(sent as f64 / args.rate as f64);
            tokio::select! {
                _ = &mut stop => break,
                _ = tokio::time::sleep_until(due.into()) => {}
            }
        }
    }
    for p in &producers {
        p.stop().await;
    }
    Ok(sent)
}
