//! Domain values to columns and back. Reading never panics: anything that does not parse is
//! [`StoreError::Corrupt`] naming the column.

use access_core::ResourceId;
use access_core::audit::{AuditEvent, AuditKind, AuditRecord};
use access_core::duration::AccessDuration;
use access_core::grant::{Grant, GrantStatus};
use access_core::jobs::{Job, JobKind, JobStatus};
use access_core::notification::MessageRef;
use access_core::ports::{StoreError, StoreErrorSource};
use access_core::request::{
    AccessRequest, Actor, Decision, DecisionKind, RequestKind, RequestStatus,
};
use access_core::resource::Justification;
use access_core::subject::{Email, Subject};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::db::DbRow;

pub(crate) fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

/// A column that does not decode; `why` (a decoder's error, or a description) is the source.
pub(crate) fn corrupt(col: &str, why: impl Into<StoreErrorSource>) -> StoreError {
    StoreError::corrupt_because(format!("column {col}"), why)
}

pub(crate) fn time(row: &DbRow, col: &str) -> Result<DateTime<Utc>, StoreError> {
    let v = row.i64(col)?;
    DateTime::from_timestamp_micros(v)
        .ok_or_else(|| corrupt(col, format!("timestamp {v} out of range")))
}

pub(crate) fn opt_time(row: &DbRow, col: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
    row.opt_i64(col)?
        .map(|v| {
            DateTime::from_timestamp_micros(v)
                .ok_or_else(|| corrupt(col, format!("timestamp {v} out of range")))
        })
        .transpose()
}

/// JSON text for a value we produced ourselves. Serialising the domain types cannot fail in
/// practice; if it ever does, the write fails instead of storing something unreadable.
pub(crate) fn to_json<T: Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::database("cannot serialise a value", e))
}

pub(crate) fn from_json<T: DeserializeOwned>(col: &str, s: &str) -> Result<T, StoreError> {
    serde_json::from_str(s).map_err(|e| corrupt(col, e))
}

/// A unit enum's serde name (`"extend"`), for enums without `as_str`.
fn enum_name<T: Serialize>(v: &T) -> Result<String, StoreError> {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => Ok(s),
        Ok(_) => Err(StoreError::database_msg(
            "cannot store an enum that is not a unit variant",
        )),
        Err(e) => Err(StoreError::database("cannot serialise a value", e)),
    }
}

fn parse_enum_name<T: DeserializeOwned>(col: &str, s: &str) -> Result<T, StoreError> {
    serde_json::from_value(serde_json::Value::String(s.to_string())).map_err(|e| corrupt(col, e))
}

pub(crate) fn resource(row: &DbRow, col: &str) -> Result<ResourceId, StoreError> {
    let s = row.string(col)?;
    ResourceId::parse(&s).map_err(|e| corrupt(col, e))
}

fn opt_uuid<T: std::str::FromStr>(row: &DbRow, col: &str) -> Result<Option<T>, StoreError>
where
    T::Err: Into<StoreErrorSource>,
{
    row.opt_string(col)?
        .map(|s| s.parse::<T>().map_err(|e| corrupt(col, e)))
        .transpose()
}

pub(crate) fn uuid<T: std::str::FromStr>(row: &DbRow, col: &str) -> Result<T, StoreError>
where
    T::Err: Into<StoreErrorSource>,
{
    row.string(col)?.parse::<T>().map_err(|e| corrupt(col, e))
}

pub(crate) fn subject(row: &DbRow) -> Result<Subject, StoreError> {
    let email = row
        .opt_string("email")?
        .map(|e| Email::parse(&e).map_err(|err| corrupt("email", err)))
        .transpose()?;
    Ok(Subject {
        team_id: row.string("team_id")?,
        user_id: row.string("user_id")?,
        email,
        name: row.string("name")?,
    })
}

pub(crate) fn opt_actor(row: &DbRow, col: &str) -> Result<Option<Actor>, StoreError> {
    row.opt_string(col)?
        .map(|s| from_json::<Actor>(col, &s))
        .transpose()
}

// ------------------------------------------------------------------------------------------------
// requests

pub(crate) const REQUEST_COLS: &str = "id, team_id, user_id, email, name, resource, kind, duration_secs, justification, \
     status, created_at, updated_at, pending_until, grant_id, decided_by, decided_by_id, failure, version";

