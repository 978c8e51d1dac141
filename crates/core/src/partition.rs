//! Which partition of the change topic holds a flow's events: the
//! producer's partitioner (librdkafka's `partitioner` property, given as
//! `REDMIRROR_KAFKA_PARTITIONER`) applied to the flow id, the event key.
//! Per-flow order and `GET /v1/flows/{flowId}/history` both rest on every
//! event of a flow landing in that one partition, so only partitioners that
//! hash the key are accepted. No I/O.
//!
//! The hashes are written here because they must match librdkafka's (and
//! the Java client's, for murmur2) bit for bit; a crate test produces with
//! librdkafka to the Apache Kafka broker and checks each one.

/// A key-hashing partitioner of librdkafka.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Partitioner {
    /// `consistent_random` (librdkafka's default) or `consistent`: CRC-32
    /// of the key.
    #[default]
    Consistent,
    /// `murmur2_random` or `murmur2`: the Java client's murmur2 of the key.
    Murmur2,
    /// `fnv1a_random` or `fnv1a`: FNV-1a (32-bit) of the key.
    Fnv1a,
}

impl Partitioner {
    /// The partitioner of the `partitioner` property (`None`: librdkafka's
    /// default). `Err` says why another value cannot be used.
    pub fn from_property(value: Option<&str>) -> Result<Partitioner, String> {
        match value.map(str::trim) {
            None | Some("consistent_random" | "consistent") => Ok(Partitioner::Consistent),
            Some("murmur2_random" | "murmur2") => Ok(Partitioner::Murmur2),
            Some("fnv1a_random" | "fnv1a") => Ok(Partitioner::Fnv1a),
            Some("random") => Err(
                "random spreads a flow's events over every partition, which breaks per-flow order \
                                   and flow history: use consistent_random (the default), murmur2_random or \
                                   fnv1a_random"
                    .into(),
            ),
            Some(_) => Err(
                "one of consistent_random (the default), consistent, murmur2_random, murmur2, \
                            fnv1a_random, fnv1a"
                    .into(),
            ),
        }
    }

    /// The partition of a non-empty `key` among `partitions`.
    pub fn partition_of(self, key: &[u8], partitions: i32) -> i32 {
        if partitions <= 1 {
            return 0;
        }
        let n = partitions as u32;
        match self {
            Partitioner::Consistent => (crc32fast::hash(key) % n) as i32,
            Partitioner::Murmur2 => ((murmur2(key) & 0x7fff_ffff) % n) as i32,
            // Sarama's (and so librdkafka's): the hash as a signed 32-bit
            // number, its remainder made positive.
            Partitioner::Fnv1a => ((fnv1a(key) as i32) % partitions).abs(),
        }
    }
}

/// The Java client's murmur2 (seed `0x9747b28c`), as librdkafka's
/// `murmur2` partitioner computes it.
fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        if tail.len() >= 3 {
            h ^= u32::from(tail[2]) << 16;
        }
        if tail.len() >= 2 {
            h ^= u32::from(tail[1]) << 8;
        }
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// FNV-1a, 32 bits.
fn fnv1a(data: &[u8]) -> u32 {
    data.iter()
        .fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(*b)).wrapping_mul(0x0100_0193))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_property_names_librdkafkas_key_hashing_partitioners_only() {
        assert_eq!(Partitioner::from_property(None), Ok(Partitioner::Consistent));
        assert_eq!(
            Partitioner::from_property(Some("consistent")),
            Ok(Partitioner::Consistent)
        );
        assert_eq!(
            Partitioner::from_property(Some("murmur2_random")),
            Ok(Partitioner::Murmur2)
        );
        assert_eq!(Partitioner::from_property(Some(" fnv1a ")), Ok(Partitioner::Fnv1a));
        assert!(Partitioner::from_property(Some("random"))
            .unwrap_err()
            .contains("per-flow order"));
        assert!(Partitioner::from_property(Some("murmur3")).is_err());
    }

    #[test]
    fn hashes_match_their_published_values() {
        // CRC-32 (IEEE) check value; FNV-1a offset basis for "".
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
        assert_eq!(fnv1a(b""), 0x811c_9dc5);
        assert_eq!(fnv1a(b"a"), 0xe40c_292c);
        assert_eq!(Partitioner::Consistent.partition_of(b"anything", 1), 0);
    }
}
