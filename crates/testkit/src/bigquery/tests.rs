//! Unit tests of the fake BigQuery's schema checks and timestamp parsing.

use serde_json::json;

use super::schema::{parse_fields, validate_row};
use super::*;

#[test]
fn timestamps_bigquery_accepts() {
    for s in [
        "2026-11-22T18:00:00Z",
        "2026-11-22T18:00:00.123456Z",
        "2026-11-22 18:00:00",
        "2026-11-22 18:00:00.5 UTC",
        "2026/11/22 18:00",
        "2026-11-22T19:00:00+01:00",
        "2026-11-22",
    ] {
        assert!(parse_timestamp(s).is_some(), "{s}");
    }
    assert_eq!(
        parse_timestamp("2026-11-22T19:00:00+01:00"),
        parse_timestamp("2026-11-22 18:00:00")
    );
    for s in ["yesterday", "2026-13-01T00:00:00Z", "", "18:00"] {
        assert!(parse_timestamp(s).is_none(), "{s}");
    }
}

#[test]
fn rows_are_checked_against_the_schema() {
    let schema = parse_fields(&json!([
        {"name": "id", "type": "STRING", "mode": "REQUIRED"},
        {"name": "n", "type": "INTEGER"},
        {"name": "ts", "type": "TIMESTAMP"},
        {"name": "tags", "type": "STRING", "mode": "REPEATED"},
    ]))
    .unwrap();
    let ok = json!({"id": "a", "n": "12", "ts": 1_700_000_000, "tags": ["x"], "extra": null});
    // Unknown fields fail even when null, unless ignored.
    assert!(validate_row(&schema, ok.as_object().unwrap(), false).is_err());
    assert!(validate_row(&schema, ok.as_object().unwrap(), true).is_ok());
    let errs = validate_row(
        &schema,
        json!({"n": "x", "ts": "soon"}).as_object().unwrap(),
        false,
    )
    .unwrap_err();
    let locations: Vec<_> = errs
        .iter()
        .map(|e| e["location"].as_str().unwrap().to_string())
        .collect();
    assert!(locations.contains(&"n".to_string()));
    assert!(locations.contains(&"ts".to_string()));
    assert!(
        locations.contains(&"id".to_string()),
        "missing required field reported: {errs:?}"
    );
    assert!(
        validate_row(
            &schema,
            json!({"id": "a", "n": null}).as_object().unwrap(),
            false
        )
        .is_ok()
    );
}
