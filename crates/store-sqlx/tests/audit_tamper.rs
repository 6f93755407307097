//! Tampering with the audit chain by someone with write access to the database (issue 14): every
//! kind is named by verification, on every backend from `testkit::db::backends()`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use access_core::audit::{
    AuditCheckpoint, AuditKeyring, AuditKind, AuditRecord, ChainVerification, TamperKind,
    chain_hash,
};
use access_core::ports::{AuditFilter, AuditLog, ChangeSet, RequestStore};
use access_core::request::Actor;
use chrono::Utc;
use store_sqlx::{DbPool, SqlStore};
use testkit::db::{TestDb, backends};

fn keys() -> AuditKeyring {
    AuditKeyring::from_keys(&[[7u8; 32]]).unwrap()
}

async fn raw(store: &SqlStore, sql: &str) {
    match store.pool() {
        DbPool::Sqlite(p) => {
            sqlx::query(sql).execute(p).await.unwrap();
        }
        DbPool::Postgres(p) => {
            sqlx::query(sql).execute(p).await.unwrap();
        }
    }
}

async fn append(store: &SqlStore, n: usize, tag: &str) {
    for i in 0..n {
        let r = AuditRecord::new(
            AuditKind::AccessApproved,
            Actor::User {
                team_id: "T1".into(),
                user_id: "U1".into(),
                name: "Alice".into(),
            },
            Utc::now(),
        )
        .details(serde_json::json!({"tag": tag, "i": i}));
        store
            .commit(ChangeSet {
                audit: vec![r],
                ..Default::default()
            })
            .await
            .unwrap();
    }
}

/// A store holding 2 unkeyed events (written before the key was configured) then 6 keyed ones.
async fn chains() -> Vec<(TestDb, SqlStore)> {
    let mut out = Vec::new();
    for db in backends().await {
        let unkeyed = SqlStore::connect(&db.url).await.unwrap();
        append(&unkeyed, 2, "before the key").await;
        let store = unkeyed.with_audit_keys(Some(keys()));
        append(&store, 6, "keyed").await;
        let v = store.verify_audit_chain().await.unwrap();
        assert!(v.ok, "{}: {v:?}", db.kind);
        assert!(v.keyed, "{}", db.kind);
        assert_eq!(
            v.keyed_from,
            Some(3),
            "{}: the first keyed event is the switch",
            db.kind
        );
        out.push((db, store));
    }
    out
}

fn named(v: &ChainVerification, kind: TamperKind, seq: i64, db: &str) {
    assert!(!v.ok, "{db}: tampering went unnoticed: {v:?}");
    let b = v.first_bad.as_ref().unwrap();
    assert_eq!((b.kind, b.seq), (kind, seq), "{db}: {b:?}");
}

#[tokio::test]
async fn edited_field_is_named() {
    for (db, store) in chains().await {
        raw(
            &store,
            r#"UPDATE audit_events SET details = '{"tag":"keyed","i":99}' WHERE seq = 5"#,
        )
        .await;
        named(
            &store.verify_audit_chain().await.unwrap(),
            TamperKind::Edited,
            5,
            db.kind,
        );
    }
}

#[tokio::test]
async fn edited_actor_display_name_and_actor_id_are_named() {
    for (db, store) in chains().await {
        // The display name alone (actor_id still matches): covered by the keyed link.
        raw(
            &store,
            r#"UPDATE audit_events SET actor = '{"type":"user","team_id":"T1","user_id":"U1","name":"Mallory"}' WHERE seq = 4"#,
        )
        .await;
        named(
            &store.verify_audit_chain().await.unwrap(),
            TamperKind::Edited,
            4,
            db.kind,
        );
    }
    for (db, store) in chains().await {
        raw(
            &store,
            "UPDATE audit_events SET actor_id = 'slack:T1/U2' WHERE seq = 6",
        )
        .await;
        named(
            &store.verify_audit_chain().await.unwrap(),
            TamperKind::Edited,
            6,
            db.kind,
        );
    }
}

