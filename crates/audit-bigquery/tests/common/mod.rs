//! Scripted audit events for the tests and the benchmark: sealed into a real hash chain, with the
//! request and grant an exporter would attach.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::sync::Arc;

use access_core::audit::{AuditEvent, AuditKind, AuditRecord, GENESIS_HASH, seal};
use access_core::grant::{Grant, GrantStatus};
use access_core::ports::ExportItem;
use access_core::request::{AccessRequest, Actor, RequestKind, RequestStatus};
use access_core::{AccessDuration, Email, GrantId, Justification, RequestId, ResourceId, Subject};
use audit_bigquery::{BigQueryConfig, BigQuerySink};
use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::json;
use testkit::bigquery::FakeBigQuery;

pub const PROJECT: &str = "gatehouse-audit";
pub const DATASET: &str = "ci_chat_bot";
pub const TOKEN: &str = "ya29.fake-token-for-tests";

/// The fake with the dataset, the sink pointed at it, the tables created by the sink itself.
pub async fn setup() -> (FakeBigQuery, BigQuerySink) {
    let bq = FakeBigQuery::start_with_token(TOKEN).await;
    bq.create_dataset(PROJECT, DATASET);
    let sink = sink_for(&bq, |c| c);
    sink.create_tables().await.expect("create tables");
    (bq, sink)
}

pub fn sink_for(
    bq: &FakeBigQuery,
    tweak: impl FnOnce(BigQueryConfig) -> BigQueryConfig,
) -> BigQuerySink {
    let config = tweak(BigQueryConfig::new(PROJECT).with_base_url(bq.base_url()));
    BigQuerySink::new(config, Arc::new(gcp_auth::StaticToken(TOKEN.into()))).expect("sink")
}

pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 2, 9, 30, 0).unwrap() + Duration::microseconds(123_456)
}

/// Appends events to one hash chain, as the store would.
#[derive(Debug)]
pub struct Chain {
    seq: i64,
    hash: String,
}

impl Default for Chain {
    fn default() -> Self {
        Self {
            seq: 0,
            hash: GENESIS_HASH.to_string(),
        }
    }
}

impl Chain {
    pub fn seal(&mut self, record: AuditRecord) -> AuditEvent {
        let e = seal(record, self.seq, &self.hash);
        self.seq = e.seq;
        self.hash = e.hash.clone();
        e
    }
}

pub fn person(n: usize) -> Subject {
    Subject {
        team_id: "T0001".into(),
        user_id: format!("U{n:07}"),
        email: Some(Email::parse(&format!("person{n}@example.com")).unwrap()),
        name: format!("Person {n}"),
    }
}

pub fn request_for(
    subject: &Subject,
    resource: &str,
    justification: &str,
    at: DateTime<Utc>,
) -> AccessRequest {
    AccessRequest {
        id: RequestId::new(),
        subject: subject.clone(),
        resource: ResourceId::parse(resource).unwrap(),
        kind: RequestKind::New,
        duration: AccessDuration::from_secs(7 * 24 * 3600).unwrap(),
        justification: Justification::parse(justification).unwrap(),
        status: RequestStatus::Active,
        created_at: at,
        updated_at: at,
        pending_until: None,
        grant_id: None,
        decided_by: None,
        failure: None,
        version: 1,
    }
}

pub fn grant_for(
    req: &AccessRequest,
    handle: serde_json::Value,
    at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) -> Grant {
    Grant {
        id: GrantId::new(),
        subject: req.subject.clone(),
        resource: req.resource.clone(),
        status: GrantStatus::Active,
        provider_handle: handle,
        created_at: at,
        granted_at: Some(at),
        expires_at,
        ended_at: None,
        request_id: req.id,
        revoked_by: None,
        version: 1,
        provider_intent: serde_json::Value::Null,
        takeback_pending: false,
    }
}

/// A GCP service-account handle, as provider-gcp-iam keeps it.
pub fn gcp_handle(n: usize) -> serde_json::Value {
    json!({
        "project": "openshift-crt-ephemeral-access",
        "service_account_email": format!("person{n}-1762075800@openshift-crt-ephemeral-access.iam.gserviceaccount.com"),
        "role": "projects/openshift-crt-ephemeral-access/roles/chat_bot_user",
    })
}

/// A Cloud Connexa handle: no project, no service account.
pub fn connexa_handle() -> serde_json::Value {
    json!({"user_id": "usr-123", "group_id": "grp-9", "previous_secondary_group_ids": []})
}

fn record(kind: AuditKind, actor: Actor, at: DateTime<Utc>, req: &AccessRequest) -> AuditRecord {
    AuditRecord::new(kind, actor, at)
        .subject(&req.subject.team_id, &req.subject.user_id)
        .resource(&req.resource)
        .request(req.id)
}

