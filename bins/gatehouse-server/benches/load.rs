//! Slash-command load benchmark: an open-loop generator sends correctly signed `/access request`
//! commands to the real `gatehouse-server` (release build) with the fake Slack behind it, at fixed
//! offered rates, and reports per rate the acknowledgement latency (p50/p99/p99.9, measured from
//! the *intended* send time so queueing in the generator or the server is not hidden), errors,
//! the server's CPU per command including the jobs each command causes (from `/proc`), its RSS,
//! how long the approval message took to reach Slack, and the highest rate whose ack p99 stays
//! within 50 ms. Also with every fake Slack call slowed by 50 ms. SQLite always; PostgreSQL when
//! `BENCH_DATABASE_URL` or `TEST_DATABASE_URL` is set. See docs/performance.md.
//!
//! Every command comes from a different person with a unique `trigger_id` and `response_url`;
//! the resource is dry-run with one approver, so each command costs a durable request, an audit
//! event, a `users.info` call, an approval message and a DM to the requester.
//!
//! Knobs (environment): `BENCH_LOAD_SECS` (seconds per rate, default 5), `BENCH_LOAD_RATES`
//! (comma-separated ladder, default `100,200,500,1000,2000,3000,4000`), `BENCH_LOAD_SLOW_RATE`
//! (rate of the slowed-Slack run, default 200; `0` skips it), `BENCH_LOAD_BACKENDS`
//! (`sqlite,postgres` by default), `BENCH_LOAD_SERVER` (another server binary, e.g. a debug build
//! while working on this file).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testkit::db::TestDb;
use testkit::slack::{self, FakeSlack, FakeUser, SlashCommand};

const SIGNING_SECRET: &str = "bench-slack-signing-secret";
const APPROVALS_NAME: &str = "access-approvals";
const APPROVALS_ID: &str = "C0APPROVALS";
const APPROVER: &str = "UAPPROVER";
/// The target the issue sets for "sustained": ack p99 within this.
const SUSTAINED_P99: Duration = Duration::from_millis(50);
/// And the server keeps up: approval messages posted within this (p99), the bound the issue sets
/// for approvals with a slow Slack. Without it, a server that acknowledges quickly while its
/// handlers fall further behind each second (they wait for a slot, `delivery_concurrency`)
/// would count as sustaining a rate it only queues.
const SUSTAINED_APPROVAL_P99: Duration = Duration::from_secs(1);
/// An acknowledgement later than Slack's 3 s limit is an error as far as Slack is concerned; the
/// client waits a little longer so such replies are still measured.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a step waits for its jobs after the last answer. An overloaded step may not drain in
/// time: its row says so and its CPU per command then misses the jobs still queued. Bounded so
/// that `make bench` stays within its time budget on a saturated machine.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);

/// The server's configuration. The per-workspace limit is off: every command comes from one workspace, at rates far above
/// what a real one sends (docs/rate-limits.md). Each person files one request, so the per-person
/// limits never bite.
const CONFIG: &str = r#"
[server.rate_limits]
workspace_burst = 0

[[resources]]
id = "bench"
description = "Load benchmark"
provider = "dry-run"
min_duration = "1s"
default_duration = "1h"
max_duration = "8h"
eligibility = ["anyone"]
approval = { mode = "approvers", approvers = { users = ["UAPPROVER"] }, required = 1, pending_ttl = "1h" }
"#;

// ------------------------------------------------------------------------------------------------
// /proc readings

/// utime + stime of one process, in seconds.
fn cpu_secs(pid: u32, tick: f64) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields count from the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime 15.
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / tick)
}

/// The PostgreSQL backends serving the server under test: its connections carry an
/// `application_name` of their own, so other clients of the same PostgreSQL (other test runs on a
/// shared machine) are not counted.
async fn pg_backends(admin_url: &str, app: &str) -> Vec<u32> {
    use sqlx::Connection;
    let Ok(mut c) = sqlx::PgConnection::connect(admin_url).await else {
        return vec![];
    };
    let pids: Vec<i32> =
        sqlx::query_scalar("SELECT pid FROM pg_stat_activity WHERE application_name = $1")
            .bind(app)
            .fetch_all(&mut c)
            .await
            .unwrap_or_default();
    let _ = c.close().await;
    pids.into_iter().map(|p| p as u32).collect()
}

