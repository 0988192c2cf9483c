//! Engine-level behaviour: delivery, multicast, spill, restart and crash recovery, and a
//! property test over random operation sequences.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;

use crate::{Engine, EngineOptions, NewMessage};

fn opts(mem: usize, max_bytes: u64, sync_every: u64) -> EngineOptions {
    EngineOptions {
        mem_queue_size: mem,
        max_bytes_per_file: max_bytes,
        sync_every,
        sync_timeout: Duration::from_millis(50),
        ..EngineOptions::default()
    }
}

fn msgs(from: usize, n: usize) -> Vec<NewMessage> {
    (from..from + n)
        .map(|i| NewMessage {
            body: Bytes::from(format!("m{i}")),
            deliver_at_ms: 0,
        })
        .collect()
}

/// Reopen, retrying while a previous instance's background thread still holds sled.
fn reopen(dir: &Path, o: EngineOptions) -> Engine {
    for _ in 0..100 {
        if let Ok(e) = Engine::open(dir, o) {
            return e;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    match Engine::open(dir, o) {
        Ok(e) => e,
        Err(err) => panic!("could not reopen engine: {err}"),
    }
}

fn drain(e: &Engine, topic: &str, channel: &str) -> Vec<crate::Message> {
    let ch = e.topic(topic).unwrap().channel(channel).unwrap();
    let mut out = Vec::new();
    while ch.next_batch(1000, &mut out).unwrap() > 0 {}
    out
}

fn bodies(ms: &[crate::Message]) -> Vec<String> {
    ms.iter()
        .map(|m| String::from_utf8_lossy(&m.body).to_string())
        .collect()
}

#[test]
fn multicast_and_late_channels() {
    for mem in [0, 5, 10000] {
        let dir = tempfile::tempdir().unwrap();
        let e = Engine::open(dir.path(), opts(mem, 4096, 100)).unwrap();
        let t = e.topic("t").unwrap();
        t.publish(msgs(0, 50), None).unwrap(); // no channel yet: the first one gets these
        let a = t.channel("a").unwrap();
        let b = t.channel("b").unwrap(); // later channel: new messages only
        t.publish(msgs(50, 50), None).unwrap();
        let got_a = drain(&e, "t", "a");
        let got_b = drain(&e, "t", "b");
        assert_eq!(got_a.len(), 100, "mem={mem}");
        assert_eq!(
            bodies(&got_b),
            (50..100).map(|i| format!("m{i}")).collect::<Vec<_>>()
        );
        let ids: BTreeSet<_> = got_a.iter().map(|m| m.id).collect();
        assert_eq!(ids.len(), 100, "ids unique");
        for m in &got_a {
            a.ack(m.seq).unwrap();
        }
        for m in &got_b {
            b.ack(m.seq).unwrap();
        }
        assert_eq!(a.stats().depth, 0);
        e.close().unwrap();
    }
}

#[test]
fn nsq_import_targets_one_channel_or_all_and_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let imported = |tag: &str, n: usize| -> Vec<crate::ImportedMessage> {
        (0..n)
            .map(|i| crate::ImportedMessage {
                timestamp_ns: 1_000 + i as i64,
                attempts: 3,
                body: Bytes::from(format!("{tag}{i}")),
            })
            .collect()
    };
    {
        let e = Engine::open(dir.path(), opts(2, 1 << 20, 1000)).unwrap();
        let t = e.topic("t").unwrap();
        t.publish(msgs(0, 2), None).unwrap(); // already there: both channels' backlog
        t.channel("a").unwrap();
        t.channel("b").unwrap();
        assert_eq!(t.import(Some("a"), imported("a", 3)).unwrap(), 3);
        assert_eq!(t.import(Some("b"), imported("b", 2)).unwrap(), 2);
        assert_eq!(t.import(None, imported("all", 2)).unwrap(), 2);
        assert!(t.import(Some("nope"), imported("x", 1)).is_err());
        e.sync_all().unwrap();
        let a = drain(&e, "t", "a");
        assert_eq!(bodies(&a), ["m0", "m1", "a0", "a1", "a2", "all0", "all1"]);
        assert_eq!(a[2].attempts, 3);
        assert_eq!(a[2].timestamp_ns, 1_000);
        // Ids are unique (each record's own).
        let ids: BTreeSet<[u8; 16]> = a.iter().map(|m| m.id).collect();
        assert_eq!(ids.len(), a.len());
        e.close().unwrap();
    }
    // After a restart, b (created after the backlog, so it starts at the end, as in NSQ)
    // still gets exactly its own and the shared ones.
    let e = reopen(dir.path(), opts(2, 1 << 20, 1000));
    assert_eq!(bodies(&drain(&e, "t", "b")), ["b0", "b1", "all0", "all1"]);
    e.close().unwrap();
}

#[test]
fn clean_restart_redelivers_exactly_the_unfinished() {
    for mem in [0, 10, 10000] {
        let dir = tempfile::tempdir().unwrap();
        let o = opts(mem, 2048, 1000);
        let e = Engine::open(dir.path(), o).unwrap();
        let t = e.topic("t").unwrap();
        let c = t.channel("c").unwrap();
        t.publish(msgs(0, 300), None).unwrap();
        let mut got = Vec::new();
        c.next_batch(200, &mut got).unwrap();
        for m in got.iter().filter(|m| m.seq % 2 == 0) {
            c.ack(m.seq).unwrap();
        }
        e.close().unwrap();
        drop((c, t, e));
        let e = reopen(dir.path(), o);
        let again = drain(&e, "t", "c");
        let expect: Vec<String> = (0..200)
            .filter(|i| i % 2 == 1)
            .chain(200..300)
            .map(|i| format!("m{i}"))
            .collect();
        assert_eq!(bodies(&again), expect, "mem={mem}");
        e.close().unwrap();
    }
}

#[test]
fn crash_keeps_everything_synced() {
    // mem 0 + sync_every 1: every publish is on disk once its callback ran. Dropping the
    // engine without close() loses unsynced cursor updates only: unfinished messages all
    // come back (finished ones may too: at least once).
    let dir = tempfile::tempdir().unwrap();
    let o = opts(0, 4096, 1);
    let e = Engine::open(dir.path(), o).unwrap();
    let t = e.topic("t").unwrap();
    let c = t.channel("c").unwrap();
    for i in 0..20 {
        let (tx, rx) = std::sync::mpsc::channel();
        t.publish(
            msgs(i * 10, 10),
            Some(Box::new(move |r| tx.send(r.is_ok()).unwrap_or(()))),
        )
        .unwrap();
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(5)),
            Ok(true),
            "durable callback"
        );
    }
    let mut got = Vec::new();
    c.next_batch(150, &mut got).unwrap();
    for m in &got[..50] {
        c.ack(m.seq).unwrap();
    }
    drop((c, t));
    drop(e); // no close: a crash as far as the engine is concerned
    let e = reopen(dir.path(), o);
    let again: BTreeSet<String> = bodies(&drain(&e, "t", "c")).into_iter().collect();
    let must: BTreeSet<String> = (50..200).map(|i| format!("m{i}")).collect();
    assert!(
        again.is_superset(&must),
        "lost: {:?}",
        must.difference(&again).take(5).collect::<Vec<_>>()
    );
    e.close().unwrap();
}

