//! Server-rendered pages: plain HTML tables (every value escaped), readable without
//! JavaScript; a few lines of inline script refresh the `<main>` part in place. Actions are
//! forms that POST to `/actions`, which answers a confirmation page first.

use std::fmt::Write;
use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::Extension;

use crate::clusterinfo::{self, ChannelStats, ClientStats, TopicStats};
use crate::history::{svg_chart, Key};
use crate::http::{Access, ActionRequest};
use crate::Admin;

type Shared = Arc<Admin>;

/// HTML-escape text for element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encode one URL path segment (topic names may hold `#`).
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~:".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Decode a query value (`+` is a space).
pub use edge::http_api::percent_decode_lossy as url_decode;

fn param(q: &Option<String>, key: &str) -> Option<String> {
    edge::http_api::query_param(q.as_deref(), key)
}

const STYLE: &str = "body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;color:#222;background:#fff}\
header{background:#1d3c5e;color:#fff;padding:.5em 1em;display:flex;gap:1.5em;align-items:baseline}\
header a{color:#fff;text-decoration:none}header .brand{font-weight:bold;font-size:1.2em}\
main,.banner{padding:0 1em}h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.5em}\
table{border-collapse:collapse;margin:.5em 0}th,td{border:1px solid #ddd;padding:.25em .6em;text-align:left}\
th{background:#f2f4f7}td.num{text-align:right;font-variant-numeric:tabular-nums}tr.total td{font-weight:bold;background:#fafafa}\
.banner p{padding:.6em 1em;border-radius:4px}.ok{background:#e3f5e1;border:1px solid #8c8}.err{background:#fbe3e3;border:1px solid #d88}\
.warn{background:#fff6d9;border:1px solid #dc8}.paused{color:#b30;font-weight:bold}\
form.inline{display:inline}button{margin:.1em .3em .1em 0;cursor:pointer}button.danger{color:#a00}\
.charts{display:flex;flex-wrap:wrap;gap:1em}figure.chart{margin:0}figcaption{font-size:.85em;color:#444}\
.muted{color:#777}.big{font-size:3em;font-weight:bold}footer{padding:1em;color:#888;font-size:.8em}";

const REFRESH_JS: &str = "<script>(function(){var ms=5000;function r(){if(document.hidden)return;\
fetch(location.href,{credentials:'same-origin'}).then(function(x){return x.ok?x.text():null}).then(function(t){if(!t)return;\
var d=new DOMParser().parseFromString(t,'text/html');var n=d.querySelector('main');var o=document.querySelector('main');\
if(n&&o){o.replaceWith(n)}}).catch(function(){})}setInterval(r,ms)})();</script>";

fn nav(admin: &Admin) -> String {
    let b = &admin.base;
    let mut s = format!(
        "<header><a class=\"brand\" href=\"{b}/\">nsqadmin</a><a href=\"{b}/\">Topics</a>\
         <a href=\"{b}/nodes\">Nodes</a><a href=\"{b}/counter\">Counter</a>"
    );
    if !admin.ci.lookupd_addresses().is_empty() {
        let _ = write!(s, "<a href=\"{b}/lookup\">Lookup</a>");
    }
    s.push_str("</header>");
    s
}

/// The page frame: nav, banner from `?ok=`/`?err=`, partial-failure warnings, content.
fn layout(
    admin: &Admin,
    title: &str,
    q: &Option<String>,
    warnings: &[String],
    main: &str,
) -> Html<String> {
    let mut banner = String::new();
    if let Some(m) = param(q, "ok") {
        let _ = write!(banner, "<p class=\"ok\" id=\"banner\">{}</p>", esc(&m));
    }
    if let Some(m) = param(q, "err") {
        let _ = write!(banner, "<p class=\"err\" id=\"banner\">{}</p>", esc(&m));
    }
    let mut warn = String::new();
    if !warnings.is_empty() {
        let _ = write!(
            warn,
            "<p class=\"warn\">{}</p>",
            esc(&clusterinfo::warn_message(warnings))
        );
    }
    Html(format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · nsqadmin</title><style>{STYLE}</style></head><body>{}\
         <div class=\"banner\">{banner}</div><main>{warn}{main}</main>\
         <footer>nsq-rs nsqadmin {} · pages refresh every 5 s with JavaScript on</footer>{REFRESH_JS}</body></html>",
        esc(title),
        nav(admin),
        env!("CARGO_PKG_VERSION"),
    ))
}

/// A minimal page for errors and refusals.
pub fn plain_page(title: &str, text: &str) -> Html<String> {
    Html(format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title>\
         <style>{STYLE}</style></head><body><main><h1>{t}</h1><p>{}</p></main></body></html>",
        esc(text),
        t = esc(title),
    ))
}

