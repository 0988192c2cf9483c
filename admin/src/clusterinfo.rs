//! What nsqadmin knows about the cluster, asked fresh from nsqlookupd and nsqd over their
//! HTTP APIs: producers (nodes), topics, per-node /stats aggregated per topic and channel,
//! and the admin actions fanned out to every node concerned. Shapes and field names follow
//! NSQ's `internal/clusterinfo`, because scripts read nsqadmin's API.
//!
//! Every query returns `Ok((value, warnings))` when at least one upstream answered (the
//! warnings name the ones that did not: NSQ's partial error) and `Err` when none did.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::options::Options;

/// A query's result plus the upstreams that failed while at least one answered.
pub type Partial<T> = Result<(T, Vec<String>), String>;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProducerTopic {
    pub topic: String,
    pub tombstoned: bool,
}

/// An nsqd as nsqlookupd (or the nsqd's own /info) describes it.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Producer {
    /// One entry per nsqlookupd the nsqd is registered with.
    pub remote_addresses: Vec<String>,
    pub remote_address: String,
    pub hostname: String,
    pub broadcast_address: String,
    pub tcp_port: u16,
    pub http_port: u16,
    pub version: String,
    pub topics: Vec<ProducerTopic>,
    pub out_of_date: bool,
}

impl Producer {
    /// The node's name in nsqadmin: `broadcast_address:http_port`.
    pub fn http_address(&self) -> String {
        join_host_port(&self.broadcast_address, self.http_port)
    }

    pub fn tcp_address(&self) -> String {
        join_host_port(&self.broadcast_address, self.tcp_port)
    }
}

pub fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Producer as nsqlookupd sends it (`/nodes`, `/lookup`) or nsqd's `/info`.
#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct RawProducer {
    remote_address: String,
    hostname: String,
    broadcast_address: String,
    tcp_port: u16,
    http_port: u16,
    version: String,
    topics: Vec<String>,
    tombstones: Vec<bool>,
}

/// NSQ's e2e latency aggregate: per quantile, min/max/average over nodes.
#[derive(Debug, Clone, Serialize, Default)]
pub struct LatencyAggregate {
    pub count: u64,
    pub percentiles: Vec<BTreeMap<String, f64>>,
    pub topic: String,
    pub channel: String,
    pub host: String,
}

impl LatencyAggregate {
    fn from_node(raw: &RawLatency, topic: &str, channel: &str, host: &str) -> LatencyAggregate {
        let percentiles = raw
            .percentiles
            .iter()
            .flatten()
            .map(|p| {
                BTreeMap::from([
                    ("quantile".to_string(), p.quantile),
                    ("min".to_string(), p.value),
                    ("max".to_string(), p.value),
                    ("average".to_string(), p.value),
                    ("count".to_string(), raw.count as f64),
                ])
            })
            .collect();
        LatencyAggregate {
            count: raw.count,
            percentiles,
            topic: topic.into(),
            channel: channel.into(),
            host: host.into(),
        }
    }

