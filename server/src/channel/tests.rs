//! Delivery logic on a real engine in a temp dir, with a clock moved by hand: no sockets,
//! no sleeps.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use edge::clock::{Clock, ManualClock};

use super::*;

struct Fixture {
    _dir: tempfile::TempDir,
    topic: Arc<engine::Topic>,
    channel: Channel,
    clock: Arc<ManualClock>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine::Engine::open(dir.path(), engine::EngineOptions::default()).unwrap();
    let topic = engine.topic("t").unwrap();
    let cursor = topic.channel("c").unwrap();
    let clock = Arc::new(ManualClock::new());
    let e2e = || Quantiles::new(false, Duration::from_secs(600));
    let channel = Channel::new("t", cursor, e2e(), e2e()).with_clock(clock.clone());
    Fixture {
        _dir: dir,
        topic,
        channel,
        clock,
    }
}

impl Fixture {
    fn publish(&self, bodies: &[&str], deliver_at_ms: u64) {
        let msgs = bodies
            .iter()
            .map(|b| engine::NewMessage {
                body: Bytes::from(b.to_string()),
                deliver_at_ms,
            })
            .collect();
        self.topic.publish(msgs, None).unwrap();
    }

    fn take(&self, client: &Arc<Client>, max: usize) -> Vec<engine::Message> {
        let mut out = Vec::new();
        self.channel.take(client, max, false, &mut out).unwrap();
        out
    }
}

fn client(id: u64, msg_timeout: Duration) -> Arc<Client> {
    Arc::new(Client::new(
        id,
        format!("127.0.0.1:{}", 40000 + id),
        msg_timeout,
    ))
}

fn bodies(msgs: &[engine::Message]) -> Vec<String> {
    msgs.iter()
        .map(|m| String::from_utf8_lossy(&m.body).to_string())
        .collect()
}

#[test]
fn take_marks_in_flight_and_finish_acks() {
    let f = fixture();
    let c = client(1, Duration::from_secs(60));
    f.publish(&["a", "b", "c"], 0);
    let got = f.take(&c, 2);
    assert_eq!(bodies(&got), ["a", "b"]);
    assert!(got.iter().all(|m| m.attempts == 1));
    assert_eq!(f.channel.in_flight_count(), 2);
    assert_eq!(c.in_flight_count.load(Ordering::Relaxed), 2);
    f.channel.finish(&c, &got[0].id).unwrap();
    assert_eq!(f.channel.in_flight_count(), 1);
    assert_eq!(c.finish_count.load(Ordering::Relaxed), 1);
    assert_eq!(
        f.channel.finish(&c, &got[0].id),
        Err(InFlightError::NotInFlight),
        "a second FIN of the same id"
    );
    assert_eq!(bodies(&f.take(&c, 10)), ["c"]);
    assert!(f.take(&c, 10).is_empty());
}

#[test]
fn only_the_owner_may_fin_req_or_touch() {
    let f = fixture();
    let (a, b) = (
        client(1, Duration::from_secs(60)),
        client(2, Duration::from_secs(60)),
    );
    f.publish(&["x"], 0);
    let got = f.take(&a, 1);
    let id = got[0].id;
    assert_eq!(f.channel.finish(&b, &id), Err(InFlightError::NotOwner));
    assert_eq!(
        f.channel.requeue(&b, &id, Duration::ZERO),
        Err(InFlightError::NotOwner)
    );
    assert_eq!(f.channel.touch(&b, &id), Err(InFlightError::NotOwner));
    assert_eq!(
        f.channel.touch(&a, &[9; 16]),
        Err(InFlightError::NotInFlight)
    );
    assert_eq!(f.channel.in_flight_count(), 1);
}

#[test]
fn requeue_now_redelivers_with_one_more_attempt() {
    let f = fixture();
    let c = client(1, Duration::from_secs(60));
    f.publish(&["a", "b"], 0);
    let got = f.take(&c, 1);
    f.channel.requeue(&c, &got[0].id, Duration::ZERO).unwrap();
    assert_eq!(f.channel.requeue_count.load(Ordering::Relaxed), 1);
    assert_eq!(c.in_flight_count.load(Ordering::Relaxed), 0);
    // Requeued messages come before new ones.
    let again = f.take(&c, 2);
    assert_eq!(bodies(&again), ["a", "b"]);
    assert_eq!(again[0].attempts, 2);
    assert_eq!(again[1].attempts, 1);
}

