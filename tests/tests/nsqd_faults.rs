//! Storage faults with the real nsqd: a full disk (a small tmpfs), damaged files, a bound
//! on a topic's disk use, and publish/delete races. Nothing acknowledged may be lost, no
//! corrupt body may be delivered, and nsqd must stay up and heal by itself.
//!
//! The full-disk tests mount a tmpfs, which needs root (CI runs as root). Where mounting
//! is not permitted they fail with a message saying so; they never pass silently.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nsq_blackbox_tests::{
    http_get, http_post, mpub_body, spawn_logged, wait_ready, wait_until, Daemon, Nsqd, RawConn,
};

/// A tmpfs of a given size, unmounted on drop.
struct Tmpfs {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .output()
            .expect("running mount");
        assert!(
            out.status.success(),
            "this test needs to mount a tmpfs (run as root): mount said {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs { _dir: dir, path }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// nsqd with its data on `data` and its log outside it (a full disk must not stop the log).
fn start_nsqd(data: &Path, log_dir: &Path, extra: &[&str]) -> Nsqd {
    for _ in 0..3 {
        let tcp = format!("127.0.0.1:{}", nsq_blackbox_tests::free_port());
        let http = format!("127.0.0.1:{}", nsq_blackbox_tests::free_port());
        let https = format!("127.0.0.1:{}", nsq_blackbox_tests::free_port());
        let mut args = vec![
            format!("--tcp-address={tcp}"),
            format!("--http-address={http}"),
            format!("--https-address={https}"),
            format!("--data-path={}", data.display()),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let log = log_dir.join(format!("nsqd-{}.log", http.rsplit(':').next().unwrap()));
        let child = spawn_logged("nsqd", &args, &log).unwrap();
        let mut d = Daemon {
            child,
            name: "nsqd".into(),
            log,
        };
        let http_addr = http.parse().unwrap();
        if wait_ready(&mut d, http_addr).is_ok() {
            return Nsqd {
                daemon: d,
                tcp: tcp.parse().unwrap(),
                http: http_addr,
                https: https.parse().unwrap(),
                data: data.to_path_buf(),
                extra: extra.iter().map(|s| s.to_string()).collect(),
                _tmp: None,
            };
        }
    }
    panic!("nsqd did not start");
}

fn create_channel(nsqd: &Nsqd) {
    let (s, _) = http_post(nsqd.http, "/topic/create?topic=t", b"").unwrap();
    assert_eq!(s, 200);
    let (s, _) = http_post(nsqd.http, "/channel/create?topic=t&channel=c", b"").unwrap();
    assert_eq!(s, 200);
}

fn body(i: usize, size: usize) -> Vec<u8> {
    let mut b = format!("{i}:").into_bytes();
    b.resize(size, b'x');
    b
}

fn index_of(b: &[u8]) -> Option<usize> {
    let s = std::str::from_utf8(b).ok()?;
    let (i, rest) = s.split_once(':')?;
    rest.bytes().all(|c| c == b'x').then_some(())?;
    i.parse().ok()
}

/// Publish `body(i)` by TCP (even i) or HTTP (odd i). Ok(true) if acknowledged; Ok(false)
/// with the error text checked if refused.
fn publish_one(nsqd: &Nsqd, tcp: &mut Option<RawConn>, i: usize, size: usize) -> bool {
    let b = body(i, size);
    if i.is_multiple_of(2) {
        let c = tcp.get_or_insert_with(|| RawConn::connect(nsqd.tcp).unwrap());
        c.cmd("PUB t", Some(&b)).unwrap();
        let (ty, data) = c.read_non_heartbeat().unwrap();
        if ty == 0 && data == b"OK" {
            return true;
        }
        let text = String::from_utf8_lossy(&data).to_string();
        assert_eq!(ty, 1, "an error frame, got {text}");
        assert!(text.starts_with("E_PUB_FAILED"), "{text}");
        *tcp = None; // NSQ closes the connection after E_PUB_FAILED
        false
    } else {
        let (status, resp) = http_post(nsqd.http, "/pub?topic=t", &b).unwrap();
        if status == 200 {
            return true;
        }
        assert_eq!(status, 503, "{}", String::from_utf8_lossy(&resp));
        false
    }
}

fn ping(nsqd: &Nsqd) -> (u16, String) {
    let (s, b) = http_get(nsqd.http, "/ping").unwrap();
    (s, String::from_utf8_lossy(&b).to_string())
}

/// Receive and FIN messages until `want` distinct bodies arrived (or time runs out).
fn consume(c: &mut RawConn, want: &BTreeSet<usize>, got: &mut Vec<usize>) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut have: BTreeSet<usize> = got.iter().copied().collect();
    while !want.is_subset(&have) && std::time::Instant::now() < deadline {
        let m = c.read_message().unwrap();
        let i = index_of(&m.body).expect("no corrupt body is ever delivered");
        got.push(i);
        have.insert(i);
        c.cmd(&format!("FIN {}", m.id), None).unwrap();
    }
}

fn subscriber(nsqd: &Nsqd, rdy: u32) -> RawConn {
    let mut c = RawConn::connect(nsqd.tcp).unwrap();
    c.cmd("SUB t c", None).unwrap();
    c.expect_response("OK").unwrap();
    c.cmd(&format!("RDY {rdy}"), None).unwrap();
    c
}

#[test]
fn full_disk_refuses_publishes_keeps_serving_and_heals() {
    let fs = Tmpfs::mount("6m");
    let logs = tempfile::tempdir().unwrap();
    let data = fs.path.join("data");
    std::fs::create_dir(&data).unwrap();
    let mut nsqd = start_nsqd(
        &data,
        logs.path(),
        &["--mem-queue-size=0", "--max-bytes-per-file=524288"],
    );
    create_channel(&nsqd);
    // A consumer is attached from the start, but reads nothing yet.
    let mut sub = subscriber(&nsqd, 0);
    let mut acked = BTreeSet::new();
    let mut tcp = None;
    let mut i = 0;
    let mut refused = 0;
    while refused < 6 && i < 2000 {
        if publish_one(&nsqd, &mut tcp, i, 10_000) {
            assert_eq!(refused, 0, "nothing is accepted while the disk is full");
            acked.insert(i);
        } else {
            refused += 1;
        }
        i += 1;
    }
    assert!(
        refused > 0 && acked.len() > 100,
        "the disk filled up ({} acked)",
        acked.len()
    );
    assert!(
        nsqd.daemon.child.try_wait().unwrap().is_none(),
        "nsqd stayed up"
    );
    let (status, text) = ping(&nsqd);
    assert_eq!(status, 500, "/ping reports the full disk: {text}");
    assert!(text.contains("NOK") && text.contains("topic t"), "{text}");
    let log = nsqd.daemon.log_text();
    assert_eq!(
        log.matches("storage error: publishes to this topic fail")
            .count(),
        1,
        "logged once per condition, not per message:\n{log}"
    );
    // Consumers drain everything acknowledged; GC frees space; nsqd heals by itself.
    sub.cmd("RDY 100", None).unwrap();
    let mut got = Vec::new();
    consume(&mut sub, &acked, &mut got);
    assert!(
        wait_until(Duration::from_secs(20), || ping(&nsqd).0 == 200),
        "/ping healthy again once consumers freed space: {:?}",
        ping(&nsqd)
    );
    let mut later = BTreeSet::new();
    for k in 0..4 {
        assert!(
            publish_one(&nsqd, &mut tcp, 10_000 + k, 10_000),
            "publishing resumes; nsqd log:\n{}\ndata: {:?}",
            nsqd.daemon.log_text(),
            std::fs::read_dir(data.join("topics/t_t")).map(|d| d
                .flatten()
                .map(|e| (e.file_name(), e.metadata().map(|m| m.len()).unwrap_or(0)))
                .collect::<Vec<_>>())
        );
        later.insert(10_000 + k);
    }
    consume(&mut sub, &later, &mut got);
    let all: BTreeSet<usize> = acked.union(&later).copied().collect();
    let got_set: BTreeSet<usize> = got.iter().copied().collect();
    assert_eq!(got_set, all, "every acknowledged message arrived");
    assert_eq!(got.len(), all.len(), "and each exactly once");
    assert!(nsqd.daemon.log_text().contains("storage error cleared"));
    nsqd.daemon.terminate(Duration::from_secs(20)).unwrap();
}

#[test]
fn starts_on_a_full_filesystem_and_drains_it() {
    let fs = Tmpfs::mount("4m");
    let logs = tempfile::tempdir().unwrap();
    let data = fs.path.join("data");
    std::fs::create_dir(&data).unwrap();
    let mut nsqd = start_nsqd(
        &data,
        logs.path(),
        &["--mem-queue-size=0", "--max-bytes-per-file=262144"],
    );
    create_channel(&nsqd);
    let mut acked = BTreeSet::new();
    let mut tcp = None;
    for i in 0..2000 {
        if publish_one(&nsqd, &mut tcp, i, 8_000) {
            acked.insert(i);
        } else {
            break;
        }
    }
    drop(tcp);
    nsqd.daemon.terminate(Duration::from_secs(20)).unwrap();
    // Whatever room is left goes to a filler file: the filesystem is completely full.
    let filler = fs.path.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let chunk = vec![1u8; 4096];
    while std::io::Write::write_all(&mut f, &chunk).is_ok() {}
    drop(f);
    let nsqd = start_nsqd(&data, logs.path(), &["--mem-queue-size=0"]);
    let mut sub = RawConn::connect(nsqd.tcp).unwrap();
    sub.cmd("SUB t c", None).unwrap();
    if let Err(e) = sub.expect_response("OK") {
        panic!("SUB on a full disk: {e}\n{}", nsqd.daemon.log_text());
    }
    sub.cmd("RDY 100", None).unwrap();
    let mut got = Vec::new();
    consume(&mut sub, &acked, &mut got);
    let got_set: BTreeSet<usize> = got.iter().copied().collect();
    assert_eq!(
        got_set, acked,
        "every acknowledged message is served from a full disk"
    );
    let (status, _) = http_post(nsqd.http, "/pub?topic=t", &body(99_999, 8_000)).unwrap();
    assert_eq!(status, 503, "publishing waits for room");
    std::fs::remove_file(&filler).unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || {
            http_post(nsqd.http, "/pub?topic=t", &body(99_998, 100)).is_ok_and(|r| r.0 == 200)
        }),
        "publishing works again once there is room, without a restart"
    );
}

