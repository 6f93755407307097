//! One copy of the SQL for two backends.
//!
//! Every query is written once with `$1, $2, …` placeholders, numbered in order of first
//! appearance. PostgreSQL understands them natively; sqlx-sqlite reads `$NNN` as the NNN-th bound
//! argument (checked by a test in `tests/contract.rs`), so the same text and the same argument
//! list work on both. Arguments are a tiny closed set of types ([`Arg`]) that both drivers encode
//! the same way, and rows are read through [`DbRow`], which asks the driver for the same Rust
//! types on both.

use std::future::Future;
use std::panic::Location;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use access_core::ports::StoreError;
use sqlx::postgres::{PgArguments, PgConnection, PgPool, PgRow};
use sqlx::query::Query;
use sqlx::sqlite::{SqliteArguments, SqliteConnection, SqlitePool, SqliteRow};
use sqlx::{Postgres, Row, Sqlite, Transaction};
use tokio::sync::{Mutex, OwnedMutexGuard};

/// Which database a store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// The connection pool behind a [`crate::SqlStore`], for tests and tools that read its tables
/// directly.
#[derive(Debug, Clone)]
pub enum DbPool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// A bound value. Only types that mean the same on both backends.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Arg {
    Int(Option<i64>),
    Text(Option<String>),
    /// SQLite INTEGER 0/1, PostgreSQL BOOLEAN (both drivers encode `bool` to their column).
    Bool(bool),
    /// SQLite BLOB, PostgreSQL BYTEA.
    Bytes(Option<Vec<u8>>),
}

impl From<bool> for Arg {
    fn from(v: bool) -> Self {
        Arg::Bool(v)
    }
}

impl From<Option<Vec<u8>>> for Arg {
    fn from(v: Option<Vec<u8>>) -> Self {
        Arg::Bytes(v)
    }
}

impl From<i64> for Arg {
    fn from(v: i64) -> Self {
        Arg::Int(Some(v))
    }
}

impl From<Option<i64>> for Arg {
    fn from(v: Option<i64>) -> Self {
        Arg::Int(v)
    }
}

impl From<String> for Arg {
    fn from(v: String) -> Self {
        Arg::Text(Some(v))
    }
}

impl From<&str> for Arg {
    fn from(v: &str) -> Self {
        Arg::Text(Some(v.to_string()))
    }
}

impl From<Option<String>> for Arg {
    fn from(v: Option<String>) -> Self {
        Arg::Text(v)
    }
}

/// SQL text plus its arguments, built so that placeholders are numbered in order.
#[derive(Debug, Clone, Default)]
pub(crate) struct Sql {
    pub text: String,
    pub args: Vec<Arg>,
}

impl Sql {
    pub fn new(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            args: Vec::new(),
        }
    }

    /// A fixed statement with its arguments (`$1` is `args[0]`, …).
    pub fn with(text: impl Into<String>, args: Vec<Arg>) -> Self {
        Self {
            text: text.into(),
            args,
        }
    }

    pub fn push(&mut self, s: &str) -> &mut Self {
        self.text.push_str(s);
        self
    }

    /// Adds an argument and writes its placeholder.
    pub fn bind(&mut self, a: impl Into<Arg>) -> &mut Self {
        self.args.push(a.into());
        let n = self.args.len();
        self.text.push('$');
        self.text.push_str(&n.to_string());
        self
    }
}

fn sqlite_query<'q>(sql: &'q Sql) -> Query<'q, Sqlite, SqliteArguments<'q>> {
    let mut q = sqlx::query::<Sqlite>(&sql.text);
    for a in &sql.args {
        q = match a {
            Arg::Int(v) => q.bind(*v),
            Arg::Text(v) => q.bind(v.as_deref()),
            Arg::Bool(v) => q.bind(*v),
            Arg::Bytes(v) => q.bind(v.as_deref()),
        };
    }
    q
}

fn pg_query<'q>(sql: &'q Sql) -> Query<'q, Postgres, PgArguments> {
    let mut q = sqlx::query::<Postgres>(&sql.text);
    for a in &sql.args {
        q = match a {
            Arg::Int(v) => q.bind(*v),
            Arg::Text(v) => q.bind(v.as_deref()),
            Arg::Bool(v) => q.bind(*v),
            Arg::Bytes(v) => q.bind(v.as_deref()),
        };
    }
    q
}

