//! [`SlackNotifier`]: the `Notifier` port on Slack. The engine runs it from durable jobs and
//! retries on [`NotifyError::Transient`], so every method here is safe to run twice: updates
//! (`chat.update`) are idempotent, and a new message is posted at most once per job as far as
//! Slack lets us know (see `SlackNotifier::post_once` and `docs/reliability.md`).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use access_core::notification::{DeliveredSecret, MessageRef, Notification, RequestSummary};
use access_core::ports::{Clock, Notifier, NotifyContext, NotifyError, NotifyJob, SystemClock};
use access_core::subject::Subject;

use crate::api::{ApiError, Posted, SlackApi, Tagged};
use crate::blocks::{self, ApprovalState, Message};
use crate::config::SlackConfig;
use crate::installations::Installations;

/// `MessageRef::purpose` of the approval message in the approvers' channel.
pub const PURPOSE_APPROVAL: &str = "approval";
/// `MessageRef::purpose` of a break-glass notice (approvers' and security channels).
pub const PURPOSE_EMERGENCY: &str = "emergency";

/// Posts notifications to Slack.
#[derive(Debug, Clone)]
pub struct SlackNotifier {
    api: SlackApi,
    approval_channel: String,
    clock: Arc<dyn Clock>,
    /// How far each approval message has got (see [`rank`]). Notification jobs of one request can
    /// run concurrently or be retried late, so "1 of 2 approvals" may arrive after "approved";
    /// an update never moves a message backwards. In memory: after a restart the first update
    /// wins, which is at worst one stale progress line.
    shown: Arc<Mutex<HashMap<MessageKey, Arc<tokio::sync::Mutex<u32>>>>>,
    /// Installed workspaces: each is served with its own bot token; others use `api`'s.
    installations: Option<Installations>,
    /// (team, channel name) → channel id, learnt from chat.postMessage answers:
    /// conversations.history takes ids only, and approval channels are often configured by name.
    channel_ids: Arc<Mutex<HashMap<(String, String), String>>>,
    /// Reasons a re-run could not look for its earlier post, already logged at warn level
    /// (each is logged once per workspace; later ones at debug).
    fallbacks_logged: Arc<Mutex<HashSet<String>>>,
}

/// How far back before a job was created its earlier post is looked for: Slack's clock and ours
/// may differ, and a message's ts is Slack's.
const LOOKBACK_MARGIN_SECS: i64 = 300;

/// A re-run whose look-up failed transiently (5xx, time-out, rate limit) is retried as a job up to
/// this attempt; from then on it posts without looking (at-least-once beats never). Notification
/// jobs have 10 attempts; the backoff makes attempts 2–8 span a few minutes, long enough for a
/// Slack hiccup or the 1-a-minute `conversations.history` throttle of distributed apps to pass.
const LOOKUP_ATTEMPTS: u32 = 8;

/// (channel, ts) of a posted message.
type MessageKey = (String, String);

/// Orders approval states: progress by the number of approvals, then any outcome, then a
/// provisioning failure (which follows an approval).
fn rank(state: &ApprovalState) -> u32 {
    match state {
        ApprovalState::Pending { approved_by, .. } => approved_by.len().min(999) as u32,
        ApprovalState::Failed { .. } => 1001,
        _ => 1000,
    }
}

impl SlackNotifier {
    pub fn new(config: &SlackConfig) -> SlackNotifier {
        SlackNotifier {
            api: SlackApi::new(config),
            approval_channel: config.approval_channel.clone(),
            clock: Arc::new(SystemClock),
            shown: Arc::default(),
            installations: None,
            channel_ids: Arc::default(),
            fallbacks_logged: Arc::default(),
        }
    }

    /// Serves installed workspaces with their own bot tokens (see [`Installations::api_for`]).
    pub fn with_installations(mut self, installations: Installations) -> Self {
        self.installations = Some(installations);
        self
    }

    /// The client for workspace `team_id`. A store that cannot answer is transient.
    async fn api_for(&self, team_id: &str) -> Result<SlackApi, NotifyError> {
        match &self.installations {
            None => Ok(self.api.clone()),
            Some(i) => i
                .api_for(&self.api, team_id)
                .await
                .map_err(|e| NotifyError::Transient(e.to_string())),
        }
    }

