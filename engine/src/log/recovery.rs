//! Recovery at open: each segment is loaded from its summary (sealed, clean) or scanned
//! record by record; damaged places are skipped and a torn tail is cut.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use super::scan::read_format;
use super::{ScanItem, SegmentInfo, SegmentScanner};
use crate::error::{IoContext, Result};
use crate::fs::Io;
use crate::seal;

/// What recovery found and did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    pub segments: usize,
    pub records: u64,
    /// Corrupt places skipped (a bad CRC, or a damaged stretch recovery resynchronised
    /// after); every valid record after them is kept.
    pub corrupt_records: u64,
    /// Bytes in those damaged places.
    pub skipped_bytes: u64,
    /// Bytes cut from the end of the last segment (torn or corrupt tail).
    pub truncated_bytes: u64,
    /// Segments recovery read record by record (the one being written, and sealed ones
    /// without a valid summary); the others were loaded from their summaries.
    pub scanned_segments: usize,
    /// Bytes recovery read record by record.
    pub scanned_bytes: u64,
}

/// Scan one segment at open: index its records, skip damaged places (resynchronising after
/// them), and cut a torn tail of the last segment.
pub(super) fn recover_segment(
    io: &Io,
    first: u64,
    path: &Path,
    next_first: u64,
    is_last: bool,
    last_seq: &mut Option<u64>,
    report: &mut RecoveryReport,
) -> Result<SegmentInfo> {
    let file = io.open_rw(path, false).at(path)?;
    let file_len = file.metadata().at(path)?.len();
    let format = read_format(io, &file, path, file_len)?;
    let mut info = SegmentInfo::empty(first, path, Arc::new(file), format);
    let summary_path = seal::path_for(path);
    if !is_last {
        if let Some(s) = valid_summary(&summary_path, first, file_len, next_first, *last_seq) {
            info.len = s.len;
            info.end_seq = s.end_seq;
            info.records = s.records;
            info.first_ts = s.first_ts;
            info.last_ts = s.last_ts;
            info.index = s.index;
            if info.records > 0 {
                *last_seq = Some(info.end_seq - 1);
            }
            return Ok(info);
        }
    }
    report.scanned_segments += 1;
    report.scanned_bytes += file_len;
    let corrupt_before = report.corrupt_records;
    let file = info.file.clone();
    let mut sc = SegmentScanner::new(&file, path, file_len, 0)
        .with_io(io)
        .with_format(format)
        .headers_only();
    // Where the damage after the last valid record started, if any.
    let mut damage: Option<(u64, &'static str)> = None;
    loop {
        match sc.next_item()? {
            ScanItem::Record { offset, record } => {
                let seq = record.header.seq;
                if last_seq.is_some_and(|l| seq <= l) || seq < first || seq >= next_first {
                    // A stale record from before a cut, or garbage with a valid CRC: treat
                    // as damage and look for the next record that fits.
                    let lo = last_seq.map_or(first, |l| l + 1).max(first);
                    damage.get_or_insert((offset, "sequence out of order"));
                    if sc.resync(offset, lo..next_first)?.is_none() {
                        break;
                    }
                    continue;
                }
                if let Some((at, reason)) = damage.take() {
                    tracing::warn!(segment = %path.display(), offset = at, skipped = offset - at, reason, "skipped a damaged stretch");
                    report.corrupt_records += 1;
                    report.skipped_bytes += offset - at;
                }
                *last_seq = Some(seq);
                let total = sc.offset - offset;
                info.note_record(seq, record.header.timestamp_ns, offset, total);
            }
            ScanItem::Corrupt { offset, reason, .. } => {
                // Even a record with a plausible length and a bad CRC may have a damaged
                // length: resynchronise byte by byte instead of trusting it.
                let lo = last_seq.map_or(first, |l| l + 1).max(first);
                damage.get_or_insert((offset, reason));
                if sc.resync(offset, lo..next_first)?.is_none() {
                    break;
                }
            }
            ScanItem::End { .. } => break,
        }
    }
    if let Some((at, reason)) = damage {
        // Nothing valid after the damage: a torn or corrupt tail. In the last segment the
        // writer cuts the file at `info.len` when it opens it; in a sealed one reads stop
        // at `info.len`.
        let bytes = last_nonzero(io, &info.file, path, at, file_len)? - at;
        tracing::warn!(segment = %path.display(), offset = at, bytes, reason, "corrupt or torn tail: nothing valid after it");
        if is_last {
            report.truncated_bytes += bytes;
        } else {
            report.corrupt_records += 1;
            report.skipped_bytes += bytes;
        }
    }
    if !is_last && report.corrupt_records == corrupt_before {
        // A clean sealed segment without a summary (written by an older version, or its
        // summary was lost): write it now so the next start need not scan it.
        write_summary(io, &info, &summary_path);
    }
    Ok(info)
}

/// The summary of a sealed segment beside it, if it is readable and consistent with the
/// segment (its first sequence, its file length, the next segment and the records before).
fn valid_summary(
    summary_path: &Path,
    first: u64,
    file_len: u64,
    next_first: u64,
    last_seq: Option<u64>,
) -> Option<seal::Summary> {
    std::fs::read(summary_path)
        .ok()
        .and_then(|b| seal::decode(&b))
        .filter(|s| {
            s.first_seq == first
                && s.len <= file_len
                && s.end_seq <= next_first
                && (s.records == 0 || last_seq.is_none_or(|l| s.first_seq > l))
        })
}

/// Write a sealed segment's summary (best effort: without it the next start scans).
fn write_summary(io: &Io, info: &SegmentInfo, summary_path: &Path) {
    let bytes = seal::encode(&info.summary());
    let tmp = summary_path.with_extension("idx.tmp");
    if io
        .write_file(&tmp, &bytes)
        .and_then(|_| io.rename(&tmp, summary_path))
        .is_err()
    {
        let _ = std::fs::remove_file(&tmp);
    }
}

/// One past the last non-zero byte in `[from, to)` of a file (`from` if all zero).
fn last_nonzero(io: &Io, file: &File, path: &Path, from: u64, to: u64) -> Result<u64> {
    let mut end = from;
    let mut buf = vec![0u8; 64 * 1024];
    let mut off = from;
    while off < to {
        let n = io.read_at(file, &mut buf, off).at(path)?;
        if n == 0 {
            break;
        }
        if let Some(p) = buf[..n].iter().rposition(|&b| b != 0) {
            end = off + p as u64 + 1;
        }
        off += n as u64;
    }
    Ok(end)
}
