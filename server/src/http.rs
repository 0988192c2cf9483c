//! nsqd's HTTP API with NSQ 1.x's paths, methods, status codes and bodies: plain `OK` for
//! publishes and /ping, bare JSON for data, `{"message": "..."}` with a 4xx/5xx status for
//! errors, and an empty 200 body for admin actions.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use edge::http_api::{json_response, ok_json, ok_text, ApiError, Params, RequestLine};
use serde::Serialize;

use crate::client::STATE_INIT;
use crate::http_config::{config_get, config_put};
use crate::nsqd::{Nsqd, NSQ_COMPAT_VERSION};
use crate::topic::TopicStats;

type Shared = Arc<Nsqd>;

/// The API as served on the plain HTTP listener.
pub fn router(nsqd: Shared) -> Router {
    router_for(nsqd, false)
}

/// The API for one listener: `over_tls` is true for the HTTPS listener, where
/// `--tls-required` is already satisfied.
pub fn router_for(nsqd: Shared, over_tls: bool) -> Router {
    let layer_state = (nsqd.clone(), over_tls);
    let mut r = Router::new()
        .route("/ping", get(ping))
        .route("/info", get(info))
        .route("/pub", post(publish))
        .route("/put", post(publish))
        .route("/mpub", post(mpublish))
        .route("/mput", post(mpublish))
        .route("/stats", get(stats))
        .route("/metrics", get(crate::metrics::handler))
        .route("/config/{opt}", get(config_get).put(config_put))
        .route("/debug", get(debug))
        .route("/debug/pprof", get(crate::pprof::index))
        .route("/debug/pprof/", get(crate::pprof::index))
        .route("/debug/pprof/profile", get(crate::pprof::profile))
        .route("/debug/pprof/heap", get(crate::pprof::heap))
        .route("/debug/pprof/cmdline", get(crate::pprof::cmdline))
        .route("/debug/pprof/{name}", get(crate::pprof::other));
    // Admin actions, one handler each (crate::http_admin).
    r = r.merge(crate::http_admin::routes());
    r.merge(crate::http_log::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(nsqd)
        .layer(axum::middleware::from_fn_with_state(layer_state, around))
}

/// Around every request: NSQ's `TLS_REQUIRED` refusal on plain HTTP when
/// `--tls-required=true`, the `X-NSQ-Content-Type` header NSQ puts on every API answer
/// (all but /ping), and one log line per request at INFO, as NSQ logs them.
async fn around(
    State((nsqd, over_tls)): State<(Shared, bool)>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let line = RequestLine::of(&req);
    let resp = if !over_tls && nsqd.opts().tls_required_on_http() {
        let port = nsqd.https_addr.get().map(|a| a.port()).unwrap_or(0);
        json_response(
            StatusCode::FORBIDDEN,
            format!("{{\"message\": \"TLS_REQUIRED\", \"https_port\": {port}}}"),
        )
    } else {
        next.run(req).await
    };
    line.finish(resp)
}

async fn not_found() -> Response {
    ApiError(StatusCode::NOT_FOUND, "NOT_FOUND").into_response()
}

async fn method_not_allowed() -> Response {
    ApiError(StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED").into_response()
}

async fn ping(State(nsqd): State<Shared>) -> Response {
    match nsqd.health() {
        None => ok_text("OK"),
        Some(h) => (StatusCode::INTERNAL_SERVER_ERROR, h).into_response(),
    }
}

async fn info(State(nsqd): State<Shared>) -> Response {
    let opts = nsqd.opts();
    let hostname = edge::hostname();
    ok_json(&serde_json::json!({
        "version": NSQ_COMPAT_VERSION,
        "broadcast_address": opts.broadcast_address,
        "hostname": hostname,
        "http_port": nsqd.http_addr.get().map(|a| a.port()).unwrap_or(0),
        "tcp_port": nsqd.tcp_addr.get().map(|a| a.port()).unwrap_or(0),
        "start_time": nsqd.start_time,
        "max_heartbeat_interval": opts.max_heartbeat_interval.as_nanos() as u64,
        "max_output_buffer_size": opts.max_output_buffer_size,
        "max_output_buffer_timeout": opts.max_output_buffer_timeout.as_nanos() as u64,
        "max_deflate_level": opts.max_deflate_level,
    }))
}

pub(crate) async fn read_body(body: Body, limit: usize) -> Result<Bytes, ()> {
    axum::body::to_bytes(body, limit.saturating_add(1))
        .await
        .map_err(|_| ())
}

async fn publish(State(nsqd): State<Shared>, RawQuery(q): RawQuery, body: Body) -> Response {
    match do_publish(nsqd, q, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn do_publish(nsqd: Shared, q: Option<String>, body: Body) -> Result<Response, ApiError> {
    let opts = nsqd.opts();
    let max = opts.max_msg_size.max(0) as usize;
    let body = read_body(body, max)
        .await
        .map_err(|_| ApiError(StatusCode::PAYLOAD_TOO_LARGE, "MSG_TOO_BIG"))?;
    if body.len() > max {
        return Err(ApiError(StatusCode::PAYLOAD_TOO_LARGE, "MSG_TOO_BIG"));
    }
    if body.is_empty() {
        return Err(ApiError(StatusCode::BAD_REQUEST, "MSG_EMPTY"));
    }
    let params = Params::parse(q.as_deref())?;
    let topic = params.topic()?;
    let mut deliver_at = 0;
    if let Some(d) = params.get("defer") {
        let ms: i64 = d
            .parse()
            .map_err(|_| ApiError(StatusCode::BAD_REQUEST, "INVALID_DEFER"))?;
        if ms < 0 || ms as u128 > opts.max_req_timeout.as_millis() {
            return Err(ApiError(StatusCode::BAD_REQUEST, "INVALID_DEFER"));
        }
        deliver_at = edge::clock::unix_ms() + ms as u64;
    }
    publish_to(&nsqd, &topic, vec![body], deliver_at).await?;
    Ok(ok_text("OK"))
}

async fn publish_to(
    nsqd: &Shared,
    topic: &str,
    bodies: Vec<Bytes>,
    deliver_at: u64,
) -> Result<(), ApiError> {
    if nsqd.exiting.load(Ordering::Acquire) {
        return Err(ApiError(StatusCode::SERVICE_UNAVAILABLE, "EXITING"));
    }
    let (_, wait, _) = nsqd
        .publish(topic, bodies, deliver_at, true, false)
        .map_err(|e| publish_error(topic, &e))?;
    if let Some(w) = wait {
        match w.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(publish_error(topic, &e)),
            Err(_) => return Err(ApiError(StatusCode::SERVICE_UNAVAILABLE, "EXITING")),
        }
    }
    Ok(())
}

/// A publish the engine could not store. NSQ answers 503 for any failed put; the text says
/// why (the log has the details: topic, path, error, once per condition).
fn publish_error(topic: &str, e: &engine::Error) -> ApiError {
    tracing::debug!(topic, error = %e, "publish refused");
    let why = match e {
        engine::Error::TopicFull { .. } => "TOPIC_FULL",
        engine::Error::Deleted(_) => "TOPIC_DELETED",
        e if e.is_no_space() => "NO_SPACE",
        engine::Error::Closed => "EXITING",
        _ => "PUB_FAILED",
    };
    ApiError(StatusCode::SERVICE_UNAVAILABLE, why)
}

async fn mpublish(State(nsqd): State<Shared>, RawQuery(q): RawQuery, body: Body) -> Response {
    match do_mpublish(nsqd, q, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn do_mpublish(nsqd: Shared, q: Option<String>, body: Body) -> Result<Response, ApiError> {
    let opts = nsqd.opts();
    let max_body = opts.max_body_size.max(0) as usize;
    let max_msg = opts.max_msg_size.max(0) as usize;
    let params = Params::parse(q.as_deref())?;
    let topic = params.topic()?;
    let body = read_body(body, max_body)
        .await
        .map_err(|_| ApiError(StatusCode::PAYLOAD_TOO_LARGE, "BODY_TOO_BIG"))?;
    if body.len() > max_body {
        return Err(ApiError(StatusCode::PAYLOAD_TOO_LARGE, "BODY_TOO_BIG"));
    }
    // NSQ reads `binary` as a boolean: `?binary=false` is the text format.
    let binary = match params.get("binary") {
        None => false,
        Some(v) => !matches!(v, "false" | "0" | "f" | "F" | "FALSE" | "False"),
    };
    let bodies: Vec<Bytes> = if binary {
        protocol::v2::parse_mpub_body(&body, max_msg as u64)
            .map_err(|e| ApiError(StatusCode::PAYLOAD_TOO_LARGE, e.http_code()))?
    } else {
        let mut v = Vec::new();
        for line in body.split(|&b| b == b'\n') {
            if line.is_empty() {
                continue; // empty lines are skipped, as in NSQ
            }
            if line.len() > max_msg {
                return Err(ApiError(StatusCode::PAYLOAD_TOO_LARGE, "MSG_TOO_BIG"));
            }
            v.push(body.slice_ref(line));
        }
        v
    };
    if bodies.is_empty() {
        // NSQ answers an empty batch with OK (and publishes nothing).
        return Ok(ok_text("OK"));
    }
    publish_to(&nsqd, &topic, bodies, 0).await?;
    Ok(ok_text("OK"))
}

#[derive(Serialize)]
struct StatsDoc {
    version: &'static str,
    health: String,
    start_time: i64,
    topics: Vec<TopicStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    memory: Option<serde_json::Value>,
    producers: Vec<crate::client::ClientStats>,
}

async fn stats(State(nsqd): State<Shared>, RawQuery(q): RawQuery) -> Response {
    let params = match Params::parse(q.as_deref()) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let opts = nsqd.opts();
    let topic_filter = params.get("topic");
    let channel_filter = params.get("channel");
    let include_clients = params.get("include_clients").is_none_or(|v| v != "false");
    let percentiles = &opts.percentiles();
    let topics: Vec<TopicStats> = nsqd
        .topics()
        .iter()
        .filter(|t| topic_filter.is_none_or(|f| f == t.name))
        .map(|t| t.stats(channel_filter, include_clients, percentiles))
        .collect();
    let producers = if include_clients {
        nsqd.clients
            .lock()
            .values()
            .filter(|c| c.state.load(Ordering::Relaxed) == STATE_INIT)
            .map(|c| c.stats())
            .collect()
    } else {
        Vec::new()
    };
    let health = nsqd.health().unwrap_or_else(|| "OK".to_string());
    let doc = StatsDoc {
        version: NSQ_COMPAT_VERSION,
        health,
        start_time: nsqd.start_time,
        topics,
        memory: params
            .get("include_mem")
            .is_none_or(|v| v != "false")
            .then(memory_stats),
        producers,
    };
    if params.get("format") == Some("json") {
        return ok_json(&doc);
    }
    let mut r = (StatusCode::OK, stats_text(&nsqd, &doc)).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Resident memory from /proc (Linux); zeros elsewhere. Field names follow NSQ's (which
/// come from Go's runtime) where a Rust process has an equivalent.
pub(crate) fn memory_stats() -> serde_json::Value {
    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<u64>().ok())
            })
        })
        .unwrap_or(0)
        * 1024;
    serde_json::json!({
        "heap_objects": 0,
        "heap_idle_bytes": 0,
        "heap_in_use_bytes": rss,
        "heap_released_bytes": 0,
        "gc_pause_usec_100": 0,
        "gc_pause_usec_99": 0,
        "gc_pause_usec_95": 0,
        "next_gc_bytes": 0,
        "gc_total_runs": 0,
    })
}

/// The memory fields in NSQ's order.
const MEMORY_FIELDS: [&str; 9] = [
    "heap_objects",
    "heap_idle_bytes",
    "heap_in_use_bytes",
    "heap_released_bytes",
    "gc_pause_usec_100",
    "gc_pause_usec_99",
    "gc_pause_usec_95",
    "next_gc_bytes",
    "gc_total_runs",
];

/// /stats in NSQ's text layout (what `curl host:4151/stats` shows an operator).
fn stats_text(nsqd: &Nsqd, doc: &StatsDoc) -> String {
    use std::fmt::Write;
    let now = edge::clock::unix_ms() as i64 / 1000;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "nsqd v{} (nsq-rs {})",
        NSQ_COMPAT_VERSION,
        crate::nsqd::VERSION
    );
    let _ = writeln!(s, "start_time {}", rfc3339_utc(doc.start_time));
    let _ = writeln!(s, "uptime {}\n", go_duration(nsqd.uptime()));
    let _ = writeln!(s, "Health: {}\n", doc.health);
    if let Some(mem) = &doc.memory {
        let _ = writeln!(s, "Memory:");
        for k in MEMORY_FIELDS {
            let v = mem.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
            let _ = writeln!(s, "   {k:<25}\t{v}");
        }
        let _ = writeln!(s);
    }
    if doc.topics.is_empty() {
        let _ = writeln!(s, "Topics: None");
    } else {
        let _ = writeln!(s, "Topics:");
    }
    let paused = |p: bool| if p { "*P " } else { "   " };
    for t in &doc.topics {
        let _ = writeln!(
            s,
            "{}[{:<15}] depth: {:<5} be-depth: {:<5} msgs: {:<8} e2e%: {}",
            paused(t.paused),
            t.topic_name,
            t.depth,
            t.backend_depth,
            t.message_count,
            e2e_text(&t.e2e_processing_latency)
        );
        for c in &t.channels {
            let _ = writeln!(
                s,
                "   {}[{:<25}] depth: {:<5} be-depth: {:<5} inflt: {:<4} def: {:<4} re-q: {:<5} timeout: {:<5} msgs: {:<8} e2e%: {}",
                paused(c.paused),
                c.channel_name,
                c.depth,
                c.backend_depth,
                c.in_flight_count,
                c.deferred_count,
                c.requeue_count,
                c.timeout_count,
                c.message_count,
                e2e_text(&c.e2e_processing_latency)
            );
            for cl in &c.clients {
                let _ = writeln!(
                    s,
                    "        [{}] state: {} inflt: {:<4} rdy: {:<4} fin: {:<8} re-q: {:<8} msgs: {:<8} connected: {}",
                    client_label(cl),
                    cl.state,
                    cl.in_flight_count,
                    cl.ready_count,
                    cl.finish_count,
                    cl.requeue_count,
                    cl.message_count,
                    go_duration(std::time::Duration::from_secs(
                        (now - cl.connect_ts).max(0) as u64
                    ))
                );
            }
        }
    }
    if doc.producers.is_empty() {
        let _ = writeln!(s, "\nProducers: None");
    } else {
        let _ = writeln!(s, "\nProducers:");
        for p in &doc.producers {
            let topics: Vec<String> = p
                .pub_counts
                .iter()
                .map(|c| format!("{}={}", c.topic, c.count))
                .collect();
            let _ = writeln!(
                s,
                "   [{}] msgs: {:<8} topics: {} connected: {}",
                client_label(p),
                p.pub_counts.iter().map(|c| c.count).sum::<u64>(),
                topics.join(","),
                go_duration(std::time::Duration::from_secs(
                    (now - p.connect_ts).max(0) as u64
                ))
            );
        }
    }
    s
}

