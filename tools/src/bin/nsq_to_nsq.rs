//! nsq_to_nsq: copy topics from one set of nsqd (or a lookupd cluster) to destination nsqd
//! (NSQ's flags). A message is FINed at the source only after a destination accepted it;
//! JSON messages can be filtered (--require-json-field/-value) and trimmed
//! (--whitelist-json-field).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};
use bytes::Bytes;
use clap::Parser;
use client::{Consumer, Outcome, Producer};
use nsq_tools::{apply_opt, init_logging, parse_args, shutdown_signal, Source};

#[derive(Parser, Debug, Clone)]
#[command(name = "nsq_to_nsq", version, about = "Copy NSQ topics to other nsqd")]
struct Args {
    /// nsq channel
    #[arg(long, default_value = "nsq_to_nsq")]
    channel: String,
    /// nsq topic (may be given multiple times)
    #[arg(long)]
    topic: Vec<String>,
    /// destination nsqd TCP address (may be given multiple times)
    #[arg(long = "destination-nsqd-tcp-address")]
    destination: Vec<String>,
    /// use this destination topic for all consumed topics (default: the consumed topic's name)
    #[arg(long = "destination-topic")]
    destination_topic: Option<String>,
    /// the upstream request mode: round-robin, hostpool or epsilon-greedy (the last two
    /// pick the first healthy destination and fail over)
    #[arg(long, default_value = "hostpool")]
    mode: String,
    /// option to pass through to the producers, as key=value (may be given multiple times)
    #[arg(long = "producer-opt")]
    producer_opt: Vec<String>,
    /// for JSON messages: only pass messages that contain this field
    #[arg(long = "require-json-field")]
    require_json_field: Option<String>,
    /// for JSON messages: only pass messages in which the required field has this value
    #[arg(long = "require-json-value")]
    require_json_value: Option<String>,
    /// for JSON messages: pass only these fields (may be given multiple times)
    #[arg(long = "whitelist-json-field")]
    whitelist_json_field: Vec<String>,
    /// the # of requests between logging status (per destination), 0 disables
    #[arg(long = "status-every", default_value_t = 250)]
    status_every: u64,
    /// set log verbosity: debug, info, warn, error, or fatal
    #[arg(long = "log-level", default_value = "info")]
    log_level: String,
    #[command(flatten)]
    source: Source,
}

struct Filter {
    require_field: Option<String>,
    require_value: Option<String>,
    whitelist: Vec<String>,
}

impl Filter {
    /// The body to forward, or None to drop (FIN) the message.
    fn apply(&self, body: &Bytes) -> Option<Bytes> {
        if self.require_field.is_none() && self.whitelist.is_empty() {
            return Some(body.clone());
        }
        let Ok(serde_json::Value::Object(obj)) = serde_json::from_slice(body) else {
            // Not a JSON object: it cannot contain the required field.
            return self.require_field.is_none().then(|| body.clone());
        };
        if let Some(f) = &self.require_field {
            let v = obj.get(f)?;
            if let Some(want) = &self.require_value {
                let matches = match v {
                    serde_json::Value::String(s) => s == want,
                    other => want.as_str() == other.to_string().as_str(),
                };
                if !matches {
                    return None;
                }
            }
        }
        if self.whitelist.is_empty() {
            return Some(body.clone());
        }
        let kept: serde_json::Map<String, serde_json::Value> = obj
            .into_iter()
            .filter(|(k, _)| self.whitelist.contains(k))
            .collect();
        serde_json::to_vec(&kept).ok().map(Bytes::from)
    }
}

struct Destinations {
    producers: Vec<Producer>,
    round_robin: bool,
    next: AtomicUsize,
    counts: Vec<AtomicU64>,
    status_every: u64,
}

