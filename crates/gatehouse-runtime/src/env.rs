//! The environment, read once: [`Env::from_process`] is the only place in the server, the cleanup
//! job and the crates they compose that reads process variables. Every adapter gets its typed
//! settings built from this snapshot (see [`AdapterSettings`]), so a test or an embedding service
//! configures Gatehouse with a map ([`Env::from_vars`]) and never has to touch the process
//! environment.

use std::collections::HashMap;

use crate::config::{ConfigError, redact_url};

/// Where the database is when `DATABASE_URL` is unset: a SQLite file next to the process.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://gatehouse.db?mode=rwc";

/// Secrets and deployment settings from the environment (names from the source documents where
/// they have one). The named fields are the ones the runtime itself uses; everything else an
/// adapter or a `*_env` key of the configuration names is looked up in [`Env::vars`].
#[derive(Clone, Default)]
pub struct Env {
    /// `DATABASE_URL` (default [`DEFAULT_DATABASE_URL`]).
    pub database_url: String,
    /// `GATEHOUSE_ADMIN_TOKEN`: the admin API's bearer token; the API is disabled without it.
    pub admin_token: Option<String>,
    /// `APPROVAL_CHANNEL` (overrides `[server] approval_channel`).
    pub approval_channel: Option<String>,
    /// `SECURITY_CHANNEL`: where break-glass notices go (overrides `[server] security_channel`).
    pub security_channel: Option<String>,
    /// `GATEHOUSE_AUDIT_KEY`, unparsed (see [`Env::audit_keyring`]). Never logged.
    pub audit_key: Option<String>,
    /// Every other variable: the adapters' settings (`SLACK_*`, `CLOUDCONNEXA_*`, `GCP_*`,
    /// `BIGQUERY_*`, `ORG_DATA_*`, …) and the variables the configuration names (webhook
    /// `secret_env`, `token_env`). [`Env::from_process`] fills it with the whole process
    /// environment; tests and embedders insert what they need. Never logged.
    pub vars: HashMap<String, String>,
}

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&String> = self.vars.keys().collect();
        names.sort();
        f.debug_struct("Env")
            .field("database_url", &redact_url(&self.database_url))
            .field(
                "admin_token",
                &self.admin_token.as_ref().map(|_| "<redacted>"),
            )
            .field("approval_channel", &self.approval_channel)
            .field("security_channel", &self.security_channel)
            .field("audit_key", &self.audit_key.as_ref().map(|_| "<redacted>"))
            .field("vars", &names)
            .finish()
    }
}

/// The variables held in [`Env`]'s named fields, so [`Env::var`] answers them from the field
/// (a test that sets `admin_token` sets it for every adapter that reads `GATEHOUSE_ADMIN_TOKEN`).
const DATABASE_URL: &str = "DATABASE_URL";
const ADMIN_TOKEN: &str = "GATEHOUSE_ADMIN_TOKEN";
const APPROVAL_CHANNEL: &str = "APPROVAL_CHANNEL";
const SECURITY_CHANNEL: &str = "SECURITY_CHANNEL";

impl Env {
    /// Reads the process environment, once. Variables that are not valid UTF-8 are skipped (as
    /// each adapter's own read used to treat them: unset).
    pub fn from_process() -> Self {
        Self::from_vars(
            std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
        )
    }

    /// The settings a given set of variables describes, exactly as [`Env::from_process`] would
    /// read them from a process with this environment. Blank values count as unset.
    pub fn from_vars(vars: HashMap<String, String>) -> Self {
        let get = |k: &str| vars.get(k).filter(|v| !v.trim().is_empty()).cloned();
        Self {
            database_url: get(DATABASE_URL).unwrap_or_else(|| DEFAULT_DATABASE_URL.to_string()),
            admin_token: get(ADMIN_TOKEN),
            approval_channel: get(APPROVAL_CHANNEL),
            security_channel: get(SECURITY_CHANNEL),
            audit_key: get(access_core::audit::AUDIT_KEY_ENV),
            vars,
        }
    }

