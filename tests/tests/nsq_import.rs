//! Taking over an NSQ node: nsqd started on a data directory written in NSQ 1.x's format
//! (`nsqd.dat` and diskqueue files, written here by `nsqd::nsq_import::write`) imports
//! topics, channels, paused flags and every queued message, per channel, moves NSQ's files
//! aside, and does not import again after a restart.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use nsq_blackbox_tests::{http_post, wait_until, Nsqd, RawConn};
use server::nsq_import::{write, NsqMessage};

fn msgs(tag: &str, n: usize, attempts: u16) -> Vec<NsqMessage> {
    (0..n)
        .map(|i| {
            write::message(
                i as u64,
                1_600_000_000_000_000_000 + i as i64,
                attempts,
                format!("{tag}-{i}").as_bytes(),
            )
        })
        .collect()
}

fn bodies(v: &[NsqMessage]) -> Vec<String> {
    v.iter()
        .map(|m| String::from_utf8_lossy(&m.body).to_string())
        .collect()
}

/// Subscribe, receive exactly `n` messages (FINing each), then check nothing more comes.
/// Returns body -> (timestamp, attempts).
fn consume(nsqd: &Nsqd, topic: &str, channel: &str, n: usize) -> BTreeMap<String, (i64, u16)> {
    let mut c = RawConn::connect(nsqd.tcp).unwrap();
    c.cmd(&format!("SUB {topic} {channel}"), None).unwrap();
    c.expect_response("OK").unwrap();
    c.cmd("RDY 100", None).unwrap();
    let mut got = BTreeMap::new();
    for _ in 0..n {
        let m = c.read_message().unwrap();
        c.cmd(&format!("FIN {}", m.id), None).unwrap();
        let body = String::from_utf8_lossy(&m.body).to_string();
        assert!(
            got.insert(body.clone(), (m.timestamp, m.attempts))
                .is_none(),
            "{body} delivered twice on {channel}"
        );
    }
    c.stream
        .set_read_timeout(Some(Duration::from_millis(400)))
        .unwrap();
    if let Ok(m) = c.read_message() {
        panic!(
            "unexpected extra message {:?} on {channel}",
            String::from_utf8_lossy(&m.body)
        );
    }
    got
}

fn channel_stats(nsqd: &Nsqd, topic: &str, channel: &str) -> serde_json::Value {
    let s = nsqd.stats().unwrap();
    let t = s["topics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["topic_name"] == topic)
        .unwrap_or_else(|| panic!("no topic {topic} in {s}"))
        .clone();
    t["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["channel_name"] == channel)
        .unwrap_or_else(|| panic!("no channel {channel} in {t}"))
        .clone()
}

fn imported_dirs(data: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(data)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("nsq-imported-"))
        })
        .collect()
}

#[test]
fn an_nsq_data_directory_is_imported_once() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path();
    write::metadata(
        data,
        &write::topics(&[
            (
                "orders",
                false,
                &[("a", false), ("b", false), ("p", true)][..],
            ),
            ("idle", true, &[("x", false)][..]),
        ]),
    )
    .unwrap();
    // The topic's own queue: not yet given to any channel, so every channel gets it.
    let shared = msgs("shared", 3, 0);
    write::queue(data, "orders", 0, std::slice::from_ref(&shared), (0, 1)).unwrap();
    // a: one file, two of five already consumed.
    let a = msgs("a", 5, 1);
    write::queue(data, "orders:a", 3, std::slice::from_ref(&a), (0, 2)).unwrap();
    // b: spans two files, read position in the middle of the first.
    let b = msgs("b", 9, 2);
    write::queue(
        data,
        "orders:b",
        7,
        &[b[..5].to_vec(), b[5..].to_vec()],
        (0, 3),
    )
    .unwrap();
    // p: paused, everything queued.
    let p = msgs("p", 4, 0);
    write::queue(data, "orders:p", 0, std::slice::from_ref(&p), (0, 0)).unwrap();
    // A queue file whose metadata is garbled: logged, nsqd still starts.
    write::queue(data, "idle:x", 0, &[msgs("x", 2, 0)], (0, 0)).unwrap();
    std::fs::write(data.join("idle:x.diskqueue.meta.dat"), "garbage").unwrap();

    let nsqd = Nsqd::start_in(data, &[]).unwrap();

    // NSQ's files moved aside, nothing deleted.
    assert!(!data.join("nsqd.dat").exists());
    assert!(!data.join("orders:b.diskqueue.000007.dat").exists());
    let dirs = imported_dirs(data);
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    for f in [
        "nsqd.dat",
        "orders.diskqueue.meta.dat",
        "orders:b.diskqueue.000007.dat",
        "orders:b.diskqueue.000008.dat",
        "idle:x.diskqueue.meta.dat",
    ] {
        assert!(dirs[0].join(f).is_file(), "{f} not in {:?}", dirs[0]);
    }
    let log = nsqd.daemon.log_text();
    assert!(log.contains("imported NSQ channel"), "{log}");
    assert!(log.contains("idle:x.diskqueue.meta.dat"), "{log}");

    // Paused flags.
    assert_eq!(channel_stats(&nsqd, "orders", "p")["paused"], true);
    assert_eq!(channel_stats(&nsqd, "orders", "a")["paused"], false);
    let s = nsqd.stats().unwrap();
    let idle = s["topics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["topic_name"] == "idle")
        .unwrap()
        .clone();
    assert_eq!(idle["paused"], true);

    // Each channel gets what was still queued for it, then the topic's queue, once.
    let want = |own: &[NsqMessage]| {
        let mut v = bodies(own);
        v.extend(bodies(&shared[1..]));
        v.sort();
        v
    };
    let got_a = consume(&nsqd, "orders", "a", 5);
    assert_eq!(got_a.keys().cloned().collect::<Vec<_>>(), want(&a[2..]));
    // NSQ's timestamps are kept.
    assert_eq!(got_a["a-2"].0, a[2].timestamp_ns);
    assert_eq!(got_a["shared-1"].0, shared[1].timestamp_ns);
    assert!(got_a["a-2"].1 > a[2].attempts);
    let got_b = consume(&nsqd, "orders", "b", 8);
    assert_eq!(got_b.keys().cloned().collect::<Vec<_>>(), want(&b[3..]));

    // The paused channel delivers nothing until unpaused, then its own messages.
    http_post(nsqd.http, "/channel/unpause?topic=orders&channel=p", b"").unwrap();
    let got_p = consume(&nsqd, "orders", "p", 6);
    assert_eq!(got_p.keys().cloned().collect::<Vec<_>>(), want(&p));

    // Everything finished: depth 0 once the FINs are processed.
    assert!(wait_until(Duration::from_secs(5), || {
        ["a", "b", "p"]
            .iter()
            .all(|c| channel_stats(&nsqd, "orders", c)["depth"] == 0)
    }));

    // A restart imports nothing again and keeps the (now empty) channels.
    let nsqd = nsqd.restart().unwrap();
    assert_eq!(imported_dirs(data).len(), 1);
    for c in ["a", "b", "p"] {
        assert_eq!(channel_stats(&nsqd, "orders", c)["depth"], 0);
        consume(&nsqd, "orders", c, 0);
    }
}
