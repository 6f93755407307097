//! What people are told. The engine decides *what* happened; a [`crate::ports::Notifier`] (Slack,
//! or the log in a bare setup) decides how it looks. Notifications are stored in jobs, so they
//! carry snapshots, never secrets.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::duration::AccessDuration;
use crate::grant::Grant;
use crate::ids::{GrantId, RequestId, ResourceId};
use crate::request::{AccessRequest, Actor, RequestKind, RequestStatus};
use crate::subject::Subject;

/// A request as messages show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestSummary {
    /// The request's id.
    pub id: RequestId,
    /// Who asked.
    pub subject: Subject,
    /// The resource asked for.
    pub resource: ResourceId,
    /// The resource's description, as configured.
    pub resource_description: String,
    /// A new grant or an extension.
    pub kind: RequestKind,
    /// How long.
    pub duration: AccessDuration,
    /// Why, as the requester said.
    pub justification: String,
    /// Where the request is now.
    pub status: RequestStatus,
    /// When it was filed.
    pub created_at: DateTime<Utc>,
    /// The resource's provider (`cloudconnexa`, `gcp-iam`, …), so messages can use its words.
    #[serde(default)]
    pub provider: String,
    /// The Cloud Connexa network behind the resource, when there is one.
    #[serde(default)]
    pub network: Option<String>,
}

impl RequestSummary {
    /// Adds what the resource is (its provider and network) for the wording of messages.
    pub fn with_resource(mut self, r: &crate::resource::Resource) -> Self {
        self.provider = r.provider.to_string();
        self.network = r
            .settings
            .get("network")
            .and_then(|n| n.as_str())
            .map(str::to_string);
        self
    }

    /// The summary of `r`, for a resource described as `resource_description`.
    pub fn of(r: &AccessRequest, resource_description: &str) -> Self {
        Self {
            id: r.id,
            subject: r.subject.clone(),
            resource: r.resource.clone(),
            resource_description: resource_description.to_string(),
            kind: r.kind,
            duration: r.duration,
            justification: r.justification.as_str().to_string(),
            status: r.status,
            created_at: r.created_at,
            provider: String::new(),
            network: None,
        }
    }
}

/// A grant as messages show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GrantSummary {
    /// The grant's id.
    pub id: GrantId,
    /// Who holds it.
    pub subject: Subject,
    /// The resource.
    pub resource: ResourceId,
    /// When it ends.
    pub expires_at: DateTime<Utc>,
    /// When the provider first confirmed it.
    pub granted_at: Option<DateTime<Utc>>,
}

impl GrantSummary {
    /// The summary of `g`.
    pub fn of(g: &Grant) -> Self {
        Self {
            id: g.id,
            subject: g.subject.clone(),
            resource: g.resource.clone(),
            expires_at: g.expires_at,
            granted_at: g.granted_at,
        }
    }
}

/// Everything Gatehouse tells anyone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Notification {
    /// To the requester: we got it, it waits for approval.
    RequestSubmitted {
        /// The request.
        request: RequestSummary,
        /// Approvals it needs.
        approvals_required: u32,
    },
    /// To the approvers' channel: please decide. The notifier returns the message it posted.
    ApprovalRequested {
        /// The request.
        request: RequestSummary,
        /// The channel to post in; `None`: the notifier's default.
        channel: Option<String>,
        /// Approvals it needs.
        approvals_required: u32,
    },
    /// To the approvers' message: one more approval (N-of-M), not enough yet.
    ApprovalProgress {
        /// The request.
        request: RequestSummary,
        /// Who approved so far.
        approved_by: Vec<Actor>,
        /// Approvals it needs.
        approvals_required: u32,
    },
    /// To requester and approvers' message.
    RequestApproved {
        /// The request.
        request: RequestSummary,
        /// Who approved it.
        approved_by: Vec<Actor>,
    },
    /// To requester and approvers' message: denied.
    RequestDenied {
        /// The request.
        request: RequestSummary,
        /// Who denied it.
        denied_by: Actor,
        /// Why, if they said.
        reason: Option<String>,
    },
    /// To requester and approvers' message: withdrawn.
    RequestCancelled {
        /// The request.
        request: RequestSummary,
        /// Who withdrew it.
        cancelled_by: Actor,
    },
    /// To requester and approvers' message: nobody decided in time.
    RequestTimedOut {
        /// The request.
        request: RequestSummary,
    },
    /// To the requester: access works now; `instructions` come from the provider.
    AccessGranted {
        /// The request.
        request: RequestSummary,
        /// The grant.
        grant: GrantSummary,
        /// How to use the access, from the provider.
        instructions: String,
        /// An extension of access the person already had.
        extended: bool,
        /// A secret (key file) came with the grant and could not be delivered. The engine now
        /// says so with [`Notification::SecretNotDelivered`] (one "granted" message per grant);
        /// this flag is only read from jobs queued by older versions.
        #[serde(default)]
        secret_delivery_failed: bool,
    },
    /// To the requester, after [`Notification::AccessGranted`]: the grant is active but the
    /// secret (key file) that came with it could not be delivered; asking again issues a new one
    /// (the GCP document's upload-failure warning). Never the secret itself.
    SecretNotDelivered {
        /// The request.
        request: RequestSummary,
        /// The grant.
        grant: GrantSummary,
    },
    /// To the requester (and approvers' message): approved but provisioning failed.
    AccessFailed {
        /// The request.
        request: RequestSummary,
        /// Why provisioning failed.
        reason: String,
    },
    /// To the holder, before expiry.
    ExpiryReminder {
        /// The grant.
        grant: GrantSummary,
        /// Whether the resource can be extended (the message offers it).
        can_extend: bool,
    },
    /// To the holder: the access ended at its expiry.
    AccessExpired {
        /// The grant.
        grant: GrantSummary,
    },
    /// To the holder: the access was ended early.
    AccessRevoked {
        /// The grant.
        grant: GrantSummary,
        /// Who ended it.
        revoked_by: Actor,
    },
    /// Break-glass: to the resource's approvers' channel and the security channel, loudly, with
    /// Reviewed and Revoke now buttons. The notifier returns the messages it posted (purpose
    /// `emergency`) so the review updates them in place.
    EmergencyAccessGranted {
        /// The request.
        request: RequestSummary,
        /// The grant.
        grant: GrantSummary,
        /// The resource's approval channel (or the global one); `None`: the notifier's default.
        approvers_channel: Option<String>,
        /// `[server] security_channel` / `SECURITY_CHANNEL`, when configured.
        security_channel: Option<String>,
    },
    /// Break-glass: an approver reviewed the grant (or revoked it); the notices are updated.
    EmergencyReviewed {
        /// The request.
        request: RequestSummary,
        /// The review.
        review: crate::emergency::EmergencyReview,
        /// The grant's end as granted (the notices show it).
        expires_at: DateTime<Utc>,
    },
    /// A request not decided within its policy's escalation delay: to the second approver set
    /// (a new approval message in `channel`, and to each listed user directly) and to the
    /// requester (it escalated, and to whom).
    RequestEscalated {
        /// The request.
        request: RequestSummary,
        /// The escalation channel, else the request's approval channel (None: the global one).
        channel: Option<String>,
        /// Who may decide now.
        approvers: crate::resource::ApproverSet,
        /// How long it waited before escalating.
        after: AccessDuration,
        /// Approvals it needs.
        approvals_required: u32,
    },
    /// To a delegate: `delegator` let them approve for them until `until` (or ended that).
    DelegationChanged {
        /// Who may decide for the delegator.
        delegate: Subject,
        /// Who delegated.
        delegator: Actor,
        /// When the delegation ends.
        until: DateTime<Utc>,
        /// Revoked now (false: given, or replaced by a new end).
        ended: bool,
    },
}

