//! Tests of the audit chain: hashing, keyed links, verification and export comparison.

use super::*;

/// The keyed message as `serde_json::json!` writes it: what `keyed_message` must equal.
fn keyed_message_reference(
    seq: i64,
    record: &AuditRecord,
    prev_hash: &str,
    key_id: &str,
) -> Vec<u8> {
    let canonical = serde_json::json!({
        "seq": seq,
        "id": record.id.to_string(),
        "at": record.at.timestamp_micros(),
        "kind": record.kind.as_str(),
        "actor": serde_json::to_value(&record.actor).unwrap_or(serde_json::Value::Null),
        "actor_id": record.actor.id(),
        "subject": record.subject,
        "resource": record.resource.as_ref().map(|r| r.as_str()),
        "request": record.request_id.map(|r| r.to_string()),
        "grant": record.grant_id.map(|g| g.to_string()),
        "details": record.details,
        "prev_hash": prev_hash,
        "key_id": key_id,
    });
    let mut out = b"gatehouse-audit-event-v1\n".to_vec();
    out.extend_from_slice(canonical.to_string().as_bytes());
    out
}

fn chain(n: usize) -> Vec<AuditEvent> {
    let mut out: Vec<AuditEvent> = Vec::new();
    for i in 0..n {
        let (seq, hash) = out
            .last()
            .map(|e| (e.seq, e.hash.clone()))
            .unwrap_or((0, GENESIS_HASH.into()));
        let r = AuditRecord::new(AuditKind::AccessRequested, Actor::System, Utc::now())
            .details(serde_json::json!({"i": i}));
        out.push(seal(r, seq, &hash));
    }
    out
}

#[test]
fn intact_chain_verifies() {
    let c = chain(5);
    let v = verify_chain(&c, Some((5, c[4].hash.clone())));
    assert!(v.ok, "{v:?}");
    assert_eq!(v.events_checked, 5);
}

#[test]
fn edited_row_is_named() {
    let mut c = chain(5);
    c[2].record.details = serde_json::json!({"i": 99});
    let v = verify_chain(&c, None);
    assert!(!v.ok);
    let b = v.first_bad.unwrap();
    assert_eq!(b.seq, 3);
    assert!(b.reason.contains("edited"));
}

#[test]
fn deleted_row_is_named() {
    let mut c = chain(5);
    c.remove(1);
    let v = verify_chain(&c, None);
    assert_eq!(v.first_bad.unwrap().seq, 2);
}

#[test]
fn deleted_tail_is_caught_by_the_head() {
    let c = chain(5);
    let head = Some((5, c[4].hash.clone()));
    let v = verify_chain(&c[..4], head);
    assert!(!v.ok);
    assert!(v.first_bad.unwrap().reason.contains("newest rows"));
}

#[test]
fn rehashed_forgery_breaks_the_link() {
    // An attacker edits row 2 and recomputes its hash: row 3's prev_hash no longer matches.
    let mut c = chain(4);
    c[1].record.details = serde_json::json!({"forged": true});
    c[1].hash = chain_hash(c[1].seq, &c[1].record, &c[1].prev_hash);
    let v = verify_chain(&c, None);
    assert_eq!(v.first_bad.unwrap().seq, 3);
}

fn ring(b: u8) -> AuditKeyring {
    AuditKeyring::from_keys(&[[b; 32]]).unwrap()
}

/// `unkeyed` unkeyed events, then `keyed` keyed ones under `keys`.
fn mixed(unkeyed: usize, keyed: usize, keys: &AuditKeyring) -> Vec<AuditEvent> {
    let mut out = chain(unkeyed);
    for i in 0..keyed {
        let (seq, hash) = out
            .last()
            .map(|e| (e.seq, e.hash.clone()))
            .unwrap_or((0, GENESIS_HASH.into()));
        let r = AuditRecord::new(
            AuditKind::AccessApproved,
            Actor::Admin {
                name: "alice".into(),
            },
            Utc::now(),
        )
        .details(serde_json::json!({"k": i}));
        out.push(seal_with(r, seq, &hash, Some(keys)));
    }
    out
}

fn check(c: &[AuditEvent], keys: &AuditKeyring) -> ChainVerification {
    let mut v = ChainVerifier::with_keys(Some(keys.clone()));
    for e in c {
        if !v.push(e) {
            break;
        }
    }
    v.finish(None)
}

