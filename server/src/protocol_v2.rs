//! One TCP client speaking protocol V2: the read loop, command execution, message delivery
//! and heartbeats, all in one task so that the ordering of responses and messages on the
//! socket is simply the order in which this task writes them.
//!
//! Byte-level parsing is `protocol::v2`; this file decides what each command does to nsqd
//! and which of NSQ's errors a client gets when the command is not allowed.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use protocol::v2::{self, Command};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::channel::Channel;
use crate::client::{Client, STATE_CLOSING, STATE_INIT, STATE_SUBSCRIBED};
use crate::compression::{Codec, DeflateCodec};
use crate::nsqd::{Nsqd, NSQ_COMPAT_VERSION};
use crate::topic::Topic;

const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(30);
const DEFAULT_OUTPUT_BUFFER: usize = 16 * 1024;
const READ_CHUNK: usize = 64 * 1024;

/// An error frame to send; `fatal` closes the connection afterwards (NSQ's FatalClientErr).
#[derive(Debug)]
pub struct ClientError {
    pub text: String,
    pub fatal: bool,
}

impl ClientError {
    fn fatal(code: &str, desc: impl std::fmt::Display) -> ClientError {
        ClientError {
            text: format!("{code} {desc}"),
            fatal: true,
        }
    }
    fn soft(code: &str, desc: impl std::fmt::Display) -> ClientError {
        ClientError {
            text: format!("{code} {desc}"),
            fatal: false,
        }
    }
}

enum Transport {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// Only while a TLS handshake owns the socket.
    Upgrading,
}

impl Transport {
    async fn read_buf(&mut self, buf: &mut BytesMut) -> std::io::Result<usize> {
        match self {
            Transport::Plain(s) => s.read_buf(buf).await,
            Transport::Tls(s) => s.read_buf(buf).await,
            Transport::Upgrading => Err(std::io::ErrorKind::NotConnected.into()),
        }
    }

    async fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Transport::Plain(s) => s.write_all(data).await,
            Transport::Tls(s) => {
                s.write_all(data).await?;
                s.flush().await
            }
            Transport::Upgrading => Err(std::io::ErrorKind::NotConnected.into()),
        }
    }
}

/// Serve one accepted connection until it closes, errs, or nsqd shuts down.
pub async fn serve(
    nsqd: Arc<Nsqd>,
    stream: TcpStream,
    remote: SocketAddr,
    shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
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
    };
    let result = conn.run(shutdown).await;
    match &result {
        Ok(()) => tracing::debug!(client = id, %remote, "client closed"),
        Err(e) => tracing::info!(client = id, %remote, reason = %e, "client disconnected"),
    }
    if let Some((topic, channel)) = conn.sub.take() {
        nsqd.client_left_channel(&topic, &channel, id);
    }
    nsqd.clients.lock().remove(&id);
}

struct Conn {
    nsqd: Arc<Nsqd>,
    client: Arc<Client>,
    transport: Transport,
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
}

impl Conn {
    async fn run(&mut self, mut shutdown: watch::Receiver<bool>) -> Result<(), String> {
        let mut magic = [0u8; 4];
        let read_magic = async {
            match &mut self.transport {
                Transport::Plain(s) => s.read_exact(&mut magic).await.map(|_| ()),
                _ => Err(std::io::ErrorKind::NotConnected.into()),
            }
        };
        match tokio::time::timeout(Duration::from_secs(30), read_magic).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(format!("reading magic: {e}")),
            Err(_) => return Err("no protocol magic within 30s".into()),
        }
        if &magic != v2::MAGIC_V2 {
            self.push_frame(v2::FRAME_TYPE_ERROR, b"E_BAD_PROTOCOL");
            let _ = self.flush().await;
            return Err(format!("bad protocol magic {magic:?}"));
        }

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
                return Err("channel deleted".into());
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
            if sent_full {
                continue; // more may be waiting; look again before sleeping
            }

