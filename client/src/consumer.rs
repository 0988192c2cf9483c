//! Consumer: subscribes to a topic's channel on every nsqd it is given or discovers through
//! nsqlookupd, and runs a handler for each message.
//!
//! - RDY: `max_in_flight` is spread over the connections and redistributed whenever one
//!   comes or goes. With fewer `max_in_flight` than connections, the RDY slots rotate over
//!   the connections every few seconds so none starves.
//! - Back-off: each failure (a requeue with back-off) raises a level; while backing off every
//!   connection is at RDY 0 for `backoff_multiplier * 2^(level-1)`, then one connection gets
//!   RDY 1 to test the water. A success there lowers the level (and backs off again, shorter)
//!   until it reaches 0 and full RDY returns. Outcomes during the pause are ignored, as in
//!   NSQ's official clients.
//! - A message delivered more than `max_attempts` times goes to the give-up hook and is FINed.
//! - [`Consumer::stop`] sets RDY 0, lets in-flight handlers finish (up to `stop_timeout`),
//!   then sends CLS and closes.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use protocol::v2::{self, Command, MessageId};
use tokio::sync::{mpsc, Notify, Semaphore};

use crate::config::Config;
use crate::conn::Conn;
use crate::error::{Error, Result};

/// A message handed to the handler.
#[derive(Debug, Clone)]
pub struct Message {
    pub id: MessageId,
    pub attempts: u16,
    /// When nsqd received it, in nanoseconds since the Unix epoch.
    pub timestamp_ns: i64,
    pub body: Bytes,
    /// The nsqd TCP address it came from.
    pub nsqd_address: String,
    ctl: mpsc::UnboundedSender<Ctl>,
}

impl Message {
    /// Reset the message's in-flight timeout (for handlers that take long).
    pub fn touch(&self) {
        let _ = self.ctl.send(Ctl::Touch(self.id));
    }

    pub fn id_str(&self) -> String {
        String::from_utf8_lossy(&self.id).into_owned()
    }
}

/// What to do with a message once the handler is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// FIN: processed.
    Finish,
    /// REQ with the configured delay (grows with attempts) and back-off.
    Requeue,
    /// REQ with this delay, and back-off.
    RequeueAfter(Duration),
    /// REQ with this delay, without back-off (e.g. "not my turn yet", not a failure).
    RequeueNoBackoff(Duration),
}

impl From<()> for Outcome {
    fn from(_: ()) -> Outcome {
        Outcome::Finish
    }
}

impl From<bool> for Outcome {
    fn from(ok: bool) -> Outcome {
        if ok {
            Outcome::Finish
        } else {
            Outcome::Requeue
        }
    }
}

impl<E: std::fmt::Display> From<std::result::Result<(), E>> for Outcome {
    fn from(r: std::result::Result<(), E>) -> Outcome {
        match r {
            Ok(()) => Outcome::Finish,
            Err(e) => {
                tracing::warn!("handler failed: {e}");
                Outcome::Requeue
            }
        }
    }
}

type BoxFut = Pin<Box<dyn Future<Output = Outcome> + Send>>;
type HandlerFn = Arc<dyn Fn(Message) -> BoxFut + Send + Sync>;
type GiveUpFn = Arc<dyn Fn(&Message) + Send + Sync>;

#[derive(Debug)]
enum Ctl {
    Fin(MessageId),
    Req(MessageId, i64),
    Touch(MessageId),
    Rdy(i64),
    Close,
}

struct ConnEntry {
    ctl: mpsc::UnboundedSender<Ctl>,
    /// RDY last sent on this connection.
    rdy: i64,
}

#[derive(Default)]
struct Backoff {
    level: u32,
    /// Set while the back-off pause runs.
    paused_until: Option<Instant>,
}

/// Counters of a consumer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsumerStats {
    pub received: u64,
    pub finished: u64,
    pub requeued: u64,
    pub gave_up: u64,
    pub connections: usize,
    pub backoff_level: u32,
}