/// A full lifecycle: requested, approval recorded, approved, provider event, granted, revoked.
/// The granted event carries the grant and request, as the exporter attaches them.
pub fn lifecycle(
    chain: &mut Chain,
    n: usize,
    resource: &str,
    handle: serde_json::Value,
    at: DateTime<Utc>,
) -> Vec<ExportItem> {
    let subject = person(n);
    let req = request_for(
        &subject,
        resource,
        "Need to debug CI infrastructure issues",
        at,
    );
    let approver = Actor::User {
        team_id: "T0001".into(),
        user_id: "UAPPROVER".into(),
        name: "Approver".into(),
    };
    let expires = at + Duration::days(7);
    let grant = grant_for(&req, handle.clone(), at + Duration::seconds(5), expires);
    let mut out = Vec::new();
    let mut push = |rec: AuditRecord, with_grant: bool| {
        let event = chain.seal(rec);
        out.push(ExportItem {
            event,
            request: Some(req.clone()),
            grant: with_grant.then(|| grant.clone()),
        });
    };
    push(
        record(
            AuditKind::AccessRequested,
            Actor::from_subject(&subject),
            at,
            &req,
        )
        .details(json!({"justification": req.justification.as_str(), "duration_secs": 604800})),
        false,
    );
    push(
        record(
            AuditKind::ApprovalRecorded,
            approver.clone(),
            at + Duration::seconds(2),
            &req,
        )
        .details(json!({"vote": "approve"})),
        false,
    );
    push(
        record(
            AuditKind::AccessApproved,
            approver,
            at + Duration::seconds(3),
            &req,
        ),
        false,
    );
    push(
        record(
            AuditKind::ProviderEvent,
            Actor::System,
            at + Duration::seconds(4),
            &req,
        )
        .grant(grant.id)
        .details(json!({"event": "service_account_created", "handle": handle})),
        true,
    );
    push(
        record(
            AuditKind::AccessGranted,
            Actor::System,
            at + Duration::seconds(5),
            &req,
        )
        .grant(grant.id)
        .details(json!({"expires_at": expires.to_rfc3339()})),
        true,
    );
    push(
        record(
            AuditKind::AccessRevoked,
            Actor::from_subject(&subject),
            at + Duration::hours(2),
            &req,
        )
        .grant(grant.id)
        .details(json!({"self_revocation": true})),
        true,
    );
    out
}

/// `n` events in one chain: a GCP or Cloud Connexa lifecycle every six events.
pub fn many_events(n: usize) -> Vec<ExportItem> {
    let mut chain = Chain::default();
    let mut out = Vec::with_capacity(n + 6);
    let mut i = 0;
    while out.len() < n {
        let at = t0() + Duration::minutes(i as i64);
        let (resource, handle) = if i % 2 == 0 {
            ("gcp-access", gcp_handle(i))
        } else {
            ("dev-network", connexa_handle())
        };
        out.extend(lifecycle(&mut chain, i, resource, handle, at));
        i += 1;
    }
    out.truncate(n);
    out
}

pub fn granted_count(items: &[ExportItem]) -> usize {
    items
        .iter()
        .filter(|i| i.event.record.kind == AuditKind::AccessGranted)
        .count()
}

/// Commits `items` to `store` as the engine would have: their requests and grants, the events
/// (re-sealed into the store's own chain) and one pending `export_audit` job per event, due at
/// `due`; `per_commit` events per change set.
pub async fn seed_backlog(
    store: &dyn access_core::ports::Store,
    items: &[ExportItem],
    due: DateTime<Utc>,
    per_commit: usize,
) {
    use access_core::jobs::{JobKind, NewJob};
    use access_core::ports::{ChangeSet, GrantWrite, RequestWrite};
    let mut seen_req = std::collections::HashSet::new();
    let mut seen_grant = std::collections::HashSet::new();
    for chunk in items.chunks(per_commit.max(1)) {
        let mut cs = ChangeSet::default();
        for item in chunk {
            if let Some(r) = &item.request
                && seen_req.insert(r.id)
            {
                cs.requests.push(RequestWrite::Insert(r.clone()));
            }
            if let Some(g) = &item.grant
                && seen_grant.insert(g.id)
            {
                cs.grants.push(GrantWrite::Insert(g.clone()));
            }
            cs.audit.push(item.event.record.clone());
            cs.jobs.push(NewJob::at(
                JobKind::ExportAudit {
                    event_id: item.event.record.id,
                },
                due,
            ));
        }
        store.commit(cs).await.expect("seed the backlog");
    }
}