/// CPU seconds of those backends. A backend the pool opened during the step counts from zero;
/// one that closed during it takes its time with it (the pool keeps its connections, so that is
/// rare). PostgreSQL's own background processes (WAL writer, checkpointer) are not counted: on a
/// shared server they also work for everybody else.
async fn pg_cpu(admin_url: &str, app: &str, tick: f64) -> HashMap<u32, f64> {
    pg_backends(admin_url, app)
        .await
        .into_iter()
        .filter_map(|p| cpu_secs(p, tick).map(|c| (p, c)))
        .collect()
}

/// (VmRSS, VmHWM) in MiB.
fn rss_mib(pid: u32) -> (f64, f64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
            .unwrap_or(f64::NAN)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn clock_tick() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

// ------------------------------------------------------------------------------------------------
// The server

fn target_dir() -> PathBuf {
    // target/release/deps/load-<hash>
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).unwrap().to_path_buf()
}

/// The server binary cargo built for this bench (same profile, same features), or
/// `BENCH_LOAD_SERVER` (another build, e.g. a debug one while working on this file).
fn server_binary() -> PathBuf {
    match std::env::var("BENCH_LOAD_SERVER") {
        Ok(p) => PathBuf::from(p),
        Err(_) => PathBuf::from(env!("CARGO_BIN_EXE_gatehouse-server")),
    }
}

struct Server {
    child: Child,
    base: String,
    log: PathBuf,
}

