//! Grants: the live access of one subject to one resource.
//!
//! There is at most one live grant per (subject, resource). A second approval extends it instead
//! of stacking a second one, so an earlier expiry can never take away access a later approval
//! still covers.
//!
//! ```text
//!  provisioning ──▶ active ──▶ revoking ──▶ revoked
//!       │             │                      
//!       │             └──────────────────▶ expired
//!       └──▶ failed
//! ```

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{GrantId, RequestId, ResourceId};
use crate::request::Actor;
use crate::subject::Subject;

/// Where a grant is in its life (see the diagram above).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantStatus {
    /// Approved; the provider has not confirmed yet. Its expiry job already exists.
    Provisioning,
    /// The provider confirmed; the person has access.
    Active,
    /// Revocation asked for (by a person); the provider has not confirmed yet.
    Revoking,
    /// Ended early at the provider.
    Revoked,
    /// Ended at its expiry.
    Expired,
    /// Provisioning failed for good; whatever was half-done has been cleaned up.
    Failed,
}

impl GrantStatus {
    /// Every status, in declaration order.
    pub const ALL: [GrantStatus; 6] = [
        GrantStatus::Provisioning,
        GrantStatus::Active,
        GrantStatus::Revoking,
        GrantStatus::Revoked,
        GrantStatus::Expired,
        GrantStatus::Failed,
    ];

    /// The stored name (`provisioning`, `active`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            GrantStatus::Provisioning => "provisioning",
            GrantStatus::Active => "active",
            GrantStatus::Revoking => "revoking",
            GrantStatus::Revoked => "revoked",
            GrantStatus::Expired => "expired",
            GrantStatus::Failed => "failed",
        }
    }

    /// Live grants hold (or are about to hold) access at the provider.
    pub fn is_live(self) -> bool {
        matches!(
            self,
            GrantStatus::Provisioning | GrantStatus::Active | GrantStatus::Revoking
        )
    }
}

impl fmt::Display for GrantStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for GrantStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        GrantStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown grant status '{s}'"))
    }
}

/// Live access of one person to one resource, or its record once ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Grant {
    /// The grant's id.
    pub id: GrantId,
    /// Who holds it.
    pub subject: Subject,
    /// The resource.
    pub resource: ResourceId,
    /// Where it is in its life.
    pub status: GrantStatus,
    /// Opaque JSON the provider understands (what it added, what it created), so revoke restores
    /// exactly. Never holds secrets.
    pub provider_handle: serde_json::Value,
    /// When it was approved.
    pub created_at: DateTime<Utc>,
    /// When the provider first confirmed it.
    pub granted_at: Option<DateTime<Utc>>,
    /// When it ends (an extension moves it).
    pub expires_at: DateTime<Utc>,
    /// When it ended, once it has.
    pub ended_at: Option<DateTime<Utc>>,
    /// The request that created it.
    pub request_id: RequestId,
    /// Who asked for an early revocation.
    pub revoked_by: Option<Actor>,
    /// Compare-and-set counter; bumped by every write.
    pub version: i64,
    /// What the provider is about to add for this grant, recorded (and committed) before the
    /// provider is first called: a retried grant call adopts its own earlier work instead of
    /// taking it for access the person already had, and a take-back without a handle knows what
    /// to look for. Null until provisioning starts. Never holds secrets.
    #[serde(default)]
    pub provider_intent: serde_json::Value,
    /// The provider may still hold work of this grant although the grant is no longer live (its
    /// provisioning finished after it was revoked or expired): the revoke job takes it back with
    /// the recorded handle, then clears this.
    #[serde(default)]
    pub takeback_pending: bool,
}

impl Grant {
    /// How long until it expires (zero once past).
    pub fn remaining(&self, now: DateTime<Utc>) -> chrono::Duration {
        (self.expires_at - now).max(chrono::Duration::zero())
    }
}

/// Formats what is left: `3h 12m`, `45m`, `20s`.
pub fn format_remaining(d: chrono::Duration) -> String {
    let secs = d.num_seconds().max(0);
    let (days, hours, minutes) = (secs / 86_400, (secs % 86_400) / 3_600, (secs % 3_600) / 60);
    if days > 0 {
        format!("{days}d {hours}h")
    } else if hours > 0 {
        format!("{hours}h {minutes}m")
    } else if minutes > 0 {
        format!("{minutes}m")
    } else {
        format!("{secs}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remaining_formats() {
        assert_eq!(
            format_remaining(chrono::Duration::seconds(3 * 3600 + 12 * 60 + 5)),
            "3h 12m"
        );
        assert_eq!(format_remaining(chrono::Duration::seconds(45 * 60)), "45m");
        assert_eq!(format_remaining(chrono::Duration::seconds(20)), "20s");
        assert_eq!(format_remaining(chrono::Duration::seconds(-5)), "0s");
        assert_eq!(
            format_remaining(chrono::Duration::seconds(2 * 86_400 + 3600)),
            "2d 1h"
        );
    }

    #[test]
    fn statuses_round_trip() {
        for s in GrantStatus::ALL {
            assert_eq!(s.as_str().parse::<GrantStatus>().unwrap(), s);
        }
        assert!(GrantStatus::Revoking.is_live());
        assert!(!GrantStatus::Expired.is_live());
    }
}