    /// Uses `clock` for "ends in …" texts (tests that travel in time).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    pub fn api(&self) -> &SlackApi {
        &self.api
    }

    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// A DM to a person. Subjects created outside Slack (API scripts) have no DM; they are skipped.
    async fn dm(&self, ctx: &NotifyContext, to: &Subject, m: &Message) -> Result<(), NotifyError> {
        if !is_slack_user(&to.user_id) {
            tracing::debug!(user = %to.user_id, "not a Slack user id; no DM sent");
            return Ok(());
        }
        let api = self.api_for(&to.team_id).await?;
        self.post_once(&api, ctx, &to.team_id, &to.user_id, m)
            .await
            .map(|_| ())
            .map_err(NotifyError::from)
    }

    /// Posts `m` to `channel` (id, name or user id) tagged with the job's id in the message
    /// metadata. Slack has no idempotency key for chat.postMessage, so a job whose earlier
    /// attempt may have posted (its answer lost, or its process died before the job was marked
    /// done) first reads the channel's history since the job was created and, when the tagged
    /// message is there, answers with it instead of posting again. A first attempt only posts.
    /// A look-up that cannot be made (missing `*:history` scope, channel known only by name,
    /// a permanent error, or still failing at attempt [`LOOKUP_ATTEMPTS`]) posts anyway.
    async fn post_once(
        &self,
        api: &SlackApi,
        ctx: &NotifyContext,
        team_id: &str,
        channel: &str,
        m: &Message,
    ) -> Result<Posted, ApiError> {
        let Some(job) = &ctx.job else {
            return api.post_message(channel, &m.text, &m.blocks).await;
        };
        let tag = job.id.to_string();
        if job.may_have_posted {
            match self.find_earlier(api, job, team_id, channel, &tag).await {
                Ok(Some(posted)) => {
                    tracing::info!(job = %tag, channel = %posted.channel, ts = %posted.ts, attempt = job.attempt,
                        "an earlier attempt already posted this message; not posting it again");
                    return Ok(posted);
                }
                Ok(None) => {}
                Err(Lookup::Failed(e)) if e.is_transient() && job.attempt < LOOKUP_ATTEMPTS => {
                    tracing::info!(job = %tag, attempt = job.attempt, error = %e,
                        "could not check for an earlier post; retrying the job before posting");
                    return Err(e);
                }
                Err(why) => self.log_fallback(team_id, &tag, &why),
            }
        }
        let posted = api
            .post_message_tagged(channel, &m.text, &m.blocks, Some(&tag))
            .await?;
        if !looks_like_conversation_id(channel) && !is_slack_user(channel) {
            if let Ok(mut ids) = self.channel_ids.lock() {
                if ids.len() > 10_000 {
                    ids.clear();
                }
                ids.insert(
                    (team_id.to_string(), channel.to_string()),
                    posted.channel.clone(),
                );
            }
        }
        Ok(posted)
    }

    /// The message job `tag` posted to `channel` in an earlier attempt, if Slack shows one.
    async fn find_earlier(
        &self,
        api: &SlackApi,
        job: &NotifyJob,
        team_id: &str,
        channel: &str,
        tag: &str,
    ) -> Result<Option<Posted>, Lookup> {
        // conversations.history takes conversation ids only.
        let id = if is_slack_user(channel) {
            api.open_dm(channel).await.map_err(Lookup::Failed)?
        } else if looks_like_conversation_id(channel) {
            channel.to_string()
        } else {
            let key = (team_id.to_string(), channel.to_string());
            let known = self
                .channel_ids
                .lock()
                .ok()
                .and_then(|ids| ids.get(&key).cloned());
            match known {
                Some(id) => id,
                // Not posted there by this process yet (a restart): look the name up once.
                None => {
                    let id = api
                        .channel_id_by_name(channel)
                        .await
                        .map_err(Lookup::Failed)?
                        .ok_or(Lookup::NameOnly)?;
                    if let Ok(mut ids) = self.channel_ids.lock() {
                        ids.insert(key, id.clone());
                    }
                    id
                }
            }
        };
        let oldest = job.created_at - chrono::Duration::seconds(LOOKBACK_MARGIN_SECS);
        match api.find_tagged(&id, oldest, tag).await {
            Ok(Tagged::Found(ts)) => Ok(Some(Posted { channel: id, ts })),
            Ok(Tagged::NotFound) => Ok(None),
            Ok(Tagged::Unsure) => Err(Lookup::TooBusy),
            Err(e) => Err(Lookup::Failed(e)),
        }
    }

    /// Says once per workspace and reason that a re-run posts without having looked.
    fn log_fallback(&self, team_id: &str, job: &str, why: &Lookup) {
        let reason = why.reason();
        let first = self
            .fallbacks_logged
            .lock()
            .map(|mut l| l.insert(format!("{team_id}:{reason}")))
            .unwrap_or(true);
        if first {
            tracing::warn!(team = %team_id, job, reason = %reason, detail = %why,
                "cannot check Slack for an earlier post of a retried notification; posting it \
                 (it may show twice). Further cases for this reason are logged at debug level");
        } else {
            tracing::debug!(team = %team_id, job, reason = %reason, detail = %why,
                "posting a retried notification without checking for an earlier post");
        }
    }

    /// Rewrites every approval message of the request in place. A message that is gone (deleted,
    /// channel archived) is logged and skipped: the DM still matters.
    async fn update_approval(
        &self,
        ctx: &NotifyContext,
        r: &RequestSummary,
        state: ApprovalState,
    ) -> Result<(), NotifyError> {
        let m = blocks::approval_message(r, &state);
        let new_rank = rank(&state);
        for mr in ctx
            .message_refs
            .iter()
            .filter(|m| m.purpose == PURPOSE_APPROVAL && m.request_id == r.id)
        {
            // One update per message at a time, and never backwards.
            let slot = match self.shown.lock() {
                Ok(mut g) => {
                    if g.len() > 50_000 {
                        g.clear();
                    }
                    g.entry((mr.channel.clone(), mr.ts.clone()))
                        .or_default()
                        .clone()
                }
                Err(_) => Arc::default(),
            };
            let mut shown = slot.lock().await;
            if *shown > new_rank {
                tracing::debug!(request = %r.id, "approval message already shows a later state");
                continue;
            }
            match self
                .api_for(&mr.team_id)
                .await?
                .update_message(&mr.channel, &mr.ts, &m.text, &m.blocks)
                .await
            {
                Ok(()) => *shown = new_rank,
                Err(e) if e.is_transient() => return Err(e.into()),
                Err(e) => {
                    tracing::warn!(request = %r.id, error = %e, "could not update the approval message")
                }
            }
        }
        Ok(())
    }
}

