//! One TCP client speaking protocol V2: the read loop, command execution, message delivery
//! and heartbeats, all in one task so that the ordering of responses and messages on the
//! socket is simply the order in which this task writes them.
//!
//! Byte-level parsing and frame encoding are `protocol::v2`, IDENTIFY negotiation is
//! `protocol::identify`; this module decides what each command does to nsqd and which of
//! NSQ's errors a client gets when the command is not allowed:
//! - here: the connection loop, command dispatch, output flushing;
//! - [`identify`](self::identify): IDENTIFY and the TLS / compression upgrades;
//! - [`auth`](self::auth): AUTH and the authorization checks;
//! - [`delivery`](self::delivery): SUB, RDY, FIN, REQ, TOUCH, CLS, the publishes, and `pump`;
//! - [`transport`]: the stream under it (TCP, TLS, or a test's duplex);
//! - [`error`]: why a connection ended.

mod auth;
mod delivery;
mod error;
mod identify;
#[cfg(test)]
mod tests;
mod transport;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use protocol::v2::{self, Command, ProtocolError};
use tokio::sync::watch;
// tokio's clock, so heartbeat deadlines follow a test's paused time.
use tokio::time::Instant;

use crate::channel::Channel;
use crate::client::Client;
use crate::compression::Codec;
use crate::nsqd::Nsqd;
use crate::topic::Topic;

pub use error::ConnError;
pub use transport::Stream;
use transport::Transport;

const DEFAULT_HEARTBEAT: Duration =
    Duration::from_millis(protocol::identify::DEFAULT_HEARTBEAT_INTERVAL_MS);
const DEFAULT_OUTPUT_BUFFER: usize = protocol::identify::DEFAULT_OUTPUT_BUFFER_SIZE;
const READ_CHUNK: usize = 64 * 1024;
/// How long a new connection has to send the 4-byte protocol magic.
const MAGIC_TIMEOUT: Duration = Duration::from_secs(30);

/// Serve one accepted connection until it closes, errs, or nsqd shuts down. `stream` is the
/// accepted TCP socket, or any other byte stream (tests serve one end of a duplex).
pub async fn serve<S: Stream>(
    nsqd: Arc<Nsqd>,
    stream: S,
    remote: SocketAddr,
    shutdown: watch::Receiver<bool>,
) {
    let id = nsqd.next_client_id();
    let opts = nsqd.opts();
    let client = Arc::new(Client::new(id, remote.to_string(), opts.msg_timeout));
    nsqd.clients.lock().insert(id, client.clone());
    let mut conn = Conn {
        nsqd: nsqd.clone(),
        client: client.clone(),
        transport: Transport::Plain(stream),
        codec: None,
        raw_in: BytesMut::with_capacity(READ_CHUNK),
        plain_in: BytesMut::new(),
        out: BytesMut::with_capacity(DEFAULT_OUTPUT_BUFFER),
        wire_out: Vec::new(),
        heartbeat: Some(DEFAULT_HEARTBEAT),
        output_buffer_size: DEFAULT_OUTPUT_BUFFER,
        identified: false,
        sub: None,
        last_read: Instant::now(),
        auth: None,
        sample_rate: 0,
        scratch: Vec::new(),
        avg_frame: 256,
        fins: Vec::new(),
        fin_ids: Vec::new(),
        fin_failed: Vec::new(),
        spill_owed: Vec::new(),
    };
    let result = conn.run(shutdown).await;
    conn.pay_spills();
    match &result {
        Ok(()) => tracing::debug!(client = id, %remote, "client closed"),
        Err(e) => tracing::info!(client = id, %remote, reason = %e, "client disconnected"),
    }
    if let Some((topic, channel)) = conn.sub.take() {
        nsqd.client_left_channel(&topic, &channel, id);
    }
    nsqd.clients.lock().remove(&id);
}

struct Conn<S> {
    nsqd: Arc<Nsqd>,
    client: Arc<Client>,
    transport: Transport<S>,
    codec: Option<Codec>,
    /// Bytes as read from the socket.
    raw_in: BytesMut,
    /// Decompressed input when a codec is active.
    plain_in: BytesMut,
    /// Frames waiting to be flushed (uncompressed).
    out: BytesMut,
    wire_out: Vec<u8>,
    heartbeat: Option<Duration>,
    output_buffer_size: usize,
    identified: bool,
    sub: Option<(Arc<Topic>, Arc<Channel>)>,
    last_read: Instant,
    auth: Option<crate::auth::AuthState>,
    sample_rate: i32,
    scratch: Vec<engine::Message>,
    /// Average size of the message frames this connection sent (bytes, smoothed): bounds a
    /// batch by bytes as well as by count, so a big RDY never serialises megabytes at once.
    avg_frame: usize,
    /// FIN ids (as on the wire) read but not yet executed; see `process_input`.
    fins: Vec<[u8; 16]>,
    /// Scratch for `finish_gathered`: the engine's ids, and the ones that failed.
    fin_ids: Vec<[u8; 16]>,
    fin_failed: Vec<(usize, crate::channel::InFlightError)>,
    /// Topics whose publishes left records over the memory bound to write once the
    /// answers are flushed (see `Topic::spill_owed_in_background`).
    spill_owed: Vec<Arc<Topic>>,
}

