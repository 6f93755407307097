//! # store-sqlx
//!
//! The [`Store`](access_core::ports::Store) port of access-core on sqlx 0.8, for SQLite (the
//! embedded default) and PostgreSQL (several replicas sharing one database). One type,
//! [`SqlStore`], chosen by URL:
//!
//! - `sqlite://path/to/gatehouse.db?mode=rwc`: WAL journal, `foreign_keys=ON`, a busy timeout,
//!   `synchronous=FULL`, and every write in a `BEGIN IMMEDIATE` transaction behind an in-process
//!   writer lock (SQLite has one writer anyway; taking the lock up front avoids the
//!   `SQLITE_BUSY` deadlock of a read transaction upgrading to a write).
//! - `postgres://user@host/db`: a normal pool; the job claim uses `FOR UPDATE SKIP LOCKED` and the
//!   audit chain head is locked with `FOR UPDATE`, so concurrent commits from several servers
//!   chain correctly.
//!
//! Migrations (`migrations/sqlite`, `migrations/postgres`) are embedded and applied by
//! [`SqlStore::connect`].
//!
//! ## One copy of the logic
//!
//! The `Any` driver cannot carry the types and dialect features this store needs, so instead the
//! schema is written so that one SQL text and one set of Rust binding types work on both
//! backends:
//!
//! - ids are `TEXT` holding UUID strings (PostgreSQL's `uuid` type would need a different binding
//!   type than SQLite);
//! - timestamps are `BIGINT` unix **microseconds**: exact (the audit hash covers the timestamp in
//!   microseconds, so a round trip must not lose or invent precision), totally ordered as plain
//!   integers in SQLite (which has no timestamp type; text timestamps sort wrongly across time
//!   zones and precisions), and cheap to compare in range queries;
//! - JSON (actors, provider handles, job payloads, audit details) is `TEXT`, parsed with serde;
//! - every integer column is `BIGINT`, because sqlx-postgres decodes `i64` only from `INT8`.
//!
//! Statements use `$1, $2, …` numbered in order of first appearance. PostgreSQL reads them
//! natively; for SQLite the store turns them into anonymous `?`s with the arguments in the order
//! they appear (`db::SqliteStatement`: SQLite looks numbered parameters up in a list, which costs
//! the square of a big statement's parameters). So the only per-backend SQL is the few places
//! where the dialects really differ (`FOR UPDATE`, `SKIP LOCKED`).
//!
//! ## Semantics worth knowing
//!
//! - `commit`: one transaction, applied in the order requests, grants, decisions, audit, jobs.
//!   `Update`s are compare-and-set on `version` (the store writes `version + 1`); a lost CAS is
//!   `Conflict`, a unique violation is `Duplicate` (its message contains `decision` or
//!   `live grant`), and either rolls back the whole set. Audit records are truncated to
//!   microseconds, then sealed after the stored chain head. Jobs get `created_at` from the wall
//!   clock (a [`ChangeSet`](access_core::ports::ChangeSet) carries no time).
//! - `claim_jobs`: pending jobs with `run_at <= now` and running jobs whose lease lapsed,
//!   oldest `run_at` first; one fresh claim token per call. Leases (`locked_until`) run on the
//!   lease clock: the database's `now()` on PostgreSQL, the host clock on SQLite (one host), not
//!   the caller's `now`. A job with an `order_key` waits while an earlier one of its key is
//!   pending or running. A row that does not decode is set aside (dead, reason in `last_error`)
//!   in the same transaction, and the others are claimed. `renew_lease` extends the unlapsed
//!   leases of one claim token.
//!   `complete/retry/bury_job` act only while the token matches and the job is running.
//! - `next_job_at`: the earliest pending `run_at` **or running `locked_until`**, so a scheduler
//!   sleeping until then also wakes for a job whose worker died.
//! - `requests`, `grants`: newest first; `jobs`: oldest `run_at` first; `audit_events`: by
//!   `seq`, `since` inclusive, `until` exclusive. Limits default to 100 and are capped at 1000.
//! - `verify_audit_chain`: reads the head first and walks `seq <= head` in pages of 1000, so
//!   concurrent commits never look like tampering; a missing head row is reported as a break.
//! - `request_counts`/`grant_counts`: every status, zeros included.
//! - `remember_once`: keys are kept at least a day; one call in 256 sweeps older ones.
//! - Round trips (docs/performance.md): the audit head is advanced in one statement from the
//!   head this store last committed (checked in the `UPDATE`; read only when it moved), a change
//!   set's audit events and jobs are multi-row inserts, jobs named by
//!   [`ClaimAtInsert`](access_core::ports::ClaimAtInsert) are written already claimed (unless
//!   an unfinished job of their ordering key holds them back: decided in the insert itself,
//!   reported in `Committed::held_back`), and
//!   `enqueue_claimed_once` stores an inbox item in one statement (its job id derives from the
//!   key). [`SqlStore::stats`] counts statements and commits.
//! - Group commit (`group`, docs/performance.md): concurrent `commit`s, job completions and
//!   inbox items of one store (and its clones) are written as one transaction per batch, with
//!   one head update and multi-row inserts; a batch of one is the path above. A batch that fails
//!   before its `COMMIT` is rolled back and each of its calls written alone, so every caller gets
//!   its own outcome. Batches are written by a spawned task: a dropped caller abandons nothing.
//!
//! # Layout
//!
//! - `db`: the backend switch: [`DbPool`], bound arguments, rows, transactions.
//! - `error`: sqlx errors as [`StoreError`]s (unique violations are `Duplicate`, aborted
//!   transactions `Conflict`; the driver's error is the `source`, never the message).
//! - `codec`: domain values to columns and back (a row that does not parse is
//!   [`StoreError::Corrupt`], never a panic).
//! - `store/`: the store ports, one file each: `requests` ([`RequestStore`]: atomic change sets
//!   with compare-and-set, queries), `jobs` ([`JobQueue`]), `audit` ([`AuditLog`]: the hash
//!   chain), `refs` ([`MessageRefs`]); `mod` holds what they share.
//! - `pages`, `emergency`, `delegations`, `webhooks`: console pages, break-glass records,
//!   delegations, webhook cursors.
//! - `installations`: [`InstallationStore`] (Slack installations, sealed tokens, OAuth states).
//! - `migrations/{sqlite,postgres}`: the schema, kept in step by hand.
//!
//! [`RequestStore`]: access_core::ports::RequestStore
//! [`JobQueue`]: access_core::ports::JobQueue
//! [`AuditLog`]: access_core::ports::AuditLog
//! [`MessageRefs`]: access_core::ports::MessageRefs
//! [`InstallationStore`]: access_core::ports::InstallationStore
//!
//! # Example
//!
//! ```no_run
//! use access_core::ports::{AuditLog, JobFilter, JobQueue, RequestStore};
//! use store_sqlx::SqlStore;
//!
//! # async fn run() -> Result<(), access_core::ports::StoreError> {
//! let store = SqlStore::connect("sqlite://gatehouse.db?mode=rwc").await?;
//! store.ready().await?;
//! let stats = store.job_stats(chrono::Utc::now(), None).await?;
//! println!("{} jobs due", stats.due);
//! let chain = store.verify_audit_chain().await?;
//! assert!(chain.ok, "audit chain broken at {:?}", chain.first_bad);
//! let dead = store.jobs(&JobFilter { status: Some(access_core::jobs::JobStatus::Dead), ..Default::default() }).await?;
//! println!("{} dead jobs", dead.len());
//! # Ok(())
//! # }
//! ```

