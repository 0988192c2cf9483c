//! Protocol V2 byte by byte against the real nsqd: every command, NSQ's error codes and
//! texts, and whether the connection is closed after each error. After every bad client,
//! a good client must still be served.

use std::time::{Duration, Instant};

use nsq_blackbox_tests::{
    http_json, http_post, mpub_body, Nsqd, RawConn, FRAME_ERROR, FRAME_RESPONSE,
};

const CLOSE_WAIT: Duration = Duration::from_secs(3);

/// A fresh client publishes one message and gets OK: the server is still healthy.
fn assert_serving(nsqd: &Nsqd) {
    let mut c = RawConn::connect(nsqd.tcp).unwrap();
    c.cmd("PUB healthcheck", Some(b"x")).unwrap();
    c.expect_response("OK").unwrap();
}

fn subscriber(nsqd: &Nsqd, topic: &str, channel: &str, rdy: u32) -> RawConn {
    let mut c = RawConn::connect(nsqd.tcp).unwrap();
    c.cmd(&format!("SUB {topic} {channel}"), None).unwrap();
    c.expect_response("OK").unwrap();
    c.cmd(&format!("RDY {rdy}"), None).unwrap();
    c
}

#[test]
fn bad_magic_is_rejected() {
    let nsqd = Nsqd::start(&[]).unwrap();
    let mut s = std::net::TcpStream::connect(nsqd.tcp).unwrap();
    use std::io::Write;
    s.write_all(b"  V9").unwrap();
    let mut c = RawConn { stream: s };
    c.expect_error("E_BAD_PROTOCOL").unwrap();
    assert!(c.is_closed(CLOSE_WAIT));
    assert_serving(&nsqd);
}

#[test]
fn pub_sub_fin_round_trip() {
    let nsqd = Nsqd::start(&[]).unwrap();
    let mut sub = subscriber(&nsqd, "t", "c", 10);
    let mut p = RawConn::connect(nsqd.tcp).unwrap();
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    p.cmd("PUB t", Some(b"hello")).unwrap();
    p.expect_response("OK").unwrap();
    p.cmd("MPUB t", Some(&mpub_body(&[b"a", b"bb", b"ccc"])))
        .unwrap();
    p.expect_response("OK").unwrap();

    let mut bodies = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..4 {
        let m = sub.read_message().unwrap();
        assert_eq!(m.attempts, 1);
        assert_eq!(m.id.len(), 16);
        assert!(m.id.bytes().all(|b| b.is_ascii_hexdigit()), "id {:?}", m.id);
        assert!(
            m.timestamp >= before - 1_000_000_000,
            "timestamp {}",
            m.timestamp
        );
        bodies.push(m.body.clone());
        ids.push(m.id.clone());
    }
    assert_eq!(
        bodies,
        vec![
            b"hello".to_vec(),
            b"a".to_vec(),
            b"bb".to_vec(),
            b"ccc".to_vec()
        ]
    );
    let mut uniq = ids.clone();
    uniq.sort();
    uniq.dedup();
    assert_eq!(uniq.len(), 4, "message ids must be unique");
    for id in &ids {
        sub.cmd(&format!("FIN {id}"), None).unwrap();
    }
    // FIN has no response; NOP neither. Stats show everything finished.
    let ok = nsq_blackbox_tests::wait_until(Duration::from_secs(5), || {
        let s = nsqd.stats().unwrap();
        let ch = &s["topics"][0]["channels"][0];
        ch["in_flight_count"] == 0 && ch["depth"] == 0 && ch["message_count"] == 4
    });
    assert!(ok, "stats: {}", nsqd.stats().unwrap());
}

#[test]
fn invalid_command_closes() {
    let nsqd = Nsqd::start(&[]).unwrap();
    let mut c = RawConn::connect(nsqd.tcp).unwrap();
    c.cmd("BOGUS x", None).unwrap();
    let e = c.expect_error("E_INVALID").unwrap();
    assert!(e.contains("invalid command"), "{e}");
    assert!(c.is_closed(CLOSE_WAIT));
    assert_serving(&nsqd);
}

