//! nsqadmin over real daemons: two nsqd registered with one nsqlookupd, every `/api/...`
//! endpoint with NSQ's shapes (values checked against the nodes' own /stats), actions that
//! take effect on the nsqd, the pages, access control, notifications, basic auth, and
//! `/metrics` parsed with a Prometheus text-format parser and compared with /stats.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc;
use std::time::Duration;

use nsq_blackbox_tests::{
    http_get, http_json, http_post, start_lookupd, wait_until, Lookupd, Nsqadmin, Nsqd, RawConn,
};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(15);

/// An HTTP request with extra headers (the harness's `http` sends none): (status, headers, body).
fn request(
    method: &str,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, Vec<u8>) {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = client
        .request(method, format!("http://{addr}{path}"))
        .body(body.to_vec());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().unwrap();
    let status = resp.status().as_u16();
    let location = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    (status, location, resp.bytes().unwrap().to_vec())
}

fn json_of(b: &[u8]) -> Value {
    serde_json::from_slice(b).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(b)))
}

fn page(admin: &Nsqadmin, path: &str, headers: &[(&str, &str)]) -> String {
    let (status, _, body) = request("GET", admin.http, path, headers, b"");
    assert_eq!(
        status,
        200,
        "GET {path}: {}",
        String::from_utf8_lossy(&body)
    );
    String::from_utf8(body).unwrap()
}

fn api(admin: &Nsqadmin, path: &str) -> Value {
    http_json(admin.http, path).unwrap()
}

/// The topic/channel object in an nsqd's /stats (None if absent).
fn nsqd_topic(n: &Nsqd, topic: &str) -> Option<Value> {
    let s = n.stats().unwrap();
    s["topics"]
        .as_array()?
        .iter()
        .find(|t| t["topic_name"] == topic)
        .cloned()
}

fn nsqd_channel(n: &Nsqd, topic: &str, channel: &str) -> Option<Value> {
    nsqd_topic(n, topic)?["channels"]
        .as_array()?
        .iter()
        .find(|c| c["channel_name"] == channel)
        .cloned()
}

fn node_name(n: &Nsqd) -> String {
    format!("127.0.0.1:{}", n.http.port())
}

fn publish(n: &Nsqd, topic: &str, count: usize) {
    for i in 0..count {
        let (st, body) = http_post(
            n.http,
            &format!("/pub?topic={topic}"),
            format!("m{i}").as_bytes(),
        )
        .unwrap();
        assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
    }
}

