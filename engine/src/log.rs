//! A topic's log: an ordered set of segment files named by the first sequence they hold.
//! The last one is written through a memory map ([`SegmentWriter`]); every segment is read
//! with `pread` through [`SegmentScanner`], which stops at the committed length.
//!
//! Recovery on open scans every segment: it rebuilds the sparse index (one entry per
//! [`INDEX_EVERY`] records, so reaching a sequence costs at most that many decodes after a
//! binary search), skips records whose CRC is wrong, and cuts the last segment at the first
//! record that is torn or corrupt.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::error::{Error, IoContext, Result};
use crate::record::{self, Decoded, RecordHeader, HEADER_LEN};
use crate::segment::{sync_dir, SegmentWriter, SyncHandle};

pub const INDEX_EVERY: u64 = 64;
const READ_CHUNK: usize = 256 * 1024;
pub const SEGMENT_SUFFIX: &str = ".seg";

pub fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}{SEGMENT_SUFFIX}")
}

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
    /// `None` nothing after `offset` can be trusted.
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
    /// Bytes of the file that may hold records.
    limit: u64,
    pub offset: u64,
    chunk: Bytes,
    chunk_start: u64,
}

impl<'a> SegmentScanner<'a> {
    pub fn new(file: &'a File, path: &'a Path, limit: u64, offset: u64) -> Self {
        SegmentScanner {
            file,
            path,
            limit,
            offset,
            chunk: Bytes::new(),
            chunk_start: 0,
        }
    }

    /// Make `[offset, offset + need)` (bounded by the limit) available in the chunk.
    fn ensure(&mut self, need: usize) -> Result<()> {
        let have_from = self.chunk_start;
        let have_to = self.chunk_start + self.chunk.len() as u64;
        let want_to = (self.offset + need as u64).min(self.limit);
        if self.offset >= have_from && want_to <= have_to {
            return Ok(());
        }
        let len = (need.max(READ_CHUNK) as u64).min(self.limit - self.offset) as usize;
        let mut buf = BytesMut::zeroed(len);
        let mut done = 0;
        while done < len {
            let n = self
                .file
                .read_at(&mut buf[done..], self.offset + done as u64)
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
        loop {
            let offset = self.offset;
            if offset >= self.limit {
                return Ok(ScanItem::End { offset });
            }
            let max_total = (self.limit - offset) as usize;
            self.ensure(HEADER_LEN)?;
            let rel = (offset - self.chunk_start) as usize;
            match record::decode(&self.chunk[rel..], max_total) {
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
                Decoded::Record {
                    header,
                    body_start,
                    total,
                } => {
                    self.offset += total as u64;
                    let body = self.chunk.slice(rel + body_start..rel + total);
                    return Ok(ScanItem::Record {
                        offset,
                        record: StoredRecord { header, body },
                    });
                }
            }
        }
    }
}

/// What recovery found and did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    pub segments: usize,
    pub records: u64,
    /// Records skipped because their CRC was wrong.
    pub corrupt_records: u64,
    /// Bytes cut from the end of the last segment (torn or corrupt tail).
    pub truncated_bytes: u64,
}

pub struct SegmentInfo {
    pub first_seq: u64,
    pub path: PathBuf,
    pub file: Arc<File>,
    /// Bytes holding records (the committed length).
    pub len: u64,
    /// One past the last sequence in it (== first_seq when empty).
    pub end_seq: u64,
    pub records: u64,
    /// (sequence, offset) of every INDEX_EVERY-th record.
    index: Vec<(u64, u64)>,
}

impl SegmentInfo {
    fn note_record(&mut self, seq: u64, offset: u64, total: u64) {
        if self.records.is_multiple_of(INDEX_EVERY) {
            self.index.push((seq, offset));
        }
        self.records += 1;
        self.end_seq = seq + 1;
        self.len = offset + total;
    }

    fn offset_for(&self, seq: u64) -> u64 {
        match self.index.partition_point(|&(s, _)| s <= seq) {
            0 => 0,
            i => self.index[i - 1].1,
        }
    }
}

/// Where a channel's last read stopped, so the next read continues without a search.
#[derive(Debug, Default, Clone, Copy)]
pub struct ReadHint {
    pub seq: u64,
    pub segment: u64,
    pub offset: u64,
}

pub struct Log {
    dir: PathBuf,
    max_bytes: usize,
    segments: Vec<SegmentInfo>,
    writer: Option<SegmentWriter>,
}

