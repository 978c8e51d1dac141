//! Redis Cluster hash slots (the cluster specification's key → slot map),
//! computed here so routing and co-location need no round trip.
//!
//! A key's slot is CRC16 (XMODEM) of the key, or of its hash tag (the bytes
//! between the first `{` and the next `}`, when not empty), modulo 16384.
//! [`tag_for`] gives, for every slot, a short hash tag that lands in it:
//! a key `…{tag}…` then lives in the same slot as the flow key it serves,
//! whatever bytes the flow id holds.

use std::sync::OnceLock;

/// Slots in a Redis Cluster.
pub const SLOTS: u16 = 16384;

/// The hash slot of `key`.
pub fn of(key: &[u8]) -> u16 {
    let hashed = match key.iter().position(|&b| b == b'{') {
        Some(open) => match key[open + 1..].iter().position(|&b| b == b'}') {
            Some(len) if len > 0 => &key[open + 1..open + 1 + len],
            _ => key,
        },
        None => key,
    };
    crc16::State::<crc16::XMODEM>::calculate(hashed) % SLOTS
}

/// A hash tag (decimal digits, without the braces) whose slot is `slot`.
/// The table is built once, on first use, from the smallest number landing
/// in each slot.
pub fn tag_for(slot: u16) -> &'static str {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    let tags = TAGS.get_or_init(|| {
        let mut tags: Vec<Option<String>> = vec![None; SLOTS as usize];
        let mut missing = SLOTS as usize;
        let mut n: u64 = 0;
        while missing > 0 {
            let tag = n.to_string();
            let s = of(tag.as_bytes()) as usize;
            if tags[s].is_none() {
                tags[s] = Some(tag);
                missing -= 1;
            }
            n += 1;
        }
        tags.into_iter().map(|t| t.expect("every slot has a tag")).collect()
    });
    &tags[(slot % SLOTS) as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_the_cluster_specification() {
        // Values from `CLUSTER KEYSLOT` on redis-server 7.0.
        assert_eq!(of(b"foo"), 12182);
        assert_eq!(of(b"bar"), 5061);
        assert_eq!(of(b"123456789"), 0x31C3 % SLOTS);
        assert_eq!(of(b"{user1000}.following"), of(b"user1000"));
        assert_eq!(
            of(b"foo{}{bar}"),
            of(b"foo{}{bar}"),
            "an empty tag hashes the whole key"
        );
        assert_ne!(of(b"foo{}{bar}"), of(b"bar"));
        assert_eq!(of(b"foo{{bar}}zap"), of(b"{bar"));
        assert_eq!(of(b"foo{bar}{zap}"), of(b"bar"));
    }

    #[test]
    fn every_slot_has_a_tag_that_lands_in_it() {
        for slot in 0..SLOTS {
            let tag = tag_for(slot);
            assert_eq!(of(tag.as_bytes()), slot);
            let key = format!("redmirror:watermarks:{{{tag}}}");
            assert_eq!(of(key.as_bytes()), slot, "{key}");
        }
    }
}
