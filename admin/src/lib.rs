//! nsqadmin: a web UI and NSQ's JSON API over an NSQ cluster (nsq-rs or NSQ's own daemons),
//! reading nsqlookupd's and nsqd's HTTP APIs. Beyond NSQ's nsqadmin: graphs from its own
//! in-memory history instead of Graphite, Prometheus `/metrics`, `--admin-user` access
//! control for the action buttons, and optional HTTP basic auth.

#![forbid(unsafe_code)]

pub mod clusterinfo;
pub mod history;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod options;
pub mod pages;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use clusterinfo::ClusterInfo;
use history::History;
use http::{Access, RequestInfo};
use options::{Cidr, Options};

pub const NSQ_COMPAT_VERSION: &str = "1.3.0";

/// Everything the HTTP handlers share.
pub struct Admin {
    pub opts: Options,
    /// URL prefix without trailing slash ("" at the root).
    pub base: String,
    pub ci: ClusterInfo,
    pub history: History,
    /// user -> bcrypt hash, when --basic-auth-file is given.
    pub basic_auth: Option<HashMap<String, String>>,
    /// Authorization header values already verified (bcrypt is slow on purpose).
    pub auth_cache: Mutex<HashSet<String>>,
    pub cidr: Option<Cidr>,
    /// Current log level (PUT /config/log_level changes it).
    pub log_level: Mutex<String>,
    /// Queue of admin-action notifications for --notification-http-endpoint.
    notify_tx: Option<mpsc::Sender<Value>>,
    hostname: String,
}

