//! The consuming and publishing tools against real nsqd: nsq_to_file (100,000 messages,
//! rotation, gzip, kill -9 and restart), to_nsq + nsq_tail, nsq_to_nsq between two nsqd,
//! nsq_to_http against small HTTP servers run by the test, and nsq_stat.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nsq_blackbox_tests::{
    bin, http_post, run_tool, start_daemon, wait_output, wait_until, Daemon, Nsqd,
};

/// Publish `bodies` with /mpub in batches.
fn publish(nsqd: &Nsqd, topic: &str, bodies: &[String]) {
    for chunk in bodies.chunks(1000) {
        let (st, body) = http_post(
            nsqd.http,
            &format!("/mpub?topic={topic}"),
            chunk.join("\n").as_bytes(),
        )
        .unwrap();
        assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
    }
}

/// (depth, in_flight, finish-able total) of a channel, from /stats.
fn channel_state(nsqd: &Nsqd, topic: &str, channel: &str) -> Option<(u64, u64)> {
    let s = nsqd.stats().ok()?;
    let t = s["topics"]
        .as_array()?
        .iter()
        .find(|t| t["topic_name"] == topic)?;
    let c = t["channels"]
        .as_array()?
        .iter()
        .find(|c| c["channel_name"] == channel)?;
    Some((c["depth"].as_u64()?, c["in_flight_count"].as_u64()?))
}

fn drained(nsqd: &Nsqd, topic: &str, channel: &str) -> bool {
    channel_state(nsqd, topic, channel) == Some((0, 0))
}

/// Every line of every file in `dir` (gzip files decompressed).
fn lines_in(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let mut text = String::new();
        let f = std::fs::File::open(&p).unwrap();
        if p.extension().is_some_and(|x| x == "gz") {
            flate2::read::MultiGzDecoder::new(f)
                .read_to_string(&mut text)
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        } else {
            BufReader::new(f).read_to_string(&mut text).unwrap();
        }
        out.extend(text.lines().map(String::from));
    }
    out
}

fn to_file(nsqd: &Nsqd, dir: &Path, extra: &[&str], log: &str) -> Daemon {
    let mut args = vec![
        "-topic=archive".to_string(), // NSQ's single-dash style works too
        format!("--nsqd-tcp-address={}", nsqd.tcp),
        format!("--output-dir={}", dir.join("out").display()),
        format!("--work-dir={}", dir.join("work").display()),
        "--filename-format=<TOPIC>.<HOST><REV>.log".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    start_daemon("nsq_to_file", &args, &dir.join(log)).unwrap()
}

#[test]
fn nsq_to_file_archives_100k_messages_with_rotation_and_gzip() {
    let nsqd = Nsqd::start(&[]).unwrap();
    let n = 100_000;
    let bodies: Vec<String> = (0..n).map(|i| format!("m-{i:06}")).collect();
    publish(&nsqd, "archive", &bodies);
    let dir = tempfile::tempdir().unwrap();
    let mut d = to_file(
        &nsqd,
        dir.path(),
        &["--gzip", "--rotate-size=200000", "--max-in-flight=500"],
        "to_file.log",
    );
    assert!(
        wait_until(Duration::from_secs(180), || drained(
            &nsqd,
            "archive",
            "nsq_to_file"
        )),
        "not drained: {:?}\n{}",
        channel_state(&nsqd, "archive", "nsq_to_file"),
        d.log_text()
    );
    assert_eq!(d.terminate(Duration::from_secs(30)).unwrap(), Some(0));
    let out = dir.path().join("out");
    let files: Vec<_> = std::fs::read_dir(&out).unwrap().collect();
    // 100,000 lines of 9 bytes = 900 KB: rotation at 200 KB makes at least 4 files.
    assert!(files.len() >= 4, "{} files", files.len());
    for f in &files {
        let name = f.as_ref().unwrap().file_name().into_string().unwrap();
        assert!(
            name.starts_with("archive.") && name.ends_with(".log.gz"),
            "{name}"
        );
    }
    let lines = lines_in(&out);
    assert_eq!(lines.len(), n, "each message exactly once");
    let set: HashSet<&String> = lines.iter().collect();
    assert_eq!(set.len(), n);
    assert!(bodies.iter().all(|b| set.contains(b)));
    assert_eq!(
        std::fs::read_dir(dir.path().join("work")).unwrap().count(),
        0,
        "no in-progress files left"
    );
}

#[test]
fn nsq_to_file_killed_midway_and_restarted_loses_nothing() {
    let nsqd = Nsqd::start(&[]).unwrap();
    let n = 60_000;
    let bodies: Vec<String> = (0..n).map(|i| format!("k-{i:06}")).collect();
    publish(&nsqd, "archive", &bodies);
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--gzip",
        "--rotate-size=100000",
        "--max-in-flight=200",
        "--sync-every=1000",
    ];
    let mut d = to_file(&nsqd, dir.path(), &args, "first.log");
    // Kill it once part of the topic has been archived.
    let started = wait_until(Duration::from_secs(60), || {
        channel_state(&nsqd, "archive", "nsq_to_file")
            .is_some_and(|(depth, _)| depth < n as u64 - 5000)
    });
    assert!(started, "{}", d.log_text());
    d.kill9();
    let left = channel_state(&nsqd, "archive", "nsq_to_file").unwrap();
    assert!(left.0 > 0, "killed before the end: {left:?}");
    let parts_left = std::fs::read_dir(dir.path().join("work"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".part"))
        })
        .count();
    let mut d = to_file(&nsqd, dir.path(), &args, "second.log");
    assert!(
        wait_until(Duration::from_secs(120), || drained(
            &nsqd,
            "archive",
            "nsq_to_file"
        )),
        "{}",
        d.log_text()
    );
    assert_eq!(d.terminate(Duration::from_secs(30)).unwrap(), Some(0));
    if parts_left > 0 {
        assert!(d.log_text().contains("recovered"), "{}", d.log_text());
    }
    let lines = lines_in(&dir.path().join("out"));
    let mut count: HashMap<&String, usize> = HashMap::new();
    for l in &lines {
        *count.entry(l).or_default() += 1;
    }
    let missing: Vec<&String> = bodies.iter().filter(|b| !count.contains_key(b)).collect();
    assert!(
        missing.is_empty(),
        "lost {} messages, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert_eq!(count.len(), n, "no stray lines");
    // At-least-once: only what was in flight at the kill can appear twice.
    let dups = lines.len() - n;
    assert!(dups <= 200, "{dups} duplicates");
}

