//! nsq_stat: poll /stats of every nsqd producing a topic and print aggregate figures for
//! one channel every --interval (NSQ's flags and columns: ingress/egress rates per second
//! from two samples, then depth and metadata). A topic or channel that no nsqd has is an
//! error, as in NSQ.

use std::time::Duration;

use anyhow::{bail, Result};
use clap::Parser;
use nsq_tools::{parse_args, parse_duration, shutdown_signal};

#[derive(Parser, Debug)]
#[command(
    name = "nsq_stat",
    version,
    about = "Periodic stats of an NSQ topic/channel"
)]
struct Args {
    /// NSQ topic
    #[arg(long)]
    topic: String,
    /// NSQ channel
    #[arg(long)]
    channel: String,
    /// nsqd HTTP address (may be given multiple times)
    #[arg(long = "nsqd-http-address")]
    nsqd_http_address: Vec<String>,
    /// lookupd HTTP address (may be given multiple times)
    #[arg(long = "lookupd-http-address")]
    lookupd_http_address: Vec<String>,
    /// duration of time between polling/printing output
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    interval: Duration,
    /// number of reports (0: until interrupted)
    #[arg(long, default_value_t = 0)]
    count: u64,
    /// timeout for HTTP connect
    #[arg(long = "http-client-connect-timeout", value_parser = parse_duration, default_value = "2s")]
    connect_timeout: Duration,
    /// timeout for HTTP request
    #[arg(long = "http-client-request-timeout", value_parser = parse_duration, default_value = "5s")]
    request_timeout: Duration,
}

#[derive(Default, Debug, PartialEq)]
struct Totals {
    depth: u64,
    backend_depth: u64,
    in_flight: u64,
    deferred: u64,
    requeue: u64,
    timeout: u64,
    messages: u64,
    clients: u64,
}

impl Totals {
    fn add_channel(&mut self, c: &serde_json::Value) {
        let n = |k: &str| c[k].as_u64().unwrap_or(0);
        self.depth += n("depth");
        self.backend_depth += n("backend_depth");
        self.in_flight += n("in_flight_count");
        self.deferred += n("deferred_count");
        self.requeue += n("requeue_count");
        self.timeout += n("timeout_count");
        self.messages += n("message_count");
        self.clients += c["clients"].as_array().map_or(0, |a| a.len() as u64);
    }

    /// One output row: rates from the previous sample `prev`, `secs` apart.
    fn row(&self, prev: &Totals, secs: f64) -> String {
        let rate = |now: u64, before: u64| (now.saturating_sub(before) as f64 / secs) as u64;
        // Ingress: messages that entered the channel; egress: those that left its depth.
        let ingress = rate(self.messages, prev.messages);
        let egress = rate(
            self.messages.saturating_sub(self.depth),
            prev.messages.saturating_sub(prev.depth),
        );
        format!(
            "{:>7} {:>7} | {:>7} {:>7} {:>7} {:>5} {:>5} | {:>7} {:>7} {:>12} {:>7}",
            ingress,
            egress,
            self.depth,
            self.depth.saturating_sub(self.backend_depth),
            self.backend_depth,
            self.in_flight,
            self.deferred,
            self.requeue,
            self.timeout,
            self.messages,
            self.clients
        )
    }
}

fn base(a: &str) -> String {
    client::lookup::base_url(a)
}

/// nsqd HTTP addresses: given ones plus every producer lookupd knows for the topic.
async fn nsqd_addresses(http: &reqwest::Client, args: &Args) -> Vec<String> {
    let mut out: Vec<String> = args.nsqd_http_address.iter().map(|a| base(a)).collect();
    for l in &args.lookupd_http_address {
        let url = format!("{}/lookup?topic={}", base(l), args.topic);
        let v: serde_json::Value = match http.get(&url).send().await {
            Ok(r) => r.json().await.unwrap_or_default(),
            Err(e) => {
                eprintln!("nsq_stat: {url}: {e}");
                continue;
            }
        };
        out.extend(
            client::lookup::producer_addresses(&v, "http_port")
                .into_iter()
                .map(|a| format!("http://{a}")),
        );
    }
    out.sort();
    out.dedup();
    out
}

