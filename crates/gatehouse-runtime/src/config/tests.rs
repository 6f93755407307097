//! Tests of the configuration file's parsing and checks.
use super::*;

const EXAMPLE: &str = r#"
[server]
approval_channel = "approvals"

[[resources]]
id = "demo"
provider = "dry-run"
default_duration = "1h"
max_duration = "8h"
eligibility = ["anyone"]
approval = { mode = "auto" }

[[resources]]
id = "prod"
provider = "dry-run"
min_duration = "1s"
default_duration = "30m"
max_duration = "2h"
eligibility = [{ org = "Hybrid Platforms" }, { email_domain = ["example.com"] }]
approval = { mode = "approvers", approvers = { users = ["U1", "U2"] }, required = 2, pending_ttl = "2h" }
settings = { network = "prod-vpc" }
"#;

#[test]
fn parses_the_example() {
    let c = Config::from_toml(EXAMPLE, "x.toml").unwrap();
    let rs = c.resources().unwrap();
    assert_eq!(rs.len(), 2);
    assert_eq!(rs[1].durations.min.secs(), 1);
    assert_eq!(rs[1].approval.required_approvals(), 2);
    assert_eq!(rs[1].settings["network"], "prod-vpc");
    assert_eq!(rs[1].eligibility.len(), 2);
}

#[test]
fn bad_resources_are_named() {
    let bad = r#"
[[resources]]
id = "x"
provider = "dry-run"
default_duration = "10h"
max_duration = "1h"
approval = { mode = "auto" }
"#;
    let e = Config::from_toml(bad, "x")
        .unwrap()
        .resources()
        .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("resource 'x': default_duration (10h) is outside"),
        "{e}"
    );
    let unknown =
        "[[resources]]\nid='x'\nprovider='dry-run'\napproval={mode='auto'}\ncolour='red'\n";
    assert!(
        Config::from_toml(unknown, "x")
            .unwrap_err()
            .to_string()
            .contains("colour")
    );
    let two = r#"
[[resources]]
id = "x"
provider = "dry-run"
approval = { mode = "approvers", approvers = { users = ["U1"] }, required = 2 }
"#;
    assert!(
        Config::from_toml(two, "x")
            .unwrap()
            .resources()
            .unwrap_err()
            .to_string()
            .contains("2 approvals required")
    );
}

/// Found by the crash test: `extendable = true` on GCP's key mode re-issued a key with the
/// old end instead of extending. Not extendable by default there, and refused when asked.
#[test]
fn gcp_key_mode_is_not_extendable() {
    let gcp = |mode: &str, extendable: &str| {
        format!(
            "[[resources]]\nid='g'\nprovider='gcp-iam'\napproval={{mode='auto'}}\n\
             settings={{project='my-project-1', role='roles/browser', mode='{mode}'}}\n{extendable}\n"
        )
    };
    let resources = |toml: String| Config::from_toml(&toml, "x").unwrap().resources();
    let key_default = resources(gcp("service_account_key", "")).unwrap();
    assert!(!key_default[0].extendable);
    let e = resources(gcp("service_account_key", "extendable = true")).unwrap_err();
    assert!(
        e.to_string().contains("extendable = true is not possible"),
        "{e}"
    );
    assert!(!resources(gcp("service_account_key", "extendable = false")).unwrap()[0].extendable);
    assert!(resources(gcp("user_binding", "")).unwrap()[0].extendable);
    assert!(resources(gcp("user_binding", "extendable = true")).unwrap()[0].extendable);
}

const ROLES: &str = r#"
[[resources]]
id = "gcp-access"
description = "GCP project"
provider = "gcp-iam"
default_duration = "1h"
max_duration = "8h"
eligibility = ["anyone"]
approval = { mode = "auto" }
settings = { project = "my-project-1", role = "roles/browser", mode = "user_binding" }

