//! The lifecycle engine over the real store, on SQLite and (with `TEST_DATABASE_URL`) PostgreSQL.
//! Time is a manual clock: tests travel instead of sleeping.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;

use access_core::audit::AuditKind;
use access_core::engine::{Engine, EngineError};
use access_core::jobs::JobStatus;
use access_core::ports::{AuditFilter, GrantFilter, JobFilter, JobWaker, Provider};
use access_core::request::RequestKind;
use access_core::{Actor, Email, GrantStatus, RequestStatus, Subject};
use chrono::Duration;
use gatehouse_runtime::compose::Overrides;
use gatehouse_runtime::config::Env;
use gatehouse_runtime::{App, Config};
use testkit::db::{TestDb, backends};
use testkit::provider::{Behaviour, ManualClock, RecordingNotifier, TestProvider};
use testkit::submission::{Ask, SubmitTyped};

const CONFIG: &str = r#"
[server]
call_timeout_secs = 2

[[resources]]
id = "auto"
provider = "test"
min_duration = "1s"
default_duration = "1h"
max_duration = "8h"
approval = { mode = "auto" }

[[resources]]
id = "guarded"
provider = "test"
default_duration = "1h"
max_duration = "8h"
approval = { mode = "approvers", approvers = { users = ["UAPP1", "UAPP2", "UAPP3"] }, required = 1, pending_ttl = "2h" }

[[resources]]
id = "two-keys"
provider = "test"
default_duration = "1h"
max_duration = "8h"
approval = { mode = "approvers", approvers = { users = ["UAPP1", "UAPP2", "UAPP3"] }, required = 2 }

[[resources]]
id = "fixed"
provider = "test"
default_duration = "1h"
max_duration = "8h"
extendable = false
approval = { mode = "auto" }
"#;

struct Harness {
    engine: Arc<Engine>,
    clock: Arc<ManualClock>,
    provider: Arc<TestProvider>,
    notifier: Arc<RecordingNotifier>,
    waker: Arc<gatehouse_runtime::SchedulerWaker>,
    app: App,
    kind: &'static str,
    _db: TestDb,
}

async fn harness(db: TestDb) -> Harness {
    harness_with(db, CONFIG).await
}

