//! `latency`: publish at a fixed rate and measure publish-to-receive time in one process.
//!
//! Pacing: one publishing connection wakes every `--tick` (tokio interval, missed ticks
//! skipped) and sends, in one MPUB (PUB when it is a single message), every message due by
//! then: message k is due at k / rate seconds after the start, so a late wake-up sends the
//! backlog at once and the average rate stays exact. Each body starts with a 8-byte marker
//! and the send time in nanoseconds since an `Instant` shared with the subscribers (one
//! process, one monotonic clock). Messages sent more than `--late` after their due time
//! are counted as late. Publishes are pipelined; a reader half counts the OKs.
//!
//! The subscribers (`--concurrency`, default 1) are connected to `--channel` before the
//! first publish, FIN every message and record (receive time - send time) in a
//! nanosecond histogram. After `--runfor` publishing stops; the run ends when every
//! acknowledged message has been received or `--drain` has passed, and whatever was not
//! received by then is reported as lost.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use bytes::{Bytes, BytesMut};
use hdrhistogram::Histogram;
use protocol::v2::{self, Command};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{connect, read_frame, Common};

/// Marks a latency probe body; anything else on the channel is counted as foreign.
pub const MARK: &[u8; 8] = b"nsqbLAT1";
/// Marker plus send time.
pub const HEADER: usize = 16;
/// Largest batch one tick sends when far behind (keeps an MPUB well under NSQ's default
/// --max-body-size).
const MAX_BATCH: u64 = 5_000;

/// How many messages are due `elapsed` after the start at `rate` msgs/s.
pub fn due_by(elapsed: Duration, rate: u64) -> u64 {
    (elapsed.as_nanos() * rate as u128 / 1_000_000_000) as u64
}

/// Of the messages numbered `sent..sent + n`, sent at `now`, how many were due before
/// `now - late` (the ones sent late).
pub fn late_among(sent: u64, n: u64, now: Duration, late: Duration, rate: u64) -> u64 {
    let Some(cut) = now.checked_sub(late) else {
        return 0;
    };
    // message k is due at k/rate: k < cut*rate means it was due before the cut
    let due_before_cut = (cut.as_nanos() * rate as u128).div_ceil(1_000_000_000) as u64;
    due_before_cut.clamp(sent, sent + n) - sent
}

/// A probe body of `size` bytes carrying `sent_ns`.
pub fn encode_body(size: usize, sent_ns: u64, pad: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(size.max(HEADER));
    b.extend_from_slice(MARK);
    b.extend_from_slice(&sent_ns.to_le_bytes());
    b.extend_from_slice(&pad[..size.saturating_sub(HEADER)]);
    b.freeze()
}

/// The send time of a probe body, or None for anything else.
pub fn decode_body(body: &[u8]) -> Option<u64> {
    if body.len() < HEADER || &body[..8] != MARK {
        return None;
    }
    let mut t = [0u8; 8];
    t.copy_from_slice(&body[8..16]);
    Some(u64::from_le_bytes(t))
}

/// The percentile line, in microseconds with 0.1 µs resolution.
pub fn percentiles(h: &Histogram<u64>) -> String {
    let us = |ns: u64| ns as f64 / 1000.0;
    format!(
        "p50 {:.1} us, p90 {:.1} us, p99 {:.1} us, p99.9 {:.1} us, max {:.1} us",
        us(h.value_at_quantile(0.5)),
        us(h.value_at_quantile(0.9)),
        us(h.value_at_quantile(0.99)),
        us(h.value_at_quantile(0.999)),
        us(h.max()),
    )
}

pub struct Params {
    pub channel: String,
    pub rate: u64,
    pub tick: Duration,
    pub late: Duration,
    pub drain: Duration,
    pub rdy: u32,
}

struct Shared {
    base: Instant,
    acked: AtomicU64,
    received: AtomicU64,
    foreign: AtomicU64,
    publishing_done: AtomicBool,
    heartbeat: AtomicBool,
    hist: Mutex<Histogram<u64>>,
}

