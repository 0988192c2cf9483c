//! The command-line tools against real data: nsq_tail consuming from our nsqd, and
//! nsq_inspect reading a data directory nsqd wrote (verify, export, corruption reports).

use std::process::{Command, Stdio};
use std::time::Duration;

use nsq_blackbox_tests::{bin, http_post, run_tool, wait_output, Nsqd, RawConn};

#[test]
fn nsq_tail_prints_n_messages() {
    let nsqd = Nsqd::start(&[]).unwrap();
    for i in 0..5 {
        let (st, _) = http_post(
            nsqd.http,
            "/pub?topic=tailed",
            format!("line{i}").as_bytes(),
        )
        .unwrap();
        assert_eq!(st, 200);
    }
    let text = run_tool(
        "nsq_tail",
        &[
            "--topic=tailed",
            &format!("--nsqd-tcp-address={}", nsqd.tcp),
            "-n",
            "5",
            "--print-topic",
        ],
        Duration::from_secs(20),
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        (0..5)
            .map(|i| format!("tailed | line{i}"))
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
    );
}

fn inspect(data: &std::path::Path, args: &[&str]) -> std::process::Output {
    let child = Command::new(bin("nsq_inspect"))
        .arg(format!("--data-path={}", data.display()))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_output(child, Duration::from_secs(30)).unwrap()
}

