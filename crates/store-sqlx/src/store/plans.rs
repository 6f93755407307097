//! The hot reads at scale (issue 13) are answered from indexes on both databases: no full scan
//! of requests, grants or jobs, and the lists come out in index order (no sort of every
//! matching row before the LIMIT). Plans, not timings, so nothing here can flake.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use access_core::grant::GrantStatus;
use access_core::ids::GrantId;
use access_core::ports::{GrantFilter, RequestFilter};
use access_core::request::RequestStatus;
use access_core::subject::SubjectKey;

use super::jobs::{NEXT_JOB_SQL, job_stats_sql};
use super::requests::{grants_sql, requests_sql};
use crate::SqlStore;
use crate::db::{Backend, Sql};

/// The plan's lines. PostgreSQL plans with sequential scans and sorts priced out, so an
/// empty test table is planned the way a large one is: a `Seq Scan` or `Sort` left in the
/// plan means no index can serve the query.
async fn plan(store: &SqlStore, sql: &Sql) -> Vec<String> {
    match store.backend() {
        Backend::Sqlite => {
            let q = Sql::with(format!("EXPLAIN QUERY PLAN {}", sql.text), sql.args.clone());
            let rows = store.db.fetch_all(&q).await.unwrap();
            rows.iter().map(|r| r.string("detail").unwrap()).collect()
        }
        Backend::Postgres => {
            let mut tx = store.db.begin().await.unwrap();
            for set in [
                "SET LOCAL enable_seqscan = off",
                "SET LOCAL enable_sort = off",
            ] {
                tx.conn().execute(&Sql::new(set)).await.unwrap();
            }
            let q = Sql::with(format!("EXPLAIN {}", sql.text), sql.args.clone());
            let rows = tx.conn().fetch_all(&q).await.unwrap();
            tx.rollback().await.unwrap();
            rows.iter()
                .map(|r| r.string("QUERY PLAN").unwrap())
                .collect()
        }
    }
}

/// The partial indexes of live jobs (migration 0019): they hold only pending, running or dead
/// jobs, so reading one whole (SQLite's `SCAN jobs USING INDEX jobs_due`) costs what the live
/// queue holds, not the table.
const LIVE_JOB_INDEXES: [&str; 5] = [
    "jobs_due",
    "jobs_due_kind",
    "jobs_lease",
    "jobs_order",
    "jobs_dead",
];

fn full_scan(line: &str) -> bool {
    let line = line.trim_start();
    let live_jobs = LIVE_JOB_INDEXES.iter().any(|i| {
        line == format!("SCAN jobs USING INDEX {i}")
            || line == format!("SCAN jobs USING COVERING INDEX {i}")
    });
    !live_jobs
        && ["SCAN requests", "SCAN grants", "SCAN jobs", "Seq Scan"]
            .iter()
            .any(|s| line.contains(s))
}

fn sorts(line: &str) -> bool {
    line.contains("TEMP B-TREE FOR ORDER BY")
        || line.trim_start().starts_with("Sort")
        || line.contains("-> Sort")
        || line.contains("Incremental Sort")
}

fn subject() -> SubjectKey {
    SubjectKey {
        team_id: "T1".into(),
        user_id: "U1".into(),
    }
}

