//! The expiring IAM condition: written in the GCP document's exact form, read tolerantly.
//!
//! Written: title `Temp Access`, description `Access expires on {RFC3339}. Justification: {text}`,
//! expression `request.time < timestamp('{RFC3339}')` — so Google itself stops honouring the
//! binding at expiry even if Gatehouse is down.
//!
//! Read (prior-art §9): single or double quotes, an optional lower bound
//! (`request.time >= timestamp(…) && request.time < timestamp(…)`, jit-access style), extra
//! parentheses and whitespace, further AND-ed clauses. An expression with `||` is not treated as
//! temporary access: its expiry cannot be read off one clause.

use chrono::{DateTime, SecondsFormat, Utc};

use crate::api::Expr;

/// The condition title that marks Gatehouse's (and the document's) temporary bindings.
pub const TITLE: &str = "Temp Access";

/// IAM limits a condition's description to 256 characters.
const MAX_DESCRIPTION_CHARS: usize = 256;

pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The condition for access until `expires_at` (whole seconds, UTC).
pub fn temp_access(expires_at: DateTime<Utc>, justification: &str) -> Expr {
    let at = rfc3339(expires_at);
    let description: String = format!("Access expires on {at}. Justification: {justification}")
        .chars()
        .take(MAX_DESCRIPTION_CHARS)
        .collect();
    Expr {
        title: TITLE.to_string(),
        description: Some(description),
        expression: format!("request.time < timestamp('{at}')"),
        other: Default::default(),
    }
}

/// Validity window of a temporary-access expression: `(not_before, expires_at)`.
pub fn parse_window(expression: &str) -> Option<(Option<DateTime<Utc>>, DateTime<Utc>)> {
    let compact: String = expression.chars().filter(|c| !c.is_whitespace()).collect();
    if compact.contains("||") {
        return None;
    }
    let mut end: Option<DateTime<Utc>> = None;
    let mut start: Option<DateTime<Utc>> = None;
    for (needle, is_end) in [
        ("request.time<timestamp(", true),
        ("request.time<=timestamp(", true),
        ("request.time>=timestamp(", false),
        ("request.time>timestamp(", false),
    ] {
        let mut rest = compact.as_str();
        while let Some(i) = rest.find(needle) {
            rest = &rest[i + needle.len()..];
            let t = quoted_timestamp(rest)?;
            if is_end {
                end = Some(end.map_or(t, |e| e.min(t)));
            } else {
                start = Some(start.map_or(t, |s| s.max(t)));
            }
        }
    }
    end.map(|e| (start, e))
}

/// Expiry of a temporary-access expression.
pub fn parse_expiry(expression: &str) -> Option<DateTime<Utc>> {
    parse_window(expression).map(|(_, e)| e)
}

/// `'2026-01-19T12:34:56Z')…` or `"…")…` → the timestamp.
fn quoted_timestamp(s: &str) -> Option<DateTime<Utc>> {
    let q = s.chars().next().filter(|c| *c == '\'' || *c == '"')?;
    let body = &s[1..];
    let close = body.find(q)?;
    if !body[close + 1..].starts_with(')') {
        return None;
    }
    DateTime::parse_from_rfc3339(&body[..close])
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Whether a binding condition is one of ours.
pub fn is_temp_access(c: Option<&Expr>) -> bool {
    c.is_some_and(|c| c.title == TITLE)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn writes_the_documents_form() {
        let c = temp_access(
            t("2026-01-19T12:34:56Z"),
            "Need to debug CI infrastructure issues",
        );
        assert_eq!(c.title, "Temp Access");
        assert_eq!(
            c.expression,
            "request.time < timestamp('2026-01-19T12:34:56Z')"
        );
        assert_eq!(
            c.description.as_deref(),
            Some(
                "Access expires on 2026-01-19T12:34:56Z. Justification: Need to debug CI infrastructure issues"
            )
        );
        let long = temp_access(t("2026-01-19T12:34:56Z"), &"x".repeat(400));
        assert_eq!(long.description.unwrap().chars().count(), 256);
    }

    #[test]
    fn reads_tolerantly() {
        let end = t("2026-01-19T12:34:56Z");
        assert_eq!(
            parse_expiry("request.time < timestamp('2026-01-19T12:34:56Z')"),
            Some(end)
        );
        assert_eq!(
            parse_expiry("request.time < timestamp(\"2026-01-19T12:34:56Z\")"),
            Some(end)
        );
        // jit-access: lower bound, parentheses (3 open, 4 close), whitespace.
        let jit = "  (((request.time >= timestamp(\"2020-01-01T00:00:00Z\") && request.time < timestamp(\"2020-01-01T00:05:00Z\"))))  ";
        assert_eq!(
            parse_window(jit),
            Some((Some(t("2020-01-01T00:00:00Z")), t("2020-01-01T00:05:00Z")))
        );
        // AND-ed resource clause, fractional seconds, offset.
        assert_eq!(
            parse_expiry(
                "(request.time < timestamp('2026-01-19T13:34:56.000+01:00')) && resource.name.startsWith('x')"
            ),
            Some(end)
        );
        // The ci-chat-bot test vectors that must fail.
        for bad in [
            "",
            "invalid expression",
            "request.time < timestamp('not-a-timestamp')",
            "request.time < timestamp('2026-01-19T12:34:56Z') || true",
        ] {
            assert_eq!(parse_expiry(bad), None, "{bad}");
        }
    }
}
