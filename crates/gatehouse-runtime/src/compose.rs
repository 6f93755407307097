//! Builds the engine and its adapters from configuration. Both binaries call [`App::build`], so
//! the server and the cleanup job always run the same code against the same wiring.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use access_core::engine::{Engine, EngineError, EngineSettings};
use access_core::ports::{
    AuditSink, Clock, Directory, Notifier, Provider, ProviderKind, SystemClock,
};
use access_core::providers::{DryRunProvider, LogNotifier};
use access_core::resource::Resource;
use audit_bigquery::BigQuerySink;
use directory::OrgDirectory;
use gcp_auth::{AccessTokenSource, StaticToken};
use provider_cloudconnexa::{CloudConnexaProvider, StoreGroupUsage};
use provider_gcp_iam::GcpIamProvider;
use slack_adapter::{SlackConfig, SlackNotifier};
use store_sqlx::SqlStore;

use crate::config::{Config, ConfigError, Env, redact_url};
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
    #[error(
        "the configuration drops resources that still have live grants: {0}. Keep each with `retired = true` (used only to revoke its grants) until they have ended"
    )]
    StrandedGrants(String),
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

/// The adapters built from the environment, kept typed for what the `Provider` port does not
/// cover (network lists, drift repair, sweeps, table creation).
#[derive(Clone, Default)]
pub struct Adapters {
    pub slack: Option<SlackConfig>,
    pub cloudconnexa: Option<Arc<CloudConnexaProvider>>,
    pub gcp_iam: Option<Arc<GcpIamProvider>>,
    pub bigquery: Option<Arc<BigQuerySink>>,
    /// The org-data index and Slack user groups, with how often the index reloads.
    pub directory: Option<(Arc<OrgDirectory>, Duration)>,
    /// The Slack OAuth install flow (`SLACK_CLIENT_ID`, `SLACK_CLIENT_SECRET`,
    /// `GATEHOUSE_ENCRYPTION_KEY`), when configured.
    pub slack_install: Option<Arc<slack_adapter::oauth::InstallFlow>>,
}

impl std::fmt::Debug for Adapters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Adapters")
            .field("slack", &self.slack.is_some())
            .field("cloudconnexa", &self.cloudconnexa.is_some())
            .field("gcp_iam", &self.gcp_iam.is_some())
            .field("bigquery", &self.bigquery.is_some())
            .field("directory", &self.directory.is_some())
            .field("slack_install", &self.slack_install.is_some())
            .finish()
    }
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
    pub adapters: Adapters,
}

/// Providers this build knows, by the name resources use.
pub const KNOWN_PROVIDERS: [&str; 3] = [DryRunProvider::KIND, "cloudconnexa", "gcp-iam"];

/// A bearer-token source for Google APIs: `GCP_ACCESS_TOKEN` (a fixed token, for emulators and
/// short jobs) or the service-account key in `GCP_SERVICE_ACCOUNT_JSON`.
pub fn google_tokens(env: &Env) -> Result<Arc<dyn AccessTokenSource>, ComposeError> {
    if let Some(t) = env.gcp_access_token() {
        return Ok(Arc::new(StaticToken(t)));
    }
    env.adapter_settings()
        .google_service_account()
        .map(|s| Arc::new(s) as Arc<dyn AccessTokenSource>)
        .map_err(|e| ComposeError::Adapter(format!("Google credentials: {e}")))
}

