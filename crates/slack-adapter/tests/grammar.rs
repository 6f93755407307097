//! The command grammar: every form the source documents use, and a specific message for every
//! malformed command.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use slack_adapter::grammar::{Command, HelpTopic, ParseErrorKind, Surface, help_text, parse};

fn req(resource: &str, duration: Option<&str>, justification: &str) -> Command {
    Command::Request {
        resource: resource.into(),
        duration: duration.map(Into::into),
        justification: justification.into(),
    }
}

const ALL: [Surface; 3] = [Surface::Access, Surface::VpnAccess, Surface::DirectMessage];

#[test]
fn cloud_connexa_form_with_bare_hours() {
    for s in ALL {
        assert_eq!(
            parse("request dev-network 4 Running database migration", s).unwrap(),
            req("dev-network", Some("4"), "Running database migration")
        );
    }
}

#[test]
fn gcp_form_with_quoted_justification() {
    for s in ALL {
        assert_eq!(
            parse(
                "request gcp-access \"Need to debug CI infrastructure issues\"",
                s
            )
            .unwrap(),
            req(
                "gcp-access",
                None,
                "\"Need to debug CI infrastructure issues\""
            )
        );
    }
    // Slack clients turn straight quotes into curly ones.
    assert_eq!(
        parse(
            "request gcp-access “Need to debug CI”",
            Surface::DirectMessage
        )
        .unwrap(),
        req("gcp-access", None, "“Need to debug CI”")
    );
    // Duration and quotes together.
    assert_eq!(
        parse("request gcp-access 2d \"Load test\"", Surface::Access).unwrap(),
        req("gcp-access", Some("2d"), "\"Load test\"")
    );
}

#[test]
fn unquoted_justification_without_duration() {
    assert_eq!(
        parse(
            "request gcp-access Need to debug CI",
            Surface::DirectMessage
        )
        .unwrap(),
        req("gcp-access", None, "Need to debug CI")
    );
    // A word that merely starts with a digit is not a duration.
    assert_eq!(
        parse(
            "request dev-network 3rd attempt at the migration",
            Surface::Access
        )
        .unwrap(),
        req("dev-network", None, "3rd attempt at the migration")
    );
}

/// Issue 17 item 3: a role is part of the resource word (`gcp-access:editor`), on every surface
/// and with every verb that names a resource.
#[test]
fn a_role_is_part_of_the_resource_word() {
    for s in ALL {
        assert_eq!(
            parse("request gcp-access:editor 4h \"Deploying the fix\"", s).unwrap(),
            req("gcp-access:editor", Some("4h"), "\"Deploying the fix\"")
        );
        assert_eq!(
            parse("revoke gcp-access:viewer", s).unwrap(),
            Command::Revoke {
                resource: "gcp-access:viewer".into()
            }
        );
        assert_eq!(
            parse("cancel dev-network:admins", s).unwrap(),
            Command::Cancel {
                target: "dev-network:admins".into()
            }
        );
    }
    assert!(
        help_text(Surface::Access, HelpTopic::General)
            .contains("`/access request gcp-access:editor 4h Deploying the fix`")
    );
}

#[test]
fn duration_spellings() {
    for (text, d) in [
        ("request db 30m fix", "30m"),
        ("request db 1h30m fix", "1h30m"),
        ("request db 2 hours fix it", "2hours"),
        ("request db 90 minutes fix it", "90minutes"),
        ("request db 1 day fix it", "1day"),
        ("request db 0 fix", "0"),
        ("request db 999 fix", "999"),
    ] {
        match parse(text, Surface::Access).unwrap() {
            Command::Request { duration, .. } => assert_eq!(duration.as_deref(), Some(d), "{text}"),
            other => panic!("{text}: {other:?}"),
        }
    }
}

/// Found by the `command_grammar` fuzz target: `0 hours` was split off as a duration (and refused
/// by the engine with "longer than zero"), but `0h`, `0hours` or an overflowing `99999999999999h`
/// were taken as the first word of the justification, so the person silently got the default
/// duration instead of being told. A token shaped like a duration is one, whatever its value.
#[test]
fn a_duration_the_engine_will_refuse_is_still_a_duration() {
    for (text, d, why) in [
        ("request db 0h fix it", "0h", "fix it"),
        ("request db 0hours fix it", "0hours", "fix it"),
        ("request db 0 hours fix it", "0hours", "fix it"),
        ("request db 0h0m fix it", "0h0m", "fix it"),
        (
            "request db 99999999999999h fix it",
            "99999999999999h",
            "fix it",
        ),
        ("request db 400d \"long one\"", "400d", "\"long one\""),
    ] {
        assert_eq!(
            parse(text, Surface::Access),
            Ok(req("db", Some(d), why)),
            "{text}"
        );
    }
    // Not shaped like a duration: still the justification.
    for text in [
        "request db 2d2 reasons",
        "request db 3rd attempt",
        "request db 4x4 tests",
    ] {
        match parse(text, Surface::Access).unwrap() {
            Command::Request { duration, .. } => assert_eq!(duration, None, "{text}"),
            other => panic!("{text}: {other:?}"),
        }
    }
}