    fn add(&mut self, other: &LatencyAggregate) {
        self.host = "*".into();
        self.count += other.count;
        for op in &other.percentiles {
            let q = op.get("quantile").copied().unwrap_or(0.0);
            let get = |m: &BTreeMap<String, f64>, k: &str| m.get(k).copied().unwrap_or(0.0);
            let idx = self
                .percentiles
                .iter()
                .position(|p| get(p, "quantile") == q);
            let Some(i) = idx else {
                self.percentiles.push(op.clone());
                continue;
            };
            let p = &mut self.percentiles[i];
            let (max, min) = (
                get(p, "max").max(get(op, "max")),
                get(p, "min").min(get(op, "min")),
            );
            let count = get(p, "count") + get(op, "count");
            let avg = if count == 0.0 {
                0.0
            } else {
                (get(p, "average") * get(p, "count") + get(op, "average") * get(op, "count"))
                    / count
            };
            p.insert("max".into(), max);
            p.insert("min".into(), min);
            p.insert("count".into(), count);
            p.insert("average".into(), avg);
        }
        self.percentiles.sort_by(|a, b| {
            let qa = a.get("quantile").copied().unwrap_or(0.0);
            let qb = b.get("quantile").copied().unwrap_or(0.0);
            qb.total_cmp(&qa)
        });
    }
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct ClientStats {
    pub node: String,
    pub remote_address: String,
    /// Deprecated in NSQ; kept equal to hostname for old scripts.
    pub name: String,
    pub version: String,
    pub client_id: String,
    pub hostname: String,
    pub user_agent: String,
    pub connect_ts: i64,
    /// Connected for, in nanoseconds (Go's time.Duration).
    pub connected: i64,
    pub in_flight_count: i64,
    pub ready_count: i64,
    pub finish_count: u64,
    pub requeue_count: u64,
    pub message_count: u64,
    pub sample_rate: i32,
    pub deflate: bool,
    pub snappy: bool,
    pub authed: bool,
    pub auth_identity: String,
    pub auth_identity_url: String,
    pub tls: bool,
    pub tls_cipher_suite: String,
    pub tls_version: String,
    pub tls_negotiated_protocol: String,
    pub tls_negotiated_protocol_is_mutual: bool,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct ChannelStats {
    pub node: String,
    pub hostname: String,
    pub topic_name: String,
    pub channel_name: String,
    pub depth: u64,
    pub memory_depth: u64,
    pub backend_depth: u64,
    pub in_flight_count: u64,
    pub deferred_count: u64,
    pub requeue_count: u64,
    pub timeout_count: u64,
    pub message_count: u64,
    pub client_count: u64,
    pub nodes: Vec<ChannelStats>,
    pub clients: Vec<ClientStats>,
    pub paused: bool,
    pub e2e_processing_latency: LatencyAggregate,
    /// Beyond NSQ (our nsqd's /stats): age of the oldest unfinished message, ms (the
    /// largest over nodes in an aggregate).
    pub oldest_unfinished_age_ms: u64,
    /// Beyond NSQ (our nsqd's /stats): the node's e2e latency histogram since start, for
    /// /metrics; `None` on an aggregate and from an nsqd that does not send it.
    #[serde(skip)]
    pub e2e_histogram: Option<LatencyHistogram>,
}

/// nsqd's `e2e_processing_latency_histogram`: per-bucket counts (not cumulative), the last
/// one for +Inf; bounds in seconds.
#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(default)]
pub struct LatencyHistogram {
    pub count: u64,
    pub sum_seconds: f64,
    pub bounds: Vec<f64>,
    pub counts: Vec<u64>,
}

impl LatencyHistogram {
    /// Well formed: one count per bound plus +Inf, and the counts add up to `count`.
    pub fn is_valid(&self) -> bool {
        self.counts.len() == self.bounds.len() + 1
            && self.counts.iter().sum::<u64>() == self.count
            && self.bounds.windows(2).all(|w| w[0] < w[1])
    }
}

impl ChannelStats {
    /// Fold one node's stats into this cluster-wide aggregate (node "*").
    pub fn add(&mut self, a: &ChannelStats) {
        self.node = "*".into();
        self.depth += a.depth;
        self.memory_depth += a.memory_depth;
        self.backend_depth += a.backend_depth;
        self.in_flight_count += a.in_flight_count;
        self.deferred_count += a.deferred_count;
        self.requeue_count += a.requeue_count;
        self.timeout_count += a.timeout_count;
        self.message_count += a.message_count;
        self.client_count += a.client_count;
        self.paused |= a.paused;
        self.oldest_unfinished_age_ms = self
            .oldest_unfinished_age_ms
            .max(a.oldest_unfinished_age_ms);
        let mut node = a.clone();
        node.nodes.clear();
        node.e2e_histogram = None;
        self.nodes.push(node);
        self.nodes
            .sort_by(|x, y| (&x.hostname, &x.node).cmp(&(&y.hostname, &y.node)));
        self.e2e_processing_latency.add(&a.e2e_processing_latency);
        self.e2e_processing_latency.topic = self.topic_name.clone();
        self.e2e_processing_latency.channel = self.channel_name.clone();
        self.clients.extend(a.clients.iter().cloned());
        self.clients
            .sort_by(|x, y| (&x.hostname, &x.client_id).cmp(&(&y.hostname, &y.client_id)));
    }
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct TopicStats {
    pub node: String,
    pub hostname: String,
    pub topic_name: String,
    pub depth: u64,
    pub memory_depth: u64,
    pub backend_depth: u64,
    pub message_count: u64,
    pub nodes: Vec<TopicStats>,
    pub channels: Vec<ChannelStats>,
    pub paused: bool,
    pub e2e_processing_latency: LatencyAggregate,
    /// Beyond NSQ (our nsqd's /stats): the topic's log on disk, damaged records recovery
    /// skipped, and the storage error it is in ("" when none).
    pub disk_bytes: u64,
    pub disk_segments: u64,
    pub corrupt_records: u64,
    pub storage_error: String,
    /// Beyond NSQ (our nsqd's /stats): the topic's own settings (`/topic/config`; `null`
    /// where the node-wide flag applies) and the settings in force. On the cluster-wide
    /// aggregate they are set only while every node agrees (`null` otherwise).
    pub config: Option<TopicSettings>,
    pub effective_config: Option<TopicSettings>,
}

/// The per-topic settings nsqd reports, by name (`mem_queue_size`, `sync_every`,
/// `sync_timeout` ms, `retention_time` ms, `retention_bytes`, `max_bytes`), as sent.
pub type TopicSettings = BTreeMap<String, serde_json::Value>;

/// The settings' names in display order, with their unit.
pub const TOPIC_SETTINGS: [(&str, &str); 6] = [
    ("mem_queue_size", "messages"),
    ("sync_every", "messages"),
    ("sync_timeout", "ms"),
    ("retention_time", "ms"),
    ("retention_bytes", "bytes"),
    ("max_bytes", "bytes"),
];

impl TopicStats {
    /// Fold one node's stats into this cluster-wide aggregate (node "*").
    pub fn add(&mut self, a: &TopicStats) {
        self.node = "*".into();
        self.depth += a.depth;
        self.memory_depth += a.memory_depth;
        self.backend_depth += a.backend_depth;
        self.message_count += a.message_count;
        self.paused |= a.paused;
        self.disk_bytes += a.disk_bytes;
        self.disk_segments += a.disk_segments;
        self.corrupt_records += a.corrupt_records;
        if !a.storage_error.is_empty() {
            if !self.storage_error.is_empty() {
                self.storage_error.push_str("; ");
            }
            self.storage_error
                .push_str(&format!("{}: {}", a.node, a.storage_error));
        }
        if self.nodes.is_empty() {
            self.config = a.config.clone();
            self.effective_config = a.effective_config.clone();
        } else {
            if self.config != a.config {
                self.config = None;
            }
            if self.effective_config != a.effective_config {
                self.effective_config = None;
            }
        }
        for ac in &a.channels {
            match self
                .channels
                .iter_mut()
                .find(|c| c.channel_name == ac.channel_name)
            {
                Some(c) => c.add(ac),
                None => {
                    let mut c = ChannelStats {
                        topic_name: ac.topic_name.clone(),
                        channel_name: ac.channel_name.clone(),
                        ..Default::default()
                    };
                    c.add(ac);
                    self.channels.push(c);
                }
            }
        }
        self.channels
            .sort_by(|x, y| x.channel_name.cmp(&y.channel_name));
        self.nodes.push(a.clone());
        self.nodes
            .sort_by(|x, y| (&x.hostname, &x.node).cmp(&(&y.hostname, &y.node)));
        self.e2e_processing_latency.add(&a.e2e_processing_latency);
        self.e2e_processing_latency.topic = self.topic_name.clone();
    }

    /// Sum over channels of their client counts.
    pub fn client_count(&self) -> u64 {
        self.channels.iter().map(|c| c.client_count).sum()
    }
}

// ------------------------------------------------------------------ nsqd /stats as sent

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct RawStats {
    /// "OK", or "NOK - <storage error>" while the node cannot write.
    health: String,
    topics: Vec<RawTopic>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct RawTopic {
    topic_name: String,
    channels: Vec<RawChannel>,
    depth: u64,
    backend_depth: u64,
    message_count: u64,
    paused: bool,
    e2e_processing_latency: RawLatency,
    disk_bytes: u64,
    disk_segments: u64,
    corrupt_records: u64,
    storage_error: String,
    config: Option<TopicSettings>,
    effective_config: Option<TopicSettings>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct RawChannel {
    channel_name: String,
    depth: u64,
    backend_depth: u64,
    in_flight_count: u64,
    deferred_count: u64,
    message_count: u64,
    requeue_count: u64,
    timeout_count: u64,
    client_count: Option<u64>,
    clients: Vec<RawClient>,
    paused: bool,
    e2e_processing_latency: RawLatency,
    oldest_unfinished_age_ms: u64,
    e2e_processing_latency_histogram: Option<LatencyHistogram>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct RawLatency {
    count: u64,
    percentiles: Option<Vec<RawPercentile>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct RawPercentile {
    quantile: f64,
    value: f64,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct RawClient {
    client_id: String,
    hostname: String,
    name: String,
    version: String,
    remote_address: String,
    ready_count: i64,
    in_flight_count: i64,
    message_count: u64,
    finish_count: u64,
    requeue_count: u64,
    connect_ts: i64,
    sample_rate: i32,
    deflate: bool,
    snappy: bool,
    user_agent: String,
    authed: bool,
    auth_identity: String,
    auth_identity_url: String,
    tls: bool,
    tls_cipher_suite: String,
    tls_version: String,
    tls_negotiated_protocol: String,
    tls_negotiated_protocol_is_mutual: bool,
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn convert_topic(t: RawTopic, node: &str, hostname: &str) -> TopicStats {
    let now = unix_now();
    let channels = t
        .channels
        .into_iter()
        .map(|c| {
            let clients: Vec<ClientStats> = c
                .clients
                .into_iter()
                .map(|cl| ClientStats {
                    node: node.into(),
                    name: if cl.name.is_empty() {
                        cl.hostname.clone()
                    } else {
                        cl.name
                    },
                    connected: (now - cl.connect_ts).max(0) * 1_000_000_000,
                    remote_address: cl.remote_address,
                    version: cl.version,
                    client_id: cl.client_id,
                    hostname: cl.hostname,
                    user_agent: cl.user_agent,
                    connect_ts: cl.connect_ts,
                    in_flight_count: cl.in_flight_count,
                    ready_count: cl.ready_count,
                    finish_count: cl.finish_count,
                    requeue_count: cl.requeue_count,
                    message_count: cl.message_count,
                    sample_rate: cl.sample_rate,
                    deflate: cl.deflate,
                    snappy: cl.snappy,
                    authed: cl.authed,
                    auth_identity: cl.auth_identity,
                    auth_identity_url: cl.auth_identity_url,
                    tls: cl.tls,
                    tls_cipher_suite: cl.tls_cipher_suite,
                    tls_version: cl.tls_version,
                    tls_negotiated_protocol: cl.tls_negotiated_protocol,
                    tls_negotiated_protocol_is_mutual: cl.tls_negotiated_protocol_is_mutual,
                })
                .collect();
            ChannelStats {
                node: node.into(),
                hostname: hostname.into(),
                topic_name: t.topic_name.clone(),
                e2e_processing_latency: LatencyAggregate::from_node(
                    &c.e2e_processing_latency,
                    &t.topic_name,
                    &c.channel_name,
                    node,
                ),
                channel_name: c.channel_name,
                depth: c.depth,
                memory_depth: c.depth.saturating_sub(c.backend_depth),
                backend_depth: c.backend_depth,
                in_flight_count: c.in_flight_count,
                deferred_count: c.deferred_count,
                requeue_count: c.requeue_count,
                timeout_count: c.timeout_count,
                message_count: c.message_count,
                client_count: c.client_count.unwrap_or(clients.len() as u64),
                nodes: Vec::new(),
                clients,
                paused: c.paused,
                oldest_unfinished_age_ms: c.oldest_unfinished_age_ms,
                e2e_histogram: c
                    .e2e_processing_latency_histogram
                    .filter(LatencyHistogram::is_valid),
            }
        })
        .collect();
    TopicStats {
        node: node.into(),
        hostname: hostname.into(),
        e2e_processing_latency: LatencyAggregate::from_node(
            &t.e2e_processing_latency,
            &t.topic_name,
            "",
            node,
        ),
        topic_name: t.topic_name,
        depth: t.depth,
        memory_depth: t.depth.saturating_sub(t.backend_depth),
        backend_depth: t.backend_depth,
        message_count: t.message_count,
        nodes: Vec::new(),
        channels,
        paused: t.paused,
        disk_bytes: t.disk_bytes,
        disk_segments: t.disk_segments,
        corrupt_records: t.corrupt_records,
        storage_error: t.storage_error,
        config: t.config,
        effective_config: t.effective_config,
    }
}

/// Compare dotted versions numerically ("1.10.0" > "1.9.2"); junk sorts first.
fn version_key(v: &str) -> Vec<u64> {
    v.split(['.', '-', '+'])
        .take(3)
        .map(|p| p.parse().unwrap_or(0))
        .collect()
}

/// Add `http://` unless the address already names a scheme.
fn base_url(addr: &str) -> String {
    if addr.starts_with("http://") || addr.starts_with("https://") {
        addr.trim_end_matches('/').to_string()
    } else {
        format!("http://{addr}")
    }
}

/// Percent-encode a query value.
pub fn qs_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub struct ClusterInfo {
    client: reqwest::Client,
    /// Changeable at runtime through PUT /config/nsqlookupd_http_addresses.
    lookupd: RwLock<Vec<String>>,
    nsqd: Vec<String>,
}

impl ClusterInfo {
    pub fn new(opts: &Options) -> anyhow::Result<ClusterInfo> {
        let mut b = reqwest::Client::builder()
            .connect_timeout(opts.http_client_connect_timeout)
            .timeout(opts.http_client_request_timeout)
            .user_agent(concat!("nsqadmin/", env!("CARGO_PKG_VERSION")));
        if opts.http_client_tls_insecure_skip_verify {
            b = b.danger_accept_invalid_certs(true);
        }
        if !opts.http_client_tls_root_ca_file.is_empty() {
            let pem = std::fs::read(&opts.http_client_tls_root_ca_file)
                .map_err(|e| anyhow::anyhow!("read {}: {e}", opts.http_client_tls_root_ca_file))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)? {
                b = b.add_root_certificate(cert);
            }
        }
        if !opts.http_client_tls_cert.is_empty() {
            let mut pem = std::fs::read(&opts.http_client_tls_cert)
                .map_err(|e| anyhow::anyhow!("read {}: {e}", opts.http_client_tls_cert))?;
            pem.push(b'\n');
            pem.extend(
                std::fs::read(&opts.http_client_tls_key)
                    .map_err(|e| anyhow::anyhow!("read {}: {e}", opts.http_client_tls_key))?,
            );
            b = b.identity(reqwest::Identity::from_pem(&pem)?);
        }
        Ok(ClusterInfo {
            client: b.build()?,
            lookupd: RwLock::new(opts.lookupd_http_addresses.clone()),
            nsqd: opts.nsqd_http_addresses.clone(),
        })
    }

    pub fn lookupd_addresses(&self) -> Vec<String> {
        self.lookupd.read().clone()
    }

    pub fn set_lookupd_addresses(&self, addrs: Vec<String>) {
        *self.lookupd.write() = addrs;
    }

    pub fn nsqd_addresses(&self) -> &[String] {
        &self.nsqd
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// GET a JSON document; unwraps NSQ's pre-1.0 `{"status_code":..,"data":..}` envelope.
    async fn get_json(&self, url: &str) -> Result<Value, String> {
        let resp = self
            .client
            .get(url)
            .header("Accept", "application/vnd.nsq; version=1.0")
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| format!("GET {url}: {e}"))?;
        if !status.is_success() {
            return Err(format!(
                "GET {url}: status {status}: {}",
                String::from_utf8_lossy(&body).trim()
            ));
        }
        let mut v: Value =
            serde_json::from_slice(&body).map_err(|e| format!("GET {url}: invalid JSON: {e}"))?;
        if v.get("status_code").is_some() {
            if let Some(d) = v.get_mut("data") {
                v = d.take();
            }
        }
        Ok(v)
    }

    async fn post(&self, url: &str) -> Result<(), String> {
        let resp = self
            .client
            .post(url)
            .header("Accept", "application/vnd.nsq; version=1.0")
            .send()
            .await
            .map_err(|e| format!("POST {url}: {e}"))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let body = resp.text().await.unwrap_or_default();
        Err(format!("POST {url}: status {status}: {}", body.trim()))
    }

    /// POST `path?qs` to every address; Err only if all failed.
    async fn post_all(&self, addrs: &[String], path: &str, qs: &str) -> Partial<()> {
        let futs = addrs
            .iter()
            .map(|a| {
                let url = format!("{}{path}?{qs}", base_url(a));
                async move { self.post(&url).await }
            })
            .collect::<Vec<_>>();
        let results = join_all(futs).await;
        collect_partial(results, addrs.is_empty()).map(|(_, w)| ((), w))
    }

    /// Topics: from every nsqlookupd's /topics, or every nsqd's /stats.
    pub async fn topics(&self) -> Partial<Vec<String>> {
        let lookupd = self.lookupd_addresses();
        let urls: Vec<String> = if lookupd.is_empty() {
            self.nsqd
                .iter()
                .map(|a| format!("{}/stats?format=json&include_clients=false", base_url(a)))
                .collect()
        } else {
            lookupd
                .iter()
                .map(|a| format!("{}/topics", base_url(a)))
                .collect()
        };
        let results = join_all(urls.iter().map(|u| self.get_json(u)).collect()).await;
        let (docs, warnings) = collect_partial(results, urls.is_empty())?;
        let mut set = BTreeSet::new();
        for d in docs {
            if lookupd.is_empty() {
                let stats: RawStats = serde_json::from_value(d).unwrap_or_default();
                set.extend(stats.topics.into_iter().map(|t| t.topic_name));
            } else if let Some(ts) = d.get("topics").and_then(Value::as_array) {
                set.extend(ts.iter().filter_map(Value::as_str).map(String::from));
            }
        }
        Ok((set.into_iter().collect(), warnings))
    }

    /// Channels of a topic known to the nsqlookupds.
    pub async fn lookupd_topic_channels(&self, topic: &str) -> Partial<Vec<String>> {
        let lookupd = self.lookupd_addresses();
        let urls: Vec<String> = lookupd
            .iter()
            .map(|a| format!("{}/channels?topic={}", base_url(a), qs_escape(topic)))
            .collect();
        let results = join_all(urls.iter().map(|u| self.get_json(u)).collect()).await;
        let (docs, warnings) = collect_partial(results, urls.is_empty())?;
        let mut set = BTreeSet::new();
        for d in docs {
            if let Some(cs) = d.get("channels").and_then(Value::as_array) {
                set.extend(cs.iter().filter_map(Value::as_str).map(String::from));
            }
        }
        Ok((set.into_iter().collect(), warnings))
    }

    /// Every nsqd: from nsqlookupd's /nodes (merged across lookupds), or each nsqd's /info.
    pub async fn producers(&self) -> Partial<Vec<Producer>> {
        let lookupd = self.lookupd_addresses();
        if lookupd.is_empty() {
            return self.nsqd_producers(&self.nsqd).await;
        }
        let urls: Vec<String> = lookupd
            .iter()
            .map(|a| format!("{}/nodes", base_url(a)))
            .collect();
        let results = join_all(urls.iter().map(|u| self.get_json(u)).collect()).await;
        let mut warnings = Vec::new();
        let mut any = false;
        let mut merged: BTreeMap<String, Producer> = BTreeMap::new();
        for (addr, r) in lookupd.iter().zip(results) {
            let d = match r {
                Ok(d) => d,
                Err(e) => {
                    warnings.push(e);
                    continue;
                }
            };
            any = true;
            let raws: Vec<RawProducer> = d
                .get("producers")
                .cloned()
                .and_then(|v| serde_json::from_value(v).ok())
                .unwrap_or_default();
            for raw in raws {
                merge_producer(&mut merged, raw, addr);
            }
        }
        if !any {
            return Err(format!(
                "failed to query any nsqlookupd: {}",
                warnings.join("; ")
            ));
        }
        let mut producers: Vec<Producer> = merged.into_values().collect();
        mark_out_of_date(&mut producers);
        producers
            .sort_by(|a, b| (&a.hostname, a.http_address()).cmp(&(&b.hostname, b.http_address())));
        Ok((producers, warnings))
    }

    async fn nsqd_producers(&self, addrs: &[String]) -> Partial<Vec<Producer>> {
        let urls: Vec<String> = addrs
            .iter()
            .map(|a| format!("{}/info", base_url(a)))
            .collect();
        let results = join_all(urls.iter().map(|u| self.get_json(u)).collect()).await;
        // Their topics, as NSQ's nsqadmin lists them without nsqlookupd: from each /stats.
        let stats_urls: Vec<String> = addrs
            .iter()
            .map(|a| format!("{}/stats?format=json&include_clients=false", base_url(a)))
            .collect();
        let stats = join_all(stats_urls.iter().map(|u| self.get_json(u)).collect()).await;
        let answered: Vec<Result<(Value, Vec<ProducerTopic>), String>> = results
            .into_iter()
            .zip(stats)
            .map(|(info, stats)| {
                let topics = stats
                    .ok()
                    .and_then(|s| s.get("topics").and_then(Value::as_array).cloned())
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|t| t.get("topic_name").and_then(Value::as_str))
                    .map(|name| ProducerTopic {
                        topic: name.to_string(),
                        tombstoned: false,
                    })
                    .collect();
                info.map(|i| (i, topics))
            })
            .collect();
        let (docs, warnings) = collect_partial(answered, urls.is_empty())?;
        let mut producers: Vec<Producer> = docs
            .into_iter()
            .map(|(d, topics)| {
                let raw: RawProducer = serde_json::from_value(d).unwrap_or_default();
                Producer {
                    remote_addresses: Vec::new(),
                    remote_address: String::new(),
                    hostname: raw.hostname,
                    broadcast_address: raw.broadcast_address,
                    tcp_port: raw.tcp_port,
                    http_port: raw.http_port,
                    version: raw.version,
                    topics,
                    out_of_date: false,
                }
            })
            .collect();
        mark_out_of_date(&mut producers);
        Ok((producers, warnings))
    }

    /// The nsqd that have `topic`: nsqlookupd's /lookup, or the nsqd whose /stats has it.
    pub async fn topic_producers(&self, topic: &str) -> Partial<Vec<Producer>> {
        let lookupd = self.lookupd_addresses();
        if lookupd.is_empty() {
            let (all, mut warnings) = self.nsqd_producers(&self.nsqd).await?;
            let (stats, w2) = self.node_stats(&all, Some(topic), false).await?;
            warnings.extend(w2);
            let have: BTreeSet<String> = stats.iter().map(|t| t.node.clone()).collect();
            let producers = all
                .into_iter()
                .filter(|p| have.contains(&p.http_address()))
                .collect();
            return Ok((producers, warnings));
        }
        let urls: Vec<String> = lookupd
            .iter()
            .map(|a| format!("{}/lookup?topic={}", base_url(a), qs_escape(topic)))
            .collect();
        let results = join_all(urls.iter().map(|u| self.get_json(u)).collect()).await;
        let mut warnings = Vec::new();
        let mut any = false;
        let mut merged: BTreeMap<String, Producer> = BTreeMap::new();
        for (addr, r) in lookupd.iter().zip(results) {
            match r {
                Ok(d) => {
                    any = true;
                    let raws: Vec<RawProducer> = d
                        .get("producers")
                        .cloned()
                        .and_then(|v| serde_json::from_value(v).ok())
                        .unwrap_or_default();
                    for raw in raws {
                        merge_producer(&mut merged, raw, addr);
                    }
                }
                // An nsqlookupd that never heard of the topic answers 404: no producers.
                Err(e) if e.contains("TOPIC_NOT_FOUND") => any = true,
                Err(e) => warnings.push(e),
            }
        }
        if !any {
            return Err(format!(
                "failed to query any nsqlookupd: {}",
                warnings.join("; ")
            ));
        }
        Ok((merged.into_values().collect(), warnings))
    }

    /// Each producer's /stats, one TopicStats per (node, topic), sorted by topic then host.
    pub async fn node_stats(
        &self,
        producers: &[Producer],
        topic: Option<&str>,
        include_clients: bool,
    ) -> Partial<Vec<TopicStats>> {
        let urls: Vec<String> = producers
            .iter()
            .map(|p| {
                let mut u = format!(
                    "http://{}/stats?format=json&include_clients={include_clients}",
                    p.http_address()
                );
                if let Some(t) = topic {
                    u.push_str("&topic=");
                    u.push_str(&qs_escape(t));
                }
                u
            })
            .collect();
        let results = join_all(urls.iter().map(|u| self.get_json(u)).collect()).await;
        let mut warnings = Vec::new();
        let mut out = Vec::new();
        let mut any = false;
        for (p, r) in producers.iter().zip(results) {
            match r {
                Ok(d) => {
                    any = true;
                    let stats: RawStats = match serde_json::from_value(d) {
                        Ok(s) => s,
                        Err(e) => {
                            warnings.push(format!("{}: invalid /stats: {e}", p.http_address()));
                            continue;
                        }
                    };
                    let node = p.http_address();
                    if !stats.health.is_empty() && stats.health != "OK" {
                        warnings.push(format!("{node}: {}", stats.health));
                    }
                    for t in stats.topics {
                        if topic.is_some_and(|want| want != t.topic_name) {
                            continue;
                        }
                        out.push(convert_topic(t, &node, &p.hostname));
                    }
                }
                Err(e) => warnings.push(e),
            }
        }
        if !any && !producers.is_empty() {
            return Err(format!("failed to query any nsqd: {}", warnings.join("; ")));
        }
        out.sort_by(|a, b| {
            (&a.topic_name, &a.hostname, &a.node).cmp(&(&b.topic_name, &b.hostname, &b.node))
        });
        Ok((out, warnings))
    }

    // -------------------------------------------------------------- actions

    /// Create a topic (and a channel) in every nsqlookupd; without lookupd, on every nsqd.
    pub async fn create_topic_channel(&self, topic: &str, channel: &str) -> Partial<()> {
        let lookupd = self.lookupd_addresses();
        let addrs = if lookupd.is_empty() {
            self.nsqd.clone()
        } else {
            lookupd
        };
        let (_, mut warnings) = self
            .post_all(
                &addrs,
                "/topic/create",
                &format!("topic={}", qs_escape(topic)),
            )
            .await?;
        if !channel.is_empty() {
            let qs = format!("topic={}&channel={}", qs_escape(topic), qs_escape(channel));
            let (_, w) = self.post_all(&addrs, "/channel/create", &qs).await?;
            warnings.extend(w);
        }
        Ok(((), warnings))
    }

    /// pause / unpause / empty a topic (channel empty: "") on every nsqd that has it.
    pub async fn topic_channel_action(
        &self,
        topic: &str,
        channel: &str,
        action: &str,
    ) -> Partial<()> {
        let (producers, mut warnings) = self.topic_producers(topic).await?;
        let addrs: Vec<String> = producers.iter().map(Producer::http_address).collect();
        let (path, qs) = if channel.is_empty() {
            (
                format!("/topic/{action}"),
                format!("topic={}", qs_escape(topic)),
            )
        } else {
            (
                format!("/channel/{action}"),
                format!("topic={}&channel={}", qs_escape(topic), qs_escape(channel)),
            )
        };
        let (_, w) = self.post_all(&addrs, &path, &qs).await?;
        warnings.extend(w);
        Ok(((), warnings))
    }

    /// Delete a topic (channel "") or a channel: producers are found first, then the
    /// nsqlookupds forget it, then every nsqd deletes it.
    pub async fn delete(&self, topic: &str, channel: &str) -> Partial<()> {
        let (producers, mut warnings) = self.topic_producers(topic).await?;
        let (path, qs) = if channel.is_empty() {
            ("/topic/delete", format!("topic={}", qs_escape(topic)))
        } else {
            (
                "/channel/delete",
                format!("topic={}&channel={}", qs_escape(topic), qs_escape(channel)),
            )
        };
        let lookupd = self.lookupd_addresses();
        if !lookupd.is_empty() {
            match self.post_all(&lookupd, path, &qs).await {
                Ok((_, w)) => warnings.extend(w),
                // A lookupd that no longer knows the topic/channel is fine.
                Err(e) if e.contains("NOT_FOUND") => {}
                Err(e) => warnings.push(e),
            }
        }
        let addrs: Vec<String> = producers.iter().map(Producer::http_address).collect();
        let (_, w) = self.post_all(&addrs, path, &qs).await?;
        warnings.extend(w);
        Ok(((), warnings))
    }

    /// Tombstone `node` for `topic` in every nsqlookupd, then delete the topic on that nsqd.
    pub async fn tombstone_node_for_topic(&self, topic: &str, node: &str) -> Partial<()> {
        let lookupd = self.lookupd_addresses();
        let qs = format!("topic={}&node={}", qs_escape(topic), qs_escape(node));
        let (_, mut warnings) = self.post_all(&lookupd, "/topic/tombstone", &qs).await?;
        let (_, w) = self
            .post_all(
                &[node.to_string()],
                "/topic/delete",
                &format!("topic={}", qs_escape(topic)),
            )
            .await?;
        warnings.extend(w);
        Ok(((), warnings))
    }
}

fn merge_producer(merged: &mut BTreeMap<String, Producer>, raw: RawProducer, lookupd: &str) {
    let key = join_host_port(&raw.broadcast_address, raw.http_port);
    let p = merged.entry(key).or_insert_with(|| Producer {
        remote_address: raw.remote_address.clone(),
        hostname: raw.hostname.clone(),
        broadcast_address: raw.broadcast_address.clone(),
        tcp_port: raw.tcp_port,
        http_port: raw.http_port,
        version: raw.version.clone(),
        ..Default::default()
    });
    p.remote_addresses
        .push(format!("{lookupd}/{}", raw.remote_address));
    for (i, t) in raw.topics.iter().enumerate() {
        let tomb = raw.tombstones.get(i).copied().unwrap_or(false);
        match p.topics.iter_mut().find(|x| &x.topic == t) {
            Some(x) => x.tombstoned |= tomb,
            None => p.topics.push(ProducerTopic {
                topic: t.clone(),
                tombstoned: tomb,
            }),
        }
    }
    p.topics.sort_by(|a, b| a.topic.cmp(&b.topic));
}

fn mark_out_of_date(producers: &mut [Producer]) {
    let max = producers
        .iter()
        .map(|p| version_key(&p.version))
        .max()
        .unwrap_or_default();
    for p in producers {
        p.out_of_date = version_key(&p.version) < max;
    }
}

/// Split results into successes and warnings; all failed (and there was something to ask)
/// is an error.
fn collect_partial<T>(results: Vec<Result<T, String>>, none_asked: bool) -> Partial<Vec<T>> {
    let mut ok = Vec::new();
    let mut warnings = Vec::new();
    for r in results {
        match r {
            Ok(v) => ok.push(v),
            Err(e) => warnings.push(e),
        }
    }
    if ok.is_empty() && !none_asked {
        return Err(warnings.join("; "));
    }
    Ok((ok, warnings))
}

/// Run futures concurrently, results in input order.
async fn join_all<F, T>(futs: Vec<F>) -> Vec<T>
where
    F: std::future::Future<Output = T>,
{
    let mut pinned: Vec<std::pin::Pin<Box<F>>> = futs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<T>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in pinned.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

/// Aggregate per-node topic stats into one TopicStats per topic (node "*").
pub fn aggregate_topics(node_stats: &[TopicStats]) -> Vec<TopicStats> {
    let mut by_topic: BTreeMap<String, TopicStats> = BTreeMap::new();
    for t in node_stats {
        by_topic
            .entry(t.topic_name.clone())
            .or_insert_with(|| TopicStats {
                node: "*".into(),
                topic_name: t.topic_name.clone(),
                ..Default::default()
            })
            .add(t);
    }
    by_topic.into_values().collect()
}

/// Per-(topic, channel, node) message counts: NSQ's /api/counter stats map.
pub fn counter_stats(node_stats: &[TopicStats]) -> HashMap<String, Value> {
    let mut m = HashMap::new();
    for t in node_stats {
        for c in &t.channels {
            let key = format!("{}:{}:{}", t.topic_name, c.channel_name, t.node);
            m.insert(
                key,
                serde_json::json!({
                    "node": t.node,
                    "topic_name": t.topic_name,
                    "channel_name": c.channel_name,
                    "message_count": c.message_count,
                }),
            );
        }
    }
    m
}

/// NSQ's "WARNING: a; b" text for partial failures, "" when none.
pub fn warn_message(warnings: &[String]) -> String {
    if warnings.is_empty() {
        String::new()
    } else {
        format!("WARNING: {}", warnings.join("; "))
    }
}

/// Used by the history poller and /metrics: every node's full stats in one go.
pub async fn cluster_snapshot(ci: &ClusterInfo) -> Partial<(Vec<Producer>, Vec<TopicStats>)> {
    let (producers, mut warnings) = ci.producers().await?;
    let (stats, w) = ci.node_stats(&producers, None, false).await?;
    warnings.extend(w);
    Ok(((producers, stats), warnings))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node_topic(node: &str, depth: u64, backend: u64, ch: &[(&str, u64, u64)]) -> TopicStats {
        convert_topic(
            RawTopic {
                topic_name: "t".into(),
                depth,
                backend_depth: backend,
                message_count: depth * 10,
                channels: ch
                    .iter()
                    .map(|(n, d, infl)| RawChannel {
                        channel_name: n.to_string(),
                        depth: *d,
                        in_flight_count: *infl,
                        e2e_processing_latency: RawLatency {
                            count: 2,
                            percentiles: Some(vec![RawPercentile {
                                quantile: 0.99,
                                value: *d as f64,
                            }]),
                        },
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            },
            node,
            node,
        )
    }

    #[test]
    fn aggregates_like_nsq() {
        let a = node_topic("a:1", 5, 2, &[("c1", 3, 1), ("c2", 1, 0)]);
        let b = node_topic("b:1", 7, 0, &[("c1", 4, 2)]);
        let all = aggregate_topics(&[a, b]);
        assert_eq!(all.len(), 1);
        let t = &all[0];
        assert_eq!(t.node, "*");
        assert_eq!((t.depth, t.memory_depth, t.backend_depth), (12, 10, 2));
        assert_eq!(t.message_count, 120);
        assert_eq!(t.nodes.len(), 2);
        let c1 = t.channels.iter().find(|c| c.channel_name == "c1").unwrap();
        assert_eq!((c1.depth, c1.in_flight_count, c1.nodes.len()), (7, 3, 2));
        let p = &c1.e2e_processing_latency.percentiles[0];
        assert_eq!(p["min"], 3.0);
        assert_eq!(p["max"], 4.0);
        assert_eq!(p["average"], 3.5);
        assert_eq!(c1.e2e_processing_latency.count, 4);
        let counters = counter_stats(&t.nodes);
        assert_eq!(counters.len(), 3);
        assert!(counters.contains_key("t:c1:a:1"));
    }

    #[test]
    fn versions_and_escaping() {
        assert!(version_key("1.10.0") > version_key("1.9.9"));
        assert!(version_key("junk") < version_key("0.0.1"));
        assert_eq!(qs_escape("a#ephemeral b"), "a%23ephemeral%20b");
        assert_eq!(join_host_port("::1", 5), "[::1]:5");
        assert_eq!(base_url("h:1"), "http://h:1");
        assert_eq!(base_url("https://h:1/"), "https://h:1");
        assert_eq!(warn_message(&[]), "");
        assert_eq!(warn_message(&["x".into()]), "WARNING: x");
    }
}