/// Runs the probe; returns the number of messages received (for `--server-pid`).
pub async fn run(c: Common, p: Params, stop: Arc<AtomicBool>) -> Result<u64> {
    if p.rate == 0 {
        bail!("--rate must be > 0");
    }
    if c.size < HEADER {
        bail!("--size must be at least {HEADER} for latency (marker + send time)");
    }
    if p.tick.is_zero() {
        bail!("--tick must be > 0");
    }
    let shared = Arc::new(Shared {
        base: Instant::now(),
        acked: AtomicU64::new(0),
        received: AtomicU64::new(0),
        foreign: AtomicU64::new(0),
        publishing_done: AtomicBool::new(false),
        heartbeat: AtomicBool::new(false),
        hist: Mutex::new(Histogram::new_with_bounds(1, 600_000_000_000, 3)?),
    });
    let subs = c.concurrency.unwrap_or(1).max(1);
    let mut sub_tasks = Vec::new();
    for _ in 0..subs {
        let mut s = connect(&c.addr).await?;
        let mut out = BytesMut::new();
        Command::Sub {
            topic: c.topic.clone(),
            channel: p.channel.clone(),
        }
        .encode(&mut out);
        s.write_all(&out).await?;
        let mut buf = BytesMut::with_capacity(1 << 16);
        let f = read_frame(&mut s, &mut buf).await?;
        if f.data.as_ref() != b"OK" {
            bail!("SUB failed: {}", String::from_utf8_lossy(&f.data));
        }
        out.clear();
        Command::Rdy(p.rdy as i64).encode(&mut out);
        s.write_all(&out).await?;
        sub_tasks.push(tokio::spawn(subscribe(
            s,
            buf,
            shared.clone(),
            stop.clone(),
            p.drain,
        )));
    }

    let (sent, late, published_for) = publish(&c, &p, &shared, &stop).await;
    let publish_secs = published_for.as_secs_f64();
    shared.publishing_done.store(true, Ordering::Release);
    for t in sub_tasks {
        t.await??;
    }
    let (sent, late) = (sent?, late);
    let acked = shared.acked.load(Ordering::Relaxed);
    let received = shared.received.load(Ordering::Relaxed);
    let hist = match shared.hist.lock() {
        Ok(h) => h.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    };
    println!(
        "latency: target {} msgs/s, {} B, tick {:?}: sent {sent} in {publish_secs:.2}s = {:.0} msgs/s, acked {acked}, received {received}, late {late} (> {:?} behind schedule), lost {}, foreign {}; publish-to-receive {}",
        p.rate,
        c.size,
        p.tick,
        sent as f64 / publish_secs.max(1e-9),
        p.late,
        acked.saturating_sub(received),
        shared.foreign.load(Ordering::Relaxed),
        percentiles(&hist),
    );
    Ok(received)
}

