//! Reading one segment record by record: [`SegmentScanner`] reads in large `pread` chunks,
//! stops at the committed length, and resynchronises after damage.

use std::fs::File;
use std::path::Path;

use bytes::{Bytes, BytesMut};

use crate::error::{IoContext, Result};
use crate::fs::Io;
use crate::record::{self, Decoded, Format, RecordHeader, MAX_HEADER_LEN, SEGMENT_HEADER_LEN};

pub(super) const READ_CHUNK: usize = 256 * 1024;
const MIN_READ_CHUNK: usize = 4096;

/// One record as stored, with its body shared from the read buffer (no copy).
#[derive(Debug, Clone)]
pub struct StoredRecord {
    pub header: RecordHeader,
    pub body: Bytes,
}

/// What a scan found at one position.
#[derive(Debug)]
pub enum ScanItem {
    Record {
        offset: u64,
        record: StoredRecord,
    },
    /// A bad record. With `skip = Some(n)` the next record starts `n` bytes later; with
    /// `None` its length cannot be trusted (use [`SegmentScanner::resync`]).
    Corrupt {
        offset: u64,
        skip: Option<u64>,
        reason: &'static str,
    },
    End {
        offset: u64,
    },
}

/// Sequential reader over one segment file, in large `pread` chunks.
pub struct SegmentScanner<'a> {
    file: &'a File,
    path: &'a Path,
    io: Io,
    /// Bytes of the file that may hold records.
    limit: u64,
    pub offset: u64,
    chunk: Bytes,
    chunk_start: u64,
    /// Bytes asked of each `pread` (at least; a longer record gets what it needs).
    chunk_size: usize,
    /// The segment's record format: given by the log, or read from the segment's first
    /// bytes on the first use.
    format: Option<Format>,
    /// Records come back with an empty body (recovery needs only headers and lengths; the
    /// CRC is still checked): no chunk is shared, so each read reuses the same buffer.
    headers_only: bool,
}

impl<'a> SegmentScanner<'a> {
    pub fn new(file: &'a File, path: &'a Path, limit: u64, offset: u64) -> Self {
        SegmentScanner {
            file,
            path,
            io: Io::default(),
            limit,
            offset,
            chunk: Bytes::new(),
            chunk_start: 0,
            chunk_size: READ_CHUNK,
            format: None,
            headers_only: false,
        }
    }

    /// Return records without their bodies (see `headers_only`).
    pub(crate) fn headers_only(mut self) -> Self {
        self.headers_only = true;
        self
    }

    /// The segment's format is known (the log read it at open): no header read.
    pub(crate) fn with_format(mut self, format: Format) -> Self {
        self.format = Some(format);
        self
    }

    /// The segment's format (reading its header the first time), with the position moved
    /// past the header if it was before the first record.
    pub fn format(&mut self) -> Result<Format> {
        let format = match self.format {
            Some(f) => f,
            None => {
                let f = read_format(&self.io, self.file, self.path, self.limit)?;
                self.format = Some(f);
                f
            }
        };
        self.offset = self.offset.max(format.data_start());
        Ok(format)
    }

    /// Read in chunks of about `bytes` (a caller that wants a few records should not pay
    /// for reading, zeroing and copying 256 KiB).
    pub(crate) fn with_chunk_size(mut self, bytes: usize) -> Self {
        self.chunk_size = bytes.clamp(MIN_READ_CHUNK, READ_CHUNK);
        self
    }

    pub(crate) fn with_io(mut self, io: &Io) -> Self {
        self.io = io.clone();
        self
    }

    /// Make `[offset, offset + need)` (bounded by the limit) available in the chunk.
    fn ensure(&mut self, need: usize) -> Result<()> {
        let have_from = self.chunk_start;
        let have_to = self.chunk_start + self.chunk.len() as u64;
        let want_to = (self.offset + need as u64).min(self.limit);
        if self.offset >= have_from && want_to <= have_to {
            return Ok(());
        }
        let len = (need.max(self.chunk_size) as u64).min(self.limit - self.offset) as usize;
        // Reuse the previous chunk's buffer when no record still shares it: a fresh
        // 256 KiB allocation per read costs a page fault per 4 KiB in the copy.
        let mut buf = match std::mem::take(&mut self.chunk).try_into_mut() {
            Ok(mut b) if b.capacity() >= len => {
                b.clear();
                b.resize(len, 0);
                b
            }
            _ => BytesMut::zeroed(len),
        };
        let mut done = 0;
        while done < len {
            let n = self
                .io
                .read_at(self.file, &mut buf[done..], self.offset + done as u64)
                .at(self.path)?;
            if n == 0 {
                break;
            }
            done += n;
        }
        buf.truncate(done);
        self.chunk = buf.freeze();
        self.chunk_start = self.offset;
        Ok(())
    }