            // 4. Wait for input, new messages, a heartbeat, or shutdown.
            let hb = self.heartbeat;
            tokio::select! {
                r = self.transport.read_buf(&mut self.raw_in) => {
                    match r {
                        Ok(0) => return Ok(()),
                        Ok(_) => {
                            self.last_read = Instant::now();
                            if let Some(codec) = self.codec.as_mut() {
                                codec.decode(&mut self.raw_in, &mut self.plain_in).map_err(|e| e.to_string())?;
                            }
                        }
                        Err(e) => return Err(format!("read: {e}")),
                    }
                }
                _ = async { match ch_notified.as_mut() { Some(n) => n.as_mut().await, None => std::future::pending().await } } => {}
                _ = &mut cl_notified => {}
                _ = hb_tick.tick(), if hb.is_some() => {
                    if let Some(interval) = hb {
                        if self.last_read.elapsed() > interval * 2 {
                            return Err("missed heartbeats".into());
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

    /// Parse and execute commands until the input runs out.
    async fn process_input(&mut self) -> Result<(), String> {
        loop {
            let limits = self.limits();
            let buf = if self.codec.is_some() {
                &mut self.plain_in
            } else {
                &mut self.raw_in
            };
            let cmd = match v2::parse_command(buf, &limits) {
                Ok(Some(cmd)) => cmd,
                Ok(None) => return Ok(()),
                Err(e) => {
                    let text = e.to_string();
                    self.push_frame(v2::FRAME_TYPE_ERROR, text.as_bytes());
                    let _ = self.flush().await;
                    return Err(text);
                }
            };
            match self.exec(cmd).await {
                Ok(()) => {}
                Err(e) => {
                    tracing::debug!(client = self.client.id, error = %e.text, "client error");
                    self.push_frame(v2::FRAME_TYPE_ERROR, e.text.as_bytes());
                    if e.fatal {
                        let _ = self.flush().await;
                        return Err(e.text);
                    }
                }
            }
        }
    }

    fn limits(&self) -> v2::Limits {
        let o = self.nsqd.opts();
        v2::Limits {
            max_msg_size: o.max_msg_size.max(0) as u64,
            max_body_size: o.max_body_size.max(0) as u64,
        }
    }

    fn state(&self) -> i32 {
        self.client.state.load(Ordering::Acquire)
    }

    async fn exec(&mut self, cmd: Command) -> Result<(), ClientError> {
        let opts = self.nsqd.opts();
        if !matches!(cmd, Command::Identify(_))
            && opts.tls_required()
            && !self.client.info.lock().tls
        {
            return Err(ClientError::fatal(
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
            Command::Cls => {
                if self.state() != STATE_SUBSCRIBED {
                    return Err(ClientError::fatal(
                        "E_INVALID",
                        "cannot CLS in current state",
                    ));
                }
                self.client.state.store(STATE_CLOSING, Ordering::Release);
                self.client.ready_count.store(0, Ordering::Release);
                self.push_frame(v2::FRAME_TYPE_RESPONSE, b"CLOSE_WAIT");
                Ok(())
            }
            Command::Pub { topic, body } => self.publish("PUB", topic, vec![body], 0).await,
            Command::Mpub { topic, bodies } => self.publish("MPUB", topic, bodies, 0).await,
            Command::Dpub {
                topic,
                defer_ms,
                body,
            } => {
                let max = opts.max_req_timeout.as_millis() as i64;
                if defer_ms < 0 || defer_ms > max {
                    return Err(ClientError::fatal(
                        "E_INVALID",
                        format!("DPUB timeout {defer_ms} out of range 0-{max}"),
                    ));
                }
                let at = crate::channel::unix_ms() + defer_ms as u64;
                self.publish("DPUB", topic, vec![body], at).await
            }
        }
    }

    async fn identify(&mut self, body: Bytes) -> Result<(), ClientError> {
        if self.identified || self.state() != STATE_INIT {
            return Err(ClientError::fatal(
                "E_INVALID",
                "cannot IDENTIFY in current state",
            ));
        }
        let data: protocol::identify::IdentifyData = serde_json::from_slice(&body)
            .map_err(|_| ClientError::fatal("E_BAD_BODY", "IDENTIFY failed to decode JSON body"))?;
        let opts = self.nsqd.opts();
        self.identified = true;

        // Validate and apply each setting as NSQ does (-1 disables, 0 means default).
        let hb = match data.heartbeat_interval {
            -1 => None,
            0 => Some(DEFAULT_HEARTBEAT),
            ms if ms >= 1000 && ms as u128 <= opts.max_heartbeat_interval.as_millis() => {
                Some(Duration::from_millis(ms as u64))
            }
            ms => {
                return Err(ClientError::fatal(
                    "E_BAD_BODY",
                    format!("IDENTIFY heartbeat interval ({ms}) is invalid"),
                ))
            }
        };
        let obs = match data.output_buffer_size {
            -1 => 0,
            0 => DEFAULT_OUTPUT_BUFFER,
            n if n >= 64 && n <= opts.max_output_buffer_size => n as usize,
            n => {
                return Err(ClientError::fatal(
                    "E_BAD_BODY",
                    format!("IDENTIFY output buffer size ({n}) is invalid"),
                ))
            }
        };
        let obt = data.output_buffer_timeout;
        let obt_ok = obt == -1
            || obt == 0
            || (obt >= opts.min_output_buffer_timeout.as_millis() as i64
                && obt <= opts.max_output_buffer_timeout.as_millis() as i64);
        if !obt_ok {
            return Err(ClientError::fatal(
                "E_BAD_BODY",
                format!("IDENTIFY output buffer timeout ({obt}) is invalid"),
            ));
        }
        if !(0..=99).contains(&data.sample_rate) {
            return Err(ClientError::fatal(
                "E_BAD_BODY",
                format!("IDENTIFY sample rate ({}) is invalid", data.sample_rate),
            ));
        }
        let msg_timeout = match data.msg_timeout {
            0 => opts.msg_timeout,
            ms if ms >= 1000 && ms as u128 <= opts.max_msg_timeout.as_millis() => {
                Duration::from_millis(ms as u64)
            }
            ms => {
                return Err(ClientError::fatal(
                    "E_BAD_BODY",
                    format!("IDENTIFY msg timeout ({ms}) is invalid"),
                ))
            }
        };
        let tls = data.tls_v1 && self.nsqd.tls.is_some();
        let snappy = data.snappy && opts.snappy;
        let deflate = data.deflate && opts.deflate;
        if snappy && deflate {
            return Err(ClientError::fatal(
                "E_IDENTIFY_FAILED",
                "cannot enable both deflate and snappy compression",
            ));
        }
        let deflate_level = if data.deflate_level <= 0 {
            6
        } else {
            data.deflate_level
        }
        .min(opts.max_deflate_level);

        self.heartbeat = hb;
        self.output_buffer_size = obs;
        self.sample_rate = data.sample_rate;
        self.client
            .msg_timeout_ms
            .store(msg_timeout.as_millis() as u64, Ordering::Relaxed);
        {
            let mut info = self.client.info.lock();
            if !data.client_id.is_empty() {
                info.client_id = data.client_id.clone();
            }
            if !data.hostname.is_empty() {
                info.hostname = data.hostname.clone();
            }
            info.user_agent = data.user_agent.clone();
            info.sample_rate = data.sample_rate;
            info.snappy = snappy;
            info.deflate = deflate;
        }

        if !data.feature_negotiation {
            self.push_frame(v2::FRAME_TYPE_RESPONSE, b"OK");
            return Ok(());
        }
        let resp = protocol::identify::IdentifyResponse {
            max_rdy_count: opts.max_rdy_count,
            version: NSQ_COMPAT_VERSION.to_string(),
            max_msg_timeout: opts.max_msg_timeout.as_millis() as i64,
            msg_timeout: msg_timeout.as_millis() as i64,
            tls_v1: tls,
            deflate,
            deflate_level: deflate_level as i64,
            max_deflate_level: opts.max_deflate_level as i64,
            snappy,
            sample_rate: data.sample_rate as i64,
            auth_required: !opts.auth_http_addresses.is_empty(),
            output_buffer_size: obs as i64,
            output_buffer_timeout: if obt == 0 {
                opts.output_buffer_timeout.as_millis() as i64
            } else {
                obt
            },
        };
        let json = serde_json::to_vec(&resp)
            .map_err(|e| ClientError::fatal("E_IDENTIFY_FAILED", format!("IDENTIFY failed {e}")))?;
        self.push_frame(v2::FRAME_TYPE_RESPONSE, &json);
        self.flush()
            .await
            .map_err(|e| ClientError::fatal("E_IDENTIFY_FAILED", format!("IDENTIFY failed {e}")))?;

        if tls {
            self.upgrade_tls().await.map_err(|e| {
                ClientError::fatal("E_IDENTIFY_FAILED", format!("IDENTIFY failed {e}"))
            })?;
            self.push_frame(v2::FRAME_TYPE_RESPONSE, b"OK");
            self.flush().await.map_err(|e| {
                ClientError::fatal("E_IDENTIFY_FAILED", format!("IDENTIFY failed {e}"))
            })?;
        }
        if snappy || deflate {
            let mut codec = if snappy {
                Codec::Snappy(Box::default())
            } else {
                Codec::Deflate(DeflateCodec::new(deflate_level.max(1) as u32))
            };
            // Anything the client sent after IDENTIFY is already compressed.
            let mut pending = std::mem::take(&mut self.raw_in);
            codec
                .decode(&mut pending, &mut self.plain_in)
                .map_err(|e| {
                    ClientError::fatal("E_IDENTIFY_FAILED", format!("IDENTIFY failed {e}"))
                })?;
            self.raw_in = pending;
            self.codec = Some(codec);
            self.push_frame(v2::FRAME_TYPE_RESPONSE, b"OK");
        }
        Ok(())
    }

    async fn upgrade_tls(&mut self) -> Result<(), String> {
        let cfg = self.nsqd.tls.clone().ok_or("TLS not configured")?;
        if !self.raw_in.is_empty() {
            return Err("unexpected data before TLS handshake".into());
        }
        let Transport::Plain(tcp) = std::mem::replace(&mut self.transport, Transport::Upgrading)
        else {
            return Err("TLS already active".into());
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
        let stream = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp))
            .await
            .map_err(|_| "TLS handshake timed out".to_string())?
            .map_err(|e| format!("TLS handshake: {e}"))?;
        {
            let (_, conn) = stream.get_ref();
            let mut info = self.client.info.lock();
            info.tls = true;
            info.tls_version = conn
                .protocol_version()
                .map(|v| format!("{v:?}"))
                .unwrap_or_default();
            info.tls_cipher_suite = conn
                .negotiated_cipher_suite()
                .map(|c| format!("{:?}", c.suite()))
                .unwrap_or_default();
        }
        self.transport = Transport::Tls(Box::new(stream));
        Ok(())
    }

    async fn auth(&mut self, body: Bytes) -> Result<(), ClientError> {
        if self.state() != STATE_INIT {
            return Err(ClientError::fatal(
                "E_INVALID",
                "cannot AUTH in current state",
            ));
        }
        if self.auth.is_some() {
            return Err(ClientError::fatal("E_INVALID", "AUTH already set"));
        }
        let opts = self.nsqd.opts();
        if opts.auth_http_addresses.is_empty() {
            return Err(ClientError::fatal("E_AUTH_DISABLED", "AUTH disabled"));
        }
        let (remote_ip, tls) = {
            let info = self.client.info.lock();
            let ip = info
                .remote_address
                .rsplit_once(':')
                .map(|(h, _)| h.to_string())
                .unwrap_or_default();
            (ip, info.tls)
        };
        let secret = String::from_utf8_lossy(&body).to_string();
        let state = crate::auth::query(&self.nsqd, &opts, &remote_ip, tls, &secret)
            .await
            .map_err(|e| {
                tracing::warn!(client = self.client.id, error = %e, "auth server query failed");
                ClientError::fatal("E_AUTH_FAILED", "AUTH failed")
            })?;
        if state.authorizations.is_empty() {
            return Err(ClientError::fatal(
                "E_UNAUTHORIZED",
                "AUTH no authorizations found",
            ));
        }
        let resp = serde_json::json!({
            "identity": state.identity,
            "identity_url": state.identity_url,
            "permission_count": state.authorizations.len(),
        });
        {
            let mut info = self.client.info.lock();
            info.authed = true;
            info.auth_identity = state.identity.clone();
            info.auth_identity_url = state.identity_url.clone();
        }
        self.auth = Some(state);
        self.push_frame(v2::FRAME_TYPE_RESPONSE, resp.to_string().as_bytes());
        Ok(())
    }

    /// Authorization check for SUB/PUB when an auth server is configured.
    async fn check_auth(
        &mut self,
        cmd: &str,
        topic: &str,
        channel: &str,
    ) -> Result<(), ClientError> {
        let opts = self.nsqd.opts();
        if opts.auth_http_addresses.is_empty() {
            return Ok(());
        }
        let Some(state) = self.auth.as_ref() else {
            return Err(ClientError::fatal(
                "E_AUTH_FIRST",
                format!("AUTH required before {cmd}"),
            ));
        };
        if state.expired() {
            // Refresh with the same secret, as NSQ does when the TTL runs out.
            let secret = state.secret.clone();
            let (remote_ip, tls) = {
                let info = self.client.info.lock();
                let ip = info
                    .remote_address
                    .rsplit_once(':')
                    .map(|(h, _)| h.to_string())
                    .unwrap_or_default();
                (ip, info.tls)
            };
            let fresh = crate::auth::query(&self.nsqd, &opts, &remote_ip, tls, &secret)
                .await
                .map_err(|_| ClientError::fatal("E_AUTH_FAILED", "AUTH failed"))?;
            self.auth = Some(fresh);
        }
        let allowed = self
            .auth
            .as_ref()
            .is_some_and(|s| s.is_authorized(topic, channel));
        if !allowed {
            return Err(ClientError::fatal(
                "E_UNAUTHORIZED",
                format!("AUTH failed for {cmd} on {topic:?} {channel:?}"),
            ));
        }
        Ok(())
    }

    async fn sub(&mut self, topic_name: String, channel_name: String) -> Result<(), ClientError> {
        if self.state() != STATE_INIT {
            return Err(ClientError::fatal(
                "E_INVALID",
                "cannot SUB in current state",
            ));
        }
        if self.heartbeat.is_none() {
            return Err(ClientError::fatal(
                "E_INVALID",
                "cannot SUB with heartbeats disabled",
            ));
        }
        self.check_auth("SUB", &topic_name, &channel_name).await?;
        let opts = self.nsqd.opts();
        // A topic or channel being deleted can race with SUB; retry a few times like NSQ.
        for _ in 0..3 {
            let topic = self
                .nsqd
                .get_topic(&topic_name)
                .map_err(|e| ClientError::fatal("E_SUB_FAILED", format!("SUB failed {e}")))?;
            let channel = self
                .nsqd
                .get_channel(&topic, &channel_name)
                .map_err(|e| ClientError::fatal("E_SUB_FAILED", format!("SUB failed {e}")))?;
            if let Err(max) =
                channel.add_client(self.client.clone(), opts.max_channel_consumers as usize)
            {
                return Err(ClientError::fatal(
                    "E_TOO_MANY_CHANNEL_CONSUMERS",
                    format!(
                        "channel consumers for {topic_name}:{channel_name} exceeds limit of {max}"
                    ),
                ));
            }
            if channel.deleted.load(Ordering::Acquire) || topic.deleted.load(Ordering::Acquire) {
                channel.remove_client(self.client.id);
                continue;
            }
            self.client.info.lock().sub = Some((topic_name.clone(), channel_name.clone()));
            self.client.state.store(STATE_SUBSCRIBED, Ordering::Release);
            self.sub = Some((topic, channel));
            self.push_frame(v2::FRAME_TYPE_RESPONSE, b"OK");
            return Ok(());
        }
        Err(ClientError::fatal(
            "E_SUB_FAILED",
            "SUB failed channel is exiting",
        ))
    }

    fn rdy(&mut self, count: i64) -> Result<(), ClientError> {
        let state = self.state();
        if state == STATE_CLOSING {
            return Ok(());
        }
        if state != STATE_SUBSCRIBED {
            return Err(ClientError::fatal(
                "E_INVALID",
                "cannot RDY in current state",
            ));
        }
        let max = self.nsqd.opts().max_rdy_count;
        if count < 0 || count > max {
            return Err(ClientError::fatal(
                "E_INVALID",
                format!("RDY count {count} out of range 0-{max}"),
            ));
        }
        self.client.ready_count.store(count, Ordering::Release);
        Ok(())
    }

    fn subscribed_channel(&self, what: &str) -> Result<Arc<Channel>, ClientError> {
        let state = self.state();
        match &self.sub {
            Some((_, c)) if state == STATE_SUBSCRIBED || state == STATE_CLOSING => Ok(c.clone()),
            _ => Err(ClientError::fatal(
                "E_INVALID",
                format!("cannot {what} in current state"),
            )),
        }
    }

    /// The message-id key of the subscribed topic (see [`crate::guid`]).
    fn wire_key(&self) -> u64 {
        let mask = self.sub.as_ref().map_or(0, |(t, _)| t.id_mask);
        crate::guid::wire_key(self.nsqd.node_id, mask)
    }

    fn fin(&mut self, id: &[u8; 16]) -> Result<(), ClientError> {
        let channel = self.subscribed_channel("FIN")?;
        let stored = crate::guid::from_wire(self.wire_key(), id);
        channel.finish(&self.client, &stored).map_err(|e| {
            ClientError::soft(
                "E_FIN_FAILED",
                format!("FIN {} failed {e}", String::from_utf8_lossy(id)),
            )
        })
    }

    fn req(&mut self, id: &[u8; 16], timeout_ms: i64) -> Result<(), ClientError> {
        let channel = self.subscribed_channel("REQ")?;
        let max = self.nsqd.opts().max_req_timeout;
        // Out-of-range delays are clamped, as NSQ 1.x does.
        let delay = Duration::from_millis(timeout_ms.max(0) as u64).min(max);
        let stored = crate::guid::from_wire(self.wire_key(), id);
        channel.requeue(&self.client, &stored, delay).map_err(|e| {
            ClientError::soft(
                "E_REQ_FAILED",
                format!("REQ {} failed {e}", String::from_utf8_lossy(id)),
            )
        })
    }

    fn touch(&mut self, id: &[u8; 16]) -> Result<(), ClientError> {
        let channel = self.subscribed_channel("TOUCH")?;
        let stored = crate::guid::from_wire(self.wire_key(), id);
        channel.touch(&self.client, &stored).map_err(|e| {
            ClientError::soft(
                "E_TOUCH_FAILED",
                format!("TOUCH {} failed {e}", String::from_utf8_lossy(id)),
            )
        })
    }

    async fn publish(
        &mut self,
        cmd: &str,
        topic_name: String,
        bodies: Vec<Bytes>,
        deliver_at_ms: u64,
    ) -> Result<(), ClientError> {
        self.check_auth(cmd, &topic_name, "").await?;
        let code = format!("E_{cmd}_FAILED");
        if self.nsqd.exiting.load(Ordering::Acquire) {
            return Err(ClientError::fatal(&code, format!("{cmd} failed exiting")));
        }
        let n = bodies.len() as u64;
        let (_, wait) = self
            .nsqd
            .publish(&topic_name, bodies, deliver_at_ms, true)
            .map_err(|e| ClientError::fatal(&code, format!("{cmd} failed {e}")))?;
        if let Some(wait) = wait {
            // Flush what we owe the client while the fsync runs, then answer.
            let _ = self.flush().await;
            match wait.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    return Err(ClientError::fatal(&code, format!("{cmd} failed {e}")));
                }
                Err(_) => return Err(ClientError::fatal(&code, format!("{cmd} failed exiting"))),
            }
        }
        self.client.count_pub(&topic_name, n);
        self.push_frame(v2::FRAME_TYPE_RESPONSE, b"OK");
        Ok(())
    }

    /// Move messages from the channel into the output buffer, up to the client's RDY room.
    /// Returns true if it filled the room or the buffer (there may be more to send).
    fn pump(&mut self, topic: &Arc<Topic>, channel: &Arc<Channel>) -> Result<bool, String> {
        if self.state() != STATE_SUBSCRIBED {
            return Ok(false);
        }
        let room = self.client.room();
        if room == 0 {
            return Ok(false);
        }
        // Bound one batch by count and by bytes (the output buffer, at least 256 KiB),
        // so a big RDY does not build a huge buffer in one go: what a connection holds
        // beyond its in-flight messages stays small even if the client never reads.
        let budget = self.output_buffer_size.max(256 * 1024);
        let batch = room.min(1024).min((budget / self.avg_frame.max(1)).max(1));
        let mut msgs = std::mem::take(&mut self.scratch);
        msgs.clear();
        let paused = topic.is_paused();
        let take = |msgs: &mut Vec<engine::Message>| {
            channel
                .take(&self.client, batch, paused, msgs)
                .map_err(|e| format!("reading channel: {e}"))
        };
        // Reads that go to disk run with the worker handed over to the runtime's blocking
        // pool, so other connections (and /ping) are not stalled behind a slow disk.
        let multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if multi_thread && channel.cursor.next_needs_disk() {
            tokio::task::block_in_place(|| take(&mut msgs))?;
        } else {
            take(&mut msgs)?;
        }
        let got = msgs.len();
        let bytes: usize = msgs.iter().map(|m| m.body.len() + 34).sum();
        if let Some(avg) = bytes.checked_div(got) {
            self.avg_frame = (self.avg_frame * 3 + avg) / 4;
        }
        let key = crate::guid::wire_key(self.nsqd.node_id, topic.id_mask);
        for m in &msgs {
            if self.sample_rate > 0 && rand::random::<u32>() % 100 >= self.sample_rate as u32 {
                // Sampled out: NSQ drops it for this client; we finish it so it is not
                // redelivered forever.
                let _ = channel.finish(&self.client, &m.id);
                continue;
            }
            write_message_frame(&mut self.out, m, key);
        }
        self.scratch = msgs;
        Ok(got == batch)
    }

    fn push_frame(&mut self, frame_type: u32, data: &[u8]) {
        self.out.reserve(8 + data.len());
        self.out.put_u32(4 + data.len() as u32);
        self.out.put_u32(frame_type);
        self.out.put_slice(data);
    }

    async fn flush(&mut self) -> Result<(), String> {
        if self.out.is_empty() {
            return Ok(());
        }
        let timeout = self
            .heartbeat
            .map(|h| (h * 2).max(Duration::from_secs(10)))
            .unwrap_or(Duration::from_secs(60));
        let write = async {
            if let Some(codec) = self.codec.as_mut() {
                self.wire_out.clear();
                codec
                    .encode(&self.out, &mut self.wire_out)
                    .map_err(|e| e.to_string())?;
                self.transport
                    .write_all(&self.wire_out)
                    .await
                    .map_err(|e| format!("write: {e}"))
            } else {
                self.transport
                    .write_all(&self.out)
                    .await
                    .map_err(|e| format!("write: {e}"))
            }
        };
        match tokio::time::timeout(timeout, write).await {
            Ok(r) => r?,
            Err(_) => return Err("write timed out (client not reading)".into()),
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

/// Message frame: size, type 2, then timestamp i64, attempts u16, 16-byte id, body (BE).
/// The id on the wire is the engine's id under the topic's key (see [`crate::guid`]).
fn write_message_frame(out: &mut BytesMut, m: &engine::Message, key: u64) {
    let len = 4 + 8 + 2 + 16 + m.body.len();
    out.reserve(4 + len);
    out.put_u32(len as u32);
    out.put_u32(v2::FRAME_TYPE_MESSAGE);
    out.put_i64(m.timestamp_ns);
    out.put_u16(m.attempts);
    out.put_slice(&crate::guid::to_wire(key, &m.id));
    out.put_slice(&m.body);
}