#[tokio::test]
async fn deleted_row_is_named() {
    for (db, store) in chains().await {
        raw(&store, "DELETE FROM audit_events WHERE seq = 4").await;
        named(
            &store.verify_audit_chain().await.unwrap(),
            TamperKind::Deleted,
            4,
            db.kind,
        );
    }
    // Deleted and the rest renumbered to close the gap.
    for (db, store) in chains().await {
        raw(&store, "DELETE FROM audit_events WHERE seq = 4").await;
        raw(
            &store,
            "UPDATE audit_events SET seq = seq + 1000 WHERE seq > 4",
        )
        .await;
        raw(
            &store,
            "UPDATE audit_events SET seq = seq - 1001 WHERE seq > 1000",
        )
        .await;
        raw(&store, "UPDATE audit_head SET seq = 7").await;
        named(
            &store.verify_audit_chain().await.unwrap(),
            TamperKind::Deleted,
            4,
            db.kind,
        );
    }
}

#[tokio::test]
async fn inserted_row_is_named() {
    for (db, store) in chains().await {
        raw(
            &store,
            "UPDATE audit_events SET seq = seq + 1000 WHERE seq >= 5",
        )
        .await;
        raw(
            &store,
            "UPDATE audit_events SET seq = seq - 999 WHERE seq >= 1000",
        )
        .await;
        raw(
            &store,
            "INSERT INTO audit_events (seq, id, at, kind, actor, actor_id, subject, resource, request_id, grant_id, details, prev_hash, hash) \
             SELECT 5, '11111111-2222-4333-8444-555555555555', at, kind, actor, actor_id, subject, resource, request_id, grant_id, \
             '{\"forged\":true}', hash, hash FROM audit_events WHERE seq = 4",
        )
        .await;
        raw(&store, "UPDATE audit_head SET seq = 9").await;
        named(
            &store.verify_audit_chain().await.unwrap(),
            TamperKind::Inserted,
            5,
            db.kind,
        );
    }
}

#[tokio::test]
async fn reordered_rows_are_named() {
    for (db, store) in chains().await {
        raw(&store, "UPDATE audit_events SET seq = -4 WHERE seq = 4").await;
        raw(&store, "UPDATE audit_events SET seq = 4 WHERE seq = 5").await;
        raw(&store, "UPDATE audit_events SET seq = 5 WHERE seq = -4").await;
        named(
            &store.verify_audit_chain().await.unwrap(),
            TamperKind::Reordered,
            4,
            db.kind,
        );
    }
}

#[tokio::test]
async fn truncated_tail_is_named() {
    for (db, store) in chains().await {
        raw(&store, "DELETE FROM audit_events WHERE seq >= 7").await;
        named(
            &store.verify_audit_chain().await.unwrap(),
            TamperKind::Truncated,
            7,
            db.kind,
        );
    }
    // Truncated and the head moved back to match: the head's MAC needs the key.
    for (db, store) in chains().await {
        raw(&store, "DELETE FROM audit_events WHERE seq >= 7").await;
        raw(
            &store,
            "UPDATE audit_head SET seq = 6, hash = (SELECT hash FROM audit_events WHERE seq = 6)",
        )
        .await;
        named(
            &store.verify_audit_chain().await.unwrap(),
            TamperKind::HeadSwapped,
            6,
            db.kind,
        );
    }
}

#[tokio::test]
async fn tail_rewritten_with_unkeyed_hashes_is_named() {
    for (db, store) in chains().await {
        // The attacker edits event 6 and recomputes every hash from there with the public,
        // unkeyed formula, head included: without the key that is all they can do.
        let events = store
            .audit_events(&AuditFilter {
                limit: Some(100),
                ..Default::default()
            })
            .await
            .unwrap();
        let mut prev = events[4].hash.clone();
        for e in &events[5..] {
            let mut r = e.record.clone();
            if e.seq == 6 {
                r.details = serde_json::json!({"rewritten": true});
            }
            let h = chain_hash(e.seq, &r, &prev);
            raw(
                &store,
                &format!(
                    "UPDATE audit_events SET details = '{}', prev_hash = '{prev}', hash = '{h}' WHERE seq = {}",
                    r.details, e.seq
                ),
            )
            .await;
            prev = h;
        }
        raw(
            &store,
            &format!("UPDATE audit_head SET hash = '{prev}', mac = NULL"),
        )
        .await;
        named(
            &store.verify_audit_chain().await.unwrap(),
            TamperKind::RewrittenUnkeyed,
            6,
            db.kind,
        );
    }
}

