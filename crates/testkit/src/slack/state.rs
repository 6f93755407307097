//! What the fake Slack holds: seeded users and channels, posted messages, files, views, recorded
//! calls and queued faults, and how it resolves a channel argument.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{BOT_TOKEN, BOT_USER_ID, TEAM_ID};

/// A seeded user.
#[derive(Debug, Clone)]
pub struct FakeUser {
    pub id: String,
    pub name: String,
    pub real_name: String,
    pub email: Option<String>,
    pub tz: String,
    pub is_bot: bool,
    pub deleted: bool,
    /// Home workspace (`team_id`); the fake's own team when `None`.
    pub team_id: Option<String>,
    /// Enterprise Grid organisation: adds `enterprise_user` as Slack does (A.11).
    pub enterprise_id: Option<String>,
    /// Multi-channel guest.
    pub is_restricted: bool,
    /// Single-channel guest (Slack sets `is_restricted` too).
    pub is_ultra_restricted: bool,
    /// A Slack Connect user from another organisation.
    pub is_stranger: bool,
}

impl FakeUser {
    pub fn new(id: &str, name: &str) -> Self {
        Self {
            id: id.into(),
            name: name.into(),
            real_name: name.into(),
            email: None,
            tz: "Europe/London".into(),
            is_bot: false,
            deleted: false,
            team_id: None,
            enterprise_id: None,
            is_restricted: false,
            is_ultra_restricted: false,
            is_stranger: false,
        }
    }

    /// A multi-channel guest (`is_restricted`).
    pub fn guest(mut self) -> Self {
        self.is_restricted = true;
        self
    }

    /// A single-channel guest: Slack sets both flags.
    pub fn single_channel_guest(mut self) -> Self {
        self.is_restricted = true;
        self.is_ultra_restricted = true;
        self
    }

    /// Seen through Slack Connect from another organisation's workspace `home_team`.
    pub fn stranger(mut self, home_team: &str) -> Self {
        self.is_stranger = true;
        self.team_id = Some(home_team.into());
        self
    }

    /// Home workspace `team` (what `users.info` says as `team_id`).
    pub fn in_team(mut self, team: &str) -> Self {
        self.team_id = Some(team.into());
        self
    }

    /// Home workspace `team` of Enterprise Grid organisation `enterprise`.
    pub fn in_org(mut self, team: &str, enterprise: &str) -> Self {
        self.team_id = Some(team.into());
        self.enterprise_id = Some(enterprise.into());
        self
    }

    pub fn email(mut self, email: &str) -> Self {
        self.email = Some(email.into());
        self
    }

    pub fn tz(mut self, tz: &str) -> Self {
        self.tz = tz.into();
        self
    }

    pub fn real_name(mut self, n: &str) -> Self {
        self.real_name = n.into();
        self
    }

    pub(super) fn to_json(&self) -> Value {
        let mut profile = json!({
            "real_name": self.real_name, "display_name": self.name,
            "real_name_normalized": self.real_name, "display_name_normalized": self.name,
            "team": TEAM_ID, "image_24": "https://example.invalid/a.jpg",
        });
        if let Some(e) = &self.email {
            profile["email"] = json!(e);
        }
        let team = self.team_id.as_deref().unwrap_or(TEAM_ID);
        let mut user = json!({
            "id": self.id, "team_id": team, "name": self.name, "deleted": self.deleted,
            "real_name": self.real_name, "tz": self.tz, "tz_label": self.tz, "tz_offset": 0,
            "profile": profile, "is_admin": false, "is_owner": false, "is_bot": self.is_bot,
            "is_app_user": false, "updated": 1502138686,
            "is_restricted": self.is_restricted, "is_ultra_restricted": self.is_ultra_restricted,
        });
        // Slack only sends `is_stranger` for Slack Connect users, and `enterprise_user` on Grid.
        if self.is_stranger {
            user["is_stranger"] = json!(true);
        }
        if let Some(e) = &self.enterprise_id {
            user["enterprise_user"] = json!({
                "id": self.id, "enterprise_id": e, "enterprise_name": "Grid",
                "is_admin": false, "is_owner": false, "teams": [team],
            });
        }
        user
    }
}

/// What to do to the next call(s) of a method.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// HTTP 429, `Retry-After: secs`, body `{"ok":false,"error":"ratelimited"}`.
    RateLimit { retry_after_secs: u64 },
    /// HTTP 200 `{"ok":false,"error":"rate_limited"}` (chat.postMessage's own spelling).
    RateLimited200,
    /// HTTP 200 `{"ok":false,"error":code}`.
    Error(String),
    /// HTTP 503 with an HTML outage page.
    ServerError,
    /// Sleep this long before answering (normally).
    Hang(Duration),
    /// Serve the call (its effect lands), then hold the answer back this long: a client that
    /// gives up sooner sees a time-out for a call that happened (a lost answer).
    LoseAnswer(Duration),
}

