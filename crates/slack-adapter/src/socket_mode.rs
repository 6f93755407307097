//! Socket Mode: Slack delivers commands, interactions and events over a WebSocket the server
//! opens, so Gatehouse runs behind a firewall without a public URL.
//!
//! With `SLACK_APP_TOKEN` (`xapp-…`, scope `connections:write`): `apps.connections.open` returns
//! a one-off `wss://` URL; Slack says `hello`, then sends envelopes
//! `{"envelope_id", "type": "slash_commands" | "interactive" | "events_api", "payload",
//! "accepts_response_payload"}`, each acknowledged with `{"envelope_id", "payload"?}`. A
//! `disconnect` (Slack refreshes connections every few hours and warns first) or a dropped socket
//! opens a fresh connection.
//!
//! Each envelope is replayed in process against [`crate::router::socket_mode_router`] (the same
//! handlers as HTTP, without the signature check: the socket itself was authenticated by the app
//! token) and the handler's answer becomes the acknowledgement's payload.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, header};
use futures::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;
use tower::ServiceExt;

use crate::api::ApiError;
use crate::config::{DEFAULT_API_URL, Secret};
use crate::payload::loose;

/// A frame Slack sends over the socket: `hello`, `disconnect`, or an envelope
/// (`slash_commands`, `interactive`, `events_api`). Fields of an unexpected type count as absent.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Envelope {
    /// The frame's type.
    #[serde(rename = "type", default, deserialize_with = "loose::string")]
    pub kind: String,
    /// What the acknowledgement names.
    #[serde(default, deserialize_with = "loose::string")]
    pub envelope_id: String,
    /// The body the HTTP endpoint would have received, relayed to it unread: the endpoint parses
    /// it (into the typed payloads of [`crate::payload`]) as it parses HTTP bodies.
    #[serde(default)]
    pub payload: Value,
    /// Whether the acknowledgement may carry the handler's answer.
    #[serde(default, deserialize_with = "loose::opt")]
    pub accepts_response_payload: Option<bool>,
    /// `disconnect`: why.
    #[serde(default, deserialize_with = "loose::string")]
    pub reason: String,
}

/// The answer of `apps.connections.open`.
#[derive(Debug, Deserialize)]
struct ConnectionsOpen {
    #[serde(default, deserialize_with = "loose::opt")]
    ok: Option<bool>,
    #[serde(default, deserialize_with = "loose::opt")]
    url: Option<String>,
    #[serde(default, deserialize_with = "loose::opt")]
    error: Option<String>,
}

/// The acknowledgement of an envelope, with the handler's answer when Slack accepts one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ack {
    /// The envelope acknowledged.
    pub envelope_id: String,
    /// What the HTTP response body would have been (a message, `response_action` errors).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
}

/// Settings of Socket Mode.
#[derive(Clone)]
pub struct SocketModeConfig {
    /// `SLACK_APP_TOKEN`.
    pub app_token: Secret,
    /// `SLACK_API_URL`.
    pub api_url: String,
    /// Wait after a failed connection attempt (doubles up to a minute).
    pub retry_delay: Duration,
    pub http_timeout: Duration,
}

impl std::fmt::Debug for SocketModeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketModeConfig")
            .field("app_token", &self.app_token)
            .field("api_url", &self.api_url)
            .finish_non_exhaustive()
    }
}