    /// One variable: the named fields for the variables they hold, else [`Env::vars`]; blank
    /// counts as unset.
    pub fn var(&self, name: &str) -> Option<String> {
        let field = match name {
            DATABASE_URL => Some(Some(self.database_url.clone())),
            ADMIN_TOKEN => Some(self.admin_token.clone()),
            APPROVAL_CHANNEL => Some(self.approval_channel.clone()),
            SECURITY_CHANNEL => Some(self.security_channel.clone()),
            n if n == access_core::audit::AUDIT_KEY_ENV => Some(self.audit_key.clone()),
            _ => None,
        };
        field
            .unwrap_or_else(|| self.vars.get(name).cloned())
            .filter(|v| !v.trim().is_empty())
    }

    /// [`Env::var`] as the lookup function the adapters' `from_lookup` constructors take.
    pub fn lookup(&self) -> impl Fn(&str) -> Option<String> + '_ {
        |name| self.var(name)
    }

    /// The audit keyring from `GATEHOUSE_AUDIT_KEY` (same format and parser as
    /// `GATEHOUSE_ENCRYPTION_KEY`). `Ok(None)` when unset: the server still starts (development)
    /// and the chain stays unkeyed; a malformed value is an error, never a silent fallback.
    pub fn audit_keyring(&self) -> Result<Option<access_core::audit::AuditKeyring>, ConfigError> {
        self.audit_key
            .as_deref()
            .map(|spec| {
                access_core::audit::AuditKeyring::from_spec(spec).map_err(|e| ConfigError::Env {
                    name: access_core::audit::AUDIT_KEY_ENV,
                    message: e.to_string(),
                })
            })
            .transpose()
    }

    /// `RUST_LOG`: the log filter (default `info,sqlx=warn`).
    pub fn log_filter(&self) -> Option<String> {
        self.var("RUST_LOG")
    }

    /// `GATEHOUSE_LOG_FORMAT=json`: structured logs.
    pub fn log_json(&self) -> bool {
        self.var("GATEHOUSE_LOG_FORMAT")
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("json"))
    }

    /// `GCP_ACCESS_TOKEN`: a fixed Google token (emulators, short jobs) instead of the
    /// service-account key.
    pub fn gcp_access_token(&self) -> Option<String> {
        self.var("GCP_ACCESS_TOKEN")
    }

    /// Whether BigQuery export is configured (`BIGQUERY_PROJECT` set).
    pub fn bigquery_enabled(&self) -> bool {
        self.var("BIGQUERY_PROJECT").is_some()
    }

    /// Every adapter's settings, decoded from this environment.
    pub fn adapter_settings(&self) -> AdapterSettings<'_> {
        AdapterSettings { env: self }
    }
}

/// Each adapter's typed settings, decoded from one [`Env`]: the adapters define what their
/// variables mean (`from_lookup`), the runtime decides where the values come from.
#[derive(Debug, Clone, Copy)]
pub struct AdapterSettings<'e> {
    env: &'e Env,
}