#[test]
fn torn_tail_is_cut_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(0, 1 << 20, 1);
    let e = Engine::open(dir.path(), o).unwrap();
    let t = e.topic("t").unwrap();
    t.channel("c").unwrap();
    t.publish(msgs(0, 10), None).unwrap();
    e.close().unwrap();
    drop((t, e));
    // Garble the middle of the last record.
    let seg = dir
        .path()
        .join("topics/t_t")
        .join(crate::log::segment_name(0));
    let mut bytes = std::fs::read(&seg).unwrap();
    let used = bytes.iter().rposition(|&b| b != 0).unwrap();
    bytes[used - 1] ^= 0xff;
    std::fs::write(&seg, &bytes).unwrap();
    let e = reopen(dir.path(), o);
    let t = e.topic("t").unwrap();
    assert!(t.recovery_report().truncated_bytes > 0);
    let got = drain(&e, "t", "c");
    assert_eq!(
        bodies(&got),
        (0..9).map(|i| format!("m{i}")).collect::<Vec<_>>()
    );
    e.close().unwrap();
}

#[test]
fn deferred_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(dir.path(), opts(0, 4096, 10)).unwrap();
    let t = e.topic("t").unwrap();
    t.channel("c").unwrap();
    t.publish(
        vec![NewMessage {
            body: Bytes::from_static(b"later"),
            deliver_at_ms: 12345,
        }],
        None,
    )
    .unwrap();
    let got = drain(&e, "t", "c");
    assert_eq!(
        got[0].deliver_at_ms, 12345,
        "deliver time kept for the server to honour"
    );
    e.delete_topic("t").unwrap();
    assert!(!dir.path().join("topics/t_t").exists());
    assert!(e.topic_names().unwrap().is_empty());
    assert!(
        t.publish(msgs(0, 1), None).is_err(),
        "publishing to a deleted topic fails"
    );
    assert!(e.topic("../x").is_err(), "names are validated");
    e.close().unwrap();
}

