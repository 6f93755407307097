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
    pub id: RequestId,
    pub subject: Subject,
    pub resource: ResourceId,
    pub resource_description: String,
    pub kind: RequestKind,
    pub duration: AccessDuration,
    pub justification: String,
    pub status: RequestStatus,
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
    pub id: GrantId,
    pub subject: Subject,
    pub resource: ResourceId,
    pub expires_at: DateTime<Utc>,
    pub granted_at: Option<DateTime<Utc>>,
}

impl GrantSummary {
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
        request: RequestSummary,
        approvals_required: u32,
    },
    /// To the approvers' channel: please decide. The notifier returns the message it posted.
    ApprovalRequested {
        request: RequestSummary,
        channel: Option<String>,
        approvals_required: u32,
    },
    /// To the approvers' message: one more approval (N-of-M), not enough yet.
    ApprovalProgress {
        request: RequestSummary,
        approved_by: Vec<Actor>,
        approvals_required: u32,
    },
    /// To requester and approvers' message.
    RequestApproved {
        request: RequestSummary,
        approved_by: Vec<Actor>,
    },
    RequestDenied {
        request: RequestSummary,
        denied_by: Actor,
        reason: Option<String>,
    },
    RequestCancelled {
        request: RequestSummary,
        cancelled_by: Actor,
    },
    RequestTimedOut {
        request: RequestSummary,
    },
    /// To the requester: access works now; `instructions` come from the provider.
    AccessGranted {
        request: RequestSummary,
        grant: GrantSummary,
        instructions: String,
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
        request: RequestSummary,
        grant: GrantSummary,
    },
    /// To the requester (and approvers' message): approved but provisioning failed.
    AccessFailed {
        request: RequestSummary,
        reason: String,
    },
    /// To the holder, before expiry.
    ExpiryReminder {
        grant: GrantSummary,
        can_extend: bool,
    },
    AccessExpired {
        grant: GrantSummary,
    },
    AccessRevoked {
        grant: GrantSummary,
        revoked_by: Actor,
    },
    /// Break-glass: to the resource's approvers' channel and the security channel, loudly, with
    /// Reviewed and Revoke now buttons. The notifier returns the messages it posted (purpose
    /// `emergency`) so the review updates them in place.
    EmergencyAccessGranted {
        request: RequestSummary,
        grant: GrantSummary,
        /// The resource's approval channel (or the global one); `None`: the notifier's default.
        approvers_channel: Option<String>,
        /// `[server] security_channel` / `SECURITY_CHANNEL`, when configured.
        security_channel: Option<String>,
    },
    /// Break-glass: an approver reviewed the grant (or revoked it); the notices are updated.
    EmergencyReviewed {
        request: RequestSummary,
        review: crate::emergency::EmergencyReview,
        /// The grant's end as granted (the notices show it).
        expires_at: DateTime<Utc>,
    },
    /// A request not decided within its policy's escalation delay: to the second approver set
    /// (a new approval message in `channel`, and to each listed user directly) and to the
    /// requester (it escalated, and to whom).
    RequestEscalated {
        request: RequestSummary,
        /// The escalation channel, else the request's approval channel (None: the global one).
        channel: Option<String>,
        approvers: crate::resource::ApproverSet,
        /// How long it waited before escalating.
        after: AccessDuration,
        approvals_required: u32,
    },
    /// To a delegate: `delegator` let them approve for them until `until` (or ended that).
    DelegationChanged {
        delegate: Subject,
        delegator: Actor,
        until: DateTime<Utc>,
        /// Revoked now (false: given, or replaced by a new end).
        ended: bool,
    },
}

impl Notification {
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
    pub request_id: RequestId,
    /// What the message is (`approval`, `requester`), so updates pick the right one.
    pub purpose: String,
    pub team_id: String,
    pub channel: String,
    pub ts: String,
}

/// A secret a provider hands over once (a service-account key). It goes straight from the
/// provider to the person; it is never stored, logged or put in a job.
pub struct DeliveredSecret {
    pub filename: String,
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
