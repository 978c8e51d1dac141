//! Reading destination flows as the guard sees them: one read-only script
//! (`dest_read.lua`, after the guard fragment `flow.lua` of
//! `redmirror_redis`) per batch, behind a typed wrapper: flow ids in, a
//! [`DestRead`] per flow out, any other reply an error.
//!
//! On a Redis Cluster the script may touch one slot only: the ids are
//! grouped by the slot of their flow key, each group read by one call
//! against that slot's watermark hash (`KeyLayout::watermark_key_in`), and
//! the index entries read apart with one `HMGET`, sent at the same time; the
//! results come back in the order of the ids.
//!
//! # Contract
//! The script's reply, four items per flow: state (`n` absent, `x` not a
//! hash, `v` native, `s` sync copy), the copy's fields (`HGETALL`, only for
//! `s` and only when asked; else 0), index entry present (0/1), watermark
//! present (0/1). It reads `redmirror:` watermarks (see
//! `redmirror_core::keys`) and never writes.

use std::collections::BTreeMap;

use bytes::Bytes;
use fred::prelude::*;
use fred::types::{CustomCommand, Value};
use redmirror_core::diff::DestFlow;
use redmirror_core::rules::MARKER_VALUE;
use redmirror_core::{slot, Fields, KeyLayout, MirrorRules};
use redmirror_redis::{value, Script};

use crate::error::{kind, PassError, Side};

/// The script body: read-only, the guard fragment, then the reads.
const DEST_READ: &str = concat!(
    "#!lua flags=no-writes\n",
    include_str!("../../redis/src/flow.lua"),
    include_str!("dest_read.lua")
);

/// One destination flow: its state (with content `C`: the copy's fields,
/// a digest, or `()` when only the state was read), whether the index has
/// it, and whether the mirror has written it before (a watermark exists).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestRead<C> {
    /// What the flow key holds.
    pub flow: DestFlow<C>,
    /// The index has the flow.
    pub indexed: bool,
    /// A watermark exists (the mirror has written this flow before).
    pub watermarked: bool,
}

/// Why a destination read failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The destination failed.
    #[error(transparent)]
    Redis(#[from] fred::error::Error),
    /// The reply did not have the shape the script promises.
    #[error("unexpected reply from the destination read script: {0}")]
    Malformed(String),
}

impl From<ReadError> for PassError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Redis(source) => PassError::Redis {
                side: Side::Destination,
                source,
            },
            ReadError::Malformed(detail) => PassError::Malformed {
                side: Side::Destination,
                command: "the destination read script",
                detail,
            },
        }
    }
}

/// What one call asks for.
#[derive(Clone, Copy)]
struct ReadArgs<'a> {
    /// The flows.
    ids: &'a [Bytes],
    /// Read the fields of sync copies too.
    with_fields: bool,
}

/// Reads destination flows for this layout and these rules.
#[derive(Debug, Clone)]
pub struct DestReader {
    script: Script,
    keys: KeyLayout,
    marker_field: Bytes,
}

impl DestReader {
    /// A reader for this layout and these rules.
    pub fn new(keys: KeyLayout, rules: &MirrorRules) -> Self {
        DestReader {
            script: Script::read_only(DEST_READ),
            keys,
            marker_field: rules.marker_field.clone(),
        }
    }

    /// The state of each flow, without content.
    pub async fn states(&self, client: &Client, ids: &[Bytes]) -> Result<Vec<DestRead<()>>, ReadError> {
        self.read(
            client,
            ReadArgs {
                ids,
                with_fields: false,
            },
            |_| Ok(()),
        )
        .await
    }

    /// Each flow with the fields of its sync copy (marker included).
    pub async fn flows(&self, client: &Client, ids: &[Bytes]) -> Result<Vec<DestRead<Fields>>, ReadError> {
        self.read(client, ReadArgs { ids, with_fields: true }, |body| match body {
            Value::Array(_) => Ok(value::pairs(body.clone())),
            other => Err(format!("a sync copy's fields are {}, not an array", kind(other))),
        })
        .await
    }

