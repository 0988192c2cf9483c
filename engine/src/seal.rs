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
//!
//! Before that, when the segment is sealed (its records are written but not yet synced), a
//! *provisional* summary takes the same path: version 3, the same fields, then the kernel's
//! boot id (`/proc/sys/kernel/random/boot_id`, 36 bytes) before the CRC. A process crash
//! (kill -9) loses nothing the kernel already has, so in the same boot the provisional
//! summary is as good as the durable one and recovery need not rescan the segment; after a
//! reboot (power loss, kernel crash) the boot id differs, the summary is ignored and the
//! segment is scanned. The durable summary replaces it once the data is synced.

use std::path::{Path, PathBuf};

use crate::layout::SEGMENT_SUFFIX;

const MAGIC: &[u8; 8] = b"NSQRSIDX";
/// Bytes before the index entries.
const HEAD: usize = 64;
const VERSION: u32 = 2;
/// Provisional summaries: version 2's fields, then the boot id they are valid in.
const VERSION_PROVISIONAL: u32 = 3;
pub(crate) const BOOT_ID_LEN: usize = 36;
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

/// This boot's id (`None` where the kernel does not say: then no provisional summary is
/// written or trusted).
pub(crate) fn boot_id() -> Option<[u8; BOOT_ID_LEN]> {
    static BOOT: std::sync::OnceLock<Option<[u8; BOOT_ID_LEN]>> = std::sync::OnceLock::new();
    *BOOT.get_or_init(|| {
        let text = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
        text.trim().as_bytes().try_into().ok()
    })
}

pub(crate) fn encode(s: &Summary) -> Vec<u8> {
    encode_with(s, None)
}

/// A provisional summary, valid only in the boot `boot` (see the module docs).
pub(crate) fn encode_provisional(s: &Summary, boot: &[u8; BOOT_ID_LEN]) -> Vec<u8> {
    encode_with(s, Some(boot))
}

fn encode_with(s: &Summary, boot: Option<&[u8; BOOT_ID_LEN]>) -> Vec<u8> {
    let mut b = Vec::with_capacity(HEAD + s.index.len() * 16 + BOOT_ID_LEN + 4);
    b.extend_from_slice(MAGIC);
    let version = if boot.is_some() {
        VERSION_PROVISIONAL
    } else {
        VERSION
    };
    b.extend_from_slice(&version.to_le_bytes());
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
    if let Some(boot) = boot {
        b.extend_from_slice(boot);
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

/// Decode a summary; `None` if it is damaged, of another version, inconsistent, or
/// provisional from another boot.
pub(crate) fn decode(b: &[u8]) -> Option<Summary> {
    decode_in_boot(b, boot_id().as_ref())
}

/// [`decode`], with the current boot id given (`None`: unknown, no provisional summary
/// is valid).
pub(crate) fn decode_in_boot(b: &[u8], boot: Option<&[u8; BOOT_ID_LEN]>) -> Option<Summary> {
    if b.len() < HEAD + 4 || &b[..8] != MAGIC {
        return None;
    }
    let extra = match u32_at(b, 8)? {
        VERSION => 0,
        VERSION_PROVISIONAL => BOOT_ID_LEN,
        _ => return None,
    };
    let body = &b[..b.len() - 4];
    if crc32fast::hash(body) != u32_at(b, b.len() - 4)? {
        return None;
    }
    let n = u32_at(b, 60)? as usize;
    if body.len() != HEAD + n * 16 + extra {
        return None;
    }
    if extra > 0 && boot.is_none_or(|boot| body[body.len() - BOOT_ID_LEN..] != boot[..]) {
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
        assert_eq!(decode(&b), Some(s.clone()));
        for i in 0..b.len() {
            let mut d = b.clone();
            d[i] ^= 0x10;
            assert_eq!(decode(&d), None, "flip at {i}");
        }
        assert_eq!(decode(&b[..b.len() - 1]), None);
        // Provisional: valid in its own boot only, damage detected the same way.
        let boot = *b"0b2d5a1e-6c1f-4c55-9d1e-1f2a3b4c5d6e";
        let other = *b"99999999-6c1f-4c55-9d1e-1f2a3b4c5d6e";
        let p = encode_provisional(&s, &boot);
        assert_eq!(decode_in_boot(&p, Some(&boot)), Some(s.clone()));
        assert_eq!(decode_in_boot(&p, Some(&other)), None);
        assert_eq!(decode_in_boot(&p, None), None);
        assert_eq!(decode_in_boot(&b, None), Some(s.clone()));
        for i in 0..p.len() {
            let mut d = p.clone();
            d[i] ^= 0x10;
            assert_eq!(decode_in_boot(&d, Some(&boot)), None, "flip at {i}");
        }
        assert_eq!(
            path_for(Path::new("/x/00000000000000000100.seg")),
            PathBuf::from("/x/00000000000000000100.idx")
        );
    }
}