/// The channel's totals over every nsqd, with whether the topic and the channel were seen.
async fn poll(http: &reqwest::Client, args: &Args) -> (Totals, bool, bool) {
    let mut t = Totals::default();
    let (mut topic_seen, mut channel_seen) = (false, false);
    for a in nsqd_addresses(http, args).await {
        let url = format!(
            "{a}/stats?format=json&topic={}&channel={}&include_clients=true",
            args.topic, args.channel
        );
        let v: serde_json::Value = match http.get(&url).send().await {
            Ok(r) => match r.json().await {
                Ok(v) => v,
                Err(e) => {
                    eprintln!("nsq_stat: {url}: {e}");
                    continue;
                }
            },
            Err(e) => {
                eprintln!("nsq_stat: {url}: {e}");
                continue;
            }
        };
        let v = v.get("data").cloned().unwrap_or(v);
        for topic in v["topics"].as_array().into_iter().flatten() {
            if topic["topic_name"] != args.topic.as_str() {
                continue;
            }
            topic_seen = true;
            for c in topic["channels"].as_array().into_iter().flatten() {
                if c["channel_name"] == args.channel.as_str() {
                    channel_seen = true;
                    t.add_channel(c);
                }
            }
        }
    }
    (t, topic_seen, channel_seen)
}

#[tokio::main]
async fn main() {
    let args: Args = parse_args();
    nsq_tools::exit_on_error("nsq_stat", run(args).await);
}

async fn run(args: Args) -> Result<()> {
    if args.nsqd_http_address.is_empty() == args.lookupd_http_address.is_empty() {
        bail!("use --nsqd-http-address or --lookupd-http-address (one of them, not both)");
    }
    if !protocol::names::is_valid_topic_name(&args.topic) {
        bail!("invalid --topic {:?}", args.topic);
    }
    if !protocol::names::is_valid_channel_name(&args.channel) {
        bail!("invalid --channel {:?}", args.channel);
    }
    let http = reqwest::Client::builder()
        .connect_timeout(args.connect_timeout)
        .timeout(args.request_timeout)
        .build()?;
    let stop = shutdown_signal();
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(args.interval);
    let mut printed = 0u64;
    let mut prev: Option<(Totals, std::time::Instant)> = None;
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tick.tick() => {}
        }
        let (now, topic_seen, channel_seen) = poll(&http, &args).await;
        if !topic_seen {
            bail!("failed to find topic({}) in stats metadata", args.topic);
        }
        if !channel_seen {
            bail!(
                "failed to find channel({}) in stats metadata for topic({})",
                args.channel,
                args.topic
            );
        }
        let at = std::time::Instant::now();
        // As in NSQ, the first row comes with the second sample (rates need two).
        let Some((before, then)) = prev.replace((now, at)) else {
            continue;
        };
        if printed.is_multiple_of(25) {
            println!(
                "------rate------+----------------depth----------------+--------------metadata---------------"
            );
            println!(
                "{:>7} {:>7} | {:>7} {:>7} {:>7} {:>5} {:>5} | {:>7} {:>7} {:>12} {:>7}",
                "ingress",
                "egress",
                "total",
                "mem",
                "disk",
                "inflt",
                "def",
                "req",
                "t-o",
                "msgs",
                "clients"
            );
        }
        let secs = at.duration_since(then).as_secs_f64().max(1e-3);
        if let Some((cur, _)) = &prev {
            println!("{}", cur.row(&before, secs));
        }
        printed += 1;
        if args.count > 0 && printed >= args.count {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_add_up() {
        let c = serde_json::json!({"depth": 10, "backend_depth": 4, "in_flight_count": 2,
            "deferred_count": 1, "requeue_count": 3, "timeout_count": 0,
            "message_count": 99, "clients": [{}, {}]});
        let mut t = Totals::default();
        t.add_channel(&c);
        t.add_channel(&c);
        assert_eq!(t.depth, 20);
        assert_eq!(t.clients, 4);
        let row = t.row(&Totals::default(), 2.0);
        assert!(row.contains(" 12 "), "{row}");
        // ingress 198 msgs / 2 s = 99/s; egress (198 - 20) / 2 s = 89/s.
        assert!(row.starts_with("     99      89 |"), "{row}");
    }
}
