//! A request as typed and as parsed: [`Engine::validate`] turns the strings a person (or a
//! script) typed into a [`ValidSubmission`] once, at the edge, and every surface (Slack
//! commands, the modal, DMs, break-glass, the admin API, the console) goes through it. A
//! refusal is a [`FieldError`]: which form field it is about, with the engine's own words.
//!
//! Validation needs no I/O (the resource catalogue is in memory), so a surface can refuse an
//! impossible request before acknowledging it; what needs the store (a live grant, a pending
//! request, limits) is decided by [`Engine::submit`].

use crate::duration::AccessDuration;
use crate::engine::{Engine, EngineError, ResourceCatalog, emergency_duration};
use crate::ids::ResourceId;
use crate::request::{AccessRequest, RequestKind};
use crate::resource::{Justification, Resource};
use crate::subject::Subject;

/// A submission as typed: nothing is checked yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawSubmission {
    /// The resource name as typed (`dev-network`, `gcp-access:viewer`).
    pub resource: String,
    /// The duration as typed; `None` or blank means the resource's default.
    pub duration: Option<String>,
    /// The justification as typed (surrounding quotes are stripped). An extension may leave it
    /// blank: it then reads "Extension by `<duration>`".
    pub justification: String,
    /// A new request or an extension of live access.
    pub kind: RequestKind,
}

impl RawSubmission {
    /// A new request for `resource`.
    pub fn new(
        resource: impl Into<String>,
        duration: Option<String>,
        justification: impl Into<String>,
    ) -> Self {
        Self {
            resource: resource.into(),
            duration,
            justification: justification.into(),
            kind: RequestKind::New,
        }
    }

    /// The same text, as an extension of live access.
    pub fn extension(self) -> Self {
        Self {
            kind: RequestKind::Extend,
            ..self
        }
    }
}

/// A submission whose parts all parsed: an offered resource, a duration within its bounds, a
/// justification. Only [`Engine::validate`] and [`Engine::validate_emergency`] make one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidSubmission {
    resource: ResourceId,
    requested: Option<AccessDuration>,
    duration: AccessDuration,
    justification: Justification,
    kind: RequestKind,
}

impl ValidSubmission {
    /// The offered resource asked for.
    pub fn resource(&self) -> &ResourceId {
        &self.resource
    }

    /// The duration typed, parsed (`None`: none was typed). Break-glass resolves it against
    /// the emergency duration; its audit event records it.
    pub fn requested(&self) -> Option<AccessDuration> {
        self.requested
    }

    /// The duration to grant, resolved against the resource's bounds (its default when none
    /// was typed; for break-glass, its emergency duration).
    pub fn duration(&self) -> AccessDuration {
        self.duration
    }

    /// Why the person asks.
    pub fn justification(&self) -> &Justification {
        &self.justification
    }

    /// A new request or an extension.
    pub fn kind(&self) -> RequestKind {
        self.kind
    }
}

/// What [`Engine::submit`] and [`Engine::submit_emergency`] take: who asks, and what they asked
/// for, already validated.
#[derive(Debug, Clone)]
pub struct Submission {
    /// The person asking (their profile already read).
    pub subject: Subject,
    /// What they asked for.
    pub request: ValidSubmission,
}

impl Submission {
    /// `subject` asks for `request`.
    pub fn new(subject: Subject, request: ValidSubmission) -> Self {
        Self { subject, request }
    }
}

/// The request form's fields, so a refusal can be shown under the one it is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// The resource (unknown, or not open to break-glass).
    Resource,
    /// The duration (malformed or out of bounds).
    Duration,
    /// The justification (empty or too long).
    Justification,
}

/// Why a submission does not validate, and which field it is about. `Display` is the same
/// text as the engine's refusal ([`EngineError`]), into which it converts.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct FieldError {
    field: Field,
    error: EngineError,
}

impl FieldError {
    fn new(field: Field, error: impl Into<EngineError>) -> Self {
        Self {
            field,
            error: error.into(),
        }
    }

    /// The field the refusal is about.
    pub fn field(&self) -> Field {
        self.field
    }

    /// The engine's stable code for it (`unknown_resource`, `invalid_duration`, …).
    pub fn code(&self) -> &'static str {
        self.error.code()
    }
}