#[test]
fn segments_are_collected_once_finished() {
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(dir.path(), opts(0, 2048, 10)).unwrap();
    let t = e.topic("t").unwrap();
    let c = t.channel("c").unwrap();
    t.publish(msgs(0, 500), None).unwrap();
    let before = t.stats().segments;
    assert!(before > 3);
    for m in drain(&e, "t", "c") {
        c.ack(m.seq).unwrap();
    }
    let mut after = before;
    for _ in 0..100 {
        after = t.stats().segments;
        if after == 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(after, 1, "GC keeps only the writable segment");
    e.close().unwrap();
}

#[test]
fn stragglers_are_relocated_and_stop_pinning_segments() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(0, 2048, 10);
    let e = Engine::open(dir.path(), o).unwrap();
    let t = e.topic("t").unwrap();
    let (a, b) = (t.channel("a").unwrap(), t.channel("b").unwrap());
    t.publish(msgs(0, 600), None).unwrap();
    let before = t.stats().segments;
    assert!(before > 5, "{before} segments");
    // b finishes everything; a everything but three old messages (one it will finish
    // later through the sequence it was handed).
    let got_a = drain(&e, "t", "a");
    assert_eq!(got_a.len(), 600);
    for m in &got_a {
        if ![3, 4, 250].contains(&(m.seq as usize)) {
            a.ack(m.seq).unwrap();
        }
    }
    for m in drain(&e, "t", "b") {
        b.ack(m.seq).unwrap();
    }
    let mut after = before;
    for _ in 0..100 {
        after = t.stats().segments;
        if after <= 3 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(after <= 3, "old segments still pinned: {after} of {before}");
    // The copies are not handed out again in this run, and b never sees them.
    t.publish(msgs(600, 5), None).unwrap();
    assert_eq!(
        bodies(&drain(&e, "t", "a")),
        vec!["m600", "m601", "m602", "m603", "m604"]
    );
    assert_eq!(
        bodies(&drain(&e, "t", "b")),
        vec!["m600", "m601", "m602", "m603", "m604"]
    );
    // A FIN of the original sequence finishes the copy.
    a.ack(got_a[4].seq).unwrap();
    drop((a, b, t));
    e.close().unwrap();
    drop(e);

    // After a restart, exactly the unfinished stragglers come back, with their ids.
    let e = reopen(dir.path(), o);
    let again = drain(&e, "t", "a");
    let mut got = bodies(&again);
    got.sort();
    assert_eq!(
        got,
        vec!["m250", "m3", "m600", "m601", "m602", "m603", "m604"]
    );
    for m in &again {
        if m.body.as_ref() == b"m3" || m.body.as_ref() == b"m250" {
            let old: u64 = String::from_utf8_lossy(&m.body[1..]).parse().unwrap();
            assert_eq!(
                m.id,
                crate::record::message_id(old),
                "the copy keeps its id"
            );
            assert!(m.seq >= 600, "delivered from the relocated copy");
        }
    }
    // b gets back only its own unfinished ones, never a's copies.
    let mut b_again = bodies(&drain(&e, "t", "b"));
    b_again.sort();
    assert_eq!(b_again, vec!["m600", "m601", "m602", "m603", "m604"]);
    e.close().unwrap();
}

#[test]
fn read_only_view_while_open() {
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(dir.path(), opts(0, 2048, 1)).unwrap();
    let t = e.topic("t").unwrap();
    let c = t.channel("c").unwrap();
    t.publish(msgs(0, 100), None).unwrap();
    let mut got = Vec::new();
    c.next_batch(10, &mut got).unwrap();
    std::thread::sleep(Duration::from_millis(300)); // a sync round persists the cursor
    let view = crate::reader::DataDir::open(dir.path()).unwrap();
    let topics = view.topics().unwrap();
    assert_eq!(topics.len(), 1);
    let segs = view.segments(&topics[0], |_| {}).unwrap();
    assert_eq!(segs.iter().map(|s| s.records).sum::<u64>(), 100);
    assert!(segs.iter().all(|s| s.corrupt.is_empty()));
    let mut n = 0;
    view.records(&topics[0], 10, 20, |_| {
        n += 1;
        true
    })
    .unwrap();
    assert_eq!(n, 10);
    let cursors = view.cursors(&topics[0]).unwrap();
    assert_eq!(cursors.len(), 1);
    assert_eq!(cursors[0].read, 10);
    assert_eq!(cursors[0].unacked_count(), 10);
    e.close().unwrap();
}

#[derive(Debug, Clone)]
enum Op {
    Publish(usize),
    Take(usize),
    AckSome(u8),
    Restart,
    /// A GC round now: relocates stragglers and drops finished segments.
    Gc,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1usize..40).prop_map(Op::Publish),
        (1usize..40).prop_map(Op::Take),
        any::<u8>().prop_map(Op::AckSome),
        Just(Op::Restart),
        Just(Op::Gc),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Random publish/take/ack/clean-restart sequences: nothing is handed out twice within
    /// one run, no finished message comes back after a restart, and in the end every
    /// unfinished message is delivered.
    #[test]
    fn invariants(ops in proptest::collection::vec(op(), 1..25), mem in prop_oneof![Just(0usize), Just(3), Just(1000)]) {
        let dir = tempfile::tempdir().unwrap();
        let o = opts(mem, 256, 7);
        let mut e = Engine::open(dir.path(), o).unwrap();
        e.topic("t").unwrap().channel("c").unwrap();
        let mut published = 0usize;
        let mut acked: BTreeSet<String> = BTreeSet::new();
        let mut outstanding: BTreeMap<String, u64> = BTreeMap::new();
        let mut seen_this_run: BTreeSet<String> = BTreeSet::new();
        for op in ops {
            let t = e.topic("t").unwrap();
            let c = t.channel("c").unwrap();
            match op {
                Op::Publish(n) => {
                    t.publish(msgs(published, n), None).unwrap();
                    published += n;
                }
                Op::Take(n) => {
                    let mut got = Vec::new();
                    c.next_batch(n, &mut got).unwrap();
                    for m in got {
                        let b = String::from_utf8_lossy(&m.body).to_string();
                        prop_assert!(seen_this_run.insert(b.clone()), "{} twice in one run", b);
                        prop_assert!(!acked.contains(&b), "finished {} came back", b);
                        outstanding.insert(b, m.seq);
                    }
                }
                Op::AckSome(mask) => {
                    let keys: Vec<String> = outstanding.keys().cloned().collect();
                    for (i, k) in keys.into_iter().enumerate() {
                        if mask & (1 << (i % 8)) != 0 {
                            if let Some(seq) = outstanding.remove(&k) {
                                c.ack(seq).unwrap();
                                acked.insert(k);
                            }
                        }
                    }
                }
                Op::Gc => {
                    drop((c, t));
                    crate::sync::gc_round(&e.inner);
                }
                Op::Restart => {
                    drop((c, t));
                    e.close().unwrap();
                    drop(e);
                    e = reopen(dir.path(), o);
                    seen_this_run.clear();
                    outstanding.clear(); // they will be handed out again
                }
            }
        }
        let rest = drain(&e, "t", "c");
        let mut all: BTreeSet<String> = acked.clone();
        for m in &rest {
            let b = String::from_utf8_lossy(&m.body).to_string();
            prop_assert!(!acked.contains(&b), "finished {} came back at the end", b);
            prop_assert!(!seen_this_run.contains(&b), "{} handed out twice in one run", b);
            all.insert(b);
        }
        for b in outstanding.keys() {
            all.insert(b.clone());
        }
        prop_assert_eq!(all.len(), published, "some message was lost");
        e.close().unwrap();
    }
}

mod faults {
    //! The engine under injected storage faults (see `crate::fs`): a full disk, I/O errors,
    //! short writes and failed syncs never lose an acknowledged message, never hand out a
    //! corrupt body, and never panic.

    use super::*;
    use crate::fs::{Fault, FaultPlan, Op as IoOp};

    fn body_index(m: &crate::Message) -> Option<usize> {
        std::str::from_utf8(&m.body)
            .ok()?
            .strip_prefix('m')?
            .parse()
            .ok()
    }

    #[test]
    fn full_disk_refuses_publishes_then_recovers_by_itself() {
        let dir = tempfile::tempdir().unwrap();
        let plan = FaultPlan::new();
        let e = Engine::open_with_faults(dir.path(), opts(0, 4096, 1000), plan.clone()).unwrap();
        let t = e.topic("t").unwrap();
        let c = t.channel("c").unwrap();
        t.publish(msgs(0, 50), None).unwrap();
        plan.fail_always(IoOp::Allocate, Fault::NoSpace);
        plan.fail_always(IoOp::Write, Fault::NoSpace);
        let mut refused = 0;
        for i in 50..200 {
            match t.publish(msgs(i, 1), None) {
                Ok(_) => {}
                Err(err) => {
                    assert!(err.is_no_space(), "{err}");
                    refused += 1;
                }
            }
        }
        assert!(refused > 0, "the full disk was noticed");
        assert_eq!(e.faults().len(), 1, "the topic reports its fault");
        // Consumers keep draining what was stored, in order.
        let mut got = Vec::new();
        while c.next_batch(100, &mut got).unwrap() > 0 {}
        let idx: Vec<usize> = got.iter().filter_map(body_index).collect();
        assert_eq!(idx.len(), got.len(), "no corrupt body");
        assert!(idx.windows(2).all(|w| w[0] < w[1]), "in order");
        assert!(idx.len() >= 50);
        // Space comes back: the sync thread's probe clears the fault without a publish.
        plan.heal();
        crate::sync::gc_round(&e.inner);
        assert!(e.faults().is_empty(), "{:?}", e.faults());
        t.publish(msgs(1000, 1), None).unwrap();
        e.close().unwrap();
    }

