//! Creates the two tables and exports one access lifecycle (request → approval → grant →
//! revocation) to BigQuery.
//!
//! Against the fake (default): `cargo run -p audit-bigquery --example export_demo`.
//! Against a real project: `BIGQUERY_PROJECT=my-proj GCP_ACCESS_TOKEN=$(gcloud auth
//! print-access-token) cargo run -p audit-bigquery --example export_demo` (the dataset
//! `ci_chat_bot`, or `BIGQUERY_DATASET`, must exist; in the server the token comes from the
//! service-account key through `gcp-auth`).

use std::sync::Arc;

use access_core::audit::{AuditEvent, AuditKind, AuditRecord, GENESIS_HASH, seal};
use access_core::grant::{Grant, GrantStatus};
use access_core::ports::{AuditSink, ExportItem};
use access_core::request::{AccessRequest, Actor, RequestKind, RequestStatus};
use access_core::{AccessDuration, Email, GrantId, Justification, RequestId, ResourceId, Subject};
use audit_bigquery::{BigQueryConfig, BigQuerySink};
use chrono::{Duration, Utc};
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // With a real project configured, talk to it; otherwise start the fake from testkit.
    let (config, token, fake) = if std::env::var("BIGQUERY_PROJECT").is_ok() {
        let token = std::env::var("GCP_ACCESS_TOKEN").map_err(|_| "set GCP_ACCESS_TOKEN")?;
        (
            BigQueryConfig::from_lookup(|k| std::env::var(k).ok())?,
            token,
            None,
        )
    } else {
        let bq = testkit::bigquery::FakeBigQuery::start().await;
        bq.create_dataset("demo-project", "ci_chat_bot");
        let config = BigQueryConfig::new("demo-project").with_base_url(bq.base_url());
        (config, "demo-token".to_string(), Some(bq))
    };
    let (project, dataset) = (config.project.clone(), config.dataset.clone());
    let sink = BigQuerySink::new(config, Arc::new(gcp_auth::StaticToken(token)))?;

    for t in sink.create_tables().await? {
        println!(
            "table {}: {:?} (missing columns: {:?})",
            t.table, t.outcome, t.missing_columns
        );
    }

    let batch = one_lifecycle()?;
    let report = sink.export(&batch).await?;
    println!(
        "exported {} events, {} refused",
        batch.len(),
        report.rejected.len()
    );
    for (id, why) in &report.rejected {
        println!("  refused {id}: {why}");
    }

    if let Some(bq) = fake {
        for table in ["access_events", "access_grants"] {
            println!("\n{project}.{dataset}.{table}:");
            for row in bq.rows(&project, &dataset, table) {
                println!("  {}", serde_json::Value::Object(row));
            }
        }
    }
    Ok(())
}

/// What the store and the engine would hand the export worker for one GCP grant.
fn one_lifecycle() -> Result<Vec<ExportItem>, Box<dyn std::error::Error>> {
    let now = Utc::now();
    let subject = Subject {
        team_id: "T0001".into(),
        user_id: "U0123456".into(),
        email: Email::parse("jane.doe@example.com").ok(),
        name: "Jane Doe".into(),
    };
    let resource = ResourceId::parse("gcp-access")?;
    let request = AccessRequest {
        id: RequestId::new(),
        subject: subject.clone(),
        resource: resource.clone(),
        kind: RequestKind::New,
        duration: AccessDuration::from_secs(7 * 24 * 3600)?,
        justification: Justification::parse("Need to debug CI infrastructure issues")?,
        status: RequestStatus::Active,
        created_at: now,
        updated_at: now,
        pending_until: None,
        grant_id: None,
        decided_by: None,
        failure: None,
        version: 1,
    };
    let grant = Grant {
        id: GrantId::new(),
        subject: subject.clone(),
        resource: resource.clone(),
        status: GrantStatus::Active,
        provider_handle: json!({
            "project": "openshift-crt-ephemeral-access",
            "service_account_email": "jane-doe-1762075800@openshift-crt-ephemeral-access.iam.gserviceaccount.com",
        }),
        created_at: now,
        granted_at: Some(now),
        expires_at: now + Duration::days(7),
        ended_at: None,
        request_id: request.id,
        revoked_by: None,
        version: 1,
        provider_intent: serde_json::Value::Null,
        takeback_pending: false,
    };

    let steps = [
        (
            AuditKind::AccessRequested,
            Actor::from_subject(&subject),
            false,
        ),
        (AuditKind::AccessApproved, Actor::System, false),
        (AuditKind::AccessGranted, Actor::System, true),
        (
            AuditKind::AccessRevoked,
            Actor::from_subject(&subject),
            true,
        ),
    ];
    let (mut seq, mut hash) = (0, GENESIS_HASH.to_string());
    Ok(steps
        .into_iter()
        .map(|(kind, actor, with_grant)| {
            let mut record = AuditRecord::new(kind, actor, now)
                .subject(&subject.team_id, &subject.user_id)
                .resource(&resource)
                .request(request.id);
            if with_grant {
                record = record.grant(grant.id);
            }
            let event: AuditEvent = seal(record, seq, &hash);
            (seq, hash) = (event.seq, event.hash.clone());
            ExportItem {
                event,
                request: Some(request.clone()),
                grant: with_grant.then(|| grant.clone()),
            }
        })
        .collect())
}
