//! Slack payload parsing: slash-command forms, interaction payloads (clicks, form submissions)
//! and Events API envelopes, decoded by the endpoints' own code (`slack_adapter::router::decode`).
//!
//! Checks: no panic on any body; whatever an endpoint would store in the inbox reads back through
//! the inbox handler's reader, and writes again to exactly the same text (a delivery that did not
//! would be acknowledged to Slack and then fail forever in the queue).
#![no_main]

use libfuzzer_sys::fuzz_target;
use slack_adapter::router::{Endpoint, decode, reread_delivery};

/// `application/x-www-form-urlencoded` encoding of one value.
fn form_encode(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() * 3);
    for &b in bytes {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => out.push(b),
            b' ' => out.push(b'+'),
            _ => out.extend_from_slice(format!("%{b:02X}").as_bytes()),
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    // Interactions either as the raw form body, or as the payload JSON the fuzzer can mutate
    // directly (wrapped in `payload=` here).
    let (endpoint, body) = match sel % 4 {
        0 => (Endpoint::Commands, rest.to_vec()),
        1 => (Endpoint::Interactions, rest.to_vec()),
        2 => (Endpoint::Events, rest.to_vec()),
        _ => {
            let mut body = b"payload=".to_vec();
            body.extend(form_encode(rest));
            (Endpoint::Interactions, body)
        }
    };
    if let Ok(Some(stored)) = decode(endpoint, &body) {
        let again = reread_delivery(&stored)
            .unwrap_or_else(|e| panic!("stored delivery does not read back: {e}\n{stored}"));
        assert_eq!(again, stored, "stored delivery changed on reading back");
    }
});