/// What a store has sent to its database since it was opened: the figures behind
/// "statements per operation" (docs/performance.md). Every statement is a round trip (to
/// SQLite's worker thread, or over the network to PostgreSQL); `commits` counts write
/// transactions, an autocommitted single write included. Reads outside a transaction count as
/// statements only. `BEGIN`/`COMMIT` themselves are not counted as statements.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub statements: u64,
    pub commits: u64,
}

impl std::ops::Sub for StoreStats {
    type Output = StoreStats;
    fn sub(self, rhs: StoreStats) -> StoreStats {
        StoreStats {
            statements: self.statements.saturating_sub(rhs.statements),
            commits: self.commits.saturating_sub(rhs.commits),
        }
    }
}

/// The counters behind [`StoreStats`]: two relaxed atomic adds per statement, cheap enough to
/// keep on in production.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    statements: AtomicU64,
    commits: AtomicU64,
}

impl Counters {
    fn statement(&self) {
        self.statements.fetch_add(1, Ordering::Relaxed);
    }

    fn commit(&self) {
        self.commits.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> StoreStats {
        StoreStats {
            statements: self.statements.load(Ordering::Relaxed),
            commits: self.commits.load(Ordering::Relaxed),
        }
    }
}

/// A connection of either kind, borrowed from a pool or a transaction.
pub(crate) struct Conn<'a> {
    kind: ConnKind<'a>,
    counters: &'a Counters,
}

enum ConnKind<'a> {
    Sqlite(&'a mut SqliteConnection),
    Postgres(&'a mut PgConnection),
}

impl Conn<'_> {
    pub async fn execute(&mut self, sql: &Sql) -> Result<u64, sqlx::Error> {
        self.counters.statement();
        match &mut self.kind {
            ConnKind::Sqlite(c) => Ok(sqlite_query(sql).execute(&mut **c).await?.rows_affected()),
            ConnKind::Postgres(c) => Ok(pg_query(sql).execute(&mut **c).await?.rows_affected()),
        }
    }

    pub async fn fetch_all(&mut self, sql: &Sql) -> Result<Vec<DbRow>, sqlx::Error> {
        self.counters.statement();
        match &mut self.kind {
            ConnKind::Sqlite(c) => Ok(sqlite_query(sql)
                .fetch_all(&mut **c)
                .await?
                .into_iter()
                .map(DbRow::Sqlite)
                .collect()),
            ConnKind::Postgres(c) => Ok(pg_query(sql)
                .fetch_all(&mut **c)
                .await?
                .into_iter()
                .map(DbRow::Postgres)
                .collect()),
        }
    }

    pub async fn fetch_optional(&mut self, sql: &Sql) -> Result<Option<DbRow>, sqlx::Error> {
        self.counters.statement();
        match &mut self.kind {
            ConnKind::Sqlite(c) => Ok(sqlite_query(sql)
                .fetch_optional(&mut **c)
                .await?
                .map(DbRow::Sqlite)),
            ConnKind::Postgres(c) => Ok(pg_query(sql)
                .fetch_optional(&mut **c)
                .await?
                .map(DbRow::Postgres)),
        }
    }
}

/// A write transaction. On SQLite it also holds the process-wide writer lock.
pub(crate) struct Tx {
    kind: TxKind,
    counters: Arc<Counters>,
}

/// The driver's transaction of either kind.
pub(crate) enum TxKind {
    Sqlite {
        tx: Transaction<'static, Sqlite>,
        _writer: WriterGuard,
    },
    Postgres(Transaction<'static, Postgres>),
}

impl Tx {
    pub fn conn(&mut self) -> Conn<'_> {
        let kind = match &mut self.kind {
            TxKind::Sqlite { tx, .. } => ConnKind::Sqlite(tx),
            TxKind::Postgres(tx) => ConnKind::Postgres(tx),
        };
        Conn {
            kind,
            counters: &self.counters,
        }
    }

    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.counters.commit();
        match self.kind {
            TxKind::Sqlite { tx, _writer } => tx.commit().await,
            TxKind::Postgres(tx) => tx.commit().await,
        }
    }

    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        match self.kind {
            TxKind::Sqlite { tx, _writer } => tx.rollback().await,
            TxKind::Postgres(tx) => tx.rollback().await,
        }
    }
}