#[test]
fn bad_topic_and_channel_names() {
    let nsqd = Nsqd::start(&[]).unwrap();
    let mut c = RawConn::connect(nsqd.tcp).unwrap();
    c.cmd("PUB bad/topic", Some(b"x")).unwrap();
    c.expect_error("E_BAD_TOPIC").unwrap();
    assert!(c.is_closed(CLOSE_WAIT));

    let mut c = RawConn::connect(nsqd.tcp).unwrap();
    let long = "a".repeat(65);
    c.cmd(&format!("SUB {long} ch"), None).unwrap();
    c.expect_error("E_BAD_TOPIC").unwrap();

    let mut c = RawConn::connect(nsqd.tcp).unwrap();
    c.cmd("SUB good bad*channel", None).unwrap();
    c.expect_error("E_BAD_CHANNEL").unwrap();
    assert!(c.is_closed(CLOSE_WAIT));
    assert_serving(&nsqd);
}

#[test]
fn body_size_errors() {
    let nsqd = Nsqd::start(&["--max-msg-size=100", "--max-body-size=1000"]).unwrap();

    let mut c = RawConn::connect(nsqd.tcp).unwrap();
    c.cmd("PUB t", Some(b"")).unwrap();
    let e = c.expect_error("E_BAD_MESSAGE").unwrap();
    assert_eq!(e, "E_BAD_MESSAGE PUB invalid message body size 0");
    assert!(c.is_closed(CLOSE_WAIT));

    let mut c = RawConn::connect(nsqd.tcp).unwrap();
    c.cmd("PUB t", Some(&[b'x'; 101])).unwrap();
    let e = c.expect_error("E_BAD_MESSAGE").unwrap();
    assert_eq!(e, "E_BAD_MESSAGE PUB message too big 101 > 100");
    assert!(c.is_closed(CLOSE_WAIT));

    // A negative (as i32) size must not make the server allocate anything.
    let mut c = RawConn::connect(nsqd.tcp).unwrap();
    c.send(b"PUB t\n\xff\xff\xff\xff").unwrap();
    c.expect_error("E_BAD_MESSAGE").unwrap();
    assert!(c.is_closed(CLOSE_WAIT));

    // MPUB: body too big, zero messages, a message too big.
    let mut c = RawConn::connect(nsqd.tcp).unwrap();
    c.send(b"MPUB t\n\x7f\xff\xff\xff").unwrap();
    c.expect_error("E_BAD_BODY").unwrap();
    assert!(c.is_closed(CLOSE_WAIT));

    let mut c = RawConn::connect(nsqd.tcp).unwrap();
    c.cmd("MPUB t", Some(&0u32.to_be_bytes())).unwrap();
    c.expect_error("E_BAD_BODY").unwrap();

    let mut c = RawConn::connect(nsqd.tcp).unwrap();
    let big = vec![b'y'; 101];
    c.cmd("MPUB t", Some(&mpub_body(&[b"ok", &big]))).unwrap();
    c.expect_error("E_BAD_MESSAGE").unwrap();
    assert!(c.is_closed(CLOSE_WAIT));

    // Nothing from the failed MPUB was published.
    let s = nsqd.stats().unwrap();
    let count: u64 = s["topics"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["topic_name"] == "t")
        .map(|t| t["message_count"].as_u64().unwrap())
        .sum();
    assert_eq!(count, 0, "{s}");
    assert_serving(&nsqd);
}

