//! The JSON a webhook receives. The fields are this crate's own (not the store's rows), so the
//! wire format changes only deliberately; new fields may be added, none removed or renamed.

use access_core::audit::AuditEvent;
use access_core::request::Actor;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

/// The version of the `gatehouse` envelope.
pub const FORMAT_VERSION: u32 = 1;

/// One audit event as sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookEvent {
    /// Stable across retries and redeliveries: receivers deduplicate by it.
    pub id: String,
    /// Position in the audit chain; strictly increasing within a webhook's deliveries.
    pub seq: i64,
    /// When it happened (RFC 3339, UTC, microseconds).
    pub at: String,
    /// `access_requested`, `access_granted`, `webhook_disabled`, … (docs/audit.md).
    pub kind: String,
    pub actor: Actor,
    /// `team/user` of the person the event is about.
    pub subject: Option<String>,
    pub resource: Option<String>,
    pub request_id: Option<String>,
    pub grant_id: Option<String>,
    pub details: serde_json::Value,
    /// The chain link: `hash` of this event, `prev_hash` of the one before (docs/audit.md).
    pub hash: String,
    pub prev_hash: String,
}

impl From<&AuditEvent> for WebhookEvent {
    fn from(e: &AuditEvent) -> Self {
        let r = &e.record;
        Self {
            id: r.id.to_string(),
            seq: e.seq,
            at: r.at.to_rfc3339_opts(SecondsFormat::Micros, true),
            kind: r.kind.as_str().to_string(),
            actor: r.actor.clone(),
            subject: r.subject.clone(),
            resource: r.resource.as_ref().map(|x| x.as_str().to_string()),
            request_id: r.request_id.map(|x| x.to_string()),
            grant_id: r.grant_id.map(|x| x.to_string()),
            details: r.details.clone(),
            hash: e.hash.clone(),
            prev_hash: e.prev_hash.clone(),
        }
    }
}

/// The body of a `format = "gatehouse"` delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub version: u32,
    /// The webhook's configured id (also in `X-Gatehouse-Webhook-Id`).
    pub webhook: String,
    /// Fresh per attempt (also in `X-Gatehouse-Delivery-Id`).
    pub delivery_id: String,
    pub sent_at: String,
    /// In chain order.
    pub events: Vec<WebhookEvent>,
}

impl Envelope {
    pub fn new(
        webhook: &str,
        delivery_id: &str,
        sent_at: DateTime<Utc>,
        events: &[AuditEvent],
    ) -> Self {
        Self {
            version: FORMAT_VERSION,
            webhook: webhook.to_string(),
            delivery_id: delivery_id.to_string(),
            sent_at: sent_at.to_rfc3339_opts(SecondsFormat::Secs, true),
            events: events.iter().map(WebhookEvent::from).collect(),
        }
    }
}

/// One event of a `format = "splunk_hec"` delivery: Splunk's HTTP Event Collector takes several
/// such objects concatenated in one request to `/services/collector/event`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HecEvent {
    /// Epoch seconds with a fraction: Splunk's `_time`.
    pub time: f64,
    pub source: String,
    pub sourcetype: String,
    pub event: WebhookEvent,
}

/// The source and sourcetype Gatehouse events carry in Splunk.
pub const HEC_SOURCE: &str = "gatehouse";
pub const HEC_SOURCETYPE: &str = "gatehouse:audit";

/// The HEC body: one JSON object per event, newline-separated (HEC's batch form).
pub fn hec_body(events: &[AuditEvent]) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = Vec::new();
    for e in events {
        let hec = HecEvent {
            time: e.record.at.timestamp_micros() as f64 / 1_000_000.0,
            source: HEC_SOURCE.to_string(),
            sourcetype: HEC_SOURCETYPE.to_string(),
            event: WebhookEvent::from(e),
        };
        serde_json::to_writer(&mut out, &hec)?;
        out.push(b'\n');
    }
    Ok(out)
}