impl Server {
    fn start(db_url: &str, slack: &FakeSlack, dir: &Path) -> Server {
        let config = dir.join("gatehouse.toml");
        std::fs::write(&config, CONFIG).unwrap();
        let log = dir.join("server.log");
        let mut child = Command::new(server_binary())
            .arg("--config")
            .arg(&config)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .env("DATABASE_URL", db_url)
            // What an operator runs with: info, without per-request debug lines.
            .env("RUST_LOG", "info,sqlx=warn")
            .env("GATEHOUSE_ADMIN_TOKEN", "bench-admin-token")
            .env("SLACK_BOT_TOKEN", slack.token())
            .env("SLACK_SIGNING_SECRET", SIGNING_SECRET)
            .env("SLACK_API_URL", slack.api_url())
            .env("APPROVAL_CHANNEL", APPROVALS_NAME)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let base = line
            .trim()
            .strip_prefix("gatehouse-server listening on ")
            .unwrap_or_else(|| {
                panic!(
                    "server did not start: {line:?}; log: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            })
            .to_string();
        std::thread::spawn(move || for _ in reader.lines() {});
        Server { child, base, log }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ------------------------------------------------------------------------------------------------
// One step: one offered rate against a fresh server and database

#[derive(Clone, Copy, PartialEq)]
enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

struct Step {
    rate: u32,
    slow_ms: u64,
    secs: f64,
}

struct Outcome {
    sent: usize,
    /// Answered in time (submitted, receipt or deferred).
    ok: usize,
    deferred: usize,
    /// Acknowledged with a receipt (the outcome followed on the response_url).
    received: usize,
    errors: usize,
    /// First few error descriptions.
    error_samples: Vec<String>,
    ack_ms: Vec<f64>,
    /// Actual send start − intended time: the generator's own lateness.
    lag_ms: Vec<f64>,
    /// Intended send time → the approval message arriving at Slack.
    approval_ms: Vec<f64>,
    approvals_missing: usize,
    drained: bool,
    drain_wait: Duration,
    server_cpu: f64,
    pg_cpu: Option<f64>,
    /// This process (generator + fake Slack): what the server did not get of the machine.
    bench_cpu: f64,
    /// Server CPU while idle before the step, ms per second.
    idle_ms_per_s: f64,
    /// The same for the PostgreSQL backends.
    pg_idle_ms_per_s: Option<f64>,
    rss_mib: f64,
    hwm_mib: f64,
    /// Wall time of the sending phase.
    send_wall: Duration,
    slack_calls_per_cmd: Vec<(String, f64)>,
    jobs: Vec<(String, f64)>,
    /// Statements and commits the server's store sent per command, jobs included (from
    /// `/metrics`; the step's idle scheduler ticks too, a handful).
    statements_per_cmd: f64,
    commits_per_cmd: f64,
    round_trips_per_cmd: f64,
}

struct Prepared {
    user: String,
    body: String,
}

fn fastrand_u32() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() ^ std::process::id())
        .unwrap_or(0)
}

fn user_id(step_tag: &str, i: usize) -> String {
    format!("UB{step_tag}X{i:07}")
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64) * p).ceil() as usize;
    sorted[idx.clamp(1, sorted.len()) - 1]
}

async fn run_step(backend: Backend, pg_base: Option<&str>, step: &Step, tick: f64) -> Outcome {
    let db = match backend {
        Backend::Sqlite => TestDb::sqlite(),
        Backend::Postgres => TestDb::postgres(pg_base.unwrap()).await,
    };
    let app = format!("gh-load-{:08x}", fastrand_u32());
    let db_url = match backend {
        Backend::Sqlite => db.url.clone(),
        Backend::Postgres => format!("{}&application_name={app}", db.url),
    };
    let dir = tempfile::tempdir().unwrap();
    let slack = FakeSlack::start().await;
    slack.add_channel(APPROVALS_ID, APPROVALS_NAME);
    slack.add_channel("C0GENERAL", "general");
    slack.add_user(FakeUser::new(APPROVER, "approver").email("approver@example.com"));
    let n = (step.rate as f64 * step.secs).round() as usize;
    let warm = 50usize;
    let tag = format!("{}{}", step.rate, step.slow_ms);
    for i in 0..n + warm {
        let u = user_id(&tag, i);
        slack.add_user(FakeUser::new(&u, &u.to_lowercase()).email(&format!("{u}@example.com")));
    }
    let server = Server::start(&db_url, &slack, dir.path());
    let pid = server.pid();
    let url = format!("{}/slack/commands", server.base);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(usize::MAX)
        .timeout(REQUEST_TIMEOUT)
        .build()
        .unwrap();

    // Warm-up: connections, prepared statements, lazy initialisation; then wait for its jobs.
    let warm_cmds = prepare(&slack, &tag, n..n + warm);
    for c in &warm_cmds {
        let r = send(&http, &url, c).await;
        assert!(
            matches!(r, Ok(Ack::Submitted | Ack::Received)),
            "warm-up command failed: {r:?}; log: {}",
            std::fs::read_to_string(&server.log).unwrap_or_default()
        );
    }
    wait_posts(&slack, 2 * warm, Duration::from_secs(30)).await;
    settle(&slack).await;
    let base_posts = slack.call_count("chat.postMessage");
    let base_calls = count_by_method(&slack);

    if step.slow_ms > 0 {
        slack.set_hang("*", Some(Duration::from_millis(step.slow_ms)));
    }
    let cmds = Arc::new(prepare(&slack, &tag, 0..n));
    // Idle cost: the scheduler's polling and the maintenance loops, for reading cpu/cmd at low
    // rates (it is included in cpu/cmd, not subtracted).
    let pg_idle0 = match pg_base {
        Some(b) if backend == Backend::Postgres => Some(pg_cpu(b, &app, tick).await),
        _ => None,
    };
    // Two reads: the second minus the first is what one /metrics page itself sends (its gauges
    // are read from the store after its counters). One such page falls inside the step's
    // difference below (this one's queries) and is taken off.
    let page0 = store_sent(&metrics_page(&http, &server.base).await);
    let store0 = store_sent(&metrics_page(&http, &server.base).await);
    let page = store0.minus(&page0);
    let idle0 = cpu_secs(pid, tick).unwrap();
    let idle_start = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_ms_per_s =
        (cpu_secs(pid, tick).unwrap() - idle0) * 1e3 / idle_start.elapsed().as_secs_f64();
    let pg0 = match pg_base {
        Some(b) if backend == Backend::Postgres => Some(pg_cpu(b, &app, tick).await),
        _ => None,
    };
    let pg_idle_ms_per_s = pg_idle0.zip(pg0.as_ref()).map(|(a, b)| {
        b.iter()
            .map(|(p, c)| c - a.get(p).copied().unwrap_or(0.0))
            .sum::<f64>()
            * 1e3
            / idle_start.elapsed().as_secs_f64()
    });
    let cpu0 = cpu_secs(pid, tick).unwrap();
    let me0 = cpu_secs(std::process::id(), tick).unwrap_or(f64::NAN);

    // Open loop: command i is due at start + i/rate whatever happened to the earlier ones.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let interval = Duration::from_secs_f64(1.0 / step.rate as f64);
    let start = Instant::now() + Duration::from_millis(20);
    for i in 0..n {
        let due = start + interval.mul_f64(i as f64);
        tokio::time::sleep_until(due.into()).await;
        let (http, url, cmds, tx) = (http.clone(), url.clone(), cmds.clone(), tx.clone());
        tokio::spawn(async move {
            let sent = Instant::now();
            let r = send(&http, &url, &cmds[i]).await;
            let _ = tx.send((i, due, sent, Instant::now(), r));
        });
    }
    drop(tx);
    let mut results = Vec::with_capacity(n);
    while let Some(r) = rx.recv().await {
        results.push(r);
    }
    let send_wall = start.elapsed();

    // Jobs: every command posts an approval message and a DM; wait for both, then for quiet.
    let drain_start = Instant::now();
    let ok = results.iter().filter(|r| r.4.is_ok()).count();
    let deferred = results
        .iter()
        .filter(|r| matches!(r.4, Ok(Ack::Deferred)))
        .count();
    let received = results
        .iter()
        .filter(|r| matches!(r.4, Ok(Ack::Received)))
        .count();
    let drained = wait_posts(&slack, base_posts + 2 * ok, DRAIN_LIMIT).await;
    settle(&slack).await;
    let drain_wait = drain_start.elapsed();
    let cpu1 = cpu_secs(pid, tick).unwrap();
    let me1 = cpu_secs(std::process::id(), tick).unwrap_or(f64::NAN);
    let pg_cpu = match (pg_base, &pg0) {
        (Some(b), Some(before)) => {
            let after = pg_cpu(b, &app, tick).await;
            let gone = before.keys().filter(|p| !after.contains_key(p)).count();
            if gone > 0 {
                println!(
                    "          note: {gone} PostgreSQL backend(s) closed during the step; \
                     their CPU is not counted"
                );
            }
            Some(
                after
                    .iter()
                    .map(|(p, c)| c - before.get(p).copied().unwrap_or(0.0))
                    .sum::<f64>(),
            )
        }
        _ => None,
    };
    let (rss, hwm) = rss_mib(pid);

    // After the CPU reading: these look-ups cost the server time of their own.
    let after = metrics_page(&http, &server.base).await;
    let jobs = jobs_by_kind(&after);
    // What the step's commands sent: the difference, less the one /metrics page inside it.
    let sent = store_sent(&after).minus(&store0).minus(&page);

    let mut ack_ms = vec![];
    let mut lag_ms = vec![];
    let mut errors = 0;
    let mut error_samples = vec![];
    for (i, due, sent, done, r) in &results {
        lag_ms.push(sent.duration_since(*due).as_secs_f64() * 1e3);
        match r {
            Ok(_) => ack_ms.push(done.duration_since(*due).as_secs_f64() * 1e3),
            Err(e) => {
                errors += 1;
                if error_samples.len() < 5 {
                    error_samples.push(format!("command {i}: {e}"));
                }
            }
        }
    }
    ack_ms.sort_by(f64::total_cmp);
    lag_ms.sort_by(f64::total_cmp);

    // Approval latency: the approval message names the requester as <@user>.
    let due_of: HashMap<&str, Instant> = results
        .iter()
        .map(|(i, due, ..)| (cmds[*i].user.as_str(), *due))
        .collect();
    let mut approval_ms = vec![];
    for c in slack.calls_to("chat.postMessage") {
        let ch = c.args["channel"].as_str().unwrap_or_default();
        if ch != APPROVALS_NAME && ch != APPROVALS_ID {
            continue;
        }
        let Some(at) = c.body.find("<@UB") else {
            continue;
        };
        let rest = &c.body[at + 2..];
        let Some(end) = rest.find('>') else { continue };
        if let Some(due) = due_of.get(&rest[..end]) {
            approval_ms.push(c.at.duration_since(*due).as_secs_f64() * 1e3);
        }
    }
    approval_ms.sort_by(f64::total_cmp);
    let approvals_missing = ok.saturating_sub(approval_ms.len());
    let calls = count_by_method(&slack);
    let slack_calls_per_cmd = calls
        .iter()
        .map(|(m, c)| {
            let before = base_calls
                .iter()
                .find(|(b, _)| b == m)
                .map_or(0, |(_, c)| *c);
            (m.clone(), (c - before) as f64 / n.max(1) as f64)
        })
        .collect();
    drop(server);
    Outcome {
        sent: n,
        ok,
        deferred,
        received,
        errors,
        error_samples,
        ack_ms,
        lag_ms,
        approval_ms,
        approvals_missing,
        drained,
        drain_wait,
        server_cpu: cpu1 - cpu0,
        pg_cpu,
        bench_cpu: me1 - me0,
        idle_ms_per_s,
        pg_idle_ms_per_s,
        rss_mib: rss,
        hwm_mib: hwm,
        send_wall,
        slack_calls_per_cmd,
        jobs: jobs
            .into_iter()
            .map(|(k, v)| (k, v / (n + warm) as f64))
            .collect(),
        statements_per_cmd: sent.statements / n.max(1) as f64,
        commits_per_cmd: sent.commits / n.max(1) as f64,
        round_trips_per_cmd: sent.round_trips / n.max(1) as f64,
    }
}

fn prepare(slack: &FakeSlack, tag: &str, range: std::ops::Range<usize>) -> Vec<Prepared> {
    range
        .map(|i| {
            let user = user_id(tag, i);
            let body = SlashCommand::new(
                "/access",
                &user,
                "request bench 2h \"load benchmark\"",
                &slack.response_url(),
                &slack.trigger_id(),
            )
            .body();
            Prepared { user, body }
        })
        .collect()
}

/// What the server answered in time.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Ack {
    /// "Access request submitted for …": the request is stored.
    Submitted,
    /// A receipt (":inbox_tray: Got it — checking your request for *bench* …"): the command is
    /// stored and its outcome follows on the response_url, because the person's profile had to be
    /// read from Slack first (every command here comes from a new person). A correct answer; the
    /// approval message still comes from the job, counted on the fake Slack like any other.
    Received,
    /// The handler overran its ack budget (`SLACK_ACK_BUDGET_MS`, 2 s): Slack got a placeholder
    /// and the outcome goes to the response_url later. An answer, not an error, but a command
    /// the server did not keep up with.
    Deferred,
}