fn error_page(admin: &Admin, q: &Option<String>, msg: &str) -> Response {
    let body = format!(
        "<h1>Cluster unreachable</h1><p class=\"err\">{}</p>",
        esc(msg)
    );
    let mut r = layout(admin, "Error", q, &[], &body).into_response();
    *r.status_mut() = StatusCode::BAD_GATEWAY;
    r
}

/// "pause topic orders" etc., for banners and the confirmation page.
pub fn describe(a: &ActionRequest) -> String {
    let what = if a.channel.is_empty() {
        format!("topic {}", a.topic)
    } else {
        format!("channel {} of topic {}", a.channel, a.topic)
    };
    match a.action.as_str() {
        "tombstone" => format!("tombstone topic {} on node {}", a.topic, a.node),
        "create" => format!("create {what}"),
        other => format!("{other} {what}"),
    }
}

/// "Are you sure?" with the same fields plus confirm=yes; Cancel goes back without acting.
pub fn confirm_page(admin: &Admin, a: &ActionRequest) -> Html<String> {
    let b = &admin.base;
    let back = if a.channel.is_empty() || a.action == "delete" {
        format!("{b}/topics/{}", enc(&a.topic))
    } else {
        format!("{b}/topics/{}/{}", enc(&a.topic), enc(&a.channel))
    };
    let warning = match a.action.as_str() {
        "empty" => "Every queued message will be dropped.",
        "delete" => "The queued messages are dropped and the name is removed from every node.",
        "tombstone" => "The node stops being listed for this topic in nsqlookupd, and the topic is deleted on that node.",
        "pause" => "Consumers stop receiving messages until it is unpaused.",
        _ => "",
    };
    let body = format!(
        "<h1>Confirm</h1><p id=\"confirm-question\">Really <b>{}</b>?</p><p>{}</p>\
         <form method=\"post\" action=\"{b}/actions\">\
         <input type=\"hidden\" name=\"action\" value=\"{}\"><input type=\"hidden\" name=\"topic\" value=\"{}\">\
         <input type=\"hidden\" name=\"channel\" value=\"{}\"><input type=\"hidden\" name=\"node\" value=\"{}\">\
         <input type=\"hidden\" name=\"confirm\" value=\"yes\">\
         <button type=\"submit\" id=\"confirm\" class=\"danger\">Yes, {}</button> <a id=\"cancel\" href=\"{}\">Cancel</a></form>",
        esc(&describe(a)),
        esc(warning),
        esc(&a.action),
        esc(&a.topic),
        esc(&a.channel),
        esc(&a.node),
        esc(&a.action),
        esc(&back),
    );
    layout(admin, "Confirm", &None, &[], &body)
}

/// A button that starts an action (leads to the confirmation page).
fn action_button(admin: &Admin, access: &Access, a: &ActionRequest, label: &str) -> String {
    if !access.can_act {
        return String::new();
    }
    let class = if matches!(a.action.as_str(), "delete" | "empty" | "tombstone") {
        " class=\"danger\""
    } else {
        ""
    };
    let id = if a.node.is_empty() {
        format!(
            "{}-{}",
            a.action,
            if a.channel.is_empty() {
                "topic"
            } else {
                "channel"
            }
        )
    } else {
        format!("tombstone-{}", a.node)
    };
    format!(
        "<form class=\"inline\" method=\"post\" action=\"{}/actions\">\
         <input type=\"hidden\" name=\"action\" value=\"{}\"><input type=\"hidden\" name=\"topic\" value=\"{}\">\
         <input type=\"hidden\" name=\"channel\" value=\"{}\"><input type=\"hidden\" name=\"node\" value=\"{}\">\
         <button type=\"submit\" id=\"{}\"{class}>{}</button></form>",
        admin.base,
        esc(&a.action),
        esc(&a.topic),
        esc(&a.channel),
        esc(&a.node),
        esc(&id),
        esc(label)
    )
}

fn read_only_note(admin: &Admin, access: &Access) -> String {
    if access.can_act || admin.opts.admin_users.is_empty() {
        String::new()
    } else {
        "<p class=\"muted\" id=\"read-only\">Read-only: only admin users may act.</p>".into()
    }
}

fn num(v: u64) -> String {
    format!("<td class=\"num\">{v}</td>")
}

fn rate_cell(v: f64) -> String {
    format!("<td class=\"num\">{v:.2}/s</td>")
}

fn paused_badge(p: bool) -> &'static str {
    if p {
        " <span class=\"paused\">paused</span>"
    } else {
        ""
    }
}

