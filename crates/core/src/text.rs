//! Showing binary-safe bytes to people.

use base64::Engine as _;
use serde_json::{json, Value};

/// UTF-8 bytes as a JSON string; anything else as `{"base64": "..."}`.
pub fn json_bytes(bytes: &[u8]) -> Value {
    match std::str::from_utf8(bytes) {
        Ok(s) => Value::String(s.to_string()),
        Err(_) => json!({ "base64": base64::engine::general_purpose::STANDARD.encode(bytes) }),
    }
}

/// UTF-8 bytes as text; anything else as `base64:...`. For tables and logs.
pub fn lossy(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_string(),
        Err(_) => format!("base64:{}", base64::engine::general_purpose::STANDARD.encode(bytes)),
    }
}

/// Parses a flow id given on a command line: `base64:...` decodes, anything else is taken as is.
pub fn parse_flow_id(arg: &str) -> Result<bytes::Bytes, base64::DecodeError> {
    match arg.strip_prefix("base64:") {
        Some(b) => base64::engine::general_purpose::STANDARD
            .decode(b)
            .map(bytes::Bytes::from),
        None => Ok(bytes::Bytes::copy_from_slice(arg.as_bytes())),
    }
}

/// A time in µs since the Unix epoch as RFC 3339 UTC (whole microseconds),
/// for people and JSON.
pub fn rfc3339_us(us: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_micros(us.max(0) as u64);
    humantime::format_rfc3339_micros(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_is_text_and_binary_is_base64() {
        assert_eq!(json_bytes(b"abc"), json!("abc"));
        assert_eq!(json_bytes(b"\xff"), json!({"base64": "/w=="}));
        assert_eq!(lossy(b"\xff"), "base64:/w==");
        assert_eq!(parse_flow_id("base64:/w==").unwrap().as_ref(), b"\xff");
        assert_eq!(parse_flow_id("plain").unwrap().as_ref(), b"plain");
    }
}
