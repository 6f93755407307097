//! IAM condition handling: reading the expiry off a condition expression, writing the `Temp
//! Access` condition, and the pure policy edits the batching writer applies.
//!
//! Checks: `parse_window` never panics and never reads an expression with `||`; the condition
//! written for an expiry reads back as that expiry; a fuzzed policy (JSON, unknown fields
//! included) survives a serialise/parse round trip; each edit does what it says (after a grant the
//! member holds the role under exactly that expression, once; after a revoke it holds no `Temp
//! Access` binding of the role; after a sweep nothing expired or `deleted:` is left in a `Temp
//! Access` binding), leaves other roles' bindings alone, never leaves a binding without members,
//! and is idempotent: applying it again changes nothing and says so.
#![no_main]

use chrono::{DateTime, TimeZone, Utc};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use provider_gcp_iam::api::{Binding, Expr, Policy};
use provider_gcp_iam::condition::{self, TITLE};
use provider_gcp_iam::policy::{EditOutcome, PolicyEdit, apply_edit};

const ROLES: [&str; 3] = ["roles/viewer", "roles/editor", "roles/owner"];
const MEMBERS: [&str; 5] = [
    "user:a@example.com",
    "serviceAccount:gh-1@p.iam.gserviceaccount.com",
    "deleted:serviceAccount:gh-1@p.iam.gserviceaccount.com?uid=123",
    "deleted:user:a@example.com?uid=9",
    "group:g@example.com",
];

#[derive(Debug, Arbitrary)]
enum ExprIn {
    /// Gatehouse's own form, expiring this many seconds after the epoch base.
    Ours { at: u32, justification: String },
    /// Anything at all.
    Raw {
        title_is_ours: bool,
        expression: String,
    },
}

#[derive(Debug, Arbitrary)]
struct BindingIn {
    role: u8,
    members: Vec<u8>,
    condition: Option<ExprIn>,
}

#[derive(Debug, Arbitrary)]
enum EditIn {
    Grant { role: u8, member: u8, at: u32 },
    Revoke { role: u8, member: u8 },
    Sweep { at: u32 },
}

#[derive(Debug, Arbitrary)]
struct Input {
    expression: String,
    policy_json: Vec<u8>,
    bindings: Vec<BindingIn>,
    edits: Vec<EditIn>,
}

/// 2020-01-01T00:00:00Z plus `secs`.
fn at(secs: u32) -> DateTime<Utc> {
    Utc.timestamp_opt(1_577_836_800 + i64::from(secs), 0)
        .single()
        .expect("in range")
}

fn expr(e: &ExprIn) -> Expr {
    match e {
        ExprIn::Ours {
            at: t,
            justification,
        } => condition::temp_access(at(*t), justification),
        ExprIn::Raw {
            title_is_ours,
            expression,
        } => Expr {
            title: if *title_is_ours {
                TITLE.into()
            } else {
                "Other".into()
            },
            description: None,
            expression: expression.clone(),
            other: Default::default(),
        },
    }
}

fn role(i: u8) -> String {
    ROLES[usize::from(i) % ROLES.len()].to_string()
}

fn member(i: u8) -> String {
    MEMBERS[usize::from(i) % MEMBERS.len()].to_string()
}

fn ours(b: &Binding) -> bool {
    condition::is_temp_access(b.condition.as_ref())
}

fn edit(e: &EditIn) -> PolicyEdit {
    match e {
        EditIn::Grant {
            role: r,
            member: m,
            at: t,
        } => PolicyEdit::Grant {
            role: role(*r),
            member: member(*m),
            condition: condition::temp_access(at(*t), "fuzz"),
        },
        EditIn::Revoke { role: r, member: m } => PolicyEdit::Revoke {
            role: role(*r),
            member: member(*m),
        },
        EditIn::Sweep { at: t } => PolicyEdit::Sweep { now: at(*t) },
    }
}

/// Bindings an edit of `role` must not touch (other roles, with members).
fn others(p: &Policy, role: Option<&str>) -> Vec<Binding> {
    p.bindings
        .iter()
        .filter(|b| Some(b.role.as_str()) != role && !b.members.is_empty())
        .cloned()
        .collect()
}

