//! Health, readiness and Prometheus metrics.
//!
//! Gauges that describe shared state (requests by status, active grants, jobs due and dead) are
//! read from the database at scrape time, so every replica reports the same truth; counters and
//! the revocation-lag histogram are recorded by this process as it works.

use std::sync::OnceLock;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::AppState;

#[derive(Debug, Clone)]
pub struct Metrics {
    handle: Option<PrometheusHandle>,
}

impl Metrics {
    /// The process-wide Prometheus recorder (installed once; tests build many apps per process).
    pub fn global() -> Self {
        static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
        let handle = HANDLE
            .get_or_init(|| {
                let builder = PrometheusBuilder::new().set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full(
                        "gatehouse_revocation_lag_seconds".into(),
                    ),
                    &[0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0],
                );
                match builder.and_then(|b| b.install_recorder()) {
                    Ok(h) => Some(h),
                    Err(e) => {
                        tracing::warn!(error = %e, "could not install the metrics recorder");
                        None
                    }
                }
            })
            .clone();
        Self { handle }
    }
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_page))
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(s): State<AppState>) -> Response {
    let mut problems: Vec<String> = Vec::new();
    // The scheduler must have looked at the queue within three idle periods: a stuck or dead
    // scheduler means nothing is revoked, whatever the database says.
    if let Some(why) = s.app.waker.stalled(s.app.max_idle) {
        problems.push(why);
    }
    if let Err(e) = s.app.engine.ready().await {
        problems.push(e.to_string());
    }
    let (providers, org_data) = dependency_readiness(&s.app, &mut problems);
    let mut body = serde_json::json!({
        "ready": problems.is_empty(),
        "providers": providers,
        "org_data": org_data,
    });
    if problems.is_empty() {
        (StatusCode::OK, Json(body)).into_response()
    } else {
        body["message"] = serde_json::Value::String(problems.join("; "));
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    }
}

/// The providers in use (with the resources that use them; their settings were checked at
/// start) and the org-data index. An index that has never loaded makes the server not ready:
/// every `org = …` rule would refuse. A loaded index whose latest reload failed keeps serving
/// the last good copy and stays ready (the failure is reported).
fn dependency_readiness(
    app: &gatehouse_runtime::App,
    problems: &mut Vec<String>,
) -> (serde_json::Value, serde_json::Value) {
    let mut providers = serde_json::Map::new();
    for r in &app.config.resources {
        let entry = providers
            .entry(r.provider.to_string())
            .or_insert_with(|| serde_json::json!({"resources": []}));
        if let Some(list) = entry["resources"].as_array_mut() {
            list.push(serde_json::Value::String(r.id.clone()));
        }
    }
    let org = app
        .adapters
        .directory
        .as_ref()
        .and_then(|(dir, _)| dir.org_data().cloned());
    let org_data = match org {
        None => serde_json::json!({"configured": false}),
        Some(org) => {
            let st = org.status();
            if !st.loaded {
                problems.push(format!(
                    "org data index from {} has never loaded: {}",
                    st.source,
                    st.last_error.as_deref().unwrap_or("no load attempted yet")
                ));
            }
            serde_json::json!({
                "configured": true,
                "source": st.source,
                "loaded": st.loaded,
                "people": st.people,
                "failures": st.failures,
                "last_error": st.last_error,
            })
        }
    };
    (serde_json::Value::Object(providers), org_data)
}

async fn metrics_page(State(s): State<AppState>) -> Response {
    // Read before this page's own queries: statements and commits per operation (the load
    // benchmark's stmt/cmd) are differences of these.
    let sent = s.app.store.stats();
    metrics::counter!("gatehouse_store_statements_total").absolute(sent.statements);
    metrics::counter!("gatehouse_store_commits_total").absolute(sent.commits);
    metrics::counter!("gatehouse_store_round_trips_total").absolute(s.app.store.round_trips());
    let engine = &s.app.engine;
    match engine.request_counts().await {
        Ok(counts) => {
            for status in access_core::RequestStatus::ALL {
                let n = counts
                    .iter()
                    .find(|(st, _)| *st == status)
                    .map(|(_, n)| *n)
                    .unwrap_or(0);
                metrics::gauge!("gatehouse_requests", "status" => status.as_str()).set(n as f64);
            }
        }
        Err(e) => tracing::warn!(error = %e, "metrics: request counts unavailable"),
    }
    match engine.grant_counts().await {
        Ok(counts) => {
            for status in access_core::GrantStatus::ALL {
                let n = counts
                    .iter()
                    .find(|(st, _)| *st == status)
                    .map(|(_, n)| *n)
                    .unwrap_or(0);
                metrics::gauge!("gatehouse_grants", "status" => status.as_str()).set(n as f64);
                if status == access_core::GrantStatus::Active {
                    metrics::gauge!("gatehouse_grants_active").set(n as f64);
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "metrics: grant counts unavailable"),
    }
    match engine.job_stats(None).await {
        Ok(j) => {
            metrics::gauge!("gatehouse_jobs_due").set(j.due as f64);
            metrics::gauge!("gatehouse_jobs_pending").set(j.pending as f64);
            metrics::gauge!("gatehouse_jobs_running").set(j.running as f64);
            metrics::gauge!("gatehouse_jobs_retrying").set(j.retrying as f64);
            metrics::gauge!("gatehouse_jobs_dead").set(j.dead as f64);
            metrics::gauge!("gatehouse_jobs_oldest_due_seconds")
                .set(j.oldest_due_secs.unwrap_or(0) as f64);
        }
        Err(e) => tracing::warn!(error = %e, "metrics: job stats unavailable"),
    }
    // The audit export backlog: events written locally, not yet in the audit sink.
    match engine.job_stats(Some("export_audit")).await {
        Ok(j) => {
            metrics::gauge!("gatehouse_audit_export_backlog").set((j.pending + j.running) as f64);
            metrics::gauge!("gatehouse_audit_export_backlog_oldest_seconds")
                .set(j.oldest_pending_secs.unwrap_or(0) as f64);
            metrics::gauge!("gatehouse_audit_export_dead").set(j.dead as f64);
        }
        Err(e) => tracing::warn!(error = %e, "metrics: export backlog unavailable"),
    }
    crate::webhooks_api::refresh_metrics(&s).await;
    // Break-glass grants no approver has reviewed yet: alert on this staying above zero.
    match engine.emergency_unreviewed_count().await {
        Ok(n) => metrics::gauge!("gatehouse_emergency_grants_unreviewed").set(n as f64),
        Err(e) => tracing::warn!(error = %e, "metrics: unreviewed emergency grants unavailable"),
    }
    match &s.metrics.handle {
        Some(h) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            h.render(),
        )
            .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics recorder not installed",
        )
            .into_response(),
    }
}
