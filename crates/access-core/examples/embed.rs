//! Embedding access-core: an [`Engine`] over the SQLite store with a provider of your own, one
//! request taken from submission to expiry.
//!
//! ```sh
//! cargo run -p access-core --example embed
//! ```
//!
//! The steps a service embedding Gatehouse takes:
//! 1. open a store (here `store-sqlx` on a temporary SQLite file; migrations apply themselves);
//! 2. implement [`Provider`] for the backend that grants access (here it only keeps a list);
//! 3. build the engine with the resources people may ask for and the provider behind them;
//! 4. call [`Engine::submit`] (and `approve`, `deny`, `revoke_grant`, …) from your interface;
//! 5. run the job queue ([`Engine::run_due`] in a loop, or [`Engine::drain`] as here): that is
//!    where the provider is called and where access is taken back when it expires.
//!
//! The clock is a manual one, so the example can move past the grant's end instead of waiting
//! for it; a service passes [`access_core::ports::SystemClock`].

use std::sync::{Arc, Mutex};

use access_core::engine::{Engine, Submission};
use access_core::ports::{
    Clock, GrantOutcome, GrantRequest, Provider, ProviderError, ProviderKind, RevokeOutcome,
    RevokeRequest,
};
use access_core::submission::RawSubmission;
use access_core::{Email, Resource, Subject};
use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};

/// A provider of our own: it "grants" by writing a line, and remembers what it did.
#[derive(Debug, Default)]
struct ListProvider {
    log: Mutex<Vec<String>>,
}

impl ListProvider {
    fn record(&self, line: String) {
        println!("  provider: {line}");
        if let Ok(mut log) = self.log.lock() {
            log.push(line);
        }
    }

    fn lines(&self) -> Vec<String> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

#[async_trait]
impl Provider for ListProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Custom("list".to_string())
    }

    async fn grant(&self, req: &GrantRequest) -> Result<GrantOutcome, ProviderError> {
        self.record(format!(
            "grant {} to {} until {}",
            req.resource.id, req.subject.user_id, req.expires_at
        ));
        Ok(GrantOutcome {
            // What revoke needs to undo exactly this grant (never a secret).
            handle: serde_json::json!({"entry": req.grant_id.to_string()}),
            instructions: "Connect with `psql service=demo`.".into(),
            secret: None,
            events: Vec::new(),
            expires_at: None,
        })
    }

    async fn revoke(&self, req: &RevokeRequest) -> Result<RevokeOutcome, ProviderError> {
        self.record(format!(
            "revoke {} from {}",
            req.resource.id, req.subject.user_id
        ));
        Ok(RevokeOutcome::default())
    }
}

/// A clock that moves only when told to.
#[derive(Debug)]
struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    fn advance(&self, by: Duration) {
        if let Ok(mut now) = self.0.lock() {
            *now += by;
        }
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        self.0.lock().map(|t| *t).unwrap_or_else(|_| Utc::now())
    }
}

/// What the run saw, for the test that runs this example.
#[derive(Debug)]
pub struct Outcome {
    /// The status the request was filed with.
    pub filed: String,
    /// Live grants after provisioning, and after expiry.
    pub live_after_provisioning: usize,
    /// Live grants once the clock passed the grant's end.
    pub live_after_expiry: usize,
    /// What the provider was asked to do, in order.
    pub provider_calls: Vec<String>,
}

/// Runs the whole example against a SQLite database at `db_path`.
pub async fn run(db_path: &std::path::Path) -> Result<Outcome, Box<dyn std::error::Error>> {
    // 1. The store: SQLite in a file (the pool needs one; `:memory:` would give each
    //    connection its own database).
    let url = format!("sqlite://{}?mode=rwc", db_path.display());
    let store = Arc::new(store_sqlx::SqlStore::connect(&url).await?);
    println!("store: {url}");

    // 2. The provider and the clock.
    let provider = Arc::new(ListProvider::default());
    let clock = Arc::new(ManualClock(Mutex::new(Utc::now())));

    // 3. The engine: one resource, approved automatically, behind our provider.
    let resource: Resource = serde_json::from_value(serde_json::json!({
        "id": "demo-db",
        "description": "The demo database",
        "provider": "list",
        "approval": {"mode": "auto"},
        "durations": {"default": "1h", "min": "1m", "max": "8h"},
    }))?;
    let engine = Engine::builder(store, clock.clone())
        .provider_named("list", provider.clone())
        .resources([resource])
        .build()?;

    // 4. Someone asks for two hours.
    let subject = Subject {
        team_id: "T1".into(),
        user_id: "U1".into(),
        email: Some(Email::parse("ada@example.com")?),
        name: "Ada".into(),
    };
    // Parsed once, at the edge: a typo in the resource or the duration is refused here, before
    // anything is written.
    let typed = RawSubmission::new("demo-db", Some("2h".into()), "Investigating a slow query");
    let request = engine
        .submit(Submission::new(subject.clone(), engine.validate(&typed)?))
        .await?;
    println!(
        "submitted: request {} is {} (auto-approved; provisioning is a job)",
        request.id, request.status
    );

    // 5. Jobs: provisioning calls the provider and activates the grant.
    let ran = engine.drain(10).await?;
    println!("jobs run: {:?}", ran.done);
    let live = engine.status(&subject.key()).await?.grants;
    for g in &live {
        println!("grant {}: {} until {}", g.id, g.status, g.expires_at);
    }
    let live_after_provisioning = live.len();

    // 6. Past the grant's end, the expire job takes the access back.
    clock.advance(Duration::hours(3));
    println!("clock moved 3 hours ahead");
    let ran = engine.drain(10).await?;
    println!(
        "jobs run: {:?}, revoked {:?} s after expiry",
        ran.done, ran.revocation_lag_secs
    );
    let live_after_expiry = engine.status(&subject.key()).await?.grants.len();
    println!("live grants now: {live_after_expiry}");

    Ok(Outcome {
        filed: request.status.to_string(),
        live_after_provisioning,
        live_after_expiry,
        provider_calls: provider.lines(),
    })
}

/// A database file of its own, removed (with SQLite's side files) when dropped.
#[derive(Debug)]
pub struct TempDb(pub std::path::PathBuf);

impl TempDb {
    /// A fresh path in the system's temporary directory.
    pub fn new(name: &str) -> Self {
        let stamp = Utc::now().timestamp_nanos_opt().unwrap_or_default();
        Self(std::env::temp_dir().join(format!("{name}-{}-{stamp}.sqlite", std::process::id())))
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut p = self.0.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
    }
}

#[tokio::main]
#[allow(dead_code)] // Also compiled into the test that runs the example, which has its own main.
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let db = TempDb::new("gatehouse-embed");
    let outcome = run(&db.0).await?;
    println!("provider calls: {:?}", outcome.provider_calls);
    Ok(())
}