impl Log {
    pub fn open(dir: &Path, max_bytes: usize) -> Result<(Log, RecoveryReport)> {
        std::fs::create_dir_all(dir).at(dir)?;
        let mut names: Vec<(u64, PathBuf)> = Vec::new();
        for entry in std::fs::read_dir(dir).at(dir)? {
            let entry = entry.at(dir)?;
            let name = entry.file_name().to_string_lossy().to_string();
            if let Some(stem) = name.strip_suffix(SEGMENT_SUFFIX) {
                if let Ok(first) = stem.parse::<u64>() {
                    names.push((first, entry.path()));
                }
            }
        }
        names.sort();
        let mut report = RecoveryReport {
            segments: names.len(),
            ..Default::default()
        };
        let mut segments = Vec::with_capacity(names.len());
        let count = names.len();
        let mut last_seq: Option<u64> = None;
        for (i, (first, path)) in names.into_iter().enumerate() {
            let is_last = i + 1 == count;
            let file = File::options()
                .read(true)
                .write(true)
                .open(&path)
                .at(&path)?;
            let file_len = file.metadata().at(&path)?.len();
            let mut info = SegmentInfo {
                first_seq: first,
                path: path.clone(),
                file: Arc::new(file),
                len: 0,
                end_seq: first,
                records: 0,
                index: Vec::new(),
            };
            let mut cut_at = None;
            {
                let file = info.file.clone();
                let mut sc = SegmentScanner::new(&file, &path, file_len, 0);
                loop {
                    match sc.next_item()? {
                        ScanItem::Record { offset, record } => {
                            let seq = record.header.seq;
                            if last_seq.is_some_and(|l| seq <= l) {
                                // Out of order: treat as corruption from here on.
                                tracing::warn!(segment = %path.display(), offset, seq, "sequence out of order");
                                cut_at = Some(offset);
                                break;
                            }
                            last_seq = Some(seq);
                            let total = sc.offset - offset;
                            info.note_record(seq, offset, total);
                        }
                        ScanItem::Corrupt {
                            offset,
                            skip: Some(n),
                            reason,
                        } if !is_last => {
                            tracing::warn!(segment = %path.display(), offset, reason, "skipping corrupt record");
                            report.corrupt_records += 1;
                            info.len = offset + n;
                        }
                        ScanItem::Corrupt { offset, reason, .. } => {
                            tracing::warn!(segment = %path.display(), offset, reason, "corrupt or torn record: cutting here");
                            cut_at = Some(offset);
                            break;
                        }
                        ScanItem::End { .. } => break,
                    }
                }
            }
            if let Some(at) = cut_at {
                // Count the bytes we drop (up to the zero tail).
                let mut nonzero_end = at;
                let mut buf = vec![0u8; 64 * 1024];
                let mut off = at;
                while off < file_len {
                    let n = info.file.read_at(&mut buf, off).at(&path)?;
                    if n == 0 {
                        break;
                    }
                    if let Some(p) = buf[..n].iter().rposition(|&b| b != 0) {
                        nonzero_end = off + p as u64 + 1;
                    }
                    off += n as u64;
                }
                report.truncated_bytes += nonzero_end - at;
                // Zero everything from the cut on, so no stale bytes remain after it.
                info.file.set_len(at).at(&path)?;
                info.file.set_len(file_len).at(&path)?;
                info.file.sync_all().at(&path)?;
                info.len = at;
            }
            report.records += info.records;
            segments.push(info);
        }
        if report.truncated_bytes > 0 || report.corrupt_records > 0 {
            tracing::warn!(dir = %dir.display(), ?report, "log recovered with losses");
        }
        let mut log = Log {
            dir: dir.to_path_buf(),
            max_bytes: max_bytes.max(HEADER_LEN + 1),
            segments,
            writer: None,
        };
        if let Some(last) = log.segments.last() {
            let cap = (last.file.metadata().at(&last.path)?.len() as usize).max(log.max_bytes);
            let w = SegmentWriter::open(&last.path, last.len as usize, cap)?;
            log.writer = Some(w);
        }
        Ok((log, report))
    }

    /// One past the last sequence stored (0 when empty).
    pub fn end_seq(&self) -> u64 {
        self.segments
            .iter()
            .rev()
            .map(|s| s.end_seq)
            .find(|&e| e > 0)
            .unwrap_or(0)
    }

    /// The first sequence that may still be in the log.
    pub fn start_seq(&self) -> Option<u64> {
        self.segments.first().map(|s| s.first_seq)
    }

