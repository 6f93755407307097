//! The table of issue 13's targets, read from what the other benchmarks of `make bench` wrote
//! under `target/bench/` (`load-*.json` by the load benchmark, `scale-*.json` by
//! `gatehouse-runtime`'s scale benchmark). `make bench` runs it last, with `BENCH_SUMMARY=1`;
//! inside `cargo bench --workspace --bench '*'` (where it may run before the others) it does
//! nothing. A figure no benchmark wrote (PostgreSQL without `TEST_DATABASE_URL`, say) is shown
//! as "not measured", never guessed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use serde_json::Value;

fn main() {
    if std::env::var_os("BENCH_SUMMARY").is_none() {
        return;
    }
    let dir = target_dir().join("bench");
    let load = |b: &str| read(&dir.join(format!("load-{b}.json")));
    let scale = |b: &str| read(&dir.join(format!("scale-{b}.json")));
    let (ls, lp) = (load("sqlite"), load("postgres"));
    let (ss, sp) = (scale("sqlite"), scale("postgres"));

    let mut rows: Vec<Row> = Vec::new();
    for (name, l) in [("SQLite", &ls), ("PostgreSQL", &lp)] {
        let step = l.as_ref().and_then(|l| rate_step(l, "rates", 200.0));
        let server = step.and_then(|s| num(s, &["server_cpu_ms_per_command"]));
        let pg = step.and_then(|s| num(s, &["postgres_cpu_ms_per_command"]));
        let target = if name == "SQLite" { 0.4 } else { 0.5 };
        let mut measured = fmt_ms(server);
        if let Some(pg) = pg {
            measured.push_str(&format!(" (+ {pg:.2} ms in PostgreSQL)"));
        }
        rows.push(Row::new(
            format!("server CPU per `request` command incl. its jobs, 200/s, {name}"),
            measured,
            format!("≤ {target} ms"),
            server.map(|v| v <= target),
        ));
    }
    for (name, l) in [("SQLite", &ls), ("PostgreSQL", &lp)] {
        let step = l.as_ref().and_then(|l| rate_step(l, "rates", 200.0));
        let stmts = step.and_then(|s| num(s, &["store_statements_per_command"]));
        let txns = step.and_then(|s| num(s, &["store_commits_per_command"]));
        let fmt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
        rows.push(Row::new(
            format!(
                "statements / transactions per `request` command incl. its jobs, 200/s, {name}"
            ),
            format!("{} / {}", fmt(stmts), fmt(txns)),
            "≤ 8 / ≤ 3".into(),
            stmts.zip(txns).map(|(s, t)| s <= 8.0 && t <= 3.0),
        ));
    }
    let p99_500 = ls
        .as_ref()
        .and_then(|l| rate_step(l, "rates", 500.0))
        .and_then(|s| num(s, &["ack_ms", "p99"]));
    rows.push(Row::new(
        "ack p99 at 500/s, SQLite".into(),
        fmt_ms(p99_500),
        "≤ 5 ms".into(),
        p99_500.map(|v| v <= 5.0),
    ));
    for (name, l) in [("SQLite", &ls), ("PostgreSQL", &lp)] {
        let best = l.as_ref().map(|l| l["highest_sustained_rate"].as_f64());
        let measured = match best {
            None => "not measured".to_string(),
            Some(None) => "none".to_string(),
            Some(Some(r)) => format!("{r:.0}/s"),
        };
        rows.push(Row::new(
            format!("highest rate with ack p99 ≤ 50 ms (approvals p99 ≤ 1 s), {name}"),
            measured,
            "≥ 3,000/s".into(),
            best.map(|b| b.is_some_and(|r| r >= 3000.0)),
        ));
    }
    for (name, l) in [("SQLite", &ls), ("PostgreSQL", &lp)] {
        let step = l
            .as_ref()
            .and_then(|l| rate_step(l, "slack_slowed_50ms", 200.0));
        let ack = step.and_then(|s| num(s, &["ack_ms", "p99"]));
        let appr = step.and_then(|s| num(s, &["approval_posted_ms", "p99"]));
        rows.push(Row::new(
            format!("ack p99 / approval posted p99 at 200/s, Slack slowed by 50 ms, {name}"),
            format!("{} / {}", fmt_ms(ack), fmt_ms(appr)),
            "≤ 5 ms / ≤ 1,000 ms".into(),
            ack.zip(appr).map(|(a, p)| a <= 5.0 && p <= 1000.0),
        ));
    }
    for (name, s) in [("SQLite", &ss), ("PostgreSQL", &sp)] {
        let s = s.as_ref();
        let lag = s.and_then(|s| num(s, &["expiries", "lag_s", "p99"]));
        let n = s.and_then(|s| num(s, &["expiries", "count"]));
        let revoked = s.and_then(|s| num(s, &["expiries", "revoked"]));
        let label = match n {
            Some(n) => format!("revocation lag p99, {n:.0} expiring in a minute, {name}"),
            None => format!("revocation lag p99, expiries in a minute, {name}"),
        };
        let all = n.zip(revoked).is_some_and(|(n, r)| r >= n);
        rows.push(Row::new(
            label,
            lag.map_or("not measured".into(), |v| format!("{v:.2} s")),
            "≤ 1 s, all revoked".into(),
            lag.map(|v| v <= 1.0 && all),
        ));
        let drain = s.and_then(|s| num(s, &["export_events_per_s"]));
        rows.push(Row::new(
            format!("export drain, {name}"),
            drain.map_or("not measured".into(), |v| format!("{v:.0} events/s")),
            "≥ 10,000 events/s".into(),
            drain.map(|v| v >= 10_000.0),
        ));
        let rss = s.and_then(|s| num(s, &["server_rss_mb", "peak"]));
        let st = s.and_then(|s| num(s, &["status_ms", "p99"]));
        let api = s.and_then(|s| num(s, &["api_grants_ms", "p99"]));
        let size = s
            .and_then(|s| num(s, &["requests"]).zip(num(s, &["active_grants"])))
            .map_or(String::new(), |(r, g)| {
                format!(" ({r:.0} requests, {g:.0} active)")
            });
        rows.push(Row::new(
            format!("server peak RSS{size}, {name}"),
            rss.map_or("not measured".into(), |v| format!("{v:.1} MB")),
            "≤ 200 MB".into(),
            rss.map(|v| v <= 200.0),
        ));
        rows.push(Row::new(
            format!("`/access status` / `GET /api/grants?status=active&limit=50` p99, {name}"),
            format!("{} / {}", fmt_ms(st), fmt_ms(api)),
            "≤ 10 ms".into(),
            st.zip(api).map(|(a, b)| a <= 10.0 && b <= 10.0),
        ));
    }
    print_table(&rows);
}

