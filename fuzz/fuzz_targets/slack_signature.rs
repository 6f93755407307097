//! Slack request signatures (v0 HMAC-SHA256 over `v0:<timestamp>:<raw body>`).
//!
//! Checks, for a fuzzed secret, body, timestamp and clock: a signature made with the secret
//! verifies inside the five-minute window and is refused as stale outside it; the same
//! signature over a body with any one bit flipped, under another secret or for another
//! timestamp does not verify; and an arbitrary signature header is accepted only if it decodes to
//! exactly the right MAC.
#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use slack_adapter::verify::{MAX_AGE_SECS, VerifyError, sign, verify};

#[derive(Debug, Arbitrary)]
struct Input {
    secret: Vec<u8>,
    body: Vec<u8>,
    timestamp: i64,
    /// Clock skew between Slack and us.
    skew: i16,
    /// Which bit of the body to flip.
    flip: u32,
    other_secret: Vec<u8>,
    /// A header as an attacker could send it.
    header_ts: String,
    header_sig: String,
}

fuzz_target!(|i: Input| {
    let now = i.timestamp.saturating_add(i64::from(i.skew));
    let ts = i.timestamp.to_string();
    let sig = sign(&i.secret, &ts, &i.body);
    let res = verify(&i.secret, Some(&ts), Some(&sig), &i.body, now);
    if i.secret.is_empty() {
        assert_eq!(res, Err(VerifyError::NoSecret));
        return;
    }
    let fresh = now.abs_diff(i.timestamp) <= MAX_AGE_SECS.unsigned_abs();
    assert_eq!(
        res,
        if fresh {
            Ok(())
        } else {
            Err(VerifyError::Stale)
        }
    );
    if !fresh {
        return;
    }
    // Uppercase hex is the same MAC.
    assert_eq!(
        verify(
            &i.secret,
            Some(&ts),
            Some(&sig.to_uppercase().replacen("V0=", "v0=", 1)),
            &i.body,
            now
        ),
        Ok(())
    );
    if !i.body.is_empty() {
        let mut tampered = i.body.clone();
        let bit = i.flip as usize % (tampered.len() * 8);
        tampered[bit / 8] ^= 1 << (bit % 8);
        assert_eq!(
            verify(&i.secret, Some(&ts), Some(&sig), &tampered, now),
            Err(VerifyError::Mismatch)
        );
    }
    if !i.other_secret.is_empty() && i.other_secret != i.secret {
        // HMAC pads keys shorter than its 64-byte block with zeros: keys that differ only by
        // trailing zero bytes are the same key. That is HMAC, not us; leave those out.
        let trimmed = |k: &[u8]| k.iter().rposition(|b| *b != 0).map_or(0, |p| p + 1);
        let same_key = i.other_secret.len() <= 64
            && i.secret.len() <= 64
            && i.other_secret[..trimmed(&i.other_secret)] == i.secret[..trimmed(&i.secret)];
        if !same_key {
            assert_eq!(
                verify(&i.other_secret, Some(&ts), Some(&sig), &i.body, now),
                Err(VerifyError::Mismatch)
            );
        }
    }
    // The signature of one timestamp does not carry over to the next second.
    let ts2 = i.timestamp.saturating_add(1);
    if ts2 != i.timestamp {
        let expected = if now.abs_diff(ts2) > MAX_AGE_SECS.unsigned_abs() {
            VerifyError::Stale
        } else {
            VerifyError::Mismatch
        };
        assert_eq!(
            verify(&i.secret, Some(&ts2.to_string()), Some(&sig), &i.body, now),
            Err(expected)
        );
    }
    // Whatever the headers say: accepted only with the exact MAC for the timestamp given.
    if verify(
        &i.secret,
        Some(&i.header_ts),
        Some(&i.header_sig),
        &i.body,
        now,
    )
    .is_ok()
    {
        let expected = sign(&i.secret, i.header_ts.trim(), &i.body);
        assert!(
            i.header_sig.trim().eq_ignore_ascii_case(&expected),
            "accepted {:?} for {:?}",
            i.header_sig,
            i.header_ts
        );
    }
});
