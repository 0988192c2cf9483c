//! The engine's one error type. Every variant that concerns a file names it.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("metadata store: {0}")]
    Meta(#[from] sled::Error),
    #[error("cannot open the metadata store {path}: {reason}; check that the data directory is writable and that no other nsqd is using it")]
    MetaUnavailable { path: PathBuf, reason: String },
    #[error("metadata encoding: {0}")]
    Encoding(String),
    #[error("invalid name {0:?}")]
    InvalidName(String),
    #[error("record of {0} bytes does not fit in a segment")]
    RecordTooLarge(usize),
    #[error("engine is closed")]
    Closed,
    #[error("external reader cursor {path}: {reason}")]
    BadCursor { path: PathBuf, reason: String },
    #[error("topic {0} was deleted")]
    Deleted(String),
    #[error("topic {topic} holds {bytes} bytes on disk, its limit is {limit} (--max-bytes-per-topic); publish again once consumers catch up")]
    TopicFull {
        topic: String,
        bytes: u64,
        limit: u64,
    },
}

impl Error {
    /// An error of the storage itself (disk full, I/O error, metadata store), as opposed
    /// to a refused or raced request. These make the node unhealthy until they clear.
    pub fn is_storage_fault(&self) -> bool {
        matches!(self, Error::Io { .. } | Error::Meta(_) | Error::Encoding(_))
    }

    /// A full disk or quota.
    pub fn is_no_space(&self) -> bool {
        match self {
            Error::Io { source, .. } => crate::fs::is_no_space(source),
            _ => false,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attach a path to an io::Error.
pub(crate) trait IoContext<T> {
    fn at(self, path: &std::path::Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: &std::path::Path) -> Result<T> {
        self.map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })
    }
}
