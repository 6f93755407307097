//! A fake Slack: the Web API methods Gatehouse uses, `response_url`s, the external file upload
//! flow, plus helpers that build and sign the requests Slack sends to an app (slash commands,
//! `block_actions`, `view_submission`, Events API callbacks).
//!
//! Built from `external-apis.md` A, including the parts that trip clients up:
//! - envelopes are HTTP 200 `{"ok":false,"error":…}` for API errors; only rate limits (429 with
//!   `Retry-After` and `ratelimited`) and outages (5xx HTML) use other statuses;
//! - JSON bodies are read only by methods that accept them (`json_input_supported`); a JSON body
//!   sent to `users.info` or `files.getUploadURLExternal` is ignored, so the call fails for lack
//!   of arguments, as it does on the real Slack;
//! - `users.info` misses are `user_not_found`, `users.lookupByEmail` misses `users_not_found`;
//! - `files.completeUploadExternal` fails with `file_not_found` for an id that was never
//!   announced or never received bytes;
//! - `chat.postMessage` / `chat.update` refuse `blocks: []` with `invalid_blocks`;
//! - `response_url` answers plain text `ok` and takes at most five posts;
//! - `trigger_id`s expire after 3 s and work once;
//! - `chat.postMessage` keeps `metadata` (`event_type` + `event_payload`, else
//!   `invalid_metadata_format`); `conversations.history` (form/query only, ids only) answers
//!   newest first within `oldest`/`latest` (`inclusive`), pages with `limit`, `has_more` and
//!   `response_metadata.next_cursor`, shows metadata only with `include_all_metadata`, and
//!   refuses a token without the channel type's `*:history` scope with `missing_scope`
//!   (`needed`/`provided`), see [`FakeSlack::set_token_scopes`].
//!
//! ```no_run
//! # async fn t() {
//! let slack = testkit::slack::FakeSlack::start().await;
//! slack.add_user(testkit::slack::FakeUser::new("U1", "alice").email("alice@example.com"));
//! slack.add_channel("C1", "approvals");
//! // point the client at slack.api_url() with slack.token(); then:
//! assert!(slack.calls_to("chat.postMessage").is_empty());
//! # }
//! ```

mod app_requests;
mod conversations;
mod files;
mod server;
mod state;
mod web_api;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::http::ServerTask;
use state::{Inner, resolve_channel};

pub use app_requests::{
    SlashCommand, action_ts, app_home_opened_event, block_actions_payload, event_callback,
    home_block_actions_payload, interaction_body, message_im_event, now_ts, sign, signed_headers,
    signed_headers_at, url_verification, view_submission_payload,
};
pub use state::{Call, Ephemeral, FakeFile, FakeMessage, FakeUser, Fault, dm_id};

/// How Gatehouse's receipt for a slash command begins (`slack_adapter::router::RECEIPT_MARK`,
/// which a slack-adapter test keeps equal to this): the command was stored and its outcome
/// follows on the command's response_url.
pub const RECEIPT_MARK: &str = ":inbox_tray:";

/// Whether an acknowledgement's text is a receipt (see [`RECEIPT_MARK`]).
pub fn is_receipt(ack_text: &str) -> bool {
    ack_text.starts_with(RECEIPT_MARK)
}

/// The bot token the fake accepts unless told otherwise.
pub const BOT_TOKEN: &str = "xoxb-fake-gatehouse-token";
/// The workspace the fake pretends to be.
pub const TEAM_ID: &str = "T0FAKE";
/// The bot's own user id.
pub const BOT_USER_ID: &str = "U0BOT";

/// What the handlers share: the state and the base URL links are made from.
#[derive(Debug)]
struct Shared {
    inner: Mutex<Inner>,
    base: String,
}

/// The fake. Dropping it stops the server.
#[derive(Debug)]
pub struct FakeSlack {
    addr: SocketAddr,
    shared: Arc<Shared>,
    faults: crate::faults::FaultSlot,
    _task: ServerTask,
}

