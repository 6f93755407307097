//! Service-account names: the GCP document's reversible scheme.
//!
//! `{encoded-username}-{unix-timestamp}`, where the username is the e-mail's local part with
//! `.` → `-dot-` and `-` → `-dash-` (`jane.doe@…` → `jane-dot-doe-1234567890`). Because a literal
//! `-` is always encoded, every `-` in the encoded part opens a token, so decoding is unambiguous
//! and the user's e-mail comes back from the account's (immutable) e-mail alone. Two characters
//! the document does not mention get tokens of the same shape: `_` → `-us-`, `+` → `-plus-`.
//!
//! Account ids must be 6–30 characters matching `[a-z]([-a-z0-9]*[a-z0-9])`, so the encoded
//! username may use at most 19 characters (30 minus `-` and 10 digits). Longer or unencodable
//! usernames take the document's display-name fallback: `{alnum-prefix}-x-{unix}`. The `-x` is an
//! unterminated token, so such a name can never decode to a wrong e-mail; the account's display
//! name (the e-mail) is the source of truth for it.

use chrono::{DateTime, Utc};

/// Longest encoded username that still fits `-{10 digits}` within 30 characters.
pub const MAX_ENCODED: usize = 19;
const FALLBACK_PREFIX_MAX: usize = 17;

/// Encodes an e-mail's local part; `None` if it holds a character the scheme cannot express.
pub fn encode_username(local: &str) -> Option<String> {
    let mut out = String::with_capacity(local.len() * 2);
    for c in local.chars() {
        match c {
            'a'..='z' | '0'..='9' => out.push(c),
            'A'..='Z' => out.push(c.to_ascii_lowercase()),
            '.' => out.push_str("-dot-"),
            '-' => out.push_str("-dash-"),
            '_' => out.push_str("-us-"),
            '+' => out.push_str("-plus-"),
            _ => return None,
        }
    }
    // Encoded `.` and `-` both start with `-` and end with `-`, so `a.-b` gives `a-dot--dash-b`.
    Some(out)
}

/// Reverses [`encode_username`]; `None` for anything it could not have produced.
pub fn decode_username(encoded: &str) -> Option<String> {
    let mut out = String::with_capacity(encoded.len());
    let mut rest = encoded;
    while let Some(c) = rest.chars().next() {
        if c == '-' {
            let after = &rest[1..];
            let end = after.find('-')?;
            out.push(match &after[..end] {
                "dot" => '.',
                "dash" => '-',
                "us" => '_',
                "plus" => '+',
                _ => return None,
            });
            rest = &after[end + 1..];
        } else if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
            rest = &rest[1..];
        } else {
            return None;
        }
    }
    if out.is_empty() { None } else { Some(out) }
}

/// The account id for `email`'s local part created at `unix`, and whether it is reversible.
pub fn account_id(local_part: &str, unix: i64) -> (String, bool) {
    if let Some(enc) = encode_username(local_part)
        && enc.len() <= MAX_ENCODED
        && enc.starts_with(|c: char| c.is_ascii_lowercase())
    {
        return (format!("{enc}-{unix}"), true);
    }
    let mut prefix: String = local_part
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .skip_while(|c| !c.is_ascii_lowercase())
        .take(FALLBACK_PREFIX_MAX)
        .collect();
    if prefix.is_empty() {
        prefix.push('u');
    }
    (format!("{prefix}-x-{unix}"), false)
}

/// Whether `local_part` needs the display-name fallback (the document's
/// `needsDisplayNameFallback`).
pub fn needs_display_name_fallback(local_part: &str) -> bool {
    !account_id(local_part, 0).1
}

/// Splits `{name}-{digits}` into the name and the creation time.
fn split_timestamp(account_id: &str) -> Option<(&str, DateTime<Utc>)> {
    let (name, ts) = account_id.rsplit_once('-')?;
    if ts.len() < 9 || ts.len() > 11 || !ts.bytes().all(|b| b.is_ascii_digit()) || name.is_empty() {
        return None;
    }
    let secs: i64 = ts.parse().ok()?;
    Some((name, DateTime::from_timestamp(secs, 0)?))
}