impl SlackNotifier {
    /// Posts a new request's approval message to its channel (the resource's, else the
    /// notifier's approval channel) once, and returns its reference for later updates.
    async fn post_approval(
        &self,
        ctx: &NotifyContext,
        request: &RequestSummary,
        channel: Option<&str>,
        approvals_required: u32,
    ) -> Result<Vec<MessageRef>, NotifyError> {
        let channel = channel
            .filter(|c| !c.is_empty())
            .unwrap_or(&self.approval_channel);
        let channel = channel.trim_start_matches('#');
        let m = blocks::approval_message(
            request,
            &ApprovalState::Pending {
                approved_by: vec![],
                approvals_required,
            },
        );
        let api = self.api_for(&request.subject.team_id).await?;
        let posted = self.post_once(&api, ctx, &request.subject.team_id, channel, &m).await.map_err(|e| match e {
            // A wrong channel will not fix itself; say which one.
            ApiError::Slack { ref error, .. } if error == "channel_not_found" || error == "not_in_channel" => {
                NotifyError::Permanent(format!(
                    "cannot post to approval channel '{channel}' ({error}): invite the bot or fix APPROVAL_CHANNEL"
                ))
            }
            other => other.into(),
        })?;
        Ok(vec![MessageRef {
            request_id: request.id,
            purpose: PURPOSE_APPROVAL.to_string(),
            team_id: request.subject.team_id.clone(),
            channel: posted.channel,
            ts: posted.ts,
        }])
    }

