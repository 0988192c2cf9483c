//! The delivery path in isolation, and recovery of sealed segments.
//!
//! - `delivery`: what nsqd does per message it sends, without the network: a channel's
//!   `next_batch` from the log (memory queue 0, so every message is read back from a
//!   segment), the V2 message frame encoded into one buffer, and the FIN.
//! - `recovery`: opening a topic whose log is sealed segments (summaries written) plus an
//!   empty tail: the time must not depend on how many records the sealed segments hold.
//!
//! `cargo bench -p nsq-engine --bench delivery -- --warm-up-time 1 --measurement-time 3`

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use engine::{Engine, EngineOptions, NewMessage};

fn opts(mem: usize) -> EngineOptions {
    EngineOptions {
        mem_queue_size: mem,
        max_bytes_per_file: 64 << 20,
        sync_every: 1 << 30,
        sync_timeout: Duration::from_secs(3600),
        ..EngineOptions::default()
    }
}

fn publish(e: &Engine, n: usize, size: usize) {
    let t = e.topic("t").unwrap();
    let body = Bytes::from(vec![7u8; size]);
    let mut left = n;
    while left > 0 {
        let k = left.min(1000);
        t.publish(
            (0..k)
                .map(|_| NewMessage {
                    body: body.clone(),
                    deliver_at_ms: 0,
                })
                .collect(),
            None,
        )
        .unwrap();
        left -= k;
    }
}

fn delivery(c: &mut Criterion) {
    let mut g = c.benchmark_group("delivery");
    for size in [200usize, 16 * 1024] {
        for batch in [1usize, 100] {
            // Enough messages that no iteration runs the channel dry.
            let n = if size > 1024 { 200_000 } else { 2_000_000 };
            let dir = tempfile::tempdir().unwrap();
            let e = Engine::open(dir.path(), opts(0)).unwrap();
            let ch = e.topic("t").unwrap().channel("c").unwrap();
            publish(&e, n, size);
            let mut out = Vec::with_capacity(batch);
            let mut frames = BytesMut::with_capacity(batch * (size + 64));
            g.throughput(Throughput::Elements(batch as u64));
            g.bench_function(BenchmarkId::new(format!("{size}B"), batch), |b| {
                b.iter(|| {
                    out.clear();
                    frames.clear();
                    if ch.next_batch(batch, &mut out).unwrap() == 0 {
                        // Drained (only in very long runs): publish another round.
                        publish(&e, n, size);
                        ch.next_batch(batch, &mut out).unwrap();
                    }
                    for m in &out {
                        protocol::v2::encode_message_frame(
                            &mut frames,
                            m.timestamp_ns,
                            m.attempts + 1,
                            &m.id,
                            &m.body,
                        );
                    }
                    for m in &out {
                        ch.ack(m.seq).unwrap();
                    }
                    frames.len()
                });
            });
            drop(ch);
            e.close().unwrap();
        }
    }
    g.finish();
}

fn recovery(c: &mut Criterion) {
    let mut g = c.benchmark_group("recovery");
    g.sample_size(20);
    for n in [100_000usize, 1_000_000] {
        let dir = tempfile::tempdir().unwrap();
        {
            // Small segments so there are many sealed ones; close seals and summarises
            // them, and leaves an empty tail.
            let o = EngineOptions {
                max_bytes_per_file: 8 << 20,
                ..opts(0)
            };
            let e = Engine::open(dir.path(), o).unwrap();
            e.topic("t").unwrap().channel("c").unwrap();
            publish(&e, n, 100);
            e.close().unwrap();
        }
        g.bench_function(BenchmarkId::new("open_topic", n), |b| {
            b.iter(|| {
                let e = loop {
                    // The previous iteration's sync thread may still hold sled briefly.
                    match Engine::open(dir.path(), opts(0)) {
                        Ok(e) => break e,
                        Err(_) => std::thread::sleep(Duration::from_millis(1)),
                    }
                };
                let t = e.topic("t").unwrap();
                let scanned = t.recovery_report().scanned_segments;
                assert!(scanned <= 1, "sealed segments were rescanned: {scanned}");
                drop(t);
                e.close().unwrap();
            });
        });
    }
    g.finish();
}

criterion_group!(benches, delivery, recovery);
criterion_main!(benches);