mod codec;
mod db;
mod delegations;
mod emergency;
mod error;
mod group;
mod installations;
mod pages;
mod store;
mod webhooks;

use std::str::FromStr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use access_core::ports::StoreError;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

pub use db::{Backend, DbPool, StoreStats};

static SQLITE_MIGRATIONS: LazyLock<Migrator> =
    LazyLock::new(|| tolerant(sqlx::migrate!("migrations/sqlite")));
static POSTGRES_MIGRATIONS: LazyLock<Migrator> =
    LazyLock::new(|| tolerant(sqlx::migrate!("migrations/postgres")));

/// A migrator that starts on a database holding migrations it does not know, applied by a newer
/// version of Gatehouse: a rollback to the previous image within a release series, or an older
/// replica restarting while a rolling upgrade is under way (docs/operations.md, "Upgrade").
/// sqlx's default refuses to start ("migration N was previously applied but is missing"). Such
/// migrations are additive within a release series; the server names them in a warning at start
/// ([`warn_of_newer_migrations`]).
fn tolerant(mut migrator: Migrator) -> Migrator {
    migrator.set_ignore_missing(true);
    migrator
}

/// Warns of migrations the database has that `migrator` does not know (see [`tolerant`]).
async fn warn_of_newer_migrations(migrator: &Migrator, db: &db::Db) {
    let applied = match db
        .fetch_all(&db::Sql::new(
            "SELECT version FROM _sqlx_migrations WHERE success = TRUE ORDER BY version",
        ))
        .await
    {
        Ok(rows) => rows,
        Err(e) => {
            tracing::warn!(error = %error::describe(&e), "could not list the applied migrations");
            return;
        }
    };
    let newer: Vec<i64> = applied
        .iter()
        .filter_map(|r| r.i64("version").ok())
        .filter(|v| !migrator.iter().any(|m| m.version == *v))
        .collect();
    if !newer.is_empty() {
        tracing::warn!(
            migrations = ?newer,
            "the database has migrations this version does not know: it was upgraded by a newer \
             version. Running against the newer schema, which is supported within a release \
             series only"
        );
    }
}