    /// Rewrites every break-glass notice of `request` to `m` (after the review); a notice
    /// Slack refuses for good is logged and skipped.
    async fn update_emergency_notices(
        &self,
        ctx: &NotifyContext,
        request: &RequestSummary,
        m: &Message,
    ) -> Result<(), NotifyError> {
        for mr in ctx
            .message_refs
            .iter()
            .filter(|m| m.purpose == PURPOSE_EMERGENCY && m.request_id == request.id)
        {
            match self
                .api_for(&mr.team_id)
                .await?
                .update_message(&mr.channel, &mr.ts, &m.text, &m.blocks)
                .await
            {
                Ok(()) => {}
                Err(e) if e.is_transient() => return Err(e.into()),
                Err(e) => {
                    tracing::warn!(request = %request.id, error = %e, "could not update a break-glass notice")
                }
            }
        }
        Ok(())
    }

    /// Posts the break-glass notice to the approvers' channel (the notifier's approval channel
    /// when the resource names none) and to the security channel. Each post stands alone: a
    /// channel that refuses for good is logged and skipped so the other still gets the alarm;
    /// a transient failure retries the job, which finds what it already posted (`post_once`).
    async fn post_emergency(
        &self,
        ctx: &NotifyContext,
        request: &RequestSummary,
        expires_at: DateTime<Utc>,
        approvers_channel: Option<&str>,
        security_channel: Option<&str>,
    ) -> Result<Vec<MessageRef>, NotifyError> {
        let m = blocks::emergency_notice(request, expires_at, None);
        let team = &request.subject.team_id;
        let api = self.api_for(team).await?;
        let mut channels: Vec<&str> = Vec::new();
        for c in [
            approvers_channel
                .filter(|c| !c.is_empty())
                .unwrap_or(&self.approval_channel),
            security_channel.unwrap_or_default(),
        ] {
            let c = c.trim().trim_start_matches('#');
            if !c.is_empty() && !channels.contains(&c) {
                channels.push(c);
            }
        }
        let mut refs = Vec::new();
        let mut refused = Vec::new();
        for channel in &channels {
            match self.post_once(&api, ctx, team, channel, &m).await {
                Ok(posted) => refs.push(MessageRef {
                    request_id: request.id,
                    purpose: PURPOSE_EMERGENCY.to_string(),
                    team_id: team.clone(),
                    channel: posted.channel,
                    ts: posted.ts,
                }),
                Err(e) if e.is_transient() => return Err(e.into()),
                Err(e) => {
                    tracing::error!(request = %request.id, channel, error = %e,
                        "could not post the break-glass notice to this channel (invite the bot or fix the channel)");
                    refused.push(format!("'{channel}': {e}"));
                }
            }
        }
        if refs.is_empty() {
            return Err(NotifyError::Permanent(format!(
                "break-glass notice could not be posted anywhere: {}",
                refused.join("; ")
            )));
        }
        Ok(refs)
    }

    /// A request escalated: a new approval message (with the buttons) in the escalation channel
    /// and in a DM to each listed escalation approver, all updated in place once it is decided;
    /// then the requester is told. Safe to re-run: each post is made once per job.
    async fn escalate(
        &self,
        ctx: &NotifyContext,
        request: &RequestSummary,
        channel: Option<&str>,
        approvers: &access_core::ApproverSet,
        after: access_core::AccessDuration,
        approvals_required: u32,
    ) -> Result<Vec<MessageRef>, NotifyError> {
        let team = request.subject.team_id.as_str();
        let api = self.api_for(team).await?;
        let m = blocks::escalated_approval_message(request, approvers, after, approvals_required);
        let channel = channel
            .filter(|c| !c.is_empty())
            .unwrap_or(&self.approval_channel)
            .trim_start_matches('#');
        let reference = |posted: Posted| MessageRef {
            request_id: request.id,
            purpose: PURPOSE_APPROVAL.to_string(),
            team_id: team.to_string(),
            channel: posted.channel,
            ts: posted.ts,
        };
        let mut refs = Vec::new();
        let posted = self
            .post_once(&api, ctx, team, channel, &m)
            .await
            .map_err(|e| match e {
                ApiError::Slack { ref error, .. }
                    if error == "channel_not_found" || error == "not_in_channel" =>
                {
                    NotifyError::Permanent(format!(
                        "cannot post to escalation channel '{channel}' ({error}): invite the bot or fix escalation_channel"
                    ))
                }
                other => other.into(),
            })?;
        refs.push(reference(posted));
        for user in approvers
            .users
            .iter()
            .filter(|u| is_slack_user(u) && **u != request.subject.user_id)
        {
            match self.post_once(&api, ctx, team, user, &m).await {
                Ok(p) => refs.push(reference(p)),
                Err(e) if e.is_transient() => return Err(e.into()),
                // A deactivated approver: the channel message still stands.
                Err(e) => tracing::warn!(request = %request.id, user = %user, error = %e,
                    "could not send the escalated request to an escalation approver"),
            }
        }
        self.dm(
            ctx,
            &request.subject,
            &blocks::dm_escalated(request, approvers, after),
        )
        .await?;
        Ok(refs)
    }
}

