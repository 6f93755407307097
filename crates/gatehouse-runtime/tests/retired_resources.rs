//! A resource dropped from the configuration while it has live grants would strand them: their
//! revocation would retry for ever without reaching the provider. The start refuses such a
//! configuration unless the resource is kept with `retired = true` (revocation only).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;

use access_core::engine::EngineError;
use access_core::ports::Provider;
use access_core::request::RequestKind;
use access_core::{Email, GrantStatus, Subject};
use chrono::Duration;
use gatehouse_runtime::compose::Overrides;
use gatehouse_runtime::config::Env;
use gatehouse_runtime::{App, ComposeError, Config};
use testkit::db::backends;
use testkit::provider::{ManualClock, TestProvider};
use testkit::submission::{Ask, SubmitTyped};

const VPN: &str = r#"
[[resources]]
id = "vpn"
provider = "test"
min_duration = "1s"
default_duration = "1h"
max_duration = "8h"
approval = { mode = "auto" }
"#;

const OTHER: &str = r#"
[[resources]]
id = "other"
provider = "test"
default_duration = "1h"
approval = { mode = "auto" }
"#;

async fn build(
    toml: &str,
    url: &str,
    provider: &Arc<TestProvider>,
    clock: &Arc<ManualClock>,
) -> Result<App, ComposeError> {
    let mut providers: HashMap<String, Arc<dyn Provider>> = HashMap::new();
    providers.insert("test".into(), provider.clone());
    App::build(
        Config::from_toml(toml, "test.toml").unwrap(),
        Env {
            database_url: url.to_string(),
            ..Env::default()
        },
        Overrides {
            providers,
            clock: Some(clock.clone()),
            ..Default::default()
        },
    )
    .await
}

fn ask(resource: &str) -> Ask {
    Ask {
        subject: Subject {
            team_id: "T1".into(),
            user_id: "U1".into(),
            email: Some(Email::parse("u1@example.com").unwrap()),
            name: "U1".into(),
        },
        resource: resource.into(),
        duration: Some("30m".into()),
        justification: "debug CI".into(),
        kind: RequestKind::New,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resource_with_live_grants_cannot_be_dropped_only_retired() {
    for db in backends().await {
        let kind = db.kind;
        let provider = Arc::new(TestProvider::new());
        let clock = Arc::new(ManualClock::starting_now());

        let app = build(&format!("{VPN}{OTHER}"), &db.url, &provider, &clock)
            .await
            .unwrap();
        let r = app.engine.submit_typed(ask("vpn")).await.unwrap();
        app.engine.drain(50).await.unwrap();
        let grant_id = r.grant_id.unwrap();
        let g = app.engine.store().grant(grant_id).await.unwrap().unwrap();
        assert_eq!(g.status, GrantStatus::Active, "{kind}");
        app.store.close().await;

        // Dropped (or renamed): refused, naming the resource and how many grants it holds.
        let e = build(OTHER, &db.url, &provider, &clock)
            .await
            .expect_err("a configuration that strands a live grant must be refused");
        let msg = e.to_string();
        assert!(
            msg.contains("'vpn'") && msg.contains("1 live grant") && msg.contains("retired = true"),
            "{kind}: {msg}"
        );

        // Kept as retired: starts, is not offered or requestable, and the grant still ends
        // through its provider.
        let retired = format!("{}retired = true\n{OTHER}", VPN);
        let app = build(&retired, &db.url, &provider, &clock).await.unwrap();
        let names: Vec<String> = app
            .engine
            .resources()
            .iter()
            .map(|r| r.id.to_string())
            .collect();
        assert_eq!(names, vec!["other".to_string()], "{kind}");
        match app.engine.submit_typed(ask("vpn")).await {
            Err(EngineError::UnknownResource { .. }) => {}
            other => panic!("{kind}: retired resource must not be requestable: {other:?}"),
        }
        clock.advance(Duration::minutes(31));
        app.engine.drain(50).await.unwrap();
        let g = app.engine.store().grant(grant_id).await.unwrap().unwrap();
        assert_eq!(g.status, GrantStatus::Expired, "{kind}");
        assert_eq!(provider.count("revoke"), 1, "{kind}");
        assert!(provider.holders().is_empty(), "{kind}");
        app.store.close().await;
    }
}