#[test]
fn to_nsq_and_nsq_tail_round_trip() {
    let nsqd = Nsqd::start(&[]).unwrap();
    let n = 1000;
    let input: String = (0..n).map(|i| format!("line {i}\n")).collect();
    let mut child = Command::new(bin("to_nsq"))
        .args(["--topic=piped", &format!("--nsqd-tcp-address={}", nsqd.tcp)])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = wait_output(child, Duration::from_secs(30)).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("published {n}")));

    // --rate throttles: 50 lines at 100/s take about half a second.
    let t0 = Instant::now();
    let mut child = Command::new(bin("to_nsq"))
        .args([
            "--topic=piped",
            &format!("--nsqd-tcp-address={}", nsqd.tcp),
            "--rate=100",
            "--delimiter=;",
        ])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rated: String = (0..50).map(|i| format!("r{i};")).collect();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(rated.as_bytes())
        .unwrap();
    let out = wait_output(child, Duration::from_secs(30)).unwrap();
    assert!(out.status.success());
    assert!(
        t0.elapsed() >= Duration::from_millis(400),
        "{:?}",
        t0.elapsed()
    );

    let text = run_tool(
        "nsq_tail",
        &[
            "--topic=piped",
            &format!("--nsqd-tcp-address={}", nsqd.tcp),
            "-n",
            &(n + 50).to_string(),
        ],
        Duration::from_secs(30),
    );
    let got: HashSet<&str> = text.lines().collect();
    let mut want: HashSet<String> = (0..n).map(|i| format!("line {i}")).collect();
    want.extend((0..50).map(|i| format!("r{i}")));
    assert_eq!(got, want.iter().map(String::as_str).collect());
}

