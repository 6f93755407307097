//! Connects to a Gatehouse database and prints what an operator checks first: readiness, the job
//! queue, request and grant counts, dead jobs, and whether the audit chain is intact.
//!
//! ```text
//! DATABASE_URL=sqlite://gatehouse.db?mode=rwc cargo run -p store-sqlx --example inspect
//! DATABASE_URL=postgres://gatehouse@127.0.0.1/gatehouse cargo run -p store-sqlx --example inspect
//! ```
//!
//! Connecting applies pending migrations, as the server does. Exits 1 if the chain is broken.

use access_core::jobs::JobStatus;
use access_core::ports::{AuditLog, JobFilter, JobQueue, RequestStore};
use store_sqlx::{SqlStore, redact_url};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Ok(url) = std::env::var("DATABASE_URL") else {
        eprintln!("set DATABASE_URL (sqlite://path?mode=rwc or postgres://user@host/db)");
        std::process::exit(2);
    };
    let store = SqlStore::connect(&url).await?;
    store.ready().await?;
    println!(
        "database: {} ({})",
        redact_url(&url),
        store.backend().as_str()
    );

    let now = chrono::Utc::now();
    let stats = store.job_stats(now, None).await?;
    println!(
        "jobs: {} due, {} pending ({} retrying), {} running, {} dead, oldest due {}",
        stats.due,
        stats.pending,
        stats.retrying,
        stats.running,
        stats.dead,
        stats
            .oldest_due_secs
            .map(|s| format!("{s}s ago"))
            .unwrap_or_else(|| "-".into()),
    );
    match store.next_job_at().await? {
        Some(at) => println!("next job due: {at}"),
        None => println!("next job due: none"),
    }
    let dead = store
        .jobs(&JobFilter {
            status: Some(JobStatus::Dead),
            limit: Some(20),
            ..Default::default()
        })
        .await?;
    for j in &dead {
        println!(
            "  dead {} {} after {} attempts: {}",
            j.kind.name(),
            j.id,
            j.attempts,
            j.last_error.as_deref().unwrap_or("")
        );
    }

    let requests = store.request_counts().await?;
    let grants = store.grant_counts().await?;
    let show = |v: Vec<(String, u64)>| {
        v.into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|(s, n)| format!("{s}={n}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!(
        "requests: {}",
        show(
            requests
                .into_iter()
                .map(|(s, n)| (s.to_string(), n))
                .collect()
        )
    );
    println!(
        "grants: {}",
        show(
            grants
                .into_iter()
                .map(|(s, n)| (s.to_string(), n))
                .collect()
        )
    );

    let started = std::time::Instant::now();
    let chain = store.verify_audit_chain().await?;
    let took = started.elapsed();
    if chain.ok {
        println!(
            "audit chain: intact, {} events checked in {took:.2?}",
            chain.events_checked
        );
    } else if let Some(b) = &chain.first_bad {
        println!(
            "audit chain: BROKEN at seq {} ({}): {}",
            b.seq,
            b.event_id.as_deref().unwrap_or("-"),
            b.reason
        );
    }
    store.close().await;
    if !chain.ok {
        std::process::exit(1);
    }
    Ok(())
}