    pub fn next_item(&mut self) -> Result<ScanItem> {
        let format = self.format()?;
        loop {
            let offset = self.offset;
            if offset >= self.limit {
                return Ok(ScanItem::End { offset });
            }
            let max_total = (self.limit - offset) as usize;
            self.ensure(MAX_HEADER_LEN)?;
            let rel = (offset - self.chunk_start) as usize;
            match record::decode(format, &self.chunk[rel..], max_total) {
                Decoded::End => return Ok(ScanItem::End { offset }),
                Decoded::BadLength => {
                    return Ok(ScanItem::Corrupt {
                        offset,
                        skip: None,
                        reason: "impossible record length",
                    })
                }
                Decoded::Incomplete { total } => {
                    if offset + total as u64 > self.limit || self.chunk.len() - rel >= total {
                        return Ok(ScanItem::Corrupt {
                            offset,
                            skip: None,
                            reason: "record cut short",
                        });
                    }
                    self.ensure(total)?;
                    if self.chunk.len() < total {
                        return Ok(ScanItem::Corrupt {
                            offset,
                            skip: None,
                            reason: "record cut short",
                        });
                    }
                    continue;
                }
                Decoded::BadCrc { total } => {
                    self.offset += total as u64;
                    return Ok(ScanItem::Corrupt {
                        offset,
                        skip: Some(total as u64),
                        reason: "CRC mismatch",
                    });
                }
                Decoded::BadFlags { total } => {
                    self.offset += total as u64;
                    return Ok(ScanItem::Corrupt {
                        offset,
                        skip: Some(total as u64),
                        reason: "impossible record flags",
                    });
                }
                Decoded::Record {
                    header,
                    body_start,
                    total,
                } => {
                    self.offset += total as u64;
                    let body = if self.headers_only {
                        Bytes::new()
                    } else {
                        self.chunk.slice(rel + body_start..rel + total)
                    };
                    return Ok(ScanItem::Record {
                        offset,
                        record: StoredRecord { header, body },
                    });
                }
            }
        }
    }

    /// After a record at `bad` whose length cannot be trusted: find the next offset after
    /// it where a whole record with a sequence in `seqs` and a correct CRC starts, and
    /// continue from there. `None` (scanner at the limit) when nothing valid follows.
    pub fn resync(&mut self, bad: u64, seqs: std::ops::Range<u64>) -> Result<Option<u64>> {
        let format = self.format()?;
        let min_len = format.min_record_len() as u64;
        let mut at = (bad + 1).max(format.data_start());
        while at + min_len <= self.limit {
            self.offset = at;
            self.ensure(MAX_HEADER_LEN)?;
            let rel = (at - self.chunk_start) as usize;
            let window = &self.chunk[rel..];
            // Runs of zeros (a preallocated or never-written area) cannot start a record
            // whose length's low bytes are not all zero: jump to three bytes before the
            // next non-zero byte.
            if window.len() >= 4 && window[..4] == [0, 0, 0, 0] {
                match window.iter().position(|&b| b != 0) {
                    Some(p) => at += (p as u64).saturating_sub(3).max(1),
                    None => at += (window.len() as u64).saturating_sub(3).max(1),
                }
                continue;
            }
            if window.len() >= 16 {
                let mut s = [0u8; 8];
                s.copy_from_slice(&window[8..16]);
                let seq = u64::from_le_bytes(s);
                if seqs.contains(&seq) {
                    let max_total = (self.limit - at) as usize;
                    if let Decoded::Incomplete { total } = record::decode(format, window, max_total)
                    {
                        self.ensure(total)?;
                    }
                    let rel = (at - self.chunk_start) as usize;
                    if let Decoded::Record { .. } =
                        record::decode(format, &self.chunk[rel..], max_total)
                    {
                        self.offset = at;
                        return Ok(Some(at));
                    }
                }
            }
            at += 1;
        }
        self.offset = self.limit;
        Ok(None)
    }
}

/// Read a segment's format from its first bytes (at most `limit` of them).
pub(crate) fn read_format(io: &Io, file: &File, path: &Path, limit: u64) -> Result<Format> {
    let mut head = [0u8; SEGMENT_HEADER_LEN];
    let want = (SEGMENT_HEADER_LEN as u64).min(limit) as usize;
    let mut done = 0;
    while done < want {
        let n = io
            .read_at(file, &mut head[done..want], done as u64)
            .at(path)?;
        if n == 0 {
            break;
        }
        done += n;
    }
    record::detect_format(&head[..done]).map_err(|reason| crate::Error::Io {
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, reason),
    })
}