/// A consumer that identifies with a user agent, subscribes, and takes `rdy` messages.
fn consumer(n: &Nsqd, topic: &str, channel: &str, rdy: u32) -> RawConn {
    let mut c = RawConn::connect(n.tcp).unwrap();
    c.cmd(
        "IDENTIFY",
        Some(br#"{"client_id":"admin-test","hostname":"tester","feature_negotiation":true,"user_agent":"admin-test/1.0"}"#),
    )
    .unwrap();
    let (ty, _) = c.read_non_heartbeat().unwrap();
    assert_eq!(ty, nsq_blackbox_tests::FRAME_RESPONSE);
    c.cmd(&format!("SUB {topic} {channel}"), None).unwrap();
    c.expect_response("OK").unwrap();
    c.cmd(&format!("RDY {rdy}"), None).unwrap();
    c
}

struct Cluster {
    lookupd: Lookupd,
    a: Nsqd,
    b: Nsqd,
}

fn cluster() -> Cluster {
    let lookupd = start_lookupd();
    let reg = format!("--lookupd-tcp-address={}", lookupd.tcp);
    let args = [
        reg.as_str(),
        "--broadcast-address=127.0.0.1",
        "--e2e-processing-latency-percentile=0.99",
    ];
    let a = Nsqd::start(&args).unwrap();
    let b = Nsqd::start(&args).unwrap();
    Cluster { lookupd, a, b }
}

fn lookupd_producers(l: &Lookupd, topic: &str) -> Vec<String> {
    match http_get(l.http, &format!("/lookup?topic={topic}")) {
        Ok((200, body)) => json_of(&body)["producers"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .map(|p| format!("127.0.0.1:{}", p["http_port"]))
                    .collect()
            })
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

#[test]
fn api_pages_and_actions_over_two_nsqd_and_lookupd() {
    let c = cluster();
    publish(&c.a, "orders", 3);
    publish(&c.b, "orders", 2);
    for n in [&c.a, &c.b] {
        let (st, _) =
            http_post(n.http, "/channel/create?topic=orders&channel=billing", b"").unwrap();
        assert_eq!(st, 200);
    }
    let admin = Nsqadmin::start(&[
        format!("--lookupd-http-address={}", c.lookupd.http),
        "--history-interval=200ms".into(),
    ])
    .unwrap();
    assert!(
        wait_until(WAIT, || lookupd_producers(&c.lookupd, "orders").len() == 2),
        "both nsqd registered orders"
    );
    // One consumer on a holds one message in flight.
    let mut cons = consumer(&c.a, "orders", "billing", 1);
    let _msg = cons.read_message().unwrap();
    assert!(wait_until(WAIT, || nsqd_channel(&c.a, "orders", "billing")
        .is_some_and(|ch| ch["in_flight_count"] == 1)));

    // /api/topics
    let v = api(&admin, "/api/topics");
    assert_eq!(v, json!({"topics": ["orders"], "message": ""}));

    // /api/topics/:topic, compared with both nodes' /stats.
    let t = api(&admin, "/api/topics/orders");
    let (ta, tb) = (
        nsqd_topic(&c.a, "orders").unwrap(),
        nsqd_topic(&c.b, "orders").unwrap(),
    );
    assert_eq!(t["node"], "*");
    assert_eq!(t["topic_name"], "orders");
    assert_eq!(t["message_count"], 5);
    let depth = ta["depth"].as_u64().unwrap() + tb["depth"].as_u64().unwrap();
    assert_eq!(t["depth"], depth);
    assert_eq!(
        t["memory_depth"].as_u64().unwrap() + t["backend_depth"].as_u64().unwrap(),
        depth
    );
    assert_eq!(t["paused"], false);
    assert_eq!(t["message"], "");
    // What only our engine reports, summed over the nodes' /stats.
    for k in ["disk_bytes", "disk_segments", "corrupt_records"] {
        assert_eq!(
            t[k].as_u64().unwrap(),
            ta[k].as_u64().unwrap() + tb[k].as_u64().unwrap(),
            "{k}"
        );
    }
    assert_eq!(t["storage_error"], "");
    let lag = t["channels"][0]["oldest_unfinished_age_ms"]
        .as_u64()
        .unwrap();
    assert!(
        lag > 0,
        "a message in flight is unfinished: the channel lags"
    );
    let nodes: Vec<&str> = t["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node"].as_str().unwrap())
        .collect();
    let mut want = vec![node_name(&c.a), node_name(&c.b)];
    want.sort();
    let mut got: Vec<String> = nodes.iter().map(|s| s.to_string()).collect();
    got.sort();
    assert_eq!(got, want);
    for n in t["nodes"].as_array().unwrap() {
        assert!(n["hostname"].is_string());
        assert!(n["e2e_processing_latency"]["percentiles"].is_array());
        let expect = if n["node"] == node_name(&c.a) { 3 } else { 2 };
        assert_eq!(n["message_count"], expect);
    }
    let ch = &t["channels"][0];
    assert_eq!(ch["channel_name"], "billing");
    assert_eq!(ch["in_flight_count"], 1);
    let delivered = |n: &Nsqd| {
        nsqd_channel(n, "orders", "billing").unwrap()["message_count"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(ch["message_count"], delivered(&c.a) + delivered(&c.b));

    // /api/topics/:topic/:channel
    let ch = api(&admin, "/api/topics/orders/billing");
    let (ca, cb) = (
        nsqd_channel(&c.a, "orders", "billing").unwrap(),
        nsqd_channel(&c.b, "orders", "billing").unwrap(),
    );
    assert_eq!(ch["node"], "*");
    assert_eq!(ch["topic_name"], "orders");
    assert_eq!(ch["channel_name"], "billing");
    assert_eq!(
        ch["depth"].as_u64().unwrap(),
        ca["depth"].as_u64().unwrap() + cb["depth"].as_u64().unwrap()
    );
    assert_eq!(ch["depth"], 4, "5 published, 1 in flight");
    assert_eq!(ch["in_flight_count"], 1);
    for k in ["deferred_count", "requeue_count", "timeout_count"] {
        assert_eq!(ch[k], 0, "{k}");
    }
    assert_eq!(ch["nodes"].as_array().unwrap().len(), 2);
    let clients = ch["clients"].as_array().unwrap();
    assert_eq!(clients.len(), 1);
    let cl = &clients[0];
    assert_eq!(cl["node"], node_name(&c.a));
    assert_eq!(cl["user_agent"], "admin-test/1.0");
    assert_eq!(cl["client_id"], "admin-test");
    assert_eq!(cl["hostname"], "tester");
    assert_eq!(cl["ready_count"], 1);
    assert_eq!(cl["in_flight_count"], 1);
    for k in ["tls", "snappy", "deflate"] {
        assert_eq!(cl[k], false, "{k}");
    }
    assert!(cl["connected"].is_i64() && cl["connect_ts"].as_i64().unwrap() > 0);
    assert_eq!(
        json_of(&http_get(admin.http, "/api/topics/orders/nope").unwrap().1),
        json!({"message": "CHANNEL_NOT_FOUND"})
    );

    // /api/nodes and /api/nodes/:node
    let v = api(&admin, "/api/nodes");
    let ns = v["nodes"].as_array().unwrap();
    assert_eq!(ns.len(), 2);
    for n in ns {
        assert_eq!(n["broadcast_address"], "127.0.0.1");
        assert_eq!(n["remote_addresses"].as_array().unwrap().len(), 1);
        assert_eq!(
            n["topics"],
            json!([{"topic": "orders", "tombstoned": false}])
        );
        assert_eq!(n["out_of_date"], false);
        assert!(n["tcp_port"].as_u64().unwrap() > 0);
        assert!(n["version"].is_string());
    }
    let v = api(&admin, &format!("/api/nodes/{}", node_name(&c.a)));
    assert_eq!(v["node"], node_name(&c.a));
    assert_eq!(v["total_messages"], 3);
    assert_eq!(v["total_clients"], 1);
    assert_eq!(v["topics"][0]["topic_name"], "orders");
    let (st, body) = http_get(admin.http, "/api/nodes/127.0.0.1:1").unwrap();
    assert_eq!(
        (st, json_of(&body)),
        (404, json!({"message": "NODE_NOT_FOUND"}))
    );

    // /api/counter: per topic:channel:node message counts.
    let v = api(&admin, "/api/counter");
    let key = format!("orders:billing:{}", node_name(&c.a));
    assert_eq!(v["stats"][&key]["message_count"], ca["message_count"]);
    assert_eq!(v["stats"][&key]["channel_name"], "billing");
    assert_eq!(v["stats"].as_object().unwrap().len(), 2);

    // Pages: numbers on them match the API.
    let html = page(&admin, "/", &[]);
    assert!(html.contains("data-topic=\"orders\""), "{html}");
    assert!(html.contains(&format!("<td class=\"num\">{depth}</td>")));
    let html = page(&admin, "/topics/orders", &[]);
    assert!(
        html.contains("class=\"disk\"") && html.contains("segments</td>"),
        "on-disk column"
    );
    assert!(
        page(&admin, "/topics/orders/billing", &[]).contains("class=\"lag\""),
        "lag column"
    );
    assert!(html.contains(&format!("data-node=\"{}\"", node_name(&c.a))));
    assert!(html.contains(&format!("data-node=\"{}\"", node_name(&c.b))));
    assert!(html.contains("data-channel=\"billing\""));
    assert!(
        html.contains("id=\"pause-topic\""),
        "no --admin-user: everyone may act"
    );
    let html = page(&admin, "/topics/orders/billing", &[]);
    assert!(html.contains("admin-test/1.0"));
    assert!(html.contains("data-client=\"admin-test\""));
    let html = page(&admin, "/nodes", &[]);
    assert!(html.contains(&format!("data-node=\"{}\"", node_name(&c.b))));
    let html = page(&admin, &format!("/nodes/{}", node_name(&c.a)), &[]);
    assert!(html.contains("<span id=\"node-messages\">3</span>"));
    let html = page(&admin, "/counter", &[]);
    let total = ca["message_count"].as_u64().unwrap() + cb["message_count"].as_u64().unwrap();
    assert!(html.contains(&format!("id=\"counter\">{total}<")));
    let html = page(&admin, "/lookup", &[]);
    assert!(html.contains("billing"));
    // Graphs fill from the history poller.
    assert!(wait_until(WAIT, || page(&admin, "/topics/orders", &[])
        .contains("<polyline")));
    // Banners are escaped.
    let html = page(
        &admin,
        "/topics/orders?ok=%3Cscript%3Ealert(1)%3C/script%3E",
        &[],
    );
    assert!(html.contains("&lt;script&gt;alert(1)"));
    assert!(!html.contains("<script>alert(1)"));

    // Actions.
    let post = |path: &str, body: Value| {
        let (st, _, b) = request("POST", admin.http, path, &[], body.to_string().as_bytes());
        (st, json_of(&b))
    };
    assert_eq!(
        post("/api/topics/orders/billing", json!({"action": "pause"})),
        (200, json!({"message": ""}))
    );
    for n in [&c.a, &c.b] {
        assert_eq!(
            nsqd_channel(n, "orders", "billing").unwrap()["paused"],
            true
        );
    }
    assert_eq!(api(&admin, "/api/topics/orders/billing")["paused"], true);
    post("/api/topics/orders/billing", json!({"action": "unpause"}));
    for n in [&c.a, &c.b] {
        assert_eq!(
            nsqd_channel(n, "orders", "billing").unwrap()["paused"],
            false
        );
    }
    assert_eq!(
        post("/api/topics/orders/billing", json!({"action": "empty"})).0,
        200
    );
    for n in [&c.a, &c.b] {
        assert_eq!(nsqd_channel(n, "orders", "billing").unwrap()["depth"], 0);
    }
    assert_eq!(
        post("/api/topics/orders", json!({"action": "pause"})).0,
        200
    );
    for n in [&c.a, &c.b] {
        assert_eq!(nsqd_topic(n, "orders").unwrap()["paused"], true);
    }
    assert_eq!(
        post("/api/topics/orders", json!({"action": "unpause"})).0,
        200
    );
    assert_eq!(nsqd_topic(&c.b, "orders").unwrap()["paused"], false);
    assert_eq!(
        post("/api/topics/orders", json!({"action": "explode"})),
        (400, json!({"message": "INVALID_ACTION"}))
    );
    let (st, _, b) = request("POST", admin.http, "/api/topics/orders", &[], b"not json");
    assert_eq!((st, json_of(&b)), (400, json!({"message": "INVALID_BODY"})));
    assert_eq!(
        post("/api/topics", json!({"topic": "bad topic!"})),
        (400, json!({"message": "INVALID_TOPIC"}))
    );

    // Create goes to nsqlookupd.
    assert_eq!(
        post("/api/topics", json!({"topic": "fresh", "channel": "c1"})),
        (200, json!({"message": ""}))
    );
    let (_, body) = http_get(c.lookupd.http, "/channels?topic=fresh").unwrap();
    assert_eq!(json_of(&body)["channels"], json!(["c1"]));
    assert!(api(&admin, "/api/topics")["topics"]
        .as_array()
        .unwrap()
        .contains(&json!("fresh")));

    // Delete a channel everywhere.
    drop(cons);
    let (st, _, b) = request("DELETE", admin.http, "/api/topics/orders/billing", &[], b"");
    assert_eq!((st, json_of(&b)), (200, json!({"message": ""})));
    for n in [&c.a, &c.b] {
        assert!(nsqd_channel(n, "orders", "billing").is_none());
    }

    // Tombstone b for orders: lookupd stops listing it and b deletes the topic.
    let (st, _, b) = request(
        "DELETE",
        admin.http,
        &format!("/api/nodes/{}", node_name(&c.b)),
        &[],
        json!({"topic": "orders"}).to_string().as_bytes(),
    );
    assert_eq!((st, json_of(&b)), (200, json!({"message": ""})));
    assert!(nsqd_topic(&c.b, "orders").is_none());
    assert_eq!(
        lookupd_producers(&c.lookupd, "orders"),
        vec![node_name(&c.a)]
    );

    // Delete the topic.
    let (st, _, _) = request("DELETE", admin.http, "/api/topics/orders", &[], b"");
    assert_eq!(st, 200);
    assert!(nsqd_topic(&c.a, "orders").is_none());

    // Unknown paths and methods answer NSQ's errors.
    let (st, body) = http_get(admin.http, "/api/nope").unwrap();
    assert_eq!((st, json_of(&body)), (404, json!({"message": "NOT_FOUND"})));
    let (st, _, body) = request("PUT", admin.http, "/api/topics", &[], b"");
    assert_eq!(
        (st, json_of(&body)),
        (405, json!({"message": "METHOD_NOT_ALLOWED"}))
    );
    // /config from loopback (inside --allow-config-from-cidr's default 127.0.0.1/8).
    let v = api(&admin, "/config/nsqlookupd_http_addresses");
    assert_eq!(v, json!([c.lookupd.http.to_string()]));
    let (st, _, b) = request("PUT", admin.http, "/config/log_level", &[], b"debug");
    assert_eq!((st, json_of(&b)), (200, json!("debug")));
    let (st, _, b) = request("PUT", admin.http, "/config/log_level", &[], b"loud");
    assert_eq!(
        (st, json_of(&b)),
        (400, json!({"message": "INVALID_VALUE"}))
    );
    let (st, _, b) = request("GET", admin.http, "/config/nope", &[], b"");
    assert_eq!(
        (st, json_of(&b)),
        (400, json!({"message": "INVALID_OPTION"}))
    );
}

/// Accept HTTP POSTs on a loopback port and send each body to the returned channel.
fn notification_sink() -> (SocketAddr, mpsc::Receiver<Value>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let l = line.trim_end().to_ascii_lowercase();
                if let Some(v) = l.strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                if l.is_empty() {
                    break;
                }
            }
            let mut body = vec![0u8; len];
            if r.read_exact(&mut body).is_ok() {
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                if let Ok(v) = serde_json::from_slice(&body) {
                    if tx.send(v).is_err() {
                        return;
                    }
                }
            }
        }
    });
    (addr, rx)
}

