//! When memory spills to the log: write-through while a channel is far behind, publishes
//! that leave the spill to their caller, and the spill's write made without the topic
//! lock (concurrent publishers and readers, a failed write).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::*;
use crate::fs::{Fault, FaultPlan, Op as IoOp};

fn sized(from: usize, n: usize, size: usize) -> Vec<NewMessage> {
    (from..from + n)
        .map(|i| {
            let mut b = format!("m{i}:").into_bytes();
            b.resize(size.max(b.len()), b'.');
            NewMessage {
                body: Bytes::from(b),
                deliver_at_ms: 0,
            }
        })
        .collect()
}

/// A quarter of a spill chunk (and of the deferral slack): the tests below count in these.
const Q: usize = crate::topic::memtail::SPILL_CHUNK_BYTES / 4;
const _: () = assert!(crate::topic::DEFER_SLACK_BYTES == crate::topic::memtail::SPILL_CHUNK_BYTES);

/// Can the kernel tell here whether a read would wait for the disk (`RWF_NOWAIT`)?
fn nowait_supported(dir: &std::path::Path) -> bool {
    let path = dir.join("nowait-probe");
    std::fs::write(&path, b"x").unwrap();
    let file = std::fs::File::open(&path).unwrap();
    let r = crate::fs::page_cached_probe(&file, 0);
    let _ = std::fs::remove_file(&path);
    r.is_ok()
}

fn index_of(m: &crate::Message) -> usize {
    let s = std::str::from_utf8(&m.body).expect("utf-8 body");
    let head = s.split(':').next().expect("prefix");
    head.strip_prefix('m')
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("not a test body: {s:.20}"))
}

#[test]
fn a_channel_far_behind_gets_new_messages_through_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(dir.path(), opts(100, 1 << 20, 1000)).unwrap();
    let t = e.topic("t").unwrap();
    let c = t.channel("c").unwrap();
    t.publish(msgs(0, 50), None).unwrap();
    assert_eq!(t.stats().mem_depth, 50, "within the bound: memory");
    assert_eq!(t.stats().log_bytes, 0);
    t.publish(msgs(50, 100), None).unwrap();
    assert_eq!(
        t.stats().mem_depth,
        0,
        "150 ahead of the channel: all to the log"
    );
    t.publish(msgs(150, 10), None).unwrap();
    assert_eq!(
        t.stats().mem_depth,
        0,
        "still far behind: straight to the log"
    );
    assert!(c.next_needs_disk(), "the channel reads from the log");
    if nowait_supported(dir.path()) {
        assert!(c.next_read_cached(), "just written: in the page cache");
    }
    let mut got = Vec::new();
    while c.next_batch(1000, &mut got).unwrap() > 0 {}
    assert_eq!(
        got.iter().map(index_of).collect::<Vec<_>>(),
        (0..160).collect::<Vec<_>>()
    );
    assert!(!c.next_needs_disk());
    assert!(!c.next_read_cached(), "nothing left in the log to read");
    // Caught up: memory again (the log keeps what it had).
    t.publish(msgs(160, 10), None).unwrap();
    assert_eq!(t.stats().mem_depth, 10);
    e.close().unwrap();
}

/// When a channel falls behind with the bound's worth in memory, that worth goes to the
/// log a chunk per publish (it is within the bound), not all in one write.
#[test]
fn write_through_starts_with_a_chunk_not_the_whole_bound() {
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(dir.path(), opts(8, 64 << 20, 1000)).unwrap();
    let t = e.topic("t").unwrap();
    let c = t.channel("c").unwrap();
    t.publish(sized(0, 8, Q), None).unwrap();
    assert_eq!(t.stats().mem_depth, 8, "at the bound: memory");
    t.publish(sized(8, 1, Q), None).unwrap();
    // 9 ahead of the channel: all owed; the oldest chunk (4 bodies) goes (the one over the bound
    // among them).
    assert_eq!(t.stats().mem_depth, 5);
    t.publish(sized(9, 1, Q), None).unwrap();
    assert_eq!(t.stats().mem_depth, 2);
    t.publish(sized(10, 1, Q), None).unwrap();
    assert_eq!(t.stats().mem_depth, 0, "caught up: straight to the log");
    // The deferred form: the caller pays the same way, in chunks.
    let p = t.publish_deferring_spill(sized(11, 6, Q)).unwrap();
    assert!(p.spill_owed);
    assert_eq!(t.stats().mem_depth, 6);
    t.spill_owed();
    assert_eq!(t.stats().mem_depth, 0);
    let mut got = Vec::new();
    while c.next_batch(1000, &mut got).unwrap() > 0 {}
    assert_eq!(
        got.iter().map(index_of).collect::<Vec<_>>(),
        (0..17).collect::<Vec<_>>()
    );
    e.close().unwrap();
}