struct Shared {
    topic: String,
    channel: String,
    config: Config,
    handler: HandlerFn,
    give_up: Mutex<Option<GiveUpFn>>,
    conns: Mutex<BTreeMap<String, ConnEntry>>,
    connecting: Mutex<HashSet<String>>,
    direct: Mutex<HashSet<String>>,
    backoff: Mutex<Backoff>,
    rotation: AtomicUsize,
    sem: Arc<Semaphore>,
    in_flight: AtomicUsize,
    received: AtomicU64,
    finished: AtomicU64,
    requeued: AtomicU64,
    gave_up: AtomicU64,
    stopping: AtomicBool,
    changed: Notify,
    http: reqwest::Client,
}

/// See the module documentation.
#[derive(Clone)]
pub struct Consumer {
    shared: Arc<Shared>,
}

impl Consumer {
    /// A consumer of `topic`/`channel` running `handler` on each message. The handler's
    /// result converts into an [`Outcome`]: `()` or `Ok(())` finishes, `Err(_)` or `false`
    /// requeues with back-off.
    pub fn new<F, Fut, O>(
        topic: &str,
        channel: &str,
        config: Config,
        handler: F,
    ) -> Result<Consumer>
    where
        F: Fn(Message) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = O> + Send + 'static,
        O: Into<Outcome>,
    {
        if !protocol::names::is_valid_topic_name(topic) {
            return Err(Error::Invalid {
                what: "topic name",
                value: topic.into(),
            });
        }
        if !protocol::names::is_valid_channel_name(channel) {
            return Err(Error::Invalid {
                what: "channel name",
                value: channel.into(),
            });
        }
        let handler: HandlerFn = Arc::new(move |m| {
            let fut = handler(m);
            Box::pin(async move { fut.await.into() })
        });
        let concurrency = config.concurrency.max(1);
        Ok(Consumer {
            shared: Arc::new(Shared {
                topic: topic.into(),
                channel: channel.into(),
                config,
                handler,
                give_up: Mutex::new(None),
                conns: Mutex::new(BTreeMap::new()),
                connecting: Mutex::new(HashSet::new()),
                direct: Mutex::new(HashSet::new()),
                backoff: Mutex::new(Backoff::default()),
                rotation: AtomicUsize::new(0),
                sem: Arc::new(Semaphore::new(concurrency)),
                in_flight: AtomicUsize::new(0),
                received: AtomicU64::new(0),
                finished: AtomicU64::new(0),
                requeued: AtomicU64::new(0),
                gave_up: AtomicU64::new(0),
                stopping: AtomicBool::new(false),
                changed: Notify::new(),
                http: reqwest::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .unwrap_or_default(),
            }),
        })
    }

    /// Called (instead of the handler) for a message past `max_attempts`; it is then FINed.
    pub fn on_give_up(&self, f: impl Fn(&Message) + Send + Sync + 'static) {
        if let Ok(mut g) = self.shared.give_up.lock() {
            *g = Some(Arc::new(f));
        }
    }

    /// Connect to an nsqd TCP address and subscribe. The consumer reconnects to it by
    /// itself when the connection drops.
    pub async fn connect_to_nsqd(&self, addr: &str) -> Result<()> {
        if let Ok(mut d) = self.shared.direct.lock() {
            d.insert(addr.to_string());
        }
        let r = connect(&self.shared, addr).await;
        if r.is_err() {
            // Keep trying in the background, as a dropped connection would.
            spawn_reconnect(self.shared.clone(), addr.to_string());
        }
        r
    }

    /// Discover the topic's producers through an nsqlookupd HTTP address, now and every
    /// `lookupd_poll_interval`. The first query's error (if any) is returned; polling
    /// continues regardless.
    pub async fn connect_to_lookupd(&self, lookupd: &str) -> Result<()> {
        let first = poll_lookupd(&self.shared, lookupd).await;
        let shared = self.shared.clone();
        let lookupd = lookupd.to_string();
        tokio::spawn(async move {
            loop {
                let jitter = rand::random::<f64>() * 0.1;
                let wait = shared.config.lookupd_poll_interval.mul_f64(1.0 + jitter);
                if wait_or_stop(&shared, wait).await {
                    return;
                }
                if let Err(e) = poll_lookupd(&shared, &lookupd).await {
                    tracing::warn!("{e}");
                }
            }
        });
        first
    }