impl App {
    /// Builds the engine and every adapter `config` and `env` describe; `overrides` replace
    /// the adapters a caller brings itself.
    pub async fn build(
        config: Config,
        env: Env,
        overrides: Overrides,
    ) -> Result<App, ComposeError> {
        let resources = config.resources()?;
        let retired = config.retired_resources()?;
        let store = open_store(&config, &env).await?;
        refuse_stranded_grants(&store, &resources, &retired, &env.database_url).await?;
        let call_limit = Duration::from_secs(config.server.call_timeout_secs.unwrap_or(60));
        let waker = Arc::new(SchedulerWaker::new());
        let clock = overrides.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let mut adapters = Adapters::default();

        let mut builder = Engine::builder(store.clone(), clock.clone())
            .resources(resources.clone())
            .retired_resources(retired.clone())
            .waker(waker.clone())
            .settings(engine_settings(&config, &env)?);
        let wiring = Wiring {
            env: &env,
            store: &store,
            clock: &clock,
        };
        let providers =
            wiring.providers(&resources, &retired, overrides.providers, &mut adapters)?;
        for (name, p) in providers {
            builder = builder.provider_named(&name, TimeLimitedProvider::wrap(p, call_limit));
        }
        let notifier = wiring.notifier(&config, overrides.notifier, &mut adapters)?;
        builder = builder.notifier(TimeLimitedNotifier::wrap(notifier, call_limit));
        match overrides.directory {
            Some(d) => builder = builder.directory(d),
            None => {
                if let Some((dir, every)) = build_directory(&env).await? {
                    adapters.directory = Some((dir.clone(), every));
                    builder = builder.directory(dir);
                }
            }
        }
        match overrides.audit_sink {
            Some(s) => builder = builder.audit_sink(s),
            None => {
                if let Some(sink) = wiring.bigquery(&config)? {
                    adapters.bigquery = Some(sink.clone());
                    builder = builder.audit_sink(sink);
                }
            }
        }
        let hooks = config.webhooks(&env)?;
        if !hooks.specs.is_empty() {
            let client = webhooks::WebhookClient::new(hooks.endpoints)
                .map_err(|e| ComposeError::Adapter(e.to_string()))?;
            builder = builder.webhooks(access_core::webhooks::Webhooks {
                specs: hooks.specs,
                transport: Arc::new(client),
                store: store.clone(),
            });
        }
        let engine = Arc::new(builder.build()?);
        engine.register_webhooks().await?;
        let max_idle = Duration::from_secs(config.server.max_idle_secs.unwrap_or(30));
        Ok(App {
            engine,
            store,
            waker,
            config,
            env,
            max_idle,
            adapters,
        })
    }
}

/// The store at `DATABASE_URL`, keyed with `GATEHOUSE_AUDIT_KEY` when it is set.
async fn open_store(config: &Config, env: &Env) -> Result<Arc<SqlStore>, ComposeError> {
    let store = SqlStore::connect_with(&env.database_url, config.database.store_options())
        .await
        .map_err(|e| ComposeError::Database {
            url: redact_url(&env.database_url),
            message: e.to_string(),
        })?;
    let audit_keys = env.audit_keyring()?;
    match &audit_keys {
        Some(k) => tracing::info!(key_id = k.primary_key_id(), "audit chain is keyed"),
        None => tracing::warn!(
            "GATEHOUSE_AUDIT_KEY is not set: the audit chain is UNKEYED and anyone with write \
             access to the database can rewrite it undetectably; set it in production"
        ),
    }
    Ok(Arc::new(store.with_audit_keys(audit_keys)))
}

/// The engine's settings: `[server]` with the environment's channels over the file's.
fn engine_settings(config: &Config, env: &Env) -> Result<EngineSettings, ComposeError> {
    Ok(EngineSettings {
        job_lease: chrono::Duration::seconds(config.server.job_lease_secs.unwrap_or(120) as i64),
        job_concurrency: config.server.job_concurrency.unwrap_or(8).max(1),
        delivery_concurrency: config
            .server
            .delivery_concurrency
            .unwrap_or(EngineSettings::default().delivery_concurrency)
            .max(1),
        inbox_concurrency: config
            .server
            .inbox_concurrency
            .unwrap_or(EngineSettings::default().inbox_concurrency)
            .max(1),
        approval_channel: env
            .approval_channel
            .clone()
            .or_else(|| config.server.approval_channel.clone()),
        security_channel: env
            .security_channel
            .clone()
            .or_else(|| config.server.security_channel.clone())
            .filter(|c| !c.trim().is_empty()),
        admins: config.server.admin_set()?,
        request_limits: config.server.rate_limits.request_limits()?,
    })
}

/// What building the adapters shares: the environment they are configured from, the store and
/// the clock.
struct Wiring<'a> {
    env: &'a Env,
    store: &'a Arc<SqlStore>,
    clock: &'a Arc<dyn Clock>,
}

