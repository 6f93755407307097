//! Lease renewals while a job pass runs never stall the pass.
//!
//! Found by the chaos test (docs/reliability.md, finding 2): the renewal ran in the body
//! of a `select!` loop, so while it ran the pass was not polled. A beat that fired while the pass
//! was inside a store transaction (on SQLite: holding the store's writer lock) waited for that
//! lock, and the transaction waited to be polled: the server stopped writing for good.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use access_core::ports::Provider;
use access_core::request::RequestKind;
use access_core::{Email, GrantStatus, Subject};
use gatehouse_runtime::compose::Overrides;
use gatehouse_runtime::config::Env;
use gatehouse_runtime::{App, Config};
use provider_cloudconnexa::{ClientConfig, CloudConnexaProvider, ProviderConfig};
use sqlx::Connection;
use testkit::cloudconnexa::{FakeCloudConnexa, FakeConfig};
use testkit::db::backends;
use testkit::submission::{Ask, SubmitTyped};

// A 6 s lease: the first renewal comes 2 s after the claim.
const CONFIG: &str = r#"
[server]
job_lease_secs = 6

[[resources]]
id = "vpn"
provider = "cloudconnexa"
settings = { network = "dev-network" }
default_duration = "1h"
approval = { mode = "auto" }
"#;

async fn app_on(url: &str, fake: &FakeCloudConnexa) -> App {
    let mut client = ClientConfig::new(fake.url(), fake.client_id(), fake.client_secret());
    client.request_timeout = Duration::from_secs(10);
    let cc = Arc::new(CloudConnexaProvider::new(ProviderConfig::new(client)).unwrap());
    let mut providers: HashMap<String, Arc<dyn Provider>> = HashMap::new();
    providers.insert("cloudconnexa".into(), cc.clone());
    let mut app = App::build(
        Config::from_toml(CONFIG, "test.toml").unwrap(),
        Env {
            database_url: url.to_string(),
            ..Env::default()
        },
        Overrides {
            providers,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    app.adapters.cloudconnexa = Some(cc);
    app
}

/// The pass's grant commit waits for the database (another process holds SQLite's write lock)
/// while the lease renewal comes due: the renewal must wait its turn, not stall the pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_renewal_during_a_waiting_commit_does_not_stall_the_pass() {
    for db in backends().await {
        let fake = FakeCloudConnexa::start(FakeConfig::fast()).await;
        fake.seed_network("dev-network");
        let group = fake.seed_group("dev-network-users");
        fake.seed_user("u1@example.com", None, &[]);
        let app = app_on(&db.url, &fake).await;
        let r = app
            .engine
            .submit_typed(Ask {
                subject: Subject {
                    team_id: "T1".into(),
                    user_id: "U1".into(),
                    email: Some(Email::parse("u1@example.com").unwrap()),
                    name: "U1".into(),
                },
                resource: "vpn".into(),
                duration: Some("1h".into()),
                justification: "debug CI".into(),
                kind: RequestKind::New,
            })
            .await
            .unwrap();
        let grant_id = r.grant_id.unwrap();
        // The membership PUT lands at once but answers 1 s later, before the first renewal.
        fake.slow_after_apply(1, Duration::from_secs(1));
        let engine = app.engine.clone();
        let pass = tokio::spawn(async move { engine.run_due(10).await });

        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let added = fake
                .user_by_email("u1@example.com")
                .is_some_and(|u| u.secondary_group_ids.contains(&group));
            if added {
                break;
            }
            assert!(Instant::now() < deadline, "{}: no membership PUT", db.kind);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Another process takes SQLite's write lock now: the grant commit that follows the PUT's
        // answer (in ~1 s) waits for it, holding the store's writer lock, when the renewal comes
        // due (~2 s after the claim). The other process lets go after 4 s.
        let other = if db.kind == "sqlite" {
            let mut c = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
            sqlx::query("BEGIN IMMEDIATE")
                .execute(&mut c)
                .await
                .unwrap();
            Some(c)
        } else {
            None
        };
        tokio::time::sleep(Duration::from_secs(4)).await;
        if let Some(mut c) = other {
            sqlx::query("COMMIT").execute(&mut c).await.unwrap();
        }

        let summary = tokio::time::timeout(Duration::from_secs(60), pass)
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{}: the job pass is stuck (a renewal waits for the writer lock its own pass holds)",
                    db.kind
                )
            })
            .unwrap()
            .unwrap();
        assert!(summary.claimed >= 1, "{}: {summary:?}", db.kind);
        let g = app.engine.store().grant(grant_id).await.unwrap().unwrap();
        assert_eq!(g.status, GrantStatus::Active, "{}", db.kind);
        app.store.close().await;
    }
}