/// The values of every column but `id` and `version`, in [`REQUEST_COLS`] order.
pub(crate) struct RequestValues {
    pub team_id: String,
    pub user_id: String,
    pub email: Option<String>,
    pub name: String,
    pub resource: String,
    pub kind: String,
    pub duration_secs: i64,
    pub justification: String,
    pub status: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub pending_until: Option<i64>,
    pub grant_id: Option<String>,
    pub decided_by: Option<String>,
    pub decided_by_id: Option<String>,
    pub failure: Option<String>,
}

pub(crate) fn request_values(r: &AccessRequest) -> Result<RequestValues, StoreError> {
    Ok(RequestValues {
        team_id: r.subject.team_id.clone(),
        user_id: r.subject.user_id.clone(),
        email: r.subject.email.as_ref().map(|e| e.as_str().to_string()),
        name: r.subject.name.clone(),
        resource: r.resource.as_str().to_string(),
        kind: enum_name(&r.kind)?,
        duration_secs: i64::try_from(r.duration.secs())
            .map_err(|_| StoreError::database_msg("request duration out of range"))?,
        justification: r.justification.as_str().to_string(),
        status: r.status.as_str().to_string(),
        created_at: micros(r.created_at),
        updated_at: micros(r.updated_at),
        pending_until: r.pending_until.map(micros),
        grant_id: r.grant_id.map(|g| g.to_string()),
        decided_by: r.decided_by.as_ref().map(to_json).transpose()?,
        decided_by_id: r.decided_by.as_ref().map(|a| a.id()),
        failure: r.failure.clone(),
    })
}

pub(crate) fn request_from_row(row: &DbRow) -> Result<AccessRequest, StoreError> {
    let secs = row.i64("duration_secs")?;
    let duration = u64::try_from(secs)
        .map_err(|e| corrupt("duration_secs", e))
        .and_then(|s| AccessDuration::from_secs(s).map_err(|e| corrupt("duration_secs", e)))?;
    let justification = Justification::from_stored(&row.string("justification")?)
        .map_err(|e| corrupt("justification", e))?;
    let status = row
        .string("status")?
        .parse::<RequestStatus>()
        .map_err(|e| corrupt("status", e))?;
    Ok(AccessRequest {
        id: uuid(row, "id")?,
        subject: subject(row)?,
        resource: resource(row, "resource")?,
        kind: parse_enum_name::<RequestKind>("kind", &row.string("kind")?)?,
        duration,
        justification,
        status,
        created_at: time(row, "created_at")?,
        updated_at: time(row, "updated_at")?,
        pending_until: opt_time(row, "pending_until")?,
        grant_id: opt_uuid(row, "grant_id")?,
        decided_by: opt_actor(row, "decided_by")?,
        failure: row.opt_string("failure")?,
        version: row.i64("version")?,
    })
}

// ------------------------------------------------------------------------------------------------
// grants

pub(crate) const GRANT_COLS: &str = "id, team_id, user_id, email, name, resource, status, provider_handle, created_at, \
     granted_at, expires_at, ended_at, request_id, revoked_by, version, provider_intent, takeback_pending";

pub(crate) struct GrantValues {
    pub team_id: String,
    pub user_id: String,
    pub email: Option<String>,
    pub name: String,
    pub resource: String,
    pub status: String,
    pub provider_handle: String,
    pub created_at: i64,
    pub granted_at: Option<i64>,
    pub expires_at: i64,
    pub ended_at: Option<i64>,
    pub request_id: String,
    pub revoked_by: Option<String>,
    pub provider_intent: String,
    pub takeback_pending: i64,
}

pub(crate) fn grant_values(g: &Grant) -> Result<GrantValues, StoreError> {
    Ok(GrantValues {
        team_id: g.subject.team_id.clone(),
        user_id: g.subject.user_id.clone(),
        email: g.subject.email.as_ref().map(|e| e.as_str().to_string()),
        name: g.subject.name.clone(),
        resource: g.resource.as_str().to_string(),
        status: g.status.as_str().to_string(),
        provider_handle: to_json(&g.provider_handle)?,
        created_at: micros(g.created_at),
        granted_at: g.granted_at.map(micros),
        expires_at: micros(g.expires_at),
        ended_at: g.ended_at.map(micros),
        request_id: g.request_id.to_string(),
        revoked_by: g.revoked_by.as_ref().map(to_json).transpose()?,
        provider_intent: to_json(&g.provider_intent)?,
        takeback_pending: i64::from(g.takeback_pending),
    })
}

