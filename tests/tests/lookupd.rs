//! nsqlookupd against its protocol V1 and HTTP API, and with real nsqd instances
//! registering through --lookupd-tcp-address.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use nsq_blackbox_tests::{
    http_get, http_json, http_post, start_lookupd, start_lookupd_on, wait_until, Lookupd, Nsqd,
};

struct V1(TcpStream);

impl V1 {
    fn connect(addr: SocketAddr) -> V1 {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"  V1").unwrap();
        V1(s)
    }
    fn send(&mut self, bytes: &[u8]) -> String {
        self.0.write_all(bytes).unwrap();
        let mut len = [0u8; 4];
        self.0.read_exact(&mut len).unwrap();
        let mut data = vec![0u8; u32::from_be_bytes(len) as usize];
        self.0.read_exact(&mut data).unwrap();
        String::from_utf8_lossy(&data).to_string()
    }
    /// True if the server closed the connection (EOF within the read timeout).
    fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.0.read(&mut b), Ok(0))
    }
    fn identify(&mut self, tcp_port: u16, http_port: u16) -> serde_json::Value {
        let body = serde_json::json!({"broadcast_address":"127.0.0.1","tcp_port":tcp_port,"http_port":http_port,"version":"1.3.0","hostname":"h"}).to_string();
        let mut msg = b"IDENTIFY\n".to_vec();
        msg.extend_from_slice(&(body.len() as u32).to_be_bytes());
        msg.extend_from_slice(body.as_bytes());
        serde_json::from_str(&self.send(&msg)).unwrap()
    }
}

#[test]
fn v1_protocol_and_errors() {
    let l = start_lookupd();
    // Every error is answered and then closes that connection, as in NSQ; others go on.
    let closing = |identify: bool, cmd: &[u8], want: &str| {
        let mut x = V1::connect(l.tcp);
        if identify {
            x.identify(5150, 5151);
        }
        let got = x.send(cmd);
        assert!(got.starts_with(want), "{cmd:?}: {got}");
        assert!(x.closed(), "{cmd:?} left the connection open");
    };
    closing(false, b"REGISTER t\n", "E_INVALID client must IDENTIFY");
    closing(
        true,
        b"REGISTER\n",
        "E_INVALID REGISTER insufficient number of params",
    );
    closing(true, b"REGISTER bad/topic\n", "E_BAD_TOPIC");
    closing(true, b"UNREGISTER t bad*chan\n", "E_BAD_CHANNEL");
    closing(true, b"IDENTIFY\n", "E_INVALID cannot IDENTIFY again");
    closing(false, b"BOGUS\n", "E_INVALID invalid command BOGUS");
    closing(false, b"IDENTIFY\n\x7f\xff\xff\xff", "E_BAD_BODY");
    closing(
        false,
        b"IDENTIFY\n\x00\x00\x00\x02{}",
        "E_BAD_BODY IDENTIFY missing fields",
    );

    let mut c = V1::connect(l.tcp);
    assert_eq!(c.send(b"PING\n"), "OK");
    let resp = c.identify(4150, 4151);
    assert_eq!(resp["tcp_port"], l.tcp.port());
    assert_eq!(resp["http_port"], l.http.port());
    assert_eq!(c.send(b"REGISTER t c\n"), "OK");
    let v = http_json(l.http, "/lookup?topic=t").unwrap();
    assert_eq!(v["channels"], serde_json::json!(["c"]));
    assert_eq!(v["producers"][0]["tcp_port"], 4150);
    assert_eq!(v["producers"][0]["broadcast_address"], "127.0.0.1");
    assert_eq!(c.send(b"UNREGISTER t c\n"), "OK");
    // As in NSQ 1.3 (checked against its nsqlookupd), the channel's key stays, with no
    // producer; only ephemeral keys go away.
    assert_eq!(
        http_json(l.http, "/channels?topic=t").unwrap()["channels"],
        serde_json::json!(["c"])
    );
    // The errors above closed only their own connections.
    assert_eq!(c.send(b"PING\n"), "OK");
    // Bad magic.
    let mut s = TcpStream::connect(l.tcp).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"XXXX").unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    assert!(String::from_utf8_lossy(&buf).contains("E_BAD_PROTOCOL"));
    // Broken IDENTIFY JSON closes with E_BAD_BODY.
    let mut j = V1::connect(l.tcp);
    assert_eq!(
        j.send(b"IDENTIFY\n\x00\x00\x00\x05{nope"),
        "E_BAD_BODY IDENTIFY failed to decode JSON body"
    );
    // Dropping the producer's connection removes it.
    drop(c);
    assert!(wait_until(Duration::from_secs(5), || {
        http_json(l.http, "/lookup?topic=t")
            .map(|v| {
                v["producers"]
                    .as_array()
                    .map(|a| a.is_empty())
                    .unwrap_or(false)
            })
            .unwrap_or(true)
    }));
}

