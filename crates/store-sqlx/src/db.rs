//! One copy of the SQL for two backends.
//!
//! Every query is written once with `$1, $2, …` placeholders, numbered in order of first
//! appearance. PostgreSQL understands them natively. SQLite gets the same text with each `$N`
//! turned into an anonymous `?` and the arguments listed in the order they appear
//! ([`SqliteStatement`]): SQLite could read `$NNN` itself, but looks numbered parameters up in a
//! list, once per occurrence while parsing and once per parameter while binding, which makes a
//! statement of many rows cost the square of its parameters. So the same text and the same
//! argument list work on both. Arguments are a tiny closed set of types ([`Arg`]) that both
//! drivers encode the same way, and rows are read through [`DbRow`], which asks the driver for the
//! same Rust types on both.

use std::future::Future;
use std::panic::Location;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use access_core::ports::StoreError;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgArguments, PgConnection, PgPool, PgRow};
use sqlx::query::Query;
use sqlx::sqlite::{SqliteArguments, SqliteConnection, SqlitePool, SqliteRow};
use sqlx::{Connection, Postgres, Row, Sqlite};
use tokio::sync::{Mutex, OwnedMutexGuard, OwnedSemaphorePermit, Semaphore, TryAcquireError};

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

    /// Adds an argument and returns its placeholder, for text written later or more than once.
    pub fn arg(&mut self, a: impl Into<Arg>) -> String {
        self.args.push(a.into());
        format!("${}", self.args.len())
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

/// A statement as it goes to SQLite: the text with every `$N` outside string literals, quoted
/// identifiers and comments turned into an anonymous `?`, and the arguments in the order those
/// appear (an argument named twice is bound twice; a number past the arguments is NULL, as
/// SQLite reads an unbound parameter).
///
/// Why not hand SQLite `$N`: it keeps numbered and named parameters in a list that it searches
/// from the start, with a string comparison per entry, for each occurrence it parses, and
/// sqlx-sqlite asks `sqlite3_bind_parameter_name` (the same search) for each parameter it binds.
/// A statement of N parameters costs O(N²): a group commit's 256-row job insert has about 4,000,
/// and at 1,000 commands a second those two searches were a quarter of the server's CPU
/// (docs/performance.md, "Eighth session"). Anonymous parameters are not in that list.
///
/// Statements of several parts (`BEGIN; …; COMMIT`, [`sqlite_batch`]) work as before:
/// sqlx-sqlite binds anonymous parameters in order across the parts.
pub(crate) struct SqliteStatement<'a> {
    text: String,
    args: Vec<&'a Arg>,
    /// Kept prepared in the connection's statement cache ([`CACHED_STATEMENT_MAX_ARGS`]).
    cached: bool,
}

/// Bound for a `$N` past the end of the arguments.
static SQLITE_UNBOUND: Arg = Arg::Text(None);

impl<'a> SqliteStatement<'a> {
    pub(crate) fn of(text: &str, args: &'a [Arg]) -> Self {
        let bytes = text.as_bytes();
        let mut out = String::with_capacity(text.len());
        let mut order: Vec<&'a Arg> = Vec::with_capacity(args.len());
        // Start of the text not yet copied to `out`.
        let mut copied = 0;
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                // Quoted: a string literal, or an identifier in any of SQLite's three quotes.
                // A doubled closing quote is an escaped one: the scan leaves the quote and
                // enters it again at once, which is the same thing.
                open @ (b'\'' | b'"' | b'`' | b'[') => {
                    let close = if open == b'[' { b']' } else { open };
                    i += 1;
                    while i < bytes.len() && bytes[i] != close {
                        i += 1;
                    }
                    i += 1;
                }
                b'-' if bytes.get(i + 1) == Some(&b'-') => {
                    while i < bytes.len() && bytes[i] != b'\n' {
                        i += 1;
                    }
                }
                b'/' if bytes.get(i + 1) == Some(&b'*') => {
                    i += 2;
                    while i < bytes.len() && !(bytes[i] == b'*' && bytes.get(i + 1) == Some(&b'/'))
                    {
                        i += 1;
                    }
                    i += 2;
                }
                // `$` inside a word belongs to an identifier (SQLite allows `a$1`).
                b'$' if bytes.get(i + 1).is_some_and(u8::is_ascii_digit)
                    && !i.checked_sub(1).is_some_and(|p| {
                        bytes[p].is_ascii_alphanumeric() || b"_$".contains(&bytes[p])
                    }) =>
                {
                    let digits = bytes[i + 1..]
                        .iter()
                        .take_while(|b| b.is_ascii_digit())
                        .count();
                    let end = i + 1 + digits;
                    // Digits only, so this parses unless it overflows; an overflowing number
                    // names no argument either.
                    let n: usize = text[i + 1..end].parse().unwrap_or(usize::MAX);
                    order.push(
                        n.checked_sub(1)
                            .and_then(|k| args.get(k))
                            .unwrap_or(&SQLITE_UNBOUND),
                    );
                    out.push_str(&text[copied..i]);
                    out.push('?');
                    copied = end;
                    i = end;
                }
                _ => i += 1,
            }
        }
        out.push_str(&text[copied..]);
        Self {
            text: out,
            cached: order.len() <= CACHED_STATEMENT_MAX_ARGS,
            args: order,
        }
    }

    /// Several statements as one text, `prefix` (`BEGIN …`) ahead of them and `suffix`
    /// (`COMMIT`) after, each statement's `$N` naming its own arguments. Kept in the statement
    /// cache only if each statement would be on its own ([`CACHED_STATEMENT_MAX_ARGS`]): the
    /// texts that come back are those of a fixed sequence of fixed statements.
    fn of_parts(prefix: Option<&str>, parts: &[&'a Sql], suffix: Option<&str>) -> Self {
        let mut text = String::new();
        let mut args = Vec::new();
        let mut cached = true;
        let pieces = prefix
            .map(|p| (p, None))
            .into_iter()
            .chain(parts.iter().map(|s| (s.text.as_str(), Some(&s.args))))
            .chain(suffix.map(|s| (s, None)));
        for (piece, piece_args) in pieces {
            if !text.is_empty() {
                text.push_str(";\n");
            }
            let body = piece.trim_end().trim_end_matches(';');
            match piece_args {
                Some(a) => {
                    cached &= a.len() <= CACHED_STATEMENT_MAX_ARGS;
                    let one = SqliteStatement::of(body, a);
                    text.push_str(&one.text);
                    args.extend(one.args);
                }
                None => text.push_str(body),
            }
        }
        Self { text, args, cached }
    }

    fn query(&self) -> Query<'_, Sqlite, SqliteArguments<'_>> {
        let mut q = sqlx::query::<Sqlite>(&self.text).persistent(self.cached);
        for a in &self.args {
            q = match a {
                Arg::Int(v) => q.bind(*v),
                Arg::Text(v) => q.bind(v.as_deref()),
                Arg::Bool(v) => q.bind(*v),
                Arg::Bytes(v) => q.bind(v.as_deref()),
            };
        }
        q
    }

    /// The text SQLite is given.
    #[cfg(test)]
    pub(crate) fn text(&self) -> &str {
        &self.text
    }
}

