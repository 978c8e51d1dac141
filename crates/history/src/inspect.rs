//! Events as JSON lines.

use rdkafka::message::{Headers, Message, OwnedMessage};
use redmirror_core::event::{DeleteReason, Op, Origin};
use redmirror_core::text::json_bytes;
use serde_json::{json, Map, Value};

/// One message as JSON: position, headers, and the decoded event (or the
/// decoding error). Bytes show as text when UTF-8, else `{"base64": ...}`.
pub fn to_json(m: &OwnedMessage) -> Value {
    let headers: Map<String, Value> = m
        .headers()
        .map(|hs| {
            hs.iter()
                .map(|x| (x.key.to_string(), json_bytes(x.value.unwrap_or_default())))
                .collect()
        })
        .unwrap_or_default();
    let mut v = json!({
        "partition": m.partition(),
        "offset": m.offset(),
        "timestamp_ms": m.timestamp().to_millis(),
        "key": m.key().map(json_bytes),
        "headers": headers,
    });
    match redmirror_kafka::decode_event(m) {
        Ok(e) => {
            let fields: Map<String, Value> = e
                .fields
                .iter()
                .map(|f| (redmirror_core::text::lossy(&f.name), json_bytes(&f.value)))
                .collect();
            v["event"] = json!({
                "schema_version": e.schema_version,
                "flow_id": json_bytes(&e.flow_id),
                "op": match Op::try_from(e.op) { Ok(Op::Upsert) => "upsert", Ok(Op::Delete) => "delete", _ => "unknown" },
                "fields": fields,
                "source_time_us": e.source_time_us,
                "source_epoch": e.source_epoch,
                "capture_time_us": e.capture_time_us,
                "origin": Origin::try_from(e.origin).unwrap_or(Origin::Unspecified).label(),
                "cause": e.cause,
                "rules": e.rules,
                "delete_reason": match DeleteReason::try_from(e.delete_reason) {
                    Ok(DeleteReason::Absent) => Value::from("absent"),
                    Ok(DeleteReason::NotAHash) => Value::from("not_a_hash"),
                    Ok(DeleteReason::Filtered) => Value::from("filtered"),
                    _ => Value::Null,
                },
            });
        }
        Err(e) => v["error"] = Value::from(e.to_string()),
    }
    v
}