impl From<FieldError> for EngineError {
    fn from(e: FieldError) -> Self {
        e.error
    }
}

impl ResourceCatalog {
    /// [`Engine::validate`] against this catalogue.
    pub fn validate(&self, raw: &RawSubmission) -> Result<ValidSubmission, FieldError> {
        let resource = self.offered(&raw.resource)?;
        let requested = requested_duration(raw)?;
        let duration = resource
            .durations
            .check(requested)
            .map_err(|e| FieldError::new(Field::Duration, e))?;
        let justification = match raw.kind {
            RequestKind::New => parse_justification(&raw.justification)?,
            RequestKind::Extend => parse_justification(&raw.justification)
                .or_else(|_| parse_justification(&format!("Extension by {duration}")))?,
        };
        Ok(ValidSubmission {
            resource: resource.id.clone(),
            requested,
            duration,
            justification,
            kind: raw.kind,
        })
    }

    /// [`Engine::validate_emergency`] against this catalogue.
    pub fn validate_emergency(&self, raw: &RawSubmission) -> Result<ValidSubmission, FieldError> {
        let resource = self.offered(&raw.resource)?;
        let Some(policy) = resource.emergency else {
            return Err(FieldError::new(
                Field::Resource,
                EngineError::EmergencyNotAllowed {
                    resource: resource.id.to_string(),
                },
            ));
        };
        let requested = requested_duration(raw)?;
        let duration = emergency_duration(resource, policy, requested)
            .map_err(|e| FieldError::new(Field::Duration, e))?;
        Ok(ValidSubmission {
            resource: resource.id.clone(),
            requested,
            duration,
            justification: parse_justification(&raw.justification)?,
            kind: RequestKind::New,
        })
    }

    /// The offered resource `name` names, or the catalogue's refusal.
    fn offered(&self, name: &str) -> Result<&Resource, FieldError> {
        self.get(name)
            .ok_or_else(|| FieldError::new(Field::Resource, self.unknown(name)))
    }
}

impl Engine {
    /// Parses what was typed, without I/O: the resource must be offered, the duration must
    /// parse and fall within the resource's bounds, the justification must be present and not
    /// too long (an extension's may be blank). The checks run in that order and the first
    /// refusal is returned.
    pub fn validate(&self, raw: &RawSubmission) -> Result<ValidSubmission, FieldError> {
        self.catalog().validate(raw)
    }

    /// [`Engine::validate`] for break-glass (`docs/break-glass.md`): the resource must allow
    /// it, and the duration is cut to its emergency duration instead of refused (that duration
    /// when none was typed). Always a new request, whatever `raw.kind` says.
    pub fn validate_emergency(&self, raw: &RawSubmission) -> Result<ValidSubmission, FieldError> {
        self.catalog().validate_emergency(raw)
    }

    /// Validates `raw` and files it for `subject`: one call for callers with no form to show a
    /// field error in (scripts, the admin API, tests).
    pub async fn submit_raw(
        &self,
        subject: Subject,
        raw: &RawSubmission,
    ) -> Result<AccessRequest, EngineError> {
        let request = self.validate(raw)?;
        self.submit(Submission::new(subject, request)).await
    }

    /// Validates `raw` for break-glass and files it for `subject` (see
    /// [`Engine::submit_raw`]).
    pub async fn submit_emergency_raw(
        &self,
        subject: Subject,
        raw: &RawSubmission,
    ) -> Result<AccessRequest, EngineError> {
        let request = self.validate_emergency(raw)?;
        self.submit_emergency(Submission::new(subject, request))
            .await
    }
}

/// The duration typed, if any (blank is none).
fn requested_duration(raw: &RawSubmission) -> Result<Option<AccessDuration>, FieldError> {
    raw.duration
        .as_deref()
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| d.parse::<AccessDuration>())
        .transpose()
        .map_err(|e| FieldError::new(Field::Duration, e))
}

fn parse_justification(raw: &str) -> Result<Justification, FieldError> {
    Justification::parse(raw).map_err(|e| FieldError::new(Field::Justification, e))
}

#[cfg(test)]
mod tests;