/// SQLite: most arguments a statement may have and still be kept prepared in its connection's
/// statement cache. Above it, a statement is prepared, run and dropped.
///
/// Why: a statement with that many arguments is a multi-row batch (a group commit's inserts,
/// a batch completion), whose text differs with every batch size, so a cached copy is rarely
/// used again. Cached anyway, each batch size evicted a statement the commands use every time
/// (sqlx keeps 100 per connection, least recently used first), and each cached batch kept its
/// compiled program in every connection: at 1,000 commands a second the server's peak memory
/// was 180–200 MB with them and 136 MB without, for the same CPU per command. The statements of
/// one command run alone have fewer arguments (a command's three jobs: 39). PostgreSQL keeps
/// caching them: there a re-parse costs the database's CPU, and the measured memory was the
/// same either way (docs/performance.md, "Eighth session").
const CACHED_STATEMENT_MAX_ARGS: usize = 64;

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
    round_trips: AtomicU64,
}

impl Counters {
    /// A statement sent: a round trip of its own, or one shared with a `BEGIN`/`COMMIT`.
    fn statement(&self) {
        self.statements.fetch_add(1, Ordering::Relaxed);
        self.round_trip();
    }

    fn round_trip(&self) {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
    }

    /// `n` statements sent together: one round trip.
    fn statements_together(&self, n: usize) {
        self.statements.fetch_add(n as u64, Ordering::Relaxed);
        self.round_trip();
    }

    /// Exchanges with the database: every statement, and every `BEGIN`, `COMMIT` and
    /// `ROLLBACK` that went on its own (on SQLite they ride along with a statement where they
    /// can: see [`sqlite_batch`]). Recoveries and pings are not counted.
    pub fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
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

/// A connection of either kind, borrowed from a checkout or a transaction.
pub(crate) struct Conn<'a> {
    kind: ConnKind<'a>,
    counters: &'a Counters,
    /// A SQLite transaction whose `BEGIN IMMEDIATE` has not been sent yet: it goes with the
    /// next statement, and the flag is cleared once SQLite has run it (see [`Tx`]).
    begin_pending: Option<&'a mut bool>,
}

enum ConnKind<'a> {
    Sqlite(&'a mut SqliteConnection),
    Postgres(&'a mut PgConnection),
}

/// The pending `BEGIN` of a connection's transaction, if one is to ride ahead of the next
/// statement.
fn pending<'b>(flag: &'b mut Option<&mut bool>) -> Option<&'b mut bool> {
    flag.as_deref_mut().filter(|pending| **pending)
}

impl Conn<'_> {
    pub async fn execute(&mut self, sql: &Sql) -> Result<u64, sqlx::Error> {
        self.counters.statement();
        let begin = pending(&mut self.begin_pending);
        match &mut self.kind {
            ConnKind::Sqlite(c) => match begin {
                Some(begin) => Ok(sqlite_batch(c, sql, Some(begin), false).await?.1),
                None => Ok(SqliteStatement::of(&sql.text, &sql.args)
                    .query()
                    .execute(&mut **c)
                    .await?
                    .rows_affected()),
            },
            ConnKind::Postgres(c) => Ok(pg_query(sql).execute(&mut **c).await?.rows_affected()),
        }
    }

    pub async fn fetch_all(&mut self, sql: &Sql) -> Result<Vec<DbRow>, sqlx::Error> {
        self.counters.statement();
        let begin = pending(&mut self.begin_pending);
        let rows = match &mut self.kind {
            ConnKind::Sqlite(c) => match begin {
                Some(begin) => sqlite_batch(c, sql, Some(begin), false).await?.0,
                None => {
                    SqliteStatement::of(&sql.text, &sql.args)
                        .query()
                        .fetch_all(&mut **c)
                        .await?
                }
            }
            .into_iter()
            .map(DbRow::Sqlite)
            .collect(),
            ConnKind::Postgres(c) => pg_query(sql)
                .fetch_all(&mut **c)
                .await?
                .into_iter()
                .map(DbRow::Postgres)
                .collect(),
        };
        Ok(rows)
    }

    pub async fn fetch_optional(&mut self, sql: &Sql) -> Result<Option<DbRow>, sqlx::Error> {
        self.counters.statement();
        let begin = pending(&mut self.begin_pending);
        match &mut self.kind {
            ConnKind::Sqlite(c) => Ok(match begin {
                Some(begin) => sqlite_batch(c, sql, Some(begin), false)
                    .await?
                    .0
                    .into_iter()
                    .next(),
                None => {
                    SqliteStatement::of(&sql.text, &sql.args)
                        .query()
                        .fetch_optional(&mut **c)
                        .await?
                }
            }
            .map(DbRow::Sqlite)),
            ConnKind::Postgres(c) => Ok(pg_query(sql)
                .fetch_optional(&mut **c)
                .await?
                .map(DbRow::Postgres)),
        }
    }
}

/// The statement `BEGIN` rides along with on SQLite.
const SQLITE_BEGIN: &str = "BEGIN IMMEDIATE";

/// SQLite: `sql` with the transaction's `BEGIN IMMEDIATE` ahead of it (`begin`) and/or a
/// `COMMIT` after it, sent as one query: one round trip to the connection's worker thread
/// instead of up to three. Thread hand-offs, not SQL, are where the server's CPU goes
/// (docs/performance.md, "Fifth session").
///
/// This leans on sqlx-sqlite running every statement of a query's text in turn, binding the
/// anonymous parameters of each in order ([`SqliteStatement`]; `BEGIN` and `COMMIT` take none).
/// sqlx has deprecated that (launchbadge/sqlx#3108: only its SQLite driver can); the store's tests
/// (`one_round_trip_for_begin_statement_and_commit`) fail the day it goes.
///
/// Returns the statement's rows and the rows *it* changed. sqlx's `execute` would add up every
/// statement's `sqlite3_changes()`, and after a `BEGIN` that is still the count of the
/// connection's previous write. `begin` is cleared as soon as SQLite has run the `BEGIN`, even
/// if the statement then fails: the transaction is open and the next statement must not begin
/// it again. On any error the transaction is left to its owner ([`Tx`]), unsettled: dropped,
/// its connection is rolled back before it serves again.
async fn sqlite_batch(
    c: &mut SqliteConnection,
    sql: &Sql,
    begin: Option<&mut bool>,
    commit: bool,
) -> Result<(Vec<SqliteRow>, u64), sqlx::Error> {
    let mut ran = sqlite_run(c, &[sql], begin, commit).await?;
    Ok(ran.pop().unwrap_or_default())
}

/// [`sqlite_batch`] for several statements: all of them in one round trip, each one's rows and
/// the rows it changed, in order. SQLite stops at the first statement that fails, so on an
/// error the statements after it (and the `COMMIT`) have not run.
async fn sqlite_run(
    c: &mut SqliteConnection,
    parts: &[&Sql],
    mut begin: Option<&mut bool>,
    commit: bool,
) -> Result<Vec<(Vec<SqliteRow>, u64)>, sqlx::Error> {
    use futures::TryStreamExt;
    use sqlx::Either;

    let statement = SqliteStatement::of_parts(
        begin.is_some().then_some(SQLITE_BEGIN),
        parts,
        commit.then_some("COMMIT"),
    );
    // The parts' results are those after the BEGIN's.
    let skip = usize::from(begin.is_some());
    let mut finished = 0usize;
    let mut out: Vec<(Vec<SqliteRow>, u64)> = Vec::with_capacity(parts.len());
    let mut rows = Vec::new();
    #[allow(deprecated)] // multi-statement queries: see `sqlite_batch`
    let mut steps = statement.query().fetch_many(&mut *c);
    while let Some(step) = steps.try_next().await? {
        match step {
            Either::Left(done) => {
                if finished >= skip && out.len() < parts.len() {
                    out.push((std::mem::take(&mut rows), done.rows_affected()));
                }
                finished += 1;
                if finished == skip {
                    if let Some(b) = begin.as_deref_mut() {
                        *b = false;
                    }
                }
            }
            Either::Right(row) => rows.push(row),
        }
    }
    Ok(out)
}

