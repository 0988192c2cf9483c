//! HTTP endpoints for what only a log can do (beyond NSQ; NSQ's own API is in `http.rs`):
//!
//! - `POST /channel/rewind?topic=T&channel=C&to=<earliest | latest | RFC 3339 time | unix
//!   ms | seq:N>` moves a channel's read position; the channel then redelivers from there,
//!   in order, as fresh messages. The move is persisted before the answer.
//! - `GET /channel/peek?topic=T&channel=C&n=10` the next messages the channel would
//!   deliver, without delivering, finishing or counting them.
//! - `GET /topic/peek?topic=T&n=10` the newest messages of a topic.
//!
//! - `GET /topic/config?topic=T` a topic's own settings and the ones in force;
//!   `PUT /topic/config?topic=T` with a JSON body (`mem_queue_size`, `sync_every`,
//!   `sync_timeout` and `retention_time` in ms, `retention_bytes`, `max_bytes`; `null` or
//!   absent = the node-wide flag) replaces them, persisted and applied at once.
//!
//! Peek answers `{"messages": [{"id", "timestamp", "attempts", "body"}]}` with the body in
//! standard base64 (binary-safe). `n` is at most [`MAX_PEEK`] and the bodies of one answer
//! at most [`MAX_PEEK_BYTES`] (at least one message is returned).

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine as _;

use edge::http_api::Params;

use crate::nsqd::Nsqd;

pub const MAX_PEEK: usize = 1000;
pub const MAX_PEEK_BYTES: usize = 4 << 20;

type Shared = Arc<Nsqd>;

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/channel/rewind", post(rewind))
        .route("/channel/peek", get(channel_peek))
        .route("/topic/peek", get(topic_peek))
        .route("/topic/config", get(topic_config_get).put(topic_config_put))
}

/// NSQ's error answer (`{"message": ...}` with the status).
use edge::http_api::ApiError as Failure;

fn json(v: serde_json::Value) -> Response {
    edge::http_api::ok_json(&v)
}

/// Query parameters, percent-decoded (first value wins).
fn params(q: Option<String>) -> Result<Params, Failure> {
    Params::parse(q.as_deref())
}

fn get_param<'a>(p: &'a Params, k: &str) -> Option<&'a str> {
    p.get(k)
}

fn topic_and_channel(
    nsqd: &Nsqd,
    p: &Params,
    need_channel: bool,
) -> Result<
    (
        Arc<crate::topic::Topic>,
        Option<Arc<crate::channel::Channel>>,
    ),
    Failure,
> {
    let t = get_param(p, "topic").ok_or(Failure(StatusCode::BAD_REQUEST, "MISSING_ARG_TOPIC"))?;
    if !protocol::names::is_valid_topic_name(t) {
        return Err(Failure(StatusCode::BAD_REQUEST, "INVALID_ARG_TOPIC"));
    }
    let topic = nsqd
        .get_existing_topic(t)
        .ok_or(Failure(StatusCode::NOT_FOUND, "TOPIC_NOT_FOUND"))?;
    if !need_channel {
        return Ok((topic, None));
    }
    let c =
        get_param(p, "channel").ok_or(Failure(StatusCode::BAD_REQUEST, "MISSING_ARG_CHANNEL"))?;
    if !protocol::names::is_valid_channel_name(c) {
        return Err(Failure(StatusCode::BAD_REQUEST, "INVALID_ARG_CHANNEL"));
    }
    let channel = topic
        .get_channel(c)
        .ok_or(Failure(StatusCode::NOT_FOUND, "CHANNEL_NOT_FOUND"))?;
    Ok((topic, Some(channel)))
}

/// `to=` of a rewind.
pub fn parse_rewind_target(s: &str) -> Option<engine::RewindTo> {
    match s {
        "earliest" => return Some(engine::RewindTo::Earliest),
        "latest" => return Some(engine::RewindTo::Latest),
        _ => {}
    }
    if let Some(n) = s.strip_prefix("seq:") {
        return n.parse().ok().map(engine::RewindTo::Seq);
    }
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        let ms: i64 = s.parse().ok()?;
        return ms.checked_mul(1_000_000).map(engine::RewindTo::Time);
    }
    let t = chrono::DateTime::parse_from_rfc3339(s).ok()?;
    t.timestamp_nanos_opt().map(engine::RewindTo::Time)
}

fn peek_n(p: &Params) -> Result<usize, Failure> {
    match get_param(p, "n") {
        None => Ok(10),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=MAX_PEEK).contains(&n) => Ok(n),
            _ => Err(Failure(StatusCode::BAD_REQUEST, "INVALID_ARG_N")),
        },
    }
}

/// Messages as JSON, with the ids clients see (see `guid.rs`).
fn messages_json(key: u64, msgs: &[engine::Message]) -> serde_json::Value {
    let b64 = base64::engine::general_purpose::STANDARD;
    let list: Vec<serde_json::Value> = msgs
        .iter()
        .map(|m| {
            serde_json::json!({
                "id": String::from_utf8_lossy(&crate::guid::to_wire(key, &m.id)),
                "sequence": m.seq,
                "timestamp": m.timestamp_ns,
                "attempts": m.attempts,
                "body": b64.encode(&m.body),
            })
        })
        .collect();
    serde_json::json!({ "messages": list })
}