/// How long a SQLite connection waits for another process's write lock before giving up.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(15);
/// How much of the database file SQLite may map into memory (address space, not RSS: pages are
/// shared with the kernel's page cache).
const SQLITE_MMAP_SIZE: u64 = 256 * 1024 * 1024;

/// Pool sizing and timeouts. [`Default`] suits one server process.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Connections the store uses at once (at least 2). SQLite readers share them with the single
    /// writer. One more is opened on demand for [`SqlStore::pool`]'s readers, so a PostgreSQL
    /// server sees up to `max_connections + 1` from each process.
    pub max_connections: u32,
    /// How long a caller waits for a pooled connection.
    pub acquire_timeout: Duration,
    /// PostgreSQL only: the `statement_timeout` of every pooled connection, so a hung query fails
    /// instead of stalling every commit queued behind the audit-head lock. `None` leaves the
    /// server's setting (by default no limit).
    pub statement_timeout: Option<Duration>,
}

/// Default PostgreSQL `statement_timeout`: far above any query the store makes, far below "for ever".
pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_connections: 10,
            acquire_timeout: Duration::from_secs(30),
            statement_timeout: Some(DEFAULT_STATEMENT_TIMEOUT),
        }
    }
}

/// The SQL store. Cheap to clone (the pool is shared).
#[derive(Clone)]
pub struct SqlStore {
    db: db::Db,
    /// Counts `remember_once` calls so old keys are swept now and then, not on every call.
    remember_calls: Arc<AtomicU64>,
    /// `GATEHOUSE_AUDIT_KEY`: seals audit events with HMAC links and verifies them. `None` in
    /// development (unkeyed chain; the runtime warns).
    audit_keys: Option<access_core::audit::AuditKeyring>,
    /// The audit chain head this store last committed: a hint that saves reading the head on
    /// every commit (checked against the stored head when it is advanced).
    audit_head: Arc<std::sync::Mutex<Option<(i64, String)>>>,
    /// Concurrent `commit`s, written as one transaction (docs/performance.md, "Group commit").
    commits: Arc<group::Group<access_core::ports::ChangeSet, CommitOutcome>>,
    /// Concurrent job completions (with their message refs), written as one transaction.
    completions: Arc<group::Group<store::Completion, CompleteOutcome>>,
    /// Concurrent inbox items (`enqueue_claimed_once`), written as one multi-row statement.
    inbox: Arc<group::Group<store::InboxInsert, Result<bool, StoreError>>>,
}