    /// One script call on a standalone destination; on a cluster, one call
    /// per slot (pipelined) and the index entries read apart (`HMGET`),
    /// merged back in the order of `ids`.
    async fn read<C>(
        &self,
        client: &Client,
        args: ReadArgs<'_>,
        content: impl Fn(&Value) -> Result<C, String>,
    ) -> Result<Vec<DestRead<C>>, ReadError> {
        if args.ids.is_empty() {
            return Ok(Vec::new());
        }
        if !redmirror_redis::is_cluster(client) {
            let reply = self.call(client, args).await?;
            return parse(reply, args.ids.len(), content).map_err(ReadError::Malformed);
        }
        // Slot → positions in `ids`, in order.
        let mut groups: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
        for (i, id) in args.ids.iter().enumerate() {
            groups.entry(slot::of(&self.keys.flow_key(id))).or_default().push(i);
        }
        let calls = groups
            .iter()
            .map(|(&slot, positions)| {
                let mut keys = Vec::with_capacity(1 + positions.len());
                keys.push(Bytes::from(self.keys.watermark_key_in(slot)));
                keys.extend(positions.iter().map(|&i| self.keys.flow_key(&args.ids[i])));
                let ids = positions.iter().map(|&i| args.ids[i].clone());
                (keys, self.argv(args.with_fields, "s", ids))
            })
            .collect();
        let (replies, indexed) = tokio::join!(
            self.script.call_all(client, calls),
            index_entries(client, &self.keys, args.ids)
        );
        let (replies, indexed) = (replies?, indexed?);
        let mut out: Vec<Option<DestRead<C>>> = (0..args.ids.len()).map(|_| None).collect();
        for ((_, positions), reply) in groups.iter().zip(replies) {
            let reads = parse(reply, positions.len(), &content).map_err(ReadError::Malformed)?;
            for (&i, mut read) in positions.iter().zip(reads) {
                read.indexed = indexed[i];
                out[i] = Some(read);
            }
        }
        Ok(out
            .into_iter()
            .map(|r| r.expect("every id is in one slot's call"))
            .collect())
    }

    /// The script's arguments: marker, marker value, with_fields, mode, ids.
    fn argv(&self, with_fields: bool, mode: &'static str, ids: impl Iterator<Item = Bytes>) -> Vec<Value> {
        let mut argv = vec![
            Value::Bytes(self.marker_field.clone()),
            Value::Bytes(Bytes::from_static(MARKER_VALUE)),
            Value::from(if with_fields { "1" } else { "0" }),
            Value::from(mode),
        ];
        argv.extend(ids.map(Value::Bytes));
        argv
    }

    async fn call(&self, client: &Client, args: ReadArgs<'_>) -> Result<Value, fred::error::Error> {
        let flow_keys: Vec<Bytes> = args.ids.iter().map(|id| self.keys.flow_key(id)).collect();
        let wm = self.keys.watermark_key();
        let mut keys: Vec<&[u8]> = Vec::with_capacity(2 + flow_keys.len());
        keys.extend([self.keys.index_key.as_ref(), wm.as_bytes()]);
        keys.extend(flow_keys.iter().map(|k| k.as_ref()));
        let argv = self.argv(args.with_fields, "i", args.ids.iter().cloned());
        self.script.call(client, &keys, argv).await
    }
}

/// Whether the index has each of `ids` (`HMGET` of the index, one command:
/// the index is one key, in one slot).
pub(crate) async fn index_entries(client: &Client, keys: &KeyLayout, ids: &[Bytes]) -> Result<Vec<bool>, ReadError> {
    let mut args = Vec::with_capacity(1 + ids.len());
    args.push(Value::Bytes(keys.index_key.clone()));
    args.extend(ids.iter().cloned().map(Value::Bytes));
    let reply: Value = client
        .custom(
            CustomCommand::new_static("HMGET", fred::types::ClusterHash::FirstKey, false),
            args,
        )
        .await?;
    match reply {
        Value::Array(items) if items.len() == ids.len() => Ok(items.iter().map(|v| !v.is_null()).collect()),
        other => Err(ReadError::Malformed(format!(
            "HMGET of the index replied {} for {} flows",
            kind(&other),
            ids.len()
        ))),
    }
}

