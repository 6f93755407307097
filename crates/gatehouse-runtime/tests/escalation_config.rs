//! Escalation settings are checked at start: a resource whose escalation cannot work stops the
//! server with a message naming the resource and the problem (docs/delegation-escalation.md).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use gatehouse_runtime::Config;

fn resources(approval: &str) -> Result<Vec<access_core::Resource>, String> {
    let text =
        format!("[[resources]]\nid = \"prod-db\"\nprovider = \"dry-run\"\napproval = {approval}\n");
    Config::from_toml(&text, "x.toml")
        .map_err(|e| e.to_string())?
        .resources()
        .map_err(|e| e.to_string())
}

#[test]
fn a_working_escalation_is_accepted() {
    let rs = resources(
        r#"{ mode = "approvers", approvers = { users = ["U1"] }, escalate_after = "30m", escalation_approvers = { users = ["U9"], slack_groups = ["S1"] }, escalation_channel = "access-escalations" }"#,
    )
    .unwrap();
    let esc = rs[0].approval.escalation().expect("escalation configured");
    assert_eq!(esc.after.secs(), 1800);
    assert_eq!(esc.approvers.users, vec!["U9".to_string()]);
    assert_eq!(esc.channel, Some("access-escalations"));
}

#[test]
fn a_broken_escalation_stops_the_start_naming_the_resource() {
    for (approval, says) in [
        (
            r#"{ mode = "approvers", approvers = { users = ["U1"] }, escalate_after = "30m" }"#,
            "escalate_after needs escalation_approvers",
        ),
        (
            r#"{ mode = "approvers", approvers = { users = ["U1"] }, escalation_approvers = { users = ["U9"] } }"#,
            "need escalate_after",
        ),
        (
            r#"{ mode = "approvers", approvers = { users = ["U1"] }, pending_ttl = "1h", escalate_after = "1h", escalation_approvers = { users = ["U9"] } }"#,
            "must be shorter than pending_ttl",
        ),
        (
            r#"{ mode = "approvers", approvers = { users = ["U1"] }, escalate_after = "soon", escalation_approvers = { users = ["U9"] } }"#,
            "soon",
        ),
    ] {
        let e = resources(approval).unwrap_err();
        assert!(e.contains(says), "{approval}: {e}");
        assert!(e.contains("prod-db") || e.contains("soon"), "{e}");
    }
}
