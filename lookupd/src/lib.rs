//! nsqlookupd: the directory nsqd instances register with and consumers ask where a topic
//! is produced. TCP (protocol V1) for nsqd, HTTP for consumers and tools, with NSQ's
//! paths, flags and JSON shapes.

#![forbid(unsafe_code)]

pub mod db;
pub mod logging;
pub mod metrics;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bytes::BytesMut;
use clap::Parser;
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use db::{Db, PeerInfo};
use protocol::lookup as v1;

pub const NSQ_COMPAT_VERSION: &str = "1.3.0";

pub use protocol::cli::parse_duration;

fn default_hostname() -> String {
    hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}

#[derive(Parser, Debug, Clone)]
#[command(
    name = "nsqlookupd",
    about = "nsqlookupd: NSQ-compatible directory service",
    disable_version_flag = true,
    args_override_self = true
)]
pub struct Options {
    /// path to config file (NSQ's TOML keys: flag names with underscores)
    #[arg(long)]
    pub config: Option<std::path::PathBuf>,
    /// print version string
    #[arg(long)]
    pub version: bool,
    /// [deprecated] has no effect, use --log-level
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub verbose: Option<String>,
    /// log level: debug, info, warn, error, or fatal
    #[arg(long, default_value = "info")]
    pub log_level: String,
    /// log message prefix
    #[arg(long, default_value = "[nsqlookupd] ")]
    pub log_prefix: String,
    /// <addr>:<port> to listen on for TCP clients
    #[arg(long, default_value = "0.0.0.0:4160")]
    pub tcp_address: String,
    /// <addr>:<port> to listen on for HTTP clients
    #[arg(long, default_value = "0.0.0.0:4161")]
    pub http_address: String,
    /// address of this lookupd node (default: hostname)
    #[arg(long, default_value_t = default_hostname())]
    pub broadcast_address: String,
    /// duration of time a producer will remain in the active list since its last ping
    #[arg(long, value_parser = parse_duration, default_value = "5m0s")]
    pub inactive_producer_timeout: Duration,
    /// duration of time a producer will remain tombstoned if registration remains
    #[arg(long, value_parser = parse_duration, default_value = "45s")]
    pub tombstone_lifetime: Duration,
}

/// NSQ's config-file names for nsqlookupd's flags.
pub fn config_spec() -> protocol::cli::ConfigSpec<'static> {
    use clap::CommandFactory;
    protocol::cli::ConfigSpec {
        flags: Options::command()
            .get_arguments()
            .filter_map(|a| a.get_long().map(String::from))
            .collect(),
        renames: &[],
        durations: &["inactive-producer-timeout", "tombstone-lifetime"],
    }
}

pub struct Lookupd {
    pub opts: Options,
    pub db: Mutex<Db>,
    next_id: AtomicU64,
    pub tcp_addr: std::sync::OnceLock<SocketAddr>,
    pub http_addr: std::sync::OnceLock<SocketAddr>,
}

fn resolve(a: &str) -> anyhow::Result<SocketAddr> {
    use std::net::ToSocketAddrs;
    let a = if let Some(p) = a.strip_prefix(':') {
        format!("0.0.0.0:{p}")
    } else {
        a.to_string()
    };
    a.to_socket_addrs()?
        .next()
        .context("address resolves to nothing")
}