/// A connection taken out of sqlx's pool, of either kind.
enum PooledConn {
    Sqlite(PoolConnection<Sqlite>),
    Postgres(PoolConnection<Postgres>),
}

impl PooledConn {
    fn kind(&mut self) -> ConnKind<'_> {
        match self {
            PooledConn::Sqlite(c) => ConnKind::Sqlite(c),
            PooledConn::Postgres(c) => ConnKind::Postgres(c),
        }
    }

    /// Runs a statement of the store's own (`BEGIN`, `COMMIT`, `ROLLBACK`), not counted.
    async fn run(&mut self, text: &'static str) -> Result<(), sqlx::Error> {
        match self {
            PooledConn::Sqlite(c) => sqlx::query(text).execute(&mut **c).await.map(drop),
            PooledConn::Postgres(c) => sqlx::query(text).execute(&mut **c).await.map(drop),
        }
    }

    async fn ping(&mut self) -> Result<(), sqlx::Error> {
        match self {
            PooledConn::Sqlite(c) => c.ping().await,
            PooledConn::Postgres(c) => c.ping().await,
        }
    }

    /// Ends whatever a caller that left may have left open on this connection (a transaction,
    /// a statement in flight) and tells whether it can serve again. `ROLLBACK` outside a
    /// transaction is harmless (an error on SQLite, a warning on PostgreSQL) and ignored; the
    /// ping that follows waits until the connection has answered everything sent on it.
    async fn recover(&mut self) -> bool {
        let _ = self.run("ROLLBACK").await;
        self.ping().await.is_ok()
    }
}

/// A connection idle longer than this is pinged before it serves again: a database restarted
/// meanwhile costs a ping, not a failed statement. Under load connections come back within
/// milliseconds and are never pinged.
const PING_IF_IDLE: Duration = Duration::from_secs(5);

/// The store's connections, kept out of sqlx's pool between uses.
///
/// sqlx's pool pings a connection when it is handed out (`test_before_acquire`) and again, in a
/// spawned task, every time it is given back, so that a caller who left mid-statement or
/// mid-transaction cannot hand its mess to the next one. Each ping is a round trip: to the
/// connection's worker thread on SQLite, over the network on PostgreSQL. A point read through
/// the pool cost three round trips and a task where one would do, and thread hand-offs are
/// where the server's CPU went (docs/performance.md, "Fourth session"). Here a
/// connection that comes back *settled* (its statement answered, its transaction ended) goes
/// straight onto an idle stack; only one given back unsettled is recovered first (`ROLLBACK`,
/// then a ping), off the caller's future, holding its permit (and on SQLite the writer lock)
/// until it is done — the same guarantee sqlx's pool gives, paid only when a caller left.
///
/// One connection of sqlx's pool is left out of this (`max_connections - 1` permits), for
/// [`crate::SqlStore::pool`]'s readers and the migrator.
struct Connections {
    pool: DbPool,
    /// Most recently used last: a hot connection is reused while the rest stay idle.
    idle: StdMutex<Vec<(PooledConn, Instant)>>,
    permits: Arc<Semaphore>,
    acquire_timeout: Duration,
    /// Connections taken from sqlx's pool, and pings sent before reuse (for tests).
    opened: AtomicU64,
    pings: AtomicU64,
}

impl Connections {
    fn new(pool: DbPool) -> Self {
        let (max, acquire_timeout) = match &pool {
            DbPool::Sqlite(p) => (
                p.options().get_max_connections(),
                p.options().get_acquire_timeout(),
            ),
            DbPool::Postgres(p) => (
                p.options().get_max_connections(),
                p.options().get_acquire_timeout(),
            ),
        };
        let permits = usize::try_from(max.saturating_sub(1).max(1)).unwrap_or(1);
        Self {
            pool,
            idle: StdMutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(permits)),
            acquire_timeout,
            opened: AtomicU64::new(0),
            pings: AtomicU64::new(0),
        }
    }

    fn take_idle(&self) -> Option<(PooledConn, Instant)> {
        match self.idle.lock() {
            Ok(mut idle) => idle.pop(),
            Err(p) => p.into_inner().pop(),
        }
    }

    /// Puts a settled connection back; after [`Connections::close`] it goes back to sqlx's
    /// pool instead, which closes it.
    fn put(&self, conn: PooledConn) {
        if self.permits.is_closed() {
            return;
        }
        let entry = (conn, Instant::now());
        match self.idle.lock() {
            Ok(mut idle) => idle.push(entry),
            Err(p) => p.into_inner().push(entry),
        }
    }

    async fn checkout(self: &Arc<Self>) -> Result<Checkout, sqlx::Error> {
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(TryAcquireError::Closed) => return Err(sqlx::Error::PoolClosed),
            Err(TryAcquireError::NoPermits) => {
                match tokio::time::timeout(
                    self.acquire_timeout,
                    self.permits.clone().acquire_owned(),
                )
                .await
                {
                    Ok(Ok(p)) => p,
                    Ok(Err(_)) => return Err(sqlx::Error::PoolClosed),
                    Err(_) => return Err(sqlx::Error::PoolTimedOut),
                }
            }
        };
        let conn = loop {
            match self.take_idle() {
                Some((conn, since)) if since.elapsed() < PING_IF_IDLE => break conn,
                Some((mut conn, _)) => {
                    self.pings.fetch_add(1, Ordering::Relaxed);
                    if conn.ping().await.is_ok() {
                        break conn;
                    }
                    // Broken while idle: dropping it hands it to sqlx, which closes it.
                }
                None => {
                    self.opened.fetch_add(1, Ordering::Relaxed);
                    break match &self.pool {
                        DbPool::Sqlite(p) => PooledConn::Sqlite(p.acquire().await?),
                        DbPool::Postgres(p) => PooledConn::Postgres(p.acquire().await?),
                    };
                }
            }
        };
        Ok(Checkout {
            conn: Some(conn),
            unsettled: false,
            writer: None,
            permit: Some(permit),
            conns: self.clone(),
        })
    }

    /// Stops handing out connections and gives the idle ones back to sqlx's pool.
    fn close(&self) {
        self.permits.close();
        let idle = match self.idle.lock() {
            Ok(mut idle) => std::mem::take(&mut *idle),
            Err(p) => std::mem::take(&mut *p.into_inner()),
        };
        drop(idle);
    }
}

/// A connection in use, with its permit. Dropped settled, the connection goes back on the idle
/// stack at once; dropped unsettled (a statement in flight, a transaction open: the caller left
/// or failed), it is recovered first in a task of its own, and dropped if it cannot be.
pub(crate) struct Checkout {
    conn: Option<PooledConn>,
    unsettled: bool,
    /// On SQLite, the writer lock of the transaction on this connection: released only when the
    /// transaction has surely ended (after a recovery's `ROLLBACK`).
    writer: Option<WriterGuard>,
    permit: Option<OwnedSemaphorePermit>,
    conns: Arc<Connections>,
}

