//! Any bytes from the topic: `decode_checked` never panics, and whatever it
//! accepts survives a re-encode unchanged.
//!
//! Input layout: the first byte chooses the Kafka key (bit 7 set: no key;
//! otherwise its low 7 bits are the key length taken from the rest); the
//! remainder is the payload. Each input is also tried without a payload (a
//! Kafka tombstone).
#![no_main]

use libfuzzer_sys::fuzz_target;
use redmirror_core::FlowEvent;

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        let _ = FlowEvent::decode_checked(None, None);
        let _ = FlowEvent::decode_checked(Some(&[]), None);
        return;
    };
    let (key, payload) = if first & 0x80 != 0 {
        (None, rest)
    } else {
        let split = usize::from(first & 0x7f).min(rest.len());
        (Some(&rest[..split]), &rest[split..])
    };
    for payload in [Some(payload), None] {
        if let Ok(event) = FlowEvent::decode_checked(key, payload) {
            // Accepted: a valid event whose id matches the key (if any).
            assert!(!event.flow_id.is_empty());
            if let Some(k) = key {
                assert_eq!(k, &event.flow_id[..]);
            }
            let again = FlowEvent::decode_checked(Some(&event.flow_id), Some(&event.encode_to_bytes()))
                .expect("a re-encoded accepted event decodes");
            assert_eq!(again, event);
            let _ = event.payload_bytes();
            let _ = event.headers();
        }
    }
});