/// The script's reply for `n` flows; `content` reads a sync copy's body.
fn parse<C>(reply: Value, n: usize, content: impl Fn(&Value) -> Result<C, String>) -> Result<Vec<DestRead<C>>, String> {
    let Value::Array(items) = reply else {
        return Err(format!("expected an array, got {}", kind(&reply)));
    };
    if items.len() != 4 * n {
        return Err(format!("{} items for {n} flows (want {})", items.len(), 4 * n));
    }
    let flag = |v: &Value| match v {
        Value::Integer(0) => Ok(false),
        Value::Integer(1) => Ok(true),
        _ => Err(format!("expected 0 or 1, got {v:?}")),
    };
    items
        .chunks_exact(4)
        .map(|chunk| {
            let [tag, body, indexed, watermarked] = chunk else {
                unreachable!("chunks of four");
            };
            let flow = match value::bytes(tag).as_deref() {
                Some(b"n") => DestFlow::Absent,
                Some(b"x") => DestFlow::WrongType,
                Some(b"v") => DestFlow::Native,
                Some(b"s") => DestFlow::SyncCopy(content(body)?),
                _ => return Err(format!("unknown state tag {tag:?}")),
            };
            Ok(DestRead {
                flow,
                indexed: flag(indexed)?,
                watermarked: flag(watermarked)?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Value {
        Value::Bytes(Bytes::copy_from_slice(s.as_bytes()))
    }

    fn fields(body: &Value) -> Result<Fields, String> {
        match body {
            Value::Array(_) => Ok(value::pairs(body.clone())),
            other => Err(format!("{other:?}")),
        }
    }

    #[test]
    fn a_destination_read_of_any_other_shape_is_an_error() {
        let good = Value::Array(vec![
            b("s"),
            Value::Array(vec![b("isSyncCopy"), b("true")]),
            Value::Integer(1),
            Value::Integer(0),
            b("n"),
            Value::Integer(0),
            Value::Integer(0),
            Value::Integer(1),
            b("v"),
            Value::Integer(0),
            Value::Integer(0),
            Value::Integer(0),
        ]);
        let got = parse(good, 3, fields).expect("well-formed");
        assert!(matches!(
            got[0],
            DestRead {
                flow: DestFlow::SyncCopy(_),
                indexed: true,
                watermarked: false
            }
        ));
        assert_eq!(
            got[1],
            DestRead {
                flow: DestFlow::Absent,
                indexed: false,
                watermarked: true
            }
        );
        assert_eq!(got[2].flow, DestFlow::Native);
        let one = |tag: Value, body: Value, i: Value, w: Value| Value::Array(vec![tag, body, i, w]);
        let zero = || Value::Integer(0);
        for (bad, n) in [
            (Value::Null, 1),
            (b("OK"), 1),
            (Value::Array(vec![]), 1),
            (one(b("n"), zero(), zero(), zero()), 2),
            (Value::Array(vec![b("n"), zero(), zero()]), 1),
            (one(b("q"), zero(), zero(), zero()), 1),
            (one(b("h"), zero(), zero(), zero()), 1),
            (one(Value::Null, zero(), zero(), zero()), 1),
            (one(b("s"), Value::Null, zero(), zero()), 1),
            (one(b("n"), zero(), Value::Integer(7), zero()), 1),
            (one(b("n"), zero(), zero(), b("yes")), 1),
            (one(b("n"), zero(), zero(), b("1")), 1),
        ] {
            assert!(
                parse(bad.clone(), n, fields).is_err(),
                "{bad:?} for {n} flows was accepted"
            );
        }
    }

    #[test]
    fn the_script_is_read_only_and_takes_the_marker_value() {
        assert!(DEST_READ.starts_with("#!lua flags=no-writes\n-- flow.lua"));
        assert!(!DEST_READ.contains("'true'"), "the marker value is an argument");
    }
}