impl FakeSlack {
    /// Starts on 127.0.0.1:0 with the bot user, token [`BOT_TOKEN`] and no other data.
    pub async fn start() -> FakeSlack {
        let (listener, addr) = crate::http::bind("fake slack").await;
        let faults = crate::faults::FaultSlot::new(crate::faults::Service::Slack);
        let shared = Arc::new(Shared {
            base: format!("http://{addr}"),
            inner: Mutex::new(Inner::new()),
        });
        let app = faults.wrap(server::router(shared.clone()));
        FakeSlack {
            addr,
            shared,
            faults,
            _task: crate::http::serve_on(listener, app),
        }
    }

    /// Every call from now on consults `injector` (`None`: no more injected faults).
    pub fn set_fault_injector(&self, injector: Option<Arc<crate::faults::FaultInjector>>) {
        self.faults.set(injector);
    }

    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        let mut g = self.shared.inner.lock().unwrap();
        f(&mut g)
    }

    /// `http://127.0.0.1:{port}/api`: what `SLACK_API_URL` should be set to.
    pub fn api_url(&self) -> String {
        format!("{}/api", self.shared.base)
    }

    pub fn base_url(&self) -> String {
        self.shared.base.clone()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn token(&self) -> &'static str {
        BOT_TOKEN
    }

    pub fn add_token(&self, token: &str) {
        self.with(|i| i.tokens.insert(token.to_string()));
    }

    /// Restricts `token` to `scopes` (tokens start with every scope). Only the scopes a method
    /// of the fake checks matter: `channels:history`, `groups:history`, `im:history`
    /// (conversations.history), `channels:read`, `groups:read` (conversations.list).
    pub fn set_token_scopes(&self, token: &str, scopes: &[&str]) {
        self.with(|i| {
            i.token_scopes.insert(
                token.to_string(),
                scopes.iter().map(|s| s.to_string()).collect(),
            )
        });
    }

    pub fn add_user(&self, user: FakeUser) {
        self.with(|i| i.users.insert(user.id.clone(), user));
    }

    pub fn add_channel(&self, id: &str, name: &str) {
        self.with(|i| i.channels.insert(id.to_string(), name.to_string()));
    }

    pub fn add_usergroup(&self, id: &str, members: &[&str]) {
        self.with(|i| {
            i.usergroups.insert(
                id.to_string(),
                members.iter().map(|s| s.to_string()).collect(),
            )
        });
    }

    /// A fresh `response_url` (valid for five posts).
    pub fn response_url(&self) -> String {
        let n = self.with(|i| {
            i.counter += 1;
            let id = format!("R{:06}", i.counter);
            i.responses.insert(id.clone(), vec![]);
            id
        });
        format!("{}/response/{n}", self.shared.base)
    }

    /// A fresh `trigger_id` (valid for 3 s, once).
    pub fn trigger_id(&self) -> String {
        self.with(|i| {
            i.counter += 1;
            let id = format!(
                "{}.{}.fake{:x}",
                i.counter,
                47445629121u64,
                fastrand::u64(..)
            );
            i.triggers.insert(id.clone(), (Instant::now(), false));
            id
        })
    }

    /// What was posted to a response_url, in order.
    pub fn responses(&self, url: &str) -> Vec<Value> {
        let id = url.rsplit('/').next().unwrap_or_default().to_string();
        self.with(|i| i.responses.get(&id).cloned().unwrap_or_default())
    }

    /// A slash command's answer, wherever it went: the acknowledgement's text, or, when that is
    /// a receipt, the text of the first post to `response_url` (waited for up to `timeout`;
    /// `None` when nothing came). Tests assert what the person was told through this, whether
    /// the server answered in the acknowledgement (nothing remote needed) or after it.
    pub async fn command_answer(
        &self,
        ack_text: &str,
        response_url: &str,
        timeout: Duration,
    ) -> Option<String> {
        if !is_receipt(ack_text) {
            return Some(ack_text.to_string());
        }
        crate::http::poll(timeout, || {
            self.responses(response_url).first().map(|v| {
                v.get("text")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            })
        })
        .await
    }

    /// Makes the next call of `method` fail as `fault` (queued: call several times for several).
    /// `method` may be `response_url` or `upload`.
    pub fn fail_next(&self, method: &str, fault: Fault) {
        self.with(|i| {
            i.faults
                .entry(method.to_string())
                .or_default()
                .push_back(fault)
        });
    }

    /// Every call of `method` (`*` for all) waits `d` before answering, until cleared with `None`.
    pub fn set_hang(&self, method: &str, d: Option<Duration>) {
        self.with(|i| match d {
            Some(d) => {
                i.hangs.insert(method.to_string(), d);
            }
            None => {
                i.hangs.remove(method);
            }
        });
    }

    /// How many calls of `method` (`*` for all) were received, without copying them: cheap
    /// enough to poll while a load benchmark has recorded hundreds of thousands of calls.
    pub fn call_count(&self, method: &str) -> usize {
        self.with(|i| {
            if method == "*" {
                i.calls.len()
            } else {
                i.calls.iter().filter(|c| c.method == method).count()
            }
        })
    }

    pub fn calls(&self) -> Vec<Call> {
        self.with(|i| i.calls.clone())
    }

    pub fn calls_to(&self, method: &str) -> Vec<Call> {
        self.with(|i| crate::http::cloned_where(&i.calls, |c| c.method == method))
    }

    /// Current state of every channel message (DMs included), in posting order.
    pub fn messages(&self) -> Vec<FakeMessage> {
        self.with(|i| i.messages.clone())
    }

    /// Messages in one channel (an id, or a user id for DMs to that user).
    pub fn messages_in(&self, channel: &str) -> Vec<FakeMessage> {
        let id = self
            .with(|i| resolve_channel(i, channel))
            .unwrap_or_else(|| channel.to_string());
        self.messages()
            .into_iter()
            .filter(|m| m.channel == id)
            .collect()
    }

    /// Messages (DMs included) for which `pred` holds, filtered under the lock: cheap polling of
    /// a fake holding thousands of messages (the chaos test polls it from many tasks).
    pub fn messages_where(&self, pred: impl Fn(&FakeMessage) -> bool) -> Vec<FakeMessage> {
        self.with(|i| crate::http::cloned_where(&i.messages, pred))
    }

    /// DMs the bot sent to `user`.
    pub fn dms_to(&self, user: &str) -> Vec<FakeMessage> {
        self.messages_in(&dm_id(user))
    }

    pub fn message(&self, channel: &str, ts: &str) -> Option<FakeMessage> {
        self.messages()
            .into_iter()
            .find(|m| m.channel == channel && m.ts == ts)
    }

    pub fn ephemerals(&self) -> Vec<Ephemeral> {
        self.with(|i| i.ephemerals.clone())
    }

    pub fn views_opened(&self) -> Vec<Value> {
        self.with(|i| i.views_opened.clone())
    }

    /// The last Home view published for `user`.
    pub fn home_view(&self, user: &str) -> Option<Value> {
        self.with(|i| {
            i.home_views
                .iter()
                .rev()
                .find(|(u, _)| u == user)
                .map(|(_, v)| v.clone())
        })
    }

    pub fn files(&self) -> Vec<FakeFile> {
        self.with(|i| i.files.clone())
    }

    /// Waits until `pred` holds (polling every 10 ms) or `timeout` passes; returns whether it held.
    pub async fn wait_until(&self, timeout: Duration, pred: impl Fn(&FakeSlack) -> bool) -> bool {
        crate::http::poll(timeout, || pred(self).then_some(()))
            .await
            .is_some()
    }
}