#[test]
fn nsq_inspect_verify_export_and_corruption() {
    let nsqd = Nsqd::start(&["--mem-queue-size=0", "--max-bytes-per-file=4096"]).unwrap();
    http_post(nsqd.http, "/topic/create?topic=t", b"").unwrap();
    http_post(nsqd.http, "/channel/create?topic=t&channel=c", b"").unwrap();
    let bodies: Vec<String> = (0..100).map(|i| format!("body-{i:03}")).collect();
    let (st, _) = http_post(nsqd.http, "/mpub?topic=t", bodies.join("\n").as_bytes()).unwrap();
    assert_eq!(st, 200);

    // While nsqd runs: the view works and sees everything.
    let out = inspect(&nsqd.data, &["verify"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("100 valid records"));

    let nsqd = nsqd.restart().unwrap();
    let data = nsqd.data.clone();
    // Offline export equals what a consumer receives.
    let export = data.join("export.txt");
    let out = inspect(
        &data,
        &[
            "export",
            "--topic=t",
            &format!("--output={}", export.display()),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let exported: Vec<String> = std::fs::read_to_string(&export)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(exported, bodies);
    let mut c = RawConn::connect(nsqd.tcp).unwrap();
    c.cmd("SUB t c", None).unwrap();
    c.expect_response("OK").unwrap();
    c.cmd("RDY 100", None).unwrap();
    let consumed: Vec<String> = (0..100)
        .map(|_| String::from_utf8_lossy(&c.read_message().unwrap().body).to_string())
        .collect();
    assert_eq!(consumed, exported);
    drop(c);

    let out = inspect(&data, &["topics"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.contains("records=100") && text.contains("    c  read="),
        "{text}"
    );
    let out = inspect(
        &data,
        &["dump", "--topic=t", "--from=5", "--to=7", "--format=json"],
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["body"], "body-005");

    // Corrupt one record's body in the first segment and find it reported exactly.
    let mut nsqd = nsqd;
    nsqd.daemon.terminate(Duration::from_secs(20)).unwrap();
    let seg = data.join("topics/t_t/00000000000000000000.seg");
    let mut bytes = std::fs::read(&seg).unwrap();
    // v2 segment: a 16-byte segment header, then records with a 25-byte header (plain
    // messages carry no optional fields); see docs/FORMAT.md.
    let rec_len = 25 + "body-000".len();
    let victim = 3; // the fourth record
    let offset = 16 + victim * rec_len;
    bytes[offset + 25 + 2] ^= 0x20;
    std::fs::write(&seg, &bytes).unwrap();
    let out = inspect(&data, &["verify", "--topic=t"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!(
            "segment={} offset={offset} reason=CRC mismatch",
            seg.display()
        )),
        "{text}"
    );
    assert!(text.contains("99 valid records, 1 corrupt"), "{text}");

    // Exporting the corrupt topic warns, fails, and leaves nothing under the final name.
    let target = data.join("export.log");
    let out = inspect(
        &data,
        &[
            "export",
            "--topic=t",
            &format!("--output={}", target.display()),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("WARNING: corrupt record skipped")
            && err.contains(&format!("offset={offset}")),
        "{err}"
    );
    assert!(!target.exists(), "partial export under the final name");
    let partial = data.join("export.log.partial");
    let lines = std::fs::read_to_string(&partial).unwrap();
    assert_eq!(lines.lines().count(), 99);
    assert!(!lines.contains("body-003"));
}

#[test]
fn nsq_inspect_rejects_a_non_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let out = inspect(dir.path(), &["topics"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an nsqd data directory"));
}

/// The number before `needle` in `text` (e.g. "1234 msgs in").
fn number_before(text: &str, needle: &str) -> u64 {
    let i = text
        .find(needle)
        .unwrap_or_else(|| panic!("{needle:?} in {text}"));
    text[..i]
        .split_whitespace()
        .last()
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("number before {needle:?} in {text}"))
}

#[test]
fn nsq_bench_writer_then_reader_count_the_same_messages() {
    let nsqd = Nsqd::start(&[]).unwrap();
    let addr = format!("--nsqd-tcp-address={}", nsqd.tcp);
    let run = |args: &[&str]| {
        let mut args = args.to_vec();
        args.push(&addr);
        run_tool("nsq_bench", &args, Duration::from_secs(60))
    };
    let w = run(&[
        "writer",
        "--runfor=1s",
        "--size=100",
        "--batch-size=50",
        "--concurrency=2",
    ]);
    let written = number_before(&w, "msgs in");
    assert!(written > 0 && written.is_multiple_of(50), "{w}");
    assert!(
        w.contains("msgs/s") && w.contains("MB/s") && w.contains("p99"),
        "{w}"
    );
    let r = run(&[
        "reader",
        "--runfor=30s",
        "--size=100",
        "--rdy=500",
        "--idle=1s",
    ]);
    assert_eq!(number_before(&r, "msgs in"), written, "{r}");
    assert!(r.contains("latency p50"), "{r}");
    let stats = nsqd.stats().unwrap();
    assert_eq!(stats["topics"][0]["channels"][0]["depth"], 0, "{stats}");
}

/// `nsq_inspect cursors`: each channel's position and lag in messages and time, read from
/// the data directory while nsqd runs.
#[test]
fn nsq_inspect_cursors_shows_each_channels_lag() {
    let nsqd = Nsqd::start(&["--mem-queue-size=0", "--sync-every=1"]).unwrap();
    http_post(nsqd.http, "/topic/create?topic=t", b"").unwrap();
    http_post(nsqd.http, "/channel/create?topic=t&channel=fast", b"").unwrap();
    http_post(nsqd.http, "/channel/create?topic=t&channel=slow", b"").unwrap();
    let bodies: Vec<String> = (0..50).map(|i| format!("m{i}")).collect();
    http_post(nsqd.http, "/mpub?topic=t", bodies.join("\n").as_bytes()).unwrap();
    let mut c = RawConn::connect(nsqd.tcp).unwrap();
    c.cmd("SUB t fast", None).unwrap();
    c.expect_response("OK").unwrap();
    c.cmd("RDY 50", None).unwrap();
    for _ in 0..50 {
        let m = c.read_message().unwrap();
        c.cmd(&format!("FIN {}", m.id), None).unwrap();
    }
    let line = |text: &str, ch: &str| -> String {
        text.lines()
            .find(|l| l.trim_start().starts_with(&format!("{ch} ")))
            .unwrap_or_default()
            .to_string()
    };
    // Cursors reach the snapshot files with the next sync round.
    let mut text = String::new();
    let ok = nsq_blackbox_tests::wait_until(Duration::from_secs(10), || {
        text = String::from_utf8_lossy(&inspect(&nsqd.data, &["cursors", "--topic=t"]).stdout)
            .to_string();
        line(&text, "fast").contains("lag_messages=0 ")
    });
    assert!(ok, "{text}");
    let slow = line(&text, "slow");
    assert!(
        slow.contains("read=0") && slow.contains("lag_messages=50"),
        "{text}"
    );
    assert!(
        !slow.contains("lag_time=-"),
        "the slow channel lags in time too: {text}"
    );
    assert!(line(&text, "fast").contains("lag_time=-"), "{text}");
}
