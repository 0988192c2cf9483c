//! nsqd's HTTP API against NSQ's paths, methods, status codes and bodies.

use std::time::Duration;

use nsq_blackbox_tests::{http, http_get, http_json, http_post, wait_until, Nsqd, RawConn};

fn body_json(b: &[u8]) -> serde_json::Value {
    serde_json::from_slice(b)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(b)))
}

fn topic<'a>(stats: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    stats["topics"]
        .as_array()
        .and_then(|a| a.iter().find(|t| t["topic_name"] == name))
        .unwrap_or_else(|| panic!("no topic {name} in {stats}"))
}

#[test]
fn ping_and_info() {
    let nsqd = Nsqd::start(&[]).unwrap();
    let (st, body) = http_get(nsqd.http, "/ping").unwrap();
    assert_eq!((st, body.as_slice()), (200, &b"OK"[..]));
    let info = http_json(nsqd.http, "/info").unwrap();
    assert_eq!(info["tcp_port"], nsqd.tcp.port());
    assert_eq!(info["http_port"], nsqd.http.port());
    assert!(info["version"].is_string());
    assert!(info["start_time"].is_i64());
    // Unknown path and wrong method.
    let (st, body) = http_get(nsqd.http, "/nope").unwrap();
    assert_eq!(st, 404);
    assert_eq!(body_json(&body)["message"], "NOT_FOUND");
    let (st, body) = http_get(nsqd.http, "/pub?topic=t").unwrap();
    assert_eq!(st, 405);
    assert_eq!(body_json(&body)["message"], "METHOD_NOT_ALLOWED");
}

#[test]
fn pub_and_mpub() {
    let nsqd = Nsqd::start(&["--max-msg-size=64", "--max-body-size=256"]).unwrap();
    let (st, body) = http_post(nsqd.http, "/pub?topic=t", b"one").unwrap();
    assert_eq!((st, body.as_slice()), (200, &b"OK"[..]));
    let (st, _) = http_post(nsqd.http, "/mpub?topic=t", b"two\nthree\n\nfour").unwrap();
    assert_eq!(st, 200);
    let mut bin = 2u32.to_be_bytes().to_vec();
    for m in [&b"five"[..], b"six"] {
        bin.extend_from_slice(&(m.len() as u32).to_be_bytes());
        bin.extend_from_slice(m);
    }
    let (st, _) = http_post(nsqd.http, "/mpub?topic=t&binary=true", &bin).unwrap();
    assert_eq!(st, 200);
    let s = nsqd.stats().unwrap();
    assert_eq!(topic(&s, "t")["message_count"], 6, "{s}");

    for (path, body, status, msg) in [
        ("/pub", &b"x"[..], 400, "MISSING_ARG_TOPIC"),
        ("/pub?topic=bad/name", b"x", 400, "INVALID_TOPIC"),
        ("/pub?topic=t", b"", 400, "MSG_EMPTY"),
        ("/pub?topic=t", &[b'x'; 65], 413, "MSG_TOO_BIG"),
        ("/pub?topic=t&defer=abc", b"x", 400, "INVALID_DEFER"),
        ("/pub?topic=t&defer=-1", b"x", 400, "INVALID_DEFER"),
        ("/mpub?topic=t", &[b'x'; 257], 413, "BODY_TOO_BIG"),
        ("/mpub?topic=t", &[b'x'; 65], 413, "MSG_TOO_BIG"),
    ] {
        let (st, b) = http_post(nsqd.http, path, body).unwrap();
        assert_eq!(st, status, "{path}: {}", String::from_utf8_lossy(&b));
        assert_eq!(body_json(&b)["message"], msg, "{path}");
    }
    // Binary MPUB with a broken count/size.
    let (st, _) = http_post(nsqd.http, "/mpub?topic=t&binary=true", &[0, 0, 0, 5, 0, 0]).unwrap();
    assert!(st == 400 || st == 413, "status {st}");
    let s = nsqd.stats().unwrap();
    assert_eq!(
        topic(&s, "t")["message_count"],
        6,
        "failed publishes must not count"
    );
}

#[test]
fn pub_defer_is_delivered_later() {
    let nsqd = Nsqd::start(&[]).unwrap();
    let mut c = RawConn::connect(nsqd.tcp).unwrap();
    c.cmd("SUB t c", None).unwrap();
    c.expect_response("OK").unwrap();
    c.cmd("RDY 1", None).unwrap();
    let t0 = std::time::Instant::now();
    let (st, _) = http_post(nsqd.http, "/pub?topic=t&defer=600", b"d").unwrap();
    assert_eq!(st, 200);
    let m = c.read_message().unwrap();
    assert_eq!(m.body, b"d");
    assert!(t0.elapsed() >= Duration::from_millis(550));
}

