//! `gatehouse-cleanup audit verify --against-export`: the local chain against what the BigQuery
//! export holds (events and signed checkpoints), which a database administrator cannot rewrite.

use access_core::audit::{ChainLink, ExportComparer, ExportComparison};
use access_core::ports::{AuditFilter, AuditLog};
use audit_bigquery::BigQuerySink;
use store_sqlx::SqlStore;

/// Why the comparison could not run (as opposed to finding a divergence).
#[derive(Debug, thiserror::Error)]
pub enum AgainstExportError {
    #[error("reading the export: {0}")]
    Export(#[from] audit_bigquery::BigQueryError),
    #[error("reading the local chain: {0}")]
    Store(#[from] access_core::ports::StoreError),
}

/// Streams the local chain in pages against the export and names the first divergence.
pub async fn verify_against_export(
    store: &SqlStore,
    sink: &BigQuerySink,
) -> Result<ExportComparison, AgainstExportError> {
    let (links, checkpoints) = sink.read_export().await?;
    let mut cmp = ExportComparer::new(links, checkpoints, store.audit_keys());
    let mut after = 0i64;
    'pages: loop {
        let page = store
            .audit_events(&AuditFilter {
                after_seq: Some(after),
                limit: Some(1000),
                ..Default::default()
            })
            .await?;
        for e in &page {
            after = e.seq;
            if !cmp.push(&ChainLink::from(e)) {
                break 'pages;
            }
        }
        if page.len() < 1000 {
            break;
        }
    }
    Ok(cmp.finish())
}
