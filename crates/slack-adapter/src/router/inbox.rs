//! The durable inbox: what a person said is stored as a job before Slack is acknowledged, then
//! processed from the queue (at once by this process, or after a crash by any replica), retried
//! when Slack fails transiently, at most once per Slack id. [`Inbound`] is the stored form (its
//! JSON is what the job table holds); [`process`] runs one.

use serde::{Deserialize, Serialize};

use access_core::engine::{EngineError, Submission};
use access_core::jobs::InboxItem;
use access_core::ports::{InboxError, InboxHandler};
use access_core::submission::RawSubmission;

use super::ack::{Answer, waiters};
use super::interactions::click;
use super::{ReplyTo, Shared, blocks, for_team, try_send_reply};
use crate::commands::{self, Caller, Field};
use crate::grammar::{self, Command, Surface};

/// A stored delivery, reduced to what processing needs: no envelope, no verification token.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum Inbound {
    /// A person wrote to the bot.
    DirectMessage {
        team_id: String,
        enterprise_id: Option<String>,
        user_id: String,
        channel: String,
        text: String,
    },
    /// A person opened the App Home tab.
    HomeOpened {
        team_id: String,
        enterprise_id: Option<String>,
        user_id: String,
    },
    /// A slash command (its text is parsed again when processed).
    Command(CommandDelivery),
    /// A button click (approve, deny, revoke, cancel, extend).
    Action(ActionDelivery),
    /// A request form (modal) submission, its values already validated.
    Submission(SubmissionDelivery),
    /// An answer whose command already ran but which Slack did not take at first.
    Reply {
        team_id: String,
        enterprise_id: Option<String>,
        to: ReplyTo,
        text: String,
    },
}

/// A stored slash command (its text is parsed again when processed).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct CommandDelivery {
    pub(super) team_id: String,
    pub(super) enterprise_id: Option<String>,
    pub(super) user_id: String,
    pub(super) user_name: String,
    /// `/access`, `/gcp-access`, …
    pub(super) command: String,
    pub(super) text: String,
    /// Where a late answer goes (response_url: needed to answer, valid 30 minutes).
    pub(super) reply: ReplyTo,
}

/// A stored button click.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct ActionDelivery {
    pub(super) team_id: String,
    pub(super) enterprise_id: Option<String>,
    pub(super) user_id: String,
    pub(super) user_name: String,
    pub(super) action_id: String,
    /// The button's value: a request id, a grant id or a resource.
    pub(super) value: String,
    /// Where the answer to the clicker goes.
    pub(super) reply: ReplyTo,
    /// Clicked in the App Home (which is published again afterwards).
    pub(super) from_home: bool,
    /// The message or Home view the button was on.
    pub(super) anchor: String,
}

/// A stored request form submission, its values already validated.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct SubmissionDelivery {
    pub(super) team_id: String,
    pub(super) enterprise_id: Option<String>,
    pub(super) user_id: String,
    pub(super) user_name: String,
    pub(super) resource: String,
    pub(super) duration: Option<String>,
    pub(super) justification: String,
}

pub(super) const INBOX_SOURCE: &str = "slack";

/// Stores `inbound` under `key` (once) and starts processing it in this process. Returns false
/// for a replay (already stored).
pub(super) async fn enqueue_and_run(
    st: &Shared,
    key: &str,
    inbound: &Inbound,
) -> Result<bool, EngineError> {
    enqueue_and_run_answering(st, key, inbound, None).await
}

/// [`enqueue_and_run`], the job handing its answer to `waiter` (an acknowledgement still open)
/// instead of posting it. The waiter is registered only once the delivery is stored and before
/// its job starts: a replay (or a failed store) never registers one, so a replay arriving while
/// the first delivery's job runs cannot take that job's answer, and a job that finishes before
/// the handler awaits still finds its waiter.
pub(super) async fn enqueue_and_run_answering(
    st: &Shared,
    key: &str,
    inbound: &Inbound,
    waiter: Option<tokio::sync::oneshot::Sender<Answer>>,
) -> Result<bool, EngineError> {
    let payload = serde_json::to_string(inbound).map_err(|e| {
        EngineError::Store(access_core::ports::StoreError::corrupt_because(
            "inbound", e,
        ))
    })?;
    let item = InboxItem {
        source: INBOX_SOURCE.into(),
        key: key.to_string(),
        payload,
    };
    // Stored already claimed by this process, which runs it at once (no claim round trip).
    let Some(job) = st.engine.enqueue_inbox_claimed(item).await? else {
        return Ok(false);
    };
    if let Some(tx) = waiter {
        waiters().insert(key.to_string(), tx);
    }
    let engine = st.engine.clone();
    tokio::spawn(async move {
        let id = job.id;
        if let Err(e) = engine.run_claimed(job).await {
            // The job stays in the queue; a scheduler runs it once the claim lapses.
            tracing::warn!(job = %id, error = %e, "could not run a stored Slack delivery now");
        }
    });
    Ok(true)
}

