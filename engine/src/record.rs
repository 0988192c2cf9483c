//! Records in a segment file (see docs/FORMAT.md), little endian. Two versions exist.
//!
//! **v2** (every segment written now) starts with a 16-byte segment header, `ff ff ff ff |
//! "nsqrslog" | version u32 = 2`, then records:
//!
//! ```text
//! len u32 | crc32 u32 | seq u64 | timestamp_ns i64 | flags u8 |
//! [deliver_at_ms u64] [target u32] [attempts u16] [id u64 | id [16]] | body
//! ```
//!
//! A bracketed field is there only when its flag is set; when it is absent it has its usual
//! value: deliver_at 0, target 0 (every channel), attempts 0, id `message_id(seq)`. A
//! plain message costs 25 bytes of header.
//!
//! **v1** segments (written before v2; read, never written) have no segment header and
//! records of a fixed layout:
//!
//! ```text
//! len u32 | crc32 u32 | seq u64 | timestamp_ns i64 | deliver_at_ms u64 | target u32 |
//! attempts u16 | id [16] | body
//! ```
//!
//! In both, `len` counts every byte after itself; the CRC (crc32fast, IEEE) covers
//! everything after the CRC field. A `len` of zero marks the end of written data. A v1
//! segment can never start with `ff ff ff ff` (that `len` is larger than any segment), which
//! is how a reader tells the versions apart.

pub const LEN_BYTES: usize = 4;
/// v1: bytes after `len` and before the body: crc 4 + seq 8 + ts 8 + deliver 8 + target 4 +
/// attempts 2 + id 16.
pub const FIXED_AFTER_LEN: usize = 50;
/// v1 record header.
pub const HEADER_LEN: usize = LEN_BYTES + FIXED_AFTER_LEN;
/// v2: bytes after `len` that every record has: crc 4 + seq 8 + ts 8 + flags 1.
pub const V2_FIXED_AFTER_LEN: usize = 21;
/// v2 record header without optional fields.
pub const V2_MIN_HEADER_LEN: usize = LEN_BYTES + V2_FIXED_AFTER_LEN;
/// The longest record header of either version (v2 with every optional field).
pub const MAX_HEADER_LEN: usize = V2_MIN_HEADER_LEN + 8 + 4 + 2 + 16;

/// v2 segment header: a marker no v1 `len` can be, a magic, the version.
pub const SEGMENT_HEADER_LEN: usize = 16;
const SEGMENT_MARK: [u8; 4] = [0xff; 4];
const SEGMENT_MAGIC: &[u8; 8] = b"nsqrslog";
const SEGMENT_VERSION: u32 = 2;

/// v2 flags: which optional fields follow.
pub const F_DELIVER_AT: u8 = 0x01;
pub const F_TARGET: u8 = 0x02;
pub const F_ATTEMPTS: u8 = 0x04;
/// The id is `message_id(n)` for an `n` other than the sequence (a relocated copy): `n`
/// follows as a u64.
pub const F_ID_NUM: u8 = 0x08;
/// The id is not of the `message_id` form: its 16 bytes follow.
pub const F_ID_RAW: u8 = 0x10;
const KNOWN_FLAGS: u8 = F_DELIVER_AT | F_TARGET | F_ATTEMPTS | F_ID_NUM | F_ID_RAW;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    pub seq: u64,
    pub timestamp_ns: i64,
    pub deliver_at_ms: u64,
    pub target: u32,
    pub attempts: u16,
    pub id: [u8; 16],
}

/// A segment's record format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    V1,
    V2,
}

impl Format {
    /// Offset of the first record.
    pub fn data_start(self) -> u64 {
        match self {
            Format::V1 => 0,
            Format::V2 => SEGMENT_HEADER_LEN as u64,
        }
    }

    /// The shortest record (empty body).
    pub fn min_record_len(self) -> usize {
        match self {
            Format::V1 => HEADER_LEN,
            Format::V2 => V2_MIN_HEADER_LEN,
        }
    }
}

/// The header every new segment starts with.
pub fn segment_header() -> [u8; SEGMENT_HEADER_LEN] {
    let mut h = [0u8; SEGMENT_HEADER_LEN];
    h[..4].copy_from_slice(&SEGMENT_MARK);
    h[4..12].copy_from_slice(SEGMENT_MAGIC);
    h[12..16].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
    h
}

