//! AUTH against --auth-http-address, as NSQ does it: nsqd asks an HTTP auth server
//! (`GET /auth?remote_ip=&tls=&secret=`) and enforces the authorizations it returns. The
//! auth server here is a small one run by the test.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use nsq_blackbox_tests::{Nsqd, RawConn, FRAME_RESPONSE};

/// Answers `secret=good` with publish+subscribe on topics matching `^allowed`, `secret=pub`
/// with publish only, anything else with 403.
fn auth_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut conn) = conn else { return };
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let mut r = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            if r.read_line(&mut line).is_err() {
                continue;
            }
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
            }
            let target = line.split_whitespace().nth(1).unwrap_or("").to_string();
            let perms = if target.contains("secret=good") {
                Some(r#"["subscribe","publish"]"#)
            } else if target.contains("secret=pub&") || target.ends_with("secret=pub") {
                Some(r#"["publish"]"#)
            } else {
                None
            };
            let resp = match perms {
                Some(p) if target.starts_with("/auth?") => {
                    let body = format!(
                        r#"{{"ttl":3600,"identity":"tester","identity_url":"http://id/tester","authorizations":[{{"topic":"^allowed","channels":[".*"],"permissions":{p}}}]}}"#
                    );
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                }
                _ => "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_string(),
            };
            let _ = conn.write_all(resp.as_bytes());
        }
    });
    addr
}

fn identified(nsqd: &Nsqd) -> (RawConn, serde_json::Value) {
    let mut c = RawConn::connect(nsqd.tcp).unwrap();
    c.cmd("IDENTIFY", Some(br#"{"feature_negotiation":true}"#))
        .unwrap();
    let (ty, data) = c.read_non_heartbeat().unwrap();
    assert_eq!(ty, FRAME_RESPONSE);
    (c, serde_json::from_slice(&data).unwrap())
}

fn authed(nsqd: &Nsqd, secret: &str) -> RawConn {
    let (mut c, _) = identified(nsqd);
    c.cmd("AUTH", Some(secret.as_bytes())).unwrap();
    let (ty, data) = c.read_non_heartbeat().unwrap();
    assert_eq!(ty, FRAME_RESPONSE, "{}", String::from_utf8_lossy(&data));
    let v: serde_json::Value = serde_json::from_slice(&data).unwrap();
    assert_eq!(v["identity"], "tester");
    assert_eq!(v["identity_url"], "http://id/tester");
    assert_eq!(v["permission_count"], 1);
    c
}

#[test]
fn auth_is_required_checked_and_enforced() {
    let auth = auth_server();
    let nsqd = Nsqd::start(&[&format!("--auth-http-address={auth}")]).unwrap();

    // IDENTIFY says AUTH is required; commands before AUTH are refused and close.
    let (mut c, v) = identified(&nsqd);
    assert_eq!(v["auth_required"], true);
    c.cmd("PUB allowed_t", Some(b"x")).unwrap();
    c.expect_error("E_AUTH_FIRST AUTH required before PUB")
        .unwrap();
    assert!(c.is_closed(Duration::from_secs(5)));

    // A secret the auth server refuses.
    let (mut c, _) = identified(&nsqd);
    c.cmd("AUTH", Some(b"wrong")).unwrap();
    c.expect_error("E_AUTH_FAILED AUTH failed").unwrap();
    assert!(c.is_closed(Duration::from_secs(5)));

    // Allowed topic: PUB and SUB work; AUTH cannot be repeated.
    let mut c = authed(&nsqd, "good");
    c.cmd("PUB allowed_t", Some(b"hello")).unwrap();
    c.expect_response("OK").unwrap();
    c.cmd("AUTH", Some(b"good")).unwrap();
    c.expect_error("E_INVALID").unwrap();
    let mut s = authed(&nsqd, "good");
    s.cmd("SUB allowed_t ch", None).unwrap();
    s.expect_response("OK").unwrap();
    s.cmd("RDY 1", None).unwrap();
    assert_eq!(s.read_message().unwrap().body, b"hello");

    // A topic outside the authorizations, and a permission not granted.
    let mut c = authed(&nsqd, "good");
    c.cmd("PUB other", Some(b"x")).unwrap();
    let e = c.expect_error("E_UNAUTHORIZED").unwrap();
    assert!(e.contains("PUB") && e.contains("other"), "{e}");
    assert!(c.is_closed(Duration::from_secs(5)));
    let mut c = authed(&nsqd, "pub");
    c.cmd("SUB allowed_t ch", None).unwrap();
    c.expect_error("E_UNAUTHORIZED").unwrap();

    // The client library sends AUTH with its configured secret.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let config = client::Config {
            auth_secret: Some("good".into()),
            ..client::Config::default()
        };
        let p = client::Producer::new(nsqd.tcp_arg(), config);
        p.publish("allowed_t", "from the client").await.unwrap();
        let e = client::Producer::new(nsqd.tcp_arg(), client::Config::default())
            .publish("allowed_t", "x")
            .await
            .unwrap_err();
        assert!(e.to_string().contains("AUTH"), "{e}");
    });

    // The HTTP API is not behind AUTH in NSQ either; the server keeps serving.
    let (st, _) = nsq_blackbox_tests::http_get(nsqd.http, "/ping").unwrap();
    assert_eq!(st, 200);
}

#[test]
fn auth_without_an_auth_server_is_disabled() {
    let nsqd = Nsqd::start(&[]).unwrap();
    let (mut c, v) = identified(&nsqd);
    assert_eq!(v["auth_required"], false);
    c.cmd("AUTH", Some(b"anything")).unwrap();
    c.expect_error("E_AUTH_DISABLED AUTH disabled").unwrap();
}