#[test]
fn a_deferred_publish_leaves_the_spill_to_its_caller() {
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(dir.path(), opts(10, 1 << 20, 1000)).unwrap();
    let t = e.topic("t").unwrap();
    let c = t.channel("c").unwrap();
    let p = t.publish_deferring_spill(msgs(0, 20)).unwrap();
    assert!(p.spill_owed, "over the bound");
    assert_eq!(t.stats().mem_depth, 20, "still in memory");
    assert_eq!(t.stats().log_bytes, 0);
    assert!(t.spill_owed());
    assert!(!t.owes_spill());
    assert_eq!(t.stats().mem_depth, 0, "paid: in the log");
    assert!(t.stats().log_bytes > 0);
    t.spill_owed(); // nothing owed: a no-op
    let p = t.publish_deferring_spill(msgs(20, 1)).unwrap();
    assert!(p.spill_owed, "the channel is far behind: owed at once");
    // Write-through is the caller's to pay while no more than the slack (4 bodies) is owed.
    let p = t.publish_deferring_spill(sized(21, 5, Q)).unwrap();
    assert!(p.spill_owed, "a small body owed before it: deferred");
    assert_eq!(t.stats().mem_depth, 6);
    // More than the slack owed: the next publish writes a chunk itself (the publishers
    // do not run ahead of the writer).
    let p = t.publish_deferring_spill(msgs(26, 1)).unwrap();
    assert!(!p.spill_owed, "over the slack: written by the publish");
    // The small body and 3 bodies make the chunk: 20..=23 go.
    assert_eq!(t.stats().mem_depth, 3);
    let p = t.publish_deferring_spill(sized(27, 8, Q)).unwrap();
    assert!(p.spill_owed, "2 MiB and a little owed before it: deferred");
    let p = t.publish_deferring_spill(msgs(35, 1)).unwrap();
    assert!(!p.spill_owed);
    assert_eq!(t.stats().mem_depth, 8, "24..=27 went: a chunk");
    t.spill_owed();
    assert_eq!(t.stats().mem_depth, 0, "the rest in chunks, all paid");
    let mut got = Vec::new();
    while c.next_batch(1000, &mut got).unwrap() > 0 {}
    assert_eq!(
        got.iter().map(index_of).collect::<Vec<_>>(),
        (0..36).collect::<Vec<_>>()
    );
    e.close().unwrap();

    // What is over the bound is written whole by a publish that writes, even when it is
    // more than a chunk.
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(dir.path(), opts(2, 64 << 20, 1000)).unwrap();
    let t = e.topic("t").unwrap();
    let c = t.channel("c").unwrap();
    let p = t.publish_deferring_spill(sized(0, 2, Q)).unwrap();
    assert!(!p.spill_owed, "at the bound: memory");
    let p = t.publish_deferring_spill(sized(2, 6, Q)).unwrap();
    assert!(p.spill_owed, "nothing owed before it: deferred");
    assert_eq!(t.stats().mem_depth, 8);
    let p = t.publish_deferring_spill(sized(8, 1, Q)).unwrap();
    assert!(!p.spill_owed);
    assert_eq!(
        t.stats().mem_depth,
        2,
        "7 over the bound went, not a chunk (4)"
    );
    t.spill_owed();
    assert_eq!(t.stats().mem_depth, 0);
    let mut got = Vec::new();
    while c.next_batch(1000, &mut got).unwrap() > 0 {}
    assert_eq!(
        got.iter().map(index_of).collect::<Vec<_>>(),
        (0..9).collect::<Vec<_>>()
    );
    e.close().unwrap();

    // At --mem-queue-size=0 a message is on disk before it is acknowledged.
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(dir.path(), opts(0, 1 << 20, 1000)).unwrap();
    let t = e.topic("t").unwrap();
    t.channel("c").unwrap();
    let p = t.publish_deferring_spill(msgs(0, 3)).unwrap();
    assert!(!p.spill_owed);
    assert_eq!(t.stats().mem_depth, 0);
    e.close().unwrap();
}

