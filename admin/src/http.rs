//! nsqadmin's HTTP front: NSQ's JSON API (`/api/...`, `/config/:opt`, `/ping`), the
//! server-rendered pages, the confirmation step for page actions, `/metrics`, and the access
//! checks (basic auth for everything, `--admin-user` for actions).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde_json::{json, Value};

use crate::clusterinfo::{self, qs_escape, warn_message};
use crate::pages;
use crate::Admin;

type Shared = Arc<Admin>;

/// Who is asking, and whether they may act (set by the access middleware).
#[derive(Debug, Clone, Default)]
pub struct Access {
    pub user: Option<String>,
    pub can_act: bool,
}

pub fn router(admin: Shared) -> Router {
    // Every route carries --base-path itself (rather than `nest`), so "/base" and "/base/"
    // both reach the overview and the fallback and access check cover everything.
    let b = admin.base.clone();
    let p = |path: &str| format!("{b}{path}");
    let mut r = Router::new()
        .route(&p("/ping"), get(|| async { "OK" }))
        .route(&p("/"), get(pages::overview))
        .route(&p("/topics"), get(pages::overview))
        .route(&p("/topics/{topic}"), get(pages::topic))
        .route(&p("/topics/{topic}/{channel}"), get(pages::channel))
        .route(&p("/nodes"), get(pages::nodes))
        .route(&p("/nodes/{node}"), get(pages::node))
        .route(&p("/counter"), get(pages::counter))
        .route(&p("/lookup"), get(pages::lookup))
        .route(&p("/actions"), post(page_action))
        .route(&p("/metrics"), get(metrics))
        .route(&p("/api/topics"), get(api_topics).post(api_create))
        .route(
            &p("/api/topics/{topic}"),
            get(api_topic)
                .post(api_topic_action)
                .delete(api_delete_topic),
        )
        .route(
            &p("/api/topics/{topic}/{channel}"),
            get(api_channel)
                .post(api_channel_action)
                .delete(api_delete_channel),
        )
        .route(&p("/api/nodes"), get(api_nodes))
        .route(&p("/api/nodes/{node}"), get(api_node).delete(api_tombstone))
        .route(&p("/api/counter"), get(api_counter))
        .route(&p("/api/graphite"), get(api_graphite))
        .route(&p("/config/{opt}"), get(config).put(config));
    if !b.is_empty() {
        r = r.route(&b, get(pages::overview));
    }
    r.fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(admin.clone(), access))
        .with_state(admin)
}

// ------------------------------------------------------------------ responses

fn v1(status: StatusCode, body: &Value) -> Response {
    let mut r = (status, body.to_string()).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    h.insert(
        "X-NSQ-Content-Type",
        HeaderValue::from_static("nsq; version=1.0"),
    );
    r
}

pub fn api_err(status: StatusCode, message: &str) -> Response {
    v1(status, &json!({ "message": message }))
}

fn upstream(e: String) -> Response {
    tracing::error!(error = %e, "upstream request failed");
    api_err(StatusCode::BAD_GATEWAY, &format!("UPSTREAM_ERROR: {e}"))
}

async fn not_found(uri: Uri) -> Response {
    if uri.path().contains("/api/") || uri.path().contains("/config/") {
        api_err(StatusCode::NOT_FOUND, "NOT_FOUND")
    } else {
        let mut r = pages::plain_page("Not found", "No such page.").into_response();
        *r.status_mut() = StatusCode::NOT_FOUND;
        r
    }
}