pub(crate) fn grant_from_row(row: &DbRow) -> Result<Grant, StoreError> {
    Ok(Grant {
        id: uuid(row, "id")?,
        subject: subject(row)?,
        resource: resource(row, "resource")?,
        status: row
            .string("status")?
            .parse::<GrantStatus>()
            .map_err(|e| corrupt("status", e))?,
        provider_handle: from_json("provider_handle", &row.string("provider_handle")?)?,
        created_at: time(row, "created_at")?,
        granted_at: opt_time(row, "granted_at")?,
        expires_at: time(row, "expires_at")?,
        ended_at: opt_time(row, "ended_at")?,
        request_id: uuid(row, "request_id")?,
        revoked_by: opt_actor(row, "revoked_by")?,
        version: row.i64("version")?,
        provider_intent: from_json("provider_intent", &row.string("provider_intent")?)?,
        takeback_pending: row.i64("takeback_pending")? != 0,
    })
}

// ------------------------------------------------------------------------------------------------
// decisions

pub(crate) const DECISION_COLS: &str = "request_id, actor, kind, at, comment";

pub(crate) fn decision_kind_str(k: DecisionKind) -> &'static str {
    k.as_str()
}

pub(crate) fn decision_from_row(row: &DbRow) -> Result<Decision, StoreError> {
    let kind = match row.string("kind")?.as_str() {
        "approve" => DecisionKind::Approve,
        "deny" => DecisionKind::Deny,
        other => return Err(corrupt("kind", format!("unknown decision kind '{other}'"))),
    };
    Ok(Decision {
        request_id: uuid(row, "request_id")?,
        actor: from_json("actor", &row.string("actor")?)?,
        kind,
        at: time(row, "at")?,
        comment: row.opt_string("comment")?,
    })
}

// ------------------------------------------------------------------------------------------------
// jobs

pub(crate) const JOB_COLS: &str = "id, kind, payload, status, run_at, attempts, max_attempts, last_error, created_at, locked_until, claim_token";

pub(crate) fn job_from_row(row: &DbRow) -> Result<Job, StoreError> {
    // A payload this version cannot read (a newer version's job kind) is not an error here: the
    // row is reported as `Undecodable`, so listings still show it and the claim sets it aside.
    let kind: JobKind = match from_json("payload", &row.string("payload")?) {
        Ok(k) => k,
        Err(e) => JobKind::Undecodable {
            kind: row.string("kind")?,
            error: crate::error::with_sources(&e),
        },
    };
    let status_s = row.string("status")?;
    let status = JobStatus::parse(&status_s)
        .ok_or_else(|| corrupt("status", format!("unknown job status '{status_s}'")))?;
    let attempts = u32::try_from(row.i64("attempts")?).map_err(|e| corrupt("attempts", e))?;
    Ok(Job {
        id: uuid(row, "id")?,
        kind,
        status,
        run_at: time(row, "run_at")?,
        attempts,
        last_error: row.opt_string("last_error")?,
        created_at: time(row, "created_at")?,
        locked_until: opt_time(row, "locked_until")?,
        claim_token: row.opt_string("claim_token")?,
    })
}

// ------------------------------------------------------------------------------------------------
// audit

pub(crate) const AUDIT_COLS: &str =
    "seq, id, at, kind, actor, subject, resource, request_id, grant_id, details, prev_hash, hash";

pub(crate) fn audit_from_row(row: &DbRow) -> Result<AuditEvent, StoreError> {
    let kind_s = row.string("kind")?;
    let kind = AuditKind::parse(&kind_s)
        .ok_or_else(|| corrupt("kind", format!("unknown audit kind '{kind_s}'")))?;
    let resource = row
        .opt_string("resource")?
        .map(|s| ResourceId::parse(&s).map_err(|e| corrupt("resource", e)))
        .transpose()?;
    Ok(AuditEvent {
        seq: row.i64("seq")?,
        record: AuditRecord {
            id: uuid(row, "id")?,
            at: time(row, "at")?,
            kind,
            actor: from_json("actor", &row.string("actor")?)?,
            subject: row.opt_string("subject")?,
            resource,
            request_id: opt_uuid(row, "request_id")?,
            grant_id: opt_uuid(row, "grant_id")?,
            details: from_json("details", &row.string("details")?)?,
        },
        prev_hash: row.string("prev_hash")?,
        hash: row.string("hash")?,
    })
}

// ------------------------------------------------------------------------------------------------
// message refs

pub(crate) fn message_ref_from_row(row: &DbRow) -> Result<MessageRef, StoreError> {
    Ok(MessageRef {
        request_id: uuid(row, "request_id")?,
        purpose: row.string("purpose")?,
        team_id: row.string("team_id")?,
        channel: row.string("channel")?,
        ts: row.string("ts")?,
    })
}