/// `V2 host:port user-agent`, as NSQ labels a client in /stats text.
fn client_label(c: &crate::client::ClientStats) -> String {
    let port = c
        .remote_address
        .rsplit_once(':')
        .map(|(_, p)| p)
        .unwrap_or("");
    let host = if c.hostname.is_empty() {
        c.remote_address
            .rsplit_once(':')
            .map(|(h, _)| h)
            .unwrap_or(&c.remote_address)
    } else {
        &c.hostname
    };
    let mut label = format!("V2 {host}:{port}");
    if !c.user_agent.is_empty() {
        label.push(' ');
        label.push_str(&c.user_agent);
    }
    label
}

/// The e2e percentiles as NSQ's text stats show them: `205.0ms, 190.2ms`.
fn e2e_text(l: &crate::stats::LatencyStats) -> String {
    match &l.percentiles {
        Some(ps) => ps
            .iter()
            .map(|p| format!("{:.1}ms", p.value as f64 / 1e6))
            .collect::<Vec<_>>()
            .join(", "),
        None => String::new(),
    }
}

/// A duration the way Go prints one (`1m13.709s`, `2s`, `1h0m5s`).
fn go_duration(d: std::time::Duration) -> String {
    let total = d.as_secs();
    let (h, m, sec) = (total / 3600, (total / 60) % 60, total % 60);
    let nanos = d.subsec_nanos();
    let mut secs = sec.to_string();
    if nanos > 0 {
        let frac = format!("{nanos:09}");
        secs.push('.');
        secs.push_str(frac.trim_end_matches('0'));
    }
    if h > 0 {
        format!("{h}h{m}m{secs}s")
    } else if m > 0 {
        format!("{m}m{secs}s")
    } else {
        format!("{secs}s")
    }
}

