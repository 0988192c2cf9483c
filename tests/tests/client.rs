//! The Rust client library (client/) against the real nsqd and nsqlookupd binaries, and
//! against pynsq on the other side of a topic: pynsq publishes and our Consumer consumes,
//! our Producer publishes and pynsq's Reader consumes.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use client::{Compression, Config, Consumer, Outcome, Producer, TlsConfig};
use nsq_blackbox_tests::{run_python, self_signed_cert, start_lookupd, Nsqd};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Bodies seen by a consumer, with how often each arrived.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<HashMap<Vec<u8>, usize>>>);

impl Seen {
    fn add(&self, b: &[u8]) {
        *self.0.lock().unwrap().entry(b.to_vec()).or_default() += 1;
    }
    fn distinct(&self) -> usize {
        self.0.lock().unwrap().len()
    }
    fn total(&self) -> usize {
        self.0.lock().unwrap().values().sum()
    }
    fn keys(&self) -> HashSet<Vec<u8>> {
        self.0.lock().unwrap().keys().cloned().collect()
    }
}

async fn wait_for(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f()
}

fn recording_consumer(topic: &str, channel: &str, config: Config, seen: &Seen) -> Consumer {
    let seen = seen.clone();
    Consumer::new(topic, channel, config, move |m| {
        let seen = seen.clone();
        async move { seen.add(&m.body) }
    })
    .expect("consumer")
}

