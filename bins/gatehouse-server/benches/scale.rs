//! Scale benchmark (issue 13): a store holding many requests and active grants, seeded directly
//! with bulk SQL (a recursive CTE on SQLite, `generate_series` on PostgreSQL), then:
//!
//! - the code path behind `/access status` (`Engine::status`) and the admin list
//!   (`Store::grants`, status = active, limit 50) in process, p50/p99;
//! - the audit export drain into the fake BigQuery, events/s;
//! - a real release `gatehouse-server` on that database: RSS after warm-up and after a burst of
//!   `GET /api/grants?status=active&limit=50` (p50/p99 over HTTP), its CPU while idle (nothing
//!   due), and the revocation lag of 10,000 grants expiring within one minute (dry-run provider,
//!   the server's own scheduler).
//!
//! Sizes: 100,000 requests and 10,000 active grants by default (quick to seed, so `make bench`
//! stays short); `SCALE_FULL=1` runs the issue's 1,000,000 requests and 100,000 active grants;
//! `SCALE_REQUESTS`, `SCALE_GRANTS`, `SCALE_EXPIRING`, `SCALE_EXPORT_EVENTS`, `SCALE_IDLE_SECS`
//! override single figures; `SCALE_SERVER_BIN` runs another server build. PostgreSQL runs too with
//! `BENCH_DATABASE_URL` or `TEST_DATABASE_URL`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use access_core::request::RequestKind;
use access_core::{Email, Subject, SubjectKey};
use gatehouse_runtime::compose::Overrides;
use gatehouse_runtime::config::Env;
use gatehouse_runtime::{App, Config};
use sqlx::{PgPool, SqlitePool};
use testkit::submission::{Ask, SubmitTyped};

/// The figures of each backend, written to `target/bench/scale-<backend>.json` for the summary
/// table of `make bench` (benches/summary.rs).
static FIGURES: std::sync::Mutex<Vec<(String, String, serde_json::Value)>> =
    std::sync::Mutex::new(Vec::new());

/// Records `value` under the dotted `path` for `kind` (`sqlite`, `postgres`).
fn record(kind: &str, path: &str, value: impl Into<serde_json::Value>) {
    FIGURES
        .lock()
        .unwrap()
        .push((kind.to_string(), path.to_string(), value.into()));
}

/// Writes the figures recorded for `kind` as nested JSON.
fn write_figures(kind: &str) {
    let mut doc = serde_json::Map::new();
    for (k, path, v) in FIGURES.lock().unwrap().iter() {
        if k != kind {
            continue;
        }
        let mut at = &mut doc;
        let parts: Vec<&str> = path.split('.').collect();
        for part in &parts[..parts.len() - 1] {
            at = at
                .entry(part.to_string())
                .or_insert_with(|| serde_json::Value::Object(Default::default()))
                .as_object_mut()
                .unwrap();
        }
        at.insert(parts[parts.len() - 1].to_string(), v.clone());
    }
    let dir = target_dir().join("bench");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("scale-{kind}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
    println!("{kind:>8}: JSON: {}", path.display());
}

fn target_dir() -> PathBuf {
    // target/release/deps/scale-<hash>
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).unwrap().to_path_buf()
}

const CONFIG: &str = r#"
[[resources]]
id = "bench"
provider = "dry-run"
min_duration = "1s"
default_duration = "1h"
max_duration = "8h"
approval = { mode = "auto" }
"#;

const ADMIN_TOKEN: &str = "scale-bench-admin-token";

