//! One flow on both sides, as `GET /v1/flows/{flowId}` shows it: the source
//! hash after the field rules, the destination hash, the verdict and the
//! differing fields, and apply's watermark for the flow.
//!
//! The comparison is the pass's own: one atomic source read
//! ([`SourceReader::read`]), [`MirrorRules::decide`] and
//! [`MirrorRules::expected_copy`] for what the copy must be, the guard's
//! destination read ([`DestReader`]) and [`diff::compare`]. Both reads are
//! routed, so a cluster on either side works.

use base64::Engine as _;
use bytes::Bytes;
use fred::prelude::*;
use redmirror_api::{FieldValue, FlowView, Verdict, Watermark};
use redmirror_core::diff::{self, DestFlow};
use redmirror_core::event::Origin;
use redmirror_core::rules::{Decision, SourceFlow};
use redmirror_core::{slot, Fields, KeyLayout, MirrorRules, Order};
use redmirror_redis::source::SourceReader;

use crate::dest_read::DestReader;

/// Why a flow could not be shown.
#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    /// The source read failed.
    #[error("reading the flow on the source: {0}")]
    Source(String),
    /// The destination read failed.
    #[error("reading the flow on the destination: {0}")]
    Destination(String),
}

/// A hash as the flow API shows it (names as text or `base64:...`, values
/// as text or `{"base64": ...}`).
pub fn hash_view<N: AsRef<[u8]>, V: AsRef<[u8]>>(fields: &[(N, V)]) -> redmirror_api::flows::FlowHash {
    fields
        .iter()
        .map(|(n, v)| (redmirror_core::text::lossy(n.as_ref()), field_value(v.as_ref())))
        .collect()
}

fn field_value(v: &[u8]) -> FieldValue {
    match std::str::from_utf8(v) {
        Ok(s) => FieldValue::Text(s.to_string()),
        Err(_) => FieldValue::Binary {
            base64: base64::engine::general_purpose::STANDARD.encode(v),
        },
    }
}

/// What the source side says, after the rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSide {
    /// No flow hash (absent, or not a hash).
    Absent,
    /// A flow of a filtered organisation.
    Filtered,
    /// The fields a copy carries (after the field rules, without the marker).
    Copied(Fields),
}

/// The verdict and the differing fields for a source side and a
/// destination state (the pass's comparison).
pub fn judge(rules: &MirrorRules, source: &SourceSide, dest: &DestFlow, indexed: bool) -> (Verdict, Vec<String>) {
    let expected = match source {
        SourceSide::Copied(f) => Some(rules.expected_copy(f)),
        _ => None,
    };
    match (source, dest) {
        (_, DestFlow::Native) => (Verdict::Native, Vec::new()),
        (_, DestFlow::WrongType) => (Verdict::Different, vec!["<type>".into()]),
        (SourceSide::Filtered, DestFlow::Absent) => (Verdict::Filtered, Vec::new()),
        (SourceSide::Absent, DestFlow::Absent) => (Verdict::Absent, Vec::new()),
        _ => match diff::compare(expected.as_deref(), dest, indexed) {
            None => (Verdict::InStep, Vec::new()),
            Some(d) => match d.kind {
                diff::DriftKind::Missing => (Verdict::Missing, Vec::new()),
                diff::DriftKind::Extra => (Verdict::Extra, Vec::new()),
                diff::DriftKind::Different => (Verdict::Different, d.fields),
            },
        },
    }
}

/// The source side of one source read, through the rules (as a pass and
/// capture decide it).
pub fn source_side(rules: &MirrorRules, id: Bytes, state: SourceFlow, order: Order) -> SourceSide {
    match &state {
        SourceFlow::Absent | SourceFlow::NotAHash => return SourceSide::Absent,
        SourceFlow::Hash(f) if rules.is_filtered(f) => return SourceSide::Filtered,
        SourceFlow::Hash(_) => {}
    }
    let fallback = match &state {
        SourceFlow::Hash(f) => f.clone(),
        _ => Fields::new(),
    };
    match rules.decide(id, state, order, Origin::Reconcile, "flow-api") {
        Decision::Publish(ev) if ev.is_upsert() => {
            SourceSide::Copied(ev.fields.iter().map(|f| (f.name.clone(), f.value.clone())).collect())
        }
        Decision::Publish(_) => SourceSide::Filtered,
        // Too large to publish: capture skips it; show what the rules keep.
        Decision::TooLarge { .. } => SourceSide::Copied(rules.strip(fallback)),
    }
}

