//! The typed payloads, and the gaps in slack-morphism's models that made us keep them
//! (docs/architecture.md, "Where we go around slack-morphism").
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::json;
use slack_morphism::prelude::*;

use super::*;

/// A `block_actions` payload from an Enterprise Grid workspace (external-apis.md A.4).
fn grid_click() -> serde_json::Value {
    json!({
        "type": "block_actions",
        "user": {"id": "W111", "username": "ann", "name": "ann", "team_id": "T111"},
        "api_app_id": "A111",
        "container": {"type": "message", "message_ts": "111.222", "channel_id": "C111", "is_ephemeral": false},
        "trigger_id": "111.222.valid",
        "team": {"id": "T111", "domain": "workspace-domain"},
        "enterprise": {"id": "E111", "name": "Sandbox Org"},
        "is_enterprise_install": true,
        "channel": {"id": "C111", "name": "approvals"},
        "response_url": "https://hooks.slack.com/actions/T111/111/random-value",
        "actions": [{"action_id": "gatehouse_approve", "block_id": "b", "type": "button",
                     "text": {"type": "plain_text", "text": "Approve"}, "value": "r1",
                     "action_ts": "1596530385.194939"}]
    })
}

#[test]
fn our_interaction_keeps_the_enterprise_slack_morphism_loses_it() {
    let ours = Interaction::parse(&grid_click().to_string()).unwrap();
    assert_eq!(ours.enterprise_id(), Some("E111"));
    assert_eq!(ours.kind(), InteractionKind::BlockActions);
    let a = ours.first_action().unwrap();
    assert_eq!(
        (a.action_id.as_str(), a.value.as_str()),
        ("gatehouse_approve", "r1")
    );

    let theirs: SlackInteractionEvent = serde_json::from_value(grid_click()).unwrap();
    let back = serde_json::to_value(&theirs).unwrap();
    assert!(
        back.get("enterprise").is_none(),
        "slack-morphism has no `enterprise`: {back}"
    );
}

#[test]
fn slack_morphism_refuses_payloads_our_endpoints_accept() {
    // Minimal payloads our endpoints (and the fuzz corpus) have always acted on.
    let click = json!({"type": "block_actions", "user": {"id": "U1"}, "team": {"id": "T1"},
        "actions": [{"action_id": "gatehouse_approve", "value": "r1", "action_ts": "1.2"}]});
    assert!(serde_json::from_value::<SlackInteractionEvent>(click.clone()).is_err());
    assert!(Interaction::parse(&click.to_string()).is_ok());

    let form = json!({"type": "view_submission", "user": {"id": "U1"}, "team": {"id": "T1"},
        "view": {"id": "V1", "type": "modal", "callback_id": "gatehouse_request",
                 "state": {"values": {"resource": {"value": {"selected_option": {"value": "demo"}}}}}}});
    assert!(serde_json::from_value::<SlackInteractionEvent>(form.clone()).is_err());
    let ours = Interaction::parse(&form.to_string()).unwrap();
    assert_eq!(
        ours.view.unwrap().input("resource", "value").as_deref(),
        Some("demo")
    );
}

#[test]
fn our_event_envelope_keeps_the_enterprise_slack_morphism_loses_it() {
    let envelope = json!({
        "token": "XXYYZZ", "team_id": "T1", "enterprise_id": "E1", "api_app_id": "A1",
        "type": "event_callback", "event_id": "Ev1", "event_time": 1515449522,
        "event": {"type": "app_home_opened", "user": "U1", "channel": "D1", "tab": "home",
                  "event_ts": "1515449522000016"}
    });
    let ours = EventEnvelope::parse(envelope.to_string().as_bytes()).unwrap();
    assert_eq!(ours.enterprise_id.as_deref(), Some("E1"));
    assert_eq!(ours.kind(), EnvelopeKind::EventCallback);

    let theirs: SlackPushEvent = serde_json::from_value(envelope).unwrap();
    let back = serde_json::to_value(&theirs).unwrap();
    assert!(back.get("enterprise_id").is_none(), "{back}");

    // A DM without `api_app_id` / `event_time`: acted on by us, refused by slack-morphism.
    let dm = json!({"type": "event_callback", "team_id": "T1", "event_id": "Ev2",
        "event": {"type": "message", "channel_type": "im", "channel": "D1", "user": "U1", "text": "status"}});
    assert!(serde_json::from_value::<SlackPushEvent>(dm.clone()).is_err());
    let ours = EventEnvelope::parse(dm.to_string().as_bytes()).unwrap();
    assert_eq!(ours.event.unwrap().text, "status");
}

