//! The duration parser (`4h`, `1h30m`, `2 hours`, a bare number of hours) and its printed form.
//!
//! Checks: no panic on any text; an accepted duration is positive and at most 366 days; its
//! compact form (`Display`) parses back to itself, and so does its JSON form; a refusal names at
//! most 40 characters of the input (the message is shown to people).
#![no_main]

use access_core::duration::{AccessDuration, DurationBounds, DurationError};
use libfuzzer_sys::fuzz_target;

const MAX_SECS: u64 = 366 * 24 * 3600;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match text.parse::<AccessDuration>() {
        Ok(d) => {
            assert!(
                d.secs() >= 1 && d.secs() <= MAX_SECS,
                "{text:?} → {}",
                d.secs()
            );
            let compact = d.to_string();
            assert_eq!(
                compact.parse::<AccessDuration>(),
                Ok(d),
                "{text:?} → {compact:?}"
            );
            assert_eq!(AccessDuration::from_secs(d.secs()), Ok(d));
            assert!(!d.human().is_empty());
            let json = serde_json::to_string(&d).expect("a duration serialises");
            assert_eq!(
                serde_json::from_str::<AccessDuration>(&json).ok(),
                Some(d),
                "{json}"
            );
            // The bounds check either grants exactly what was asked or names the bounds.
            if let Ok(b) = DurationBounds::new(
                d,
                DurationBounds::DEFAULT_MIN,
                d.max(DurationBounds::DEFAULT_MIN),
            ) {
                assert_eq!(b.check(Some(d)), Ok(d));
            }
        }
        Err(DurationError::Malformed(shown)) => {
            assert!(shown.chars().count() <= 40, "echoes too much: {shown:?}");
        }
        Err(DurationError::Zero) => {}
        Err(e @ DurationError::OutOfBounds { .. }) => panic!("parse returned a bounds error: {e}"),
    }
    // JSON may also carry a number of seconds.
    if let Ok(d) = serde_json::from_slice::<AccessDuration>(data) {
        assert_eq!(d.to_string().parse::<AccessDuration>(), Ok(d));
    }
});