fn is_slack_user(id: &str) -> bool {
    id.starts_with('U') || id.starts_with('W')
}

/// A conversation id (`C…` public, `G…` private, `D…` DM), not a channel name: names are
/// lower case, ids upper-case letters and digits.
fn looks_like_conversation_id(c: &str) -> bool {
    c.len() >= 9
        && matches!(c.as_bytes()[0], b'C' | b'G' | b'D')
        && c.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

/// Why a re-run could not learn whether its earlier attempt posted.
#[derive(Debug, thiserror::Error)]
enum Lookup {
    #[error("{0}")]
    Failed(ApiError),
    #[error("no channel of that name is visible to the bot (conversations.list)")]
    NameOnly,
    #[error("more messages since the job was created than are read")]
    TooBusy,
}

impl Lookup {
    fn reason(&self) -> String {
        match self {
            Lookup::Failed(e) => e.code().unwrap_or("unreachable").to_string(),
            Lookup::NameOnly => "channel_name".into(),
            Lookup::TooBusy => "busy_channel".into(),
        }
    }
}

#[async_trait]
impl Notifier for SlackNotifier {
    /// Only the notifications that rewrite the approval message read the earlier messages.
    fn reads_message_refs(&self, n: &Notification) -> bool {
        matches!(
            n,
            Notification::ApprovalProgress { .. }
                | Notification::RequestApproved { .. }
                | Notification::RequestDenied { .. }
                | Notification::RequestCancelled { .. }
                | Notification::RequestTimedOut { .. }
                | Notification::AccessFailed { .. }
                | Notification::EmergencyReviewed { .. }
        )
    }

    async fn notify(
        &self,
        n: &Notification,
        ctx: &NotifyContext,
    ) -> Result<Vec<MessageRef>, NotifyError> {
        let now = self.now();
        // The approval message rewritten to its new state, then the requester told.
        if let Some((request, state, dm)) = approval_update(n, now) {
            self.update_approval(ctx, request, state).await?;
            if let Some(m) = dm {
                self.dm(ctx, &request.subject, &m).await?;
            }
            return Ok(vec![]);
        }
        if let Some((to, m)) = direct_message(n, now) {
            self.dm(ctx, to, &m).await?;
            return Ok(vec![]);
        }
        match n {
            Notification::ApprovalRequested {
                request,
                channel,
                approvals_required,
            } => {
                self.post_approval(ctx, request, channel.as_deref(), *approvals_required)
                    .await
            }
            Notification::EmergencyAccessGranted {
                request,
                grant,
                approvers_channel,
                security_channel,
            } => {
                self.post_emergency(
                    ctx,
                    request,
                    grant.expires_at,
                    approvers_channel.as_deref(),
                    security_channel.as_deref(),
                )
                .await
            }
            Notification::EmergencyReviewed {
                request,
                review,
                expires_at,
            } => {
                let m = blocks::emergency_notice(request, *expires_at, Some(review));
                self.update_emergency_notices(ctx, request, &m).await?;
                Ok(vec![])
            }
            Notification::RequestEscalated {
                request,
                channel,
                approvers,
                after,
                approvals_required,
            } => {
                self.escalate(
                    ctx,
                    request,
                    channel.as_deref(),
                    approvers,
                    *after,
                    *approvals_required,
                )
                .await
            }
            _ => Ok(vec![]),
        }
    }

    async fn deliver_secret(
        &self,
        request: &RequestSummary,
        secret: &DeliveredSecret,
    ) -> Result<(), NotifyError> {
        let user = &request.subject.user_id;
        if !is_slack_user(user) {
            return Err(NotifyError::Permanent(format!(
                "cannot deliver a file to '{user}': not a Slack user"
            )));
        }
        // completeUploadExternal wants a channel id, so open (or find) the DM first.
        let api = self.api_for(&request.subject.team_id).await?;
        let dm = api.open_dm(user).await.map_err(NotifyError::from)?;
        let comment = if secret.warning.trim().is_empty() {
            format!(
                ":warning: Your credentials for {}. Keep this file private; it is not stored anywhere else.",
                request.resource
            )
        } else {
            secret.warning.clone()
        };
        api.upload_file(&dm, &secret.filename, &secret.content, &comment)
            .await
            .map(|file_id| tracing::info!(request = %request.id, file_id, "secret delivered"))
            .map_err(NotifyError::from)
    }
}

/// For the notifications that change the approval message: the request, the message's new
/// state and the DM to the requester that follows, if any.
fn approval_update(
    n: &Notification,
    now: DateTime<Utc>,
) -> Option<(&RequestSummary, ApprovalState, Option<Message>)> {
    Some(match n {
        Notification::ApprovalProgress {
            request,
            approved_by,
            approvals_required,
        } => {
            let state = ApprovalState::Pending {
                approved_by: approved_by.clone(),
                approvals_required: *approvals_required,
            };
            (request, state, None)
        }
        Notification::RequestApproved {
            request,
            approved_by,
        } => {
            let state = ApprovalState::Approved {
                by: approved_by.clone(),
                at: now,
            };
            (
                request,
                state,
                Some(blocks::dm_approved(request, approved_by)),
            )
        }
        Notification::RequestDenied {
            request,
            denied_by,
            reason,
        } => {
            let state = ApprovalState::Denied {
                by: denied_by.clone(),
                reason: reason.clone(),
                at: now,
            };
            let dm = blocks::dm_denied(request, denied_by, reason.as_deref());
            (request, state, Some(dm))
        }
        Notification::RequestCancelled {
            request,
            cancelled_by,
        } => {
            let state = ApprovalState::Cancelled {
                by: cancelled_by.clone(),
                at: now,
            };
            (
                request,
                state,
                Some(blocks::dm_cancelled(request, cancelled_by)),
            )
        }
        Notification::RequestTimedOut { request } => (
            request,
            ApprovalState::TimedOut { at: now },
            Some(blocks::dm_timed_out(request)),
        ),
        Notification::AccessFailed { request, reason } => {
            let state = ApprovalState::Failed {
                reason: reason.clone(),
                at: now,
            };
            (request, state, Some(blocks::dm_failed(request, reason)))
        }
        _ => return None,
    })
}

/// For the notifications that are a DM and nothing else: to whom, and what.
fn direct_message(n: &Notification, now: DateTime<Utc>) -> Option<(&Subject, Message)> {
    Some(match n {
        Notification::RequestSubmitted {
            request,
            approvals_required,
        } => (
            &request.subject,
            blocks::dm_submitted(request, *approvals_required),
        ),
        Notification::AccessGranted {
            request,
            grant,
            instructions,
            extended,
            secret_delivery_failed,
        } => {
            let m = blocks::dm_granted(
                request,
                grant,
                instructions,
                *extended,
                *secret_delivery_failed,
                now,
            );
            (&request.subject, m)
        }
        Notification::SecretNotDelivered { request, grant } => (
            &request.subject,
            blocks::dm_secret_not_delivered(request, grant),
        ),
        Notification::ExpiryReminder { grant, can_extend } => {
            (&grant.subject, blocks::dm_reminder(grant, *can_extend, now))
        }
        Notification::AccessExpired { grant } => (&grant.subject, blocks::dm_expired(grant)),
        Notification::AccessRevoked { grant, revoked_by } => {
            (&grant.subject, blocks::dm_revoked(grant, revoked_by))
        }
        Notification::DelegationChanged {
            delegate,
            delegator,
            until,
            ended,
        } => (delegate, blocks::dm_delegation(delegator, *until, *ended)),
        _ => return None,
    })
}
