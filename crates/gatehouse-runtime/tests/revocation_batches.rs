//! Expiries and revocations run in batches by the scheduler's revocation lane
//! (`Engine::run_lane_revocations`), on SQLite and (with `TEST_DATABASE_URL`) PostgreSQL: a
//! burst costs a few commits for the whole batch (counted with `SqlStore::stats`, never timed),
//! every grant still ends with its audit event and its notification, and a provider that fails
//! for one grant holds back no other.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;

use access_core::audit::AuditKind;
use access_core::engine::JobLane;
use access_core::jobs::JobStatus;
use access_core::notification::Notification;
use access_core::ports::{
    AuditFilter, AuditLog, GrantFilter, GrantOutcome, GrantRequest, JobFilter, JobQueue, Provider,
    ProviderError, ProviderKind, RequestStore, RevokeOutcome, RevokeRequest,
};
use access_core::request::RequestKind;
use access_core::{Actor, Email, GrantStatus, Subject};
use async_trait::async_trait;
use chrono::Duration;
use gatehouse_runtime::compose::Overrides;
use gatehouse_runtime::config::Env;
use gatehouse_runtime::{App, Config};
use testkit::db::TestDb;
use testkit::provider::{ManualClock, RecordingNotifier, TestProvider};
use testkit::submission::{Ask, SubmitTyped};

const CONFIG: &str = r#"
[[resources]]
id = "auto"
provider = "test"
default_duration = "1h"
max_duration = "8h"
approval = { mode = "auto" }
"#;

/// The test provider, except that revoking `failing`'s access fails (a transient error).
#[derive(Debug)]
struct FailsFor {
    inner: TestProvider,
    failing: std::sync::Mutex<String>,
}

#[async_trait]
impl Provider for FailsFor {
    fn kind(&self) -> ProviderKind {
        self.inner.kind()
    }
    async fn grant(&self, req: &GrantRequest) -> Result<GrantOutcome, ProviderError> {
        self.inner.grant(req).await
    }
    async fn revoke(&self, req: &RevokeRequest) -> Result<RevokeOutcome, ProviderError> {
        if req.subject.user_id == *self.failing.lock().unwrap() {
            return Err(ProviderError::transient("backend unavailable for this one"));
        }
        self.inner.revoke(req).await
    }
}

struct Setup {
    app: App,
    clock: Arc<ManualClock>,
    provider: Arc<FailsFor>,
    notifier: Arc<RecordingNotifier>,
    kind: &'static str,
    _db: TestDb,
}

fn ask(user: &str) -> Ask {
    Ask {
        subject: Subject {
            team_id: "T1".into(),
            user_id: user.into(),
            email: Some(Email::parse(&format!("{}@example.com", user.to_lowercase())).unwrap()),
            name: user.into(),
        },
        resource: "auto".into(),
        duration: Some("1h".into()),
        justification: "batch".into(),
        kind: RequestKind::New,
    }
}

