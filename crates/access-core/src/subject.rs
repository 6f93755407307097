//! Who asks. The Slack user id is the identity key: e-mail and name are mutable profile fields
//! and are only ever used as secondary facts (eligibility by domain, provider account names).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::request::Actor;

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
    /// The person `key` names, with what their profile says.
    pub fn new(key: SubjectKey, email: Option<Email>, name: impl Into<String>) -> Self {
        Self {
            team_id: key.team_id,
            user_id: key.user_id,
            email,
            name: name.into(),
        }
    }

    /// Who this is, without the mutable profile fields.
    pub fn key(&self) -> SubjectKey {
        SubjectKey::new(&self.team_id, &self.user_id)
    }

    /// This person as the actor of what they do (file, cancel, approve).
    pub fn actor(&self) -> Actor {
        self.key().actor(&self.name)
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
///
/// Every conversion between the identity types lives here: [`Subject::key`],
/// [`Subject::actor`], [`SubjectKey::actor`], [`SubjectKey::subject`], [`Actor::subject_key`]
/// and [`Actor::as_subject`] (the Slack adapter's `Caller` converts through [`SubjectKey`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SubjectKey {
    /// Slack workspace (or Enterprise Grid organisation) id: the identity scope.
    pub team_id: String,
    /// Slack user id, immutable.
    pub user_id: String,
}

impl SubjectKey {
    /// User `user_id` of workspace (or organisation) `team_id`.
    pub fn new(team_id: impl Into<String>, user_id: impl Into<String>) -> Self {
        Self {
            team_id: team_id.into(),
            user_id: user_id.into(),
        }
    }

    /// This person acting, shown in messages as `name`.
    pub fn actor(&self, name: impl Into<String>) -> Actor {
        Actor::User {
            team_id: self.team_id.clone(),
            user_id: self.user_id.clone(),
            name: name.into(),
        }
    }

    /// This person as a subject whose profile is known only by `name` (no e-mail): what group
    /// membership checks on an approver or admin need.
    pub fn subject(&self, name: impl Into<String>) -> Subject {
        Subject::new(self.clone(), None, name)
    }
}

/// `team/user`: how audit records and the console name a person.
impl fmt::Display for SubjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.team_id, self.user_id)
    }
}

impl From<&Subject> for SubjectKey {
    fn from(s: &Subject) -> Self {
        s.key()
    }
}

impl From<&Subject> for Actor {
    fn from(s: &Subject) -> Self {
        s.actor()
    }
}

impl Actor {
    /// The same as [`Subject::actor`].
    pub fn from_subject(s: &Subject) -> Actor {
        s.actor()
    }

    /// The person acting, if a person (`None` for an admin of the API or Gatehouse itself).
    pub fn subject_key(&self) -> Option<SubjectKey> {
        match self {
            Actor::User {
                team_id, user_id, ..
            } => Some(SubjectKey::new(team_id, user_id)),
            Actor::Admin { .. } | Actor::System => None,
        }
    }

    /// The person acting as a subject without e-mail (see [`SubjectKey::subject`]).
    pub fn as_subject(&self) -> Option<Subject> {
        match self {
            Actor::User { name, .. } => self.subject_key().map(|k| k.subject(name)),
            Actor::Admin { .. } | Actor::System => None,
        }
    }
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

    /// Subjects and actors are stored in JSON columns and hashed into the audit chain: their
    /// JSON must not change.
    #[test]
    fn identity_json_is_pinned() {
        let jane = Subject::new(
            SubjectKey::new("T1", "U1"),
            Some(Email::parse("jane@example.com").unwrap()),
            "Jane",
        );
        assert_eq!(
            serde_json::to_string(&jane).unwrap(),
            r#"{"team_id":"T1","user_id":"U1","email":"jane@example.com","name":"Jane"}"#
        );
        assert_eq!(
            serde_json::to_string(&jane.key()).unwrap(),
            r#"{"team_id":"T1","user_id":"U1"}"#
        );
        assert_eq!(
            serde_json::to_string(&jane.actor()).unwrap(),
            r#"{"type":"user","team_id":"T1","user_id":"U1","name":"Jane"}"#
        );
        assert_eq!(
            serde_json::to_string(&Actor::Admin { name: "ops".into() }).unwrap(),
            r#"{"type":"admin","name":"ops"}"#
        );
        assert_eq!(
            serde_json::to_string(&Actor::System).unwrap(),
            r#"{"type":"system"}"#
        );
        let old: Subject = serde_json::from_str(r#"{"user_id":"U1"}"#).unwrap();
        assert_eq!(old, Subject::new(SubjectKey::new("", "U1"), None, ""));
    }

    #[test]
    fn conversions_round_trip() {
        let jane = Subject::new(SubjectKey::new("T1", "U1"), None, "Jane");
        let actor = Actor::from(&jane);
        assert_eq!(actor, Actor::from_subject(&jane));
        assert_eq!(actor.subject_key(), Some(jane.key()));
        assert_eq!(SubjectKey::from(&jane), jane.key());
        assert_eq!(actor.as_subject(), Some(jane.clone()));
        assert!(actor.is_subject(&actor.as_subject().unwrap()));
        assert_eq!(Actor::System.subject_key(), None);
        assert_eq!(jane.key().to_string(), "T1/U1");
        assert_eq!(actor.id(), "slack:T1/U1");
        assert_eq!(Actor::Admin { name: "a".into() }.as_subject(), None);
    }

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