impl AdapterSettings<'_> {
    /// `SLACK_BOT_TOKEN`, `SLACK_SIGNING_SECRET`, `SLACK_API_URL`, `APPROVAL_CHANNEL`, tuning.
    pub fn slack(&self) -> slack_adapter::SlackConfig {
        slack_adapter::SlackConfig::from_lookup(self.env.lookup())
    }

    /// Socket Mode when `SLACK_APP_TOKEN` is set.
    pub fn socket_mode(&self) -> Option<slack_adapter::socket_mode::SocketModeConfig> {
        slack_adapter::socket_mode::SocketModeConfig::from_lookup(self.env.lookup())
    }

    /// The Slack OAuth install flow's settings (`SLACK_CLIENT_ID`, `SLACK_CLIENT_SECRET`, …).
    pub fn slack_oauth(&self) -> slack_adapter::oauth::OAuthConfig {
        slack_adapter::oauth::OAuthConfig::from_lookup(self.env.lookup())
    }

    /// `CLOUDCONNEXA_*` and `NETWORK_GROUP_MAPPING`.
    pub fn cloudconnexa(
        &self,
    ) -> Result<provider_cloudconnexa::ProviderConfig, provider_cloudconnexa::CloudConnexaError>
    {
        provider_cloudconnexa::ProviderConfig::from_lookup(self.env.lookup())
    }

    /// The GCP IAM provider: `GCP_SERVICE_ACCOUNT_JSON`, `GCP_IAM_API_URL`, `GCP_CRM_API_URL`,
    /// `GCP_ACCESS_DRY_RUN`.
    pub fn gcp_iam(
        &self,
    ) -> Result<provider_gcp_iam::GcpIamProvider, access_core::ports::ProviderError> {
        provider_gcp_iam::GcpIamProvider::from_lookup(self.env.lookup())
    }

    /// The Google service-account key of `GCP_SERVICE_ACCOUNT_JSON`.
    pub fn google_service_account(
        &self,
    ) -> Result<gcp_auth::ServiceAccountTokenSource, gcp_auth::AuthError> {
        gcp_auth::ServiceAccountTokenSource::from_lookup(self.env.lookup())
    }

    /// `BIGQUERY_*` (call only when [`Env::bigquery_enabled`]).
    pub fn bigquery(
        &self,
    ) -> Result<audit_bigquery::BigQueryConfig, audit_bigquery::BigQueryError> {
        audit_bigquery::BigQueryConfig::from_lookup(self.env.lookup())
    }

    /// `ORG_DATA_*` and the Slack user groups (`SLACK_BOT_TOKEN`, …).
    pub fn directory(&self) -> Result<directory::DirectoryConfig, directory::ConfigError> {
        directory::DirectoryConfig::from_env_with(self.env.lookup())
    }

    /// `GATEHOUSE_ENCRYPTION_KEY`: the key that seals Slack installation tokens; `Ok(None)` when
    /// unset. (The web console's sign-in is built by the server from [`Env::lookup`]: the console
    /// crate is not a dependency of the runtime.)
    pub fn encryption_key(
        &self,
    ) -> Result<Option<slack_adapter::crypto::TokenCipher>, slack_adapter::crypto::CryptoError>
    {
        slack_adapter::crypto::TokenCipher::from_lookup(self.env.lookup())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_vars(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn named_variables_fill_the_fields_and_blank_counts_as_unset() {
        let e = env(&[
            ("DATABASE_URL", "postgres://u:secret@db/x"),
            ("GATEHOUSE_ADMIN_TOKEN", "t"),
            ("APPROVAL_CHANNEL", "  "),
            ("SECURITY_CHANNEL", "sec"),
            ("SLACK_BOT_TOKEN", "xoxb-1"),
        ]);
        assert_eq!(e.database_url, "postgres://u:secret@db/x");
        assert_eq!(e.admin_token.as_deref(), Some("t"));
        assert_eq!(e.approval_channel, None);
        assert_eq!(e.security_channel.as_deref(), Some("sec"));
        assert_eq!(e.var("SLACK_BOT_TOKEN").as_deref(), Some("xoxb-1"));
        assert_eq!(env(&[]).database_url, DEFAULT_DATABASE_URL);
        let debug = format!("{e:?}");
        assert!(
            !debug.contains("secret") && !debug.contains("xoxb-1"),
            "{debug}"
        );
    }

    #[test]
    fn a_field_set_in_code_is_what_every_adapter_reads() {
        let mut e = env(&[("GATEHOUSE_ADMIN_TOKEN", "from-vars")]);
        e.admin_token = Some("from-field".into());
        assert_eq!(
            e.var("GATEHOUSE_ADMIN_TOKEN").as_deref(),
            Some("from-field")
        );
        let oauth = e.adapter_settings().slack_oauth();
        assert_eq!(oauth.admin_token.expose(), "from-field");
    }

    #[test]
    fn adapters_get_their_settings_from_the_map() {
        let e = env(&[
            ("SLACK_BOT_TOKEN", "xoxb-1"),
            ("SLACK_API_URL", "http://slack.test/api/"),
            ("SLACK_APP_TOKEN", "xapp-1"),
            ("BIGQUERY_PROJECT", "proj-1"),
            ("ORG_DATA_FILE", "/tmp/org.json"),
            ("GATEHOUSE_LOG_FORMAT", "JSON"),
        ]);
        let s = e.adapter_settings();
        assert_eq!(s.slack().bot_token.expose(), "xoxb-1");
        assert_eq!(s.slack().api_url, "http://slack.test/api");
        assert!(s.socket_mode().is_some());
        assert!(e.bigquery_enabled());
        assert_eq!(s.bigquery().unwrap().project, "proj-1");
        assert!(s.directory().unwrap().org_data.is_some());
        assert!(e.log_json());
        assert!(s.cloudconnexa().is_err(), "CLOUDCONNEXA_* are not set");
        assert!(matches!(s.encryption_key(), Ok(None)));
        assert!(!env(&[]).bigquery_enabled());
    }
}
