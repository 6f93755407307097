//! `[[webhooks]]`: event webhooks (docs/webhooks.md). Parsed and checked here, once, into what
//! the engine needs ([`WebhookSpec`]) and what the transport needs ([`WebhookEndpoint`]); the
//! secrets come from the environment variables the entries name, never from the file.
//!
//! ```toml
//! [[webhooks]]
//! id = "siem"
//! url = "https://siem.example.com/gatehouse"
//! secret_env = "GATEHOUSE_WEBHOOK_SIEM_SECRET"
//! events = ["access_granted", "access_revoked", "access_expired"]   # optional: all kinds
//! max_failures = 10      # consecutive failed attempts before it is disabled
//! batch_size = 100       # events per delivery
//! timeout_secs = 10      # per attempt
//! format = "gatehouse"   # or "splunk_hec" (with token_env)
//! ```

use std::time::Duration;

use access_core::audit::AuditKind;
use access_core::webhooks::{
    DEFAULT_BATCH_SIZE, DEFAULT_MAX_FAILURES, MAX_BATCH_SIZE, WebhookSpec,
};
use serde::Deserialize;
use webhooks::{Secret, WebhookEndpoint, WebhookFormat};

use crate::config::{ConfigError, Env};

/// One `[[webhooks]]` entry, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub id: String,
    pub url: String,
    /// The name of the environment variable holding the HMAC secret.
    pub secret_env: String,
    /// Audit kinds to send; absent: all.
    #[serde(default)]
    pub events: Option<Vec<String>>,
    #[serde(default)]
    pub max_failures: Option<u32>,
    #[serde(default)]
    pub batch_size: Option<u32>,
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    /// `gatehouse` (default) or `splunk_hec`.
    #[serde(default)]
    pub format: Option<String>,
    /// `splunk_hec` only: the environment variable holding the HEC token.
    #[serde(default)]
    pub token_env: Option<String>,
}

/// The checked webhooks: the engine's half and the transport's half.
#[derive(Debug, Clone, Default)]
pub struct ConfiguredWebhooks {
    pub specs: Vec<WebhookSpec>,
    pub endpoints: Vec<WebhookEndpoint>,
}

/// Ids become job ordering keys, metric labels and URL path segments.
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl WebhookConfig {
    fn check(&self, env: &Env) -> Result<(WebhookSpec, WebhookEndpoint), ConfigError> {
        let err = |message: String| ConfigError::Webhook {
            id: self.id.clone(),
            message,
        };
        if !valid_id(&self.id) {
            return Err(err(
                "id must be 1 to 64 letters, digits, '-' or '_'".to_string()
            ));
        }
        let events = self.events(&err)?;
        let max_failures = self.max_failures.unwrap_or(DEFAULT_MAX_FAILURES);
        if max_failures == 0 {
            return Err(err("max_failures must be at least 1".to_string()));
        }
        let batch_size = self.batch_size.unwrap_or(DEFAULT_BATCH_SIZE);
        if !(1..=MAX_BATCH_SIZE).contains(&batch_size) {
            return Err(err(format!(
                "batch_size must be between 1 and {MAX_BATCH_SIZE}"
            )));
        }
        let timeout = Duration::from_secs(self.timeout_secs.unwrap_or(10));
        if timeout.is_zero() || timeout > Duration::from_secs(120) {
            return Err(err("timeout_secs must be between 1 and 120".to_string()));
        }
        let format = match self.format.as_deref() {
            None => WebhookFormat::Gatehouse,
            Some(f) => WebhookFormat::parse(f).ok_or_else(|| {
                err(format!(
                    "unknown format '{f}'; valid formats: gatehouse, splunk_hec"
                ))
            })?,
        };
        let (secret, hec_token) = self.secrets(env, format, &err)?;
        let mut endpoint =
            WebhookEndpoint::new(&self.id, &self.url, Secret::new(secret), format, hec_token)
                .map_err(|e| ConfigError::Webhook {
                    id: self.id.clone(),
                    // The endpoint's own message starts with "webhook '<id>'".
                    message: e
                        .to_string()
                        .trim_start_matches(&format!("webhook '{}': ", self.id))
                        .to_string(),
                })?;
        endpoint.timeout = timeout;
        Ok((
            WebhookSpec {
                id: self.id.clone(),
                events,
                max_failures,
                batch_size,
            },
            endpoint,
        ))
    }

    /// `events`, parsed: `None` sends every kind; duplicates are dropped; empty is refused.
    fn events(
        &self,
        err: &dyn Fn(String) -> ConfigError,
    ) -> Result<Option<Vec<AuditKind>>, ConfigError> {
        Ok(match &self.events {
            None => None,
            Some(names) => {
                let mut kinds = Vec::with_capacity(names.len());
                for n in names {
                    let Some(k) = AuditKind::parse(n) else {
                        let valid: Vec<&str> = AuditKind::ALL.iter().map(|k| k.as_str()).collect();
                        return Err(err(format!(
                            "unknown event kind '{n}'; valid kinds: {}",
                            valid.join(", ")
                        )));
                    };
                    if !kinds.contains(&k) {
                        kinds.push(k);
                    }
                }
                if kinds.is_empty() {
                    return Err(err(
                        "events is empty: it would send nothing (omit it to send every kind)"
                            .to_string(),
                    ));
                }
                Some(kinds)
            }
        })
    }

    /// The signing secret (`secret_env`) and, for Splunk HEC, the token (`token_env`), read
    /// through the one [`Env`].
    fn secrets(
        &self,
        env: &Env,
        format: WebhookFormat,
        err: &dyn Fn(String) -> ConfigError,
    ) -> Result<(String, Option<Secret>), ConfigError> {
        // The error names the variable, never its value.
        let secret = env.var(&self.secret_env).ok_or_else(|| {
            err(format!(
                "the environment variable {} (secret_env) is not set",
                self.secret_env
            ))
        })?;
        let hec_token = match (&self.token_env, format) {
            (Some(name), WebhookFormat::SplunkHec) => {
                Some(Secret::new(env.var(name).ok_or_else(|| {
                    err(format!(
                        "the environment variable {name} (token_env) is not set"
                    ))
                })?))
            }
            (None, WebhookFormat::SplunkHec) => {
                return Err(err(
                    "format \"splunk_hec\" needs token_env (the variable holding the HEC token)"
                        .to_string(),
                ));
            }
            (Some(_), WebhookFormat::Gatehouse) => {
                return Err(err(
                    "token_env is only used with format = \"splunk_hec\"".to_string()
                ));
            }
            (None, WebhookFormat::Gatehouse) => None,
        };
        Ok((secret, hec_token))
    }
}

