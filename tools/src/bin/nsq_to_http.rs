//! nsq_to_http: consume a topic and make an HTTP request per message (NSQ's flags): a POST
//! with the body, or a GET with `%s` in the URL replaced by the URL-escaped body. A message
//! is FINed once an endpoint answered 2xx, else requeued.
//!
//! Modes: `round-robin` (each message to the next endpoint), `hostpool` / `epsilon-greedy`
//! (the first healthy endpoint, failing over), `fanout` (every endpoint gets every message;
//! FIN only when all accepted it).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::Parser;
use client::{Consumer, Outcome};
use nsq_tools::{init_logging, normalize_args, parse_duration, shutdown_signal, Source};

#[derive(Parser, Debug, Clone)]
#[command(
    name = "nsq_to_http",
    version,
    about = "Send NSQ messages to HTTP endpoints"
)]
struct Args {
    /// nsq topic
    #[arg(long)]
    topic: String,
    /// nsq channel
    #[arg(long, default_value = "nsq_to_http")]
    channel: String,
    /// HTTP address to make a GET request to; '%s' is replaced with the message (may be
    /// given multiple times)
    #[arg(long)]
    get: Vec<String>,
    /// HTTP address to make a POST request to, the message as body (may be given multiple
    /// times)
    #[arg(long)]
    post: Vec<String>,
    /// the Content-Type used for POST requests
    #[arg(long = "content-type", default_value = "application/octet-stream")]
    content_type: String,
    /// custom header for HTTP requests, "Name: value" (may be given multiple times)
    #[arg(long)]
    header: Vec<String>,
    /// the upstream request mode: round-robin, hostpool, epsilon-greedy or fanout
    #[arg(long, default_value = "hostpool")]
    mode: String,
    /// number of concurrent requests
    #[arg(long = "n", default_value_t = 100)]
    n: usize,
    /// fraction of messages to send (0 to 1); the rest are FINed unsent
    #[arg(long, default_value_t = 1.0)]
    sample: f64,
    /// the # of requests between logging status (per handler), 0 disables
    #[arg(long = "status-every", default_value_t = 250)]
    status_every: u64,
    /// timeout for each HTTP request to an endpoint, unless --http-client-request-timeout
    /// is given (which, as in NSQ, then applies to the endpoint requests)
    #[arg(long = "http-timeout", value_parser = parse_duration, default_value = "20s")]
    http_timeout: Duration,
    /// set log verbosity: debug, info, warn, error, or fatal
    #[arg(long = "log-level", default_value = "info")]
    log_level: String,
    #[command(flatten)]
    source: Source,
}

/// The NSQ release whose tools these match (as nsqd and nsqlookupd report it).
const NSQ_COMPAT_VERSION: &str = "1.3.0";

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    RoundRobin,
    Failover,
    Fanout,
}

struct Endpoints {
    http: reqwest::Client,
    urls: Vec<(bool, String)>, // (is_post, url)
    headers: reqwest::header::HeaderMap,
    content_type: String,
    mode: Mode,
    next: AtomicUsize,
    sent: AtomicU64,
    status_every: u64,
}

impl Endpoints {
    async fn send_to(&self, i: usize, body: &Bytes) -> Result<()> {
        let (post, url) = &self.urls[i];
        let req = if *post {
            self.http
                .post(url)
                .header(reqwest::header::CONTENT_TYPE, &self.content_type)
                .body(body.clone())
        } else {
            let escaped = url_escape(body);
            self.http.get(url.replace("%s", &escaped))
        };
        let resp = req
            .headers(self.headers.clone())
            .send()
            .await
            .with_context(|| url.clone())?;
        if !resp.status().is_success() {
            bail!("{url}: status {}", resp.status());
        }
        let c = self.sent.fetch_add(1, Ordering::Relaxed) + 1;
        if self.status_every > 0 && c.is_multiple_of(self.status_every) {
            tracing::info!(requests = c, "status");
        }
        Ok(())
    }

    async fn deliver(&self, body: &Bytes) -> bool {
        let n = self.urls.len();
        match self.mode {
            Mode::Fanout => {
                let mut ok = true;
                for i in 0..n {
                    if let Err(e) = self.send_to(i, body).await {
                        tracing::warn!("{e:#}");
                        ok = false;
                    }
                }
                ok
            }
            Mode::RoundRobin | Mode::Failover => {
                let start = if self.mode == Mode::RoundRobin {
                    self.next.fetch_add(1, Ordering::Relaxed) % n
                } else {
                    0
                };
                for k in 0..n {
                    match self.send_to((start + k) % n, body).await {
                        Ok(()) => return true,
                        Err(e) => tracing::warn!("{e:#}"),
                    }
                }
                false
            }
        }
    }
}