    #[test]
    fn failed_fsync_fails_the_waiters_and_moves_to_a_fresh_segment() {
        let dir = tempfile::tempdir().unwrap();
        let plan = FaultPlan::new();
        let e = Engine::open_with_faults(dir.path(), opts(0, 1 << 20, 1), plan.clone()).unwrap();
        let t = e.topic("t").unwrap();
        t.channel("c").unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let tx2 = tx.clone();
        t.publish(msgs(0, 1), Some(Box::new(move |r| tx2.send(r).unwrap())))
            .unwrap();
        assert!(rx.recv_timeout(Duration::from_secs(5)).unwrap().is_ok());
        plan.fail_nth(IoOp::Sync, 1, Fault::Eio);
        let tx2 = tx.clone();
        t.publish(msgs(1, 1), Some(Box::new(move |r| tx2.send(r).unwrap())))
            .unwrap();
        let r = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(r.is_err(), "a failed sync is reported to the publisher");
        assert!(!e.faults().is_empty());
        let segments_before = t.stats().segments;
        // Never "succeeds" on the same segment: the next durable publish goes to a new one.
        t.publish(msgs(2, 1), Some(Box::new(move |r| tx.send(r).unwrap())))
            .unwrap();
        let r = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(t.stats().segments, segments_before + 1);
        assert!(e.faults().is_empty(), "a synced fresh segment clears it");
        e.close().unwrap();
    }

    #[test]
    fn a_flipped_byte_in_the_active_segment_costs_one_record() {
        let dir = tempfile::tempdir().unwrap();
        {
            let e = Engine::open(dir.path(), opts(0, 1 << 20, 1)).unwrap();
            let t = e.topic("t").unwrap();
            t.channel("c").unwrap();
            t.publish(msgs(0, 600), None).unwrap();
            e.close().unwrap();
        }
        let seg = dir
            .path()
            .join("topics/t_t")
            .join(crate::log::segment_name(0));
        let pristine = std::fs::read(&seg).unwrap();
        // Plain messages: v2 records without optional fields, after the segment header.
        let rec = |i: usize| -> usize {
            crate::record::SEGMENT_HEADER_LEN
                + (0..i)
                    .map(|k| crate::record::V2_MIN_HEADER_LEN + format!("m{k}").len())
                    .sum::<usize>()
        };
        // A body byte, a CRC byte and a length byte of record 300.
        for at in [
            rec(300) + crate::record::V2_MIN_HEADER_LEN,
            rec(300) + 5,
            rec(300),
        ] {
            let mut bytes = pristine.clone();
            bytes[at] ^= 0x5a;
            std::fs::write(&seg, &bytes).unwrap();
            let e = reopen(dir.path(), opts(0, 1 << 20, 1));
            let t = e.topic("t").unwrap();
            assert_eq!(t.recovery_report().corrupt_records, 1, "reported");
            let got = drain(&e, "t", "c");
            let idx: Vec<usize> = got.iter().filter_map(body_index).collect();
            assert_eq!(idx.len(), got.len(), "no corrupt body");
            assert_eq!(
                idx,
                (0..600).filter(|&i| i != 300).collect::<Vec<_>>(),
                "flip at {at}"
            );
            // Undo the reads so the next round starts from the same cursor.
            e.close().unwrap();
            drop(e);
            std::fs::remove_dir_all(dir.path().join("meta")).unwrap();
            std::fs::remove_dir_all(dir.path().join("topics/t_t/channels")).unwrap();
            let e = reopen(dir.path(), opts(0, 1 << 20, 1));
            e.topic("t").unwrap().channel("c").unwrap();
            e.close().unwrap();
        }
    }

    #[test]
    fn lost_metadata_is_rebuilt_from_the_snapshots() {
        let dir = tempfile::tempdir().unwrap();
        {
            let e = Engine::open(dir.path(), opts(0, 4096, 1)).unwrap();
            let t = e.topic("t").unwrap();
            let c = t.channel("c").unwrap();
            t.publish(msgs(0, 100), None).unwrap();
            let mut got = Vec::new();
            c.next_batch(40, &mut got).unwrap();
            for m in &got[..30] {
                c.ack(m.seq).unwrap();
            }
            e.close().unwrap();
        }
        std::fs::remove_dir_all(dir.path().join("meta")).unwrap();
        let e = reopen(dir.path(), opts(0, 4096, 1));
        assert_eq!(e.topic_names().unwrap(), vec!["t".to_string()]);
        let got = drain(&e, "t", "c");
        let idx: Vec<usize> = got.iter().filter_map(body_index).collect();
        assert_eq!(idx, (30..100).collect::<Vec<_>>());
        e.close().unwrap();
        drop(e);
        // Garbage in place of the store: moved aside, rebuilt, nothing lost.
        let meta = dir.path().join("meta");
        for entry in std::fs::read_dir(&meta).unwrap() {
            let p = entry.unwrap().path();
            if p.is_file() {
                std::fs::write(&p, vec![0x33u8; 4096]).unwrap();
            }
        }
        let e = reopen(dir.path(), opts(0, 4096, 1));
        assert_eq!(e.topic_names().unwrap(), vec!["t".to_string()]);
        e.close().unwrap();
    }

