//! Producer: publishes to one nsqd over a single connection, pipelining commands and
//! matching nsqd's answers to them in order.
//!
//! The connection is made on first use and again after it breaks. A publish that was
//! written but not answered when the connection broke fails with an error: the message may
//! or may not have been stored (at-least-once is the caller's retry).

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use protocol::v2::{self, Command};
use tokio::sync::{mpsc, oneshot, Mutex};

use crate::config::Config;
use crate::conn::{Conn, RESPONSE_TIMEOUT};
use crate::error::{Error, Result};

type Reply = oneshot::Sender<Result<Bytes>>;

pub struct Producer {
    addr: String,
    config: Config,
    tx: Mutex<Option<mpsc::Sender<(Command, Reply)>>>,
}

impl Producer {
    pub fn new(addr: impl Into<String>, config: Config) -> Producer {
        Producer {
            addr: addr.into(),
            config,
            tx: Mutex::new(None),
        }
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Connect now (otherwise the first publish does), reporting connection errors early.
    pub async fn connect(&self) -> Result<()> {
        self.sender().await.map(|_| ())
    }

    /// The live connection's command queue, connecting first when there is none.
    async fn sender(&self) -> Result<mpsc::Sender<(Command, Reply)>> {
        let mut g = self.tx.lock().await;
        if let Some(tx) = g.as_ref() {
            if !tx.is_closed() {
                return Ok(tx.clone());
            }
        }
        let conn = Conn::connect(&self.addr, &self.config).await?;
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(run(conn, rx));
        *g = Some(tx.clone());
        Ok(tx)
    }

    async fn call(&self, cmd: Command) -> Result<Bytes> {
        if let Command::Pub { topic, .. }
        | Command::Mpub { topic, .. }
        | Command::Dpub { topic, .. } = &cmd
        {
            if !protocol::names::is_valid_topic_name(topic) {
                return Err(Error::Invalid {
                    what: "topic name",
                    value: topic.clone(),
                });
            }
        }
        let tx = self.sender().await?;
        let (reply, rx) = oneshot::channel();
        let closed = || Error::Closed {
            addr: self.addr.clone(),
        };
        tx.send((cmd, reply)).await.map_err(|_| closed())?;
        match tokio::time::timeout(RESPONSE_TIMEOUT, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(closed()),
            Err(_) => Err(Error::Timeout {
                addr: self.addr.clone(),
                what: "waiting for nsqd's answer",
            }),
        }
    }

    /// PUB one message; returns once nsqd answered OK.
    pub async fn publish(&self, topic: &str, body: impl Into<Bytes>) -> Result<()> {
        self.call(Command::Pub {
            topic: topic.to_string(),
            body: body.into(),
        })
        .await
        .map(|_| ())
    }

    /// MPUB: several messages in one command (all or none are stored).
    pub async fn multi_publish(&self, topic: &str, bodies: Vec<Bytes>) -> Result<()> {
        if bodies.is_empty() {
            return Ok(());
        }
        self.call(Command::Mpub {
            topic: topic.to_string(),
            bodies,
        })
        .await
        .map(|_| ())
    }

    /// DPUB: a message delivered after `delay`.
    pub async fn deferred_publish(
        &self,
        topic: &str,
        delay: Duration,
        body: impl Into<Bytes>,
    ) -> Result<()> {
        self.call(Command::Dpub {
            topic: topic.to_string(),
            defer_ms: delay.as_millis() as i64,
            body: body.into(),
        })
        .await
        .map(|_| ())
    }

    /// Close the connection after the commands already sent are answered.
    pub async fn stop(&self) {
        self.tx.lock().await.take();
    }
}

/// The connection task: writes commands as they come, batching what is queued, and hands
/// each response or error frame to the oldest waiting caller.
async fn run(mut conn: Conn, mut rx: mpsc::Receiver<(Command, Reply)>) {
    let mut waiting: VecDeque<Reply> = VecDeque::new();
    let mut open = true;
    let result: Result<()> = async {
        loop {
            if !open && waiting.is_empty() {
                conn.queue(&Command::Cls);
                conn.flush().await?;
                conn.shutdown().await;
                return Ok(());
            }
            tokio::select! {
                cmd = rx.recv(), if open => {
                    match cmd {
                        Some((cmd, reply)) => {
                            conn.queue(&cmd);
                            waiting.push_back(reply);
                            while let Ok((cmd, reply)) = rx.try_recv() {
                                conn.queue(&cmd);
                                waiting.push_back(reply);
                            }
                            conn.flush().await?;
                        }
                        None => open = false,
                    }
                }
                r = conn.fill() => {
                    r?;
                    while let Some(f) = conn.try_frame()? {
                        match f.frame_type {
                            v2::FRAME_TYPE_RESPONSE if f.data.as_ref() == b"_heartbeat_" => {
                                conn.send(&Command::Nop).await?;
                            }
                            v2::FRAME_TYPE_RESPONSE => {
                                if let Some(w) = waiting.pop_front() {
                                    let _ = w.send(Ok(f.data));
                                }
                            }
                            v2::FRAME_TYPE_ERROR => {
                                let text = String::from_utf8_lossy(&f.data).into_owned();
                                if let Some(w) = waiting.pop_front() {
                                    let _ = w.send(Err(Error::Server { addr: conn.addr.clone(), text }));
                                } else {
                                    tracing::warn!(addr = %conn.addr, "unsolicited error: {text}");
                                }
                            }
                            t => return Err(Error::protocol(&conn.addr, format!("unexpected frame type {t} on a producer connection"))),
                        }
                    }
                }
            }
        }
    }
    .await;
    if let Err(e) = result {
        if !matches!(e, Error::Closed { .. }) || !waiting.is_empty() {
            tracing::debug!("producer connection ended: {e}");
        }
        for w in waiting.drain(..) {
            let _ = w.send(Err(Error::Closed {
                addr: conn.addr.clone(),
            }));
        }
    }
}