#[test]
fn http_api() {
    let l = start_lookupd();
    let (st, b) = http_get(l.http, "/ping").unwrap();
    assert_eq!((st, b.as_slice()), (200, &b"OK"[..]));
    assert!(http_json(l.http, "/info").unwrap()["version"].is_string());
    let (st, b) = http_get(l.http, "/lookup?topic=none").unwrap();
    assert_eq!(st, 404);
    assert!(String::from_utf8_lossy(&b).contains("TOPIC_NOT_FOUND"));
    let (st, _) = http_get(l.http, "/lookup").unwrap();
    assert_eq!(st, 400);
    assert_eq!(
        http_post(l.http, "/topic/create?topic=a", b"").unwrap().0,
        200
    );
    assert_eq!(
        http_post(l.http, "/channel/create?topic=a&channel=c", b"")
            .unwrap()
            .0,
        200
    );
    assert_eq!(
        http_json(l.http, "/topics").unwrap()["topics"],
        serde_json::json!(["a"])
    );
    assert_eq!(
        http_json(l.http, "/channels?topic=a").unwrap()["channels"],
        serde_json::json!(["c"])
    );
    assert_eq!(
        http_post(l.http, "/channel/delete?topic=a&channel=c", b"")
            .unwrap()
            .0,
        200
    );
    assert_eq!(
        http_post(l.http, "/channel/delete?topic=a&channel=c", b"")
            .unwrap()
            .0,
        404
    );
    assert_eq!(
        http_post(l.http, "/topic/delete?topic=a", b"").unwrap().0,
        200
    );
    assert_eq!(
        http_post(l.http, "/topic/create?topic=bad/name", b"")
            .unwrap()
            .0,
        400
    );
    assert_eq!(
        http_post(l.http, "/topic/tombstone?topic=a", b"")
            .unwrap()
            .0,
        400
    );
    assert!(http_json(l.http, "/nodes").unwrap()["producers"].is_array());
    assert!(http_json(l.http, "/debug").unwrap()["peers"].is_array());
    assert_eq!(http_get(l.http, "/nope").unwrap().0, 404);
}