/// Seconds since the epoch as `2026-12-01T12:11:53Z`.
fn rfc3339_utc(epoch_secs: i64) -> String {
    let days = epoch_secs.div_euclid(86_400);
    let rem = epoch_secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// GET /debug — process facts useful when nsqd misbehaves (Go's pprof has no Rust
/// equivalent worth exposing; this is what an operator needs first).
async fn debug(State(nsqd): State<Shared>) -> Response {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .map(|l| l[name.len()..].trim().to_string())
            .unwrap_or_default()
    };
    let topics: Vec<serde_json::Value> = nsqd
        .topics()
        .iter()
        .map(|t| {
            let s = t.inner.stats();
            serde_json::json!({
                "topic": t.name,
                "depth": s.depth,
                "mem_depth": s.mem_depth,
                "backend_depth": s.backend_depth,
                "next_seq": s.next_seq,
                "channels": t.channels().iter().map(|c| {
                    let cs = c.cursor.stats();
                    serde_json::json!({"channel": c.name, "read": cs.read, "ack_floor": cs.ack_floor, "in_flight": c.in_flight_count()})
                }).collect::<Vec<_>>(),
            })
        })
        .collect();
    ok_json(&serde_json::json!({
        "pid": std::process::id(),
        "threads": field("Threads:"),
        "vm_rss": field("VmRSS:"),
        "vm_hwm": field("VmHWM:"),
        "clients": nsqd.clients.lock().len(),
        "uptime_secs": nsqd.uptime().as_secs(),
        "topics": topics,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_helpers() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(1_796_127_113), "2026-12-01T12:11:53Z");
        assert_eq!(go_duration(std::time::Duration::from_secs(73)), "1m13s");
        assert_eq!(go_duration(std::time::Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration(std::time::Duration::from_secs(3605)), "1h0m5s");
    }
}
