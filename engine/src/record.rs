//! One record in a segment file (see docs/FORMAT.md), little endian:
//!
//! ```text
//! len u32 | crc32 u32 | seq u64 | timestamp_ns i64 | deliver_at_ms u64 | target u32 |
//! attempts u16 | id [16] | body
//! ```
//!
//! `len` counts every byte after itself; the CRC (crc32fast, IEEE) covers everything after
//! the CRC field. A `len` of zero marks the end of written data (segments are
//! preallocated with zeros).

pub const LEN_BYTES: usize = 4;
/// Bytes after `len` and before the body: crc 4 + seq 8 + ts 8 + deliver 8 + target 4 +
/// attempts 2 + id 16.
pub const FIXED_AFTER_LEN: usize = 50;
pub const HEADER_LEN: usize = LEN_BYTES + FIXED_AFTER_LEN;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    pub seq: u64,
    pub timestamp_ns: i64,
    pub deliver_at_ms: u64,
    pub target: u32,
    pub attempts: u16,
    pub id: [u8; 16],
}

pub fn encoded_len(body_len: usize) -> usize {
    HEADER_LEN + body_len
}

/// Write a record into `out` (which must be exactly `encoded_len(body.len())` long).
pub fn encode(out: &mut [u8], h: &RecordHeader, body: &[u8]) {
    let len = (FIXED_AFTER_LEN + body.len()) as u32;
    out[0..4].copy_from_slice(&len.to_le_bytes());
    out[8..16].copy_from_slice(&h.seq.to_le_bytes());
    out[16..24].copy_from_slice(&h.timestamp_ns.to_le_bytes());
    out[24..32].copy_from_slice(&h.deliver_at_ms.to_le_bytes());
    out[32..36].copy_from_slice(&h.target.to_le_bytes());
    out[36..38].copy_from_slice(&h.attempts.to_le_bytes());
    out[38..54].copy_from_slice(&h.id);
    out[54..].copy_from_slice(body);
    let crc = crc32fast::hash(&out[8..]);
    out[4..8].copy_from_slice(&crc.to_le_bytes());
}

#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A valid record: its header, where its body is, and its total length.
    Record {
        header: RecordHeader,
        body_start: usize,
        total: usize,
    },
    /// Zero length: no more records were written here.
    End,
    /// Not enough bytes in the buffer for the record its length announces.
    Incomplete { total: usize },
    /// Length is impossible: nothing after this point can be trusted.
    BadLength,
    /// Length plausible but CRC wrong: the record is corrupt and `total` bytes long.
    BadCrc { total: usize },
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Decode the record starting at `buf[0]`. `max_total` bounds a believable length.
pub fn decode(buf: &[u8], max_total: usize) -> Decoded {
    if buf.len() < LEN_BYTES {
        return if buf.iter().all(|&b| b == 0) {
            Decoded::End
        } else {
            Decoded::Incomplete { total: HEADER_LEN }
        };
    }
    let len = u32_at(buf, 0) as usize;
    if len == 0 {
        return Decoded::End;
    }
    if len < FIXED_AFTER_LEN || LEN_BYTES + len > max_total {
        return Decoded::BadLength;
    }
    let total = LEN_BYTES + len;
    if buf.len() < total {
        return Decoded::Incomplete { total };
    }
    let crc = u32_at(buf, 4);
    if crc32fast::hash(&buf[8..total]) != crc {
        return Decoded::BadCrc { total };
    }
    let mut id = [0u8; 16];
    id.copy_from_slice(&buf[38..54]);
    Decoded::Record {
        header: RecordHeader {
            seq: u64_at(buf, 8),
            timestamp_ns: u64_at(buf, 16) as i64,
            deliver_at_ms: u64_at(buf, 24),
            target: u32_at(buf, 32),
            attempts: u16::from_le_bytes([buf[36], buf[37]]),
            id,
        },
        body_start: HEADER_LEN,
        total,
    }
}

/// The 16 ASCII hex digits NSQ clients expect as a message id.
pub fn message_id(seq: u64) -> [u8; 16] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = [0u8; 16];
    for (i, b) in id.iter_mut().enumerate() {
        *b = HEX[((seq >> (60 - 4 * i)) & 0xf) as usize];
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(seq: u64, body: &[u8]) -> Vec<u8> {
        let h = RecordHeader {
            seq,
            timestamp_ns: -5,
            deliver_at_ms: 7,
            target: 3,
            attempts: 2,
            id: message_id(seq),
        };
        let mut v = vec![0u8; encoded_len(body.len())];
        encode(&mut v, &h, body);
        v
    }

    #[test]
    fn round_trip() {
        let v = rec(42, b"hello");
        match decode(&v, 1 << 20) {
            Decoded::Record {
                header,
                body_start,
                total,
            } => {
                assert_eq!(header.seq, 42);
                assert_eq!(header.timestamp_ns, -5);
                assert_eq!(header.deliver_at_ms, 7);
                assert_eq!(header.target, 3);
                assert_eq!(header.attempts, 2);
                assert_eq!(&header.id, b"000000000000002a");
                assert_eq!(&v[body_start..total], b"hello");
                assert_eq!(total, v.len());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let v = rec(1, b"some body bytes");
        for i in 0..v.len() {
            let mut bad = v.clone();
            bad[i] ^= 0x5a;
            assert!(
                !matches!(decode(&bad, 1 << 20), Decoded::Record { .. }),
                "flip at {i} undetected"
            );
        }
    }

    #[test]
    fn truncated_and_empty() {
        let v = rec(1, b"abc");
        for cut in 1..v.len() {
            assert!(
                matches!(decode(&v[..cut], 1 << 20), Decoded::Incomplete { .. }),
                "cut {cut}"
            );
        }
        assert_eq!(decode(&[0u8; 64], 1 << 20), Decoded::End);
        assert_eq!(decode(&[0xffu8; 64], 1 << 20), Decoded::BadLength);
    }

    #[test]
    fn ids_are_hex() {
        assert_eq!(&message_id(0), b"0000000000000000");
        assert_eq!(&message_id(u64::MAX), b"ffffffffffffffff");
    }
}
