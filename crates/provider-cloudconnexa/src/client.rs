//! The Cloud Connexa v1 REST client: client-credentials token (cached, refreshed on 401),
//! throttling from the `X-RateLimit-*` headers, retries of 429 and (for idempotent calls) 5xx,
//! pagination, and the error envelope mapped to [`CloudConnexaError`].

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use crate::error::{CloudConnexaError, ErrorEnvelope};
use crate::models::{
    Network, Page, TokenResponse, User, UserCreate, UserGroup, UserGroupRequest, UserUpdate,
};
use crate::ratelimit::{CallClass, RateHeaders, RateLimitConfig, RateLimiter};

/// A secret string: never printed by `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The value, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Self(s)
    }
}

/// How to reach one Cloud Connexa tenant.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `https://<cloud_id>.api.openvpn.com` (no `/api/v1`): `CLOUDCONNEXA_API_URL`.
    pub base_url: String,
    /// `CLOUDCONNEXA_CLIENT_ID`.
    pub client_id: String,
    /// `CLOUDCONNEXA_CLIENT_SECRET`.
    pub client_secret: Secret,
    /// Page size for list calls (1–1000; default 1000 to spend as few rate-limited calls as
    /// possible).
    pub page_size: u32,
    /// Per-request timeout (default 30 s).
    pub request_timeout: Duration,
    pub rate_limits: RateLimitConfig,
}

impl ClientConfig {
    pub const ENV_URL: &'static str = "CLOUDCONNEXA_API_URL";
    pub const ENV_CLIENT_ID: &'static str = "CLOUDCONNEXA_CLIENT_ID";
    pub const ENV_CLIENT_SECRET: &'static str = "CLOUDCONNEXA_CLIENT_SECRET";

    pub fn new(
        base_url: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
    ) -> Self {
        Self {
            base_url: base_url.into(),
            client_id: client_id.into(),
            client_secret: Secret::new(client_secret),
            page_size: 1000,
            request_timeout: Duration::from_secs(30),
            rate_limits: RateLimitConfig::default(),
        }
    }

    /// From `CLOUDCONNEXA_API_URL`, `CLOUDCONNEXA_CLIENT_ID`, `CLOUDCONNEXA_CLIENT_SECRET`, read
    /// through `get` (the server's snapshot of the environment; scripts the process environment).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, CloudConnexaError> {
        let var = |name: &str| {
            get(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .ok_or_else(|| CloudConnexaError::Config(format!("{name} is not set")))
        };
        Ok(Self::new(
            var(Self::ENV_URL)?,
            var(Self::ENV_CLIENT_ID)?,
            var(Self::ENV_CLIENT_SECRET)?,
        ))
    }
}

/// Counters, for tests, metrics and the report of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// HTTP requests sent to API endpoints (not counting the token endpoint).
    pub requests: u64,
    /// 429 answers received.
    pub throttled: u64,
    /// Retries after 5xx or timeouts.
    pub retries: u64,
    /// Tokens fetched.
    pub token_fetches: u64,
    /// Calls repeated with a fresh token after a 401.
    pub token_refreshes_on_401: u64,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    throttled: AtomicU64,
    retries: AtomicU64,
    token_fetches: AtomicU64,
    refreshes: AtomicU64,
}

struct CachedToken {
    value: Secret,
    refresh_at: Instant,
}

struct Inner {
    http: reqwest::Client,
    base: String,
    client_id: String,
    client_secret: Secret,
    page_size: u32,
    limits: RateLimitConfig,
    limiter: RateLimiter,
    token: tokio::sync::Mutex<Option<CachedToken>>,
    counters: Counters,
}

/// A Cloud Connexa API client. Cheap to clone; clones share the token, the rate limiter and the
/// counters.
#[derive(Clone)]
pub struct CloudConnexaClient {
    inner: Arc<Inner>,
}

impl fmt::Debug for CloudConnexaClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CloudConnexaClient")
            .field("base", &self.inner.base)
            .field("client_id", &self.inner.client_id)
            .field("client_secret", &self.inner.client_secret)
            .finish_non_exhaustive()
    }
}

