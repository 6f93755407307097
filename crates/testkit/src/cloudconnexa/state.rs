//! What the fake Cloud Connexa holds: its configuration, users, groups and networks, issued
//! tokens, one rate-limit bucket per credential, queued faults and the call record.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::FakeConfig;
use super::resources::{Call, FakeGroup, FakeNetwork, FakeUser};

#[derive(Debug)]
pub(super) struct Bucket {
    pub(super) tokens: f64,
    pub(super) last: Instant,
}

#[derive(Debug)]
pub(super) struct Token {
    pub(super) client_id: String,
    pub(super) expires_at: Instant,
}

#[derive(Debug)]
pub(super) struct FaultPlan {
    pub(super) remaining: u32,
    pub(super) status: u16,
}

#[derive(Debug)]
pub(super) struct St {
    pub(super) cfg: FakeConfig,
    pub(super) users: Vec<FakeUser>,
    pub(super) groups: Vec<FakeGroup>,
    pub(super) networks: Vec<FakeNetwork>,
    pub(super) tokens: HashMap<String, Token>,
    pub(super) buckets: HashMap<String, Bucket>,
    pub(super) faults: Option<FaultPlan>,
    /// The next N user writes are applied, then answered only after this delay (a write that
    /// lands but whose answer arrives after the caller gave up).
    pub(super) slow_after_apply: Option<(u32, Duration)>,
    pub(super) latency: Duration,
    pub(super) calls: Vec<Call>,
    pub(super) seq: u64,
}

impl St {
    pub(super) fn next_id(&mut self) -> String {
        self.seq += 1;
        // UUID-shaped, deterministic and sortable for readable test failures.
        format!("00000000-0000-4000-8000-{:012x}", self.seq)
    }

    pub(super) fn group_exists(&self, id: &str) -> bool {
        self.groups.iter().any(|g| g.id == id)
    }
}

pub(super) fn default_group_id(st: &St) -> String {
    st.groups
        .iter()
        .find(|g| g.name == st.cfg.default_group)
        .or(st.groups.first())
        .map(|g| g.id.clone())
        .unwrap_or_default()
}

impl St {
    /// A fake with no users, groups, networks or tokens yet.
    pub(super) fn new(cfg: FakeConfig) -> Self {
        Self {
            cfg,
            users: Vec::new(),
            groups: Vec::new(),
            networks: Vec::new(),
            tokens: HashMap::new(),
            buckets: HashMap::new(),
            faults: None,
            slow_after_apply: None,
            latency: Duration::ZERO,
            calls: Vec::new(),
            seq: 0,
        }
    }
}
