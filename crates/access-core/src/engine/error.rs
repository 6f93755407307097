//! [`EngineError`]: why an operation was refused. Its `Display` is the text shown to the person;
//! [`EngineError::code`] is the stable code API callers match on.

use chrono::{DateTime, Utc};

use super::AdminError;
use crate::duration::{AccessDuration, DurationError};
use crate::ids::{GrantId, RequestId};
use crate::policy::{ApproverError, EligibilityError};
use crate::ports::StoreError;
use crate::request::{RequestStatus, TransitionError};
use crate::resource::JustificationError;

/// Why an operation was refused. `Display` is the text shown to the person.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// `valid` lists what may be asked instead: every resource, or (when `requested` names a
    /// resource with roles, or one of its roles) that resource's roles, which the text then
    /// says (docs/roles.md).
    #[error("{}", unknown_resource_text(requested, valid))]
    UnknownResource {
        /// What the person typed (trimmed, cut to a resource name's length).
        requested: String,
        /// What may be asked instead.
        valid: Vec<String>,
    },
    /// The duration does not parse or is outside the resource's bounds.
    #[error("{0}")]
    InvalidDuration(#[from] DurationError),
    /// The justification is empty or too long.
    #[error("{0}")]
    InvalidJustification(#[from] JustificationError),
    /// The person may not have the resource (eligibility rules).
    #[error("{0}")]
    NotEligible(#[from] EligibilityError),
    /// The actor may not decide this request.
    #[error("{0}")]
    NotApprover(#[from] ApproverError),
    /// No request has this id.
    #[error("Request {0} does not exist.")]
    RequestNotFound(RequestId),
    /// No grant has this id.
    #[error("Grant {0} does not exist.")]
    GrantNotFound(GrantId),
    /// Nothing to revoke or extend: no live grant on the resource.
    #[error("You do not have any active access to '{resource}'.")]
    NoActiveGrant {
        /// The resource named.
        resource: String,
    },
    /// The resource does not allow extensions.
    #[error("Access to '{resource}' cannot be extended; request it again when it ends.")]
    NotExtendable {
        /// The resource named.
        resource: String,
    },
    /// A new request for a resource the person holds and that cannot be extended.
    #[error(
        "You already have access to '{resource}' until {}, and it cannot be extended. Request it again after it ends.",
        expires_at.format("%Y-%m-%d %H:%M UTC")
    )]
    NotExtendableLive {
        /// The resource named.
        resource: String,
        /// When the live grant ends.
        expires_at: DateTime<Utc>,
    },
    /// Only one pending request per person and resource.
    #[error(
        "You already have a pending request for '{resource}' ({request}). Cancel it first or wait for a decision."
    )]
    AlreadyPending {
        /// The resource named.
        resource: String,
        /// The request already pending.
        request: RequestId,
    },
    /// The request is no longer pending.
    #[error("This request has already been {status}.")]
    AlreadyDecided {
        /// What it is now.
        status: RequestStatus,
    },
    /// This approver already approved; one vote each.
    #[error("You have already approved this request.")]
    AlreadyVoted,
    /// An approver who approved cannot deny afterwards.
    #[error(
        "You have already approved this request, so you cannot deny it now. The requester can cancel it."
    )]
    AlreadyApprovedCannotDeny,
    /// The request timed out before this decision.
    #[error(
        "This request timed out at {} without a decision; it can no longer be approved or denied. The requester can ask again.",
        until.format("%Y-%m-%d %H:%M UTC")
    )]
    PendingExpired {
        /// When it timed out.
        until: DateTime<Utc>,
    },
    /// The request's state machine refuses the event.
    #[error("{0}")]
    IllegalTransition(#[from] TransitionError),
    /// Only the requester (or an admin) may do this.
    #[error("Only the requester (or an admin) can do that.")]
    NotYours,
    /// The live grant is being revoked (or is past its expiry): try again once it ended.
    #[error("Your previous access to '{resource}' is still being revoked; try again in a moment.")]
    RevocationInProgress {
        /// The resource named.
        resource: String,
    },
    /// A resource names a provider that is not registered (a configuration error).
    #[error("No provider '{0}' is configured.")]
    NoProvider(String),
    /// The provider says the resource cannot be requested now; the text is the provider's.
    #[error("{0}")]
    Unavailable(String),
    /// Lost the compare-and-set too many times in a row.
    #[error("Gatehouse is busy; please try again.")]
    Busy,
    /// The store failed; the person is told to try again.
    #[error("Something went wrong on our side (storage). Please try again.")]
    Store(#[from] StoreError),
    /// A delegation command was refused.
    #[error("{0}")]
    Delegation(#[from] crate::delegation::DelegationError),
    /// Break-glass asked for a resource without `emergency`.
    #[error(
        "Break-glass access is not enabled for '{resource}': nothing was granted. Ask for it the usual way (`request {resource} <duration> <justification>`) so an approver can decide."
    )]
    EmergencyNotAllowed {
        /// The resource named.
        resource: String,
    },
    /// Break-glass asked by someone who already holds the resource.
    #[error(
        "You already have access to '{resource}' until {}: break-glass is for when you have none. Use `extend {resource}` for more time.",
        expires_at.format("%Y-%m-%d %H:%M UTC")
    )]
    EmergencyAlreadyLive {
        /// The resource named.
        resource: String,
        /// When the live grant ends.
        expires_at: DateTime<Utc>,
    },
    /// A review of a request that was not break-glass.
    #[error("Request {0} was not a break-glass request; there is nothing to review.")]
    NotEmergency(RequestId),
    /// The emergency access was reviewed already; the first review wins.
    #[error("This emergency access has already been {} by {by}.", match outcome {
        crate::emergency::ReviewOutcome::Reviewed => "reviewed",
        crate::emergency::ReviewOutcome::Revoked => "revoked",
    })]
    AlreadyReviewed {
        /// Who reviewed it (a mention).
        by: String,
        /// What they decided.
        outcome: crate::emergency::ReviewOutcome,
    },
    /// The holder of emergency access tried to review it.
    #[error("You cannot review your own emergency access; another approver must.")]
    SelfReview,
    /// An admin command (`/access admin …`) from someone outside the admin group.
    #[error("{0}")]
    NotAdmin(#[from] AdminError),
    /// The per-person request limit (`[server.rate_limits]`, docs/rate-limits.md).
    #[error(
        "You have filed {limit} access requests in the last {}, the most allowed. You can ask again at {} (in {}).",
        window.human(),
        retry_at.format("%Y-%m-%d %H:%M:%S UTC"),
        crate::grant::format_remaining(*wait)
    )]
    RateLimited {
        /// Requests allowed per window.
        limit: u32,
        /// The window the requests are counted in.
        window: AccessDuration,
        /// When the person may ask again.
        retry_at: DateTime<Utc>,
        /// How long that is from now.
        wait: chrono::Duration,
    },
    /// The per-person limit on pending requests.
    #[error("{}", too_many_pending_text(*limit, *pending, *first_times_out))]
    TooManyPending {
        /// Pending requests allowed at once.
        limit: u32,
        /// Pending requests the person has now.
        pending: u64,
        /// When the oldest of them times out, if it can.
        first_times_out: Option<DateTime<Utc>>,
    },
    /// An extension approved after the access it was for had ended.
    /// An extension approved after the access it was for had ended.
    #[error(
        "The access to '{resource}' this extension was for has already ended, so nothing was granted; they can ask again with `request`."
    )]
    ExtendedGrantEnded {
        /// The resource named.
        resource: String,
    },
}

