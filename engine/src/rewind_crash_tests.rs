//! A rewind, then a crash at every step: every file operation of a scripted run of rewinds,
//! deliveries, FINs and cursor persistence is failed in turn (EIO, or a short write), and
//! the process "dies" right there (the data directory is copied as it is, without a close).
//! A restart from that copy, with or without the metadata store (which drops whatever sled
//! held that the snapshot files do not), must deliver a set of messages that one of the
//! durable states around the crash allows: never one that was not published, never one
//! twice, and never fewer than both states agree on.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use super::retention::copy_dir;
use super::*;
use crate::fs::{Fault, FaultPlan, Op as IoOp};
use crate::RewindTo;

#[derive(Clone, Copy, Debug)]
enum Step {
    /// Move channel `c` (persisted before it returns).
    Rewind(RewindTo),
    /// Take `n` messages from `c` and FIN the first `ack` of them (nothing persisted).
    Take { n: usize, ack: usize },
    /// A sync round: every cursor is persisted.
    Persist,
}

impl Step {
    fn persists(self) -> bool {
        !matches!(self, Step::Take { .. })
    }
}

/// No background persistence: only the script's steps (and close) write cursors.
fn script_opts(mem: usize) -> EngineOptions {
    EngineOptions {
        retention_time: Duration::from_secs(3600),
        sync_every: u64::MAX,
        sync_timeout: Duration::from_secs(3600),
        ..opts(mem, 1 << 20, 1)
    }
}

type Delivered = BTreeSet<usize>;

fn index(m: &crate::Message) -> usize {
    let s = std::str::from_utf8(&m.body).expect("test bodies are text");
    s.strip_prefix('m')
        .and_then(|n| n.parse().ok())
        .expect("test bodies are m<N>")
}

/// What a channel delivers after a restart, checked for duplicates.
fn delivered(e: &Engine, channel: &str, what: &str) -> Delivered {
    let got = drain(e, "t", channel);
    let set: Delivered = got.iter().map(index).collect();
    assert_eq!(
        set.len(),
        got.len(),
        "{what}: {channel} delivered a message twice"
    );
    assert!(set.iter().all(|&i| i < 300), "{what}: invented a message");
    set
}

/// Base directory: 300 messages; `c` has finished all of them, `d` the first 100.
/// Returns the timestamp of message 200.
fn build_base(dir: &Path, mem: usize) -> i64 {
    let e = Engine::open(dir, script_opts(mem)).unwrap();
    let t = e.topic("t").unwrap();
    let c = t.channel("c").unwrap();
    let d = t.channel("d").unwrap();
    // Two batches a little apart, so message 200 is the first with its timestamp.
    t.publish(msgs(0, 200), None).unwrap();
    std::thread::sleep(Duration::from_millis(5));
    t.publish(msgs(200, 100), None).unwrap();
    let mut all = Vec::new();
    while c.next_batch(1000, &mut all).unwrap() > 0 {}
    assert_eq!(all.len(), 300);
    for m in &all {
        c.ack(m.seq).unwrap();
    }
    let mut first = Vec::new();
    d.next_batch(100, &mut first).unwrap();
    assert_eq!(first.len(), 100);
    for m in &first {
        d.ack(m.seq).unwrap();
    }
    e.close().unwrap();
    all[200].timestamp_ns
}

/// [`run`]'s answer when the fault fired while the topic was opened (recovery reads it).
const OPENING: usize = usize::MAX;

/// Runs `steps` on `e`. With a plan, stops after the step during which its fault fired and
/// returns that step's index ([`OPENING`] if opening the topic failed).
fn run(e: &Engine, steps: &[Step], plan: Option<&FaultPlan>) -> Option<usize> {
    let (t, c) = match e.topic("t").and_then(|t| t.channel("c").map(|c| (t, c))) {
        Ok(tc) => tc,
        Err(err) => {
            assert!(plan.is_some_and(|p| p.all_fired()), "{err}");
            return Some(OPENING);
        }
    };
    for (i, step) in steps.iter().enumerate() {
        // Errors are the injected faults; the checks happen after the restart.
        match *step {
            Step::Rewind(to) => {
                let _ = t.rewind_channel("c", to);
            }
            Step::Take { n, ack } => {
                let mut got = Vec::new();
                if c.next_batch(n, &mut got).is_ok() {
                    for m in got.iter().take(ack) {
                        let _ = c.ack(m.seq);
                    }
                }
            }
            Step::Persist => {
                let _ = crate::sync::sync_round(&e.inner, true);
            }
        }
        if plan.is_some_and(|p| p.all_fired()) {
            return Some(i);
        }
    }
    None
}

