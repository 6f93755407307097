//! The Slack install flow on the SQL store (SQLite, and PostgreSQL when `TEST_DATABASE_URL` is
//! set), against the fake Slack OAuth methods: raw rows hold no token in clear text, states are
//! single use and expire, nothing is written for a refused callback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use slack_adapter::config::Secret;
use slack_adapter::crypto::TokenCipher;
use slack_adapter::installations::{InstallationStore, Installations};
use slack_adapter::oauth::{CallbackParams, InstallFailure, InstallFlow, OAuthConfig};
use store_sqlx::{DbPool, SqlStore};
use testkit::db::backends;
use testkit::slack_oauth::{self, FakeSlackOAuth, Grant};

fn flow(
    store: Arc<SqlStore>,
    fake: &FakeSlackOAuth,
    keys: &[[u8; 32]],
    ttl: Duration,
) -> InstallFlow {
    let ins = Installations::new(store, Arc::new(TokenCipher::from_keys(keys).unwrap()));
    InstallFlow::new(
        OAuthConfig {
            client_id: slack_oauth::CLIENT_ID.into(),
            client_secret: Secret::new(slack_oauth::CLIENT_SECRET),
            api_url: fake.api_url(),
            state_ttl: ttl,
            ..OAuthConfig::default()
        },
        ins,
    )
}

fn params(code: &str, state: &str) -> CallbackParams {
    CallbackParams {
        code: Some(code.into()),
        state: Some(state.into()),
        error: None,
    }
}

/// Every byte of every row of both tables, as text, for a "no token in clear" check.
async fn raw_dump(store: &SqlStore) -> String {
    let mut out = String::new();
    let q = "SELECT * FROM slack_installations";
    match store.pool() {
        DbPool::Sqlite(p) => {
            use sqlx::{Column, Row};
            for r in sqlx::query(q).fetch_all(p).await.unwrap() {
                for c in r.columns() {
                    if let Ok(Some(b)) = r.try_get::<Option<Vec<u8>>, _>(c.ordinal()) {
                        out.push_str(&String::from_utf8_lossy(&b));
                    } else if let Ok(Some(s)) = r.try_get::<Option<String>, _>(c.ordinal()) {
                        out.push_str(&s);
                    }
                    out.push('|');
                }
            }
        }
        DbPool::Postgres(p) => {
            use sqlx::{Column, Row};
            for r in sqlx::query(q).fetch_all(p).await.unwrap() {
                for c in r.columns() {
                    if let Ok(Some(b)) = r.try_get::<Option<Vec<u8>>, _>(c.ordinal()) {
                        out.push_str(&String::from_utf8_lossy(&b));
                    } else if let Ok(Some(s)) = r.try_get::<Option<String>, _>(c.ordinal()) {
                        out.push_str(&s);
                    }
                    out.push('|');
                }
            }
        }
    }
    out
}

async fn count_rows(store: &SqlStore) -> i64 {
    let q = "SELECT COUNT(*) FROM slack_installations";
    match store.pool() {
        DbPool::Sqlite(p) => sqlx::query_scalar(q).fetch_one(p).await.unwrap(),
        DbPool::Postgres(p) => sqlx::query_scalar(q).fetch_one(p).await.unwrap(),
    }
}

