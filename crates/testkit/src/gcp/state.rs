//! What the fake Google Cloud holds: projects with their service accounts, keys and IAM policy,
//! the signing keys and tokens of the token endpoint, quotas, switches and the call record.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;

use super::keys::{TEST_KEY_PEM, public_key_der};
use super::{BOT_EMAIL, GcpCall, GcpFault, GcpOp};

#[derive(Debug, Clone)]
pub(super) struct Key {
    pub(super) id: String,
    pub(super) valid_after: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, Clone)]
pub(super) struct Sa {
    pub(super) account_id: String,
    pub(super) email: String,
    pub(super) unique_id: String,
    pub(super) display_name: String,
    pub(super) description: String,
    pub(super) created: Instant,
    /// Invisible this long after `created` whatever the fake's window (an injected
    /// `NotFoundAfterCreate`).
    pub(super) hidden_for: Duration,
    pub(super) keys: Vec<Key>,
}

impl Sa {
    /// Still in its eventual-consistency window: reads and policies do not see it yet.
    pub(super) fn hidden(&self, window: Duration) -> bool {
        self.created.elapsed() < window.max(self.hidden_for)
    }
}

#[derive(Debug, Default)]
pub(super) struct Project {
    pub(super) accounts: BTreeMap<String, Sa>,
    pub(super) bindings: Vec<Value>,
    pub(super) audit_configs: Option<Value>,
    pub(super) etag_n: u64,
}

impl Project {
    pub(super) fn etag(&self) -> String {
        STANDARD.encode(format!("etag-{:08}", self.etag_n))
    }
}

#[derive(Debug)]
pub(super) struct GcpState {
    pub(super) base_url: String,
    pub(super) projects: BTreeMap<String, Project>,
    /// Public keys (DER `RSAPublicKey`) by client e-mail, with the key id.
    pub(super) signing_keys: HashMap<String, Vec<(String, Vec<u8>)>>,
    pub(super) tokens: HashMap<String, (String, Instant)>,
    pub(super) not_found_window: Duration,
    pub(super) account_quota: usize,
    pub(super) key_quota: usize,
    pub(super) forbid_keys: bool,
    pub(super) faults: VecDeque<(GcpOp, GcpFault)>,
    pub(super) calls: Vec<GcpCall>,
    pub(super) concurrent_writes: u64,
    pub(super) next_unique: u64,
    pub(super) fault_slot: crate::faults::FaultSlot,
}

impl GcpState {
    /// A fake with no projects, whose only signing key is the bot's.
    pub(super) fn new(base_url: String, fault_slot: crate::faults::FaultSlot) -> Self {
        let mut signing_keys = HashMap::new();
        signing_keys.insert(
            BOT_EMAIL.to_string(),
            vec![("bot-key".to_string(), public_key_der(TEST_KEY_PEM))],
        );
        Self {
            base_url,
            projects: BTreeMap::new(),
            signing_keys,
            tokens: HashMap::new(),
            not_found_window: Duration::ZERO,
            account_quota: 100,
            key_quota: 10,
            forbid_keys: false,
            faults: VecDeque::new(),
            calls: Vec::new(),
            concurrent_writes: 0,
            next_unique: 100_000_000_000_000_000,
            fault_slot,
        }
    }
}

/// The state as the handlers share it.
pub(super) type Shared = Arc<Mutex<GcpState>>;
