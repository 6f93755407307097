//! Keyed links: the audit keyring, sealing events into the chain (keyed or not), the MACs of
//! checkpoints and of the chain head.

use std::fmt;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::{AuditEvent, AuditRecord, chain_hash, truncate_to_micros};

/// The environment variable holding the audit keys (same format as `GATEHOUSE_ENCRYPTION_KEY`,
/// parsed by [`crate::keys::parse_key_list`]).
pub const AUDIT_KEY_ENV: &str = "GATEHOUSE_AUDIT_KEY";

/// Keyed hashes and MACs are written `k1.<key id>.<hex HMAC-SHA256>`: the key id travels with
/// the hash (and so into `prev_hash` of the next event and into the BigQuery export) without a
/// schema change, and an unkeyed hash (64 bare hex digits) can never be mistaken for one.
const KEYED_PREFIX: &str = "k1.";

type HmacSha256 = Hmac<Sha256>;

/// The audit keys: the first signs, every one verifies (rotation, like the token keys).
/// `Debug` shows key ids only.
#[derive(Clone)]
pub struct AuditKeyring {
    keys: Vec<(String, [u8; 32])>,
}

impl fmt::Debug for AuditKeyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
        f.debug_struct("AuditKeyring")
            .field("key_ids", &ids)
            .finish()
    }
}

impl AuditKeyring {
    /// From raw keys; `None` when the list is empty.
    pub fn from_keys(keys: &[[u8; 32]]) -> Option<Self> {
        if keys.is_empty() {
            return None;
        }
        Some(Self {
            keys: keys
                .iter()
                .map(|k| (hex::encode(crate::keys::key_id(k)), *k))
                .collect(),
        })
    }

    /// Parses a `GATEHOUSE_AUDIT_KEY` value.
    pub fn from_spec(spec: &str) -> Result<Self, crate::keys::KeySpecError> {
        let keys = crate::keys::parse_key_list(AUDIT_KEY_ENV, spec)?;
        Self::from_keys(&keys).ok_or(crate::keys::KeySpecError::Empty { var: AUDIT_KEY_ENV })
    }

    /// Key id of the signing key.
    pub fn primary_key_id(&self) -> &str {
        &self.keys[0].0
    }

    fn key(&self, id: &str) -> Option<&[u8; 32]> {
        self.keys.iter().find(|(k, _)| k == id).map(|(_, k)| k)
    }

    fn mac_with(key_id: &str, key: &[u8; 32], msg: &[u8]) -> String {
        // HMAC accepts keys of any length, so this cannot fail; if it ever did, the result is a
        // MAC that matches nothing, so verification fails closed.
        let Ok(mut m) = <HmacSha256 as Mac>::new_from_slice(key) else {
            return format!("{KEYED_PREFIX}{key_id}.invalid");
        };
        m.update(msg);
        format!(
            "{KEYED_PREFIX}{key_id}.{}",
            hex::encode(m.finalize().into_bytes())
        )
    }

    /// `k1.<primary key id>.<HMAC>` over `msg`.
    pub fn sign(&self, msg: &[u8]) -> String {
        let (id, key) = &self.keys[0];
        Self::mac_with(id, key, msg)
    }

    /// Checks a `k1.` MAC over `msg` under whichever configured key it names.
    pub fn check(&self, msg: &[u8], mac: &str) -> Result<(), MacError> {
        let KeyedForm::Keyed { key_id, .. } = keyed_form(mac) else {
            return Err(MacError::NotKeyed);
        };
        let key = self.key(key_id).ok_or_else(|| MacError::UnknownKey {
            key_id: key_id.to_string(),
        })?;
        let expected = Self::mac_with(key_id, key, msg);
        // Constant time is not needed here: the verifier holds the key and compares its own
        // recomputation; nothing is being authenticated against a remote guess.
        if expected == mac {
            Ok(())
        } else {
            Err(MacError::Mismatch)
        }
    }
}

