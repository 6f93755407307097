//! Issue 12, item 2: lifecycles through the real adapters (Slack notifier, Cloud Connexa and GCP
//! IAM providers, BigQuery sink) against the fakes, with one seeded fault injector failing a
//! share of every fake's calls (5xx, 429, time-outs, connection resets, 409 etag conflicts,
//! not-found windows after a create, insertAll row errors). On SQLite and PostgreSQL.
//!
//! What must hold, whatever fails:
//! - every approved request ends `active` or `failed`, and the requester was told (a DM on the
//!   fake Slack: "Access granted", or "could not be set up" with the reason);
//! - every revocation eventually succeeds: nothing of the grant is left at the providers;
//! - after one reconcile pass no orphan service account, key, binding or membership;
//! - the BigQuery export holds every audit event exactly once.
//!
//! `GATEHOUSE_FAULTS_LONG=1` runs more lifecycles at several rates (`make faults`); the seed is
//! `GATEHOUSE_FAULTS_SEED` (default fixed) so a failing run can be replayed. Each run prints a
//! table: faults injected by service and kind, and the outcomes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use access_core::ports::{AuditFilter, GrantFilter, JobFilter, Provider};
use access_core::request::RequestKind;
use access_core::{Actor, Email, GrantStatus, RequestStatus, Subject};
use audit_bigquery::{BigQueryConfig, BigQuerySink};
use gatehouse_runtime::compose::Overrides;
use gatehouse_runtime::config::Env;
use gatehouse_runtime::maintenance::reconcile;
use gatehouse_runtime::{App, Config};
use provider_cloudconnexa::{ClientConfig, CloudConnexaProvider, ProviderConfig};
use provider_gcp_iam::{GcpIamConfig, GcpIamProvider};
use slack_adapter::SlackConfig;
use slack_adapter::notifier::SlackNotifier;
use testkit::bigquery::FakeBigQuery;
use testkit::cloudconnexa::{FakeCloudConnexa, FakeConfig};
use testkit::db::{TestDb, backends};
use testkit::faults::{FaultInjector, FaultKind, FaultPlan};
use testkit::gcp::FakeGcp;
use testkit::provider::ManualClock;
use testkit::slack::{FakeSlack, FakeUser, dm_id};
use testkit::submission::{Ask, SubmitTyped};

const PROJECT: &str = "gatehouse-faults";
const BQ_PROJECT: &str = "gatehouse-audit";
const DATASET: &str = "ci_chat_bot";

const CONFIG: &str = r#"
[server]
call_timeout_secs = 4

[[resources]]
id = "vpn"
provider = "cloudconnexa"
default_duration = "1h"
max_duration = "8h"
approval = { mode = "auto" }
[resources.settings]
network = "dev-network"

[[resources]]
id = "gcp"
provider = "gcp-iam"
default_duration = "1h"
max_duration = "8h"
extendable = false
approval = { mode = "auto" }
[resources.settings]
project = "gatehouse-faults"
role = "projects/gatehouse-faults/roles/chat_bot_user"
email_domain = "example.com"
"#;

struct World {
    app: App,
    clock: Arc<ManualClock>,
    slack: FakeSlack,
    cc: FakeCloudConnexa,
    gcp: FakeGcp,
    bq: FakeBigQuery,
    _db: TestDb,
}

fn user_id(i: usize) -> String {
    format!("UF{i:04}")
}

fn email(i: usize) -> String {
    format!("person{i}@example.com")
}

