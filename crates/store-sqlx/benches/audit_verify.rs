//! Full audit-chain verification speed on SQLite (`make bench`; issue 14 target: at least
//! 200,000 events/s, release build). The chain is keyed (HMAC-SHA256), the walk streams in
//! keyset pages, so memory stays flat. `AUDIT_BENCH_EVENTS` sets the chain length (default
//! 50,000, so that `make bench` stays under 15 minutes; a rate, so the length barely matters).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use access_core::audit::{AuditKeyring, AuditKind, AuditRecord};
use access_core::ports::{AuditLog, ChangeSet, RequestStore};
use access_core::request::Actor;
use chrono::Utc;
use store_sqlx::SqlStore;

fn main() {
    let n: usize = std::env::var("AUDIT_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let dir = std::env::temp_dir().join(format!("gatehouse-audit-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.join("bench.db").display());
        let store = SqlStore::connect(&url)
            .await
            .unwrap()
            .with_audit_keys(AuditKeyring::from_keys(&[[5u8; 32]]));
        let started = Instant::now();
        let per_commit = 5000;
        let mut left = n;
        while left > 0 {
            let k = left.min(per_commit);
            let audit = (0..k)
                .map(|i| {
                    AuditRecord::new(
                        AuditKind::AccessGranted,
                        Actor::User {
                            team_id: "T0001".into(),
                            user_id: format!("U{i:07}"),
                            name: "Person".into(),
                        },
                        Utc::now(),
                    )
                    .subject("T0001", &format!("U{i:07}"))
                    .details(serde_json::json!({"event": "user_added_to_group", "group": "grp-9"}))
                })
                .collect();
            store
                .commit(ChangeSet {
                    audit,
                    ..Default::default()
                })
                .await
                .unwrap();
            left -= k;
        }
        println!("sealed {n} keyed events in {:.2?}", started.elapsed());
        let mut rates = Vec::new();
        for _ in 0..3 {
            let t = Instant::now();
            let v = store.verify_audit_chain().await.unwrap();
            let secs = t.elapsed().as_secs_f64();
            assert!(v.ok && v.events_checked == n as u64, "{v:?}");
            rates.push(n as f64 / secs);
        }
        rates.sort_by(|a, b| a.partial_cmp(b).unwrap());
        println!(
            "audit verify (full walk, SQLite, keyed): median {:.0} events/s over {n} events (target >= 200000)",
            rates[1]
        );
        let t = Instant::now();
        let v = store.verify_audit_chain_incremental().await.unwrap();
        println!(
            "audit verify (incremental, from the last checkpoint): {} events in {:.2?}",
            v.events_checked,
            t.elapsed()
        );
        store.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    });
}
