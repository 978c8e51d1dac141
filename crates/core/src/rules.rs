//! The mirror rules of SPEC section 1: guard, field rules (section 8,
//! [`FieldRules`]), filtered organisations, size limit.

use std::collections::HashSet;

use bytes::Bytes;

use crate::event::{DeleteReason, FlowEvent, Origin};
use crate::field_rules::FieldRules;
use crate::Fields;

/// The value of the sync marker on every copy redmirror writes. Contract
/// (SPEC section 1): the destination's users and the guard rely on it; the
/// Lua scripts receive it as an argument, never write it themselves.
pub const MARKER_VALUE: &[u8] = b"true";

/// What the source holds for one flow key, as read atomically.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceFlow {
    /// No such key.
    Absent,
    /// The key exists but is not a hash (treated as absent).
    NotAHash,
    /// The flow hash, all fields.
    Hash(Fields),
}

/// What to publish for a source read.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Publish this event.
    Publish(FlowEvent),
    /// The flow exceeds a size limit: skip it, count it, log it.
    TooLarge {
        /// Its size as that limit counts it, in bytes.
        bytes: usize,
        /// The limit.
        limit: usize,
        /// Which limit: [`LIMIT_FLOW`] or [`LIMIT_EVENT`].
        which: &'static str,
    },
}

/// The configured flow size limit (bytes of field names and values).
pub const LIMIT_FLOW: &str = "REDMIRROR_MAX_FLOW_BYTES";
/// The largest record Kafka takes (the producer's `message.max.bytes` and the
/// topic's `max.message.bytes`), against the event as encoded.
pub const LIMIT_EVENT: &str = "the largest record Kafka accepts";

/// Bytes a record adds to its encoded event in Kafka's accounting: the
/// flow-id key, the four `redmirror-*` headers and the record framing,
/// rounded up generously.
pub const RECORD_OVERHEAD: usize = 1024;

/// The configured rules. Built once from the configuration.
#[derive(Debug, Clone)]
pub struct MirrorRules {
    /// The field rules: excluded fields, allow-list, masks (SPEC section 8).
    pub fields: FieldRules,
    /// Organisation ids whose flows are never mirrored.
    pub filtered_orgs: HashSet<Bytes>,
    /// The field holding a flow's organisation (`clerkOrganizationId`).
    pub org_field: Bytes,
    /// The sync marker field (`isSyncCopy`).
    pub marker_field: Bytes,
    /// Largest flow (bytes of names and values) mirrored.
    pub max_flow_bytes: usize,
    /// Largest Kafka record (key, encoded event and headers) the producer
    /// and the change topic accept; a flow whose event would be larger is
    /// skipped at capture. Set from Kafka's limits at start.
    pub max_record_bytes: usize,
}

impl Default for MirrorRules {
    fn default() -> Self {
        MirrorRules {
            fields: FieldRules::default(),
            filtered_orgs: HashSet::new(),
            org_field: Bytes::from_static(b"clerkOrganizationId"),
            marker_field: Bytes::from_static(b"isSyncCopy"),
            max_flow_bytes: 64 * 1024 * 1024,
            max_record_bytes: usize::MAX,
        }
    }
}

impl MirrorRules {
    /// True when the flow belongs to a filtered organisation. Fields may be
    /// owned or borrowed (a reply parsed in place).
    pub fn is_filtered<N: AsRef<[u8]>, V: AsRef<[u8]>>(&self, fields: &[(N, V)]) -> bool {
        !self.filtered_orgs.is_empty()
            && fields
                .iter()
                .any(|(n, v)| n.as_ref() == self.org_field.as_ref() && self.filtered_orgs.contains(v.as_ref()))
    }

    /// True when a field must never be copied (excluded, off the
    /// allow-list, or the source's own marker).
    pub fn is_stripped(&self, name: &[u8]) -> bool {
        name == self.marker_field.as_ref() || !self.fields.keeps(name)
    }

    /// The source fields after the field rules (SPEC section 8: excluded
    /// fields and fields off the allow-list dropped, masked fields
    /// rewritten), without the source's marker.
    pub fn strip(&self, fields: Fields) -> Fields {
        let marker = self.marker_field.as_ref();
        self.fields
            .apply(fields.into_iter().filter(|(n, _)| n.as_ref() != marker).collect())
    }

    /// Turns an atomic source read into the event to publish. Filtered flows
    /// become delete events without any field data, so their data never
    /// reaches Kafka.
    pub fn decide(
        &self,
        flow_id: Bytes,
        source: SourceFlow,
        order: crate::Order,
        origin: Origin,
        cause: &str,
    ) -> Decision {
        let source_time_us = order.time_us;
        let rules = self.fields.fingerprint();
        let delete = |reason| {
            Decision::Publish(
                FlowEvent::delete(flow_id.clone(), reason, source_time_us, origin, cause)
                    .in_epoch(order.epoch)
                    .under_rules(rules),
            )
        };
        match source {
            SourceFlow::Absent => delete(DeleteReason::Absent),
            SourceFlow::NotAHash => delete(DeleteReason::NotAHash),
            SourceFlow::Hash(fields) if self.is_filtered(&fields) => delete(DeleteReason::Filtered),
            SourceFlow::Hash(fields) => {
                let fields = self.strip(fields);
                let bytes: usize = fields.iter().map(|(n, v)| n.len() + v.len()).sum();
                if bytes > self.max_flow_bytes {
                    return Decision::TooLarge {
                        bytes,
                        limit: self.max_flow_bytes,
                        which: LIMIT_FLOW,
                    };
                }
                let event = FlowEvent::upsert(flow_id.clone(), fields, source_time_us, origin, cause)
                    .in_epoch(order.epoch)
                    .under_rules(rules);
                // Field names and values are not all Kafka counts: each
                // field adds protobuf framing (a flow of many small fields
                // can encode to several times its payload).
                let record = prost::Message::encoded_len(&event) + RECORD_OVERHEAD;
                if record > self.max_record_bytes {
                    return Decision::TooLarge {
                        bytes: record,
                        limit: self.max_record_bytes,
                        which: LIMIT_EVENT,
                    };
                }
                Decision::Publish(event)
            }
        }
    }

