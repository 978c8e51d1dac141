//! Flow summaries for a pass. Digests read every flow of a batch with
//! pipelined `HGETALL` on both sides (at the same time, each on its own
//! bulk connections ([`Routed`]: one per master on a cluster), replies parsed in place) and reduce each to its
//! state and a SHA-1 of its canonical content here, in the client: plain
//! `HGETALL` costs Redis about a third of what a digest script did (no Lua
//! tables, no string building inside the server), and the hashing runs on
//! the client's core instead of the two Redis cores. States (phases 2 and
//! 3, where content does not matter) stay a small read-only script per
//! batch ([`DestReader::states`]). Only flows whose summaries differ are
//! read again in full (atomically, with the source clock) and repaired.
//!
//! A summary is typed: [`SourceSummary`] on the source, a
//! [`DestFlow`] of [`Digest`] on the destination.

use bytes::Bytes;
use fred::prelude::*;
use redmirror_core::diff::DestFlow;
use redmirror_core::{KeyLayout, MirrorRules};
use redmirror_redis::bulk::{Pipeline, Reply};
use redmirror_redis::routed::Routed;

use crate::dest_read::{DestRead, DestReader, ReadError};

/// SHA-1 of a flow's canonical content (see `digest`): equal digests
/// mean equal content, in any field order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digest(pub [u8; 20]);

/// A source flow's summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceSummary {
    /// No key.
    Absent,
    /// A key of another type (treated as absent).
    NotAHash,
    /// A filtered organisation's flow: no copy may exist.
    Filtered,
    /// A flow to mirror, with the digest of the fields its copy must have.
    Copy(Digest),
}

/// A destination flow's summary: its state, a sync copy with the digest
/// of its fields without the marker.
pub type DestSummary = DestRead<Digest>;

/// Reads flow summaries on either side.
#[derive(Debug, Clone)]
pub struct Digests {
    reader: DestReader,
    keys: KeyLayout,
    rules: MirrorRules,
}

impl Digests {
    /// Readers for this layout and these rules.
    pub fn new(keys: KeyLayout, rules: &MirrorRules) -> Self {
        Digests {
            reader: DestReader::new(keys.clone(), rules),
            keys,
            rules: rules.clone(),
        }
    }

    /// Source summaries of these flows (on a cluster, each read on the
    /// master owning it).
    pub async fn source(&self, bulk: &Routed, ids: &[Bytes]) -> Result<Vec<SourceSummary>, fred::error::Error> {
        let r = self
            .hashes(bulk, ids, |h| match h {
                None => SourceSummary::NotAHash,
                Some(p) if p.is_empty() => SourceSummary::Absent,
                Some(p) if self.rules.is_filtered(&p) => SourceSummary::Filtered,
                Some(p) => SourceSummary::Copy(self.source_digest(p)),
            })
            .await;
        if let Err(e) = &r {
            bulk.refresh_after(e).await;
        }
        r
    }

