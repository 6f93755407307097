//! Checks done when a binary starts: database session settings, the configuration file and the
//! TOML snippets of the documentation (issue 11, section 7).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use gatehouse_runtime::compose::Overrides;
use gatehouse_runtime::config::Env;
use gatehouse_runtime::{App, Config};
use store_sqlx::DbPool;
use testkit::db::backends;

fn app_config(extra: &str) -> Config {
    let text = format!(
        "{extra}\n[[resources]]\nid = \"demo\"\nprovider = \"dry-run\"\napproval = {{ mode = \"auto\" }}\n"
    );
    Config::from_toml(&text, "test.toml").unwrap()
}

async fn build(config: Config, url: &str) -> App {
    let env = Env {
        database_url: url.to_string(),
        ..Env::default()
    };
    App::build(config, env, Overrides::default()).await.unwrap()
}

/// A hung query must not hold the audit-head lock for ever: every pooled PostgreSQL connection
/// carries a `statement_timeout` (30 s unless `[database] statement_timeout_secs` says otherwise).
#[tokio::test]
async fn postgres_connections_carry_a_statement_timeout() {
    for db in backends().await {
        if db.kind != "postgres" {
            continue;
        }
        let app = build(app_config(""), &db.url).await;
        let DbPool::Postgres(pool) = app.store.pool() else {
            panic!("expected a PostgreSQL pool")
        };
        let shown: String = sqlx::query_scalar("SHOW statement_timeout")
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(shown, "30s", "default statement_timeout");
        app.store.close().await;

        let app = build(
            app_config("[database]\nstatement_timeout_secs = 1\n"),
            &db.url,
        )
        .await;
        let DbPool::Postgres(pool) = app.store.pool() else {
            panic!("expected a PostgreSQL pool")
        };
        let shown: String = sqlx::query_scalar("SHOW statement_timeout")
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(shown, "1s");
        let err = sqlx::query("SELECT pg_sleep(3)")
            .execute(pool)
            .await
            .expect_err("a query longer than statement_timeout must fail");
        assert!(
            err.to_string().contains("statement timeout"),
            "clear error expected, got: {err}"
        );
        app.store.close().await;
    }
}

fn load_error(resource: &str) -> String {
    let text = format!("[[resources]]\n{resource}\napproval = {{ mode = \"auto\" }}\n");
    match Config::from_toml(&text, "test.toml").and_then(|c| c.resources()) {
        Ok(_) => panic!("configuration accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

/// Provider settings are checked when the configuration loads, not when the first grant runs:
/// a typo, a basic GCP role or a missing network refuses to start, naming the resource and key.
#[test]
fn provider_settings_are_validated_at_load() {
    let e = load_error(
        "id = \"vpn\"\nprovider = \"cloudconnexa\"\nsettings = { network = \"dev\", gruop = \"x\" }",
    );
    assert!(e.contains("resource 'vpn'") && e.contains("gruop"), "{e}");

    let e = load_error("id = \"vpn\"\nprovider = \"cloudconnexa\"\nsettings = { group = \"x\" }");
    assert!(e.contains("resource 'vpn'") && e.contains("network"), "{e}");

    let e = load_error(
        "id = \"gcp\"\nprovider = \"gcp-iam\"\nsettings = { project = \"my-project-1\", role = \"roles/owner\" }",
    );
    assert!(
        e.contains("resource 'gcp'") && e.contains("role") && e.contains("roles/owner"),
        "{e}"
    );

    let e = load_error(
        "id = \"gcp\"\nprovider = \"gcp-iam\"\nsettings = { project = \"my-project-1\", role = \"roles/iam.serviceAccountUser\", dry_rn = true }",
    );
    assert!(e.contains("resource 'gcp'") && e.contains("dry_rn"), "{e}");

    // Valid settings still load.
    let ok = "[[resources]]\nid = \"gcp\"\nprovider = \"gcp-iam\"\napproval = { mode = \"auto\" }\nsettings = { project = \"my-project-1\", role = \"roles/iam.serviceAccountUser\" }\n";
    Config::from_toml(ok, "ok.toml")
        .unwrap()
        .resources()
        .unwrap();
}