impl Wiring<'_> {
    /// One provider per kind the resources use (the dry-run one always), the caller's
    /// overrides taking precedence over those built from the environment.
    fn providers(
        &self,
        resources: &[Resource],
        retired: &[Resource],
        overrides: HashMap<String, Arc<dyn Provider>>,
        adapters: &mut Adapters,
    ) -> Result<HashMap<String, Arc<dyn Provider>>, ComposeError> {
        let mut providers: HashMap<String, Arc<dyn Provider>> = HashMap::new();
        providers.insert(
            DryRunProvider::KIND.to_string(),
            Arc::new(DryRunProvider::new()),
        );
        let wanted: std::collections::BTreeSet<&str> = resources
            .iter()
            .chain(retired)
            .map(|r| r.provider.as_str())
            .collect();
        for kind in wanted {
            if providers.contains_key(kind) || overrides.contains_key(kind) {
                continue;
            }
            let p = self.provider(kind, resources.iter().chain(retired), adapters)?;
            providers.insert(kind.to_string(), p);
        }
        if let Some(cc) = &adapters.cloudconnexa {
            refuse_shared_groups(cc, resources, retired)?;
        }
        providers.extend(overrides);
        Ok(providers)
    }

    /// The provider of one kind this build knows, configured from the environment.
    /// Each provider decodes the settings of the resources it serves once, here: a resource
    /// with bad settings stops the start instead of failing its first grant.
    fn provider<'r>(
        &self,
        kind: &str,
        served: impl Iterator<Item = &'r Resource> + Clone,
        adapters: &mut Adapters,
    ) -> Result<Arc<dyn Provider>, ComposeError> {
        let why =
            |e: &dyn std::fmt::Display| ComposeError::Adapter(format!("provider '{kind}': {e}"));
        let settings = self.env.adapter_settings();
        match ProviderKind::from(kind) {
            ProviderKind::CloudConnexa => {
                let cfg = settings.cloudconnexa().map_err(|e| why(&e))?;
                let usage = Arc::new(StoreGroupUsage::new(self.store.clone()));
                let p = Arc::new(
                    CloudConnexaProvider::new_with_usage(cfg, usage).map_err(|e| why(&e))?,
                );
                p.load_settings(served).map_err(|e| why(&e))?;
                adapters.cloudconnexa = Some(p.clone());
                Ok(p)
            }
            ProviderKind::GcpIam => {
                let p = Arc::new(
                    settings
                        .gcp_iam()
                        .map_err(|e| why(&e))?
                        .with_clock(self.clock.clone()),
                );
                p.load_settings(served).map_err(|e| why(&e))?;
                adapters.gcp_iam = Some(p.clone());
                Ok(p)
            }
            other => Err(ComposeError::Adapter(format!(
                "unknown provider '{other}'; known providers: {}",
                KNOWN_PROVIDERS.join(", ")
            ))),
        }
    }

    /// Slack (one bot token, or many installed workspaces), else the log: the notifier unless
    /// the caller brings one. Records the Slack settings and the install flow in `adapters`.
    fn notifier(
        &self,
        config: &Config,
        overridden: Option<Arc<dyn Notifier>>,
        adapters: &mut Adapters,
    ) -> Result<Arc<dyn Notifier>, ComposeError> {
        let mut slack = self.env.adapter_settings().slack();
        slack.workspace_limiter = Arc::new(slack_adapter::ratelimit::WorkspaceLimiter::new(
            config.server.rate_limits.workspace_limits(),
        ));
        adapters.slack_install = crate::slack_installations::install_flow_from_env(
            self.store.clone(),
            self.env.lookup(),
        )
        .map_err(|e| ComposeError::Adapter(format!("Slack installation: {e}")))?;
        let notifier: Arc<dyn Notifier> = match (overridden, &adapters.slack_install) {
            (Some(n), _) => n,
            // Installed workspaces get their own bot token; SLACK_BOT_TOKEN (if any) serves the rest.
            (None, Some(flow)) => Arc::new(
                SlackNotifier::new(&slack).with_installations(flow.installations().clone()),
            ),
            (None, None) if !slack.bot_token.is_empty() => Arc::new(SlackNotifier::new(&slack)),
            (None, None) => Arc::new(LogNotifier),
        };
        adapters.slack = Some(slack);
        Ok(notifier)
    }

    /// The BigQuery export when `BIGQUERY_PROJECT` is set, writing signed checkpoints on the
    /// `[server]` schedule.
    fn bigquery(&self, config: &Config) -> Result<Option<Arc<BigQuerySink>>, ComposeError> {
        if !self.env.bigquery_enabled() {
            return Ok(None);
        }
        let why = |e: &dyn std::fmt::Display| ComposeError::Adapter(format!("BigQuery: {e}"));
        let cfg = self
            .env
            .adapter_settings()
            .bigquery()
            .map_err(|e| why(&e))?;
        let sink = BigQuerySink::new(cfg, google_tokens(self.env)?)
            .map_err(|e| why(&e))?
            .with_checkpoints(audit_bigquery::sink::CheckpointPolicy {
                keys: self.store.audit_keys().cloned(),
                every_events: config.server.audit_checkpoint_events.unwrap_or(1000),
                every: Duration::from_secs(config.server.audit_checkpoint_secs.unwrap_or(300)),
            });
        Ok(Some(Arc::new(sink)))
    }
}

