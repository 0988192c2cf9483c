//! Summaries of sealed segments (`<first_seq>.idx` beside `<first_seq>.seg`), so a restart
//! does not read every record of every segment: recovery loads a sealed segment's record
//! count, sequence range, committed length and sparse index from its summary and scans
//! only the segment that was being written (and any sealed one without a valid summary,
//! writing the summary it lacked). `nsq_inspect verify` stays the full scan.
//!
//! A summary is written by the sync thread once the sealed segment's data is synced, as a
//! temporary file renamed into place. It is not fsynced itself: a summary lost or torn in a
//! crash fails its CRC and the segment is scanned instead. Layout (little endian):
//!
//! ```text
//! magic "NSQRSIDX" | version u32 (2) | first_seq u64 | end_seq u64 | records u64 |
//! len u64 | first_ts i64 | last_ts i64 | entries u32 | (seq u64, offset u64) * entries |
//! crc32 u32 (of all before it)
//! ```

use std::path::{Path, PathBuf};

use crate::layout::SEGMENT_SUFFIX;

const MAGIC: &[u8; 8] = b"NSQRSIDX";
/// Bytes before the index entries.
const HEAD: usize = 64;
const VERSION: u32 = 2;
pub(crate) const SUFFIX: &str = ".idx";

/// What recovery needs of a sealed segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Summary {
    pub first_seq: u64,
    pub end_seq: u64,
    pub records: u64,
    /// Committed length: bytes holding records.
    pub len: u64,
    /// Publish times (ns) of the first and the newest record.
    pub first_ts: i64,
    pub last_ts: i64,
    /// (sequence, offset) of every INDEX_EVERY-th record.
    pub index: Vec<(u64, u64)>,
}

/// The summary file of a segment file.
pub(crate) fn path_for(segment: &Path) -> PathBuf {
    let name = segment
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let stem = name.strip_suffix(SEGMENT_SUFFIX).unwrap_or(&name);
    segment.with_file_name(format!("{stem}{SUFFIX}"))
}

pub(crate) fn encode(s: &Summary) -> Vec<u8> {
    let mut b = Vec::with_capacity(HEAD + s.index.len() * 16 + 4);
    b.extend_from_slice(MAGIC);
    b.extend_from_slice(&VERSION.to_le_bytes());
    for v in [s.first_seq, s.end_seq, s.records, s.len] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    for v in [s.first_ts, s.last_ts] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.extend_from_slice(&(s.index.len() as u32).to_le_bytes());
    for &(seq, off) in &s.index {
        b.extend_from_slice(&seq.to_le_bytes());
        b.extend_from_slice(&off.to_le_bytes());
    }
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Decode a summary; `None` if it is damaged, of another version, or inconsistent.
pub(crate) fn decode(b: &[u8]) -> Option<Summary> {
    if b.len() < HEAD + 4 || &b[..8] != MAGIC || u32_at(b, 8)? != VERSION {
        return None;
    }
    let body = &b[..b.len() - 4];
    if crc32fast::hash(body) != u32_at(b, b.len() - 4)? {
        return None;
    }
    let n = u32_at(b, 60)? as usize;
    if body.len() != HEAD + n * 16 {
        return None;
    }
    let index = (0..n)
        .map(|i| Some((u64_at(b, HEAD + i * 16)?, u64_at(b, HEAD + 8 + i * 16)?)))
        .collect::<Option<Vec<_>>>()?;
    let s = Summary {
        first_seq: u64_at(b, 12)?,
        end_seq: u64_at(b, 20)?,
        records: u64_at(b, 28)?,
        len: u64_at(b, 36)?,
        first_ts: u64_at(b, 44)? as i64,
        last_ts: u64_at(b, 52)? as i64,
        index,
    };
    let sane = s.end_seq >= s.first_seq
        && (s.records == 0 || s.end_seq > s.first_seq)
        && s.index
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1)
        && s.index
            .iter()
            .all(|&(seq, off)| seq >= s.first_seq && seq < s.end_seq && off < s.len);
    sane.then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage_is_detected() {
        let s = Summary {
            first_seq: 100,
            end_seq: 300,
            records: 200,
            len: 12_000,
            first_ts: 5,
            last_ts: 9,
            index: vec![(100, 0), (164, 3840), (228, 7680), (292, 11_520)],
        };
        let b = encode(&s);
        assert_eq!(decode(&b), Some(s));
        for i in 0..b.len() {
            let mut d = b.clone();
            d[i] ^= 0x10;
            assert_eq!(decode(&d), None, "flip at {i}");
        }
        assert_eq!(decode(&b[..b.len() - 1]), None);
        assert_eq!(
            path_for(Path::new("/x/00000000000000000100.seg")),
            PathBuf::from("/x/00000000000000000100.idx")
        );
    }
}
