//! What only a log can do, through nsqd's HTTP API (beyond NSQ): retention, rewind, peek,
//! and channels that start at the oldest retained message.

use std::time::Duration;

use nsq_blackbox_tests::{http_get, http_json, http_post, mpub_body, Nsqd, RawConn};

fn publish(nsqd: &Nsqd, from: usize, n: usize) {
    let mut p = RawConn::connect(nsqd.tcp).unwrap();
    let bodies: Vec<String> = (from..from + n).map(|i| format!("m{i}")).collect();
    let refs: Vec<&[u8]> = bodies.iter().map(|b| b.as_bytes()).collect();
    p.cmd("MPUB t", Some(&mpub_body(&refs))).unwrap();
    p.expect_response("OK").unwrap();
}

fn consume(nsqd: &Nsqd, channel: &str, n: usize) -> Vec<String> {
    let mut c = RawConn::connect(nsqd.tcp).unwrap();
    c.cmd(&format!("SUB t {channel}"), None).unwrap();
    c.expect_response("OK").unwrap();
    c.cmd("RDY 100", None).unwrap();
    (0..n)
        .map(|_| {
            let m = c.read_message().unwrap();
            c.cmd(&format!("FIN {}", m.id), None).unwrap();
            String::from_utf8_lossy(&m.body).to_string()
        })
        .collect()
}