/// The error for a final, non-retried answer: 401 (after a fresh token), 403, 404 (or a 400
/// saying "not found"), and any other refusal.
fn refusal(status: u16, envelope: ErrorEnvelope, path: &str) -> CloudConnexaError {
    match status {
        401 => CloudConnexaError::Unauthorized {
            status,
            message: envelope.summary(),
        },
        403 => CloudConnexaError::Forbidden {
            message: envelope.summary(),
        },
        404 => CloudConnexaError::NotFound {
            what: describe(path),
            status,
            message: envelope.summary(),
        },
        400 if envelope.says_not_found() => CloudConnexaError::NotFound {
            what: describe(path),
            status,
            message: envelope.summary(),
        },
        _ => CloudConnexaError::Rejected { status, envelope },
    }
}

/// Lets a call say which object it concerns, so a not-found error can name it.
fn describe(path: &str) -> String {
    let parts: Vec<&str> = path.trim_start_matches("/api/v1/").split('/').collect();
    match parts.as_slice() {
        ["users", id, ..] => format!("user {id}"),
        ["user-groups", id, ..] => format!("user group {id}"),
        ["networks", id, ..] => format!("network {id}"),
        _ => path.to_string(),
    }
}

impl CloudConnexaClient {
    pub fn new(cfg: ClientConfig) -> Result<Self, CloudConnexaError> {
        let base = cfg.base_url.trim().trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(CloudConnexaError::Config(format!(
                "{} must be an http(s) URL such as https://<cloud_id>.api.openvpn.com, got '{base}'",
                ClientConfig::ENV_URL
            )));
        }
        if cfg.client_id.trim().is_empty() || cfg.client_secret.expose().is_empty() {
            return Err(CloudConnexaError::Config(
                "client id and client secret are required".into(),
            ));
        }
        let http = reqwest::Client::builder()
            .timeout(cfg.request_timeout)
            .connect_timeout(cfg.request_timeout.min(Duration::from_secs(10)))
            .user_agent(concat!(
                "gatehouse-provider-cloudconnexa/",
                env!("CARGO_PKG_VERSION")
            ))
            .build()
            .map_err(|e| CloudConnexaError::Config(format!("HTTP client: {}", e.without_url())))?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                base,
                client_id: cfg.client_id.trim().to_string(),
                client_secret: cfg.client_secret,
                page_size: cfg.page_size.clamp(1, 1000),
                limiter: RateLimiter::new(&cfg.rate_limits),
                limits: cfg.rate_limits,
                token: tokio::sync::Mutex::new(None),
                counters: Counters::default(),
            }),
        })
    }

    pub fn base_url(&self) -> &str {
        &self.inner.base
    }

    pub fn stats(&self) -> ClientStats {
        let c = &self.inner.counters;
        ClientStats {
            requests: c.requests.load(Ordering::Relaxed),
            throttled: c.throttled.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            token_fetches: c.token_fetches.load(Ordering::Relaxed),
            token_refreshes_on_401: c.refreshes.load(Ordering::Relaxed),
        }
    }

    pub fn limiter(&self) -> &RateLimiter {
        &self.inner.limiter
    }

    // --------------------------------------------------------------------------------------------
    // Token

    /// A valid bearer token, fetched when there is none or it is about to expire. Callers that
    /// arrive while a fetch is under way wait for it instead of fetching their own.
    async fn token(&self) -> Result<Secret, CloudConnexaError> {
        let mut slot = self.inner.token.lock().await;
        if let Some(t) = slot.as_ref().filter(|t| Instant::now() < t.refresh_at) {
            return Ok(t.value.clone());
        }
        let fresh = self.fetch_token().await?;
        let value = fresh.value.clone();
        *slot = Some(fresh);
        Ok(value)
    }

    /// Forgets `used` (and only it: another caller may already have replaced it).
    async fn invalidate_token(&self, used: &Secret) {
        let mut slot = self.inner.token.lock().await;
        if slot.as_ref().is_some_and(|t| &t.value == used) {
            *slot = None;
        }
    }

    async fn fetch_token(&self) -> Result<CachedToken, CloudConnexaError> {
        let url = format!("{}/api/v1/oauth/token", self.inner.base);
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            self.inner
                .counters
                .token_fetches
                .fetch_add(1, Ordering::Relaxed);
            // As documented for v1: credentials as query parameters, no authentication header.
            let sent = self
                .inner
                .http
                .post(&url)
                .query(&[
                    ("client_id", self.inner.client_id.as_str()),
                    ("client_secret", self.inner.client_secret.expose()),
                    ("grant_type", "client_credentials"),
                ])
                .header(reqwest::header::ACCEPT, "application/json")
                .send()
                .await;
            let resp = match sent {
                Ok(r) => r,
                Err(e) => {
                    let err = CloudConnexaError::from_reqwest(e);
                    if attempt < self.inner.limits.max_attempts_5xx {
                        self.inner.counters.retries.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(self.inner.limits.backoff(attempt)).await;
                        continue;
                    }
                    return Err(err);
                }
            };
            let status = resp.status();
            let body = resp
                .bytes()
                .await
                .map_err(CloudConnexaError::from_reqwest)?;
            if status.is_success() {
                let t: TokenResponse =
                    serde_json::from_slice(&body).map_err(|e| CloudConnexaError::Decode {
                        context: "token response".into(),
                        source: Some(e),
                    })?;
                if t.access_token.is_empty() {
                    return Err(CloudConnexaError::decode(
                        "token response without access_token",
                    ));
                }
                tracing::debug!(
                    expires_in = t.expires_in,
                    "fetched Cloud Connexa access token"
                );
                return Ok(CachedToken {
                    value: Secret::new(t.access_token),
                    refresh_at: token_refresh_at(t.expires_in, Instant::now()),
                });
            }
            let envelope: ErrorEnvelope = serde_json::from_slice(&body).unwrap_or_default();
            let message = envelope.summary();
            match status.as_u16() {
                429 if attempt < self.inner.limits.max_attempts_429 => {
                    self.inner
                        .counters
                        .throttled
                        .fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(self.inner.limits.backoff(attempt)).await;
                }
                429 => return Err(CloudConnexaError::RateLimited { attempts: attempt }),
                s @ 500..=599 if attempt < self.inner.limits.max_attempts_5xx => {
                    tracing::warn!(status = s, "Cloud Connexa token endpoint failed; retrying");
                    self.inner.counters.retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(self.inner.limits.backoff(attempt)).await;
                }
                s @ 500..=599 => return Err(CloudConnexaError::Server { status: s, message }),
                403 => return Err(CloudConnexaError::Forbidden { message }),
                s => return Err(CloudConnexaError::Unauthorized { status: s, message }),
            }
        }
    }

    // --------------------------------------------------------------------------------------------
    // Requests

    /// One API call with throttling, retries and error mapping. `Ok(None)` for an empty 2xx body.
    async fn call<T: DeserializeOwned, B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&B>,
    ) -> Result<Option<T>, CloudConnexaError> {
        let class = if method == Method::GET {
            CallClass::Read
        } else {
            CallClass::Write
        };
        // POST creates: repeating one whose answer was lost could create twice. The caller's
        // find-or-create runs again from the top instead.
        let idempotent = method != Method::POST;
        let url = format!("{}{}", self.inner.base, path);
        let limits = &self.inner.limits;
        let (mut throttled, mut failures, mut refreshed) = (0u32, 0u32, false);
        loop {
            let token = self.token().await?;
            let sent = self.send_once(&method, &url, query, body, class, &token);
            let (status, resp) = match sent.await {
                Ok(answer) => answer,
                Err(err) => {
                    failures += 1;
                    if idempotent && failures < limits.max_attempts_5xx {
                        tracing::warn!(%method, path, error = %err, "Cloud Connexa call failed; retrying");
                        self.inner.counters.retries.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(limits.backoff(failures)).await;
                        continue;
                    }
                    return Err(err);
                }
            };
            let bytes = resp
                .bytes()
                .await
                .map_err(CloudConnexaError::from_reqwest)?;
            if status.is_success() {
                if bytes.iter().all(|b| b.is_ascii_whitespace()) {
                    return Ok(None);
                }
                return serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                    CloudConnexaError::Decode {
                        context: format!("{method} {path}"),
                        source: Some(e),
                    }
                });
            }
            let envelope: ErrorEnvelope = serde_json::from_slice(&bytes).unwrap_or_default();
            match status.as_u16() {
                401 if !refreshed => {
                    // Expired or revoked token: fetch a new one and repeat the call once.
                    tracing::debug!(path, "Cloud Connexa answered 401; refreshing the token");
                    self.inner
                        .counters
                        .refreshes
                        .fetch_add(1, Ordering::Relaxed);
                    self.invalidate_token(&token).await;
                    refreshed = true;
                }
                429 => {
                    throttled += 1;
                    self.inner
                        .counters
                        .throttled
                        .fetch_add(1, Ordering::Relaxed);
                    if throttled >= limits.max_attempts_429 {
                        return Err(CloudConnexaError::RateLimited {
                            attempts: throttled,
                        });
                    }
                    let wait = limits.backoff(throttled);
                    tracing::debug!(
                        path,
                        attempt = throttled,
                        wait_ms = wait.as_millis() as u64,
                        "Cloud Connexa 429"
                    );
                    tokio::time::sleep(wait).await;
                }
                s @ 500..=599 => {
                    failures += 1;
                    let message = if envelope.summary().is_empty() {
                        String::from_utf8_lossy(&bytes).chars().take(200).collect()
                    } else {
                        envelope.summary()
                    };
                    if idempotent && failures < limits.max_attempts_5xx {
                        tracing::warn!(%method, path, status = s, "Cloud Connexa server error; retrying");
                        self.inner.counters.retries.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(limits.backoff(failures)).await;
                        continue;
                    }
                    return Err(CloudConnexaError::Server { status: s, message });
                }
                s => return Err(refusal(s, envelope, path)),
            }
        }
    }

    /// Sends one request once (after a rate-limit token), and reads the answer: its status and
    /// body. The limiter learns from the answer's headers.
    async fn send_once<B: Serialize + ?Sized>(
        &self,
        method: &Method,
        url: &str,
        query: &[(&str, String)],
        body: Option<&B>,
        class: CallClass,
        token: &Secret,
    ) -> Result<(StatusCode, reqwest::Response), CloudConnexaError> {
        let permit = self.inner.limiter.acquire(class).await;
        self.inner.counters.requests.fetch_add(1, Ordering::Relaxed);
        let mut req = self
            .inner
            .http
            .request(method.clone(), url)
            .bearer_auth(token.expose())
            .header(reqwest::header::ACCEPT, "application/json");
        if !query.is_empty() {
            req = req.query(query);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                self.inner.limiter.release(permit);
                return Err(CloudConnexaError::from_reqwest(e));
            }
        };
        let status = resp.status();
        let rate = RateHeaders::parse(resp.headers());
        self.inner
            .limiter
            .observe(permit, &rate, status == StatusCode::TOO_MANY_REQUESTS);
        Ok((status, resp))
    }

    async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T, CloudConnexaError> {
        self.call::<T, ()>(Method::GET, path, query, None)
            .await?
            .ok_or_else(|| CloudConnexaError::decode(format!("GET {path}: empty body")))
    }

    async fn send_json<T: DeserializeOwned, B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        body: &B,
    ) -> Result<T, CloudConnexaError> {
        let m = method.clone();
        self.call::<T, B>(method, path, &[], Some(body))
            .await?
            .ok_or_else(|| CloudConnexaError::decode(format!("{m} {path}: empty body")))
    }

    async fn delete(&self, path: &str) -> Result<(), CloudConnexaError> {
        self.call::<serde_json::Value, ()>(Method::DELETE, path, &[], None)
            .await
            .map(|_| ())
    }

    /// One page of a list endpoint.
    pub async fn page<T: DeserializeOwned>(
        &self,
        path: &str,
        page: u32,
        size: u32,
    ) -> Result<Page<T>, CloudConnexaError> {
        self.get(
            path,
            &[
                ("page", page.to_string()),
                ("size", size.clamp(1, 1000).to_string()),
            ],
        )
        .await
    }

    /// Every element of a list endpoint: pages from 0 until `totalPages`.
    pub async fn list_all<T: DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<Vec<T>, CloudConnexaError> {
        let mut out = Vec::new();
        let mut page = 0u32;
        loop {
            let p: Page<T> = self.page(path, page, self.inner.page_size).await?;
            let got = p.content.len();
            out.extend(p.content);
            page += 1;
            // `got == 0` guards against a server that keeps announcing pages it does not have.
            if page >= p.total_pages || got == 0 || page >= 100_000 {
                return Ok(out);
            }
        }
    }

    // --------------------------------------------------------------------------------------------
    // Endpoints

    pub async fn networks(&self) -> Result<Vec<Network>, CloudConnexaError> {
        self.list_all("/api/v1/networks").await
    }

    pub async fn network(&self, id: &str) -> Result<Network, CloudConnexaError> {
        self.get(&format!("/api/v1/networks/{}", seg(id)), &[])
            .await
    }

    pub async fn users(&self) -> Result<Vec<User>, CloudConnexaError> {
        self.list_all("/api/v1/users").await
    }

    pub async fn user(&self, id: &str) -> Result<User, CloudConnexaError> {
        self.get(&format!("/api/v1/users/{}", seg(id)), &[]).await
    }

    pub async fn create_user(&self, body: &UserCreate) -> Result<User, CloudConnexaError> {
        self.send_json(Method::POST, "/api/v1/users", body).await
    }

    /// `PUT /users/{id}`: a full replacement; build `body` from the user as read
    /// ([`User::to_update`]) and change only what you mean to.
    pub async fn update_user(
        &self,
        id: &str,
        body: &UserUpdate,
    ) -> Result<User, CloudConnexaError> {
        self.send_json(Method::PUT, &format!("/api/v1/users/{}", seg(id)), body)
            .await
    }

    pub async fn delete_user(&self, id: &str) -> Result<(), CloudConnexaError> {
        self.delete(&format!("/api/v1/users/{}", seg(id))).await
    }

    pub async fn user_groups(&self) -> Result<Vec<UserGroup>, CloudConnexaError> {
        self.list_all("/api/v1/user-groups").await
    }

    pub async fn user_group(&self, id: &str) -> Result<UserGroup, CloudConnexaError> {
        self.get(&format!("/api/v1/user-groups/{}", seg(id)), &[])
            .await
    }

    pub async fn create_user_group(
        &self,
        body: &UserGroupRequest,
    ) -> Result<UserGroup, CloudConnexaError> {
        self.send_json(Method::POST, "/api/v1/user-groups", body)
            .await
    }

    pub async fn update_user_group(
        &self,
        id: &str,
        body: &UserGroupRequest,
    ) -> Result<UserGroup, CloudConnexaError> {
        self.send_json(
            Method::PUT,
            &format!("/api/v1/user-groups/{}", seg(id)),
            body,
        )
        .await
    }

    pub async fn delete_user_group(&self, id: &str) -> Result<(), CloudConnexaError> {
        self.delete(&format!("/api/v1/user-groups/{}", seg(id)))
            .await
    }
}