/// Reads one flow on both sides and judges it.
pub async fn view(
    source: &SourceReader,
    dest: &Client,
    keys: &KeyLayout,
    rules: &MirrorRules,
    flow_id: Bytes,
) -> Result<FlowView, FlowError> {
    let ids = [flow_id.clone()];
    let reader = DestReader::new(keys.clone(), rules);
    let (src, dst) = tokio::join!(source.read(&ids), reader.flows(dest, &ids));
    let src = src.map_err(|e| FlowError::Source(e.to_string()))?;
    let dst = dst.map_err(|e| FlowError::Destination(e.to_string()))?;
    let (Some(s), Some(d)) = (src.flows.into_iter().next(), dst.into_iter().next()) else {
        return Err(FlowError::Source("the read returned no flow".into()));
    };
    let side = source_side(rules, flow_id.clone(), s.state, s.order);
    let (verdict, differences) = judge(rules, &side, &d.flow, d.indexed);
    let flow_key = keys.flow_key(&flow_id);
    let destination = match &d.flow {
        DestFlow::SyncCopy(f) => Some(hash_view(f)),
        DestFlow::Native => {
            let f: Vec<(Bytes, Bytes)> = dest
                .hgetall::<Vec<(Bytes, Bytes)>, _>(flow_key.clone())
                .await
                .map_err(|e| FlowError::Destination(e.to_string()))?;
            Some(hash_view(&f))
        }
        DestFlow::Absent | DestFlow::WrongType => None,
    };
    let watermark_key = if redmirror_redis::is_cluster(dest) {
        keys.watermark_key_in(slot::of(&flow_key))
    } else {
        keys.watermark_key()
    };
    let mark: Option<Bytes> = dest
        .hget(watermark_key, flow_id.clone())
        .await
        .map_err(|e| FlowError::Destination(e.to_string()))?;
    Ok(FlowView {
        flow_id: redmirror_core::text::lossy(&flow_id),
        verdict,
        source: match &side {
            SourceSide::Copied(f) => Some(hash_view(f)),
            _ => None,
        },
        destination,
        differences,
        watermark: mark.as_deref().and_then(Order::parse).map(|o| Watermark {
            source_epoch: o.epoch,
            source_time: redmirror_core::text::rfc3339_us(o.time_us),
            source_time_us: o.time_us,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(pairs: &[(&str, &str)]) -> Fields {
        pairs
            .iter()
            .map(|(n, v)| {
                (
                    Bytes::copy_from_slice(n.as_bytes()),
                    Bytes::copy_from_slice(v.as_bytes()),
                )
            })
            .collect()
    }

    #[test]
    fn every_verdict_from_the_passes_comparison() {
        let rules = MirrorRules {
            filtered_orgs: [Bytes::from_static(b"org-hello")].into(),
            ..MirrorRules::default()
        };
        let copied = SourceSide::Copied(f(&[("a", "1")]));
        let copy = DestFlow::SyncCopy(f(&[("a", "1"), ("isSyncCopy", "true")]));
        let other = DestFlow::SyncCopy(f(&[("a", "2"), ("isSyncCopy", "true")]));
        let cases = [
            (&copied, &copy, Verdict::InStep, vec![]),
            (&copied, &other, Verdict::Different, vec!["a".to_string()]),
            (&copied, &DestFlow::Absent, Verdict::Missing, vec![]),
            (&SourceSide::Absent, &copy, Verdict::Extra, vec![]),
            (&SourceSide::Filtered, &copy, Verdict::Extra, vec![]),
            (&copied, &DestFlow::Native, Verdict::Native, vec![]),
            (&SourceSide::Filtered, &DestFlow::Absent, Verdict::Filtered, vec![]),
            (&SourceSide::Absent, &DestFlow::Absent, Verdict::Absent, vec![]),
        ];
        for (side, dest, verdict, diffs) in cases {
            assert_eq!(judge(&rules, side, dest, true), (verdict, diffs), "{side:?} / {dest:?}");
        }
        let hello = SourceFlow::Hash(f(&[("clerkOrganizationId", "org-hello")]));
        assert_eq!(
            source_side(&rules, Bytes::from_static(b"x"), hello, Order::default()),
            SourceSide::Filtered
        );
        let plain = SourceFlow::Hash(f(&[("a", "1"), ("flowConfigHistory", "h"), ("isSyncCopy", "x")]));
        assert_eq!(
            source_side(&rules, Bytes::from_static(b"x"), plain, Order::default()),
            SourceSide::Copied(f(&[("a", "1")])),
            "the rules strip excluded fields and the source's marker"
        );
    }

    #[test]
    fn values_that_are_not_utf8_show_as_base64() {
        let v = hash_view(&[(b"n".as_slice(), b"\xff".as_slice())]);
        assert_eq!(v["n"], FieldValue::Binary { base64: "/w==".into() });
    }
}
