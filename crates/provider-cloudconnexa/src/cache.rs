//! Small in-process helpers of the provider: one async lock per person, and the indexes built
//! from full scans (users by e-mail, groups by name).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// One async lock per key (an e-mail): grants and revokes of the same person are read-modify-write
/// cycles on one user object and must not interleave.
#[derive(Debug, Default)]
pub(crate) struct KeyedLocks {
    map: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl KeyedLocks {
    pub(crate) async fn lock(&self, key: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let m = {
            let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
            if map.len() > 4096 {
                map.retain(|_, v| Arc::strong_count(v) > 1);
            }
            map.entry(key.to_string()).or_default().clone()
        };
        m.lock_owned().await
    }
}

#[derive(Debug)]
pub(crate) struct Index<T> {
    pub(crate) by_key: HashMap<String, T>,
    /// When the last full scan *started*: everything that existed then is in `by_key`.
    pub(crate) scanned_at: Option<Instant>,
}

impl<T> Default for Index<T> {
    fn default() -> Self {
        Self {
            by_key: HashMap::new(),
            scanned_at: None,
        }
    }
}

impl<T> Index<T> {
    pub(crate) fn fresh(&self, ttl: Duration) -> bool {
        self.scanned_at.is_some_and(|t| t.elapsed() < ttl)
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
