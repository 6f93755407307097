//! The timestamp strings BigQuery accepts in JSON rows (and how the fake reads them back).

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};

/// `-` or `/` in the date and a zone of `Z`, `UTC` or `±HH:MM`. Also used by tests to read rows.
pub fn parse_timestamp(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    let (body, offset) = split_zone(s)?;
    let naive = parse_datetime(body)?;
    Some(DateTime::<Utc>::from_naive_utc_and_offset(
        naive - chrono::Duration::seconds(offset),
        Utc,
    ))
}

fn split_zone(s: &str) -> Option<(&str, i64)> {
    if let Some(b) = s.strip_suffix('Z').or_else(|| s.strip_suffix('z')) {
        return Some((b.trim_end(), 0));
    }
    if let Some(b) = s.strip_suffix("UTC") {
        return Some((b.trim_end(), 0));
    }
    // `±HH:MM` after the time part (the date's `-` are earlier than position 10).
    if s.len() > 16 {
        let tail = &s[s.len() - 6..];
        let sign = match tail.as_bytes().first() {
            Some(b'+') => 1,
            Some(b'-') => -1,
            _ => 0,
        };
        if sign != 0 && tail.as_bytes().get(3) == Some(&b':') {
            let h: i64 = tail.get(1..3)?.parse().ok()?;
            let m: i64 = tail.get(4..6)?.parse().ok()?;
            return Some((&s[..s.len() - 6], sign * (h * 3600 + m * 60)));
        }
    }
    Some((s, 0))
}

pub(super) fn parse_datetime(s: &str) -> Option<NaiveDateTime> {
    let s = s.replace('/', "-");
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(&s, fmt) {
            return Some(t);
        }
    }
    NaiveDate::parse_from_str(&s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
}