    #[derive(Debug, Clone)]
    enum Step {
        Publish(usize),
        Take(usize),
        AckSome(u8),
        Gc,
        Sync,
        Fault(u8, u8, u8),
        Heal,
        Restart,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (1usize..30).prop_map(Step::Publish),
            3 => (1usize..30).prop_map(Step::Take),
            2 => any::<u8>().prop_map(Step::AckSome),
            1 => Just(Step::Gc),
            1 => Just(Step::Sync),
            3 => (0u8..6, 1u8..4, 0u8..3).prop_map(|(o, n, f)| Step::Fault(o, n, f)),
            1 => Just(Step::Heal),
            1 => Just(Step::Restart),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Random publish / consume / FIN / GC / restart sequences with random injected
        /// faults: every acknowledged publish is delivered (or finished), no delivered body
        /// is corrupt or unknown, and nothing panics.
        #[test]
        fn acknowledged_messages_survive_injected_faults(
            steps in proptest::collection::vec(step(), 1..40),
            mem in prop_oneof![Just(0usize), Just(4), Just(1000)],
        ) {
            let dir = tempfile::tempdir().unwrap();
            let plan = FaultPlan::new();
            let o = opts(mem, 512, 5);
            let mut e = Engine::open_with_faults(dir.path(), o, plan.clone()).unwrap();
            e.topic("t").unwrap().channel("c").unwrap();
            let mut next = 0usize;
            let mut stored: BTreeSet<usize> = BTreeSet::new();
            let mut finished: BTreeSet<usize> = BTreeSet::new();
            let mut out: BTreeMap<usize, u64> = BTreeMap::new();
            for s in steps {
                let Ok(t) = e.topic("t") else { continue };
                let Ok(c) = t.channel("c") else { continue };
                match s {
                    Step::Publish(n) => {
                        if t.publish(msgs(next, n), None).is_ok() {
                            stored.extend(next..next + n);
                        }
                        next += n;
                    }
                    Step::Take(n) => {
                        let mut got = Vec::new();
                        let _ = c.next_batch(n, &mut got);
                        for m in got {
                            let i = body_index(&m);
                            prop_assert!(i.is_some_and(|i| i < next), "corrupt or unknown body {:?}", m.body);
                            let i = i.unwrap_or_default();
                            prop_assert!(!finished.contains(&i), "finished m{} came back", i);
                            out.insert(i, m.seq);
                        }
                    }
                    Step::AckSome(mask) => {
                        let keys: Vec<usize> = out.keys().copied().collect();
                        for (k, i) in keys.into_iter().enumerate() {
                            if mask & (1 << (k % 8)) != 0 {
                                if let Some(seq) = out.remove(&i) {
                                    if c.ack(seq).is_ok() {
                                        finished.insert(i);
                                    }
                                }
                            }
                        }
                    }
                    Step::Gc => crate::sync::gc_round(&e.inner),
                    Step::Sync => { let _ = crate::sync::sync_round(&e.inner, false); }
                    Step::Fault(o, n, f) => {
                        let op = [IoOp::Create, IoOp::Allocate, IoOp::Write, IoOp::Sync, IoOp::Rename, IoOp::Read][o as usize];
                        let fault = [Fault::NoSpace, Fault::Eio, Fault::ShortWrite][f as usize];
                        plan.fail_nth(op, n as u64, fault);
                    }
                    Step::Heal => plan.heal(),
                    Step::Restart => {
                        // The operator fixes the disk, then restarts nsqd cleanly.
                        plan.heal();
                        drop((c, t));
                        e.close().unwrap();
                        drop(e);
                        e = reopen(dir.path(), o);
                        out.clear(); // handed out again after the restart
                    }
                }
            }
            plan.heal();
            let rest = drain(&e, "t", "c");
            let mut delivered: BTreeSet<usize> = out.keys().copied().collect();
            for m in &rest {
                let i = body_index(m);
                prop_assert!(i.is_some_and(|i| i < next), "corrupt or unknown body {:?}", m.body);
                delivered.insert(i.unwrap_or_default());
            }
            for i in &stored {
                prop_assert!(finished.contains(i) || delivered.contains(i), "acknowledged m{} lost", i);
            }
            e.close().unwrap();
        }
    }
}

/// A restart reads only the segment that was being written: sealed segments are loaded
/// from their summaries (`seal.rs`), so recovery does not depend on the backlog's size.
#[test]
fn restart_with_a_million_messages_scans_only_the_tail() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(0, 1 << 20, 100_000);
    let total = 1_000_000;
    {
        let e = Engine::open(dir.path(), o).unwrap();
        let t = e.topic("t").unwrap();
        t.channel("c").unwrap();
        for i in (0..total).step_by(10_000) {
            t.publish(msgs(i, 10_000), None).unwrap();
        }
        e.close().unwrap();
    }
    let e = reopen(dir.path(), o);
    let t = e.topic("t").unwrap();
    let r = t.recovery_report().clone();
    // About 32 MB of v2 records (25-byte headers): some 30 segments of 1 MiB.
    assert!(r.segments > 25, "{r:?}");
    assert_eq!(r.scanned_segments, 1, "only the tail was read: {r:?}");
    assert!(r.scanned_bytes <= 1 << 20, "{r:?}");
    assert_eq!(r.records, total as u64);
    assert_eq!(t.channel("c").unwrap().stats().depth, total as u64);
    // Reads across the summarised segments find every record.
    let c = t.channel("c").unwrap();
    let mut got = Vec::new();
    while c.next_batch(10_000, &mut got).unwrap() > 0 && got.len() < 300_000 {}
    assert_eq!(bodies(&got[..3]), vec!["m0", "m1", "m2"]);
    assert!(got.windows(2).all(|w| w[0].seq + 1 == w[1].seq));
    e.close().unwrap();
    drop((c, t, e));
    // A lost or damaged summary only means that segment is scanned (and summarised again).
    let seg_dir = dir.path().join("topics/t_t");
    let mut idx: Vec<_> = std::fs::read_dir(&seg_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "idx"))
        .collect();
    idx.sort();
    std::fs::remove_file(&idx[3]).unwrap();
    let mut b = std::fs::read(&idx[7]).unwrap();
    b[20] ^= 1;
    std::fs::write(&idx[7], b).unwrap();
    let e = reopen(dir.path(), o);
    let r = e.topic("t").unwrap().recovery_report().clone();
    assert_eq!(r.scanned_segments, 3, "{r:?}");
    assert_eq!(r.records, total as u64);
    e.close().unwrap();
    drop(e);
    let e = reopen(dir.path(), o);
    let r = e.topic("t").unwrap().recovery_report().clone();
    assert_eq!(r.scanned_segments, 1, "summaries written again: {r:?}");
    e.close().unwrap();
}

/// Closing many topics whose memory holds messages appends them to each topic's current
/// segment: no new segment per topic, and every message is back after the restart.
#[test]
fn closing_many_topics_creates_no_segments() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(10, 1 << 20, 1000);
    let count_segments = |d: &Path| -> usize {
        std::fs::read_dir(d.join("topics"))
            .unwrap()
            .flat_map(|t| std::fs::read_dir(t.unwrap().path()).unwrap())
            .filter(|f| {
                f.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "seg")
            })
            .count()
    };
    let e = Engine::open(dir.path(), o).unwrap();
    for k in 0..500 {
        let t = e.topic(&format!("t{k}")).unwrap();
        t.channel("c").unwrap();
        t.publish(msgs(0, 15), None).unwrap(); // 5 spill: each topic has a segment
    }
    let before = count_segments(dir.path());
    assert_eq!(before, 500);
    e.close().unwrap();
    drop(e);
    assert_eq!(
        count_segments(dir.path()),
        before,
        "no new segment at close"
    );
    let e = reopen(dir.path(), o);
    for k in [0, 250, 499] {
        assert_eq!(drain(&e, &format!("t{k}"), "c").len(), 15);
    }
    e.close().unwrap();
}

