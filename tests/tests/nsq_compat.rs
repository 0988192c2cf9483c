//! Drop-in parity for NSQ operators (issue 9): NSQ 1.3's flags and config files, the
//! HTTPS listener and --tls-required on HTTP, node ids in message ids, statsd, the HTTP
//! details NSQ tools and scripts rely on, and plain-text logs.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nsq_blackbox_tests::{
    bin, free_port, http_get, http_json, http_post, self_signed_cert, start_daemon, start_lookupd,
    wait_output, wait_ready, wait_until, Daemon, Nsqd, RawConn,
};

fn fixture(name: &str) -> PathBuf {
    nsq_blackbox_tests::repo_root()
        .join("tests/fixtures")
        .join(name)
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// One HTTP/1.0 exchange returning (status, lower-cased header block, body).
fn http_full(method: &str, addr: SocketAddr, path: &str, body: &[u8]) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header end");
    let head = String::from_utf8_lossy(&resp[..split]).to_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    (status, head, resp[split + 4..].to_vec())
}

fn has_nsq_header(head: &str) -> bool {
    head.contains("x-nsq-content-type: nsq; version=1.0")
}

#[test]
fn nsqd_accepts_every_nsq_13_flag() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed_cert(dir.path()).unwrap();
    let statsd = UdpSocket::bind("127.0.0.1:0").unwrap();
    let statsd_addr = statsd.local_addr().unwrap();
    // Every flag of `nsqd --help` (v1.3.0) in NSQ's single-dash spelling with NSQ's example
    // or default values; the harness adds -tcp/-http/-https-address and -data-path.
    let flags: Vec<String> = vec![
        "-auth-http-address=127.0.0.1:1".into(),
        "-broadcast-address=127.0.0.1".into(),
        "-broadcast-http-port=0".into(),
        "-broadcast-tcp-port=0".into(),
        "-deflate=true".into(),
        "-e2e-processing-latency-percentile=1.0,0.99,0.95".into(),
        "-e2e-processing-latency-window-time=10m0s".into(),
        "-http-client-connect-timeout=2s".into(),
        "-http-client-request-timeout=5s".into(),
        "-log-level=INFO".into(),
        "-log-prefix=[nsqd] ".into(),
        "-lookupd-tcp-address=127.0.0.1:1".into(),
        "-lookupd-tcp-address=127.0.0.1:2".into(),
        "-max-body-size=5242880".into(),
        "-max-bytes-per-file=104857600".into(),
        "-max-channel-consumers=0".into(),
        "-max-deflate-level=6".into(),
        "-max-heartbeat-interval=1m0s".into(),
        "-max-msg-size=1048576".into(),
        "-max-msg-timeout=15m0s".into(),
        "-max-output-buffer-size=65536".into(),
        "-max-output-buffer-timeout=30s".into(),
        "-max-rdy-count=2500".into(),
        "-max-req-timeout=1h0m0s".into(),
        "-mem-queue-size=10000".into(),
        "-min-output-buffer-timeout=25ms".into(),
        "-msg-timeout=1m0s".into(),
        "-node-id=617".into(),
        "-output-buffer-timeout=250ms".into(),
        "-queue-scan-selection-count=20".into(),
        "-queue-scan-worker-pool-max=4".into(),
        "-snappy=true".into(),
        format!("-statsd-address={statsd_addr}"),
        "-statsd-exclude-ephemeral".into(),
        "-statsd-interval=1m0s".into(),
        "-statsd-mem-stats=true".into(),
        "-statsd-prefix=nsq.%s".into(),
        "-statsd-udp-packet-size=508".into(),
        "-sync-every=2500".into(),
        "-sync-timeout=2s".into(),
        format!("-tls-cert={}", cert.display()),
        format!("-tls-key={}", key.display()),
        "-tls-client-auth-policy=require-verify".into(),
        format!("-tls-root-ca-file={}", cert.display()),
        "-tls-min-version=tls1.2".into(),
        "-tls-required=tcp-https".into(),
        "-verbose".into(),
        "-worker-id".into(),
    ];
    let refs: Vec<&str> = flags.iter().map(String::as_str).collect();
    let nsqd = Nsqd::start(&refs).unwrap();
    assert_eq!(
        http_json(nsqd.http, "/config/e2e_processing_latency_percentiles").unwrap(),
        serde_json::json!([1.0, 0.99, 0.95])
    );
    assert_eq!(
        http_json(nsqd.http, "/config/nsqlookupd_tcp_addresses").unwrap(),
        serde_json::json!(["127.0.0.1:1", "127.0.0.1:2"])
    );
    assert_eq!(http_json(nsqd.http, "/config/tls_required").unwrap(), 1);
    assert_eq!(
        http_json(nsqd.http, "/config/statsd_prefix").unwrap(),
        format!("nsq.127_0_0_1_{}.", nsqd.http.port())
    );
    let log = nsqd.daemon.log_text();
    for want in [
        "ID: 617",
        "--verbose is deprecated",
        "--worker-id is deprecated",
        "--queue-scan-worker-pool-max has no effect",
        "--queue-scan-selection-count has no effect",
    ] {
        assert!(log.contains(want), "log lacks {want:?}:\n{log}");
    }
}

