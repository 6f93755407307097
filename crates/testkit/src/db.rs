//! Run a test suite on every database: a fresh SQLite file always, and a fresh PostgreSQL schema
//! when `TEST_DATABASE_URL` is set.
//!
//! ```no_run
//! # async fn t() {
//! for db in testkit::db::backends().await {
//!     // connect a store to db.url, run the test; db.kind says which backend failed
//!     println!("{}: {}", db.kind, db.url);
//! }
//! # }
//! ```
//!
//! PostgreSQL isolation is by schema, not database: each [`TestDb`] gets its own
//! `gh_test_<random>` schema, and its URL selects it with
//! `options=-c search_path=<schema>` (a libpq startup option, which sqlx passes on). Creating a
//! schema is far cheaper than creating a database and needs no extra privilege.
//!
//! Without `TEST_DATABASE_URL`, PostgreSQL is skipped with one line on stderr — except under CI
//! (`CI=true`), where that is a failure: the PostgreSQL suite must never be skipped silently.

use std::io::Write;
use std::path::Path;
use std::str::FromStr;
use std::sync::Once;

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};

/// One database for one test. Keep it alive for as long as the store uses it: dropping it
/// deletes the SQLite file or drops the PostgreSQL schema.
#[derive(Debug)]
pub struct TestDb {
    pub url: String,
    /// `"sqlite"` or `"postgres"`.
    pub kind: &'static str,
    _dir: Option<tempfile::TempDir>,
    pg: Option<PgCleanup>,
}

#[derive(Debug)]
struct PgCleanup {
    admin_url: String,
    schema: String,
}

impl TestDb {
    /// A fresh SQLite database in a temporary directory.
    pub fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("create a temporary directory for SQLite");
        TestDb {
            url: sqlite_url(dir.path()),
            kind: "sqlite",
            _dir: Some(dir),
            pg: None,
        }
    }

    /// A fresh schema in the PostgreSQL database at `base_url`. Panics (with the password
    /// redacted) if the server cannot be reached: a configured database that is down is a
    /// failure, not a skip.
    pub async fn postgres(base_url: &str) -> TestDb {
        let schema = format!("gh_test_{:016x}", fastrand::u64(..));
        let shown = redact(base_url);
        let opts = PgConnectOptions::from_str(base_url).unwrap_or_else(|e| {
            panic!("TEST_DATABASE_URL={shown} is not a valid PostgreSQL URL: {e}")
        });
        let mut conn = PgConnection::connect_with(&opts)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to TEST_DATABASE_URL={shown}: {e}"));
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("cannot create schema {schema} in {shown}: {e}"));
        let _ = conn.close().await;
        let sep = if base_url.contains('?') { '&' } else { '?' };
        TestDb {
            url: format!("{base_url}{sep}options=-c%20search_path%3D{schema}"),
            kind: "postgres",
            _dir: None,
            pg: Some(PgCleanup {
                admin_url: base_url.to_string(),
                schema,
            }),
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(pg) = self.pg.take() else { return };
        // Best effort: the test database is disposable. Drop may run inside a runtime, so the
        // async cleanup gets a thread and a runtime of its own.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let Ok(opts) = PgConnectOptions::from_str(&pg.admin_url) else {
                    return;
                };
                let Ok(mut conn) = PgConnection::connect_with(&opts).await else {
                    return;
                };
                // Connections of a pool the test forgot to close would block the DROP; give up
                // quickly rather than hang the test run.
                let _ = sqlx::query("SET lock_timeout = '2s'")
                    .execute(&mut conn)
                    .await;
                let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {} CASCADE", pg.schema))
                    .execute(&mut conn)
                    .await;
                let _ = conn.close().await;
            });
        })
        .join();
    }
}

/// `sqlite://<dir>/gatehouse.db?mode=rwc`.
pub fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}?mode=rwc", dir.join("gatehouse.db").display())
}

static SKIP_NOTICE: Once = Once::new();

/// The databases every store test runs on: SQLite always, PostgreSQL when `TEST_DATABASE_URL`
/// is set (panics under `CI=true` when it is not).
pub async fn backends() -> Vec<TestDb> {
    let mut out = vec![TestDb::sqlite()];
    match std::env::var("TEST_DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => out.push(TestDb::postgres(url.trim()).await),
        _ => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!(
                    "TEST_DATABASE_URL is not set but CI=true: the PostgreSQL suite must not be skipped in CI \
                     (set TEST_DATABASE_URL=postgres://user@host:port/db)"
                );
            }
            // Written to the handle, not with eprintln!, which the test harness captures: the
            // skip must be visible in a passing run.
            SKIP_NOTICE.call_once(|| {
                let _ = writeln!(
                    std::io::stderr(),
                    "PostgreSQL suite skipped: TEST_DATABASE_URL is not set"
                );
            });
        }
    }
    out
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact("postgres://u:pw@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
    }

    #[test]
    fn sqlite_urls_point_into_the_directory() {
        let u = sqlite_url(Path::new("/tmp/x"));
        assert_eq!(u, "sqlite:///tmp/x/gatehouse.db?mode=rwc");
    }
}
