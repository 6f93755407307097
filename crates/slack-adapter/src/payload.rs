//! Slack's incoming payloads (interactions, Events API envelopes) as typed values, parsed once
//! at the edge so that no handler reads JSON by path.
//!
//! These are our own small structs rather than slack-morphism's `SlackInteractionEvent` and
//! `SlackPushEvent` (docs/architecture.md, "Where we go around slack-morphism"): those have no
//! `enterprise` / `enterprise_id`, which Enterprise Grid routing needs, and they require fields
//! (`api_app_id`, `container`, `trigger_id`, a message's `ts`, a modal's `title` and `blocks`)
//! whose absence our endpoints have always tolerated. Every field here is optional and read
//! loosely: a field of an unexpected type is treated as absent, as the endpoints did when they
//! read the JSON by path, so a payload is refused only when it is not JSON at all.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny};

/// Deserialisers that treat a value of the wrong type as absent.
pub(crate) mod loose {
    use super::*;

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either<T> {
        Wanted(T),
        Other(IgnoredAny),
    }

    /// `Some(value)` when the field holds a `T`, `None` for anything else (null included).
    pub fn opt<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
        d: D,
    ) -> Result<Option<T>, D::Error> {
        Ok(match Option::<Either<T>>::deserialize(d)? {
            Some(Either::Wanted(v)) => Some(v),
            _ => None,
        })
    }

    /// The string, or empty when the field holds anything else.
    pub fn string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        Ok(opt::<D, String>(d)?.unwrap_or_default())
    }

    /// The strings of an array (other elements skipped); empty when it is not an array.
    pub fn string_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        let items = opt::<D, Vec<Either<String>>>(d)?.unwrap_or_default();
        Ok(items
            .into_iter()
            .filter_map(|i| match i {
                Either::Wanted(s) => Some(s),
                Either::Other(_) => None,
            })
            .collect())
    }

    /// True whenever the field is there, whatever it holds (`null` included).
    pub fn present<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
        IgnoredAny::deserialize(d).map(|_| true)
    }
}

/// `{"id": …}` objects (`team`, `enterprise`, `channel`).
#[derive(Debug, Default, Deserialize)]
pub struct IdRef {
    /// The Slack id (`T…`, `E…`, `C…`).
    #[serde(default, deserialize_with = "loose::opt")]
    pub id: Option<String>,
}

/// The person who clicked or submitted.
#[derive(Debug, Default, Deserialize)]
pub struct InteractionUser {
    /// The user id; a payload without one is refused.
    #[serde(default, deserialize_with = "loose::opt")]
    pub id: Option<String>,
    /// Their home workspace.
    #[serde(default, deserialize_with = "loose::opt")]
    pub team_id: Option<String>,
    /// Display name (`name`, older payloads `username`).
    #[serde(default, deserialize_with = "loose::opt")]
    pub name: Option<String>,
    /// See `name`.
    #[serde(default, deserialize_with = "loose::opt")]
    pub username: Option<String>,
}

/// Where a clicked button was: a message or a view (App Home, modal).
#[derive(Debug, Default, Deserialize)]
pub struct Container {
    /// `message` or `view`.
    #[serde(rename = "type", default, deserialize_with = "loose::string")]
    pub kind: String,
    /// The message's `ts`, for buttons on messages.
    #[serde(default, deserialize_with = "loose::opt")]
    pub message_ts: Option<String>,
}

/// One element of `actions`.
#[derive(Debug, Default, Deserialize)]
pub struct ActionInfo {
    /// Which button (see [`crate::blocks::Action`]).
    #[serde(default, deserialize_with = "loose::string")]
    pub action_id: String,
    /// The button's value.
    #[serde(default, deserialize_with = "loose::string")]
    pub value: String,
    /// Per click: a replayed delivery carries the same one.
    #[serde(default, deserialize_with = "loose::string")]
    pub action_ts: String,
}

/// One input's state in `view.state.values.<block>.<action>`.
#[derive(Debug, Default, Deserialize)]
pub struct StateEntry {
    /// A text input's value.
    #[serde(default, deserialize_with = "loose::opt")]
    pub value: Option<String>,
    /// A select's choice.
    #[serde(default, deserialize_with = "loose::opt")]
    pub selected_option: Option<SelectedOption>,
}