#[tokio::test]
async fn install_on_sql_keeps_tokens_encrypted_and_refuses_bad_states() {
    for db in backends().await {
        let kind = db.kind;
        let store = Arc::new(SqlStore::connect(&db.url).await.unwrap());
        let fake = FakeSlackOAuth::start().await;
        let f = flow(store.clone(), &fake, &[[9u8; 32]], Duration::from_secs(300));

        // Refused callbacks write nothing.
        assert_eq!(
            f.callback(&params("x", "forged")).await.unwrap_err(),
            InstallFailure::UnknownState
        );
        assert_eq!(
            f.callback(&CallbackParams {
                code: Some("x".into()),
                ..Default::default()
            })
            .await
            .unwrap_err(),
            InstallFailure::MissingState
        );
        let short = flow(
            store.clone(),
            &fake,
            &[[9u8; 32]],
            Duration::from_millis(30),
        );
        let (_, stale) = short.start().await.unwrap();
        tokio::time::sleep(Duration::from_millis(80)).await;
        fake.add_code("c-exp", Grant::workspace("TEXP", "Exp"));
        assert_eq!(
            f.callback(&params("c-exp", &stale)).await.unwrap_err(),
            InstallFailure::ExpiredState
        );
        assert_eq!(count_rows(&store).await, 0, "{kind}");

        // A good install.
        fake.add_code("c1", Grant::workspace("T100", "Hundred").rotating());
        let (_, state) = f.start().await.unwrap();
        f.callback(&params("c1", &state)).await.unwrap();
        fake.add_code("c2", Grant::workspace("T200", "Two hundred"));
        assert_eq!(
            f.callback(&params("c2", &state)).await.unwrap_err(),
            InstallFailure::ReusedState
        );
        assert_eq!(count_rows(&store).await, 1, "{kind}");

        let dump = raw_dump(&store).await;
        assert!(
            dump.contains("T100") && dump.contains("Hundred"),
            "{kind}: {dump}"
        );
        let tokens = fake.tokens();
        assert_eq!(tokens.len(), 2);
        for t in &tokens {
            assert!(
                !dump.contains(&t.token),
                "{kind}: clear token in the database"
            );
            if let Some(r) = &t.refresh_token {
                assert!(
                    !dump.contains(r),
                    "{kind}: clear refresh token in the database"
                );
            }
        }
        assert!(!dump.contains("xox"), "{kind}");

        // Read back through the store with the key; a wrong key cannot.
        let bot = f
            .installations()
            .bot_token(None, Some("T100"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(bot.expose(), fake.bot_token("T100").unwrap());
        let wrong = flow(store.clone(), &fake, &[[8u8; 32]], Duration::from_secs(300));
        assert!(
            wrong
                .installations()
                .bot_token(None, Some("T100"))
                .await
                .is_err()
        );

        // Status never shows a token.
        let info = f.status("T100").await.unwrap().unwrap();
        let shown = serde_json::to_string(&info).unwrap();
        assert!(!shown.contains("xox"), "{shown}");
        assert!(info.bot_token_expires_at.is_some());

        // Key rotation re-encrypts in place; the old key alone no longer reads it.
        let rotating = flow(
            store.clone(),
            &fake,
            &[[7u8; 32], [9u8; 32]],
            Duration::from_secs(300),
        );
        assert_eq!(rotating.installations().rotate_keys().await.unwrap(), 1);
        let new_only = flow(store.clone(), &fake, &[[7u8; 32]], Duration::from_secs(300));
        assert_eq!(
            new_only
                .installations()
                .bot_token(None, Some("T100"))
                .await
                .unwrap()
                .unwrap(),
            bot
        );
        assert!(
            f.installations()
                .bot_token(None, Some("T100"))
                .await
                .is_err()
        );

        // Uninstall revokes and deletes.
        assert!(new_only.uninstall("T100").await.unwrap());
        assert!(fake.is_revoked(bot.expose()));
        assert_eq!(count_rows(&store).await, 0, "{kind}");

        // Cleanup of expired states (the stale one at least).
        assert!(store.cleanup_states(chrono::Utc::now()).await.unwrap() >= 1);
        store.close().await;
    }
}

/// Issue 11 §4: which Enterprise Grid organisation a workspace belongs to is kept in the store.
/// A restarted server (new store connection, new `Installations`, nothing in memory) and
/// `gatehouse-cleanup` must still send notifications of an org-wide install's workspace with the
/// org install's bot token, never `SLACK_BOT_TOKEN`: the fake Slack records which token it saw.
#[tokio::test]
async fn org_install_token_is_found_after_a_restart() {
    use access_core::notification::{Notification, RequestSummary};
    use access_core::ports::{Notifier, NotifyContext};
    use slack_adapter::installations::{Installation, InstallationInfo};
    use slack_adapter::{SlackConfig, SlackNotifier};
    use testkit::slack::{self as fake, FakeSlack, FakeUser};

    for db in backends().await {
        let slack = FakeSlack::start().await;
        slack.add_token("xoxb-org-install");
        slack.add_user(FakeUser::new("WALICE", "alice").email("alice@example.com"));
        let cipher = || Arc::new(TokenCipher::from_keys(&[[7u8; 32]]).unwrap());
        let open = || async {
            Installations::new(
                Arc::new(SqlStore::connect(&db.url).await.unwrap()),
                cipher(),
            )
        };
        // Before the restart: the org-wide install, and a request from workspace T9 of E1 (its
        // payload carries both ids), which is how the server learns T9 → E1.
        let before = open().await;
        before
            .save(&Installation {
                info: InstallationInfo {
                    enterprise_id: Some("E1".into()),
                    is_enterprise_install: true,
                    installed_at: chrono::Utc::now(),
                    updated_at: chrono::Utc::now(),
                    ..Default::default()
                },
                bot_token: Some(Secret::new("xoxb-org-install")),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(
            before
                .resolve(Some("E1"), Some("T9"))
                .await
                .unwrap()
                .is_some()
        );
        drop(before);

        // After the restart: notifications name only the workspace (or the organisation, for
        // requests keyed by it).
        let after = open().await;
        let notifier = SlackNotifier::new(&SlackConfig::new(
            fake::BOT_TOKEN,
            "secret",
            &slack.api_url(),
        ))
        .with_installations(after);
        for team in ["T9", "E1"] {
            let n = Notification::RequestSubmitted {
                request: RequestSummary {
                    id: access_core::RequestId::new(),
                    subject: access_core::Subject {
                        team_id: team.into(),
                        user_id: "WALICE".into(),
                        email: None,
                        name: "alice".into(),
                    },
                    resource: access_core::ResourceId::parse("dev-network").unwrap(),
                    resource_description: String::new(),
                    kind: access_core::request::RequestKind::New,
                    duration: "4h".parse().unwrap(),
                    justification: "because".into(),
                    status: access_core::request::RequestStatus::Pending,
                    created_at: chrono::Utc::now(),
                    provider: "dry-run".into(),
                    network: None,
                },
                approvals_required: 1,
            };
            notifier
                .notify(&n, &NotifyContext::default())
                .await
                .unwrap();
            let last = slack.calls_to("chat.postMessage").pop().unwrap();
            assert_eq!(
                last.token.as_deref(),
                Some("xoxb-org-install"),
                "{}: notification for {team} after a restart",
                db.kind
            );
        }
    }
}

/// Issue 11 §5 on the SQL store: a state bound to a workspace by a scoped admin refuses a
/// callback for another workspace (tokens revoked, nothing stored) and accepts its own.
#[tokio::test]
async fn bound_states_install_only_into_their_workspace() {
    for db in backends().await {
        let kind = db.kind;
        let store = Arc::new(SqlStore::connect(&db.url).await.unwrap());
        let fake = FakeSlackOAuth::start().await;
        let f = flow(store.clone(), &fake, &[[9u8; 32]], Duration::from_secs(300));
        fake.add_code("other", Grant::workspace("T2", "Two"));
        let (_, state) = f.start_for(Some("T1")).await.unwrap();
        let err = f.callback(&params("other", &state)).await.unwrap_err();
        assert!(
            matches!(&err, InstallFailure::WrongWorkspace { expected, got } if expected == "T1" && got == "T2"),
            "{kind}: {err:?}"
        );
        for t in fake.tokens() {
            assert!(fake.is_revoked(&t.token), "{kind}: not revoked");
        }
        assert_eq!(count_rows(&store).await, 0, "{kind}");
        fake.add_code("own", Grant::workspace("T1", "One"));
        let (_, state) = f.start_for(Some("T1")).await.unwrap();
        f.callback(&params("own", &state)).await.unwrap();
        assert_eq!(count_rows(&store).await, 1, "{kind}");
    }
}