fn peek(nsqd: &Nsqd, path: &str) -> Vec<(String, u64)> {
    let v = http_json(nsqd.http, path).unwrap();
    v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            use base64::Engine as _;
            let body = base64::engine::general_purpose::STANDARD
                .decode(m["body"].as_str().unwrap())
                .unwrap();
            (
                String::from_utf8(body).unwrap(),
                m["attempts"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn depth(nsqd: &Nsqd, channel: &str) -> u64 {
    let s = nsqd.stats().unwrap();
    s["topics"][0]["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["channel_name"] == channel)
        .map(|c| c["depth"].as_u64().unwrap())
        .unwrap()
}

#[test]
fn peek_rewind_and_earliest_channels_survive_a_restart() {
    let nsqd = Nsqd::start(&["--retention-time=1h", "--mem-queue-size=0"]).unwrap();
    http_post(nsqd.http, "/topic/create?topic=t", b"").unwrap();
    http_post(nsqd.http, "/channel/create?topic=t&channel=c", b"").unwrap();
    publish(&nsqd, 0, 100);
    // Peek shows what SUB then delivers, without changing depth or attempts.
    let peeked = peek(&nsqd, "/channel/peek?topic=t&channel=c&n=5");
    assert_eq!(
        peeked,
        (0..5).map(|i| (format!("m{i}"), 1)).collect::<Vec<_>>()
    );
    assert_eq!(depth(&nsqd, "c"), 100);
    assert_eq!(peek(&nsqd, "/channel/peek?topic=t&channel=c&n=5"), peeked);
    let ids: Vec<String> = http_json(nsqd.http, "/channel/peek?topic=t&channel=c&n=5").unwrap()
        ["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    let mut c = RawConn::connect(nsqd.tcp).unwrap();
    c.cmd("SUB t c", None).unwrap();
    c.expect_response("OK").unwrap();
    c.cmd("RDY 5", None).unwrap();
    for id in &ids {
        let m = c.read_message().unwrap();
        assert_eq!(&m.id, id, "peek shows the ids SUB delivers");
        c.cmd(&format!("FIN {}", m.id), None).unwrap();
    }
    drop(c);
    let mut got = consume(&nsqd, "c", 95);
    got.sort_by_key(|b| b[1..].parse::<u32>().unwrap_or(0));
    assert_eq!(got, (5..100).map(|i| format!("m{i}")).collect::<Vec<_>>());
    // The topic's newest.
    let newest = peek(&nsqd, "/topic/peek?topic=t&n=3");
    assert_eq!(
        newest.iter().map(|(b, _)| b.as_str()).collect::<Vec<_>>(),
        ["m97", "m98", "m99"]
    );
    // Bad arguments get NSQ-style answers.
    assert_eq!(
        http_get(nsqd.http, "/channel/peek?topic=t&channel=c&n=0")
            .unwrap()
            .0,
        400
    );
    assert_eq!(
        http_post(nsqd.http, "/channel/rewind?topic=t&channel=c&to=soon", b"")
            .unwrap()
            .0,
        400
    );
    assert_eq!(
        http_post(
            nsqd.http,
            "/channel/rewind?topic=t&channel=x&to=earliest",
            b""
        )
        .unwrap()
        .0,
        404
    );
    // Rewind to a sequence, persisted before the answer: a kill -9 right after keeps it.
    let (status, body) = http_post(
        nsqd.http,
        "/channel/rewind?topic=t&channel=c&to=seq:60",
        b"",
    )
    .unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let nsqd = nsqd.crash_restart().unwrap();
    assert_eq!(depth(&nsqd, "c"), 40);
    let again = consume(&nsqd, "c", 40);
    assert_eq!(again.first().map(String::as_str), Some("m60"));
    assert_eq!(again.last().map(String::as_str), Some("m99"));
    // A new channel can start with the retained history.
    http_post(
        nsqd.http,
        "/channel/create?topic=t&channel=history&start=earliest",
        b"",
    )
    .unwrap();
    assert_eq!(depth(&nsqd, "history"), 100);
    http_post(nsqd.http, "/channel/create?topic=t&channel=fresh", b"").unwrap();
    assert_eq!(depth(&nsqd, "fresh"), 0, "NSQ's default: only new messages");
    // Latest skips what is queued.
    http_post(
        nsqd.http,
        "/channel/rewind?topic=t&channel=history&to=latest",
        b"",
    )
    .unwrap();
    assert_eq!(depth(&nsqd, "history"), 0);
    std::thread::sleep(Duration::from_millis(10));
}

fn http_put(addr: std::net::SocketAddr, path: &str, body: &[u8]) -> (u16, serde_json::Value) {
    let url = format!("http://{addr}{path}");
    let r = reqwest::blocking::Client::new()
        .put(url)
        .body(body.to_vec())
        .send()
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(serde_json::Value::Null))
}

#[test]
fn topic_settings_apply_at_once_and_survive_a_restart() {
    let nsqd = Nsqd::start(&["--mem-queue-size=10000"]).unwrap();
    http_post(nsqd.http, "/topic/create?topic=t", b"").unwrap();
    let v = http_json(nsqd.http, "/topic/config?topic=t").unwrap();
    assert_eq!(v["effective"]["mem_queue_size"], 10000);
    assert_eq!(v["config"]["mem_queue_size"], serde_json::Value::Null);
    let (status, v) = http_put(
        nsqd.http,
        "/topic/config?topic=t",
        br#"{"mem_queue_size": 0, "max_bytes": 1048576}"#,
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["effective"]["mem_queue_size"], 0);
    publish(&nsqd, 0, 10);
    let s = nsqd.stats().unwrap();
    assert!(
        s["topics"][0]["disk_bytes"].as_u64().unwrap() > 0,
        "applied at once: on disk"
    );
    // Bad values get NSQ-style 400 answers and change nothing.
    assert_eq!(
        http_put(nsqd.http, "/topic/config?topic=t", b"{\"sync_every\": 0}").0,
        400
    );
    assert_eq!(
        http_put(nsqd.http, "/topic/config?topic=t", b"{\"colour\": 1}").0,
        400
    );
    assert_eq!(
        http_put(nsqd.http, "/topic/config?topic=t", b"not json").0,
        400
    );
    assert_eq!(
        http_put(nsqd.http, "/topic/config?topic=nope", b"{}").0,
        404
    );
    let nsqd = nsqd.restart().unwrap();
    let v = http_json(nsqd.http, "/topic/config?topic=t").unwrap();
    assert_eq!(v["config"]["mem_queue_size"], 0, "persisted");
    assert_eq!(v["effective"]["max_bytes"], 1048576);
    assert_eq!(
        nsqd.stats().unwrap()["topics"][0]["depth"],
        10,
        "the messages are kept"
    );
}
