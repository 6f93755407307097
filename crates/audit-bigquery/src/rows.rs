//! From audit events to table rows.

use access_core::audit::{AuditEvent, AuditKind};
use access_core::ports::ExportItem;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::Value;

/// The `command` column: the GCP document writes only grants made by `request`.
pub const GRANT_COMMAND: &str = "request";

/// A TIMESTAMP value as BigQuery reads it from JSON: RFC 3339, microseconds, `Z`.
pub fn bq_timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// One `access_events` row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AccessEventRow {
    pub id: String,
    pub time: String,
    pub kind: &'static str,
    pub actor: String,
    pub subject: Option<String>,
    pub resource: Option<String>,
    pub request_id: Option<String>,
    pub grant_id: Option<String>,
    /// The details object serialised: a STRING column keeps any shape the engine writes without
    /// a schema change, and `JSON_VALUE(details, '$.x')` reads it.
    pub details: String,
    pub seq: i64,
    pub prev_hash: String,
    pub hash: String,
}

/// One `access_grants` row, the GCP document's columns.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AccessGrantRow {
    pub timestamp: String,
    pub command: &'static str,
    pub user_email: String,
    pub slack_user_id: String,
    pub justification: String,
    pub resource: String,
    pub project_id: String,
    /// Unknown only if the event came without its grant and without `expires_at` in its details.
    pub expires_at: Option<String>,
    pub service_account_email: String,
}

pub fn event_row(e: &AuditEvent) -> AccessEventRow {
    let r = &e.record;
    AccessEventRow {
        id: r.id.to_string(),
        time: bq_timestamp(r.at),
        kind: r.kind.as_str(),
        actor: r.actor.id(),
        subject: r.subject.clone(),
        resource: r.resource.as_ref().map(|x| x.as_str().to_string()),
        request_id: r.request_id.map(|x| x.to_string()),
        grant_id: r.grant_id.map(|x| x.to_string()),
        details: r.details.to_string(),
        seq: e.seq,
        prev_hash: e.prev_hash.clone(),
        hash: e.hash.clone(),
    }
}

/// The `access_grants` row for an `access_granted` event; `None` for every other kind.
///
/// Each value comes from the grant first, then the request, then the event's details, so a row
/// is still written (with what is known) when the engine could not attach the grant.
/// `project_id` and `service_account_email` come from the provider handle (`project_id` or
/// `project`, `service_account_email`): only the GCP provider puts them there, so they are empty
/// for other providers, as the document's schema expects.
pub fn grant_row(item: &ExportItem) -> Option<AccessGrantRow> {
    let e = &item.event.record;
    if e.kind != AuditKind::AccessGranted {
        return None;
    }
    let details = &e.details;
    let subject = item
        .grant
        .as_ref()
        .map(|g| &g.subject)
        .or(item.request.as_ref().map(|r| &r.subject));
    let handle = item.grant.as_ref().map(|g| &g.provider_handle);
    // With the grant at hand its handle is the only source: a non-GCP event's details must not
    // lend a `project` to the row. Without it, fall back to what the event recorded.
    let sources: Vec<&Value> = match handle {
        Some(h) => vec![h],
        None => [details.get("handle"), Some(details)]
            .into_iter()
            .flatten()
            .collect(),
    };
    let from_handle = |keys: &[&str]| -> Option<String> {
        sources
            .iter()
            .find_map(|h| keys.iter().find_map(|k| non_empty_str(h.get(k))))
    };

    let user_email = subject
        .and_then(|s| s.email.as_ref().map(|m| m.as_str().to_string()))
        .or_else(|| non_empty_str(details.get("user_email")))
        .or_else(|| non_empty_str(details.get("email")))
        .unwrap_or_default();
    let slack_user_id = subject
        .map(|s| s.user_id.clone())
        .or_else(|| {
            e.subject
                .as_deref()
                .and_then(|s| s.rsplit('/').next())
                .map(str::to_string)
        })
        .unwrap_or_default();
    let justification = item
        .request
        .as_ref()
        .map(|r| r.justification.as_str().to_string())
        .or_else(|| non_empty_str(details.get("justification")))
        .unwrap_or_default();
    let resource = item
        .grant
        .as_ref()
        .map(|g| g.resource.as_str().to_string())
        .or_else(|| {
            item.request
                .as_ref()
                .map(|r| r.resource.as_str().to_string())
        })
        .or_else(|| e.resource.as_ref().map(|r| r.as_str().to_string()))
        .unwrap_or_default();
    let expires_at = item.grant.as_ref().map(|g| g.expires_at).or_else(|| {
        details
            .get("expires_at")
            .and_then(Value::as_str)
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.with_timezone(&Utc))
    });

    Some(AccessGrantRow {
        timestamp: bq_timestamp(e.at),
        command: GRANT_COMMAND,
        user_email,
        slack_user_id,
        justification,
        resource,
        project_id: from_handle(&["project_id", "project"]).unwrap_or_default(),
        expires_at: expires_at.map(bq_timestamp),
        service_account_email: from_handle(&["service_account_email"]).unwrap_or_default(),
    })
}