impl crate::config::Config {
    /// The `[[webhooks]]` entries, checked, with their secrets read through `env`.
    pub fn webhooks(&self, env: &Env) -> Result<ConfiguredWebhooks, ConfigError> {
        let mut out = ConfiguredWebhooks::default();
        for w in &self.webhooks {
            if out.specs.iter().any(|s| s.id == w.id) {
                return Err(ConfigError::Webhook {
                    id: w.id.clone(),
                    message: "two webhooks have this id".to_string(),
                });
            }
            let (spec, endpoint) = w.check(env)?;
            out.specs.push(spec);
            out.endpoints.push(endpoint);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::config::Config;

    fn env() -> Env {
        let mut e = Env::default();
        e.vars.insert("HOOK_SECRET".into(), "s3cr3t-value".into());
        e.vars.insert("HEC".into(), "hec-token".into());
        e
    }

    fn parse(entry: &str) -> Result<ConfiguredWebhooks, ConfigError> {
        Config::from_toml(&format!("[[webhooks]]\n{entry}"), "t.toml")
            .unwrap()
            .webhooks(&env())
    }

    #[test]
    fn a_full_entry_parses() {
        let w = parse(
            r#"id = "siem"
url = "https://siem.example.com/hook"
secret_env = "HOOK_SECRET"
events = ["access_granted", "access_revoked"]
max_failures = 3
batch_size = 20
timeout_secs = 5"#,
        )
        .unwrap();
        assert_eq!(w.specs[0].max_failures, 3);
        assert_eq!(w.specs[0].batch_size, 20);
        assert_eq!(
            w.specs[0].events,
            Some(vec![AuditKind::AccessGranted, AuditKind::AccessRevoked])
        );
        assert_eq!(w.endpoints[0].timeout, Duration::from_secs(5));
    }

    #[test]
    fn bad_entries_are_refused_specifically_without_the_secret() {
        let base = r#"id = "siem"
secret_env = "HOOK_SECRET""#;
        let cases = [
            (
                format!("{base}\nurl = \"http://siem.example.com/x\""),
                "must be https://",
            ),
            (
                r#"id = "siem"
url = "https://a.example"
secret_env = "NOT_SET_ANYWHERE_12345""#
                    .to_string(),
                "NOT_SET_ANYWHERE_12345 (secret_env) is not set",
            ),
            (
                format!(
                    "{base}\nurl = \"https://a.example\"\nevents = [\"access_granted\", \"nope\"]"
                ),
                "unknown event kind 'nope'",
            ),
            (
                format!("{base}\nurl = \"https://a.example\"\nmax_failures = 0"),
                "max_failures must be at least 1",
            ),
            (
                format!("{base}\nurl = \"https://a.example\"\nbatch_size = 5000"),
                "batch_size must be between 1 and 1000",
            ),
            (
                format!("{base}\nurl = \"https://a.example\"\nformat = \"xml\""),
                "unknown format 'xml'",
            ),
            (
                format!("{base}\nurl = \"https://a.example\"\nformat = \"splunk_hec\""),
                "needs token_env",
            ),
        ];
        for (entry, expected) in cases {
            let e = parse(&entry).unwrap_err().to_string();
            assert!(e.contains(expected), "{entry}: {e}");
            assert!(e.starts_with("webhook 'siem': "), "{e}");
            assert!(!e.contains("s3cr3t-value"), "{e}");
        }
        let two = Config::from_toml(
            "[[webhooks]]\nid = \"a\"\nurl = \"https://a.example\"\nsecret_env = \"HOOK_SECRET\"\n\
             [[webhooks]]\nid = \"a\"\nurl = \"https://b.example\"\nsecret_env = \"HOOK_SECRET\"\n",
            "t.toml",
        )
        .unwrap()
        .webhooks(&env())
        .unwrap_err();
        assert!(
            two.to_string().contains("two webhooks have this id"),
            "{two}"
        );
        let hec = parse(
            r#"id = "splunk"
url = "https://splunk.example.com:8088/services/collector/event"
secret_env = "HOOK_SECRET"
format = "splunk_hec"
token_env = "HEC""#,
        )
        .unwrap();
        assert_eq!(hec.endpoints[0].format, WebhookFormat::SplunkHec);
    }
}