#[test]
fn requeue_with_delay_waits_for_the_clock() {
    let f = fixture();
    let c = client(1, Duration::from_secs(60));
    f.publish(&["a"], 0);
    let got = f.take(&c, 1);
    f.channel
        .requeue(&c, &got[0].id, Duration::from_secs(5))
        .unwrap();
    assert_eq!(f.channel.stats(false, &[]).deferred_count, 1);
    f.clock.advance(Duration::from_millis(4999));
    assert!(!f.channel.process_timers());
    assert!(f.take(&c, 1).is_empty());
    f.clock.advance(Duration::from_millis(1));
    assert!(f.channel.process_timers());
    let again = f.take(&c, 1);
    assert_eq!(bodies(&again), ["a"]);
    assert_eq!(again[0].attempts, 2);
}

#[test]
fn in_flight_times_out_after_the_clients_msg_timeout() {
    let f = fixture();
    let c = client(1, Duration::from_secs(10));
    f.publish(&["a"], 0);
    let got = f.take(&c, 1);
    f.clock.advance(Duration::from_secs(9));
    assert!(!f.channel.process_timers());
    assert_eq!(f.channel.in_flight_count(), 1);
    f.clock.advance(Duration::from_secs(1));
    assert!(f.channel.process_timers());
    assert_eq!(f.channel.in_flight_count(), 0);
    assert_eq!(f.channel.timeout_count.load(Ordering::Relaxed), 1);
    assert_eq!(c.in_flight_count.load(Ordering::Relaxed), 0);
    assert_eq!(
        f.channel.finish(&c, &got[0].id),
        Err(InFlightError::NotInFlight),
        "FIN after the timeout"
    );
    assert_eq!(f.take(&c, 1)[0].attempts, 2);
}

#[test]
fn touch_restarts_the_timeout() {
    let f = fixture();
    let c = client(1, Duration::from_secs(10));
    f.publish(&["a"], 0);
    let got = f.take(&c, 1);
    f.clock.advance(Duration::from_secs(8));
    f.channel.touch(&c, &got[0].id).unwrap();
    f.clock.advance(Duration::from_secs(8));
    assert!(
        !f.channel.process_timers(),
        "16 s after take, 8 s after TOUCH"
    );
    assert_eq!(f.channel.in_flight_count(), 1);
    f.clock.advance(Duration::from_secs(2));
    assert!(f.channel.process_timers());
    assert_eq!(f.channel.timeout_count.load(Ordering::Relaxed), 1);
}

#[test]
fn deferred_publish_is_held_until_its_time() {
    let f = fixture();
    let c = client(1, Duration::from_secs(60));
    f.publish(&["later"], f.clock.unix_ms() + 3000);
    f.publish(&["now"], 0);
    assert_eq!(bodies(&f.take(&c, 10)), ["now"]);
    assert_eq!(f.channel.stats(false, &[]).deferred_count, 1);
    f.clock.advance(Duration::from_millis(2999));
    assert!(!f.channel.process_timers());
    f.clock.advance(Duration::from_millis(1));
    assert!(f.channel.process_timers());
    let got = f.take(&c, 10);
    assert_eq!(bodies(&got), ["later"]);
    assert_eq!(got[0].attempts, 1);
}

#[test]
fn removing_a_client_requeues_its_messages_for_the_others() {
    let f = fixture();
    let (a, b) = (
        client(1, Duration::from_secs(60)),
        client(2, Duration::from_secs(60)),
    );
    f.channel.add_client(a.clone(), 0).unwrap();
    f.channel.add_client(b.clone(), 0).unwrap();
    f.publish(&["x", "y"], 0);
    let got = f.take(&a, 2);
    assert_eq!(got.len(), 2);
    assert_eq!(f.channel.remove_client(a.id), 1);
    assert_eq!(f.channel.in_flight_count(), 0);
    assert_eq!(f.channel.requeue_count.load(Ordering::Relaxed), 2);
    let mut got = bodies(&f.take(&b, 10));
    got.sort();
    assert_eq!(got, ["x", "y"]);
}

#[test]
fn max_consumers_is_enforced() {
    let f = fixture();
    f.channel.add_client(client(1, Duration::ZERO), 1).unwrap();
    assert_eq!(f.channel.add_client(client(2, Duration::ZERO), 1), Err(1));
    assert_eq!(f.channel.client_count(), 1);
}

#[test]
fn empty_drops_everything_and_frees_the_clients() {
    let f = fixture();
    let c = client(1, Duration::from_secs(60));
    f.publish(&["a", "b", "c"], 0);
    let got = f.take(&c, 1);
    f.channel
        .requeue(&c, &f.take(&c, 1)[0].id, Duration::from_secs(5))
        .unwrap();
    f.channel.empty().unwrap();
    assert_eq!(f.channel.in_flight_count(), 0);
    assert_eq!(c.in_flight_count.load(Ordering::Relaxed), 0);
    let s = f.channel.stats(false, &[]);
    assert_eq!((s.depth, s.deferred_count), (0, 0));
    assert!(f.take(&c, 10).is_empty());
    assert_eq!(
        f.channel.finish(&c, &got[0].id),
        Err(InFlightError::NotInFlight)
    );
}

