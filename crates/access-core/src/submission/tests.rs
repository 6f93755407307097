use super::*;
use crate::resource::Resource;

fn catalog() -> ResourceCatalog {
    let r = |id: &str, emergency: serde_json::Value| {
        serde_json::from_value::<Resource>(serde_json::json!({
            "id": id, "provider": "dry-run", "approval": {"mode": "auto"},
            "durations": {"default": "1h", "min": "5m", "max": "8h"},
            "emergency": emergency,
        }))
        .unwrap()
    };
    ResourceCatalog::new([
        r("dev-network", serde_json::Value::Null),
        r("glass", serde_json::json!({"duration": "30m"})),
    ])
}

fn raw(resource: &str, duration: Option<&str>, justification: &str) -> RawSubmission {
    RawSubmission::new(resource, duration.map(str::to_string), justification)
}

fn refusal(r: Result<ValidSubmission, FieldError>) -> (Field, String, &'static str) {
    let e = r.unwrap_err();
    (e.field(), e.to_string(), e.code())
}

#[test]
fn a_valid_submission_is_parsed_once() {
    let v = catalog()
        .validate(&raw(" dev-network ", Some(" 2h "), "\"debug CI\""))
        .unwrap();
    assert_eq!(v.resource().as_str(), "dev-network");
    assert_eq!(v.duration().to_string(), "2h");
    assert_eq!(v.justification().as_str(), "debug CI");
    assert_eq!(v.kind(), RequestKind::New);
    // No duration, or a blank one: the resource's default.
    for d in [None, Some("  ")] {
        let v = catalog().validate(&raw("dev-network", d, "x")).unwrap();
        assert_eq!(v.duration().to_string(), "1h");
    }
}

#[test]
fn each_refusal_names_its_field_with_the_engines_words() {
    let c = catalog();
    assert_eq!(
        refusal(c.validate(&raw("nope", Some("soon"), ""))),
        (
            Field::Resource,
            "Unknown resource 'nope'. Valid resources: dev-network, glass.".into(),
            "unknown_resource"
        )
    );
    assert_eq!(
        refusal(c.validate(&raw("dev-network", Some("soon"), ""))),
        (
            Field::Duration,
            "'soon' is not a duration. Use a number with a unit, like 90s, 30m, 4h or 2d (a bare number means hours).".into(),
            "invalid_duration"
        )
    );
    assert_eq!(
        refusal(c.validate(&raw("dev-network", Some("9h"), ""))).1,
        "Duration must be between 5m and 8h (you asked for 9h)."
    );
    assert_eq!(
        refusal(c.validate(&raw("dev-network", None, " "))),
        (
            Field::Justification,
            "A justification is required: say why you need access.".into(),
            "invalid_justification"
        )
    );
    let e: EngineError = c
        .validate(&raw("dev-network", None, ""))
        .unwrap_err()
        .into();
    assert!(matches!(e, EngineError::InvalidJustification(_)));
}

#[test]
fn an_extension_without_a_justification_says_what_it_extends_by() {
    let v = catalog()
        .validate(&raw("dev-network", Some("2h"), "").extension())
        .unwrap();
    assert_eq!(v.kind(), RequestKind::Extend);
    assert_eq!(v.justification().as_str(), "Extension by 2h");
}

#[test]
fn break_glass_cuts_the_duration_and_needs_the_resource_to_allow_it() {
    let c = catalog();
    let v = c
        .validate_emergency(&raw("glass", Some("8h"), "prod down"))
        .unwrap();
    assert_eq!(v.duration().to_string(), "30m");
    let v = c
        .validate_emergency(&raw("glass", None, "prod down"))
        .unwrap();
    assert_eq!(v.duration().to_string(), "30m");
    let (field, _, code) = refusal(c.validate_emergency(&raw("dev-network", None, "x")));
    assert_eq!((field, code), (Field::Resource, "emergency_not_allowed"));
    let (field, _, _) = refusal(c.validate_emergency(&raw("glass", Some("1m"), "x")));
    assert_eq!(field, Field::Duration);
    let (field, _, _) = refusal(c.validate_emergency(&raw("glass", None, "")));
    assert_eq!(field, Field::Justification);
}