fn publish_batch(nsqd: &Nsqd, from: usize, n: usize) {
    let mut p = RawConn::connect(nsqd.tcp).unwrap();
    let bodies: Vec<Vec<u8>> = (from..from + n).map(|i| body(i, 200)).collect();
    for chunk in bodies.chunks(50) {
        let refs: Vec<&[u8]> = chunk.iter().map(|b| b.as_slice()).collect();
        p.cmd("MPUB t", Some(&mpub_body(&refs))).unwrap();
        p.expect_response("OK").unwrap();
    }
}

/// Publish 600 messages into small segments, stop nsqd, let `damage` change the files,
/// restart, and return (what arrived, the new log).
fn after_damage(damage: impl FnOnce(&Path)) -> (Vec<usize>, String) {
    let mut nsqd = Nsqd::start(&["--mem-queue-size=0", "--max-bytes-per-file=32768"]).unwrap();
    create_channel(&nsqd);
    publish_batch(&nsqd, 0, 600);
    nsqd = {
        nsqd.daemon.terminate(Duration::from_secs(20)).unwrap();
        damage(&nsqd.data);
        let extra: Vec<&str> = nsqd.extra.iter().map(String::as_str).collect();
        let mut n = Nsqd::start_in(&nsqd.data.clone(), &extra).unwrap();
        n._tmp = nsqd._tmp.take();
        n
    };
    let mut sub = subscriber(&nsqd, 200);
    sub.stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut got = Vec::new();
    while let Ok(m) = sub.read_message() {
        got.push(index_of(&m.body).expect("no corrupt body is ever delivered"));
        sub.cmd(&format!("FIN {}", m.id), None).unwrap();
    }
    let log = nsqd.daemon.log_text();
    (got, log)
}