/// Who holds the SQLite writer lock: the code that called [`Db::begin`] and since when.
type Holder = Option<(&'static Location<'static>, Instant)>;

/// How long a writer waits for the writer lock before it names the holder in a warning (and
/// again every as long). Transactions here last milliseconds; a wait this long means the holder
/// is stuck on something outside the database, and without the warning that is a silent hang.
const WRITER_WAIT_WARN: Duration = Duration::from_secs(10);

/// The in-process SQLite writer lock, held for the life of a [`Tx`]; records its holder.
pub(crate) struct WriterGuard {
    _guard: OwnedMutexGuard<()>,
    holder: Arc<StdMutex<Holder>>,
}

impl Drop for WriterGuard {
    fn drop(&mut self) {
        if let Ok(mut h) = self.holder.lock() {
            *h = None;
        }
    }
}

/// Pools plus the SQLite writer lock.
#[derive(Debug, Clone)]
pub(crate) struct Db {
    pub pool: DbPool,
    /// SQLite allows one writer at a time anyway; queueing writers here (fairly, without
    /// sleeping) is faster than letting them spin on `SQLITE_BUSY`. `BEGIN IMMEDIATE` still
    /// guards against writers in other processes (the cleanup binary).
    writer: Arc<Mutex<()>>,
    /// The current holder of `writer`, for the warning of a writer that waits too long.
    holder: Arc<StdMutex<Holder>>,
    pub counters: Arc<Counters>,
}

impl Db {
    pub fn new(pool: DbPool) -> Self {
        Self {
            pool,
            writer: Arc::new(Mutex::new(())),
            holder: Arc::new(StdMutex::new(None)),
            counters: Arc::new(Counters::default()),
        }
    }

    fn conn<'a>(&'a self, kind: ConnKind<'a>) -> Conn<'a> {
        Conn {
            kind,
            counters: &self.counters,
        }
    }

    pub fn backend(&self) -> Backend {
        match self.pool {
            DbPool::Sqlite(_) => Backend::Sqlite,
            DbPool::Postgres(_) => Backend::Postgres,
        }
    }

