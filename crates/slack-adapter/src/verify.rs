//! Slack request signing (v0): `X-Slack-Signature: v0=hex(HMAC-SHA256(secret, "v0:" + ts + ":" + raw body))`,
//! checked over the raw bytes before anything is parsed, with a five-minute replay window and a
//! constant-time comparison.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Header carrying the signature.
pub const SIGNATURE_HEADER: &str = "x-slack-signature";
/// Header carrying the unix timestamp the signature covers.
pub const TIMESTAMP_HEADER: &str = "x-slack-request-timestamp";
/// Requests older (or newer) than this are refused as possible replays.
pub const MAX_AGE_SECS: i64 = 5 * 60;

/// Why a request was refused. Never echoes the secret or the expected signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("missing X-Slack-Signature or X-Slack-Request-Timestamp header")]
    MissingHeaders,
    #[error("X-Slack-Request-Timestamp is not a unix timestamp")]
    BadTimestamp,
    #[error("request timestamp is outside the five-minute window")]
    Stale,
    #[error("X-Slack-Signature is not a v0 signature")]
    BadFormat,
    #[error("signature does not match")]
    Mismatch,
    #[error("no signing secret is configured")]
    NoSecret,
}

/// Computes the `v0=…` signature Slack would send for `body` at `timestamp`.
pub fn sign(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    format!("v0={}", hex::encode(mac(secret, timestamp, body)))
}

fn mac(secret: &[u8], timestamp: &str, body: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length, so this cannot fail; fall back to an empty MAC that can
    // never match rather than panic.
    let Ok(mut m) = Hmac::<Sha256>::new_from_slice(secret) else {
        return Vec::new();
    };
    m.update(b"v0:");
    m.update(timestamp.as_bytes());
    m.update(b":");
    m.update(body);
    m.finalize().into_bytes().to_vec()
}

/// Verifies one request. `now` is unix seconds (the real time: Slack's clock, not a test clock).
pub fn verify(
    secret: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: i64,
) -> Result<(), VerifyError> {
    if secret.is_empty() {
        return Err(VerifyError::NoSecret);
    }
    let (Some(ts), Some(sig)) = (timestamp, signature) else {
        return Err(VerifyError::MissingHeaders);
    };
    let ts_num: i64 = ts.trim().parse().map_err(|_| VerifyError::BadTimestamp)?;
    // abs_diff: the timestamp is the sender's number, and `now - i64::MIN` would overflow.
    if now.abs_diff(ts_num) > MAX_AGE_SECS.unsigned_abs() {
        return Err(VerifyError::Stale);
    }
    let hex_part = sig
        .trim()
        .strip_prefix("v0=")
        .ok_or(VerifyError::BadFormat)?;
    let given = hex::decode(hex_part).map_err(|_| VerifyError::BadFormat)?;
    let expected = mac(secret, ts.trim(), body);
    if expected.is_empty() || !bool::from(given.ct_eq(&expected)) {
        return Err(VerifyError::Mismatch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // The official example from Slack's "Verifying requests from Slack" page (external-apis.md A.1).
    const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    const TS: &str = "1531420618";
    const BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const SIG: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

    #[test]
    fn official_vector() {
        assert_eq!(sign(SECRET.as_bytes(), TS, BODY.as_bytes()), SIG);
        assert_eq!(
            verify(
                SECRET.as_bytes(),
                Some(TS),
                Some(SIG),
                BODY.as_bytes(),
                1531420618 + 10
            ),
            Ok(())
        );
    }

    #[test]
    fn rejections() {
        let now = 1531420618;
        let s = SECRET.as_bytes();
        let b = BODY.as_bytes();
        assert_eq!(
            verify(s, None, Some(SIG), b, now),
            Err(VerifyError::MissingHeaders)
        );
        assert_eq!(
            verify(s, Some(TS), None, b, now),
            Err(VerifyError::MissingHeaders)
        );
        assert_eq!(
            verify(s, Some("abc"), Some(SIG), b, now),
            Err(VerifyError::BadTimestamp)
        );
        assert_eq!(
            verify(s, Some(TS), Some(SIG), b, now + 301),
            Err(VerifyError::Stale)
        );
        assert_eq!(
            verify(s, Some(TS), Some(SIG), b, now - 301),
            Err(VerifyError::Stale)
        );
        assert_eq!(verify(s, Some(TS), Some(SIG), b, now + 300), Ok(()));
        assert_eq!(
            verify(s, Some(TS), Some("a2114d57"), b, now),
            Err(VerifyError::BadFormat)
        );
        assert_eq!(
            verify(s, Some(TS), Some("v0=zz"), b, now),
            Err(VerifyError::BadFormat)
        );
        let tampered = BODY.replace("roadrunner", "coyote");
        assert_eq!(
            verify(s, Some(TS), Some(SIG), tampered.as_bytes(), now),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify(b"other", Some(TS), Some(SIG), b, now),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify(b"", Some(TS), Some(SIG), b, now),
            Err(VerifyError::NoSecret)
        );
        // a signature for another timestamp does not carry over
        let other = sign(s, "1531420619", b);
        assert_eq!(
            verify(s, Some(TS), Some(&other), b, now),
            Err(VerifyError::Mismatch)
        );
    }

    /// A hostile timestamp (i64::MIN, i64::MAX) is stale, not an arithmetic overflow (a panic in
    /// a debug build, a wrapped and possibly "fresh" difference in a release build).
    #[test]
    fn extreme_timestamps_are_stale_not_a_panic() {
        let s = SECRET.as_bytes();
        let b = BODY.as_bytes();
        for ts in [i64::MIN, i64::MAX, i64::MIN + 1] {
            let ts = ts.to_string();
            let sig = sign(s, &ts, b);
            assert_eq!(
                verify(s, Some(&ts), Some(&sig), b, 1531420618),
                Err(VerifyError::Stale),
                "{ts}"
            );
        }
        let ts = i64::MAX.to_string();
        let sig = sign(s, &ts, b);
        assert_eq!(
            verify(s, Some(&ts), Some(&sig), b, i64::MIN),
            Err(VerifyError::Stale)
        );
    }
}
