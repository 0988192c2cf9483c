//! nsqd's side of discovery: one task per `--lookupd-tcp-address` speaking nsqlookupd's
//! V1 protocol. On (re)connect it identifies itself and registers every topic and channel;
//! afterwards it forwards creations and deletions as they happen and pings every 15 s. If
//! the connection fails it reconnects with back-off, so a restarted nsqlookupd learns
//! everything again within seconds.
//!
//! V1 framing: commands are lines (IDENTIFY carries a 4-byte big-endian length and a JSON
//! body); every answer is a 4-byte big-endian length followed by the data.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use protocol::lookup as v1;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{broadcast, watch};

const PING_INTERVAL: Duration = Duration::from_secs(15);
const IO_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_RESPONSE: usize = 1 << 20;

#[derive(Debug, Clone)]
pub struct LookupOptions {
    pub addresses: Vec<String>,
    pub broadcast_address: String,
    pub tcp_port: u16,
    pub http_port: u16,
    pub hostname: String,
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registration {
    Topic(String),
    Channel(String, String),
}

pub trait RegistrationSource: Send + Sync + 'static {
    /// Every topic and channel right now.
    fn snapshot(&self) -> Vec<Registration>;
}

#[derive(Debug, Clone)]
enum Event {
    Register(Registration),
    Unregister(Registration),
}

struct PeerTask {
    address: String,
    stop: watch::Sender<bool>,
}

pub struct Lookup {
    opts: LookupOptions,
    source: Arc<dyn RegistrationSource>,
    events: broadcast::Sender<Event>,
    shutdown: watch::Receiver<bool>,
    peers: Mutex<Vec<PeerTask>>,
}

impl Lookup {
    pub fn spawn(
        opts: LookupOptions,
        source: Arc<dyn RegistrationSource>,
        shutdown: watch::Receiver<bool>,
    ) -> Lookup {
        let (events, _) = broadcast::channel(4096);
        let l = Lookup {
            opts: opts.clone(),
            source,
            events,
            shutdown,
            peers: Mutex::new(Vec::new()),
        };
        l.set_addresses(opts.addresses);
        l
    }

    pub fn register(&self, r: Registration) {
        let _ = self.events.send(Event::Register(r));
    }

    pub fn unregister(&self, r: Registration) {
        let _ = self.events.send(Event::Unregister(r));
    }

    pub fn addresses(&self) -> Vec<String> {
        self.peers
            .lock()
            .iter()
            .map(|p| p.address.clone())
            .collect()
    }

    /// Connect to exactly these lookupds (PUT /config/nsqlookupd_tcp_addresses).
    pub fn set_addresses(&self, addresses: Vec<String>) {
        let mut peers = self.peers.lock();
        peers.retain(|p| {
            let keep = addresses.contains(&p.address);
            if !keep {
                let _ = p.stop.send(true);
            }
            keep
        });
        for a in addresses {
            if peers.iter().any(|p| p.address == a) {
                continue;
            }
            let (stop, stop_rx) = watch::channel(false);
            let peer = Peer {
                address: a.clone(),
                opts: self.opts.clone(),
                source: self.source.clone(),
                events: self.events.subscribe(),
                shutdown: self.shutdown.clone(),
                stop: stop_rx,
            };
            tokio::spawn(peer.run());
            peers.push(PeerTask { address: a, stop });
        }
    }
}

struct Peer {
    address: String,
    opts: LookupOptions,
    source: Arc<dyn RegistrationSource>,
    events: broadcast::Receiver<Event>,
    shutdown: watch::Receiver<bool>,
    stop: watch::Receiver<bool>,
}

impl Peer {
    async fn run(mut self) {
        let mut backoff = Duration::from_millis(200);
        loop {
            if *self.shutdown.borrow() || *self.stop.borrow() {
                return;
            }
            match self.session().await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(lookupd = %self.address, error = %e, "lookupd connection lost; reconnecting");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = self.shutdown.changed() => return,
                _ = self.stop.changed() => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// One connection's life. Ok(()) means stop for good.
    async fn session(&mut self) -> Result<(), String> {
        let mut conn = tokio::time::timeout(IO_TIMEOUT, TcpStream::connect(&self.address))
            .await
            .map_err(|_| "connect timed out".to_string())?
            .map_err(|e| format!("connect: {e}"))?;
        let _ = conn.set_nodelay(true);
        conn.write_all(v1::MAGIC_V1)
            .await
            .map_err(|e| e.to_string())?;
        let ident = serde_json::to_vec(&v1::PeerIdentity {
            broadcast_address: self.opts.broadcast_address.clone(),
            tcp_port: self.opts.tcp_port,
            http_port: self.opts.http_port,
            version: self.opts.version.clone(),
            hostname: self.opts.hostname.clone(),
        })
        .map_err(|e| e.to_string())?;
        let resp = request(&mut conn, &v1::Command::Identify(ident.into())).await?;
        if resp.starts_with(b"E_") {
            return Err(format!(
                "IDENTIFY refused: {}",
                String::from_utf8_lossy(&resp)
            ));
        }
        // Drop events queued before this snapshot; the snapshot covers them.
        while self.events.try_recv().is_ok() {}
        for r in self.source.snapshot() {
            request(&mut conn, &command(true, r)).await?;
        }
        tracing::info!(lookupd = %self.address, "registered with lookupd");
        let mut ping = tokio::time::interval(PING_INTERVAL);
        ping.tick().await;
        let mut probe = [0u8; 1];
        loop {
            tokio::select! {
                // nsqlookupd never speaks first: readable means closed (or broken).
                r = conn.read(&mut probe) => {
                    return Err(match r {
                        Ok(0) => "lookupd closed the connection".to_string(),
                        Ok(_) => "unexpected data from lookupd".to_string(),
                        Err(e) => format!("read: {e}"),
                    });
                }
                _ = ping.tick() => {
                    request(&mut conn, &v1::Command::Ping).await?;
                }
                ev = self.events.recv() => match ev {
                    Ok(Event::Register(r)) => { request(&mut conn, &command(true, r)).await?; }
                    Ok(Event::Unregister(r)) => { request(&mut conn, &command(false, r)).await?; }
                    Err(broadcast::error::RecvError::Lagged(_)) => return Err("missed registration events".into()),
                    Err(broadcast::error::RecvError::Closed) => return Ok(()),
                },
                _ = self.shutdown.changed() => return Ok(()),
                _ = self.stop.changed() => return Ok(()),
            }
        }
    }
}

fn command(register: bool, r: Registration) -> v1::Command {
    let (topic, channel) = match r {
        Registration::Topic(t) => (t, None),
        Registration::Channel(t, c) => (t, Some(c)),
    };
    if register {
        v1::Command::Register { topic, channel }
    } else {
        v1::Command::Unregister { topic, channel }
    }
}

async fn request(conn: &mut TcpStream, cmd: &v1::Command) -> Result<Vec<u8>, String> {
    let mut msg = bytes::BytesMut::new();
    cmd.encode(&mut msg);
    let io = async {
        conn.write_all(&msg)
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut len = [0u8; 4];
        conn.read_exact(&mut len)
            .await
            .map_err(|e| format!("read: {e}"))?;
        let n = u32::from_be_bytes(len) as usize;
        if n > MAX_RESPONSE {
            return Err(format!("response of {n} bytes"));
        }
        let mut data = vec![0u8; n];
        conn.read_exact(&mut data)
            .await
            .map_err(|e| format!("read: {e}"))?;
        Ok(data)
    };
    tokio::time::timeout(IO_TIMEOUT, io)
        .await
        .map_err(|_| "lookupd did not answer".to_string())?
}