/// Run until SIGINT/SIGTERM.
pub async fn run(opts: Options) -> anyhow::Result<()> {
    let tcp = TcpListener::bind(resolve(&opts.tcp_address)?)
        .await
        .with_context(|| format!("listen on {}", opts.tcp_address))?;
    let http = TcpListener::bind(resolve(&opts.http_address)?)
        .await
        .with_context(|| format!("listen on {}", opts.http_address))?;
    let l = Arc::new(Lookupd {
        opts,
        db: Mutex::new(Db::default()),
        next_id: AtomicU64::new(1),
        tcp_addr: Default::default(),
        http_addr: Default::default(),
    });
    let _ = l.tcp_addr.set(tcp.local_addr()?);
    let _ = l.http_addr.set(http.local_addr()?);
    tracing::info!("TCP: listening on {}", tcp.local_addr()?);
    tracing::info!("HTTP: listening on {}", http.local_addr()?);
    let (stop_tx, stop_rx) = watch::channel(false);
    let accept = {
        let l = l.clone();
        let mut stop = stop_rx.clone();
        let conns = stop_rx.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    r = tcp.accept() => match r {
                        Ok((s, remote)) => { tokio::spawn(serve_tcp(l.clone(), s, remote, conns.clone())); }
                        Err(e) => { tracing::warn!(error = %e, "accept failed"); tokio::time::sleep(Duration::from_millis(50)).await; }
                    },
                    _ = stop.changed() => return,
                }
            }
        })
    };
    let mut http_stop = stop_rx.clone();
    let app = router(l.clone());
    let http_task = tokio::spawn(async move {
        let _ = axum::serve(
            http,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = http_stop.changed().await;
        })
        .await;
    });
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    }
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    let _ = accept.await;
    let _ = tokio::time::timeout(Duration::from_secs(5), http_task).await;
    Ok(())
}

/// Write one V1 response: 4-byte big-endian length, then the data.
async fn respond(s: &mut TcpStream, data: &[u8]) -> std::io::Result<()> {
    let mut v = BytesMut::with_capacity(4 + data.len());
    v1::encode_response(&mut v, data);
    s.write_all(&v).await
}

async fn serve_tcp(
    l: Arc<Lookupd>,
    mut s: TcpStream,
    remote: SocketAddr,
    mut stop: watch::Receiver<bool>,
) {
    let id = l.next_id.fetch_add(1, Ordering::Relaxed);
    let mut magic = [0u8; 4];
    match tokio::time::timeout(Duration::from_secs(30), s.read_exact(&mut magic)).await {
        Ok(Ok(_)) if &magic == v1::MAGIC_V1 => {}
        Ok(Ok(_)) => {
            let _ = respond(&mut s, b"E_BAD_PROTOCOL").await;
            return;
        }
        _ => return,
    }
    let mut buf = BytesMut::with_capacity(4096);
    let mut identified = false;
    let reason = loop {
        // Execute every complete command in the buffer.
        let fatal = loop {
            match next_command(&l, id, remote, &mut buf, &mut identified) {
                Ok(None) => break None,
                Ok(Some(resp)) => {
                    if respond(&mut s, &resp).await.is_err() {
                        break Some("write failed".to_string());
                    }
                }
                Err(text) => {
                    let _ = respond(&mut s, text.as_bytes()).await;
                    break Some(text);
                }
            }
        };
        if let Some(r) = fatal {
            break r;
        }
        // Producers ping every 15 s; allow two missed pings before giving up.
        tokio::select! {
            r = tokio::time::timeout(Duration::from_secs(60), s.read_buf(&mut buf)) => match r {
                Ok(Ok(0)) => break "closed".to_string(),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => break e.to_string(),
                Err(_) => break "idle timeout".to_string(),
            },
            _ = stop.changed() => break "shutdown".to_string(),
        }
    };
    if identified {
        tracing::info!(client = %remote, reason, "producer disconnected");
    }
    l.db.lock().remove_peer(id);
}

/// Parse and execute one command if complete: `Ok(Some(response))`, `Ok(None)` when more
/// input is needed, `Err(text)` for an error (which closes the connection, as in NSQ).
fn next_command(
    l: &Lookupd,
    id: u64,
    remote: SocketAddr,
    buf: &mut BytesMut,
    identified: &mut bool,
) -> Result<Option<Vec<u8>>, String> {
    let cmd = match v1::parse_command(buf, *identified) {
        Ok(Some(c)) => c,
        Ok(None) => return Ok(None),
        Err(e) => return Err(e.0),
    };
    match cmd {
        v1::Command::Ping => {
            l.db.lock().touch(id);
            Ok(Some(b"OK".to_vec()))
        }
        v1::Command::Identify(body) => {
            let v = v1::PeerIdentity::from_body(&body).map_err(|e| e.0)?;
            let info = PeerInfo {
                id,
                remote_address: remote.to_string(),
                hostname: v.hostname,
                broadcast_address: v.broadcast_address,
                tcp_port: v.tcp_port,
                http_port: v.http_port,
                version: v.version,
            };
            tracing::info!(client = %remote, node = %info.node_key(), "producer identified");
            l.db.lock().add_peer(info);
            *identified = true;
            let resp = serde_json::json!({
                "tcp_port": l.tcp_addr.get().map(|a| a.port()).unwrap_or(0),
                "http_port": l.http_addr.get().map(|a| a.port()).unwrap_or(0),
                "version": NSQ_COMPAT_VERSION,
                "broadcast_address": l.opts.broadcast_address,
                "hostname": default_hostname(),
            });
            Ok(Some(resp.to_string().into_bytes()))
        }
        v1::Command::Register { topic, channel } => {
            l.db.lock().register(id, &topic, channel.as_deref());
            Ok(Some(b"OK".to_vec()))
        }
        v1::Command::Unregister { topic, channel } => {
            l.db.lock().unregister(id, &topic, channel.as_deref());
            Ok(Some(b"OK".to_vec()))
        }
    }
}

