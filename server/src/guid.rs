//! Message ids on the wire carry the node id (`--node-id`, 0..1023), as NSQ's do, so two
//! nsqd with different node ids never hand out the same id.
//!
//! The engine stores each message's id as 16 hex digits of the sequence number it was first
//! stored at (unique within its topic, kept when a record is relocated). The server puts the
//! node id into the top 10 bits of that 64-bit number on the way out and takes it out again
//! when FIN, REQ or TOUCH come back. The mapping is an XOR, so it is its own inverse and the
//! engine's on-disk format is unchanged; ids stay 16 lowercase hex characters.

const HEX: &[u8; 16] = b"0123456789abcdef";

fn node_bits(node_id: i64) -> u64 {
    ((node_id as u64) & 0x3ff) << 54
}

fn parse_hex(id: &[u8; 16]) -> Option<u64> {
    let mut v = 0u64;
    for &c in id {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        v = (v << 4) | u64::from(d);
    }
    Some(v)
}

fn xor_node(node_id: i64, id: &[u8; 16]) -> [u8; 16] {
    let bits = node_bits(node_id);
    match parse_hex(id) {
        Some(v) if bits != 0 => {
            let v = v ^ bits;
            let mut out = [0u8; 16];
            for (i, b) in out.iter_mut().enumerate() {
                *b = HEX[((v >> (60 - 4 * i)) & 0xf) as usize];
            }
            out
        }
        // Node 0, or an id that is not ours (a client's typo): pass it through unchanged;
        // it will simply not be found in flight.
        _ => *id,
    }
}

/// The id a client sees for the engine's `id`.
pub fn to_wire(node_id: i64, id: &[u8; 16]) -> [u8; 16] {
    xor_node(node_id, id)
}

/// The engine's id for an id a client sent back.
pub fn from_wire(node_id: i64, id: &[u8; 16]) -> [u8; 16] {
    xor_node(node_id, id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_id_in_top_bits_and_round_trip() {
        let id = *b"000000000000002a";
        let w = to_wire(617, &id);
        assert_eq!(&w, b"9a4000000000002a");
        assert_eq!(from_wire(617, &w), id);
        assert_eq!(to_wire(0, &id), id);
        assert_ne!(to_wire(1, &id), to_wire(2, &id));
        assert_eq!(to_wire(1023, b"ffffffffffffffff"), *b"003fffffffffffff");
        assert_eq!(from_wire(5, b"not-a-hex-id!!!!"), *b"not-a-hex-id!!!!");
    }
}