/// One recorded call.
#[derive(Debug, Clone)]
pub struct Call {
    /// Web API method (`chat.postMessage`), or `response_url` / `upload`.
    pub method: String,
    pub http_method: String,
    /// Query, form and (for JSON-capable methods) JSON arguments merged into one object.
    pub args: Value,
    pub body: String,
    pub content_type: String,
    /// The bearer token sent, if any.
    pub token: Option<String>,
    pub at: Instant,
    /// HTTP status answered.
    pub status: u16,
    /// `error` of the envelope, when `ok:false`.
    pub error: Option<String>,
}

/// A message in a channel, with its edit history.
#[derive(Debug, Clone)]
pub struct FakeMessage {
    pub channel: String,
    pub ts: String,
    pub text: String,
    pub blocks: Value,
    /// Earlier versions (text, blocks), oldest first.
    pub history: Vec<(String, Value)>,
    /// `metadata` given to chat.postMessage (`{"event_type", "event_payload"}`).
    pub metadata: Option<Value>,
}

impl FakeMessage {
    /// Text and every text inside the blocks, for `contains` assertions.
    pub fn all_text(&self) -> String {
        let mut s = self.text.clone();
        collect_text(&self.blocks, &mut s);
        s
    }

    /// `(action_id, value)` of every button in the blocks.
    pub fn buttons(&self) -> Vec<(String, String)> {
        buttons(&self.blocks)
    }
}

/// A message only one user sees.
#[derive(Debug, Clone)]
pub struct Ephemeral {
    pub channel: String,
    pub user: String,
    pub text: String,
}

/// A file that completed the upload flow.
#[derive(Debug, Clone)]
pub struct FakeFile {
    pub id: String,
    pub filename: String,
    pub title: String,
    pub channel_id: Option<String>,
    pub initial_comment: Option<String>,
    pub content: Vec<u8>,
}

#[derive(Debug, Default)]
pub(super) struct PendingUpload {
    pub(super) filename: String,
    pub(super) length: usize,
    pub(super) content: Option<Vec<u8>>,
}

/// Everything the fake holds, behind one lock.
#[derive(Debug, Default)]
pub(super) struct Inner {
    pub(super) tokens: HashSet<String>,
    /// Granted scopes of tokens that do not have them all (see `set_token_scopes`).
    pub(super) token_scopes: HashMap<String, Vec<String>>,
    pub(super) users: HashMap<String, FakeUser>,
    /// id → name
    pub(super) channels: HashMap<String, String>,
    pub(super) usergroups: HashMap<String, Vec<String>>,
    pub(super) messages: Vec<FakeMessage>,
    pub(super) ephemerals: Vec<Ephemeral>,
    pub(super) views_opened: Vec<Value>,
    pub(super) home_views: Vec<(String, Value)>,
    pub(super) uploads: HashMap<String, PendingUpload>,
    pub(super) files: Vec<FakeFile>,
    pub(super) responses: HashMap<String, Vec<Value>>,
    pub(super) triggers: HashMap<String, (Instant, bool)>,
    pub(super) faults: HashMap<String, VecDeque<Fault>>,
    pub(super) hangs: HashMap<String, Duration>,
    pub(super) calls: Vec<Call>,
    pub(super) counter: u64,
}

impl Inner {
    /// The state a fake starts with: the bot user and token [`BOT_TOKEN`], nothing else.
    pub(super) fn new() -> Self {
        let mut bot = FakeUser::new(BOT_USER_ID, "gatehouse");
        bot.is_bot = true;
        Self {
            tokens: HashSet::from([BOT_TOKEN.to_string()]),
            users: HashMap::from([(BOT_USER_ID.to_string(), bot)]),
            ..Self::default()
        }
    }

    /// Hands out the next number of the fake's counter (timestamps, ids).
    pub(super) fn next_n(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }
}

/// The DM channel id the fake uses for a user: `D` + the id without its first letter.
pub fn dm_id(user: &str) -> String {
    format!("D{}", &user[1.min(user.len())..])
}

/// The channel id a `channel` argument names: an id, a `#name`, or a user (their DM).
pub(super) fn resolve_channel(i: &Inner, channel: &str) -> Option<String> {
    let c = channel.trim_start_matches('#');
    if i.channels.contains_key(c) {
        return Some(c.to_string());
    }
    if let Some((id, _)) = i.channels.iter().find(|(_, name)| name.as_str() == c) {
        return Some(id.clone());
    }
    if (c.starts_with('U') || c.starts_with('W')) && i.users.contains_key(c) {
        return Some(dm_id(c));
    }
    if c.starts_with('D') && i.users.keys().any(|u| dm_id(u) == c) {
        return Some(c.to_string());
    }
    None
}

pub(super) fn collect_text(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(t)) = m.get("text") {
                out.push('\n');
                out.push_str(t);
            }
            for (k, x) in m {
                if k != "text" || !x.is_string() {
                    collect_text(x, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect_text(x, out)),
        _ => {}
    }
}

pub(super) fn buttons(v: &Value) -> Vec<(String, String)> {
    let mut out = vec![];
    fn walk(v: &Value, out: &mut Vec<(String, String)>) {
        match v {
            Value::Object(m) => {
                if m.get("type") == Some(&json!("button")) {
                    out.push((
                        m.get("action_id")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string(),
                        m.get("value")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string(),
                    ));
                }
                m.values().for_each(|x| walk(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    walk(v, &mut out);
    out
}