type CommitOutcome = Result<access_core::ports::Committed, StoreError>;
type CompleteOutcome = Result<u64, StoreError>;

/// sqlx's pool holds the store's connections plus one: the store keeps its own out of the pool
/// between uses (`db::Connections`), and the spare serves [`SqlStore::pool`]'s readers.
fn store_pool_size(max_connections: u32) -> u32 {
    max_connections.max(2).saturating_add(1)
}

/// Most change sets (or completion calls) one group-commit batch writes: bounds a transaction's
/// size; the multi-row statements chunk their rows below both backends' parameter limits.
const GROUP_CAP: usize = 256;

impl std::fmt::Debug for SqlStore {
    // The pool's Debug prints connect options; keep it short and free of anything secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlStore")
            .field("backend", &self.backend())
            .finish_non_exhaustive()
    }
}

impl SqlStore {
    /// Connects to `sqlite://…` or `postgres://…` (also `postgresql://…`) and applies the
    /// embedded migrations.
    pub async fn connect(url: &str) -> Result<SqlStore, StoreError> {
        Self::connect_with(url, StoreOptions::default()).await
    }

    pub async fn connect_with(url: &str, opts: StoreOptions) -> Result<SqlStore, StoreError> {
        let pool = if url.starts_with("sqlite:") {
            if url.contains(":memory:") || url.contains("mode=memory") {
                // Every pooled connection would open its own empty database.
                return Err(StoreError::database_msg(
                    "in-memory SQLite is not supported: use a file (sqlite://path?mode=rwc)",
                ));
            }
            let conn = SqliteConnectOptions::from_str(url)
                // The parser's error may quote the URL: only its kind is reported.
                .map_err(|e| {
                    StoreError::database_msg(format!(
                        "invalid SQLite URL {}: {}",
                        redact_url(url),
                        error::describe(&e)
                    ))
                })?
                .journal_mode(SqliteJournalMode::Wal)
                .foreign_keys(true)
                .busy_timeout(SQLITE_BUSY_TIMEOUT)
                // The audit trail and the revocation queue must survive a power cut, not just a
                // crash: FULL syncs the WAL on every commit.
                .synchronous(SqliteSynchronous::Full)
                // Reads through a memory map instead of `pread` into each connection's page
                // cache: a profile of the load benchmark put ~8 % of the server's CPU in the
                // kernel copying pages that another connection's commit had invalidated
                // (docs/performance.md). Writes still go through the WAL as before.
                .pragma("mmap_size", SQLITE_MMAP_SIZE.to_string())
                // Temporary B-trees and spilled statement journals in memory: with the default
                // (files) SQLite created, wrote and unlinked a file in /var/tmp for some of the
                // job queue's statements, five system calls and more each time
                // (docs/performance.md, "Seventh session"). They hold nothing that must outlive
                // the statement.
                .pragma("temp_store", "memory");
            let pool = SqlitePoolOptions::new()
                .max_connections(store_pool_size(opts.max_connections))
                .acquire_timeout(opts.acquire_timeout)
                .connect_with(conn)
                .await
                .map_err(|e| StoreError::database(format!("cannot open {}", redact_url(url)), e))?;
            SQLITE_MIGRATIONS
                .run(&pool)
                .await
                .map_err(|e| StoreError::database("SQLite migrations failed", e))?;
            DbPool::Sqlite(pool)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            // The parser's error may quote the URL (and its password): only its kind is reported.
            let mut conn = PgConnectOptions::from_str(url).map_err(|e| {
                StoreError::database_msg(format!(
                    "invalid PostgreSQL URL {}: {}",
                    redact_url(url),
                    error::describe(&e)
                ))
            })?;
            // No JIT: the job claim's estimated cost passes `jit_above_cost` once the queue holds
            // ~100,000 pending jobs (the planner cannot know how few are due), and PostgreSQL then
            // spent ~0.85 s compiling each claim that ran in ~2 ms (measured with EXPLAIN ANALYZE,
            // 1.1 M jobs): revocations of 10,000 grants expiring within a minute fell minutes
            // behind. Gatehouse's statements are all short index reads and writes; JIT only pays
            // for long analytical scans.
            conn = conn.options([("jit", "off")]);
            if let Some(t) = opts.statement_timeout {
                // A startup option (`-c statement_timeout=…`): set on every connection the pool
                // opens, with no extra round trip, and added to any `options` the URL carries.
                conn = conn.options([("statement_timeout", format!("{}ms", t.as_millis()))]);
            }
            let pool = PgPoolOptions::new()
                .max_connections(store_pool_size(opts.max_connections))
                .acquire_timeout(opts.acquire_timeout)
                .connect_with(conn)
                .await
                .map_err(|e| {
                    StoreError::database(format!("cannot connect to {}", redact_url(url)), e)
                })?;
            POSTGRES_MIGRATIONS
                .run(&pool)
                .await
                .map_err(|e| StoreError::database("PostgreSQL migrations failed", e))?;
            DbPool::Postgres(pool)
        } else {
            return Err(StoreError::database_msg(format!(
                "unsupported database URL {} (use sqlite://… or postgres://…)",
                redact_url(url)
            )));
        };
        tracing::info!(backend = ?backend_of(&pool), "store connected, migrations applied");
        let store = SqlStore {
            db: db::Db::new(pool),
            remember_calls: Arc::new(AtomicU64::new(0)),
            audit_keys: None,
            audit_head: Arc::default(),
            commits: Arc::new(group::Group::new(GROUP_CAP)),
            completions: Arc::new(group::Group::new(GROUP_CAP)),
            inbox: Arc::new(group::Group::new(GROUP_CAP)),
        };
        warn_of_newer_migrations(store.migrator(), &store.db).await;
        Ok(store)
    }

