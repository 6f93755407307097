//! `gatehouse-cleanup audit verify --against-export` (its library entry point) against the fake
//! BigQuery: the local chain is exported with signed checkpoints, then tampered with by raw SQL
//! the way a database administrator could; the comparison names the first divergence.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use access_core::audit::{AuditKeyring, AuditKind, AuditRecord, TamperKind};
use access_core::ports::{AuditFilter, AuditLog, AuditSink, ChangeSet, ExportItem, RequestStore};
use access_core::request::Actor;
use audit_bigquery::sink::CheckpointPolicy;
use audit_bigquery::{BigQueryConfig, BigQuerySink};
use chrono::Utc;
use gatehouse_runtime::audit_verify::verify_against_export;
use store_sqlx::{DbPool, SqlStore};
use testkit::bigquery::FakeBigQuery;
use testkit::db::backends;

const PROJECT: &str = "gatehouse-audit";
const DATASET: &str = "ci_chat_bot";
const TOKEN: &str = "ya29.fake";

async fn raw(store: &SqlStore, sql: &str) {
    match store.pool() {
        DbPool::Sqlite(p) => {
            sqlx::query(sql).execute(p).await.unwrap();
        }
        DbPool::Postgres(p) => {
            sqlx::query(sql).execute(p).await.unwrap();
        }
    }
}

fn keys() -> AuditKeyring {
    AuditKeyring::from_keys(&[[3u8; 32]]).unwrap()
}

/// A keyed store with 8 events, all exported (in batches of 3, checkpoint every 3 events).
async fn exported() -> Vec<(testkit::db::TestDb, SqlStore, FakeBigQuery, BigQuerySink)> {
    let mut out = Vec::new();
    for db in backends().await {
        let store = SqlStore::connect(&db.url)
            .await
            .unwrap()
            .with_audit_keys(Some(keys()));
        for i in 0..8 {
            let r = AuditRecord::new(AuditKind::AccessRequested, Actor::System, Utc::now())
                .details(serde_json::json!({"i": i}));
            store
                .commit(ChangeSet {
                    audit: vec![r],
                    ..Default::default()
                })
                .await
                .unwrap();
        }
        let bq = FakeBigQuery::start_with_token(TOKEN).await;
        bq.create_dataset(PROJECT, DATASET);
        let sink = BigQuerySink::new(
            BigQueryConfig::new(PROJECT).with_base_url(bq.base_url()),
            Arc::new(gcp_auth::StaticToken(TOKEN.into())),
        )
        .unwrap()
        .with_checkpoints(CheckpointPolicy {
            keys: Some(keys()),
            every_events: 3,
            every: std::time::Duration::from_secs(3600),
        });
        sink.create_tables().await.unwrap();
        let events = store
            .audit_events(&AuditFilter {
                limit: Some(100),
                ..Default::default()
            })
            .await
            .unwrap();
        for chunk in events.chunks(3) {
            let batch: Vec<ExportItem> = chunk
                .iter()
                .map(|e| ExportItem {
                    event: e.clone(),
                    request: None,
                    grant: None,
                })
                .collect();
            sink.export(&batch).await.unwrap();
        }
        assert!(bq.row_count(PROJECT, DATASET, "access_audit_checkpoints") >= 2);
        let c = verify_against_export(&store, &sink).await.unwrap();
        assert!(c.ok, "{}: {c:?}", db.kind);
        assert_eq!((c.local_events, c.exported_events), (8, 8), "{}", db.kind);
        assert!(c.checkpoints >= 2, "{}: {c:?}", db.kind);
        out.push((db, store, bq, sink));
    }
    out
}

async fn first(store: &SqlStore, sink: &BigQuerySink) -> (TamperKind, i64) {
    let c = verify_against_export(store, sink).await.unwrap();
    assert!(!c.ok, "{c:?}");
    let d = c.first_divergence.unwrap();
    (d.kind, d.seq)
}

#[tokio::test]
async fn against_export_names_each_divergence() {
    // Edited: even with the hash "recomputed" (here: copied from another row), the export differs.
    for (db, store, _bq, sink) in exported().await {
        let kind = db.kind;
        raw(&store, "UPDATE audit_events SET hash = (SELECT hash FROM audit_events WHERE seq = 2) WHERE seq = 5").await;
        assert_eq!(
            first(&store, &sink).await,
            (TamperKind::Edited, 5),
            "{kind}"
        );
    }
    for (db, store, _bq, sink) in exported().await {
        let kind = db.kind;
        raw(&store, "DELETE FROM audit_events WHERE seq = 4").await;
        assert_eq!(
            first(&store, &sink).await,
            (TamperKind::Deleted, 4),
            "{kind}"
        );
    }
    for (db, store, _bq, sink) in exported().await {
        let kind = db.kind;
        // Deleted and renumbered.
        raw(&store, "DELETE FROM audit_events WHERE seq = 4").await;
        raw(
            &store,
            "UPDATE audit_events SET seq = seq + 1000 WHERE seq > 4",
        )
        .await;
        raw(
            &store,
            "UPDATE audit_events SET seq = seq - 1001 WHERE seq > 1000",
        )
        .await;
        assert_eq!(
            first(&store, &sink).await,
            (TamperKind::Deleted, 4),
            "{kind}"
        );
    }
    for (db, store, _bq, sink) in exported().await {
        let kind = db.kind;
        raw(
            &store,
            "UPDATE audit_events SET seq = seq + 1000 WHERE seq >= 5",
        )
        .await;
        raw(
            &store,
            "UPDATE audit_events SET seq = seq - 999 WHERE seq >= 1000",
        )
        .await;
        raw(
            &store,
            "INSERT INTO audit_events (seq, id, at, kind, actor, actor_id, subject, resource, request_id, grant_id, details, prev_hash, hash) \
             SELECT 5, '11111111-2222-4333-8444-555555555555', at, kind, actor, actor_id, subject, resource, request_id, grant_id, \
             details, hash, hash FROM audit_events WHERE seq = 4",
        )
        .await;
        assert_eq!(
            first(&store, &sink).await,
            (TamperKind::Inserted, 5),
            "{kind}"
        );
    }
    for (db, store, _bq, sink) in exported().await {
        let kind = db.kind;
        raw(&store, "UPDATE audit_events SET seq = -4 WHERE seq = 4").await;
        raw(&store, "UPDATE audit_events SET seq = 4 WHERE seq = 5").await;
        raw(&store, "UPDATE audit_events SET seq = 5 WHERE seq = -4").await;
        assert_eq!(
            first(&store, &sink).await,
            (TamperKind::Reordered, 4),
            "{kind}"
        );
    }
    for (db, store, _bq, sink) in exported().await {
        let kind = db.kind;
        // Truncated, head moved back: invisible to a local walk without the key's help, not to
        // the export.
        raw(&store, "DELETE FROM audit_events WHERE seq >= 7").await;
        assert_eq!(
            first(&store, &sink).await,
            (TamperKind::Truncated, 7),
            "{kind}"
        );
    }
}