/// A segment's format from its first bytes (up to [`SEGMENT_HEADER_LEN`]; fewer when the
/// file is shorter). A segment that starts with the marker, or the magic, is v2 (a damaged
/// header still has one of them; no v1 record can start with the marker); one that names
/// another version with an intact magic is refused. Anything else (including an empty
/// file) is v1.
pub fn detect_format(first: &[u8]) -> Result<Format, String> {
    let n = first.len().min(SEGMENT_HEADER_LEN);
    let first = &first[..n];
    let marked = n > 0 && first.iter().take(4).all(|&b| b == 0xff);
    let magic = n >= 12 && &first[4..12] == SEGMENT_MAGIC;
    if !marked && !magic {
        return Ok(Format::V1);
    }
    if n == SEGMENT_HEADER_LEN && magic {
        let v = u32_at(first, 12);
        if v != SEGMENT_VERSION {
            return Err(format!(
                "segment format version {v} is not supported (this build reads 1 and 2)"
            ));
        }
    }
    Ok(Format::V2)
}

/// A v2 id field: its flag and length.
fn id_field(h: &RecordHeader) -> (u8, usize) {
    match parse_message_id(&h.id) {
        Some(n) if n == h.seq => (0, 0),
        Some(_) => (F_ID_NUM, 8),
        None => (F_ID_RAW, 16),
    }
}

/// The v2 flags of a header and the bytes its optional fields take.
fn flags_of(h: &RecordHeader) -> (u8, usize) {
    let (mut flags, mut extra) = id_field(h);
    if h.deliver_at_ms != 0 {
        flags |= F_DELIVER_AT;
        extra += 8;
    }
    if h.target != 0 {
        flags |= F_TARGET;
        extra += 4;
    }
    if h.attempts != 0 {
        flags |= F_ATTEMPTS;
        extra += 2;
    }
    (flags, extra)
}

/// Bytes of optional fields the flags announce.
fn extra_len(flags: u8) -> usize {
    let mut n = 0;
    if flags & F_DELIVER_AT != 0 {
        n += 8;
    }
    if flags & F_TARGET != 0 {
        n += 4;
    }
    if flags & F_ATTEMPTS != 0 {
        n += 2;
    }
    if flags & F_ID_NUM != 0 {
        n += 8;
    }
    if flags & F_ID_RAW != 0 {
        n += 16;
    }
    n
}

/// Bytes a (v2) record of this header and body takes.
pub fn encoded_len(h: &RecordHeader, body_len: usize) -> usize {
    V2_MIN_HEADER_LEN + flags_of(h).1 + body_len
}

/// Write a v2 record into `out` (which must be exactly `encoded_len(h, body.len())` long).
pub fn encode(out: &mut [u8], h: &RecordHeader, body: &[u8]) {
    let header_len = out.len() - body.len();
    out[header_len..].copy_from_slice(body);
    encode_header(&mut out[..header_len], h, body, None);
}

/// The CRC32 of a body alone, for [`encode_header`]: computed where the body is still in
/// the CPU's cache (at publish), it spares reading a cold body once more at spill.
pub fn body_crc(body: &[u8]) -> u32 {
    crc32fast::hash(body)
}

