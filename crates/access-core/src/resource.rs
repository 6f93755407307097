//! Resources people can ask for, and the policy attached to each: who is eligible, who approves,
//! for how long.

use serde::{Deserialize, Serialize};

use crate::duration::{AccessDuration, DurationBounds};
use crate::ids::ResourceId;
use crate::ports::ProviderKind;

/// A requestable thing, from configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resource {
    /// The name people request it by.
    pub id: ResourceId,
    /// What it gives access to, shown in lists and messages.
    #[serde(default)]
    pub description: String,
    /// Which provider grants it (`dry-run`, `cloudconnexa`, `gcp-iam`, …), parsed once when the
    /// resource is read and written back as the same string.
    pub provider: ProviderKind,
    /// Provider-specific settings, handed to the provider on every call.
    #[serde(default)]
    pub settings: serde_json::Value,
    /// The durations it allows.
    pub durations: DurationBounds,
    /// All rules must hold. Empty means anyone.
    #[serde(default)]
    pub eligibility: Vec<EligibilityRule>,
    /// Who approves.
    pub approval: ApprovalPolicy,
    /// Whether a person may extend an active grant (`extend`, the reminder's Extend button).
    #[serde(default = "yes")]
    pub extendable: bool,
    /// Whether workspace guests (`is_restricted`, `is_ultra_restricted`) may request it.
    /// Default no: a guest is somebody else's employee or contractor with limited access.
    #[serde(default)]
    pub allow_guests: bool,
    /// Whether people from other organisations (Slack Connect, `is_stranger`, or a home team that
    /// is not the workspace asking) may request it. Default no.
    #[serde(default)]
    pub allow_external: bool,
    /// Break-glass: whether a person may take this resource at once, without approval, in an
    /// emergency (`request <resource> --emergency <justification>`), and for how long at most.
    /// `None` (the default): never.
    #[serde(default)]
    pub emergency: Option<EmergencyPolicy>,
}

/// How a resource allows break-glass access (see `docs/break-glass.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmergencyPolicy {
    /// The longest an emergency grant lasts: a longer requested duration is cut to it, no
    /// duration means it.
    #[serde(default = "default_emergency_duration")]
    pub duration: AccessDuration,
}

impl EmergencyPolicy {
    /// An emergency grant's length unless configured: an hour.
    pub const DEFAULT_DURATION: AccessDuration = AccessDuration::const_secs(3600);
}

impl Default for EmergencyPolicy {
    fn default() -> Self {
        Self {
            duration: Self::DEFAULT_DURATION,
        }
    }
}

fn default_emergency_duration() -> AccessDuration {
    EmergencyPolicy::DEFAULT_DURATION
}

fn yes() -> bool {
    true
}

/// One eligibility rule. A resource lists several; all must hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EligibilityRule {
    /// Everybody in the workspace.
    Anyone,
    /// Member of an organisation (or team) in the org-data index.
    Org(String),
    /// Member of a Slack user group (`S…` id).
    SlackGroup(String),
    /// E-mail in one of these domains.
    EmailDomain(Vec<String>),
}

/// Who must approve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
// One per resource, read from configuration once: the size of `Approvers` costs nothing, and
// boxing its sets would only make the configuration types awkward to build.
#[allow(clippy::large_enum_variant)]
pub enum ApprovalPolicy {
    /// Approved as soon as the request passes eligibility.
    Auto,
    /// `required` distinct approvers out of `approvers` must approve; one deny ends it.
    Approvers {
        /// Who may approve.
        approvers: ApproverSet,
        /// How many distinct approvers must agree.
        #[serde(default = "one")]
        required: u32,
        /// Channel the approval message goes to; falls back to the global approval channel.
        #[serde(default)]
        channel: Option<String>,
        /// A pending request times out after this long.
        #[serde(default = "default_pending_ttl")]
        pending_ttl: AccessDuration,
        /// A request still pending this long after it was filed is escalated: shown to
        /// `escalation_approvers` (who may then decide too) and the requester is told.
        /// See [`crate::escalation`].
        #[serde(default)]
        escalate_after: Option<AccessDuration>,
        /// The second approver set, asked once the request escalates.
        #[serde(default)]
        escalation_approvers: ApproverSet,
        /// Where the escalated approval message goes; falls back to the approval channel.
        #[serde(default)]
        escalation_channel: Option<String>,
    },
}

fn one() -> u32 {
    1
}

fn default_pending_ttl() -> AccessDuration {
    ApprovalPolicy::DEFAULT_PENDING_TTL
}

impl ApprovalPolicy {
    /// How long a request may wait for approvers unless configured: a day.
    pub const DEFAULT_PENDING_TTL: AccessDuration = AccessDuration::const_secs(24 * 3600);

    /// Whether requests are approved without asking anyone.
    pub fn is_auto(&self) -> bool {
        matches!(self, ApprovalPolicy::Auto)
    }