#[test]
fn nsq_to_nsq_copies_and_filters_json() {
    let src = Nsqd::start(&[]).unwrap();
    let dst = Nsqd::start(&[]).unwrap();
    let bodies: Vec<String> = (0..2000)
        .map(|i| {
            let kind = if i % 2 == 0 { "a" } else { "b" };
            format!(r#"{{"kind":"{kind}","n":{i},"secret":"s{i}"}}"#)
        })
        .collect();
    publish(&src, "src", &bodies);
    publish(&src, "src", &["not json".to_string()]);
    let dir = tempfile::tempdir().unwrap();
    let mut d = start_daemon(
        "nsq_to_nsq",
        &[
            "--topic=src".into(),
            format!("--nsqd-tcp-address={}", src.tcp),
            format!("--destination-nsqd-tcp-address={}", dst.tcp),
            "--destination-topic=dst".into(),
            "--require-json-field=kind".into(),
            "--require-json-value=a".into(),
            "--whitelist-json-field=kind".into(),
            "--whitelist-json-field=n".into(),
        ],
        &dir.path().join("to_nsq.log"),
    )
    .unwrap();
    assert!(
        wait_until(Duration::from_secs(60), || drained(
            &src,
            "src",
            "nsq_to_nsq"
        )),
        "{}",
        d.log_text()
    );
    assert_eq!(d.terminate(Duration::from_secs(20)).unwrap(), Some(0));
    let text = run_tool(
        "nsq_tail",
        &[
            "--topic=dst",
            &format!("--nsqd-tcp-address={}", dst.tcp),
            "-n",
            "1000",
        ],
        Duration::from_secs(30),
    );
    let got: HashSet<&str> = text.lines().collect();
    let want: HashSet<String> = (0..2000)
        .step_by(2)
        .map(|i| format!(r#"{{"kind":"a","n":{i}}}"#))
        .collect();
    assert_eq!(got, want.iter().map(String::as_str).collect());
    let s = dst.stats().unwrap();
    assert_eq!(s["topics"][0]["message_count"], 1000, "{s}");
}

/// A tiny HTTP/1.1 server recording (method, target, body); answers 500 to the first
/// request whose body or target contains `fail_once`, 200 to everything else.
struct Recorder {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<(String, String, String)>>>,
}

fn recorder(fail_once: &'static str) -> Recorder {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let seen: Arc<Mutex<Vec<(String, String, String)>>> = Arc::default();
    let s2 = seen.clone();
    std::thread::spawn(move || {
        let failed = Arc::new(Mutex::new(false));
        for conn in l.incoming() {
            let Ok(mut conn) = conn else { return };
            let (s2, failed) = (s2.clone(), failed.clone());
            // One thread per connection: the client keeps several open at once.
            std::thread::spawn(move || {
                let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                let mut r = BufReader::new(conn.try_clone().unwrap());
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    let parts: Vec<String> = line.split_whitespace().map(String::from).collect();
                    if parts.len() < 2 {
                        break;
                    }
                    let mut len = 0usize;
                    loop {
                        let mut h = String::new();
                        if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                            break;
                        }
                        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0u8; len];
                    if r.read_exact(&mut body).is_err() {
                        break;
                    }
                    let body = String::from_utf8_lossy(&body).into_owned();
                    let fail = {
                        let mut f = failed.lock().unwrap();
                        let fail =
                            !*f && (body.contains(fail_once) || parts[1].contains(fail_once));
                        *f |= fail;
                        fail
                    };
                    let status = if fail {
                        "500 Internal Server Error"
                    } else {
                        s2.lock()
                            .unwrap()
                            .push((parts[0].clone(), parts[1].clone(), body));
                        "200 OK"
                    };
                    let resp = format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n");
                    if conn.write_all(resp.as_bytes()).is_err() {
                        break;
                    }
                }
            });
        }
    });
    Recorder { addr, seen }
}

fn to_http(nsqd: &Nsqd, dir: &Path, topic: &str, extra: &[String]) -> Daemon {
    let mut args = vec![
        format!("--topic={topic}"),
        format!("--nsqd-tcp-address={}", nsqd.tcp),
        "--consumer-opt=default_requeue_delay=50ms".into(),
        "--consumer-opt=backoff_multiplier=10ms".into(),
    ];
    args.extend(extra.iter().cloned());
    start_daemon("nsq_to_http", &args, &dir.join(format!("{topic}.log"))).unwrap()
}

#[test]
fn nsq_to_http_round_robin_post_and_fanout_get() {
    let nsqd = Nsqd::start(&[]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Round-robin POSTs over two endpoints; one request fails once and is retried.
    let (a, b) = (recorder("p-7"), recorder("never"));
    let bodies: Vec<String> = (0..200).map(|i| format!("p-{i}")).collect();
    publish(&nsqd, "posts", &bodies);
    let mut d = to_http(
        &nsqd,
        dir.path(),
        "posts",
        &[
            format!("--post=http://{}/in", a.addr),
            format!("--post={}/in", b.addr),
            "--mode=round-robin".into(),
            "--header=X-Test: yes".into(),
        ],
    );
    let all = || {
        let mut v: Vec<String> = a.seen.lock().unwrap().iter().map(|r| r.2.clone()).collect();
        v.extend(b.seen.lock().unwrap().iter().map(|r| r.2.clone()));
        v
    };
    assert!(
        wait_until(Duration::from_secs(60), || {
            let got: HashSet<String> = all().into_iter().collect();
            got.len() == 200 && drained(&nsqd, "posts", "nsq_to_http")
        }),
        "{} of 200\n{}",
        all().len(),
        d.log_text()
    );
    assert_eq!(d.terminate(Duration::from_secs(20)).unwrap(), Some(0));
    assert!(a
        .seen
        .lock()
        .unwrap()
        .iter()
        .all(|r| r.0 == "POST" && r.1 == "/in"));
    let (na, nb) = (a.seen.lock().unwrap().len(), b.seen.lock().unwrap().len());
    assert!(na > 50 && nb > 50, "round-robin spreads: {na} / {nb}");
    assert_eq!(all().len(), 200, "FINed once accepted: no repeats");

    // Fan-out GETs: every endpoint gets every message, URL-escaped into the target.
    let (c, e) = (recorder("never"), recorder("never"));
    let bodies: Vec<String> = (0..30).map(|i| format!("g {i}")).collect();
    publish(&nsqd, "gets", &bodies);
    let mut d = to_http(
        &nsqd,
        dir.path(),
        "gets",
        &[
            format!("--get=http://{}/g?d=%s", c.addr),
            format!("--get=http://{}/g?d=%s", e.addr),
            "--mode=fanout".into(),
        ],
    );
    assert!(
        wait_until(Duration::from_secs(60), || c.seen.lock().unwrap().len()
            == 30
            && e.seen.lock().unwrap().len() == 30),
        "{}",
        d.log_text()
    );
    assert_eq!(d.terminate(Duration::from_secs(20)).unwrap(), Some(0));
    for r in [&c, &e] {
        let targets: HashSet<String> = r.seen.lock().unwrap().iter().map(|x| x.1.clone()).collect();
        let want: HashSet<String> = (0..30).map(|i| format!("/g?d=g%20{i}")).collect();
        assert_eq!(targets, want);
    }
}

#[test]
fn nsq_stat_reports_channel_figures() {
    let nsqd = Nsqd::start(&[]).unwrap();
    for path in [
        "/topic/create?topic=st",
        "/channel/create?topic=st&channel=c",
    ] {
        let (st, _) = http_post(nsqd.http, path, b"").unwrap();
        assert_eq!(st, 200);
    }
    let bodies: Vec<String> = (0..123).map(|i| format!("s{i}")).collect();
    publish(&nsqd, "st", &bodies);
    let text = run_tool(
        "nsq_stat",
        &[
            "--topic=st",
            "--channel=c",
            &format!("--nsqd-http-address={}", nsqd.http),
            "--interval=100ms",
            "--count=2",
        ],
        Duration::from_secs(20),
    );
    let rows: Vec<Vec<&str>> = text
        .lines()
        .filter(|l| l.contains('|') && !l.contains("total") && !l.contains("depth"))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 2, "{text}");
    assert!(
        text.contains("ingress") && text.contains("egress"),
        "{text}"
    );
    // No traffic between samples: ingress and egress 0; total depth 123; msgs 123 (NSQ
    // counts the messages that entered the channel); 0 clients.
    assert_eq!(&rows[0][..3], &["0", "0", "|"], "{text}");
    assert_eq!(rows[0][3], "123", "{text}");
    assert_eq!(rows[0][11], "123", "{text}");
    assert_eq!(rows[0][12], "0", "{text}");
    // The header's '+' separators sit over the rows' '|'.
    let bar = text
        .lines()
        .find(|l| l.contains("rate"))
        .unwrap_or_default();
    let row = text
        .lines()
        .find(|l| l.contains('|') && !l.contains("total"))
        .unwrap_or_default();
    let plus: Vec<usize> = bar.match_indices('+').map(|(i, _)| i).collect();
    let pipes: Vec<usize> = row.match_indices('|').map(|(i, _)| i).collect();
    assert_eq!(plus, pipes, "\n{bar}\n{row}");

    // A channel or topic that no nsqd has is an error (exit 1), as in NSQ.
    for (args, want) in [
        (
            ["--topic=st", "--channel=nope"],
            "failed to find channel(nope)",
        ),
        (
            ["--topic=nosuch", "--channel=c"],
            "failed to find topic(nosuch)",
        ),
    ] {
        let out = Command::new(nsq_blackbox_tests::bin("nsq_stat"))
            .args(args)
            .arg(format!("--nsqd-http-address={}", nsqd.http))
            .arg("--interval=100ms")
            .arg("--count=1")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{err}");
    }
}

#[test]
fn nsq_to_file_follows_a_topic_pattern_through_lookupd() {
    let lookupd = nsq_blackbox_tests::start_lookupd();
    let nsqd = Nsqd::start(&[
        &format!("--lookupd-tcp-address={}", lookupd.tcp),
        "--broadcast-address=127.0.0.1",
    ])
    .unwrap();
    publish(&nsqd, "pat_a", &["a1".into(), "a2".into()]);
    publish(&nsqd, "other", &["o1".into()]);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut d = start_daemon(
        "nsq_to_file",
        &[
            "--topic-pattern=^pat_".into(),
            format!("--lookupd-http-address={}", lookupd.http),
            "--topic-refresh=300ms".into(),
            "--consumer-opt=lookupd_poll_interval=300ms".into(),
            format!("--output-dir={}", out.display()),
            "--filename-format=<TOPIC><REV>.log".into(),
        ],
        &dir.path().join("pattern.log"),
    )
    .unwrap();
    // A matching topic that appears later is picked up too.
    std::thread::sleep(Duration::from_millis(500));
    publish(&nsqd, "pat_b", &["b1".into()]);
    assert!(
        wait_until(Duration::from_secs(30), || drained(
            &nsqd,
            "pat_a",
            "nsq_to_file"
        ) && drained(
            &nsqd,
            "pat_b",
            "nsq_to_file"
        )),
        "{}",
        d.log_text()
    );
    assert_eq!(d.terminate(Duration::from_secs(20)).unwrap(), Some(0));
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, vec!["pat_a.log", "pat_b.log"]);
    // NSQ does not promise order; the lines are what counts.
    let mut a: Vec<String> = std::fs::read_to_string(out.join("pat_a.log"))
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    a.sort();
    assert_eq!(a, vec!["a1", "a2"]);
    assert_eq!(
        std::fs::read_to_string(out.join("pat_b.log")).unwrap(),
        "b1\n"
    );
    assert!(
        channel_state(&nsqd, "other", "nsq_to_file").is_none(),
        "other is not archived"
    );
}