#[test]
fn slack_morphism_command_event_has_no_enterprise_nor_user_name() {
    let body = "team_id=T1&enterprise_id=E1&channel_id=C1&user_id=U1&user_name=ann&command=%2Faccess\
                &text=status&response_url=https%3A%2F%2Fhooks.slack.com%2Fx&trigger_id=1.2";
    let theirs: SlackCommandEvent = serde_urlencoded::from_str(body).unwrap();
    let back = serde_json::to_value(&theirs).unwrap();
    assert!(back.get("enterprise_id").is_none(), "{back}");
    assert!(back.get("user_name").is_none(), "{back}");
    // And it refuses a command without response_url / trigger_id, which ours answers.
    assert!(
        serde_urlencoded::from_str::<SlackCommandEvent>("team_id=T1&user_id=U1&command=%2Faccess")
            .is_err()
    );
}

#[test]
fn slack_morphism_oauth_answer_lacks_rotation_and_enterprise() {
    // Slack's own example of an org-wide install with token rotation (external-apis.md A.8).
    let answer = json!({"ok": true, "access_token": "xoxe.xoxb-1", "token_type": "bot",
        "scope": "commands", "bot_user_id": "U0KRQLJ9H", "app_id": "A0KRD7HC3",
        "expires_in": 43200, "refresh_token": "xoxe-1-r", "team": null,
        "enterprise": {"name": "slack-sports", "id": "E12345678"}, "is_enterprise_install": true,
        "authed_user": {"id": "U1234"}});
    assert!(
        serde_json::from_value::<SlackOAuthV2AccessTokenResponse>(answer.clone()).is_err(),
        "team: null is refused"
    );
    let mut workspace = answer;
    workspace["team"] = json!({"id": "T1", "name": "Softball"});
    let theirs: SlackOAuthV2AccessTokenResponse = serde_json::from_value(workspace).unwrap();
    let back = serde_json::to_value(&theirs).unwrap();
    for field in [
        "refresh_token",
        "expires_in",
        "enterprise",
        "is_enterprise_install",
    ] {
        assert!(back.get(field).is_none(), "{field} kept: {back}");
    }
}

#[test]
fn fields_of_the_wrong_type_count_as_absent() {
    let odd = json!({"type": "block_actions", "user": {"id": "U1", "name": 7},
        "team": "not an object", "enterprise": null, "response_url": 5,
        "actions": [{"action_id": "gatehouse_approve", "value": {"x": 1}}]});
    let p = Interaction::parse(&odd.to_string()).unwrap();
    assert_eq!(p.user.as_ref().unwrap().name, None);
    assert!(p.team.is_none() && p.enterprise_id().is_none() && p.response_url.is_none());
    assert_eq!(p.actions.unwrap()[0].value, "");

    let ev =
        json!({"type": "event_callback", "event": {"type": "user_change", "user": {"id": "U1"}}});
    let e = EventEnvelope::parse(ev.to_string().as_bytes()).unwrap();
    assert_eq!(e.event_type(), Some("user_change"));
    assert_eq!(e.event.unwrap().user, "");
}

#[test]
fn presence_flags_see_null_too() {
    let ev = json!({"type": "event_callback", "event": {"type": "message", "bot_id": null}});
    let e = EventEnvelope::parse(ev.to_string().as_bytes()).unwrap();
    let body = e.event.unwrap();
    assert!(body.bot_id && !body.subtype);
}

#[test]
fn view_values_hash_as_before() {
    // The replay key hashes `state.values` as serde_json writes the parsed object (keys sorted).
    let form = json!({"type": "view_submission", "user": {"id": "U1"},
        "view": {"id": "V1", "state": {"values": {"b": {"value": {"value": "x"}}, "a": {}}}}});
    let p = Interaction::parse(&form.to_string()).unwrap();
    assert_eq!(
        p.view.unwrap().values_json,
        r#"{"a":{},"b":{"value":{"value":"x"}}}"#
    );
    let no_state = Interaction::parse(r#"{"view": {"id": "V1"}}"#).unwrap();
    assert_eq!(no_state.view.unwrap().values_json, "");
}
