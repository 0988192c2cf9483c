//! One connection to nsqd speaking protocol V2: connect, IDENTIFY with feature negotiation,
//! the TLS and compression upgrades it agrees to, AUTH, then framed reads and writes.
//!
//! [`Conn::fill`] is cancellation safe (it reads at most once, into an owned buffer), so
//! the connection tasks of the producer and the consumer can `select!` on it.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use protocol::compression::{Codec, DeflateCodec};
use protocol::identify::IdentifyResponse;
use protocol::v2::{self, Command, Frame};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::{Compression, Config, TlsConfig};
use crate::error::{Error, Result};

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

pub(crate) struct Conn {
    pub addr: String,
    stream: Box<dyn Stream>,
    decoder: Option<Codec>,
    encoder: Option<Codec>,
    wire: BytesMut,
    plain: BytesMut,
    out: BytesMut,
    compressed: Vec<u8>,
    max_frame: usize,
    /// What nsqd agreed to in IDENTIFY (absent when it does not negotiate features).
    pub negotiated: Option<IdentifyResponse>,
}

impl Conn {
    /// Connect and complete IDENTIFY (and TLS, compression, AUTH when they apply) within
    /// `config.dial_timeout`.
    pub async fn connect(addr: &str, config: &Config) -> Result<Conn> {
        match tokio::time::timeout(config.dial_timeout, Conn::connect_inner(addr, config)).await {
            Ok(r) => r,
            Err(_) => Err(Error::Timeout {
                addr: addr.to_string(),
                what: "connecting",
            }),
        }
    }