impl Checkout {
    fn conn<'a>(&'a mut self, counters: &'a Counters) -> Option<Conn<'a>> {
        Some(Conn {
            kind: self.conn.as_mut()?.kind(),
            counters,
            begin_pending: None,
        })
    }

    async fn run(&mut self, text: &'static str) -> Result<(), sqlx::Error> {
        match self.conn.as_mut() {
            Some(c) => c.run(text).await,
            None => Err(sqlx::Error::PoolClosed),
        }
    }
}

impl Drop for Checkout {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        if !self.unsettled {
            self.conns.put(conn);
            return; // the permit and any writer lock go with the fields, after the put
        }
        let conns = self.conns.clone();
        let permit = self.permit.take();
        let writer = self.writer.take();
        // Outside a runtime (its shutdown) the connection goes back to sqlx, whose own release
        // recovers it the same way.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if conn.recover().await {
                    conns.put(conn);
                }
                drop(writer);
                drop(permit);
            });
        }
    }
}

/// A write transaction. On SQLite it also holds the process-wide writer lock.
///
/// `BEGIN` and `COMMIT` are the store's own statements, not sqlx's `Transaction`: that one
/// lives on a connection owned by sqlx's pool (so every transaction paid the pool's two pings),
/// and on SQLite a custom `BEGIN IMMEDIATE` costs sqlx two more round trips to check it took.
/// The recovery of an unsettled [`Checkout`] is the rollback of a dropped transaction.
///
/// On SQLite the `BEGIN IMMEDIATE` is not sent on its own: it goes with the transaction's first
/// statement, and [`Tx::execute_and_commit`] sends the last statement with the `COMMIT`
/// ([`sqlite_batch`]). The in-process writer lock is taken by [`Db::begin_as`] as before, so no
/// writer of this process can come between; one in another process (the cleanup binary) meets
/// SQLite's own lock at the first statement instead of at `begin`.
pub(crate) struct Tx {
    held: Checkout,
    counters: Arc<Counters>,
    /// SQLite: nothing has been sent yet, the `BEGIN` rides with the first statement.
    begin_pending: bool,
}

impl Tx {
    pub fn conn(&mut self) -> Conn<'_> {
        // A transaction always holds its connection (taken only by `Checkout::drop`).
        let kind = match self.held.conn.as_mut() {
            Some(c) => c.kind(),
            None => unreachable!("a transaction without its connection"),
        };
        Conn {
            kind,
            counters: &self.counters,
            begin_pending: Some(&mut self.begin_pending),
        }
    }

    pub async fn commit(mut self) -> Result<(), sqlx::Error> {
        self.counters.commit();
        if !self.begin_pending {
            self.counters.round_trip();
            // A failed COMMIT leaves the transaction to the recovery's ROLLBACK.
            self.held.run("COMMIT").await?;
        }
        // (With the BEGIN still pending nothing was sent: there is nothing to end.)
        self.held.unsettled = false;
        Ok(())
    }

    /// Runs `sql` as the transaction's last statement and commits; the rows `sql` changed. On
    /// SQLite one round trip (with the `BEGIN` too, if nothing was sent before); on PostgreSQL
    /// the statement, then `COMMIT`. If it fails, whether the statement ran is unknown to the
    /// caller, as with a failed `COMMIT`: the transaction is rolled back when dropped.
    pub async fn execute_and_commit(self, sql: &Sql) -> Result<u64, sqlx::Error> {
        Ok(self.last_and_commit(sql, false).await?.1)
    }

    /// As [`Self::execute_and_commit`], for a statement that returns rows: its rows.
    pub async fn fetch_all_and_commit(self, sql: &Sql) -> Result<Vec<DbRow>, sqlx::Error> {
        Ok(self.last_and_commit(sql, true).await?.0)
    }

    /// `sql` as the last statement, then `COMMIT`: its rows (when `rows`) and the rows it
    /// changed.
    async fn last_and_commit(
        mut self,
        sql: &Sql,
        rows: bool,
    ) -> Result<(Vec<DbRow>, u64), sqlx::Error> {
        let Some(conn) = self.held.conn.as_mut() else {
            return Err(sqlx::Error::PoolClosed);
        };
        match conn {
            PooledConn::Sqlite(c) => {
                self.counters.statement();
                self.counters.commit();
                let begin = self.begin_pending.then_some(&mut self.begin_pending);
                let (got, changed) = sqlite_batch(c, sql, begin, true).await?;
                self.held.unsettled = false;
                Ok((got.into_iter().map(DbRow::Sqlite).collect(), changed))
            }
            PooledConn::Postgres(_) => {
                let out = if rows {
                    let got = self.conn().fetch_all(sql).await?;
                    let n = got.len() as u64;
                    (got, n)
                } else {
                    (Vec::new(), self.conn().execute(sql).await?)
                };
                self.commit().await?;
                Ok(out)
            }
        }
    }

    /// Runs `statements` as the transaction's last ones and commits; the rows each changed. On
    /// SQLite they go with the `COMMIT` (and the `BEGIN`, if nothing was sent before) in one
    /// round trip: one hand-off to the connection's worker thread and back instead of one per
    /// statement (docs/performance.md, "Tenth session"). Only for statements whose answers
    /// need not be read before the `COMMIT`. On PostgreSQL one by one, then `COMMIT`. On an
    /// error, as [`Self::execute_and_commit`].
    pub async fn execute_all_and_commit(
        mut self,
        statements: &[Sql],
    ) -> Result<Vec<u64>, sqlx::Error> {
        if statements.is_empty() {
            // Nothing to send with the COMMIT: as `commit` (nothing at all if nothing was sent).
            self.commit().await?;
            return Ok(Vec::new());
        }
        let Some(conn) = self.held.conn.as_mut() else {
            return Err(sqlx::Error::PoolClosed);
        };
        match conn {
            PooledConn::Sqlite(c) => {
                self.counters.statements_together(statements.len());
                self.counters.commit();
                let begin = self.begin_pending.then_some(&mut self.begin_pending);
                let parts: Vec<&Sql> = statements.iter().collect();
                let ran = sqlite_run(c, &parts, begin, true).await?;
                self.held.unsettled = false;
                Ok(ran.into_iter().map(|(_, changed)| changed).collect())
            }
            PooledConn::Postgres(_) => {
                let mut changed = Vec::with_capacity(statements.len());
                for sql in statements {
                    changed.push(self.conn().execute(sql).await?);
                }
                self.commit().await?;
                Ok(changed)
            }
        }
    }

    pub async fn rollback(mut self) -> Result<(), sqlx::Error> {
        if !self.begin_pending {
            self.counters.round_trip();
            self.held.run("ROLLBACK").await?;
        }
        self.held.unsettled = false;
        Ok(())
    }
}

/// Who holds the SQLite writer lock: the code that called [`Db::begin_as`] and since when.
type Holder = Option<(&'static Location<'static>, Instant)>;

/// How long a writer waits for the writer lock before it names the holder in a warning (and
/// again every as long). Transactions here last milliseconds; a wait this long means the holder
/// is stuck on something outside the database, and without the warning that is a silent hang.
const WRITER_WAIT_WARN: Duration = Duration::from_secs(10);

/// Whether someone waits on a write (see [`WriterQueue`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Urgency {
    /// In turn: jobs, completions, claims, change sets.
    Queued,
    /// Someone waits on it: an inbox item, whose insert Slack's acknowledgement waits for.
    Awaited,
}

