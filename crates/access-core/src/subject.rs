//! Who asks. The Slack user id is the identity key: e-mail and name are mutable profile fields
//! and are only ever used as secondary facts (eligibility by domain, provider account names).

use std::fmt;

use serde::{Deserialize, Serialize};

/// A person, as identified by Slack (or by an admin acting for them through the API).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Subject {
    /// Slack workspace (team) id, `T…`. Empty for subjects created by API scripts outside Slack.
    #[serde(default)]
    pub team_id: String,
    /// Slack user id, `U…`/`W…`: immutable, the key every grant hangs off.
    pub user_id: String,
    /// E-mail from the Slack profile, when known.
    #[serde(default)]
    pub email: Option<Email>,
    /// Display name, for messages only.
    #[serde(default)]
    pub name: String,
}

impl Subject {
    /// The key that identifies this person (workspace and user id).
    pub fn key(&self) -> SubjectKey {
        SubjectKey {
            team_id: self.team_id.clone(),
            user_id: self.user_id.clone(),
        }
    }

    /// How messages mention this person.
    pub fn mention(&self) -> String {
        if self.user_id.starts_with('U') || self.user_id.starts_with('W') {
            format!("<@{}>", self.user_id)
        } else if !self.name.is_empty() {
            self.name.clone()
        } else {
            self.user_id.clone()
        }
    }
}

/// The identity part of a [`Subject`]: what "the same person" means.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SubjectKey {
    /// The Slack workspace (team) id.
    pub team_id: String,
    /// The Slack user id.
    pub user_id: String,
}

/// A syntactically valid e-mail address (one `@`, something on both sides, a dot in the domain),
/// stored lower-cased.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Email(String);

/// An e-mail address that is not valid (the input, cut to 80 characters).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a valid e-mail address")]
pub struct EmailError(pub String);

impl Email {
    /// Checks an e-mail address (one `@`, a local part, a dotted domain, no spaces), trimmed and lower-cased.
    pub fn parse(raw: &str) -> Result<Self, EmailError> {
        let s = raw.trim().to_ascii_lowercase();
        let ok = match s.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty()
                    && !domain.is_empty()
                    && !domain.contains('@')
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
                    && !s.chars().any(|c| c.is_whitespace() || c.is_control())
            }
            None => false,
        };
        if ok {
            Ok(Self(s))
        } else {
            Err(EmailError(raw.chars().take(80).collect()))
        }
    }

    /// The address as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// What comes before the `@`.
    pub fn local_part(&self) -> &str {
        self.0.split_once('@').map(|(l, _)| l).unwrap_or(&self.0)
    }

    /// What comes after the `@`.
    pub fn domain(&self) -> &str {
        self.0.split_once('@').map(|(_, d)| d).unwrap_or("")
    }
}

impl TryFrom<String> for Email {
    type Error = EmailError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<Email> for String {
    fn from(e: Email) -> Self {
        e.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Email {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        let e = Email::parse(" Jane.Doe@Example.com ").unwrap();
        assert_eq!(e.as_str(), "jane.doe@example.com");
        assert_eq!(e.local_part(), "jane.doe");
        assert_eq!(e.domain(), "example.com");
        for bad in [
            "",
            "jane",
            "@x.com",
            "jane@",
            "jane@com",
            "a@b@c.com",
            "a b@c.com",
            "a@.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
    }
}
