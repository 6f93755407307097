//! The HTTP side: one signed POST per batch, the answer classified for the engine.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use access_core::audit::AuditEvent;
use access_core::webhooks::{DeliveryError, WebhookTransport};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, RETRY_AFTER};

use crate::payload::{Envelope, hec_body};
use crate::signature::{
    DELIVERY_ID_HEADER, EVENT_COUNT_HEADER, SIGNATURE_HEADER, WEBHOOK_ID_HEADER, sign,
};

/// Counter of delivery attempts, by webhook and outcome (`delivered`, `http_4xx`, `http_5xx`,
/// `rate_limited`, `timeout`, `connection`, `redirect`).
pub const METRIC_DELIVERIES: &str = "gatehouse_webhook_deliveries_total";

/// How much of a failing receiver's answer goes into the error (logs, admin API).
const ERROR_EXCERPT_CHARS: usize = 200;

/// A secret that never shows in `Debug` output or errors.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// What the body looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WebhookFormat {
    /// The `gatehouse` JSON envelope (docs/webhooks.md).
    #[default]
    Gatehouse,
    /// Splunk HTTP Event Collector events, with `Authorization: Splunk <token>`.
    SplunkHec,
}

impl WebhookFormat {
    pub fn parse(s: &str) -> Option<WebhookFormat> {
        match s {
            "gatehouse" => Some(WebhookFormat::Gatehouse),
            "splunk_hec" => Some(WebhookFormat::SplunkHec),
            _ => None,
        }
    }
}

/// Why a webhook's configuration is refused (at start, before anything is sent).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookConfigError {
    #[error("webhook '{id}': url is not a valid URL: {message}")]
    BadUrl { id: String, message: String },
    #[error(
        "webhook '{id}': url must be https:// (plain http:// is accepted only for a loopback host such as 127.0.0.1 or localhost, where nothing crosses the network)"
    )]
    NotHttps { id: String },
    #[error("webhook '{id}': the secret is empty")]
    EmptySecret { id: String },
    #[error("webhook '{id}': format \"splunk_hec\" needs a HEC token (token_env)")]
    MissingHecToken { id: String },
    #[error("webhook HTTP client: {0}")]
    Client(String),
}

/// Where and how one webhook is sent.
#[derive(Clone)]
pub struct WebhookEndpoint {
    pub id: String,
    pub url: reqwest::Url,
    pub secret: Secret,
    pub format: WebhookFormat,
    /// Splunk HEC token (`format = SplunkHec` only).
    pub hec_token: Option<Secret>,
    /// Bounds a whole attempt (connect, send, answer); a receiver slower than that counts as a
    /// failed attempt and is retried.
    pub timeout: Duration,
}

impl std::fmt::Debug for WebhookEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The query string and user info may carry a token: shown as `?…` / left out.
        let mut shown = format!(
            "{}://{}{}",
            self.url.scheme(),
            self.url.host_str().unwrap_or_default(),
            self.url.port().map(|p| format!(":{p}")).unwrap_or_default()
        );
        shown.push_str(self.url.path());
        if self.url.query().is_some() {
            shown.push_str("?…");
        }
        f.debug_struct("WebhookEndpoint")
            .field("id", &self.id)
            .field("url", &shown)
            .field("secret", &self.secret)
            .field("format", &self.format)
            .field("hec_token", &self.hec_token)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// The attempt time limit unless configured.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Is `url`'s host this machine? Plain HTTP is allowed there only: the signature proves who
/// sent a delivery but hides nothing, and audit events name people and their access.
pub fn is_loopback(url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl WebhookEndpoint {
    /// Checks the URL (https, or http to a loopback host), the secret and the HEC token.
    pub fn new(
        id: &str,
        url: &str,
        secret: Secret,
        format: WebhookFormat,
        hec_token: Option<Secret>,
    ) -> Result<Self, WebhookConfigError> {
        let parsed = reqwest::Url::parse(url).map_err(|e| WebhookConfigError::BadUrl {
            id: id.to_string(),
            message: e.to_string(),
        })?;
        match parsed.scheme() {
            "https" => {}
            "http" if is_loopback(&parsed) => {}
            _ => {
                return Err(WebhookConfigError::NotHttps { id: id.to_string() });
            }
        }
        if secret.expose().is_empty() {
            return Err(WebhookConfigError::EmptySecret { id: id.to_string() });
        }
        if format == WebhookFormat::SplunkHec && hec_token.as_ref().is_none_or(|t| t.0.is_empty()) {
            return Err(WebhookConfigError::MissingHecToken { id: id.to_string() });
        }
        Ok(Self {
            id: id.to_string(),
            url: parsed,
            secret,
            format,
            hec_token,
            timeout: DEFAULT_TIMEOUT,
        })
    }
}

/// The [`WebhookTransport`] on reqwest (rustls).
#[derive(Debug, Clone)]
pub struct WebhookClient {
    http: reqwest::Client,
    endpoints: HashMap<String, WebhookEndpoint>,
}

impl WebhookClient {
    pub fn new(endpoints: Vec<WebhookEndpoint>) -> Result<Self, WebhookConfigError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            // A redirect would send the signed audit trail somewhere not configured.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("gatehouse-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| WebhookConfigError::Client(e.to_string()))?;
        Ok(Self {
            http,
            endpoints: endpoints.into_iter().map(|e| (e.id.clone(), e)).collect(),
        })
    }

    fn count(webhook: &str, outcome: &'static str) {
        metrics::counter!(METRIC_DELIVERIES, "webhook" => webhook.to_string(), "outcome" => outcome)
            .increment(1);
    }
}