[[resources.roles]]
id = "viewer"
settings = { role = "roles/viewer.custom" }

[[resources.roles]]
id = "editor"
description = "Edit the project"
settings = { role = "roles/editor.custom" }
max_duration = "2h"
eligibility = [{ email_domain = ["example.com"] }]
approval = { mode = "approvers", approvers = { users = ["U1"] } }
extendable = false
"#;

/// Issue 17 item 3: every role is its own resource `<resource>:<role>`, with the resource's
/// fields where it says nothing; the resource itself is not offered bare.
#[test]
fn roles_become_resources() {
    let rs = Config::from_toml(ROLES, "x").unwrap().resources().unwrap();
    let ids: Vec<&str> = rs.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["gcp-access:viewer", "gcp-access:editor"]);
    let (viewer, editor) = (&rs[0], &rs[1]);
    assert_eq!(viewer.description, "GCP project (viewer)");
    assert_eq!(viewer.settings["role"], "roles/viewer.custom");
    assert_eq!(viewer.settings["project"], "my-project-1");
    assert_eq!(viewer.settings["mode"], "user_binding");
    assert_eq!(viewer.durations.max.secs(), 8 * 3600);
    assert!(viewer.approval.is_auto());
    assert_eq!(viewer.eligibility, vec![EligibilityRule::Anyone]);
    assert!(viewer.extendable);
    assert_eq!(editor.description, "Edit the project");
    assert_eq!(editor.settings["role"], "roles/editor.custom");
    assert_eq!(editor.durations.max.secs(), 2 * 3600);
    assert_eq!(editor.durations.default.secs(), 3600);
    assert_eq!(editor.approval.required_approvals(), 1);
    assert_eq!(editor.eligibility.len(), 1);
    assert!(!editor.extendable);
}

/// A resource's break-glass carries over to its roles that have approvers (who review the
/// emergency grants), not to those approved automatically.
#[test]
fn roles_with_approvers_inherit_break_glass() {
    let text = ROLES.replacen(
        "approval = { mode = \"auto\" }\n",
        "approval = { mode = \"auto\" }\nemergency = true\nemergency_duration = \"30m\"\n",
        1,
    );
    let rs = Config::from_toml(&text, "x").unwrap().resources().unwrap();
    assert!(
        rs[0].emergency.is_none(),
        "viewer is approved automatically"
    );
    assert_eq!(rs[1].emergency.unwrap().duration.secs(), 1800, "editor");
}