impl SocketModeConfig {
    /// `None` unless `SLACK_APP_TOKEN` is set; variables read through `get` (the server's
    /// snapshot of the environment; scripts the process environment).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Option<Self> {
        let get = |k: &str| {
            get(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let app_token = get("SLACK_APP_TOKEN")?;
        Some(Self {
            app_token: Secret::new(app_token),
            api_url: get("SLACK_API_URL")
                .map(|u| u.trim_end_matches('/').to_string())
                .unwrap_or_else(|| DEFAULT_API_URL.to_string()),
            retry_delay: Duration::from_secs(1),
            http_timeout: Duration::from_secs(10),
        })
    }
}

/// Counters, for tests and `/metrics`.
#[derive(Debug, Default)]
pub struct SocketStats {
    pub connections: AtomicU64,
    pub envelopes: AtomicU64,
}

/// The Socket Mode client.
#[derive(Debug, Clone)]
pub struct SocketMode {
    config: SocketModeConfig,
    http: reqwest::Client,
    handlers: Router,
    stats: Arc<SocketStats>,
}

type Sink = futures::stream::SplitSink<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    Message,
>;

fn tls_connector() -> Option<tokio_tungstenite::Connector> {
    // The process has both ring and aws-lc-rs linked, so rustls has no implicit provider: name one.
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .ok()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Some(tokio_tungstenite::Connector::Rustls(Arc::new(config)))
}

impl SocketMode {
    /// `handlers`: [`crate::router::socket_mode_router`] (possibly wrapped, e.g. by
    /// [`crate::oauth::lifecycle_layer`]).
    pub fn new(config: SocketModeConfig, handlers: Router) -> Self {
        let http = reqwest::Client::builder()
            .timeout(config.http_timeout)
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Self {
            config,
            http,
            handlers,
            stats: Arc::default(),
        }
    }

    pub fn stats(&self) -> Arc<SocketStats> {
        self.stats.clone()
    }

    /// `apps.connections.open`: a fresh WebSocket URL.
    pub async fn open_connection(&self) -> Result<String, ApiError> {
        let m = "apps.connections.open";
        let resp = self
            .http
            .post(format!("{}/{m}", self.config.api_url))
            .bearer_auth(self.config.app_token.expose())
            .send()
            .await
            .map_err(|e| ApiError::Transport {
                method: m.into(),
                message: e.without_url().to_string(),
            })?;
        let status = resp.status().as_u16();
        if status == 429 || status >= 500 {
            return Err(ApiError::Server {
                method: m.into(),
                status,
            });
        }
        let v: ConnectionsOpen = resp.json().await.map_err(|_| ApiError::Server {
            method: m.into(),
            status,
        })?;
        match (v.ok, v.url) {
            (Some(true), Some(url)) => Ok(url),
            _ => Err(ApiError::Slack {
                method: m.into(),
                error: v.error.unwrap_or_else(|| "unknown_error".into()),
                needed: None,
            }),
        }
    }

    /// Connects, serves, reconnects; forever (abort the task to stop).
    pub async fn run(self) {
        let mut delay = self.config.retry_delay;
        loop {
            let url = match self.open_connection().await {
                Ok(u) => u,
                Err(e) => {
                    tracing::warn!(error = %e, "Socket Mode: apps.connections.open failed");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(60));
                    continue;
                }
            };
            match self.session(&url).await {
                Ok(reason) => {
                    delay = self.config.retry_delay;
                    tracing::info!(reason, "Socket Mode connection ended; reconnecting");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Socket Mode connection failed; reconnecting");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(60));
                }
            }
        }
    }

