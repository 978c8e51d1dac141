//! The atomic source read: the source clock and the state of a batch of
//! flows in one read-only script, so every state comes with the instant it
//! was true at. Never writes (works for a read-only ACL user with
//! `+evalsha_ro +eval_ro +script|load`).

use bytes::Bytes;
use fred::prelude::*;
use fred::types::Value;
use redmirror_core::{KeyLayout, SourceFlow};

use crate::{value, Script};

const READ_FLOWS: &str = r#"#!lua flags=no-writes
local t = redis.call('TIME')
local out = {t[1], t[2]}
for i = 1, #KEYS do
  local ty = redis.call('TYPE', KEYS[i])['ok']
  if ty == 'hash' then
    out[#out + 1] = 'h'
    out[#out + 1] = redis.call('HGETALL', KEYS[i])
  elseif ty == 'none' then
    out[#out + 1] = 'n'
    out[#out + 1] = 0
  else
    out[#out + 1] = 'x'
    out[#out + 1] = 0
  end
end
return out
"#;

/// Reads flows from the source atomically together with its clock.
#[derive(Debug, Clone)]
pub struct SourceReader {
    script: Script,
    keys: KeyLayout,
}

/// One atomic read of a batch of flows.
#[derive(Debug, Clone)]
pub struct SourceRead {
    /// The source clock (TIME) at the read, microseconds.
    pub time_us: i64,
    /// `(flow id, state)` in the order asked.
    pub flows: Vec<(Bytes, SourceFlow)>,
}

impl SourceReader {
    /// A reader for this key layout.
    pub fn new(keys: KeyLayout) -> Self {
        SourceReader {
            script: Script::read_only(READ_FLOWS),
            keys,
        }
    }

    /// Reads these flows (by id) and the source time in one atomic step.
    pub async fn read(&self, client: &Client, ids: &[Bytes]) -> Result<SourceRead, fred::error::Error> {
        let keys: Vec<Bytes> = ids.iter().map(|id| self.keys.flow_key(id)).collect();
        let key_refs: Vec<&[u8]> = keys.iter().map(|k| k.as_ref()).collect();
        let reply = self.script.call(client, &key_refs, Vec::new()).await?;
        parse(reply, ids)
    }
}

fn parse(reply: Value, ids: &[Bytes]) -> Result<SourceRead, fred::error::Error> {
    let bad = || fred::error::Error::new(fred::error::ErrorKind::Parse, "unexpected reply from the read script");
    let Value::Array(items) = reply else {
        return Err(bad());
    };
    if items.len() != 2 + 2 * ids.len() {
        return Err(bad());
    }
    let mut it = items.into_iter();
    let secs: i64 = it.next().and_then(|v| v.as_i64()).ok_or_else(bad)?;
    let micros: i64 = it.next().and_then(|v| v.as_i64()).ok_or_else(bad)?;
    let mut flows = Vec::with_capacity(ids.len());
    for id in ids {
        let tag = it.next().and_then(|v| value::bytes(&v)).ok_or_else(bad)?;
        let body = it.next().ok_or_else(bad)?;
        let state = match tag.as_ref() {
            b"h" => SourceFlow::Hash(value::pairs(body)),
            b"n" => SourceFlow::Absent,
            _ => SourceFlow::NotAHash,
        };
        flows.push((id.clone(), state));
    }
    Ok(SourceRead {
        time_us: secs * 1_000_000 + micros,
        flows,
    })
}