/// `Retry-After` as seconds or an HTTP date.
fn retry_after(headers: &HeaderMap, now: DateTime<Utc>) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = DateTime::parse_from_rfc2822(v).ok()?.with_timezone(&Utc);
    (at - now).to_std().ok()
}

#[async_trait]
impl WebhookTransport for WebhookClient {
    async fn deliver(
        &self,
        webhook: &str,
        events: &[AuditEvent],
        now: DateTime<Utc>,
    ) -> Result<(), DeliveryError> {
        let Some(ep) = self.endpoints.get(webhook) else {
            return Err(DeliveryError::new(format!(
                "webhook '{webhook}' has no endpoint in this process"
            )));
        };
        let delivery_id = uuid::Uuid::new_v4().to_string();
        let body = match ep.format {
            WebhookFormat::Gatehouse => {
                serde_json::to_vec(&Envelope::new(webhook, &delivery_id, now, events))
            }
            WebhookFormat::SplunkHec => hec_body(events),
        }
        .map_err(|e| DeliveryError::new(format!("cannot encode the events: {e}")))?;
        let signature = sign(ep.secret.expose().as_bytes(), now.timestamp(), &body);
        let mut req = self
            .http
            .post(ep.url.clone())
            .timeout(ep.timeout)
            .header(CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, signature)
            .header(WEBHOOK_ID_HEADER, webhook)
            .header(DELIVERY_ID_HEADER, &delivery_id)
            .header(EVENT_COUNT_HEADER, events.len().to_string());
        if let Some(token) = &ep.hec_token {
            req = req.header(AUTHORIZATION, format!("Splunk {}", token.expose()));
        }
        let resp = match req.body(body).send().await {
            Ok(r) => r,
            Err(e) => {
                let timeout = e.is_timeout();
                Self::count(webhook, if timeout { "timeout" } else { "connection" });
                // Without the URL: it may carry a token in its query.
                let e = e.without_url();
                return Err(DeliveryError::new(if timeout {
                    format!("no answer in time: {e}")
                } else {
                    format!("request failed: {e}")
                }));
            }
        };
        let status = resp.status();
        if status.is_success() {
            Self::count(webhook, "delivered");
            return Ok(());
        }
        let wait = retry_after(resp.headers(), now);
        let outcome = if status == StatusCode::TOO_MANY_REQUESTS {
            "rate_limited"
        } else if status.is_server_error() {
            "http_5xx"
        } else if status.is_redirection() {
            "redirect"
        } else {
            "http_4xx"
        };
        Self::count(webhook, outcome);
        let text = resp.text().await.unwrap_or_default();
        let excerpt: String = text.chars().take(ERROR_EXCERPT_CHARS).collect();
        let mut message = format!("HTTP {}", status.as_u16());
        if !excerpt.trim().is_empty() {
            message.push_str(": ");
            message.push_str(excerpt.trim());
        }
        tracing::debug!(webhook, delivery = %delivery_id, status = status.as_u16(), "webhook receiver refused a delivery");
        Err(DeliveryError {
            message,
            retry_after: wait,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn only_https_or_loopback_http() {
        let s = || Secret::new("x");
        let ok = |u: &str| WebhookEndpoint::new("w", u, s(), WebhookFormat::Gatehouse, None);
        assert!(ok("https://siem.example.com/hook").is_ok());
        assert!(ok("http://127.0.0.1:8080/hook").is_ok());
        assert!(ok("http://[::1]:8080/hook").is_ok());
        assert!(ok("http://localhost/hook").is_ok());
        assert_eq!(
            ok("http://siem.example.com/hook").unwrap_err(),
            WebhookConfigError::NotHttps { id: "w".into() }
        );
        assert!(matches!(
            ok("ftp://127.0.0.1/x").unwrap_err(),
            WebhookConfigError::NotHttps { .. }
        ));
        assert!(matches!(
            ok("not a url").unwrap_err(),
            WebhookConfigError::BadUrl { .. }
        ));
        assert!(matches!(
            WebhookEndpoint::new(
                "w",
                "https://a.example",
                Secret::new(""),
                WebhookFormat::Gatehouse,
                None
            )
            .unwrap_err(),
            WebhookConfigError::EmptySecret { .. }
        ));
        assert!(matches!(
            WebhookEndpoint::new(
                "w",
                "https://a.example",
                s(),
                WebhookFormat::SplunkHec,
                None
            )
            .unwrap_err(),
            WebhookConfigError::MissingHecToken { .. }
        ));
    }

    #[test]
    fn secrets_do_not_show_in_debug() {
        let ep = WebhookEndpoint::new(
            "w",
            "https://user:pw-in-url@a.example/hook?token=tok-in-query",
            Secret::new("hunter2"),
            WebhookFormat::SplunkHec,
            Some(Secret::new("hec-token-1")),
        )
        .unwrap();
        let shown = format!("{ep:?}");
        for secret in ["hunter2", "hec-token-1", "pw-in-url", "tok-in-query"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("https://a.example/hook?…"), "{shown}");
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let now = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(7)));
        h.insert(
            RETRY_AFTER,
            "Thu, 01 Jan 2026 00:00:30 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(30)));
        h.insert(RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h, now), None);
    }
}
