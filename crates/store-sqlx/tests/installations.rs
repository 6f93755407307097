//! Slack installations and OAuth states on every backend of `testkit::db::backends()`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use access_core::ports::{InstallationInfo, InstallationStore, SealedInstallation, StateCheck};
use chrono::{DateTime, Utc};
use store_sqlx::{DbPool, SqlStore};
use testkit::db::{TestDb, backends};

async fn stores() -> Vec<(TestDb, SqlStore)> {
    let mut out = Vec::new();
    for db in backends().await {
        let s = SqlStore::connect(&db.url).await.expect("connect");
        out.push((db, s));
    }
    out
}

/// Unix microseconds as a time.
fn t(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).unwrap()
}

fn row(team: &str, bot_ct: &[u8]) -> SealedInstallation {
    SealedInstallation {
        info: InstallationInfo {
            team_id: Some(team.into()),
            team_name: Some(format!("Team {team}")),
            app_id: Some("A0KRD7HC3".into()),
            bot_user_id: Some("U0KRQLJ9H".into()),
            bot_id: Some("B1".into()),
            bot_scopes: Some("commands,chat:write".into()),
            user_id: Some("U1234".into()),
            installer_user_id: Some("U1234".into()),
            installed_at: t(1_000),
            updated_at: t(1_000),
            ..Default::default()
        },
        bot_token: Some(bot_ct.to_vec()),
        user_token: Some(b"\x01user-ciphertext".to_vec()),
        ..Default::default()
    }
}

#[tokio::test]
async fn save_get_replace_delete() {
    for (db, s) in stores().await {
        let kind = db.kind;
        s.save(&row("T1", b"ct-one")).await.unwrap();
        s.save(&row("T2", b"ct-two")).await.unwrap();
        let got = s.find(None, Some("T1")).await.unwrap().unwrap();
        assert_eq!(got, row("T1", b"ct-one"), "{kind}");

        // A re-install replaces the row but keeps the first installed_at.
        let mut again = row("T1", b"ct-three");
        again.info.installed_at = t(5_000);
        again.info.updated_at = t(5_000);
        s.save(&again).await.unwrap();
        let got = s.find(None, Some("T1")).await.unwrap().unwrap();
        assert_eq!(got.bot_token.as_deref(), Some(&b"ct-three"[..]));
        assert_eq!(got.info.installed_at, t(1_000), "{kind}");
        assert_eq!(got.info.updated_at, t(5_000), "{kind}");
        assert_eq!(s.all().await.unwrap().len(), 2, "{kind}");
        assert!(s.find_team("T2").await.unwrap().is_some());

        // User token cleared only for the named user.
        assert!(
            !s.clear_user_token(None, Some("T1"), "UOTHER")
                .await
                .unwrap()
        );
        assert!(s.clear_user_token(None, Some("T1"), "U1234").await.unwrap());
        let got = s.find(None, Some("T1")).await.unwrap().unwrap();
        assert!(got.user_token.is_none());
        assert!(got.bot_token.is_some());

        assert!(s.delete(None, Some("T1")).await.unwrap());
        assert!(!s.delete(None, Some("T1")).await.unwrap());
        assert!(s.find(None, Some("T1")).await.unwrap().is_none());
        assert!(s.find(None, Some("T2")).await.unwrap().is_some(), "{kind}");
        s.close().await;
    }
}

#[tokio::test]
async fn enterprise_owner_is_distinct_from_team_owner() {
    for (db, s) in stores().await {
        let mut org = row("ignored", b"org-ct");
        org.info.team_id = None;
        org.info.enterprise_id = Some("E1".into());
        org.info.is_enterprise_install = true;
        s.save(&org).await.unwrap();
        let mut ws = row("T9", b"ws-ct");
        ws.info.enterprise_id = Some("E1".into());
        s.save(&ws).await.unwrap();

        let got = s.find(Some("E1"), None).await.unwrap().unwrap();
        assert!(got.info.is_enterprise_install, "{}", db.kind);
        assert_eq!(got.info.team_id, None);
        let got = s.find(Some("E1"), Some("T9")).await.unwrap().unwrap();
        assert_eq!(got.bot_token.as_deref(), Some(&b"ws-ct"[..]));
        assert!(s.find(None, Some("T9")).await.unwrap().is_none());
        s.close().await;
    }
}

#[tokio::test]
async fn token_columns_hold_exactly_the_given_bytes() {
    for (db, s) in stores().await {
        s.save(&row("T1", b"\x01opaque")).await.unwrap();
        let raw: Vec<u8> = match s.pool() {
            DbPool::Sqlite(p) => sqlx::query_scalar(
                "SELECT bot_token_encrypted FROM slack_installations WHERE team_id = 'T1'",
            )
            .fetch_one(p)
            .await
            .unwrap(),
            DbPool::Postgres(p) => sqlx::query_scalar(
                "SELECT bot_token_encrypted FROM slack_installations WHERE team_id = 'T1'",
            )
            .fetch_one(p)
            .await
            .unwrap(),
        };
        assert_eq!(raw, b"\x01opaque", "{}", db.kind);
        s.close().await;
    }
}

#[tokio::test]
async fn oauth_states_are_single_use_and_expire() {
    for (db, s) in stores().await {
        let kind = db.kind;
        s.issue_state("good", t(0), t(300)).await.unwrap();
        s.issue_state("old", t(0), t(100)).await.unwrap();
        assert_eq!(
            s.consume_state("good", t(200)).await.unwrap(),
            StateCheck::Valid
        );
        assert_eq!(
            s.consume_state("good", t(201)).await.unwrap(),
            StateCheck::Reused
        );
        assert_eq!(
            s.consume_state("old", t(200)).await.unwrap(),
            StateCheck::Expired
        );
        assert_eq!(
            s.consume_state("forged", t(200)).await.unwrap(),
            StateCheck::Unknown
        );
        // A state is rejected at its exact expiry instant.
        s.issue_state("edge", t(0), t(500)).await.unwrap();
        assert_eq!(
            s.consume_state("edge", t(500)).await.unwrap(),
            StateCheck::Expired
        );

        assert_eq!(s.cleanup_states(t(200)).await.unwrap(), 1, "{kind}"); // "old"
        assert_eq!(
            s.consume_state("old", t(200)).await.unwrap(),
            StateCheck::Unknown
        );
        assert_eq!(s.cleanup_states(t(10_000)).await.unwrap(), 2, "{kind}");
        s.close().await;
    }
}

#[tokio::test]
async fn concurrent_consumers_get_one_valid() {
    for (_db, s) in stores().await {
        s.issue_state("race", t(0), t(0) + chrono::Duration::days(36_500))
            .await
            .unwrap();
        let mut handles = Vec::new();
        for _ in 0..8 {
            let s = s.clone();
            handles.push(tokio::spawn(async move {
                s.consume_state("race", t(1)).await.unwrap()
            }));
        }
        let mut valid = 0;
        for h in handles {
            if h.await.unwrap() == StateCheck::Valid {
                valid += 1;
            }
        }
        assert_eq!(valid, 1);
        s.close().await;
    }
}