#[test]
fn admin_users_may_act_others_are_refused_and_notifications_are_sent() {
    let n = Nsqd::start(&["--broadcast-address=127.0.0.1"]).unwrap();
    publish(&n, "jobs", 2);
    let (sink, notes) = notification_sink();
    let admin = Nsqadmin::start(&[
        format!("--nsqd-http-address={}", n.http),
        "--admin-user=alice".into(),
        format!("--notification-http-endpoint=http://{sink}/notify"),
    ])
    .unwrap();
    let pause = json!({"action": "pause"}).to_string();
    // No user, and a user who is not an admin: 403, nothing changes.
    for h in [vec![], vec![("X-Forwarded-User", "mallory")]] {
        let (st, _, b) = request("POST", admin.http, "/api/topics/jobs", &h, pause.as_bytes());
        assert_eq!((st, json_of(&b)), (403, json!({"message": "FORBIDDEN"})));
        let (st, _, _) = request("DELETE", admin.http, "/api/topics/jobs", &h, b"");
        assert_eq!(st, 403);
    }
    assert_eq!(nsqd_topic(&n, "jobs").unwrap()["paused"], false);
    // Reading is fine for everyone; the buttons are not shown to non-admins.
    let html = page(&admin, "/topics/jobs", &[("X-Forwarded-User", "mallory")]);
    assert!(html.contains("id=\"read-only\""));
    assert!(!html.contains("id=\"pause-topic\""));
    let (st, _, _) = request(
        "POST",
        admin.http,
        "/actions",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        b"action=pause&topic=jobs&confirm=yes",
    );
    assert_eq!(st, 403);
    assert_eq!(nsqd_topic(&n, "jobs").unwrap()["paused"], false);
    // Not even alice, from another site's page (the browser says so in Origin).
    let (st, _, b) = request(
        "POST",
        admin.http,
        "/api/topics/jobs",
        &[
            ("X-Forwarded-User", "alice"),
            ("Origin", "http://evil.example"),
        ],
        pause.as_bytes(),
    );
    assert_eq!(
        (st, json_of(&b)),
        (403, json!({"message": "FORBIDDEN_ORIGIN"}))
    );
    assert_eq!(nsqd_topic(&n, "jobs").unwrap()["paused"], false);

    // alice may act through the API ...
    let alice = [("X-Forwarded-User", "alice"), ("User-Agent", "admin-test")];
    let (st, _, b) = request(
        "POST",
        admin.http,
        "/api/topics/jobs",
        &alice,
        pause.as_bytes(),
    );
    assert_eq!((st, json_of(&b)), (200, json!({"message": ""})));
    assert_eq!(nsqd_topic(&n, "jobs").unwrap()["paused"], true);
    let note = notes.recv_timeout(WAIT).expect("notification");
    assert_eq!(note["action"], "pause_topic");
    assert_eq!(note["topic"], "jobs");
    assert_eq!(note["user"], "alice");
    assert_eq!(note["user_agent"], "admin-test");
    assert!(note["url"].as_str().unwrap().ends_with("/api/topics/jobs"));
    assert!(note["timestamp"].as_u64().unwrap() > 0);
    assert!(note.get("channel").is_none(), "omitted when empty, as NSQ");

    // ... and through the pages: the form first answers a confirmation page ...
    let html = page(&admin, "/topics/jobs", &alice);
    assert!(html.contains("id=\"unpause-topic\""));
    let form = [
        ("X-Forwarded-User", "alice"),
        ("Content-Type", "application/x-www-form-urlencoded"),
    ];
    let (st, _, b) = request(
        "POST",
        admin.http,
        "/actions",
        &form,
        b"action=unpause&topic=jobs",
    );
    let html = String::from_utf8(b).unwrap();
    assert_eq!(st, 200);
    assert!(html.contains("Really <b>unpause topic jobs</b>?"), "{html}");
    assert_eq!(
        nsqd_topic(&n, "jobs").unwrap()["paused"],
        true,
        "not before confirming"
    );
    // ... then acts and redirects back with a banner.
    let (st, location, _) = request(
        "POST",
        admin.http,
        "/actions",
        &form,
        b"action=unpause&topic=jobs&confirm=yes",
    );
    assert_eq!(st, 303);
    assert!(location.starts_with("/topics/jobs?ok="), "{location}");
    assert_eq!(nsqd_topic(&n, "jobs").unwrap()["paused"], false);
    let html = page(&admin, &location, &alice);
    assert!(html.contains("Done: unpause topic jobs."));
    assert_eq!(notes.recv_timeout(WAIT).unwrap()["action"], "unpause_topic");
}

