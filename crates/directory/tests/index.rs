//! Parsing the sample dump and answering membership questions from it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::fixture_index;

#[test]
fn parses_the_sample_dump() {
    let idx = fixture_index();
    let s = idx.stats();
    assert_eq!(s.people, 13);
    assert_eq!(s.people_with_email, 13);
    // Nine ids in the mapping (U04CNGUYEN only there), none added from records: gkim has an
    // empty slack_uid, bwilson and kowens none.
    assert_eq!(s.people_with_slack_id, 9);
    assert_eq!(
        s.ambiguous_emails, 1,
        "ivan@ and Ivan@ are the same address"
    );
    assert_eq!(s.generated_at.as_deref(), Some("2026-11-20T06:00:00Z"));
    assert_eq!(s.data_version.as_deref(), Some("2026.11.20"));
    for g in [
        "Hybrid Platforms",
        "Red Hat Engineering",
        "OpenShift",
        "Release & CI",
        "Test Platform",
        "Docs",
        "Sales",
    ] {
        assert!(idx.has_group(g), "{g}");
    }
    assert!(
        !idx.has_group("hybrid platforms"),
        "names are matched exactly, as cyborg-data does"
    );

    let jane = idx.person_by_slack_id("U01JDOE").unwrap();
    assert_eq!(jane.uid, "jdoe");
    assert_eq!(jane.full_name.as_deref(), Some("Jane Doe"));
    // The Slack id known only from the mapping is attached to the person.
    assert_eq!(
        idx.person_by_uid("cnguyen").unwrap().slack_uid.as_deref(),
        Some("U04CNGUYEN")
    );
    assert!(idx.person_by_uid("bwilson").unwrap().slack_uid.is_none());
}

#[test]
fn team_membership_includes_the_whole_hierarchy() {
    let idx = fixture_index();
    let jane = idx.person_by_uid("jdoe").unwrap();
    let mut groups: Vec<&str> = idx.groups_of(jane).collect();
    groups.sort_unstable();
    // team → team_group → pillar → org → parent org
    assert_eq!(
        groups,
        [
            "Hybrid Platforms",
            "OpenShift",
            "Red Hat Engineering",
            "Release & CI",
            "Test Platform"
        ]
    );

    let hari = idx.person_by_uid("hpatel").unwrap();
    for g in [
        "Test Platform",
        "SRE Platform",
        "Hybrid Platforms",
        "Cloud Services",
        "Red Hat Engineering",
    ] {
        assert!(idx.person_in_group(hari, g), "hpatel in {g}");
    }
    assert!(!idx.person_in_group(hari, "Sales"));
    assert!(
        !idx.person_in_group(hari, "CRT"),
        "siblings are not ancestors"
    );
}

#[test]
fn lookup_by_slack_id() {
    let idx = fixture_index();
    assert!(idx.is_member("U01JDOE", None, "Hybrid Platforms"));
    assert!(idx.is_member("U01JDOE", None, "Test Platform"));
    assert!(idx.is_member("U02ASMITH", None, "Release & CI"));
    assert!(
        idx.is_member("U06EMARTIN", None, "Hybrid Platforms"),
        "direct org membership"
    );
    assert!(
        idx.is_member("U04CNGUYEN", None, "Cloud Services"),
        "id from slack_id_mappings only"
    );
    assert!(
        !idx.is_member("U05DLEE", None, "Hybrid Platforms"),
        "Sales is elsewhere"
    );
    assert!(idx.is_member("U05DLEE", None, "Sales"));
    assert!(
        !idx.is_member("U12LFORMER", None, "Hybrid Platforms"),
        "no memberships at all"
    );
    assert!(!idx.is_member("U01JDOE", None, "No Such Org"));
    assert!(!idx.is_member("UNKNOWN", None, "Hybrid Platforms"));
}

#[test]
fn falls_back_to_email_when_the_slack_id_does_not_answer() {
    let idx = fixture_index();
    // bwilson has no Slack id at all: e-mail decides (as in a staging workspace).
    assert!(idx.is_member(
        "U99STAGING",
        Some("bwilson@example.com"),
        "Hybrid Platforms"
    ));
    assert!(
        idx.is_member("U99STAGING", Some("BWilson@Example.COM"), "OpenShift"),
        "case-insensitive"
    );
    // Stored mixed-case e-mail is found lower-cased.
    assert!(idx.is_member("U99", Some("k.owens@example.com"), "Hybrid Platforms"));
    // A known id that is not a member still gets the e-mail check, as the document does.
    assert!(idx.is_member("U05DLEE", Some("jdoe@example.com"), "Hybrid Platforms"));
    // Nobody by either key.
    assert!(!idx.is_member("U99", Some("stranger@example.com"), "Hybrid Platforms"));
    assert!(!idx.is_member("U99", None, "Hybrid Platforms"));
    // Without the Slack id, an e-mail of a non-member does not help.
    assert!(!idx.is_member("U99", Some("dlee@example.com"), "Hybrid Platforms"));
}

#[test]
fn ambiguous_emails_are_not_used() {
    let idx = fixture_index();
    // ivan (Kernel, Hybrid Platforms) and ivan2 (Sales) share an address: by e-mail, nobody.
    assert!(idx.person_by_email("ivan@example.com").is_none());
    assert!(!idx.is_member("U99", Some("ivan@example.com"), "Sales"));
    assert!(!idx.is_member("U99", Some("ivan@example.com"), "Hybrid Platforms"));
    // The Slack id still identifies ivan.
    assert!(idx.is_member("U10IVAN", Some("ivan@example.com"), "Hybrid Platforms"));
}

#[test]
fn name_collision_and_relationship_index() {
    let idx = fixture_index();
    // Team "Docs" sits under team group "Docs", which sits under Cloud Services.
    assert!(idx.is_member("U07FGARCIA", None, "Cloud Services"));
    assert!(idx.is_member("U07FGARCIA", None, "Red Hat Engineering"));
    // Interns has no parent, only the older relationship_index ancestry.
    assert!(idx.is_member("U99", Some("gkim@example.com"), "Hybrid Platforms"));
    assert!(
        !idx.is_member("U99", Some("gkim@example.com"), "Red Hat Engineering"),
        "ancestry lists only what it lists"
    );
}

#[test]
fn malformed_dumps_are_refused() {
    assert!(directory::OrgIndex::from_json(b"not json").is_err());
    assert!(
        directory::OrgIndex::from_json(br#"{"lookups":{"employees":{}},"indexes":{}}"#).is_err()
    );
    let no_membership = br#"{"lookups":{"employees":{"a":{"uid":"a"}}},"indexes":{"membership":{"membership_index":{}}}}"#;
    let e = directory::OrgIndex::from_json(no_membership).unwrap_err();
    assert!(e.to_string().contains("membership_index"), "{e}");
    // Wrong types where the subset is read are errors, not silently empty indexes.
    assert!(directory::OrgIndex::from_json(br#"{"lookups":{"employees":[1,2]}}"#).is_err());
}

#[test]
fn debug_output_does_not_dump_people() {
    let idx = fixture_index();
    let d = format!("{idx:?}");
    assert!(!d.contains("jdoe@example.com"), "{d}");
    assert!(d.contains("people: 13"), "{d}");
}