/// Processes stored Slack deliveries ([`access_core::jobs::JobKind::Inbox`]).
#[derive(Debug)]
pub(super) struct SlackInbox {
    pub(super) st: Shared,
}

#[async_trait::async_trait]
impl InboxHandler for SlackInbox {
    async fn handle(&self, item: &InboxItem) -> Result<(), InboxError> {
        if item.source != INBOX_SOURCE {
            return Err(InboxError::Permanent(format!(
                "not a Slack delivery: {}",
                item.source
            )));
        }
        let inbound: Inbound = serde_json::from_str(&item.payload)
            .map_err(|e| InboxError::Permanent(format!("unreadable Slack delivery: {e}")))?;
        process(&self.st, &item.key, inbound).await
    }
}

/// The person writing from `workspace`, keyed within `scope` (see [`for_team`]).
fn scoped_caller(
    scope: String,
    workspace: &str,
    enterprise_id: &Option<String>,
    user_id: String,
    user_name: String,
) -> Caller {
    Caller {
        team_id: scope,
        user_id,
        user_name,
        workspace: workspace.to_string(),
        enterprise_id: enterprise_id.clone().filter(|e| !e.is_empty()),
    }
}

/// Runs one stored delivery. Safe to run again after an `Err(Transient)`: a command runs only
/// after every call that may fail transiently before it succeeded, and its answer, once the
/// command ran, is stored as a [`Inbound::Reply`] of its own if Slack does not take it.
async fn process(st: &Shared, key: &str, inbound: Inbound) -> Result<(), InboxError> {
    match inbound {
        Inbound::HomeOpened {
            team_id,
            enterprise_id,
            user_id,
        } => {
            let (st, scope) = for_team(st, &team_id, enterprise_id.as_deref()).await;
            let caller = scoped_caller(scope, &team_id, &enterprise_id, user_id, String::new());
            publish_home(&st, &caller).await;
            Ok(())
        }
        Inbound::DirectMessage {
            team_id,
            enterprise_id,
            user_id,
            channel,
            text,
        } => {
            let (st, scope) = for_team(st, &team_id, enterprise_id.as_deref()).await;
            let caller = scoped_caller(scope, &team_id, &enterprise_id, user_id, String::new());
            let answer = run_text(&st, &caller, &text, Surface::DirectMessage).await?;
            let to = ReplyTo::Channel { channel };
            answer_later(&st, key, team_id, enterprise_id, to, answer).await
        }
        Inbound::Command(d) => process_command(st, key, d).await,
        Inbound::Action(d) => process_click(st, key, d).await,
        Inbound::Submission(d) => process_submission(st, key, d).await,
        Inbound::Reply {
            team_id,
            enterprise_id,
            to,
            text,
        } => {
            let (st, _) = for_team(st, &team_id, enterprise_id.as_deref()).await;
            match try_send_reply(&st.api, &to, &text).await {
                Ok(_) => Ok(()),
                Err(e) if e.is_transient() => Err(InboxError::Transient(e.to_string())),
                Err(e) => Err(InboxError::Permanent(e.to_string())),
            }
        }
    }
}

/// Parses and runs what a person typed (a DM or a slash command's text): the answer, or a
/// transient failure of the profile lookup (before anything ran).
async fn run_text(
    st: &Shared,
    caller: &Caller,
    text: &str,
    surface: Surface,
) -> Result<String, InboxError> {
    Ok(match grammar::parse(text, surface) {
        Ok(cmd) => {
            if needs_profile(&cmd)
                && let Err(commands::ProfileError::Transient(m)) =
                    commands::lookup_subject(&st.api, &st.profiles, caller).await
            {
                return Err(InboxError::Transient(m));
            }
            commands::execute(st.ctx(), caller, surface, cmd).await
        }
        Err(e) => e.to_string(),
    })
}

/// A stored slash command: its answer goes into the acknowledgement still waiting for it, or
/// is posted.
async fn process_command(st: &Shared, key: &str, d: CommandDelivery) -> Result<(), InboxError> {
    let (st, scope) = for_team(st, &d.team_id, d.enterprise_id.as_deref()).await;
    let st = &st;
    let surface = Surface::from_command(&d.command).unwrap_or(Surface::Access);
    let caller = scoped_caller(scope, &d.team_id, &d.enterprise_id, d.user_id, d.user_name);
    let answer = run_text(st, &caller, &d.text, surface).await?;
    // The acknowledgement still waiting for it carries the answer; else it is posted.
    let answer = match waiters().hand_over(key, Answer::Text(answer)) {
        None => return Ok(()),
        Some(Answer::Text(answer)) => answer,
        Some(Answer::Form(_)) => return Ok(()),
    };
    answer_later(st, key, d.team_id, d.enterprise_id, d.reply, answer).await
}