#[test]
fn basic_auth_and_base_path() {
    let n = Nsqd::start(&["--broadcast-address=127.0.0.1"]).unwrap();
    publish(&n, "t1", 1);
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    let hash = bcrypt::hash("pw-of-ops", 4).unwrap();
    let boss_hash = bcrypt::hash("pw-of-boss", 4).unwrap();
    std::fs::write(&users, format!("ops:{hash}\nboss:{boss_hash}\n")).unwrap();
    let admin = Nsqadmin::start(&[
        format!("--nsqd-http-address={}", n.http),
        format!("--basic-auth-file={}", users.display()),
        "--base-path=/admin/".into(),
        "--admin-user=boss".into(),
    ])
    .unwrap();
    use base64::Engine as _;
    let auth = |u: &str, p: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
        )
    };
    let (st, _, _) = request("GET", admin.http, "/admin/api/topics", &[], b"");
    assert_eq!(st, 401);
    let bad = auth("ops", "wrong");
    let (st, _, _) = request(
        "GET",
        admin.http,
        "/admin/api/topics",
        &[("Authorization", &bad)],
        b"",
    );
    assert_eq!(st, 401);
    let good = auth("ops", "pw-of-ops");
    let (st, _, b) = request(
        "GET",
        admin.http,
        "/admin/api/topics",
        &[("Authorization", &good)],
        b"",
    );
    assert_eq!(
        (st, json_of(&b)),
        (200, json!({"topics": ["t1"], "message": ""}))
    );
    // Links on the pages carry the base path.
    let html = page(&admin, "/admin/", &[("Authorization", &good)]);
    assert!(html.contains("href=\"/admin/topics/t1\""));
    // With basic auth the authenticated user decides; a header naming the admin does not.
    let pause = json!({"action": "pause"}).to_string();
    let as_ops = [
        ("Authorization", good.as_str()),
        ("X-Forwarded-User", "boss"),
    ];
    let (st, _, _) = request(
        "POST",
        admin.http,
        "/admin/api/topics/t1",
        &as_ops,
        pause.as_bytes(),
    );
    assert_eq!(st, 403);
    assert_eq!(nsqd_topic(&n, "t1").unwrap()["paused"], false);
    let boss = auth("boss", "pw-of-boss");
    let (st, _, _) = request(
        "POST",
        admin.http,
        "/admin/api/topics/t1",
        &[("Authorization", &boss)],
        pause.as_bytes(),
    );
    assert_eq!(st, 200);
    assert_eq!(nsqd_topic(&n, "t1").unwrap()["paused"], true);
    // /ping needs no credentials (health checks).
    assert_eq!(http_get(admin.http, "/admin/ping").unwrap().0, 200);
    // Outside the base path there is nothing.
    let (st, _, _) = request(
        "GET",
        admin.http,
        "/api/topics",
        &[("Authorization", &good)],
        b"",
    );
    assert_eq!(st, 404);
}