/// Percent-encode everything but unreserved characters (RFC 3986).
fn url_escape(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len());
    for &c in b {
        if c.is_ascii_alphanumeric() || b"-_.~".contains(&c) {
            s.push(c as char);
        } else {
            s.push_str(&format!("%{c:02X}"));
        }
    }
    s
}

#[tokio::main]
async fn main() {
    use clap::{CommandFactory, FromArgMatches};
    let matches = Args::command().get_matches_from(normalize_args(std::env::args()));
    let mut args = Args::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // NSQ's nsq_to_http applies --http-client-request-timeout (default 20s there) to the
    // endpoint requests.
    if matches.value_source("http_request_timeout") == Some(clap::parser::ValueSource::CommandLine)
    {
        args.http_timeout = args.source.http_request_timeout;
    }
    init_logging(&args.log_level);
    nsq_tools::exit_on_error("nsq_to_http", run(args).await);
}

async fn run(args: Args) -> Result<()> {
    args.source.check()?;
    if !protocol::names::is_valid_topic_name(&args.topic) {
        bail!("invalid --topic {:?}", args.topic);
    }
    if args.get.is_empty() == args.post.is_empty() {
        bail!("give --get or --post endpoints (not both)");
    }
    if !(0.0..=1.0).contains(&args.sample) {
        bail!("--sample must be between 0 and 1");
    }
    let mode = match args.mode.as_str() {
        "round-robin" => Mode::RoundRobin,
        "hostpool" | "epsilon-greedy" => Mode::Failover,
        "fanout" | "fan-out" => Mode::Fanout,
        m => bail!("invalid --mode {m:?}"),
    };
    let mut headers = reqwest::header::HeaderMap::new();
    for h in &args.header {
        let (k, v) = h
            .split_once(':')
            .with_context(|| format!("invalid --header {h:?} (want \"Name: value\")"))?;
        headers.insert(
            reqwest::header::HeaderName::from_bytes(k.trim().as_bytes())
                .with_context(|| format!("invalid header name in {h:?}"))?,
            reqwest::header::HeaderValue::from_str(v.trim())
                .with_context(|| format!("invalid header value in {h:?}"))?,
        );
    }
    let urls: Vec<(bool, String)> = args
        .post
        .iter()
        .map(|u| (true, with_scheme(u)))
        .chain(args.get.iter().map(|u| (false, with_scheme(u))))
        .collect();
    let endpoints = Arc::new(Endpoints {
        http: reqwest::Client::builder()
            // NSQ's nsq_to_http identifies itself; endpoints' access logs keep working.
            .user_agent(format!("nsq_to_http v{NSQ_COMPAT_VERSION}"))
            .connect_timeout(args.source.http_connect_timeout)
            .timeout(args.http_timeout)
            .build()?,
        urls,
        headers,
        content_type: args.content_type.clone(),
        mode,
        next: AtomicUsize::new(0),
        sent: AtomicU64::new(0),
        status_every: args.status_every,
    });
    let mut config = args.source.config()?;
    config.concurrency = args.n.max(1);
    let sample = args.sample;
    let ep = endpoints.clone();
    let consumer = Consumer::new(&args.topic, &args.channel, config, move |m| {
        let ep = ep.clone();
        async move {
            if sample < 1.0 && rand::random::<f64>() >= sample {
                return Outcome::Finish;
            }
            if ep.deliver(&m.body).await {
                Outcome::Finish
            } else {
                Outcome::Requeue
            }
        }
    })?;
    args.source.connect(&consumer).await?;
    shutdown_signal().await;
    consumer.stop().await;
    tracing::info!(requests = endpoints.sent.load(Ordering::Relaxed), "stopped");
    Ok(())
}

fn with_scheme(u: &str) -> String {
    if u.starts_with("http://") || u.starts_with("https://") {
        u.to_string()
    } else {
        format!("http://{u}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        assert_eq!(url_escape(b"a b/c?d=e~"), "a%20b%2Fc%3Fd%3De~");
        assert_eq!(with_scheme("h:1/x"), "http://h:1/x");
    }
}