/// Why a MAC did not check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MacError {
    /// The MAC is a plain hash, not keyed.
    #[error("it is not a keyed MAC")]
    NotKeyed,
    /// The MAC names a key the keyring does not hold.
    #[error("it names key id {key_id}, which is not in GATEHOUSE_AUDIT_KEY")]
    UnknownKey {
        /// The key id it names.
        key_id: String,
    },
    /// The MAC is wrong.
    #[error("it does not match")]
    Mismatch,
}

pub(super) enum KeyedForm<'a> {
    Unkeyed,
    Keyed { key_id: &'a str },
    Malformed,
}

pub(super) fn keyed_form(h: &str) -> KeyedForm<'_> {
    if let Some(rest) = h.strip_prefix(KEYED_PREFIX) {
        match rest.split_once('.') {
            Some((id, mac))
                if id.len() == 2 * crate::keys::KEY_ID_LEN
                    && mac.len() == 64
                    && mac.bytes().all(|b| b.is_ascii_hexdigit()) =>
            {
                KeyedForm::Keyed { key_id: id }
            }
            _ => KeyedForm::Malformed,
        }
    } else if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) {
        KeyedForm::Unkeyed
    } else {
        KeyedForm::Malformed
    }
}

/// True when `hash` is a keyed (`k1.`) hash.
pub fn is_keyed(hash: &str) -> bool {
    matches!(keyed_form(hash), KeyedForm::Keyed { .. })
}

/// The canonical encoding a keyed link covers: every field of the event, including the whole
/// actor (display name too) and its short id (stored in its own column), the previous hash and
/// the key id. JSON with sorted keys (serde_json's default map), prefixed with a domain tag so a
/// MAC over an event can never be replayed as a MAC over a checkpoint.
pub(super) fn keyed_message(
    seq: i64,
    record: &AuditRecord,
    prev_hash: &str,
    key_id: &str,
) -> Vec<u8> {
    use std::io::Write as _;
    // Written field by field in sorted key order (the same bytes `json!` with serde_json's sorted
    // map would give) so that verification does not clone `details` for every event. Writing to
    // a Vec cannot fail; a serialisation error would only ever make the MAC not match.
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(b"gatehouse-audit-event-v1\n");
    let s = |out: &mut Vec<u8>, v: &dyn erased::Ser| v.write(out);
    let _ = write!(out, "{{\"actor\":");
    s(
        &mut out,
        &serde_json::to_value(&record.actor).unwrap_or(serde_json::Value::Null),
    );
    let _ = write!(out, ",\"actor_id\":");
    s(&mut out, &record.actor.id());
    let _ = write!(out, ",\"at\":{},\"details\":", record.at.timestamp_micros());
    s(&mut out, &record.details);
    let _ = write!(out, ",\"grant\":");
    s(&mut out, &record.grant_id.map(|g| g.to_string()));
    let _ = write!(out, ",\"id\":");
    s(&mut out, &record.id.to_string());
    let _ = write!(out, ",\"key_id\":");
    s(&mut out, &key_id);
    let _ = write!(out, ",\"kind\":\"{}\",\"prev_hash\":", record.kind.as_str());
    s(&mut out, &prev_hash);
    let _ = write!(out, ",\"request\":");
    s(&mut out, &record.request_id.map(|r| r.to_string()));
    let _ = write!(out, ",\"resource\":");
    s(&mut out, &record.resource.as_ref().map(|r| r.as_str()));
    let _ = write!(out, ",\"seq\":{seq},\"subject\":");
    s(&mut out, &record.subject);
    out.push(b'}');
    out
}

mod erased {
    /// Serialises any value as JSON into a buffer (object-safe, for `keyed_message`).
    pub trait Ser {
        fn write(&self, out: &mut Vec<u8>);
    }
    impl<T: serde::Serialize + ?Sized> Ser for T {
        fn write(&self, out: &mut Vec<u8>) {
            let _ = serde_json::to_writer(out, self);
        }
    }
}