/// Four publishers (deferring, then paying) and a reader that finishes what it gets, at
/// once, on small segments (so some spills roll and take the locked path): every message
/// is delivered once, each publisher's in its order, and a restart redelivers exactly
/// the unfinished ones.
#[test]
fn concurrent_deferred_publishes_and_a_reader_lose_and_repeat_nothing() {
    const PUBLISHERS: usize = 4;
    const BATCHES: usize = 150;
    const PER_BATCH: usize = 5;
    let total = PUBLISHERS * BATCHES * PER_BATCH;
    let dir = tempfile::tempdir().unwrap();
    let o = opts(32, 256 * 1024, 100);
    let delivered: Vec<crate::Message>;
    {
        let e = Engine::open(dir.path(), o).unwrap();
        let t = e.topic("t").unwrap();
        let c = t.channel("c").unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let reader = {
            let (c, done) = (c.clone(), done.clone());
            std::thread::spawn(move || {
                let mut got = Vec::new();
                let mut batch = Vec::new();
                loop {
                    let finished = done.load(Ordering::Acquire);
                    batch.clear();
                    c.next_batch(64, &mut batch).unwrap();
                    // Finish every other message; the rest stay in flight.
                    for m in &batch {
                        if m.seq % 2 == 0 {
                            c.ack(m.seq).unwrap();
                        }
                    }
                    let read = batch.len();
                    got.append(&mut batch);
                    if finished && got.len() >= total {
                        return got;
                    }
                    if read == 0 {
                        std::thread::yield_now();
                    }
                }
            })
        };
        let publishers: Vec<_> = (0..PUBLISHERS)
            .map(|p| {
                let t = t.clone();
                std::thread::spawn(move || {
                    for b in 0..BATCHES {
                        let from = (p * BATCHES + b) * PER_BATCH;
                        // Big bodies (written from where they are) and small ones.
                        let size = if b % 2 == 0 { 6000 } else { 40 };
                        if t.publish_deferring_spill(sized(from, PER_BATCH, size))
                            .unwrap()
                            .spill_owed
                        {
                            t.spill_owed();
                        }
                    }
                })
            })
            .collect();
        for p in publishers {
            p.join().unwrap();
        }
        done.store(true, Ordering::Release);
        let got = reader.join().unwrap();
        assert_eq!(got.len(), total, "every message once");
        let mut last: BTreeMap<usize, usize> = BTreeMap::new();
        for m in &got {
            let i = index_of(m);
            let publisher = i / (BATCHES * PER_BATCH);
            if let Some(prev) = last.insert(publisher, i) {
                assert!(prev < i, "publisher {publisher}: {prev} before {i}");
            }
        }
        assert_eq!(
            got.iter().map(index_of).collect::<BTreeSet<_>>().len(),
            total,
            "no duplicates"
        );
        delivered = got;
        e.close().unwrap();
    }
    let e = reopen(dir.path(), o);
    let again = drain(&e, "t", "c");
    let expect: BTreeSet<usize> = delivered
        .iter()
        .filter(|m| m.seq % 2 == 1)
        .map(index_of)
        .collect();
    assert_eq!(
        again.iter().map(index_of).collect::<BTreeSet<_>>(),
        expect,
        "after a restart: exactly the unfinished ones"
    );
    e.close().unwrap();
}

#[test]
fn a_failed_deferred_write_keeps_the_messages_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let plan = FaultPlan::new();
    let o = opts(10, 1 << 20, 1000);
    let e = Engine::open_with_faults(dir.path(), o, plan.clone()).unwrap();
    let t = e.topic("t").unwrap();
    let c = t.channel("c").unwrap();
    t.publish(sized(0, 20, 5000), None).unwrap();
    assert_eq!(t.stats().mem_depth, 0);
    let on_disk = t.stats().log_bytes;
    plan.fail_always(IoOp::Write, Fault::NoSpace);
    let p = t.publish_deferring_spill(sized(20, 5, 5000)).unwrap();
    assert!(p.spill_owed);
    assert!(!t.spill_owed(), "nothing written: a paying loop must stop");
    assert!(t.owes_spill(), "still owed");
    assert_eq!(e.faults().len(), 1, "the failed write is the topic's fault");
    assert_eq!(t.stats().mem_depth, 5, "the messages stay in memory");
    assert_eq!(
        t.stats().log_bytes,
        on_disk,
        "nothing of the failed write counts"
    );
    let mut got = Vec::new();
    while c.next_batch(1000, &mut got).unwrap() > 0 {}
    assert_eq!(
        got.iter().map(index_of).collect::<Vec<_>>(),
        (0..25).collect::<Vec<_>>(),
        "every message, intact, in order"
    );
    plan.heal();
    t.publish(sized(25, 20, 5000), None).unwrap();
    assert!(e.faults().is_empty(), "{:?}", e.faults());
    e.close().unwrap();
    drop((t, c, e));
    // The file was cut back: a restart finds every record intact (none finished).
    let e = reopen(dir.path(), o);
    let again = drain(&e, "t", "c");
    let idx: Vec<usize> = again.iter().map(index_of).collect();
    assert_eq!(idx, (0..45).collect::<Vec<_>>());
    e.close().unwrap();
}
