//! The SQLite floor under sqlx 0.8: CPU of the bare statements the store is made of, without any
//! Gatehouse code (`make bench`; docs/performance.md). Whatever a slash command costs, it cannot
//! cost less than the statements it runs, so this says how much of the load benchmark's CPU per
//! command is sqlx + SQLite and how much is ours.
//!
//! Set-up as the store's: WAL, `synchronous = NORMAL`, a file database, `BEGIN IMMEDIATE`, a
//! tokio runtime with 2 workers. CPU is the whole process's utime + stime (sqlx runs SQLite on a
//! worker thread per connection, so wall time alone would hide half of it). `FLOOR_BENCH_ITERS`
//! sets the iterations per case (default 3,000); each case runs three times and the median is
//! printed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::str::FromStr;
use std::time::{Duration, Instant};

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Executor, SqlitePool};

/// utime + stime of this process, in seconds.
fn process_cpu(tick: f64) -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let Some(close) = stat.rfind(')') else {
        return f64::NAN;
    };
    let f: Vec<&str> = stat[close + 2..].split_whitespace().collect();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (t(11) + t(12)) / tick
}

fn clock_tick() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs `f` `iters` times, three rounds; returns the median (CPU µs, wall µs) per `per` units.
async fn measure<F, Fut>(tick: f64, iters: usize, per: usize, mut f: F) -> (f64, f64)
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut cpu = vec![];
    let mut wall = vec![];
    let mut k = 0;
    for _ in 0..3 {
        let c0 = process_cpu(tick);
        let t0 = Instant::now();
        for _ in 0..iters {
            f(k).await;
            k += 1;
        }
        let units = (iters * per) as f64;
        wall.push(t0.elapsed().as_secs_f64() * 1e6 / units);
        cpu.push((process_cpu(tick) - c0) * 1e6 / units);
    }
    (median(cpu), median(wall))
}

async fn pool(path: &std::path::Path) -> SqlitePool {
    let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
        .unwrap()
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(5));
    SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(opts)
        .await
        .unwrap()
}

fn main() {
    let iters: usize = std::env::var("FLOOR_BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let tick = clock_tick();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let dir = tempfile_dir();
        let p = pool(&dir.join("floor.db")).await;
        p.execute(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, k TEXT NOT NULL UNIQUE, a TEXT NOT NULL, \
             b INTEGER NOT NULL, c TEXT)",
        )
        .await
        .unwrap();
        let row = |k: String| (k, "x".repeat(120), 7i64, "{\"some\":\"json\"}".to_string());

        println!("sqlx 0.8 SQLite floor (WAL, synchronous=NORMAL, 2 tokio workers; {iters} iterations x3, median; CPU = whole process)");
        println!("{:<52} {:>10} {:>10}", "case", "CPU µs", "wall µs");

        // 1. One statement inside an open transaction (per statement).
        let per_tx = 100;
        let (c, w) = measure(tick, iters / per_tx * 10, per_tx, |k| {
            let p = p.clone();
            async move {
                let mut tx = p.begin_with("BEGIN IMMEDIATE").await.unwrap();
                for j in 0..per_tx {
                    let (key, a, b, cc) = row(format!("s{k}-{j}"));
                    sqlx::query("INSERT INTO t (k, a, b, c) VALUES (?, ?, ?, ?)")
                        .bind(key)
                        .bind(a)
                        .bind(b)
                        .bind(cc)
                        .execute(&mut *tx)
                        .await
                        .unwrap();
                }
                tx.commit().await.unwrap();
            }
        })
        .await;
        println!("{:<52} {c:>10.1} {w:>10.1}", "insert inside a transaction (per statement)");

        // 2. A point read through the pool (acquire, one query, release).
        let n_rows: i64 = sqlx::query_scalar("SELECT count(*) FROM t")
            .fetch_one(&p)
            .await
            .unwrap();
        let (c, w) = measure(tick, iters, 1, |k| {
            let p = p.clone();
            async move {
                let id = (k as i64 % n_rows.max(1)) + 1;
                let _: Option<(String, i64)> =
                    sqlx::query_as("SELECT a, b FROM t WHERE id = ?")
                        .bind(id)
                        .fetch_optional(&p)
                        .await
                        .unwrap();
            }
        })
        .await;
        println!("{:<52} {c:>10.1} {w:>10.1}", "point read through the pool");

        // 3. A transaction holding one multi-row insert (4 rows).
        let (c, w) = measure(tick, iters, 1, |k| {
            let p = p.clone();
            async move {
                let mut tx = p.begin_with("BEGIN IMMEDIATE").await.unwrap();
                let mut q = sqlx::QueryBuilder::new("INSERT INTO t (k, a, b, c) ");
                q.push_values(0..4, |mut b, j| {
                    let (key, a, bb, cc) = row(format!("m{k}-{j}"));
                    b.push_bind(key).push_bind(a).push_bind(bb).push_bind(cc);
                });
                q.build().execute(&mut *tx).await.unwrap();
                tx.commit().await.unwrap();
            }
        })
        .await;
        println!("{:<52} {c:>10.1} {w:>10.1}", "transaction: one 4-row insert, commit");

        // 4. A transaction of four single-row inserts.
        let (c, w) = measure(tick, iters, 1, |k| {
            let p = p.clone();
            async move {
                let mut tx = p.begin_with("BEGIN IMMEDIATE").await.unwrap();
                for j in 0..4 {
                    let (key, a, b, cc) = row(format!("f{k}-{j}"));
                    sqlx::query("INSERT INTO t (k, a, b, c) VALUES (?, ?, ?, ?)")
                        .bind(key)
                        .bind(a)
                        .bind(b)
                        .bind(cc)
                        .execute(&mut *tx)
                        .await
                        .unwrap();
                }
                tx.commit().await.unwrap();
            }
        })
        .await;
        println!("{:<52} {c:>10.1} {w:>10.1}", "transaction: four inserts, commit");

        // 5. An empty transaction (BEGIN IMMEDIATE + COMMIT): the fixed cost of a transaction.
        let (c, w) = measure(tick, iters, 1, |_| {
            let p = p.clone();
            async move {
                let tx = p.begin_with("BEGIN IMMEDIATE").await.unwrap();
                tx.commit().await.unwrap();
            }
        })
        .await;
        println!("{:<52} {c:>10.1} {w:>10.1}", "empty transaction (BEGIN IMMEDIATE, COMMIT)");

        // 6. The same point read on one held connection (no pool hand-off).
        let mut conn = p.acquire().await.unwrap();
        let c0 = process_cpu(tick);
        let t0 = Instant::now();
        for k in 0..iters {
            let id = (k as i64 % n_rows.max(1)) + 1;
            let _: Option<(String, i64)> = sqlx::query_as("SELECT a, b FROM t WHERE id = ?")
                .bind(id)
                .fetch_optional(&mut *conn)
                .await
                .unwrap();
        }
        let c = (process_cpu(tick) - c0) * 1e6 / iters as f64;
        let w = t0.elapsed().as_secs_f64() * 1e6 / iters as f64;
        println!("{:<52} {c:>10.1} {w:>10.1}", "point read on a held connection (one round)");
        drop(conn);
        p.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    });
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("gatehouse-sqlite-floor-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}
