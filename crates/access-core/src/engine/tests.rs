//! Unit tests of the engine's pure parts: reminder times and refusal texts (the engine's
//! behaviour is tested end to end in gatehouse-runtime's tests).

use super::*;

#[test]
fn reminders() {
    let t0 = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
    // 7 days: one day before
    assert_eq!(
        reminder_time(t0, t0 + chrono::Duration::days(7), t0),
        Some(t0 + chrono::Duration::days(6))
    );
    // 10 hours: one hour before
    assert_eq!(
        reminder_time(t0, t0 + chrono::Duration::hours(10), t0),
        Some(t0 + chrono::Duration::hours(9))
    );
    // already past
    assert_eq!(
        reminder_time(
            t0,
            t0 + chrono::Duration::hours(10),
            t0 + chrono::Duration::hours(9)
        ),
        None
    );
}

#[test]
fn error_messages_are_specific() {
    let e = EngineError::UnknownResource {
        requested: "nope".into(),
        valid: vec!["a".into(), "b".into()],
    };
    assert_eq!(
        e.to_string(),
        "Unknown resource 'nope'. Valid resources: a, b."
    );
    // A resource with roles: the bare name, or a role it does not have, lists its roles.
    let catalog = ResourceCatalog::new(
        ["gcp-access:viewer", "gcp-access:editor", "dev-network"].map(|id| {
            serde_json::from_value::<Resource>(serde_json::json!({
                "id": id, "provider": "dry-run", "approval": {"mode": "auto"},
                "durations": {"default": "1h", "min": "1m", "max": "8h"},
            }))
            .unwrap()
        }),
    );
    assert_eq!(
        catalog.unknown("gcp-access").to_string(),
        "'gcp-access' has several roles; say which one: gcp-access:editor, gcp-access:viewer."
    );
    assert_eq!(
        catalog.unknown(" gcp-access:admin ").to_string(),
        "Unknown role 'gcp-access:admin'. Roles of 'gcp-access': gcp-access:editor, gcp-access:viewer."
    );
    assert_eq!(
        catalog.unknown("nope:x").to_string(),
        "Unknown resource 'nope:x'. Valid resources: dev-network, gcp-access:editor, gcp-access:viewer."
    );
    assert!(catalog.get("gcp-access:editor").is_some());
    assert!(catalog.get("gcp-access").is_none());
    assert_eq!(catalog.roles_of("dev-network"), Vec::<String>::new());
    assert_eq!(
        EngineError::AlreadyDecided {
            status: RequestStatus::Denied
        }
        .to_string(),
        "This request has already been denied."
    );
}