/// Signs at send time (Slack signs each request as it sends it; an HMAC is a few µs) and posts.
async fn send(http: &reqwest::Client, url: &str, c: &Prepared) -> Result<Ack, String> {
    let [(k1, v1), (k2, v2)] = slack::signed_headers(SIGNING_SECRET, &c.body);
    let r = http
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .header(k1, v1)
        .header(k2, v2)
        .body(c.body.clone())
        .send()
        .await
        .map_err(|e| chain(&e))?;
    let status = r.status().as_u16();
    let text = r.text().await.map_err(|e| chain(&e))?;
    match status {
        200 if text.contains("Access request submitted for") => Ok(Ack::Submitted),
        200 if text.contains(slack::RECEIPT_MARK)
            && text.contains("checking your request for *bench*") =>
        {
            Ok(Ack::Received)
        }
        200 if text.contains("Working on it") => Ok(Ack::Deferred),
        200 => Err(format!("200 with an unexpected reply: {text}")),
        _ => Err(format!("{status}: {text}")),
    }
}

/// An error with its sources: reqwest's own text ("error sending request") hides the cause.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

async fn wait_posts(slack: &FakeSlack, want: usize, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if slack.call_count("chat.postMessage") >= want {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until no Slack call arrived for 300 ms (at most 5 s): the last jobs are done.
async fn settle(slack: &FakeSlack) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = slack.call_count("*");
    let mut quiet_since = Instant::now();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = slack.call_count("*");
        if now != last {
            last = now;
            quiet_since = Instant::now();
        } else if quiet_since.elapsed() >= Duration::from_millis(300) {
            return;
        }
    }
}