pub(super) mod retention {
    //! Retention, rewind, peek and channels that start at the oldest retained message.

    use super::*;

    pub(super) fn copy_dir(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            let target = to.join(e.file_name());
            if e.file_type().unwrap().is_dir() {
                copy_dir(&e.path(), &target);
            } else {
                std::fs::copy(e.path(), &target).unwrap();
            }
        }
    }
    use crate::RewindTo;

    fn retained(mem: usize, time: Duration, bytes: u64) -> EngineOptions {
        EngineOptions {
            retention_time: time,
            retention_bytes: bytes,
            ..opts(mem, 4096, 1000)
        }
    }

    fn drain_ack(e: &Engine, topic: &str, channel: &str) -> Vec<crate::Message> {
        let ch = e.topic(topic).unwrap().channel(channel).unwrap();
        let mut out = Vec::new();
        while ch.next_batch(1000, &mut out).unwrap() > 0 {}
        for m in &out {
            ch.ack(m.seq).unwrap();
        }
        out
    }

    #[test]
    fn finished_history_is_kept_and_replayed() {
        for mem in [0, 5, 10_000] {
            let dir = tempfile::tempdir().unwrap();
            let o = retained(mem, Duration::from_secs(3600), 0);
            let e = Engine::open(dir.path(), o).unwrap();
            let t = e.topic("t").unwrap();
            let c = t.channel("c").unwrap();
            t.publish(msgs(0, 150), None).unwrap();
            std::thread::sleep(Duration::from_millis(5));
            t.publish(msgs(150, 150), None).unwrap();
            let first = drain_ack(&e, "t", "c");
            assert_eq!(first.len(), 300);
            crate::sync::gc_round(&e.inner);
            assert!(
                t.stats().log_bytes > 0,
                "finished messages kept (mem {mem})"
            );
            // Peek shows what SUB then delivers, and changes nothing.
            assert_eq!(t.rewind_channel("c", RewindTo::Earliest).unwrap(), Some(0));
            let depth = c.stats().depth;
            let peeked = c.peek(10, usize::MAX).unwrap();
            assert_eq!(c.stats().depth, depth);
            let mut got = Vec::new();
            c.next_batch(10, &mut got).unwrap();
            assert_eq!(peeked, got);
            let again = drain(&e, "t", "c");
            assert_eq!(
                got.len() + again.len(),
                300,
                "replayed from the start (mem {mem})"
            );
            // To a time: exactly the messages published since.
            let t150 = first[150].timestamp_ns;
            t.rewind_channel("c", RewindTo::Time(t150)).unwrap();
            let since = drain(&e, "t", "c");
            assert_eq!(bodies(&since[..1]), vec!["m150"]);
            assert_eq!(since.len(), 150);
            // Latest skips everything queued.
            t.rewind_channel("c", RewindTo::Seq(100)).unwrap();
            t.rewind_channel("c", RewindTo::Latest).unwrap();
            assert!(drain(&e, "t", "c").is_empty());
            // A new channel can start at the oldest retained message.
            let d = t.channel_from("d", true).unwrap();
            let mut hist = Vec::new();
            while d.next_batch(1000, &mut hist).unwrap() > 0 {}
            assert_eq!(hist.len(), 300);
            e.close().unwrap();
        }
    }

    #[test]
    fn a_rewind_is_persisted_before_it_returns() {
        let dir = tempfile::tempdir().unwrap();
        let o = retained(0, Duration::from_secs(3600), 0);
        {
            let e = Engine::open(dir.path(), o).unwrap();
            let t = e.topic("t").unwrap();
            t.channel("c").unwrap();
            t.publish(msgs(0, 200), None).unwrap();
            drain_ack(&e, "t", "c");
            e.close().unwrap();
        }
        let crashed = tempfile::tempdir().unwrap();
        {
            let e = reopen(dir.path(), o);
            let t = e.topic("t").unwrap();
            t.rewind_channel("c", RewindTo::Seq(50)).unwrap();
            // A crash right after the answer: the files as they are now, without a close
            // or another sync round.
            copy_dir(dir.path(), crashed.path());
            e.close().unwrap();
        }
        let e = reopen(crashed.path(), o);
        let got = drain(&e, "t", "c");
        assert_eq!(got.len(), 150);
        assert_eq!(bodies(&got[..1]), vec!["m50"]);
    }

    #[test]
    fn retention_limits_delete_what_is_outside_them() {
        // Bytes: the newest ~8 KiB of finished history stays.
        let dir = tempfile::tempdir().unwrap();
        let e = Engine::open(dir.path(), retained(0, Duration::ZERO, 8192)).unwrap();
        let t = e.topic("t").unwrap();
        t.channel("c").unwrap();
        t.publish(msgs(0, 1000), None).unwrap();
        let before = t.stats().log_bytes;
        drain_ack(&e, "t", "c");
        crate::sync::gc_round(&e.inner);
        let kept = t.stats().log_bytes;
        assert!(
            (8192..8192 + 3 * 4096).contains(&kept) && kept < before,
            "{kept}"
        );
        e.close().unwrap();
        // Time: history older than the retention goes.
        let dir = tempfile::tempdir().unwrap();
        let e = Engine::open(dir.path(), retained(0, Duration::from_millis(50), 0)).unwrap();
        let t = e.topic("t").unwrap();
        t.channel("c").unwrap();
        t.publish(msgs(0, 1000), None).unwrap();
        drain_ack(&e, "t", "c");
        crate::sync::gc_round(&e.inner);
        assert!(t.stats().segments > 3, "young: kept");
        std::thread::sleep(Duration::from_millis(80));
        crate::sync::gc_round(&e.inner);
        assert_eq!(t.stats().segments, 1, "old: deleted");
        e.close().unwrap();
    }
}