    /// The digest of the copy a source flow must have: its fields after
    /// the field rules (SPEC section 8), without the source's marker. Only
    /// masked values are allocated; without masks the reply is read in place.
    fn source_digest(&self, fields: Vec<(&[u8], &[u8])>) -> Digest {
        let rules = &self.rules;
        let kept = fields.into_iter().filter(|(n, _)| !rules.is_stripped(n));
        if rules.fields.masks_nothing() {
            return digest(kept);
        }
        let masked: Vec<(&[u8], std::borrow::Cow<'_, [u8]>)> =
            kept.map(|(n, v)| (n, rules.fields.value(n, v))).collect();
        digest(masked.iter().map(|(n, v)| (*n, v.as_ref())))
    }

    /// `HGETALL` of each flow, pipelined per master, each reply reduced by
    /// `summary` (`None`: not a hash) in place.
    async fn hashes<T>(
        &self,
        bulk: &Routed,
        ids: &[Bytes],
        summary: impl Fn(Option<Vec<(&[u8], &[u8])>>) -> T,
    ) -> Result<Vec<T>, fred::error::Error> {
        let flow_keys: Vec<Bytes> = ids.iter().map(|id| self.keys.flow_key(id)).collect();
        let (flow_keys, summary) = (&flow_keys, &summary);
        bulk.scatter(flow_keys, |node, positions| async move {
            let mut pipe = Pipeline::new();
            for &p in &positions {
                pipe.key_cmd(b"HGETALL", &flow_keys[p]);
            }
            let mut out = Vec::with_capacity(positions.len());
            let mut failed = None;
            node.run(&pipe, |_, reply| out.push(summary(hash_reply(reply, &mut failed))))
                .await?;
            match failed {
                Some(e) => Err(e),
                None => Ok(out),
            }
        })
        .await
    }

    /// Destination summaries of these flows, with the index entry; a sync
    /// copy's digest is of the copy without its marker. Watermarks are not
    /// read (the comparison does not need them): `watermarked` is false.
    /// The flows and the index entries are read at the same time (on a
    /// cluster, on the masters owning them).
    pub async fn dest(&self, bulk: &Routed, ids: &[Bytes]) -> Result<Vec<DestSummary>, fred::error::Error> {
        let marker = &self.rules.marker_field;
        let flows = self.hashes(bulk, ids, |h| DestSummary {
            flow: match h {
                None => DestFlow::WrongType,
                Some(p) if p.is_empty() => DestFlow::Absent,
                Some(p) if self.rules.is_sync_copy(&p) => {
                    DestFlow::SyncCopy(digest(p.into_iter().filter(|(n, _)| *n != marker.as_ref())))
                }
                Some(_) => DestFlow::Native,
            },
            indexed: false,
            watermarked: false,
        });
        let index = async {
            // One HMGET for the index entries.
            let node = bulk.for_key(&self.keys.index_key).await?;
            let mut pipe = Pipeline::new();
            pipe.key_cmd_with(b"HMGET", &self.keys.index_key, ids);
            let mut flags = Err(bad());
            node.run(&pipe, |_, reply| {
                flags = match reply {
                    Reply::Array(f) if f.len() == ids.len() => {
                        Ok(f.iter().map(|f| *f != Reply::Nil).collect::<Vec<_>>())
                    }
                    Reply::Error(e) => Err(server_error(e)),
                    _ => Err(bad()),
                }
            })
            .await?;
            flags
        };
        let r = match tokio::join!(flows, index) {
            (Ok(mut out), Ok(flags)) => {
                for (summary, flag) in out.iter_mut().zip(flags) {
                    summary.indexed = flag;
                }
                Ok(out)
            }
            (Err(e), _) | (_, Err(e)) => Err(e),
        };
        if let Err(e) = &r {
            bulk.refresh_after(e).await;
        }
        r
    }

    /// Destination states of these flows (a read-only script; no content).
    pub async fn dest_states(&self, client: &Client, ids: &[Bytes]) -> Result<Vec<DestRead<()>>, ReadError> {
        self.reader.states(client, ids).await
    }
}

/// Which flows of `ids` have no key on this side. One multi-key `EXISTS`
/// answers the usual case (every key exists) in a single command; only a
/// batch with a gap is asked again key by key (anything but 1 counts as
/// absent, and the caller then reads the full state). On a cluster (where
/// a multi-key command may not span slots) every key is asked alone, on
/// the master owning it.
pub async fn without_copy(bulk: &Routed, keys: &KeyLayout, ids: &[Bytes]) -> Result<Vec<Bytes>, fred::error::Error> {
    let r = without_copy_on(bulk, keys, ids).await;
    if let Err(e) = &r {
        bulk.refresh_after(e).await;
    }
    r
}

async fn without_copy_on(bulk: &Routed, keys: &KeyLayout, ids: &[Bytes]) -> Result<Vec<Bytes>, fred::error::Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let flow_keys: Vec<Bytes> = ids.iter().map(|id| keys.flow_key(id)).collect();
    if bulk.cluster().await?.is_none() {
        // EXISTS counts a repeated key each time: ask for each key once.
        let distinct: std::collections::HashSet<&Bytes> = flow_keys.iter().collect();
        let asked = distinct.len() as i64;
        let mut args: Vec<&[u8]> = Vec::with_capacity(1 + distinct.len());
        args.push(b"EXISTS");
        args.extend(distinct.into_iter().map(|k| k.as_ref()));
        let mut pipe = Pipeline::new();
        pipe.cmd(&args);
        let mut present = Err(bad());
        bulk.for_key(&flow_keys[0])
            .await?
            .run(&pipe, |_, reply| {
                present = match reply {
                    Reply::Int(n) => Ok(n),
                    Reply::Error(e) => Err(server_error(e)),
                    _ => Err(bad()),
                }
            })
            .await?;
        if present? == asked {
            return Ok(Vec::new());
        }
    }
    let present = bulk
        .scatter(&flow_keys, |node, positions| {
            let flow_keys = &flow_keys;
            async move {
                let mut pipe = Pipeline::new();
                for &p in &positions {
                    pipe.key_cmd(b"EXISTS", &flow_keys[p]);
                }
                let mut out = Vec::with_capacity(positions.len());
                let mut failed = None;
                node.run(&pipe, |_, reply| match reply {
                    Reply::Int(1) => out.push(true),
                    Reply::Error(e) => {
                        failed.get_or_insert(server_error(e));
                        out.push(true);
                    }
                    _ => out.push(false),
                })
                .await?;
                match failed {
                    Some(e) => Err(e),
                    None => Ok(out),
                }
            }
        })
        .await?;
    Ok(ids
        .iter()
        .zip(present)
        .filter(|(_, p)| !p)
        .map(|(id, _)| id.clone())
        .collect())
}

/// An `HGETALL` reply as borrowed (name, value) pairs; `None` when it is
/// not a hash (`WRONGTYPE`, which is a state, not a failure). Any other
/// error reply is kept in `failed`.
fn hash_reply<'a>(reply: Reply<'a>, failed: &mut Option<fred::error::Error>) -> Option<Vec<(&'a [u8], &'a [u8])>> {
    match reply {
        Reply::Array(items) if items.len() % 2 == 0 => items
            .chunks_exact(2)
            .map(|c| match c {
                [Reply::Str(n), Reply::Str(v)] => Some((*n, *v)),
                _ => None,
            })
            .collect(),
        Reply::Error(e) if e.starts_with(b"WRONGTYPE") => None,
        Reply::Error(e) => {
            failed.get_or_insert(server_error(e));
            None
        }
        _ => None,
    }
}