fn non_empty_str(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// `insertId` of an event's `access_events` row: the event id, so a retried batch is recognised.
pub fn event_insert_id(e: &AuditEvent) -> String {
    e.record.id.to_string()
}

/// `insertId` of an event's `access_grants` row (its own id space, but kept distinct anyway so
/// the two rows of one event can never be mistaken for each other in logs).
pub fn grant_insert_id(e: &AuditEvent) -> String {
    format!("{}-grant", e.record.id)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use access_core::audit::{AuditRecord, GENESIS_HASH, seal};
    use access_core::request::Actor;
    use chrono::TimeZone;
    use serde_json::json;

    use super::*;

    fn item(kind: AuditKind, details: Value) -> ExportItem {
        let at = Utc.with_ymd_and_hms(2026, 11, 2, 9, 30, 0).unwrap();
        let rec = AuditRecord::new(kind, Actor::System, at)
            .subject("T1", "U42")
            .details(details);
        ExportItem {
            event: seal(rec, 0, GENESIS_HASH),
            request: None,
            grant: None,
        }
    }

    #[test]
    fn only_grants_make_grant_rows() {
        for kind in AuditKind::ALL {
            assert_eq!(
                grant_row(&item(kind, json!({}))).is_some(),
                kind == AuditKind::AccessGranted,
                "{kind}"
            );
        }
    }

    #[test]
    fn without_the_grant_the_details_fill_in() {
        let row = grant_row(&item(
            AuditKind::AccessGranted,
            json!({
                "user_email": "a@example.com",
                "justification": "debug",
                "expires_at": "2026-11-09T09:30:00+00:00",
                "handle": {"project_id": "p1", "service_account_email": "sa@p1.iam.gserviceaccount.com"},
            }),
        ))
        .unwrap();
        assert_eq!(row.timestamp, "2026-11-02T09:30:00.000000Z");
        assert_eq!(row.command, "request");
        assert_eq!(row.user_email, "a@example.com");
        assert_eq!(row.slack_user_id, "U42");
        assert_eq!(row.justification, "debug");
        assert_eq!(row.project_id, "p1");
        assert_eq!(row.service_account_email, "sa@p1.iam.gserviceaccount.com");
        assert_eq!(
            row.expires_at.as_deref(),
            Some("2026-11-09T09:30:00.000000Z")
        );

        let bare = grant_row(&item(AuditKind::AccessGranted, json!({}))).unwrap();
        assert_eq!(
            (
                bare.project_id.as_str(),
                bare.service_account_email.as_str()
            ),
            ("", "")
        );
        assert_eq!(bare.expires_at, None);
    }

    #[test]
    fn event_rows_carry_the_chain() {
        let it = item(AuditKind::AccessRevoked, json!({"self_revocation": true}));
        let row = event_row(&it.event);
        assert_eq!(row.kind, "access_revoked");
        assert_eq!(row.actor, "system");
        assert_eq!(row.subject.as_deref(), Some("T1/U42"));
        assert_eq!(row.details, r#"{"self_revocation":true}"#);
        assert_eq!(row.seq, 1);
        assert_eq!(row.prev_hash, GENESIS_HASH);
        assert_eq!(row.hash, it.event.hash);
        assert_eq!(event_insert_id(&it.event), it.event.record.id.to_string());
        assert_eq!(
            grant_insert_id(&it.event),
            format!("{}-grant", it.event.record.id)
        );
    }
}