fn too_many_pending_text(limit: u32, pending: u64, first: Option<DateTime<Utc>>) -> String {
    let mut s = format!(
        "You already have {pending} requests waiting for a decision, the most allowed at once ({limit}). \
         You can ask again as soon as one of them is approved, denied or cancelled (`cancel <resource>` withdraws one)"
    );
    if let Some(at) = first {
        s.push_str(&format!(
            "; at the latest when the oldest times out at {}",
            at.format("%Y-%m-%d %H:%M UTC")
        ));
    }
    s.push('.');
    s
}

impl From<crate::limits::LimitRefusal> for EngineError {
    fn from(r: crate::limits::LimitRefusal) -> Self {
        match r {
            crate::limits::LimitRefusal::TooManyRequests {
                limit,
                window,
                retry_at,
                wait,
            } => EngineError::RateLimited {
                limit,
                window,
                retry_at,
                wait,
            },
            crate::limits::LimitRefusal::TooManyPending {
                limit,
                pending,
                first_times_out,
            } => EngineError::TooManyPending {
                limit,
                pending,
                first_times_out,
            },
        }
    }
}

impl EngineError {
    /// Stable machine-readable code (used in API error bodies).
    pub fn code(&self) -> &'static str {
        match self {
            EngineError::UnknownResource { .. } => "unknown_resource",
            EngineError::InvalidDuration(_) => "invalid_duration",
            EngineError::InvalidJustification(_) => "invalid_justification",
            EngineError::NotEligible(_) => "not_eligible",
            EngineError::NotApprover(_) => "not_approver",
            EngineError::RequestNotFound(_) => "request_not_found",
            EngineError::GrantNotFound(_) => "grant_not_found",
            EngineError::NoActiveGrant { .. } => "no_active_grant",
            EngineError::NotExtendable { .. } | EngineError::NotExtendableLive { .. } => {
                "not_extendable"
            }
            EngineError::AlreadyPending { .. } => "already_pending",
            EngineError::AlreadyDecided { .. } => "already_decided",
            EngineError::AlreadyVoted | EngineError::AlreadyApprovedCannotDeny => "already_voted",
            EngineError::PendingExpired { .. } => "already_decided",
            EngineError::IllegalTransition(_) => "illegal_transition",
            EngineError::NotYours => "forbidden",
            EngineError::RevocationInProgress { .. } => "revocation_in_progress",
            EngineError::NoProvider(_) => "no_provider",
            EngineError::Unavailable(_) => "unavailable",
            EngineError::Busy => "busy",
            EngineError::Store(_) => "internal",
            EngineError::EmergencyNotAllowed { .. } => "emergency_not_allowed",
            EngineError::EmergencyAlreadyLive { .. } => "emergency_already_live",
            EngineError::NotEmergency(_) => "not_emergency",
            EngineError::AlreadyReviewed { .. } => "already_reviewed",
            EngineError::SelfReview => "not_approver",
            EngineError::NotAdmin(_) => "not_admin",
            EngineError::RateLimited { .. } => "rate_limited",
            EngineError::TooManyPending { .. } => "too_many_pending",
            EngineError::ExtendedGrantEnded { .. } => "extended_grant_ended",
            EngineError::Delegation(_) => "delegation_refused",
        }
    }
}

/// The text of [`EngineError::UnknownResource`]: a role list when every valid name is a role of
/// the resource the person named (`gcp-access`, `gcp-access:admin`), else the resource list.
fn unknown_resource_text(requested: &str, valid: &[String]) -> String {
    let base = requested
        .split_once(crate::ids::ROLE_SEPARATOR)
        .map_or(requested, |(b, _)| b);
    let prefix = format!("{base}{}", crate::ids::ROLE_SEPARATOR);
    let roles_of_base =
        !base.is_empty() && !valid.is_empty() && valid.iter().all(|v| v.starts_with(&prefix));
    match (roles_of_base, requested == base) {
        (true, true) => format!(
            "'{base}' has several roles; say which one: {}.",
            valid.join(", ")
        ),
        (true, false) => format!(
            "Unknown role '{requested}'. Roles of '{base}': {}.",
            valid.join(", ")
        ),
        _ => format!(
            "Unknown resource '{requested}'. Valid resources: {}.",
            valid.join(", ")
        ),
    }
}