fn count_by_method(slack: &FakeSlack) -> Vec<(String, usize)> {
    [
        "users.info",
        "chat.postMessage",
        "chat.update",
        "conversations.open",
        "response_url",
        "users.lookupByEmail",
        "auth.test",
    ]
    .iter()
    .map(|m| (m.to_string(), slack.call_count(m)))
    .filter(|(_, c)| *c > 0)
    .collect()
}

/// The server's `/metrics` page (empty if it cannot be read).
async fn metrics_page(http: &reqwest::Client, base: &str) -> String {
    match http.get(format!("{base}/metrics")).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// What the server's store has sent (`gatehouse_store_statements_total`,
/// `gatehouse_store_commits_total`, `gatehouse_store_round_trips_total`), read by the page
/// before its own queries.
struct StoreSent {
    statements: f64,
    commits: f64,
    round_trips: f64,
}

impl StoreSent {
    fn minus(&self, earlier: &StoreSent) -> StoreSent {
        StoreSent {
            statements: self.statements - earlier.statements,
            commits: self.commits - earlier.commits,
            round_trips: self.round_trips - earlier.round_trips,
        }
    }
}

fn store_sent(metrics: &str) -> StoreSent {
    let value = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or(f64::NAN)
    };
    StoreSent {
        statements: value("gatehouse_store_statements_total"),
        commits: value("gatehouse_store_commits_total"),
        round_trips: value("gatehouse_store_round_trips_total"),
    }
}