#[test]
fn nsqlookupd_accepts_every_nsq_13_flag() {
    let dir = tempfile::tempdir().unwrap();
    let (tcp, http) = (local(free_port()), local(free_port()));
    let log = dir.path().join("lookupd.log");
    let args: Vec<String> = vec![
        "-broadcast-address=127.0.0.1".into(),
        format!("-http-address={http}"),
        format!("-tcp-address={tcp}"),
        "-inactive-producer-timeout=5m0s".into(),
        "-log-level=INFO".into(),
        "-log-prefix=[nsqlookupd] ".into(),
        "-tombstone-lifetime=45s".into(),
        "-verbose".into(),
    ];
    let mut d = start_daemon("nsqlookupd", &args, &log).unwrap();
    wait_ready(&mut d, http).unwrap();
    let text = d.log_text();
    assert!(text.contains("--verbose is deprecated"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("[nsqlookupd] ") && l.contains(" INFO: ")),
        "{text}"
    );
}

#[test]
fn values_nsq_refuses_are_refused() {
    for (b, args) in [
        ("nsqd", &["--msg-timeout=10"][..]),
        ("nsqd", &["--node-id=1024"]),
        ("nsqd", &["--node-id=-1"]),
        ("nsqd", &["--tls-min-version=tls9"]),
        ("nsqlookupd", &["--tombstone-lifetime=45"]),
    ] {
        let out = Command::new(bin(b)).args(args).output().unwrap();
        assert!(!out.status.success(), "{b} {args:?} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.trim().is_empty(), "{b} {args:?}: no message");
    }
}

#[test]
fn nsq_example_config_files_load() {
    let lookupd_dir = tempfile::tempdir().unwrap();
    let (ltcp, lhttp) = (local(free_port()), local(free_port()));
    // nsqlookupd with NSQ's own example file; only the listen addresses are overridden.
    let mut l = start_daemon(
        "nsqlookupd",
        &[
            format!("--config={}", fixture("nsqlookupd.cfg.example").display()),
            format!("--tcp-address={ltcp}"),
            format!("--http-address={lhttp}"),
            "--broadcast-address=127.0.0.1".into(),
        ],
        &lookupd_dir.path().join("l.log"),
    )
    .unwrap();
    wait_ready(&mut l, lhttp).unwrap();
    assert!(l.log_text().contains("--verbose is deprecated"));

    // nsqd with NSQ's example file; the harness overrides addresses and data path, and the
    // file's nsqlookupd list is replaced by the command line's.
    let nsqd = Nsqd::start(&[
        &format!("--config={}", fixture("nsqd.cfg.example").display()),
        &format!("--lookupd-tcp-address={ltcp}"),
        "--broadcast-address=127.0.0.1",
    ])
    .unwrap();
    let cfg = |k: &str| http_json(nsqd.http, &format!("/config/{k}")).unwrap();
    assert_eq!(cfg("max_msg_size"), 1024768);
    assert_eq!(cfg("max_body_size"), 5123840);
    assert_eq!(cfg("msg_timeout"), 60_000_000_000u64);
    assert_eq!(cfg("max_output_buffer_timeout"), 1_000_000_000u64);
    assert_eq!(
        cfg("nsqlookupd_tcp_addresses"),
        serde_json::json!([ltcp.to_string()])
    );
    assert_eq!(
        cfg("e2e_processing_latency_percentiles"),
        serde_json::json!([1.0, 0.99, 0.95])
    );
    // It registered with the nsqlookupd started from the other example.
    http_post(nsqd.http, "/topic/create?topic=cfgt", b"").unwrap();
    assert!(wait_until(Duration::from_secs(10), || {
        http_json(lhttp, "/lookup?topic=cfgt")
            .map(|v| v["producers"].as_array().is_some_and(|a| a.len() == 1))
            .unwrap_or(false)
    }));

    // Unknown keys warn instead of stopping nsqd; numeric durations are milliseconds.
    let dir = tempfile::tempdir().unwrap();
    let cfg_path = dir.path().join("extra.cfg");
    std::fs::write(
        &cfg_path,
        "bogus_key = 1\nmem_queue_size = 77\nmsg_timeout = 45000\nid = 12\nlog_level = 2\n",
    )
    .unwrap();
    let n2 = Nsqd::start(&[&format!("--config={}", cfg_path.display())]).unwrap();
    assert_eq!(http_json(n2.http, "/config/mem_queue_size").unwrap(), 77);
    assert_eq!(
        http_json(n2.http, "/config/msg_timeout").unwrap(),
        45_000_000_000u64
    );
    let log = n2.daemon.log_text();
    assert!(
        log.contains("bogus_key") && log.contains("WARNING"),
        "{log}"
    );
    assert!(log.contains("ID: 12"), "{log}");
    assert_eq!(http_json(n2.http, "/config/log_level").unwrap(), 2);
}

/// An HTTPS client for the test's self-signed certificate (which is its own CA, so it is
/// not verified; the tests are about what the server does).
fn https_client(_cert: &std::path::Path) -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Start nsqd with a self-signed certificate and `flag`, which must make it refuse plain
/// HTTP, and wait until plain `/ping` answers 403 (the harness's `Nsqd::start` waits for a
/// 200 there). Returns the daemon, its HTTP and HTTPS addresses and the certificate.
fn start_tls_nsqd_refusing_plain_http(
    dir: &tempfile::TempDir,
    flag: &str,
) -> (Daemon, SocketAddr, SocketAddr, PathBuf) {
    let (cert, key) = self_signed_cert(dir.path()).unwrap();
    let (tcp, http, https) = (local(free_port()), local(free_port()), local(free_port()));
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let d = start_daemon(
        "nsqd",
        &[
            format!("--tcp-address={tcp}"),
            format!("--http-address={http}"),
            format!("--https-address={https}"),
            format!("--data-path={}", data.display()),
            format!("--tls-cert={}", cert.display()),
            format!("--tls-key={}", key.display()),
            flag.to_string(),
        ],
        &dir.path().join("nsqd.log"),
    )
    .unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || http_get(http, "/ping")
            .map(|(s, _)| s == 403)
            .unwrap_or(false)),
        "plain HTTP was not refused with {flag}"
    );
    (d, http, https, cert)
}