    async fn connect_inner(addr: &str, config: &Config) -> Result<Conn> {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| Error::io(addr, e))?;
        let _ = tcp.set_nodelay(true);
        let mut conn = Conn {
            addr: addr.to_string(),
            stream: Box::new(tcp),
            decoder: None,
            encoder: None,
            wire: BytesMut::with_capacity(64 * 1024),
            plain: BytesMut::with_capacity(64 * 1024),
            out: BytesMut::with_capacity(16 * 1024),
            compressed: Vec::new(),
            max_frame: config.max_frame_size,
            negotiated: None,
        };
        conn.stream
            .write_all(v2::MAGIC_V2)
            .await
            .map_err(|e| Error::io(addr, e))?;
        let body = serde_json::to_vec(&config.identify_json())
            .map_err(|e| Error::protocol(addr, format!("identify: {e}")))?;
        conn.send(&Command::Identify(body.into())).await?;
        let answer = conn.read_response().await?;
        if answer.as_ref() == b"OK" {
            // An nsqd that does not negotiate features: nothing to upgrade.
            return Ok(conn);
        }
        let negotiated: IdentifyResponse = serde_json::from_slice(&answer)
            .map_err(|e| Error::protocol(addr, format!("IDENTIFY response: {e}")))?;
        if negotiated.tls_v1 {
            let tls = config
                .tls
                .as_ref()
                .ok_or_else(|| Error::Tls("nsqd requires TLS; configure it".into()))?;
            conn.upgrade_tls(tls).await?;
            conn.expect_ok().await?;
        } else if config.tls.is_some() {
            return Err(Error::Tls(format!("{addr} does not offer TLS")));
        }
        if negotiated.snappy {
            conn.start_compression(Codec::Snappy(Box::default()), Codec::Snappy(Box::default()))?;
            conn.expect_ok().await?;
        } else if negotiated.deflate {
            let level = negotiated.deflate_level.clamp(1, 9) as u32;
            conn.start_compression(
                Codec::Deflate(DeflateCodec::new(level)),
                Codec::Deflate(DeflateCodec::new(level)),
            )?;
            conn.expect_ok().await?;
        } else if config.compression != Compression::None {
            tracing::warn!(addr, "nsqd declined compression; continuing without");
        }
        if negotiated.auth_required {
            let secret = config.auth_secret.clone().ok_or_else(|| Error::Server {
                addr: addr.to_string(),
                text: "E_AUTH_REQUIRED nsqd requires AUTH and no secret is configured".into(),
            })?;
            conn.send(&Command::Auth(Bytes::from(secret))).await?;
            conn.read_response().await?;
        }
        conn.negotiated = Some(negotiated);
        Ok(conn)
    }

    /// Switch both directions to a codec. Bytes already read past the IDENTIFY answer are
    /// compressed ones (nsqd compresses right after it), so they go back to be decoded.
    fn start_compression(&mut self, decoder: Codec, encoder: Codec) -> Result<()> {
        let mut compressed = std::mem::take(&mut self.plain);
        compressed.extend_from_slice(&self.wire);
        self.wire = compressed;
        let mut decoder = decoder;
        decoder
            .decode(&mut self.wire, &mut self.plain)
            .map_err(|e| Error::protocol(&self.addr, e))?;
        self.decoder = Some(decoder);
        self.encoder = Some(encoder);
        Ok(())
    }

    async fn upgrade_tls(&mut self, tls: &TlsConfig) -> Result<()> {
        if !self.plain.is_empty() || !self.wire.is_empty() {
            return Err(Error::protocol(
                &self.addr,
                "unexpected bytes before the TLS handshake",
            ));
        }
        let cfg = tls_client_config(tls)?;
        let host = self
            .addr
            .rsplit_once(':')
            .map(|(h, _)| h)
            .unwrap_or(&self.addr);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = tls.server_name.clone().unwrap_or_else(|| host.to_string());
        let name = rustls::pki_types::ServerName::try_from(name.clone())
            .map_err(|_| Error::Tls(format!("invalid server name {name:?}")))?;
        // A placeholder takes the TCP stream's place while the handshake owns it.
        let stream = std::mem::replace(&mut self.stream, Box::new(tokio::io::duplex(1).0));
        let connector = tokio_rustls::TlsConnector::from(cfg);
        let tls_stream = connector
            .connect(name, stream)
            .await
            .map_err(|e| Error::Tls(format!("{}: handshake: {e}", self.addr)))?;
        self.stream = Box::new(tls_stream);
        Ok(())
    }

    async fn expect_ok(&mut self) -> Result<()> {
        let r = self.read_response().await?;
        if r.as_ref() != b"OK" {
            return Err(Error::protocol(
                &self.addr,
                format!("expected OK, got {:?}", String::from_utf8_lossy(&r)),
            ));
        }
        Ok(())
    }

    /// Read until a response or error frame, answering heartbeats (setup phase only).
    async fn read_response(&mut self) -> Result<Bytes> {
        loop {
            let f = self.read_frame().await?;
            match f.frame_type {
                v2::FRAME_TYPE_RESPONSE if f.data.as_ref() == b"_heartbeat_" => {
                    self.send(&Command::Nop).await?
                }
                v2::FRAME_TYPE_RESPONSE => return Ok(f.data),
                v2::FRAME_TYPE_ERROR => {
                    return Err(Error::Server {
                        addr: self.addr.clone(),
                        text: String::from_utf8_lossy(&f.data).into_owned(),
                    })
                }
                t => {
                    return Err(Error::protocol(
                        &self.addr,
                        format!("unexpected frame type {t}"),
                    ))
                }
            }
        }
    }

    pub async fn read_frame(&mut self) -> Result<Frame> {
        loop {
            if let Some(f) = self.try_frame()? {
                return Ok(f);
            }
            self.fill().await?;
        }
    }

    /// A complete frame from what has been read, if there is one.
    pub fn try_frame(&mut self) -> Result<Option<Frame>> {
        v2::parse_frame(&mut self.plain, self.max_frame).map_err(|e| Error::protocol(&self.addr, e))
    }

    /// Read once from the socket (cancellation safe). EOF is [`Error::Closed`].
    pub async fn fill(&mut self) -> Result<()> {
        let n = self
            .stream
            .read_buf(&mut self.wire)
            .await
            .map_err(|e| Error::io(&self.addr, e))?;
        if n == 0 {
            return Err(Error::Closed {
                addr: self.addr.clone(),
            });
        }
        match &mut self.decoder {
            None => self.plain.extend_from_slice(&self.wire.split()),
            Some(c) => c
                .decode(&mut self.wire, &mut self.plain)
                .map_err(|e| Error::protocol(&self.addr, e))?,
        }
        Ok(())
    }

    /// Add a command to the output buffer.
    pub fn queue(&mut self, cmd: &Command) {
        cmd.encode(&mut self.out);
    }

    /// Write everything queued.
    pub async fn flush(&mut self) -> Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let data = self.out.split();
        let bytes: &[u8] = match &mut self.encoder {
            None => &data,
            Some(c) => {
                self.compressed.clear();
                c.encode(&data, &mut self.compressed)
                    .map_err(|e| Error::protocol(&self.addr, e))?;
                &self.compressed
            }
        };
        self.stream
            .write_all(bytes)
            .await
            .map_err(|e| Error::io(&self.addr, e))?;
        self.stream
            .flush()
            .await
            .map_err(|e| Error::io(&self.addr, e))
    }

    pub async fn send(&mut self, cmd: &Command) -> Result<()> {
        self.queue(cmd);
        self.flush().await
    }

    /// Close politely: shut down the write side.
    pub async fn shutdown(&mut self) {
        let _ = self.flush().await;
        let _ = self.stream.shutdown().await;
    }
}

fn tls_client_config(tls: &TlsConfig) -> Result<Arc<rustls::ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?;
    let cfg = if tls.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
            .with_no_client_auth()
    } else {
        let path = tls.root_ca_file.as_ref().ok_or_else(|| {
            Error::Tls("set root_ca_file (or insecure_skip_verify for tests)".into())
        })?;
        let data = std::fs::read(path)
            .map_err(|e| Error::Tls(format!("cannot read {}: {e}", path.display())))?;
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pemfile::certs(&mut data.as_slice()) {
            let c = c.map_err(|e| Error::Tls(format!("{}: {e}", path.display())))?;
            roots
                .add(c)
                .map_err(|e| Error::Tls(format!("{}: {e}", path.display())))?;
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    Ok(Arc::new(cfg))
}

/// Certificate verifier for `insecure_skip_verify`: signatures are still checked, the
/// certificate chain and name are not.
#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> std::result::Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Keep reading and writing timeouts sane for callers that wait on a single answer.
pub(crate) const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