    /// The destination copy an upsert with these fields (made under these
    /// rules, so already masked) must produce: the kept fields plus the
    /// marker. Dropping is idempotent and done again here; masking is not,
    /// and is never done twice.
    pub fn expected_copy(&self, fields: &[(Bytes, Bytes)]) -> Fields {
        let mut copy: Fields = fields.iter().filter(|(n, _)| !self.is_stripped(n)).cloned().collect();
        copy.push((self.marker_field.clone(), Bytes::from_static(MARKER_VALUE)));
        copy
    }

    /// True when a destination hash is a sync copy (carries the marker).
    /// Fields may be owned or borrowed.
    pub fn is_sync_copy<N: AsRef<[u8]>, V: AsRef<[u8]>>(&self, fields: &[(N, V)]) -> bool {
        fields
            .iter()
            .any(|(n, v)| n.as_ref() == self.marker_field.as_ref() && v.as_ref() == MARKER_VALUE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Op;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn rules() -> MirrorRules {
        MirrorRules {
            filtered_orgs: [b("org_demo")].into(),
            ..MirrorRules::default()
        }
    }

    #[test]
    fn strips_excluded_and_source_marker() {
        let r = rules();
        let d = r.decide(
            b("f1"),
            SourceFlow::Hash(vec![
                (b("name"), b("x")),
                (b("flowConfigHistory"), b("[...]")),
                (b("isSyncCopy"), b("false")),
            ]),
            crate::Order::new(2, 10),
            Origin::Capture,
            "hset",
        );
        let Decision::Publish(e) = d else {
            panic!("expected publish")
        };
        assert_eq!(e.op, Op::Upsert as i32);
        assert_eq!(e.fields.len(), 1);
        assert_eq!(e.fields[0].name, b("name"));
        assert_eq!(
            e.order(),
            crate::Order::new(2, 10),
            "the event carries the read's epoch and time"
        );
        let copy = r.expected_copy(&[(b("name"), b("x"))]);
        assert_eq!(copy, vec![(b("name"), b("x")), (b("isSyncCopy"), b("true"))]);
    }

    #[test]
    fn filtered_org_becomes_delete_without_data() {
        let d = rules().decide(
            b("f1"),
            SourceFlow::Hash(vec![(b("clerkOrganizationId"), b("org_demo")), (b("secret"), b("s"))]),
            crate::Order::new(1, 10),
            Origin::Capture,
            "hset",
        );
        let Decision::Publish(e) = d else {
            panic!("expected publish")
        };
        assert_eq!(e.op, Op::Delete as i32);
        assert_eq!(e.delete_reason, DeleteReason::Filtered as i32);
        assert!(e.fields.is_empty());
        assert_eq!(e.order(), crate::Order::new(1, 10));
    }

    #[test]
    fn absent_and_not_a_hash_are_deletes() {
        for (src, reason) in [
            (SourceFlow::Absent, DeleteReason::Absent),
            (SourceFlow::NotAHash, DeleteReason::NotAHash),
        ] {
            let Decision::Publish(e) = rules().decide(b("f"), src, crate::Order::new(0, 1), Origin::Reconcile, "x")
            else {
                panic!("expected publish")
            };
            assert_eq!(e.delete_reason, reason as i32);
        }
    }

    #[test]
    fn too_large_is_refused() {
        let r = MirrorRules {
            max_flow_bytes: 4,
            ..rules()
        };
        let d = r.decide(
            b("f"),
            SourceFlow::Hash(vec![(b("abc"), b("de"))]),
            crate::Order::default(),
            Origin::Capture,
            "hset",
        );
        assert_eq!(
            d,
            Decision::TooLarge {
                bytes: 5,
                limit: 4,
                which: LIMIT_FLOW
            }
        );
    }

    #[test]
    fn a_flow_whose_encoded_event_kafka_would_refuse_is_too_large_though_under_the_flow_limit() {
        let r = MirrorRules {
            max_flow_bytes: 100_000,
            max_record_bytes: 50_000,
            ..rules()
        };
        // 10,000 one-byte names and empty values: 10 kB of payload, about
        // 50 kB encoded.
        let fields: Vec<_> = (0..10_000u32)
            .map(|i| (Bytes::copy_from_slice(&i.to_le_bytes()[..2]), Bytes::new()))
            .collect();
        let d = r.decide(
            b("f"),
            SourceFlow::Hash(fields),
            crate::Order::default(),
            Origin::Capture,
            "hset",
        );
        let Decision::TooLarge { bytes, limit, which } = d else {
            panic!("expected too large, got {d:?}")
        };
        assert_eq!((limit, which), (50_000, LIMIT_EVENT));
        assert!(bytes > 50_000, "{bytes}");
    }

    #[test]
    fn sync_copy_detection() {
        let r = rules();
        assert!(r.is_sync_copy(&[(b("isSyncCopy"), b("true"))]));
        assert!(!r.is_sync_copy(&[(b("isSyncCopy"), b("TRUE"))]));
        assert!(!r.is_sync_copy(&[(b("a"), b("true"))]));
    }
}