impl<S: Stream> Conn<S> {
    async fn run(&mut self, mut shutdown: watch::Receiver<bool>) -> Result<(), ConnError> {
        self.read_magic().await?;
        let mut hb_tick = tokio::time::interval(self.heartbeat.unwrap_or(DEFAULT_HEARTBEAT));
        hb_tick.tick().await;
        let mut hb_current = self.heartbeat;
        loop {
            // 1. Execute every complete command we have.
            self.process_input().await?;
            if self.heartbeat != hb_current {
                hb_current = self.heartbeat;
                if let Some(i) = hb_current {
                    hb_tick = tokio::time::interval(i);
                    hb_tick.tick().await;
                }
            }
            if self.client.kicked.load(Ordering::Acquire) {
                self.flush().await?;
                return Err(ConnError::Kicked);
            }

            // 2. Arm wake-ups before looking for messages so a publish that lands between
            //    the look and the wait is not missed.
            let sub = self.sub.clone();
            let ch_notified = sub.as_ref().map(|(_, c)| c.notify.notified());
            let client = self.client.clone();
            let cl_notified = client.notify.notified();
            tokio::pin!(cl_notified);
            cl_notified.as_mut().enable();
            let mut ch_notified = ch_notified.map(Box::pin);
            if let Some(n) = ch_notified.as_mut() {
                n.as_mut().enable();
            }

            // 3. Deliver what the client has room for.
            let mut sent_full = false;
            if let Some((topic, channel)) = &sub {
                sent_full = self.pump(topic, channel)?;
            }
            self.flush().await?;
            // The answers are out: the client sends its next batch while this writes.
            self.pay_spills();
            if sent_full {
                continue; // more may be waiting; look again before sleeping
            }

            // 4. Wait for input, new messages, a heartbeat, or shutdown.
            let hb = self.heartbeat;
            tokio::select! {
                r = self.transport.read_buf(&mut self.raw_in) => {
                    if r.map_err(ConnError::Read)? == 0 {
                        return Ok(());
                    }
                    self.last_read = Instant::now();
                    if let Some(codec) = self.codec.as_mut() {
                        codec.decode(&mut self.raw_in, &mut self.plain_in)?;
                    }
                }
                _ = async { match ch_notified.as_mut() { Some(n) => n.as_mut().await, None => std::future::pending().await } } => {}
                _ = &mut cl_notified => {}
                _ = hb_tick.tick(), if hb.is_some() => {
                    if let Some(interval) = hb {
                        if self.last_read.elapsed() > interval * 2 {
                            return Err(ConnError::Timeout("missed heartbeats"));
                        }
                        self.push_frame(v2::FRAME_TYPE_RESPONSE, b"_heartbeat_");
                    }
                }
                _ = shutdown.changed() => {
                    let _ = self.flush().await;
                    return Ok(());
                }
            }
        }
    }

    /// Have what this connection's publishes left owed to the log written (without
    /// waiting for it: see `Topic::spill_owed_in_background`).
    fn pay_spills(&mut self) {
        for t in self.spill_owed.drain(..) {
            t.spill_owed_in_background();
        }
    }

    /// The 4-byte `  V2` a client sends first; anything else gets `E_BAD_PROTOCOL`.
    async fn read_magic(&mut self) -> Result<(), ConnError> {
        let mut magic = [0u8; 4];
        match tokio::time::timeout(MAGIC_TIMEOUT, self.transport.read_exact(&mut magic)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(ConnError::Magic(e)),
            Err(_) => return Err(ConnError::Timeout("no protocol magic within 30s")),
        }
        if &magic != v2::MAGIC_V2 {
            self.push_frame(v2::FRAME_TYPE_ERROR, b"E_BAD_PROTOCOL");
            let _ = self.flush().await;
            return Err(ConnError::BadMagic(magic));
        }
        Ok(())
    }