/// One line of the table: what, the figure measured, the target, and whether it is met
/// (`None`: not measured).
struct Row {
    figure: String,
    measured: String,
    target: String,
    met: Option<bool>,
}

impl Row {
    fn new(figure: String, measured: String, target: String, met: Option<bool>) -> Self {
        Row {
            figure,
            measured,
            target,
            met,
        }
    }
}

fn print_table(rows: &[Row]) {
    let w0 = rows
        .iter()
        .map(|r| r.figure.chars().count())
        .max()
        .unwrap_or(6);
    let w1 = rows
        .iter()
        .map(|r| r.measured.chars().count())
        .max()
        .unwrap_or(8)
        .max(8);
    let w2 = rows
        .iter()
        .map(|r| r.target.chars().count())
        .max()
        .unwrap_or(6);
    println!();
    println!("issue 13 targets (from target/bench/*.json of this run; docs/performance.md):");
    println!(
        "{:<w0$}  {:<w1$}  {:<w2$}  met",
        "figure", "measured", "target"
    );
    for r in rows {
        let met = match r.met {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "-",
        };
        println!(
            "{:<w0$}  {:<w1$}  {:<w2$}  {met}",
            r.figure, r.measured, r.target
        );
    }
}

fn fmt_ms(v: Option<f64>) -> String {
    v.map_or("not measured".into(), |v| format!("{v:.2} ms"))
}

/// The step of `list` (`rates` or `slack_slowed_50ms`) offered at `rate`.
fn rate_step<'a>(load: &'a Value, list: &str, rate: f64) -> Option<&'a Value> {
    load[list]
        .as_array()?
        .iter()
        .find(|s| s["offered_rate"].as_f64() == Some(rate))
}

fn num(v: &Value, path: &[&str]) -> Option<f64> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_f64()
}

fn read(path: &Path) -> Option<Value> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

fn target_dir() -> PathBuf {
    // target/release/deps/summary-<hash>
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).unwrap().to_path_buf()
}
