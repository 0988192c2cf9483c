//! Message ids on the wire: unique per nsqd (across its topics) and across nsqd with
//! different `--node-id` (0..1023), as NSQ's are, while the engine's on-disk format stays
//! as it is.
//!
//! The engine stores each message's id as 16 hex digits of the sequence number it was first
//! stored at: unique within its topic, kept when a record is relocated. On the way out the
//! server XORs that 64-bit number with a per-topic key: the node id in the top 10 bits, and
//! a 54-bit hash of the topic name below. FIN, REQ and TOUCH ids are XORed with the same key
//! on the way back (XOR is its own inverse). Within a topic the mapping is a bijection, so
//! ids stay unique; ids of different nodes differ in the top bits; two topics of one node
//! would only collide if two sequence numbers differed by exactly the two topics' hash
//! difference, which for 54-bit hashes does not happen in practice. Ids stay 16 lowercase
//! hex characters and are stable across restarts.

const LOW_54: u64 = (1 << 54) - 1;

/// The part of the key that depends on the topic (computed once per topic).
pub fn topic_mask(topic: &str) -> u64 {
    let d = crate::md5::digest(topic.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_be_bytes(b) & LOW_54
}

/// The XOR key for one topic on this node.
pub fn wire_key(node_id: i64, topic_mask: u64) -> u64 {
    (((node_id as u64) & 0x3ff) << 54) | (topic_mask & LOW_54)
}

fn xor_key(key: u64, id: &[u8; 16]) -> [u8; 16] {
    match engine::record::parse_message_id(id) {
        Some(v) if key != 0 => engine::record::message_id(v ^ key),
        // An id that is not ours (a client's typo): pass it through unchanged; it will
        // simply not be found in flight.
        _ => *id,
    }
}

/// The id a client sees for the engine's `id`.
pub fn to_wire(key: u64, id: &[u8; 16]) -> [u8; 16] {
    xor_key(key, id)
}

/// The engine's id for an id a client sent back.
pub fn from_wire(key: u64, id: &[u8; 16]) -> [u8; 16] {
    xor_key(key, id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_node_bits_and_topics() {
        let id = *b"000000000000002a";
        let key = wire_key(617, topic_mask("orders"));
        let w = to_wire(key, &id);
        assert_eq!(from_wire(key, &w), id);
        let v = u64::from_str_radix(std::str::from_utf8(&w).unwrap(), 16).unwrap();
        assert_eq!(v >> 54, 617, "node id in the top 10 bits");
        assert_ne!(
            to_wire(wire_key(1, topic_mask("t")), &id),
            to_wire(wire_key(2, topic_mask("t")), &id)
        );
        assert_ne!(
            to_wire(wire_key(1, topic_mask("a")), &id),
            to_wire(wire_key(1, topic_mask("b")), &id)
        );
        assert_eq!(to_wire(0, &id), id);
        assert_eq!(from_wire(key, b"not-a-hex-id!!!!"), *b"not-a-hex-id!!!!");
        assert!(w
            .iter()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    }
}
