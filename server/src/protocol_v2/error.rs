//! Why a connection ended. Errors a client is told about are `protocol::v2::ProtocolError`
//! (NSQ's `E_*` codes, fatal or not); everything else here is what the log line says.

use protocol::compression::CompressionError;
use protocol::v2::ProtocolError;

#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// A fatal client error: its frame was sent, then the connection closed.
    #[error("{0}")]
    Client(#[from] ProtocolError),
    #[error("bad protocol magic {0:?}")]
    BadMagic([u8; 4]),
    #[error("reading magic: {0}")]
    Magic(std::io::Error),
    #[error("read: {0}")]
    Read(std::io::Error),
    #[error("write: {0}")]
    Write(std::io::Error),
    /// No magic in time, missed heartbeats, or a client that stopped reading.
    #[error("{0}")]
    Timeout(&'static str),
    /// The channel it subscribed to was deleted.
    #[error("channel deleted")]
    Kicked,
    #[error("{0}")]
    Tls(String),
    #[error("{0}")]
    Compression(#[from] CompressionError),
    /// The engine could not read the subscribed channel.
    #[error("reading channel: {0}")]
    Storage(#[from] engine::Error),
}
