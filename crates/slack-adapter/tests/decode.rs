//! `router::decode`: the endpoints' own decoding, as the fuzz target `slack_payload` drives it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use slack_adapter::router::{Endpoint, decode, reread_delivery};

fn stored(endpoint: Endpoint, body: &str) -> String {
    let s = decode(endpoint, body.as_bytes())
        .unwrap()
        .expect("a delivery is stored");
    assert_eq!(reread_delivery(&s).unwrap(), s, "reads back as written");
    s
}

fn form(json: &str) -> String {
    let mut out = String::from("payload=");
    for b in json.bytes() {
        if b.is_ascii_alphanumeric() {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[test]
fn slash_commands() {
    let s = stored(
        Endpoint::Commands,
        "token=SECRET-VERIFICATION&team_id=T1&user_id=U1&user_name=jane&command=%2Faccess&text=request+demo+30m+why&response_url=https%3A%2F%2Fhooks.slack.com%2Fx&trigger_id=1.2",
    );
    assert!(s.contains(r#""type":"command""#), "{s}");
    assert!(s.contains("request demo 30m why"), "{s}");
    assert!(
        !s.contains("SECRET-VERIFICATION"),
        "the verification token is never stored: {s}"
    );
    // Answered in the acknowledgement, nothing stored: help, the form, a malformed command.
    for text in ["help", "", "request"] {
        let body = format!("team_id=T1&user_id=U1&command=%2Faccess&text={text}");
        assert_eq!(
            decode(Endpoint::Commands, body.as_bytes()),
            Ok(None),
            "{text}"
        );
    }
    assert_eq!(
        decode(Endpoint::Commands, b"team_id=T1&text=status"),
        Err("malformed slash command")
    );
}

#[test]
fn interactions() {
    let click = r#"{"type":"block_actions","user":{"id":"UAPP1","username":"ann"},"team":{"id":"T1"},"container":{"type":"message","message_ts":"17.1"},"actions":[{"action_id":"gatehouse_approve","value":"r1","action_ts":"17.2"}]}"#;
    let s = stored(Endpoint::Interactions, &form(click));
    assert!(
        s.contains(r#""type":"action""#) && s.contains("gatehouse_approve") && s.contains("17.1"),
        "{s}"
    );
    let modal = r#"{"type":"view_submission","user":{"id":"U1"},"team":{"id":"T1"},"view":{"id":"V1","callback_id":"gatehouse_request","state":{"values":{"resource":{"value":{"selected_option":{"value":"demo"}}},"justification":{"value":{"value":" why "}}}}}}"#;
    let s = stored(Endpoint::Interactions, &form(modal));
    assert!(
        s.contains(r#""resource":"demo""#) && s.contains(r#""justification":"why""#),
        "{s}"
    );
    let other_view = modal.replace("gatehouse_request", "something_else");
    assert_eq!(
        decode(Endpoint::Interactions, form(&other_view).as_bytes()),
        Ok(None)
    );
    let no_action = r#"{"type":"block_actions","user":{"id":"U1"},"actions":[]}"#;
    assert_eq!(
        decode(Endpoint::Interactions, form(no_action).as_bytes()),
        Ok(None)
    );
    assert_eq!(
        decode(
            Endpoint::Interactions,
            form(r#"{"type":"block_actions"}"#).as_bytes()
        ),
        Err("payload has no user")
    );
    assert_eq!(
        decode(Endpoint::Interactions, b"payload=%7B"),
        Err("payload is not JSON")
    );
    assert_eq!(
        decode(Endpoint::Interactions, b"nothing=1"),
        Err("missing payload")
    );
}

#[test]
fn events() {
    let dm = r#"{"type":"event_callback","team_id":"T1","event_id":"Ev1","event":{"type":"message","channel_type":"im","channel":"D1","user":"U1","text":"status"}}"#;
    let s = stored(Endpoint::Events, dm);
    assert!(
        s.contains(r#""type":"direct_message""#) && s.contains("status"),
        "{s}"
    );
    let bot = dm.replace(r#""user":"U1""#, r#""user":"U1","bot_id":"B1""#);
    assert_eq!(decode(Endpoint::Events, bot.as_bytes()), Ok(None));
    let check = r#"{"type":"url_verification","challenge":"abc"}"#;
    assert_eq!(decode(Endpoint::Events, check.as_bytes()), Ok(None));
    assert_eq!(decode(Endpoint::Events, b"{"), Err("body is not JSON"));
    assert!(reread_delivery(r#"{"type":"nonsense"}"#).is_err());
}

/// The stored deliveries' JSON, byte for byte: jobs stored by one release are read by the next.
#[test]
fn stored_deliveries_are_pinned() {
    let command = stored(
        Endpoint::Commands,
        "team_id=T1&user_id=U1&user_name=jane&command=%2Faccess&text=request+demo+30m+why&response_url=https%3A%2F%2Fhooks.slack.com%2Fx&trigger_id=1.2",
    );
    assert_eq!(
        command,
        r#"{"type":"command","team_id":"T1","enterprise_id":null,"user_id":"U1","user_name":"jane","command":"/access","text":"request demo 30m why","reply":{"kind":"response_url","url":"https://hooks.slack.com/x"}}"#
    );
    let click = r#"{"type":"block_actions","user":{"id":"UAPP1","username":"ann"},"team":{"id":"T1"},"enterprise":{"id":"E1"},"container":{"type":"message","message_ts":"17.1"},"actions":[{"action_id":"gatehouse_approve","value":"r1","action_ts":"17.2"}]}"#;
    assert_eq!(
        stored(Endpoint::Interactions, &form(click)),
        r#"{"type":"action","team_id":"T1","enterprise_id":"E1","user_id":"UAPP1","user_name":"ann","action_id":"gatehouse_approve","value":"r1","reply":{"kind":"channel","channel":"UAPP1"},"from_home":false,"anchor":"17.1"}"#
    );
    let modal = r#"{"type":"view_submission","user":{"id":"U1"},"team":{"id":"T1"},"view":{"id":"V1","callback_id":"gatehouse_request","state":{"values":{"resource":{"value":{"selected_option":{"value":"demo"}}},"justification":{"value":{"value":" why "}}}}}}"#;
    assert_eq!(
        stored(Endpoint::Interactions, &form(modal)),
        r#"{"type":"submission","team_id":"T1","enterprise_id":null,"user_id":"U1","user_name":"","resource":"demo","duration":null,"justification":"why"}"#
    );
    let dm = r#"{"type":"event_callback","team_id":"T1","enterprise_id":"E1","event_id":"Ev1","event":{"type":"message","channel_type":"im","channel":"D1","user":"U1","text":"status"}}"#;
    assert_eq!(
        stored(Endpoint::Events, dm),
        r#"{"type":"direct_message","team_id":"T1","enterprise_id":"E1","user_id":"U1","channel":"D1","text":"status"}"#
    );
}