/// The keyed link of one event under the keyring's signing key.
pub fn keyed_hash(keys: &AuditKeyring, seq: i64, record: &AuditRecord, prev_hash: &str) -> String {
    keys.sign(&keyed_message(
        seq,
        record,
        prev_hash,
        keys.primary_key_id(),
    ))
}

/// Places `record` after an event with sequence `prev_seq` and hash `prev_hash`, unkeyed.
pub fn seal(record: AuditRecord, prev_seq: i64, prev_hash: &str) -> AuditEvent {
    seal_with(record, prev_seq, prev_hash, None)
}

/// Places `record` in the chain: keyed when `keys` is given. The first keyed event after an
/// unkeyed chain simply points back at the last unkeyed hash; that event is the switch.
pub fn seal_with(
    record: AuditRecord,
    prev_seq: i64,
    prev_hash: &str,
    keys: Option<&AuditKeyring>,
) -> AuditEvent {
    let seq = prev_seq + 1;
    let hash = match keys {
        Some(k) => keyed_hash(k, seq, &record, prev_hash),
        None => chain_hash(seq, &record, prev_hash),
    };
    AuditEvent {
        seq,
        record,
        prev_hash: prev_hash.to_string(),
        hash,
    }
}

/// A signed statement "the chain had `seq` events ending in `hash` at `at`". Written outside the
/// database (log, BigQuery export) so that a database administrator who rewrites history is
/// contradicted by something they cannot reach; also kept in the database as the starting point
/// of incremental verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditCheckpoint {
    /// How many events the chain had.
    pub seq: i64,
    /// The hash of its last event.
    pub hash: String,
    /// When the statement was made.
    pub at: DateTime<Utc>,
    /// Key id of the MAC; `None` for an unkeyed checkpoint (no key configured).
    pub key_id: Option<String>,
    /// `k1.<key id>.<HMAC>` over (seq, hash, at); `None` when unkeyed.
    pub mac: Option<String>,
}

fn checkpoint_message(seq: i64, hash: &str, at: DateTime<Utc>) -> Vec<u8> {
    format!(
        "gatehouse-audit-checkpoint-v1\n{seq}\n{hash}\n{}",
        at.timestamp_micros()
    )
    .into_bytes()
}

impl AuditCheckpoint {
    /// A checkpoint of the chain at `seq`/`hash`, signed with the primary key of `keys` (unkeyed without).
    pub fn new(seq: i64, hash: &str, at: DateTime<Utc>, keys: Option<&AuditKeyring>) -> Self {
        let at = truncate_to_micros(at);
        let mac = keys.map(|k| k.sign(&checkpoint_message(seq, hash, at)));
        Self {
            seq,
            hash: hash.to_string(),
            at,
            key_id: keys.map(|k| k.primary_key_id().to_string()),
            mac,
        }
    }

    /// Checks the MAC. An unkeyed checkpoint never verifies under a keyring.
    pub fn check(&self, keys: &AuditKeyring) -> Result<(), MacError> {
        let mac = self.mac.as_deref().ok_or(MacError::NotKeyed)?;
        keys.check(&checkpoint_message(self.seq, &self.hash, self.at), mac)
    }
}

/// The MAC the store keeps next to the chain head, so that pointing the head at another event
/// (after truncating the tail, say) needs the key.
pub fn head_mac(keys: &AuditKeyring, seq: i64, hash: &str) -> String {
    keys.sign(format!("gatehouse-audit-head-v1\n{seq}\n{hash}").as_bytes())
}

/// Checks the MAC [`head_mac`] made for the chain head `seq`/`hash`.
pub fn check_head_mac(
    keys: &AuditKeyring,
    seq: i64,
    hash: &str,
    mac: &str,
) -> Result<(), MacError> {
    keys.check(
        format!("gatehouse-audit-head-v1\n{seq}\n{hash}").as_bytes(),
        mac,
    )
}
