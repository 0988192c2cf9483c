//! A topic's log: an ordered set of segment files named by the first sequence they hold.
//! The last one is appended to through a [`SegmentWriter`] (`pwrite`); every segment is
//! read with `pread` through [`SegmentScanner`], which stops at the committed length.
//!
//! Recovery on open scans every segment: it rebuilds the sparse index (one entry per
//! [`INDEX_EVERY`] records, so reaching a sequence costs at most that many decodes after a
//! binary search). A corrupt record anywhere is skipped: the scanner resynchronises on the
//! next record whose length, sequence and CRC check out, so one bad byte costs one record,
//! not the rest of the segment. Only a torn tail with nothing valid after it is cut.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use crate::error::{Error, IoContext, Result};
use crate::fs::Io;
pub use crate::layout::{list_segments, segment_name, SEGMENT_SUFFIX};
use crate::record::{self, Format, RecordHeader, MAX_HEADER_LEN, SEGMENT_HEADER_LEN};
use crate::seal;
use crate::segment::{SegmentWriter, SyncHandle};

mod recovery;
mod scan;
mod segment_info;

use recovery::recover_segment;
pub use recovery::RecoveryReport;
use scan::READ_CHUNK;
pub use scan::{ScanItem, SegmentScanner, StoredRecord};
pub use segment_info::SegmentInfo;

pub const INDEX_EVERY: u64 = 64;

/// Where a channel's last read stopped, so the next read continues without a search.
#[derive(Debug, Default, Clone, Copy)]
pub struct ReadHint {
    pub seq: u64,
    pub segment: u64,
    pub offset: u64,
}

/// Disk work the sync thread does for a log without holding the topic lock.
#[derive(Default)]
pub(crate) struct SyncWork {
    /// The log's directory gained or lost a file since the last round.
    pub(crate) dir: Option<PathBuf>,
    /// Segments sealed since the last round, then the writable one.
    pub(crate) segments: Vec<SyncHandle>,
}