/// The paced publisher. Returns (messages sent, late ones, time from the first tick to
/// the last).
async fn publish(
    c: &Common,
    p: &Params,
    shared: &Arc<Shared>,
    stop: &AtomicBool,
) -> (Result<u64>, u64, Duration) {
    let mut sent = 0u64;
    let mut late = 0u64;
    let mut published_for = Duration::ZERO;
    let res: Result<()> = async {
        let s = connect(&c.addr).await?;
        let (mut rd, mut wr) = s.into_split();
        let acks = {
            let shared = shared.clone();
            tokio::spawn(async move {
                let mut buf = BytesMut::with_capacity(4096);
                loop {
                    while let Some(f) = v2::parse_frame(&mut buf, 64 << 20)? {
                        match f.frame_type {
                            v2::FRAME_TYPE_RESPONSE if f.data.as_ref() == b"_heartbeat_" => {
                                shared.heartbeat.store(true, Ordering::Release);
                            }
                            v2::FRAME_TYPE_RESPONSE => {
                                // the batch size is not in the OK; count messages below
                                shared.acked.fetch_add(1, Ordering::Relaxed);
                            }
                            _ => bail!("publish failed: {}", String::from_utf8_lossy(&f.data)),
                        }
                    }
                    if rd.read_buf(&mut buf).await? == 0 {
                        return anyhow::Ok(());
                    }
                }
            })
        };
        let pad = vec![b'a'; c.size];
        let mut out = BytesMut::new();
        let mut batches: Vec<u64> = Vec::new();
        let mut tick = tokio::time::interval(p.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        // pace from the first tick, not from before the subscribers connected
        tick.tick().await;
        let t_start = shared.base.elapsed();
        loop {
            tick.tick().await;
            let now = shared.base.elapsed().saturating_sub(t_start);
            if now >= c.runfor || stop.load(Ordering::Acquire) {
                break;
            }
            published_for = now;
            let n = due_by(now, p.rate).saturating_sub(sent).min(MAX_BATCH);
            out.clear();
            if shared.heartbeat.swap(false, Ordering::AcqRel) {
                Command::Nop.encode(&mut out);
            }
            if n > 0 {
                late += late_among(sent, n, now, p.late, p.rate);
                let stamp = shared.base.elapsed().as_nanos() as u64;
                let mut bodies = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    bodies.push(encode_body(c.size, stamp, &pad));
                }
                if n == 1 {
                    Command::Pub {
                        topic: c.topic.clone(),
                        body: bodies.pop().unwrap_or_default(),
                    }
                    .encode(&mut out);
                } else {
                    Command::Mpub {
                        topic: c.topic.clone(),
                        bodies,
                    }
                    .encode(&mut out);
                }
                batches.push(n);
                sent += n;
            }
            if !out.is_empty() {
                wr.write_all(&out).await?;
            }
        }
        // Wait for the last OK, then turn OK counts into message counts.
        let want = batches.len() as u64;
        let until = Instant::now() + p.drain;
        while shared.acked.load(Ordering::Relaxed) < want && Instant::now() < until {
            if acks.is_finished() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        acks.abort();
        let _ = acks.await; // cancelled (or finished): no OK is counted after this
        let ok_batches = shared.acked.load(Ordering::Relaxed) as usize;
        let acked_msgs: u64 = batches.iter().take(ok_batches).sum();
        shared.acked.store(acked_msgs, Ordering::Relaxed);
        wr.shutdown().await.ok();
        Ok(())
    }
    .await;
    (res.map(|_| sent), late, published_for)
}

async fn subscribe(
    mut s: tokio::net::TcpStream,
    mut buf: BytesMut,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    drain: Duration,
) -> Result<()> {
    let mut local = Histogram::<u64>::new_with_bounds(1, 600_000_000_000, 3)?;
    let mut out = BytesMut::new();
    let mut drain_until: Option<Instant> = None;
    loop {
        out.clear();
        let now_ns = shared.base.elapsed().as_nanos() as u64;
        let mut got = 0u64;
        while let Some(f) = v2::parse_frame(&mut buf, 64 << 20)? {
            match f.frame_type {
                v2::FRAME_TYPE_MESSAGE => {
                    let m = v2::decode_message(f.data)?;
                    match decode_body(&m.body) {
                        Some(sent_ns) => {
                            local.record(now_ns.saturating_sub(sent_ns).max(1))?;
                            got += 1;
                        }
                        None => {
                            shared.foreign.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Command::Fin(m.id).encode(&mut out);
                }
                v2::FRAME_TYPE_RESPONSE if f.data.as_ref() == b"_heartbeat_" => {
                    Command::Nop.encode(&mut out);
                }
                v2::FRAME_TYPE_ERROR => {
                    bail!("error frame: {}", String::from_utf8_lossy(&f.data))
                }
                _ => {}
            }
        }
        if got > 0 {
            shared.received.fetch_add(got, Ordering::Relaxed);
        }
        if !out.is_empty() {
            s.write_all(&out).await?;
        }
        if shared.publishing_done.load(Ordering::Acquire) {
            let until = *drain_until.get_or_insert_with(|| Instant::now() + drain);
            // `acked` holds message counts once publishing is done
            if shared.received.load(Ordering::Relaxed) >= shared.acked.load(Ordering::Relaxed)
                || Instant::now() >= until
                || stop.load(Ordering::Acquire)
            {
                break;
            }
        }
        match tokio::time::timeout(Duration::from_millis(50), s.read_buf(&mut buf)).await {
            Ok(Ok(0)) => bail!("connection closed by nsqd"),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => {}
        }
    }
    match shared.hist.lock() {
        Ok(mut h) => h.add(local)?,
        Err(poisoned) => poisoned.into_inner().add(local)?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacing_is_exact_on_average() {
        assert_eq!(due_by(Duration::from_millis(1), 100_000), 100);
        assert_eq!(due_by(Duration::from_micros(1500), 20_000), 30);
        assert_eq!(due_by(Duration::from_secs(10), 20_000), 200_000);
        assert_eq!(due_by(Duration::from_nanos(49_999), 20_000), 0);
        assert_eq!(due_by(Duration::from_nanos(50_000), 20_000), 1);
    }

    #[test]
    fn late_counts_only_messages_due_before_the_cut() {
        let rate = 1000; // one message per ms
        let late = Duration::from_millis(1);
        // on time: at 10 ms, messages 0..10 due, cut at 9 ms -> 0..9 were due before it
        assert_eq!(late_among(9, 1, Duration::from_millis(10), late, rate), 0);
        // a 5 ms stall: at 15 ms sending 10..15, due before 14 ms: 10..14 -> 4 late
        assert_eq!(late_among(10, 5, Duration::from_millis(15), late, rate), 4);
        // at the very start nothing is late
        assert_eq!(late_among(0, 1, Duration::from_micros(500), late, rate), 0);
    }

    #[test]
    fn bodies_round_trip_and_foreign_ones_are_rejected() {
        let pad = vec![b'a'; 200];
        let b = encode_body(200, 123_456_789, &pad);
        assert_eq!(b.len(), 200);
        assert_eq!(decode_body(&b), Some(123_456_789));
        assert_eq!(encode_body(16, 7, &pad).len(), 16);
        assert_eq!(decode_body(b"aaaaaaaaaaaaaaaaaaaa"), None);
        assert_eq!(decode_body(b"nsqbLAT1"), None);
    }

    #[test]
    fn percentile_line_in_microseconds() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 600_000_000_000, 3).unwrap();
        for ns in 1..=1000u64 {
            h.record(ns * 1000).unwrap();
        }
        let line = percentiles(&h);
        assert!(
            line.starts_with("p50 500.") || line.starts_with("p50 499."),
            "{line}"
        );
        assert!(
            line.contains("p99 990.") || line.contains("p99 989."),
            "{line}"
        );
        assert!(
            line.ends_with("max 1000.4 us") || line.contains("max 1000."),
            "{line}"
        );
    }
}