    /// How many approvers must agree (0 for automatic approval).
    pub fn required_approvals(&self) -> u32 {
        match self {
            ApprovalPolicy::Auto => 0,
            ApprovalPolicy::Approvers { required, .. } => (*required).max(1),
        }
    }
}

/// The people who may approve: Slack user ids, Slack user groups, directory groups.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApproverSet {
    /// Slack user ids.
    #[serde(default)]
    pub users: Vec<String>,
    /// Slack user-group handles or ids.
    #[serde(default)]
    pub slack_groups: Vec<String>,
    /// Directory (organisation) groups.
    #[serde(default)]
    pub groups: Vec<String>,
}

impl ApproverSet {
    /// Whether it names nobody.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && self.slack_groups.is_empty() && self.groups.is_empty()
    }
}

/// Why a person typed what they typed. Quotes (`"…"`, `“…”`, `'…'`) around it are stripped before
/// storage, as the GCP document requires.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Justification(String);

/// Why a justification was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JustificationError {
    /// Nothing was given.
    #[error("A justification is required: say why you need access.")]
    Empty,
    /// Longer than [`Justification::MAX_CHARS`] (the length given).
    #[error("The justification is too long ({0} characters, at most 500).")]
    TooLong(usize),
}

impl Justification {
    /// The longest justification accepted, in characters.
    pub const MAX_CHARS: usize = 500;

    /// Parses what a person typed: surrounding quotes are stripped.
    pub fn parse(raw: &str) -> Result<Self, JustificationError> {
        Self::from_stored(strip_quotes(raw.trim()))
    }

    /// Rebuilds a justification that was already parsed (from storage or JSON): validated, but
    /// quotes are kept, since they are part of the text by now.
    pub fn from_stored(raw: &str) -> Result<Self, JustificationError> {
        let s = raw.trim();
        if s.is_empty() {
            return Err(JustificationError::Empty);
        }
        let n = s.chars().count();
        if n > Self::MAX_CHARS {
            return Err(JustificationError::TooLong(n));
        }
        Ok(Self(s.to_string()))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Removes one pair of matching surrounding quotes.
pub fn strip_quotes(s: &str) -> &str {
    for (open, close) in [
        ('"', '"'),
        ('\u{201c}', '\u{201d}'),
        ('\'', '\''),
        ('\u{2018}', '\u{2019}'),
    ] {
        if s.len() >= open.len_utf8() + close.len_utf8()
            && s.starts_with(open)
            && s.ends_with(close)
        {
            return &s[open.len_utf8()..s.len() - close.len_utf8()];
        }
    }
    s
}

impl TryFrom<String> for Justification {
    type Error = JustificationError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::from_stored(&s)
    }
}

impl From<Justification> for String {
    fn from(j: Justification) -> Self {
        j.0
    }
}

impl std::fmt::Display for Justification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn justification_strips_quotes() {
        let j = Justification::parse("\"Need to debug CI infrastructure issues\"").unwrap();
        assert_eq!(j.as_str(), "Need to debug CI infrastructure issues");
        assert_eq!(Justification::parse("“curly”").unwrap().as_str(), "curly");
        assert_eq!(
            Justification::parse("plain words").unwrap().as_str(),
            "plain words"
        );
        assert_eq!(
            Justification::parse("\"\"").unwrap_err(),
            JustificationError::Empty
        );
        assert_eq!(
            Justification::parse("   ").unwrap_err(),
            JustificationError::Empty
        );
        // Stored text keeps the quotes that survived parsing.
        let inner = Justification::parse("\"'quoted'\"").unwrap();
        assert_eq!(inner.as_str(), "'quoted'");
        assert_eq!(Justification::from_stored(inner.as_str()).unwrap(), inner);
        let json = serde_json::to_string(&inner).unwrap();
        assert_eq!(serde_json::from_str::<Justification>(&json).unwrap(), inner);
        assert!(matches!(
            Justification::parse(&"x".repeat(501)),
            Err(JustificationError::TooLong(501))
        ));
    }

    #[test]
    fn policy_serde() {
        let p: ApprovalPolicy = serde_json::from_value(serde_json::json!({
            "mode": "approvers", "approvers": {"users": ["U1"]}, "required": 2
        }))
        .unwrap();
        assert_eq!(p.required_approvals(), 2);
        if let ApprovalPolicy::Approvers { pending_ttl, .. } = p {
            assert_eq!(pending_ttl.secs(), 86_400);
        }
        let a: ApprovalPolicy =
            serde_json::from_value(serde_json::json!({"mode": "auto"})).unwrap();
        assert!(a.is_auto());
        let r: Vec<EligibilityRule> = serde_json::from_value(serde_json::json!([
            "anyone", {"org": "Hybrid Platforms"}, {"email_domain": ["example.com"]}
        ]))
        .unwrap();
        assert_eq!(r.len(), 3);
    }
}