    /// Seals (and verifies) the audit chain under `keys` from now on. The first event sealed
    /// with a key after an unkeyed chain links to the last unkeyed hash: that event records the
    /// switch, and everything before it keeps verifying as it did.
    pub fn with_audit_keys(mut self, keys: Option<access_core::audit::AuditKeyring>) -> Self {
        self.audit_keys = keys;
        self
    }

    /// The audit keyring, if one is configured.
    pub fn audit_keys(&self) -> Option<&access_core::audit::AuditKeyring> {
        self.audit_keys.as_ref()
    }

    pub fn backend(&self) -> Backend {
        self.db.backend()
    }

    /// Statements and commits this store (and its clones) has sent since it was opened. Take a
    /// snapshot before and after an operation and subtract to count what the operation cost.
    pub fn stats(&self) -> StoreStats {
        self.db.counters.snapshot()
    }

    /// Round trips to the database this store (and its clones) has made since it was opened:
    /// its statements plus every `BEGIN`, `COMMIT` or `ROLLBACK` sent on its own. On SQLite a
    /// transaction's `BEGIN` rides with its first statement and, where the store can, its
    /// `COMMIT` with its last (docs/performance.md, "Fifth session").
    pub fn round_trips(&self) -> u64 {
        self.db.counters.round_trips()
    }

    /// Statements only (see [`SqlStore::stats`]): for tests that bound a code path's round
    /// trips (an idle scheduler tick, an export batch).
    pub fn statements(&self) -> u64 {
        self.stats().statements
    }

    /// The underlying pool, for tests and tools that read the tables directly. Writes must go
    /// through the store's ports ([`access_core::ports::Store`],
    /// [`access_core::ports::InstallationStore`]).
    pub fn pool(&self) -> &DbPool {
        &self.db.pool
    }

    /// Sets the most change sets (and completion calls) one group-commit batch takes; 1 turns
    /// grouping off (every call its own transaction, as before group commit). For benchmarks
    /// that compare the two; production keeps the default.
    #[doc(hidden)]
    pub fn with_group_cap(mut self, cap: usize) -> Self {
        self.commits = Arc::new(group::Group::new(cap));
        self.completions = Arc::new(group::Group::new(cap));
        self.inbox = Arc::new(group::Group::new(cap));
        self
    }

