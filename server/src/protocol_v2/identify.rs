//! IDENTIFY on a connection: negotiation itself is `protocol::identify::negotiate` (pure);
//! this applies the outcome, answers, and performs the TLS and compression upgrades.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use protocol::identify::{IdentifyData, ServerSettings};
use protocol::v2::{self, ProtocolError};

use super::{Conn, ConnError, Stream, Transport};
use crate::client::ConnState;
use crate::compression::{Codec, DeflateCodec};
use crate::nsqd::NSQ_COMPAT_VERSION;
use crate::options::Options;

/// nsqd's options as IDENTIFY negotiation sees them.
pub(super) fn server_settings(opts: &Options, tls_configured: bool) -> ServerSettings {
    ServerSettings {
        version: NSQ_COMPAT_VERSION.to_string(),
        max_rdy_count: opts.max_rdy_count,
        max_heartbeat_interval_ms: opts.max_heartbeat_interval.as_millis() as u64,
        max_output_buffer_size: opts.max_output_buffer_size,
        min_output_buffer_timeout_ms: opts.min_output_buffer_timeout.as_millis() as u64,
        max_output_buffer_timeout_ms: opts.max_output_buffer_timeout.as_millis() as u64,
        output_buffer_timeout_ms: opts.output_buffer_timeout.as_millis() as u64,
        msg_timeout_ms: opts.msg_timeout.as_millis() as u64,
        max_msg_timeout_ms: opts.max_msg_timeout.as_millis() as u64,
        max_deflate_level: opts.max_deflate_level,
        tls: tls_configured,
        snappy: opts.snappy,
        deflate: opts.deflate,
        auth_required: !opts.auth_http_addresses.is_empty(),
    }
}

fn identify_failed(e: impl std::fmt::Display) -> ProtocolError {
    ProtocolError::fatal("E_IDENTIFY_FAILED", format!("IDENTIFY failed {e}"))
}

impl<S: Stream> Conn<S> {
    pub(super) async fn identify(&mut self, body: Bytes) -> Result<(), ProtocolError> {
        if self.identified || self.client.state() != ConnState::Init {
            return Err(ProtocolError::fatal(
                "E_INVALID",
                "cannot IDENTIFY in current state",
            ));
        }
        let data: IdentifyData = serde_json::from_slice(&body).map_err(|_| {
            ProtocolError::fatal("E_BAD_BODY", "IDENTIFY failed to decode JSON body")
        })?;
        let settings = server_settings(&self.nsqd.opts(), self.nsqd.tls.is_some());
        self.identified = true;
        let n = protocol::identify::negotiate(&data, &settings)?;

        self.heartbeat = n.heartbeat_interval_ms.map(Duration::from_millis);
        self.output_buffer_size = n.output_buffer_size;
        self.sample_rate = n.sample_rate;
        self.client
            .msg_timeout_ms
            .store(n.msg_timeout_ms, Ordering::Relaxed);
        {
            let mut info = self.client.info.lock();
            if !data.client_id.is_empty() {
                info.client_id = data.client_id.clone();
            }
            if !data.hostname.is_empty() {
                info.hostname = data.hostname.clone();
            }
            info.user_agent = data.user_agent.clone();
            info.sample_rate = n.sample_rate;
            info.snappy = n.snappy;
            info.deflate = n.deflate;
        }

        if !data.feature_negotiation {
            self.push_frame(v2::FRAME_TYPE_RESPONSE, b"OK");
            return Ok(());
        }
        let json = serde_json::to_vec(&n.response(&settings)).map_err(identify_failed)?;
        self.push_frame(v2::FRAME_TYPE_RESPONSE, &json);
        self.flush().await.map_err(identify_failed)?;

        if n.tls {
            self.upgrade_tls().await.map_err(identify_failed)?;
            self.push_frame(v2::FRAME_TYPE_RESPONSE, b"OK");
            self.flush().await.map_err(identify_failed)?;
        }
        if n.snappy || n.deflate {
            let mut codec = if n.snappy {
                Codec::Snappy(Box::default())
            } else {
                Codec::Deflate(DeflateCodec::new(n.deflate_level.max(1) as u32))
            };
            // Anything the client sent after IDENTIFY is already compressed.
            let mut pending = std::mem::take(&mut self.raw_in);
            codec
                .decode(&mut pending, &mut self.plain_in)
                .map_err(identify_failed)?;
            self.raw_in = pending;
            self.codec = Some(codec);
            self.push_frame(v2::FRAME_TYPE_RESPONSE, b"OK");
        }
        Ok(())
    }

    async fn upgrade_tls(&mut self) -> Result<(), ConnError> {
        let cfg = self
            .nsqd
            .tls
            .clone()
            .ok_or_else(|| ConnError::Tls("TLS not configured".into()))?;
        if !self.raw_in.is_empty() {
            return Err(ConnError::Tls(
                "unexpected data before TLS handshake".into(),
            ));
        }
        let Transport::Plain(plain) = std::mem::replace(&mut self.transport, Transport::Upgrading)
        else {
            return Err(ConnError::Tls("TLS already active".into()));
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
        let stream = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(plain))
            .await
            .map_err(|_| ConnError::Tls("TLS handshake timed out".into()))?
            .map_err(|e| ConnError::Tls(format!("TLS handshake: {e}")))?;
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
}
