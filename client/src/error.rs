//! Errors of the client library.

use std::fmt;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{addr}: {source}")]
    Io {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// nsqd answered a command with an error frame (e.g. `E_BAD_TOPIC ...`).
    #[error("{addr}: {text}")]
    Server { addr: String, text: String },
    /// The peer sent something this client cannot parse.
    #[error("{addr}: protocol error: {text}")]
    Protocol { addr: String, text: String },
    #[error("{addr}: connection closed")]
    Closed { addr: String },
    #[error("{addr}: timed out {what}")]
    Timeout { addr: String, what: &'static str },
    #[error("tls: {0}")]
    Tls(String),
    #[error("nsqlookupd {addr}: {text}")]
    Lookup { addr: String, text: String },
    #[error("invalid {what}: {value:?}")]
    Invalid { what: &'static str, value: String },
    #[error("the consumer or producer has been stopped")]
    Stopped,
}

impl Error {
    pub(crate) fn io(addr: &str, source: std::io::Error) -> Error {
        Error::Io {
            addr: addr.to_string(),
            source,
        }
    }

    pub(crate) fn protocol(addr: &str, text: impl fmt::Display) -> Error {
        Error::Protocol {
            addr: addr.to_string(),
            text: text.to_string(),
        }
    }

    /// The `E_...` code of a server error, if this is one.
    pub fn server_code(&self) -> Option<&str> {
        match self {
            Error::Server { text, .. } => text.split(' ').next(),
            _ => None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