    /// Parse and execute commands until the input runs out. A client error is sent as an
    /// error frame; a fatal one (every parse error is) then ends the connection.
    async fn process_input(&mut self) -> Result<(), ConnError> {
        let mut fin_ok: Option<bool> = None;
        loop {
            let limits = self.limits();
            let buf = if self.codec.is_some() {
                &mut self.plain_in
            } else {
                &mut self.raw_in
            };
            let parsed = v2::parse_command(buf, &limits);
            // FINs are gathered while the input lasts and finished together (one lock round
            // on the channel); any other command, the end of the input or an error finishes
            // the gathered ones first, so replies and errors keep the commands' order.
            if let Ok(Some(Command::Fin(id))) = &parsed {
                // Only other commands change what `can_batch_fin` looks at: ask once per run.
                if *fin_ok.get_or_insert_with(|| self.can_batch_fin()) {
                    self.fins.push(*id);
                    continue;
                }
            }
            fin_ok = None;
            self.finish_gathered();
            let result = match parsed {
                Ok(Some(cmd)) => self.exec(cmd).await,
                Ok(None) => return Ok(()),
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                self.client_error(&e);
                if e.fatal {
                    let _ = self.flush().await;
                    return Err(ConnError::Client(e));
                }
            }
        }
    }

    /// A client error goes back as an error frame (a fatal one then ends the connection).
    fn client_error(&mut self, e: &ProtocolError) {
        tracing::debug!(client = self.client.id, error = %e, "client error");
        self.push_frame(v2::FRAME_TYPE_ERROR, e.to_string().as_bytes());
    }

    fn limits(&self) -> v2::Limits {
        let o = self.nsqd.opts();
        v2::Limits {
            max_msg_size: o.max_msg_size.max(0) as u64,
            max_body_size: o.max_body_size.max(0) as u64,
        }
    }

    /// One handler per command.
    async fn exec(&mut self, cmd: Command) -> Result<(), ProtocolError> {
        let opts = self.nsqd.opts();
        if !matches!(cmd, Command::Identify(_))
            && opts.tls_required()
            && !self.client.info.lock().tls
        {
            return Err(ProtocolError::fatal(
                "E_INVALID",
                format!("cannot {} in current state (TLS required)", cmd.name()),
            ));
        }
        match cmd {
            Command::Nop => Ok(()),
            Command::Identify(body) => self.identify(body).await,
            Command::Auth(body) => self.auth(body).await,
            Command::Sub { topic, channel } => self.sub(topic, channel).await,
            Command::Rdy(count) => self.rdy(count),
            Command::Fin(id) => self.fin(&id),
            Command::Req { id, timeout_ms } => self.req(&id, timeout_ms),
            Command::Touch(id) => self.touch(&id),
            Command::Cls => self.cls(),
            Command::Pub { topic, body } => self.publish("PUB", topic, vec![body], 0).await,
            Command::Mpub { topic, bodies } => self.publish("MPUB", topic, bodies, 0).await,
            Command::Dpub {
                topic,
                defer_ms,
                body,
            } => self.dpub(topic, defer_ms, body).await,
        }
    }

    async fn dpub(
        &mut self,
        topic: String,
        defer_ms: i64,
        body: Bytes,
    ) -> Result<(), ProtocolError> {
        let max = self.nsqd.opts().max_req_timeout.as_millis() as i64;
        if defer_ms < 0 || defer_ms > max {
            return Err(ProtocolError::fatal(
                "E_INVALID",
                format!("DPUB timeout {defer_ms} out of range 0-{max}"),
            ));
        }
        let at = edge::clock::unix_ms() + defer_ms as u64;
        self.publish("DPUB", topic, vec![body], at).await
    }

    fn push_frame(&mut self, frame_type: u32, data: &[u8]) {
        v2::encode_frame(&mut self.out, frame_type, data);
    }

    /// Write the output buffer (compressed when a codec is active). A client that does not
    /// read for twice its heartbeat interval (at least 10 s) is disconnected.
    async fn flush(&mut self) -> Result<(), ConnError> {
        if self.out.is_empty() {
            return Ok(());
        }
        let timeout = self
            .heartbeat
            .map(|h| (h * 2).max(Duration::from_secs(10)))
            .unwrap_or(Duration::from_secs(60));
        let write = async {
            let wire: &[u8] = match self.codec.as_mut() {
                Some(codec) => {
                    self.wire_out.clear();
                    codec.encode(&self.out, &mut self.wire_out)?;
                    &self.wire_out
                }
                None => &self.out,
            };
            self.transport
                .write_all(wire)
                .await
                .map_err(ConnError::Write)
        };
        match tokio::time::timeout(timeout, write).await {
            Ok(r) => r?,
            Err(_) => return Err(ConnError::Timeout("write timed out (client not reading)")),
        }
        self.out.clear();
        if self.output_buffer_size > 0
            && self.out.capacity() > 4 * self.output_buffer_size.max(DEFAULT_OUTPUT_BUFFER)
        {
            self.out = BytesMut::with_capacity(self.output_buffer_size.max(DEFAULT_OUTPUT_BUFFER));
        }
        Ok(())
    }
}