impl Notification {
    /// The request it is about, if any.
    pub fn request_id(&self) -> Option<RequestId> {
        match self {
            Notification::RequestSubmitted { request, .. }
            | Notification::ApprovalRequested { request, .. }
            | Notification::ApprovalProgress { request, .. }
            | Notification::RequestApproved { request, .. }
            | Notification::RequestDenied { request, .. }
            | Notification::RequestCancelled { request, .. }
            | Notification::RequestTimedOut { request }
            | Notification::AccessGranted { request, .. }
            | Notification::SecretNotDelivered { request, .. }
            | Notification::AccessFailed { request, .. }
            | Notification::EmergencyAccessGranted { request, .. }
            | Notification::EmergencyReviewed { request, .. } => Some(request.id),
            Notification::RequestEscalated { request, .. } => Some(request.id),
            Notification::ExpiryReminder { .. }
            | Notification::AccessExpired { .. }
            | Notification::AccessRevoked { .. }
            | Notification::DelegationChanged { .. } => None,
        }
    }

    /// Its stored name (`request_submitted`, …), for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Notification::RequestSubmitted { .. } => "request_submitted",
            Notification::ApprovalRequested { .. } => "approval_requested",
            Notification::ApprovalProgress { .. } => "approval_progress",
            Notification::RequestApproved { .. } => "request_approved",
            Notification::RequestDenied { .. } => "request_denied",
            Notification::RequestCancelled { .. } => "request_cancelled",
            Notification::RequestTimedOut { .. } => "request_timed_out",
            Notification::AccessGranted { .. } => "access_granted",
            Notification::SecretNotDelivered { .. } => "secret_not_delivered",
            Notification::AccessFailed { .. } => "access_failed",
            Notification::ExpiryReminder { .. } => "expiry_reminder",
            Notification::AccessExpired { .. } => "access_expired",
            Notification::AccessRevoked { .. } => "access_revoked",
            Notification::EmergencyAccessGranted { .. } => "emergency_access_granted",
            Notification::EmergencyReviewed { .. } => "emergency_reviewed",
            Notification::RequestEscalated { .. } => "request_escalated",
            Notification::DelegationChanged { .. } => "delegation_changed",
        }
    }
}

/// A Slack message Gatehouse posted about a request, kept so later events update it in place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRef {
    /// The request.
    pub request_id: RequestId,
    /// What the message is (`approval`, `requester`), so updates pick the right one.
    pub purpose: String,
    /// The Slack workspace.
    pub team_id: String,
    /// The channel it is in.
    pub channel: String,
    /// The message's timestamp (Slack's id for it).
    pub ts: String,
}

/// A secret a provider hands over once (a service-account key). It goes straight from the
/// provider to the person; it is never stored, logged or put in a job.
pub struct DeliveredSecret {
    /// The file name shown.
    pub filename: String,
    /// The file's bytes.
    pub content: Vec<u8>,
    /// Shown next to the file.
    pub warning: String,
}

impl std::fmt::Debug for DeliveredSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeliveredSecret")
            .field("filename", &self.filename)
            .field(
                "content",
                &format_args!("<{} bytes redacted>", self.content.len()),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_debug_print() {
        let s = DeliveredSecret {
            filename: "k.json".into(),
            content: b"PRIVATE KEY".to_vec(),
            warning: String::new(),
        };
        let printed = format!("{s:?}");
        assert!(!printed.contains("PRIVATE"));
        assert!(printed.contains("11 bytes redacted"));
    }
}
