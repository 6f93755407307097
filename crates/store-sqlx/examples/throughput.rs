//! Measures the store on a database you can throw away: commits (a request, an audit event and a
//! job each) from one task and from several, job claims, and a full chain verification.
//!
//! ```text
//! DATABASE_URL=sqlite:///tmp/gh-bench.db?mode=rwc cargo run --release -p store-sqlx --example throughput
//! DATABASE_URL=postgres://postgres@127.0.0.1/scratch COMMITS=2000 TASKS=8 cargo run --release -p store-sqlx --example throughput
//! ```
//!
//! It writes rows into the database it is given: never point it at a real one.

use std::time::Instant;

use access_core::ResourceId;
use access_core::audit::{AuditKind, AuditRecord};
use access_core::duration::AccessDuration;
use access_core::ids::{GrantId, RequestId};
use access_core::jobs::{JobKind, NewJob};
use access_core::ports::{AuditLog, ChangeSet, JobQueue, RequestStore, RequestWrite};
use access_core::request::{AccessRequest, Actor, RequestKind, RequestStatus};
use access_core::resource::Justification;
use access_core::subject::Subject;
use chrono::Utc;
use store_sqlx::SqlStore;

fn change(i: usize) -> Result<ChangeSet, Box<dyn std::error::Error>> {
    let now = Utc::now();
    let subject = Subject {
        team_id: "T1".into(),
        user_id: format!("U{i}"),
        email: None,
        name: format!("User {i}"),
    };
    let request = AccessRequest {
        id: RequestId::new(),
        subject: subject.clone(),
        resource: ResourceId::parse("bench")?,
        kind: RequestKind::New,
        duration: AccessDuration::from_secs(3600)?,
        justification: Justification::parse("throughput measurement")?,
        status: RequestStatus::Pending,
        created_at: now,
        updated_at: now,
        pending_until: None,
        grant_id: None,
        decided_by: None,
        failure: None,
        version: 0,
    };
    let audit = AuditRecord::new(
        AuditKind::AccessRequested,
        Actor::from_subject(&subject),
        now,
    )
    .request(request.id);
    Ok(ChangeSet {
        requests: vec![RequestWrite::Insert(request)],
        audit: vec![audit],
        jobs: vec![NewJob::at(
            JobKind::Expire {
                grant_id: GrantId::new(),
            },
            now,
        )],
        ..Default::default()
    })
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url =
        std::env::var("DATABASE_URL").map_err(|_| "set DATABASE_URL to a scratch database")?;
    let commits = env_usize("COMMITS", 500);
    let tasks = env_usize("TASKS", 8).max(1);
    let store = SqlStore::connect(&url).await?;
    println!("backend: {}", store.backend().as_str());

    let started = Instant::now();
    for i in 0..commits {
        store.commit(change(i)?).await?;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "sequential commits: {commits} in {secs:.2}s = {:.0}/s",
        commits as f64 / secs
    );

    let started = Instant::now();
    let mut handles = Vec::new();
    for t in 0..tasks {
        let store = store.clone();
        let per_task = commits / tasks;
        handles.push(tokio::spawn(async move {
            for i in 0..per_task {
                let cs = change(t * per_task + i).map_err(|e| e.to_string())?;
                store.commit(cs).await.map_err(|e| e.to_string())?;
            }
            Ok::<usize, String>(per_task)
        }));
    }
    let mut done = 0;
    for h in handles {
        done += h.await??;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "concurrent commits ({tasks} tasks): {done} in {secs:.2}s = {:.0}/s",
        done as f64 / secs
    );

    let started = Instant::now();
    let mut claimed = 0;
    loop {
        let jobs = store
            .claim_jobs(Utc::now(), 50, chrono::Duration::seconds(60))
            .await?;
        if jobs.is_empty() {
            break;
        }
        for j in jobs {
            if let Some(token) = &j.claim_token {
                store.complete_job(j.id, token, Utc::now()).await?;
            }
            claimed += 1;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "claim+complete: {claimed} jobs in {secs:.2}s = {:.0}/s",
        claimed as f64 / secs
    );

    let started = Instant::now();
    let v = store.verify_audit_chain().await?;
    println!(
        "verify: ok={} over {} events in {:.2?}",
        v.ok,
        v.events_checked,
        started.elapsed()
    );
    store.close().await;
    Ok(())
}