    pub fn stats(&self) -> ConsumerStats {
        let s = &self.shared;
        ConsumerStats {
            received: s.received.load(Ordering::Relaxed),
            finished: s.finished.load(Ordering::Relaxed),
            requeued: s.requeued.load(Ordering::Relaxed),
            gave_up: s.gave_up.load(Ordering::Relaxed),
            connections: s.conns.lock().map(|c| c.len()).unwrap_or(0),
            backoff_level: s.backoff.lock().map(|b| b.level).unwrap_or(0),
        }
    }

    /// Stop: RDY 0 everywhere, wait for in-flight handlers (up to `stop_timeout`), CLS,
    /// close. Messages still in flight after the timeout are left to nsqd's timeout.
    pub async fn stop(&self) {
        let s = &self.shared;
        s.stopping.store(true, Ordering::SeqCst);
        s.changed.notify_waiters();
        update_rdy(s);
        let deadline = Instant::now() + s.config.stop_timeout;
        while s.in_flight.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if let Ok(conns) = s.conns.lock() {
            for c in conns.values() {
                let _ = c.ctl.send(Ctl::Close);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while s.conns.lock().map(|c| !c.is_empty()).unwrap_or(false) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn is_stopping(&self) -> bool {
        self.shared.stopping.load(Ordering::SeqCst)
    }
}

/// Sleep for `d`; true if the consumer began stopping meanwhile.
async fn wait_or_stop(s: &Shared, d: Duration) -> bool {
    let notified = s.changed.notified();
    if s.stopping.load(Ordering::SeqCst) {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = notified => {}
    }
    s.stopping.load(Ordering::SeqCst)
}

async fn poll_lookupd(s: &Arc<Shared>, lookupd: &str) -> Result<()> {
    let addrs = crate::lookup::producers(&s.http, lookupd, &s.topic).await?;
    for a in addrs {
        let known = s.conns.lock().map(|c| c.contains_key(&a)).unwrap_or(true)
            || s.connecting.lock().map(|c| c.contains(&a)).unwrap_or(true);
        if !known && !s.stopping.load(Ordering::SeqCst) {
            if let Err(e) = connect(s, &a).await {
                tracing::warn!("{e}");
            }
        }
    }
    Ok(())
}

fn spawn_reconnect(s: Arc<Shared>, addr: String) {
    tokio::spawn(async move {
        loop {
            if wait_or_stop(&s, s.config.reconnect_interval).await {
                return;
            }
            let busy = s
                .conns
                .lock()
                .map(|c| c.contains_key(&addr))
                .unwrap_or(true);
            if busy {
                return;
            }
            match connect(&s, &addr).await {
                Ok(()) => return,
                Err(e) => tracing::warn!("reconnect: {e}"),
            }
        }
    });
}

async fn connect(s: &Arc<Shared>, addr: &str) -> Result<()> {
    if s.stopping.load(Ordering::SeqCst) {
        return Err(Error::Stopped);
    }
    {
        let Ok(mut c) = s.connecting.lock() else {
            return Err(Error::Stopped);
        };
        if !c.insert(addr.to_string()) {
            return Ok(()); // someone else is connecting
        }
    }
    let r = subscribe(s, addr).await;
    if let Ok(mut c) = s.connecting.lock() {
        c.remove(addr);
    }
    let conn = r?;
    let (tx, rx) = mpsc::unbounded_channel();
    if let Ok(mut conns) = s.conns.lock() {
        conns.insert(addr.to_string(), ConnEntry { ctl: tx, rdy: 0 });
    }
    tracing::info!(addr, topic = %s.topic, channel = %s.channel, "subscribed");
    tokio::spawn(conn_task(s.clone(), conn, rx));
    update_rdy(s);
    Ok(())
}

async fn subscribe(s: &Shared, addr: &str) -> Result<Conn> {
    let mut conn = Conn::connect(addr, &s.config).await?;
    conn.send(&Command::Sub {
        topic: s.topic.clone(),
        channel: s.channel.clone(),
    })
    .await?;
    let f = tokio::time::timeout(s.config.dial_timeout, conn.read_frame())
        .await
        .map_err(|_| Error::Timeout {
            addr: addr.to_string(),
            what: "waiting for SUB's answer",
        })??;
    match f.frame_type {
        v2::FRAME_TYPE_RESPONSE if f.data.as_ref() == b"OK" => Ok(conn),
        _ => Err(Error::Server {
            addr: addr.to_string(),
            text: String::from_utf8_lossy(&f.data).into_owned(),
        }),
    }
}

/// The RDY each connection should have now.
fn rdy_plan(s: &Shared, addrs: &[String]) -> Vec<i64> {
    let n = addrs.len();
    let mut plan = vec![0i64; n];
    if n == 0 || s.stopping.load(Ordering::SeqCst) {
        return plan;
    }
    let (level, paused) = s
        .backoff
        .lock()
        .map(|b| (b.level, b.paused_until.is_some()))
        .unwrap_or((0, false));
    if paused {
        return plan;
    }
    let rot = s.rotation.load(Ordering::Relaxed);
    if level > 0 {
        plan[rot % n] = 1; // testing the water on one connection
        return plan;
    }
    let total = s.config.max_in_flight.max(1) as usize;
    for (i, p) in plan.iter_mut().enumerate() {
        // Slots are dealt from a rotating start so a remainder (or a max_in_flight smaller
        // than the connection count) moves around.
        let k = (i + n - rot % n) % n;
        *p = (total / n + usize::from(k < total % n)) as i64;
    }
    plan
}

fn update_rdy(s: &Shared) {
    let Ok(mut conns) = s.conns.lock() else {
        return;
    };
    let addrs: Vec<String> = conns.keys().cloned().collect();
    let plan = rdy_plan(s, &addrs);
    for (a, want) in addrs.iter().zip(plan) {
        if let Some(c) = conns.get_mut(a) {
            if c.rdy != want {
                c.rdy = want;
                let _ = c.ctl.send(Ctl::Rdy(want));
            }
        }
    }
}

/// A handler outcome for back-off purposes: `Some(true)` success, `Some(false)` failure.
fn on_outcome(s: &Arc<Shared>, success: bool) {
    let pause = {
        let Ok(mut b) = s.backoff.lock() else {
            return;
        };
        if b.paused_until.is_some() {
            return;
        }
        if success {
            if b.level == 0 {
                return;
            }
            b.level -= 1;
        } else {
            b.level = (b.level + 1).min(30);
        }
        if b.level == 0 {
            None
        } else {
            let d = s.config.backoff_duration(b.level);
            b.paused_until = Some(Instant::now() + d);
            Some(d)
        }
    };
    update_rdy(s);
    if let Some(d) = pause {
        tracing::debug!("backing off for {d:?}");
        let s = s.clone();
        tokio::spawn(async move {
            tokio::time::sleep(d).await;
            if let Ok(mut b) = s.backoff.lock() {
                b.paused_until = None;
            }
            s.rotation.fetch_add(1, Ordering::Relaxed);
            update_rdy(&s);
        });
    }
}

async fn conn_task(s: Arc<Shared>, mut conn: Conn, mut rx: mpsc::UnboundedReceiver<Ctl>) {
    let addr = conn.addr.clone();
    let mut tx = None;
    if let Ok(conns) = s.conns.lock() {
        tx = conns.get(&addr).map(|c| c.ctl.clone());
    }
    let Some(tx) = tx else {
        return;
    };
    let mut closing = false;
    let mut rotate = tokio::time::interval(Duration::from_secs(5));
    let result: Result<()> = async {
        loop {
            tokio::select! {
                ctl = rx.recv() => {
                    let Some(ctl) = ctl else { return Ok(()) };
                    let mut next = Some(ctl);
                    while let Some(c) = next {
                        match c {
                            Ctl::Fin(id) => conn.queue(&Command::Fin(id)),
                            Ctl::Req(id, ms) => conn.queue(&Command::Req { id, timeout_ms: ms }),
                            Ctl::Touch(id) => conn.queue(&Command::Touch(id)),
                            Ctl::Rdy(n) => conn.queue(&Command::Rdy(n)),
                            Ctl::Close => {
                                conn.queue(&Command::Cls);
                                closing = true;
                            }
                        }
                        next = rx.try_recv().ok();
                    }
                    conn.flush().await?;
                }
                r = conn.fill() => {
                    r?;
                    while let Some(f) = conn.try_frame()? {
                        match f.frame_type {
                            v2::FRAME_TYPE_MESSAGE => {
                                let m = v2::decode_message(f.data)
                                    .map_err(|e| Error::protocol(&addr, e))?;
                                dispatch(&s, &addr, &tx, m);
                            }
                            v2::FRAME_TYPE_RESPONSE if f.data.as_ref() == b"_heartbeat_" => {
                                conn.send(&Command::Nop).await?;
                            }
                            v2::FRAME_TYPE_RESPONSE if f.data.as_ref() == b"CLOSE_WAIT" => {
                                conn.shutdown().await;
                                return Ok(());
                            }
                            v2::FRAME_TYPE_RESPONSE => {}
                            _ => {
                                let text = String::from_utf8_lossy(&f.data);
                                // FIN/REQ/TOUCH of a message that timed out meanwhile are
                                // not fatal; nsqd closes the connection for the rest.
                                tracing::warn!(addr = %addr, "nsqd: {text}");
                            }
                        }
                    }
                }
                _ = rotate.tick(), if !closing => {
                    // Move RDY slots around when there are fewer than connections.
                    let n = s.conns.lock().map(|c| c.len()).unwrap_or(1);
                    if (s.config.max_in_flight as usize) < n {
                        s.rotation.fetch_add(1, Ordering::Relaxed);
                        update_rdy(&s);
                    }
                }
            }
        }
    }
    .await;
    if let Err(e) = &result {
        if !s.stopping.load(Ordering::SeqCst) {
            tracing::warn!("connection to {addr} ended: {e}");
        }
    }
    if let Ok(mut conns) = s.conns.lock() {
        conns.remove(&addr);
    }
    update_rdy(&s);
    let direct = s.direct.lock().map(|d| d.contains(&addr)).unwrap_or(false);
    if direct && !s.stopping.load(Ordering::SeqCst) {
        spawn_reconnect(s.clone(), addr);
    }
}

fn dispatch(s: &Arc<Shared>, addr: &str, tx: &mpsc::UnboundedSender<Ctl>, m: v2::Message) {
    s.received.fetch_add(1, Ordering::Relaxed);
    let msg = Message {
        id: m.id,
        attempts: m.attempts,
        timestamp_ns: m.timestamp_ns,
        body: m.body,
        nsqd_address: addr.to_string(),
        ctl: tx.clone(),
    };
    if s.stopping.load(Ordering::SeqCst) {
        // Arrived after RDY 0 went out: give it straight back for another consumer.
        let _ = tx.send(Ctl::Req(msg.id, 0));
        s.requeued.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let max = s.config.max_attempts;
    if max > 0 && msg.attempts > max {
        let hook = s.give_up.lock().ok().and_then(|g| g.clone());
        match hook {
            Some(h) => h(&msg),
            None => tracing::warn!(
                "giving up on message {} after {} attempts",
                msg.id_str(),
                msg.attempts
            ),
        }
        s.gave_up.fetch_add(1, Ordering::Relaxed);
        let _ = tx.send(Ctl::Fin(msg.id));
        return;
    }
    s.in_flight.fetch_add(1, Ordering::SeqCst);
    let (id, attempts, ctl) = (msg.id, msg.attempts, msg.ctl.clone());
    // The handler is called here, in the order messages arrived, so whatever it does
    // before its first await (e.g. queueing the message for a writer) keeps that order;
    // the future it returns then runs under the concurrency limit. A panic, in the call or
    // in the future (which runs in a task of its own), becomes a requeue.
    let fut = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (s.handler)(msg)));
    let s = s.clone();
    tokio::spawn(async move {
        let outcome = match fut {
            Err(_) => {
                tracing::error!("handler panicked");
                Outcome::Requeue
            }
            Ok(fut) => {
                let Ok(_permit) = s.sem.clone().acquire_owned().await else {
                    return;
                };
                match tokio::spawn(fut).await {
                    Ok(o) => o,
                    Err(e) => {
                        tracing::error!("handler panicked: {e}");
                        Outcome::Requeue
                    }
                }
            }
        };
        let (cmd, success) = match outcome {
            Outcome::Finish => (Ctl::Fin(id), Some(true)),
            Outcome::Requeue => (
                Ctl::Req(id, s.config.requeue_delay(attempts).as_millis() as i64),
                Some(false),
            ),
            Outcome::RequeueAfter(d) => (Ctl::Req(id, d.as_millis() as i64), Some(false)),
            Outcome::RequeueNoBackoff(d) => (Ctl::Req(id, d.as_millis() as i64), None),
        };
        if matches!(cmd, Ctl::Fin(_)) {
            s.finished.fetch_add(1, Ordering::Relaxed);
        } else {
            s.requeued.fetch_add(1, Ordering::Relaxed);
        }
        let _ = ctl.send(cmd);
        s.in_flight.fetch_sub(1, Ordering::SeqCst);
        if let Some(ok) = success {
            on_outcome(&s, ok);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn consumer(max_in_flight: u32) -> Consumer {
        let config = Config {
            max_in_flight,
            ..Config::default()
        };
        Consumer::new("t", "c", config, |_m| async {}).unwrap()
    }

    fn addrs(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("a{i}")).collect()
    }

    #[test]
    fn rdy_is_spread_and_rotates() {
        let c = consumer(10);
        assert_eq!(rdy_plan(&c.shared, &addrs(3)), vec![4, 3, 3]);
        assert_eq!(rdy_plan(&c.shared, &addrs(1)), vec![10]);
        assert!(rdy_plan(&c.shared, &[]).is_empty());
        let c = consumer(2);
        assert_eq!(rdy_plan(&c.shared, &addrs(3)), vec![1, 1, 0]);
        c.shared.rotation.fetch_add(1, Ordering::Relaxed);
        assert_eq!(rdy_plan(&c.shared, &addrs(3)), vec![0, 1, 1]);
        c.shared.rotation.fetch_add(1, Ordering::Relaxed);
        assert_eq!(rdy_plan(&c.shared, &addrs(3)), vec![1, 0, 1]);
    }

    #[test]
    fn backoff_pauses_then_tests_with_one() {
        let c = consumer(100);
        {
            let mut b = c.shared.backoff.lock().unwrap();
            b.level = 2;
            b.paused_until = Some(Instant::now());
        }
        assert_eq!(rdy_plan(&c.shared, &addrs(2)), vec![0, 0]);
        c.shared.backoff.lock().unwrap().paused_until = None;
        assert_eq!(rdy_plan(&c.shared, &addrs(2)).iter().sum::<i64>(), 1);
        c.shared.backoff.lock().unwrap().level = 0;
        assert_eq!(rdy_plan(&c.shared, &addrs(2)), vec![50, 50]);
        c.shared.stopping.store(true, Ordering::SeqCst);
        assert_eq!(rdy_plan(&c.shared, &addrs(2)), vec![0, 0]);
    }

    #[test]
    fn outcomes_convert() {
        assert_eq!(Outcome::from(()), Outcome::Finish);
        assert_eq!(Outcome::from(false), Outcome::Requeue);
        assert_eq!(Outcome::from(Err::<(), _>("x")), Outcome::Requeue);
        assert_eq!(Outcome::from(Ok::<(), String>(())), Outcome::Finish);
        assert!(Consumer::new("bad topic", "c", Config::default(), |_m| async {}).is_err());
        assert!(Consumer::new("t", "", Config::default(), |_m| async {}).is_err());
    }
}
