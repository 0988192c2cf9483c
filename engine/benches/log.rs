//! Engine benchmarks: raw log append (100 B and 1 KiB bodies, batches of 1 and 200),
//! sequential read, and durable publish (fsync before the callback) with 1, 16 and 64
//! concurrent writers sharing fsyncs (group commit).
//!
//! `cargo bench -p nsq-engine --bench log -- --warm-up-time 1 --measurement-time 3`

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use engine::log::{Log, ReadHint};
use engine::record::{message_id, RecordHeader};
use engine::{Engine, EngineOptions, NewMessage};

fn header(seq: u64) -> RecordHeader {
    RecordHeader {
        seq,
        timestamp_ns: 0,
        deliver_at_ms: 0,
        target: 0,
        attempts: 0,
        id: message_id(seq),
    }
}

fn append(c: &mut Criterion) {
    let mut g = c.benchmark_group("append");
    for size in [100usize, 1024] {
        for batch in [1usize, 200] {
            let body = vec![7u8; size];
            g.throughput(Throughput::Elements(batch as u64));
            g.bench_with_input(
                BenchmarkId::new(format!("{size}B"), batch),
                &batch,
                |b, &batch| {
                    let dir = tempfile::tempdir().unwrap();
                    let (mut log, _) = Log::open(dir.path(), 64 << 20).unwrap();
                    let mut seq = 0u64;
                    b.iter(|| {
                        let start = seq;
                        seq += batch as u64;
                        log.append((start..seq).map(|s| (header(s), body.as_slice())))
                            .unwrap();
                        // Keep the directory bounded during long runs.
                        if log.segment_count() > 8 {
                            log.gc(seq - 1).unwrap();
                        }
                    });
                },
            );
        }
    }
    g.finish();
}

fn read(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(dir.path(), 64 << 20).unwrap();
    let n = 1_000_000u64;
    let body = vec![7u8; 100];
    log.append((0..n).map(|s| (header(s), body.as_slice())))
        .unwrap();
    let mut g = c.benchmark_group("read");
    g.throughput(Throughput::Elements(n));
    g.sample_size(10);
    g.bench_function("sequential_100B_batches_of_1000", |b| {
        b.iter(|| {
            let mut pos = 0;
            let mut hint = ReadHint::default();
            let mut out = Vec::with_capacity(1000);
            let mut total = 0u64;
            while pos < n {
                out.clear();
                pos = log.read(pos, 1000, &mut hint, |_| true, &mut out).unwrap();
                total += out.len() as u64;
            }
            assert_eq!(total, n);
        });
    });
    g.finish();
}

fn durable(c: &mut Criterion) {
    let mut g = c.benchmark_group("durable_publish");
    g.sample_size(10);
    for writers in [1usize, 16, 64] {
        g.throughput(Throughput::Elements(writers as u64 * 20));
        g.bench_with_input(
            BenchmarkId::from_parameter(writers),
            &writers,
            |b, &writers| {
                let dir = tempfile::tempdir().unwrap();
                let e = Engine::open(
                    dir.path(),
                    EngineOptions {
                        mem_queue_size: 0,
                        max_bytes_per_file: 64 << 20,
                        sync_every: 1,
                        sync_timeout: Duration::from_secs(2),
                        ..EngineOptions::default()
                    },
                )
                .unwrap();
                let t = e.topic("bench").unwrap();
                t.channel("c").unwrap();
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    for _ in 0..iters {
                        // Each writer publishes 20 single messages, each waiting for its fsync.
                        std::thread::scope(|s| {
                            for _ in 0..writers {
                                let t = Arc::clone(&t);
                                s.spawn(move || {
                                    for _ in 0..20 {
                                        let (tx, rx) = std::sync::mpsc::channel();
                                        t.publish(
                                            vec![NewMessage {
                                                body: Bytes::from_static(&[7u8; 100]),
                                                deliver_at_ms: 0,
                                            }],
                                            Some(Box::new(move |r| {
                                                let _ = tx.send(r.is_ok());
                                            })),
                                        )
                                        .unwrap();
                                        assert_eq!(rx.recv(), Ok(true));
                                    }
                                });
                            }
                        });
                    }
                    start.elapsed()
                });
                drop(t);
                e.close().unwrap();
            },
        );
    }
    g.finish();
}

criterion_group!(benches, append, read, durable);
criterion_main!(benches);