#[test]
fn paused_channel_or_topic_holds_new_messages() {
    let f = fixture();
    let c = client(1, Duration::from_secs(60));
    f.publish(&["a", "b"], 0);
    let got = f.take(&c, 1);
    f.channel.requeue(&c, &got[0].id, Duration::ZERO).unwrap();
    // A paused topic still hands out requeued messages, not new ones.
    let mut out = Vec::new();
    f.channel.take(&c, 10, true, &mut out).unwrap();
    assert_eq!(bodies(&out), ["a"]);
    f.channel.requeue(&c, &out[0].id, Duration::ZERO).unwrap();
    f.channel.set_paused(true).unwrap();
    assert!(f.take(&c, 10).is_empty());
    f.channel.set_paused(false).unwrap();
    assert_eq!(bodies(&f.take(&c, 10)), ["a", "b"]);
}

#[test]
fn finish_many_finishes_the_owned_and_reports_the_rest_in_order() {
    let f = fixture();
    let (a, b) = (
        client(1, Duration::from_secs(60)),
        client(2, Duration::from_secs(60)),
    );
    f.publish(&["a", "b", "c", "d"], 0);
    let mine = f.take(&a, 3);
    let theirs = f.take(&b, 1);
    let ids = [
        mine[0].id,
        theirs[0].id,
        mine[2].id,
        *b"00000000deadbeef",
        mine[0].id, // already finished earlier in the same batch
    ];
    let mut failed = Vec::new();
    f.channel.finish_many(&a, &ids, &mut failed);
    assert_eq!(
        failed,
        [
            (1, InFlightError::NotOwner),
            (3, InFlightError::NotInFlight),
            (4, InFlightError::NotInFlight)
        ]
    );
    assert_eq!(a.finish_count.load(Ordering::Relaxed), 2);
    assert_eq!(a.in_flight_count.load(Ordering::Relaxed), 1);
    assert_eq!(f.channel.in_flight_count(), 2, "b's and a's second");
    assert_eq!(f.channel.e2e.histogram().count, 2);
    // The finished ones are gone for good; the others still time out and come back.
    f.clock.advance(Duration::from_secs(61));
    assert!(f.channel.process_timers());
    assert_eq!(bodies(&f.take(&a, 10)), ["b", "d"]);
    assert_eq!(f.channel.cursor.stats().depth, 0);
}

#[test]
fn take_unmarked_then_mark_is_take() {
    let f = fixture();
    let c = client(1, Duration::from_secs(30));
    f.publish(&["a", "b", "c"], 0);
    let mut out = Vec::new();
    let deadline = f.channel.take_unmarked(&c, 2, false, &mut out).unwrap();
    assert_eq!(bodies(&out), ["a", "b"]);
    assert!(out.iter().all(|m| m.attempts == 1));
    assert_eq!(
        f.channel.in_flight_count(),
        0,
        "not in flight before marking"
    );
    let ids: Vec<MessageId> = out.iter().map(|m| m.id).collect();
    f.channel.mark_in_flight(&c, deadline, out.drain(..));
    assert_eq!(f.channel.in_flight_count(), 2);
    assert_eq!(c.in_flight_count.load(Ordering::Relaxed), 2);
    assert_eq!(c.message_count.load(Ordering::Relaxed), 2);
    f.channel.touch(&c, &ids[1]).unwrap();
    f.clock.advance(Duration::from_secs(31));
    assert!(f.channel.process_timers());
    assert_eq!(f.channel.timeout_count.load(Ordering::Relaxed), 2);
    let again = f.take(&c, 10);
    assert_eq!(bodies(&again), ["a", "b", "c"]);
    assert_eq!(again[0].attempts, 2);
}

#[test]
fn id_hasher_keeps_sequential_ids_in_sequential_buckets() {
    use std::hash::BuildHasher;
    let bh = BuildHasherDefault::<IdHasher>::default();
    // Sequential engine ids: consecutive low bits (the bucket index), varied top 7 (the
    // control byte).
    let mut top = std::collections::HashSet::new();
    for seq in 0u64..4096 {
        let id: MessageId = format!("{seq:016x}").into_bytes().try_into().unwrap();
        let h = bh.hash_one(id);
        assert_eq!(h & 4095, seq, "bucket of {seq}");
        top.insert(h >> 57);
    }
    assert_eq!(top.len(), 128);
    // Upper-case digits hash as lower-case ones; any other bytes still hash.
    let lower: MessageId = *b"00000000000abcde";
    let upper: MessageId = *b"00000000000ABCDE";
    assert_eq!(bh.hash_one(lower), bh.hash_one(upper));
    let _ = bh.hash_one(*b"not-an-id-at-all");
}