/// The p99 (or highest configured quantile) e2e latency, as "12.3ms"; "-" if none.
fn e2e_text(agg: &clusterinfo::LatencyAggregate) -> String {
    let p = agg
        .percentiles
        .iter()
        .map(|p| {
            (
                p.get("quantile").copied().unwrap_or(0.0),
                p.get("max").copied().unwrap_or(0.0),
            )
        })
        .collect::<Vec<_>>();
    if p.is_empty() {
        return "-".into();
    }
    p.iter()
        .map(|(q, v)| format!("p{}: {}", q * 100.0, duration_text(*v / 1e9)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn duration_text(secs: f64) -> String {
    if secs < 1e-3 {
        format!("{:.0}µs", secs * 1e6)
    } else if secs < 1.0 {
        format!("{:.1}ms", secs * 1e3)
    } else if secs < 120.0 {
        format!("{secs:.1}s")
    } else {
        let s = secs as u64;
        format!("{}h{}m{}s", s / 3600, (s % 3600) / 60, s % 60)
    }
}

fn charts(admin: &Admin, topic: &str, channel: &str) -> String {
    let samples = admin.history.samples(&Key::new(topic, channel, "*"));
    let depth: Vec<(u64, f64)> = samples.iter().map(|s| (s.at, s.depth as f64)).collect();
    let rate: Vec<(u64, f64)> = samples.iter().skip(1).map(|s| (s.at, s.rate)).collect();
    // On a topic page, also the backlog of all its channels together.
    let backlog = if channel.is_empty() {
        let all = admin
            .history
            .samples(&Key::new(topic, crate::history::ALL_CHANNELS, "*"));
        let v: Vec<(u64, f64)> = all.iter().map(|s| (s.at, s.depth as f64)).collect();
        svg_chart("depth of all channels", "messages", &v)
    } else {
        String::new()
    };
    format!(
        "<h2>History</h2><div class=\"charts\" id=\"charts\">{}{}{backlog}</div>",
        svg_chart("depth", "messages", &depth),
        svg_chart("message rate", "msgs/s", &rate)
    )
}

// ------------------------------------------------------------------ pages

pub async fn overview(State(admin): State<Shared>, RawQuery(q): RawQuery) -> Response {
    let ((_, stats), mut warnings) = match clusterinfo::cluster_snapshot(&admin.ci).await {
        Ok(r) => r,
        Err(e) => return error_page(&admin, &q, &e),
    };
    let (names, w) = admin.ci.topics().await.unwrap_or_default();
    warnings.extend(w);
    let topics = clusterinfo::aggregate_topics(&stats);
    let b = &admin.base;
    let mut s = String::from(
        "<h1>Topics</h1><table id=\"topics\"><thead><tr><th>Topic</th><th>Depth</th><th>Channel depth</th><th>Memory + Disk</th>\
         <th>Messages</th><th>Rate</th><th>Channels</th><th>Nodes</th></tr></thead><tbody>",
    );
    let mut listed = std::collections::BTreeSet::new();
    for t in &topics {
        listed.insert(t.topic_name.clone());
        let rate = admin.history.rate(&Key::new(&t.topic_name, "", "*"));
        let _ = write!(
            s,
            "<tr data-topic=\"{}\"><td><a href=\"{b}/topics/{}\">{}</a>{}</td>{}{}<td class=\"num\">{} + {}</td>{}{}{}{}</tr>",
            esc(&t.topic_name),
            enc(&t.topic_name),
            esc(&t.topic_name),
            paused_badge(t.paused),
            num(t.depth),
            num(t.channels.iter().map(|c| c.depth).sum()),
            t.memory_depth,
            t.backend_depth,
            num(t.message_count),
            rate_cell(rate),
            num(t.channels.len() as u64),
            num(t.nodes.len() as u64),
        );
    }
    for n in names.iter().filter(|n| !listed.contains(*n)) {
        let _ = write!(
            s,
            "<tr data-topic=\"{}\"><td><a href=\"{b}/topics/{}\">{}</a> <span class=\"muted\">(no producers)</span></td>\
             <td class=\"num\">0</td><td class=\"num\">0</td><td class=\"num\">0 + 0</td><td class=\"num\">0</td><td class=\"num\">-</td><td class=\"num\">0</td><td class=\"num\">0</td></tr>",
            esc(n),
            enc(n),
            esc(n)
        );
    }
    s.push_str("</tbody></table>");
    if topics.is_empty() && names.is_empty() {
        s.push_str("<p class=\"muted\">No topics yet.</p>");
    }
    layout(&admin, "Topics", &q, &warnings, &s).into_response()
}

pub async fn topic(
    State(admin): State<Shared>,
    Extension(access): Extension<Access>,
    Path(topic): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let (t, warnings) = match crate::http::topic_stats(&admin, &topic, false).await {
        Ok(r) => r,
        Err(e) => return error_page(&admin, &q, &e),
    };
    let b = &admin.base;
    let mut s = format!(
        "<h1>Topic <span id=\"topic-name\">{}</span>{}</h1>{}",
        esc(&topic),
        paused_badge(t.paused),
        read_only_note(&admin, &access)
    );
    let act = |action: &str, label: &str| {
        action_button(
            &admin,
            &access,
            &ActionRequest {
                action: action.into(),
                topic: topic.clone(),
                ..Default::default()
            },
            label,
        )
    };
    s.push_str("<p>");
    s.push_str(&if t.paused {
        act("unpause", "Unpause topic")
    } else {
        act("pause", "Pause topic")
    });
    s.push_str(&act("empty", "Empty topic"));
    s.push_str(&act("delete", "Delete topic"));
    s.push_str("</p>");
    s.push_str(&charts(&admin, &topic, ""));
    s.push_str(
        "<h2>Nodes</h2><table id=\"topic-nodes\"><thead><tr><th>Node</th><th>Depth</th><th>Memory</th><th>Disk</th>\
         <th>Messages</th><th>Rate</th><th>Channels</th><th>E2E latency</th><th></th>\
         <th>On disk</th><th>Storage</th></tr></thead><tbody>",
    );
    let lookupd = !admin.ci.lookupd_addresses().is_empty();
    for n in &t.nodes {
        let tomb = if lookupd {
            action_button(
                &admin,
                &access,
                &ActionRequest {
                    action: "tombstone".into(),
                    topic: topic.clone(),
                    channel: String::new(),
                    node: n.node.clone(),
                },
                "Tombstone",
            )
        } else {
            String::new()
        };
        let _ = write!(
            s,
            "<tr data-node=\"{}\"><td><a href=\"{b}/nodes/{}\">{}</a>{}</td>{}{}{}{}{}{}<td>{}</td><td>{tomb}</td>{}</tr>",
            esc(&n.node),
            enc(&n.node),
            esc(&n.node),
            paused_badge(n.paused),
            num(n.depth),
            num(n.memory_depth),
            num(n.backend_depth),
            num(n.message_count),
            rate_cell(admin.history.rate(&Key::new(&topic, "", &n.node))),
            num(n.channels.len() as u64),
            esc(&e2e_text(&n.e2e_processing_latency)),
            storage_cells(n),
        );
    }
    let _ = write!(
        s,
        "<tr class=\"total\" data-node=\"*\"><td>Total</td>{}{}{}{}{}{}<td>{}</td><td></td>{}</tr></tbody></table>",
        num(t.depth),
        num(t.memory_depth),
        num(t.backend_depth),
        num(t.message_count),
        rate_cell(admin.history.rate(&Key::new(&topic, "", "*"))),
        num(t.channels.len() as u64),
        esc(&e2e_text(&t.e2e_processing_latency)),
        storage_cells(&t),
    );
    s.push_str(&channels_table(&admin, &topic, &t));
    s.push_str(&settings_table(&t));
    layout(&admin, &format!("Topic {topic}"), &q, &warnings, &s).into_response()
}

/// Per node, the topic's settings in force (`/topic/config`; beyond NSQ); a value the
/// topic sets itself is marked, the others come from the node's flags.
fn settings_table(t: &TopicStats) -> String {
    let nodes: Vec<&TopicStats> = t
        .nodes
        .iter()
        .filter(|n| n.effective_config.is_some())
        .collect();
    if nodes.is_empty() {
        return String::new();
    }
    let mut s = String::from(
        "<h2>Settings</h2><p class=\"muted\">In force on each node; <b>bold</b> = set for this \
         topic (<code>PUT /topic/config</code> on nsqd), the rest are the node's flags.</p>\
         <table id=\"topic-settings\"><thead><tr><th>Node</th>",
    );
    for (name, unit) in clusterinfo::TOPIC_SETTINGS {
        let _ = write!(s, "<th>{} ({unit})</th>", esc(name));
    }
    s.push_str("</tr></thead><tbody>");
    for n in nodes {
        let _ = write!(
            s,
            "<tr data-settings-node=\"{}\"><td>{}</td>",
            esc(&n.node),
            esc(&n.node)
        );
        for (name, _) in clusterinfo::TOPIC_SETTINGS {
            let value = n
                .effective_config
                .as_ref()
                .and_then(|c| c.get(name))
                .map(|v| v.to_string())
                .unwrap_or_default();
            let overridden = n
                .config
                .as_ref()
                .and_then(|c| c.get(name))
                .is_some_and(|v| !v.is_null());
            let _ = write!(
                s,
                "<td data-setting=\"{}\" data-overridden=\"{overridden}\">{}</td>",
                esc(name),
                if overridden {
                    format!("<b>{}</b>", esc(&value))
                } else {
                    esc(&value)
                }
            );
        }
        s.push_str("</tr>");
    }
    s.push_str("</tbody></table>");
    s
}

fn channels_table(admin: &Admin, topic: &str, t: &TopicStats) -> String {
    let b = &admin.base;
    let mut s = String::from(
        "<h2>Channels</h2><table id=\"channels\"><thead><tr><th>Channel</th><th>Depth</th><th>Memory + Disk</th><th>In flight</th>\
         <th>Deferred</th><th>Requeued</th><th>Timed out</th><th>Messages</th><th>Rate</th><th>Clients</th><th>E2E latency</th></tr></thead><tbody>",
    );
    for c in &t.channels {
        let _ = write!(
            s,
            "<tr data-channel=\"{}\"><td><a href=\"{b}/topics/{}/{}\">{}</a>{}</td>{}<td class=\"num\">{} + {}</td>{}{}{}{}{}{}{}<td>{}</td></tr>",
            esc(&c.channel_name),
            enc(topic),
            enc(&c.channel_name),
            esc(&c.channel_name),
            paused_badge(c.paused),
            num(c.depth),
            c.memory_depth,
            c.backend_depth,
            num(c.in_flight_count),
            num(c.deferred_count),
            num(c.requeue_count),
            num(c.timeout_count),
            num(c.message_count),
            rate_cell(admin.history.rate(&Key::new(topic, &c.channel_name, "*"))),
            num(c.client_count),
            esc(&e2e_text(&c.e2e_processing_latency)),
        );
    }
    s.push_str("</tbody></table>");
    if t.channels.is_empty() {
        s.push_str("<p class=\"muted\">No channels.</p>");
    }
    s
}

fn clients_table(clients: &[ClientStats]) -> String {
    let mut s = String::from(
        "<table class=\"clients\"><thead><tr><th>Node</th><th>Client</th><th>Address</th><th>User agent</th>\
         <th>TLS</th><th>Snappy</th><th>Deflate</th><th>RDY</th><th>In flight</th><th>Messages</th><th>Finished</th>\
         <th>Requeued</th><th>Connected for</th></tr></thead><tbody>",
    );
    let yes = |v: bool| if v { "yes" } else { "no" };
    for c in clients {
        let tls = if c.tls {
            format!("yes {}", c.tls_version)
        } else {
            "no".into()
        };
        let _ = write!(
            s,
            "<tr data-client=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>{}{}{}{}{}<td>{}</td></tr>",
            esc(&c.client_id),
            esc(&c.node),
            esc(&c.client_id),
            esc(&c.remote_address),
            esc(&c.user_agent),
            esc(&tls),
            yes(c.snappy),
            yes(c.deflate),
            num(c.ready_count.max(0) as u64),
            num(c.in_flight_count.max(0) as u64),
            num(c.message_count),
            num(c.finish_count),
            num(c.requeue_count),
            esc(&duration_text(c.connected as f64 / 1e9)),
        );
    }
    s.push_str("</tbody></table>");
    if clients.is_empty() {
        s.push_str("<p class=\"muted\">No clients connected.</p>");
    }
    s
}

pub async fn channel(
    State(admin): State<Shared>,
    Extension(access): Extension<Access>,
    Path((topic, channel)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> Response {
    let (t, warnings) = match crate::http::topic_stats(&admin, &topic, true).await {
        Ok(r) => r,
        Err(e) => return error_page(&admin, &q, &e),
    };
    let b = &admin.base;
    let Some(c) = t.channels.iter().find(|c| c.channel_name == channel) else {
        let body = format!(
            "<h1>Channel {} not found</h1><p>Topic <a href=\"{b}/topics/{}\">{}</a> has no such channel on any node.</p>",
            esc(&channel),
            enc(&topic),
            esc(&topic)
        );
        let mut r = layout(&admin, "Not found", &q, &warnings, &body).into_response();
        *r.status_mut() = StatusCode::NOT_FOUND;
        return r;
    };
    let mut s = format!(
        "<h1>Channel <span id=\"channel-name\">{}</span> of topic <a href=\"{b}/topics/{}\">{}</a>{}</h1>{}",
        esc(&channel),
        enc(&topic),
        esc(&topic),
        paused_badge(c.paused),
        read_only_note(&admin, &access)
    );
    let act = |action: &str, label: &str| {
        action_button(
            &admin,
            &access,
            &ActionRequest {
                action: action.into(),
                topic: topic.clone(),
                channel: channel.clone(),
                node: String::new(),
            },
            label,
        )
    };
    s.push_str("<p>");
    s.push_str(&if c.paused {
        act("unpause", "Unpause channel")
    } else {
        act("pause", "Pause channel")
    });
    s.push_str(&act("empty", "Empty channel"));
    s.push_str(&act("delete", "Delete channel"));
    s.push_str("</p>");
    s.push_str(&charts(&admin, &topic, &channel));
    s.push_str(&channel_nodes_table(&admin, &topic, c));
    s.push_str("<h2>Clients</h2>");
    s.push_str(&clients_table(&c.clients));
    layout(
        &admin,
        &format!("Channel {channel} of {topic}"),
        &q,
        &warnings,
        &s,
    )
    .into_response()
}

/// What only our engine reports (nodes running NSQ leave these at zero): bytes of the
/// topic's log on disk with its segment count, and its storage state.
fn storage_cells(t: &TopicStats) -> String {
    let state = if !t.storage_error.is_empty() {
        format!("<span class=\"warn\">{}</span>", esc(&t.storage_error))
    } else if t.corrupt_records > 0 {
        format!("{} damaged records skipped", t.corrupt_records)
    } else {
        "OK".to_string()
    };
    format!(
        "<td class=\"disk\">{} in {} segments</td><td class=\"storage\">{state}</td>",
        bytes_text(t.disk_bytes),
        t.disk_segments
    )
}

fn bytes_text(b: u64) -> String {
    match b {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

fn age_text(ms: u64) -> String {
    match ms {
        0 => "-".to_string(),
        ms if ms < 1000 => format!("{ms} ms"),
        ms if ms < 120_000 => format!("{:.1} s", ms as f64 / 1000.0),
        ms if ms < 7_200_000 => format!("{} min", ms / 60_000),
        ms => format!("{:.1} h", ms as f64 / 3_600_000.0),
    }
}

fn channel_nodes_table(admin: &Admin, topic: &str, c: &ChannelStats) -> String {
    let b = &admin.base;
    let mut s = String::from(
        "<h2>Nodes</h2><table id=\"channel-nodes\"><thead><tr><th>Node</th><th>Depth</th><th>Memory</th><th>Disk</th>\
         <th>In flight</th><th>Deferred</th><th>Requeued</th><th>Timed out</th><th>Messages</th><th>Rate</th><th>Clients</th><th>E2E latency</th>\
         <th title=\"age of the oldest message not finished\">Lag</th></tr></thead><tbody>",
    );
    let row = |s: &mut String, label: String, key: &str, n: &ChannelStats, class: &str| {
        let _ = write!(
            s,
            "<tr{class} data-node=\"{}\"><td>{label}{}</td>{}{}{}{}{}{}{}{}{}{}<td>{}</td><td class=\"lag\">{}</td></tr>",
            esc(key),
            paused_badge(n.paused),
            num(n.depth),
            num(n.memory_depth),
            num(n.backend_depth),
            num(n.in_flight_count),
            num(n.deferred_count),
            num(n.requeue_count),
            num(n.timeout_count),
            num(n.message_count),
            rate_cell(admin.history.rate(&Key::new(topic, &n.channel_name, key))),
            num(n.client_count),
            esc(&e2e_text(&n.e2e_processing_latency)),
            age_text(n.oldest_unfinished_age_ms),
        );
    };
    for n in &c.nodes {
        let label = format!(
            "<a href=\"{b}/nodes/{}\">{}</a>",
            enc(&n.node),
            esc(&n.node)
        );
        row(&mut s, label, &n.node, n, "");
    }
    row(&mut s, "Total".into(), "*", c, " class=\"total\"");
    s.push_str("</tbody></table>");
    s
}

pub async fn nodes(State(admin): State<Shared>, RawQuery(q): RawQuery) -> Response {
    let (producers, warnings) = match admin.ci.producers().await {
        Ok(r) => r,
        Err(e) => return error_page(&admin, &q, &e),
    };
    let b = &admin.base;
    let lookupd = admin.ci.lookupd_addresses().len();
    let mut s = String::from(
        "<h1>Nodes</h1><table id=\"nodes\"><thead><tr><th>Hostname</th><th>Broadcast address</th><th>TCP port</th>\
         <th>HTTP port</th><th>Version</th><th>Lookupd connections</th><th>Topics</th></tr></thead><tbody>",
    );
    for p in &producers {
        let version = if p.out_of_date {
            format!(
                "{} <span class=\"paused\">(out of date)</span>",
                esc(&p.version)
            )
        } else {
            esc(&p.version)
        };
        let conns = if lookupd == 0 {
            "-".to_string()
        } else {
            format!("{} of {lookupd}", p.remote_addresses.len())
        };
        let _ = write!(
            s,
            "<tr data-node=\"{}\"><td><a href=\"{b}/nodes/{}\">{}</a></td><td>{}</td>{}{}<td>{version}</td><td>{}</td>{}</tr>",
            esc(&p.http_address()),
            enc(&p.http_address()),
            esc(&p.hostname),
            esc(&p.broadcast_address),
            num(p.tcp_port as u64),
            num(p.http_port as u64),
            esc(&conns),
            num(p.topics.len() as u64),
        );
    }
    s.push_str("</tbody></table>");
    layout(&admin, "Nodes", &q, &warnings, &s).into_response()
}

pub async fn node(
    State(admin): State<Shared>,
    Extension(access): Extension<Access>,
    Path(node): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let (p, stats, warnings) = match crate::http::node_stats(&admin, &node).await {
        Ok(r) => r,
        Err(r) if r.status() == StatusCode::NOT_FOUND => {
            let mut r = layout(
                &admin,
                "Not found",
                &q,
                &[],
                &format!("<h1>Node {} not found</h1>", esc(&node)),
            )
            .into_response();
            *r.status_mut() = StatusCode::NOT_FOUND;
            return r;
        }
        Err(r) => return r,
    };
    let b = &admin.base;
    let total_messages: u64 = stats.iter().map(|t| t.message_count).sum();
    let total_clients: u64 = stats
        .iter()
        .flat_map(|t| &t.channels)
        .map(|c| c.clients.len() as u64)
        .sum();
    let mut s = format!(
        "<h1>Node <span id=\"node-name\">{}</span></h1><p>{} · version {} · TCP {} · {} topics · \
         <span id=\"node-messages\">{total_messages}</span> messages · <span id=\"node-clients\">{total_clients}</span> clients</p>",
        esc(&node),
        esc(&p.hostname),
        esc(&p.version),
        esc(&p.tcp_address()),
        stats.len(),
    );
    let lookupd = !admin.ci.lookupd_addresses().is_empty();
    s.push_str(
        "<table id=\"node-topics\"><thead><tr><th>Topic / channel</th><th>Depth</th><th>Memory + Disk</th><th>In flight</th>\
         <th>Deferred</th><th>Requeued</th><th>Timed out</th><th>Messages</th><th>Clients</th><th></th></tr></thead><tbody>",
    );
    for t in &stats {
        let tomb = if lookupd {
            action_button(
                &admin,
                &access,
                &ActionRequest {
                    action: "tombstone".into(),
                    topic: t.topic_name.clone(),
                    channel: String::new(),
                    node: node.clone(),
                },
                "Tombstone",
            )
        } else {
            String::new()
        };
        let _ = write!(
            s,
            "<tr class=\"total\"><td><a href=\"{b}/topics/{}\">{}</a>{}</td>{}<td class=\"num\">{} + {}</td><td></td><td></td><td></td><td></td>{}{}<td>{tomb}</td></tr>",
            enc(&t.topic_name),
            esc(&t.topic_name),
            paused_badge(t.paused),
            num(t.depth),
            t.memory_depth,
            t.backend_depth,
            num(t.message_count),
            num(t.client_count()),
        );
        for c in &t.channels {
            let _ = write!(
                s,
                "<tr><td>&nbsp;&nbsp;<a href=\"{b}/topics/{}/{}\">{}</a>{}</td>{}<td class=\"num\">{} + {}</td>{}{}{}{}{}{}<td></td></tr>",
                enc(&t.topic_name),
                enc(&c.channel_name),
                esc(&c.channel_name),
                paused_badge(c.paused),
                num(c.depth),
                c.memory_depth,
                c.backend_depth,
                num(c.in_flight_count),
                num(c.deferred_count),
                num(c.requeue_count),
                num(c.timeout_count),
                num(c.message_count),
                num(c.client_count),
            );
        }
    }
    s.push_str("</tbody></table>");
    let clients: Vec<ClientStats> = stats
        .iter()
        .flat_map(|t| &t.channels)
        .flat_map(|c| c.clients.iter().cloned())
        .collect();
    s.push_str("<h2>Clients</h2>");
    s.push_str(&clients_table(&clients));
    layout(&admin, &format!("Node {node}"), &q, &warnings, &s).into_response()
}

pub async fn counter(State(admin): State<Shared>, RawQuery(q): RawQuery) -> Response {
    let ((_, stats), warnings) = match clusterinfo::cluster_snapshot(&admin.ci).await {
        Ok(r) => r,
        Err(e) => return error_page(&admin, &q, &e),
    };
    let total: u64 = stats
        .iter()
        .flat_map(|t| &t.channels)
        .map(|c| c.message_count)
        .sum();
    let b = &admin.base;
    let s = format!(
        "<h1>Messages processed</h1><p class=\"big\" id=\"counter\">{total}</p>\
         <p class=\"muted\">Sum of every channel's message count on every node. <span id=\"counter-rate\"></span></p>\
         <script>(function(){{var last=null,lt=0;function tick(){{fetch('{b}/api/counter',{{credentials:'same-origin'}}).then(function(r){{return r.json()}}).then(function(d){{\
         var n=0;for(var k in d.stats){{n+=d.stats[k].message_count}}var el=document.getElementById('counter');if(el)el.textContent=n;\
         var now=Date.now();if(last!==null&&now>lt){{var r=document.getElementById('counter-rate');if(r)r.textContent=((n-last)*1000/(now-lt)).toFixed(1)+' msgs/s'}}last=n;lt=now}}).catch(function(){{}})}}\
         tick();setInterval(tick,1000)}})();</script>"
    );
    layout(&admin, "Counter", &q, &warnings, &s).into_response()
}

pub async fn lookup(
    State(admin): State<Shared>,
    Extension(access): Extension<Access>,
    RawQuery(q): RawQuery,
) -> Response {
    if admin.ci.lookupd_addresses().is_empty() {
        let body = "<h1>Lookup</h1><p>nsqadmin was started with --nsqd-http-address: there is no nsqlookupd to show.</p>";
        return layout(&admin, "Lookup", &q, &[], body).into_response();
    }
    let (topics, mut warnings) = match admin.ci.topics().await {
        Ok(r) => r,
        Err(e) => return error_page(&admin, &q, &e),
    };
    let b = &admin.base;
    let mut s = format!(
        "<h1>Lookup</h1><p>nsqlookupd: {}</p><h2>Topics and channels</h2><table id=\"lookup-topics\"><thead><tr><th>Topic</th><th>Channels</th></tr></thead><tbody>",
        esc(&admin.ci.lookupd_addresses().join(", "))
    );
    for t in &topics {
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
        let links: Vec<String> = channels
            .iter()
            .map(|c| {
                format!(
                    "<a href=\"{b}/topics/{}/{}\">{}</a>",
                    enc(t),
                    enc(c),
                    esc(c)
                )
            })
            .collect();
        let _ = write!(
            s,
            "<tr><td><a href=\"{b}/topics/{}\">{}</a></td><td>{}</td></tr>",
            enc(t),
            esc(t),
            links.join(", ")
        );
    }
    s.push_str("</tbody></table>");
    let (producers, w) = admin.ci.producers().await.unwrap_or_default();
    warnings.extend(w);
    s.push_str(
        "<h2>Registrations</h2><table id=\"registrations\"><thead><tr><th>Node</th><th>Registered through</th><th>Topics</th><th>Tombstoned</th></tr></thead><tbody>",
    );
    for p in &producers {
        let topics: Vec<String> = p
            .topics
            .iter()
            .filter(|t| !t.tombstoned)
            .map(|t| esc(&t.topic))
            .collect();
        let tombs: Vec<String> = p
            .topics
            .iter()
            .filter(|t| t.tombstoned)
            .map(|t| esc(&t.topic))
            .collect();
        let _ = write!(
            s,
            "<tr><td><a href=\"{b}/nodes/{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            enc(&p.http_address()),
            esc(&p.http_address()),
            esc(&p.remote_addresses.join(", ")),
            topics.join(", "),
            tombs.join(", "),
        );
    }
    s.push_str("</tbody></table>");
    if access.can_act {
        let _ = write!(
            s,
            "<h2>Create</h2><form method=\"post\" action=\"{b}/actions\"><input type=\"hidden\" name=\"action\" value=\"create\">\
             <label>Topic <input name=\"topic\" required pattern=\"[.a-zA-Z0-9_\\-]+(#ephemeral)?\"></label> \
             <label>Channel (optional) <input name=\"channel\"></label> \
             <input type=\"hidden\" name=\"confirm\" value=\"yes\"><button type=\"submit\" id=\"create\">Create</button></form>\
             <p class=\"muted\">Creates the topic (and channel) in nsqlookupd; producers pick it up when they register.</p>"
        );
    }
    layout(&admin, "Lookup", &q, &warnings, &s).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_and_encoding() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(enc("t#ephemeral"), "t%23ephemeral");
        assert_eq!(enc("127.0.0.1:4151"), "127.0.0.1:4151");
        assert_eq!(url_decode("a+b%20c%zz%4"), "a b c%zz%4");
        assert_eq!(duration_text(0.0123), "12.3ms");
        assert_eq!(duration_text(3725.0), "1h2m5s");
    }
}
