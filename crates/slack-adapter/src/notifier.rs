//! [`SlackNotifier`]: the `Notifier` port on Slack. The engine runs it from durable jobs and
//! retries on [`NotifyError::Transient`], so every method here is safe to run twice: updates
//! (`chat.update`) are idempotent, and a DM sent twice is the worst case.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use access_core::notification::{DeliveredSecret, MessageRef, Notification, RequestSummary};
use access_core::ports::{Clock, Notifier, NotifyContext, NotifyError, SystemClock};
use access_core::subject::Subject;

use crate::api::{ApiError, SlackApi};
use crate::blocks::{self, ApprovalState, Message};
use crate::config::SlackConfig;
use crate::installations::Installations;

/// `MessageRef::purpose` of the approval message in the approvers' channel.
pub const PURPOSE_APPROVAL: &str = "approval";

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
}

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
    async fn dm(&self, to: &Subject, m: &Message) -> Result<(), NotifyError> {
        if !is_slack_user(&to.user_id) {
            tracing::debug!(user = %to.user_id, "not a Slack user id; no DM sent");
            return Ok(());
        }
        self.api_for(&to.team_id)
            .await?
            .post_message(&to.user_id, &m.text, &m.blocks)
            .await
            .map(|_| ())
            .map_err(NotifyError::from)
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

fn is_slack_user(id: &str) -> bool {
    id.starts_with('U') || id.starts_with('W')
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
        )
    }

    async fn notify(
        &self,
        n: &Notification,
        ctx: &NotifyContext,
    ) -> Result<Vec<MessageRef>, NotifyError> {
        let now = self.now();
        match n {
            Notification::RequestSubmitted {
                request,
                approvals_required,
            } => {
                self.dm(
                    &request.subject,
                    &blocks::dm_submitted(request, *approvals_required),
                )
                .await?;
            }
            Notification::ApprovalRequested {
                request,
                channel,
                approvals_required,
            } => {
                let channel = channel
                    .as_deref()
                    .filter(|c| !c.is_empty())
                    .unwrap_or(&self.approval_channel);
                let channel = channel.trim_start_matches('#');
                let m = blocks::approval_message(
                    request,
                    &ApprovalState::Pending {
                        approved_by: vec![],
                        approvals_required: *approvals_required,
                    },
                );
                let posted = self.api_for(&request.subject.team_id).await?.post_message(channel, &m.text, &m.blocks).await.map_err(|e| match e {
                    // A wrong channel will not fix itself; say which one.
                    ApiError::Slack { ref error, .. } if error == "channel_not_found" || error == "not_in_channel" => {
                        NotifyError::Permanent(format!(
                            "cannot post to approval channel '{channel}' ({error}): invite the bot or fix APPROVAL_CHANNEL"
                        ))
                    }
                    other => other.into(),
                })?;
                return Ok(vec![MessageRef {
                    request_id: request.id,
                    purpose: PURPOSE_APPROVAL.to_string(),
                    team_id: request.subject.team_id.clone(),
                    channel: posted.channel,
                    ts: posted.ts,
                }]);
            }
            Notification::ApprovalProgress {
                request,
                approved_by,
                approvals_required,
            } => {
                let state = ApprovalState::Pending {
                    approved_by: approved_by.clone(),
                    approvals_required: *approvals_required,
                };
                self.update_approval(ctx, request, state).await?;
            }
            Notification::RequestApproved {
                request,
                approved_by,
            } => {
                self.update_approval(
                    ctx,
                    request,
                    ApprovalState::Approved {
                        by: approved_by.clone(),
                        at: now,
                    },
                )
                .await?;
                self.dm(&request.subject, &blocks::dm_approved(request, approved_by))
                    .await?;
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
                self.update_approval(ctx, request, state).await?;
                self.dm(
                    &request.subject,
                    &blocks::dm_denied(request, denied_by, reason.as_deref()),
                )
                .await?;
            }
            Notification::RequestCancelled {
                request,
                cancelled_by,
            } => {
                let state = ApprovalState::Cancelled {
                    by: cancelled_by.clone(),
                    at: now,
                };
                self.update_approval(ctx, request, state).await?;
                self.dm(
                    &request.subject,
                    &blocks::dm_cancelled(request, cancelled_by),
                )
                .await?;
            }
            Notification::RequestTimedOut { request } => {
                self.update_approval(ctx, request, ApprovalState::TimedOut { at: now })
                    .await?;
                self.dm(&request.subject, &blocks::dm_timed_out(request))
                    .await?;
            }
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
                self.dm(&request.subject, &m).await?;
            }
            Notification::SecretNotDelivered { request, grant } => {
                self.dm(
                    &request.subject,
                    &blocks::dm_secret_not_delivered(request, grant),
                )
                .await?;
            }
            Notification::AccessFailed { request, reason } => {
                self.update_approval(
                    ctx,
                    request,
                    ApprovalState::Failed {
                        reason: reason.clone(),
                        at: now,
                    },
                )
                .await?;
                self.dm(&request.subject, &blocks::dm_failed(request, reason))
                    .await?;
            }
            Notification::ExpiryReminder { grant, can_extend } => {
                self.dm(
                    &grant.subject,
                    &blocks::dm_reminder(grant, *can_extend, now),
                )
                .await?;
            }
            Notification::AccessExpired { grant } => {
                self.dm(&grant.subject, &blocks::dm_expired(grant)).await?;
            }
            Notification::AccessRevoked { grant, revoked_by } => {
                self.dm(&grant.subject, &blocks::dm_revoked(grant, revoked_by))
                    .await?;
            }
        }
        Ok(vec![])
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