#[test]
fn bad_roles_are_refused_with_their_name() {
    let err = |text: String| {
        Config::from_toml(&text, "x")
            .and_then(|c| c.resources())
            .unwrap_err()
            .to_string()
    };
    let e = err(ROLES.replace("id = \"editor\"", "id = \"Editor!\""));
    assert_eq!(
        e,
        "resource 'gcp-access': role 'Editor!' is not a valid role name (use lower-case \
         letters, digits, '-', '_' or '.', starting with a letter or digit, at most 64 characters)"
    );
    let e = err(ROLES.replace("id = \"editor\"", "id = \"a:b\""));
    assert!(e.contains("role 'a:b' is not a valid role name"), "{e}");
    let e = err(ROLES.replace("id = \"editor\"", "id = \"viewer\""));
    assert_eq!(e, "resource 'gcp-access': two roles are named 'viewer'");
    let e = err(ROLES.replace("id = \"gcp-access\"", "id = \"gcp-access:all\""));
    assert!(
        e.starts_with("resource 'gcp-access:all': ':' separates a resource from one of its roles"),
        "{e}"
    );
    // A role's own settings and bounds are checked like a resource's, under the role's name.
    let e = err(ROLES.replace("roles/editor.custom", "roles/owner"));
    assert!(
        e.starts_with("resource 'gcp-access:editor': settings:") && e.contains("basic role"),
        "{e}"
    );
    let e = err(ROLES.replace("max_duration = \"2h\"", "max_duration = \"30m\""));
    assert!(
        e.starts_with("resource 'gcp-access:editor': default_duration (1h)"),
        "{e}"
    );
    let e = err(ROLES.replace("extendable = false", "colour = \"red\""));
    assert!(e.contains("colour"), "{e}");
    // Two roles granting the same GCP role would take each other's access away.
    let e = err(ROLES.replace("roles/editor.custom", "roles/viewer.custom"));
    assert!(
        e.starts_with(
            "resource 'gcp-access:editor': roles 'gcp-access:viewer' and 'gcp-access:editor' \
             both grant GCP role roles/viewer.custom in project my-project-1"
        ),
        "{e}"
    );
    // Same for two roles of a Cloud Connexa network without their own groups.
    let vpn = r#"
[[resources]]
id = "dev-network"
provider = "cloudconnexa"
approval = { mode = "auto" }
settings = { network = "dev" }
[[resources.roles]]
id = "users"
[[resources.roles]]
id = "admins"
"#;
    let e = err(vpn.to_string());
    assert!(
        e.contains("both grant Cloud Connexa group dev-users"),
        "{e}"
    );
    let fixed = vpn.replace(
        "id = \"admins\"",
        "id = \"admins\"\nsettings = { group = \"dev-admins\" }",
    );
    let rs = Config::from_toml(&fixed, "x").unwrap().resources().unwrap();
    assert_eq!(rs[1].settings["group"], "dev-admins");
    assert_eq!(rs[1].settings["network"], "dev");
    // A resource and another's roles cannot share a name.
    let e = err(format!(
        "{ROLES}\n[[resources]]\nid = \"gcp-access\"\nprovider = \"dry-run\"\napproval = {{ mode = \"auto\" }}\n"
    ));
    assert_eq!(e, "two resources are named 'gcp-access'");
}

/// A role can be retired alone (its grants still end); retiring the resource retires all.
#[test]
fn roles_retire_alone_or_together() {
    let one = ROLES.replace("extendable = false", "extendable = false\nretired = true");
    let c = Config::from_toml(&one, "x").unwrap();
    let offered: Vec<String> = c
        .resources()
        .unwrap()
        .iter()
        .map(|r| r.id.to_string())
        .collect();
    assert_eq!(offered, ["gcp-access:viewer"]);
    let retired: Vec<String> = c
        .retired_resources()
        .unwrap()
        .iter()
        .map(|r| r.id.to_string())
        .collect();
    assert_eq!(retired, ["gcp-access:editor"]);
    let all = ROLES.replace(
        "eligibility = [\"anyone\"]",
        "eligibility = [\"anyone\"]\nretired = true",
    );
    let c = Config::from_toml(&all, "x").unwrap();
    assert!(c.resources().unwrap().is_empty());
    assert_eq!(c.retired_resources().unwrap().len(), 2);
}

