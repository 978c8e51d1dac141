//! The change event: generated types, headers and strict decoding.

use bytes::Bytes;
use prost::Message;

#[allow(missing_docs, clippy::all)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/redmirror.v1.rs"));
}

pub use generated::{DeleteReason, Field, FlowEvent, Op, Origin};

/// The schema version this build writes and the only one it reads.
pub const SCHEMA_VERSION: u32 = 1;

/// Kafka header carrying the schema version (decimal text).
pub const HEADER_SCHEMA: &str = "redmirror-schema";
/// Kafka header carrying the origin (`capture`, `reconcile`, `resync`).
pub const HEADER_ORIGIN: &str = "redmirror-origin";
/// Kafka header carrying the source time in microseconds (decimal text).
pub const HEADER_SOURCE_TIME: &str = "redmirror-source-time-us";
/// Kafka header carrying the source epoch (decimal text; see [`crate::Order`]).
pub const HEADER_SOURCE_EPOCH: &str = "redmirror-source-epoch";
/// Kafka header carrying the fingerprint of the field rules the event was
/// made under ([`crate::FieldRules::fingerprint`]; absent in events made
/// before field rules existed).
pub const HEADER_RULES: &str = "redmirror-rules";

/// The `cause` of a tombstone without an epoch header
/// ([`FlowEvent::external_tombstone`]).
pub const EXTERNAL_TOMBSTONE: &str = "external_tombstone";

/// Why an event from the topic cannot be used. Permanent: such an event is
/// dead-lettered, never retried.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The payload is not a protobuf `FlowEvent`.
    #[error("undecodable event: {0}")]
    Undecodable(String),
    /// A schema version this build does not know.
    #[error("unknown schema version {found} (this build reads version {SCHEMA_VERSION})")]
    UnknownVersion {
        /// The version found in the event.
        found: u32,
    },
    /// The event has no flow id.
    #[error("event has an empty flow id")]
    EmptyFlowId,
    /// The Kafka key and the event's flow id disagree.
    #[error("Kafka key does not match the event's flow id")]
    KeyMismatch,
    /// The operation is missing or unknown.
    #[error("event has no valid operation (op={0})")]
    BadOp(i32),
    /// The message has no payload (a Kafka tombstone) and no key.
    #[error("empty message")]
    Empty,
}

impl DecodeError {
    /// Short reason code for headers and metric labels.
    pub fn code(&self) -> &'static str {
        match self {
            DecodeError::Undecodable(_) => "undecodable",
            DecodeError::UnknownVersion { .. } => "unknown_version",
            DecodeError::EmptyFlowId => "empty_flow_id",
            DecodeError::KeyMismatch => "key_mismatch",
            DecodeError::BadOp(_) => "bad_op",
            DecodeError::Empty => "empty",
        }
    }
}

impl Origin {
    /// The origin as written in the `redmirror-origin` header.
    pub fn label(self) -> &'static str {
        match self {
            Origin::Capture => "capture",
            Origin::Reconcile => "reconcile",
            Origin::Resync => "resync",
            Origin::Unspecified => "unspecified",
        }
    }
}

impl FlowEvent {
    /// An upsert event: the flow's full state.
    pub fn upsert(
        flow_id: Bytes,
        fields: crate::Fields,
        source_time_us: i64,
        origin: Origin,
        cause: impl Into<String>,
    ) -> Self {
        FlowEvent {
            schema_version: SCHEMA_VERSION,
            flow_id,
            op: Op::Upsert as i32,
            fields: fields.into_iter().map(|(name, value)| Field { name, value }).collect(),
            source_time_us,
            capture_time_us: crate::now_us(),
            origin: origin as i32,
            cause: cause.into(),
            delete_reason: DeleteReason::Unspecified as i32,
            source_epoch: 0,
            rules: String::new(),
        }
    }

    /// A delete event: the flow must not be mirrored (absent, not a hash, filtered).
    pub fn delete(
        flow_id: Bytes,
        reason: DeleteReason,
        source_time_us: i64,
        origin: Origin,
        cause: impl Into<String>,
    ) -> Self {
        FlowEvent {
            schema_version: SCHEMA_VERSION,
            flow_id,
            op: Op::Delete as i32,
            fields: Vec::new(),
            source_time_us,
            capture_time_us: crate::now_us(),
            origin: origin as i32,
            cause: cause.into(),
            delete_reason: reason as i32,
            source_epoch: 0,
            rules: String::new(),
        }
    }

    /// The same event in source epoch `epoch`.
    pub fn in_epoch(mut self, epoch: u64) -> Self {
        self.source_epoch = epoch;
        self
    }

    /// The same event made under the field rules with this fingerprint.
    pub fn under_rules(mut self, fingerprint: &str) -> Self {
        self.rules = fingerprint.to_string();
        self
    }

    /// Where this event stands in its flow's history.
    pub fn order(&self) -> crate::Order {
        crate::Order::new(self.source_epoch, self.source_time_us)
    }

    /// A Kafka tombstone (the flow's key with no payload) read as the
    /// delete it stands for: the change topic is compacted, and a tombstone
    /// is how compaction-aware tools delete a key. It carries no event, so
    /// the caller supplies its time (see `redmirror_kafka::decode_event`).
    pub fn tombstone(flow_id: &[u8], source_time_us: i64) -> Self {
        FlowEvent::delete(
            Bytes::copy_from_slice(flow_id),
            DeleteReason::Absent,
            source_time_us,
            Origin::Unspecified,
            "tombstone",
        )
    }