/// A stored click: acted on, the App Home refreshed when clicked there, the clicker answered.
async fn process_click(st: &Shared, key: &str, d: ActionDelivery) -> Result<(), InboxError> {
    let (st, scope) = for_team(st, &d.team_id, d.enterprise_id.as_deref()).await;
    let st = &st;
    let caller = scoped_caller(scope, &d.team_id, &d.enterprise_id, d.user_id, d.user_name);
    let text = click(st, &caller, &d.action_id, &d.value, &d.anchor).await?;
    if d.from_home {
        publish_home(st, &caller).await;
    }
    match text {
        Some(t) => answer_later(st, key, d.team_id, d.enterprise_id, d.reply, t).await,
        None => Ok(()),
    }
}

/// A stored form submission: filed; a refusal goes into the form while the acknowledgement
/// waits, after it by DM.
async fn process_submission(
    st: &Shared,
    key: &str,
    d: SubmissionDelivery,
) -> Result<(), InboxError> {
    let SubmissionDelivery {
        team_id,
        enterprise_id,
        user_id,
        user_name,
        resource,
        duration,
        justification,
    } = d;
    let (st, scope) = for_team(st, &team_id, enterprise_id.as_deref()).await;
    let st = &st;
    let caller = scoped_caller(scope, &team_id, &enterprise_id, user_id, user_name);
    let outcome = match commands::lookup_person(&st.api, &st.profiles, &caller).await {
        Err(commands::ProfileError::Transient(m)) => return Err(InboxError::Transient(m)),
        Err(commands::ProfileError::Refused(msg)) => Err((Field::Resource, msg)),
        Ok((subject, membership)) => {
            match commands::admit_requester(&st.engine, &resource, membership) {
                Err(msg) => Err((Field::Resource, msg)),
                Ok(()) => {
                    let raw = RawSubmission::new(resource, duration, justification);
                    match st.engine.validate(&raw) {
                        Err(e) => Err((e.field(), e.to_string())),
                        Ok(valid) => st
                            .engine
                            .submit(Submission::new(subject, valid))
                            .await
                            .map(|_| ())
                            .map_err(|e| (Field::Resource, e.to_string())),
                    }
                }
            }
        }
    };
    // The acknowledgement still waiting shows a refusal in the form; after it, by DM.
    match waiters().hand_over(key, Answer::Form(outcome)) {
        Some(Answer::Form(Err((_, msg)))) => {
            let to = ReplyTo::Channel {
                channel: caller.user_id.clone(),
            };
            answer_later(st, key, team_id, enterprise_id, to, msg).await
        }
        _ => Ok(()),
    }
}

/// Commands that read the caller's profile (`users.info`) before acting.
pub(super) fn needs_profile(cmd: &Command) -> bool {
    matches!(
        cmd,
        Command::Request { .. }
            | Command::Extend { .. }
            | Command::List
            | Command::EmergencyRequest { .. }
    )
}

/// Posts the answer of a command that already ran; when Slack does not take it now, stores it as
/// a job of its own (retried with backoff) instead of failing the command's job, which would run
/// the command again.
async fn answer_later(
    st: &Shared,
    key: &str,
    team_id: String,
    enterprise_id: Option<String>,
    to: ReplyTo,
    text: String,
) -> Result<(), InboxError> {
    match try_send_reply(&st.api, &to, &text).await {
        Ok(_) => Ok(()),
        Err(e) if e.is_transient() => {
            tracing::warn!(error = %e, "could not post an answer; keeping it for a retry");
            let reply = Inbound::Reply {
                team_id,
                enterprise_id,
                to,
                text,
            };
            enqueue_and_run(st, &format!("{key}:reply"), &reply)
                .await
                .map(|_| ())
                .map_err(|e| InboxError::Transient(e.to_string()))
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not deliver a reply to Slack");
            Ok(())
        }
    }
}

async fn publish_home(st: &Shared, caller: &Caller) {
    let status = match st.engine.status(&caller.key()).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "could not read status for App Home");
            return;
        }
    };
    let catalog = st.engine.catalog();
    let extendable = |r: &str| catalog.get(r).is_some_and(|r| r.extendable);
    let view = blocks::home_view(
        &status.grants,
        &status.pending,
        &extendable,
        st.engine.now(),
    );
    if let Err(e) = st.api.views_publish(&caller.user_id, &view).await {
        tracing::warn!(error = %e, "views.publish failed");
    }
}
