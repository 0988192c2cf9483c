//! Compatibility with a real third-party client: pynsq (from PyPI) Writer and Reader
//! against our nsqd. Each test starts its own nsqd on free loopback ports with a temporary
//! data directory; the Python side is tests/python/pynsq_check.py.

use std::time::Duration;

use nsq_blackbox_tests::{run_python, Nsqd};

fn check(nsqd: &Nsqd, mode: &str, count: usize, extra: &[String]) {
    let mut args = vec![
        mode.to_string(),
        "--tcp".into(),
        nsqd.tcp_arg(),
        "--count".into(),
        count.to_string(),
        "--topic".into(),
        format!("t_{mode}"),
        "--timeout".into(),
        "50".into(),
    ];
    args.extend(extra.iter().cloned());
    let out = run_python("pynsq_check.py", &args, Duration::from_secs(70)).expect("run pynsq");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "pynsq {mode} failed:\nstdout: {stdout}\nstderr: {stderr}\nnsqd log:\n{}",
        nsqd.daemon.log_text()
    );
}

#[test]
fn pynsq_exactly_once() {
    let nsqd = Nsqd::start(&[]).unwrap();
    check(&nsqd, "exactly_once", 2000, &[]);
}

#[test]
fn pynsq_exactly_once_spilling_to_disk() {
    // A tiny memory queue: most messages go through the segment files.
    let nsqd = Nsqd::start(&["--mem-queue-size=10", "--max-bytes-per-file=65536"]).unwrap();
    check(&nsqd, "exactly_once", 2000, &[]);
}

#[test]
fn pynsq_requeue_increments_attempts() {
    let nsqd = Nsqd::start(&[]).unwrap();
    check(&nsqd, "requeue", 100, &[]);
}

#[test]
fn pynsq_redelivery_after_timeout() {
    let nsqd = Nsqd::start(&[]).unwrap();
    check(&nsqd, "timeout", 20, &[]);
}

#[test]
fn pynsq_two_channels_each_get_everything() {
    let nsqd = Nsqd::start(&[]).unwrap();
    check(&nsqd, "two_channels", 500, &[]);
}

#[test]
fn pynsq_two_readers_split_a_channel() {
    let nsqd = Nsqd::start(&[]).unwrap();
    check(&nsqd, "two_readers", 500, &[]);
}

#[test]
fn pynsq_snappy() {
    let nsqd = Nsqd::start(&[]).unwrap();
    check(&nsqd, "snappy", 1000, &[]);
}

#[test]
fn pynsq_deflate() {
    let nsqd = Nsqd::start(&[]).unwrap();
    check(&nsqd, "deflate", 1000, &[]);
}

#[test]
fn pynsq_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = nsq_blackbox_tests::self_signed_cert(dir.path()).unwrap();
    let nsqd = Nsqd::start(&[
        &format!("--tls-cert={}", cert.display()),
        &format!("--tls-key={}", key.display()),
    ])
    .unwrap();
    check(&nsqd, "tls", 200, &[]);
}

#[test]
fn pynsq_restart_clean_and_crash() {
    // Clean restart: publish, SIGTERM, restart, consume everything.
    let topic = ["--topic".to_string(), "t_restart".to_string()];
    let nsqd = Nsqd::start(&[]).unwrap();
    check(&nsqd, "publish", 3000, &topic);
    let nsqd = nsqd.restart().unwrap();
    check(&nsqd, "consume", 3000, &topic);

    // Crash: with everything written and fsynced before OK, kill -9 loses nothing.
    let nsqd = Nsqd::start(&["--mem-queue-size=0", "--sync-every=1"]).unwrap();
    check(&nsqd, "publish", 3000, &topic);
    let nsqd = nsqd.crash_restart().unwrap();
    check(&nsqd, "consume", 3000, &topic);
}

/// Replay (beyond NSQ): a connected pynsq Reader drains a channel, the channel is rewound
/// over HTTP to a time, and the Reader receives exactly the messages published since
/// then, once each.
#[test]
fn pynsq_consumer_sees_a_rewind_to_a_time() {
    let nsqd = Nsqd::start(&["--retention-time=1h", "--mem-queue-size=50"]).unwrap();
    check(&nsqd, "replay", 300, &["--http".into(), nsqd.http_arg()]);
}