fn segments(data: &Path) -> Vec<PathBuf> {
    let dir = data.join("topics").join("t_t");
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

#[test]
fn a_flipped_byte_mid_segment_costs_one_message() {
    let (got, log) = after_damage(|data| {
        let segs = segments(data);
        let last = segs.last().unwrap();
        let mut bytes = std::fs::read(last).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x40;
        std::fs::write(last, &bytes).unwrap();
        let first = &segs[0];
        let mut bytes = std::fs::read(first).unwrap();
        bytes[60] ^= 0x01; // the first record's body, in a sealed segment
        std::fs::write(first, &bytes).unwrap();
    });
    assert_eq!(
        got.len(),
        598,
        "two damaged records, every other one delivered"
    );
    assert!(got.windows(2).all(|w| w[0] < w[1]), "in order");
    assert!(log.contains("skipped a damaged stretch") || log.contains("skipping corrupt"));
}

#[test]
fn a_cut_tail_loses_only_what_was_cut() {
    let (got, log) = after_damage(|data| {
        let segs = segments(data);
        let last = segs.last().unwrap();
        let len = std::fs::metadata(last).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(last).unwrap();
        f.set_len(len - 300).unwrap(); // part of the last record, and one more
    });
    assert!(got.len() >= 598 && got.len() < 600, "{}", got.len());
    assert_eq!(got, (0..got.len()).collect::<Vec<_>>());
    assert!(log.contains("torn tail"), "{log}");
}

#[test]
fn a_missing_middle_segment_loses_only_its_messages() {
    let (got, _log) = after_damage(|data| {
        let segs = segments(data);
        assert!(segs.len() >= 4);
        std::fs::remove_file(&segs[1]).unwrap();
    });
    assert!(got.len() < 600 && got.len() > 400, "{}", got.len());
    assert!(got.contains(&0) && got.contains(&599));
    assert!(got.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn deleted_metadata_is_rebuilt_and_nothing_is_lost() {
    let (got, log) = after_damage(|data| {
        std::fs::remove_dir_all(data.join("meta")).unwrap();
    });
    assert_eq!(got, (0..600).collect::<Vec<_>>());
    assert!(log.contains("rebuilt it from the data directory"), "{log}");
}

#[test]
fn garbled_metadata_is_moved_aside_and_rebuilt() {
    let (got, log) = after_damage(|data| {
        for e in std::fs::read_dir(data.join("meta")).unwrap() {
            let p = e.unwrap().path();
            if p.is_file() {
                std::fs::write(&p, vec![0x5au8; 8192]).unwrap();
            }
        }
    });
    assert_eq!(got, (0..600).collect::<Vec<_>>());
    assert!(log.contains("metadata store is damaged"), "{log}");
}

#[test]
fn a_missing_data_path_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no-such-dir");
    let out = Command::new(nsq_blackbox_tests::bin("nsqd"))
        .arg(format!("--data-path={}", missing.display()))
        .arg("--tcp-address=127.0.0.1:0")
        .arg("--http-address=127.0.0.1:0")
        .arg("--https-address=127.0.0.1:0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("no-such-dir") && text.contains("does not exist"),
        "{text}"
    );
    assert!(!missing.exists(), "not silently created");
}

#[test]
fn max_bytes_per_topic_is_backpressure() {
    let nsqd = Nsqd::start(&[
        "--mem-queue-size=0",
        "--max-bytes-per-file=32768",
        "--max-bytes-per-topic=131072",
    ])
    .unwrap();
    create_channel(&nsqd);
    let mut acked = BTreeSet::new();
    let mut tcp = None;
    let mut refused = false;
    for i in 0..1000 {
        if publish_one(&nsqd, &mut tcp, i, 1000) {
            acked.insert(i);
        } else {
            refused = true;
            break;
        }
    }
    assert!(refused, "publishes past the bound are refused");
    assert!(acked.len() >= 100 && acked.len() < 200, "{}", acked.len());
    let mut c = RawConn::connect(nsqd.tcp).unwrap();
    c.cmd("PUB t", Some(b"one more")).unwrap();
    let why = c.expect_error("E_PUB_FAILED").unwrap();
    assert!(why.contains("max-bytes-per-topic"), "says why: {why}");
    assert_eq!(ping(&nsqd).0, 200, "backpressure is not a fault");
    let mut sub = subscriber(&nsqd, 100);
    let mut got = Vec::new();
    consume(&mut sub, &acked, &mut got);
    assert!(
        wait_until(Duration::from_secs(20), || {
            http_post(nsqd.http, "/pub?topic=t", &body(5000, 1000)).is_ok_and(|r| r.0 == 200)
        }),
        "accepted again once consumers caught up"
    );
}

#[test]
fn create_delete_and_publish_races_never_answer_5xx() {
    let nsqd = Nsqd::start(&["--mem-queue-size=0"]).unwrap();
    let http = nsqd.http;
    let threads: Vec<_> = (0..20)
        .map(|k| {
            std::thread::spawn(move || {
                let mut statuses = Vec::new();
                for i in 0..30 {
                    let path = match (k + i) % 5 {
                        0 => "/topic/create?topic=race".to_string(),
                        1 => "/topic/delete?topic=race".to_string(),
                        2 => "/channel/create?topic=race&channel=c".to_string(),
                        3 => "/channel/delete?topic=race&channel=c".to_string(),
                        _ => "/pub?topic=race".to_string(),
                    };
                    let (status, body) = http_post(http, &path, b"x").unwrap();
                    statuses.push((path, status, String::from_utf8_lossy(&body).to_string()));
                }
                statuses
            })
        })
        .collect();
    for t in threads {
        for (path, status, body) in t.join().unwrap() {
            // A channel action may find its topic (or a delete its channel) gone: 404, as
            // NSQ answers; never a 5xx.
            assert!(
                status == 200 || (status == 404 && !path.starts_with("/pub")),
                "{path}: {status} {body}"
            );
        }
    }
    assert_eq!(ping(&nsqd).0, 200, "races do not make the node unhealthy");
}

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

/// One consumer subscribes to a 200 MB backlog on disk with RDY 2500 and never reads its
/// socket: what nsqd holds for it stays bounded, and other requests stay fast.
#[test]
fn a_stuck_consumer_on_a_big_backlog_costs_little_memory() {
    let nsqd = Nsqd::start(&["--mem-queue-size=0", "--sync-every=100000"]).unwrap();
    create_channel(&nsqd);
    let mut p = RawConn::connect(nsqd.tcp).unwrap();
    let big = body(0, 10_000);
    for _ in 0..200 {
        let refs: Vec<&[u8]> = (0..100).map(|_| big.as_slice()).collect();
        p.cmd("MPUB t", Some(&mpub_body(&refs))).unwrap();
        p.expect_response("OK").unwrap();
    }
    let pid = nsqd.daemon.pid();
    let before = rss_bytes(pid);
    let stuck = subscriber(&nsqd, 2500);
    // Let nsqd push until the socket is full and the in-flight count stops growing.
    let in_flight = || -> u64 {
        let s = nsqd.stats().unwrap();
        s["topics"][0]["channels"][0]["in_flight_count"]
            .as_u64()
            .unwrap_or(0)
    };
    let mut last = u64::MAX;
    wait_until(Duration::from_secs(20), || {
        std::thread::sleep(Duration::from_millis(300));
        let now = in_flight();
        let settled = now > 0 && now == last;
        last = now;
        settled
    });
    let mut pings = Vec::new();
    for _ in 0..20 {
        let t = std::time::Instant::now();
        assert_eq!(ping(&nsqd).0, 200);
        pings.push(t.elapsed());
    }
    pings.sort();
    let after = rss_bytes(pid);
    let growth = after.saturating_sub(before);
    assert!(
        growth < 64 << 20,
        "RSS grew by {} MiB ({} -> {} MiB) with {} in flight",
        growth >> 20,
        before >> 20,
        after >> 20,
        last
    );
    assert!(
        pings[pings.len() / 2] < Duration::from_millis(50),
        "/ping stays fast: median {:?}, max {:?}",
        pings[pings.len() / 2],
        pings[pings.len() - 1]
    );
    eprintln!(
        "stuck consumer: RSS {} -> {} MiB, {} in flight, /ping median {:?}",
        before >> 20,
        after >> 20,
        last,
        pings[pings.len() / 2]
    );
    drop(stuck.stream.shutdown(std::net::Shutdown::Both));
}

/// A data directory on a read-only file system: nsqd refuses to start with one clear line
/// that names the path and says what to check (it never panics or starts empty).
#[test]
fn a_read_only_data_directory_is_refused_clearly() {
    let mut nsqd = Nsqd::start(&["--mem-queue-size=0"]).unwrap();
    publish_batch(&nsqd, 0, 10);
    nsqd.daemon.terminate(Duration::from_secs(20)).unwrap();
    let data = nsqd.data.clone();
    let bind = |args: &[&str]| {
        let out = Command::new("mount").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "this test needs to bind-mount (run as root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let d = data.to_str().unwrap();
    bind(&["--bind", d, d]);
    bind(&["-o", "remount,ro,bind", d]);
    let out = Command::new(nsq_blackbox_tests::bin("nsqd"))
        .arg(format!("--data-path={d}"))
        .arg("--tcp-address=127.0.0.1:0")
        .arg("--http-address=127.0.0.1:0")
        .arg("--https-address=127.0.0.1:0")
        .output()
        .unwrap();
    let _ = Command::new("umount").arg(d).status();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!text.contains("panicked"), "{text}");
    assert!(
        text.contains("Read-only file system") && text.contains(&format!("{d}/meta")),
        "{text}"
    );
    assert!(text.contains("writable"), "says what to check: {text}");
}