#[test]
fn nsqd_registers_tombstones_and_reregisters() {
    let l = start_lookupd();
    let lookupd_arg = format!("--lookupd-tcp-address={}", l.tcp);
    let a = Nsqd::start(&[&lookupd_arg, "--broadcast-address=127.0.0.1"]).unwrap();
    let b = Nsqd::start(&[&lookupd_arg, "--broadcast-address=127.0.0.1"]).unwrap();
    for n in [&a, &b] {
        http_post(n.http, "/topic/create?topic=shared", b"").unwrap();
        http_post(n.http, "/channel/create?topic=shared&channel=ch", b"").unwrap();
    }
    let producers = |l: &Lookupd| -> Vec<u64> {
        http_json(l.http, "/lookup?topic=shared")
            .ok()
            .and_then(|v| {
                v["producers"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|p| p["tcp_port"].as_u64()).collect())
            })
            .unwrap_or_default()
    };
    assert!(
        wait_until(Duration::from_secs(10), || producers(&l).len() == 2),
        "{:?}",
        producers(&l)
    );
    assert_eq!(
        http_json(l.http, "/channels?topic=shared").unwrap()["channels"],
        serde_json::json!(["ch"])
    );

    // Tombstone the topic on node a: only b is offered.
    let node = format!("127.0.0.1:{}", a.http.port());
    assert_eq!(
        http_post(
            l.http,
            &format!("/topic/tombstone?topic=shared&node={node}"),
            b""
        )
        .unwrap()
        .0,
        200
    );
    assert_eq!(producers(&l), vec![b.tcp.port() as u64]);
    let nodes = http_json(l.http, "/nodes").unwrap();
    assert_eq!(nodes["producers"].as_array().unwrap().len(), 2);

    // A reader that discovers through this lookupd connects to b only.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let c = rt.block_on(async {
        let c = client::Consumer::new("shared", "ch", client::Config::default(), |_m| async {})
            .unwrap();
        c.connect_to_lookupd(&l.http.to_string()).await.unwrap();
        c
    });
    assert_eq!(c.stats().connections, 1);
    let clients = |n: &Nsqd| {
        n.stats().unwrap()["topics"][0]["channels"][0]["client_count"]
            .as_u64()
            .unwrap_or(0)
    };
    assert_eq!(
        (clients(&a), clients(&b)),
        (0, 1),
        "reader only on the live node"
    );
    rt.block_on(c.stop());

    // Killing b removes it as soon as its connection drops.
    let mut b = b;
    b.daemon.kill9();
    assert!(wait_until(Duration::from_secs(10), || producers(&l).is_empty()));

    // Restart nsqlookupd on the same ports: a re-registers everything by itself.
    let (tcp, http) = (l.tcp, l.http);
    let mut l = l;
    l.daemon.terminate(Duration::from_secs(10)).unwrap();
    let l2 = start_lookupd_on(tcp, http);
    assert!(
        wait_until(Duration::from_secs(15), || http_json(l2.http, "/topics")
            .map(|v| v["topics"] == serde_json::json!(["shared"]))
            .unwrap_or(false)),
        "nsqd did not re-register"
    );
    // The channel is its own REGISTER, sent after the topic's.
    assert!(
        wait_until(Duration::from_secs(15), || http_json(
            l2.http,
            "/channels?topic=shared"
        )
        .map(|v| v["channels"] == serde_json::json!(["ch"]))
        .unwrap_or(false)),
        "nsqd did not re-register its channel: {:?}",
        http_json(l2.http, "/channels?topic=shared")
    );
}

#[test]
fn pynsq_reader_discovers_producers_through_lookupd() {
    let (l1, l2) = (start_lookupd(), start_lookupd());
    let reg = |l: &Lookupd| format!("--lookupd-tcp-address={}", l.tcp);
    // Two nsqd, each known to a different lookupd: the reader must union both answers.
    let a = Nsqd::start(&[&reg(&l1), "--broadcast-address=127.0.0.1"]).unwrap();
    let b = Nsqd::start(&[&reg(&l2), "--broadcast-address=127.0.0.1"]).unwrap();
    let publish = |n: &Nsqd, range: std::ops::Range<usize>| {
        let body: Vec<String> = range.map(|i| format!("lk-{i}")).collect();
        let (st, _) = http_post(n.http, "/mpub?topic=disc", body.join("\n").as_bytes()).unwrap();
        assert_eq!(st, 200);
    };
    publish(&a, 0..50);
    publish(&b, 50..100);
    let child = Command::new(nsq_blackbox_tests::python())
        .arg(nsq_blackbox_tests::repo_root().join("tests/python/pynsq_check.py"))
        .args([
            "lookup_reader",
            "--tcp",
            "unused:0",
            "--topic",
            "disc",
            "--count",
            "150",
            "--timeout",
            "40",
        ])
        .args([
            "--lookupd",
            &l1.http.to_string(),
            "--lookupd",
            &l2.http.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A third nsqd joins later; the polling reader must find it.
    std::thread::sleep(Duration::from_secs(2));
    let c = Nsqd::start(&[&reg(&l1), "--broadcast-address=127.0.0.1"]).unwrap();
    publish(&c, 100..150);
    let out = nsq_blackbox_tests::wait_output(child, Duration::from_secs(60)).unwrap();
    assert!(
        out.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
