//! What the log knows about one segment without reading it: its sequences, length,
//! times, and a sparse index of record offsets.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::INDEX_EVERY;
use crate::record::Format;
use crate::seal;

pub struct SegmentInfo {
    pub first_seq: u64,
    pub path: PathBuf,
    pub file: Arc<File>,
    /// Bytes holding records (the committed length).
    pub len: u64,
    /// One past the last sequence in it (== first_seq when empty).
    pub end_seq: u64,
    pub records: u64,
    /// Publish time of the first and of the newest record in it (ns; 0 when empty), for
    /// time retention and for finding where a time starts.
    pub first_ts: i64,
    pub last_ts: i64,
    /// (sequence, offset) of every INDEX_EVERY-th record.
    pub(crate) index: Vec<(u64, u64)>,
    /// Its record format (read from its first bytes at open; v2 for every new segment).
    pub format: Format,
}

impl SegmentInfo {
    /// A segment holding no record yet.
    pub(crate) fn empty(first_seq: u64, path: &Path, file: Arc<File>, format: Format) -> Self {
        SegmentInfo {
            first_seq,
            path: path.to_path_buf(),
            file,
            len: format.data_start(),
            end_seq: first_seq,
            records: 0,
            first_ts: 0,
            last_ts: 0,
            index: Vec::new(),
            format,
        }
    }

    pub(crate) fn summary(&self) -> seal::Summary {
        seal::Summary {
            first_seq: self.first_seq,
            end_seq: self.end_seq,
            records: self.records,
            len: self.len,
            first_ts: self.first_ts,
            last_ts: self.last_ts,
            index: self.index.clone(),
        }
    }

    pub(crate) fn note_record(&mut self, seq: u64, ts: i64, offset: u64, total: u64) {
        if self.records.is_multiple_of(INDEX_EVERY) {
            self.index.push((seq, offset));
        }
        if self.records == 0 {
            self.first_ts = ts;
        }
        self.last_ts = self.last_ts.max(ts);
        self.records += 1;
        self.end_seq = seq + 1;
        self.len = offset + total;
    }

    pub(crate) fn offset_for(&self, seq: u64) -> u64 {
        match self.index.partition_point(|&(s, _)| s <= seq) {
            0 => 0,
            i => self.index[i - 1].1,
        }
    }
}