/// After a crash, depth counts only what can be delivered: the memory tail of the crashed
/// run is gone, and /stats must not promise it.
#[test]
fn depth_after_a_crash_counts_only_deliverable_messages() {
    let dir = tempfile::tempdir().unwrap();
    let crashed = tempfile::tempdir().unwrap();
    let o = opts(100, 4096, 1);
    {
        let e = Engine::open(dir.path(), o).unwrap();
        let t = e.topic("t").unwrap();
        let c = t.channel("c").unwrap();
        // 150 go to the log (more than the bound ahead of the channel); the channel takes
        // them (unfinished); the next 100 are within the bound of it and stay in memory.
        t.publish(msgs(0, 150), None).unwrap();
        let mut taken = Vec::new();
        c.next_batch(150, &mut taken).unwrap();
        assert_eq!(taken.len(), 150);
        t.publish(msgs(150, 100), None).unwrap();
        assert_eq!(t.stats().mem_depth, 100, "the newest 100 in memory");
        std::thread::sleep(Duration::from_millis(300)); // a sync round persists the watermark
        retention::copy_dir(dir.path(), crashed.path()); // kill -9 now
        e.close().unwrap();
    }
    let e = reopen(crashed.path(), o);
    let t = e.topic("t").unwrap();
    let c = t.channel("c").unwrap();
    let depth = c.stats().depth;
    let got = drain(&e, "t", "c");
    assert_eq!(got.len(), 150);
    assert_eq!(
        depth,
        got.len() as u64,
        "depth promised only what was delivered"
    );
    // New messages are counted as usual.
    t.publish(msgs(1000, 5), None).unwrap();
    assert_eq!(c.stats().depth, 5);
    e.close().unwrap();
}

/// Per-topic settings override the node-wide options at once and survive a restart; other
/// topics keep the node-wide ones.
#[test]
fn topic_settings_apply_at_once_and_persist() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(10_000, 1 << 20, 1000);
    {
        let e = Engine::open(dir.path(), o).unwrap();
        let t = e.topic("t").unwrap();
        let other = e.topic("u").unwrap();
        t.channel("c").unwrap();
        t.publish(msgs(0, 10), None).unwrap();
        assert_eq!(
            t.stats().log_bytes,
            0,
            "all in memory with the node-wide 10000"
        );
        let cfg = crate::TopicConfig {
            mem_queue_size: Some(0),
            retention_time: Some(60_000),
            ..Default::default()
        };
        t.set_config(cfg).unwrap();
        t.publish(msgs(10, 10), None).unwrap();
        assert!(
            t.stats().log_bytes > 0,
            "mem_queue_size 0 applies to the next publish"
        );
        assert_eq!(
            t.effective_options().retention_time,
            Duration::from_secs(60)
        );
        assert_eq!(other.effective_options(), o);
        e.close().unwrap();
    }
    let e = reopen(dir.path(), o);
    let t = e.topic("t").unwrap();
    assert_eq!(t.config().mem_queue_size, Some(0));
    assert_eq!(t.effective_options().mem_queue_size, 0);
    assert_eq!(
        e.topic("u").unwrap().config(),
        crate::TopicConfig::default()
    );
    assert_eq!(drain(&e, "t", "c").len(), 20);
    e.close().unwrap();
}

#[path = "rewind_crash_tests.rs"]
mod rewind_crash;

#[path = "spill_tests.rs"]
mod spill;

/// The engine-level property test again, with rewinds (to a published message's sequence,
/// or to the latest) and retention, so GC keeps what a rewind may read again.
mod rewind_model {
    use super::*;
    use crate::RewindTo;