async fn method_not_allowed() -> Response {
    api_err(StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED")
}

// ------------------------------------------------------------------ access

/// Basic auth (when `--basic-auth-file` is given) for every path but /ping, then who may act.
async fn access(State(admin): State<Shared>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let is_ping = path.ends_with("/ping");
    let mut basic_user = None;
    if let Some(users) = &admin.basic_auth {
        if !is_ping {
            match check_basic(&admin, users, req.headers()).await {
                Some(u) => basic_user = Some(u),
                None => {
                    let mut r =
                        (StatusCode::UNAUTHORIZED, "authentication required\n").into_response();
                    r.headers_mut().insert(
                        header::WWW_AUTHENTICATE,
                        HeaderValue::from_static("Basic realm=\"nsqadmin\""),
                    );
                    return r;
                }
            }
        }
    }
    // A browser sends Origin on cross-site form posts and fetches: refuse changes that come
    // from another site's page (the proxy's credentials would otherwise go along).
    if req.method() != Method::GET && req.method() != Method::HEAD {
        if let Some(origin) = req.headers().get(header::ORIGIN) {
            let host = req
                .headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("");
            let origin_host = origin
                .to_str()
                .unwrap_or("")
                .split_once("://")
                .map(|(_, h)| h)
                .unwrap_or("");
            if origin_host.is_empty() || origin_host != host {
                tracing::warn!(origin = ?origin, host, "cross-site request refused");
                return api_err(StatusCode::FORBIDDEN, "FORBIDDEN_ORIGIN");
            }
        }
    }
    let header_user = req
        .headers()
        .get(admin.opts.acl_http_header.as_str())
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(String::from);
    // With basic auth there is no trusted proxy: the authenticated user is the user, and a
    // client-set header must not name someone else.
    let user = if admin.basic_auth.is_some() {
        basic_user
    } else {
        header_user
    };
    let can_act = admin.opts.admin_users.is_empty()
        || user
            .as_ref()
            .is_some_and(|u| admin.opts.admin_users.iter().any(|a| a == u));
    req.extensions_mut().insert(Access { user, can_act });
    next.run(req).await
}

/// The user named by a valid `Authorization: Basic` header, checked against the bcrypt
/// hashes (verified off the async runtime; successes are cached by header value).
async fn check_basic(
    admin: &Admin,
    users: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Option<String> {
    use base64::Engine;
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?.trim();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    if admin.auth_cache.lock().contains(value) {
        return Some(user.to_string());
    }
    let hash = users.get(user)?.clone();
    let password = password.to_string();
    let ok = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
        .await
        .unwrap_or(false);
    if !ok {
        return None;
    }
    let mut cache = admin.auth_cache.lock();
    if cache.len() > 1024 {
        cache.clear();
    }
    cache.insert(value.to_string());
    Some(user.to_string())
}

// ------------------------------------------------------------------ actions

/// One admin action, from the API or a page form.
#[derive(Debug, Clone, Default)]
pub struct ActionRequest {
    /// create, pause, unpause, empty, delete, tombstone
    pub action: String,
    pub topic: String,
    pub channel: String,
    pub node: String,
}

/// What a request carried that a notification reports.
pub struct RequestInfo {
    pub remote: SocketAddr,
    pub headers: HeaderMap,
    pub uri: Uri,
}

/// Check access and names, perform the action on the cluster, notify. Ok = warnings.
pub async fn perform(
    admin: &Admin,
    access: &Access,
    a: &ActionRequest,
    info: &RequestInfo,
) -> Result<Vec<String>, (StatusCode, String)> {
    if !access.can_act {
        tracing::warn!(user = ?access.user, action = %a.action, topic = %a.topic, "action refused: not an admin user");
        return Err((StatusCode::FORBIDDEN, "FORBIDDEN".into()));
    }
    if !protocol::names::is_valid_topic_name(&a.topic) {
        return Err((StatusCode::BAD_REQUEST, "INVALID_TOPIC".into()));
    }
    if !a.channel.is_empty() && !protocol::names::is_valid_channel_name(&a.channel) {
        return Err((StatusCode::BAD_REQUEST, "INVALID_CHANNEL".into()));
    }
    let ci = &admin.ci;
    let level = if a.channel.is_empty() {
        "topic"
    } else {
        "channel"
    };
    let (result, notes): (_, Vec<String>) = match a.action.as_str() {
        "create" => {
            let mut n = vec!["create_topic".to_string()];
            if !a.channel.is_empty() {
                n.push("create_channel".into());
            }
            (ci.create_topic_channel(&a.topic, &a.channel).await, n)
        }
        "pause" | "unpause" | "empty" => (
            ci.topic_channel_action(&a.topic, &a.channel, &a.action)
                .await,
            vec![format!("{}_{level}", a.action)],
        ),
        "delete" => (
            ci.delete(&a.topic, &a.channel).await,
            vec![format!("delete_{level}")],
        ),
        "tombstone" => {
            if a.node.is_empty() {
                return Err((StatusCode::BAD_REQUEST, "INVALID_NODE".into()));
            }
            if ci.lookupd_addresses().is_empty() {
                return Err((StatusCode::BAD_REQUEST, "NO_LOOKUPD".into()));
            }
            (
                ci.tombstone_node_for_topic(&a.topic, &a.node).await,
                vec!["tombstone_topic_producer".into()],
            )
        }
        _ => return Err((StatusCode::BAD_REQUEST, "INVALID_ACTION".into())),
    };
    let warnings = match result {
        Ok(((), w)) => w,
        Err(e) => {
            tracing::error!(action = %a.action, topic = %a.topic, channel = %a.channel, error = %e, "action failed");
            return Err((StatusCode::BAD_GATEWAY, format!("UPSTREAM_ERROR: {e}")));
        }
    };
    tracing::info!(user = ?access.user, action = %a.action, topic = %a.topic, channel = %a.channel, node = %a.node, "admin action");
    for n in notes {
        let channel = if n.ends_with("_topic") {
            ""
        } else {
            &a.channel
        };
        admin.notify(&n, &a.topic, channel, &a.node, access, info);
    }
    Ok(warnings)
}

/// The request's JSON object, if it is one.
fn json_body(body: &Bytes) -> Option<Value> {
    serde_json::from_slice::<Value>(body)
        .ok()
        .filter(Value::is_object)
}

fn field(v: &Value, k: &str) -> String {
    v.get(k).and_then(Value::as_str).unwrap_or("").to_string()
}

/// Who is acting and what their request carried, taken from the request by axum: the
/// access middleware's verdict, the peer address, the headers and the URI (the last three
/// go into notifications).
pub struct Caller {
    access: Access,
    info: RequestInfo,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        let access = parts
            .extensions
            .get::<Access>()
            .cloned()
            .unwrap_or_default();
        let remote = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0)
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        Ok(Caller {
            access,
            info: RequestInfo {
                remote,
                headers: parts.headers.clone(),
                uri: parts.uri.clone(),
            },
        })
    }
}