#[test]
fn nsq_to_http_honours_http_client_request_timeout() {
    // An endpoint that answers only after 3 s.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let heads = Arc::new(Mutex::new(Vec::<String>::new()));
    let heads2 = heads.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(20) {
            let Ok(mut s) = stream else { continue };
            let heads = heads2.clone();
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let mut buf = [0u8; 4096];
                let n = s.read(&mut buf).unwrap_or(0);
                heads
                    .lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&buf[..n]).to_lowercase());
                std::thread::sleep(Duration::from_secs(3));
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
            });
        }
    });
    let nsqd = Nsqd::start(&[]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    publish(&nsqd, "slow", &["one".to_string()]);
    let started = Instant::now();
    let mut d = to_http(
        &nsqd,
        dir.path(),
        "slow",
        &[
            format!("--post=http://{addr}/in"),
            "--http-client-request-timeout=1s".into(),
        ],
    );
    let requeued = || {
        nsqd.stats()
            .map(|s| s["topics"][0]["channels"][0]["requeue_count"].as_u64() >= Some(1))
            .unwrap_or(false)
    };
    assert!(
        wait_until(Duration::from_secs(20), requeued),
        "the 1s timeout never requeued:\n{}",
        d.log_text()
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "requeued only after {:?}",
        started.elapsed()
    );
    // NSQ's User-Agent on endpoint requests.
    let first = heads.lock().unwrap().first().cloned().unwrap_or_default();
    assert!(first.contains("user-agent: nsq_to_http v1.3.0"), "{first}");
    assert_eq!(d.terminate(Duration::from_secs(20)).unwrap(), Some(0));
}