    #[derive(Debug, Clone)]
    enum Op {
        Publish(usize),
        Take(usize),
        AckSome(u8),
        Restart,
        Gc,
        /// To the sequence of the published message `k % (published + 1)` (past the last
        /// one: `latest`).
        Rewind(u16),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (1usize..40).prop_map(Op::Publish),
            (1usize..40).prop_map(Op::Take),
            any::<u8>().prop_map(Op::AckSome),
            Just(Op::Restart),
            Just(Op::Gc),
            any::<u16>().prop_map(Op::Rewind),
        ]
    }

    /// What the test knows about every published message (by its index).
    #[derive(Default)]
    struct Model {
        /// Sequence each message was published at.
        orig: Vec<u64>,
        /// Finished (or skipped by a rewind to the latest), and not made pending again.
        done: BTreeSet<usize>,
        /// Handed out in this run and not finished: index -> sequence to FIN.
        outstanding: BTreeMap<usize, u64>,
        /// Handed out before the last restart and not finished: handed out again first.
        replay: BTreeSet<usize>,
        /// Handed out in this run (since the last rewind that covered it).
        seen: BTreeSet<usize>,
        /// May be handed out once more than the rules above say: a rewind covered it (the
        /// re-read hands it out besides a replay or the delivery in flight), or it was
        /// moved by straggler relocation (the documented limit of a rewind past a moved
        /// copy).
        may_repeat: BTreeSet<usize>,
        relocated: BTreeSet<usize>,
    }

    impl Model {
        fn delivered(&mut self, i: usize, m: &crate::Message) -> Result<(), TestCaseError> {
            if m.seq != self.orig[i] {
                self.relocated.insert(i);
            }
            if !self.seen.insert(i) {
                prop_assert!(
                    self.may_repeat.remove(&i) || self.relocated.contains(&i),
                    "m{} twice in one run",
                    i
                );
            } else if self.done.contains(&i) {
                prop_assert!(
                    self.may_repeat.remove(&i) || self.relocated.contains(&i),
                    "finished m{} came back",
                    i
                );
            }
            self.done.remove(&i);
            self.replay.remove(&i);
            self.outstanding.insert(i, m.seq);
            Ok(())
        }

        /// The read position moves to `to` (`None`: past the last message).
        fn rewind(&mut self, to: Option<u64>) {
            let s = to.unwrap_or(u64::MAX);
            for (i, &seq) in self.orig.iter().enumerate() {
                if seq >= s {
                    // Read again: pending, and a fresh delivery.
                    // Read again from the log; also handed out from the replay list or
                    // still in flight: once more than usual, even across a restart.
                    self.done.remove(&i);
                    self.seen.remove(&i);
                    self.may_repeat.insert(i);
                } else if !self.outstanding.contains_key(&i)
                    && !self.replay.contains(&i)
                    && !self.seen.contains(&i)
                {
                    // Not read yet (or read again after an earlier rewind): skipped.
                    self.done.insert(i);
                }
            }
            self.may_repeat.extend(self.relocated.iter().copied());
        }
    }

    fn index(m: &crate::Message) -> usize {
        String::from_utf8_lossy(&m.body)[1..].parse().unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        /// Publish / take / FIN / GC / restart / rewind: nothing is handed out twice in one
        /// run unless a rewind covered it, nothing finished comes back unless a rewind
        /// covered it, and in the end every message is finished or delivered.
        #[test]
        fn invariants_with_rewind(
            ops in proptest::collection::vec(op(), 1..30),
            mem in prop_oneof![Just(0usize), Just(3), Just(1000)],
        ) {
            let dir = tempfile::tempdir().unwrap();
            let o = EngineOptions {
                retention_time: Duration::from_secs(3600),
                ..opts(mem, 256, 7)
            };
            let mut e = Engine::open(dir.path(), o).unwrap();
            e.topic("t").unwrap().channel("c").unwrap();
            let mut m = Model::default();
            for op in ops {
                let t = e.topic("t").unwrap();
                let c = t.channel("c").unwrap();
                match op {
                    Op::Publish(n) => {
                        let p = t.publish(msgs(m.orig.len(), n), None).unwrap();
                        m.orig.extend((0..n as u64).map(|k| p.first_seq + k));
                    }
                    Op::Take(n) => {
                        let mut got = Vec::new();
                        c.next_batch(n, &mut got).unwrap();
                        for msg in &got {
                            m.delivered(index(msg), msg)?;
                        }
                    }
                    Op::AckSome(mask) => {
                        let keys: Vec<usize> = m.outstanding.keys().copied().collect();
                        for (k, i) in keys.into_iter().enumerate() {
                            if mask & (1 << (k % 8)) != 0 {
                                if let Some(seq) = m.outstanding.remove(&i) {
                                    c.ack(seq).unwrap();
                                    m.done.insert(i);
                                }
                            }
                        }
                    }
                    Op::Gc => {
                        drop((c, t));
                        crate::sync::gc_round(&e.inner);
                        // GC may have moved any unfinished message (straggler relocation).
                        let unfinished: Vec<usize> =
                            m.outstanding.keys().chain(&m.replay).copied().collect();
                        m.relocated.extend(unfinished);
                    }
                    Op::Restart => {
                        drop((c, t));
                        e.close().unwrap();
                        drop(e);
                        e = reopen(dir.path(), o);
                        m.seen.clear();
                        let pending: Vec<usize> = m.outstanding.keys().copied().collect();
                        m.replay.extend(pending);
                        m.outstanding.clear();
                    }
                    Op::Rewind(k) => {
                        let k = k as usize % (m.orig.len() + 1);
                        let to = m.orig.get(k).copied();
                        let target = to.map_or(RewindTo::Latest, RewindTo::Seq);
                        t.rewind_channel("c", target).unwrap();
                        m.rewind(to);
                    }
                }
            }
            let rest = drain(&e, "t", "c");
            for msg in &rest {
                m.delivered(index(msg), msg)?;
            }
            for i in 0..m.orig.len() {
                prop_assert!(
                    m.done.contains(&i) || m.outstanding.contains_key(&i),
                    "m{} was lost", i
                );
            }
            e.close().unwrap();
        }
    }
}

/// Bodies above `log::INLINE_BODY_MAX` are written from where they are (`pwritev`) with
/// the CRC taken at publish; small ones are copied beside their header. Mixed sizes, with
/// rolls (a record bigger than a segment too), read back the same before and after a
/// restart (whose recovery checks every record's CRC in the unsealed tail).
#[test]
fn big_and_small_bodies_round_trip_through_the_log() {
    let sizes = [100usize, 5000, 16384, 70_000, 4096, 4097, 1];
    let body = |i: usize| {
        let n = sizes[i % sizes.len()];
        Bytes::from((0..n).map(|j| (i * 31 + j) as u8).collect::<Vec<u8>>())
    };
    for mem in [0, 2] {
        let dir = tempfile::tempdir().unwrap();
        let o = opts(mem, 64 * 1024, 1000);
        let e = Engine::open(dir.path(), o).unwrap();
        let t = e.topic("t").unwrap();
        t.channel("c").unwrap();
        for batch in 0..6 {
            let ms = (batch * 7..batch * 7 + 7)
                .map(|i| NewMessage {
                    body: body(i),
                    deliver_at_ms: 0,
                })
                .collect();
            t.publish(ms, None).unwrap();
        }
        let expect: Vec<Bytes> = (0..42).map(body).collect();
        let got: Vec<Bytes> = drain(&e, "t", "c").into_iter().map(|m| m.body).collect();
        assert_eq!(got, expect, "mem={mem}, before restart");
        e.close().unwrap();
        drop((t, e));
        let e = reopen(dir.path(), o);
        let report = e.topic("t").unwrap().recovery_report().clone();
        assert!(report.scanned_segments >= 1, "{report:?}");
        assert_eq!(
            (report.corrupt_records, report.truncated_bytes),
            (0, 0),
            "mem={mem}: {report:?}"
        );
        let got: Vec<Bytes> = drain(&e, "t", "c").into_iter().map(|m| m.body).collect();
        assert_eq!(got, expect, "mem={mem}, after restart");
        e.close().unwrap();
    }
}

#[test]
fn encode_header_with_a_body_crc_matches_encode() {
    use crate::record::{body_crc, encode, encode_header, encoded_len, message_id, RecordHeader};
    for (n, deliver, attempts) in [(0usize, 0u64, 0u16), (7, 5, 0), (20_000, 0, 3)] {
        let body: Vec<u8> = (0..n).map(|j| j as u8).collect();
        let h = RecordHeader {
            seq: 42,
            timestamp_ns: 7,
            deliver_at_ms: deliver,
            target: 0,
            attempts,
            id: message_id(42),
        };
        let mut whole = vec![0u8; encoded_len(&h, n)];
        encode(&mut whole, &h, &body);
        let mut header = vec![0u8; encoded_len(&h, 0)];
        encode_header(&mut header, &h, &body, Some(body_crc(&body)));
        header.extend_from_slice(&body);
        assert_eq!(header, whole, "body {n} B");
    }
}
