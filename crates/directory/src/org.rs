//! The live org index: loaded from a source, swapped atomically on reload, kept when a reload
//! fails.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;

use crate::index::{IndexStats, OrgIndex};
use crate::source::{DEFAULT_MAX_BYTES, Fetcher, LoadError, OrgDataSource};

/// Counter: reloads that failed (the previous index stayed in use). Label `source`.
pub const METRIC_RELOAD_FAILURES: &str = "gatehouse_directory_reload_failures_total";
/// Counter: reloads that succeeded. Label `source`.
pub const METRIC_RELOADS: &str = "gatehouse_directory_reloads_total";
/// Gauge: people in the index in use.
pub const METRIC_PEOPLE: &str = "gatehouse_directory_people";
/// Gauge: Unix time of the last successful load.
pub const METRIC_LAST_SUCCESS: &str = "gatehouse_directory_last_success_timestamp_seconds";

/// After a failed first load, try again this often (or at the reload interval, if shorter)
/// instead of leaving eligibility unavailable for a whole interval.
const RETRY_WHILE_EMPTY: Duration = Duration::from_secs(30);

/// What a successful reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadOutcome {
    pub stats: IndexStats,
    pub bytes: usize,
    pub took: Duration,
}

/// The loader's state, for `/readyz` and operators.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrgDataStatus {
    pub source: String,
    pub loaded: bool,
    pub people: usize,
    pub last_success: Option<SystemTime>,
    pub last_failure: Option<SystemTime>,
    /// The last failure's message; cleared by the next success.
    pub last_error: Option<String>,
    pub failures: u64,
}

/// The org index in use plus how to refresh it. Share it as `Arc<OrgData>`.
#[derive(Debug)]
pub struct OrgData {
    source: Option<OrgDataSource>,
    fetcher: Fetcher,
    current: ArcSwapOption<OrgIndex>,
    /// Serialises reloads: an older fetch finishing late must not replace a newer index.
    reload_lock: tokio::sync::Mutex<()>,
    status: Mutex<OrgDataStatus>,
}

impl OrgData {
    /// A loader for `source`; nothing is loaded until [`OrgData::reload`] (or the reloader) runs.
    pub fn new(source: OrgDataSource) -> Self {
        Self::with_limits(source, Duration::from_secs(60), DEFAULT_MAX_BYTES)
    }

    /// As [`OrgData::new`], with the per-fetch timeout and the largest dump accepted.
    pub fn with_limits(source: OrgDataSource, timeout: Duration, max_bytes: u64) -> Self {
        let status = OrgDataStatus {
            source: source.describe(),
            ..Default::default()
        };
        Self {
            source: Some(source),
            fetcher: Fetcher::new(timeout, max_bytes),
            current: ArcSwapOption::empty(),
            reload_lock: tokio::sync::Mutex::new(()),
            status: Mutex::new(status),
        }
    }

    /// A fixed index with no source (embedding, tests). `reload` reports
    /// [`LoadError::NotConfigured`] and keeps it.
    pub fn from_index(index: OrgIndex) -> Self {
        let status = OrgDataStatus {
            source: "in-memory".to_owned(),
            loaded: true,
            people: index.len(),
            last_success: Some(SystemTime::now()),
            ..Default::default()
        };
        Self {
            source: None,
            fetcher: Fetcher::new(Duration::from_secs(60), DEFAULT_MAX_BYTES),
            current: ArcSwapOption::from_pointee(index),
            reload_lock: tokio::sync::Mutex::new(()),
            status: Mutex::new(status),
        }
    }

    /// The index in use, if one was ever loaded. Lock-free; the `Arc` keeps that index alive
    /// even if a reload replaces it meanwhile.
    pub fn current(&self) -> Option<Arc<OrgIndex>> {
        self.current.load_full()
    }

    /// Runs `f` against the index in use without touching its reference count (the hot path).
    pub fn with_index<R>(&self, f: impl FnOnce(&OrgIndex) -> R) -> Option<R> {
        let guard = self.current.load();
        guard.as_deref().map(f)
    }