#[derive(Debug, Clone, Copy)]
struct Sizes {
    requests: u64,
    grants: u64,
    expiring: u64,
    export_events: u64,
    idle_secs: u64,
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

impl Sizes {
    fn from_env() -> Sizes {
        let full = std::env::var("SCALE_FULL").is_ok_and(|v| v == "1");
        let (requests, grants) = if full {
            (1_000_000, 100_000)
        } else {
            (100_000, 10_000)
        };
        Sizes {
            requests: env_u64("SCALE_REQUESTS").unwrap_or(requests),
            grants: env_u64("SCALE_GRANTS").unwrap_or(grants),
            expiring: env_u64("SCALE_EXPIRING").unwrap_or(10_000),
            export_events: env_u64("SCALE_EXPORT_EVENTS").unwrap_or(20_000),
            idle_secs: env_u64("SCALE_IDLE_SECS").unwrap_or(5),
        }
    }
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// The raw connection the seeding uses (the store's own pool is not public).
enum Raw {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl Raw {
    async fn connect(url: &str) -> Raw {
        if url.starts_with("sqlite:") {
            Raw::Sqlite(SqlitePool::connect(url).await.unwrap())
        } else {
            Raw::Postgres(PgPool::connect(url).await.unwrap())
        }
    }

    fn pg(&self) -> bool {
        matches!(self, Raw::Postgres(_))
    }

    async fn exec(&self, sql: &str) -> u64 {
        match self {
            Raw::Sqlite(p) => sqlx::query(sql)
                .execute(p)
                .await
                .unwrap_or_else(|e| panic!("{e}: {sql}"))
                .rows_affected(),
            Raw::Postgres(p) => sqlx::query(sql)
                .execute(p)
                .await
                .unwrap_or_else(|e| panic!("{e}: {sql}"))
                .rows_affected(),
        }
    }

    async fn i64s(&self, sql: &str) -> Vec<i64> {
        use sqlx::Row;
        match self {
            Raw::Sqlite(p) => sqlx::query(sql)
                .fetch_all(p)
                .await
                .unwrap()
                .iter()
                .map(|r| r.get::<i64, _>(0))
                .collect(),
            Raw::Postgres(p) => sqlx::query(sql)
                .fetch_all(p)
                .await
                .unwrap()
                .iter()
                .map(|r| r.get::<i64, _>(0))
                .collect(),
        }
    }

    async fn string(&self, sql: &str) -> String {
        use sqlx::Row;
        match self {
            Raw::Sqlite(p) => sqlx::query(sql).fetch_one(p).await.unwrap().get(0),
            Raw::Postgres(p) => sqlx::query(sql).fetch_one(p).await.unwrap().get(0),
        }
    }

    /// `INSERT INTO table (cols) SELECT exprs FROM numbers 1..=n` (`i` is the number), joined with
    /// the template row `tpl` of `table` when `tpl` is given.
    async fn insert_n(
        &self,
        table: &str,
        cols: &str,
        exprs: &str,
        from: u64,
        to: u64,
        tpl: Option<(&str, &str)>,
    ) -> u64 {
        if to < from {
            return 0;
        }
        let join = match tpl {
            Some((tpl_table, id)) => format!(", {tpl_table} AS t WHERE t.id = '{id}'"),
            None => String::new(),
        };
        let sql = if self.pg() {
            format!(
                "INSERT INTO {table} ({cols}) SELECT {exprs} FROM generate_series({from}::BIGINT, {to}::BIGINT) AS n(i){join}"
            )
        } else {
            format!(
                "WITH RECURSIVE n(i) AS (SELECT {from} UNION ALL SELECT i + 1 FROM n WHERE i < {to}) \
                 INSERT INTO {table} ({cols}) SELECT {exprs} FROM n{join}"
            )
        };
        self.exec(&sql).await
    }

    /// A UUID-shaped id for entity type `ty` and number expression `i` (deterministic, valid).
    fn uuid(&self, ty: u32, i: &str) -> String {
        if self.pg() {
            format!("'{ty:08x}-0000-4000-8000-' || lpad(to_hex({i}), 12, '0')")
        } else {
            format!("printf('{ty:08x}-0000-4000-8000-%012x', {i})")
        }
    }

