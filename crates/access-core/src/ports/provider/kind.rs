//! [`ProviderKind`]: which provider grants a resource, parsed once from the configuration's
//! `provider = "…"` string and written back as the same string.

use std::fmt;
use std::hash::{Hash, Hasher};

use serde::{Deserialize, Serialize};

/// Which provider grants a resource: one built into Gatehouse, or one an embedding program (or a
/// test) registers under its own name. Stored and configured as its name (`dry-run`,
/// `cloudconnexa`, `gcp-iam`, or the custom name), so formats do not change. Two kinds are equal
/// when their names are.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum ProviderKind {
    /// `dry-run`: grants nothing, says what it would have done.
    DryRun,
    /// `cloudconnexa`: OpenVPN Cloud Connexa user-group memberships.
    CloudConnexa,
    /// `gcp-iam`: conditional Google Cloud IAM bindings and service-account keys.
    GcpIam,
    /// A provider from outside this workspace, by the name it registers under (lowercase
    /// letters, digits, `-`, `_`).
    Custom(String),
}

/// A `provider = "…"` value that cannot name a provider.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "'{0}' is not a provider name: the built-in providers are {known}; a custom provider's name \
     is made of lowercase letters, digits, '-' and '_'",
    known = ProviderKind::BUILT_IN.iter().map(ProviderKind::as_str).collect::<Vec<_>>().join(", ")
)]
pub struct ProviderKindError(
    /// The name as configured.
    pub String,
);

impl ProviderKindError {
    /// A stable name for this error, for callers that report codes.
    pub fn code(&self) -> &'static str {
        "invalid_provider_kind"
    }
}

impl ProviderKind {
    /// The providers built into Gatehouse, in the order error messages list them.
    pub const BUILT_IN: [ProviderKind; 3] = [
        ProviderKind::DryRun,
        ProviderKind::CloudConnexa,
        ProviderKind::GcpIam,
    ];

    /// Parses a configured name: a built-in kind, or a well-formed custom name.
    pub fn parse(name: &str) -> Result<Self, ProviderKindError> {
        let well_formed = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if !well_formed {
            return Err(ProviderKindError(name.to_string()));
        }
        Ok(Self::from(name))
    }

    /// The name resources use.
    pub fn as_str(&self) -> &str {
        match self {
            ProviderKind::DryRun => "dry-run",
            ProviderKind::CloudConnexa => "cloudconnexa",
            ProviderKind::GcpIam => "gcp-iam",
            ProviderKind::Custom(name) => name,
        }
    }

    /// Whether this is one of [`Self::BUILT_IN`].
    pub fn is_built_in(&self) -> bool {
        Self::BUILT_IN.iter().any(|k| k == self)
    }
}

/// Classifies a name without checking its form (code that builds resources itself); names read
/// from configuration go through [`ProviderKind::parse`].
impl From<&str> for ProviderKind {
    fn from(name: &str) -> Self {
        match name {
            "dry-run" => ProviderKind::DryRun,
            "cloudconnexa" => ProviderKind::CloudConnexa,
            "gcp-iam" => ProviderKind::GcpIam,
            other => ProviderKind::Custom(other.to_string()),
        }
    }
}

impl TryFrom<String> for ProviderKind {
    type Error = ProviderKindError;
    fn try_from(name: String) -> Result<Self, Self::Error> {
        Self::parse(&name)
    }
}

impl std::str::FromStr for ProviderKind {
    type Err = ProviderKindError;
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::parse(name)
    }
}

impl From<ProviderKind> for String {
    fn from(kind: ProviderKind) -> Self {
        match kind {
            ProviderKind::Custom(name) => name,
            other => other.as_str().to_string(),
        }
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq for ProviderKind {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for ProviderKind {}

impl Hash for ProviderKind {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialEq<str> for ProviderKind {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for ProviderKind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_as_the_configured_name() {
        for name in ["dry-run", "cloudconnexa", "gcp-iam", "test"] {
            let kind: ProviderKind = serde_json::from_value(serde_json::json!(name)).unwrap();
            assert_eq!(
                serde_json::to_value(&kind).unwrap(),
                serde_json::json!(name)
            );
            assert_eq!(kind.to_string(), name);
        }
        assert_eq!(ProviderKind::parse("gcp-iam"), Ok(ProviderKind::GcpIam));
        assert_eq!(
            ProviderKind::Custom("cloudconnexa".into()),
            ProviderKind::CloudConnexa
        );
        assert!(ProviderKind::parse("test").is_ok_and(|k| !k.is_built_in()));
    }

    #[test]
    fn refuses_what_cannot_be_a_name_and_lists_the_kinds() {
        for bad in ["", "Cloud Connexa", "gcp iam", "GCP"] {
            let e = ProviderKind::parse(bad).unwrap_err();
            assert!(
                e.to_string()
                    .contains("built-in providers are dry-run, cloudconnexa, gcp-iam"),
                "{e}"
            );
        }
        assert!(serde_json::from_value::<ProviderKind>(serde_json::json!("")).is_err());
    }
}
