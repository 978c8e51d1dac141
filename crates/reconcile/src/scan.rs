//! Cursor reads (`HSCAN`) shared by the pass and the pruning, with the
//! reply checks that keep a malformed reply from ending a scan early.

use bytes::Bytes;
use fred::prelude::*;
use fred::types::{CustomCommand, Value};
use redmirror_redis::value;

use crate::error::{kind, malformed, on, PassError, Side};

/// One `HSCAN` step on the destination: the next cursor and the
/// field/value pairs of this page.
pub(crate) async fn hscan_pairs(
    client: &Client,
    key: &Bytes,
    cursor: &Bytes,
    count: usize,
) -> Result<(Bytes, Vec<(Bytes, Bytes)>), PassError> {
    let v: Value = client
        .custom(
            CustomCommand::new_static("HSCAN", fred::types::ClusterHash::FirstKey, false),
            vec![
                Value::Bytes(key.clone()),
                Value::Bytes(cursor.clone()),
                Value::from("COUNT"),
                Value::from(count as i64),
            ],
        )
        .await
        .map_err(on(Side::Destination))?;
    let (next, flat) = cursor_reply(v).map_err(malformed(Side::Destination, "HSCAN"))?;
    if flat.len() % 2 != 0 {
        return Err(PassError::Malformed {
            side: Side::Destination,
            command: "HSCAN",
            detail: format!("{} items, not field/value pairs", flat.len()),
        });
    }
    let mut items = flat.into_iter();
    let mut pairs = Vec::with_capacity(items.len() / 2);
    while let (Some(field), Some(value)) = (items.next(), items.next()) {
        pairs.push((field, value));
    }
    Ok((next, pairs))
}

/// `[cursor, [item...]]` of `SCAN`/`HSCAN`: the cursor is a decimal string,
/// every item a string. Anything else is an error: a malformed reply read as
/// cursor `0` would end the scan early and look like a clean pass.
pub(crate) fn cursor_reply(v: Value) -> Result<(Bytes, Vec<Bytes>), String> {
    let Value::Array(mut parts) = v else {
        return Err(format!("expected [cursor, items], got {}", kind(&v)));
    };
    if parts.len() != 2 {
        return Err(format!("expected [cursor, items], got an array of {}", parts.len()));
    }
    let items = parts.pop().expect("two parts");
    let cursor = value::bytes(&parts[0])
        .filter(|c| !c.is_empty() && c.iter().all(u8::is_ascii_digit))
        .ok_or_else(|| format!("cursor is not a number: {:?}", parts[0]))?;
    let Value::Array(items) = items else {
        return Err(format!("items are {}, not an array", kind(&items)));
    };
    let items = items
        .iter()
        .map(|i| match i {
            Value::Bytes(b) => Ok(b.clone()),
            Value::String(s) => Ok(s.inner().clone()),
            other => Err(format!("an item is {}, not a string", kind(other))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((cursor, items))
}

#[cfg(test)]
mod malformed_replies {
    use super::cursor_reply;
    use bytes::Bytes;
    use fred::types::Value;

    fn b(s: &str) -> Value {
        Value::Bytes(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn a_scan_reply_of_any_other_shape_is_an_error_not_the_end() {
        assert_eq!(
            cursor_reply(Value::Array(vec![b("17"), Value::Array(vec![b("client:a")])])),
            Ok((Bytes::from_static(b"17"), vec![Bytes::from_static(b"client:a")]))
        );
        assert_eq!(
            cursor_reply(Value::Array(vec![b("0"), Value::Array(vec![])])),
            Ok((Bytes::from_static(b"0"), vec![]))
        );
        for bad in [
            Value::Null,
            b("0"),
            Value::Integer(0),
            Value::Array(vec![]),
            Value::Array(vec![b("0")]),
            Value::Array(vec![b("0"), Value::Array(vec![]), b("extra")]),
            Value::Array(vec![Value::Null, Value::Array(vec![])]),
            Value::Array(vec![b(""), Value::Array(vec![])]),
            Value::Array(vec![b("x1"), Value::Array(vec![])]),
            Value::Array(vec![b("5"), Value::Null]),
            Value::Array(vec![b("5"), b("client:a")]),
            Value::Array(vec![b("5"), Value::Array(vec![Value::Integer(3)])]),
        ] {
            assert!(cursor_reply(bad.clone()).is_err(), "{bad:?} was accepted");
        }
    }
}