/// The in-process SQLite writer lock: first come, first served, except that a write someone
/// waits on ([`Urgency::Awaited`]) goes ahead of the writers already queued.
///
/// Why: at 500 commands a second the writer lock is busy most of the time (an inbox insert, a
/// submission and a settle per command, each holding it through its WAL sync), and a slash
/// command's acknowledgement, which waits for its inbox insert, queued behind the background
/// writes of earlier commands (docs/performance.md, "Fifth session").
///
/// How: a queued writer that gets the lock while an awaited one is waiting gives it back at once
/// and queues again — behind the awaited one, the lock being fair. Each writer gives way at most
/// once, so under a steady stream of awaited writes background writers are delayed by at most
/// one of them each, never starved.
#[derive(Default)]
pub(crate) struct WriterQueue {
    lock: Arc<Mutex<()>>,
    /// Awaited writers waiting for the lock now.
    awaited: AtomicUsize,
}

/// Counts an awaited writer as waiting until it has the lock or gave up.
struct AwaitedWaiting<'a>(&'a AtomicUsize);

impl Drop for AwaitedWaiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl WriterQueue {
    async fn acquire(&self, urgency: Urgency) -> OwnedMutexGuard<()> {
        if urgency == Urgency::Awaited {
            self.awaited.fetch_add(1, Ordering::SeqCst);
            let _waiting = AwaitedWaiting(&self.awaited);
            return self.lock.clone().lock_owned().await;
        }
        let guard = self.lock.clone().lock_owned().await;
        if self.awaited.load(Ordering::SeqCst) == 0 {
            return guard;
        }
        drop(guard);
        self.lock.clone().lock_owned().await
    }
}

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

/// The store's connections plus the SQLite writer lock.
#[derive(Clone)]
pub(crate) struct Db {
    pub pool: DbPool,
    conns: Arc<Connections>,
    /// SQLite allows one writer at a time anyway; queueing writers here (without sleeping) is
    /// faster than letting them spin on `SQLITE_BUSY`. `BEGIN IMMEDIATE` still guards against
    /// writers in other processes (the cleanup binary).
    writer: Arc<WriterQueue>,
    /// The current holder of `writer`, for the warning of a writer that waits too long.
    holder: Arc<StdMutex<Holder>>,
    pub counters: Arc<Counters>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("backend", &self.backend())
            .finish_non_exhaustive()
    }
}

impl Db {
    pub fn new(pool: DbPool) -> Self {
        Self {
            conns: Arc::new(Connections::new(pool.clone())),
            pool,
            writer: Arc::new(WriterQueue::default()),
            holder: Arc::new(StdMutex::new(None)),
            counters: Arc::new(Counters::default()),
        }
    }

    pub fn backend(&self) -> Backend {
        match self.pool {
            DbPool::Sqlite(_) => Backend::Sqlite,
            DbPool::Postgres(_) => Backend::Postgres,
        }
    }

    /// Gives the store's connections back to sqlx's pool and closes it (waits for those in use).
    pub async fn close(&self) {
        self.conns.close();
        match &self.pool {
            DbPool::Sqlite(p) => p.close().await,
            DbPool::Postgres(p) => p.close().await,
        }
    }

