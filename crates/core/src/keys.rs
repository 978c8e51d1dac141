//! Key layout: where flows, the index and redmirror's own state live.
//!
//! Contract: the key names here (`client:{flowId}`, `clients` and every
//! `redmirror:*` key) are public (SPEC section 1); other instances and
//! versions read them, so change one only through an issue.

use bytes::{BufMut, Bytes, BytesMut};

/// A lease a role takes on the destination, so only one instance of it
/// acts at a time (SPEC section 1: `redmirror:lease:{name}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LeaseName {
    /// Held by the one capture that follows the source.
    Capture,
    /// Held by the one reconciler that runs passes.
    Reconcile,
}

impl LeaseName {
    /// Every lease.
    pub const ALL: [LeaseName; 2] = [LeaseName::Capture, LeaseName::Reconcile];

    /// Its name in keys, metric labels and `/v1/status`.
    pub const fn name(self) -> &'static str {
        match self {
            LeaseName::Capture => "capture",
            LeaseName::Reconcile => "reconcile",
        }
    }

    /// The lease of a name; `None` for one this version does not know.
    pub fn from_name(name: &str) -> Option<LeaseName> {
        Self::ALL.into_iter().find(|l| l.name() == name)
    }
}

impl std::fmt::Display for LeaseName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Names of the keys redmirror reads and writes. Every name is configurable;
/// the defaults are SPEC section 1's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLayout {
    /// Prefix of flow hashes: `client:` → `client:{flowId}`.
    pub flow_prefix: Bytes,
    /// The index hash: field `{flowId}` → `"1"`.
    pub index_key: Bytes,
    /// Prefix of redmirror's own bookkeeping keys on the destination.
    pub state_prefix: String,
}

impl Default for KeyLayout {
    fn default() -> Self {
        KeyLayout {
            flow_prefix: Bytes::from_static(b"client:"),
            index_key: Bytes::from_static(b"clients"),
            state_prefix: "redmirror:".to_string(),
        }
    }
}

impl KeyLayout {
    /// `client:{flow_id}`.
    pub fn flow_key(&self, flow_id: &[u8]) -> Bytes {
        let mut b = BytesMut::with_capacity(self.flow_prefix.len() + flow_id.len());
        b.put_slice(&self.flow_prefix);
        b.put_slice(flow_id);
        b.freeze()
    }

    /// The flow id of a key, if the key is a flow key with a non-empty id.
    pub fn flow_id<'a>(&self, key: &'a [u8]) -> Option<&'a [u8]> {
        key.strip_prefix(self.flow_prefix.as_ref()).filter(|id| !id.is_empty())
    }

    /// SCAN pattern matching every flow key (glob characters in the prefix escaped).
    pub fn scan_pattern(&self) -> Bytes {
        let mut b = BytesMut::new();
        for &c in self.flow_prefix.iter() {
            if matches!(c, b'*' | b'?' | b'[' | b']' | b'\\') {
                b.put_u8(b'\\');
            }
            b.put_u8(c);
        }
        b.put_u8(b'*');
        b.freeze()
    }

    /// The source epoch (a hash: `epoch`, `run_id`, `time_us`), shared by
    /// every process that reads the source (see [`crate::Order`]).
    pub fn source_epoch_key(&self) -> String {
        format!("{}source:epoch", self.state_prefix)
    }

    /// The hash of per-flow watermarks (flow id → last applied
    /// [`crate::Order`], as [`crate::Order::encode`] writes it).
    pub fn watermark_key(&self) -> String {
        format!("{}watermarks", self.state_prefix)
    }

    /// On a cluster destination, the watermark hash of the flows in hash
    /// slot `slot`: `{prefix}watermarks:{tag}`, with a tag of that slot
    /// ([`crate::slot::tag_for`]), so a flow key and its watermark are in
    /// one slot and one script can guard and write both.
    pub fn watermark_key_in(&self, slot: u16) -> String {
        format!("{}watermarks:{{{}}}", self.state_prefix, crate::slot::tag_for(slot))
    }

    /// On a cluster destination, the hash of the order of the event behind
    /// each flow's last index change: `{prefix}index-order:{tag}`, with a
    /// tag of the index key's slot ([`crate::slot::tag_for`]), so one script
    /// can guard and change both.
    pub fn index_order_key(&self) -> String {
        let slot = crate::slot::of(&self.index_key);
        format!("{}index-order:{{{}}}", self.state_prefix, crate::slot::tag_for(slot))
    }

    /// The fingerprint of the field rules the destination's copies were
    /// last all written under (a string; see [`crate::FieldRules`]): a
    /// process that starts with other rules rewrites every copy in its
    /// first pass, then stores its own.
    pub fn rules_key(&self) -> String {
        format!("{}rules", self.state_prefix)
    }

    /// The key of a named lease (`reconcile`, `capture`).
    pub fn lease_key(&self, name: LeaseName) -> String {
        format!("{}lease:{name}", self.state_prefix)
    }

    /// The counter capture increments on every gap (watched by the reconciler).
    pub fn gap_key(&self) -> String {
        format!("{}capture:gaps", self.state_prefix)
    }

    /// Capture's progress (`"{run} {received} {settled}"`, expiring), which
    /// the reconciler's barrier waits on.
    pub fn capture_progress_key(&self) -> String {
        format!("{}capture:progress", self.state_prefix)
    }

    /// The hold (a hash: `at_us`, `since_us`), present while a rewind holds
    /// the mirror at a point in time: apply writes nothing and reconcile
    /// repairs nothing until `redmirror resume` removes it.
    pub fn hold_key(&self) -> String {
        format!("{}hold", self.state_prefix)
    }

    /// Hash of apply instances that stopped writing for the current hold
    /// (member: instance id, value: the hold's `since_us`), so a rewind
    /// knows when live apply is out of its way.
    pub fn hold_acks_key(&self) -> String {
        format!("{}apply:held", self.state_prefix)
    }

    /// Sorted set of live apply instances (member: instance id, score: last
    /// heartbeat in ms), so a rewind can tell whether apply is running.
    pub fn apply_members_key(&self) -> String {
        format!("{}apply:members", self.state_prefix)
    }

    /// Counter of pass requests from `reconcile --once` runs that found
    /// the lease held: the holder runs a pass for each increment.
    pub fn reconcile_request_key(&self) -> String {
        format!("{}reconcile:requests", self.state_prefix)
    }

    /// The key under which the last reconcile report is kept.
    pub fn report_key(&self) -> String {
        format!("{}reconcile:last", self.state_prefix)
    }
}

