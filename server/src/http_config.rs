//! nsqd's `/config/{opt}`: GET reads one option as JSON (NSQ's names and units: durations
//! in nanoseconds, levels as numbers); PUT changes the few NSQ allows at runtime.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use edge::http_api::{ok_empty, ok_json, ApiError};

use crate::nsqd::Nsqd;

type Shared = Arc<Nsqd>;

/// GET /config/:opt — the current value, as JSON.
pub(crate) async fn config_get(State(nsqd): State<Shared>, Path(opt): Path<String>) -> Response {
    match config_value(&nsqd, &opt) {
        Some(v) => ok_json(&v),
        None => ApiError(StatusCode::BAD_REQUEST, "INVALID_OPTION").into_response(),
    }
}

fn config_value(nsqd: &Nsqd, opt: &str) -> Option<serde_json::Value> {
    use serde_json::json;
    let o = nsqd.opts();
    let ns = |d: std::time::Duration| json!(d.as_nanos() as u64);
    Some(match opt {
        "nsqlookupd_tcp_addresses" | "lookupd_tcp_addresses" => json!(o.lookupd_tcp_addresses),
        // NSQ reports its numeric level: 1 debug, 2 info, 3 warn, 4 error, 5 fatal.
        "log_level" => json!(edge::log::nsq_level_code(&o.log_level)),
        "log_prefix" => json!(o.log_prefix),
        "tcp_address" => json!(o.tcp_address),
        "http_address" => json!(o.http_address),
        "broadcast_address" => json!(o.broadcast_address),
        "broadcast_tcp_port" => json!(o.broadcast_tcp_port),
        "broadcast_http_port" => json!(o.broadcast_http_port),
        "data_path" => json!(o.data_path),
        "mem_queue_size" => json!(o.mem_queue_size),
        "max_bytes_per_file" => json!(o.max_bytes_per_file),
        "sync_every" => json!(o.sync_every),
        "sync_timeout" => ns(o.sync_timeout),
        "msg_timeout" => ns(o.msg_timeout),
        "max_msg_timeout" => ns(o.max_msg_timeout),
        "max_msg_size" => json!(o.max_msg_size),
        "max_body_size" => json!(o.max_body_size),
        "max_req_timeout" => ns(o.max_req_timeout),
        "max_rdy_count" => json!(o.max_rdy_count),
        "max_heartbeat_interval" => ns(o.max_heartbeat_interval),
        "max_output_buffer_size" => json!(o.max_output_buffer_size),
        "max_output_buffer_timeout" => ns(o.max_output_buffer_timeout),
        "min_output_buffer_timeout" => ns(o.min_output_buffer_timeout),
        "output_buffer_timeout" => ns(o.output_buffer_timeout),
        "max_channel_consumers" => json!(o.max_channel_consumers),
        "snappy_enabled" | "snappy" => json!(o.snappy),
        "deflate_enabled" | "deflate" => json!(o.deflate),
        "max_deflate_level" => json!(o.max_deflate_level),
        "auth_http_addresses" => json!(o.auth_http_addresses),
        "tls_required" => json!(o.tls_required_code()),
        "tls_min_version" => json!(tls_version_code(&o.tls_min_version)),
        "https_address" => json!(o.https_address),
        "node_id" | "id" => json!(o.node_id),
        "statsd_address" => json!(o.statsd_address),
        "statsd_prefix" => json!(crate::statsd::expanded_prefix(
            &o,
            nsqd.http_addr.get().map(|a| a.port()).unwrap_or(0)
        )),
        "statsd_interval" => ns(o.statsd_interval),
        "statsd_mem_stats" => json!(o.statsd_mem_stats),
        "statsd_udp_packet_size" => json!(o.statsd_udp_packet_size),
        "statsd_exclude_ephemeral" => json!(o.statsd_exclude_ephemeral),
        "http_client_connect_timeout" => ns(o.http_client_connect_timeout),
        "http_client_request_timeout" => ns(o.http_client_request_timeout),
        "queue_scan_worker_pool_max" => json!(o.queue_scan_worker_pool_max),
        "queue_scan_selection_count" => json!(o.queue_scan_selection_count),
        "e2e_processing_latency_percentiles" => json!(o.percentiles()),
        "e2e_processing_latency_window_time" => ns(o.e2e_processing_latency_window_time),
        _ => return None,
    })
}

/// Go's crypto/tls version numbers, as NSQ reports `tls_min_version`.
fn tls_version_code(v: &str) -> i64 {
    match v.to_ascii_lowercase().as_str() {
        "ssl3.0" => 0x0300,
        "tls1.1" => 0x0302,
        "tls1.2" => 0x0303,
        "tls1.3" => 0x0304,
        _ => 0x0301,
    }
}

/// PUT /config/:opt — NSQ allows changing the lookupd addresses and the log level at runtime.
pub(crate) async fn config_put(
    State(nsqd): State<Shared>,
    Path(opt): Path<String>,
    body: Body,
) -> Response {
    let Ok(body) = crate::http::read_body(body, 1 << 20).await else {
        return ApiError(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR").into_response();
    };
    let mut o = (*nsqd.opts()).clone();
    match opt.as_str() {
        "nsqlookupd_tcp_addresses" => {
            let Ok(addrs) = serde_json::from_slice::<Vec<String>>(&body) else {
                return ApiError(StatusCode::BAD_REQUEST, "INVALID_VALUE").into_response();
            };
            if addrs.iter().any(|a| a.rsplit_once(':').is_none()) {
                return ApiError(StatusCode::BAD_REQUEST, "INVALID_VALUE").into_response();
            }
            o.lookupd_tcp_addresses = addrs;
            nsqd.set_opts(o);
            if let Some(l) = nsqd.lookup.get() {
                l.set_addresses(nsqd.opts().lookupd_tcp_addresses.clone());
            }
        }
        "log_level" => {
            let level = String::from_utf8_lossy(&body)
                .trim()
                .trim_matches('"')
                .to_string();
            if let Err(e) = edge::log::set_level(&level) {
                tracing::warn!(error = %e, "bad log level");
                return ApiError(StatusCode::BAD_REQUEST, "INVALID_VALUE").into_response();
            }
            o.log_level = level;
            nsqd.set_opts(o);
        }
        _ => return ApiError(StatusCode::BAD_REQUEST, "INVALID_OPTION").into_response(),
    }
    match config_value(&nsqd, &opt) {
        Some(v) => ok_json(&v),
        None => ok_empty(),
    }
}