/// An error reply as a fred error (so it is classified like fred's own).
fn server_error(e: &[u8]) -> fred::error::Error {
    fred::error::Error::new(fred::error::ErrorKind::Unknown, String::from_utf8_lossy(e).into_owned())
}

/// SHA-1 of the fields sorted by name, each name and value
/// length-prefixed: equal digests mean equal content, in any field order.
/// (RustCrypto's `sha1` uses the CPU's SHA instructions where it has them:
/// hashing was 40 % of a pass's client CPU with a portable SHA-1.)
fn digest<'a>(fields: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> Digest {
    use sha1::Digest as _;
    let mut fields: Vec<(&[u8], &[u8])> = fields.collect();
    fields.sort_unstable();
    let mut h = sha1::Sha1::new();
    for (n, v) in fields {
        h.update((n.len() as u64).to_le_bytes());
        h.update(n);
        h.update((v.len() as u64).to_le_bytes());
        h.update(v);
    }
    Digest(h.finalize().into())
}

fn bad() -> fred::error::Error {
    fred::error::Error::new(fred::error::ErrorKind::Parse, "unexpected reply to a digest read")
}

/// True when the summaries say the flow needs a closer look (drift likely).
pub fn suspicious(src: &SourceSummary, dst: &DestSummary) -> bool {
    match (&dst.flow, src) {
        (DestFlow::Native | DestFlow::WrongType, _) => false,
        (DestFlow::Absent, SourceSummary::Copy(_)) => true,
        (DestFlow::Absent, _) => false,
        (DestFlow::SyncCopy(have), SourceSummary::Copy(want)) => have != want || !dst.indexed,
        (DestFlow::SyncCopy(_), _) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(pairs: &[(&[u8], &[u8])]) -> Digest {
        digest(pairs.iter().copied())
    }

    #[test]
    fn only_a_copy_that_may_be_wrong_is_suspicious() {
        let (a, b) = (d(&[(b"a", b"1")]), d(&[(b"a", b"2")]));
        let dst = |flow, indexed| DestSummary {
            flow,
            indexed,
            watermarked: false,
        };
        let copy = SourceSummary::Copy(a);
        assert!(!suspicious(&copy, &dst(DestFlow::SyncCopy(a), true)));
        assert!(
            suspicious(&copy, &dst(DestFlow::SyncCopy(a), false)),
            "index entry missing"
        );
        assert!(suspicious(&copy, &dst(DestFlow::SyncCopy(b), true)));
        assert!(suspicious(&copy, &dst(DestFlow::Absent, false)));
        for gone in [SourceSummary::Absent, SourceSummary::NotAHash, SourceSummary::Filtered] {
            assert!(suspicious(&gone, &dst(DestFlow::SyncCopy(a), true)));
            assert!(!suspicious(&gone, &dst(DestFlow::Absent, false)));
        }
        for any in [copy, SourceSummary::Absent, SourceSummary::Filtered] {
            assert!(!suspicious(&any, &dst(DestFlow::Native, true)));
            assert!(!suspicious(&any, &dst(DestFlow::WrongType, false)));
        }
    }

    #[test]
    fn digest_ignores_field_order() {
        assert_eq!(d(&[(b"a", b"1"), (b"b", b"2")]), d(&[(b"b", b"2"), (b"a", b"1")]));
    }

    #[test]
    fn digest_separates_names_from_values() {
        // Without length prefixes these would all concatenate to "ab1".
        let all = [
            d(&[(b"ab", b"1")]),
            d(&[(b"a", b"b1")]),
            d(&[(b"a", b"b"), (b"1", b"")]),
            d(&[(b"", b"ab1")]),
        ];
        for (i, x) in all.iter().enumerate() {
            for y in &all[i + 1..] {
                assert_ne!(x, y);
            }
        }
        assert_ne!(d(&[]), d(&[(b"", b"")]));
    }

    #[test]
    fn hgetall_replies_become_pairs() {
        let mut failed = None;
        let arr = Reply::Array(vec![Reply::Str(b"\xff"), Reply::Str(b"v")]);
        assert_eq!(hash_reply(arr, &mut failed), Some(vec![(&b"\xff"[..], &b"v"[..])]));
        assert_eq!(hash_reply(Reply::Array(vec![]), &mut failed), Some(vec![]));
        assert_eq!(hash_reply(Reply::Int(3), &mut failed), None);
        assert_eq!(hash_reply(Reply::Error(b"WRONGTYPE Operation"), &mut failed), None);
        assert!(failed.is_none(), "WRONGTYPE is a state");
        assert_eq!(hash_reply(Reply::Error(b"LOADING Redis is loading"), &mut failed), None);
        assert!(failed.is_some_and(|e| e.details().starts_with("LOADING")));
    }
}