/// The value of [`KeyLayout::capture_progress_key`]: which capture run,
/// how many changes it has received, and up to which one all are in Kafka.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureProgress {
    /// Tells one capture run from the next (numbers restart at 0).
    pub run: String,
    /// Changes received so far.
    pub received: u64,
    /// Every change up to this one is published and acknowledged.
    pub settled: u64,
}

impl CaptureProgress {
    /// `"{run} {received} {settled}"`.
    pub fn encode(&self) -> String {
        format!("{} {} {}", self.run, self.received, self.settled)
    }

    /// Reads [`CaptureProgress::encode`]'s form; `None` for anything else.
    pub fn parse(v: &str) -> Option<Self> {
        let mut parts = v.split_whitespace();
        let progress = CaptureProgress {
            run: parts.next()?.to_string(),
            received: parts.next()?.parse().ok()?,
            settled: parts.next()?.parse().ok()?,
        };
        parts.next().is_none().then_some(progress)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The index-order hash is in the index's slot, whatever the index is
    /// called.
    #[test]
    fn the_index_order_hash_shares_the_index_slot() {
        for index in [&b"clients"[..], b"{flows}index", b"a{}b", b"x{y", b"{"] {
            let keys = KeyLayout {
                index_key: Bytes::copy_from_slice(index),
                ..KeyLayout::default()
            };
            let order = keys.index_order_key();
            assert!(order.starts_with("redmirror:index-order:{"), "{order}");
            assert_eq!(crate::slot::of(order.as_bytes()), crate::slot::of(index), "{index:?}");
        }
    }

    #[test]
    fn capture_progress_is_run_received_settled() {
        let p = CaptureProgress {
            run: "ab12".into(),
            received: 10,
            settled: 7,
        };
        assert_eq!(p.encode(), "ab12 10 7");
        assert_eq!(CaptureProgress::parse("ab12 10 7"), Some(p));
        for bad in ["ab12 10", "ab12 x 7", "", "ab12 10 7 9"] {
            assert_eq!(CaptureProgress::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn flow_key_and_id_round_trip_binary() {
        let k = KeyLayout::default();
        let key = k.flow_key(b"\x00\xffid");
        assert_eq!(&key[..], b"client:\x00\xffid");
        assert_eq!(k.flow_id(&key), Some(&b"\x00\xffid"[..]));
        assert_eq!(k.flow_id(b"client:"), None);
        assert_eq!(k.flow_id(b"clients"), None);
        assert_eq!(k.flow_id(b"other:1"), None);
    }

    #[test]
    fn scan_pattern_escapes_globs() {
        let k = KeyLayout {
            flow_prefix: Bytes::from_static(b"c*[x]:"),
            ..KeyLayout::default()
        };
        assert_eq!(&k.scan_pattern()[..], b"c\\*\\[x\\]:*");
    }
}
