//! nsq_tail: print the messages of one or more topics to stdout, one per line (NSQ's flags).
//!
//! Subscribes (by default on an ephemeral channel, so nothing is left behind) on every
//! `--nsqd-tcp-address`, or on the producers nsqlookupd knows (polled), FINs each message
//! after printing it, and exits after `-n` messages or on SIGINT/SIGTERM.

use std::io::Write;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use anyhow::{bail, Result};
use clap::Parser;
use client::{Consumer, Outcome};
use nsq_tools::{init_logging, parse_args, shutdown_signal, Source};
use tokio::sync::Notify;

#[derive(Parser, Debug)]
#[command(name = "nsq_tail", version, about = "Print the messages of NSQ topics")]
struct Args {
    /// NSQ topic (may be given multiple times)
    #[arg(long, required = true)]
    topic: Vec<String>,
    /// NSQ channel (default: a random ephemeral one)
    #[arg(long)]
    channel: Option<String>,
    /// total messages to show (will wait if starved); 0 = forever
    #[arg(short = 'n', long = "n", default_value_t = 0)]
    n: i64,
    /// print topic name where message was received
    #[arg(long = "print-topic")]
    print_topic: bool,
    /// set log verbosity: debug, info, warn, error, or fatal
    #[arg(long = "log-level", default_value = "warn")]
    log_level: String,
    #[command(flatten)]
    source: Source,
}

// One thread: messages of a connection are handled, and printed, in the order they came.
#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Args = parse_args();
    init_logging(&args.log_level);
    nsq_tools::exit_on_error("nsq_tail", run(args).await);
}

async fn run(args: Args) -> Result<()> {
    args.source.check()?;
    let channel = args
        .channel
        .clone()
        .unwrap_or_else(|| format!("tail{}#ephemeral", rand::random::<u32>() % 1_000_000));
    if !protocol::names::is_valid_channel_name(&channel) {
        bail!("invalid --channel {channel:?}");
    }
    let left = Arc::new(AtomicI64::new(if args.n > 0 { args.n } else { i64::MAX }));
    let done = Arc::new(Notify::new());
    let mut config = args.source.config()?;
    if args.n > 0 {
        config.max_in_flight = config.max_in_flight.min(args.n as u32).max(1);
    }
    let mut consumers = Vec::new();
    for topic in &args.topic {
        if !protocol::names::is_valid_topic_name(topic) {
            bail!("invalid --topic {topic:?}");
        }
        let (left, done, t) = (left.clone(), done.clone(), topic.clone());
        let print_topic = args.print_topic;
        let c = Consumer::new(topic, &channel, config.clone(), move |m| {
            let n = left.fetch_sub(1, Ordering::AcqRel);
            let outcome = if n <= 0 {
                // Past -n: leave it for someone else.
                Outcome::RequeueNoBackoff(std::time::Duration::ZERO)
            } else {
                let mut w = std::io::stdout().lock();
                let r = (|| {
                    if print_topic {
                        write!(w, "{t} | ")?;
                    }
                    w.write_all(&m.body)?;
                    w.write_all(b"\n")?;
                    w.flush()
                })();
                if r.is_err() {
                    done.notify_one(); // stdout closed (e.g. piped into head)
                }
                if n == 1 {
                    done.notify_one();
                }
                Outcome::Finish
            };
            async move { outcome }
        })?;
        args.source.connect(&c).await?;
        consumers.push(c);
    }
    tokio::select! {
        _ = done.notified() => {}
        _ = shutdown_signal() => {}
    }
    for c in &consumers {
        c.stop().await;
    }
    Ok(())
}