impl Caller {
    /// Perform `a` and answer as NSQ's API does: the warnings as `message`, or the error.
    async fn act(&self, admin: &Admin, a: ActionRequest) -> Response {
        match perform(admin, &self.access, &a, &self.info).await {
            Ok(w) => v1(StatusCode::OK, &json!({ "message": warn_message(&w) })),
            Err((status, msg)) => api_err(status, &msg),
        }
    }
}

async fn api_create(State(admin): State<Shared>, caller: Caller, body: Bytes) -> Response {
    let Some(v) = json_body(&body) else {
        return api_err(StatusCode::BAD_REQUEST, "INVALID_BODY");
    };
    let a = ActionRequest {
        action: "create".into(),
        topic: field(&v, "topic"),
        channel: field(&v, "channel"),
        node: String::new(),
    };
    caller.act(&admin, a).await
}

/// The `action` of a topic or channel action body (pause, unpause or empty), or the
/// 400 answer's message.
fn pause_or_empty(body: &Bytes) -> Result<String, &'static str> {
    let v = json_body(body).ok_or("INVALID_BODY")?;
    let action = field(&v, "action");
    if !matches!(action.as_str(), "pause" | "unpause" | "empty") {
        return Err("INVALID_ACTION");
    }
    Ok(action)
}

async fn api_topic_action(
    State(admin): State<Shared>,
    caller: Caller,
    Path(topic): Path<String>,
    body: Bytes,
) -> Response {
    let action = match pause_or_empty(&body) {
        Ok(a) => a,
        Err(msg) => return api_err(StatusCode::BAD_REQUEST, msg),
    };
    let a = ActionRequest {
        action,
        topic,
        ..Default::default()
    };
    caller.act(&admin, a).await
}