    /// A tombstone without a `redmirror-source-epoch` header: written by a
    /// tool or an operator, not by redmirror, so it has no place in the
    /// (epoch, time) order. It means "delete this flow now": apply writes it
    /// whatever it applied to the flow before (as a rewind writes), and the
    /// flow's next event orders after it as usual.
    pub fn external_tombstone(flow_id: &[u8], source_time_us: i64) -> Self {
        let mut e = FlowEvent::tombstone(flow_id, source_time_us);
        e.cause = EXTERNAL_TOMBSTONE.to_string();
        e
    }

    /// True for an [`FlowEvent::external_tombstone`].
    pub fn is_external_tombstone(&self) -> bool {
        self.origin == Origin::Unspecified as i32 && self.cause == EXTERNAL_TOMBSTONE
    }

    /// True for an upsert.
    pub fn is_upsert(&self) -> bool {
        self.op == Op::Upsert as i32
    }

    /// Serialized protobuf bytes.
    pub fn encode_to_bytes(&self) -> Vec<u8> {
        self.encode_to_vec()
    }

    /// Total bytes of field names and values: what the size limit counts.
    pub fn payload_bytes(&self) -> usize {
        self.fields.iter().map(|f| f.name.len() + f.value.len()).sum()
    }

    /// Decodes and validates an event read from the topic. `key` is the Kafka
    /// message key, which must equal the flow id when present.
    pub fn decode_checked(key: Option<&[u8]>, payload: Option<&[u8]>) -> Result<Self, DecodeError> {
        let payload = match payload {
            Some(p) => p,
            None if key.is_none_or(|k| k.is_empty()) => return Err(DecodeError::Empty),
            None => return Err(DecodeError::Undecodable("message has no payload".into())),
        };
        let event = FlowEvent::decode(payload).map_err(|e| DecodeError::Undecodable(e.to_string()))?;
        if event.schema_version != SCHEMA_VERSION {
            return Err(DecodeError::UnknownVersion {
                found: event.schema_version,
            });
        }
        if event.flow_id.is_empty() {
            return Err(DecodeError::EmptyFlowId);
        }
        if let Some(k) = key {
            if k != event.flow_id.as_ref() {
                return Err(DecodeError::KeyMismatch);
            }
        }
        match Op::try_from(event.op) {
            Ok(Op::Upsert) | Ok(Op::Delete) => Ok(event),
            _ => Err(DecodeError::BadOp(event.op)),
        }
    }

    /// The Kafka headers for this event, as `(name, value)` pairs
    /// (`redmirror-rules` only when the event has a fingerprint).
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut h = vec![
            (HEADER_SCHEMA, self.schema_version.to_string()),
            (
                HEADER_ORIGIN,
                Origin::try_from(self.origin)
                    .unwrap_or(Origin::Unspecified)
                    .label()
                    .to_string(),
            ),
            (HEADER_SOURCE_TIME, self.source_time_us.to_string()),
            (HEADER_SOURCE_EPOCH, self.source_epoch.to_string()),
        ];
        if !self.rules.is_empty() {
            h.push((HEADER_RULES, self.rules.clone()));
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> FlowEvent {
        FlowEvent::upsert(
            Bytes::from_static(b"f\xff1"),
            vec![(Bytes::from_static(b"a\x00"), Bytes::from_static(b"\xfe"))],
            42,
            Origin::Capture,
            "hset",
        )
    }

    #[test]
    fn round_trips_binary_fields() {
        let e = sample();
        let back = FlowEvent::decode_checked(Some(b"f\xff1"), Some(&e.encode_to_bytes())).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn rejects_garbage_version_key_and_empty() {
        assert!(matches!(
            FlowEvent::decode_checked(Some(b"k"), Some(b"\xff\xff\xff")),
            Err(DecodeError::Undecodable(_))
        ));
        let mut e = sample();
        e.schema_version = 9;
        assert_eq!(
            FlowEvent::decode_checked(None, Some(&e.encode_to_bytes())),
            Err(DecodeError::UnknownVersion { found: 9 })
        );
        let e = sample();
        assert_eq!(
            FlowEvent::decode_checked(Some(b"other"), Some(&e.encode_to_bytes())),
            Err(DecodeError::KeyMismatch)
        );
        assert_eq!(FlowEvent::decode_checked(None, None), Err(DecodeError::Empty));
        let mut e = sample();
        e.flow_id = Bytes::new();
        assert_eq!(
            FlowEvent::decode_checked(None, Some(&e.encode_to_bytes())),
            Err(DecodeError::EmptyFlowId)
        );
        let mut e = sample();
        e.op = 7;
        assert_eq!(
            FlowEvent::decode_checked(None, Some(&e.encode_to_bytes())),
            Err(DecodeError::BadOp(7))
        );
    }

    #[test]
    fn headers_carry_version_origin_time() {
        let h = sample().headers();
        assert_eq!(h[0], (HEADER_SCHEMA, "1".to_string()));
        assert_eq!(h[1], (HEADER_ORIGIN, "capture".to_string()));
        assert_eq!(h[2], (HEADER_SOURCE_TIME, "42".to_string()));
        assert_eq!(h[3], (HEADER_SOURCE_EPOCH, "0".to_string()));
        assert_eq!(
            sample().in_epoch(3).headers()[3],
            (HEADER_SOURCE_EPOCH, "3".to_string())
        );
    }
}