impl Destinations {
    async fn publish(&self, topic: &str, body: Bytes) -> bool {
        let n = self.producers.len();
        let start = if self.round_robin {
            self.next.fetch_add(1, Ordering::Relaxed) % n
        } else {
            0
        };
        for k in 0..n {
            let i = (start + k) % n;
            match self.producers[i].publish(topic, body.clone()).await {
                Ok(()) => {
                    let c = self.counts[i].fetch_add(1, Ordering::Relaxed) + 1;
                    if self.status_every > 0 && c.is_multiple_of(self.status_every) {
                        tracing::info!(
                            destination = self.producers[i].addr(),
                            messages = c,
                            "status"
                        );
                    }
                    return true;
                }
                Err(e) => tracing::warn!("publish to {}: {e}", self.producers[i].addr()),
            }
        }
        false
    }
}

#[tokio::main]
async fn main() {
    let args: Args = parse_args();
    init_logging(&args.log_level);
    nsq_tools::exit_on_error("nsq_to_nsq", run(args).await);
}

async fn run(args: Args) -> Result<()> {
    args.source.check()?;
    if args.topic.is_empty() {
        bail!("give --topic");
    }
    if args.destination.is_empty() {
        bail!("give --destination-nsqd-tcp-address");
    }
    if args.require_json_value.is_some() && args.require_json_field.is_none() {
        bail!("--require-json-value needs --require-json-field");
    }
    let round_robin = match args.mode.as_str() {
        "round-robin" => true,
        "hostpool" | "epsilon-greedy" => false,
        m => bail!("invalid --mode {m:?}"),
    };
    for t in args.topic.iter().chain(&args.destination_topic) {
        if !protocol::names::is_valid_topic_name(t) {
            bail!("invalid topic {t:?}");
        }
    }
    let mut pconfig = client::Config::default();
    for o in &args.producer_opt {
        apply_opt(&mut pconfig, o)?;
    }
    let dest = Arc::new(Destinations {
        producers: args
            .destination
            .iter()
            .map(|a| Producer::new(a.clone(), pconfig.clone()))
            .collect(),
        round_robin,
        next: AtomicUsize::new(0),
        counts: args.destination.iter().map(|_| AtomicU64::new(0)).collect(),
        status_every: args.status_every,
    });
    let filter = Arc::new(Filter {
        require_field: args.require_json_field.clone(),
        require_value: args.require_json_value.clone(),
        whitelist: args.whitelist_json_field.clone(),
    });
    let mut consumers = Vec::new();
    for topic in &args.topic {
        let mut config = args.source.config()?;
        config.concurrency = config.max_in_flight as usize;
        let out_topic = args.destination_topic.clone().unwrap_or(topic.clone());
        let (dest, filter) = (dest.clone(), filter.clone());
        let c = Consumer::new(topic, &args.channel, config, move |m| {
            let (dest, filter, out_topic) = (dest.clone(), filter.clone(), out_topic.clone());
            async move {
                let Some(body) = filter.apply(&m.body) else {
                    return Outcome::Finish;
                };
                if dest.publish(&out_topic, body).await {
                    Outcome::Finish
                } else {
                    Outcome::RequeueAfter(Duration::from_secs(1))
                }
            }
        })?;
        args.source.connect(&c).await?;
        consumers.push(c);
    }
    shutdown_signal().await;
    for c in &consumers {
        c.stop().await;
    }
    for p in &dest.producers {
        p.stop().await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_filters() {
        let f = Filter {
            require_field: Some("kind".into()),
            require_value: Some("a".into()),
            whitelist: vec!["kind".into(), "n".into()],
        };
        let b = |s: &str| Bytes::from(s.to_string());
        assert_eq!(
            f.apply(&b(r#"{"kind":"a","n":1,"secret":2}"#)),
            Some(b(r#"{"kind":"a","n":1}"#))
        );
        assert_eq!(f.apply(&b(r#"{"kind":"b"}"#)), None);
        assert_eq!(f.apply(&b(r#"{"n":1}"#)), None);
        assert_eq!(f.apply(&b("not json")), None);
        let none = Filter {
            require_field: None,
            require_value: None,
            whitelist: vec![],
        };
        assert_eq!(none.apply(&b("x")), Some(b("x")));
    }
}