async fn harness_with(db: TestDb, config: &str) -> Harness {
    let clock = Arc::new(ManualClock::starting_now());
    let provider = Arc::new(TestProvider::new());
    let notifier = Arc::new(RecordingNotifier::new());
    let mut providers: HashMap<String, Arc<dyn Provider>> = HashMap::new();
    providers.insert("test".into(), provider.clone());
    let config = Config::from_toml(config, "test.toml").unwrap();
    let env = Env {
        database_url: db.url.clone(),
        ..Env::default()
    };
    let app = App::build(
        config,
        env,
        Overrides {
            providers,
            notifier: Some(notifier.clone()),
            clock: Some(clock.clone()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    Harness {
        engine: app.engine.clone(),
        clock,
        provider,
        notifier,
        waker: app.waker.clone(),
        app,
        kind: db.kind,
        _db: db,
    }
}

async fn each_backend() -> Vec<Harness> {
    let mut out = Vec::new();
    for db in backends().await {
        out.push(harness(db).await);
    }
    out
}

fn person(user: &str) -> Subject {
    Subject {
        team_id: "T1".into(),
        user_id: user.into(),
        email: Some(Email::parse(&format!("{}@example.com", user.to_lowercase())).unwrap()),
        name: user.into(),
    }
}

fn ask(user: &str, resource: &str, duration: &str) -> Ask {
    Ask {
        subject: person(user),
        resource: resource.into(),
        duration: Some(duration.into()),
        justification: "\"debug CI\"".into(),
        kind: RequestKind::New,
    }
}

fn approver(user: &str) -> Actor {
    Actor::User {
        team_id: "T1".into(),
        user_id: user.into(),
        name: user.into(),
    }
}

impl Harness {
    async fn run(&self) -> access_core::engine::RunSummary {
        self.engine.drain(50).await.unwrap()
    }

    async fn kinds(&self) -> Vec<AuditKind> {
        self.engine
            .store()
            .audit_events(&AuditFilter {
                limit: Some(1000),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.record.kind)
            .collect()
    }

    async fn count(&self, kind: AuditKind) -> usize {
        self.kinds()
            .await
            .into_iter()
            .filter(|k| *k == kind)
            .count()
    }

    fn travel(&self, d: Duration) {
        self.clock.advance(d);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn auto_approved_request_is_granted_then_expires() {
    for h in each_backend().await {
        let r = h
            .engine
            .submit_typed(ask("U1", "auto", "30m"))
            .await
            .unwrap();
        assert_eq!(r.status, RequestStatus::Approved, "{}", h.kind);
        assert_eq!(r.justification.as_str(), "debug CI", "quotes stripped");

        // The grant and its expiry job were written by the same commit, before any job ran.
        let grant = h
            .engine
            .store()
            .grant(r.grant_id.unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(grant.status, GrantStatus::Provisioning);
        let jobs = h.engine.store().jobs(&JobFilter::default()).await.unwrap();
        let expire = jobs
            .iter()
            .find(|j| matches!(j.kind, access_core::jobs::JobKind::Expire { grant_id } if grant_id == grant.id))
            .expect("expire job committed with the grant");
        assert_eq!(expire.run_at, grant.expires_at);

        h.run().await;
        let r = h.engine.store().request(r.id).await.unwrap().unwrap();
        assert_eq!(r.status, RequestStatus::Active, "{}", h.kind);
        assert_eq!(
            h.provider.holders(),
            vec![("U1".to_string(), "auto".to_string())]
        );
        assert!(h.notifier.names().contains(&"access_granted"));

        // Not yet: nothing happens before expiry.
        h.travel(Duration::minutes(29));
        h.run().await;
        assert_eq!(h.provider.count("revoke"), 0);

        h.travel(Duration::minutes(2));
        let s = h.run().await;
        assert_eq!(s.done.get("expire"), Some(&1), "{}: {s:?}", h.kind);
        assert!(h.provider.holders().is_empty());
        let g = h.engine.store().grant(grant.id).await.unwrap().unwrap();
        assert_eq!(g.status, GrantStatus::Expired);
        assert_eq!(
            h.engine
                .store()
                .request(r.id)
                .await
                .unwrap()
                .unwrap()
                .status,
            RequestStatus::Expired
        );
        assert!(h.notifier.names().contains(&"access_expired"));
        assert_eq!(
            h.kinds().await,
            vec![
                AuditKind::AccessRequested,
                AuditKind::AccessApproved,
                AuditKind::AccessGranted,
                AuditKind::ProviderEvent,
                AuditKind::AccessExpired
            ],
            "{}",
            h.kind
        );
        assert!(h.engine.store().verify_audit_chain().await.unwrap().ok);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_is_refused_specifically_and_changes_nothing() {
    for h in each_backend().await {
        let e = h
            .engine
            .submit_typed(ask("U1", "nope", "1h"))
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "Unknown resource 'nope'. Valid resources: auto, fixed, guarded, two-keys."
        );
        let e = h
            .engine
            .submit_typed(ask("U1", "auto", "9h"))
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "Duration must be between 1s and 8h (you asked for 9h)."
        );
        let e = h
            .engine
            .submit_typed(ask("U1", "auto", "soon"))
            .await
            .unwrap_err();
        assert!(matches!(e, EngineError::InvalidDuration(_)));
        let mut s = ask("U1", "auto", "1h");
        s.justification = "\"\"".into();
        assert!(matches!(
            h.engine.submit_typed(s).await.unwrap_err(),
            EngineError::InvalidJustification(_)
        ));
        let mut s = ask("U1", "auto", "1h");
        s.kind = RequestKind::Extend;
        assert!(matches!(
            h.engine.submit_typed(s).await.unwrap_err(),
            EngineError::NoActiveGrant { .. }
        ));
        assert!(
            h.kinds().await.is_empty(),
            "{}: refused input must leave no trace",
            h.kind
        );
        assert!(
            h.engine
                .store()
                .jobs(&JobFilter::default())
                .await
                .unwrap()
                .is_empty()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn approvals_follow_policy() {
    for h in each_backend().await {
        let r = h
            .engine
            .submit_typed(ask("U1", "guarded", "2h"))
            .await
            .unwrap();
        assert_eq!(r.status, RequestStatus::Pending);
        h.run().await;
        assert!(h.notifier.names().contains(&"approval_requested"));
        assert!(h.notifier.names().contains(&"request_submitted"));

        // Self-approval and non-approvers are refused and change nothing.
        let e = h.engine.approve(r.id, approver("U1")).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "You cannot approve or deny your own request."
        );
        let e = h
            .engine
            .approve(r.id, approver("UOTHER"))
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "You are not an approver for 'guarded'.");
        assert_eq!(
            h.engine
                .store()
                .request(r.id)
                .await
                .unwrap()
                .unwrap()
                .status,
            RequestStatus::Pending
        );

        // A second pending request for the same thing is refused.
        assert!(matches!(
            h.engine
                .submit_typed(ask("U1", "guarded", "1h"))
                .await
                .unwrap_err(),
            EngineError::AlreadyPending { .. }
        ));

        let approved = h.engine.approve(r.id, approver("UAPP1")).await.unwrap();
        assert_eq!(approved.status, RequestStatus::Approved);
        assert!(matches!(
            h.engine.approve(r.id, approver("UAPP2")).await.unwrap_err(),
            EngineError::AlreadyDecided {
                status: RequestStatus::Approved
            }
        ));
        assert!(matches!(
            h.engine
                .deny(r.id, approver("UAPP2"), None)
                .await
                .unwrap_err(),
            EngineError::AlreadyDecided { .. }
        ));
        h.run().await;
        assert_eq!(
            h.engine
                .store()
                .request(r.id)
                .await
                .unwrap()
                .unwrap()
                .status,
            RequestStatus::Active
        );
        assert!(h.notifier.names().contains(&"request_approved"));

        // Deny, cancel.
        let d = h
            .engine
            .submit_typed(ask("U2", "guarded", "1h"))
            .await
            .unwrap();
        let denied = h
            .engine
            .deny(d.id, approver("UAPP2"), Some("not today".into()))
            .await
            .unwrap();
        assert_eq!(denied.status, RequestStatus::Denied);
        let c = h
            .engine
            .submit_typed(ask("U3", "guarded", "1h"))
            .await
            .unwrap();
        assert!(matches!(
            h.engine.cancel(c.id, approver("U2")).await.unwrap_err(),
            EngineError::NotYours
        ));
        let cancelled = h.engine.cancel(c.id, approver("U3")).await.unwrap();
        assert_eq!(cancelled.status, RequestStatus::Cancelled);
        h.run().await;
        let names = h.notifier.names();
        assert!(
            names.contains(&"request_denied") && names.contains(&"request_cancelled"),
            "{names:?}"
        );
        assert_eq!(h.count(AuditKind::AccessDenied).await, 1);
        assert_eq!(h.count(AuditKind::RequestCancelled).await, 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pending_requests_time_out() {
    for h in each_backend().await {
        let r = h
            .engine
            .submit_typed(ask("U1", "guarded", "1h"))
            .await
            .unwrap();
        h.travel(Duration::minutes(119));
        h.run().await;
        assert_eq!(
            h.engine
                .store()
                .request(r.id)
                .await
                .unwrap()
                .unwrap()
                .status,
            RequestStatus::Pending
        );
        h.travel(Duration::minutes(2));
        h.run().await;
        assert_eq!(
            h.engine
                .store()
                .request(r.id)
                .await
                .unwrap()
                .unwrap()
                .status,
            RequestStatus::TimedOut
        );
        assert!(h.notifier.names().contains(&"request_timed_out"));
        assert!(matches!(
            h.engine.approve(r.id, approver("UAPP1")).await.unwrap_err(),
            EngineError::AlreadyDecided {
                status: RequestStatus::TimedOut
            }
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn n_of_m_needs_distinct_approvers() {
    for h in each_backend().await {
        let r = h
            .engine
            .submit_typed(ask("U1", "two-keys", "1h"))
            .await
            .unwrap();
        let after_one = h.engine.approve(r.id, approver("UAPP1")).await.unwrap();
        assert_eq!(after_one.status, RequestStatus::Pending);
        assert!(matches!(
            h.engine.approve(r.id, approver("UAPP1")).await.unwrap_err(),
            EngineError::AlreadyVoted
        ));
        let after_two = h.engine.approve(r.id, approver("UAPP2")).await.unwrap();
        assert_eq!(after_two.status, RequestStatus::Approved);
        assert_eq!(h.count(AuditKind::ApprovalRecorded).await, 1);
        assert_eq!(h.count(AuditKind::AccessApproved).await, 1);
        assert_eq!(h.engine.store().decisions(r.id).await.unwrap().len(), 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_approvals_produce_one_grant_and_one_event() {
    for h in each_backend().await {
        for round in 0..5 {
            let user = format!("URACE{round}");
            let r = h
                .engine
                .submit_typed(ask(&user, "guarded", "1h"))
                .await
                .unwrap();
            let tasks: Vec<_> = ["UAPP1", "UAPP2", "UAPP3"]
                .into_iter()
                .map(|a| {
                    let engine = h.engine.clone();
                    tokio::spawn(async move { engine.approve(r.id, approver(a)).await })
                })
                .collect();
            let mut wins = 0;
            for t in tasks {
                match t.await.unwrap() {
                    Ok(req) => {
                        assert_eq!(req.status, RequestStatus::Approved);
                        wins += 1;
                    }
                    Err(EngineError::AlreadyDecided {
                        status: RequestStatus::Approved,
                    }) => {}
                    Err(e) => panic!("{}: unexpected {e:?}", h.kind),
                }
            }
            assert_eq!(wins, 1, "{}: exactly one approval wins", h.kind);
            let grants = h
                .engine
                .store()
                .grants(&GrantFilter {
                    subject: Some(person(&user).key()),
                    ..Default::default()
                })
                .await
                .unwrap();
            assert_eq!(grants.len(), 1, "{}", h.kind);
            let events = h
                .engine
                .store()
                .audit_events(&AuditFilter {
                    request_id: Some(r.id),
                    kind: Some(AuditKind::AccessApproved),
                    ..Default::default()
                })
                .await
                .unwrap();
            assert_eq!(events.len(), 1, "{}: one audit event", h.kind);
        }
        assert!(h.engine.store().verify_audit_chain().await.unwrap().ok);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overlapping_approvals_extend_one_grant() {
    for h in each_backend().await {
        let first = h
            .engine
            .submit_typed(ask("U1", "auto", "1h"))
            .await
            .unwrap();
        h.run().await;
        h.travel(Duration::minutes(10));
        let second = h
            .engine
            .submit_typed(ask("U1", "auto", "3h"))
            .await
            .unwrap();
        assert_eq!(
            second.grant_id, first.grant_id,
            "{}: the second approval extends the same grant",
            h.kind
        );
        h.run().await;
        let g = h
            .engine
            .store()
            .grant(first.grant_id.unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(g.status, GrantStatus::Active);
        assert_eq!(g.expires_at, h.engine.now() + Duration::hours(3));
        assert_eq!(h.count(AuditKind::AccessExtended).await, 1);

        // The first approval's expiry passes: access stays.
        h.travel(Duration::minutes(55));
        h.run().await;
        assert_eq!(
            h.provider.count("revoke"),
            0,
            "{}: an earlier expiry must not revoke",
            h.kind
        );
        assert_eq!(h.provider.holders().len(), 1);

        h.travel(Duration::hours(3));
        h.run().await;
        assert_eq!(h.provider.count("revoke"), 1);
        let g = h.engine.store().grant(g.id).await.unwrap().unwrap();
        assert_eq!(g.status, GrantStatus::Expired);
        for r in [first.id, second.id] {
            assert_eq!(
                h.engine.store().request(r).await.unwrap().unwrap().status,
                RequestStatus::Expired
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn extend_lengthens_from_the_current_expiry_within_the_maximum() {
    for h in each_backend().await {
        let r = h
            .engine
            .submit_typed(ask("U1", "auto", "1h"))
            .await
            .unwrap();
        h.run().await;
        let before = h
            .engine
            .store()
            .grant(r.grant_id.unwrap())
            .await
            .unwrap()
            .unwrap()
            .expires_at;
        let mut ext = ask("U1", "auto", "2h");
        ext.kind = RequestKind::Extend;
        ext.justification = String::new();
        let e = h.engine.submit_typed(ext).await.unwrap();
        assert_eq!(e.grant_id, r.grant_id);
        h.run().await;
        let after = h
            .engine
            .store()
            .grant(r.grant_id.unwrap())
            .await
            .unwrap()
            .unwrap()
            .expires_at;
        assert_eq!(after, before + Duration::hours(2));
        let mut ext = ask("U1", "fixed", "1h");
        ext.kind = RequestKind::Extend;
        assert!(matches!(
            h.engine.submit_typed(ext).await.unwrap_err(),
            EngineError::NotExtendable { .. }
        ));
    }
}

/// Chaos finding 13: the grant call lands but its answer is lost (a crash, a time-out), the
/// person revokes, and provisioning runs again: the person hears once, that it was revoked.
/// Before, the re-run found the grant ended and also said "could not be provisioned".
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn provisioning_run_again_after_a_revoke_sends_no_second_answer() {
    for h in each_backend().await {
        h.provider
            .on_grant(Behaviour::ApplyThenFail("answer lost".into()));
        let r = h
            .engine
            .submit_typed(ask("U13", "auto", "1h"))
            .await
            .unwrap();
        h.engine.run_due(10).await.unwrap();
        assert_eq!(
            h.provider.holders().len(),
            1,
            "{}: the grant landed",
            h.kind
        );
        h.engine
            .revoke_grant(r.grant_id.unwrap(), approver("U13"))
            .await
            .unwrap();
        h.provider.on_grant(Behaviour::Succeed);
        h.travel(Duration::minutes(5));
        h.run().await;
        assert!(h.provider.holders().is_empty(), "{}", h.kind);
        assert_eq!(
            h.grant_of(&r).await.status,
            GrantStatus::Revoked,
            "{}",
            h.kind
        );
        let names = h.notifier.names();
        let ends = names
            .iter()
            .filter(|n| ["access_revoked", "access_failed", "access_expired"].contains(n))
            .collect::<Vec<_>>();
        assert_eq!(ends, [&"access_revoked"], "{}: {names:?}", h.kind);
    }
}

/// Chaos finding 11: an extension approved after the access it extends has ended gives no new
/// access. Before, the late approval created a fresh grant nobody had requested.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_extension_approved_after_its_grant_ended_grants_nothing() {
    for h in each_backend().await {
        let r = h
            .engine
            .submit_typed(ask("UEXT", "guarded", "1h"))
            .await
            .unwrap();
        let r = h.engine.approve(r.id, approver("UAPP1")).await.unwrap();
        h.run().await;
        let mut ext = ask("UEXT", "guarded", "1h");
        ext.kind = RequestKind::Extend;
        let x = h.engine.submit_typed(ext).await.unwrap();
        // Nobody approves it in time; the grant expires.
        h.travel(Duration::minutes(61));
        h.run().await;
        let g = h
            .engine
            .store()
            .grant(r.grant_id.unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(g.status, GrantStatus::Expired, "{}", h.kind);
        let grants = h.provider.count("grant");
        let e = h.engine.approve(x.id, approver("UAPP2")).await.unwrap_err();
        assert_eq!(e.code(), "extended_grant_ended", "{}: {e}", h.kind);
        h.run().await;
        assert_eq!(
            h.provider.count("grant"),
            grants,
            "{}: access granted again",
            h.kind
        );
        assert!(h.provider.holders().is_empty(), "{}", h.kind);
        let live = h
            .engine
            .store()
            .grants(&GrantFilter::default())
            .await
            .unwrap()
            .into_iter()
            .filter(|g| g.ended_at.is_none())
            .count();
        assert_eq!(live, 0, "{}: a grant was created", h.kind);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn provider_failures_retry_then_fail_the_request() {
    for h in each_backend().await {
        h.provider
            .on_grant(Behaviour::FailTransient("backend 503".into()));
        let r = h
            .engine
            .submit_typed(ask("U1", "auto", "1h"))
            .await
            .unwrap();
        let s = h.run().await;
        assert_eq!(s.retried.get("provision"), Some(&1), "{}", h.kind);
        let job = h
            .engine
            .store()
            .jobs(&JobFilter {
                kind: Some("provision".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(job[0].last_error.as_deref(), Some("backend 503"));
        assert!(job[0].run_at > h.engine.now(), "backed off");

        // Recovers on a later attempt.
        h.provider.on_grant(Behaviour::Succeed);
        h.travel(Duration::minutes(5));
        h.run().await;
        assert_eq!(
            h.engine
                .store()
                .request(r.id)
                .await
                .unwrap()
                .unwrap()
                .status,
            RequestStatus::Active
        );

        // A permanent failure fails the request and its new grant at once.
        h.provider.on_grant(Behaviour::FailPermanent(
            "organisation policy forbids it".into(),
        ));
        let r2 = h
            .engine
            .submit_typed(ask("U2", "auto", "1h"))
            .await
            .unwrap();
        h.run().await;
        let r2 = h.engine.store().request(r2.id).await.unwrap().unwrap();
        assert_eq!(r2.status, RequestStatus::Failed);
        assert_eq!(
            r2.failure.as_deref(),
            Some("organisation policy forbids it")
        );
        let g2 = h
            .engine
            .store()
            .grant(r2.grant_id.unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(g2.status, GrantStatus::Failed);
        assert!(h.notifier.names().contains(&"access_failed"));
        assert_eq!(h.count(AuditKind::GrantFailed).await, 1);

        // Transient failures that never end give up after the attempt limit.
        h.provider
            .on_grant(Behaviour::FailTransient("still down".into()));
        // (8h, so the grant does not simply expire during the retries.)
        let r3 = h
            .engine
            .submit_typed(ask("U3", "auto", "8h"))
            .await
            .unwrap();
        for _ in 0..10 {
            h.run().await;
            h.travel(Duration::minutes(10));
        }
        let r3 = h.engine.store().request(r3.id).await.unwrap().unwrap();
        assert_eq!(r3.status, RequestStatus::Failed);
        assert!(r3.failure.unwrap().contains("still down"));
        let dead = h.engine.dead_jobs().await.unwrap();
        assert_eq!(
            dead.len(),
            1,
            "{}: the provision job stays visible as dead",
            h.kind
        );
        assert_eq!(dead[0].status, JobStatus::Dead);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revocation_never_gives_up() {
    for h in each_backend().await {
        let r = h
            .engine
            .submit_typed(ask("U1", "auto", "1h"))
            .await
            .unwrap();
        h.run().await;
        h.provider
            .on_revoke(Behaviour::FailTransient("cannot reach backend".into()));
        h.travel(Duration::hours(1));
        for _ in 0..30 {
            h.run().await;
            h.travel(Duration::minutes(6));
        }
        let jobs = h
            .engine
            .store()
            .jobs(&JobFilter {
                kind: Some("expire".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(
            jobs[0].status,
            JobStatus::Pending,
            "{}: still retrying",
            h.kind
        );
        assert!(jobs[0].attempts >= 20);
        assert!(h.engine.dead_jobs().await.unwrap().is_empty());
        h.provider.on_revoke(Behaviour::Succeed);
        h.travel(Duration::minutes(6));
        h.run().await;
        let g = h
            .engine
            .store()
            .grant(r.grant_id.unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(g.status, GrantStatus::Expired);
        assert!(h.provider.holders().is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn early_revocation_by_the_holder_or_an_admin() {
    for h in each_backend().await {
        let r = h
            .engine
            .submit_typed(ask("U1", "auto", "4h"))
            .await
            .unwrap();
        h.run().await;
        let gid = r.grant_id.unwrap();
        assert!(matches!(
            h.engine
                .revoke_grant(gid, approver("U2"))
                .await
                .unwrap_err(),
            EngineError::NotYours
        ));
        let g = h
            .engine
            .revoke_resource(&person("U1").key(), "auto", approver("U1"))
            .await
            .unwrap();
        assert_eq!(g.status, GrantStatus::Revoking);
        h.run().await;
        let g = h.engine.store().grant(gid).await.unwrap().unwrap();
        assert_eq!(g.status, GrantStatus::Revoked);
        assert_eq!(
            h.engine
                .store()
                .request(r.id)
                .await
                .unwrap()
                .unwrap()
                .status,
            RequestStatus::Revoked
        );
        assert!(h.provider.holders().is_empty());
        assert!(h.notifier.names().contains(&"access_revoked"));
        let e = h
            .engine
            .revoke_resource(&person("U1").key(), "auto", approver("U1"))
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "You do not have any active access to 'auto'."
        );

        // The expiry job of a revoked grant finds nothing to do.
        h.travel(Duration::hours(5));
        h.run().await;
        assert_eq!(h.provider.count("revoke"), 1);

        // Admin revoke of someone else's grant.
        let r2 = h
            .engine
            .submit_typed(ask("U2", "auto", "1h"))
            .await
            .unwrap();
        h.run().await;
        h.engine
            .revoke_grant(r2.grant_id.unwrap(), Actor::Admin { name: "ops".into() })
            .await
            .unwrap();
        h.run().await;
        let revoked = h
            .engine
            .store()
            .audit_events(&AuditFilter {
                kind: Some(AuditKind::AccessRevoked),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(revoked.len(), 2);
        assert_eq!(revoked[1].record.actor, Actor::Admin { name: "ops".into() });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hung_provider_becomes_a_retry() {
    for h in each_backend().await {
        h.provider.on_grant(Behaviour::Hang);
        let r = h
            .engine
            .submit_typed(ask("U1", "auto", "1h"))
            .await
            .unwrap();
        let started = std::time::Instant::now();
        let s = h.run().await;
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
        assert_eq!(s.retried.get("provision"), Some(&1), "{}", h.kind);
        assert_eq!(
            h.engine
                .store()
                .request(r.id)
                .await
                .unwrap()
                .unwrap()
                .status,
            RequestStatus::Approved
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn notifications_are_retried() {
    for h in each_backend().await {
        h.notifier.fail_next(2);
        h.engine
            .submit_typed(ask("U1", "auto", "1h"))
            .await
            .unwrap();
        h.run().await;
        h.travel(Duration::minutes(1));
        h.run().await;
        h.travel(Duration::minutes(1));
        h.run().await;
        assert!(h.notifier.names().contains(&"access_granted"), "{}", h.kind);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unavailable_resources_are_refused_and_not_offered() {
    for h in each_backend().await {
        h.provider.set_unavailable(
            "auto",
            Some(
                "Network 'auto' does not exist. Use `/vpn-access list` to see available networks.",
            ),
        );
        let e = h
            .engine
            .submit_typed(ask("U1", "auto", "1h"))
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "Network 'auto' does not exist. Use `/vpn-access list` to see available networks."
        );
        let offered: Vec<String> = h
            .engine
            .offered(&person("U1"))
            .await
            .into_iter()
            .map(|r| r.id.to_string())
            .collect();
        assert!(!offered.contains(&"auto".to_string()), "{offered:?}");
        assert!(offered.contains(&"guarded".to_string()));
        assert!(h.kinds().await.is_empty(), "{}", h.kind);
        h.provider.set_unavailable("auto", None);
        assert!(h.engine.submit_typed(ask("U1", "auto", "1h")).await.is_ok());
    }
}

// ------------------------------------------------------------------------------------------------
// Issue 11: access never outlives its grant (races, retries)

fn admin() -> Actor {
    Actor::Admin { name: "ops".into() }
}

impl Harness {
    async fn grant_of(&self, r: &access_core::AccessRequest) -> access_core::Grant {
        self.engine
            .store()
            .grant(r.grant_id.unwrap())
            .await
            .unwrap()
            .unwrap()
    }

    /// Runs due jobs and travels a little, a few times, so retries and follow-up jobs run.
    async fn settle(&self) {
        for _ in 0..6 {
            self.run().await;
            self.travel(Duration::minutes(10));
        }
    }
}

/// Revoked (by an admin) while the provider call was in flight: the grant is already `revoked`
/// when provisioning finishes. What the provider added is taken back, nothing is stuck, and the
/// person can ask again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revoked_while_provisioning_is_taken_back() {
    for h in each_backend().await {
        h.provider
            .on_grant(Behaviour::Delay(std::time::Duration::from_millis(800)));
        let r = h
            .engine
            .submit_typed(ask("U1", "auto", "1h"))
            .await
            .unwrap();
        let engine = h.engine.clone();
        let provisioning = tokio::spawn(async move { engine.run_due(10).await.unwrap() });
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        h.engine
            .revoke_grant(r.grant_id.unwrap(), admin())
            .await
            .unwrap();
        // The revocation runs (and finishes) while the grant call is still in flight.
        h.run().await;
        assert_eq!(
            h.grant_of(&r).await.status,
            GrantStatus::Revoked,
            "{}",
            h.kind
        );
        provisioning.await.unwrap();
        h.provider.on_grant(Behaviour::Succeed);
        h.settle().await;

        assert!(
            h.provider.holders().is_empty(),
            "{}: access granted after the revocation must be taken back",
            h.kind
        );
        let g = h.grant_of(&r).await;
        assert_eq!(g.status, GrantStatus::Revoked, "{}", h.kind);
        assert!(!g.provider_handle.is_null(), "{}: handle recorded", h.kind);
        assert!(h.engine.dead_jobs().await.unwrap().is_empty(), "{}", h.kind);
        assert!(h.engine.store().verify_audit_chain().await.unwrap().ok);
        // One answer to the person: the revocation's.
        let names = h.notifier.names();
        let ends = names
            .iter()
            .filter(|n| ["access_revoked", "access_failed", "access_expired"].contains(n))
            .collect::<Vec<_>>();
        assert_eq!(ends, [&"access_revoked"], "{}: {names:?}", h.kind);
        // Not blocked by the one-live-grant index.
        let again = h
            .engine
            .submit_typed(ask("U1", "auto", "1h"))
            .await
            .unwrap();
        h.run().await;
        assert_eq!(
            h.engine
                .store()
                .request(again.id)
                .await
                .unwrap()
                .unwrap()
                .status,
            RequestStatus::Active,
            "{}",
            h.kind
        );
    }
}

/// Expired while a slow grant call was in flight: same take-back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expired_while_provisioning_is_taken_back() {
    for h in each_backend().await {
        h.provider
            .on_grant(Behaviour::Delay(std::time::Duration::from_millis(800)));
        let r = h
            .engine
            .submit_typed(ask("U1", "auto", "30s"))
            .await
            .unwrap();
        let engine = h.engine.clone();
        let provisioning = tokio::spawn(async move { engine.run_due(10).await.unwrap() });
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        // Past the expiry, within the provisioning job's lease (so it is not claimed again).
        h.travel(Duration::seconds(60));
        h.run().await;
        assert_eq!(
            h.grant_of(&r).await.status,
            GrantStatus::Expired,
            "{}",
            h.kind
        );
        provisioning.await.unwrap();
        h.provider.on_grant(Behaviour::Succeed);
        h.settle().await;
        assert!(h.provider.holders().is_empty(), "{}", h.kind);
        assert_eq!(
            h.grant_of(&r).await.status,
            GrantStatus::Expired,
            "{}",
            h.kind
        );
        assert!(h.engine.dead_jobs().await.unwrap().is_empty(), "{}", h.kind);
        // Found by the crash test: the person was told "expired" about access never granted,
        // and never that it could not be provisioned.
        let names = h.notifier.names();
        assert!(names.contains(&"access_failed"), "{}: {names:?}", h.kind);
        assert!(!names.contains(&"access_expired"), "{}: {names:?}", h.kind);
        assert!(!names.contains(&"access_granted"), "{}: {names:?}", h.kind);
    }
}

/// A grant call that made the change but answered with a time-out, then the grant expired
/// before the retry: the retry must take back what the first attempt added.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_landed_but_timed_out_grant_is_taken_back_when_the_grant_ends_first() {
    for h in each_backend().await {
        h.provider
            .on_grant(Behaviour::ApplyThenFail("timed out".into()));
        let r = h
            .engine
            .submit_typed(ask("U1", "auto", "30m"))
            .await
            .unwrap();
        h.run().await;
        assert_eq!(
            h.provider.holders().len(),
            1,
            "{}: the change landed",
            h.kind
        );
        h.provider.on_grant(Behaviour::Succeed);
        h.travel(Duration::hours(1));
        h.settle().await;
        assert!(h.provider.holders().is_empty(), "{}", h.kind);
        assert!(!h.grant_of(&r).await.status.is_live(), "{}", h.kind);
    }
}

/// No key for a grant that was revoked while it was being provisioned.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_secret_is_delivered_for_a_grant_revoked_during_provisioning() {
    for h in each_backend().await {
        h.provider.hand_out_secrets(true);
        h.provider
            .on_grant(Behaviour::Delay(std::time::Duration::from_millis(800)));
        let r = h
            .engine
            .submit_typed(ask("U1", "auto", "1h"))
            .await
            .unwrap();
        let engine = h.engine.clone();
        let provisioning = tokio::spawn(async move { engine.run_due(10).await.unwrap() });
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        h.engine
            .revoke_grant(r.grant_id.unwrap(), admin())
            .await
            .unwrap();
        provisioning.await.unwrap();
        h.settle().await;
        assert!(
            h.notifier.secrets().is_empty(),
            "{}: a key was delivered for a revoked grant",
            h.kind
        );
        // A grant that stays live still gets its key, once.
        h.provider.on_grant(Behaviour::Succeed);
        let r2 = h
            .engine
            .submit_typed(ask("U2", "auto", "1h"))
            .await
            .unwrap();
        h.run().await;
        assert_eq!(h.notifier.secrets(), vec![r2.id], "{}", h.kind);
    }
}

/// An extension that lands while the expiry's revoke call is in flight is not silently lost:
/// either it is refused clearly, or access stays (grant live and access held).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_extension_during_the_expiry_revoke_is_not_lost() {
    for h in each_backend().await {
        let r = h
            .engine
            .submit_typed(ask("U1", "auto", "1h"))
            .await
            .unwrap();
        h.run().await;
        h.provider
            .on_revoke(Behaviour::Delay(std::time::Duration::from_millis(800)));
        h.travel(Duration::minutes(61));
        let engine = h.engine.clone();
        let expiring = tokio::spawn(async move { engine.run_due(10).await.unwrap() });
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let mut ext = ask("U1", "auto", "1h");
        ext.kind = RequestKind::Extend;
        let extended = h.engine.submit_typed(ext).await;
        expiring.await.unwrap();
        h.provider.on_revoke(Behaviour::Succeed);
        h.run().await;
        let g = h.grant_of(&r).await;
        match extended {
            Err(e) => {
                assert_ne!(e.code(), "internal", "{}: {e}", h.kind);
                assert_eq!(g.status, GrantStatus::Expired, "{}", h.kind);
                assert!(h.provider.holders().is_empty(), "{}", h.kind);
            }
            Ok(ext) => {
                let ext = h.engine.store().request(ext.id).await.unwrap().unwrap();
                assert_eq!(
                    ext.status,
                    RequestStatus::Active,
                    "{}: extension lost",
                    h.kind
                );
                assert!(g.status.is_live(), "{}", h.kind);
                assert_eq!(h.provider.holders().len(), 1, "{}", h.kind);
            }
        }
    }
}

/// Section 7: a person who voted and then clicks Deny gets a clear answer, not "storage".
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deny_after_own_approval_is_answered_clearly() {
    for h in each_backend().await {
        let r = h
            .engine
            .submit_typed(ask("U1", "two-keys", "1h"))
            .await
            .unwrap();
        h.engine.approve(r.id, approver("UAPP1")).await.unwrap();
        let e = h
            .engine
            .deny(r.id, approver("UAPP1"), Some("changed my mind".into()))
            .await
            .unwrap_err();
        assert_ne!(e.code(), "internal", "{}: {e}", h.kind);
        assert!(
            e.to_string().contains("already approved"),
            "{}: {e}",
            h.kind
        );
        let r = h.engine.store().request(r.id).await.unwrap().unwrap();
        assert_eq!(
            r.status,
            RequestStatus::Pending,
            "{}: no side effect",
            h.kind
        );
    }
}

/// Section 7: an approval after `pending_until` (before the time-out job ran) is refused and the
/// request times out.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn approval_after_pending_until_is_refused() {
    for h in each_backend().await {
        let r = h
            .engine
            .submit_typed(ask("U1", "guarded", "1h"))
            .await
            .unwrap();
        h.travel(Duration::hours(3));
        let e = h.engine.approve(r.id, approver("UAPP1")).await.unwrap_err();
        assert_eq!(e.code(), "already_decided", "{}: {e}", h.kind);
        assert!(e.to_string().contains("timed out"), "{}: {e}", h.kind);
        let stored = h.engine.store().request(r.id).await.unwrap().unwrap();
        assert_eq!(stored.status, RequestStatus::TimedOut, "{}", h.kind);
        assert!(stored.grant_id.is_none(), "{}", h.kind);
        let e = h
            .engine
            .deny(r.id, approver("UAPP2"), None)
            .await
            .unwrap_err();
        assert_eq!(e.code(), "already_decided", "{}: {e}", h.kind);
    }
}

/// Section 7: a new request on a live grant of a non-extendable resource does not extend it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_request_does_not_extend_a_non_extendable_grant() {
    for h in each_backend().await {
        let r = h
            .engine
            .submit_typed(ask("U1", "fixed", "1h"))
            .await
            .unwrap();
        h.run().await;
        let before = h.grant_of(&r).await;
        h.travel(Duration::minutes(30));
        let e = h
            .engine
            .submit_typed(ask("U1", "fixed", "1h"))
            .await
            .unwrap_err();
        assert_eq!(e.code(), "not_extendable", "{}: {e}", h.kind);
        let expiry = before.expires_at.format("%Y-%m-%d %H:%M UTC").to_string();
        assert!(e.to_string().contains(&expiry), "{}: {e}", h.kind);
        h.run().await;
        assert_eq!(
            h.grant_of(&r).await.expires_at,
            before.expires_at,
            "{}",
            h.kind
        );
    }
}

/// Issue 11 §2, from outside: a Cloud Connexa `PUT` that makes the change but answers after the
/// call limit; the grant job runs again, the grant becomes active and ends on time — and the
/// membership must be gone (the retry adopted its own write through the recorded intent).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cloudconnexa_retried_grant_ends_without_leaving_the_membership() {
    use provider_cloudconnexa::{ClientConfig, CloudConnexaProvider, ProviderConfig};
    use testkit::cloudconnexa::{FakeCloudConnexa, FakeConfig};
    for db in backends().await {
        let kind = db.kind;
        let fake = FakeCloudConnexa::start(FakeConfig::fast()).await;
        fake.seed_network("dev-network");
        let group = fake.seed_group("dev-network-users");
        let jane = fake.seed_user("jane@example.com", None, &[]);
        let mut client = ClientConfig::new(fake.url(), fake.client_id(), fake.client_secret());
        client.request_timeout = std::time::Duration::from_secs(5);
        let cc = Arc::new(CloudConnexaProvider::new(ProviderConfig::new(client)).unwrap());
        let clock = Arc::new(ManualClock::starting_now());
        let mut providers: HashMap<String, Arc<dyn Provider>> = HashMap::new();
        providers.insert("cloudconnexa".into(), cc);
        let config = Config::from_toml(
            r#"
[server]
call_timeout_secs = 1

[[resources]]
id = "vpn"
provider = "cloudconnexa"
default_duration = "1h"
max_duration = "8h"
approval = { mode = "auto" }
settings = { network = "dev-network" }
"#,
            "test.toml",
        )
        .unwrap();
        let env = Env {
            database_url: db.url.clone(),
            ..Env::default()
        };
        let app = App::build(
            config,
            env,
            Overrides {
                providers,
                notifier: Some(Arc::new(RecordingNotifier::new())),
                clock: Some(clock.clone()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let engine = app.engine;

        let r = engine.submit_typed(ask("JANE", "vpn", "1h")).await.unwrap();
        fake.slow_after_apply(1, std::time::Duration::from_secs(3));
        let s = engine.drain(5).await.unwrap();
        assert_eq!(s.retried.get("provision"), Some(&1), "{kind}: {s:?}");
        assert!(
            fake.user(&jane)
                .unwrap()
                .secondary_group_ids
                .contains(&group),
            "{kind}: the late PUT landed"
        );
        clock.advance(Duration::minutes(5));
        engine.drain(5).await.unwrap();
        let g = engine
            .store()
            .grant(r.grant_id.unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(g.status, GrantStatus::Active, "{kind}");
        clock.advance(Duration::hours(1));
        // (The client paces writes, so a revoke may need a retry within the 1 s call limit.)
        for _ in 0..5 {
            engine.drain(5).await.unwrap();
            clock.advance(Duration::minutes(10));
        }
        let g = engine.store().grant(g.id).await.unwrap().unwrap();
        assert_eq!(g.status, GrantStatus::Expired, "{kind}");
        assert!(
            !fake
                .user(&jane)
                .unwrap()
                .secondary_group_ids
                .contains(&group),
            "{kind}: membership left behind after the grant ended"
        );
    }
}

/// The expiry's revoke call removes (nothing yet) and then answers slowly; meanwhile the slow
/// grant lands and records its handle. Recording the end must keep that newer work marked, so it
/// is taken back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_grant_landing_during_the_expiry_revoke_is_taken_back() {
    for h in each_backend().await {
        h.provider
            .on_grant(Behaviour::Delay(std::time::Duration::from_millis(600)));
        h.provider
            .on_revoke(Behaviour::ApplyThenDelay(std::time::Duration::from_millis(
                1200,
            )));
        let r = h
            .engine
            .submit_typed(ask("U1", "auto", "30s"))
            .await
            .unwrap();
        let engine = h.engine.clone();
        let provisioning = tokio::spawn(async move { engine.run_due(10).await.unwrap() });
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        h.travel(Duration::seconds(60));
        let engine = h.engine.clone();
        let expiring = tokio::spawn(async move { engine.run_due(10).await.unwrap() });
        provisioning.await.unwrap();
        expiring.await.unwrap();
        h.provider.on_revoke(Behaviour::Succeed);
        h.provider.on_grant(Behaviour::Succeed);
        h.settle().await;
        assert!(
            h.provider.holders().is_empty(),
            "{}: access landed during the revoke call was left behind",
            h.kind
        );
        assert!(!h.grant_of(&r).await.status.is_live(), "{}", h.kind);
        assert!(h.engine.dead_jobs().await.unwrap().is_empty(), "{}", h.kind);
    }
}

/// The key is delivered after the activating commit; when that delivery fails the grant stays
/// active and the person is told the key could not be delivered (and can ask again).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_secret_delivery_after_activation_is_reported() {
    use access_core::notification::Notification;
    for h in each_backend().await {
        h.provider.hand_out_secrets(true);
        h.notifier.fail_secrets(true);
        let r = h
            .engine
            .submit_typed(ask("U1", "auto", "1h"))
            .await
            .unwrap();
        h.run().await;
        assert_eq!(
            h.grant_of(&r).await.status,
            GrantStatus::Active,
            "{}",
            h.kind
        );
        assert!(h.notifier.secrets().is_empty());
        let told = h
            .notifier
            .sent()
            .into_iter()
            .any(|n| matches!(n, Notification::SecretNotDelivered { .. }));
        assert!(told, "{}: {:?}", h.kind, h.notifier.names());
    }
}

/// Issue 12: one "granted" message per grant. A key that could not be delivered after the
/// activation is its own message, not a second "access granted".
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_secret_delivery_sends_one_granted_message_and_one_key_message() {
    for h in each_backend().await {
        h.provider.hand_out_secrets(true);
        h.notifier.fail_secrets(true);
        let r = h
            .engine
            .submit_typed(ask("U1", "auto", "1h"))
            .await
            .unwrap();
        h.run().await;
        assert_eq!(
            h.grant_of(&r).await.status,
            GrantStatus::Active,
            "{}",
            h.kind
        );
        let names = h.notifier.names();
        let granted = names.iter().filter(|n| **n == "access_granted").count();
        assert_eq!(granted, 1, "{}: {names:?}", h.kind);
        let key = names
            .iter()
            .filter(|n| **n == "secret_not_delivered")
            .count();
        assert_eq!(key, 1, "{}: {names:?}", h.kind);
        // The one "granted" message does not claim a failure it could not know about yet.
        assert!(h.notifier.sent().iter().all(|n| !matches!(
            n,
            access_core::notification::Notification::AccessGranted {
                secret_delivery_failed: true,
                ..
            }
        )));
    }
}

/// A secret delivery that fails transiently (a 5xx or rate limit on the upload) is tried again at
/// once: the secret exists only in this memory, so giving up on the first hiccup loses the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_transient_secret_delivery_failure_is_retried() {
    for h in each_backend().await {
        h.provider.hand_out_secrets(true);
        h.notifier.fail_secrets_transiently(2);
        let r = h
            .engine
            .submit_typed(ask("U1", "auto", "1h"))
            .await
            .unwrap();
        h.run().await;
        assert_eq!(
            h.grant_of(&r).await.status,
            GrantStatus::Active,
            "{}",
            h.kind
        );
        assert_eq!(h.notifier.secrets(), vec![r.id], "{}", h.kind);
        let names = h.notifier.names();
        assert!(
            !names.contains(&"secret_not_delivered"),
            "{}: {names:?}",
            h.kind
        );
    }
}

// ------------------------------------------------------------------------------------------------
// The job queue: leases, capacity, panics, per-request order (issue 11, section 3)

/// A pass claims no more than it runs at once (8), so no claimed job waits out its lease in a
/// local queue while another replica could have run it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pass_claims_only_what_it_can_run() {
    for h in each_backend().await {
        for i in 0..12 {
            h.engine
                .submit_typed(ask(&format!("UCAP{i}"), "auto", "1h"))
                .await
                .unwrap();
        }
        let s = h.engine.run_due(100).await.unwrap();
        assert_eq!(s.claimed, 8, "{}", h.kind);
        let left = h
            .engine
            .store()
            .jobs(&JobFilter {
                status: Some(JobStatus::Pending),
                kind: Some("provision".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(!left.is_empty(), "{}: the rest stays due", h.kind);
        h.run().await;
        assert_eq!(h.provider.count("grant"), 12, "{}", h.kind);
    }
}

/// A job slower than its lease (1 s here) is not handed to a second worker while the first is
/// still running it: the first renews the lease as it goes. The second worker's clock is far
/// ahead, too: leases run on the database clock, not a replica's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_slower_than_its_lease_is_not_run_twice() {
    let config = CONFIG.replace(
        "[server]\ncall_timeout_secs = 2",
        "[server]\ncall_timeout_secs = 10\njob_lease_secs = 1",
    );
    for db in backends().await {
        let h = harness_with(db, &config).await;
        h.provider
            .on_grant(Behaviour::Delay(std::time::Duration::from_millis(2_500)));
        h.engine
            .submit_typed(ask("USLOW", "auto", "8h"))
            .await
            .unwrap();
        let engine = h.engine.clone();
        let first = tokio::spawn(async move { engine.run_due(100).await.unwrap() });
        tokio::time::sleep(std::time::Duration::from_millis(1_700)).await;
        h.travel(Duration::minutes(10));
        let stolen = h
            .engine
            .store()
            .claim_jobs(h.engine.now(), 100, Duration::seconds(1))
            .await
            .unwrap();
        assert!(
            stolen
                .iter()
                .all(|j| !matches!(j.kind, access_core::jobs::JobKind::Provision { .. })),
            "{}: the slow provision was claimed by a second worker",
            h.kind
        );
        let s = first.await.unwrap();
        assert_eq!(s.done.get("provision"), Some(&1), "{}: {s:?}", h.kind);
        assert_eq!(h.provider.count("grant"), 1, "{}", h.kind);
    }
}

/// A panic inside a job (a bug in an adapter) fails that attempt like any error, is counted,
/// and the other jobs of the pass still run; the job is retried per its kind's policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_panicking_job_fails_its_attempt_and_the_pass_goes_on() {
    for h in each_backend().await {
        h.provider.on_grant(Behaviour::Panic("adapter bug".into()));
        let r = h
            .engine
            .submit_typed(ask("UPANIC", "auto", "1h"))
            .await
            .unwrap();
        let s = h.engine.run_due(100).await.unwrap();
        assert_eq!(s.panicked.get("provision"), Some(&1), "{}: {s:?}", h.kind);
        assert_eq!(s.retried.get("provision"), Some(&1), "{}: {s:?}", h.kind);
        let job = h
            .engine
            .store()
            .jobs(&JobFilter {
                kind: Some("provision".into()),
                ..Default::default()
            })
            .await
            .unwrap()
            .remove(0);
        assert_eq!(job.status, JobStatus::Pending, "{}", h.kind);
        assert!(
            job.last_error
                .as_deref()
                .is_some_and(|e| e.contains("panicked: adapter bug")),
            "{}: {:?}",
            h.kind,
            job.last_error
        );
        // Fixed: the retry grants.
        h.provider.on_grant(Behaviour::Succeed);
        h.travel(Duration::minutes(5));
        h.run().await;
        let g = h.engine.store().request(r.id).await.unwrap().unwrap();
        assert_eq!(g.status, RequestStatus::Active, "{}", h.kind);
        assert_eq!(h.provider.count("grant"), 2, "{}", h.kind);
    }
}

/// The notifications of one request arrive in the order they were enqueued, even when the first
/// fails once: the second waits for the first's retry instead of overtaking it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn notifications_of_one_request_arrive_in_order() {
    for h in each_backend().await {
        // Baseline: the order without failures.
        let r1 = h
            .engine
            .submit_typed(ask("UORD1", "guarded", "1h"))
            .await
            .unwrap();
        h.run().await;
        let of = |id| {
            h.notifier
                .sent()
                .into_iter()
                .filter(|n| n.request_id() == Some(id))
                .map(|n| n.name())
                .collect::<Vec<_>>()
        };
        let want = of(r1.id);
        assert!(want.len() >= 2, "{}: {want:?}", h.kind);
        // The first delivery of the second request fails once.
        h.notifier.fail_next(1);
        let r2 = h
            .engine
            .submit_typed(ask("UORD2", "guarded", "1h"))
            .await
            .unwrap();
        for _ in 0..4 {
            h.run().await;
            h.travel(Duration::minutes(1));
        }
        assert_eq!(of(r2.id), want, "{}", h.kind);
    }
}

/// The scheduler outlives a panicking job: the job is failed and retried, the scheduler keeps
/// looking at the queue (so `/readyz` stays truthful) and runs the retry once the bug is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_scheduler_survives_a_panicking_job() {
    for h in each_backend().await {
        h.provider.on_grant(Behaviour::Panic("adapter bug".into()));
        let r = h
            .engine
            .submit_typed(ask("USCHED", "auto", "1h"))
            .await
            .unwrap();
        let shutdown = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(
            gatehouse_runtime::JobScheduler::new(h.engine.clone(), h.waker.clone())
                .max_idle(std::time::Duration::from_millis(200))
                .run(shutdown.clone()),
        );
        tokio::time::sleep(std::time::Duration::from_millis(600)).await;
        assert!(!task.is_finished(), "{}: the scheduler died", h.kind);
        assert_eq!(h.provider.count("grant"), 1, "{}", h.kind);
        assert_eq!(
            h.waker.stalled(std::time::Duration::from_millis(200)),
            None,
            "{}",
            h.kind
        );
        h.provider.on_grant(Behaviour::Succeed);
        h.travel(Duration::minutes(5));
        let mut active = false;
        for _ in 0..50 {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            let req = h.engine.store().request(r.id).await.unwrap().unwrap();
            if req.status == RequestStatus::Active {
                active = true;
                break;
            }
        }
        assert!(active, "{}: the retry never ran", h.kind);
        shutdown.cancel();
        task.await.unwrap();
    }
}

/// The test configuration with calls allowed 30 s (slow calls must not time out) and `extra`
/// in `[server]`.
fn slow_config(extra: &str) -> String {
    CONFIG.replacen(
        "call_timeout_secs = 2",
        &format!("call_timeout_secs = 30\n{extra}"),
        1,
    )
}

/// Polls `cond` every 50 ms for up to `limit`; true when it held.
async fn within(limit: std::time::Duration, cond: impl Fn() -> bool) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    cond()
}

/// With the scheduler running, `slow` people's grants take 6 s at the provider; while they are
/// in flight, another grant's expiry comes due. True when it was taken back within 2 s.
async fn expiry_taken_back_beside_slow_grants(h: &Harness, slow: &[&str]) -> bool {
    h.engine
        .submit_typed(ask("UHELD", "auto", "1h"))
        .await
        .unwrap();
    h.run().await;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(
        gatehouse_runtime::JobScheduler::new(h.engine.clone(), h.waker.clone())
            .max_idle(std::time::Duration::from_millis(200))
            .run(shutdown.clone()),
    );
    h.provider
        .on_grant(Behaviour::Delay(std::time::Duration::from_secs(6)));
    for user in slow {
        h.engine
            .submit_typed(ask(user, "auto", "8h"))
            .await
            .unwrap();
    }
    let started = 1 + slow.len();
    assert!(
        within(std::time::Duration::from_secs(3), || h
            .provider
            .count("grant")
            == started)
        .await,
        "{}: the slow grants did not all start",
        h.kind
    );
    // The held grant's expiry comes due while the slow grants run.
    h.travel(Duration::minutes(61));
    h.waker.job_enqueued(h.engine.now());
    let revoked = within(std::time::Duration::from_secs(2), || {
        h.provider.count("revoke") == 1
    })
    .await;
    shutdown.cancel();
    task.await.unwrap();
    revoked
}

/// Chaos finding 4: an expiry that comes due while the scheduler runs a slow job is taken back
/// at once, not after that job. The scheduler used to claim a batch and claim again only when
/// the whole batch was done, so the expiry waited for the slow provisioning call (here 6 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_due_expiry_does_not_wait_for_a_slow_job() {
    for db in backends().await {
        let h = harness_with(db, &slow_config("")).await;
        assert!(
            expiry_taken_back_beside_slow_grants(&h, &["USLOW"]).await,
            "{}: the expiry waited for the slow job",
            h.kind
        );
    }
}

/// Expiries and revocations have worker slots of their own: with every work slot held by slow
/// provisioning calls, a due expiry is still taken back at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expiries_have_slots_of_their_own() {
    for db in backends().await {
        let h = harness_with(db, &slow_config("job_concurrency = 2")).await;
        assert!(
            expiry_taken_back_beside_slow_grants(&h, &["USLOW1", "USLOW2"]).await,
            "{}: the expiry waited for a work slot",
            h.kind
        );
    }
}

/// Issue 11 §5: the GCP provider's `email_domain` is checked at submit, with provisioning's
/// message: a person outside the domain is refused before any approver is pinged, and nothing is
/// stored. The real GCP provider against the fake GCP.
#[tokio::test]
async fn gcp_email_domain_is_refused_at_submit_before_any_approver_is_asked() {
    use provider_gcp_iam::{GcpIamConfig, GcpIamProvider};
    const GCP_CONFIG: &str = r#"
[[resources]]
id = "gcp"
provider = "gcp-iam"
default_duration = "1h"
max_duration = "7d"
approval = { mode = "approvers", approvers = { users = ["UAPP1"] }, required = 1 }
settings = { project = "p-test", role = "roles/storage.objectViewer", email_domain = "corp.example" }
"#;
    for db in backends().await {
        let gcp = testkit::gcp::FakeGcp::start().await;
        gcp.add_project("p-test");
        let tokens =
            gcp_auth::ServiceAccountTokenSource::from_json(&gcp.service_account_key_json())
                .unwrap();
        let provider = Arc::new(
            GcpIamProvider::new(
                GcpIamConfig {
                    iam_url: gcp.url(),
                    crm_url: gcp.url(),
                    ..Default::default()
                },
                Arc::new(tokens),
            )
            .unwrap(),
        );
        let notifier = Arc::new(RecordingNotifier::new());
        let mut providers: HashMap<String, Arc<dyn Provider>> = HashMap::new();
        providers.insert("gcp-iam".into(), provider);
        let app = App::build(
            Config::from_toml(GCP_CONFIG, "test.toml").unwrap(),
            Env {
                database_url: db.url.clone(),
                ..Env::default()
            },
            Overrides {
                providers,
                notifier: Some(notifier.clone()),
                clock: Some(Arc::new(ManualClock::starting_now())),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let err = app
            .engine
            .submit_typed(ask("UOUTSIDER", "gcp", "1h"))
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "GCP access is only available to @corp.example accounts.",
            "{}",
            db.kind
        );
        app.engine.drain(10).await.unwrap();
        assert!(notifier.sent().is_empty(), "{}: nobody was pinged", db.kind);
        let stored = app
            .engine
            .store()
            .requests(&Default::default())
            .await
            .unwrap();
        assert!(stored.is_empty(), "{}: nothing stored", db.kind);

        // Inside the domain: filed, and the approver is asked.
        let mut inside = ask("UINSIDER", "gcp", "1h");
        inside.subject.email = Some(Email::parse("insider@corp.example").unwrap());
        app.engine.submit_typed(inside).await.unwrap();
    }
}

/// Issue 11 §6: a process without a chat adapter (the cleanup binary, an embedding service)
/// leaves stored chat deliveries to the servers: it does not claim them, so they keep every
/// attempt for the process that can answer the person.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cleanup_binary_leaves_inbox_jobs_to_the_servers() {
    for h in each_backend().await {
        let id = h
            .engine
            .enqueue_inbox(access_core::jobs::InboxItem {
                source: "slack".into(),
                key: "event:T1:Ev1".into(),
                payload: "{}".into(),
            })
            .await
            .unwrap()
            .expect("stored once");
        h.travel(Duration::minutes(5));
        let summary = h.run().await;
        assert_eq!(summary.claimed, 0, "{}", h.kind);
        let jobs = h
            .engine
            .store()
            .jobs(&JobFilter {
                kind: Some("inbox".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        let job = jobs.iter().find(|j| j.id == id).expect("the inbox job");
        assert_eq!(job.status, JobStatus::Pending, "{}", h.kind);
        assert_eq!(job.attempts, 0, "{}: no attempt spent", h.kind);
    }
}

/// An inbox handler that files one request per item and fails its first run after filing (as
/// a process killed between filing and completing the job would leave it).
#[derive(Debug)]
struct FilesThenFailsOnce {
    engine: std::sync::Weak<Engine>,
    runs: std::sync::atomic::AtomicUsize,
    /// Files break-glass requests (`request … --emergency`) on resource `glass` instead.
    emergency: bool,
}

#[async_trait::async_trait]
impl access_core::ports::InboxHandler for FilesThenFailsOnce {
    async fn handle(
        &self,
        _item: &access_core::jobs::InboxItem,
    ) -> Result<(), access_core::ports::InboxError> {
        let engine = self.engine.upgrade().expect("engine alive");
        let filed = if self.emergency {
            engine
                .submit_emergency_typed(ask("UREPLAY", "glass", "1h"))
                .await
        } else {
            engine.submit_typed(ask("UREPLAY", "guarded", "1h")).await
        };
        let run = self.runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        match filed {
            Ok(_) if run == 0 => Err(access_core::ports::InboxError::Transient(
                "the process died before the job was completed".into(),
            )),
            Ok(_) => Ok(()),
            Err(e) => Err(access_core::ports::InboxError::Permanent(e.to_string())),
        }
    }
}

/// Chaos finding 12: a slash command whose inbox job runs again (after a crash between filing
/// the request and completing the job) files its request once. Before, a re-run after the first
/// request had been approved filed a second, pending request, which blocked the person's next
/// request for the resource ("You already have a pending request").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_inbox_job_files_its_request_once() {
    let mut harnesses = Vec::new();
    for db in backends().await {
        harnesses.push(harness(db).await);
    }
    // With a limit of one request an hour, the re-run must not be refused as the second.
    for db in backends().await {
        let limited = format!("[server.rate_limits]\nrequests_per_person = 1\n{CONFIG}");
        harnesses.push(harness_with(db, &limited).await);
    }
    for h in harnesses {
        let handler = Arc::new(FilesThenFailsOnce {
            engine: Arc::downgrade(&h.engine),
            runs: std::sync::atomic::AtomicUsize::new(0),
            emergency: false,
        });
        h.engine.set_inbox_handler(handler.clone());
        let job = h
            .engine
            .enqueue_inbox(access_core::jobs::InboxItem {
                source: "slack".into(),
                key: "command:T1:trigger-1".into(),
                payload: "{}".into(),
            })
            .await
            .unwrap()
            .expect("stored once");
        h.engine.run_job_now(job).await.unwrap();
        let filed = h
            .engine
            .store()
            .requests(&Default::default())
            .await
            .unwrap();
        assert_eq!(filed.len(), 1, "{}", h.kind);
        // Approved and over before the job runs again.
        let r = h
            .engine
            .approve(filed[0].id, approver("UAPP1"))
            .await
            .unwrap();
        h.run().await;
        h.engine
            .revoke_grant(r.grant_id.unwrap(), approver("UREPLAY"))
            .await
            .unwrap();
        h.travel(Duration::minutes(10));
        h.run().await;
        assert!(
            handler.runs.load(std::sync::atomic::Ordering::SeqCst) >= 2,
            "{}: the job ran again",
            h.kind
        );
        let filed = h
            .engine
            .store()
            .requests(&Default::default())
            .await
            .unwrap();
        assert_eq!(
            filed.iter().map(|r| r.status).collect::<Vec<_>>(),
            vec![RequestStatus::Revoked],
            "{}: one request",
            h.kind
        );
        // And the re-run answered with it (a refusal would have failed the job for good).
        let dead = h.engine.dead_jobs().await.unwrap();
        assert!(dead.is_empty(), "{}: {dead:?}", h.kind);
    }
}

/// The same for break-glass: a re-run of the inbox job that granted emergency access, after that
/// grant ended, grants nothing more. Before, it granted again and sent a second loud notice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_break_glass_job_grants_once() {
    let config = format!(
        "{CONFIG}\n[[resources]]\nid = \"glass\"\nprovider = \"test\"\nmax_duration = \"8h\"\n\
         emergency = true\napproval = {{ mode = \"approvers\", approvers = {{ users = [\"UAPP1\"] }} }}\n"
    );
    for db in backends().await {
        let h = harness_with(db, &config).await;
        let handler = Arc::new(FilesThenFailsOnce {
            engine: Arc::downgrade(&h.engine),
            runs: std::sync::atomic::AtomicUsize::new(0),
            emergency: true,
        });
        h.engine.set_inbox_handler(handler.clone());
        let job = h
            .engine
            .enqueue_inbox(access_core::jobs::InboxItem {
                source: "slack".into(),
                key: "command:T1:glass-1".into(),
                payload: "{}".into(),
            })
            .await
            .unwrap()
            .expect("stored once");
        h.engine.run_job_now(job).await.unwrap();
        h.run().await;
        assert_eq!(h.provider.count("grant"), 1, "{}", h.kind);
        // The emergency grant ends (1 h by default) before the job runs again.
        h.travel(Duration::minutes(61));
        h.run().await;
        h.travel(Duration::minutes(10));
        h.run().await;
        assert!(
            handler.runs.load(std::sync::atomic::Ordering::SeqCst) >= 2,
            "{}: the job ran again",
            h.kind
        );
        assert_eq!(h.provider.count("grant"), 1, "{}: granted again", h.kind);
        let notices = h
            .notifier
            .names()
            .into_iter()
            .filter(|n| *n == "emergency_access_granted")
            .count();
        assert_eq!(notices, 1, "{}", h.kind);
        assert!(h.engine.dead_jobs().await.unwrap().is_empty(), "{}", h.kind);
    }
}

/// An inbox handler that counts the deliveries it is running at once and in all, holding each
/// for a while; the delivery keyed `hold` waits until `release` is notified, the first time only.
#[derive(Debug, Default)]
struct SlowDeliveries {
    running: std::sync::atomic::AtomicUsize,
    most_at_once: std::sync::atomic::AtomicUsize,
    runs: std::sync::Mutex<HashMap<String, usize>>,
    hold_started: tokio::sync::Notify,
    release: tokio::sync::Notify,
}

impl SlowDeliveries {
    fn runs_of(&self, key: &str) -> usize {
        self.runs.lock().unwrap().get(key).copied().unwrap_or(0)
    }
}

#[async_trait::async_trait]
impl access_core::ports::InboxHandler for SlowDeliveries {
    async fn handle(
        &self,
        item: &access_core::jobs::InboxItem,
    ) -> Result<(), access_core::ports::InboxError> {
        use std::sync::atomic::Ordering::SeqCst;
        let first = {
            let mut runs = self.runs.lock().unwrap();
            let n = runs.entry(item.key.clone()).or_default();
            *n += 1;
            *n == 1
        };
        let now = self.running.fetch_add(1, SeqCst) + 1;
        self.most_at_once.fetch_max(now, SeqCst);
        if item.key == "hold" && first {
            self.hold_started.notify_one();
            self.release.notified().await;
        } else {
            tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        }
        self.running.fetch_sub(1, SeqCst);
        Ok(())
    }
}

async fn store_claimed(h: &Harness, key: &str) -> access_core::jobs::Job {
    h.engine
        .enqueue_inbox_claimed(access_core::jobs::InboxItem {
            source: "slack".into(),
            key: key.into(),
            payload: "{}".into(),
        })
        .await
        .unwrap()
        .expect("stored once")
}

/// Ninth performance round: a burst of chat deliveries taken by this process runs
/// `inbox_concurrency` at once; the rest wait their turn and all run. Before, every one ran at
/// once, and 2,000 commands a second grew the server to 1.8 GB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_chat_deliveries_runs_a_bounded_number_at_once() {
    for db in backends().await {
        let config = CONFIG.replacen("[server]\n", "[server]\ninbox_concurrency = 3\n", 1);
        let h = harness_with(db, &config).await;
        let handler = Arc::new(SlowDeliveries::default());
        h.engine.set_inbox_handler(handler.clone());
        // Stored first, then all started together: a slow store under a busy test machine
        // must not let the first handlers finish before the third starts.
        let mut jobs = Vec::new();
        for i in 0..12 {
            jobs.push(store_claimed(&h, &format!("command:T1:burst-{i}")).await);
        }
        let runs: Vec<_> = jobs
            .into_iter()
            .map(|job| {
                let engine = h.engine.clone();
                tokio::spawn(async move { engine.run_claimed(job).await })
            })
            .collect();
        for run in runs {
            run.await.unwrap().unwrap();
        }
        assert_eq!(
            handler
                .most_at_once
                .load(std::sync::atomic::Ordering::SeqCst),
            3,
            "{}",
            h.kind
        );
        for i in 0..12 {
            assert_eq!(
                handler.runs_of(&format!("command:T1:burst-{i}")),
                1,
                "{}",
                h.kind
            );
        }
        let open = h
            .engine
            .jobs(&JobFilter {
                kind: Some("inbox".into()),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_iter()
            .filter(|j| j.status != JobStatus::Done)
            .count();
        assert_eq!(open, 0, "{}: every delivery settled", h.kind);
    }
}

/// A delivery that waited for a slot until its lease lapsed is left to the scheduler that took
/// it over: it runs once, not once there and again here when the slot frees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_whose_lease_lapsed_while_waiting_for_a_slot_runs_once() {
    for db in backends().await {
        let config = CONFIG.replacen(
            "[server]\n",
            "[server]\ninbox_concurrency = 1\njob_lease_secs = 1\n",
            1,
        );
        let h = harness_with(db, &config).await;
        let handler = Arc::new(SlowDeliveries::default());
        h.engine.set_inbox_handler(handler.clone());
        let holder = store_claimed(&h, "hold").await;
        let waiter = store_claimed(&h, "command:T1:waits").await;
        let engine = h.engine.clone();
        let holding = tokio::spawn(async move { engine.run_claimed(holder).await });
        handler.hold_started.notified().await;
        let engine = h.engine.clone();
        let waiting = tokio::spawn(async move { engine.run_claimed(waiter).await });
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert_eq!(
            handler.runs_of("command:T1:waits"),
            0,
            "{}: it waits for the only slot",
            h.kind
        );
        // Its lease (1 s, wall clock) lapses; the scheduler takes it over once it is due.
        tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
        h.travel(Duration::seconds(10));
        h.run().await;
        assert_eq!(handler.runs_of("command:T1:waits"), 1, "{}", h.kind);
        handler.release.notify_one();
        let _ = holding.await.unwrap();
        waiting.await.unwrap().unwrap();
        assert_eq!(
            handler.runs_of("command:T1:waits"),
            1,
            "{}: not run again once the slot freed",
            h.kind
        );
    }
}

async fn done_jobs(h: &Harness) -> usize {
    h.engine
        .jobs(&JobFilter {
            status: Some(JobStatus::Done),
            limit: Some(1000),
            ..Default::default()
        })
        .await
        .unwrap()
        .len()
}

/// Finished jobs are deleted once older than `job_retention_days`, by the purge both binaries
/// run; live jobs and the audit trail stay, and a chat delivery is still recognised as a replay
/// while its job is kept. Before, finished jobs were kept for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_jobs_are_purged_after_their_retention() {
    for db in backends().await {
        let config = CONFIG.replacen("[server]\n", "[server]\njob_retention_days = 2\n", 1);
        let h = harness_with(db, &config).await;
        let handler = Arc::new(SlowDeliveries::default());
        h.engine.set_inbox_handler(handler.clone());
        // A delivery, run and finished here; a request granted and expired; one still active.
        let delivery = store_claimed(&h, "command:T1:kept").await;
        h.engine.run_claimed(delivery).await.unwrap();
        h.engine
            .submit_typed(ask("U1", "auto", "30m"))
            .await
            .unwrap();
        h.run().await;
        h.travel(Duration::hours(1));
        h.run().await;
        let finished = done_jobs(&h).await;
        assert!(finished >= 4, "{}: {finished} finished jobs", h.kind);
        let events = h.kinds().await.len();

        // A day later: within the retention, nothing goes, and the delivery is still known.
        h.travel(Duration::days(1));
        let active = h
            .engine
            .submit_typed(ask("U2", "auto", "8h"))
            .await
            .unwrap();
        h.run().await;
        let finished = done_jobs(&h).await;
        assert_eq!(
            gatehouse_runtime::maintenance::purge_finished_jobs(&h.app)
                .await
                .unwrap(),
            0,
            "{}",
            h.kind
        );
        let replay = h
            .engine
            .enqueue_inbox_claimed(access_core::jobs::InboxItem {
                source: "slack".into(),
                key: "command:T1:kept".into(),
                payload: "{}".into(),
            })
            .await
            .unwrap();
        assert!(replay.is_none(), "{}: the replay is recognised", h.kind);

        // Past the retention of the first jobs (not of the second request's): those go.
        h.travel(Duration::days(1) + Duration::hours(2));
        let purged = gatehouse_runtime::maintenance::purge_finished_jobs(&h.app)
            .await
            .unwrap();
        assert!(purged >= 4, "{}: purged {purged}", h.kind);
        assert_eq!(
            done_jobs(&h).await,
            finished - purged as usize,
            "{}",
            h.kind
        );
        // The active grant's expiry is still pending and still runs.
        let pending = h
            .engine
            .jobs(&JobFilter {
                status: Some(JobStatus::Pending),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(
            pending.iter().any(|j| matches!(j.kind, access_core::jobs::JobKind::Expire { grant_id } if Some(grant_id) == active.grant_id)),
            "{}: {pending:?}",
            h.kind
        );
        assert!(
            h.kinds().await.len() > events,
            "{}: the audit trail stays",
            h.kind
        );
        assert!(h.engine.store().verify_audit_chain().await.unwrap().ok);
        assert_eq!(
            gatehouse_runtime::maintenance::purge_finished_jobs(&h.app)
                .await
                .unwrap(),
            0,
            "{}: nothing left to purge",
            h.kind
        );
    }
}

/// `job_retention_days = 0` keeps finished jobs for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retention_of_zero_keeps_finished_jobs() {
    for db in backends().await {
        let config = CONFIG.replacen("[server]\n", "[server]\njob_retention_days = 0\n", 1);
        let h = harness_with(db, &config).await;
        h.engine
            .submit_typed(ask("U1", "auto", "30m"))
            .await
            .unwrap();
        h.run().await;
        h.travel(Duration::days(400));
        h.run().await;
        let finished = done_jobs(&h).await;
        assert!(finished > 0, "{}", h.kind);
        assert_eq!(
            gatehouse_runtime::maintenance::purge_finished_jobs(&h.app)
                .await
                .unwrap(),
            0,
            "{}",
            h.kind
        );
        assert_eq!(done_jobs(&h).await, finished, "{}", h.kind);
    }
}

/// An inbox handler that files a request needing approval (so its run writes notifications to
/// deliver here), noting how many notifications had been sent when each delivery started.
#[derive(Debug)]
struct FilesForApproval {
    engine: std::sync::Weak<Engine>,
    notifier: Arc<RecordingNotifier>,
    sent_at_start: std::sync::Mutex<HashMap<String, usize>>,
}

#[async_trait::async_trait]
impl access_core::ports::InboxHandler for FilesForApproval {
    async fn handle(
        &self,
        item: &access_core::jobs::InboxItem,
    ) -> Result<(), access_core::ports::InboxError> {
        self.sent_at_start
            .lock()
            .unwrap()
            .insert(item.key.clone(), self.notifier.names().len());
        let engine = self.engine.upgrade().expect("engine alive");
        let user = item
            .key
            .rsplit(':')
            .next()
            .unwrap_or_default()
            .to_uppercase();
        engine
            .submit_typed(ask(&user, "guarded", "1h"))
            .await
            .map(|_| ())
            .map_err(|e| access_core::ports::InboxError::Permanent(e.to_string()))
    }
}

/// The bound covers a delivery's notifications too: the next delivery starts once the first
/// one's messages are sent, so under overload the work in flight stays bounded. Given back before
/// them, the deliveries waiting for a notification slot were bounded by nothing (430 MB at 2,000
/// commands a second).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_holds_its_slot_until_its_notifications_are_sent() {
    for db in backends().await {
        let config = CONFIG.replacen("[server]\n", "[server]\ninbox_concurrency = 1\n", 1);
        let h = harness_with(db, &config).await;
        let handler = Arc::new(FilesForApproval {
            engine: Arc::downgrade(&h.engine),
            notifier: h.notifier.clone(),
            sent_at_start: Default::default(),
        });
        h.engine.set_inbox_handler(handler.clone());
        h.notifier.delay_each(std::time::Duration::from_millis(400));
        let first = store_claimed(&h, "command:T1:ufirst").await;
        let second = store_claimed(&h, "command:T1:usecond").await;
        let engine = h.engine.clone();
        let first_run = tokio::spawn(async move { engine.run_claimed(first).await });
        let engine = h.engine.clone();
        let second_run = tokio::spawn(async move { engine.run_claimed(second).await });
        let first_claimed = first_run.await.unwrap().unwrap().claimed;
        assert!(
            first_claimed > 1,
            "{}: it had notifications to send",
            h.kind
        );
        second_run.await.unwrap().unwrap();
        // Either may take the slot first; the other must start after all of its messages.
        let mut seen: Vec<usize> = handler
            .sent_at_start
            .lock()
            .unwrap()
            .values()
            .copied()
            .collect();
        seen.sort_unstable();
        assert_eq!(
            seen,
            vec![0, first_claimed - 1],
            "{}: the later delivery started before the earlier one's notifications were sent",
            h.kind
        );
    }
}
