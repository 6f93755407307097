//! Identifiers. Every id is a newtype so a grant id can never be passed where a request id is
//! expected, and every id that exists has already been parsed.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$meta:meta])* $name:ident, $what:literal) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A fresh random id (UUID v4).
            pub fn new() -> Self {
                Self(Uuid::new_v4())
            }

            /// The UUID inside.
            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = IdParseError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s.trim())
                    .map(Self)
                    .map_err(|_| IdParseError { what: $what, input: s.chars().take(64).collect() })
            }
        }

        impl From<Uuid> for $name {
            fn from(u: Uuid) -> Self {
                Self(u)
            }
        }
    };
}

uuid_id!(
    /// An access request.
    RequestId,
    "request id"
);
uuid_id!(
    /// A grant: the live access of one subject to one resource.
    GrantId,
    "grant id"
);
uuid_id!(
    /// A job in the durable queue.
    JobId,
    "job id"
);
uuid_id!(
    /// One audit event.
    AuditEventId,
    "audit event id"
);

/// An id that did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{input}' is not a valid {what}")]
pub struct IdParseError {
    /// What kind of id was expected.
    pub what: &'static str,
    /// What was given.
    pub input: String,
}

/// The name of a requestable resource (`gcp-access`, `dev-network`), or of one role of a resource
/// that offers several (`gcp-access:editor`, docs/roles.md).
///
/// A name is lower-case letters, digits, `-`, `_` and `.`, starting with a letter or digit, at
/// most 64 characters; a role's id is two such names joined by exactly one `:`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ResourceId(String);

/// A resource name that is not valid (the input, as given).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "'{0}' is not a valid resource name (use lower-case letters, digits, '-', '_' or '.', at most 64 characters; a role is written resource:role)"
)]
pub struct ResourceIdError(pub String);

/// Separates a resource's name from one of its roles.
pub const ROLE_SEPARATOR: char = ':';

/// One name: what a resource or a role may be called.
fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.chars().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_' || c == '.'
        })
}

impl ResourceId {
    /// Checks a resource name (`dev-network`) or role (`gcp-access:viewer`) as written in configuration and commands, trimmed.
    pub fn parse(raw: &str) -> Result<Self, ResourceIdError> {
        let s = raw.trim();
        let valid = match s.split_once(ROLE_SEPARATOR) {
            None => valid_name(s),
            Some((resource, role)) => valid_name(resource) && valid_name(role),
        };
        if valid {
            Ok(Self(s.to_string()))
        } else {
            Err(ResourceIdError(raw.chars().take(80).collect()))
        }
    }

    /// The id of role `role` of this resource (`gcp-access` + `editor` → `gcp-access:editor`).
    /// Refused when this id is a role already or `role` is not a valid name.
    pub fn with_role(&self, role: &str) -> Result<Self, ResourceIdError> {
        if self.role().is_some() || !valid_name(role) {
            return Err(ResourceIdError(
                format!("{}{ROLE_SEPARATOR}{role}", self.0)
                    .chars()
                    .take(80)
                    .collect(),
            ));
        }
        Ok(Self(format!("{}{ROLE_SEPARATOR}{role}", self.0)))
    }

    /// The resource this id names: itself, or for a role the resource that offers it
    /// (`gcp-access:editor` → `gcp-access`).
    pub fn base(&self) -> &str {
        self.0
            .split_once(ROLE_SEPARATOR)
            .map_or(self.0.as_str(), |(base, _)| base)
    }

    /// The role, for a role's id (`gcp-access:editor` → `editor`).
    pub fn role(&self) -> Option<&str> {
        self.0.split_once(ROLE_SEPARATOR).map(|(_, role)| role)
    }

    /// The name as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ResourceId {
    type Error = ResourceIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<ResourceId> for String {
    fn from(r: ResourceId) -> Self {
        r.0
    }
}

impl AsRef<str> for ResourceId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for ResourceId {
    type Err = ResourceIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl RequestId {
    /// The id of the request filed by the inbox job `job` (a slash command, DM or form stored
    /// before it was answered). A job re-run after a crash or a transient error files the same
    /// request id, so it finds the request its first run filed instead of filing a second one.
    pub fn for_inbox_job(job: JobId) -> RequestId {
        use sha2::Digest;
        let mut hasher = sha2::Sha256::new();
        hasher.update(b"gatehouse-request-of-inbox-job:");
        hasher.update(job.0.as_bytes());
        let digest = hasher.finalize();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        RequestId(uuid::Builder::from_custom_bytes(bytes).into_uuid())
    }
}

impl JobId {
    /// The id of the job stored for an idempotency key (an inbox delivery): a function of the
    /// key (the first 16 bytes of its SHA-256, marked as a custom UUID), so storing the same key
    /// again conflicts on the job's primary key.
    pub fn for_key(key: &str) -> JobId {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(key.as_bytes());
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        JobId(uuid::Builder::from_custom_bytes(bytes).into_uuid())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_ids_parse() {
        assert!(ResourceId::parse("gcp-access").is_ok());
        assert!(ResourceId::parse("dev-network").is_ok());
        assert_eq!(ResourceId::parse(" demo ").unwrap().as_str(), "demo");
        assert!(ResourceId::parse("").is_err());
        assert!(ResourceId::parse("Upper").is_err());
        assert!(ResourceId::parse("-lead").is_err());
        assert!(ResourceId::parse("has space").is_err());
        assert!(ResourceId::parse(&"a".repeat(65)).is_err());
    }

    #[test]
    fn role_ids_parse() {
        let editor = ResourceId::parse("gcp-access:editor").unwrap();
        assert_eq!(editor.base(), "gcp-access");
        assert_eq!(editor.role(), Some("editor"));
        let plain = ResourceId::parse("gcp-access").unwrap();
        assert_eq!(plain.base(), "gcp-access");
        assert_eq!(plain.role(), None);
        assert_eq!(
            plain.with_role("viewer").unwrap().as_str(),
            "gcp-access:viewer"
        );
        assert!(editor.with_role("x").is_err(), "a role has no roles");
        assert!(plain.with_role("Bad").is_err());
        assert!(plain.with_role("").is_err());
        for bad in [
            ":editor",
            "gcp-access:",
            "a:b:c",
            "gcp-access::editor",
            "gcp-access:Editor",
            "gcp-access:-x",
            "gcp access:x",
        ] {
            assert!(ResourceId::parse(bad).is_err(), "{bad}");
        }
        let long = format!("{}:{}", "a".repeat(64), "b".repeat(64));
        assert!(ResourceId::parse(&long).is_ok());
        assert!(ResourceId::parse(&format!("{long}b")).is_err());
        let json = serde_json::to_string(&editor).unwrap();
        assert_eq!(serde_json::from_str::<ResourceId>(&json).unwrap(), editor);
    }

    #[test]
    fn uuid_ids_round_trip() {
        let id = RequestId::new();
        assert_eq!(id.to_string().parse::<RequestId>().unwrap(), id);
        let err = "nope".parse::<GrantId>().unwrap_err();
        assert_eq!(err.to_string(), "'nope' is not a valid grant id");
    }
}