/// When a Gatehouse-named account was created (from the timestamp in its name).
pub fn created_at(account_id: &str) -> Option<DateTime<Utc>> {
    split_timestamp(account_id).map(|(_, t)| t)
}

/// Whether an account id has the shape Gatehouse gives its accounts (reversible or fallback).
pub fn is_gatehouse_account_id(account_id: &str) -> bool {
    match split_timestamp(account_id) {
        Some((name, _)) => {
            decode_username(name).is_some()
                || name
                    .strip_suffix("-x")
                    .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric()))
        }
        None => false,
    }
}

/// The user's e-mail from a Gatehouse service account's e-mail, when the name is reversible and
/// the organisation's e-mail domain is known (the document's `extractUserEmailFromServiceAccount`).
pub fn user_email_from_service_account(
    sa_email: &str,
    email_domain: Option<&str>,
) -> Option<String> {
    let domain = email_domain?.trim_start_matches('@');
    let (account_id, _) = sa_email.split_once('@')?;
    let (name, _) = split_timestamp(account_id)?;
    decode_username(name).map(|u| format!("{u}@{domain}"))
}

/// `user@example.com` → `user-at-example-com`: the dry-run account and the key file name.
pub fn sanitize_email(email: &str) -> String {
    let mut out = String::with_capacity(email.len() + 4);
    for c in email.to_ascii_lowercase().chars() {
        match c {
            'a'..='z' | '0'..='9' => out.push(c),
            '@' => out.push_str("-at-"),
            _ => out.push('-'),
        }
    }
    out
}

/// The document's dry-run account e-mail: `dry-run-{sanitized-email}@{project}.iam.gserviceaccount.com`.
pub fn dry_run_service_account_email(email: &str, project: &str) -> String {
    format!(
        "dry-run-{}@{project}.iam.gserviceaccount.com",
        sanitize_email(email)
    )
}

/// `gcp-access-{sanitized-email}.json`.
pub fn key_file_name(email: &str) -> String {
    format!("gcp-access-{}.json", sanitize_email(email))
}

/// `{account_id}@{project}.iam.gserviceaccount.com`.
pub fn service_account_email(account_id: &str, project: &str) -> String {
    format!("{account_id}@{project}.iam.gserviceaccount.com")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn valid_account_id(id: &str) -> bool {
        let b = id.as_bytes();
        (6..=30).contains(&b.len())
            && b[0].is_ascii_lowercase()
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
            && b[b.len() - 1] != b'-'
    }

    #[test]
    fn decoding_rejects_what_encoding_cannot_produce() {
        for bad in ["a-x", "a-", "-", "a--b", "a-dots-b", "A", "", "jane-dot"] {
            assert_eq!(decode_username(bad), None, "{bad}");
        }
        assert_eq!(decode_username("a-dot--dash-b").as_deref(), Some("a.-b"));
    }

    #[test]
    fn fallback_names_are_valid_and_never_decode() {
        for local in [
            "averyveryverylongusername.withdots",
            "1234",
            "_x",
            "é",
            "a.b.c.d.e.f",
        ] {
            let (id, reversible) = account_id(local, 1_763_000_000);
            assert!(valid_account_id(&id), "{id}");
            assert!(!reversible, "{local}");
            assert!(is_gatehouse_account_id(&id), "{id}");
            assert_eq!(
                user_email_from_service_account(
                    &format!("{id}@p.iam.gserviceaccount.com"),
                    Some("x.com")
                ),
                None
            );
        }
        assert!(!is_gatehouse_account_id("terraform-runner"));
        assert!(!is_gatehouse_account_id("my-app-12345"));
    }

    #[test]
    fn sanitized_email() {
        assert_eq!(sanitize_email("user@redhat.com"), "user-at-redhat-com");
        assert_eq!(
            dry_run_service_account_email("user@redhat.com", "openshift-crt-ephemeral-access"),
            "dry-run-user-at-redhat-com@openshift-crt-ephemeral-access.iam.gserviceaccount.com"
        );
        assert_eq!(
            key_file_name("Jane.Doe@example.com"),
            "gcp-access-jane-doe-at-example-com.json"
        );
    }
}
