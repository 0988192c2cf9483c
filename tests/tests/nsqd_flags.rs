//! nsqd's command line: NSQ's flag names (also Go's single-dash form), --config TOML,
//! --version, clear errors for bad values, and a clean exit on SIGTERM/SIGINT.

use std::process::Command;
use std::time::Duration;

use nsq_blackbox_tests::{bin, http_json, Nsqd};

#[test]
fn version_flag() {
    let out = Command::new(bin("nsqd")).arg("--version").output().unwrap();
    assert!(out.status.success());
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.starts_with("nsqd v"), "{s}");
}

#[test]
fn bad_values_are_refused_clearly() {
    for args in [
        &["--mem-queue-size=-5"][..],
        &["--msg-timeout=soon"],
        &["--max-deflate-level=12"],
        &["--no-such-flag"],
        &["--tls-required=true"],
        &["--lookupd-tcp-address=nohostport"],
    ] {
        let out = Command::new(bin("nsqd")).args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.trim().is_empty(), "{args:?}: no message");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn config_file_and_go_style_flags() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("nsqd.toml");
    std::fs::write(
        &cfg,
        "mem_queue_size = 123\nmsg_timeout = \"30s\"\nmax_rdy_count = 50\n",
    )
    .unwrap();
    let nsqd = Nsqd::start(&[&format!("--config={}", cfg.display()), "-max-rdy-count=60"]).unwrap();
    assert_eq!(http_json(nsqd.http, "/config/mem_queue_size").unwrap(), 123);
    assert_eq!(
        http_json(nsqd.http, "/config/msg_timeout").unwrap(),
        30_000_000_000u64
    );
    // The command line wins over the file.
    assert_eq!(http_json(nsqd.http, "/config/max_rdy_count").unwrap(), 60);
}

#[test]
fn sigterm_and_sigint_exit_zero() {
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let mut nsqd = Nsqd::start(&[]).unwrap();
        nsq_blackbox_tests::signal(nsqd.daemon.pid(), sig);
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        let code = loop {
            if let Some(s) = nsqd.daemon.child.try_wait().unwrap() {
                break s.code();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "nsqd did not exit on signal {sig}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(code, Some(0), "log:\n{}", nsqd.daemon.log_text());
    }
}