    pub fn status(&self) -> OrgDataStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Fetches and parses the source now and swaps the result in. On failure the index in use
    /// stays, the failure counter is incremented, and the error is returned.
    pub async fn reload(&self) -> Result<ReloadOutcome, LoadError> {
        let _one_at_a_time = self.reload_lock.lock().await;
        let Some(source) = &self.source else {
            return Err(LoadError::NotConfigured);
        };
        let label = source.kind();
        let started = std::time::Instant::now();
        match self.load(source).await {
            Ok((index, bytes)) => {
                let stats = index.stats().clone();
                self.current.store(Some(Arc::new(index)));
                let now = SystemTime::now();
                if let Ok(mut s) = self.status.lock() {
                    s.loaded = true;
                    s.people = stats.people;
                    s.last_success = Some(now);
                    s.last_error = None;
                }
                metrics::counter!(METRIC_RELOADS, "source" => label).increment(1);
                metrics::gauge!(METRIC_PEOPLE).set(stats.people as f64);
                metrics::gauge!(METRIC_LAST_SUCCESS).set(unix_secs(now));
                let took = started.elapsed();
                tracing::info!(
                    source = %source.describe(),
                    people = stats.people,
                    with_slack_id = stats.people_with_slack_id,
                    groups = stats.groups,
                    generated_at = stats.generated_at.as_deref().unwrap_or("unknown"),
                    bytes,
                    took_ms = took.as_millis() as u64,
                    "org data loaded"
                );
                Ok(ReloadOutcome { stats, bytes, took })
            }
            Err(e) => {
                let kept = self.current.load().as_ref().map(|i| i.len());
                if let Ok(mut s) = self.status.lock() {
                    s.failures += 1;
                    s.last_failure = Some(SystemTime::now());
                    s.last_error = Some(e.to_string());
                }
                metrics::counter!(METRIC_RELOAD_FAILURES, "source" => label).increment(1);
                match kept {
                    Some(people) => {
                        tracing::warn!(source = %source.describe(), error = %e, kept_people = people, "org data reload failed; keeping the previous index")
                    }
                    None => {
                        tracing::error!(source = %source.describe(), error = %e, "org data could not be loaded; org eligibility is unavailable")
                    }
                }
                Err(e)
            }
        }
    }

    async fn load(&self, source: &OrgDataSource) -> Result<(OrgIndex, usize), LoadError> {
        let bytes = self.fetcher.fetch(source).await?;
        let n = bytes.len();
        let what = source.describe();
        // Parsing a large dump takes a CPU for a while: keep it off the async workers.
        let parsed = tokio::task::spawn_blocking(move || OrgIndex::from_json(&bytes))
            .await
            .map_err(|e| LoadError::Transport {
                what: what.clone(),
                message: format!("parser task failed: {e}"),
                source: Some(Box::new(e)),
            })?;
        parsed
            .map(|i| (i, n))
            .map_err(|source| LoadError::Parse { what, source })
    }

    /// Reloads every `interval` in a background task until the handle is dropped or stopped.
    /// While nothing has loaded yet it retries sooner (every 30 s at most) and starts at once.
    pub fn spawn_reloader(self: &Arc<Self>, interval: Duration) -> ReloaderHandle {
        let this = Arc::clone(self);
        let interval = interval.max(Duration::from_secs(1));
        let task = tokio::spawn(async move {
            let mut attempted = false;
            loop {
                if this.current.load().is_some() {
                    tokio::time::sleep(interval).await;
                } else if attempted {
                    tokio::time::sleep(interval.min(RETRY_WHILE_EMPTY)).await;
                }
                attempted = true;
                // The outcome is logged and counted inside reload.
                let _ = this.reload().await;
            }
        });
        ReloaderHandle { task }
    }
}

fn unix_secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Keeps the background reloader running; dropping it (or [`ReloaderHandle::stop`]) ends it.
#[derive(Debug)]
#[must_use = "the reloader stops when its handle is dropped"]
pub struct ReloaderHandle {
    task: tokio::task::JoinHandle<()>,
}

impl ReloaderHandle {
    pub fn stop(self) {
        // Drop aborts.
    }

    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }
}

impl Drop for ReloaderHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}