    /// Holds back every `commit` of this store (and its clones) until the guard is dropped:
    /// they queue, and the first flush after it writes them as one batch. For tests of group
    /// commit that need a batch of a known size without timing; never for production use.
    #[doc(hidden)]
    pub async fn hold_commits(&self) -> tokio::sync::OwnedMutexGuard<()> {
        self.commits.hold().await
    }

    /// `commit`s queued for the next batch (see [`Self::hold_commits`]).
    #[doc(hidden)]
    pub fn queued_commits(&self) -> usize {
        self.commits.queued()
    }

    /// As [`Self::hold_commits`], for job completions.
    #[doc(hidden)]
    pub async fn hold_completions(&self) -> tokio::sync::OwnedMutexGuard<()> {
        self.completions.hold().await
    }

    /// Job completion calls queued for the next batch.
    #[doc(hidden)]
    pub fn queued_completions(&self) -> usize {
        self.completions.queued()
    }

    /// As [`Self::hold_commits`], for inbox items (`enqueue_claimed_once`).
    #[doc(hidden)]
    pub async fn hold_inbox(&self) -> tokio::sync::OwnedMutexGuard<()> {
        self.inbox.hold().await
    }

    /// Inbox items queued for the next batch.
    #[doc(hidden)]
    pub fn queued_inbox(&self) -> usize {
        self.inbox.queued()
    }

    /// Closes every pooled connection (waits for those in use).
    pub async fn close(&self) {
        self.db.close().await;
    }

    fn migrator(&self) -> &'static Migrator {
        match self.backend() {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        }
    }
}

impl SqlStore {
    /// Takes (or renews) the named lease for `holder` until the database's now + `ttl`. True when
    /// `holder` has it: the lease was free, had run out, or was already `holder`'s. One
    /// conditional upsert, so two replicas racing for it cannot both win; the expiry is the
    /// database's clock (PostgreSQL `clock_timestamp()`, SQLite `julianday('now')`), not each
    /// replica's.
    pub async fn try_take_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let now = match self.backend() {
            Backend::Postgres => "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000)::BIGINT",
            Backend::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000000.0 AS INTEGER)",
        };
        let ttl_micros = i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX / 2);
        let mut sql = db::Sql::new("INSERT INTO leases (name, holder, expires_at) VALUES (");
        sql.bind(name)
            .push(", ")
            .bind(holder)
            .push(&format!(", {now} + "))
            .bind(ttl_micros)
            .push(&format!(
                ") ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, \
                 expires_at = excluded.expires_at \
                 WHERE leases.expires_at <= {now} OR leases.holder = excluded.holder"
            ));
        let n = self
            .db
            .execute(&sql)
            .await
            .map_err(|e| StoreError::database(format!("taking lease {name}"), e))?;
        Ok(n == 1)
    }

    /// How many live (provisioning, active, revoking) grants each resource holds: at start, a
    /// resource dropped from the configuration must not strand any.
    pub async fn live_grants_by_resource(&self) -> Result<Vec<(String, u64)>, StoreError> {
        // Same statuses as the store's own live-grant queries (`GrantStatus::is_live`).
        let sql = db::Sql::new(
            "SELECT resource, COUNT(*) AS n FROM grants \
             WHERE status IN ('provisioning', 'active', 'revoking') \
             GROUP BY resource ORDER BY resource",
        );
        let rows = self
            .db
            .fetch_all(&sql)
            .await
            .map_err(error::failed("counting live grants"))?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.string("resource")?,
                    u64::try_from(r.i64("n")?).unwrap_or(0),
                ))
            })
            .collect()
    }
}

fn backend_of(p: &DbPool) -> Backend {
    match p {
        DbPool::Sqlite(_) => Backend::Sqlite,
        DbPool::Postgres(_) => Backend::Postgres,
    }
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`, for error messages and logs.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://u:p%40ss@h:5432/db?x=1"),
            "postgres://u:***@h:5432/db?x=1"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            redact_url("sqlite:///tmp/x.db?mode=rwc"),
            "sqlite:///tmp/x.db?mode=rwc"
        );
        assert_eq!(
            redact_url("postgres://u:p@ss@h/db"),
            "postgres://u:***@h/db"
        );
    }
}
