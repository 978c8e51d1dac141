//! Converting fred values.

use bytes::Bytes;
use fred::types::Value;

/// The bytes of a string-like value (bulk string, simple string, number).
pub fn bytes(v: &Value) -> Option<Bytes> {
    match v {
        Value::Bytes(b) => Some(b.clone()),
        Value::String(s) => Some(s.inner().clone()),
        Value::Integer(i) => Some(Bytes::from(i.to_string())),
        Value::Double(d) => Some(Bytes::from(d.to_string())),
        _ => None,
    }
}

/// A flat `[name, value, name, value, ...]` array as pairs.
pub fn pairs(v: Value) -> redmirror_core::Fields {
    match v {
        Value::Array(items) => items
            .chunks_exact(2)
            .filter_map(|c| Some((bytes(&c[0])?, bytes(&c[1])?)))
            .collect(),
        Value::Map(m) => m
            .inner()
            .into_iter()
            .filter_map(|(k, v)| Some((k.into_bytes(), bytes(&v)?)))
            .collect(),
        _ => Vec::new(),
    }
}

/// A `name:value` line of an `INFO` reply.
pub fn info_field(info: &[u8], name: &str) -> Option<String> {
    std::str::from_utf8(info).ok()?.lines().find_map(|l| {
        l.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(':'))
            .map(|v| v.trim().to_string())
    })
}
