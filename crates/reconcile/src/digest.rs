//! Server-side digests: each side reduces a flow to its state and a SHA-1
//! of its canonical content inside Redis, so a pass moves about 40 bytes per
//! flow instead of the whole hash. Only flows whose digests differ are read
//! in full (atomically, with the source clock) and repaired.

use bytes::Bytes;
use fred::prelude::*;
use fred::types::Value;
use redmirror_core::{KeyLayout, MirrorRules};
use redmirror_redis::{value, Script};

/// Source side. ARGV: mode (`d` digest, `s` state only), marker field, org
/// field, number of excluded fields, excluded fields..., filtered orgs...
/// Reply per key: `n` absent, `x` not a hash, `f` filtered organisation,
/// `h` a hash (state mode) or `d` + SHA-1 of the kept fields (digest mode).
///
/// The digest takes the fields in the server's order (no sort: sorting
/// costs more than the rest). Small hashes keep insertion order and apply
/// writes a copy in the order capture read it, so orders agree; where they
/// do not, the flow only gets a full comparison it did not need. Equal
/// digests always mean equal content.
const SOURCE: &str = r#"#!lua flags=no-writes
local mode, marker, orgf = ARGV[1], ARGV[2], ARGV[3]
local nex = tonumber(ARGV[4])
local skip = {[marker] = true}
for i = 5, 4 + nex do skip[ARGV[i]] = true end
local filtered = {}
for i = 5 + nex, #ARGV do filtered[ARGV[i]] = true end
-- Length prefixes make the digest unambiguous; number formatting is slow,
-- so small lengths come from a table.
local L = {}
if mode == 'd' then for i = 0, 1023 do L[i] = tostring(i) end end
local out = {}
for i = 1, #KEYS do
  if mode == 's' then
    local org = redis.pcall('HGET', KEYS[i], orgf)
    if type(org) == 'table' and org['err'] then out[i] = 'x'
    elseif org and filtered[org] then out[i] = 'f'
    elseif redis.call('EXISTS', KEYS[i]) == 1 then out[i] = 'h'
    else out[i] = 'n' end
  else
    local h = redis.pcall('HGETALL', KEYS[i])
    if h['err'] then out[i] = 'x'
    elseif #h == 0 then out[i] = 'n'
    else
      local parts, isf = {}, false
      for j = 1, #h, 2 do
        local n, v = h[j], h[j + 1]
        if n == orgf and filtered[v] then isf = true end
        if not skip[n] then
          local k = #parts
          parts[k + 1] = L[#n] or tostring(#n)
          parts[k + 2] = n
          parts[k + 3] = L[#v] or tostring(#v)
          parts[k + 4] = v
        end
      end
      if isf then out[i] = 'f' else out[i] = 'd' .. redis.sha1hex(table.concat(parts, ':')) end
    end
  end
end
return out
"#;

/// Destination side. KEYS: index, watermarks, flow keys...; ARGV: mode,
/// marker field, flow ids... Reply per key, three items: state (`n` absent,
/// `x` not a hash, `v` native, `s` sync copy, or in digest mode `d` + SHA-1
/// of the copy without the marker), index entry present (0/1), watermark
/// present (0/1).
const DEST: &str = r#"#!lua flags=no-writes
local mode, marker = ARGV[1], ARGV[2]
local L = {}
if mode == 'd' then for i = 0, 1023 do L[i] = tostring(i) end end
local out = {}
for i = 3, #KEYS do
  local id = ARGV[i]
  local st
  if mode == 's' then
    local m = redis.pcall('HGET', KEYS[i], marker)
    if type(m) == 'table' and m['err'] then st = 'x'
    elseif m == 'true' then st = 's'
    elseif redis.call('EXISTS', KEYS[i]) == 1 then st = 'v'
    else st = 'n' end
  else
    local h = redis.pcall('HGETALL', KEYS[i])
    if h['err'] then st = 'x'
    elseif #h == 0 then st = 'n'
    else
      local parts, sync = {}, false
      for j = 1, #h, 2 do
        local n, v = h[j], h[j + 1]
        if n == marker then sync = (v == 'true')
        else
          local k = #parts
          parts[k + 1] = L[#n] or tostring(#n)
          parts[k + 2] = n
          parts[k + 3] = L[#v] or tostring(#v)
          parts[k + 4] = v
        end
      end
      if sync then st = 'd' .. redis.sha1hex(table.concat(parts, ':')) else st = 'v' end
    end
  end
  out[#out + 1] = st
  out[#out + 1] = redis.call('HEXISTS', KEYS[1], id)
  out[#out + 1] = redis.call('HEXISTS', KEYS[2], id)
end
return out
"#;

/// Digest or state only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// States and content digests.
    Digest,
    /// States only (cheaper).
    State,
}

impl Mode {
    fn arg(self) -> &'static str {
        match self {
            Mode::Digest => "d",
            Mode::State => "s",
        }
    }
}

/// A destination flow's summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestSummary {
    /// `n`, `x`, `v`, `s` or `d...`.
    pub state: Bytes,
    /// The index has the flow.
    pub indexed: bool,
    /// A watermark exists (the mirror has written this flow before).
    pub watermarked: bool,
}

/// Runs the digest scripts.
#[derive(Debug, Clone)]
pub struct Digests {
    source: Script,
    dest: Script,
    keys: KeyLayout,
    source_args: Vec<Value>,
}

impl Digests {
    /// Scripts for this layout and these rules.
    pub fn new(keys: KeyLayout, rules: &MirrorRules) -> Self {
        let mut source_args = vec![
            Value::Bytes(rules.marker_field.clone()),
            Value::Bytes(rules.org_field.clone()),
            Value::from(rules.excluded_fields.len() as i64),
        ];
        source_args.extend(rules.excluded_fields.iter().cloned().map(Value::Bytes));
        source_args.extend(rules.filtered_orgs.iter().cloned().map(Value::Bytes));
        Digests {
            source: Script::read_only(SOURCE),
            dest: Script::read_only(DEST),
            keys,
            source_args,
        }
    }

    /// Source summaries of these flows.
    pub async fn source(&self, client: &Client, ids: &[Bytes], mode: Mode) -> Result<Vec<Bytes>, fred::error::Error> {
        let keys: Vec<Bytes> = ids.iter().map(|id| self.keys.flow_key(id)).collect();
        let refs: Vec<&[u8]> = keys.iter().map(|k| k.as_ref()).collect();
        let mut args = Vec::with_capacity(1 + self.source_args.len());
        args.push(Value::from(mode.arg()));
        args.extend(self.source_args.iter().cloned());
        let reply = self.source.call(client, &refs, args).await?;
        let Value::Array(items) = reply else { return Err(bad()) };
        if items.len() != ids.len() {
            return Err(bad());
        }
        Ok(items.iter().map(|v| value::bytes(v).unwrap_or_default()).collect())
    }

    /// Destination summaries of these flows.
    pub async fn dest(
        &self,
        client: &Client,
        marker: &Bytes,
        ids: &[Bytes],
        mode: Mode,
    ) -> Result<Vec<DestSummary>, fred::error::Error> {
        let flow_keys: Vec<Bytes> = ids.iter().map(|id| self.keys.flow_key(id)).collect();
        let wm = self.keys.watermark_key();
        let mut refs: Vec<&[u8]> = vec![&self.keys.index_key, wm.as_bytes()];
        refs.extend(flow_keys.iter().map(|k| k.as_ref()));
        let mut args = vec![Value::from(mode.arg()), Value::Bytes(marker.clone())];
        args.extend(ids.iter().cloned().map(Value::Bytes));
        let reply = self.dest.call(client, &refs, args).await?;
        let Value::Array(items) = reply else { return Err(bad()) };
        if items.len() != 3 * ids.len() {
            return Err(bad());
        }
        Ok(items
            .chunks_exact(3)
            .map(|c| DestSummary {
                state: value::bytes(&c[0]).unwrap_or_default(),
                indexed: c[1].as_i64() == Some(1),
                watermarked: c[2].as_i64() == Some(1),
            })
            .collect())
    }
}

fn bad() -> fred::error::Error {
    fred::error::Error::new(fred::error::ErrorKind::Parse, "unexpected reply from a digest script")
}

/// True when the summaries say the flow needs a closer look (drift likely).
pub fn suspicious(src: &[u8], dst: &DestSummary) -> bool {
    let expect_copy = src.first() == Some(&b'd');
    match dst.state.first() {
        Some(b'v') | Some(b'x') => false,
        Some(b'n') => expect_copy,
        Some(b'd') | Some(b's') => !expect_copy || src[1..] != dst.state[1..] || !dst.indexed,
        _ => expect_copy,
    }
}