/// The configuration compared the roles' groups without `NETWORK_GROUP_MAPPING`; with the
/// provider built, compare the groups it will really use.
fn refuse_shared_groups(
    cc: &CloudConnexaProvider,
    resources: &[Resource],
    retired: &[Resource],
) -> Result<(), ComposeError> {
    let all: Vec<&Resource> = resources.iter().chain(retired).collect();
    for r in all.iter().filter(|r| r.id.role().is_some()) {
        let family = all.iter().copied().filter(|o| o.id.base() == r.id.base());
        crate::config::refuse_shared_access(family, &|o| {
            (o.provider == CloudConnexaProvider::KIND)
                .then(|| cc.group_name_for(o).ok())
                .flatten()
                .map(|g| format!("Cloud Connexa group {g}"))
        })?;
    }
    Ok(())
}

/// A grant whose resource is gone from the configuration can never be revoked (the engine no
/// longer knows its provider): refuse to start rather than let it outlive its expiry.
async fn refuse_stranded_grants(
    store: &SqlStore,
    resources: &[Resource],
    retired: &[Resource],
    url: &str,
) -> Result<(), ComposeError> {
    let live = store
        .live_grants_by_resource()
        .await
        .map_err(|e| ComposeError::Database {
            url: redact_url(url),
            message: e.to_string(),
        })?;
    let stranded: Vec<String> = live
        .into_iter()
        .filter(|(id, _)| {
            !resources
                .iter()
                .chain(retired)
                .any(|r| r.id.as_str() == id.as_str())
        })
        .map(|(id, n)| {
            let s = if n == 1 { "" } else { "s" };
            format!("'{id}' ({n} live grant{s})")
        })
        .collect();
    if stranded.is_empty() {
        Ok(())
    } else {
        Err(ComposeError::StrandedGrants(stranded.join(", ")))
    }
}

/// The directory from `env` (`ORG_DATA_*`, Slack user groups through
/// `SLACK_BOT_TOKEN`), with its first load done. None when nothing is configured: eligibility
/// rules that need a directory then answer "Organizational data service is not available".
async fn build_directory(env: &Env) -> Result<Option<(Arc<OrgDirectory>, Duration)>, ComposeError> {
    let cfg = env
        .adapter_settings()
        .directory()
        .map_err(|e| ComposeError::Adapter(format!("directory: {e}")))?;
    if cfg.org_data.is_none() && cfg.slack_groups.is_none() {
        return Ok(None);
    }
    let google = match &cfg.org_data {
        Some(o) if o.needs_google_credentials() => Some(google_tokens(env)?),
        _ => None,
    };
    let every = cfg
        .org_data
        .as_ref()
        .map(|o| o.reload_interval())
        .unwrap_or(Duration::from_secs(300));
    let dir = Arc::new(
        cfg.build(google)
            .map_err(|e| ComposeError::Adapter(format!("directory: {e}")))?,
    );
    if let Some(org) = dir.org_data() {
        // A failed first load is not fatal: the reloader keeps trying, and until it succeeds
        // org rules answer that the directory is unavailable (nothing is granted on a guess).
        if let Err(e) = org.reload().await {
            tracing::error!(error = %e, "org data could not be loaded; org eligibility rules will refuse until it loads");
        }
    }
    Ok(Some((dir, every)))
}
