//! nsq_stat: poll /stats of every nsqd producing a topic and print aggregate figures for
//! one channel every --interval (NSQ's flags and columns).

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

    fn row(&self) -> String {
        format!(
            "{:>7} {:>6} {:>7} {:>5} {:>5} | {:>7} {:>7} {:>12} {:>7}",
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

async fn poll(http: &reqwest::Client, args: &Args) -> Totals {
    let mut t = Totals::default();
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
            for c in topic["channels"].as_array().into_iter().flatten() {
                if c["channel_name"] == args.channel.as_str() {
                    t.add_channel(c);
                }
            }
        }
    }
    t
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
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tick.tick() => {}
        }
        if printed.is_multiple_of(25) {
            println!("-----------depth------------+--------------metadata---------------");
            println!(
                "{:>7} {:>6} {:>7} {:>5} {:>5} | {:>7} {:>7} {:>12} {:>7}",
                "total", "mem", "disk", "inflt", "def", "req", "t-o", "msgs", "clients"
            );
        }
        println!("{}", poll(&http, &args).await.row());
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
        assert!(t.row().contains(" 12 "), "{}", t.row());
    }
}