async fn world(db: TestDb, people: usize) -> World {
    let slack = FakeSlack::start().await;
    for i in 0..people {
        slack.add_user(FakeUser::new(&user_id(i), &format!("person{i}")).email(&email(i)));
    }
    let cc = FakeCloudConnexa::start(FakeConfig::fast()).await;
    cc.seed_network("dev-network");
    let gcp = FakeGcp::start().await;
    gcp.add_project(PROJECT);
    let bq = FakeBigQuery::start().await;
    bq.create_dataset(BQ_PROJECT, DATASET);

    let clock = Arc::new(ManualClock::starting_now());
    let mut client = ClientConfig::new(cc.url(), cc.client_id(), cc.client_secret());
    client.request_timeout = Duration::from_secs(2);
    let cc_provider = Arc::new(CloudConnexaProvider::new(ProviderConfig::new(client)).unwrap());
    let tokens =
        gcp_auth::ServiceAccountTokenSource::from_json(&gcp.service_account_key_json()).unwrap();
    let gcp_provider = Arc::new(
        GcpIamProvider::new(
            GcpIamConfig {
                iam_url: gcp.url(),
                crm_url: gcp.url(),
                // One reconcile pass removes an orphan at once (production waits an hour).
                orphan_min_age: chrono::Duration::zero(),
                ..Default::default()
            }
            .with_fast_retries(20),
            Arc::new(tokens),
        )
        .unwrap()
        .with_clock(clock.clone()),
    );
    let mut slack_cfg = SlackConfig::new(slack.token(), "signing-secret", &slack.api_url());
    slack_cfg.http_timeout = Duration::from_secs(2);
    let notifier = Arc::new(SlackNotifier::new(&slack_cfg));
    let mut bq_cfg = BigQueryConfig::new(BQ_PROJECT).with_base_url(bq.base_url());
    bq_cfg.request_timeout = Duration::from_secs(2);
    let sink = Arc::new(
        BigQuerySink::new(bq_cfg, Arc::new(gcp_auth::StaticToken("ya29.fake".into()))).unwrap(),
    );
    sink.create_tables().await.unwrap();

    let mut providers: HashMap<String, Arc<dyn Provider>> = HashMap::new();
    providers.insert("cloudconnexa".into(), cc_provider.clone());
    providers.insert("gcp-iam".into(), gcp_provider.clone());
    let mut app = App::build(
        Config::from_toml(CONFIG, "faults.toml").unwrap(),
        Env {
            database_url: db.url.clone(),
            ..Env::default()
        },
        Overrides {
            providers,
            notifier: Some(notifier),
            audit_sink: Some(sink.clone()),
            clock: Some(clock.clone()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    app.adapters.cloudconnexa = Some(cc_provider);
    app.adapters.gcp_iam = Some(gcp_provider);
    app.adapters.bigquery = Some(sink);
    World {
        app,
        clock,
        slack,
        cc,
        gcp,
        bq,
        _db: db,
    }
}

impl World {
    fn inject(&self, inj: &Arc<FaultInjector>) {
        self.slack.set_fault_injector(Some(inj.clone()));
        self.cc.set_fault_injector(Some(inj.clone()));
        self.gcp.set_fault_injector(Some(inj.clone()));
        self.bq.set_fault_injector(Some(inj.clone()));
    }

    /// Jobs due within two hours (pending or running).
    async fn pending_jobs(&self) -> usize {
        let store = self.app.engine.store();
        let horizon = self.app.engine.now() + chrono::Duration::hours(2);
        let mut n = 0;
        for status in [
            access_core::jobs::JobStatus::Pending,
            access_core::jobs::JobStatus::Running,
        ] {
            n += store
                .jobs(&JobFilter {
                    status: Some(status),
                    ..Default::default()
                })
                .await
                .unwrap()
                .iter()
                // The grants' expiry jobs (and their reminders) wait hours: not work left now.
                .filter(|j| j.run_at < horizon)
                .count();
        }
        n
    }

    /// Runs the queue, travelling past retry back-offs, until nothing is left to do (or the
    /// deadline, which fails the test).
    async fn settle(&self, what: &str, deadline: Duration) {
        let started = Instant::now();
        loop {
            self.app.engine.drain(20).await.unwrap();
            if self.pending_jobs().await == 0 {
                return;
            }
            assert!(
                started.elapsed() < deadline,
                "{what}: jobs still pending after {deadline:?}"
            );
            // Past the queue's retry back-offs, far from the grants' 8 h expiry.
            self.clock.advance(chrono::Duration::minutes(1));
        }
    }
}

#[derive(Debug, Default)]
struct Outcome {
    lifecycles: usize,
    active: usize,
    failed: usize,
    granted_dms: usize,
    keys_delivered: usize,
    keys_not_delivered: usize,
    failed_dms: usize,
    duplicate_dms: usize,
    ended_dms: usize,
    orphans_before_reconcile: usize,
    reconcile_repairs: usize,
    audit_events: usize,
    exported_rows: usize,
    dead_jobs: usize,
    secs: f64,
}

/// Everything of the grants left at the providers: Gatehouse service accounts, their keys,
/// bindings naming them, and Cloud Connexa access-group memberships.
fn leftovers(w: &World) -> Vec<String> {
    let mut out = Vec::new();
    for sa in w.gcp.service_accounts(PROJECT) {
        out.push(format!(
            "service account {} ({} keys)",
            sa.email,
            sa.keys.len()
        ));
    }
    let policy = w.gcp.policy(PROJECT);
    for b in policy["bindings"].as_array().cloned().unwrap_or_default() {
        for m in b["members"].as_array().cloned().unwrap_or_default() {
            let m = m.as_str().unwrap_or_default().to_string();
            if m.contains(&format!("@{PROJECT}.iam.gserviceaccount.com")) {
                out.push(format!("binding {} {m}", b["role"]));
            }
        }
    }
    let default_group = w.cc.default_group_id();
    for u in w.cc.users() {
        for g in &u.secondary_group_ids {
            if *g != default_group {
                out.push(format!("membership {} in {g}", u.email));
            }
        }
    }
    out
}

async fn run(db: TestDb, lifecycles: usize, rate: f64, seed: u64) -> (Outcome, String) {
    let kind = db.kind;
    let started = Instant::now();
    let w = world(db, lifecycles).await;
    let inj = FaultInjector::new(FaultPlan {
        hang: Duration::from_secs(5),
        // Each call-specific kind (409, not-found window, insertErrors) at least twice.
        at_least: 2,
        ..FaultPlan::new(rate, seed)
    });
    w.inject(&inj);

    let mut requests = Vec::new();
    for i in 0..lifecycles {
        let resource = if i % 2 == 0 { "vpn" } else { "gcp" };
        let r = w
            .app
            .engine
            .submit_typed(Ask {
                subject: Subject {
                    team_id: "T1".into(),
                    user_id: user_id(i),
                    email: Some(Email::parse(&email(i)).unwrap()),
                    name: format!("person{i}"),
                },
                resource: resource.into(),
                duration: Some("8h".into()),
                justification: "fault drill".into(),
                kind: RequestKind::New,
            })
            .await
            .unwrap();
        assert_eq!(r.status, RequestStatus::Approved, "{kind}");
        requests.push(r);
    }
    // Generous: the machine is shared, and every time-out costs the client's wait.
    let deadline = Duration::from_secs(240.max(lifecycles as u64 * 10));
    w.settle("provisioning", deadline).await;

    let mut out = Outcome {
        lifecycles,
        ..Default::default()
    };
    let store = w.app.engine.store();
    for (i, r) in requests.iter().enumerate() {
        let now = store.request(r.id).await.unwrap().unwrap();
        let dms: Vec<String> = w
            .slack
            .dms_to(&user_id(i))
            .iter()
            .map(|m| m.all_text())
            .collect();
        let granted = dms.iter().filter(|t| t.contains("Access granted")).count();
        let failed = dms
            .iter()
            .filter(|t| t.contains("could not be set up"))
            .count();
        match now.status {
            RequestStatus::Active => {
                out.active += 1;
                if i % 2 == 1 {
                    // A GCP grant: the key file reached the person, or they were told it did
                    // not (one "granted" message either way, checked above).
                    let files = w
                        .slack
                        .files()
                        .iter()
                        .filter(|f| f.channel_id.as_deref() == Some(dm_id(&user_id(i)).as_str()))
                        .count();
                    let not_delivered = dms
                        .iter()
                        .filter(|t| t.contains("Key file not delivered"))
                        .count();
                    assert!(
                        files + not_delivered >= 1,
                        "{kind}: request {i}: no key file and no word about it: {dms:?}"
                    );
                    out.keys_delivered += files.min(1);
                    out.keys_not_delivered += not_delivered.min(1);
                }
                assert!(
                    granted >= 1,
                    "{kind}: request {i} active, no granted DM: {dms:?}"
                );
                out.granted_dms += granted;
            }
            RequestStatus::Failed => {
                out.failed += 1;
                let why = now.failure.clone().unwrap_or_default();
                assert!(
                    !why.is_empty(),
                    "{kind}: request {i} failed without a reason"
                );
                assert!(
                    failed >= 1,
                    "{kind}: request {i} failed ({why}), requester not told: {dms:?}"
                );
                out.failed_dms += failed;
            }
            other => panic!("{kind}: request {i} ended {other:?}, not active or failed"),
        }
        out.duplicate_dms += granted.saturating_sub(1) + failed.saturating_sub(1);
        // A retried post looks for its earlier attempt's message first (docs/reliability.md, "One
        // Slack message per notification"): a lost answer must not double a DM.
        assert!(
            granted <= 1 && failed <= 1,
            "{kind}: request {i}: a DM posted twice: {dms:?}"
        );
    }

    // Every live grant is revoked by its holder; the revocations must all go through.
    let live = store
        .grants(&GrantFilter {
            live_only: true,
            limit: Some(10_000),
            ..Default::default()
        })
        .await
        .unwrap();
    for g in &live {
        w.app
            .engine
            .revoke_grant(
                g.id,
                Actor::User {
                    team_id: "T1".into(),
                    user_id: g.subject.user_id.clone(),
                    name: g.subject.name.clone(),
                },
            )
            .await
            .unwrap();
    }
    w.settle("revocation", deadline).await;
    for g in &live {
        let g = store.grant(g.id).await.unwrap().unwrap();
        assert_eq!(g.status, GrantStatus::Revoked, "{kind}: grant {}", g.id);
    }
    for g in &live {
        let told = w
            .slack
            .dms_to(&g.subject.user_id)
            .iter()
            .any(|m| m.all_text().contains("revoked"));
        assert!(
            told,
            "{kind}: {} was not told the access ended",
            g.subject.user_id
        );
    }
    for g in &live {
        let revoked: Vec<String> = w
            .slack
            .dms_to(&g.subject.user_id)
            .iter()
            .map(|m| m.all_text())
            .filter(|t| t.contains("revoked"))
            .collect();
        assert_eq!(
            revoked.len(),
            1,
            "{kind}: {}: one \"revoked\" DM per grant: {revoked:?}",
            g.subject.user_id
        );
    }
    out.ended_dms = (0..lifecycles)
        .map(|i| {
            w.slack
                .dms_to(&user_id(i))
                .iter()
                .filter(|m| m.all_text().contains("revoked"))
                .count()
        })
        .sum();
    out.dead_jobs = w.app.engine.dead_jobs().await.unwrap().len();

    // One reconcile pass, with the faults off (the pass is what is measured, not its retries).
    inj.set_enabled(false);
    out.orphans_before_reconcile = leftovers(&w).len();
    let report = reconcile(&w.app).await;
    assert!(report.is_clean(), "{kind}: {:?}", report.errors);
    out.reconcile_repairs = report.repairs;
    w.settle("after reconcile", Duration::from_secs(60)).await;
    let left = leftovers(&w);
    assert!(
        left.is_empty(),
        "{kind}: left after one reconcile pass: {left:?}"
    );

    // The export: every audit event exactly once in the events table.
    let events = store
        .audit_events(&AuditFilter {
            limit: Some(100_000),
            ..Default::default()
        })
        .await
        .unwrap();
    let rows = w.bq.rows(BQ_PROJECT, DATASET, "access_events");
    let mut per_event: BTreeMap<String, usize> = BTreeMap::new();
    for r in &rows {
        let id = r
            .get("id")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string();
        *per_event.entry(id).or_default() += 1;
    }
    for e in &events {
        let n = per_event.remove(&e.record.id.to_string()).unwrap_or(0);
        assert_eq!(
            n, 1,
            "{kind}: event {} ({:?}) exported {n} times",
            e.record.id, e.record.kind
        );
    }
    assert!(
        per_event.is_empty(),
        "{kind}: rows for unknown events: {per_event:?}"
    );
    out.audit_events = events.len();
    out.exported_rows = rows.len();
    out.secs = started.elapsed().as_secs_f64();
    let table = inj.table();
    // At the issue's 20 % (and above) the run must have seen every kind; a 5 % run may not.
    for k in FaultKind::ALL.into_iter().filter(|_| rate >= 0.2) {
        assert!(
            inj.count_of(k) > 0,
            "{kind}: no {} injected:\n{table}",
            k.name()
        );
    }
    w.app.store.close().await;
    (out, table)
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// The short form (`make test`): a few dozen lifecycles at 20 % per database. The long form
/// (`GATEHOUSE_FAULTS_LONG=1`, `make faults`): more lifecycles at 5, 20 and 35 %.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lifecycles_survive_injected_faults() {
    let long = std::env::var("GATEHOUSE_FAULTS_LONG").is_ok_and(|v| v == "1");
    let seed = env_u64("GATEHOUSE_FAULTS_SEED").unwrap_or(12);
    let (lifecycles, rates): (usize, Vec<f64>) = if long {
        (
            env_u64("GATEHOUSE_FAULTS_LIFECYCLES").unwrap_or(80) as usize,
            vec![0.05, 0.20, 0.35],
        )
    } else {
        (24, vec![0.20])
    };
    for rate in rates {
        for db in backends().await {
            let kind = db.kind;
            let (o, table) = run(db, lifecycles, rate, seed).await;
            eprintln!(
                "\n== faults: {kind}, rate {:.0} %, seed {seed}, {:.1} s ==\n{table}\
                 outcomes: {} lifecycles, {} active, {} failed (told: {} granted DMs, {} failure DMs, \
                 {} duplicates), {} revoked DMs for {} grants, {} dead jobs, {} leftovers before reconcile, \
                 {} repairs, {} audit events = {} exported rows; GCP keys: {} delivered, {} not \
                 (told)\n",
                rate * 100.0,
                o.secs,
                o.lifecycles,
                o.active,
                o.failed,
                o.granted_dms,
                o.failed_dms,
                o.duplicate_dms,
                o.ended_dms,
                o.active,
                o.dead_jobs,
                o.orphans_before_reconcile,
                o.reconcile_repairs,
                o.audit_events,
                o.exported_rows,
                o.keys_delivered,
                o.keys_not_delivered,
            );
        }
    }
}
