//! Archiving straight from the segments (issue 11): `nsq_to_file --data-path` as an
//! external reader of a topic's log, with nsqd running (GC on, small segments), stopped,
//! and killed; `nsq_inspect replay` by sequence and by time; nsq_to_file's NSQ file naming
//! with crash safety over TCP (issue 9).

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use nsq_blackbox_tests::{bin, http_post, start_daemon, wait_output, wait_until, Daemon, Nsqd};

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

fn bodies(prefix: &str, from: usize, to: usize) -> Vec<String> {
    (from..to).map(|i| format!("{prefix}-{i:06}")).collect()
}

/// Every line of every file under `dir` (gzip decompressed), files in name order.
fn lines_in(dir: &Path) -> Vec<String> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.is_file()
                    && !p
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    let mut out = Vec::new();
    for p in files {
        let mut text = String::new();
        let f = std::fs::File::open(&p).unwrap();
        if p.extension().is_some_and(|x| x == "gz") {
            flate2::read::MultiGzDecoder::new(f)
                .read_to_string(&mut text)
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        } else {
            std::io::BufReader::new(f)
                .read_to_string(&mut text)
                .unwrap();
        }
        out.extend(text.lines().map(String::from));
    }
    out
}

/// The archiver's channel in /stats: (depth, marked external).
fn reader_state(nsqd: &Nsqd, topic: &str, name: &str) -> Option<(u64, bool)> {
    let s = nsqd.stats().ok()?;
    let t = s["topics"]
        .as_array()?
        .iter()
        .find(|t| t["topic_name"] == topic)?;
    let c = t["channels"]
        .as_array()?
        .iter()
        .find(|c| c["channel_name"] == name)?;
    Some((
        c["depth"].as_u64()?,
        c["external"].as_bool().unwrap_or(false),
    ))
}