/// Restart from `dir` (optionally without its metadata store) and read both channels.
fn restart(dir: &Path, mem: usize, drop_meta: bool, what: &str) -> (Delivered, Delivered) {
    if drop_meta {
        std::fs::remove_dir_all(dir.join("meta")).unwrap();
    }
    let e = reopen(dir, script_opts(mem));
    let out = (delivered(&e, "c", what), delivered(&e, "d", what));
    e.close().unwrap();
    out
}

fn range(r: std::ops::Range<usize>) -> Delivered {
    r.collect()
}

/// A crash during a step that persists may leave the state before it, the state after it,
/// or a merge of the two (the metadata store and a snapshot file disagreeing: the cursor
/// that redelivers more wins).
fn check_allowed(got: &Delivered, before: &Delivered, after: &Delivered, what: &str) {
    if got == before || got == after {
        return;
    }
    let union: Delivered = before.union(after).copied().collect();
    let lowest = union.first().copied().unwrap_or(300);
    assert!(
        got.is_superset(&union) && got.iter().all(|&i| i >= lowest),
        "{what}: delivered {} messages ({:?}..), allowed: {} before, {} after, or a merge",
        got.len(),
        got.first(),
        before.len(),
        after.len()
    );
}

#[test]
fn a_rewind_survives_a_crash_at_every_step() {
    for mem in [0, 10_000] {
        let base = tempfile::tempdir().unwrap();
        let ts200 = build_base(base.path(), mem);
        let steps = [
            Step::Rewind(RewindTo::Seq(100)),
            Step::Take { n: 50, ack: 25 },
            Step::Persist,
            Step::Rewind(RewindTo::Time(ts200)),
            Step::Take { n: 30, ack: 30 },
            Step::Persist,
            Step::Rewind(RewindTo::Latest),
            Step::Persist,
            Step::Rewind(RewindTo::Earliest),
        ];

        // The durable state after each prefix of the script, cleanly closed.
        let mut reference = Vec::new();
        for i in 0..=steps.len() {
            let dir = tempfile::tempdir().unwrap();
            copy_dir(base.path(), dir.path());
            let e = Engine::open(dir.path(), script_opts(mem)).unwrap();
            assert_eq!(run(&e, &steps[..i], None), None);
            e.close().unwrap();
            drop(e);
            reference.push(restart(dir.path(), mem, false, "reference"));
        }
        // What the script means, spelled out: the channel `d` is never touched.
        let c_ref: Vec<&Delivered> = reference.iter().map(|r| &r.0).collect();
        assert!(c_ref[0].is_empty(), "c had finished everything");
        assert_eq!(*c_ref[1], range(100..300), "rewound to 100");
        assert_eq!(*c_ref[3], range(125..300), "FINs of 100..125 persisted");
        let after_time: Delivered = range(125..150).union(&range(200..300)).copied().collect();
        assert_eq!(*c_ref[4], after_time, "in-flight kept, reading from 200");
        assert_eq!(
            *c_ref[7],
            range(125..150),
            "latest: only the in-flight remain"
        );
        assert_eq!(*c_ref[9], range(0..300), "earliest: the whole retained log");
        assert!(
            reference.iter().all(|r| r.1 == range(100..300)),
            "d unaffected"
        );

        // A crash between steps, without a fault: exactly the last persisted state.
        for i in 0..=steps.len() {
            let dir = tempfile::tempdir().unwrap();
            let crashed = tempfile::tempdir().unwrap();
            copy_dir(base.path(), dir.path());
            let e = Engine::open(dir.path(), script_opts(mem)).unwrap();
            run(&e, &steps[..i], None);
            copy_dir(dir.path(), crashed.path());
            e.close().unwrap();
            drop(e);
            let want = &reference[persisted_before_of(&steps, i)];
            for drop_meta in [false, true] {
                let what = format!("mem {mem}, crash after {i} steps, drop_meta {drop_meta}");
                let copy = tempfile::tempdir().unwrap();
                copy_dir(crashed.path(), copy.path());
                let got = restart(copy.path(), mem, drop_meta, &what);
                assert_eq!(got.0, want.0, "{what}");
                assert_eq!(got.1, want.1, "{what}");
            }
        }

        // How many calls of each kind the whole script makes.
        let counting = FaultPlan::new();
        {
            let dir = tempfile::tempdir().unwrap();
            copy_dir(base.path(), dir.path());
            let e =
                Engine::open_with_faults(dir.path(), script_opts(mem), counting.clone()).unwrap();
            let opened: Vec<u64> = KINDS.iter().map(|&k| counting.count(k)).collect();
            run(&e, &steps, None);
            let calls: Vec<u64> = KINDS.iter().map(|&k| counting.count(k)).collect();
            e.close().unwrap();
            let mut trials = 0;
            for (k, &kind) in KINDS.iter().enumerate() {
                for n in opened[k] + 1..=calls[k] {
                    for fault in faults_for(kind) {
                        crash_at(base.path(), mem, &steps, &reference, kind, n, fault);
                        trials += 1;
                    }
                }
            }
            assert!(trials >= 10, "the script made {trials} file operations");
        }
    }
}