// ---------------------------------------------------------------- HTTP

struct ApiError(StatusCode, &'static str);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        json(self.0, serde_json::json!({ "message": self.1 }))
    }
}

fn json(status: StatusCode, v: serde_json::Value) -> Response {
    let mut r = (status, v.to_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

fn param(q: &Option<String>, key: &str) -> Option<String> {
    q.as_deref()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == key).then(|| decode(v))
    })
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 3 <= b.len() => {
                match std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).to_string()
}

fn topic_arg(q: &Option<String>) -> Result<String, ApiError> {
    let t = param(q, "topic").ok_or(ApiError(StatusCode::BAD_REQUEST, "MISSING_ARG_TOPIC"))?;
    if !protocol::names::is_valid_topic_name(&t) {
        return Err(ApiError(StatusCode::BAD_REQUEST, "INVALID_ARG_TOPIC"));
    }
    Ok(t)
}

fn channel_arg(q: &Option<String>) -> Result<String, ApiError> {
    let c = param(q, "channel").ok_or(ApiError(StatusCode::BAD_REQUEST, "MISSING_ARG_CHANNEL"))?;
    if !protocol::names::is_valid_channel_name(&c) {
        return Err(ApiError(StatusCode::BAD_REQUEST, "INVALID_ARG_CHANNEL"));
    }
    Ok(c)
}

type Shared = Arc<Lookupd>;

pub fn router(l: Shared) -> Router {
    Router::new()
        .route("/ping", get(|| async { "OK" }))
        .route(
            "/info",
            get(|| async {
                json(
                    StatusCode::OK,
                    serde_json::json!({ "version": NSQ_COMPAT_VERSION }),
                )
            }),
        )
        .route(
            "/debug",
            get(|State(l): State<Shared>| async move { json(StatusCode::OK, l.db.lock().dump()) }),
        )
        .route("/lookup", get(lookup))
        .route(
            "/topics",
            get(|State(l): State<Shared>| async move {
                json(
                    StatusCode::OK,
                    serde_json::json!({ "topics": l.db.lock().topics() }),
                )
            }),
        )
        .route("/channels", get(channels))
        .route("/nodes", get(nodes))
        .route("/metrics", get(metrics::handler))
        .route("/topic/create", post(topic_create))
        .route("/topic/delete", post(topic_delete))
        .route("/channel/create", post(channel_create))
        .route("/channel/delete", post(channel_delete))
        .route("/topic/tombstone", post(tombstone))
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "NOT_FOUND") })
        .method_not_allowed_fallback(|| async {
            ApiError(StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED")
        })
        .with_state(l)
        .layer(axum::middleware::from_fn(around))
}

/// Every answer but /ping carries NSQ's `X-NSQ-Content-Type`, and every request is logged
/// at INFO, as NSQ's nsqlookupd does.
async fn around(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let started = std::time::Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let remote = req
        .extensions()
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map(|c| c.0.to_string())
        .unwrap_or_default();
    let mut resp = next.run(req).await;
    if path != "/ping" {
        resp.headers_mut().insert(
            "X-NSQ-Content-Type",
            HeaderValue::from_static("nsq; version=1.0"),
        );
    }
    tracing::info!(
        "{} {} {} ({}) {:?}",
        resp.status().as_u16(),
        method,
        path,
        remote,
        started.elapsed()
    );
    resp
}