#[test]
fn keyed_chain_after_an_unkeyed_one_verifies_and_records_the_switch() {
    let k = ring(7);
    let c = mixed(3, 3, &k);
    assert!(c[3].hash.starts_with("k1."));
    let v = check(&c, &k);
    assert!(v.ok, "{v:?}");
    assert!(v.keyed);
    assert_eq!(v.keyed_from, Some(4));
    // A rotated keyring (new key first, old kept) still verifies the old events.
    let rotated = AuditKeyring::from_keys(&[[9; 32], [7; 32]]).unwrap();
    assert!(check(&c, &rotated).ok);
    // Without the old key they are named, not silently accepted.
    let v = check(&c, &ring(9));
    assert_eq!(v.first_bad.unwrap().kind, TamperKind::UnknownKey);
}

#[test]
fn keyed_hash_covers_the_actor_display_name() {
    let k = ring(7);
    let mut c = mixed(0, 3, &k);
    c[1].record.actor = Actor::Admin {
        name: "mallory".into(),
    };
    let b = check(&c, &k).first_bad.unwrap();
    assert_eq!((b.seq, b.kind), (2, TamperKind::Edited));
}

#[test]
fn unkeyed_rewrite_of_a_keyed_tail_is_named() {
    let k = ring(7);
    let mut c = mixed(2, 3, &k);
    for i in 3..5 {
        c[i].prev_hash = c[i - 1].hash.clone();
        c[i].hash = chain_hash(c[i].seq, &c[i].record, &c[i].prev_hash);
    }
    let b = check(&c, &k).first_bad.unwrap();
    assert_eq!((b.seq, b.kind), (4, TamperKind::RewrittenUnkeyed));
}

#[test]
fn insertion_and_reordering_are_told_apart_from_edits() {
    let k = ring(7);
    let c = mixed(0, 5, &k);
    // Insert a forged row at 3 and renumber the rest.
    let mut ins = c.clone();
    let mut forged = ins[2].clone();
    forged.record.id = AuditEventId::new();
    forged.prev_hash = ins[1].hash.clone();
    ins.insert(2, forged);
    for (i, e) in ins.iter_mut().enumerate() {
        e.seq = i as i64 + 1;
    }
    let b = check(&ins, &k).first_bad.unwrap();
    assert_eq!((b.seq, b.kind), (3, TamperKind::Inserted), "{b:?}");
    // Swap rows 3 and 4 (each keeps its content, seqs renumbered).
    let mut sw = c.clone();
    sw.swap(2, 3);
    sw[2].seq = 3;
    sw[3].seq = 4;
    let b = check(&sw, &k).first_bad.unwrap();
    assert_eq!((b.seq, b.kind), (3, TamperKind::Reordered), "{b:?}");
}

#[test]
fn keyed_message_is_the_sorted_json_of_every_field() {
    let r = AuditRecord::new(
        AuditKind::AccessGranted,
        Actor::User {
            team_id: "T1".into(),
            user_id: "U1".into(),
            name: "Ann \"A\"".into(),
        },
        Utc::now(),
    )
    .subject("T1", "U1")
    .request(crate::ids::RequestId::new())
    .details(serde_json::json!({"z": 1, "a": [1, {"y": null, "b": "x"}]}));
    assert_eq!(
        String::from_utf8(keyed_message(7, &r, "prev", "kid")).unwrap(),
        String::from_utf8(keyed_message_reference(7, &r, "prev", "kid")).unwrap()
    );
}

#[test]
fn checkpoints_and_head_macs_need_the_key() {
    let k = ring(7);
    let cp = AuditCheckpoint::new(5, "abc", Utc::now(), Some(&k));
    assert!(cp.check(&k).is_ok());
    let mut forged = cp.clone();
    forged.seq = 4;
    assert_eq!(forged.check(&k), Err(MacError::Mismatch));
    assert_eq!(
        cp.check(&ring(8)),
        Err(MacError::UnknownKey {
            key_id: k.primary_key_id().into()
        })
    );
    let m = head_mac(&k, 5, "h");
    assert!(check_head_mac(&k, 5, "h", &m).is_ok());
    assert!(check_head_mac(&k, 4, "h", &m).is_err());
}
