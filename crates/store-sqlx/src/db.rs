//! One copy of the SQL for two backends.
//!
//! Every query is written once with `$1, $2, …` placeholders, numbered in order of first
//! appearance. PostgreSQL understands them natively; sqlx-sqlite reads `$NNN` as the NNN-th bound
//! argument (checked by a test in `tests/contract.rs`), so the same text and the same argument
//! list work on both. Arguments are a tiny closed set of types ([`Arg`]) that both drivers encode
//! the same way, and rows are read through [`DbRow`], which asks the driver for the same Rust
//! types on both.

use std::sync::Arc;

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

/// The connection pool behind a [`crate::SqlStore`], for code that needs its own tables (Slack
/// installations, OAuth states) next to the store's.
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
        };
    }
    q
}

/// A connection of either kind, borrowed from a pool or a transaction.
pub(crate) enum Conn<'a> {
    Sqlite(&'a mut SqliteConnection),
    Postgres(&'a mut PgConnection),
}

impl Conn<'_> {
    pub async fn execute(&mut self, sql: &Sql) -> Result<u64, sqlx::Error> {
        match self {
            Conn::Sqlite(c) => Ok(sqlite_query(sql).execute(&mut **c).await?.rows_affected()),
            Conn::Postgres(c) => Ok(pg_query(sql).execute(&mut **c).await?.rows_affected()),
        }
    }

    pub async fn fetch_all(&mut self, sql: &Sql) -> Result<Vec<DbRow>, sqlx::Error> {
        match self {
            Conn::Sqlite(c) => Ok(sqlite_query(sql)
                .fetch_all(&mut **c)
                .await?
                .into_iter()
                .map(DbRow::Sqlite)
                .collect()),
            Conn::Postgres(c) => Ok(pg_query(sql)
                .fetch_all(&mut **c)
                .await?
                .into_iter()
                .map(DbRow::Postgres)
                .collect()),
        }
    }

    pub async fn fetch_optional(&mut self, sql: &Sql) -> Result<Option<DbRow>, sqlx::Error> {
        match self {
            Conn::Sqlite(c) => Ok(sqlite_query(sql)
                .fetch_optional(&mut **c)
                .await?
                .map(DbRow::Sqlite)),
            Conn::Postgres(c) => Ok(pg_query(sql)
                .fetch_optional(&mut **c)
                .await?
                .map(DbRow::Postgres)),
        }
    }
}

/// A write transaction. On SQLite it also holds the process-wide writer lock.
pub(crate) enum Tx {
    Sqlite {
        tx: Transaction<'static, Sqlite>,
        _writer: OwnedMutexGuard<()>,
    },
    Postgres(Transaction<'static, Postgres>),
}

impl Tx {
    pub fn conn(&mut self) -> Conn<'_> {
        match self {
            Tx::Sqlite { tx, .. } => Conn::Sqlite(tx),
            Tx::Postgres(tx) => Conn::Postgres(tx),
        }
    }

    pub async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Tx::Sqlite { tx, _writer } => tx.commit().await,
            Tx::Postgres(tx) => tx.commit().await,
        }
    }

    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        match self {
            Tx::Sqlite { tx, _writer } => tx.rollback().await,
            Tx::Postgres(tx) => tx.rollback().await,
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
    /// Statements run outside a transaction plus transactions begun: a cheap hook that lets
    /// tests bound how many round trips a code path costs (`SqlStore::statements`).
    statements: Arc<std::sync::atomic::AtomicU64>,
}

impl Db {
    pub fn new(pool: DbPool) -> Self {
        Self {
            pool,
            writer: Arc::new(Mutex::new(())),
            statements: Arc::default(),
        }
    }

    pub fn statements(&self) -> u64 {
        self.statements.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn count(&self) {
        self.statements
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn backend(&self) -> Backend {
        match self.pool {
            DbPool::Sqlite(_) => Backend::Sqlite,
            DbPool::Postgres(_) => Backend::Postgres,
        }
    }

    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        self.count();
        match &self.pool {
            DbPool::Sqlite(p) => {
                let guard = self.writer.clone().lock_owned().await;
                // IMMEDIATE takes the write lock up front: a deferred transaction that reads and
                // then writes can fail with SQLITE_BUSY on the upgrade no matter the busy timeout.
                let tx = p.begin_with("BEGIN IMMEDIATE").await?;
                Ok(Tx::Sqlite { tx, _writer: guard })
            }
            DbPool::Postgres(p) => Ok(Tx::Postgres(p.begin().await?)),
        }
    }

    /// Runs one read on a pooled connection.
    pub async fn fetch_all(&self, sql: &Sql) -> Result<Vec<DbRow>, sqlx::Error> {
        self.count();
        match &self.pool {
            DbPool::Sqlite(p) => {
                let mut c = p.acquire().await?;
                Conn::Sqlite(&mut c).fetch_all(sql).await
            }
            DbPool::Postgres(p) => {
                let mut c = p.acquire().await?;
                Conn::Postgres(&mut c).fetch_all(sql).await
            }
        }
    }

    /// Runs one statement on a pooled connection, outside any explicit transaction.
    pub async fn execute(&self, sql: &Sql) -> Result<u64, sqlx::Error> {
        self.count();
        match &self.pool {
            DbPool::Sqlite(p) => {
                let mut c = p.acquire().await?;
                Conn::Sqlite(&mut c).execute(sql).await
            }
            DbPool::Postgres(p) => {
                let mut c = p.acquire().await?;
                Conn::Postgres(&mut c).execute(sql).await
            }
        }
    }

    pub async fn fetch_optional(&self, sql: &Sql) -> Result<Option<DbRow>, sqlx::Error> {
        self.count();
        match &self.pool {
            DbPool::Sqlite(p) => {
                let mut c = p.acquire().await?;
                Conn::Sqlite(&mut c).fetch_optional(sql).await
            }
            DbPool::Postgres(p) => {
                let mut c = p.acquire().await?;
                Conn::Postgres(&mut c).fetch_optional(sql).await
            }
        }
    }
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
    StoreError::Corrupt(format!("column {col}: {e}"))
}

impl DbRow {
    pub fn i64(&self, col: &str) -> Result<i64, StoreError> {
        self.opt_i64(col)?
            .ok_or_else(|| StoreError::Corrupt(format!("column {col}: unexpected NULL")))
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
                    .ok_or_else(|| StoreError::Corrupt(format!("column {col}: not an integer"))),
            },
        }
    }

    pub fn string(&self, col: &str) -> Result<String, StoreError> {
        self.opt_string(col)?
            .ok_or_else(|| StoreError::Corrupt(format!("column {col}: unexpected NULL")))
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
                Some(_) => Err(StoreError::Corrupt(format!("column {col}: not text"))),
            },
        }
    }

    /// A page of rows that SQLite returned as one JSON array of objects
    /// (`json_group_array(json_object(…))`). sqlx's SQLite driver hands every row from its
    /// worker thread to the async side on its own; for a long sequential read (the audit walk)
    /// those hand-offs, not SQLite, are most of the cost, and one row per page removes them.
    pub fn page_from_json(text: &str) -> Result<Vec<DbRow>, StoreError> {
        let rows: Vec<serde_json::Map<String, serde_json::Value>> = serde_json::from_str(text)
            .map_err(|e| StoreError::Corrupt(format!("page of rows: {e}")))?;
        Ok(rows.into_iter().map(DbRow::Json).collect())
    }
}