    /// Starts a write transaction. Safe to give up on (drop) at any moment: the BEGIN runs in a
    /// task of its own, so a caller that leaves (a request whose client hung up, a time-out
    /// around a store call) cannot strand an open transaction. sqlx rolls back a BEGIN whose
    /// caller left before it was acknowledged, but not one whose caller left between the
    /// acknowledgement and the `Transaction` being made: that connection went back to the pool
    /// inside the transaction, and on SQLite kept the write lock for good ("database is locked"
    /// for every later write, in every process). Here the task finishes making the
    /// `Transaction`, and dropping its unclaimed result rolls it back.
    ///
    /// On SQLite a writer that has waited [`WRITER_WAIT_WARN`] for the in-process writer lock
    /// logs a warning naming the holder's call site and how long it has held the lock.
    #[track_caller]
    pub fn begin(&self) -> impl Future<Output = Result<Tx, sqlx::Error>> + Send + '_ {
        let caller = Location::caller();
        self.begin_at(caller)
    }

    async fn begin_at(&self, caller: &'static Location<'static>) -> Result<Tx, sqlx::Error> {
        let kind = match &self.pool {
            DbPool::Sqlite(p) => {
                let guard = self.writer_lock(caller).await;
                let p = p.clone();
                // IMMEDIATE takes the write lock up front: a deferred transaction that reads and
                // then writes can fail with SQLITE_BUSY on the upgrade no matter the busy timeout.
                let tx = tokio::spawn(async move { p.begin_with("BEGIN IMMEDIATE").await })
                    .await
                    .map_err(begin_task_failed)??;
                TxKind::Sqlite { tx, _writer: guard }
            }
            DbPool::Postgres(p) => {
                let p = p.clone();
                let tx = tokio::spawn(async move { p.begin().await })
                    .await
                    .map_err(begin_task_failed)??;
                TxKind::Postgres(tx)
            }
        };
        Ok(Tx {
            kind,
            counters: self.counters.clone(),
        })
    }

    /// Takes the SQLite writer lock for `caller`, warning while it waits too long.
    async fn writer_lock(&self, caller: &'static Location<'static>) -> WriterGuard {
        let started = Instant::now();
        let lock = self.writer.clone().lock_owned();
        tokio::pin!(lock);
        let guard = loop {
            match tokio::time::timeout(WRITER_WAIT_WARN, &mut lock).await {
                Ok(g) => break g,
                Err(_) => {
                    let holder = self.holder.lock().ok().and_then(|h| *h);
                    match holder {
                        Some((at, since)) => tracing::warn!(
                            waiter = %caller,
                            waited_ms = started.elapsed().as_millis() as u64,
                            holder = %at,
                            held_ms = since.elapsed().as_millis() as u64,
                            "waiting for the SQLite writer lock: its holder has not finished its transaction"
                        ),
                        None => tracing::warn!(
                            waiter = %caller,
                            waited_ms = started.elapsed().as_millis() as u64,
                            "waiting for the SQLite writer lock (holder unknown)"
                        ),
                    }
                }
            }
        };
        if let Ok(mut h) = self.holder.lock() {
            *h = Some((caller, Instant::now()));
        }
        WriterGuard {
            _guard: guard,
            holder: self.holder.clone(),
        }
    }

    /// Runs one read on a pooled connection.
    pub async fn fetch_all(&self, sql: &Sql) -> Result<Vec<DbRow>, sqlx::Error> {
        match &self.pool {
            DbPool::Sqlite(p) => {
                let mut c = p.acquire().await?;
                self.conn(ConnKind::Sqlite(&mut c)).fetch_all(sql).await
            }
            DbPool::Postgres(p) => {
                let mut c = p.acquire().await?;
                self.conn(ConnKind::Postgres(&mut c)).fetch_all(sql).await
            }
        }
    }

    /// Runs one write on a pooled connection, outside any explicit transaction (it commits on
    /// its own, and counts as a commit).
    pub async fn execute(&self, sql: &Sql) -> Result<u64, sqlx::Error> {
        self.counters.commit();
        match &self.pool {
            DbPool::Sqlite(p) => {
                let mut c = p.acquire().await?;
                self.conn(ConnKind::Sqlite(&mut c)).execute(sql).await
            }
            DbPool::Postgres(p) => {
                let mut c = p.acquire().await?;
                self.conn(ConnKind::Postgres(&mut c)).execute(sql).await
            }
        }
    }

    pub async fn fetch_optional(&self, sql: &Sql) -> Result<Option<DbRow>, sqlx::Error> {
        match &self.pool {
            DbPool::Sqlite(p) => {
                let mut c = p.acquire().await?;
                self.conn(ConnKind::Sqlite(&mut c))
                    .fetch_optional(sql)
                    .await
            }
            DbPool::Postgres(p) => {
                let mut c = p.acquire().await?;
                self.conn(ConnKind::Postgres(&mut c))
                    .fetch_optional(sql)
                    .await
            }
        }
    }
}

fn begin_task_failed(e: tokio::task::JoinError) -> sqlx::Error {
    sqlx::Error::Protocol(format!("the task starting a transaction failed: {e}"))
}

/// A result row of either kind. Getters name the column, so a schema drift is a clear
/// [`StoreError::Corrupt`], never a panic.
pub(crate) enum DbRow {
    Sqlite(SqliteRow),
    Postgres(PgRow),
    /// A row read back from a JSON object: a page of rows fetched as one (see
    /// [`DbRow::page_from_json`]).
    Json(serde_json::Map<String, serde_json::Value>),
}

fn corrupt(col: &str, e: sqlx::Error) -> StoreError {
    StoreError::corrupt_because(format!("column {col}"), e)
}

impl DbRow {
    pub fn i64(&self, col: &str) -> Result<i64, StoreError> {
        self.opt_i64(col)?
            .ok_or_else(|| StoreError::corrupt(format!("column {col}: unexpected NULL")))
    }