async fn rewind(State(nsqd): State<Shared>, RawQuery(q): RawQuery) -> Response {
    let result = async {
        let p = params(q)?;
        let (topic, channel) = topic_and_channel(&nsqd, &p, true)?;
        let to = get_param(&p, "to").ok_or(Failure(StatusCode::BAD_REQUEST, "MISSING_ARG_TO"))?;
        let to = parse_rewind_target(to).ok_or(Failure(StatusCode::BAD_REQUEST, "INVALID_ARG_TO"))?;
        let Some(channel) = channel else {
            return Err(Failure(StatusCode::NOT_FOUND, "CHANNEL_NOT_FOUND"));
        };
        let engine_topic = topic.inner.clone();
        let name = channel.name.clone();
        // Persisting the cursor waits for the disk: off the async workers.
        let moved = tokio::task::spawn_blocking(move || engine_topic.rewind_channel(&name, to))
            .await
            .map_err(|_| Failure(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR"))?
            .map_err(|e| {
                tracing::error!(topic = %topic.name, channel = %channel.name, error = %e, "rewind failed");
                Failure(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR")
            })?
            .ok_or(Failure(StatusCode::NOT_FOUND, "CHANNEL_NOT_FOUND"))?;
        channel.notify.notify_waiters();
        tracing::info!(topic = %topic.name, channel = %channel.name, sequence = moved, "channel rewound");
        let depth = channel.cursor.stats().depth;
        Ok(json(serde_json::json!({ "sequence": moved, "depth": depth })))
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn channel_peek(State(nsqd): State<Shared>, RawQuery(q): RawQuery) -> Response {
    let result = (|| {
        let p = params(q)?;
        let n = peek_n(&p)?;
        let (topic, channel) = topic_and_channel(&nsqd, &p, true)?;
        let channel = channel.ok_or(Failure(StatusCode::NOT_FOUND, "CHANNEL_NOT_FOUND"))?;
        let msgs = tokio::task::block_in_place(|| channel.peek(n, MAX_PEEK_BYTES))
            .map_err(|_| Failure(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR"))?;
        let key = crate::guid::wire_key(nsqd.node_id, topic.id_mask);
        Ok(json(messages_json(key, &msgs)))
    })();
    result.unwrap_or_else(|e: Failure| e.into_response())
}

async fn topic_peek(State(nsqd): State<Shared>, RawQuery(q): RawQuery) -> Response {
    let result = (|| {
        let p = params(q)?;
        let n = peek_n(&p)?;
        let (topic, _) = topic_and_channel(&nsqd, &p, false)?;
        let msgs = tokio::task::block_in_place(|| topic.inner.peek_newest(n, MAX_PEEK_BYTES))
            .map_err(|_| Failure(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR"))?;
        let key = crate::guid::wire_key(nsqd.node_id, topic.id_mask);
        Ok(json(messages_json(key, &msgs)))
    })();
    result.unwrap_or_else(|e: Failure| e.into_response())
}

fn config_json(topic: &crate::topic::Topic) -> serde_json::Value {
    let e = topic.inner.effective_options();
    serde_json::json!({
        "topic": topic.name,
        "config": topic.inner.config(),
        "effective": {
            "mem_queue_size": e.mem_queue_size,
            "sync_every": e.sync_every,
            "sync_timeout": e.sync_timeout.as_millis() as u64,
            "retention_time": e.retention_time.as_millis() as u64,
            "retention_bytes": e.retention_bytes,
            "max_bytes": e.max_bytes_per_topic,
        },
    })
}

async fn topic_config_get(State(nsqd): State<Shared>, RawQuery(q): RawQuery) -> Response {
    let result = (|| {
        let p = params(q)?;
        let (topic, _) = topic_and_channel(&nsqd, &p, false)?;
        Ok(json(config_json(&topic)))
    })();
    result.unwrap_or_else(|e: Failure| e.into_response())
}

async fn topic_config_put(
    State(nsqd): State<Shared>,
    RawQuery(q): RawQuery,
    body: axum::body::Bytes,
) -> Response {
    let result = async {
        let p = params(q)?;
        let (topic, _) = topic_and_channel(&nsqd, &p, false)?;
        let cfg: engine::TopicConfig = serde_json::from_slice(&body)
            .map_err(|_| Failure(StatusCode::BAD_REQUEST, "INVALID_BODY"))?;
        if cfg.sync_every == Some(0) {
            return Err(Failure(StatusCode::BAD_REQUEST, "INVALID_SYNC_EVERY"));
        }
        if cfg.sync_timeout == Some(0) {
            return Err(Failure(StatusCode::BAD_REQUEST, "INVALID_SYNC_TIMEOUT"));
        }
        if topic.is_ephemeral() {
            return Err(Failure(StatusCode::BAD_REQUEST, "EPHEMERAL_TOPIC"));
        }
        let inner = topic.inner.clone();
        tokio::task::spawn_blocking(move || inner.set_config(cfg))
            .await
            .map_err(|_| Failure(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR"))?
            .map_err(|e| {
                tracing::error!(topic = %topic.name, error = %e, "saving topic settings failed");
                Failure(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR")
            })?;
        tracing::info!(topic = %topic.name, config = ?cfg, "topic settings changed");
        Ok(json(config_json(&topic)))
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::RewindTo;

    #[test]
    fn rewind_targets() {
        assert_eq!(parse_rewind_target("earliest"), Some(RewindTo::Earliest));
        assert_eq!(parse_rewind_target("latest"), Some(RewindTo::Latest));
        assert_eq!(parse_rewind_target("seq:42"), Some(RewindTo::Seq(42)));
        assert_eq!(
            parse_rewind_target("1700000000000"),
            Some(RewindTo::Time(1_700_000_000_000_000_000))
        );
        assert_eq!(
            parse_rewind_target("2023-11-14T22:13:20Z"),
            Some(RewindTo::Time(1_700_000_000_000_000_000))
        );
        assert_eq!(parse_rewind_target("yesterday"), None);
        assert_eq!(parse_rewind_target("seq:-1"), None);
    }
}