impl SyncWork {
    pub(crate) fn run(&self, io: &Io) -> Result<()> {
        if let Some(dir) = &self.dir {
            io.sync_dir(dir).at(dir)?;
        }
        let mut first_err = None;
        for h in &self.segments {
            if let Err(e) = h.sync() {
                tracing::error!(segment = %h.path().display(), error = %e, "segment sync failed");
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

pub struct Log {
    dir: PathBuf,
    max_bytes: u64,
    segments: Vec<SegmentInfo>,
    writer: Option<SegmentWriter>,
    io: Io,
    /// Sealed segments not yet handed to the sync thread.
    sealed: Vec<SyncHandle>,
    /// A segment file was created or removed since the last sync round.
    dir_dirty: bool,
    /// Reused buffer a batch is encoded into before its one write.
    encode_buf: Vec<u8>,
}

/// Bodies up to this size are copied beside their header into the log's encode buffer
/// (one piece per batch); bigger ones are written from where they are (`pwritev`), which
/// saves copying them once more.
pub(crate) const INLINE_BODY_MAX: usize = 4096;

/// One batch of [`Log::append`]: the pieces to write, in order.
#[derive(Default)]
struct Batch<'b> {
    spans: Vec<Span<'b>>,
    /// Start in the encode buffer of the piece still open.
    buf_from: usize,
    /// Bytes in the batch.
    len: u64,
}

/// Encode a record of `need` bytes at the end of `buf`: its header, and its body when it
/// is small (up to [`INLINE_BODY_MAX`]). Returns false when the body is to be written from
/// where it is, after what `buf` holds.
fn encode_record(
    buf: &mut Vec<u8>,
    h: &RecordHeader,
    body: &[u8],
    body_crc: Option<u32>,
    need: usize,
) -> bool {
    let at = buf.len();
    buf.resize(at + (need - body.len()), 0);
    record::encode_header(&mut buf[at..], h, body, body_crc);
    let inline = body.len() <= INLINE_BODY_MAX;
    if inline {
        buf.extend_from_slice(body);
    }
    inline
}

/// A batch planned by [`Log::begin_append`], to be written without the topic lock.
#[derive(Default)]
pub(crate) struct PendingAppend {
    /// The segment file and the I/O layer to write with (`None`: nothing to write).
    target: Option<(Arc<std::fs::File>, Io)>,
    at: u64,
    len: u64,
    buf: Vec<u8>,
    spans: Vec<OwnedSpan>,
    /// (seq, timestamp, offset in the batch, length) of each record.
    indexed: Vec<(u64, i64, u64, u64)>,
    /// The sequence of the first record left out (the segment had no room for it).
    cut_at: Option<u64>,
}

enum OwnedSpan {
    Buf(std::ops::Range<usize>),
    Body(Bytes),
}

impl PendingAppend {
    /// Where the plan stopped short (the first record left out), if it did.
    pub(crate) fn cut_at(&self) -> Option<u64> {
        self.cut_at
    }

    /// The `pwritev` itself: needs no lock.
    pub(crate) fn write(&self) -> std::io::Result<()> {
        let Some((file, io)) = &self.target else {
            return Ok(());
        };
        let mut slices: Vec<std::io::IoSlice<'_>> = self
            .spans
            .iter()
            .map(|s| match s {
                OwnedSpan::Buf(r) => std::io::IoSlice::new(&self.buf[r.clone()]),
                OwnedSpan::Body(b) => std::io::IoSlice::new(b),
            })
            .filter(|s| !s.is_empty())
            .collect();
        io.write_all_vectored_at(file, &mut slices, self.at)
    }
}

enum Span<'b> {
    /// A range of the encode buffer.
    Buf(std::ops::Range<usize>),
    /// A body, written from where it is.
    Body(&'b [u8]),
}

impl Log {
    pub fn open(dir: &Path, max_bytes: usize) -> Result<(Log, RecoveryReport)> {
        Log::open_with(&Io::default(), dir, max_bytes)
    }

    pub(crate) fn open_with(
        io: &Io,
        dir: &Path,
        max_bytes: usize,
    ) -> Result<(Log, RecoveryReport)> {
        let started = std::time::Instant::now();
        std::fs::create_dir_all(dir).at(dir)?;
        let names = list_segments(dir)?;
        let mut report = RecoveryReport {
            segments: names.len(),
            ..Default::default()
        };
        let mut segments = Vec::with_capacity(names.len());
        let count = names.len();
        let mut last_seq: Option<u64> = None;
        for (i, (first, path)) in names.iter().enumerate() {
            let is_last = i + 1 == count;
            let next_first = names.get(i + 1).map_or(u64::MAX, |n| n.0);
            let info = recover_segment(
                io,
                *first,
                path,
                next_first,
                is_last,
                &mut last_seq,
                &mut report,
            )?;
            report.records += info.records;
            segments.push(info);
        }
        if report.truncated_bytes > 0 || report.corrupt_records > 0 {
            tracing::warn!(dir = %dir.display(), ?report, "log recovered with losses");
        }
        let mut log = Log {
            dir: dir.to_path_buf(),
            max_bytes: max_bytes.max(SEGMENT_HEADER_LEN + MAX_HEADER_LEN + 1) as u64,
            segments,
            writer: None,
            io: io.clone(),
            sealed: Vec::new(),
            dir_dirty: false,
            encode_buf: Vec::new(),
        };
        log.open_writer()?;
        tracing::debug!(dir = %dir.display(), segments = report.segments,
            scanned_segments = report.scanned_segments, scanned_bytes = report.scanned_bytes,
            records = report.records, ms = started.elapsed().as_secs_f64() * 1e3, "log opened");
        Ok((log, report))
    }

    /// Open the last segment for appending. New records are always v2: an empty last
    /// segment that is not a whole v2 one (v1, or a header a crash tore) is started again
    /// as v2, and a v1 segment holding records is sealed for a new v2 one.
    fn open_writer(&mut self) -> Result<()> {
        let Some(last) = self.segments.last_mut() else {
            return Ok(());
        };
        let header = record::segment_header();
        if last.records == 0 {
            let mut head = [0u8; SEGMENT_HEADER_LEN];
            let whole = last.format == Format::V2
                && self
                    .io
                    .read_at(&last.file, &mut head, 0)
                    .is_ok_and(|n| n == SEGMENT_HEADER_LEN && head == header);
            let w = if whole {
                SegmentWriter::open(
                    &self.io,
                    &last.path,
                    SEGMENT_HEADER_LEN as u64,
                    self.max_bytes,
                )?
            } else {
                let mut w = SegmentWriter::open(&self.io, &last.path, 0, self.max_bytes)?;
                w.append(&header)?;
                w
            };
            last.format = Format::V2;
            last.len = SEGMENT_HEADER_LEN as u64;
            self.writer = Some(w);
            return Ok(());
        }
        let w = SegmentWriter::open(&self.io, &last.path, last.len, self.max_bytes)?;
        let v1 = last.format == Format::V1;
        self.writer = Some(w);
        if v1 {
            let at = self.end_seq();
            self.roll(at, 0)?;
        }
        Ok(())
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

    /// Take what the sync thread must make durable: the directory (if files came or went)
    /// and every segment written since the last round. Cheap; call under the topic lock,
    /// then [`SyncWork::run`] without it.
    pub(crate) fn take_sync_work(&mut self) -> SyncWork {
        let mut segments = std::mem::take(&mut self.sealed);
        // A poisoned segment's failure was reported when it happened; syncing it again
        // would prove nothing (see `SegmentWriter`), and nothing new is written to it.
        segments.retain(|h| !h.is_poisoned());
        if let Some(w) = self.writer.as_ref().filter(|w| !w.is_poisoned()) {
            segments.push(w.sync_handle());
        }
        SyncWork {
            dir: std::mem::take(&mut self.dir_dirty).then(|| self.dir.clone()),
            segments,
        }
    }

    /// Append records in order (their sequences must increase). Records with a sequence
    /// below [`Log::end_seq`] are already stored and skipped, so a batch that failed
    /// part-way can be appended again. A batch that fits in one segment is written with one
    /// `pwrite` and is stored whole or not at all; on an error the log holds a prefix of it.
    pub fn append<'b>(
        &mut self,
        records: impl IntoIterator<Item = (RecordHeader, &'b [u8])>,
    ) -> Result<()> {
        self.append_with_crcs(records.into_iter().map(|(h, b)| (h, b, None)))
    }

    /// [`append`](Self::append) with each body's [`record::body_crc`] where the caller
    /// has it (computed while the body was in cache).
    pub(crate) fn append_with_crcs<'b>(
        &mut self,
        records: impl IntoIterator<Item = (RecordHeader, &'b [u8], Option<u32>)>,
    ) -> Result<()> {
        let end = self.end_seq();
        // Headers, and bodies up to INLINE_BODY_MAX, are encoded into `buf`; bigger bodies
        // are written from where they are (one `pwritev` of the pieces per batch).
        let mut buf = std::mem::take(&mut self.encode_buf);
        buf.clear();
        let mut batch = Batch::default();
        // (seq, timestamp, offset in the batch, length) of the records in it.
        let mut pending: Vec<(u64, i64, u64, u64)> = Vec::new();
        let mut result = Ok(());
        for (h, body, body_crc) in records {
            if h.seq < end && end > 0 {
                continue;
            }
            let need = record::encoded_len(&h, body.len());
            if need > u32::MAX as usize {
                result = Err(Error::RecordTooLarge(need));
                break;
            }
            let room = self.room().saturating_sub(batch.len);
            if room < need as u64 {
                if let Err(e) = self.flush_batch(&buf, &mut batch, &mut pending) {
                    result = Err(e);
                    break;
                }
                buf.clear();
                if let Err(e) = self.roll(h.seq, need as u64) {
                    result = Err(e);
                    break;
                }
            }
            if !encode_record(&mut buf, &h, body, body_crc, need) {
                batch.spans.push(Span::Buf(batch.buf_from..buf.len()));
                batch.spans.push(Span::Body(body));
                batch.buf_from = buf.len();
            }
            pending.push((h.seq, h.timestamp_ns, batch.len, need as u64));
            batch.len += need as u64;
        }
        if result.is_ok() {
            result = self.flush_batch(&buf, &mut batch, &mut pending);
        }
        buf.clear();
        if buf.capacity() > 4 << 20 {
            buf = Vec::new(); // do not keep a huge batch's buffer forever
        }
        self.encode_buf = buf;
        result
    }

    /// Plan the append of `records` (as [`append_with_crcs`](Self::append_with_crcs),
    /// bodies given as `Bytes` so the plan can own them) for a write made without the
    /// topic lock: [`PendingAppend::write`], then [`finish_append`](Self::finish_append)
    /// under the lock, before any other append. Until then readers see the log as it was.
    /// The plan holds the records that fit in the writable segment; when the first does
    /// not, the segment is rolled here first (as an append would), so the write itself
    /// never waits for a roll. [`PendingAppend::cut_at`] tells where a plan stopped short.
    /// Nothing else is changed.
    pub(crate) fn begin_append<'b>(
        &mut self,
        records: impl IntoIterator<Item = (RecordHeader, &'b Bytes, Option<u32>)>,
    ) -> Result<PendingAppend> {
        let end = self.end_seq();
        let mut buf = std::mem::take(&mut self.encode_buf);
        buf.clear();
        let mut spans = Vec::new();
        let mut buf_from = 0;
        let mut indexed = Vec::new();
        let mut len = 0u64;
        let mut cut_at = None;
        let mut room = self.room();
        for (h, body, body_crc) in records {
            if h.seq < end && end > 0 {
                continue;
            }
            let need = record::encoded_len(&h, body.len()) as u64;
            if need > u32::MAX as u64 {
                self.encode_buf = buf;
                return Err(Error::RecordTooLarge(need as usize));
            }
            if len + need > room {
                if !indexed.is_empty() {
                    cut_at = Some(h.seq);
                    break;
                }
                if let Err(e) = self.roll(h.seq, need) {
                    self.encode_buf = buf;
                    return Err(e);
                }
                room = self.room();
            }
            if !encode_record(&mut buf, &h, body, body_crc, need as usize) {
                spans.push(OwnedSpan::Buf(buf_from..buf.len()));
                spans.push(OwnedSpan::Body(body.clone()));
                buf_from = buf.len();
            }
            indexed.push((h.seq, h.timestamp_ns, len, need));
            len += need;
        }
        spans.push(OwnedSpan::Buf(buf_from..buf.len()));
        let w = match self.writer.as_mut() {
            Some(w) if !indexed.is_empty() => w,
            _ => {
                self.encode_buf = buf;
                return Ok(PendingAppend::default());
            }
        };
        let at = w.begin_external(len);
        Ok(PendingAppend {
            target: Some((w.file().clone(), w.io().clone())),
            at,
            len,
            buf,
            spans,
            indexed,
            cut_at,
        })
    }

    /// Bytes the writable segment has room for (0 without a usable one: the next append
    /// rolls).
    fn room(&self) -> u64 {
        self.writer
            .as_ref()
            .filter(|w| !w.is_poisoned())
            .map_or(0, |w| w.remaining())
    }

    /// Make a [`PendingAppend`] part of the log, given its write's result: on success its
    /// records become readable; on error (or if the writable segment changed meanwhile)
    /// none of them count and the file is cut back.
    pub(crate) fn finish_append(
        &mut self,
        mut p: PendingAppend,
        written: std::io::Result<()>,
    ) -> Result<()> {
        let mut buf = std::mem::take(&mut p.buf);
        buf.clear();
        if buf.capacity() <= 4 << 20 {
            self.encode_buf = buf;
        }
        let Some((file, _)) = p.target.take() else {
            return Ok(()); // nothing to write
        };
        let (Some(w), Some(info)) = (self.writer.as_mut(), self.segments.last_mut()) else {
            return Err(Error::Closed);
        };
        if !Arc::ptr_eq(w.file(), &file) || w.pos() != p.at {
            // The segment was replaced while the write ran (the topic closed or a fault
            // was handled): what was written there is past any end that counts.
            return Err(Error::Closed);
        }
        w.end_external(p.at, p.len, written)?;
        for (seq, ts, at, len) in p.indexed.drain(..) {
            info.note_record(seq, ts, p.at + at, len);
        }
        Ok(())
    }

    /// Write the batch (pieces of `buf` and bodies) at the writer's end and index its
    /// records. Leaves `batch` empty.
    fn flush_batch(
        &mut self,
        buf: &[u8],
        batch: &mut Batch<'_>,
        pending: &mut Vec<(u64, i64, u64, u64)>,
    ) -> Result<()> {
        let len = std::mem::take(&mut batch.len);
        let mut spans = std::mem::take(&mut batch.spans);
        spans.push(Span::Buf(std::mem::take(&mut batch.buf_from)..buf.len()));
        if pending.is_empty() {
            return Ok(());
        }
        let (Some(w), Some(info)) = (self.writer.as_mut(), self.segments.last_mut()) else {
            return Err(Error::Closed);
        };
        let base = w.pos();
        if let [Span::Buf(r)] = &spans[..] {
            w.append(&buf[r.clone()])?;
        } else {
            let mut slices: Vec<std::io::IoSlice<'_>> = spans
                .iter()
                .map(|s| match s {
                    Span::Buf(r) => std::io::IoSlice::new(&buf[r.clone()]),
                    Span::Body(b) => std::io::IoSlice::new(b),
                })
                .filter(|s| !s.is_empty())
                .collect();
            w.append_vectored(&mut slices, len)?;
        }
        for (seq, ts, at, len) in pending.drain(..) {
            info.note_record(seq, ts, base + at, len);
        }
        Ok(())
    }

    /// Start a new segment at `first_seq`. The old one is sealed without disk work here:
    /// the sync thread makes it (and the directory entry of the new one) durable.
    fn roll(&mut self, first_seq: u64, need: u64) -> Result<()> {
        let path = self.dir.join(segment_name(first_seq));
        if let Some(last) = self.segments.last() {
            if last.first_seq == first_seq {
                // The current segment is empty (poisoned before its first record, or a
                // record larger than it): replace it rather than reuse the name.
                let writer_len = self.writer.as_ref().map_or(0, |w| w.pos());
                if last.records == 0 && writer_len <= SEGMENT_HEADER_LEN as u64 {
                    self.writer = None;
                    self.segments.pop();
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        let cap = self.max_bytes.max(need + SEGMENT_HEADER_LEN as u64);
        let mut w = SegmentWriter::open(&self.io, &path, 0, cap)?;
        w.append(&record::segment_header())?;
        if let Some(old) = self.writer.take() {
            let summary = self.segments.last().map(|info| {
                let path = seal::path_for(&info.path);
                let summary = info.summary();
                // Until the sync thread has synced the segment and written the durable
                // summary, a provisional one (this boot only) spares a restart after a
                // process crash the rescan of this segment. Best effort, and outside the
                // fault-injection `Io` (nothing depends on it being written). The sync
                // thread uses the same temporary name only after this returns.
                if let Some(boot) = seal::boot_id() {
                    let tmp = path.with_extension("idx.tmp");
                    let bytes = seal::encode_provisional(&summary, &boot);
                    if std::fs::write(&tmp, &bytes)
                        .and_then(|_| std::fs::rename(&tmp, &path))
                        .is_err()
                    {
                        let _ = std::fs::remove_file(&tmp);
                    }
                }
                (path, seal::encode(&summary))
            });
            self.sealed.push(old.seal(summary));
        }
        self.dir_dirty = true;
        self.segments.push(SegmentInfo::empty(
            first_seq,
            &path,
            w.file().clone(),
            Format::V2,
        ));
        self.writer = Some(w);
        Ok(())
    }

    /// The segment file and offset where [`Log::read`] from `from` (with `hint`) starts,
    /// if the log holds a record at or after `from`.
    pub(crate) fn read_start(
        &self,
        from: u64,
        hint: &ReadHint,
    ) -> Option<(Arc<std::fs::File>, u64)> {
        let i = self
            .segments
            .partition_point(|s| s.first_seq <= from)
            .saturating_sub(1);
        let seg = self.segments[i..]
            .iter()
            .find(|s| s.end_seq > from && s.records > 0)?;
        let offset = if hint.segment == seg.first_seq && hint.seq == from && hint.seq > 0 {
            hint.offset
        } else {
            seg.offset_for(from.max(seg.first_seq))
        };
        Some((seg.file.clone(), offset))
    }

    /// Read records with sequence >= `from`, keeping those `keep` accepts, until `max` are
    /// kept or the log ends. Returns the position to continue from (one past the last
    /// record examined, or the log's end). Bodies are copied out of the read buffer, so a
    /// message held by a client costs its own size, not the buffer's.
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
        for (i, seg) in self.segments.iter().enumerate().skip(start) {
            if seg.end_seq <= pos || seg.records == 0 {
                pos = pos.max(seg.end_seq);
                continue;
            }
            let offset = if hint.segment == seg.first_seq && hint.seq == pos && hint.seq > 0 {
                hint.offset
            } else {
                seg.offset_for(pos)
            };
            let next_first = self.segments.get(i + 1).map_or(u64::MAX, |n| n.first_seq);
            // About what `max - kept` average records of this segment take (filtered
            // records are skipped cheaply; a short chunk just means another pread).
            let avg = seg.len / seg.records.max(1);
            let want = avg.saturating_mul(((max - kept) as u64).saturating_add(1));
            let mut sc = SegmentScanner::new(&seg.file, &seg.path, seg.len, offset)
                .with_io(&self.io)
                .with_format(seg.format)
                .with_chunk_size(usize::try_from(want).unwrap_or(READ_CHUNK));
            loop {
                match sc.next_item()? {
                    ScanItem::Record { record, .. } => {
                        let seq = record.header.seq;
                        if seq < pos {
                            continue;
                        }
                        pos = seq + 1;
                        if keep(&record.header) {
                            out.push(StoredRecord {
                                header: record.header,
                                body: Bytes::copy_from_slice(&record.body),
                            });
                            kept += 1;
                            if kept >= max {
                                *hint = ReadHint {
                                    seq: pos,
                                    segment: seg.first_seq,
                                    offset: sc.offset,
                                };
                                return Ok(pos);
                            }
                        }
                    }
                    ScanItem::Corrupt { offset, .. } => {
                        // Recovery resynchronised here already; do the same to reach the
                        // records after the damage.
                        let lo = pos.max(seg.first_seq);
                        if sc.resync(offset, lo..next_first)?.is_none() {
                            break;
                        }
                    }
                    ScanItem::End { .. } => break,
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

    /// Take sealed segments whose records are all below `floor` out of the log. Returns
    /// their paths; the caller deletes them ([`remove_segments`]) after releasing the
    /// topic lock.
    pub(crate) fn detach_below(&mut self, floor: u64) -> Vec<PathBuf> {
        let mut gone = Vec::new();
        while self.segments.len() > 1 && self.segments[0].end_seq <= floor {
            gone.push(self.segments.remove(0).path);
        }
        gone
    }

    /// Like [`Log::detach_below`], but keeping what retention asks for: a finished segment
    /// stays while its newest record is younger than `retention` (if set) or while it is
    /// among the newest segments holding `retention_bytes` (if set). With neither set this
    /// is `detach_below`.
    pub(crate) fn detach_finished(
        &mut self,
        floor: u64,
        retention: std::time::Duration,
        retention_bytes: u64,
        now_ns: i64,
    ) -> Vec<PathBuf> {
        let total: u64 = self.bytes();
        let mut removed_bytes = 0;
        let mut gone = Vec::new();
        while self.segments.len() > 1 && self.segments[0].end_seq <= floor {
            let seg = &self.segments[0];
            let young = !retention.is_zero()
                && now_ns.saturating_sub(seg.last_ts) < retention.as_nanos() as i64;
            let within_bytes =
                retention_bytes > 0 && total - removed_bytes - seg.len < retention_bytes;
            if young || within_bytes {
                break;
            }
            removed_bytes += seg.len;
            gone.push(self.segments.remove(0).path);
        }
        gone
    }

    /// The first sequence in the log published at or after `ts_ns` (in log order), if any.
    pub(crate) fn seq_at_time(&self, ts_ns: i64) -> Result<Option<u64>> {
        for seg in &self.segments {
            if seg.records == 0 || seg.last_ts < ts_ns {
                continue;
            }
            let mut sc = SegmentScanner::new(&seg.file, &seg.path, seg.len, 0)
                .with_io(&self.io)
                .with_format(seg.format);
            loop {
                match sc.next_item()? {
                    ScanItem::Record { record, .. } => {
                        if record.header.timestamp_ns >= ts_ns {
                            return Ok(Some(record.header.seq));
                        }
                    }
                    ScanItem::Corrupt { offset, .. } => {
                        if sc.resync(offset, seg.first_seq..seg.end_seq)?.is_none() {
                            break;
                        }
                    }
                    ScanItem::End { .. } => break,
                }
            }
        }
        Ok(None)
    }

    /// Publish time of the oldest record kept (ns), if any.
    pub fn oldest_ts(&self) -> Option<i64> {
        self.segments
            .iter()
            .find(|s| s.records > 0)
            .map(|s| s.first_ts)
    }

    /// Delete sealed segments whose records are all below `floor`. Returns how many.
    pub fn gc(&mut self, floor: u64) -> Result<usize> {
        let gone = self.detach_below(floor);
        remove_segments(&self.io, &self.dir, &gone)?;
        Ok(gone.len())
    }

    /// Make everything written so far durable, on the caller's thread.
    pub fn sync(&mut self) -> Result<()> {
        let work = self.take_sync_work();
        work.run(&self.io)
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Is there room for more? Reserves a little ahead of the writer; an error while the
    /// disk is still full (or when the file system cannot tell).
    pub(crate) fn probe_space(&mut self) -> Result<()> {
        match self.writer.as_mut() {
            Some(w) => w.probe_space(),
            None => Ok(()),
        }
    }

    /// Replace a writer whose sync failed with a fresh segment (see [`SegmentWriter`]).
    pub(crate) fn replace_poisoned(&mut self) -> Result<()> {
        if self.writer.as_ref().is_some_and(|w| w.is_poisoned()) {
            let at = self.end_seq();
            self.roll(at, 0)?;
        }
        Ok(())
    }
}

/// Delete detached segment files and make the removal durable.
pub(crate) fn remove_segments(io: &Io, dir: &Path, paths: &[PathBuf]) -> Result<()> {
    if paths.is_empty() {
        return Ok(());
    }
    for p in paths {
        match std::fs::remove_file(p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).at(p),
        }
        let _ = std::fs::remove_file(seal::path_for(p));
    }
    io.sync_dir(dir).at(dir)
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
    fn read_start_is_where_a_read_begins() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = Log::open(dir.path(), 4096).unwrap();
        fill(&mut log, 0, 300);
        assert!(
            log.read_start(300, &ReadHint::default()).is_none(),
            "past the end"
        );
        for from in (0..300).step_by(29) {
            let (file, offset) = log.read_start(from, &ReadHint::default()).unwrap();
            let seg = log
                .segments
                .iter()
                .find(|s| s.first_seq <= from && from < s.end_seq)
                .unwrap();
            assert!(Arc::ptr_eq(&file, &seg.file), "the segment holding {from}");
            assert!(offset >= SEGMENT_HEADER_LEN as u64 && offset < seg.len);
            // Just written: in the page cache (where the kernel can tell).
            match crate::fs::page_cached_probe(&file, offset) {
                Ok(cached) => assert!(cached, "{from}"),
                Err(e) => eprintln!("RWF_NOWAIT not supported here: {e}"),
            }
        }
        // With a read's hint, exactly where that read stopped.
        let mut hint = ReadHint::default();
        let next = log
            .read(0, 10, &mut hint, |_| true, &mut Vec::new())
            .unwrap();
        let (_, offset) = log.read_start(next, &hint).unwrap();
        assert_eq!(offset, hint.offset);
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
        let rec_len = record::encoded_len(&hdr(19), "body-19".len()) as u64;
        let used: u64 = SEGMENT_HEADER_LEN as u64
            + (0..20)
                .map(|i| record::encoded_len(&hdr(i), format!("body-{i}").len()) as u64)
                .sum::<u64>();
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
                let hit = if cut >= last_start { 19 } else { 18 };
                // A zeroed tail loses the records from the cut on; one flipped byte loses
                // only the record it is in.
                let expect: Vec<u64> = if garble {
                    (0..20).filter(|&s| s != hit).collect()
                } else {
                    (0..hit).collect()
                };
                assert_eq!(got, expect, "cut {cut} garble {garble}");
                let expect_n = expect.len() as u64;
                // The log takes new appends after the cut.
                drop(log);
                let (mut log, _) = Log::open(dir.path(), 1 << 20).unwrap();
                let next = log.end_seq();
                fill(&mut log, next, 1);
                assert_eq!(read_all(&log, 0).len() as u64, expect_n + 1);
                assert_eq!(read_all(&log, 0).last(), Some(&next));
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
        let second = SEGMENT_HEADER_LEN
            + record::encoded_len(&hdr(0), "body-0".len())
            + record::V2_MIN_HEADER_LEN
            + 2;
        bytes[second] ^= 0x01;
        std::fs::write(&seg, &bytes).unwrap();
        // Damage after a power loss: no summary of this boot (the provisional one written
        // at the seal is from "before").
        let _ = std::fs::remove_file(seal::path_for(&seg));
        let (log, report) = Log::open(dir.path(), 1024).unwrap();
        assert_eq!(report.corrupt_records, 1);
        let got = read_all(&log, 0);
        assert!(!got.contains(&1));
        assert_eq!(got.len(), 99);
    }

    /// Headers with every optional field in use somewhere: delays, targets, attempts,
    /// relocated ids, a non-hex id.
    fn varied(seq: u64) -> RecordHeader {
        RecordHeader {
            seq,
            timestamp_ns: 1_000 + seq as i64,
            deliver_at_ms: if seq.is_multiple_of(3) {
                5_000 + seq
            } else {
                0
            },
            target: (seq % 4) as u32,
            attempts: (seq % 5) as u16,
            id: match seq % 7 {
                0 => record::message_id(seq + 1_000_000),
                1 => *b"imported-id-0001",
                _ => record::message_id(seq),
            },
        }
    }

    fn body_of(seq: u64) -> Vec<u8> {
        format!("body of {seq}").into_bytes()
    }

    /// A segment file as the v1 encoder wrote it (no segment header).
    fn write_v1_segment(dir: &Path, seqs: std::ops::Range<u64>) {
        let mut bytes = Vec::new();
        for seq in seqs.clone() {
            bytes.extend(record::v1::record(&varied(seq), &body_of(seq)));
        }
        std::fs::write(dir.join(segment_name(seqs.start)), bytes).unwrap();
    }

    fn read_records(log: &Log) -> Vec<StoredRecord> {
        let mut out = Vec::new();
        let mut hint = ReadHint::default();
        log.read(0, usize::MAX, &mut hint, |_| true, &mut out)
            .unwrap();
        out
    }

    fn check_all(recs: &[StoredRecord], seqs: impl Iterator<Item = u64>) {
        let want: Vec<u64> = seqs.collect();
        assert_eq!(recs.iter().map(|r| r.header.seq).collect::<Vec<_>>(), want);
        for r in recs {
            assert_eq!(r.header, varied(r.header.seq));
            assert_eq!(&r.body[..], &body_of(r.header.seq)[..]);
        }
    }

    /// Every record of a segment, read without telling the scanner its format (as the
    /// read-only reader and external readers do).
    fn scan_file(path: &Path) -> Vec<StoredRecord> {
        let file = std::fs::File::open(path).unwrap();
        let len = file.metadata().unwrap().len();
        let mut sc = SegmentScanner::new(&file, path, len, 0);
        let mut out = Vec::new();
        loop {
            match sc.next_item().unwrap() {
                ScanItem::Record { record, .. } => out.push(record),
                ScanItem::Corrupt { offset, .. } => {
                    if sc.resync(offset, 0..u64::MAX).unwrap().is_none() {
                        break;
                    }
                }
                ScanItem::End { .. } => break,
            }
        }
        out
    }

    #[test]
    fn v1_segments_are_read_and_new_records_go_to_v2_segments() {
        let dir = tempfile::tempdir().unwrap();
        write_v1_segment(dir.path(), 0..10);
        write_v1_segment(dir.path(), 10..15);
        let v1_last = std::fs::read(dir.path().join(segment_name(10))).unwrap();
        let (mut log, report) = Log::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(report.records, 15);
        assert_eq!(report.corrupt_records + report.truncated_bytes, 0);
        assert_eq!(log.end_seq(), 15);
        let bodies: Vec<Vec<u8>> = (15..40).map(body_of).collect();
        log.append((15..40).map(|s| (varied(s), &bodies[(s - 15) as usize][..])))
            .unwrap();
        log.sync().unwrap();
        check_all(&read_records(&log), 0..40);
        // The v1 segment holding records was sealed as it was; new records are in a v2
        // segment (header first).
        assert_eq!(
            std::fs::read(dir.path().join(segment_name(10))).unwrap(),
            v1_last
        );
        let v2 = std::fs::read(dir.path().join(segment_name(15))).unwrap();
        assert_eq!(&v2[..16], &record::segment_header()[..]);
        let v2_len: usize = (15..40)
            .map(|s| record::encoded_len(&varied(s), body_of(s).len()))
            .sum();
        assert_eq!(v2.len(), SEGMENT_HEADER_LEN + v2_len);
        assert_eq!(log.segment_count(), 3);
        drop(log);
        // Reopened (sealed summaries of both formats now exist): the same records.
        let (log, report) = Log::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(report.records, 40);
        assert_eq!(log.segment_count(), 3);
        check_all(&read_records(&log), 0..40);
        assert_eq!(log.seq_at_time(1_000 + 12).unwrap(), Some(12));
        assert_eq!(log.seq_at_time(1_000 + 20).unwrap(), Some(20));
        // A scanner that is not told the format finds it in each file.
        let mut scanned = Vec::new();
        for first in [0, 10, 15] {
            scanned.extend(scan_file(&dir.path().join(segment_name(first))));
        }
        check_all(&scanned, 0..40);
    }

    #[test]
    fn damage_in_a_v1_segment_costs_one_record() {
        let dir = tempfile::tempdir().unwrap();
        write_v1_segment(dir.path(), 0..10);
        write_v1_segment(dir.path(), 10..12);
        let seg = dir.path().join(segment_name(0));
        let mut bytes = std::fs::read(&seg).unwrap();
        let third: usize = (0..3)
            .map(|s| record::v1::encoded_len(body_of(s).len()))
            .sum();
        bytes[third] ^= 0x40; // the length of record 3
        std::fs::write(&seg, &bytes).unwrap();
        let (log, report) = Log::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(report.corrupt_records, 1);
        check_all(&read_records(&log), (0..12).filter(|&s| s != 3));
    }

    #[test]
    fn an_empty_or_torn_last_segment_is_started_again_as_v2() {
        for start in [&b""[..], &[0xff, 0xff, 0xff][..], &[0u8; 40][..]] {
            let dir = tempfile::tempdir().unwrap();
            write_v1_segment(dir.path(), 0..5);
            std::fs::write(dir.path().join(segment_name(5)), start).unwrap();
            let (mut log, _) = Log::open(dir.path(), 1 << 20).unwrap();
            assert_eq!(log.end_seq(), 5);
            let bodies: Vec<Vec<u8>> = (5..8).map(body_of).collect();
            log.append((5..8).map(|s| (varied(s), &bodies[(s - 5) as usize][..])))
                .unwrap();
            drop(log);
            let v2 = std::fs::read(dir.path().join(segment_name(5))).unwrap();
            assert_eq!(&v2[..16], &record::segment_header()[..], "{start:?}");
            let (log, report) = Log::open(dir.path(), 1 << 20).unwrap();
            assert_eq!(report.corrupt_records + report.truncated_bytes, 0);
            check_all(&read_records(&log), 0..8);
        }
    }

    /// Recovery's header-only scan (one reused read buffer) sees exactly the records, at
    /// the same offsets, as a full scan, across many 256 KiB chunks and records that
    /// straddle chunk boundaries; only the bodies are left out.
    #[test]
    fn header_only_scan_matches_a_full_scan() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = Log::open(dir.path(), 8 << 20).unwrap();
        let n = 12_000u64;
        let bodies: Vec<Vec<u8>> = (0..n)
            .map(|i| vec![(i % 251) as u8; 40 + (i as usize * 7) % 300])
            .collect();
        log.append(
            (0..n)
                .zip(bodies.iter())
                .map(|(s, b)| (varied(s), b.as_slice())),
        )
        .unwrap();
        drop(log);
        let names = list_segments(dir.path()).unwrap();
        assert_eq!(names.len(), 1);
        let path = &names[0].1;
        let file = std::fs::File::open(path).unwrap();
        let len = file.metadata().unwrap().len();
        assert!(len > 4 * scan::READ_CHUNK as u64, "several chunks: {len}");
        let collect = |headers_only: bool| {
            let mut sc = SegmentScanner::new(&file, path, len, 0);
            if headers_only {
                sc = sc.headers_only();
            }
            let mut out = Vec::new();
            loop {
                match sc.next_item().unwrap() {
                    ScanItem::Record { offset, record } => out.push((offset, record)),
                    ScanItem::Corrupt { offset, reason, .. } => panic!("{reason} at {offset}"),
                    ScanItem::End { .. } => break,
                }
            }
            out
        };
        let full = collect(false);
        let heads = collect(true);
        assert_eq!(full.len(), n as usize);
        assert_eq!(heads.len(), full.len());
        for ((fo, fr), (ho, hr)) in full.iter().zip(&heads) {
            assert_eq!(fo, ho);
            assert_eq!(fr.header, hr.header);
            assert_eq!(fr.header, varied(fr.header.seq));
            assert_eq!(&fr.body[..], &bodies[fr.header.seq as usize][..]);
            assert!(hr.body.is_empty());
        }
        // And recovery (which scans this, the last segment, header-only) keeps them all.
        let (log, report) = Log::open(dir.path(), 8 << 20).unwrap();
        assert_eq!(report.records, n);
        assert_eq!(report.scanned_bytes, len);
        assert_eq!(report.corrupt_records + report.truncated_bytes, 0);
        let recs = read_records(&log);
        assert_eq!(recs.len(), n as usize);
        assert_eq!(&recs[4321].body[..], &bodies[4321][..]);
    }

    /// Sealed segments get a provisional summary at the seal: a restart in the same boot
    /// before the sync thread ran (a process crash) scans only the last segment; the
    /// same summaries marked with another boot (a power loss) are ignored and every
    /// segment is scanned, with the same records either way.
    #[test]
    fn provisional_summaries_spare_the_rescan_in_the_same_boot_only() {
        let Some(boot) = seal::boot_id() else {
            return; // no boot id on this system: no provisional summaries to test
        };
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = Log::open(dir.path(), 4096).unwrap();
        fill(&mut log, 0, 1000);
        let count = log.segment_count();
        assert!(count > 5);
        // No sync round ran (as after a kill -9 right after the publishes).
        drop(log);
        let (log, report) = Log::open(dir.path(), 4096).unwrap();
        assert_eq!(report.scanned_segments, 1, "{report:?}");
        assert_eq!(report.records, 1000);
        assert_eq!(read_all(&log, 0), (0..1000).collect::<Vec<_>>());
        drop(log);
        // The same provisional summaries from another boot.
        let mut other = boot;
        other[0] = if other[0] == b'0' { b'1' } else { b'0' };
        let mut rewritten = 0;
        for (_, seg) in list_segments(dir.path()).unwrap() {
            let idx = seal::path_for(&seg);
            let Ok(bytes) = std::fs::read(&idx) else {
                continue;
            };
            let s = seal::decode_in_boot(&bytes, Some(&boot)).unwrap();
            std::fs::write(&idx, seal::encode_provisional(&s, &other)).unwrap();
            rewritten += 1;
        }
        assert_eq!(rewritten, count - 1);
        let (log, report) = Log::open(dir.path(), 4096).unwrap();
        assert_eq!(report.scanned_segments, count, "{report:?}");
        assert_eq!(report.corrupt_records + report.truncated_bytes, 0);
        assert_eq!(read_all(&log, 0), (0..1000).collect::<Vec<_>>());
        drop(log);
        // That scan wrote durable summaries: the next start scans only the last again.
        let (_, report) = Log::open(dir.path(), 4096).unwrap();
        assert_eq!(report.scanned_segments, 1, "{report:?}");
    }
}
