//! Console list pages at depth (`make bench`): with `CONSOLE_BENCH_GRANTS` grants and requests
//! (default 100,000) on SQLite — or PostgreSQL when `TEST_DATABASE_URL` is set — the first page
//! and a page near the end must cost the same (keyset paging, no OFFSET). Prints medians of 21
//! runs per query.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use access_core::duration::AccessDuration;
use access_core::grant::{Grant, GrantStatus};
use access_core::ids::{GrantId, RequestId, ResourceId};
use access_core::ports::{
    ChangeSet, GrantWrite, PageCursor, PageQuery, RequestStore, RequestWrite,
};
use access_core::request::{AccessRequest, RequestKind, RequestStatus};
use access_core::resource::Justification;
use access_core::subject::Subject;
use chrono::{DateTime, Utc};
use store_sqlx::SqlStore;

fn rows(i: usize, base: DateTime<Utc>) -> (AccessRequest, Grant) {
    let at = base + chrono::Duration::seconds(i as i64);
    let subject = Subject {
        team_id: format!("T{}", i % 3),
        user_id: format!("U{i:06}"),
        email: None,
        name: "Person".into(),
    };
    let resource = ResourceId::parse(["db", "vpn", "gcp"][i % 3]).unwrap();
    let r = AccessRequest {
        id: RequestId::new(),
        subject: subject.clone(),
        resource: resource.clone(),
        kind: RequestKind::New,
        duration: AccessDuration::from_secs(3600).unwrap(),
        justification: Justification::parse("benchmark row").unwrap(),
        status: if i % 50 == 0 {
            RequestStatus::Pending
        } else {
            RequestStatus::Expired
        },
        created_at: at,
        updated_at: at,
        pending_until: None,
        grant_id: None,
        decided_by: None,
        failure: None,
        version: 0,
    };
    let active = i % 10 == 0;
    let g = Grant {
        id: GrantId::new(),
        subject,
        resource,
        status: if i % 10 == 0 {
            GrantStatus::Active
        } else {
            GrantStatus::Expired
        },
        provider_handle: serde_json::json!({}),
        created_at: at,
        granted_at: Some(at),
        expires_at: at + chrono::Duration::hours(1),
        ended_at: (!active).then(|| at + chrono::Duration::hours(1)),
        request_id: r.id,
        revoked_by: None,
        version: 0,
        provider_intent: serde_json::Value::Null,
        takeback_pending: false,
    };
    (r, g)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let n: usize = std::env::var("CONSOLE_BENCH_GRANTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        // Its own SQLite file, or its own PostgreSQL schema (dropped at the end), never the
        // shared database's default schema.
        let db = testkit::db::backends().await.pop().unwrap();
        let (url, backend) = (db.url.clone(), db.kind);
        let store = SqlStore::connect(&url).await.unwrap();
        let base = Utc::now() - chrono::Duration::days(30);
        let mut left = n;
        let mut i = 0;
        let mut deep = None;
        while left > 0 {
            let k = left.min(2000);
            let (requests, grants): (Vec<_>, Vec<_>) = (i..i + k).map(|j| rows(j, base)).unzip();
            if i == 0 {
                // Near the end of a newest-first walk: the oldest rows.
                let g: &Grant = &grants[60];
                deep = Some(PageCursor { created_at: g.created_at, id: g.id.to_string() });
            }
            store
                .commit(ChangeSet {
                    requests: requests.into_iter().map(RequestWrite::Insert).collect(),
                    grants: grants.into_iter().map(GrantWrite::Insert).collect(),
                    ..Default::default()
                })
                .await
                .unwrap();
            left -= k;
            i += k;
        }
        let deep = deep.unwrap();
        println!("console pages: {n} grants and requests on {backend} (medians of 21 runs, 50 rows a page)");
        macro_rules! time {
            ($label:expr, $e:expr) => {{
                let mut v = Vec::new();
                let mut rows = 0;
                for _ in 0..21 {
                    let t = Instant::now();
                    rows = $e;
                    v.push(t.elapsed());
                }
                println!("  {:<44} {:>9.3} ms  ({rows} rows)", $label, median(v).as_secs_f64() * 1e3);
            }};
        }
        let s = &store;
        time!("grants, first page", s.grants_page(&PageQuery { limit: 50, ..PageQuery::default() }).await.unwrap().len());
        time!(format!("grants, page near the end (row ~{})", n - 60), s
            .grants_page(&PageQuery { before: Some(deep.clone()), limit: 50, ..PageQuery::default() })
            .await
            .unwrap()
            .len());
        time!("active grants (console default), first page", s
            .grants_page(&PageQuery { live_only: true, limit: 50, ..PageQuery::default() })
            .await
            .unwrap()
            .len());
        time!("history, one resource, near the end", s
            .requests_page(&PageQuery {
                resource: Some(ResourceId::parse("vpn").unwrap()),
                before: Some(deep.clone()),
                limit: 50,
                ..PageQuery::default()
            })
            .await
            .unwrap()
            .len());
        time!("pending requests, first page", s
            .requests_page(&PageQuery { status: Some(RequestStatus::Pending), limit: 50, ..PageQuery::default() })
            .await
            .unwrap()
            .len());
        time!("history, one person, first page", s
            .requests_page(&PageQuery { person: Some("U000007".into()), limit: 50, ..PageQuery::default() })
            .await
            .unwrap()
            .len());
        time!("charts: 30 days of figures", s.daily_stats(Utc::now(), 30, None).await.unwrap().active_at_end_of_day.len());
        drop(db);
    });
}