/// JIT compilation cost ~0.85 s per job claim once the queue was large (see
/// `connect_with`): the store's PostgreSQL connections run without it.
#[tokio::test]
async fn postgres_connections_run_without_jit() {
    for db in testkit::db::backends().await {
        if db.kind != "postgres" {
            continue;
        }
        let store = SqlStore::connect(&db.url).await.unwrap();
        let row = store
            .db
            .fetch_optional(&Sql::new("SELECT current_setting('jit') AS jit"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.string("jit").unwrap(), "off");
        // The URL's own options (the test schema's search_path) still apply.
        let row = store
            .db
            .fetch_optional(&Sql::new("SELECT current_schema() AS s"))
            .await
            .unwrap()
            .unwrap();
        assert!(row.string("s").unwrap().starts_with("gh_test_"));
        store.close().await;
    }
}

/// The value of `PRAGMA name` on a connection of a store opened like the server's, for every
/// SQLite backend under test.
async fn sqlite_pragma(name: &str) -> Vec<i64> {
    let mut values = Vec::new();
    for db in testkit::db::backends().await {
        if db.kind != "sqlite" {
            continue;
        }
        let store = SqlStore::connect(&db.url).await.unwrap();
        let row = store
            .db
            .fetch_optional(&Sql::new(format!("PRAGMA {name}")))
            .await
            .unwrap()
            .unwrap();
        values.push(row.i64(name).unwrap());
        store.close().await;
    }
    values
}

/// SQLite connections read through a memory map (`mmap_size`, see `connect_with`): without it
/// every connection copies the pages another connection's commit invalidated with `pread`.
#[tokio::test]
async fn sqlite_connections_read_through_a_memory_map() {
    for value in sqlite_pragma("mmap_size").await {
        assert_eq!(value, 256 * 1024 * 1024);
    }
}

#[tokio::test]
async fn hot_reads_use_indexes_on_both_backends() {
    for db in testkit::db::backends().await {
        let store = SqlStore::connect(&db.url).await.unwrap();
        let active = GrantFilter {
            status: Some(GrantStatus::Active),
            limit: Some(50),
            ..Default::default()
        };
        let next_page = GrantFilter {
            before: Some(GrantId::new()),
            ..active.clone()
        };
        let pending = RequestFilter {
            status: Some(RequestStatus::Pending),
            limit: Some(50),
            ..Default::default()
        };
        // `/access status`: live grants and pending requests of one person.
        let live_of = GrantFilter {
            live_only: true,
            subject: Some(subject()),
            ..Default::default()
        };
        let pending_of = RequestFilter {
            status: Some(RequestStatus::Pending),
            subject: Some(subject()),
            ..Default::default()
        };
        let lists = [
            (
                "GET /api/grants?status=active",
                grants_sql(&active),
                "grants_status_created",
            ),
            (
                "the next page of it",
                grants_sql(&next_page),
                "grants_status_created",
            ),
            (
                "GET /api/requests?status=pending",
                requests_sql(&pending),
                "requests_status",
            ),
        ];
        for (what, sql, index) in &lists {
            let p = plan(&store, sql).await;
            assert!(
                p.iter().any(|l| l.contains(index)),
                "{}: {what} does not use {index}: {p:#?}",
                db.kind
            );
            assert!(
                !p.iter().any(|l| full_scan(l) || sorts(l)),
                "{}: {what} scans or sorts: {p:#?}",
                db.kind
            );
        }
        for (what, sql) in [
            ("live grants of one person", grants_sql(&live_of)),
            ("pending requests of one person", requests_sql(&pending_of)),
            ("the scheduler's next due time", Sql::new(NEXT_JOB_SQL)),
        ] {
            let p = plan(&store, &sql).await;
            assert!(
                !p.iter().any(|l| full_scan(l)),
                "{}: {what} scans a whole table: {p:#?}",
                db.kind
            );
        }
        store.close().await;
    }
}

/// A job claim reads the due jobs of its scope in index order and stops at its limit: no
/// full scan of jobs and no sort of every due job (20,000 due exports made a claim of 500 cost
/// 74 ms on SQLite and 42 ms on PostgreSQL when it did, docs/performance.md "Job claim").
#[tokio::test]
async fn job_claims_read_due_jobs_in_index_order() {
    use access_core::ports::ClaimScope;

    use super::jobs::{ClaimBranch, scope_sql};

    for db in testkit::db::backends().await {
        let store = SqlStore::connect(&db.url).await.unwrap();
        let clock = store.lease_clock(5);
        for (what, scope, index) in [
            (
                "the export lane",
                ClaimScope::Only("export_audit"),
                "jobs_due_kind",
            ),
            (
                "the other lanes",
                ClaimScope::AllBut(&["export_audit"]),
                "jobs_due",
            ),
        ] {
            let scope_text = scope_sql(scope).unwrap();
            // The pending branch alone, its parameters written in: the due time and the limit.
            let due = SqlStore::claim_branch_sql(&scope_text, ClaimBranch::Due, &clock)
                .replace("$3", "1000000")
                .replace("$4", "500");
            let p = plan(&store, &Sql::new(due)).await;
            assert!(
                p.iter().any(|l| l.contains(index)),
                "{}: {what}'s due jobs are not read from {index}: {p:#?}",
                db.kind
            );
            assert!(
                !p.iter().any(|l| full_scan(l) || sorts(l)),
                "{}: {what}'s due jobs are scanned or sorted: {p:#?}",
                db.kind
            );
        }
        // The whole claim: the union of the limited branches is sorted (at most the limit per
        // branch), nothing reads the whole table; several kinds are read one by one.
        for scope in [
            ClaimScope::Only("export_audit"),
            ClaimScope::AllBut(&["export_audit", "inbox"]),
            ClaimScope::OneOf(&["expire", "revoke"]),
        ] {
            let claim = store
                .claim_sql(
                    scope,
                    "token",
                    chrono::Utc::now(),
                    500,
                    chrono::Duration::minutes(5),
                )
                .unwrap();
            let p = plan(&store, &claim).await;
            assert!(
                !p.iter().any(|l| full_scan(l)),
                "{}: the claim of {scope:?} scans a whole table: {p:#?}",
                db.kind
            );
            // Several kinds, or on PostgreSQL every kind but a few, are read one stored kind at a
            // time (and, for `AllBut`, the ranges between the names), never by walking past the
            // due jobs of other kinds (SQLite tests the kind on `jobs_due`'s entries instead).
            let kinds = match scope {
                ClaimScope::OneOf(kinds) => kinds.len(),
                ClaimScope::AllBut(excluded) if db.kind == "postgres" => {
                    access_core::jobs::JobKind::STORED_NAMES.len() - excluded.len()
                }
                _ => 0,
            };
            let per_kind = p.iter().filter(|l| l.contains("jobs_due_kind")).count();
            assert!(
                per_kind >= kinds,
                "{}: the claim of {scope:?} does not read each kind from jobs_due_kind: {p:#?}",
                db.kind
            );
        }
        store.close().await;
    }
}

/// SQLite keeps temporary B-trees and statement journals in memory: with the default it created,
/// wrote and unlinked a file in /var/tmp for some of the job queue's statements under load
/// (docs/performance.md, "Seventh session").
#[tokio::test]
async fn sqlite_connections_keep_temporary_data_in_memory() {
    // 2 is MEMORY (0 DEFAULT, 1 FILE).
    for value in sqlite_pragma("temp_store").await {
        assert_eq!(value, 2);
    }
}

/// The job queue's readers of live jobs (the claim's branches, the order check, the scheduler's
/// next due time, the gauges, a listing by state) read the partial indexes of migration 0019,
/// which hold only pending, running or dead jobs: none of them walks the finished jobs, and a
/// finished job costs those indexes nothing.
#[tokio::test]
async fn live_job_reads_use_the_partial_indexes() {
    use access_core::jobs::JobStatus;
    use access_core::ports::{ClaimScope, JobFilter};

    use super::jobs::{ClaimBranch, scope_sql};

    for db in testkit::db::backends().await {
        let store = SqlStore::connect(&db.url).await.unwrap();
        let clock = store.lease_clock(5);
        let all = scope_sql(ClaimScope::AllBut(&[])).unwrap();
        let lapsed = SqlStore::claim_branch_sql(&all, ClaimBranch::Lapsed, &clock)
            .replace("$3", "1000000")
            .replace("$4", "500");
        let pending_list = super::jobs::jobs_sql(&JobFilter {
            status: Some(JobStatus::Pending),
            limit: Some(50),
            ..Default::default()
        });
        let reads = [
            (
                "the lapsed-lease branch of a claim",
                Sql::new(lapsed),
                vec!["jobs_lease", "jobs_order"],
            ),
            (
                "the job gauges",
                job_stats_sql(chrono::Utc::now(), None),
                vec!["jobs_due", "jobs_lease", "jobs_dead"],
            ),
            (
                "the job gauges of one kind",
                job_stats_sql(chrono::Utc::now(), Some("notify")),
                vec![],
            ),
            (
                "the scheduler's next due time",
                Sql::new(NEXT_JOB_SQL),
                vec!["jobs_due", "jobs_lease", "jobs_order"],
            ),
            (
                "GET /api/jobs?status=pending",
                pending_list,
                vec!["jobs_due"],
            ),
            (
                "the purge of finished jobs",
                super::jobs::purge_done_sql(chrono::Utc::now(), 1_000),
                vec!["jobs_kind"],
            ),
        ];
        for (what, sql, indexes) in &reads {
            let p = plan(&store, sql).await;
            if what.contains("purge") {
                // The age is part of the index range (migration 0020), not a filter on every
                // finished job of a kind.
                assert!(
                    p.iter().any(|l| l.contains("updated_at<")
                        || (l.contains("Index Cond") && l.contains("updated_at <"))),
                    "{}: {what} does not range over updated_at in jobs_kind: {p:#?}",
                    db.kind
                );
            }
            for index in indexes {
                assert!(
                    p.iter().any(|l| l.contains(index)),
                    "{}: {what} does not use {index}: {p:#?}",
                    db.kind
                );
            }
            assert!(
                !p.iter().any(|l| full_scan(l)),
                "{}: {what} scans the jobs table: {p:#?}",
                db.kind
            );
        }
        store.close().await;
    }
}