/// One sample: metric name, labels sorted by name, value.
type Sample = (String, Vec<(String, String)>, f64);

/// Scrape `path` and parse it with prometheus-parse.
fn scrape(addr: SocketAddr, path: &str) -> Vec<Sample> {
    let (st, body) = http_get(addr, path).unwrap();
    assert_eq!(st, 200);
    let text = String::from_utf8(body).unwrap();
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let s = prometheus_parse::Scrape::parse(lines).unwrap();
    let mut out = Vec::new();
    for smp in s.samples {
        let mut labels: Vec<(String, String)> = smp
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        labels.sort();
        match smp.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => out.push((smp.metric, labels, v)),
            // One sample per bucket, as the text has them: `<name>_bucket{..., le}`.
            prometheus_parse::Value::Histogram(buckets) => {
                for b in buckets {
                    let le = if b.less_than.is_infinite() {
                        "+Inf".to_string()
                    } else {
                        b.less_than.to_string()
                    };
                    let mut l = labels.clone();
                    l.push(("le".to_string(), le));
                    l.sort();
                    out.push((format!("{}_bucket", smp.metric), l, b.count));
                }
            }
            other => panic!("unexpected sample {other:?}"),
        }
    }
    out
}

/// The process_* metrics every daemon exports, with sane values.
fn check_process_metrics(samples: &[Sample], who: &str) {
    let get = |m: &str| value(samples, m, &[]).unwrap_or_else(|| panic!("{who}: {m} missing"));
    assert!(get("process_cpu_seconds_total") >= 0.0);
    let rss = get("process_resident_memory_bytes");
    assert!(rss > 0.0, "{who}");
    assert!(get("process_virtual_memory_bytes") >= rss, "{who}");
    let fds = get("process_open_fds");
    assert!(fds >= 3.0, "{who}");
    assert!(get("process_max_fds") >= fds, "{who}");
    assert!(get("process_threads") >= 1.0, "{who}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let start = get("process_start_time_seconds");
    assert!(
        start <= now + 1.0 && start > now - 600.0,
        "{who}: start {start}, now {now}"
    );
}

fn value(samples: &[Sample], metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut want: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    want.sort();
    samples
        .iter()
        .find(|(m, l, _)| m == metric && *l == want)
        .map(|(_, _, v)| *v)
}

#[test]
fn metrics_match_stats_after_publish_and_consume() {
    let lookupd = start_lookupd();
    let reg = format!("--lookupd-tcp-address={}", lookupd.tcp);
    let a = Nsqd::start(&[reg.as_str(), "--broadcast-address=127.0.0.1"]).unwrap();
    let b = Nsqd::start(&[reg.as_str(), "--broadcast-address=127.0.0.1"]).unwrap();
    let admin = Nsqadmin::start(&[format!("--lookupd-http-address={}", lookupd.http)]).unwrap();
    publish(&a, "m", 4);
    publish(&b, "m", 2);
    for n in [&a, &b] {
        let (st, _) = http_post(n.http, "/channel/create?topic=m&channel=work", b"").unwrap();
        assert_eq!(st, 200);
    }
    // On a: FIN one, REQ one, keep one in flight.
    let mut c = consumer(&a, "m", "work", 3);
    let m1 = c.read_message().unwrap();
    let m2 = c.read_message().unwrap();
    let _m3 = c.read_message().unwrap();
    c.cmd("RDY 0", None).unwrap();
    c.cmd(&format!("FIN {}", m1.id), None).unwrap();
    c.cmd(&format!("REQ {} 60000", m2.id), None).unwrap();
    assert!(wait_until(WAIT, || nsqd_channel(&a, "m", "work")
        .is_some_and(|ch| {
            ch["requeue_count"] == 1 && ch["in_flight_count"] == 1
        })));
    assert!(wait_until(WAIT, || lookupd_producers(&lookupd, "m").len() == 2));

    let samples = scrape(admin.http, "/metrics");
    let mut topic_total = 0.0;
    for n in [&a, &b] {
        let node = node_name(n);
        let t = nsqd_topic(n, "m").unwrap();
        let ch = nsqd_channel(n, "m", "work").unwrap_or_else(|| panic!("{t}"));
        let tl = [("topic", "m"), ("node", node.as_str())];
        let cl = [("topic", "m"), ("channel", "work"), ("node", node.as_str())];
        let f = |v: &Value| v.as_u64().unwrap() as f64;
        assert_eq!(
            value(&samples, "nsq_topic_depth", &tl),
            Some(f(&t["depth"]))
        );
        assert_eq!(
            value(&samples, "nsq_topic_messages_total", &tl),
            Some(f(&t["message_count"]))
        );
        topic_total += f(&t["message_count"]);
        assert_eq!(
            value(&samples, "nsq_channel_depth", &cl),
            Some(f(&ch["depth"]))
        );
        assert_eq!(
            value(&samples, "nsq_channel_in_flight", &cl),
            Some(f(&ch["in_flight_count"]))
        );
        assert_eq!(
            value(&samples, "nsq_channel_deferred", &cl),
            Some(f(&ch["deferred_count"]))
        );
        assert_eq!(
            value(&samples, "nsq_channel_messages_total", &cl),
            Some(f(&ch["message_count"]))
        );
        assert_eq!(
            value(&samples, "nsq_channel_requeues_total", &cl),
            Some(f(&ch["requeue_count"]))
        );
        assert_eq!(
            value(&samples, "nsq_channel_timeouts_total", &cl),
            Some(f(&ch["timeout_count"]))
        );
        assert_eq!(
            value(&samples, "nsq_channel_clients", &cl),
            Some(f(&ch["client_count"]))
        );
    }
    assert_eq!(topic_total, 6.0, "4 + 2 published");
    let na = node_name(&a);
    let cla = [("topic", "m"), ("channel", "work"), ("node", na.as_str())];
    assert_eq!(
        value(&samples, "nsq_channel_requeues_total", &cla),
        Some(1.0)
    );
    assert_eq!(value(&samples, "nsq_channel_in_flight", &cla), Some(1.0));
    assert_eq!(value(&samples, "nsqadmin_upstream_errors", &[]), Some(0.0));
    check_process_metrics(&samples, "nsqadmin");
    // nsqd's e2e histogram, per node: the one FIN on a.
    let h = "nsq_channel_e2e_processing_latency_seconds";
    assert_eq!(value(&samples, &format!("{h}_count"), &cla), Some(1.0));
    let mut inf = cla.to_vec();
    inf.push(("le", "+Inf"));
    assert_eq!(value(&samples, &format!("{h}_bucket"), &inf), Some(1.0));
    let nb = node_name(&b);
    let clb = [("topic", "m"), ("channel", "work"), ("node", nb.as_str())];
    assert_eq!(value(&samples, &format!("{h}_count"), &clb), Some(0.0));

    // nsqd's own /metrics: the same figures without the node label.
    for n in [&a, &b] {
        let samples = scrape(n.http, "/metrics");
        let t = nsqd_topic(n, "m").unwrap();
        let ch = nsqd_channel(n, "m", "work").unwrap();
        let f = |v: &Value| v.as_u64().unwrap() as f64;
        let tl = [("topic", "m")];
        let cl = [("topic", "m"), ("channel", "work")];
        assert_eq!(
            value(&samples, "nsq_topic_depth", &tl),
            Some(f(&t["depth"]))
        );
        assert_eq!(
            value(&samples, "nsq_topic_messages_total", &tl),
            Some(f(&t["message_count"]))
        );
        assert_eq!(
            value(&samples, "nsq_channel_depth", &cl),
            Some(f(&ch["depth"]))
        );
        assert_eq!(
            value(&samples, "nsq_channel_in_flight", &cl),
            Some(f(&ch["in_flight_count"]))
        );
        assert_eq!(
            value(&samples, "nsq_channel_messages_total", &cl),
            Some(f(&ch["message_count"]))
        );
        assert_eq!(
            value(&samples, "nsq_channel_requeues_total", &cl),
            Some(f(&ch["requeue_count"]))
        );
        assert_eq!(
            value(&samples, "nsq_channel_timeouts_total", &cl),
            Some(f(&ch["timeout_count"]))
        );
        assert_eq!(
            value(&samples, "nsq_channel_clients", &cl),
            Some(f(&ch["client_count"]))
        );
        assert_eq!(value(&samples, "nsq_health_ok", &[]), Some(1.0));
        check_process_metrics(&samples, "nsqd");
        // nsqd started this test: its start time is the one /stats reports.
        let stats = n.stats().unwrap();
        let start = value(&samples, "process_start_time_seconds", &[]).unwrap();
        assert!((start - stats["start_time"].as_f64().unwrap()).abs() < 5.0);
        // The e2e histogram counts every FIN: one on a, none on b.
        let fins = if n.http == a.http { 1.0 } else { 0.0 };
        let h = "nsq_channel_e2e_processing_latency_seconds";
        assert_eq!(value(&samples, &format!("{h}_count"), &cl), Some(fins));
        let inf = [("topic", "m"), ("channel", "work"), ("le", "+Inf")];
        assert_eq!(value(&samples, &format!("{h}_bucket"), &inf), Some(fins));
        let sum = value(&samples, &format!("{h}_sum"), &cl).unwrap();
        assert!((fins == 0.0) == (sum == 0.0), "sum {sum} for {fins} FIN");
        let th = "nsq_topic_e2e_processing_latency_seconds";
        assert_eq!(value(&samples, &format!("{th}_count"), &tl), Some(fins));
        // What only our engine shows: bytes and segments on disk, storage errors.
        assert_eq!(
            value(&samples, "nsq_topic_disk_bytes", &tl),
            Some(f(&t["disk_bytes"]))
        );
        assert_eq!(
            value(&samples, "nsq_topic_disk_segments", &tl),
            Some(f(&t["disk_segments"]))
        );
        assert_eq!(value(&samples, "nsq_topic_storage_error", &tl), Some(0.0));
        assert_eq!(value(&samples, "nsq_topic_corrupt_records", &tl), Some(0.0));
    }
    let sa = scrape(a.http, "/metrics");
    assert_eq!(
        value(
            &sa,
            "nsq_channel_requeues_total",
            &[("topic", "m"), ("channel", "work")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&sa, "nsq_topic_messages_total", &[("topic", "m")]),
        Some(4.0)
    );

    // nsqlookupd's /metrics.
    let sl = scrape(lookupd.http, "/metrics");
    check_process_metrics(&sl, "nsqlookupd");
    assert_eq!(value(&sl, "nsqlookupd_producers", &[]), Some(2.0));
    assert_eq!(value(&sl, "nsqlookupd_topics", &[]), Some(1.0));
    assert_eq!(
        value(&sl, "nsqlookupd_topic_producers", &[("topic", "m")]),
        Some(2.0)
    );
    assert_eq!(
        value(&sl, "nsqlookupd_topic_channels", &[("topic", "m")]),
        Some(1.0)
    );
}

/// Per-topic settings (`PUT /topic/config` on nsqd): nsqd's /stats shows the topic's own
/// settings and the ones in force, nsqadmin's `/api/topics/:topic` carries them per node
/// (and on the aggregate while the nodes agree), and the topic page shows them with the
/// overridden ones marked.
#[test]
fn topic_settings_in_stats_api_and_page() {
    let args = [
        "--mem-queue-size=777",
        "--sync-every=50",
        "--broadcast-address=127.0.0.1",
    ];
    let a = Nsqd::start(&args).unwrap();
    let b = Nsqd::start(&args).unwrap();
    publish(&a, "tuned", 1);
    publish(&b, "tuned", 1);
    let admin = Nsqadmin::start(&[
        format!("--nsqd-http-address={}", a.http),
        format!("--nsqd-http-address={}", b.http),
    ])
    .unwrap();

    // Before any override: nulls, and the flags in force; the aggregate agrees.
    let t = nsqd_topic(&a, "tuned").unwrap();
    assert!(t["config"]["mem_queue_size"].is_null(), "{t}");
    assert_eq!(t["effective_config"]["mem_queue_size"], 777);
    assert_eq!(t["effective_config"]["sync_every"], 50);
    let v = api(&admin, "/api/topics/tuned");
    assert_eq!(v["effective_config"]["mem_queue_size"], 777, "{v}");

    let (st, body) = nsq_blackbox_tests::http(
        "PUT",
        a.http,
        "/topic/config?topic=tuned",
        br#"{"mem_queue_size": 5, "retention_time": 60000}"#,
    )
    .unwrap();
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));

    let t = nsqd_topic(&a, "tuned").unwrap();
    assert_eq!(t["config"]["mem_queue_size"], 5, "{t}");
    assert_eq!(t["config"]["retention_time"], 60000);
    assert!(t["config"]["sync_every"].is_null());
    assert_eq!(t["effective_config"]["mem_queue_size"], 5);
    assert_eq!(t["effective_config"]["retention_time"], 60000);
    assert_eq!(t["effective_config"]["sync_every"], 50);
    // Channels carry no settings; b is untouched.
    let tb = nsqd_topic(&b, "tuned").unwrap();
    assert_eq!(tb["effective_config"]["mem_queue_size"], 777);

    let v = api(&admin, "/api/topics/tuned");
    let nodes = v["nodes"].as_array().unwrap();
    let na = nodes
        .iter()
        .find(|n| n["node"] == node_name(&a))
        .unwrap_or_else(|| panic!("{v}"));
    let nb = nodes.iter().find(|n| n["node"] == node_name(&b)).unwrap();
    assert_eq!(na["config"]["mem_queue_size"], 5, "{v}");
    assert_eq!(na["effective_config"]["retention_time"], 60000);
    assert!(nb["config"]["mem_queue_size"].is_null());
    assert_eq!(nb["effective_config"]["mem_queue_size"], 777);
    // The nodes now differ: the aggregate says so with null.
    assert!(v["effective_config"].is_null(), "{v}");

    let html = page(&admin, "/topics/tuned", &[]);
    assert!(html.contains("id=\"topic-settings\""), "{html}");
    let row_a = html
        .split(&format!("<tr data-settings-node=\"{}\">", node_name(&a)))
        .nth(1)
        .unwrap_or_else(|| panic!("{html}"));
    let row_a = row_a.split("</tr>").next().unwrap();
    assert!(
        row_a
            .contains("<td data-setting=\"mem_queue_size\" data-overridden=\"true\"><b>5</b></td>"),
        "{row_a}"
    );
    assert!(
        row_a.contains("<td data-setting=\"sync_every\" data-overridden=\"false\">50</td>"),
        "{row_a}"
    );

    // Found by running NSQ 1.3's nsqadmin beside ours on the same nsqd (--nsqd-http-address):
    // its nodes list their topics from /stats, channels carry client_count, and a topic no
    // node has is a 502.
    let v = api(&admin, "/api/nodes");
    for n in v["nodes"].as_array().unwrap() {
        assert_eq!(
            n["topics"],
            json!([{"topic": "tuned", "tombstoned": false}]),
            "{v}"
        );
    }
    let (st, _) = http_post(a.http, "/channel/create?topic=tuned&channel=c", b"").unwrap();
    assert_eq!(st, 200);
    let ch = api(&admin, "/api/topics/tuned/c");
    assert_eq!(ch["client_count"], 0, "{ch}");
    assert_eq!(ch["nodes"][0]["client_count"], 0, "{ch}");
    let (st, body) = http_get(admin.http, "/api/topics/nowhere").unwrap();
    assert_eq!(st, 502);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["message"], "UPSTREAM_ERROR: failed to query any nsqd: ");
}