#[test]
fn identify_negotiation_and_errors() {
    let nsqd = Nsqd::start(&[]).unwrap();
    let mut c = RawConn::connect(nsqd.tcp).unwrap();
    c.cmd(
        "IDENTIFY",
        Some(br#"{"client_id":"test","hostname":"h","feature_negotiation":true,"heartbeat_interval":5000,"user_agent":"raw/1.0","msg_timeout":5000}"#),
    )
    .unwrap();
    let (ty, data) = c.read_non_heartbeat().unwrap();
    assert_eq!(ty, FRAME_RESPONSE);
    let v: serde_json::Value = serde_json::from_slice(&data).unwrap();
    for k in [
        "max_rdy_count",
        "version",
        "max_msg_timeout",
        "msg_timeout",
        "tls_v1",
        "deflate",
        "deflate_level",
        "max_deflate_level",
        "snappy",
        "sample_rate",
        "auth_required",
        "output_buffer_size",
        "output_buffer_timeout",
    ] {
        assert!(v.get(k).is_some(), "missing {k} in {v}");
    }
    assert_eq!(v["msg_timeout"], 5000);
    assert_eq!(v["max_rdy_count"], 2500);
    // A second IDENTIFY is not allowed.
    c.cmd("IDENTIFY", Some(b"{}")).unwrap();
    c.expect_error("E_INVALID").unwrap();
    assert!(c.is_closed(CLOSE_WAIT));

    // Without feature negotiation the answer is a plain OK.
    let mut c = RawConn::connect(nsqd.tcp).unwrap();
    c.cmd("IDENTIFY", Some(br#"{"client_id":"x"}"#)).unwrap();
    c.expect_response("OK").unwrap();

    // Broken JSON.
    let mut c = RawConn::connect(nsqd.tcp).unwrap();
    c.cmd("IDENTIFY", Some(b"{not json")).unwrap();
    let e = c.expect_error("E_BAD_BODY").unwrap();
    assert_eq!(e, "E_BAD_BODY IDENTIFY failed to decode JSON body");
    assert!(c.is_closed(CLOSE_WAIT));

    // Out-of-range settings.
    for (body, want) in [
        (
            r#"{"heartbeat_interval":10}"#,
            "E_BAD_BODY IDENTIFY heartbeat interval (10) is invalid",
        ),
        (
            r#"{"sample_rate":101}"#,
            "E_BAD_BODY IDENTIFY sample rate (101) is invalid",
        ),
        (
            r#"{"msg_timeout":10}"#,
            "E_BAD_BODY IDENTIFY msg timeout (10) is invalid",
        ),
        (
            r#"{"output_buffer_size":10}"#,
            "E_BAD_BODY IDENTIFY output buffer size (10) is invalid",
        ),
    ] {
        let mut c = RawConn::connect(nsqd.tcp).unwrap();
        c.cmd("IDENTIFY", Some(body.as_bytes())).unwrap();
        let e = c.expect_error("E_BAD_BODY").unwrap();
        assert_eq!(e, want);
        assert!(c.is_closed(CLOSE_WAIT));
    }
    // Both compressions at once.
    let mut c = RawConn::connect(nsqd.tcp).unwrap();
    c.cmd(
        "IDENTIFY",
        Some(br#"{"feature_negotiation":true,"snappy":true,"deflate":true}"#),
    )
    .unwrap();
    c.expect_error("E_IDENTIFY_FAILED").unwrap();
    assert_serving(&nsqd);
}

#[test]
fn state_errors() {
    let nsqd = Nsqd::start(&[]).unwrap();
    for (line, want) in [
        ("RDY 10", "E_INVALID cannot RDY in current state"),
        (
            "FIN 0000000000000000",
            "E_INVALID cannot FIN in current state",
        ),
        (
            "REQ 0000000000000000 0",
            "E_INVALID cannot REQ in current state",
        ),
        (
            "TOUCH 0000000000000000",
            "E_INVALID cannot TOUCH in current state",
        ),
        ("CLS", "E_INVALID cannot CLS in current state"),
    ] {
        let mut c = RawConn::connect(nsqd.tcp).unwrap();
        c.cmd(line, None).unwrap();
        let e = c.expect_error("E_INVALID").unwrap();
        assert_eq!(e, want, "for {line}");
        assert!(c.is_closed(CLOSE_WAIT), "{line} must close");
    }
    // SUB twice.
    let mut c = subscriber(&nsqd, "t", "c", 0);
    c.cmd("SUB t c2", None).unwrap();
    c.expect_error("E_INVALID").unwrap();
    assert!(c.is_closed(CLOSE_WAIT));
    // RDY out of range.
    let mut c = subscriber(&nsqd, "t", "c", 0);
    c.cmd("RDY 2501", None).unwrap();
    assert_eq!(
        c.expect_error("E_INVALID").unwrap(),
        "E_INVALID RDY count 2501 out of range 0-2500"
    );
    assert!(c.is_closed(CLOSE_WAIT));
    assert_serving(&nsqd);
}

#[test]
fn fin_req_touch_failures_keep_the_connection() {
    let nsqd = Nsqd::start(&[]).unwrap();
    let mut c = subscriber(&nsqd, "t", "c", 1);
    c.cmd("FIN 0123456789abcdef", None).unwrap();
    assert_eq!(
        c.expect_error("E_FIN_FAILED").unwrap(),
        "E_FIN_FAILED FIN 0123456789abcdef failed ID not in flight"
    );
    c.cmd("REQ 0123456789abcdef 0", None).unwrap();
    c.expect_error("E_REQ_FAILED").unwrap();
    c.cmd("TOUCH 0123456789abcdef", None).unwrap();
    c.expect_error("E_TOUCH_FAILED").unwrap();
    // Still usable: publish and receive on the same connection.
    c.cmd("PUB t", Some(b"after")).unwrap();
    c.expect_response("OK").unwrap();
    let m = c.read_message().unwrap();
    assert_eq!(m.body, b"after");
}

#[test]
fn another_clients_message_cannot_be_finished() {
    let nsqd = Nsqd::start(&[]).unwrap();
    let mut a = subscriber(&nsqd, "t", "c", 1);
    let mut b = subscriber(&nsqd, "t", "c", 0);
    let mut p = RawConn::connect(nsqd.tcp).unwrap();
    p.cmd("PUB t", Some(b"m")).unwrap();
    p.expect_response("OK").unwrap();
    let m = a.read_message().unwrap();
    b.cmd(&format!("FIN {}", m.id), None).unwrap();
    let e = b.expect_error("E_FIN_FAILED").unwrap();
    assert!(e.ends_with("client does not own message"), "{e}");
    a.cmd(&format!("FIN {}", m.id), None).unwrap();
    a.cmd("NOP", None).unwrap();
}

#[test]
fn req_redelivers_with_attempts_and_delay() {
    let nsqd = Nsqd::start(&[]).unwrap();
    let mut c = subscriber(&nsqd, "t", "c", 1);
    let mut p = RawConn::connect(nsqd.tcp).unwrap();
    p.cmd("PUB t", Some(b"again")).unwrap();
    p.expect_response("OK").unwrap();
    let m = c.read_message().unwrap();
    assert_eq!(m.attempts, 1);
    c.cmd(&format!("REQ {} 0", m.id), None).unwrap();
    let m2 = c.read_message().unwrap();
    assert_eq!(m2.id, m.id, "same id across redeliveries");
    assert_eq!(m2.attempts, 2);
    // Deferred requeue: not before the delay.
    let t0 = Instant::now();
    c.cmd(&format!("REQ {} 700", m2.id), None).unwrap();
    let s = nsqd.stats().unwrap();
    assert_eq!(s["topics"][0]["channels"][0]["deferred_count"], 1, "{s}");
    let m3 = c.read_message().unwrap();
    assert!(
        t0.elapsed() >= Duration::from_millis(650),
        "redelivered after {:?}",
        t0.elapsed()
    );
    assert_eq!(m3.attempts, 3);
    c.cmd(&format!("FIN {}", m3.id), None).unwrap();
    let s = nsqd.stats().unwrap();
    assert_eq!(s["topics"][0]["channels"][0]["requeue_count"], 2, "{s}");
}

#[test]
fn msg_timeout_and_touch() {
    let nsqd = Nsqd::start(&[]).unwrap();
    let mut c = RawConn::connect(nsqd.tcp).unwrap();
    c.cmd("IDENTIFY", Some(br#"{"msg_timeout":1000}"#)).unwrap();
    c.expect_response("OK").unwrap();
    c.cmd("SUB t c", None).unwrap();
    c.expect_response("OK").unwrap();
    c.cmd("RDY 1", None).unwrap();
    let mut p = RawConn::connect(nsqd.tcp).unwrap();
    p.cmd("PUB t", Some(b"slow")).unwrap();
    p.expect_response("OK").unwrap();
    let m = c.read_message().unwrap();
    // TOUCH twice at 600ms intervals keeps it ours for longer than msg_timeout.
    let t0 = Instant::now();
    for _ in 0..2 {
        std::thread::sleep(Duration::from_millis(600));
        c.cmd(&format!("TOUCH {}", m.id), None).unwrap();
    }
    // Then stop touching: it times out and comes back with attempts 2.
    let m2 = c.read_message().unwrap();
    assert!(
        t0.elapsed() >= Duration::from_millis(1900),
        "timed out too early: {:?}",
        t0.elapsed()
    );
    assert_eq!(m2.id, m.id);
    assert_eq!(m2.attempts, 2);
    let s = nsqd.stats().unwrap();
    assert_eq!(s["topics"][0]["channels"][0]["timeout_count"], 1, "{s}");
}

#[test]
fn dpub_defers_delivery() {
    let nsqd = Nsqd::start(&[]).unwrap();
    let mut c = subscriber(&nsqd, "t", "c", 5);
    let mut p = RawConn::connect(nsqd.tcp).unwrap();
    let t0 = Instant::now();
    p.cmd("DPUB t 800", Some(b"later")).unwrap();
    p.expect_response("OK").unwrap();
    p.cmd("PUB t", Some(b"now")).unwrap();
    p.expect_response("OK").unwrap();
    let m = c.read_message().unwrap();
    assert_eq!(m.body, b"now");
    let m = c.read_message().unwrap();
    assert_eq!(m.body, b"later");
    assert!(
        t0.elapsed() >= Duration::from_millis(750),
        "{:?}",
        t0.elapsed()
    );
    // Out of range defer.
    p.cmd("DPUB t 3600001", Some(b"x")).unwrap();
    p.expect_error("E_INVALID").unwrap();
    assert!(p.is_closed(CLOSE_WAIT));
}

#[test]
fn cls_answers_close_wait() {
    let nsqd = Nsqd::start(&[]).unwrap();
    let mut c = subscriber(&nsqd, "t", "c", 1);
    c.cmd("CLS", None).unwrap();
    c.expect_response("CLOSE_WAIT").unwrap();
}

#[test]
fn heartbeats_and_missed_heartbeat_disconnect() {
    let nsqd = Nsqd::start(&[]).unwrap();
    let mut c = RawConn::connect(nsqd.tcp).unwrap();
    c.cmd("IDENTIFY", Some(br#"{"heartbeat_interval":1000}"#))
        .unwrap();
    c.expect_response("OK").unwrap();
    let (ty, data) = c.read_frame().unwrap();
    assert_eq!((ty, data.as_slice()), (FRAME_RESPONSE, &b"_heartbeat_"[..]));
    // Never answer: after two missed intervals the server hangs up.
    let t0 = Instant::now();
    assert!(
        c.is_closed(Duration::from_secs(6)),
        "not closed after missed heartbeats"
    );
    assert!(t0.elapsed() >= Duration::from_millis(800));
}

#[test]
fn channel_distribution_and_multicast() {
    let nsqd = Nsqd::start(&[]).unwrap();
    let mut a1 = subscriber(&nsqd, "t", "a", 100);
    let mut a2 = subscriber(&nsqd, "t", "a", 100);
    let mut b = subscriber(&nsqd, "t", "b", 100);
    let mut p = RawConn::connect(nsqd.tcp).unwrap();
    let n = 40;
    for i in 0..n {
        p.cmd("PUB t", Some(format!("m{i}").as_bytes())).unwrap();
        p.expect_response("OK").unwrap();
    }
    let mut got_b = Vec::new();
    for _ in 0..n {
        got_b.push(b.read_message().unwrap().body);
    }
    assert_eq!(got_b.len(), n);
    // Channel a: the two subscribers together get each message exactly once.
    let mut got_a = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    for c in [&mut a1, &mut a2] {
        c.stream
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
    }
    // Drain each connection until it goes quiet (one consumer may have got them all).
    while got_a.len() < n && Instant::now() < deadline {
        for c in [&mut a1, &mut a2] {
            while let Ok(m) = c.read_message() {
                got_a.push(m.body);
            }
        }
    }
    got_a.sort();
    got_a.dedup();
    assert_eq!(got_a.len(), n, "{}", nsqd.stats().unwrap());
}

#[test]
fn max_channel_consumers() {
    let nsqd = Nsqd::start(&["--max-channel-consumers=1"]).unwrap();
    let _a = subscriber(&nsqd, "t", "c", 0);
    let mut b = RawConn::connect(nsqd.tcp).unwrap();
    b.cmd("SUB t c", None).unwrap();
    b.expect_error("E_TOO_MANY_CHANNEL_CONSUMERS").unwrap();
    assert!(b.is_closed(CLOSE_WAIT));
}

#[test]
fn pause_channel_and_topic() {
    let nsqd = Nsqd::start(&[]).unwrap();
    let mut c = subscriber(&nsqd, "t", "c", 10);
    let (st, _) = http_post(nsqd.http, "/channel/pause?topic=t&channel=c", b"").unwrap();
    assert_eq!(st, 200);
    let mut p = RawConn::connect(nsqd.tcp).unwrap();
    p.cmd("PUB t", Some(b"held")).unwrap();
    p.expect_response("OK").unwrap();
    c.stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    assert!(c.read_message().is_err(), "paused channel delivered");
    c.stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let (st, _) = http_post(nsqd.http, "/channel/unpause?topic=t&channel=c", b"").unwrap();
    assert_eq!(st, 200);
    assert_eq!(c.read_message().unwrap().body, b"held");

    let (st, _) = http_post(nsqd.http, "/topic/pause?topic=t", b"").unwrap();
    assert_eq!(st, 200);
    let s = http_json(nsqd.http, "/stats?format=json&topic=t").unwrap();
    assert_eq!(s["topics"][0]["paused"], true);
    p.cmd("PUB t", Some(b"held2")).unwrap();
    p.expect_response("OK").unwrap();
    c.stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    assert!(c.read_message().is_err(), "paused topic delivered");
    c.stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    http_post(nsqd.http, "/topic/unpause?topic=t", b"").unwrap();
    assert_eq!(c.read_message().unwrap().body, b"held2");
}

#[test]
fn ephemeral_channel_vanishes_with_last_consumer() {
    let nsqd = Nsqd::start(&[]).unwrap();
    let c = subscriber(&nsqd, "t", "tmp#ephemeral", 1);
    let s = nsqd.stats().unwrap();
    assert_eq!(
        s["topics"][0]["channels"][0]["channel_name"],
        "tmp#ephemeral"
    );
    drop(c);
    let gone = nsq_blackbox_tests::wait_until(Duration::from_secs(5), || {
        let s = nsqd.stats().unwrap();
        s["topics"][0]["channels"]
            .as_array()
            .is_some_and(|a| a.is_empty())
    });
    assert!(gone, "{}", nsqd.stats().unwrap());
}

#[test]
fn disconnect_requeues_in_flight_to_others() {
    let nsqd = Nsqd::start(&[]).unwrap();
    let mut a = subscriber(&nsqd, "t", "c", 1);
    let mut p = RawConn::connect(nsqd.tcp).unwrap();
    p.cmd("PUB t", Some(b"orphan")).unwrap();
    p.expect_response("OK").unwrap();
    let m = a.read_message().unwrap();
    drop(a);
    let mut b = subscriber(&nsqd, "t", "c", 1);
    let m2 = b.read_message().unwrap();
    assert_eq!(m2.id, m.id);
    assert_eq!(m2.attempts, 2);
}

#[test]
fn error_frames_are_type_1() {
    let nsqd = Nsqd::start(&[]).unwrap();
    let mut c = RawConn::connect(nsqd.tcp).unwrap();
    c.cmd("RDY x", None).unwrap();
    let (ty, _) = c.read_frame().unwrap();
    assert_eq!(ty, FRAME_ERROR);
}
