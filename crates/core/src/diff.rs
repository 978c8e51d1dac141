//! Comparing a destination flow with what the rules expect.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::Fields;

/// What the destination holds for one flow key, as the guard sees it. A
/// sync copy carries `C`: its fields (marker included) by default, or a
/// summary of them (a digest), or `()` when only the state was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DestFlow<C = Fields> {
    /// No key.
    Absent,
    /// A hash without the sync marker: never touched, never drift.
    Native,
    /// A sync copy with this content.
    SyncCopy(C),
    /// A key of another type (apply dead-letters events for it).
    WrongType,
}

pub use redmirror_api::report::{Drift, DriftKind};

/// Compares the expected copy (`None`: no copy should exist) with the
/// destination. `indexed` says whether the destination index has the flow.
pub fn compare(expected: Option<&[(Bytes, Bytes)]>, actual: &DestFlow, indexed: bool) -> Option<Drift> {
    let drift = |kind, fields| Some(Drift { kind, fields });
    match (expected, actual) {
        (_, DestFlow::Native) => None,
        (_, DestFlow::WrongType) => None,
        (None, DestFlow::Absent) => None,
        (None, DestFlow::SyncCopy(_)) => drift(DriftKind::Extra, Vec::new()),
        (Some(_), DestFlow::Absent) => drift(DriftKind::Missing, Vec::new()),
        (Some(want), DestFlow::SyncCopy(have)) => {
            let mut names = field_diff(want, have);
            if !indexed {
                names.push("<index>".to_string());
            }
            if names.is_empty() {
                None
            } else {
                drift(DriftKind::Different, names)
            }
        }
    }
}

/// Names of fields whose presence or value differ between two hashes, sorted.
pub fn field_diff(a: &[(Bytes, Bytes)], b: &[(Bytes, Bytes)]) -> Vec<String> {
    let a: BTreeMap<&[u8], &[u8]> = a.iter().map(|(n, v)| (n.as_ref(), v.as_ref())).collect();
    let b: BTreeMap<&[u8], &[u8]> = b.iter().map(|(n, v)| (n.as_ref(), v.as_ref())).collect();
    let mut out: Vec<String> = a
        .iter()
        .filter(|(n, v)| b.get(*n) != Some(*v))
        .map(|(n, _)| crate::text::lossy(n))
        .collect();
    out.extend(b.keys().filter(|n| !a.contains_key(*n)).map(|n| crate::text::lossy(n)));
    out.sort();
    out
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
    fn kinds() {
        let want = f(&[("a", "1"), ("isSyncCopy", "true")]);
        assert_eq!(
            compare(Some(&want), &DestFlow::Absent, false).unwrap().kind,
            DriftKind::Missing
        );
        assert_eq!(
            compare(None, &DestFlow::SyncCopy(want.clone()), true).unwrap().kind,
            DriftKind::Extra
        );
        assert_eq!(compare(Some(&want), &DestFlow::SyncCopy(want.clone()), true), None);
        assert_eq!(compare(Some(&want), &DestFlow::Native, true), None);
        assert_eq!(compare(None, &DestFlow::Native, true), None);
        let d = compare(
            Some(&want),
            &DestFlow::SyncCopy(f(&[("a", "2"), ("b", "x"), ("isSyncCopy", "true")])),
            true,
        )
        .unwrap();
        assert_eq!(d.kind, DriftKind::Different);
        assert_eq!(d.fields, vec!["a".to_string(), "b".to_string()]);
        let d = compare(Some(&want), &DestFlow::SyncCopy(want.clone()), false).unwrap();
        assert_eq!(d.fields, vec!["<index>".to_string()]);
    }
}
