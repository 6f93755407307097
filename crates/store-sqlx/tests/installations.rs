//! Slack installations and OAuth states on every backend of `testkit::db::backends()`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use store_sqlx::{DbPool, InstallationRow, OAuthStateCheck, SqlStore};
use testkit::db::{TestDb, backends};

async fn stores() -> Vec<(TestDb, SqlStore)> {
    let mut out = Vec::new();
    for db in backends().await {
        let s = SqlStore::connect(&db.url).await.expect("connect");
        out.push((db, s));
    }
    out
}

fn row(team: &str, bot_ct: &[u8]) -> InstallationRow {
    InstallationRow {
        team_id: Some(team.into()),
        team_name: Some(format!("Team {team}")),
        app_id: Some("A0KRD7HC3".into()),
        bot_user_id: Some("U0KRQLJ9H".into()),
        bot_id: Some("B1".into()),
        bot_scopes: Some("commands,chat:write".into()),
        bot_token_encrypted: Some(bot_ct.to_vec()),
        user_id: Some("U1234".into()),
        user_token_encrypted: Some(b"\x01user-ciphertext".to_vec()),
        installer_user_id: Some("U1234".into()),
        installed_at: 1_000,
        updated_at: 1_000,
        ..Default::default()
    }
}

#[tokio::test]
async fn save_get_replace_delete() {
    for (db, s) in stores().await {
        let kind = db.kind;
        s.save_slack_installation(&row("T1", b"ct-one"))
            .await
            .unwrap();
        s.save_slack_installation(&row("T2", b"ct-two"))
            .await
            .unwrap();
        let got = s
            .slack_installation(None, Some("T1"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, row("T1", b"ct-one"), "{kind}");

        // A re-install replaces the row but keeps the first installed_at.
        let mut again = row("T1", b"ct-three");
        again.installed_at = 5_000;
        again.updated_at = 5_000;
        s.save_slack_installation(&again).await.unwrap();
        let got = s
            .slack_installation(None, Some("T1"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.bot_token_encrypted.as_deref(), Some(&b"ct-three"[..]));
        assert_eq!(got.installed_at, 1_000, "{kind}");
        assert_eq!(got.updated_at, 5_000, "{kind}");
        assert_eq!(s.slack_installations().await.unwrap().len(), 2, "{kind}");
        assert_eq!(s.slack_installations_of_team("T2").await.unwrap().len(), 1);

        // User token cleared only for the named user.
        assert_eq!(
            s.clear_slack_user_token(None, Some("T1"), "UOTHER")
                .await
                .unwrap(),
            0
        );
        assert_eq!(
            s.clear_slack_user_token(None, Some("T1"), "U1234")
                .await
                .unwrap(),
            1
        );
        let got = s
            .slack_installation(None, Some("T1"))
            .await
            .unwrap()
            .unwrap();
        assert!(got.user_token_encrypted.is_none());
        assert!(got.bot_token_encrypted.is_some());

        assert_eq!(
            s.delete_slack_installation(None, Some("T1")).await.unwrap(),
            1
        );
        assert_eq!(
            s.delete_slack_installation(None, Some("T1")).await.unwrap(),
            0
        );
        assert!(
            s.slack_installation(None, Some("T1"))
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            s.slack_installation(None, Some("T2"))
                .await
                .unwrap()
                .is_some(),
            "{kind}"
        );
        s.close().await;
    }
}

#[tokio::test]
async fn enterprise_owner_is_distinct_from_team_owner() {
    for (db, s) in stores().await {
        let mut org = row("ignored", b"org-ct");
        org.team_id = None;
        org.enterprise_id = Some("E1".into());
        org.is_enterprise_install = true;
        s.save_slack_installation(&org).await.unwrap();
        let mut ws = row("T9", b"ws-ct");
        ws.enterprise_id = Some("E1".into());
        s.save_slack_installation(&ws).await.unwrap();

        let got = s
            .slack_installation(Some("E1"), None)
            .await
            .unwrap()
            .unwrap();
        assert!(got.is_enterprise_install, "{}", db.kind);
        assert_eq!(got.team_id, None);
        let got = s
            .slack_installation(Some("E1"), Some("T9"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.bot_token_encrypted.as_deref(), Some(&b"ws-ct"[..]));
        assert!(
            s.slack_installation(None, Some("T9"))
                .await
                .unwrap()
                .is_none()
        );
        s.close().await;
    }
}

#[tokio::test]
async fn token_columns_hold_exactly_the_given_bytes() {
    for (db, s) in stores().await {
        s.save_slack_installation(&row("T1", b"\x01opaque"))
            .await
            .unwrap();
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
        s.insert_oauth_state("good", 0, 300).await.unwrap();
        s.insert_oauth_state("old", 0, 100).await.unwrap();
        assert_eq!(
            s.consume_oauth_state("good", 200).await.unwrap(),
            OAuthStateCheck::Valid
        );
        assert_eq!(
            s.consume_oauth_state("good", 201).await.unwrap(),
            OAuthStateCheck::Reused
        );
        assert_eq!(
            s.consume_oauth_state("old", 200).await.unwrap(),
            OAuthStateCheck::Expired
        );
        assert_eq!(
            s.consume_oauth_state("forged", 200).await.unwrap(),
            OAuthStateCheck::Unknown
        );
        // A state is rejected at its exact expiry instant.
        s.insert_oauth_state("edge", 0, 500).await.unwrap();
        assert_eq!(
            s.consume_oauth_state("edge", 500).await.unwrap(),
            OAuthStateCheck::Expired
        );

        assert_eq!(s.cleanup_oauth_states(200).await.unwrap(), 1, "{kind}"); // "old"
        assert_eq!(
            s.consume_oauth_state("old", 200).await.unwrap(),
            OAuthStateCheck::Unknown
        );
        assert_eq!(s.cleanup_oauth_states(10_000).await.unwrap(), 2, "{kind}");
        s.close().await;
    }
}

#[tokio::test]
async fn concurrent_consumers_get_one_valid() {
    for (_db, s) in stores().await {
        s.insert_oauth_state("race", 0, i64::MAX).await.unwrap();
        let mut handles = Vec::new();
        for _ in 0..8 {
            let s = s.clone();
            handles.push(tokio::spawn(async move {
                s.consume_oauth_state("race", 1).await.unwrap()
            }));
        }
        let mut valid = 0;
        for h in handles {
            if h.await.unwrap() == OAuthStateCheck::Valid {
                valid += 1;
            }
        }
        assert_eq!(valid, 1);
        s.close().await;
    }
}