fuzz_target!(|i: Input| {
    // Reading an expression: never panics; an `||` is never read as an expiry.
    if let Some((start, end)) = condition::parse_window(&i.expression) {
        let compact: String = i
            .expression
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        assert!(!compact.contains("||"));
        assert!(compact.contains("request.time<"), "{:?}", i.expression);
        let _ = (start, end);
    }

    // A fuzzed policy document round-trips, unknown fields included.
    if let Ok(p) = serde_json::from_slice::<Policy>(&i.policy_json) {
        let text = serde_json::to_vec(&p).expect("a policy serialises");
        let again: Policy = serde_json::from_slice(&text).expect("what we wrote reads back");
        assert_eq!(again, p);
    }

    let mut policy = Policy {
        version: Some(3),
        etag: Some("BwX=".into()),
        bindings: i
            .bindings
            .iter()
            .take(16)
            .map(|b| Binding {
                role: role(b.role),
                members: b.members.iter().take(8).map(|m| member(*m)).collect(),
                condition: b.condition.as_ref().map(expr),
                other: Default::default(),
            })
            .collect(),
        other: Default::default(),
    };
    // What we write reads back as what we meant.
    for b in &policy.bindings {
        if let Some(c) = &b.condition
            && ours(b)
            && c.description.is_some()
        {
            assert!(
                c.description
                    .as_ref()
                    .is_some_and(|d| d.chars().count() <= 256)
            );
            assert!(condition::parse_expiry(&c.expression).is_some(), "{c:?}");
        }
    }
    for e in i.edits.iter().take(16) {
        let e = edit(e);
        let before = policy.clone();
        let outcome = apply_edit(&mut policy, &e);
        assert!(policy.bindings.iter().all(|b| !b.members.is_empty()));
        match &e {
            PolicyEdit::Grant {
                role,
                member,
                condition: c,
            } => {
                assert_eq!(
                    condition::parse_expiry(&c.expression).map(|t| t.timestamp()),
                    c.expression
                        .split('\'')
                        .nth(1)
                        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                        .map(|t| t.timestamp())
                );
                let holding: Vec<&Binding> = policy
                    .bindings
                    .iter()
                    .filter(|b| &b.role == role && ours(b) && b.members.contains(member))
                    .collect();
                assert_eq!(holding.len(), 1, "{e:?} → {:?}", policy.bindings);
                assert_eq!(
                    holding[0].condition.as_ref().map(|x| x.expression.as_str()),
                    Some(c.expression.as_str())
                );
                assert!(holding[0].members.iter().filter(|m| *m == member).count() >= 1);
                assert_eq!(others(&policy, Some(role)), others(&before, Some(role)));
            }
            PolicyEdit::Revoke { role, member } => {
                assert!(
                    !policy
                        .bindings
                        .iter()
                        .any(|b| &b.role == role && ours(b) && b.members.contains(member)),
                    "{e:?} → {:?}",
                    policy.bindings
                );
                assert_eq!(others(&policy, Some(role)), others(&before, Some(role)));
            }
            PolicyEdit::Sweep { now } => {
                for b in policy.bindings.iter().filter(|b| ours(b)) {
                    let expiry = b
                        .condition
                        .as_ref()
                        .and_then(|c| condition::parse_expiry(&c.expression));
                    assert!(
                        expiry.is_none_or(|t| t > *now),
                        "expired binding left: {b:?}"
                    );
                    assert!(
                        !b.members
                            .iter()
                            .any(|m| m.starts_with("deleted:serviceAccount:")),
                        "{b:?}"
                    );
                }
            }
        }
        // Idempotent: the same edit again changes nothing, and says so.
        let after = policy.clone();
        let again = apply_edit(&mut policy, &e);
        assert_eq!(policy, after, "{e:?} applied twice changed the policy");
        match again {
            EditOutcome::Granted { changed } => assert!(!changed, "{e:?}"),
            EditOutcome::Revoked { removed } => assert!(!removed, "{e:?}"),
            EditOutcome::Swept(s) => assert!(
                s.expired.is_empty() && s.dropped_deleted.is_empty(),
                "{s:?}"
            ),
        }
        let _ = outcome;
    }
});