#[test]
fn break_glass_settings_are_checked_at_start() {
    let r = |approval: &str, extra: &str| {
        Config::from_toml(
            &format!(
                "[[resources]]\nid='p'\nprovider='dry-run'\nmin_duration='5m'\nmax_duration='8h'\n\
                 approval={approval}\n{extra}\n"
            ),
            "x",
        )
        .unwrap()
        .resources()
    };
    let approvers = "{mode='approvers', approvers={users=['U1']}}";
    assert_eq!(
        r(approvers, "").unwrap()[0].emergency,
        None,
        "off by default"
    );
    let on = r(approvers, "emergency = true").unwrap();
    assert_eq!(
        on[0].emergency.unwrap().duration.secs(),
        3600,
        "1h by default"
    );
    let short = Config::from_toml(
        "[[resources]]\nid='p'\nprovider='dry-run'\ndefault_duration='30m'\nmax_duration='30m'\n\
         approval={mode='approvers', approvers={users=['U1']}}\nemergency=true\n",
        "x",
    )
    .unwrap()
    .resources()
    .unwrap();
    assert_eq!(
        short[0].emergency.unwrap().duration.secs(),
        1800,
        "the default stays within max_duration"
    );
    let set = r(approvers, "emergency = true\nemergency_duration = '2h'").unwrap();
    assert_eq!(set[0].emergency.unwrap().duration.secs(), 7200);
    for (approval, extra, message) in [
        (
            "{mode='auto'}",
            "emergency = true",
            "resource 'p': emergency = true needs approval mode 'approvers'",
        ),
        (
            approvers,
            "emergency_duration = '2h'",
            "resource 'p': emergency_duration is set but emergency is not true",
        ),
        (
            approvers,
            "emergency = true\nemergency_duration = '9h'",
            "resource 'p': emergency_duration (9h) is outside 5m..8h",
        ),
        (
            approvers,
            "emergency = true\nemergency_duration = '1m'",
            "resource 'p': emergency_duration (1m) is outside 5m..8h",
        ),
        (
            approvers,
            "emergency = true\nemergency_duration = 'soon'",
            "resource 'p': emergency_duration: 'soon' is not a duration",
        ),
    ] {
        let e = r(approval, extra).unwrap_err().to_string();
        assert!(e.starts_with(message), "{extra}: {e}");
    }
    assert!(
        Config::from_toml("[server]\nsecurity_channel = 'security-alerts'\n", "x")
            .unwrap()
            .server
            .security_channel
            .as_deref()
            == Some("security-alerts")
    );
}

/// Issue 17: `[server] admins` and `[server.rate_limits]`, with the server's defaults when
/// absent and a clear error for a bad value.
#[test]
fn admins_and_rate_limits() {
    let c = Config::from_toml("", "x").unwrap();
    assert!(c.server.admin_set().unwrap().is_empty());
    let limits = c.server.rate_limits.request_limits().unwrap();
    assert_eq!(
        (limits.requests, limits.window.secs(), limits.pending),
        (10, 3600, 3)
    );
    assert_eq!(
        c.server.rate_limits.workspace_limits(),
        slack_adapter::ratelimit::WorkspaceLimits::DEFAULT
    );

    let c = Config::from_toml(
        "[server]\nadmins = { users = [\"U1\"], slack_groups = [\"S1\"] }\n\
         [server.rate_limits]\nrequests_per_person = 0\nrequest_window = \"30m\"\n\
         pending_per_person = 5\nworkspace_burst = 0\n",
        "x",
    )
    .unwrap();
    let admins = c.server.admin_set().unwrap();
    assert_eq!(admins.users, vec!["U1"]);
    assert_eq!(admins.slack_groups, vec!["S1"]);
    let limits = c.server.rate_limits.request_limits().unwrap();
    assert_eq!(
        (limits.requests, limits.window.secs(), limits.pending),
        (0, 1800, 5)
    );
    assert!(c.server.rate_limits.workspace_limits().is_off());

    let bad = Config::from_toml("[server.rate_limits]\nrequest_window = \"soon\"\n", "x").unwrap();
    let e = bad.server.rate_limits.request_limits().unwrap_err();
    assert!(
        e.to_string()
            .starts_with("[server] rate_limits.request_window"),
        "{e}"
    );
    let typo = Config::from_toml("[server]\nadmins = { user = [\"U1\"] }\n", "x");
    assert!(typo.unwrap_err().to_string().contains("user"));
    let blank = Config::from_toml("[server]\nadmins = { users = [\" \"] }\n", "x").unwrap();
    assert!(blank.server.admin_set().is_err());
}

#[test]
fn urls_are_redacted() {
    assert_eq!(
        redact_url("postgres://u:pw@h:5432/db"),
        "postgres://u:***@h:5432/db"
    );
    assert_eq!(redact_url("sqlite://gatehouse.db"), "sqlite://gatehouse.db");
}
