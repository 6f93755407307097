//! Builds the engine and its adapters from configuration. Both binaries call [`App::build`], so
//! the server and the cleanup job always run the same code against the same wiring.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use access_core::engine::{Engine, EngineError, EngineSettings};
use access_core::ports::{AuditSink, Clock, Directory, Notifier, Provider, SystemClock};
use access_core::providers::{DryRunProvider, LogNotifier};
use store_sqlx::SqlStore;

use crate::config::{redact_url, Config, ConfigError, Env};
use crate::guard::{TimeLimitedNotifier, TimeLimitedProvider};
use crate::scheduler::SchedulerWaker;

#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("database {url}: {message}")]
    Database { url: String, message: String },
    #[error("{0}")]
    Engine(#[from] EngineError),
    #[error("{0}")]
    Adapter(String),
}

/// Adapters a caller supplies instead of (or in addition to) those built from the environment;
/// used by tests and by services that embed Gatehouse with their own adapters.
#[derive(Debug, Default)]
pub struct Overrides {
    pub providers: HashMap<String, Arc<dyn Provider>>,
    pub notifier: Option<Arc<dyn Notifier>>,
    pub directory: Option<Arc<dyn Directory>>,
    pub audit_sink: Option<Arc<dyn AuditSink>>,
    pub clock: Option<Arc<dyn Clock>>,
}

/// Everything a binary runs.
#[derive(Debug, Clone)]
pub struct App {
    pub engine: Arc<Engine>,
    pub store: Arc<SqlStore>,
    pub waker: Arc<SchedulerWaker>,
    pub config: Config,
    pub env: Env,
    pub max_idle: Duration,
}

impl App {
    pub async fn build(config: Config, env: Env, overrides: Overrides) -> Result<App, ComposeError> {
        let resources = config.resources()?;
        let store = SqlStore::connect(&env.database_url).await.map_err(|e| ComposeError::Database {
            url: redact_url(&env.database_url),
            message: e.to_string(),
        })?;
        let store = Arc::new(store);
        let call_limit = Duration::from_secs(config.server.call_timeout_secs.unwrap_or(60));
        let waker = Arc::new(SchedulerWaker::new());
        let clock = overrides.clock.unwrap_or_else(|| Arc::new(SystemClock));

        let mut builder = Engine::builder(store.clone(), clock)
            .resources(resources)
            .waker(waker.clone())
            .settings(EngineSettings {
                job_lease: chrono::Duration::seconds(config.server.job_lease_secs.unwrap_or(120) as i64),
                approval_channel: env.approval_channel.clone().or_else(|| config.server.approval_channel.clone()),
                ..EngineSettings::default()
            });

        let mut providers: HashMap<String, Arc<dyn Provider>> = HashMap::new();
        providers.insert(DryRunProvider::KIND.to_string(), Arc::new(DryRunProvider::new()));
        providers.extend(overrides.providers);
        for (name, p) in providers {
            builder = builder.provider_named(&name, TimeLimitedProvider::wrap(p, call_limit));
        }

        let notifier: Arc<dyn Notifier> = overrides.notifier.unwrap_or_else(|| Arc::new(LogNotifier));
        builder = builder.notifier(TimeLimitedNotifier::wrap(notifier, call_limit));
        if let Some(d) = overrides.directory {
            builder = builder.directory(d);
        }
        if let Some(s) = overrides.audit_sink {
            builder = builder.audit_sink(s);
        }
        let engine = Arc::new(builder.build()?);
        let max_idle = Duration::from_secs(config.server.max_idle_secs.unwrap_or(30));
        Ok(App { engine, store, waker, config, env, max_idle })
    }
}