#[test]
fn tls_required_refuses_plain_http_and_https_serves_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let (_d, http, https, cert) = start_tls_nsqd_refusing_plain_http(&dir, "--tls-required=true");
    let (status, head, body) = http_full("POST", http, "/pub?topic=sec", b"secret");
    assert_eq!(status, 403);
    assert!(has_nsq_header(&head));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["message"], "TLS_REQUIRED");
    assert_eq!(v["https_port"], https.port());
    let (status, _) = http_post(http, "/topic/create?topic=admin_t", b"").unwrap();
    assert_eq!(status, 403, "admin calls are refused too");

    let c = https_client(&cert);
    let base = format!("https://localhost:{}", https.port());
    let r = c
        .post(format!("{base}/pub?topic=sec"))
        .body("over-tls")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.text().unwrap(), "OK");
    let stats: serde_json::Value = c
        .get(format!("{base}/stats?format=json"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let topics = stats["topics"].as_array().unwrap();
    assert_eq!(
        topics.len(),
        1,
        "the refused plain-HTTP calls created nothing"
    );
    assert_eq!(topics[0]["topic_name"], "sec");
    assert_eq!(topics[0]["message_count"], 1);
}

/// As in NSQ, `--tls-client-auth-policy` without `--tls-required` requires TLS everywhere:
/// plain HTTP answers 403 TLS_REQUIRED.
#[test]
fn a_client_auth_policy_alone_refuses_plain_http() {
    let dir = tempfile::tempdir().unwrap();
    let (_d, http, _https, _cert) =
        start_tls_nsqd_refusing_plain_http(&dir, "--tls-client-auth-policy=require");
    let (status, _, body) = http_full("POST", http, "/pub?topic=sec", b"secret");
    assert_eq!(status, 403);
    assert!(String::from_utf8_lossy(&body).contains("TLS_REQUIRED"));
}

#[test]
fn tls_client_auth_policy_applies_to_https() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed_cert(dir.path()).unwrap();
    let nsqd = Nsqd::start(&[
        &format!("--tls-cert={}", cert.display()),
        &format!("--tls-key={}", key.display()),
        "--tls-client-auth-policy=require-verify",
        &format!("--tls-root-ca-file={}", cert.display()),
        // A client auth policy alone requires TLS on plain HTTP too (as in NSQ; checked
        // below); TCP-only keeps plain HTTP for the harness's readiness check.
        "--tls-required=tcp-https",
    ])
    .unwrap();
    let r = https_client(&cert)
        .get(format!("https://localhost:{}/ping", nsqd.https.port()))
        .send();
    assert!(r.is_err(), "HTTPS without a client certificate was served");
    // NSQ's `require`: any client certificate will do (no CA needed), none is refused.
    let any = Nsqd::start(&[
        &format!("--tls-cert={}", cert.display()),
        &format!("--tls-key={}", key.display()),
        "--tls-client-auth-policy=require",
        "--tls-required=tcp-https",
    ])
    .unwrap();
    let url = format!("https://localhost:{}/ping", any.https.port());
    assert!(https_client(&cert).get(&url).send().is_err());
    let mut pem = std::fs::read(&cert).unwrap();
    pem.extend(std::fs::read(&key).unwrap());
    let with_cert = reqwest::blocking::Client::builder()
        .danger_accept_invalid_certs(true)
        .identity(reqwest::Identity::from_pem(&pem).unwrap())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    assert_eq!(with_cert.get(&url).send().unwrap().text().unwrap(), "OK");
    // Without the policy the same request is served.
    let open = Nsqd::start(&[
        &format!("--tls-cert={}", cert.display()),
        &format!("--tls-key={}", key.display()),
    ])
    .unwrap();
    let r = https_client(&cert)
        .get(format!("https://localhost:{}/ping", open.https.port()))
        .send()
        .unwrap();
    assert_eq!(r.text().unwrap(), "OK");
}

