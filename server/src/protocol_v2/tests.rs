//! Protocol V2 served over `tokio::io::duplex` against a real `Nsqd` on a temp dir: the
//! whole command path without binaries, sockets or sleeps. Every read is bounded (10 s) so
//! a broken server fails the test instead of hanging it.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use clap::Parser;
use protocol::v2::{self, Command, Frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::watch;

use crate::nsqd::Nsqd;
use crate::options::Options;

const BOUND: Duration = Duration::from_secs(10);

struct Server {
    _dir: tempfile::TempDir,
    nsqd: Arc<Nsqd>,
}

fn server(extra: &[&str]) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec![
        "nsqd".to_string(),
        format!("--data-path={}", dir.path().display()),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let nsqd = Nsqd::new(Options::parse_from(args)).unwrap();
    Server { _dir: dir, nsqd }
}

/// The client end of one connection.
struct Conn {
    io: DuplexStream,
    buf: BytesMut,
    _shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn connect(&self) -> Conn {
        let mut c = self.connect_raw().await;
        c.io.write_all(v2::MAGIC_V2).await.unwrap();
        c
    }

    async fn connect_raw(&self) -> Conn {
        let (ours, theirs) = tokio::io::duplex(1 << 20);
        let (tx, rx) = watch::channel(false);
        let remote = "127.0.0.1:40000".parse().unwrap();
        let task = tokio::spawn(super::serve(self.nsqd.clone(), theirs, remote, rx));
        Conn {
            io: ours,
            buf: BytesMut::new(),
            _shutdown: tx,
            task,
        }
    }
}

impl Conn {
    async fn send(&mut self, cmd: Command) {
        let mut out = BytesMut::new();
        cmd.encode(&mut out);
        self.io.write_all(&out).await.unwrap();
    }

    /// The next frame, or None when the server closed the connection.
    async fn frame(&mut self) -> Option<Frame> {
        loop {
            if let Some(f) = v2::parse_frame(&mut self.buf, 1 << 24).unwrap() {
                return Some(f);
            }
            let n = tokio::time::timeout(BOUND, self.io.read_buf(&mut self.buf))
                .await
                .expect("no frame within the bound")
                .unwrap();
            if n == 0 {
                return None;
            }
        }
    }

    /// The next frame that is not a heartbeat, as (type, text).
    async fn next(&mut self) -> (u32, String) {
        loop {
            let f = self.frame().await.expect("connection closed");
            if f.data.as_ref() != b"_heartbeat_" {
                return (f.frame_type, String::from_utf8_lossy(&f.data).to_string());
            }
        }
    }

    async fn expect_ok(&mut self, cmd: Command) {
        self.send(cmd).await;
        assert_eq!(self.next().await, (v2::FRAME_TYPE_RESPONSE, "OK".into()));
    }

    async fn expect_error(&mut self, cmd: Command, text: &str) {
        self.send(cmd).await;
        assert_eq!(self.next().await, (v2::FRAME_TYPE_ERROR, text.into()));
    }

    async fn message(&mut self) -> v2::Message {
        let f = self.frame().await.expect("connection closed");
        assert_eq!(f.frame_type, v2::FRAME_TYPE_MESSAGE, "{:?}", f.data);
        v2::decode_message(f.data).unwrap()
    }

    /// After a fatal error the server closes its end.
    async fn expect_closed(mut self) {
        assert!(self.frame().await.is_none());
        tokio::time::timeout(BOUND, self.task)
            .await
            .unwrap()
            .unwrap();
    }
}

fn publish(topic: &str, body: &str) -> Command {
    Command::Pub {
        topic: topic.into(),
        body: Bytes::from(body.to_string()),
    }
}

fn sub(topic: &str, channel: &str) -> Command {
    Command::Sub {
        topic: topic.into(),
        channel: channel.into(),
    }
}

fn identify(json: &str) -> Command {
    Command::Identify(Bytes::from(json.to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_magic_gets_e_bad_protocol_and_a_close() {
    let s = server(&[]);
    let mut c = s.connect_raw().await;
    c.io.write_all(b"  V1").await.unwrap();
    assert_eq!(
        c.next().await,
        (v2::FRAME_TYPE_ERROR, "E_BAD_PROTOCOL".into())
    );
    c.expect_closed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identify_without_negotiation_answers_ok() {
    let s = server(&[]);
    let mut c = s.connect().await;
    c.expect_ok(identify(
        r#"{"client_id":"me","hostname":"h","user_agent":"test/1"}"#,
    ))
    .await;
    let info = s
        .nsqd
        .clients
        .lock()
        .values()
        .next()
        .unwrap()
        .info
        .lock()
        .clone();
    assert_eq!(
        (info.client_id.as_str(), info.user_agent.as_str()),
        ("me", "test/1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identify_with_negotiation_answers_json() {
    let s = server(&["--max-rdy-count=77"]);
    let mut c = s.connect().await;
    c.send(identify(
        r#"{"feature_negotiation":true,"msg_timeout":5000}"#,
    ))
    .await;
    let (t, text) = c.next().await;
    assert_eq!(t, v2::FRAME_TYPE_RESPONSE);
    let r: protocol::identify::IdentifyResponse = serde_json::from_str(&text).unwrap();
    assert_eq!(r.max_rdy_count, 77);
    assert_eq!(r.msg_timeout, 5000);
    assert_eq!(r.version, crate::nsqd::NSQ_COMPAT_VERSION);
    assert!(!r.tls_v1, "no TLS configured");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identify_errors_are_fatal() {
    let s = server(&[]);
    let mut c = s.connect().await;
    c.expect_error(
        identify(r#"{"heartbeat_interval":10}"#),
        "E_BAD_BODY IDENTIFY heartbeat interval (10) is invalid",
    )
    .await;
    c.expect_closed().await;

    let mut c = s.connect().await;
    c.expect_error(
        identify("{not json"),
        "E_BAD_BODY IDENTIFY failed to decode JSON body",
    )
    .await;
    c.expect_closed().await;

    let mut c = s.connect().await;
    c.expect_ok(identify("{}")).await;
    c.expect_error(identify("{}"), "E_INVALID cannot IDENTIFY in current state")
        .await;
    c.expect_closed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pub_sub_rdy_fin() {
    let s = server(&[]);
    let mut producer = s.connect().await;
    producer.expect_ok(publish("t", "one")).await;
    producer
        .expect_ok(Command::Mpub {
            topic: "t".into(),
            bodies: vec![Bytes::from_static(b"two"), Bytes::from_static(b"three")],
        })
        .await;

    let mut consumer = s.connect().await;
    consumer.expect_ok(sub("t", "c")).await;
    consumer.send(Command::Rdy(3)).await;
    let mut got = Vec::new();
    for _ in 0..3 {
        let m = consumer.message().await;
        assert_eq!(m.attempts, 1);
        got.push(String::from_utf8_lossy(&m.body).to_string());
        consumer.send(Command::Fin(m.id)).await;
    }
    assert_eq!(got, ["one", "two", "three"]);
    let channel = s
        .nsqd
        .get_existing_topic("t")
        .unwrap()
        .get_channel("c")
        .unwrap();
    // FIN has no answer; a NOP round trip is not one either, so wait on the state.
    consumer.send(Command::Nop).await;
    producer.expect_ok(publish("t", "four")).await;
    let m = consumer.message().await;
    assert_eq!(m.body.as_ref(), b"four");
    assert_eq!(
        channel.in_flight_count(),
        1,
        "the three FINs are done by now"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn req_redelivers_and_touch_is_accepted() {
    let s = server(&[]);
    let mut c = s.connect().await;
    c.expect_ok(publish("t", "x")).await;
    let mut consumer = s.connect().await;
    consumer.expect_ok(sub("t", "c")).await;
    consumer.send(Command::Rdy(1)).await;
    let m = consumer.message().await;
    consumer.send(Command::Touch(m.id)).await;
    consumer
        .send(Command::Req {
            id: m.id,
            timeout_ms: 0,
        })
        .await;
    let again = consumer.message().await;
    assert_eq!(again.id, m.id);
    assert_eq!(again.attempts, 2);
    assert_eq!(again.body.as_ref(), b"x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fin_of_an_unknown_id_is_not_fatal() {
    let s = server(&[]);
    let mut c = s.connect().await;
    c.expect_ok(sub("t", "c")).await;
    c.expect_error(
        Command::Fin(*b"0000000000000000"),
        "E_FIN_FAILED FIN 0000000000000000 failed ID not in flight",
    )
    .await;
    c.expect_error(
        Command::Touch(*b"0000000000000000"),
        "E_TOUCH_FAILED TOUCH 0000000000000000 failed ID not in flight",
    )
    .await;
    // Still connected and working.
    c.send(Command::Rdy(1)).await;
    c.expect_ok(publish("t", "still here")).await;
    assert_eq!(c.message().await.body.as_ref(), b"still here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_in_the_wrong_state_are_fatal() {
    let s = server(&[]);
    let mut c = s.connect().await;
    c.expect_error(Command::Rdy(1), "E_INVALID cannot RDY in current state")
        .await;
    c.expect_closed().await;

    let mut c = s.connect().await;
    c.expect_error(
        Command::Fin(*b"0000000000000000"),
        "E_INVALID cannot FIN in current state",
    )
    .await;
    c.expect_closed().await;

    let mut c = s.connect().await;
    c.expect_ok(sub("t", "c")).await;
    c.expect_error(sub("t", "c"), "E_INVALID cannot SUB in current state")
        .await;
    c.expect_closed().await;

    let mut c = s.connect().await;
    c.expect_error(Command::Cls, "E_INVALID cannot CLS in current state")
        .await;
    c.expect_closed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rdy_out_of_range_and_cls() {
    let s = server(&["--max-rdy-count=10"]);
    let mut c = s.connect().await;
    c.expect_ok(sub("t", "c")).await;
    c.send(Command::Cls).await;
    assert_eq!(
        c.next().await,
        (v2::FRAME_TYPE_RESPONSE, "CLOSE_WAIT".into())
    );
    let mut c = s.connect().await;
    c.expect_ok(sub("t", "c")).await;
    c.expect_error(Command::Rdy(11), "E_INVALID RDY count 11 out of range 0-10")
        .await;
    c.expect_closed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_topic_and_bad_command() {
    let s = server(&[]);
    let mut c = s.connect().await;
    c.io.write_all(b"PUB bad*topic\n\x00\x00\x00\x01x")
        .await
        .unwrap();
    let (t, text) = c.next().await;
    assert_eq!(t, v2::FRAME_TYPE_ERROR);
    assert!(text.starts_with("E_BAD_TOPIC"), "{text}");
    c.expect_closed().await;

    let mut c = s.connect().await;
    c.io.write_all(b"WHAT\n").await.unwrap();
    let (t, text) = c.next().await;
    assert_eq!(t, v2::FRAME_TYPE_ERROR);
    assert!(text.starts_with("E_INVALID"), "{text}");
    c.expect_closed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dpub_out_of_range_is_fatal() {
    let s = server(&["--max-req-timeout=10s"]);
    let mut c = s.connect().await;
    c.expect_error(
        Command::Dpub {
            topic: "t".into(),
            defer_ms: 10_001,
            body: Bytes::from_static(b"x"),
        },
        "E_INVALID DPUB timeout 10001 out of range 0-10000",
    )
    .await;
    c.expect_closed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_channel_closes_its_consumers() {
    let s = server(&[]);
    let mut c = s.connect().await;
    c.expect_ok(sub("t", "c")).await;
    let topic = s.nsqd.get_existing_topic("t").unwrap();
    s.nsqd.delete_channel(&topic, "c").unwrap();
    c.expect_closed().await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn heartbeats_are_sent_and_a_silent_client_is_dropped() {
    let s = server(&[]);
    let mut c = s.connect().await;
    c.expect_ok(identify(r#"{"heartbeat_interval":1000}"#))
        .await;
    // Paused time: tokio moves the clock forward whenever every task waits.
    let f = c.frame().await.unwrap();
    assert_eq!(f.data.as_ref(), b"_heartbeat_");
    // The client never answers: after two intervals without input the server hangs up
    // (a heartbeat or two may come first).
    for _ in 0..5 {
        match c.frame().await {
            Some(f) => assert_eq!(f.data.as_ref(), b"_heartbeat_"),
            None => return,
        }
    }
    panic!("still connected after 5 heartbeats without an answer");
}
