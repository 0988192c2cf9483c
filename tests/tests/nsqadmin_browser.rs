//! nsqadmin in a real browser: headless Chromium driven by Python selenium
//! (tests/python/nsqadmin_browser.py) over two nsqd and an nsqlookupd. The script reads
//! the figures off the pages and compares them with what this test read from /stats, then
//! pauses and empties the channel through the confirmation pages; this side checks that
//! the nsqd really changed. Screenshots go to a temporary directory, or to
//! `$NSQADMIN_SCREENSHOTS` (the README's come from `NSQADMIN_SCREENSHOTS=docs`).

use std::time::Duration;

use nsq_blackbox_tests::{
    http_get, http_json, http_post, repo_root, run_python, start_lookupd, wait_until, Nsqadmin,
    Nsqd, RawConn,
};
use serde_json::Value;

fn channel_stats(n: &Nsqd, topic: &str, channel: &str) -> Option<Value> {
    let s = n.stats().ok()?;
    s["topics"]
        .as_array()?
        .iter()
        .find(|t| t["topic_name"] == topic)?["channels"]
        .as_array()?
        .iter()
        .find(|c| c["channel_name"] == channel)
        .cloned()
}

#[test]
fn pages_in_headless_chromium() {
    let lookupd = start_lookupd();
    let reg = format!("--lookupd-tcp-address={}", lookupd.tcp);
    let args = [reg.as_str(), "--broadcast-address=127.0.0.1"];
    let a = Nsqd::start(&args).unwrap();
    let b = Nsqd::start(&args).unwrap();
    for (n, count) in [(&a, 6), (&b, 4)] {
        for i in 0..count {
            let (st, _) =
                http_post(n.http, "/pub?topic=orders", format!("order {i}").as_bytes()).unwrap();
            assert_eq!(st, 200);
        }
        let (st, _) =
            http_post(n.http, "/channel/create?topic=orders&channel=billing", b"").unwrap();
        assert_eq!(st, 200);
    }
    // A per-topic setting on a: the topic page's settings table shows it, marked.
    let (st, _) = nsq_blackbox_tests::http(
        "PUT",
        a.http,
        "/topic/config?topic=orders",
        br#"{"mem_queue_size": 5}"#,
    )
    .unwrap();
    assert_eq!(st, 200);
    let mut c = RawConn::connect(a.tcp).unwrap();
    c.cmd(
        "IDENTIFY",
        Some(br#"{"client_id":"browser-test","hostname":"tester","user_agent":"admin-test/1.0"}"#),
    )
    .unwrap();
    c.read_non_heartbeat().unwrap();
    c.cmd("SUB orders billing", None).unwrap();
    c.expect_response("OK").unwrap();
    c.cmd("RDY 2", None).unwrap();
    let m = c.read_message().unwrap();
    c.read_message().unwrap();
    c.cmd("RDY 0", None).unwrap();
    c.cmd(&format!("FIN {}", m.id), None).unwrap();
    assert!(wait_until(Duration::from_secs(10), || {
        channel_stats(&a, "orders", "billing").is_some_and(|ch| ch["in_flight_count"] == 1)
    }));
    let admin = Nsqadmin::start(&[
        format!("--lookupd-http-address={}", lookupd.http),
        "--history-interval=500ms".into(),
    ])
    .unwrap();
    assert!(wait_until(Duration::from_secs(10), || {
        http_json(admin.http, "/api/nodes")
            .is_ok_and(|v| v["nodes"].as_array().is_some_and(|n| n.len() == 2))
    }));
    let (ca, cb) = (
        channel_stats(&a, "orders", "billing").unwrap(),
        channel_stats(&b, "orders", "billing").unwrap(),
    );
    let sum = |k: &str| ca[k].as_u64().unwrap() + cb[k].as_u64().unwrap();
    let shots = match std::env::var("NSQADMIN_SCREENSHOTS") {
        Ok(d) => repo_root().join(d),
        Err(_) => std::env::temp_dir().join(format!("nsqadmin-shots-{}", std::process::id())),
    };
    let mut nodes: Vec<String> = [&a, &b]
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.http.port()))
        .collect();
    nodes.sort();
    let mut py = vec![
        "--url".to_string(),
        format!("http://{}", admin.http),
        "--topic".into(),
        "orders".into(),
        "--channel".into(),
        "billing".into(),
        "--topic-messages".into(),
        "10".into(),
        "--channel-depth".into(),
        sum("depth").to_string(),
        "--channel-in-flight".into(),
        sum("in_flight_count").to_string(),
        "--counter".into(),
        sum("message_count").to_string(),
        "--screenshots".into(),
        shots.display().to_string(),
        "--tuned-node".into(),
        format!("127.0.0.1:{}", a.http.port()),
        "--tuned-mem-queue-size".into(),
        "5".into(),
        "--nodes".into(),
    ];
    py.extend(nodes);
    let out = run_python("nsqadmin_browser.py", &py, Duration::from_secs(180)).unwrap();
    assert!(
        out.status.success(),
        "browser test failed:\nstdout: {}\nstderr: {}\nnsqadmin log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        admin.daemon.log_text()
    );
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(seen["overview_messages"], 10);
    assert_eq!(seen["topic_channel_depth"], sum("depth"));
    assert_eq!(seen["settings_mem_queue_size"], 5);
    assert_eq!(seen["depth_after_empty"], 0);
    // What the browser clicked reached both nsqd.
    for n in [&a, &b] {
        let ch = channel_stats(n, "orders", "billing").unwrap();
        assert_eq!(ch["paused"], true);
        assert_eq!(ch["depth"], 0);
    }
    for f in [
        "nsqadmin-overview.png",
        "nsqadmin-topic.png",
        "nsqadmin-channel.png",
        "nsqadmin-confirm.png",
        "nsqadmin-counter.png",
    ] {
        let len = std::fs::metadata(shots.join(f))
            .map(|m| m.len())
            .unwrap_or(0);
        assert!(len > 1000, "screenshot {f} missing");
    }
    assert_eq!(http_get(admin.http, "/ping").unwrap().0, 200);
}