/// Publish one message over HTTP, SUB over TCP and return (connection, message id).
fn first_message_id(n: &Nsqd, topic: &str) -> (RawConn, String) {
    assert_eq!(
        http_post(n.http, &format!("/pub?topic={topic}"), b"m")
            .unwrap()
            .0,
        200
    );
    let mut c = RawConn::connect(n.tcp).unwrap();
    c.cmd(&format!("SUB {topic} ch"), None).unwrap();
    c.expect_response("OK").unwrap();
    c.cmd("RDY 1", None).unwrap();
    let m = c.read_message().unwrap();
    (c, m.id)
}

#[test]
fn node_ids_keep_message_ids_apart() {
    let a = Nsqd::start(&["--node-id=1"]).unwrap();
    let b = Nsqd::start(&["-node-id=2"]).unwrap();
    let (mut ca, ida) = first_message_id(&a, "ids");
    let (_cb, idb) = first_message_id(&b, "ids");
    assert_ne!(ida, idb);
    for id in [&ida, &idb] {
        assert_eq!(id.len(), 16);
        assert!(id
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    }
    let node = |id: &str| u64::from_str_radix(id, 16).unwrap() >> 54;
    assert_eq!((node(&ida), node(&idb)), (1, 2));
    // Within one nsqd, the first messages of two topics get different ids too.
    let (_c2, ida2) = first_message_id(&a, "ids2");
    assert_ne!(ida, ida2);
    assert_eq!(node(&ida2), 1);
    // FIN with the id as the client saw it finishes the message.
    ca.cmd(&format!("FIN {ida}"), None).unwrap();
    assert!(wait_until(Duration::from_secs(10), || {
        a.stats()
            .map(|s| {
                let ch = &s["topics"][0]["channels"][0];
                ch["in_flight_count"] == 0 && ch["clients"][0]["finish_count"] == 1
            })
            .unwrap_or(false)
    }));
}

#[test]
fn statsd_receives_nsq_metric_names() {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let addr = sock.local_addr().unwrap();
    let nsqd = Nsqd::start(&[
        &format!("--statsd-address={addr}"),
        "--statsd-interval=300ms",
        "--statsd-udp-packet-size=200",
        "--statsd-exclude-ephemeral",
        "--broadcast-address=127.0.0.1",
    ])
    .unwrap();
    http_post(nsqd.http, "/topic/create?topic=sd", b"").unwrap();
    http_post(nsqd.http, "/channel/create?topic=sd&channel=c", b"").unwrap();
    http_post(
        nsqd.http,
        "/channel/create?topic=sd&channel=e%23ephemeral",
        b"",
    )
    .unwrap();
    assert_eq!(
        http_post(nsqd.http, "/mpub?topic=sd", b"a\nb\nc")
            .unwrap()
            .0,
        200
    );
    let prefix = format!("nsq.127_0_0_1_{}.", nsqd.http.port());
    let mut lines: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut buf = [0u8; 2048];
    // Until two pushes after the publish have arrived (the second has zero increments).
    while Instant::now() < deadline
        && lines
            .iter()
            .filter(|l| l.starts_with(&format!("{prefix}topic.sd.depth:")))
            .count()
            < 2
    {
        if let Ok(n) = sock.recv(&mut buf) {
            assert!(n <= 200, "packet of {n} bytes > --statsd-udp-packet-size");
            lines.extend(String::from_utf8_lossy(&buf[..n]).lines().map(String::from));
        }
    }
    let has = |l: &str| lines.iter().any(|x| x == &format!("{prefix}{l}"));
    let has_kind = |name: &str, kind: &str| {
        lines
            .iter()
            .any(|x| x.starts_with(&format!("{prefix}{name}:")) && x.ends_with(&format!("|{kind}")))
    };
    assert!(has("topic.sd.message_count:3|c"), "{lines:#?}");
    assert!(
        has("topic.sd.message_count:0|c"),
        "counters send increments"
    );
    assert!(has("topic.sd.channel.c.message_count:3|c"), "{lines:#?}");
    assert!(has("topic.sd.channel.c.depth:3|g"), "{lines:#?}");
    for (name, kind) in [
        ("topic.sd.message_bytes", "c"),
        ("topic.sd.depth", "g"),
        ("topic.sd.backend_depth", "g"),
        ("topic.sd.channel.c.backend_depth", "g"),
        ("topic.sd.channel.c.in_flight_count", "g"),
        ("topic.sd.channel.c.deferred_count", "g"),
        ("topic.sd.channel.c.requeue_count", "c"),
        ("topic.sd.channel.c.timeout_count", "c"),
        ("topic.sd.channel.c.clients", "g"),
        ("mem.heap_objects", "g"),
        ("mem.heap_in_use_bytes", "g"),
        ("mem.gc_runs", "c"),
    ] {
        assert!(has_kind(name, kind), "no {name}|{kind} in {lines:#?}");
    }
    assert!(
        !lines.iter().any(|l| l.contains("ephemeral")),
        "--statsd-exclude-ephemeral: {lines:#?}"
    );
}

#[test]
fn nsqd_http_details_match_nsq() {
    let nsqd = Nsqd::start(&[]).unwrap();
    // X-NSQ-Content-Type on every API answer (text ones too), not on /ping.
    let (_, head, _) = http_full("GET", nsqd.http, "/ping", b"");
    assert!(!has_nsq_header(&head));
    let (s, head, body) = http_full("POST", nsqd.http, "/pub?topic=h", b"x");
    assert_eq!((s, body.as_slice()), (200, &b"OK"[..]));
    assert!(has_nsq_header(&head), "{head}");
    let (_, head, _) = http_full("GET", nsqd.http, "/stats", b"");
    assert!(has_nsq_header(&head));

    // /mpub: binary=false is the text format; an empty body is OK.
    let (s, _) = http_post(nsqd.http, "/mpub?topic=h&binary=false", b"z1\nz2").unwrap();
    assert_eq!(s, 200);
    let (s, body) = http_post(nsqd.http, "/mpub?topic=h", b"").unwrap();
    assert_eq!((s, body.as_slice()), (200, &b"OK"[..]));
    let st = nsqd.stats().unwrap();
    assert_eq!(st["topics"][0]["message_count"], 3);
    assert!(st["memory"].is_object());
    let st = http_json(nsqd.http, "/stats?format=json&include_mem=false").unwrap();
    assert!(st.get("memory").is_none(), "include_mem=false");

    // /info carries NSQ's client-limit fields.
    let info = http_json(nsqd.http, "/info").unwrap();
    assert_eq!(info["max_heartbeat_interval"], 60_000_000_000u64);
    assert_eq!(info["max_output_buffer_size"], 65536);
    assert_eq!(info["max_output_buffer_timeout"], 30_000_000_000u64);
    assert_eq!(info["max_deflate_level"], 6);

    // /config value types as NSQ reports them.
    assert_eq!(http_json(nsqd.http, "/config/log_level").unwrap(), 2);
    assert_eq!(http_json(nsqd.http, "/config/tls_required").unwrap(), 0);
    assert_eq!(
        http_json(nsqd.http, "/config/tls_min_version").unwrap(),
        769
    );

    // A subscribed client is state 3; the text stats show how long it has been connected.
    let mut c = RawConn::connect(nsqd.tcp).unwrap();
    c.cmd("SUB h ch", None).unwrap();
    c.expect_response("OK").unwrap();
    let st = nsqd.stats().unwrap();
    let client = &st["topics"][0]["channels"][0]["clients"][0];
    assert_eq!(client["state"], 3);
    // NSQ omits these when empty (omitempty), so the key sets match.
    for k in ["authed", "auth_identity", "auth_identity_url", "pub_counts"] {
        assert!(client.get(k).is_none(), "{k} in {client}");
    }
    let (_, body) = http_get(nsqd.http, "/stats").unwrap();
    let text = String::from_utf8_lossy(&body).to_string();
    let connected = text
        .split("connected: ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_default()
        .to_string();
    assert!(
        connected.ends_with('s') && connected.len() <= 4,
        "connected: {connected:?} in\n{text}"
    );
    assert!(text.contains("\nMemory:\n"), "{text}");
    let start = text
        .lines()
        .find(|l| l.starts_with("start_time "))
        .unwrap_or_default();
    assert!(start.ends_with('Z') && start.contains('T'), "{start}");
    // Uptime as Go prints a duration, with its fraction of a second.
    let uptime = text
        .lines()
        .find(|l| l.starts_with("uptime "))
        .unwrap_or_default();
    assert!(uptime.ends_with('s') && uptime.contains('.'), "{uptime}");
}

#[test]
fn channel_message_count_and_paused_topic_depth_match_nsq() {
    let nsqd = Nsqd::start(&[]).unwrap();
    let post = |p: &str, b: &[u8]| assert_eq!(http_post(nsqd.http, p, b).unwrap().0, 200, "{p}");
    post("/topic/create?topic=pz", b"");
    post("/channel/create?topic=pz&channel=c", b"");
    post("/mpub?topic=pz", b"1\n2");
    let topic = |s: &serde_json::Value| s["topics"][0].clone();
    // message_count counts what entered the channel, consumer or not (NSQ: 2, not 0).
    let s = nsqd.stats().unwrap();
    assert_eq!(topic(&s)["channels"][0]["message_count"], 2);
    assert_eq!(topic(&s)["channels"][0]["depth"], 2);
    // While the topic is paused, new messages stay in the topic's depth.
    post("/topic/pause?topic=pz", b"");
    post("/pub?topic=pz", b"3");
    let s = nsqd.stats().unwrap();
    assert_eq!(topic(&s)["depth"], 1);
    assert_eq!(topic(&s)["channels"][0]["depth"], 2);
    assert_eq!(topic(&s)["channels"][0]["message_count"], 2);
    post("/topic/unpause?topic=pz", b"");
    let s = nsqd.stats().unwrap();
    assert_eq!(topic(&s)["depth"], 0);
    assert_eq!(topic(&s)["channels"][0]["depth"], 3);
    assert_eq!(topic(&s)["channels"][0]["message_count"], 3);
}

#[test]
fn nsqlookupd_http_details_match_nsq() {
    let l = start_lookupd();
    let (_, head, _) = http_full("GET", l.http, "/ping", b"");
    assert!(!has_nsq_header(&head));
    for path in ["/info", "/topics", "/nodes"] {
        let (s, head, _) = http_full("GET", l.http, path, b"");
        assert_eq!(s, 200);
        assert!(has_nsq_header(&head), "{path}: {head}");
    }
    // Unknown topic or producer: NSQ answers 200.
    assert_eq!(
        http_post(l.http, "/topic/delete?topic=never", b"")
            .unwrap()
            .0,
        200
    );
    assert_eq!(
        http_post(l.http, "/topic/tombstone?topic=never&node=nope:1", b"")
            .unwrap()
            .0,
        200
    );
    // A topic an nsqd deletes keeps its key, with no producers (as in NSQ).
    let n = Nsqd::start(&[
        &format!("--lookupd-tcp-address={}", l.tcp),
        "--broadcast-address=127.0.0.1",
    ])
    .unwrap();
    http_post(n.http, "/topic/create?topic=gone", b"").unwrap();
    assert!(wait_until(Duration::from_secs(10), || {
        http_json(l.http, "/lookup?topic=gone")
            .map(|v| v["producers"].as_array().is_some_and(|a| a.len() == 1))
            .unwrap_or(false)
    }));
    http_post(n.http, "/topic/delete?topic=gone", b"").unwrap();
    assert!(wait_until(Duration::from_secs(10), || {
        http_json(l.http, "/lookup?topic=gone")
            .map(|v| v["producers"].as_array().is_some_and(|a| a.is_empty()))
            .unwrap_or(false)
    }));
}

#[test]
fn redirected_logs_are_plain_text() {
    let nsqd = Nsqd::start(&[]).unwrap();
    http_post(nsqd.http, "/pub?topic=logs", b"one").unwrap();
    let l = start_lookupd();
    // A tool, its stderr going to a pipe (not a terminal), at info level.
    let child = Command::new(bin("nsq_tail"))
        .args([
            "-topic=logs",
            &format!("-nsqd-tcp-address={}", nsqd.tcp),
            "-n=1",
            "--log-level=info",
            "--consumer-opt=max_attempts,5",
            "--consumer-opt=snappy,true",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_output(child, Duration::from_secs(30)).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "one");
    let tool_log = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!tool_log.contains('\u{1b}'), "{tool_log:?}");
    for (name, log) in [
        ("nsqd", nsqd.daemon.log_text()),
        ("nsqlookupd", l.daemon.log_text()),
    ] {
        assert!(!log.is_empty(), "{name} logged nothing");
        assert!(!log.contains('\u{1b}'), "{name}: {log:?}");
        let prefix = format!("[{name}] ");
        assert!(
            log.lines()
                .all(|line| line.starts_with(&prefix) && line.contains(": ")),
            "{name}: {log}"
        );
        assert!(log.contains(" INFO: "), "{name}: {log}");
        assert!(log.contains("HTTP: listening on"), "{name}: {log}");
        // One line per HTTP request, as NSQ logs them: `200 GET /ping (127.0.0.1:port) ...`.
        assert!(
            log.contains("INFO: 200 GET /ping (127.0.0.1:"),
            "{name}: {log}"
        );
    }
    // nsqd logs the tool's connection coming and going, as NSQ does.
    let log = nsqd.daemon.log_text();
    assert!(
        log.contains("TCP: new client(") && log.contains(") closed"),
        "{log}"
    );
}

#[test]
fn tools_take_nsq_producer_opt_syntax() {
    let nsqd = Nsqd::start(&[]).unwrap();
    let mut child = Command::new(bin("to_nsq"))
        .args([
            "-topic=popt",
            &format!("-nsqd-tcp-address={}", nsqd.tcp),
            "--producer-opt=snappy,true",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(b"a\nb\n").unwrap();
    }
    let out = wait_output(child, Duration::from_secs(30)).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(nsqd.stats().unwrap()["topics"][0]["message_count"], 2);
}

#[test]
fn tools_accept_every_nsq_13_flag() {
    let nsqd = Nsqd::start(&[]).unwrap();
    assert_eq!(
        http_post(nsqd.http, "/pub?topic=tf", b"line-1").unwrap().0,
        200
    );
    let dir = tempfile::tempdir().unwrap();
    let (out, work) = (dir.path().join("out"), dir.path().join("work"));
    // nsq_to_file with every flag of NSQ 1.3's nsq_to_file, NSQ's spelling.
    let args: Vec<String> = vec![
        "-channel=nsq_to_file".into(),
        "-consumer-opt=max_attempts,5".into(),
        "-datetime-format=%Y-%m-%d_%H".into(),
        "-filename-format=<TOPIC>.<HOST><REV>.<DATETIME>.log".into(),
        "-gzip".into(),
        "-gzip-level=6".into(),
        "-host-identifier=hostx".into(),
        "-http-client-connect-timeout=2s".into(),
        "-http-client-request-timeout=5s".into(),
        "-log-level=info".into(),
        "-log-prefix=[nsq_to_file] ".into(),
        format!("-nsqd-tcp-address={}", nsqd.tcp),
        "-max-in-flight=200".into(),
        format!("-output-dir={}", out.display()),
        "-rotate-interval=0".into(),
        "-rotate-size=0".into(),
        "-skip-empty-files".into(),
        "-sync-interval=30s".into(),
        "-topic=tf".into(),
        "-topic-refresh=1m0s".into(),
        format!("-work-dir={}", work.display()),
    ];
    let mut d = start_daemon("nsq_to_file", &args, &dir.path().join("ntf.log")).unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || nsqd
            .stats()
            .map(|s| s["topics"][0]["channels"][0]["depth"] == 0
                && s["topics"][0]["channels"][0]["in_flight_count"] == 0
                && s["topics"][0]["channels"][0]["message_count"] == 1)
            .unwrap_or(false)),
        "{}",
        d.log_text()
    );
    assert_eq!(d.terminate(Duration::from_secs(20)).unwrap(), Some(0));
    let files: Vec<PathBuf> = std::fs::read_dir(&out)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].file_name().unwrap().to_string_lossy().to_string();
    assert!(
        name.starts_with("tf.hostx") && name.ends_with(".log.gz"),
        "{name}"
    );
    let mut text = String::new();
    flate2::read::MultiGzDecoder::new(std::fs::File::open(&files[0]).unwrap())
        .read_to_string(&mut text)
        .unwrap();
    assert_eq!(text, "line-1\n");

    // nsq_inspect takes Go's single-dash flags too.
    let inspect = Command::new(bin("nsq_inspect"))
        .arg(format!("-data-path={}", nsqd.data.display()))
        .arg("topics")
        .output()
        .unwrap();
    assert!(
        inspect.status.success(),
        "{}",
        String::from_utf8_lossy(&inspect.stderr)
    );
    assert!(String::from_utf8_lossy(&inspect.stdout).contains("tf"));

    // nsq_stat with every flag of NSQ 1.3's nsq_stat.
    let stat = Command::new(bin("nsq_stat"))
        .args([
            "-channel=nsq_to_file",
            "-count=1",
            "-http-client-connect-timeout=2s",
            "-http-client-request-timeout=5s",
            "-interval=100ms",
            &format!("-nsqd-http-address={}", nsqd.http),
            "-topic=tf",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let o = wait_output(stat, Duration::from_secs(20)).unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("ingress"));
}

#[test]
fn nsq_to_file_survives_sighup_and_reopens() {
    let nsqd = Nsqd::start(&[]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut d = start_daemon(
        "nsq_to_file",
        &[
            "--topic=hup".into(),
            format!("--nsqd-tcp-address={}", nsqd.tcp),
            format!("--output-dir={}", out.display()),
            "--filename-format=<TOPIC>.<REV>.log".into(),
        ],
        &dir.path().join("ntf.log"),
    )
    .unwrap();
    let finished = |n: u64| {
        nsqd.stats()
            .map(|s| {
                let c = &s["topics"][0]["channels"][0];
                c["message_count"] == n && c["depth"] == 0 && c["in_flight_count"] == 0
            })
            .unwrap_or(false)
    };
    let done_files = || -> Vec<PathBuf> {
        std::fs::read_dir(&out)
            .map(|rd| {
                rd.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "log"))
                    .collect()
            })
            .unwrap_or_default()
    };
    http_post(nsqd.http, "/pub?topic=hup", b"m1").unwrap();
    assert!(wait_until(Duration::from_secs(20), || finished(1)));
    nsq_blackbox_tests::signal(d.pid(), libc::SIGHUP);
    // The file with m1 is completed under its final name; the tool keeps running.
    assert!(
        wait_until(Duration::from_secs(10), || done_files().len() == 1),
        "{}",
        d.log_text()
    );
    assert!(
        d.child.try_wait().unwrap().is_none(),
        "SIGHUP ended nsq_to_file"
    );
    http_post(nsqd.http, "/pub?topic=hup", b"m2").unwrap();
    assert!(wait_until(Duration::from_secs(20), || finished(2)));
    assert_eq!(d.terminate(Duration::from_secs(20)).unwrap(), Some(0));
    let mut lines: Vec<String> = done_files()
        .iter()
        .flat_map(|p| {
            std::fs::read_to_string(p)
                .unwrap_or_default()
                .lines()
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .collect();
    lines.sort();
    assert_eq!(lines, vec!["m1", "m2"], "{:?}", done_files());
}

#[test]
fn nsq_to_file_names_and_appends_as_nsq() {
    let nsqd = Nsqd::start(&[]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (plain, gz) = (dir.path().join("plain"), dir.path().join("gz"));
    let names = |d: &std::path::Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| !n.ends_with(".part"))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    let drained = |n: u64, ch: &str| {
        nsqd.stats()
            .map(|s| {
                s["topics"][0]["channels"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| {
                        c["channel_name"] == ch
                            && c["message_count"] == n
                            && c["depth"] == 0
                            && c["in_flight_count"] == 0
                    })
            })
            .unwrap_or(false)
    };
    http_post(nsqd.http, "/topic/create?topic=ap", b"").unwrap();
    for ch in ["p", "g"] {
        http_post(
            nsqd.http,
            &format!("/channel/create?topic=ap&channel={ch}"),
            b"",
        )
        .unwrap();
    }
    // Two runs in the same period: without gzip/rotation the second appends to the same
    // file; with --gzip files are numbered -000000, -000001 (they sort in order).
    for run in 1..=2u64 {
        http_post(nsqd.http, "/pub?topic=ap", format!("r{run}").as_bytes()).unwrap();
        for (out, ch, extra) in [(&plain, "p", None), (&gz, "g", Some("--gzip"))] {
            let mut args = vec![
                "--topic=ap".to_string(),
                format!("--channel={ch}"),
                format!("--nsqd-tcp-address={}", nsqd.tcp),
                format!("--output-dir={}", out.display()),
                "--filename-format=<TOPIC><REV>.log".into(),
            ];
            args.extend(extra.map(String::from));
            let mut d = start_daemon(
                "nsq_to_file",
                &args,
                &dir.path().join(format!("{ch}{run}.log")),
            )
            .unwrap();
            assert!(
                wait_until(Duration::from_secs(20), || drained(run, ch)),
                "{}",
                d.log_text()
            );
            assert_eq!(d.terminate(Duration::from_secs(20)).unwrap(), Some(0));
        }
    }
    assert_eq!(names(&plain), vec!["ap.log"]);
    assert_eq!(
        std::fs::read_to_string(plain.join("ap.log")).unwrap(),
        "r1\nr2\n"
    );
    assert_eq!(names(&gz), vec!["ap-000000.log.gz", "ap-000001.log.gz"]);
}

#[test]
fn nsq_to_file_slash_in_filename_format_makes_directories() {
    let nsqd = Nsqd::start(&[]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    // A file a killed run left in a subdirectory is completed on start, then appended to.
    std::fs::create_dir_all(out.join("dirt")).unwrap();
    std::fs::write(out.join("dirt/hx.log.part"), "old\ntorn").unwrap();
    http_post(nsqd.http, "/pub?topic=dirt", b"new").unwrap();
    let mut d = start_daemon(
        "nsq_to_file",
        &[
            "--topic=dirt".into(),
            format!("--nsqd-tcp-address={}", nsqd.tcp),
            format!("--output-dir={}", out.display()),
            "--filename-format=<TOPIC>/<HOST>.log".into(),
            "--host-identifier=hx".into(),
        ],
        &dir.path().join("ntf.log"),
    )
    .unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || nsqd
            .stats()
            .map(|s| s["topics"][0]["channels"][0]["in_flight_count"] == 0
                && s["topics"][0]["channels"][0]["depth"] == 0)
            .unwrap_or(false)),
        "{}",
        d.log_text()
    );
    assert_eq!(d.terminate(Duration::from_secs(20)).unwrap(), Some(0));
    assert_eq!(
        std::fs::read_to_string(out.join("dirt/hx.log")).unwrap(),
        "old\nnew\n"
    );
    assert!(!out.join("dirt/hx.log.part").exists());
    // A path that would leave the output directory is refused.
    let bad = Command::new(bin("nsq_to_file"))
        .args([
            "--topic=dirt",
            &format!("--nsqd-tcp-address={}", nsqd.tcp),
            &format!("--output-dir={}", out.display()),
            "--filename-format=../<TOPIC>.log",
        ])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
}