    pub fn opt_i64(&self, col: &str) -> Result<Option<i64>, StoreError> {
        match self {
            DbRow::Sqlite(r) => r
                .try_get::<Option<i64>, _>(col)
                .map_err(|e| corrupt(col, e)),
            DbRow::Postgres(r) => r
                .try_get::<Option<i64>, _>(col)
                .map_err(|e| corrupt(col, e)),
            DbRow::Json(m) => match m.get(col) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(v) => v
                    .as_i64()
                    .map(Some)
                    .ok_or_else(|| StoreError::corrupt(format!("column {col}: not an integer"))),
            },
        }
    }

    pub fn string(&self, col: &str) -> Result<String, StoreError> {
        self.opt_string(col)?
            .ok_or_else(|| StoreError::corrupt(format!("column {col}: unexpected NULL")))
    }

    pub fn opt_string(&self, col: &str) -> Result<Option<String>, StoreError> {
        match self {
            DbRow::Sqlite(r) => r
                .try_get::<Option<String>, _>(col)
                .map_err(|e| corrupt(col, e)),
            DbRow::Postgres(r) => r
                .try_get::<Option<String>, _>(col)
                .map_err(|e| corrupt(col, e)),
            DbRow::Json(m) => match m.get(col) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(StoreError::corrupt(format!("column {col}: not text"))),
            },
        }
    }

    /// A boolean column (SQLite INTEGER 0/1, PostgreSQL BOOLEAN).
    pub fn bool(&self, col: &str) -> Result<bool, StoreError> {
        match self {
            DbRow::Sqlite(r) => r.try_get::<bool, _>(col).map_err(|e| corrupt(col, e)),
            DbRow::Postgres(r) => r.try_get::<bool, _>(col).map_err(|e| corrupt(col, e)),
            DbRow::Json(m) => match m.get(col) {
                Some(serde_json::Value::Bool(b)) => Ok(*b),
                Some(v) => v
                    .as_i64()
                    .map(|n| n != 0)
                    .ok_or_else(|| StoreError::corrupt(format!("column {col}: not a boolean"))),
                None => Err(StoreError::corrupt(format!(
                    "column {col}: unexpected NULL"
                ))),
            },
        }
    }

    /// A byte column (SQLite BLOB, PostgreSQL BYTEA); JSON pages carry none.
    pub fn opt_bytes(&self, col: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self {
            DbRow::Sqlite(r) => r
                .try_get::<Option<Vec<u8>>, _>(col)
                .map_err(|e| corrupt(col, e)),
            DbRow::Postgres(r) => r
                .try_get::<Option<Vec<u8>>, _>(col)
                .map_err(|e| corrupt(col, e)),
            DbRow::Json(_) => Err(StoreError::corrupt(format!(
                "column {col}: bytes cannot be read from a JSON page"
            ))),
        }
    }

    /// A page of rows that SQLite returned as one JSON array of objects
    /// (`json_group_array(json_object(…))`). sqlx's SQLite driver hands every row from its
    /// worker thread to the async side on its own; for a long sequential read (the audit walk)
    /// those hand-offs, not SQLite, are most of the cost, and one row per page removes them.
    pub fn page_from_json(text: &str) -> Result<Vec<DbRow>, StoreError> {
        let rows: Vec<serde_json::Map<String, serde_json::Value>> = serde_json::from_str(text)
            .map_err(|e| StoreError::corrupt_because("page of rows", e))?;
        Ok(rows.into_iter().map(DbRow::Json).collect())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::str::FromStr;
    use std::time::Duration;

    use sqlx::Connection;
    use sqlx::sqlite::{
        SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions,
    };

    use super::*;

    /// A store `Db` on a fresh WAL-mode SQLite file with a table `t`, and the options to open
    /// other connections to it (another process, as far as SQLite's locks go).
    async fn wal_db_with_table(
        max_connections: u32,
    ) -> (testkit::db::TestDb, SqliteConnectOptions, Db) {
        let db_file = testkit::db::TestDb::sqlite();
        let opts = SqliteConnectOptions::from_str(&db_file.url)
            .unwrap()
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(max_connections)
            .connect_with(opts.clone())
            .await
            .unwrap();
        sqlx::query("CREATE TABLE t (x INTEGER)")
            .execute(&pool)
            .await
            .unwrap();
        (db_file, opts, Db::new(DbPool::Sqlite(pool)))
    }

    /// Found by the chaos test (tests/chaos): a writer that gave up while its `BEGIN IMMEDIATE`
    /// waited for the lock (a request whose client hung up, a time-out around a store call) left
    /// the BEGIN to complete on a pooled connection, which went back to the pool inside the
    /// transaction — holding SQLite's write lock for good, so every later write in every process
    /// failed with "database is locked" and the server stopped taking requests.
    #[tokio::test]
    async fn a_begin_given_up_while_waiting_does_not_keep_the_write_lock() {
        let (_db_file, opts, db) = wal_db_with_table(2).await;

        // Another process holds the write lock for a moment.
        let mut other = SqliteConnection::connect_with(&opts).await.unwrap();
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut other)
            .await
            .unwrap();
        // A writer gives up while its BEGIN waits.
        let gave_up = tokio::time::timeout(Duration::from_millis(300), db.begin()).await;
        assert!(gave_up.is_err(), "BEGIN should still be waiting");
        sqlx::query("COMMIT").execute(&mut other).await.unwrap();
        // The abandoned BEGIN goes through now; whatever it opened must be given back.
        tokio::time::sleep(Duration::from_millis(500)).await;

        let quick = opts.clone().busy_timeout(Duration::from_secs(2));
        let mut writer = SqliteConnection::connect_with(&quick).await.unwrap();
        let r = sqlx::query("INSERT INTO t VALUES (1)")
            .execute(&mut writer)
            .await;
        assert!(
            r.is_ok(),
            "the write lock is still held by an abandoned transaction: {r:?}"
        );
        // And the store itself can still write.
        let mut tx = tokio::time::timeout(Duration::from_secs(5), db.begin())
            .await
            .expect("begin after an abandoned one")
            .unwrap();
        match &mut tx.kind {
            TxKind::Sqlite { tx, .. } => {
                sqlx::query("INSERT INTO t VALUES (2)")
                    .execute(&mut **tx)
                    .await
                    .unwrap();
            }
            TxKind::Postgres(_) => unreachable!(),
        }
        tx.commit().await.unwrap();
    }

    /// The writer lock records who holds it (the warning of a writer that waits too long names
    /// that call site), and forgets it when the transaction ends, however it ends.
    #[tokio::test]
    async fn the_writer_lock_records_its_holder_until_the_transaction_ends() {
        let db_file = testkit::db::TestDb::sqlite();
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(SqliteConnectOptions::from_str(&db_file.url).unwrap())
            .await
            .unwrap();
        let db = Db::new(DbPool::Sqlite(pool));
        let line = line!() + 1;
        let tx = db.begin().await.unwrap();
        let (at, _) = db.holder.lock().unwrap().expect("holder recorded");
        assert_eq!((at.file(), at.line()), (file!(), line));
        tx.commit().await.unwrap();
        assert!(
            db.holder.lock().unwrap().is_none(),
            "holder kept after commit"
        );
        let tx = db.begin().await.unwrap();
        drop(tx);
        assert!(
            db.holder.lock().unwrap().is_none(),
            "holder kept after drop"
        );
    }

    /// The same, at every point of `begin`: callers give up after 0–3 ms, hundreds of times
    /// (sqlx rolls back a BEGIN whose caller left before it was acknowledged, but not one whose
    /// caller left between the acknowledgement and the `Transaction` being made).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn begins_given_up_at_any_moment_leave_no_transaction_open() {
        let (_db_file, opts, db) = wal_db_with_table(4).await;
        for i in 0..400u64 {
            let wait = Duration::from_micros((i * 7919) % 3000);
            let _ = tokio::time::timeout(wait, db.begin()).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let quick = opts.clone().busy_timeout(Duration::from_secs(2));
        let mut writer = SqliteConnection::connect_with(&quick).await.unwrap();
        let r = sqlx::query("INSERT INTO t VALUES (1)")
            .execute(&mut writer)
            .await;
        assert!(
            r.is_ok(),
            "a given-up BEGIN left the write lock held: {r:?}"
        );
    }
}