/// `selected_option` of a select menu.
#[derive(Debug, Default, Deserialize)]
pub struct SelectedOption {
    /// The chosen option's value.
    #[serde(default, deserialize_with = "loose::opt")]
    pub value: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RawState {
    #[serde(default)]
    values: Option<serde_json::Value>,
}

/// The view an interaction happened in (a modal, the App Home).
#[derive(Debug, Default, Deserialize)]
#[serde(from = "RawView")]
pub struct View {
    /// The view id; stays the same when a refused form is corrected and submitted again.
    pub id: Option<String>,
    /// Our callback id (the request form's is [`crate::blocks::MODAL_CALLBACK_ID`]).
    pub callback_id: Option<String>,
    /// Changes every time the view is published.
    pub hash: Option<String>,
    /// `state.values`: block id → action id → input state.
    pub values: BTreeMap<String, BTreeMap<String, StateEntry>>,
    /// `state.values` as canonical JSON text (empty when absent): hashed into the replay key,
    /// so it is kept exactly as every earlier release computed it.
    pub values_json: String,
}

#[derive(Debug, Default, Deserialize)]
struct RawView {
    #[serde(default, deserialize_with = "loose::opt")]
    id: Option<String>,
    #[serde(default, deserialize_with = "loose::opt")]
    callback_id: Option<String>,
    #[serde(default, deserialize_with = "loose::opt")]
    hash: Option<String>,
    #[serde(default, deserialize_with = "loose::opt")]
    state: Option<RawState>,
}

impl From<RawView> for View {
    fn from(raw: RawView) -> View {
        let values = raw.state.and_then(|s| s.values);
        View {
            id: raw.id,
            callback_id: raw.callback_id,
            hash: raw.hash,
            values_json: values.as_ref().map(ToString::to_string).unwrap_or_default(),
            values: values
                .and_then(|v| serde_json::from_value(v).ok())
                .unwrap_or_default(),
        }
    }
}

impl View {
    /// What the input in `block` holds (its action id is `action`): a select's choice or a
    /// text input's value, trimmed; `None` when empty.
    pub fn input(&self, block: &str, action: &str) -> Option<String> {
        let entry = self.values.get(block)?.get(action)?;
        entry
            .selected_option
            .as_ref()
            .and_then(|o| o.value.as_deref())
            .or(entry.value.as_deref())
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    }
}

/// What kind of interaction a payload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InteractionKind {
    /// A button click.
    BlockActions,
    /// A modal submitted.
    ViewSubmission,
    /// Anything else (acknowledged, nothing done).
    Other,
}

/// The `payload` of `/slack/interactions` (external-apis.md A.4).
#[derive(Debug, Default, Deserialize)]
pub struct Interaction {
    #[serde(rename = "type", default, deserialize_with = "loose::string")]
    kind: String,
    /// Who clicked or submitted.
    #[serde(default, deserialize_with = "loose::opt")]
    pub user: Option<InteractionUser>,
    /// Where it happened.
    #[serde(default, deserialize_with = "loose::opt")]
    pub team: Option<IdRef>,
    /// The Enterprise Grid organisation, if any.
    #[serde(default, deserialize_with = "loose::opt")]
    pub enterprise: Option<IdRef>,
    /// For `views.open`, valid three seconds.
    #[serde(default, deserialize_with = "loose::string")]
    pub trigger_id: String,
    /// Answers the message the button was on (absent in views).
    #[serde(default, deserialize_with = "loose::opt")]
    pub response_url: Option<String>,
    /// The channel of the message.
    #[serde(default, deserialize_with = "loose::opt")]
    pub channel: Option<IdRef>,
    /// Where the button was.
    #[serde(default, deserialize_with = "loose::opt")]
    pub container: Option<Container>,
    /// The view (modal or App Home), if any.
    #[serde(default, deserialize_with = "loose::opt")]
    pub view: Option<View>,
    /// The buttons clicked (one in practice).
    #[serde(default, deserialize_with = "loose::opt")]
    pub actions: Option<Vec<ActionInfo>>,
}

impl Interaction {
    /// Parses the `payload` JSON text.
    pub fn parse(json: &str) -> Result<Interaction, serde_json::Error> {
        serde_json::from_str(json)
    }

    /// `block_actions`, `view_submission` or something else.
    pub fn kind(&self) -> InteractionKind {
        match self.kind.as_str() {
            "block_actions" => InteractionKind::BlockActions,
            "view_submission" => InteractionKind::ViewSubmission,
            _ => InteractionKind::Other,
        }
    }