    pub fn is_empty(&self) -> bool {
        self.segments.iter().all(|s| s.records == 0)
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.len).sum()
    }

    pub fn sync_handle(&self) -> Option<SyncHandle> {
        self.writer.as_ref().map(|w| w.sync_handle())
    }

    /// Append records in order (their sequences must increase).
    pub fn append<'b>(
        &mut self,
        records: impl IntoIterator<Item = (RecordHeader, &'b [u8])>,
    ) -> Result<()> {
        for (h, body) in records {
            let need = record::encoded_len(body.len());
            if need > u32::MAX as usize {
                return Err(Error::RecordTooLarge(need));
            }
            if self.writer.as_ref().is_none_or(|w| w.remaining() < need) {
                self.roll(h.seq, need)?;
            }
            let (Some(w), Some(info)) = (self.writer.as_mut(), self.segments.last_mut()) else {
                return Err(Error::Closed);
            };
            let offset = w.pos as u64;
            w.append_with(need, |buf| record::encode(buf, &h, body));
            info.note_record(h.seq, offset, need as u64);
        }
        Ok(())
    }

    fn roll(&mut self, first_seq: u64, need: usize) -> Result<()> {
        if let Some(w) = self.writer.take() {
            let file = w.seal()?;
            if let Some(last) = self.segments.last_mut() {
                last.file = file;
            }
        }
        let path = self.dir.join(segment_name(first_seq));
        let cap = self.max_bytes.max(need);
        let w = SegmentWriter::open(&path, 0, cap)?;
        sync_dir(&self.dir)?;
        self.segments.push(SegmentInfo {
            first_seq,
            path,
            file: w.file.clone(),
            len: 0,
            end_seq: first_seq,
            records: 0,
            index: Vec::new(),
        });
        self.writer = Some(w);
        Ok(())
    }

    /// Read records with sequence >= `from`, keeping those `keep` accepts, until `max` are
    /// kept or the log ends. Returns the position to continue from (one past the last
    /// record examined, or the log's end).
    pub fn read(
        &self,
        from: u64,
        max: usize,
        hint: &mut ReadHint,
        mut keep: impl FnMut(&RecordHeader) -> bool,
        out: &mut Vec<StoredRecord>,
    ) -> Result<u64> {
        let mut pos = from;
        if max == 0 {
            return Ok(pos);
        }
        let start = self
            .segments
            .partition_point(|s| s.first_seq <= from)
            .saturating_sub(1);
        let mut kept = 0;
        for seg in &self.segments[start..] {
            if seg.end_seq <= pos || seg.records == 0 {
                pos = pos.max(seg.end_seq);
                continue;
            }
            let offset = if hint.segment == seg.first_seq && hint.seq == pos && hint.seq > 0 {
                hint.offset
            } else {
                seg.offset_for(pos)
            };
            let mut sc = SegmentScanner::new(&seg.file, &seg.path, seg.len, offset);
            loop {
                match sc.next_item()? {
                    ScanItem::Record { record, offset } => {
                        let seq = record.header.seq;
                        if seq < pos {
                            continue;
                        }
                        pos = seq + 1;
                        if keep(&record.header) {
                            out.push(record);
                            kept += 1;
                            if kept >= max {
                                *hint = ReadHint {
                                    seq: pos,
                                    segment: seg.first_seq,
                                    offset: sc.offset,
                                };
                                let _ = offset;
                                return Ok(pos);
                            }
                        }
                    }
                    ScanItem::Corrupt {
                        skip: Some(_),
                        offset,
                        reason,
                    } => {
                        tracing::warn!(segment = %seg.path.display(), offset, reason, "skipping corrupt record");
                    }
                    ScanItem::Corrupt { .. } | ScanItem::End { .. } => break,
                }
            }
            pos = pos.max(seg.end_seq);
        }
        *hint = ReadHint::default();
        Ok(pos)
    }

    /// Where straggler relocation starts: the first sequence of the next-to-last segment,
    /// when there are at least three (unfinished messages below it are far behind).
    pub fn relocation_boundary(&self) -> Option<u64> {
        let n = self.segments.len();
        (n >= 3).then(|| self.segments[n - 2].first_seq)
    }

    /// Delete sealed segments whose records are all below `floor`. Returns how many.
    pub fn gc(&mut self, floor: u64) -> Result<usize> {
        let mut removed = 0;
        while self.segments.len() > 1 && self.segments[0].end_seq <= floor {
            let seg = self.segments.remove(0);
            std::fs::remove_file(&seg.path).at(&seg.path)?;
            removed += 1;
        }
        if removed > 0 {
            sync_dir(&self.dir)?;
        }
        Ok(removed)
    }

    /// Flush the writable segment's map (the sync thread uses a [`SyncHandle`] instead).
    pub fn sync(&self) -> Result<()> {
        match self.writer.as_ref() {
            Some(w) => w.sync_handle().sync(),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr(seq: u64) -> RecordHeader {
        RecordHeader {
            seq,
            timestamp_ns: seq as i64,
            deliver_at_ms: 0,
            target: 0,
            attempts: 0,
            id: record::message_id(seq),
        }
    }

    fn fill(log: &mut Log, from: u64, n: u64) {
        let bodies: Vec<Vec<u8>> = (from..from + n)
            .map(|i| format!("body-{i}").into_bytes())
            .collect();
        log.append(
            (from..from + n)
                .zip(bodies.iter())
                .map(|(s, b)| (hdr(s), b.as_slice())),
        )
        .unwrap();
    }

    fn read_all(log: &Log, from: u64) -> Vec<u64> {
        let mut out = Vec::new();
        let mut hint = ReadHint::default();
        log.read(from, usize::MAX, &mut hint, |_| true, &mut out)
            .unwrap();
        out.iter().map(|r| r.header.seq).collect()
    }

    #[test]
    fn append_roll_read_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = Log::open(dir.path(), 4096).unwrap();
        fill(&mut log, 0, 1000);
        assert!(log.segment_count() > 5);
        assert_eq!(log.end_seq(), 1000);
        assert_eq!(read_all(&log, 0), (0..1000).collect::<Vec<_>>());
        assert_eq!(read_all(&log, 777), (777..1000).collect::<Vec<_>>());
        // Batches with a hint continue where they stopped.
        let mut hint = ReadHint::default();
        let mut pos = 0;
        let mut seen = Vec::new();
        loop {
            let mut out = Vec::new();
            pos = log
                .read(pos, 7, &mut hint, |h| h.seq % 3 != 0, &mut out)
                .unwrap();
            if out.is_empty() {
                break;
            }
            seen.extend(out.iter().map(|r| r.header.seq));
        }
        assert_eq!(seen, (0..1000).filter(|s| s % 3 != 0).collect::<Vec<_>>());
        drop(log);
        let (log, report) = Log::open(dir.path(), 4096).unwrap();
        assert_eq!(report.records, 1000);
        assert_eq!(report.truncated_bytes, 0);
        assert_eq!(log.end_seq(), 1000);
        assert_eq!(read_all(&log, 500).len(), 500);
    }

    #[test]
    fn gc_removes_old_segments_only() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = Log::open(dir.path(), 2048).unwrap();
        fill(&mut log, 0, 500);
        let before = log.segment_count();
        let removed = log.gc(250).unwrap();
        assert!(removed > 0 && removed < before);
        let rest = read_all(&log, 0);
        assert!(rest[0] <= 250 && *rest.last().unwrap() == 499);
        log.gc(u64::MAX).unwrap();
        assert_eq!(log.segment_count(), 1, "the writable segment stays");
    }

    /// Cut or garble the last segment at every byte of its last records: recovery keeps
    /// exactly the records before the damage and never returns a bad one.
    #[test]
    fn crash_at_every_byte_of_the_tail() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = Log::open(dir.path(), 1 << 20).unwrap();
        fill(&mut log, 0, 20);
        log.sync().unwrap();
        drop(log);
        let seg = dir.path().join(segment_name(0));
        let pristine = std::fs::read(&seg).unwrap();
        let rec_len = record::encoded_len("body-19".len()) as u64;
        let used: u64 = (0..20)
            .map(|i| record::encoded_len(format!("body-{i}").len()) as u64)
            .sum();
        let last_start = used - rec_len;
        for cut in last_start - 10..used {
            for garble in [false, true] {
                let mut bytes = pristine.clone();
                if garble {
                    bytes[cut as usize] ^= 0xff;
                } else {
                    for b in &mut bytes[cut as usize..] {
                        *b = 0;
                    }
                }
                std::fs::write(&seg, &bytes).unwrap();
                let (log, _report) = Log::open(dir.path(), 1 << 20).unwrap();
                let got = read_all(&log, 0);
                let expect_n = if cut >= last_start { 19 } else { 18 };
                assert_eq!(
                    got,
                    (0..expect_n).collect::<Vec<_>>(),
                    "cut {cut} garble {garble}"
                );
                // The log takes new appends after the cut.
                drop(log);
                let (mut log, _) = Log::open(dir.path(), 1 << 20).unwrap();
                let next = log.end_seq();
                fill(&mut log, next, 1);
                assert_eq!(read_all(&log, 0).len() as u64, expect_n + 1);
                drop(log);
            }
        }
    }

    #[test]
    fn corrupt_record_in_sealed_segment_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = Log::open(dir.path(), 1024).unwrap();
        fill(&mut log, 0, 100);
        drop(log);
        let seg = dir.path().join(segment_name(0));
        let mut bytes = std::fs::read(&seg).unwrap();
        // Flip a body byte of the second record.
        let second = record::encoded_len("body-0".len()) + HEADER_LEN + 2;
        bytes[second] ^= 0x01;
        std::fs::write(&seg, &bytes).unwrap();
        let (log, report) = Log::open(dir.path(), 1024).unwrap();
        assert_eq!(report.corrupt_records, 1);
        let got = read_all(&log, 0);
        assert!(!got.contains(&1));
        assert_eq!(got.len(), 99);
    }
}