async fn api_channel_action(
    State(admin): State<Shared>,
    caller: Caller,
    Path((topic, channel)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let action = match pause_or_empty(&body) {
        Ok(a) => a,
        Err(msg) => return api_err(StatusCode::BAD_REQUEST, msg),
    };
    let a = ActionRequest {
        action,
        topic,
        channel,
        node: String::new(),
    };
    caller.act(&admin, a).await
}

async fn api_delete_topic(
    State(admin): State<Shared>,
    caller: Caller,
    Path(topic): Path<String>,
) -> Response {
    let a = ActionRequest {
        action: "delete".into(),
        topic,
        ..Default::default()
    };
    caller.act(&admin, a).await
}

async fn api_delete_channel(
    State(admin): State<Shared>,
    caller: Caller,
    Path((topic, channel)): Path<(String, String)>,
) -> Response {
    let a = ActionRequest {
        action: "delete".into(),
        topic,
        channel,
        node: String::new(),
    };
    caller.act(&admin, a).await
}

async fn api_tombstone(
    State(admin): State<Shared>,
    caller: Caller,
    Path(node): Path<String>,
    body: Bytes,
) -> Response {
    let Some(v) = json_body(&body) else {
        return api_err(StatusCode::BAD_REQUEST, "INVALID_BODY");
    };
    let a = ActionRequest {
        action: "tombstone".into(),
        topic: field(&v, "topic"),
        channel: String::new(),
        node,
    };
    caller.act(&admin, a).await
}

/// Page form: without `confirm=yes` answer the confirmation page; with it, act and go back
/// to the page concerned with a banner (`?ok=` / `?err=`).
async fn page_action(
    State(admin): State<Shared>,
    caller: Caller,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let get = |k: &str| form.get(k).cloned().unwrap_or_default();
    let a = ActionRequest {
        action: get("action"),
        topic: get("topic"),
        channel: get("channel"),
        node: get("node"),
    };
    if !caller.access.can_act {
        let mut r = pages::plain_page(
            "Not allowed",
            "Only admin users may pause, empty, delete or tombstone. This page is read-only for you.",
        )
        .into_response();
        *r.status_mut() = StatusCode::FORBIDDEN;
        return r;
    }
    if get("confirm") != "yes" {
        return pages::confirm_page(&admin, &a).into_response();
    }
    let base = &admin.base;
    let topic_page = format!("{base}/topics/{}", pages::enc(&a.topic));
    let target = match (a.action.as_str(), a.channel.is_empty()) {
        ("delete", true) => format!("{base}/"),
        ("tombstone", _) | (_, true) => topic_page,
        ("delete", false) => topic_page,
        (_, false) => format!("{topic_page}/{}", pages::enc(&a.channel)),
    };
    let what = pages::describe(&a);
    let banner = match perform(&admin, &caller.access, &a, &caller.info).await {
        Ok(w) if w.is_empty() => format!("ok={}", qs_escape(&format!("Done: {what}."))),
        Ok(w) => format!(
            "ok={}",
            qs_escape(&format!("Done: {what}. {}", warn_message(&w)))
        ),
        Err((_, msg)) => format!("err={}", qs_escape(&format!("Failed to {what}: {msg}"))),
    };
    Redirect::to(&format!("{target}?{banner}")).into_response()
}

// ------------------------------------------------------------------ reads

fn param(q: &Option<String>, key: &str) -> Option<String> {
    edge::http_api::query_param(q.as_deref(), key)
}

async fn api_topics(State(admin): State<Shared>, RawQuery(q): RawQuery) -> Response {
    let (topics, mut warnings) = match admin.ci.topics().await {
        Ok(r) => r,
        Err(e) => return upstream(e),
    };
    if param(&q, "inactive").as_deref() == Some("true") {
        let mut map = serde_json::Map::new();
        if !admin.ci.lookupd_addresses().is_empty() {
            for t in &topics {
                let producers = admin
                    .ci
                    .topic_producers(t)
                    .await
                    .map(|(p, _)| p)
                    .unwrap_or_default();
                if producers.is_empty() {
                    let channels = match admin.ci.lookupd_topic_channels(t).await {
                        Ok((c, w)) => {
                            warnings.extend(w);
                            c
                        }
                        Err(e) => {
                            warnings.push(e);
                            Vec::new()
                        }
                    };
                    map.insert(t.clone(), json!(channels));
                }
            }
        }
        return v1(
            StatusCode::OK,
            &json!({ "topics": map, "message": warn_message(&warnings) }),
        );
    }
    v1(
        StatusCode::OK,
        &json!({ "topics": topics, "message": warn_message(&warnings) }),
    )
}

/// One topic across the cluster (node "*"), with its per-node stats and channels.
pub async fn topic_stats(
    admin: &Admin,
    topic: &str,
    include_clients: bool,
) -> clusterinfo::Partial<clusterinfo::TopicStats> {
    let (producers, mut warnings) = admin.ci.topic_producers(topic).await?;
    let (stats, w) = admin
        .ci
        .node_stats(&producers, Some(topic), include_clients)
        .await?;
    warnings.extend(w);
    let mut all = clusterinfo::TopicStats {
        node: "*".into(),
        topic_name: topic.into(),
        ..Default::default()
    };
    for s in &stats {
        all.add(s);
    }
    Ok((all, warnings))
}

fn with_message(v: impl serde::Serialize, warnings: &[String]) -> Value {
    let mut v = serde_json::to_value(v).unwrap_or_else(|_| json!({}));
    if let Some(o) = v.as_object_mut() {
        o.insert("message".into(), json!(warn_message(warnings)));
    }
    v
}

/// NSQ's answer when no node has the topic: its nsqadmin asked no nsqd and says so.
const NO_NODE_HAS_TOPIC: &str = "failed to query any nsqd: ";

async fn api_topic(State(admin): State<Shared>, Path(topic): Path<String>) -> Response {
    match topic_stats(&admin, &topic, false).await {
        Ok((t, _)) if t.nodes.is_empty() => upstream(NO_NODE_HAS_TOPIC.into()),
        Ok((t, w)) => v1(StatusCode::OK, &with_message(&t, &w)),
        Err(e) => upstream(e),
    }
}

async fn api_channel(
    State(admin): State<Shared>,
    Path((topic, channel)): Path<(String, String)>,
) -> Response {
    match topic_stats(&admin, &topic, true).await {
        Ok((t, _)) if t.nodes.is_empty() => upstream(NO_NODE_HAS_TOPIC.into()),
        Ok((t, w)) => match t.channels.iter().find(|c| c.channel_name == channel) {
            Some(c) => v1(StatusCode::OK, &with_message(c, &w)),
            None => api_err(StatusCode::NOT_FOUND, "CHANNEL_NOT_FOUND"),
        },
        Err(e) => upstream(e),
    }
}

async fn api_nodes(State(admin): State<Shared>) -> Response {
    match admin.ci.producers().await {
        Ok((p, w)) => v1(
            StatusCode::OK,
            &json!({ "nodes": p, "message": warn_message(&w) }),
        ),
        Err(e) => upstream(e),
    }
}

/// One node's topics (with channels and clients) and totals, as NSQ's nodeHandler.
pub async fn node_stats(
    admin: &Admin,
    node: &str,
) -> Result<
    (
        clusterinfo::Producer,
        Vec<clusterinfo::TopicStats>,
        Vec<String>,
    ),
    Response,
> {
    let (producers, mut warnings) = admin.ci.producers().await.map_err(upstream)?;
    let Some(p) = producers.into_iter().find(|p| p.http_address() == node) else {
        return Err(api_err(StatusCode::NOT_FOUND, "NODE_NOT_FOUND"));
    };
    let (stats, w) = admin
        .ci
        .node_stats(std::slice::from_ref(&p), None, true)
        .await
        .map_err(upstream)?;
    warnings.extend(w);
    Ok((p, stats, warnings))
}

async fn api_node(State(admin): State<Shared>, Path(node): Path<String>) -> Response {
    match node_stats(&admin, &node).await {
        Ok((_, stats, w)) => {
            let total_clients: u64 = stats
                .iter()
                .flat_map(|t| &t.channels)
                .map(|c| c.clients.len() as u64)
                .sum();
            let total_messages: u64 = stats.iter().map(|t| t.message_count).sum();
            v1(
                StatusCode::OK,
                &json!({
                    "node": node,
                    "topics": stats,
                    "total_messages": total_messages,
                    "total_clients": total_clients,
                    "message": warn_message(&w),
                }),
            )
        }
        Err(r) => r,
    }
}

async fn api_counter(State(admin): State<Shared>) -> Response {
    match clusterinfo::cluster_snapshot(&admin.ci).await {
        Ok(((_, stats), w)) => v1(
            StatusCode::OK,
            &json!({ "stats": clusterinfo::counter_stats(&stats), "message": warn_message(&w) }),
        ),
        Err(e) => upstream(e),
    }
}

/// NSQ's Graphite rate lookup; without Graphite we answer from our own history:
/// `target` is ignored beyond naming a topic/channel in `topic` / `channel` parameters.
async fn api_graphite(State(admin): State<Shared>, RawQuery(q): RawQuery) -> Response {
    if param(&q, "metric").as_deref() != Some("rate") {
        return api_err(StatusCode::BAD_REQUEST, "INVALID_ARG_METRIC");
    }
    let topic = param(&q, "topic").unwrap_or_default();
    let channel = param(&q, "channel").unwrap_or_default();
    let key = crate::history::Key::new(&topic, &channel, "*");
    if admin.history.samples(&key).len() < 2 {
        return v1(StatusCode::OK, &json!({ "rate": "N/A" }));
    }
    v1(
        StatusCode::OK,
        &json!({ "rate": format!("{:.2}", admin.history.rate(&key)) }),
    )
}

async fn metrics(State(admin): State<Shared>) -> Response {
    let (producers, stats, errors) = match clusterinfo::cluster_snapshot(&admin.ci).await {
        Ok(((p, s), w)) => (p, s, w.len()),
        Err(e) => {
            tracing::warn!(error = %e, "metrics: no upstream answered");
            (Vec::new(), Vec::new(), 1)
        }
    };
    let text = crate::metrics::render(&producers, &stats, errors);
    let mut r = (StatusCode::OK, text).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    r
}

// ------------------------------------------------------------------ /config

async fn config(
    State(admin): State<Shared>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    method: Method,
    Path(opt): Path<String>,
    body: Bytes,
) -> Response {
    if let Some(cidr) = &admin.cidr {
        if !cidr.contains(remote.ip()) {
            return api_err(StatusCode::FORBIDDEN, "FORBIDDEN");
        }
    }
    if method == Method::PUT {
        if body.is_empty() || body.len() > 1024 * 1024 {
            return api_err(StatusCode::PAYLOAD_TOO_LARGE, "INVALID_VALUE");
        }
        match opt.as_str() {
            "nsqlookupd_http_addresses" => match serde_json::from_slice::<Vec<String>>(&body) {
                Ok(addrs) => admin.ci.set_lookupd_addresses(addrs),
                Err(_) => return api_err(StatusCode::BAD_REQUEST, "INVALID_VALUE"),
            },
            "log_level" => {
                let level = String::from_utf8_lossy(&body).trim().to_string();
                if crate::logging::set_level(&level).is_err() {
                    return api_err(StatusCode::BAD_REQUEST, "INVALID_VALUE");
                }
                *admin.log_level.lock() = level;
            }
            _ => return api_err(StatusCode::BAD_REQUEST, "INVALID_OPTION"),
        }
    }
    match admin.config_value(&opt) {
        Some(v) => v1(StatusCode::OK, &v),
        None => api_err(StatusCode::BAD_REQUEST, "INVALID_OPTION"),
    }
}
