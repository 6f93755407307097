//! The durability promises, through the real binaries: a crash never loses a revocation, the
//! cleanup binary does the due work without a server, and `make run`'s example works.

use std::time::Duration;

use access_core::GrantStatus;
use access_core::ports::{GrantFilter, RequestStore};
use store_sqlx::SqlStore;
use testkit::db::backends;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_survives_a_crash() {
    for db in backends().await {
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(dir.path(), DRY_RUN_CONFIG);
        let opts = ServerOptions {
            config: &config,
            database_url: &db.url,
            admin_token: Some(ADMIN_TOKEN),
            extra_env: vec![],
        };

        let server = Server::start(&opts, dir.path());
        let api = Api::new(&server, Some(ADMIN_TOKEN));
        let (status, req) = api
            .post("/api/requests", Some(request_body("U1", "crashy", "2s")))
            .await;
        assert_eq!(status, 201, "{}: {req}", db.kind);
        let grant_id = req["grant_id"].as_str().unwrap().to_string();
        let (grant, _) = api
            .wait_for(
                &format!("/api/grants/{grant_id}"),
                Duration::from_secs(10),
                |g| g["status"] == "active",
            )
            .await;
        let expires_at =
            chrono::DateTime::parse_from_rfc3339(grant["expires_at"].as_str().unwrap()).unwrap();

        // Crash before expiry: the in-memory scheduler is gone with the process.
        server.crash();
        let until_after_expiry = (expires_at.with_timezone(&chrono::Utc) - chrono::Utc::now())
            .to_std()
            .unwrap_or_default()
            + Duration::from_millis(1500);
        tokio::time::sleep(until_after_expiry).await;
        let store = SqlStore::connect(&db.url).await.unwrap();
        let live = store
            .grants(&GrantFilter {
                live_only: true,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(
            live.len(),
            1,
            "{}: nothing revoked while the server was down",
            db.kind
        );

        // Restart after expiry: the revocation happens within 2 seconds.
        let server = Server::start(&opts, dir.path());
        let restarted = server.started;
        let api = Api::new(&server, Some(ADMIN_TOKEN));
        api.wait_for(
            &format!("/api/grants/{grant_id}"),
            Duration::from_secs(10),
            |g| g["status"] == "expired",
        )
        .await;
        let took = restarted.elapsed();
        assert!(
            took < Duration::from_secs(2),
            "{}: revoked {took:?} after restart",
            db.kind
        );
        let kinds = audit_kinds(&api).await;
        assert_eq!(
            kinds.last().map(String::as_str),
            Some("access_expired"),
            "{}: {kinds:?}",
            db.kind
        );
        let (_, verify) = api.get("/api/audit/verify").await;
        assert_eq!(verify["ok"], true);
        assert!(server.log_text().contains("DRY-RUN: would revoke access"));
        eprintln!("{}: revocation {took:?} after restart", db.kind);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_binary_revokes_overdue_grants_without_a_server() {
    for db in backends().await {
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(dir.path(), DRY_RUN_CONFIG);
        let opts = ServerOptions {
            config: &config,
            database_url: &db.url,
            admin_token: Some(ADMIN_TOKEN),
            extra_env: vec![],
        };
        let server = Server::start(&opts, dir.path());
        let api = Api::new(&server, Some(ADMIN_TOKEN));
        let mut grants = Vec::new();
        for user in ["U1", "U2", "U3"] {
            let (status, req) = api
                .post("/api/requests", Some(request_body(user, "crashy", "6s")))
                .await;
            assert_eq!(status, 201, "{req}");
            grants.push(req["grant_id"].as_str().unwrap().to_string());
        }
        // Long enough that the server cannot expire them itself before the crash, even on a
        // loaded machine; then wait past the latest expiry.
        let mut latest = chrono::Utc::now();
        for g in &grants {
            let (grant, _) = api
                .wait_for(&format!("/api/grants/{g}"), Duration::from_secs(10), |b| {
                    b["status"] == "active"
                })
                .await;
            let at = chrono::DateTime::parse_from_rfc3339(grant["expires_at"].as_str().unwrap())
                .unwrap();
            latest = latest.max(at.with_timezone(&chrono::Utc));
        }
        // The grants' own notices delivered before the crash, so the cleanup's notify count
        // is the expiry notices alone (a notice still queued at the crash made it 4 or 5).
        for status in ["pending", "running"] {
            api.wait_for(
                &format!("/api/jobs?kind=notify&status={status}"),
                Duration::from_secs(10),
                |b| b["jobs"].as_array().is_some_and(|a| a.is_empty()),
            )
            .await;
        }
        server.crash();
        let wait =
            (latest - chrono::Utc::now()).to_std().unwrap_or_default() + Duration::from_millis(500);
        tokio::time::sleep(wait).await;

        let out = std::process::Command::new(binary("gatehouse-cleanup"))
            .arg("--config")
            .arg(&config)
            .env("DATABASE_URL", &db.url)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}: {stdout} {}",
            db.kind,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("expire=3"), "{}: {stdout}", db.kind);
        assert!(stdout.contains("notify=3"), "{}: {stdout}", db.kind);

        let store = SqlStore::connect(&db.url).await.unwrap();
        for g in &grants {
            let grant = store.grant(g.parse().unwrap()).await.unwrap().unwrap();
            assert_eq!(grant.status, GrantStatus::Expired, "{}", db.kind);
        }
        // Nothing left: a second run has nothing to do and still exits 0.
        let again = std::process::Command::new(binary("gatehouse-cleanup"))
            .arg("--config")
            .arg(&config)
            .env("DATABASE_URL", &db.url)
            .output()
            .unwrap();
        assert!(again.status.success());
        assert!(String::from_utf8_lossy(&again.stdout).contains("0 due job(s)"));

        let verify = std::process::Command::new(binary("gatehouse-cleanup"))
            .args(["--config", config.to_str().unwrap(), "audit", "verify"])
            .env("DATABASE_URL", &db.url)
            .output()
            .unwrap();
        assert!(
            verify.status.success(),
            "{}",
            String::from_utf8_lossy(&verify.stdout)
        );

        // Compliance export and the monthly report through the CLI.
        let csv = dir.path().join("audit.csv");
        let month = chrono::Utc::now().format("%Y-%m").to_string();
        let export = std::process::Command::new(binary("gatehouse-cleanup"))
            .args([
                "--config",
                config.to_str().unwrap(),
                "audit",
                "export",
                "--format",
                "csv",
                "--output",
                csv.to_str().unwrap(),
            ])
            .env("DATABASE_URL", &db.url)
            .output()
            .unwrap();
        assert!(
            export.status.success(),
            "{}",
            String::from_utf8_lossy(&export.stderr)
        );
        let text = std::fs::read_to_string(&csv).unwrap();
        // 3 × (requested, approved, granted, provider event, expired) plus the header
        assert_eq!(text.lines().count(), 16, "{text}");
        let report = std::process::Command::new(binary("gatehouse-cleanup"))
            .args([
                "--config",
                config.to_str().unwrap(),
                "audit",
                "report",
                "--month",
                &month,
                "--format",
                "json",
            ])
            .env("DATABASE_URL", &db.url)
            .output()
            .unwrap();
        let report: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
        assert_eq!(report["grants"], 3, "{report}");
        assert_eq!(report["expired"], 3);
        let bad = std::process::Command::new(binary("gatehouse-cleanup"))
            .args([
                "--config",
                config.to_str().unwrap(),
                "audit",
                "report",
                "--month",
                "2026-13",
            ])
            .env("DATABASE_URL", &db.url)
            .output()
            .unwrap();
        assert!(!bad.status.success());
        assert!(String::from_utf8_lossy(&bad.stderr).contains("use YYYY-MM"));

        // Tampering is caught by the CLI with a non-zero exit naming the row.
        tamper(&db.url).await;
        let verify = std::process::Command::new(binary("gatehouse-cleanup"))
            .args(["--config", config.to_str().unwrap(), "audit", "verify"])
            .env("DATABASE_URL", &db.url)
            .output()
            .unwrap();
        assert_eq!(verify.status.code(), Some(1));
        assert!(
            String::from_utf8_lossy(&verify.stdout).contains("BROKEN at event 2"),
            "{}",
            String::from_utf8_lossy(&verify.stdout)
        );
    }
}

/// What README's `make run` walkthrough promises, with the shipped example configuration: a
/// request approved through the admin API ends by itself, visible in the audit trail and metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_config_request_expires_by_itself() {
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../gatehouse.example.toml");
    for db in backends().await {
        let dir = tempfile::tempdir().unwrap();
        let opts = ServerOptions {
            config: &example,
            database_url: &db.url,
            admin_token: Some(ADMIN_TOKEN),
            extra_env: vec![],
        };
        let server = Server::start(&opts, dir.path());
        let api = Api::new(&server, Some(ADMIN_TOKEN));
        let (status, req) = api
            .post(
                "/api/requests",
                Some(request_body("U42", "demo-approved", "2s")),
            )
            .await;
        assert_eq!(status, 201, "{req}");
        assert_eq!(req["status"], "pending");
        let id = req["id"].as_str().unwrap();
        let (status, approved) = api
            .post(
                &format!("/api/requests/{id}/approve"),
                Some(serde_json::json!({"approver": "alice"})),
            )
            .await;
        assert_eq!(status, 200, "{approved}");
        let grant = approved["grant_id"].as_str().unwrap();
        api.wait_for(
            &format!("/api/grants/{grant}"),
            Duration::from_secs(10),
            |g| g["status"] == "active",
        )
        .await;
        let (_, took) = api
            .wait_for(
                &format!("/api/grants/{grant}"),
                Duration::from_secs(10),
                |g| g["status"] == "expired",
            )
            .await;
        assert!(took < Duration::from_secs(4));
        let kinds = audit_kinds(&api).await;
        assert_eq!(
            kinds,
            [
                "access_requested",
                "access_approved",
                "access_granted",
                "provider_event",
                "access_expired"
            ],
            "{}",
            db.kind
        );
        let metrics = reqwest::get(server.url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(metrics.contains("gatehouse_grants_active 0"), "{metrics}");
        assert!(
            metrics.contains("gatehouse_revocation_lag_seconds_count 1"),
            "{metrics}"
        );
        assert!(
            metrics.contains("gatehouse_requests{status=\"expired\"} 1"),
            "{metrics}"
        );
        assert_eq!(
            reqwest::get(server.url("/readyz")).await.unwrap().status(),
            200
        );
        // SIGTERM: a clean exit.
        assert!(server.stop().success());
    }
}

/// Edits the details of audit event 2 behind Gatehouse's back.
async fn tamper(url: &str) {
    use sqlx::Connection;
    let sql = "UPDATE audit_events SET details = '{\"forged\":true}' WHERE seq = 2";
    if url.starts_with("postgres") {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::query(sql).execute(&mut c).await.unwrap();
    } else {
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::query(sql).execute(&mut c).await.unwrap();
    }
}

/// A resource dropped from the configuration while it has a live grant: both binaries refuse to
/// start, naming it; kept with `retired = true`, they start and the grant still ends on time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_resource_with_live_grants_is_refused_until_it_is_retired() {
    let db = testkit::db::TestDb::sqlite();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), DRY_RUN_CONFIG);
    let opts = ServerOptions {
        config: &config,
        database_url: &db.url,
        admin_token: Some(ADMIN_TOKEN),
        extra_env: vec![],
    };
    let server = Server::start(&opts, dir.path());
    let api = Api::new(&server, Some(ADMIN_TOKEN));
    let (status, req) = api
        .post("/api/requests", Some(request_body("U1", "crashy", "4s")))
        .await;
    assert_eq!(status, 201, "{req}");
    let grant_id = req["grant_id"].as_str().unwrap().to_string();
    api.wait_for(
        &format!("/api/grants/{grant_id}"),
        Duration::from_secs(10),
        |b| b["status"] == "active",
    )
    .await;
    assert!(server.stop().success());

    let without = dir.path().join("without.toml");
    std::fs::write(
        &without,
        DRY_RUN_CONFIG.replace("id = \"crashy\"", "id = \"renamed\""),
    )
    .unwrap();
    let run = |bin: &str, cfg: &std::path::Path| {
        let mut cmd = std::process::Command::new(binary(bin));
        cmd.arg("--config").arg(cfg).env("DATABASE_URL", &db.url);
        if bin == "gatehouse-server" {
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
        cmd.output().unwrap()
    };
    for bin in ["gatehouse-server", "gatehouse-cleanup"] {
        let out = run(bin, &without);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{bin} started: {stderr}");
        assert!(
            stderr.contains("'crashy' (1 live grant)") && stderr.contains("retired = true"),
            "{bin}: {stderr}"
        );
    }

    // Retired: cleanup starts, and once the grant is due it is revoked through its provider.
    let retired = dir.path().join("retired.toml");
    std::fs::write(
        &retired,
        DRY_RUN_CONFIG.replace(
            "approval = { mode = \"auto\" }",
            "approval = { mode = \"auto\" }\nretired = true",
        ),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let out = run("gatehouse-cleanup", &retired);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let store = SqlStore::connect(&db.url).await.unwrap();
    let grant = store
        .grant(grant_id.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(grant.status, GrantStatus::Expired);
}