/// Read `user:hash` lines (bcrypt hashes); blank lines and `#` comments are skipped.
pub fn load_basic_auth(path: &std::path::Path) -> anyhow::Result<HashMap<String, String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let mut users = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (user, hash) = line
            .split_once(':')
            .with_context(|| format!("{}:{}: expected user:hash", path.display(), i + 1))?;
        if !hash.starts_with("$2") {
            anyhow::bail!("{}:{}: not a bcrypt hash", path.display(), i + 1);
        }
        users.insert(user.to_string(), hash.to_string());
    }
    if users.is_empty() {
        anyhow::bail!("{}: no users", path.display());
    }
    Ok(users)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Admin {
    pub fn new(opts: Options) -> anyhow::Result<Admin> {
        let ci = ClusterInfo::new(&opts)?;
        let basic_auth = match &opts.basic_auth_file {
            Some(p) => Some(load_basic_auth(p)?),
            None => None,
        };
        let cidr = if opts.allow_config_from_cidr.is_empty() {
            None
        } else {
            Some(Cidr::parse(&opts.allow_config_from_cidr).map_err(anyhow::Error::msg)?)
        };
        Ok(Admin {
            base: opts.base(),
            history: History::new(opts.history_interval, opts.history_window),
            log_level: Mutex::new(opts.log_level.clone()),
            ci,
            basic_auth,
            auth_cache: Mutex::new(HashSet::new()),
            cidr,
            notify_tx: None,
            hostname: hostname::get()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_default(),
            opts,
        })
    }

    /// Queue NSQ's admin-action notification (never blocks; dropped if the queue is full).
    pub fn notify(
        &self,
        action: &str,
        topic: &str,
        channel: &str,
        node: &str,
        access: &Access,
        req: &RequestInfo,
    ) {
        let Some(tx) = &self.notify_tx else {
            return;
        };
        let header = |k: &str| {
            req.headers
                .get(k)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        let scheme = if header("X-Scheme") == "https" {
            "https"
        } else {
            "http"
        };
        let mut a = json!({
            "action": action,
            "topic": topic,
            "timestamp": unix_now(),
            "remote_ip": req.remote.to_string(),
            "user_agent": header("User-Agent"),
            "url": format!("{scheme}://{}{}", header("Host"), req.uri),
            "via": self.hostname,
        });
        if let Some(o) = a.as_object_mut() {
            if !channel.is_empty() {
                o.insert("channel".into(), json!(channel));
            }
            if !node.is_empty() {
                o.insert("node".into(), json!(node));
            }
            if let Some(u) = &access.user {
                o.insert("user".into(), json!(u));
            }
        }
        if tx.try_send(a).is_err() {
            tracing::warn!(
                action,
                topic,
                "notification queue full; notification dropped"
            );
        }
    }

    /// An option's value by NSQ's config name, for GET /config/:opt.
    pub fn config_value(&self, name: &str) -> Option<Value> {
        let o = &self.opts;
        Some(match name {
            "nsqlookupd_http_addresses" => json!(self.ci.lookupd_addresses()),
            "nsqd_http_addresses" => json!(self.ci.nsqd_addresses()),
            "log_level" => json!(*self.log_level.lock()),
            "log_prefix" => json!(o.log_prefix),
            "http_address" => json!(o.http_address),
            "base_path" => json!(o.base_path),
            "graphite_url" => json!(o.graphite_url),
            "proxy_graphite" => json!(o.proxy_graphite),
            "statsd_prefix" => json!(o.statsd_prefix),
            "statsd_counter_format" => json!(o.statsd_counter_format),
            "statsd_gauge_format" => json!(o.statsd_gauge_format),
            "statsd_interval" => json!(o.statsd_interval.as_nanos() as u64),
            "http_client_connect_timeout" => {
                json!(o.http_client_connect_timeout.as_nanos() as u64)
            }
            "http_client_request_timeout" => {
                json!(o.http_client_request_timeout.as_nanos() as u64)
            }
            "allow_config_from_cidr" => json!(o.allow_config_from_cidr),
            "notification_http_endpoint" => json!(o.notification_http_endpoint),
            "acl_http_header" => json!(o.acl_http_header),
            "admin_users" => json!(o.admin_users),
            _ => return None,
        })
    }
}

/// Poll the cluster every `--history-interval` and record depths and counts for the graphs.
async fn poll_history(admin: Arc<Admin>) {
    let mut tick = tokio::time::interval(admin.opts.history_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match clusterinfo::cluster_snapshot(&admin.ci).await {
            Ok(((_, stats), warnings)) => {
                for w in warnings {
                    tracing::debug!(warning = %w, "history poll: partial answer");
                }
                admin.history.record_poll(unix_now(), &stats);
            }
            Err(e) => tracing::warn!(error = %e, "history poll failed"),
        }
    }
}

/// POST each queued notification to the endpoint, one at a time.
async fn send_notifications(
    client: reqwest::Client,
    endpoint: String,
    mut rx: mpsc::Receiver<Value>,
) {
    while let Some(n) = rx.recv().await {
        match client.post(&endpoint).json(&n).send().await {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => tracing::warn!(status = %r.status(), "notification endpoint refused"),
            Err(e) => tracing::warn!(error = %e, "notification failed"),
        }
    }
}

/// Run until SIGINT/SIGTERM.
pub async fn run(opts: Options) -> anyhow::Result<()> {
    if !opts.graphite_url.is_empty() || opts.proxy_graphite {
        tracing::warn!(
            graphite_url = %opts.graphite_url,
            "Graphite is not used: graphs come from nsqadmin's own history (--history-interval, --history-window)"
        );
    }
    let listener =
        TcpListener::bind(edge::resolve(&opts.http_address).map_err(anyhow::Error::msg)?)
            .await
            .with_context(|| format!("listen on {}", opts.http_address))?;
    let mut admin = Admin::new(opts)?;
    if !admin.opts.notification_http_endpoint.is_empty() {
        let (tx, rx) = mpsc::channel(1024);
        admin.notify_tx = Some(tx);
        tokio::spawn(send_notifications(
            admin.ci.client().clone(),
            admin.opts.notification_http_endpoint.clone(),
            rx,
        ));
    }
    let admin = Arc::new(admin);
    tracing::info!(http = %listener.local_addr()?, lookupd = ?admin.ci.lookupd_addresses(), nsqd = ?admin.ci.nsqd_addresses(), "nsqadmin listening");
    let poller = tokio::spawn(poll_history(admin.clone()));
    let app = http::router(admin.clone());
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = stop_rx.changed().await;
        })
        .await
    });
    edge::signal::shutdown_signal().await;
    tracing::info!("shutting down");
    poller.abort();
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("users");
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        std::fs::write(&p, format!("# ops\nalice:{hash}\n\n")).unwrap();
        let users = load_basic_auth(&p).unwrap();
        assert!(bcrypt::verify("s3cret", &users["alice"]).unwrap());
        std::fs::write(&p, "bob:plaintext\n").unwrap();
        assert!(load_basic_auth(&p).is_err());
    }
}