/// Ids come from the API or from stored handles; keep them to one safe path segment anyway.
fn seg(id: &str) -> String {
    id.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        .collect()
}

/// When a token that lives `expires_in` seconds (the server's word; 3600 when absent) should be
/// refreshed: a little early, so a token never expires between check and use.
fn token_refresh_at(expires_in: Option<u64>, now: Instant) -> Instant {
    // The lifetime is the server's number: capped, so `now + lifetime` cannot overflow.
    let lifetime = Duration::from_secs(expires_in.unwrap_or(3600).min(24 * 3600));
    let margin = (lifetime / 10).min(Duration::from_secs(60));
    now + lifetime.saturating_sub(margin)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A token response with an absurd `expires_in` (u64::MAX) cannot overflow the `Instant`
    /// (a panic) and is refreshed within a day at the latest.
    #[test]
    fn huge_token_lifetime_is_capped_not_a_panic() {
        let now = Instant::now();
        for e in [Some(u64::MAX), Some(u64::MAX / 2), Some(10_000_000_000)] {
            let at = token_refresh_at(e, now);
            assert!(at <= now + Duration::from_secs(24 * 3600), "{e:?}");
            assert!(at > now, "{e:?}");
        }
        let at = token_refresh_at(Some(3600), now);
        assert_eq!(at, now + Duration::from_secs(3540));
        assert_eq!(token_refresh_at(None, now), at);
        assert_eq!(token_refresh_at(Some(0), now), now);
    }

    #[test]
    fn debug_redacts_the_secret() {
        let cfg = ClientConfig::new("http://127.0.0.1:1", "id-1", "very-secret-value");
        assert!(!format!("{cfg:?}").contains("very-secret-value"));
        let c = CloudConnexaClient::new(cfg).unwrap();
        let printed = format!("{c:?}");
        assert!(
            printed.contains("id-1") && !printed.contains("very-secret-value"),
            "{printed}"
        );
    }

    #[test]
    fn rejects_bad_base_url() {
        let err = CloudConnexaClient::new(ClientConfig::new("ftp://x", "a", "b")).unwrap_err();
        assert!(matches!(err, CloudConnexaError::Config(_)));
    }

    #[test]
    fn describes_paths() {
        assert_eq!(describe("/api/v1/users/abc"), "user abc");
        assert_eq!(describe("/api/v1/user-groups/g1"), "user group g1");
        assert_eq!(seg("../x?y"), "xy");
    }
}