    /// Starts [`SocketMode::run`] on a task.
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.run())
    }

    /// One connection: returns why it ended.
    async fn session(&self, url: &str) -> Result<&'static str, String> {
        // The URL carries a one-off ticket: keep it out of logs and errors.
        let (ws, _) =
            tokio_tungstenite::connect_async_tls_with_config(url, None, false, tls_connector())
                .await
                .map_err(|e| format!("connect: {e}"))?;
        self.stats.connections.fetch_add(1, Ordering::Relaxed);
        let (sink, mut stream) = ws.split();
        let sink = Arc::new(Mutex::new(sink));
        while let Some(msg) = stream.next().await {
            let msg = msg.map_err(|e| format!("read: {e}"))?;
            let text = match msg {
                Message::Text(t) => t.to_string(),
                Message::Ping(p) => {
                    let _ = sink.lock().await.send(Message::Pong(p)).await;
                    continue;
                }
                Message::Close(_) => return Ok("closed by Slack"),
                _ => continue,
            };
            let Ok(v) = serde_json::from_str::<Envelope>(&text) else {
                tracing::warn!("Socket Mode: a message that is not JSON");
                continue;
            };
            match v.kind.as_str() {
                "hello" => tracing::info!("Socket Mode connected"),
                "disconnect" => {
                    tracing::info!(reason = v.reason, "Socket Mode: Slack asks to reconnect");
                    let _ = sink.lock().await.close().await;
                    return Ok("disconnect requested");
                }
                "slash_commands" | "interactive" | "events_api" => {
                    self.stats.envelopes.fetch_add(1, Ordering::Relaxed);
                    let handlers = self.handlers.clone();
                    let sink = sink.clone();
                    tokio::spawn(async move {
                        let Some(ack) = dispatch(&handlers, &v).await else {
                            // Not stored: left unacknowledged so Slack delivers it again.
                            return;
                        };
                        if let Err(e) = send(&sink, &ack).await {
                            tracing::warn!(error = %e, "Socket Mode: acknowledgement not sent");
                        }
                    });
                }
                _ => {}
            }
        }
        Ok("stream ended")
    }
}

async fn send(sink: &Mutex<Sink>, ack: &Ack) -> Result<(), String> {
    let text = serde_json::to_string(ack).map_err(|e| e.to_string())?;
    sink.lock()
        .await
        .send(Message::Text(text.into()))
        .await
        .map_err(|e| e.to_string())
}

/// Replays one envelope as the HTTP request Slack would have sent, and turns the handler's answer
/// into the acknowledgement; `None` (no acknowledgement) for an event the handler could not store
/// (5xx), which Slack then redelivers.
pub async fn dispatch(handlers: &Router, envelope: &Envelope) -> Option<Ack> {
    let kind = envelope.kind.as_str();
    let payload = &envelope.payload;
    let (path, content_type, body) = match kind {
        "slash_commands" => {
            let pairs: Vec<(String, String)> = payload
                .as_object()
                .map(|o| {
                    o.iter()
                        .map(|(k, v)| {
                            let s = match v {
                                Value::String(s) => s.clone(),
                                Value::Null => String::new(),
                                other => other.to_string(),
                            };
                            (k.clone(), s)
                        })
                        .collect()
                })
                .unwrap_or_default();
            (
                "/slack/commands",
                "application/x-www-form-urlencoded",
                serde_urlencoded::to_string(pairs).unwrap_or_default(),
            )
        }
        "interactive" => (
            "/slack/interactions",
            "application/x-www-form-urlencoded",
            serde_urlencoded::to_string([("payload", payload.to_string())]).unwrap_or_default(),
        ),
        _ => ("/slack/events", "application/json", payload.to_string()),
    };
    let req = Request::post(path)
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from(body));
    let mut ack = Ack {
        envelope_id: envelope.envelope_id.clone(),
        payload: None,
    };
    let Ok(req) = req else {
        return Some(ack);
    };
    match handlers.clone().oneshot(req).await {
        Ok(resp) => {
            let accepts = envelope.accepts_response_payload.unwrap_or(false);
            let status = resp.status();
            let bytes = axum::body::to_bytes(resp.into_body(), 1024 * 1024)
                .await
                .unwrap_or_default();
            // An event the workspace limit refused (429) is left unacknowledged too, as the
            // HTTP endpoint's 429 is: Slack delivers it again later.
            if (status.is_server_error() || status.as_u16() == 429) && kind == "events_api" {
                tracing::warn!(
                    status = status.as_u16(),
                    "Socket Mode: event not stored; leaving it unacknowledged"
                );
                return None;
            } else if !status.is_success() {
                tracing::warn!(
                    kind,
                    status = status.as_u16(),
                    "Socket Mode handler refused an envelope"
                );
            } else if accepts
                && kind != "events_api"
                && let Ok(p) = serde_json::from_slice::<Value>(&bytes)
            {
                ack.payload = Some(p);
            }
        }
        Err(e) => match e {},
    }
    Some(ack)
}