/// `n` people (`U0`…) hold a one-hour grant; revoking `failing`'s fails.
async fn setup(db: TestDb, n: usize, failing: &str) -> Setup {
    let clock = Arc::new(ManualClock::starting_now());
    let provider = Arc::new(FailsFor {
        inner: TestProvider::new(),
        failing: std::sync::Mutex::new(failing.into()),
    });
    let notifier = Arc::new(RecordingNotifier::new());
    let mut providers: HashMap<String, Arc<dyn Provider>> = HashMap::new();
    providers.insert("test".into(), provider.clone());
    let app = App::build(
        Config::from_toml(CONFIG, "test.toml").unwrap(),
        Env {
            database_url: db.url.clone(),
            ..Env::default()
        },
        Overrides {
            providers,
            notifier: Some(notifier.clone()),
            clock: Some(clock.clone()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    for i in 0..n {
        app.engine
            .submit_typed(ask(&format!("U{i}")))
            .await
            .unwrap();
    }
    app.engine.drain(100).await.unwrap();
    let active = app
        .store
        .grants(&GrantFilter {
            status: Some(GrantStatus::Active),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(active.len(), n, "{}: every grant is active", db.kind);
    Setup {
        app,
        clock,
        provider,
        notifier,
        kind: db.kind,
        _db: db,
    }
}

fn expired_notices(notifier: &RecordingNotifier) -> usize {
    notifier
        .sent()
        .iter()
        .filter(|n| matches!(n, Notification::AccessExpired { .. }))
        .count()
}

/// A burst of 40 due expiries is one claim and one batch: the grants' rows claimed in one
/// commit, the ends recorded together, their notifications written claimed by the batch and
/// delivered by it, and the 80 jobs settled in one write. Each expiry used to cost about five
/// commits (row claim, end, completion, then its notification's claim and completion): 200 here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_expiries_is_revoked_with_a_few_commits() {
    const N: usize = 40;
    for db in testkit::db::backends().await {
        let s = setup(db, N, "nobody").await;
        let e = &s.app.engine;
        let notices_before = expired_notices(&s.notifier);
        s.clock.advance(Duration::minutes(61));

        let before = s.app.store.stats();
        let jobs = e.claim_lane(JobLane::Revocations, 500).await.unwrap();
        assert_eq!(jobs.len(), N, "{}: one claim takes the burst", s.kind);
        let summary = e.run_lane_revocations(jobs).await.unwrap();
        let used = s.app.store.stats() - before;
        println!(
            "{}: {N} expiries: {} commits, {} statements",
            s.kind, used.commits, used.statements
        );

        assert_eq!(
            summary.done.get("expire"),
            Some(&(N as u64)),
            "{}: {summary:?}",
            s.kind
        );
        assert_eq!(
            summary.done.get("notify"),
            Some(&(N as u64)),
            "{}: {summary:?}",
            s.kind
        );
        assert_eq!(summary.failures(), 0, "{}: {summary:?}", s.kind);
        assert_eq!(summary.revocation_lag_secs.len(), N, "{}", s.kind);
        // Claim, rows claimed, ends recorded (one commit while the provider answers at once;
        // a few more if its answers straggle), completion.
        assert!(
            used.commits <= 8,
            "{}: {N} expiries took {} commits ({} statements)",
            s.kind,
            used.commits,
            used.statements
        );

        // Nothing is lost: every grant ended, with its audit event and its notice, and no job
        // is left for a scheduler.
        let expired = s
            .app
            .store
            .grants(&GrantFilter {
                status: Some(GrantStatus::Expired),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(expired.len(), N, "{}", s.kind);
        assert_eq!(s.provider.inner.count("revoke"), N, "{}", s.kind);
        let events = s
            .app
            .store
            .audit_events(&AuditFilter {
                limit: Some(1000),
                ..Default::default()
            })
            .await
            .unwrap();
        let ended = events
            .iter()
            .filter(|ev| ev.record.kind == AuditKind::AccessExpired)
            .count();
        assert_eq!(ended, N, "{}: one audit event per expiry", s.kind);
        assert_eq!(
            expired_notices(&s.notifier) - notices_before,
            N,
            "{}: one notice per expiry",
            s.kind
        );
        for kind in ["expire", "notify"] {
            let open = s
                .app
                .store
                .jobs(&JobFilter {
                    kind: Some(kind.into()),
                    limit: Some(1000),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_iter()
                .filter(|j| j.status != JobStatus::Done)
                .count();
            assert_eq!(open, 0, "{}: {kind} jobs left undone", s.kind);
        }
        assert!(
            s.app.store.verify_audit_chain().await.unwrap().ok,
            "{}: the chain holds",
            s.kind
        );
    }
}

/// One grant's provider call fails inside a batch: the others end (and are notified, and
/// settled) in the same batch; the failing one is retried (REVOCATION FAILING), stays live, and
/// ends on the retry once the provider answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_revocation_does_not_hold_back_the_batch() {
    const N: usize = 12;
    for db in testkit::db::backends().await {
        let s = setup(db, N, "U3").await;
        let e = &s.app.engine;
        s.clock.advance(Duration::minutes(61));

        let jobs = e.claim_lane(JobLane::Revocations, 500).await.unwrap();
        assert_eq!(jobs.len(), N, "{}", s.kind);
        let summary = e.run_lane_revocations(jobs).await.unwrap();
        assert_eq!(
            summary.done.get("expire"),
            Some(&(N as u64 - 1)),
            "{}: {summary:?}",
            s.kind
        );
        assert_eq!(
            summary.done.get("notify"),
            Some(&(N as u64 - 1)),
            "{}: {summary:?}",
            s.kind
        );
        assert_eq!(
            summary.retried.get("expire"),
            Some(&1),
            "{}: {summary:?}",
            s.kind
        );

        let grants = s.app.store.grants(&GrantFilter::default()).await.unwrap();
        for g in &grants {
            let want = if g.subject.user_id == "U3" {
                GrantStatus::Active
            } else {
                GrantStatus::Expired
            };
            assert_eq!(g.status, want, "{}: {}", s.kind, g.subject.user_id);
        }
        let pending: Vec<_> = s
            .app
            .store
            .jobs(&JobFilter {
                kind: Some("expire".into()),
                status: Some(JobStatus::Pending),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(
            pending.len(),
            1,
            "{}: the failed expiry waits for its retry",
            s.kind
        );
        assert!(pending[0].last_error.is_some(), "{}", s.kind);

        // The provider recovers; the retry ends the grant, with its notice.
        *s.provider.failing.lock().unwrap() = "nobody".into();
        s.clock.advance(Duration::hours(2));
        let notices = expired_notices(&s.notifier);
        let jobs = e.claim_lane(JobLane::Revocations, 500).await.unwrap();
        assert_eq!(jobs.len(), 1, "{}: the retry is due", s.kind);
        let again = e.run_lane_revocations(jobs).await.unwrap();
        assert_eq!(again.done.get("expire"), Some(&1), "{}: {again:?}", s.kind);
        assert_eq!(expired_notices(&s.notifier), notices + 1, "{}", s.kind);
        let g = s.app.store.grants(&GrantFilter::default()).await.unwrap();
        assert!(
            g.iter().all(|g| g.status == GrantStatus::Expired),
            "{}: every grant ended",
            s.kind
        );
    }
}

/// An admin's revocation (`revoke` jobs) runs through the same batches, with an `AccessRevoked`
/// notice for each; a grant that has both an expiry and a revocation due in one batch is ended
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_and_expiries_of_one_grant_in_one_batch_end_it_once() {
    for db in testkit::db::backends().await {
        let s = setup(db, 3, "nobody").await;
        let e = &s.app.engine;
        let grants = s.app.store.grants(&GrantFilter::default()).await.unwrap();
        for g in &grants {
            e.revoke_grant(g.id, Actor::Admin { name: "ops".into() })
                .await
                .unwrap();
        }
        // Each grant now has a revoke job due and, an hour on, its expire job too.
        s.clock.advance(Duration::minutes(61));
        let jobs = e.claim_lane(JobLane::Revocations, 500).await.unwrap();
        assert_eq!(jobs.len(), 6, "{}", s.kind);
        let summary = e.run_lane_revocations(jobs).await.unwrap();
        assert_eq!(summary.failures(), 0, "{}: {summary:?}", s.kind);
        assert_eq!(
            s.provider.inner.count("revoke"),
            3,
            "{}: one call per grant",
            s.kind
        );
        let revoked = s
            .app
            .store
            .grants(&GrantFilter {
                status: Some(GrantStatus::Revoked),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(revoked.len(), 3, "{}", s.kind);
        let notices = s
            .notifier
            .sent()
            .iter()
            .filter(|n| matches!(n, Notification::AccessRevoked { .. }))
            .count();
        assert_eq!(notices, 3, "{}: one notice per grant", s.kind);
        assert_eq!(expired_notices(&s.notifier), 0, "{}", s.kind);
    }
}