fn ok(r: Result<Response, ApiError>) -> Response {
    r.unwrap_or_else(IntoResponse::into_response)
}

async fn lookup(State(l): State<Shared>, RawQuery(q): RawQuery) -> Response {
    ok((|| {
        let t = topic_arg(&q)?;
        let db = l.db.lock();
        if !db.topic_exists(&t) {
            return Err(ApiError(StatusCode::NOT_FOUND, "TOPIC_NOT_FOUND"));
        }
        let producers = db.producers(
            &t,
            l.opts.inactive_producer_timeout,
            l.opts.tombstone_lifetime,
        );
        Ok(json(
            StatusCode::OK,
            serde_json::json!({ "channels": db.channels(&t), "producers": producers }),
        ))
    })())
}

async fn channels(State(l): State<Shared>, RawQuery(q): RawQuery) -> Response {
    ok((|| {
        let t = topic_arg(&q)?;
        Ok(json(
            StatusCode::OK,
            serde_json::json!({ "channels": l.db.lock().channels(&t) }),
        ))
    })())
}

async fn nodes(State(l): State<Shared>) -> Response {
    let producers: Vec<serde_json::Value> =
        l.db.lock()
            .nodes(l.opts.inactive_producer_timeout, l.opts.tombstone_lifetime)
            .into_iter()
            .map(|(p, topics, tombstones)| {
                serde_json::json!({
                    "remote_address": p.remote_address,
                    "hostname": p.hostname,
                    "broadcast_address": p.broadcast_address,
                    "tcp_port": p.tcp_port,
                    "http_port": p.http_port,
                    "version": p.version,
                    "tombstones": tombstones,
                    "topics": topics,
                })
            })
            .collect();
    json(
        StatusCode::OK,
        serde_json::json!({ "producers": producers }),
    )
}

async fn topic_create(State(l): State<Shared>, RawQuery(q): RawQuery) -> Response {
    ok(topic_arg(&q).map(|t| {
        l.db.lock().create_topic(&t);
        StatusCode::OK.into_response()
    }))
}

async fn topic_delete(State(l): State<Shared>, RawQuery(q): RawQuery) -> Response {
    ok((|| {
        // Deleting a topic nobody registered is not an error in NSQ.
        let t = topic_arg(&q)?;
        l.db.lock().delete_topic(&t);
        Ok(StatusCode::OK.into_response())
    })())
}

async fn channel_create(State(l): State<Shared>, RawQuery(q): RawQuery) -> Response {
    ok((|| {
        let t = topic_arg(&q)?;
        let c = channel_arg(&q)?;
        l.db.lock().create_channel(&t, &c);
        Ok(StatusCode::OK.into_response())
    })())
}

async fn channel_delete(State(l): State<Shared>, RawQuery(q): RawQuery) -> Response {
    ok((|| {
        let t = topic_arg(&q)?;
        let c = channel_arg(&q)?;
        if !l.db.lock().delete_channel(&t, &c) {
            return Err(ApiError(StatusCode::NOT_FOUND, "CHANNEL_NOT_FOUND"));
        }
        Ok(StatusCode::OK.into_response())
    })())
}

async fn tombstone(State(l): State<Shared>, RawQuery(q): RawQuery) -> Response {
    ok((|| {
        let t = topic_arg(&q)?;
        let node =
            param(&q, "node").ok_or(ApiError(StatusCode::BAD_REQUEST, "MISSING_ARG_NODE"))?;
        // As in NSQ, tombstoning on a node that does not produce the topic is a no-op.
        l.db.lock().tombstone(&t, &node);
        Ok(StatusCode::OK.into_response())
    })())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_decoding() {
        assert_eq!(parse_duration("5m0s").unwrap(), Duration::from_secs(300));
        assert!(parse_duration("x").is_err());
        assert_eq!(decode("a%20b+c"), "a b c");
        assert_eq!(decode("bad%zz"), "bad%zz");
        assert_eq!(
            param(&Some("topic=a&node=h%3A1".into()), "node").as_deref(),
            Some("h:1")
        );
    }
}