/// Run tests/python/pynsq_check.py in `mode` ("publish" or "consume" p-0 .. p-(n-1)) on
/// `topic` against `nsqd`, and require it to succeed.
fn pynsq(nsqd: &Nsqd, mode: &str, topic: &str, n: usize) {
    let args: Vec<String> = [mode, "--tcp", &nsqd.tcp_arg(), "--count", &n.to_string()]
        .into_iter()
        .chain(["--topic", topic, "--timeout", "40"])
        .map(String::from)
        .collect();
    let out = run_python("pynsq_check.py", &args, Duration::from_secs(60)).unwrap();
    assert!(
        out.status.success(),
        "pynsq {mode}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn client_consumes_what_pynsq_publishes() {
    let nsqd = Nsqd::start(&[]).unwrap();
    let n = 2000;
    pynsq(&nsqd, "publish", "from_py", n);
    rt().block_on(async {
        let seen = Seen::default();
        let config = Config {
            max_in_flight: 100,
            ..Config::default()
        };
        let c = recording_consumer("from_py", "c", config, &seen);
        c.connect_to_nsqd(&nsqd.tcp_arg()).await.unwrap();
        assert!(wait_for(Duration::from_secs(30), || seen.distinct() == n).await);
        c.stop().await;
        let want: HashSet<Vec<u8>> = (0..n).map(|i| format!("p-{i}").into_bytes()).collect();
        assert_eq!(seen.keys(), want);
        assert_eq!(seen.total(), n, "no message delivered twice");
        let st = c.stats();
        assert_eq!(
            (st.received, st.finished, st.requeued),
            (n as u64, n as u64, 0)
        );
    });
    // Everything was FINed: nothing in flight or left in the channel.
    let stats = nsqd.stats().unwrap();
    let ch = &stats["topics"][0]["channels"][0];
    assert_eq!(ch["depth"], 0, "{stats}");
    assert_eq!(ch["in_flight_count"], 0, "{stats}");
}

#[test]
fn pynsq_consumes_what_client_publishes() {
    let nsqd = Nsqd::start(&[]).unwrap();
    let n = 1500usize;
    rt().block_on(async {
        let p = Producer::new(nsqd.tcp_arg(), Config::default());
        // Single PUBs, concurrently (pipelined on the one connection), then MPUBs.
        let p = Arc::new(p);
        let mut tasks = Vec::new();
        for k in 0..4 {
            let p = p.clone();
            tasks.push(tokio::spawn(async move {
                for i in (k..500).step_by(4) {
                    p.publish("from_rs", format!("p-{i}")).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        for chunk in (500..n).collect::<Vec<_>>().chunks(100) {
            let bodies = chunk.iter().map(|i| format!("p-{i}").into()).collect();
            p.multi_publish("from_rs", bodies).await.unwrap();
        }
        // Errors come back as errors, and the producer keeps working afterwards.
        let e = p.publish("bad topic!", "x").await.unwrap_err();
        assert!(e.to_string().contains("topic"), "{e}");
        let e = p.publish("from_rs", vec![0u8; 0]).await.unwrap_err();
        assert_eq!(e.server_code(), Some("E_BAD_MESSAGE"), "{e}");
        p.stop().await;
    });
    pynsq(&nsqd, "consume", "from_rs", n);
}

#[test]
fn client_requeue_backoff_and_give_up() {
    let nsqd = Nsqd::start(&[]).unwrap();
    rt().block_on(async {
        let p = Producer::new(nsqd.tcp_arg(), Config::default());
        let n = 20;
        for i in 0..n {
            p.publish("flaky", format!("m-{i}")).await.unwrap();
        }
        // Even messages fail on their first delivery and then succeed; odd ones always
        // fail and are given up after 3 attempts.
        let attempts: Arc<Mutex<HashMap<String, Vec<u16>>>> = Arc::default();
        let given_up: Arc<Mutex<Vec<String>>> = Arc::default();
        let max_level = Arc::new(Mutex::new(0u32));
        let config = Config {
            max_in_flight: 5,
            max_attempts: 3,
            backoff_multiplier: Duration::from_millis(20),
            max_backoff_duration: Duration::from_millis(200),
            ..Config::default()
        };
        let a2 = attempts.clone();
        let c = Consumer::new("flaky", "c", config, move |m| {
            let a2 = a2.clone();
            async move {
                let body = String::from_utf8_lossy(&m.body).into_owned();
                let i: usize = body[2..].parse().unwrap();
                a2.lock().unwrap().entry(body).or_default().push(m.attempts);
                if i.is_multiple_of(2) && m.attempts > 1 {
                    Outcome::Finish
                } else {
                    Outcome::RequeueAfter(Duration::from_millis(10))
                }
            }
        })
        .unwrap();
        let g2 = given_up.clone();
        c.on_give_up(move |m| {
            g2.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&m.body).into())
        });
        c.connect_to_nsqd(&nsqd.tcp_arg()).await.unwrap();
        let done = wait_for(Duration::from_secs(40), || {
            let l = c.stats().backoff_level;
            let mut m = max_level.lock().unwrap();
            *m = (*m).max(l);
            given_up.lock().unwrap().len() == n / 2 && c.stats().finished == (n / 2) as u64
        })
        .await;
        assert!(
            done,
            "stats {:?}, gave up {:?}",
            c.stats(),
            given_up.lock().unwrap()
        );
        c.stop().await;
        let attempts = attempts.lock().unwrap();
        for i in 0..n {
            let a = &attempts[&format!("m-{i}")];
            if i % 2 == 0 {
                assert_eq!(a, &vec![1, 2], "m-{i}");
            } else {
                assert_eq!(a, &vec![1, 2, 3], "m-{i}: handled 3 times, then given up");
            }
        }
        let mut g = given_up.lock().unwrap().clone();
        g.sort();
        let mut want: Vec<String> = (0..n)
            .filter(|i| i % 2 == 1)
            .map(|i| format!("m-{i}"))
            .collect();
        want.sort();
        assert_eq!(g, want);
        assert!(*max_level.lock().unwrap() > 0, "failures caused back-off");
    });
}

#[test]
fn client_discovers_nsqd_through_lookupd_and_stops_cleanly() {
    let lookupd = start_lookupd();
    let reg = format!("--lookupd-tcp-address={}", lookupd.tcp);
    let a = Nsqd::start(&[&reg, "--broadcast-address=127.0.0.1"]).unwrap();
    let b = Nsqd::start(&[&reg, "--broadcast-address=127.0.0.1"]).unwrap();
    rt().block_on(async {
        for (i, d) in [&a, &b].iter().enumerate() {
            let p = Producer::new(d.tcp_arg(), Config::default());
            let bodies = (0..300).map(|k| format!("n{i}-{k}").into()).collect();
            p.multi_publish("found", bodies).await.unwrap();
        }
        let ok = wait_for(Duration::from_secs(10), || {
            nsq_blackbox_tests::http_json(lookupd.http, "/lookup?topic=found")
                .map(|v| v["producers"].as_array().map(|p| p.len()) == Some(2))
                .unwrap_or(false)
        })
        .await;
        assert!(ok, "both nsqd registered");
        let seen = Seen::default();
        let slow = Seen::default();
        let config = Config {
            max_in_flight: 10,
            concurrency: 4,
            lookupd_poll_interval: Duration::from_millis(500),
            ..Config::default()
        };
        let (s2, slow2) = (seen.clone(), slow.clone());
        let c = Consumer::new("found", "c", config, move |m| {
            let (s2, slow2) = (s2.clone(), slow2.clone());
            async move {
                // Slow handlers: stop() must wait for these and FIN them.
                tokio::time::sleep(Duration::from_millis(5)).await;
                if s2.distinct() >= 590 {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    slow2.add(&m.body);
                }
                s2.add(&m.body);
            }
        })
        .unwrap();
        c.connect_to_lookupd(&lookupd.http.to_string())
            .await
            .unwrap();
        assert!(wait_for(Duration::from_secs(30), || seen.distinct() >= 595).await);
        assert_eq!(c.stats().connections, 2);
        c.stop().await;
        let st = c.stats();
        assert_eq!(st.received, st.finished + st.requeued, "{st:?}");
        assert_eq!(st.connections, 0);
    });
    // After stop, nothing is left in flight on either nsqd, and nothing was lost.
    let mut depth = 0;
    for d in [&a, &b] {
        let s = d.stats().unwrap();
        let ch = &s["topics"][0]["channels"][0];
        assert_eq!(ch["in_flight_count"], 0, "{s}");
        depth += ch["depth"].as_u64().unwrap();
    }
    assert!(depth <= 5, "at most the unread tail is left: {depth}");
}

#[test]
fn client_compression_tls_and_deferred_publish() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed_cert(dir.path()).unwrap();
    let nsqd = Nsqd::start(&[
        &format!("--tls-cert={}", cert.display()),
        &format!("--tls-key={}", key.display()),
    ])
    .unwrap();
    // The test certificate is self-signed and marked as a CA, which webpki refuses as a
    // server certificate, so the chain check is skipped (signatures are still verified).
    let tls = TlsConfig {
        insecure_skip_verify: true,
        ..TlsConfig::default()
    };
    let variants = [
        ("snappy", Compression::Snappy, None),
        ("deflate", Compression::Deflate(6), None),
        ("tls", Compression::None, Some(tls.clone())),
        ("tls_snappy", Compression::Snappy, Some(tls)),
    ];
    rt().block_on(async {
        for (name, compression, tls) in variants {
            let config = Config {
                compression,
                tls,
                max_in_flight: 50,
                ..Config::default()
            };
            let p = Producer::new(nsqd.tcp_arg(), config.clone());
            let bodies: Vec<bytes::Bytes> = (0..500)
                .map(|i| format!("{name}-{i}-{}", "x".repeat(i % 300)).into())
                .collect();
            p.multi_publish(name, bodies.clone()).await.unwrap();
            let seen = Seen::default();
            let c = recording_consumer(name, "c", config, &seen);
            c.connect_to_nsqd(&nsqd.tcp_arg()).await.unwrap();
            assert!(
                wait_for(Duration::from_secs(20), || seen.distinct() == 500).await,
                "{name}: {} of 500",
                seen.distinct()
            );
            let want: HashSet<Vec<u8>> = bodies.iter().map(|b| b.to_vec()).collect();
            assert_eq!(seen.keys(), want, "{name}");
            c.stop().await;
        }
        // A deferred message arrives only after its delay.
        let p = Producer::new(nsqd.tcp_arg(), Config::default());
        let seen = Seen::default();
        let c = recording_consumer("later", "c", Config::default(), &seen);
        p.publish("later", "now").await.unwrap();
        c.connect_to_nsqd(&nsqd.tcp_arg()).await.unwrap();
        let t0 = Instant::now();
        p.deferred_publish("later", Duration::from_millis(1500), "later")
            .await
            .unwrap();
        assert!(wait_for(Duration::from_secs(10), || seen.distinct() == 2).await);
        assert!(
            t0.elapsed() >= Duration::from_millis(1400),
            "{:?}",
            t0.elapsed()
        );
        c.stop().await;
    });
    // A client that insists on TLS against an nsqd without it gets a clear error.
    let plain = Nsqd::start(&[]).unwrap();
    rt().block_on(async {
        let config = Config {
            tls: Some(TlsConfig {
                insecure_skip_verify: true,
                ..TlsConfig::default()
            }),
            ..Config::default()
        };
        let e = Producer::new(plain.tcp_arg(), config)
            .connect()
            .await
            .unwrap_err();
        assert!(e.to_string().contains("TLS"), "{e}");
    });
}