/// Write a v2 record's header into `out` (exactly `encoded_len(h, 0)` long); `body` follows
/// it on disk, written from where it is (no copy into a buffer). The checksum covers the
/// header after it and the body, as [`encode`]'s does; `body_crc`, if given, is
/// [`body_crc`] of `body` and the body is not read.
pub fn encode_header(out: &mut [u8], h: &RecordHeader, body: &[u8], body_crc: Option<u32>) {
    let (flags, extra) = flags_of(h);
    let len = (V2_FIXED_AFTER_LEN + extra + body.len()) as u32;
    out[0..4].copy_from_slice(&len.to_le_bytes());
    out[8..16].copy_from_slice(&h.seq.to_le_bytes());
    out[16..24].copy_from_slice(&h.timestamp_ns.to_le_bytes());
    out[24] = flags;
    let mut at = V2_MIN_HEADER_LEN;
    let mut put = |bytes: &[u8]| {
        out[at..at + bytes.len()].copy_from_slice(bytes);
        at += bytes.len();
    };
    if flags & F_DELIVER_AT != 0 {
        put(&h.deliver_at_ms.to_le_bytes());
    }
    if flags & F_TARGET != 0 {
        put(&h.target.to_le_bytes());
    }
    if flags & F_ATTEMPTS != 0 {
        put(&h.attempts.to_le_bytes());
    }
    if flags & F_ID_NUM != 0 {
        let n = parse_message_id(&h.id).unwrap_or(0);
        put(&n.to_le_bytes());
    }
    if flags & F_ID_RAW != 0 {
        put(&h.id);
    }
    let mut crc = crc32fast::Hasher::new();
    crc.update(&out[8..at]);
    match body_crc {
        Some(c) => crc.combine(&crc32fast::Hasher::new_with_initial_len(
            c,
            body.len() as u64,
        )),
        None => crc.update(body),
    }
    out[4..8].copy_from_slice(&crc.finalize().to_le_bytes());
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
    /// CRC right but the (v2) flags are impossible or announce more than the record
    /// holds: not a record this format can write; `total` bytes long.
    BadFlags { total: usize },
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Decode the record of format `format` starting at `buf[0]`. `max_total` bounds a
/// believable length.
pub fn decode(format: Format, buf: &[u8], max_total: usize) -> Decoded {
    let min = format.min_record_len();
    if buf.len() < LEN_BYTES {
        return if buf.iter().all(|&b| b == 0) {
            Decoded::End
        } else {
            Decoded::Incomplete { total: min }
        };
    }
    let len = u32_at(buf, 0) as usize;
    if len == 0 {
        return Decoded::End;
    }
    if LEN_BYTES + len < min || LEN_BYTES + len > max_total {
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
    match format {
        Format::V1 => decode_v1_fields(buf, total),
        Format::V2 => decode_v2_fields(buf, total),
    }
}

fn decode_v1_fields(buf: &[u8], total: usize) -> Decoded {
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

/// The fields of a v2 record whose length and CRC checked out.
fn decode_v2_fields(buf: &[u8], total: usize) -> Decoded {
    let flags = buf[24];
    let both_ids = F_ID_NUM | F_ID_RAW;
    if flags & !KNOWN_FLAGS != 0 || flags & both_ids == both_ids {
        return Decoded::BadFlags { total };
    }
    let body_start = V2_MIN_HEADER_LEN + extra_len(flags);
    if body_start > total {
        return Decoded::BadFlags { total };
    }
    let seq = u64_at(buf, 8);
    let mut h = RecordHeader {
        seq,
        timestamp_ns: u64_at(buf, 16) as i64,
        deliver_at_ms: 0,
        target: 0,
        attempts: 0,
        id: message_id(seq),
    };
    let mut at = V2_MIN_HEADER_LEN;
    if flags & F_DELIVER_AT != 0 {
        h.deliver_at_ms = u64_at(buf, at);
        at += 8;
    }
    if flags & F_TARGET != 0 {
        h.target = u32_at(buf, at);
        at += 4;
    }
    if flags & F_ATTEMPTS != 0 {
        h.attempts = u16::from_le_bytes([buf[at], buf[at + 1]]);
        at += 2;
    }
    if flags & F_ID_NUM != 0 {
        h.id = message_id(u64_at(buf, at));
        at += 8;
    }
    if flags & F_ID_RAW != 0 {
        h.id.copy_from_slice(&buf[at..at + 16]);
    }
    Decoded::Record {
        header: h,
        body_start,
        total,
    }
}

/// The 16 ASCII hex digits NSQ clients expect as a message id.
pub fn message_id(seq: u64) -> [u8; 16] {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&hex8((seq >> 32) as u32));
    id[8..].copy_from_slice(&hex8(seq as u32));
    id
}

/// The number `message_id` made `id` from, if it is of that form (16 lowercase hex digits).
pub fn parse_message_id(id: &[u8; 16]) -> Option<u64> {
    let v = hex16_lenient(id);
    (message_id(v) == *id).then_some(v)
}

/// The number 16 hex digits spell, lower or upper case; other bytes count as some digit
/// (callers that must refuse them compare against `message_id` of the result).
pub fn hex16_lenient(id: &[u8; 16]) -> u64 {
    let mut hi = [0u8; 8];
    let mut lo = [0u8; 8];
    hi.copy_from_slice(&id[..8]);
    lo.copy_from_slice(&id[8..]);
    (u64::from(unhex8(u64::from_le_bytes(hi))) << 32) | u64::from(unhex8(u64::from_le_bytes(lo)))
}

const ONES: u64 = 0x0101_0101_0101_0101;

/// Eight hex digits (as loaded little-endian from text: the first digit in the low byte)
/// to their value, all lanes at once.
fn unhex8(w: u64) -> u32 {
    // '0'..='9' -> 0..=9, 'a'..='f' / 'A'..='F' -> 10..=15 (bit 6 set for letters).
    let n = ((w & (ONES * 0x0f)) + 9 * ((w >> 6) & ONES)) & (ONES * 0x0f);
    // The first digit is the most significant: put it in the high byte, then pack.
    let n = n.swap_bytes();
    let n = (n | (n >> 4)) & 0x00ff_00ff_00ff_00ff;
    let n = (n | (n >> 8)) & 0x0000_ffff_0000_ffff;
    ((n | (n >> 16)) & 0xffff_ffff) as u32
}

/// `v` as eight lowercase hex digits, most significant first.
fn hex8(v: u32) -> [u8; 8] {
    let x = u64::from(v);
    // One nibble per byte lane, the least significant in the low byte...
    let x = (x & 0xffff) | ((x & 0xffff_0000) << 16);
    let x = (x & 0x0000_00ff_0000_00ff) | ((x & 0x0000_ff00_0000_ff00) << 8);
    let x = (x & 0x000f_000f_000f_000f) | ((x & 0x00f0_00f0_00f0_00f0) << 4);
    // ...then the most significant first, as text reads.
    let x = x.swap_bytes();
    let letters = ((x + ONES * 6) >> 4) & ONES; // 1 in each lane >= 10
    (x + ONES * b'0' as u64 + letters * (b'a' - b'0' - 10) as u64).to_le_bytes()
}

/// The v1 encoder, kept for tests that read segments written before v2.
#[cfg(test)]
pub(crate) mod v1 {
    use super::*;

    pub(crate) fn encoded_len(body_len: usize) -> usize {
        HEADER_LEN + body_len
    }

    pub(crate) fn encode(out: &mut [u8], h: &RecordHeader, body: &[u8]) {
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

    /// A whole v1 record.
    pub(crate) fn record(h: &RecordHeader, body: &[u8]) -> Vec<u8> {
        let mut v = vec![0u8; encoded_len(body.len())];
        encode(&mut v, h, body);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_match_the_digit_by_digit_form() {
        fn slow(seq: u64) -> [u8; 16] {
            let mut id = [0u8; 16];
            for (i, b) in id.iter_mut().enumerate() {
                *b = b"0123456789abcdef"[((seq >> (60 - 4 * i)) & 0xf) as usize];
            }
            id
        }
        let mut x = 0x243f_6a88_85a3_08d3u64;
        let mut vals = vec![
            0,
            1,
            9,
            10,
            15,
            16,
            u64::MAX,
            u64::MAX - 1,
            1 << 63,
            0xdead_beef,
        ];
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            vals.push(x);
            vals.push(x >> (x % 64));
        }
        for v in vals {
            let id = message_id(v);
            assert_eq!(id, slow(v), "{v:x}");
            assert_eq!(parse_message_id(&id), Some(v));
            assert_eq!(hex16_lenient(&id), v);
            let upper: [u8; 16] = id.map(|b| b.to_ascii_uppercase());
            assert_eq!(hex16_lenient(&upper), v);
            if upper != id {
                assert_eq!(parse_message_id(&upper), None, "upper case is not our form");
            }
        }
        let mut high_bit = *b"0000000000000000";
        high_bit[3] = 0xff;
        for bad in [
            *b"000000000000000g",
            *b"00000000 0000000",
            *b"-000000000000000",
            high_bit,
        ] {
            assert_eq!(parse_message_id(&bad), None, "{bad:?}");
        }
    }

    fn hdr(seq: u64) -> RecordHeader {
        RecordHeader {
            seq,
            timestamp_ns: -5,
            deliver_at_ms: 7,
            target: 3,
            attempts: 2,
            id: message_id(seq),
        }
    }

    fn enc(h: &RecordHeader, body: &[u8]) -> Vec<u8> {
        let mut v = vec![0u8; encoded_len(h, body.len())];
        encode(&mut v, h, body);
        v
    }

    fn rec(seq: u64, body: &[u8]) -> Vec<u8> {
        enc(&hdr(seq), body)
    }

    /// A header exercising the optional fields `mask` selects (bit 0 deliver_at, 1 target,
    /// 2 attempts; `id` 0 = implied, 1 = another sequence's, 2 = raw bytes).
    fn combo(mask: u8, id: u8) -> RecordHeader {
        RecordHeader {
            seq: 0x1234_5678_9abc,
            timestamp_ns: i64::MIN + 3,
            deliver_at_ms: if mask & 1 != 0 { u64::MAX - 1 } else { 0 },
            target: if mask & 2 != 0 { 0xdead_beef } else { 0 },
            attempts: if mask & 4 != 0 { 65535 } else { 0 },
            id: match id {
                0 => message_id(0x1234_5678_9abc),
                1 => message_id(7),
                _ => *b"NOT-HEX-ID-16byt",
            },
        }
    }

    #[test]
    fn round_trip() {
        let v = rec(42, b"hello");
        match decode(Format::V2, &v, 1 << 20) {
            Decoded::Record {
                header,
                body_start,
                total,
            } => {
                assert_eq!(header, hdr(42));
                assert_eq!(&header.id, b"000000000000002a");
                assert_eq!(&v[body_start..total], b"hello");
                assert_eq!(total, v.len());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_flag_combination_round_trips_at_its_size() {
        for mask in 0..8u8 {
            for id in 0..3u8 {
                let h = combo(mask, id);
                for body in [&b""[..], b"x", b"a longer body of bytes"] {
                    let v = enc(&h, body);
                    let extra = [8usize, 4, 2]
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| mask & (1 << i) != 0)
                        .map(|(_, n)| n)
                        .sum::<usize>()
                        + [0, 8, 16][id as usize];
                    assert_eq!(v.len(), V2_MIN_HEADER_LEN + extra + body.len());
                    match decode(Format::V2, &v, 1 << 20) {
                        Decoded::Record {
                            header,
                            body_start,
                            total,
                        } => {
                            assert_eq!(header, h, "mask {mask} id {id}");
                            assert_eq!(&v[body_start..total], body);
                            assert_eq!(total, v.len());
                        }
                        other => panic!("mask {mask} id {id}: {other:?}"),
                    }
                }
            }
        }
    }

    #[test]
    fn a_plain_message_has_a_25_byte_header() {
        let h = RecordHeader {
            seq: 9,
            timestamp_ns: 1,
            deliver_at_ms: 0,
            target: 0,
            attempts: 0,
            id: message_id(9),
        };
        assert_eq!(encoded_len(&h, 200), 225);
        assert_eq!(enc(&h, &[1u8; 200]).len(), 225);
    }

    #[test]
    fn v1_records_still_decode() {
        let h = hdr(42);
        let v = v1::record(&h, b"hello");
        assert_eq!(v.len(), HEADER_LEN + 5);
        match decode(Format::V1, &v, 1 << 20) {
            Decoded::Record {
                header,
                body_start,
                total,
            } => {
                assert_eq!(header, h);
                assert_eq!(&v[body_start..total], b"hello");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        for (mask, id) in [(0, 0), (7, 1), (5, 2)] {
            let v = enc(&combo(mask, id), b"some body bytes");
            for i in 0..v.len() {
                let mut bad = v.clone();
                bad[i] ^= 0x5a;
                assert!(
                    !matches!(decode(Format::V2, &bad, 1 << 20), Decoded::Record { .. }),
                    "flip at {i} undetected"
                );
            }
        }
        let v = v1::record(&hdr(1), b"some body bytes");
        for i in 0..v.len() {
            let mut bad = v.clone();
            bad[i] ^= 0x5a;
            assert!(
                !matches!(decode(Format::V1, &bad, 1 << 20), Decoded::Record { .. }),
                "v1 flip at {i} undetected"
            );
        }
    }

    /// Re-sign a record after changing its bytes, as a writer with a bug would.
    fn resign(v: &mut [u8]) {
        let crc = crc32fast::hash(&v[8..]);
        v[4..8].copy_from_slice(&crc.to_le_bytes());
    }

    #[test]
    fn impossible_flags_are_rejected_even_with_a_good_crc() {
        let base = enc(&combo(0, 0), b"0123456789012345678901234567890123456789");
        let total = base.len();
        for flags in [0x20u8, 0x40, 0x80, F_ID_NUM | F_ID_RAW, 0xff] {
            let mut v = base.clone();
            v[24] = flags;
            resign(&mut v);
            assert_eq!(
                decode(Format::V2, &v, 1 << 20),
                Decoded::BadFlags { total },
                "flags {flags:#x}"
            );
        }
        // Flags announcing more optional bytes than the record holds.
        let mut v = enc(&combo(0, 0), b"abc");
        v[24] = F_ID_RAW;
        resign(&mut v);
        assert_eq!(
            decode(Format::V2, &v, 1 << 20),
            Decoded::BadFlags { total: v.len() }
        );
    }

    #[test]
    fn truncated_and_empty() {
        for format in [Format::V1, Format::V2] {
            let v = match format {
                Format::V1 => v1::record(&hdr(1), b"abc"),
                Format::V2 => rec(1, b"abc"),
            };
            for cut in 1..v.len() {
                assert!(
                    matches!(
                        decode(format, &v[..cut], 1 << 20),
                        Decoded::Incomplete { .. }
                    ),
                    "{format:?} cut {cut}"
                );
            }
            assert_eq!(decode(format, &[0u8; 64], 1 << 20), Decoded::End);
            assert_eq!(decode(format, &[0xffu8; 64], 1 << 20), Decoded::BadLength);
            // A length shorter than the smallest record, or past the segment's end.
            let mut short = v.clone();
            short[..4].copy_from_slice(&((format.min_record_len() - 5) as u32).to_le_bytes());
            assert_eq!(decode(format, &short, 1 << 20), Decoded::BadLength);
            assert_eq!(decode(format, &v, v.len() - 1), Decoded::BadLength);
        }
    }

    #[test]
    fn segment_header_tells_the_versions_apart() {
        let h = segment_header();
        assert_eq!(detect_format(&h), Ok(Format::V2));
        // A v1 segment starts with a record (or nothing).
        assert_eq!(
            detect_format(&v1::record(&hdr(0), b"x")[..16]),
            Ok(Format::V1)
        );
        assert_eq!(detect_format(&[]), Ok(Format::V1));
        assert_eq!(detect_format(&[0u8; 16]), Ok(Format::V1));
        // A torn or damaged header is still v2.
        assert_eq!(detect_format(&h[..2]), Ok(Format::V2));
        let mut damaged = h;
        damaged[0] = 0;
        assert_eq!(detect_format(&damaged), Ok(Format::V2));
        let mut damaged = h;
        damaged[6] ^= 1;
        damaged[13] = 9;
        assert_eq!(detect_format(&damaged), Ok(Format::V2));
        // A version this build does not know, with an intact magic: refused.
        let mut newer = h;
        newer[12] = 3;
        assert!(detect_format(&newer).is_err());
        assert_eq!(Format::V2.data_start(), SEGMENT_HEADER_LEN as u64);
    }

    #[test]
    fn ids_are_hex() {
        assert_eq!(&message_id(0), b"0000000000000000");
        assert_eq!(&message_id(u64::MAX), b"ffffffffffffffff");
        for n in [0, 1, 42, u64::MAX, 0x0123_4567_89ab_cdef] {
            assert_eq!(parse_message_id(&message_id(n)), Some(n));
        }
        assert_eq!(parse_message_id(b"000000000000002A"), None);
        assert_eq!(parse_message_id(b"00000000000000 g"), None);
    }
}