#[test]
fn verbs_are_case_insensitive_and_mentions_are_ignored() {
    assert_eq!(
        parse("REQUEST dev-network 4 x", Surface::DirectMessage).unwrap(),
        req("dev-network", Some("4"), "x")
    );
    assert_eq!(
        parse("<@U0BOT> status", Surface::DirectMessage).unwrap(),
        Command::Status
    );
    assert_eq!(
        parse("  Status  ", Surface::Access).unwrap(),
        Command::Status
    );
}

#[test]
fn slack_escapes_are_undone() {
    assert_eq!(
        parse(
            "request db 4 fix &lt;prod&gt; &amp; staging",
            Surface::Access
        )
        .unwrap(),
        req("db", Some("4"), "fix <prod> & staging")
    );
}

#[test]
fn other_verbs() {
    assert_eq!(parse("status", Surface::Access).unwrap(), Command::Status);
    assert_eq!(parse("list", Surface::VpnAccess).unwrap(), Command::List);
    assert_eq!(
        parse("revoke gcp-access", Surface::DirectMessage).unwrap(),
        Command::Revoke {
            resource: "gcp-access".into()
        }
    );
    assert_eq!(
        parse("extend dev-network 2h", Surface::Access).unwrap(),
        Command::Extend {
            resource: "dev-network".into(),
            duration: Some("2h".into()),
            justification: None
        }
    );
    assert_eq!(
        parse("extend dev-network", Surface::Access).unwrap(),
        Command::Extend {
            resource: "dev-network".into(),
            duration: None,
            justification: None
        }
    );
    assert_eq!(
        parse("extend dev-network 2h still migrating", Surface::Access).unwrap(),
        Command::Extend {
            resource: "dev-network".into(),
            duration: Some("2h".into()),
            justification: Some("still migrating".into())
        }
    );
    assert_eq!(
        parse("cancel dev-network", Surface::Access).unwrap(),
        Command::Cancel {
            target: "dev-network".into()
        }
    );
    assert_eq!(
        parse("help", Surface::Access).unwrap(),
        Command::Help {
            topic: HelpTopic::General
        }
    );
    assert_eq!(
        parse("help manage", Surface::DirectMessage).unwrap(),
        Command::Help {
            topic: HelpTopic::Manage
        }
    );
}

#[test]
fn empty_input() {
    assert_eq!(parse("", Surface::Access).unwrap(), Command::OpenModal);
    // As in the Cloud Connexa document, `/vpn-access` alone shows help.
    assert_eq!(
        parse("", Surface::VpnAccess).unwrap(),
        Command::Help {
            topic: HelpTopic::General
        }
    );
    assert_eq!(
        parse(" \u{a0} ", Surface::DirectMessage).unwrap(),
        Command::Help {
            topic: HelpTopic::General
        }
    );
}

#[test]
fn missing_justification_shows_usage_with_an_example() {
    for text in [
        "request dev-network",
        "request dev-network 4",
        "request dev-network \"\"",
        "request dev-network 4 “ ”",
    ] {
        let e = parse(text, Surface::VpnAccess).unwrap_err();
        assert_eq!(
            e.kind,
            ParseErrorKind::MissingJustification {
                resource: "dev-network".into()
            },
            "{text}"
        );
        let msg = e.to_string();
        assert!(
            msg.contains("Usage: `/vpn-access request <resource>"),
            "{msg}"
        );
        assert!(
            msg.contains("Example: `/vpn-access request dev-network 4 Running database migration`"),
            "{msg}"
        );
    }
}

#[test]
fn missing_resource_shows_the_document_usage() {
    let e = parse("request", Surface::DirectMessage).unwrap_err();
    assert_eq!(e.kind, ParseErrorKind::MissingResource { verb: "request" });
    let msg = e.to_string();
    assert!(msg.starts_with("Invalid command format. Usage: `request <resource> [duration] \"<business justification>\"`"), "{msg}");
    assert!(
        msg.contains("request gcp-access \"Need to debug CI infrastructure issues\""),
        "{msg}"
    );
    assert!(!msg.contains("/access"), "a DM's usage has no slash: {msg}");
}

#[test]
fn other_malformed_commands() {
    let e = parse("revoke", Surface::Access).unwrap_err();
    assert_eq!(e.kind, ParseErrorKind::MissingResource { verb: "revoke" });
    assert!(e.to_string().contains("`/access revoke <resource>`"));
    let e = parse("extend", Surface::Access).unwrap_err();
    assert_eq!(e.kind, ParseErrorKind::MissingResource { verb: "extend" });
    let e = parse("cancel", Surface::DirectMessage).unwrap_err();
    assert_eq!(e.kind, ParseErrorKind::MissingCancelTarget);
    let e = parse("grant me everything", Surface::VpnAccess).unwrap_err();
    assert_eq!(
        e.kind,
        ParseErrorKind::UnknownCommand {
            word: "grant".into()
        }
    );
    assert_eq!(
        e.to_string(),
        "Unknown command `grant`. Use `/vpn-access help` for available commands."
    );
}

#[test]
fn help_lists_every_command_for_the_surface() {
    let h = help_text(Surface::VpnAccess, HelpTopic::General);
    for verb in [
        "request", "status", "list", "revoke", "extend", "cancel", "help",
    ] {
        assert!(
            h.contains(&format!("`/vpn-access {verb}")),
            "{verb} missing in {h}"
        );
    }
    assert!(!h.contains("Managing access"));
    let m = help_text(Surface::DirectMessage, HelpTopic::Manage);
    assert!(m.contains("`request <resource>"));
    assert!(m.contains("Managing access"));
}