    /// Starts a write transaction. Safe to give up on (drop) at any moment: a caller that
    /// leaves while its `BEGIN` is in flight, or with the transaction open, leaves an
    /// unsettled [`Checkout`], whose recovery rolls back whatever the `BEGIN` opened before the
    /// connection serves again. (Found by the chaos test: a `BEGIN` whose caller left between
    /// its acknowledgement and the transaction being made went back to the pool inside the
    /// transaction, and on SQLite kept the write lock for good: "database is locked" for every
    /// later write, in every process.)
    ///
    /// On SQLite a writer that has waited [`WRITER_WAIT_WARN`] for the in-process writer lock
    /// logs a warning naming the holder's call site and how long it has held the lock.
    ///
    /// A write someone is waiting on ([`Urgency::Awaited`]: an inbox item, whose insert Slack's
    /// acknowledgement waits for) goes ahead of the writers already queued for SQLite's writer
    /// lock ([`WriterQueue`]).
    #[track_caller]
    pub fn begin_as(
        &self,
        urgency: Urgency,
    ) -> impl Future<Output = Result<Tx, sqlx::Error>> + Send + '_ {
        let caller = Location::caller();
        self.begin_at(caller, urgency)
    }

    async fn begin_at(
        &self,
        caller: &'static Location<'static>,
        urgency: Urgency,
    ) -> Result<Tx, sqlx::Error> {
        // IMMEDIATE (SQLITE_BEGIN) takes the write lock up front: a deferred transaction that
        // reads and then writes can fail with SQLITE_BUSY on the upgrade no matter the busy
        // timeout. On SQLite it is sent with the first statement.
        let writer = match &self.pool {
            DbPool::Sqlite(_) => Some(self.writer_lock(caller, urgency).await),
            DbPool::Postgres(_) => None,
        };
        let mut held = self.conns.checkout().await?;
        held.writer = writer;
        held.unsettled = true;
        let begin_pending = match &self.pool {
            DbPool::Sqlite(_) => true,
            DbPool::Postgres(_) => {
                self.counters.round_trip();
                held.run("BEGIN").await?;
                false
            }
        };
        Ok(Tx {
            held,
            counters: self.counters.clone(),
            begin_pending,
        })
    }

    /// Takes the SQLite writer lock for `caller`, warning while it waits too long.
    async fn writer_lock(
        &self,
        caller: &'static Location<'static>,
        urgency: Urgency,
    ) -> WriterGuard {
        let started = Instant::now();
        let lock = self.writer.acquire(urgency);
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

    /// Runs one read on a connection of the store's.
    pub async fn fetch_all(&self, sql: &Sql) -> Result<Vec<DbRow>, sqlx::Error> {
        let mut held = self.conns.checkout().await?;
        held.unsettled = true;
        let Some(mut conn) = held.conn(&self.counters) else {
            return Err(sqlx::Error::PoolClosed);
        };
        let rows = conn.fetch_all(sql).await?;
        held.unsettled = false;
        Ok(rows)
    }

    /// Runs one write outside any explicit transaction (it commits on its own, and counts as a
    /// commit).
    pub async fn execute(&self, sql: &Sql) -> Result<u64, sqlx::Error> {
        self.counters.commit();
        let mut held = self.conns.checkout().await?;
        held.unsettled = true;
        let Some(mut conn) = held.conn(&self.counters) else {
            return Err(sqlx::Error::PoolClosed);
        };
        let n = conn.execute(sql).await?;
        held.unsettled = false;
        Ok(n)
    }

    pub async fn fetch_optional(&self, sql: &Sql) -> Result<Option<DbRow>, sqlx::Error> {
        let mut held = self.conns.checkout().await?;
        held.unsettled = true;
        let Some(mut conn) = held.conn(&self.counters) else {
            return Err(sqlx::Error::PoolClosed);
        };
        let row = conn.fetch_optional(sql).await?;
        held.unsettled = false;
        Ok(row)
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

    impl Db {
        /// The tests' shorthand for a queued writer's transaction.
        #[track_caller]
        pub(crate) fn begin(&self) -> impl Future<Output = Result<Tx, sqlx::Error>> + Send + '_ {
            self.begin_as(Urgency::Queued)
        }
    }

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

    /// Rows in `t`, read by another connection (another process, as far as SQLite goes).
    async fn committed_rows(opts: &SqliteConnectOptions) -> Vec<i64> {
        let mut other = SqliteConnection::connect_with(opts).await.unwrap();
        sqlx::query_scalar("SELECT x FROM t ORDER BY x")
            .fetch_all(&mut other)
            .await
            .unwrap()
    }

    /// Whether another process could take SQLite's write lock now.
    async fn write_lock_free(opts: &SqliteConnectOptions) -> bool {
        let quick = opts.clone().busy_timeout(Duration::from_millis(50));
        let mut other = SqliteConnection::connect_with(&quick).await.unwrap();
        let free = sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut other)
            .await
            .is_ok();
        if free {
            sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
        }
        free
    }

    /// SQLite is given anonymous parameters in the order they appear: a reordered or repeated
    /// `$N` binds its own argument again, and a `$N` in a literal, a quoted identifier or a
    /// comment, or inside a word, is left alone.
    #[test]
    fn sqlite_statements_take_their_arguments_in_the_order_they_appear() {
        let args: Vec<Arg> = vec![10i64.into(), "two".into(), 3i64.into()];
        let s = SqliteStatement::of(
            "SELECT $2, $1 + $3 + $1, '$1' || 'it''s $2', \"c$3\", [$1], `$2` -- $3\n\
             , $3 /* $1 $2 */, a$1, $4, $02",
            &args,
        );
        assert_eq!(
            s.text(),
            "SELECT ?, ? + ? + ?, '$1' || 'it''s $2', \"c$3\", [$1], `$2` -- $3\n\
             , ? /* $1 $2 */, a$1, ?, ?"
        );
        let order: Vec<&Arg> = s.args.to_vec();
        assert_eq!(
            order,
            vec![
                &args[1],
                &args[0],
                &args[2],
                &args[0],
                &args[2],
                &SQLITE_UNBOUND,
                &args[1]
            ]
        );
        // A literal left open at the end is copied as it is.
        assert_eq!(
            SqliteStatement::of("SELECT $1, 'a$1", &args).text(),
            "SELECT ?, 'a$1"
        );
    }

    /// Through the store's connections, with the `BEGIN` riding ahead and without: reordered
    /// and repeated placeholders bind by number, and a statement of 6,000 parameters (a big
    /// group commit's size) is sent with anonymous ones only, which SQLite binds without the
    /// quadratic name search (see [`SqliteStatement`]).
    #[tokio::test]
    async fn numbered_placeholders_bind_by_number_on_sqlite() {
        let (_db_file, opts, db) = wal_db_with_table(2).await;
        let mut tx = db.begin().await.unwrap();
        let n = tx
            .conn()
            .execute(&Sql::with(
                "INSERT INTO t SELECT $2 WHERE '$1' = '$' || '1' UNION ALL SELECT $1 + $2 + $1",
                vec![10i64.into(), 1i64.into()],
            ))
            .await
            .unwrap();
        assert_eq!(n, 2);
        let mut many = Sql::new("INSERT INTO t VALUES ");
        for k in 0..6_000i64 {
            many.push(if k == 0 { "(" } else { ", (" })
                .bind(if k == 5_999 { 100 } else { 0 })
                .push(")");
        }
        let sent = SqliteStatement::of(&many.text, &many.args);
        assert!(
            !sent.text().contains('$'),
            "numbered parameters sent to SQLite"
        );
        assert_eq!(sent.text().matches('?').count(), 6_000);
        assert_eq!(tx.execute_and_commit(&many).await.unwrap(), 6_000);
        let rows = committed_rows(&opts).await;
        assert_eq!(
            (rows.len(), rows.iter().sum::<i64>()),
            (6_002, 1 + 21 + 100)
        );
        let outside = db
            .fetch_all(&Sql::with(
                "SELECT x FROM t WHERE x = $2 OR x = $1 ORDER BY x",
                vec![21i64.into(), 100i64.into()],
            ))
            .await
            .unwrap();
        assert_eq!(outside.len(), 2);
    }

    /// On SQLite a statement of a batch's size (more than [`CACHED_STATEMENT_MAX_ARGS`]
    /// arguments) is run without being kept in the connection's statement cache; a command's own
    /// statements are kept.
    #[tokio::test]
    async fn batch_statements_are_not_kept_in_the_statement_cache() {
        let (_db_file, _opts, db) = wal_db_with_table(2).await;
        let rows = |n: i64| {
            let mut sql = Sql::new("INSERT INTO t VALUES ");
            for k in 0..n {
                sql.push(if k == 0 { "(" } else { ", (" }).bind(k).push(")");
            }
            sql
        };
        let cached = |tx: &mut Tx| match &tx.conn().kind {
            ConnKind::Sqlite(c) => c.cached_statements_size(),
            ConnKind::Postgres(_) => unreachable!("a SQLite test"),
        };
        let mut tx = db.begin().await.unwrap();
        tx.conn().execute(&rows(1)).await.unwrap();
        let before = cached(&mut tx);
        let at_the_bound = CACHED_STATEMENT_MAX_ARGS as i64;
        tx.conn().execute(&rows(at_the_bound)).await.unwrap();
        assert_eq!(cached(&mut tx), before + 1, "a command's statement");
        for n in [at_the_bound + 1, 300, 2_000] {
            tx.conn().execute(&rows(n)).await.unwrap();
        }
        assert_eq!(cached(&mut tx), before + 1, "batch statements cached");
        tx.commit().await.unwrap();
        let n: i64 = db
            .fetch_optional(&Sql::new("SELECT COUNT(*) AS n FROM t"))
            .await
            .unwrap()
            .unwrap()
            .i64("n")
            .unwrap();
        assert_eq!(n, 1 + at_the_bound + at_the_bound + 1 + 300 + 2_000);
    }

    /// On SQLite a transaction's `BEGIN IMMEDIATE` goes with its first statement and
    /// `execute_and_commit` sends the last statement with the `COMMIT`: a write transaction of
    /// one statement is one round trip, one of three statements three. The transaction is still
    /// one: its first write holds SQLite's write lock and stays invisible until the commit.
    /// (This leans on sqlx-sqlite running every statement of a query's text; if sqlx drops
    /// that, this test fails.)
    #[tokio::test]
    async fn one_round_trip_for_begin_statement_and_commit() {
        let (_db_file, opts, db) = wal_db_with_table(2).await;
        let trips = || db.counters.round_trips();

        let before = trips();
        let tx = db.begin().await.unwrap();
        let n = tx
            .execute_and_commit(&Sql::new("INSERT INTO t VALUES (1)"))
            .await
            .unwrap();
        assert_eq!((n, trips() - before), (1, 1));
        assert_eq!(committed_rows(&opts).await, vec![1]);

        let before = trips();
        let mut tx = db.begin().await.unwrap();
        let seen = tx
            .conn()
            .fetch_all(&Sql::new("SELECT x FROM t"))
            .await
            .unwrap();
        assert_eq!(seen.len(), 1);
        tx.conn()
            .execute(&Sql::new("INSERT INTO t VALUES (2)"))
            .await
            .unwrap();
        assert!(
            !write_lock_free(&opts).await,
            "the BEGIN IMMEDIATE did not go with the first statement"
        );
        assert_eq!(
            committed_rows(&opts).await,
            vec![1],
            "seen before the commit"
        );
        let n = tx
            .execute_and_commit(&Sql::new("INSERT INTO t VALUES (3)"))
            .await
            .unwrap();
        assert_eq!((n, trips() - before), (1, 3));
        assert_eq!(committed_rows(&opts).await, vec![1, 2, 3]);
        assert!(write_lock_free(&opts).await);

        // A transaction that sends nothing costs nothing.
        let before = trips();
        db.begin().await.unwrap().commit().await.unwrap();
        db.begin().await.unwrap().rollback().await.unwrap();
        assert_eq!(trips() - before, 0);
    }

    /// `execute_all_and_commit` sends every statement with the `BEGIN` and the `COMMIT`: one
    /// round trip, each statement's own count of changed rows (numbered arguments counted per
    /// statement), one transaction. A statement that fails stops the rest and the `COMMIT`, and
    /// the transaction is rolled back: nothing of it is seen, and the writer lock is free.
    #[tokio::test]
    async fn several_statements_and_commit_in_one_round_trip() {
        let (_db_file, opts, db) = wal_db_with_table(2).await;
        let trips = || db.counters.round_trips();

        let before = trips();
        let tx = db.begin().await.unwrap();
        let changed = tx
            .execute_all_and_commit(&[
                Sql::with(
                    "INSERT INTO t VALUES ($1), ($2)",
                    vec![1i64.into(), 2i64.into()],
                ),
                Sql::with("UPDATE t SET x = x WHERE x < $1", vec![0i64.into()]),
                Sql::with("INSERT INTO t VALUES ($1)", vec![3i64.into()]),
            ])
            .await
            .unwrap();
        assert_eq!((changed, trips() - before), (vec![2, 0, 1], 1));
        assert_eq!(committed_rows(&opts).await, vec![1, 2, 3]);
        assert!(write_lock_free(&opts).await);

        // No statements: nothing is sent, as with `commit`.
        let before = trips();
        let none = db
            .begin()
            .await
            .unwrap()
            .execute_all_and_commit(&[])
            .await
            .unwrap();
        assert_eq!((none, trips() - before), (Vec::<u64>::new(), 0));

        let tx = db.begin().await.unwrap();
        let failed = tx
            .execute_all_and_commit(&[
                Sql::with("INSERT INTO t VALUES ($1)", vec![4i64.into()]),
                Sql::new("INSERT INTO no_such_table VALUES (1)"),
                Sql::with("INSERT INTO t VALUES ($1)", vec![5i64.into()]),
            ])
            .await;
        assert!(failed.is_err());
        let deadline = Instant::now() + Duration::from_secs(5);
        while !write_lock_free(&opts).await && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(
            write_lock_free(&opts).await,
            "the failed transaction kept the lock"
        );
        assert_eq!(committed_rows(&opts).await, vec![1, 2, 3]);
    }

    /// sqlx's `execute` adds up `sqlite3_changes()` over the statements of a query, and after a
    /// `BEGIN` that is still the count of the connection's previous write: a `BEGIN` riding
    /// ahead of an `UPDATE` that matched nothing would report the last write's rows as changed.
    /// The count is the statement's own.
    #[tokio::test]
    async fn rows_changed_are_the_statements_own_when_begin_rides_along() {
        let (_db_file, _opts, db) = wal_db_with_table(2).await;
        let three = db
            .execute(&Sql::new("INSERT INTO t VALUES (1), (2), (3)"))
            .await
            .unwrap();
        assert_eq!(three, 3);
        let mut tx = db.begin().await.unwrap();
        let none = tx
            .conn()
            .execute(&Sql::new("UPDATE t SET x = x WHERE x < 0"))
            .await
            .unwrap();
        assert_eq!(none, 0);
        tx.commit().await.unwrap();
        let tx = db.begin().await.unwrap();
        let none = tx
            .execute_and_commit(&Sql::new("DELETE FROM t WHERE x < 0"))
            .await
            .unwrap();
        assert_eq!(none, 0);
    }

    /// A statement that fails after its `BEGIN` went through leaves the transaction open: the
    /// next statement does not begin it again, and what was written before is committed or
    /// rolled back with it. A last statement that fails before its `COMMIT` leaves nothing
    /// written and no lock held once the transaction is dropped.
    #[tokio::test]
    async fn a_failed_statement_with_a_begin_or_commit_riding_along_keeps_the_transaction_whole() {
        let (_db_file, opts, db) = wal_db_with_table(2).await;
        let mut tx = db.begin().await.unwrap();
        let failed = tx
            .conn()
            .execute(&Sql::new("INSERT INTO no_such_table VALUES (1)"))
            .await;
        assert!(failed.is_err());
        tx.conn()
            .execute(&Sql::new("INSERT INTO t VALUES (5)"))
            .await
            .expect("the transaction is open: no second BEGIN");
        tx.commit().await.unwrap();
        assert_eq!(committed_rows(&opts).await, vec![5]);

        let mut tx = db.begin().await.unwrap();
        tx.conn()
            .execute(&Sql::new("INSERT INTO t VALUES (6)"))
            .await
            .unwrap();
        let failed = tx
            .execute_and_commit(&Sql::new("INSERT INTO no_such_table VALUES (1)"))
            .await;
        assert!(failed.is_err());
        // The next writer of this store waits for the rollback of the dropped transaction.
        let tx = tokio::time::timeout(Duration::from_secs(5), db.begin())
            .await
            .expect("begin after a failed commit")
            .unwrap();
        tx.rollback().await.unwrap();
        assert_eq!(
            committed_rows(&opts).await,
            vec![5],
            "the 6 was rolled back"
        );
        assert!(write_lock_free(&opts).await);
    }

    /// A write someone waits on (an inbox item) goes ahead of writers already queued for the
    /// writer lock, and each of those gives way once only: a background writer queued before
    /// two awaited writes goes after the first and before the second.
    #[tokio::test]
    async fn an_awaited_write_goes_ahead_of_queued_writers_who_give_way_once() {
        let (_db_file, _opts, db) = wal_db_with_table(4).await;
        let order = Arc::new(StdMutex::new(Vec::new()));
        let settle = || tokio::time::sleep(Duration::from_millis(100));

        let holder = db.begin().await.unwrap();
        let queued = {
            let (db, order) = (db.clone(), order.clone());
            tokio::spawn(async move {
                let tx = db.begin().await.unwrap();
                order.lock().unwrap().push("queued");
                tx.commit().await.unwrap();
            })
        };
        settle().await;
        let (go, wait) = tokio::sync::oneshot::channel::<()>();
        let first = {
            let (db, order) = (db.clone(), order.clone());
            tokio::spawn(async move {
                let tx = db.begin_as(Urgency::Awaited).await.unwrap();
                order.lock().unwrap().push("awaited 1");
                let _ = wait.await;
                tx.commit().await.unwrap();
            })
        };
        settle().await;
        holder.commit().await.unwrap();
        while order.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        // The background writer now waits behind the first awaited write; a second one comes.
        let second = {
            let (db, order) = (db.clone(), order.clone());
            tokio::spawn(async move {
                let tx = db.begin_as(Urgency::Awaited).await.unwrap();
                order.lock().unwrap().push("awaited 2");
                tx.commit().await.unwrap();
            })
        };
        settle().await;
        go.send(()).unwrap();
        for t in [first, queued, second] {
            tokio::time::timeout(Duration::from_secs(5), t)
                .await
                .expect("a writer was starved")
                .unwrap();
        }
        assert_eq!(
            *order.lock().unwrap(),
            vec!["awaited 1", "queued", "awaited 2"]
        );
        assert_eq!(db.writer.awaited.load(Ordering::SeqCst), 0);

        // An awaited writer that gives up while queued is no longer counted: queued writers
        // would otherwise give way to nobody.
        let holder = db.begin().await.unwrap();
        let gave_up =
            tokio::time::timeout(Duration::from_millis(50), db.begin_as(Urgency::Awaited)).await;
        assert!(gave_up.is_err());
        assert_eq!(db.writer.awaited.load(Ordering::SeqCst), 0);
        holder.commit().await.unwrap();
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
        // A writer gives up while its BEGIN waits (on SQLite it goes with the first statement).
        let gave_up = tokio::time::timeout(Duration::from_millis(300), async {
            let mut tx = db.begin().await?;
            tx.conn()
                .execute(&Sql::new("INSERT INTO t VALUES (9)"))
                .await
        })
        .await;
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
        tx.conn()
            .execute(&Sql::new("INSERT INTO t VALUES (2)"))
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let rows = db.fetch_all(&Sql::new("SELECT x FROM t")).await.unwrap();
        assert_eq!(rows.len(), 2, "the abandoned insert was rolled back");
    }

    /// A connection that comes back settled serves the next caller at once: no ping, no new
    /// connection (sqlx's pool pinged on every hand-out and every return: three round trips
    /// for a point read).
    #[tokio::test]
    async fn settled_connections_serve_again_without_a_ping() {
        let (_db_file, _opts, db) = wal_db_with_table(4).await;
        for _ in 0..50 {
            db.fetch_all(&Sql::new("SELECT x FROM t")).await.unwrap();
        }
        let mut tx = db.begin().await.unwrap();
        tx.conn()
            .execute(&Sql::new("INSERT INTO t VALUES (1)"))
            .await
            .unwrap();
        tx.commit().await.unwrap();
        db.execute(&Sql::new("INSERT INTO t VALUES (2)"))
            .await
            .unwrap();
        assert_eq!(db.conns.opened.load(Ordering::Relaxed), 1);
        assert_eq!(db.conns.pings.load(Ordering::Relaxed), 0);
        assert_eq!(
            db.fetch_all(&Sql::new("SELECT x FROM t"))
                .await
                .unwrap()
                .len(),
            2
        );
    }

    /// A transaction dropped open (its caller left, or returned early on an error) is rolled
    /// back before its connection serves again, and keeps the writer lock until then: the next
    /// writer sees none of it.
    #[tokio::test]
    async fn a_transaction_dropped_open_is_rolled_back_before_anyone_writes() {
        let (_db_file, _opts, db) = wal_db_with_table(2).await;
        let mut tx = db.begin().await.unwrap();
        tx.conn()
            .execute(&Sql::new("INSERT INTO t VALUES (7)"))
            .await
            .unwrap();
        drop(tx);
        let mut next = tokio::time::timeout(Duration::from_secs(5), db.begin())
            .await
            .expect("begin after a dropped transaction")
            .unwrap();
        let rows = next
            .conn()
            .fetch_all(&Sql::new("SELECT x FROM t"))
            .await
            .unwrap();
        assert!(rows.is_empty(), "the dropped transaction's write survived");
        next.commit().await.unwrap();
        // One permit (a pool of two): the recovered connection is the one serving again.
        assert_eq!(db.conns.opened.load(Ordering::Relaxed), 1);
    }

    /// On both databases: a transaction dropped open with a row written is rolled back before
    /// its connection serves again, and its locks go with it — another connection (the spare of
    /// sqlx's pool) then updates the same row and finds it as it was. On PostgreSQL a connection
    /// left idle inside its transaction would keep the row locked indefinitely.
    #[tokio::test]
    async fn a_dropped_transaction_leaves_no_lock_and_no_write_on_either_database() {
        for test_db in testkit::db::backends().await {
            let pool = match test_db.kind {
                "sqlite" => DbPool::Sqlite(
                    SqlitePoolOptions::new()
                        .max_connections(2)
                        .connect_with(
                            SqliteConnectOptions::from_str(&test_db.url)
                                .unwrap()
                                .journal_mode(SqliteJournalMode::Wal)
                                .busy_timeout(Duration::from_secs(5)),
                        )
                        .await
                        .unwrap(),
                ),
                _ => DbPool::Postgres(
                    sqlx::postgres::PgPoolOptions::new()
                        .max_connections(2)
                        .connect(&test_db.url)
                        .await
                        .unwrap(),
                ),
            };
            let db = Db::new(pool.clone());
            db.execute(&Sql::new("CREATE TABLE t (x BIGINT PRIMARY KEY)"))
                .await
                .unwrap();
            db.execute(&Sql::new("INSERT INTO t VALUES (1)"))
                .await
                .unwrap();
            let mut tx = db.begin().await.unwrap();
            let n = tx
                .conn()
                .execute(&Sql::new("UPDATE t SET x = 2 WHERE x = 1"))
                .await
                .unwrap();
            assert_eq!(n, 1);
            drop(tx);
            let update = Sql::new("UPDATE t SET x = 3 WHERE x = 1");
            let n = match &pool {
                DbPool::Sqlite(p) => {
                    let mut c = p.acquire().await.unwrap();
                    SqliteStatement::of(&update.text, &update.args)
                        .query()
                        .execute(&mut *c)
                        .await
                        .map(|r| r.rows_affected())
                }
                DbPool::Postgres(p) => {
                    let mut c = p.acquire().await.unwrap();
                    sqlx::query("SET lock_timeout = '5s'")
                        .execute(&mut *c)
                        .await
                        .unwrap();
                    pg_query(&update)
                        .execute(&mut *c)
                        .await
                        .map(|r| r.rows_affected())
                }
            };
            let n = n.unwrap_or_else(|e| {
                panic!(
                    "{}: the dropped transaction kept its lock: {e}",
                    test_db.kind
                )
            });
            assert_eq!(
                n, 1,
                "{}: the dropped transaction's write survived",
                test_db.kind
            );
        }
    }

    /// Reads given up at any moment leave their connection usable: each is recovered before it
    /// serves again, and the store keeps answering.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_given_up_at_any_moment_leave_connections_usable() {
        let (_db_file, _opts, db) = wal_db_with_table(3).await;
        db.execute(&Sql::new("INSERT INTO t VALUES (1)"))
            .await
            .unwrap();
        for i in 0..300u64 {
            let wait = Duration::from_micros((i * 7919) % 500);
            let _ = tokio::time::timeout(wait, db.fetch_all(&Sql::new("SELECT x FROM t"))).await;
        }
        for _ in 0..20 {
            let rows = tokio::time::timeout(
                Duration::from_secs(5),
                db.fetch_all(&Sql::new("SELECT x FROM t")),
            )
            .await
            .expect("a read after abandoned ones")
            .unwrap();
            assert_eq!(rows.len(), 1);
        }
        let tx = db.begin().await.unwrap();
        tx.commit().await.unwrap();
    }

    /// The writer lock records who holds it (the warning of a writer that waits too long names
    /// that call site), and forgets it when the transaction ends, however it ends (dropped
    /// open, once its rollback is done).
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
        // Dropped open: the lock (and its holder) stays until the recovery's ROLLBACK is done.
        let tx = db.begin().await.unwrap();
        drop(tx);
        let deadline = Instant::now() + Duration::from_secs(5);
        while db.holder.lock().unwrap().is_some() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
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
