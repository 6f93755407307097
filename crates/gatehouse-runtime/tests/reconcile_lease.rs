//! Reconciliation runs on one replica at a time (a database lease), and never takes away a
//! membership that provisioning is adding.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use access_core::ports::Provider;
use access_core::request::RequestKind;
use access_core::{Email, GrantStatus, Subject};
use gatehouse_runtime::compose::Overrides;
use gatehouse_runtime::config::Env;
use gatehouse_runtime::maintenance::{reconcile, reconcile_under_lease};
use gatehouse_runtime::{App, Config};
use provider_cloudconnexa::{ClientConfig, CloudConnexaProvider, ProviderConfig};
use testkit::cloudconnexa::{FakeCloudConnexa, FakeConfig};
use testkit::db::backends;
use testkit::submission::{Ask, SubmitTyped};

const CONFIG: &str = r#"
[[resources]]
id = "vpn"
provider = "cloudconnexa"
settings = { network = "dev-network" }
default_duration = "1h"
approval = { mode = "auto" }
"#;

async fn app_on(url: &str, fake: &FakeCloudConnexa) -> App {
    let mut client = ClientConfig::new(fake.url(), fake.client_id(), fake.client_secret());
    client.request_timeout = Duration::from_secs(5);
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

/// Two replicas on one database: within a period only the one holding the lease reconciles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_one_replica_reconciles_per_period() {
    for db in backends().await {
        let fake = FakeCloudConnexa::start(FakeConfig::fast()).await;
        fake.seed_network("dev-network");
        let a = app_on(&db.url, &fake).await;
        let b = app_on(&db.url, &fake).await;
        let period = Duration::from_secs(3600);
        let (ra, rb) = tokio::join!(
            reconcile_under_lease(&a, "replica-a", period),
            reconcile_under_lease(&b, "replica-b", period),
        );
        assert!(
            ra.is_some() != rb.is_some(),
            "{}: exactly one replica reconciles (a: {:?}, b: {:?})",
            db.kind,
            ra.is_some(),
            rb.is_some()
        );
        let (winner, loser) = if ra.is_some() {
            (&a, "replica-b")
        } else {
            (&b, "replica-a")
        };
        // Later in the same period: still only the holder.
        assert!(
            reconcile_under_lease(winner, loser, period).await.is_none(),
            "{}",
            db.kind
        );
        let holder = if ra.is_some() {
            "replica-a"
        } else {
            "replica-b"
        };
        assert!(
            reconcile_under_lease(winner, holder, period)
                .await
                .is_some(),
            "{}",
            db.kind
        );
        // A lease that has run out can be taken by anyone.
        let short = Duration::from_millis(200);
        assert!(reconcile_under_lease(winner, holder, short).await.is_some());
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(
            reconcile_under_lease(winner, loser, period).await.is_some(),
            "{}",
            db.kind
        );
        a.store.close().await;
        b.store.close().await;
    }
}

/// A grant still provisioning: the membership its in-flight call added is not drift.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provisioning_grants_membership_is_not_removed_by_reconcile() {
    for db in backends().await {
        let fake = FakeCloudConnexa::start(FakeConfig::fast()).await;
        fake.seed_network("dev-network");
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
        let g = app
            .engine
            .store()
            .grant(r.grant_id.unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(g.status, GrantStatus::Provisioning);
        // The provider's PUT has landed; the grant job has not recorded it yet.
        let group = fake.seed_group("dev-network-users");
        fake.seed_user("u1@example.com", None, &[&group]);

        let report = reconcile(&app).await;
        assert!(report.errors.is_empty(), "{}: {:?}", db.kind, report.errors);
        let user = fake.user_by_email("u1@example.com").expect("user kept");
        assert!(
            user.secondary_group_ids.contains(&group),
            "{}: membership of a provisioning grant removed",
            db.kind
        );
        app.store.close().await;
    }
}