fn archiver(data: &Path, out: &Path, topic: &str, extra: &[&str], log: &Path) -> Daemon {
    let mut args = vec![
        format!("--data-path={}", data.display()),
        format!("--topic={topic}"),
        format!("--output-dir={}", out.display()),
        "--host-identifier=h".to_string(),
        "--max-in-flight=500".to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    start_daemon("nsq_to_file", &args, log).unwrap()
}

/// Run nsq_to_file --data-path ... --exit-at-end to completion; its exit status and log.
fn archive_to_end(data: &Path, out: &Path, topic: &str, extra: &[&str]) -> (bool, String) {
    let mut args = vec![
        format!("--data-path={}", data.display()),
        format!("--topic={topic}"),
        format!("--output-dir={}", out.display()),
        "--host-identifier=h".to_string(),
        "--exit-at-end".to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let child = Command::new(bin("nsq_to_file"))
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let o = wait_output(child, Duration::from_secs(60)).unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn segment_firsts(data: &Path, topic: &str) -> Vec<u64> {
    let mut v: Vec<u64> = std::fs::read_dir(data.join("topics").join(format!("t_{topic}")))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .strip_suffix(".seg")
                        .and_then(|s| s.parse().ok())
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn cursor_next(data: &Path, topic: &str, reader: &str) -> Option<u64> {
    let p = data
        .join("topics")
        .join(format!("t_{topic}"))
        .join("readers")
        .join(format!("{reader}.cursor"));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(p).ok()?).ok()?;
    v["next"].as_u64()
}

/// Every expected line once, in order; returns how many lines were duplicates.
fn check_once_in_order(lines: &[String], expected: &[String]) -> usize {
    let mut count: HashMap<&str, usize> = HashMap::new();
    for l in lines {
        *count.entry(l.as_str()).or_default() += 1;
    }
    let missing: Vec<&String> = expected
        .iter()
        .filter(|b| !count.contains_key(b.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "lost {} messages, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert_eq!(count.len(), expected.len(), "unexpected lines");
    lines.len() - expected.len()
}

#[test]
fn archives_100k_from_the_segments_exactly_once_while_nsqd_runs_and_gc_runs() {
    let nsqd = Nsqd::start(&["--max-bytes-per-file=65536"]).unwrap();
    http_post(nsqd.http, "/topic/create?topic=arch", b"").unwrap();
    http_post(nsqd.http, "/channel/create?topic=arch&channel=c", b"").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut d = archiver(&nsqd.data, &out, "arch", &[], &dir.path().join("a.log"));
    assert!(
        wait_until(Duration::from_secs(20), || reader_state(
            &nsqd,
            "arch",
            "nsq_to_file"
        )
        .is_some_and(|(_, ext)| ext)),
        "archiver not in /stats: {}",
        d.log_text()
    );
    let n = 100_000;
    let all = bodies("m", 0, n);
    let mut gc_seen = false;
    for (i, chunk) in all.chunks(5000).enumerate() {
        publish(&nsqd, "arch", chunk);
        // nsqd's own channel finishes everything at once: only the archiver holds GC back.
        let (st, _) = http_post(nsqd.http, "/channel/empty?topic=arch&channel=c", b"").unwrap();
        assert_eq!(st, 200);
        // GC never removes what the archiver has not passed.
        let firsts = segment_firsts(&nsqd.data, "arch");
        let next = cursor_next(&nsqd.data, "arch", "nsq_to_file").unwrap_or(0);
        if let Some(&first) = firsts.first() {
            assert!(
                first <= next,
                "round {i}: oldest segment starts at {first}, archiver is at {next}"
            );
            gc_seen |= first > 0;
        }
    }
    assert!(
        wait_until(Duration::from_secs(120), || reader_state(
            &nsqd,
            "arch",
            "nsq_to_file"
        )
        .is_some_and(|(depth, _)| depth == 0)),
        "not caught up: {:?}\n{}",
        reader_state(&nsqd, "arch", "nsq_to_file"),
        d.log_text()
    );
    // Once it has passed them, GC removes the segments (it ran while we published, too).
    assert!(
        wait_until(Duration::from_secs(20), || segment_firsts(
            &nsqd.data, "arch"
        )
        .len()
            <= 2),
        "segments left: {:?}",
        segment_firsts(&nsqd.data, "arch")
    );
    let left = segment_firsts(&nsqd.data, "arch");
    assert!(
        gc_seen || left.first().is_some_and(|&f| f > 0),
        "GC never ran: {left:?} {:?}",
        std::fs::read_dir(nsqd.data.join("topics/t_arch")).map(|rd| rd
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .collect::<Vec<_>>())
    );
    assert_eq!(
        d.terminate(Duration::from_secs(30)).unwrap(),
        Some(0),
        "{}",
        d.log_text()
    );
    let lines = lines_in(&out);
    assert_eq!(check_once_in_order(&lines, &all), 0, "written twice");
    assert_eq!(lines, all, "in order");
    let name = std::fs::read_dir(&out)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| !n.starts_with('.'))
        .unwrap();
    assert!(
        name.starts_with("arch.h.") && name.ends_with(".log"),
        "NSQ's default name: {name}"
    );
}

#[test]
fn kill9_of_nsqd_and_of_the_archiver_loses_nothing() {
    // mem-queue-size=0: every acknowledged publish is in the log, which a kill -9 keeps.
    let nsqd = Nsqd::start(&["--mem-queue-size=0", "--max-bytes-per-file=32768"]).unwrap();
    http_post(nsqd.http, "/topic/create?topic=k9", b"").unwrap();
    http_post(nsqd.http, "/channel/create?topic=k9&channel=c", b"").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let work = dir.path().join("work");
    let extra = [
        "--gzip",
        "--rotate-size=50000",
        &format!("--work-dir={}", work.display()) as &str,
    ];
    let mut d = archiver(&nsqd.data, &out, "k9", &extra, &dir.path().join("a1.log"));
    let all = bodies("k", 0, 30_000);
    publish(&nsqd, "k9", &all[..10_000]);
    // Kill the archiver part-way.
    assert!(
        wait_until(Duration::from_secs(60), || cursor_next(
            &nsqd.data,
            "k9",
            "nsq_to_file"
        )
        .is_some_and(|n| n >= 2000)),
        "{}",
        d.log_text()
    );
    d.kill9();
    let mut d = archiver(&nsqd.data, &out, "k9", &extra, &dir.path().join("a2.log"));
    publish(&nsqd, "k9", &all[10_000..20_000]);
    http_post(nsqd.http, "/channel/empty?topic=k9&channel=c", b"").unwrap();
    // Kill nsqd part-way through the archiver's work, then go on with a new nsqd.
    assert!(
        wait_until(Duration::from_secs(60), || cursor_next(
            &nsqd.data,
            "k9",
            "nsq_to_file"
        )
        .is_some_and(|n| n >= 12_000)),
        "{}",
        d.log_text()
    );
    let nsqd = nsqd.crash_restart().unwrap();
    publish(&nsqd, "k9", &all[20_000..]);
    http_post(nsqd.http, "/channel/empty?topic=k9&channel=c", b"").unwrap();
    assert!(
        wait_until(Duration::from_secs(120), || reader_state(
            &nsqd,
            "k9",
            "nsq_to_file"
        )
        .is_some_and(|(depth, _)| depth == 0)),
        "{:?}\n{}",
        reader_state(&nsqd, "k9", "nsq_to_file"),
        d.log_text()
    );
    assert_eq!(
        d.terminate(Duration::from_secs(30)).unwrap(),
        Some(0),
        "{}",
        d.log_text()
    );
    let lines = lines_in(&out);
    let dups = check_once_in_order(&lines, &all);
    // At most the last unflushed batch (500 messages) twice; the design writes none twice.
    assert!(dups <= 500, "{dups} duplicates");
    assert_eq!(dups, 0, "the cursor commits the file length: no duplicates");
    assert!(
        lines_in(&work).is_empty(),
        "work dir keeps nothing after a clean stop"
    );
}

#[test]
fn archives_a_stopped_data_directory_and_resumes_with_nsqd() {
    let nsqd = Nsqd::start(&["--max-bytes-per-file=16384"]).unwrap();
    let first = bodies("s", 0, 5000);
    publish(&nsqd, "off", &first);
    let data = nsqd.data.clone();
    let mut nsqd = nsqd;
    assert_eq!(
        nsqd.daemon.terminate(Duration::from_secs(20)).unwrap(),
        Some(0)
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let (ok, log) = archive_to_end(&data, &out, "off", &[]);
    assert!(ok, "{log}");
    assert_eq!(lines_in(&out), first);
    // Again: nothing new, nothing written twice.
    let (ok, log) = archive_to_end(&data, &out, "off", &[]);
    assert!(ok, "{log}");
    assert_eq!(lines_in(&out), first);
    // nsqd back: it shows the reader as a channel with nothing to read, and puts new
    // messages (kept in memory otherwise) into the log for it.
    let tmp = nsqd._tmp.take();
    let mut nsqd = Nsqd::start_in(&data, &[]).unwrap();
    nsqd._tmp = tmp;
    assert_eq!(reader_state(&nsqd, "off", "nsq_to_file"), Some((0, true)));
    let more = bodies("s", 5000, 5010);
    publish(&nsqd, "off", &more);
    assert_eq!(reader_state(&nsqd, "off", "nsq_to_file"), Some((10, true)));
    let mut all = first.clone();
    all.extend(more);
    assert!(
        wait_until(Duration::from_secs(20), || {
            let (ok, _) = archive_to_end(&data, &out, "off", &[]);
            ok && lines_in(&out).len() >= all.len()
        }),
        "{:?}",
        lines_in(&out).len()
    );
    assert_eq!(lines_in(&out), all);
    // nsq_inspect shows it beside the channels.
    let o = Command::new(bin("nsq_inspect"))
        .args([
            format!("--data-path={}", data.display()),
            "cursors".into(),
            "--topic=off".into(),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("nsq_to_file  external reader next=5010"),
        "{text}"
    );
    // Unregistered: gone from /stats.
    let (ok, log) = {
        let o = Command::new(bin("nsq_to_file"))
            .args([
                format!("--data-path={}", data.display()),
                "--topic=off".into(),
                "--unregister".into(),
            ])
            .output()
            .unwrap();
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
        )
    };
    assert!(ok && log.contains("unregistered"), "{log}");
    assert_eq!(reader_state(&nsqd, "off", "nsq_to_file"), None);
    // A damaged cursor file: a clear error, exit 1.
    let cursor = data.join("topics/t_off/readers/nsq_to_file.cursor");
    std::fs::write(&cursor, b"garbage").unwrap();
    let (ok, log) = archive_to_end(&data, &out, "off", &[]);
    assert!(!ok);
    assert!(log.contains("not a cursor file"), "{log}");
    let c = reader_state(&nsqd, "off", "nsq_to_file");
    assert!(c.is_some(), "a damaged reader is shown");
    // A topic that is not there.
    let (ok, log) = archive_to_end(&data, &out, "absent", &[]);
    assert!(!ok && log.contains("absent"), "{log}");
}

fn inspect(data: &Path, args: &[&str]) -> (bool, String, String) {
    let child = Command::new(bin("nsq_inspect"))
        .arg(format!("--data-path={}", data.display()))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let o = wait_output(child, Duration::from_secs(30)).unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn nsq_inspect_replay_by_sequence_and_by_time() {
    let nsqd = Nsqd::start(&["--mem-queue-size=0"]).unwrap();
    let early = bodies("r", 0, 10);
    let late = bodies("r", 10, 20);
    publish(&nsqd, "rp", &early);
    std::thread::sleep(Duration::from_millis(30));
    let cut_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    std::thread::sleep(Duration::from_millis(30));
    publish(&nsqd, "rp", &late);
    let lines = |s: &str| s.lines().map(String::from).collect::<Vec<_>>();
    // By sequence: [3, 7).
    let (ok, o, e) = inspect(
        &nsqd.data,
        &[
            "replay",
            "--topic=rp",
            "--from=seq:3",
            "--to=seq:7",
            "--format=body",
        ],
    );
    assert!(ok, "{e}");
    assert_eq!(lines(&o), early[3..7].to_vec());
    // By time, from and to (unix ms and RFC 3339).
    let cut = cut_ms.to_string();
    let (ok, o, e) = inspect(
        &nsqd.data,
        &[
            "replay",
            "--topic=rp",
            &format!("--from={cut}"),
            "--format=body",
        ],
    );
    assert!(ok, "{e}");
    assert_eq!(lines(&o), late);
    let rfc = Command::new("date")
        .args([
            "-u",
            "-d",
            &format!("@{}.{:03}", cut_ms / 1000, cut_ms % 1000),
            "+%Y-%m-%dT%H:%M:%S.%3NZ",
        ])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap();
    let (ok, o, e) = inspect(
        &nsqd.data,
        &[
            "replay",
            "--topic=rp",
            &format!("--from={rfc}"),
            "--format=body",
        ],
    );
    assert!(ok, "{rfc}: {e}");
    assert_eq!(lines(&o), late, "{rfc}");
    let (ok, o, e) = inspect(
        &nsqd.data,
        &[
            "replay",
            "--topic=rp",
            &format!("--to={cut}"),
            "--format=json",
        ],
    );
    assert!(ok, "{e}");
    let got: Vec<String> = o
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["body"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(got, early);
    let (ok, o, _) = inspect(
        &nsqd.data,
        &[
            "replay",
            "--topic=rp",
            "--from=2000-01-01T00:00:00Z",
            "--to=seq:2",
        ],
    );
    assert!(ok);
    assert_eq!(o.lines().count(), 2);
    assert!(o.lines().all(|l| l.contains("attempts=")), "{o}");
    // Export to a file: complete, under its name.
    let file = nsqd.data.join("replayed.log");
    let (ok, _, e) = inspect(
        &nsqd.data,
        &[
            "replay",
            "--topic=rp",
            &format!("--from={cut}"),
            &format!("--output={}", file.display()),
        ],
    );
    assert!(ok, "{e}");
    assert!(e.contains("replayed 10 messages"), "{e}");
    assert_eq!(lines(&std::fs::read_to_string(&file).unwrap()), late);
    // A bound it cannot read is a clear error.
    let (ok, _, e) = inspect(&nsqd.data, &["replay", "--topic=rp", "--from=yesterday"]);
    assert!(!ok);
    assert!(e.contains("RFC 3339"), "{e}");
}

#[test]
fn nsq_to_file_over_tcp_writes_final_names_and_cuts_a_killed_runs_tail() {
    let nsqd = Nsqd::start(&[]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let work = dir.path().join("work");
    let start = |extra: &[&str], log: &str| {
        let mut args = vec![
            "--topic=nm".to_string(),
            format!("--nsqd-tcp-address={}", nsqd.tcp),
            format!("--output-dir={}", out.display()),
            "--host-identifier=h".into(),
            "--datetime-format=%Y".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        start_daemon("nsq_to_file", &args, &dir.path().join(log)).unwrap()
    };
    let year = std::process::Command::new("date")
        .arg("+%Y")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap();
    let all = bodies("n", 0, 3000);
    publish(&nsqd, "nm", &all[..1000]);
    let mut d = start(&[], "t1.log");
    // The current file has its final name while written (no temporary name).
    let name = out.join(format!("nm.h.{year}.log"));
    assert!(
        wait_until(Duration::from_secs(20), || lines_in(&out).len() == 1000),
        "{}",
        d.log_text()
    );
    assert!(
        name.exists(),
        "{:?}",
        std::fs::read_dir(&out).unwrap().count()
    );
    // A killed run: its torn tail (here: bytes after the last commit) is cut on restart,
    // and the next run appends to the same period's file.
    d.kill9();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&name)
        .unwrap();
    std::io::Write::write_all(&mut f, b"torn-line-without-newl").unwrap();
    drop(f);
    publish(&nsqd, "nm", &all[1000..2000]);
    let mut d = start(&[], "t2.log");
    assert!(
        wait_until(Duration::from_secs(30), || lines_in(&out).len() >= 2000),
        "{}",
        d.log_text()
    );
    assert_eq!(d.terminate(Duration::from_secs(20)).unwrap(), Some(0));
    let lines = lines_in(&out);
    assert!(
        !lines.iter().any(|l| l.starts_with("torn")),
        "torn tail cut"
    );
    assert!(check_once_in_order(&lines, &all[..2000]) <= 200);
    // With a work dir: numbered, written in the work dir under the final name, moved on
    // close; a restart in the same period takes the next revision.
    publish(&nsqd, "nm", &all[2000..2500]);
    let wd = format!("--work-dir={}", work.display());
    let ff = "--filename-format=<TOPIC>.<HOST><REV>.<DATETIME>.log";
    let mut d = start(&[&wd, ff], "t3.log");
    let w0 = work.join(format!("nm.h-000000.{year}.log"));
    assert!(
        wait_until(Duration::from_secs(20), || lines_in(&work).len() == 500),
        "{}",
        d.log_text()
    );
    assert!(w0.exists());
    assert_eq!(d.terminate(Duration::from_secs(20)).unwrap(), Some(0));
    assert!(!w0.exists());
    assert!(out.join(format!("nm.h-000000.{year}.log")).exists());
    publish(&nsqd, "nm", &all[2500..]);
    let mut d = start(&[&wd, ff], "t4.log");
    assert!(
        wait_until(Duration::from_secs(20), || lines_in(&work).len() == 500),
        "{}",
        d.log_text()
    );
    assert!(work.join(format!("nm.h-000001.{year}.log")).exists());
    assert_eq!(d.terminate(Duration::from_secs(20)).unwrap(), Some(0));
    assert!(out.join(format!("nm.h-000001.{year}.log")).exists());
    let lines = lines_in(&out);
    assert!(check_once_in_order(&lines, &all) <= 200);
}
