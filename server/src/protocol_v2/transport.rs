//! The byte stream under a connection: the accepted socket (or, in tests, one end of a
//! `tokio::io::duplex`), and the same stream wrapped in TLS after IDENTIFY's upgrade.

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// What a connection can be served over.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

pub(super) enum Transport<S> {
    Plain(S),
    Tls(Box<tokio_rustls::server::TlsStream<S>>),
    /// Only while a TLS handshake owns the stream.
    Upgrading,
}

impl<S: Stream> Transport<S> {
    pub(super) async fn read_exact(&mut self, buf: &mut [u8]) -> std::io::Result<()> {
        match self {
            Transport::Plain(s) => s.read_exact(buf).await.map(|_| ()),
            _ => Err(std::io::ErrorKind::NotConnected.into()),
        }
    }

    pub(super) async fn read_buf(&mut self, buf: &mut BytesMut) -> std::io::Result<usize> {
        match self {
            Transport::Plain(s) => s.read_buf(buf).await,
            Transport::Tls(s) => s.read_buf(buf).await,
            Transport::Upgrading => Err(std::io::ErrorKind::NotConnected.into()),
        }
    }

    pub(super) async fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Transport::Plain(s) => {
                s.write_all(data).await?;
                // A no-op on a TCP socket; a duplex stream or a buffered wrapper needs it.
                s.flush().await
            }
            Transport::Tls(s) => {
                s.write_all(data).await?;
                s.flush().await
            }
            Transport::Upgrading => Err(std::io::ErrorKind::NotConnected.into()),
        }
    }
}