    fn cat(&self, a: &str, b: &str) -> String {
        if self.pg() {
            format!("({a} || ({b})::TEXT)")
        } else {
            format!("({a} || ({b}))")
        }
    }
}

const REQ: u32 = 1;
const GRANT: u32 = 2;
const JOB: u32 = 3;
const EVENT: u32 = 4;

const REQUEST_COLS: &str = "id, team_id, user_id, email, name, resource, kind, duration_secs, justification, \
     status, created_at, updated_at, pending_until, grant_id, decided_by, decided_by_id, failure, version";
const GRANT_COLS: &str = "id, team_id, user_id, email, name, resource, status, provider_handle, created_at, \
     granted_at, expires_at, ended_at, request_id, revoked_by, version, provider_intent, takeback_pending";
const JOB_COLS: &str = "id, kind, payload, status, run_at, attempts, max_attempts, last_error, created_at, \
     updated_at, locked_until, claim_token, order_key, order_seq";
const AUDIT_COLS: &str = "seq, id, at, kind, actor, actor_id, subject, resource, request_id, grant_id, details, prev_hash, hash";

fn ask(user: &str, duration: &str) -> Ask {
    Ask {
        subject: Subject {
            team_id: "T1".into(),
            user_id: user.into(),
            email: Some(Email::parse("template@example.com").unwrap()),
            name: String::new(),
        },
        resource: "bench".into(),
        duration: Some(duration.into()),
        justification: "bench".into(),
        kind: RequestKind::New,
    }
}

fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// Requests `from..=to` (user `{prefix}{i % users}`), the first `live` of them with an active
/// grant expiring at `expires(i)` and its pending expire job; the rest ended (`expired`), a
/// grant for every second one. Copies the template request and grant so every column is one
/// the engine wrote.
#[allow(clippy::too_many_arguments)]
async fn seed_people(
    raw: &Raw,
    tpl_req: &str,
    tpl_grant: &str,
    from: u64,
    to: u64,
    live_to: u64,
    user: &str,
    expires: &str,
    created: &str,
) {
    let rid = raw.uuid(REQ, "i");
    let gid = raw.uuid(GRANT, "i");
    let req_status = format!(
        "CASE WHEN i <= {live_to} THEN 'active' WHEN i % 7 = 0 THEN 'denied' ELSE 'expired' END"
    );
    let req_grant = format!("CASE WHEN i <= {live_to} OR i % 2 = 0 THEN {gid} END");
    raw.insert_n(
        "requests",
        REQUEST_COLS,
        &format!(
            "{rid}, t.team_id, {user}, t.email, t.name, t.resource, t.kind, t.duration_secs, t.justification, \
             {req_status}, {created}, {created}, NULL, {req_grant}, t.decided_by, t.decided_by_id, NULL, t.version"
        ),
        from,
        to,
        Some(("requests", tpl_req)),
    )
    .await;
    // Active grants, then ended grants for every second ended request.
    let grant_exprs = |status: &str, ended: &str| {
        format!(
            "{gid}, t.team_id, {user}, t.email, t.name, t.resource, {status}, t.provider_handle, {created}, \
             {created}, {expires}, {ended}, {rid}, NULL, t.version, t.provider_intent, 0"
        )
    };
    raw.insert_n(
        "grants",
        GRANT_COLS,
        &grant_exprs("'active'", "NULL"),
        from,
        live_to,
        Some(("grants", tpl_grant)),
    )
    .await;
    let ended_from = live_to.max(from.saturating_sub(1)) + 1;
    let sql_even = if raw.pg() {
        format!(
            "INSERT INTO grants ({GRANT_COLS}) SELECT {} FROM generate_series({ended_from}::BIGINT, {to}::BIGINT) AS n(i), grants AS t \
             WHERE t.id = '{tpl_grant}' AND i % 2 = 0",
            grant_exprs("'expired'", created)
        )
    } else {
        format!(
            "WITH RECURSIVE n(i) AS (SELECT {ended_from} UNION ALL SELECT i + 1 FROM n WHERE i < {to}) \
             INSERT INTO grants ({GRANT_COLS}) SELECT {} FROM n, grants AS t WHERE t.id = '{tpl_grant}' AND i % 2 = 0",
            grant_exprs("'expired'", created)
        )
    };
    if to >= ended_from {
        raw.exec(&sql_even).await;
    }
    // The expire job of every active grant, due at its expiry.
    let payload = format!(r#"('{{"type":"expire","grant_id":"' || {gid} || '"}}')"#);
    raw.insert_n(
        "jobs",
        JOB_COLS,
        &format!(
            "{}, 'expire', {payload}, 'pending', {expires}, 0, NULL, NULL, {created}, {created}, NULL, NULL, NULL, NULL",
            raw.uuid(JOB, "i")
        ),
        from,
        live_to,
        None,
    )
    .await;
}

struct Seeded {
    tpl_req: String,
    tpl_grant: String,
    users: u64,
}

/// The application on `url` with the bench's configuration, as the server composes it.
async fn bench_app(url: &str, overrides: Overrides) -> App {
    App::build(
        Config::from_toml(CONFIG, "bench").unwrap(),
        Env {
            database_url: url.to_string(),
            ..Env::default()
        },
        overrides,
    )
    .await
    .unwrap()
}

/// A template request and grant made by the engine, then the bulk rows copied from them.
async fn seed(kind: &str, url: &str, sizes: Sizes) -> Seeded {
    let app = bench_app(url, Overrides::default()).await;
    let req = app
        .engine
        .submit_typed(ask("template", "8h"))
        .await
        .unwrap();
    app.engine.drain(100).await.unwrap();
    let grant = app
        .engine
        .store()
        .live_grant(
            &SubjectKey {
                team_id: "T1".into(),
                user_id: "template".into(),
            },
            &access_core::ResourceId::parse("bench").unwrap(),
        )
        .await
        .unwrap()
        .expect("the template grant is live");
    drop(app);

    let raw = Raw::connect(url).await;
    let t = Instant::now();
    let now = now_micros();
    let users = sizes.grants.max(1);
    // Requests spread over the past (one per second), users `U{i % grants}`: every user holds one
    // active grant and requests/grants ≈ 10 requests of history.
    let user = raw.cat("'U'", &format!("i % {users}"));
    let created = format!("({now} - ({} - i) * 1000000)", sizes.requests);
    // Active grants expire 1 to 8 hours from now (nothing due while the bench runs).
    let expires = format!("({now} + 3600000000 + (i % 25200) * 1000000)");
    seed_people(
        &raw,
        &req.id.to_string(),
        &grant.id.to_string(),
        1,
        sizes.requests,
        sizes.grants,
        &user,
        &expires,
        &created,
    )
    .await;
    // Finished jobs accumulate as history (one per request) and must not slow the queue.
    raw.insert_n(
        "jobs",
        JOB_COLS,
        &format!(
            "{}, 'notify', '{{}}', 'done', {created}, 1, 8, NULL, {created}, {created}, NULL, NULL, NULL, NULL",
            raw.uuid(JOB, &format!("(i + {})", 1u64 << 40))
        ),
        1,
        sizes.requests,
        None,
    )
    .await;
    if raw.pg() {
        // What autovacuum does shortly after a bulk change.
        raw.exec("ANALYZE").await;
    }
    println!(
        "{kind:>8}: seeded {} requests, {} active grants (+{} ended), {} pending expire jobs, {} done jobs in {:.1} s",
        sizes.requests,
        sizes.grants,
        sizes.requests.saturating_sub(sizes.grants) / 2,
        sizes.grants,
        sizes.requests,
        t.elapsed().as_secs_f64()
    );
    Seeded {
        tpl_req: req.id.to_string(),
        tpl_grant: grant.id.to_string(),
        users,
    }
}

/// `Engine::status` (what `/access status` shows) and `Store::grants` (the admin list) in process.
async fn in_process(kind: &str, url: &str, seeded: &Seeded) {
    let app = bench_app(url, Overrides::default()).await;
    let e = &app.engine;
    // 1000 calls each, or 30 s each at most (before the indexes, one list call took ~0.1 s).
    let n = 1000;
    let budget = Duration::from_secs(30);
    let mut status = Vec::with_capacity(n);
    let t0 = Instant::now();
    for k in 0..n {
        if t0.elapsed() > budget {
            break;
        }
        let user = format!("U{}", (k as u64 * 7919) % seeded.users);
        let t = Instant::now();
        let s = e
            .status(&SubjectKey {
                team_id: "T1".into(),
                user_id: user,
            })
            .await
            .unwrap();
        status.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(s.grants.len(), 1, "every seeded user holds one live grant");
    }
    let mut list = Vec::with_capacity(n);
    let t0 = Instant::now();
    for _ in 0..n {
        if t0.elapsed() > budget {
            break;
        }
        let t = Instant::now();
        let g = e
            .store()
            .grants(&access_core::ports::GrantFilter {
                status: Some(access_core::GrantStatus::Active),
                limit: Some(50),
                ..Default::default()
            })
            .await
            .unwrap();
        list.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(g.len(), 50);
    }
    record(kind, "status_ms.p50", percentile(&mut status, 0.5));
    record(kind, "status_ms.p99", percentile(&mut status, 0.99));
    record(kind, "store_grants_ms.p99", percentile(&mut list, 0.99));
    println!(
        "{kind:>8}: /access status (Engine::status, {} calls) p50 {:.2} ms p99 {:.2} ms | Store::grants(active, 50; {} calls) p50 {:.2} ms p99 {:.2} ms",
        status.len(),
        percentile(&mut status, 0.5),
        percentile(&mut status, 0.99),
        list.len(),
        percentile(&mut list, 0.5),
        percentile(&mut list, 0.99),
    );
}

/// `n` audit events (each naming a seeded request and grant, as `access_granted` events do) with
/// their pending export jobs, drained into the fake BigQuery by the engine.
async fn export_drain(kind: &str, url: &str, seeded: &Seeded, sizes: Sizes) {
    let bq = testkit::bigquery::FakeBigQuery::start().await;
    bq.create_dataset("bench-project", "ci_chat_bot");
    let mut cfg = audit_bigquery::BigQueryConfig::new("bench-project");
    cfg.base_url = bq.base_url();
    let sink = Arc::new(
        audit_bigquery::BigQuerySink::new(cfg, Arc::new(gcp_auth::StaticToken("bench".into())))
            .unwrap(),
    );
    sink.create_tables().await.unwrap();
    let app = bench_app(
        url,
        Overrides {
            audit_sink: Some(sink),
            ..Default::default()
        },
    )
    .await;
    let raw = Raw::connect(url).await;
    let n = sizes.export_events;
    let base = raw.i64s("SELECT MAX(seq) FROM audit_events").await[0];
    let tpl_event = raw
        .string(&format!(
            "SELECT id FROM audit_events WHERE kind = 'access_granted' AND request_id = '{}'",
            seeded.tpl_req
        ))
        .await;
    let now = now_micros();
    // Event i names request/grant i (i ≤ grants: active ones), so every event costs its reads.
    let which = format!("(1 + (i - 1) % {})", seeded.users);
    raw.insert_n(
        "audit_events",
        AUDIT_COLS,
        &format!(
            "{base} + i, {}, {now}, t.kind, t.actor, t.actor_id, t.subject, t.resource, {}, {}, t.details, t.prev_hash, t.hash",
            raw.uuid(EVENT, "i"),
            raw.uuid(REQ, &which),
            raw.uuid(GRANT, &which),
        ),
        1,
        n,
        Some(("audit_events", &tpl_event)),
    )
    .await;
    // The chain head moves past the copies so later events get fresh sequence numbers.
    raw.exec(&format!(
        "UPDATE audit_head SET seq = {} WHERE id = 1",
        base + n as i64
    ))
    .await;
    let payload = format!(
        r#"('{{"type":"export_audit","event_id":"' || {} || '"}}')"#,
        raw.uuid(EVENT, "i")
    );
    raw.insert_n(
        "jobs",
        JOB_COLS,
        &format!(
            "{}, 'export_audit', {payload}, 'pending', {now}, 0, NULL, NULL, {now}, {now}, NULL, NULL, NULL, NULL",
            raw.uuid(JOB, &format!("(i + {})", 2u64 << 40))
        ),
        1,
        n,
        None,
    )
    .await;
    let e = &app.engine;
    let before = bq.calls().insert_all;
    let t = Instant::now();
    let mut exported = 0u64;
    loop {
        let s = e.run_due(500).await.unwrap();
        if s.claimed == 0 {
            break;
        }
        exported += s.done.get("export_audit").copied().unwrap_or(0);
    }
    let took = t.elapsed().as_secs_f64();
    record(kind, "export_events_per_s", n as f64 / took);
    println!(
        "{kind:>8}: export drain of {n} events in {took:.2} s: {:.0} events/s ({exported} exported, {} insertAll requests)",
        n as f64 / took,
        bq.calls().insert_all - before
    );
    assert_eq!(exported, n, "every seeded event is exported");
}

/// The server binary cargo built for this bench (same profile, same features: the bench lives in
/// the server's package for that), or `SCALE_SERVER_BIN` (another build, to compare versions).
fn server_binary() -> PathBuf {
    match std::env::var("SCALE_SERVER_BIN") {
        Ok(bin) => PathBuf::from(bin),
        Err(_) => PathBuf::from(env!("CARGO_BIN_EXE_gatehouse-server")),
    }
}

struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(bin: &Path, config: &Path, url: &str, log: &Path) -> Server {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(bin)
        .arg("--config")
        .arg(config)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .env("DATABASE_URL", url)
        .env("GATEHOUSE_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::from(std::fs::File::create(log).unwrap()))
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let base = line
        .trim()
        .strip_prefix("gatehouse-server listening on ")
        .unwrap_or_else(|| {
            panic!(
                "server did not start: {line:?}; log: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            )
        })
        .to_string();
    std::thread::spawn(move || for _ in reader.lines() {});
    Server { child, base }
}

/// (VmRSS, VmHWM) in MB.
fn rss_mb(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    (kb("VmRSS:") / 1024.0, kb("VmHWM:") / 1024.0)
}

/// utime + stime of a process, in seconds.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 of `rest` (0-based).
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    // SC_CLK_TCK is 100 on Linux.
    ticks / 100.0
}

async fn with_server(kind: &str, url: &str, seeded: &Seeded, sizes: Sizes, bin: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gatehouse.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let raw = Raw::connect(url).await;

    // The expiring burst is seeded before the server starts (another process's jobs are seen at
    // its next look at the queue): `expiring` grants expiring evenly over one minute, starting
    // once the other measurements are done. They take about 5 s plus the idle wait (the list
    // calls are cut off at 10 s); the lead leaves 20 s for them, and the idle measurement says
    // if the burst began before it ended. (It was 45 s: `make bench` has 15 minutes.)
    let lead_secs = 20 + sizes.idle_secs;
    let start = now_micros() + (lead_secs as i64) * 1_000_000;
    let window = 60_000_000i64;
    let from = sizes.requests + 1;
    let to = sizes.requests + sizes.expiring;
    let expires = format!(
        "({start} + ((i - {from}) * {window}) / {})",
        sizes.expiring.max(1)
    );
    let created = format!("{}", now_micros() - 3_600_000_000);
    let user = raw.cat("'X'", "i");
    seed_people(
        &raw,
        &seeded.tpl_req,
        &seeded.tpl_grant,
        from,
        to,
        to,
        &user,
        &expires,
        &created,
    )
    .await;
    if raw.pg() {
        raw.exec("ANALYZE").await;
    }

    let log = dir.path().join("server.log");
    let server = start_server(bin, &config, url, &log);
    let pid = server.child.id();
    let client = reqwest::Client::new();
    let list = format!("{}/api/grants?status=active&limit=50", server.base);
    let get = || async {
        let r = client
            .get(&list)
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
        r.bytes().await.unwrap()
    };
    for _ in 0..20 {
        get().await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (rss_warm, _) = rss_mb(pid);
    let mut lat = Vec::with_capacity(2000);
    let t0 = Instant::now();
    for _ in 0..2000 {
        if t0.elapsed() > Duration::from_secs(10) {
            break;
        }
        let t = Instant::now();
        get().await;
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let (rss_burst, hwm) = rss_mb(pid);
    record(kind, "api_grants_ms.p50", percentile(&mut lat, 0.5));
    record(kind, "api_grants_ms.p99", percentile(&mut lat, 0.99));
    println!(
        "{kind:>8}: server GET /api/grants?status=active&limit=50 ({} calls) p50 {:.2} ms p99 {:.2} ms | RSS after warm-up {rss_warm:.1} MB, after the calls {rss_burst:.1} MB (peak {hwm:.1} MB)",
        lat.len(),
        percentile(&mut lat, 0.5),
        percentile(&mut lat, 0.99),
    );

    // Idle: nothing is due until the burst below.
    let cpu0 = cpu_secs(pid);
    tokio::time::sleep(Duration::from_secs(sizes.idle_secs)).await;
    let idle = cpu_secs(pid) - cpu0;
    if now_micros() >= start {
        println!(
            "{kind:>8}: WARNING: the expiries began before the idle measurement ended; the idle CPU below includes them"
        );
    }
    record(
        kind,
        "server_idle_cpu_ms_per_s",
        idle * 1000.0 / sizes.idle_secs as f64,
    );
    println!(
        "{kind:>8}: server idle CPU over {} s with nothing due: {:.0} ms ({:.2} % of one core)",
        sizes.idle_secs,
        idle * 1000.0,
        idle * 100.0 / sizes.idle_secs as f64
    );

    // The burst: wait for every grant of the expiring set to end.
    let deadline = Instant::now() + Duration::from_secs(lead_secs + 60 + 180);
    let gfrom = raw.uuid(GRANT, &from.to_string());
    let gto = raw.uuid(GRANT, &to.to_string());
    let range = format!("id >= {gfrom} AND id <= {gto}");
    loop {
        let left = raw
            .i64s(&format!(
                "SELECT COUNT(*) FROM grants WHERE {range} AND status <> 'expired'"
            ))
            .await[0];
        if left == 0 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut lags: Vec<f64> = raw
        .i64s(&format!(
            "SELECT ended_at - expires_at FROM grants WHERE {range} AND status = 'expired'"
        ))
        .await
        .into_iter()
        .map(|us| us as f64 / 1e6)
        .collect();
    let revoked = lags.len();
    let (rss_end, hwm) = rss_mb(pid);
    record(kind, "expiries.count", sizes.expiring);
    record(kind, "expiries.revoked", revoked as u64);
    record(kind, "expiries.lag_s.p50", percentile(&mut lags, 0.5));
    record(kind, "expiries.lag_s.p99", percentile(&mut lags, 0.99));
    record(kind, "expiries.lag_s.max", percentile(&mut lags, 1.0));
    record(kind, "server_rss_mb.after_expiries", rss_end);
    record(kind, "server_rss_mb.peak", hwm);
    println!(
        "{kind:>8}: {revoked}/{} grants expiring within one minute revoked, lag p50 {:.3} s p99 {:.3} s max {:.3} s | RSS after {rss_end:.1} MB (peak {hwm:.1} MB)",
        sizes.expiring,
        percentile(&mut lags, 0.5),
        percentile(&mut lags, 0.99),
        percentile(&mut lags, 1.0),
    );
    drop(server);
}

async fn run(kind: &str, url: &str, sizes: Sizes, bin: &Path) {
    let seeded = seed(kind, url, sizes).await;
    in_process(kind, url, &seeded).await;
    export_drain(kind, url, &seeded, sizes).await;
    with_server(kind, url, &seeded, sizes, bin).await;
    record(kind, "requests", sizes.requests);
    record(kind, "active_grants", sizes.grants);
    write_figures(kind);
}

#[tokio::main]
async fn main() {
    let sizes = Sizes::from_env();
    let bin = server_binary();
    println!(
        "scale: {} requests, {} active grants, {} expiring within a minute, {} export events",
        sizes.requests, sizes.grants, sizes.expiring, sizes.export_events
    );
    let dir = tempfile::tempdir().unwrap();
    run("sqlite", &testkit::db::sqlite_url(dir.path()), sizes, &bin).await;
    let pg = std::env::var("BENCH_DATABASE_URL")
        .or_else(|_| std::env::var("TEST_DATABASE_URL"))
        .ok();
    if let Some(base) = pg {
        let db = testkit::db::TestDb::postgres(&base).await;
        run("postgres", &db.url, sizes, &bin).await;
    }
}
