//! nsqlookupd's HTTP API with NSQ's paths and JSON shapes (nsqlookupd/http.go): where a
//! topic is produced (/lookup), what exists (/topics, /channels, /nodes), and the admin
//! actions nsqadmin uses.

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use edge::http_api::{json_response, query_param, ApiError};

use crate::{metrics, Shared, NSQ_COMPAT_VERSION};

fn json_value(status: StatusCode, v: serde_json::Value) -> Response {
    json_response(status, v.to_string())
}

fn topic_arg(q: &Option<String>) -> Result<String, ApiError> {
    let t = query_param(q.as_deref(), "topic")
        .ok_or(ApiError(StatusCode::BAD_REQUEST, "MISSING_ARG_TOPIC"))?;
    if !protocol::names::is_valid_topic_name(&t) {
        return Err(ApiError(StatusCode::BAD_REQUEST, "INVALID_ARG_TOPIC"));
    }
    Ok(t)
}

fn channel_arg(q: &Option<String>) -> Result<String, ApiError> {
    let c = query_param(q.as_deref(), "channel")
        .ok_or(ApiError(StatusCode::BAD_REQUEST, "MISSING_ARG_CHANNEL"))?;
    if !protocol::names::is_valid_channel_name(&c) {
        return Err(ApiError(StatusCode::BAD_REQUEST, "INVALID_ARG_CHANNEL"));
    }
    Ok(c)
}

pub fn router(l: Shared) -> Router {
    Router::new()
        .route("/ping", get(|| async { "OK" }))
        .route(
            "/info",
            get(|| async {
                json_value(
                    StatusCode::OK,
                    serde_json::json!({ "version": NSQ_COMPAT_VERSION }),
                )
            }),
        )
        .route(
            "/debug",
            get(|State(l): State<Shared>| async move { json_value(StatusCode::OK, l.db.lock().dump()) }),
        )
        .route("/lookup", get(lookup))
        .route(
            "/topics",
            get(|State(l): State<Shared>| async move {
                json_value(
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
        .layer(axum::middleware::from_fn(edge::http_api::nsq_answers))
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
        Ok(json_value(
            StatusCode::OK,
            serde_json::json!({ "channels": db.channels(&t), "producers": producers }),
        ))
    })())
}

async fn channels(State(l): State<Shared>, RawQuery(q): RawQuery) -> Response {
    ok((|| {
        let t = topic_arg(&q)?;
        Ok(json_value(
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
    json_value(
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
        let node = query_param(q.as_deref(), "node")
            .ok_or(ApiError(StatusCode::BAD_REQUEST, "MISSING_ARG_NODE"))?;
        // As in NSQ, tombstoning on a node that does not produce the topic is a no-op.
        l.db.lock().tombstone(&t, &node);
        Ok(StatusCode::OK.into_response())
    })())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_and_channel_args() {
        assert_eq!(
            topic_arg(&Some("topic=a%2Eb".into())).ok().as_deref(),
            Some("a.b")
        );
        assert_eq!(
            topic_arg(&Some("topic=a*b".into())).err(),
            Some(ApiError(StatusCode::BAD_REQUEST, "INVALID_ARG_TOPIC"))
        );
        assert_eq!(
            channel_arg(&None).err(),
            Some(ApiError(StatusCode::BAD_REQUEST, "MISSING_ARG_CHANNEL"))
        );
    }
}
