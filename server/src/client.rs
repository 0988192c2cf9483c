//! Per-connection state that other parts of nsqd look at: the channel (in-flight counting,
//! timeouts), /stats, and the connection task itself. Counters are atomics so the delivery
//! hot path never takes a lock for them.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::Notify;

/// Where a connection is in its life, numbered as NSQ reports it in /stats (NSQ: 0 init,
/// 1 disconnected, 2 connected, 3 subscribed, 4 closing; a V2 connection is only ever in
/// these three).
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    /// Connected, not subscribed: may IDENTIFY, AUTH, publish, SUB.
    Init = 0,
    /// After SUB: receives messages as RDY allows.
    Subscribed = 3,
    /// After CLS: finishes what it has in flight, receives nothing new.
    Closing = 4,
}

impl ConnState {
    fn from_i32(v: i32) -> ConnState {
        match v {
            3 => ConnState::Subscribed,
            4 => ConnState::Closing,
            _ => ConnState::Init,
        }
    }
}

/// [`ConnState::Init`] as /stats prints it.
pub const STATE_INIT: i32 = ConnState::Init as i32;

/// What a client told us in IDENTIFY and what was negotiated; read by /stats.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    pub client_id: String,
    pub hostname: String,
    pub user_agent: String,
    pub remote_address: String,
    pub tls: bool,
    pub tls_version: String,
    pub tls_cipher_suite: String,
    pub snappy: bool,
    pub deflate: bool,
    pub sample_rate: i32,
    pub auth_identity: String,
    pub auth_identity_url: String,
    pub authed: bool,
    /// Topic and channel after SUB.
    pub sub: Option<(String, String)>,
}

pub struct Client {
    pub id: u64,
    /// RDY: how many messages the client is willing to have in flight.
    pub ready_count: AtomicI64,
    pub in_flight_count: AtomicI64,
    pub message_count: AtomicU64,
    pub finish_count: AtomicU64,
    pub requeue_count: AtomicU64,
    /// A [`ConnState`], as a number so /stats reads it without a lock.
    pub state: std::sync::atomic::AtomicI32,
    /// Per-client in-flight timeout in milliseconds (IDENTIFY msg_timeout or --msg-timeout).
    pub msg_timeout_ms: AtomicU64,
    /// Woken when in-flight count drops from outside the connection task (timeouts,
    /// channel empty), so the task can send more.
    pub notify: Notify,
    /// Set when the channel it subscribed to is deleted: the connection must close.
    pub kicked: AtomicBool,
    pub connect_ts: i64,
    pub info: Mutex<ClientInfo>,
    /// Messages published by this client per topic (NSQ's pub_counts).
    pub pub_counts: Mutex<Vec<(String, u64)>>,
}

impl Client {
    pub fn new(id: u64, remote: String, msg_timeout: Duration) -> Client {
        let hostname = remote
            .rsplit_once(':')
            .map(|(h, _)| h.to_string())
            .unwrap_or_default();
        Client {
            id,
            ready_count: AtomicI64::new(0),
            in_flight_count: AtomicI64::new(0),
            message_count: AtomicU64::new(0),
            finish_count: AtomicU64::new(0),
            requeue_count: AtomicU64::new(0),
            state: std::sync::atomic::AtomicI32::new(STATE_INIT),
            msg_timeout_ms: AtomicU64::new(msg_timeout.as_millis() as u64),
            notify: Notify::new(),
            kicked: AtomicBool::new(false),
            connect_ts: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0),
            info: Mutex::new(ClientInfo {
                client_id: hostname.clone(),
                hostname,
                remote_address: remote,
                ..ClientInfo::default()
            }),
            pub_counts: Mutex::new(Vec::new()),
        }
    }

    pub fn state(&self) -> ConnState {
        ConnState::from_i32(self.state.load(Ordering::Acquire))
    }

    pub fn set_state(&self, state: ConnState) {
        self.state.store(state as i32, Ordering::Release);
    }

    pub fn msg_timeout(&self) -> Duration {
        Duration::from_millis(self.msg_timeout_ms.load(Ordering::Relaxed))
    }

    /// How many more messages may be sent now.
    pub fn room(&self) -> usize {
        let rdy = self.ready_count.load(Ordering::Acquire);
        let inflt = self.in_flight_count.load(Ordering::Acquire);
        (rdy - inflt).max(0) as usize
    }

    pub fn count_pub(&self, topic: &str, n: u64) {
        let mut counts = self.pub_counts.lock();
        if let Some(e) = counts.iter_mut().find(|(t, _)| t == topic) {
            e.1 += n;
        } else {
            counts.push((topic.to_string(), n));
        }
    }

    pub fn stats(&self) -> ClientStats {
        let info = self.info.lock().clone();
        ClientStats {
            client_id: info.client_id,
            hostname: info.hostname,
            version: "V2".into(),
            remote_address: info.remote_address,
            state: self.state.load(Ordering::Relaxed),
            ready_count: self.ready_count.load(Ordering::Relaxed),
            in_flight_count: self.in_flight_count.load(Ordering::Relaxed),
            message_count: self.message_count.load(Ordering::Relaxed),
            finish_count: self.finish_count.load(Ordering::Relaxed),
            requeue_count: self.requeue_count.load(Ordering::Relaxed),
            connect_ts: self.connect_ts,
            sample_rate: info.sample_rate,
            deflate: info.deflate,
            snappy: info.snappy,
            user_agent: info.user_agent,
            authed: info.authed,
            auth_identity: info.auth_identity,
            auth_identity_url: info.auth_identity_url,
            pub_counts: self
                .pub_counts
                .lock()
                .iter()
                .map(|(t, c)| PubCount {
                    topic: t.clone(),
                    count: *c,
                })
                .collect(),
            tls: info.tls,
            tls_cipher_suite: info.tls_cipher_suite,
            tls_version: info.tls_version,
            tls_negotiated_protocol: String::new(),
            tls_negotiated_protocol_is_mutual: false,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PubCount {
    pub topic: String,
    pub count: u64,
}

/// A client as /stats shows it (NSQ's field names).
#[derive(Debug, Clone, Serialize)]
pub struct ClientStats {
    pub client_id: String,
    pub hostname: String,
    pub version: String,
    pub remote_address: String,
    pub state: i32,
    pub ready_count: i64,
    pub in_flight_count: i64,
    pub message_count: u64,
    pub finish_count: u64,
    pub requeue_count: u64,
    pub connect_ts: i64,
    pub sample_rate: i32,
    pub deflate: bool,
    pub snappy: bool,
    pub user_agent: String,
    // NSQ leaves these four out when empty (omitempty); so do we, for an identical key set.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub authed: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub auth_identity: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub auth_identity_url: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pub_counts: Vec<PubCount>,
    pub tls: bool,
    pub tls_cipher_suite: String,
    pub tls_version: String,
    pub tls_negotiated_protocol: String,
    pub tls_negotiated_protocol_is_mutual: bool,
}