/// `gatehouse_jobs_total` per kind (all outcomes).
fn jobs_by_kind(metrics: &str) -> Vec<(String, f64)> {
    let mut out: Vec<(String, f64)> = vec![];
    for l in metrics
        .lines()
        .filter(|l| l.starts_with("gatehouse_jobs_total{"))
    {
        let kind = l
            .split("kind=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap_or("?")
            .to_string();
        let v: f64 = l
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        match out.iter_mut().find(|(k, _)| *k == kind) {
            Some(e) => e.1 += v,
            None => out.push((kind, v)),
        }
    }
    out
}

// ------------------------------------------------------------------------------------------------
// Reporting

fn row_json(backend: Backend, step: &Step, o: &Outcome) -> Value {
    let p = |v: &[f64], q| percentile(v, q);
    json!({
        "backend": backend.name(),
        "offered_rate": step.rate,
        "slack_delay_ms": step.slow_ms,
        "seconds": step.secs,
        "sent": o.sent,
        "acked": o.ok,
        "deferred": o.deferred,
        "receipts": o.received,
        "errors": o.errors,
        "error_samples": o.error_samples,
        "achieved_rate": o.sent as f64 / o.send_wall.as_secs_f64(),
        "ack_ms": {"p50": p(&o.ack_ms, 0.5), "p99": p(&o.ack_ms, 0.99), "p999": p(&o.ack_ms, 0.999),
                   "max": o.ack_ms.last().copied().unwrap_or(f64::NAN)},
        "generator_lag_ms": {"p50": p(&o.lag_ms, 0.5), "p99": p(&o.lag_ms, 0.99)},
        "approval_posted_ms": {"p50": p(&o.approval_ms, 0.5), "p99": p(&o.approval_ms, 0.99),
                               "max": o.approval_ms.last().copied().unwrap_or(f64::NAN)},
        "approvals_missing": o.approvals_missing,
        "jobs_drained": o.drained,
        "drain_wait_s": o.drain_wait.as_secs_f64(),
        "server_cpu_s": o.server_cpu,
        "server_cpu_ms_per_command": cpu_per_cmd(o.server_cpu, o),
        "server_idle_cpu_ms_per_s": o.idle_ms_per_s,
        "postgres_idle_cpu_ms_per_s": o.pg_idle_ms_per_s,
        "postgres_cpu_s": o.pg_cpu,
        "generator_and_fake_slack_cpu_ms_per_command": cpu_per_cmd(o.bench_cpu, o),
        "postgres_cpu_ms_per_command": o.pg_cpu.map(|c| cpu_per_cmd(c, o)),
        "rss_mib": o.rss_mib,
        "peak_rss_mib": o.hwm_mib,
        "slack_calls_per_command": o.slack_calls_per_cmd.iter().map(|(m, c)| (m.clone(), json!(c))).collect::<serde_json::Map<_, _>>(),
        "jobs_per_command": o.jobs.iter().map(|(m, c)| (m.clone(), json!(c))).collect::<serde_json::Map<_, _>>(),
        "store_statements_per_command": o.statements_per_cmd,
        "store_commits_per_command": o.commits_per_cmd,
        "store_round_trips_per_command": o.round_trips_per_cmd,
    })
}

fn cpu_per_cmd(cpu: f64, o: &Outcome) -> f64 {
    cpu * 1e3 / o.ok.max(1) as f64
}

fn print_header() {
    println!(
        "{:<9} {:>6} {:>5} {:>7} {:>6} {:>5} {:>8} {:>8} {:>8} {:>5} {:>8} {:>8} {:>7} {:>7} {:>7} {:>6} {:>5} {:>5} {:>5}",
        "backend",
        "rate/s",
        "slack",
        "sent",
        "errors",
        "defer",
        "ack p50",
        "ack p99",
        "p99.9",
        "lag99",
        "appr p50",
        "appr p99",
        "cpu/cmd",
        "pg/cmd",
        "gen/cmd",
        "RSS",
        "stmt",
        "txn",
        "rt"
    );
}

fn fmt_ms(v: f64) -> String {
    if v.is_nan() {
        "-".into()
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn print_row(backend: Backend, step: &Step, o: &Outcome) {
    let p = |v: &[f64], q| fmt_ms(percentile(v, q));
    println!(
        "{:<9} {:>6} {:>5} {:>7} {:>6} {:>5} {:>8} {:>8} {:>8} {:>5} {:>8} {:>8} {:>7} {:>7} {:>7} {:>6} {:>5} {:>5} {:>5}{}",
        backend.name(),
        step.rate,
        if step.slow_ms > 0 {
            format!("+{}ms", step.slow_ms)
        } else {
            "-".into()
        },
        o.sent,
        o.errors,
        o.deferred,
        p(&o.ack_ms, 0.5),
        p(&o.ack_ms, 0.99),
        p(&o.ack_ms, 0.999),
        p(&o.lag_ms, 0.99),
        p(&o.approval_ms, 0.5),
        p(&o.approval_ms, 0.99),
        format!("{:.2}", cpu_per_cmd(o.server_cpu, o)),
        o.pg_cpu
            .map_or("-".into(), |c| format!("{:.2}", cpu_per_cmd(c, o))),
        format!("{:.2}", cpu_per_cmd(o.bench_cpu, o)),
        format!("{:.0}M", o.hwm_mib),
        format!("{:.1}", o.statements_per_cmd),
        format!("{:.1}", o.commits_per_cmd),
        format!("{:.1}", o.round_trips_per_cmd),
        if o.drained {
            String::new()
        } else {
            format!(
                " (jobs not drained after {:.0}s)",
                o.drain_wait.as_secs_f64()
            )
        }
    );
}

fn sustained(o: &Outcome) -> bool {
    o.errors == 0
        && o.deferred == 0
        && o.approvals_missing == 0
        && percentile(&o.ack_ms, 0.99) <= SUSTAINED_P99.as_secs_f64() * 1e3
        && percentile(&o.approval_ms, 0.99) <= SUSTAINED_APPROVAL_P99.as_secs_f64() * 1e3
}

async fn run_backend(
    backend: Backend,
    pg: Option<&str>,
    rates: &[u32],
    slow_rate: u32,
    secs: f64,
    tick: f64,
    out_dir: &Path,
) {
    let mut rows = vec![];
    let mut best: Option<u32> = None;
    for &rate in rates {
        let step = Step {
            rate,
            slow_ms: 0,
            secs,
        };
        let o = run_step(backend, pg, &step, tick).await;
        print_row(backend, &step, &o);
        for e in &o.error_samples {
            println!("          error: {e}");
        }
        let ok = sustained(&o);
        if ok {
            best = Some(rate);
        }
        rows.push(row_json(backend, &step, &o));
        // Keep going through 500/s (the issue's reference point), then stop at the first rate
        // that is not sustained: higher ones only take longer to fail.
        if rate >= 500 && !ok {
            break;
        }
    }
    let mut slow_rows = vec![];
    if slow_rate > 0 {
        let step = Step {
            rate: slow_rate,
            slow_ms: 50,
            secs,
        };
        let o = run_step(backend, pg, &step, tick).await;
        print_row(backend, &step, &o);
        slow_rows.push(row_json(backend, &step, &o));
    }
    println!(
        "{:<9} highest offered rate with ack p99 <= {} ms, approvals posted p99 <= {} ms and no errors: {}",
        backend.name(),
        SUSTAINED_P99.as_millis(),
        SUSTAINED_APPROVAL_P99.as_millis(),
        best.map_or(format!("none (below {}/s)", rates[0]), |b| format!("{b}/s"))
    );
    let doc = json!({
        "backend": backend.name(),
        "machine": machine(),
        "seconds_per_rate": secs,
        "highest_sustained_rate": best,
        "sustained_means": format!(
            "ack p99 <= {} ms, approval posted p99 <= {} ms, no errors, every approval posted",
            SUSTAINED_P99.as_millis(),
            SUSTAINED_APPROVAL_P99.as_millis()
        ),
        "rates": rows,
        "slack_slowed_50ms": slow_rows,
    });
    let path = out_dir.join(format!("load-{}.json", backend.name()));
    std::fs::write(&path, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
    println!("{:<9} JSON: {}", backend.name(), path.display());
}

fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_string());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "model": model,
        "loadavg_at_end": load.trim(),
    })
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument that is not ours means another bench was
    // asked for.
    if std::env::args()
        .skip(1)
        .any(|a| !a.starts_with("--") && a != "load")
    {
        return;
    }
    let secs: f64 = env_or("BENCH_LOAD_SECS", 5.0);
    let rates: Vec<u32> = std::env::var("BENCH_LOAD_RATES")
        .unwrap_or_else(|_| "100,200,500,1000,2000,3000,4000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .filter(|r| *r > 0)
        .collect();
    let slow_rate: u32 = env_or("BENCH_LOAD_SLOW_RATE", 200);
    let backends =
        std::env::var("BENCH_LOAD_BACKENDS").unwrap_or_else(|_| "sqlite,postgres".into());
    let pg = std::env::var("BENCH_DATABASE_URL")
        .or_else(|_| std::env::var("TEST_DATABASE_URL"))
        .ok()
        .filter(|s| !s.is_empty());
    let tick = clock_tick();
    let out_dir = target_dir().join("bench");
    std::fs::create_dir_all(&out_dir).unwrap();
    println!("load: server {}", server_binary().display());

    // One small runtime for the generator and the fake Slack: they share the machine with the
    // server under test, so they must stay cheap.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "load: slash commands, open loop, {secs} s per rate, fresh server and database per rate; \
         ack latency from the intended send time; cpu/cmd = server utime+stime per command \
         including its jobs (ms); defer = acks that overran the 2 s ack budget \
         (\"Working on it\"); lag99 = generator lateness p99 (ms); appr = intended send → \
         approval message at Slack (ms); pg/cmd = the server's PostgreSQL backends per command \
         (ms); gen/cmd = this process (generator + fake Slack) per command (ms); RSS = peak; \
         stmt, txn, rt = statements, commits and round trips the server's store sent per command, its jobs \
         included"
    );
    print_header();
    rt.block_on(async {
        for b in backends.split(',').map(str::trim) {
            match b {
                "sqlite" => {
                    run_backend(
                        Backend::Sqlite,
                        None,
                        &rates,
                        slow_rate,
                        secs,
                        tick,
                        &out_dir,
                    )
                    .await
                }
                "postgres" => match &pg {
                    Some(url) => {
                        run_backend(
                            Backend::Postgres,
                            Some(url),
                            &rates,
                            slow_rate,
                            secs,
                            tick,
                            &out_dir,
                        )
                        .await
                    }
                    None => println!(
                        "postgres  skipped: set BENCH_DATABASE_URL or TEST_DATABASE_URL \
                         (e.g. postgres://postgres@127.0.0.1:5432/test)"
                    ),
                },
                "" => {}
                other => println!("unknown backend {other:?} in BENCH_LOAD_BACKENDS"),
            }
        }
    });
}