#[test]
fn topic_and_channel_admin() {
    let nsqd = Nsqd::start(&[]).unwrap();
    let ok = |path: &str| {
        let (st, b) = http_post(nsqd.http, path, b"").unwrap();
        assert_eq!(st, 200, "{path}: {}", String::from_utf8_lossy(&b));
    };
    let err = |path: &str, status: u16, msg: &str| {
        let (st, b) = http_post(nsqd.http, path, b"").unwrap();
        assert_eq!(st, status, "{path}");
        assert_eq!(body_json(&b)["message"], msg, "{path}");
    };
    ok("/topic/create?topic=a");
    ok("/channel/create?topic=a&channel=c1");
    ok("/channel/create?topic=a&channel=c2");
    let s = nsqd.stats().unwrap();
    assert_eq!(topic(&s, "a")["channels"].as_array().unwrap().len(), 2);

    err("/topic/create", 400, "MISSING_ARG_TOPIC");
    err("/topic/create?topic=no%20spaces", 400, "INVALID_TOPIC");
    err("/topic/delete?topic=missing", 404, "TOPIC_NOT_FOUND");
    err(
        "/channel/create?topic=missing&channel=c",
        404,
        "TOPIC_NOT_FOUND",
    );
    err("/channel/create?topic=a", 400, "MISSING_ARG_CHANNEL");
    err(
        "/channel/create?topic=a&channel=bad!",
        400,
        "INVALID_ARG_CHANNEL",
    );
    err(
        "/channel/delete?topic=a&channel=missing",
        404,
        "CHANNEL_NOT_FOUND",
    );
    err(
        "/channel/empty?topic=a&channel=missing",
        404,
        "CHANNEL_NOT_FOUND",
    );

    // Empty a channel with a backlog.
    for _ in 0..5 {
        http_post(nsqd.http, "/pub?topic=a", b"m").unwrap();
    }
    let s = nsqd.stats().unwrap();
    assert_eq!(topic(&s, "a")["channels"][0]["depth"], 5, "{s}");
    ok("/channel/empty?topic=a&channel=c1");
    let s = http_json(nsqd.http, "/stats?format=json&topic=a&channel=c1").unwrap();
    assert_eq!(topic(&s, "a")["channels"].as_array().unwrap().len(), 1);
    assert_eq!(topic(&s, "a")["channels"][0]["depth"], 0, "{s}");

    ok("/channel/pause?topic=a&channel=c2");
    let s = nsqd.stats().unwrap();
    let c2 = topic(&s, "a")["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["channel_name"] == "c2")
        .cloned()
        .unwrap();
    assert_eq!(c2["paused"], true);
    ok("/channel/unpause?topic=a&channel=c2");
    ok("/topic/pause?topic=a");
    ok("/topic/unpause?topic=a");
    ok("/topic/empty?topic=a");
    ok("/channel/delete?topic=a&channel=c2");
    let s = nsqd.stats().unwrap();
    assert_eq!(topic(&s, "a")["channels"].as_array().unwrap().len(), 1);
    ok("/topic/delete?topic=a");
    let s = nsqd.stats().unwrap();
    assert!(s["topics"].as_array().unwrap().is_empty(), "{s}");
    // Deprecated GET forms still work.
    let (st, _) = http_get(nsqd.http, "/create_topic?topic=old").unwrap();
    assert_eq!(st, 200);
}

#[test]
fn stats_shapes() {
    let nsqd = Nsqd::start(&["--e2e-processing-latency-percentile=0.99"]).unwrap();
    http_post(nsqd.http, "/channel/create?topic=t", b"").unwrap();
    http_post(nsqd.http, "/topic/create?topic=t", b"").unwrap();
    http_post(nsqd.http, "/channel/create?topic=t&channel=c", b"").unwrap();
    let mut c = RawConn::connect(nsqd.tcp).unwrap();
    c.cmd(
        "IDENTIFY",
        Some(br#"{"client_id":"statsclient","hostname":"h1","user_agent":"ua/1"}"#),
    )
    .unwrap();
    c.expect_response("OK").unwrap();
    c.cmd("SUB t c", None).unwrap();
    c.expect_response("OK").unwrap();
    c.cmd("RDY 5", None).unwrap();
    http_post(nsqd.http, "/pub?topic=t", b"hi").unwrap();
    let m = c.read_message().unwrap();
    c.cmd(&format!("FIN {}", m.id), None).unwrap();
    assert!(wait_until(Duration::from_secs(5), || {
        let s = nsqd.stats().unwrap();
        topic(&s, "t")["channels"][0]["clients"][0]["finish_count"] == 1
    }));
    let s = nsqd.stats().unwrap();
    for k in [
        "version",
        "health",
        "start_time",
        "topics",
        "memory",
        "producers",
    ] {
        assert!(s.get(k).is_some(), "missing {k}");
    }
    let t = topic(&s, "t");
    for k in [
        "topic_name",
        "channels",
        "depth",
        "backend_depth",
        "message_count",
        "message_bytes",
        "paused",
        "e2e_processing_latency",
    ] {
        assert!(t.get(k).is_some(), "topic missing {k}: {t}");
    }
    let ch = &t["channels"][0];
    for k in [
        "channel_name",
        "depth",
        "backend_depth",
        "in_flight_count",
        "deferred_count",
        "message_count",
        "requeue_count",
        "timeout_count",
        "client_count",
        "clients",
        "paused",
        "e2e_processing_latency",
    ] {
        assert!(ch.get(k).is_some(), "channel missing {k}: {ch}");
    }
    let cl = &ch["clients"][0];
    assert_eq!(cl["client_id"], "statsclient");
    assert_eq!(cl["hostname"], "h1");
    assert_eq!(cl["user_agent"], "ua/1");
    assert_eq!(cl["ready_count"], 5);
    assert_eq!(cl["message_count"], 1);
    assert_eq!(ch["e2e_processing_latency"]["count"], 1);
    assert_eq!(
        ch["e2e_processing_latency"]["percentiles"][0]["quantile"],
        0.99
    );

    let s = http_json(nsqd.http, "/stats?format=json&include_clients=false").unwrap();
    assert!(topic(&s, "t")["channels"][0]["clients"]
        .as_array()
        .unwrap()
        .is_empty());
    let s = http_json(nsqd.http, "/stats?format=json&topic=nothing").unwrap();
    assert!(s["topics"].as_array().unwrap().is_empty());
    // Text format.
    let (st, body) = http_get(nsqd.http, "/stats").unwrap();
    assert_eq!(st, 200);
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("Health: OK") && text.contains("[t"), "{text}");
}

#[test]
fn config_endpoint() {
    let nsqd = Nsqd::start(&[]).unwrap();
    let v = http_json(nsqd.http, "/config/mem_queue_size").unwrap();
    assert_eq!(v, 10000);
    let v = http_json(nsqd.http, "/config/nsqlookupd_tcp_addresses").unwrap();
    assert_eq!(v, serde_json::json!([]));
    let (st, b) = http_get(nsqd.http, "/config/no_such_option").unwrap();
    assert_eq!(st, 400);
    assert_eq!(body_json(&b)["message"], "INVALID_OPTION");
    let (st, _) = http("PUT", nsqd.http, "/config/log_level", b"debug").unwrap();
    assert_eq!(st, 200);
    // NSQ reports the numeric level (1 = debug).
    assert_eq!(http_json(nsqd.http, "/config/log_level").unwrap(), 1);
    let (st, _) = http(
        "PUT",
        nsqd.http,
        "/config/nsqlookupd_tcp_addresses",
        b"not json",
    )
    .unwrap();
    assert_eq!(st, 400);
    let (st, _) = http("PUT", nsqd.http, "/config/mem_queue_size", b"5").unwrap();
    assert_eq!(st, 400);
}

#[test]
fn broken_requests_do_not_disturb() {
    let nsqd = Nsqd::start(&[]).unwrap();
    use std::io::{Read, Write};
    // Garbage instead of HTTP.
    let mut s = std::net::TcpStream::connect(nsqd.http).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"\x00\x01garbage\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    // A body shorter than its Content-Length, then close.
    let mut s = std::net::TcpStream::connect(nsqd.http).unwrap();
    s.write_all(b"POST /pub?topic=t HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nshort")
        .unwrap();
    drop(s);
    let (st, _) = http_post(nsqd.http, "/pub?topic=t", b"fine").unwrap();
    assert_eq!(st, 200);
    let s = nsqd.stats().unwrap();
    assert_eq!(topic(&s, "t")["message_count"], 1);
}