#[tokio::test]
async fn swapped_head_is_named() {
    for (db, store) in chains().await {
        // Point the head at an earlier event (hash and seq consistent): only the MAC tells.
        raw(
            &store,
            "UPDATE audit_head SET seq = 5, hash = (SELECT hash FROM audit_events WHERE seq = 5)",
        )
        .await;
        named(
            &store.verify_audit_chain().await.unwrap(),
            TamperKind::HeadSwapped,
            5,
            db.kind,
        );
    }
    for (db, store) in chains().await {
        raw(
            &store,
            "UPDATE audit_head SET hash = (SELECT hash FROM audit_events WHERE seq = 7)",
        )
        .await;
        named(
            &store.verify_audit_chain().await.unwrap(),
            TamperKind::HeadSwapped,
            8,
            db.kind,
        );
    }
}

#[tokio::test]
async fn incremental_verification_starts_at_the_last_verified_checkpoint() {
    for (db, store) in chains().await {
        // chains() ran a full verification, which left a checkpoint at 8.
        append(&store, 3, "later").await;
        let v = store.verify_audit_chain_incremental().await.unwrap();
        assert!(v.ok, "{}: {v:?}", db.kind);
        assert_eq!((v.verified_from, v.events_checked), (8, 3), "{}", db.kind);
        // A forged checkpoint (no valid MAC) is not a starting point: full walk.
        raw(&store, "DELETE FROM audit_checkpoints").await;
        let forged = AuditCheckpoint::new(10, "x", Utc::now(), None);
        store.save_audit_checkpoint(&forged).await.unwrap();
        let v = store.verify_audit_chain_incremental().await.unwrap();
        assert!(v.ok, "{}: {v:?}", db.kind);
        assert_eq!((v.verified_from, v.events_checked), (0, 11), "{}", db.kind);
        // An edit behind the checkpoint is the full walk's job; it finds it.
        raw(
            &store,
            r#"UPDATE audit_events SET details = '{}' WHERE seq = 2"#,
        )
        .await;
        let v = store.verify_audit_chain_incremental().await.unwrap();
        assert!(v.ok && v.verified_from == 11, "{}: {v:?}", db.kind);
        named(
            &store.verify_audit_chain().await.unwrap(),
            TamperKind::Edited,
            2,
            db.kind,
        );
        // The checkpoint names an event whose hash changed: incremental falls back to the walk.
        raw(&store, "UPDATE audit_events SET hash = 'x' WHERE seq = 11").await;
        let v = store.verify_audit_chain_incremental().await.unwrap();
        assert_eq!(v.verified_from, 0, "{}: {v:?}", db.kind);
        assert!(!v.ok, "{}", db.kind);
    }
}

#[tokio::test]
async fn an_unkeyed_store_still_verifies_and_says_so() {
    for db in backends().await {
        let store = SqlStore::connect(&db.url).await.unwrap();
        append(&store, 3, "dev").await;
        let v = store.verify_audit_chain().await.unwrap();
        assert!(
            v.ok && !v.keyed && v.keyed_from.is_none(),
            "{}: {v:?}",
            db.kind
        );
        // A keyed chain read without the key is reported, not silently accepted.
        let keyed = store.clone().with_audit_keys(Some(keys()));
        append(&keyed, 1, "keyed").await;
        let v = store.verify_audit_chain().await.unwrap();
        named(&v, TamperKind::UnknownKey, 4, db.kind);
    }
}

/// SQLite's typing lets an administrator write a value of another type into a column (a BLOB
/// where the details are); the walk names the unreadable row instead of failing the check.
#[tokio::test]
async fn a_value_of_another_type_is_named_unreadable() {
    for (db, store) in chains().await {
        if db.kind != "sqlite" {
            continue; // PostgreSQL's column types refuse it
        }
        raw(
            &store,
            "UPDATE audit_events SET details = X'00ff' WHERE seq = 6",
        )
        .await;
        named(
            &store.verify_audit_chain().await.unwrap(),
            TamperKind::Unreadable,
            6,
            db.kind,
        );
    }
}