const KINDS: [IoOp; 5] = [
    IoOp::Create,
    IoOp::Write,
    IoOp::Sync,
    IoOp::Rename,
    IoOp::Read,
];

fn faults_for(kind: IoOp) -> Vec<Fault> {
    match kind {
        IoOp::Write => vec![Fault::Eio, Fault::ShortWrite],
        _ => vec![Fault::Eio],
    }
}

/// Run the script with the `n`th call of `kind` failing, crash right after, restart and check.
fn crash_at(
    base: &Path,
    mem: usize,
    steps: &[Step],
    reference: &[(Delivered, Delivered)],
    kind: IoOp,
    n: u64,
    fault: Fault,
) {
    let dir = tempfile::tempdir().unwrap();
    let crashed = tempfile::tempdir().unwrap();
    copy_dir(base, dir.path());
    let plan = FaultPlan::new();
    let e = Engine::open_with_faults(dir.path(), script_opts(mem), plan.clone()).unwrap();
    // `n` counts from the engine's creation; opening made some calls already.
    let done = plan.count(kind);
    assert!(n > done);
    plan.fail_nth(kind, n - done, fault);
    let at = run(&e, steps, Some(&plan));
    copy_dir(dir.path(), crashed.path()); // kill -9 right after the failed call
    let _ = e.close();
    drop(e);
    let Some(i) = at else {
        panic!("{kind:?} #{n} was never called");
    };
    let (before, after, step) = if i == OPENING {
        (0, 0, "opening the topic".to_string())
    } else {
        let before = persisted_before_of(steps, i);
        let after = if steps[i].persists() { i + 1 } else { before };
        (before, after, format!("step {i} ({:?})", steps[i]))
    };
    for drop_meta in [false, true] {
        let what =
            format!("mem {mem}, {fault:?} on {kind:?} #{n} during {step}, drop_meta {drop_meta}");
        let copy = tempfile::tempdir().unwrap();
        copy_dir(crashed.path(), copy.path());
        let got = restart(copy.path(), mem, drop_meta, &what);
        check_allowed(&got.0, &reference[before].0, &reference[after].0, &what);
        assert_eq!(got.1, reference[0].1, "{what}: d unaffected");
    }
}

/// The state after the last step before `i` that persisted (the base if none).
fn persisted_before_of(steps: &[Step], i: usize) -> usize {
    (0..i)
        .rev()
        .find(|&j| steps[j].persists())
        .map_or(0, |j| j + 1)
}