    /// The organisation id, when set and not empty.
    pub fn enterprise_id(&self) -> Option<&str> {
        self.enterprise
            .as_ref()
            .and_then(|e| e.id.as_deref())
            .filter(|e| !e.is_empty())
    }

    /// The first action, if any.
    pub fn first_action(&self) -> Option<&ActionInfo> {
        self.actions.as_ref()?.first()
    }
}

/// `tokens` of a `tokens_revoked` event: user ids, not token strings.
#[derive(Debug, Default, Deserialize, serde::Serialize)]
pub struct RevokedTokens {
    /// Users whose user tokens were revoked.
    #[serde(default, deserialize_with = "loose::string_list")]
    pub oauth: Vec<String>,
    /// Bot users whose bot tokens were revoked.
    #[serde(default, deserialize_with = "loose::string_list")]
    pub bot: Vec<String>,
}

/// The inner `event` of an `event_callback` (only the fields Gatehouse reads).
#[derive(Debug, Default, Deserialize)]
pub struct EventBody {
    /// `message`, `app_home_opened`, `app_uninstalled`, `tokens_revoked`, …
    #[serde(rename = "type", default, deserialize_with = "loose::opt")]
    pub kind: Option<String>,
    /// Who wrote / opened the Home tab.
    #[serde(default, deserialize_with = "loose::string")]
    pub user: String,
    /// The conversation (`D…` for a DM).
    #[serde(default, deserialize_with = "loose::string")]
    pub channel: String,
    /// `im` for a DM.
    #[serde(default, deserialize_with = "loose::string")]
    pub channel_type: String,
    /// What was written.
    #[serde(default, deserialize_with = "loose::string")]
    pub text: String,
    /// `home` or `messages` for `app_home_opened`.
    #[serde(default, deserialize_with = "loose::string")]
    pub tab: String,
    /// A bot wrote it (ours included) — whatever the value.
    #[serde(default, deserialize_with = "loose::present")]
    pub bot_id: bool,
    /// An edit, a join, … — whatever the value.
    #[serde(default, deserialize_with = "loose::present")]
    pub subtype: bool,
    /// `tokens_revoked`: whose tokens.
    #[serde(default, deserialize_with = "loose::opt")]
    pub tokens: Option<RevokedTokens>,
}

/// What kind of Events API envelope a body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvelopeKind {
    /// The Request URL check.
    UrlVerification,
    /// An event.
    EventCallback,
    /// Slack is dropping events for this app.
    AppRateLimited,
    /// Anything else.
    Other,
}

/// An Events API body (external-apis.md A.5).
#[derive(Debug, Default, Deserialize)]
pub struct EventEnvelope {
    #[serde(rename = "type", default, deserialize_with = "loose::string")]
    kind: String,
    /// `url_verification`'s challenge.
    #[serde(default, deserialize_with = "loose::string")]
    pub challenge: String,
    /// The workspace.
    #[serde(default, deserialize_with = "loose::string")]
    pub team_id: String,
    /// The Enterprise Grid organisation, if any.
    #[serde(default, deserialize_with = "loose::opt")]
    pub enterprise_id: Option<String>,
    /// Slack's id of the event (deduplication key).
    #[serde(default, deserialize_with = "loose::string")]
    pub event_id: String,
    /// `app_rate_limited`: the minute Slack started dropping events.
    #[serde(default, deserialize_with = "loose::opt")]
    pub minute_rate_limited: Option<i64>,
    /// The event itself.
    #[serde(default, deserialize_with = "loose::opt")]
    pub event: Option<EventBody>,
}

impl EventEnvelope {
    /// Parses an Events API body.
    pub fn parse(body: &[u8]) -> Result<EventEnvelope, serde_json::Error> {
        serde_json::from_slice(body)
    }

    /// What the envelope is.
    pub fn kind(&self) -> EnvelopeKind {
        match self.kind.as_str() {
            "url_verification" => EnvelopeKind::UrlVerification,
            "event_callback" => EnvelopeKind::EventCallback,
            "app_rate_limited" => EnvelopeKind::AppRateLimited,
            _ => EnvelopeKind::Other,
        }
    }

    /// The inner event's type, if any.
    pub fn event_type(&self) -> Option<&str> {
        self.event.as_ref()?.kind.as_deref()
    }
}

#[cfg(test)]
#[path = "payload_tests.rs"]
mod tests;
