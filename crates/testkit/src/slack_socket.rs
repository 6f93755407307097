//! A fake of Slack's Socket Mode: `apps.connections.open` (app token `xapp-…` as a bearer,
//! answering `{"ok":true,"url":"ws://…"}` with a one-off ticket) and the WebSocket it points at.
//! A connection with a valid ticket gets `hello`; the test sends envelopes and reads the
//! acknowledgements, can ask the client to reconnect (`disconnect`) or drop the socket.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::slack_relay::{ApiCall, Relay};

pub const APP_TOKEN: &str = "xapp-1-A0KRD7HC3-fake-app-token";

/// What the server may push to the current connection.
#[derive(Debug)]
enum Push {
    Text(String),
    Drop,
}

#[derive(Debug, Default)]
struct Inner {
    tickets: HashSet<String>,
    opens: usize,
    connections: usize,
    current: Option<mpsc::UnboundedSender<Push>>,
    acks: Vec<Value>,
    counter: u64,
    ws_addr: Option<SocketAddr>,
    /// Other Web API methods are relayed here (see [`FakeSocketMode::relay_to`]).
    relay: Relay,
}

type Shared = Arc<Mutex<Inner>>;

/// The fake; dropping it stops both servers.
#[derive(Debug)]
pub struct FakeSocketMode {
    api_addr: SocketAddr,
    inner: Shared,
    _tasks: [crate::http::ServerTask; 2],
}

impl FakeSocketMode {
    pub async fn start() -> FakeSocketMode {
        let inner: Shared = Arc::default();
        let (ws, ws_addr) = crate::http::bind("fake socket mode").await;
        inner.lock().expect("lock").ws_addr = Some(ws_addr);
        let ws_inner = inner.clone();
        let ws_task = tokio::spawn(async move {
            while let Ok((tcp, _)) = ws.accept().await {
                tokio::spawn(serve_socket(ws_inner.clone(), tcp));
            }
        });
        let app = Router::new()
            .route("/api/apps.connections.open", any(open))
            .route("/api/{method}", any(relay_other))
            .with_state(inner.clone());
        let (api_addr, api_task) = crate::http::serve(app, "fake socket mode api").await;
        FakeSocketMode {
            api_addr,
            inner,
            _tasks: [ws_task.into(), api_task],
        }
    }

    /// `SLACK_API_URL` for the Socket Mode client.
    pub fn api_url(&self) -> String {
        format!("http://{}/api", self.api_addr)
    }

    /// Relays every method but `apps.connections.open` to `api_url` (e.g.
    /// `FakeSlackOAuth::api_url()`, itself relaying to `FakeSlack`), so a server given one
    /// `SLACK_API_URL` reaches every fake. Without it other methods answer `unknown_method`.
    pub fn relay_to(&self, api_url: &str) {
        self.with(|i| i.relay.set(api_url));
    }

    /// Calls of `apps.connections.open` that got a URL.
    pub fn opens(&self) -> usize {
        self.with(|i| i.opens)
    }

    /// WebSocket connections accepted (with a valid ticket).
    pub fn connections(&self) -> usize {
        self.with(|i| i.connections)
    }

    pub fn acks(&self) -> Vec<Value> {
        self.with(|i| i.acks.clone())
    }

    /// The acknowledgement of `envelope_id`, if it came.
    pub fn ack(&self, envelope_id: &str) -> Option<Value> {
        self.with(|i| {
            i.acks
                .iter()
                .find(|a| a["envelope_id"] == envelope_id)
                .cloned()
        })
    }

    /// Waits until a connection is up (`connections() >= n`).
    pub async fn wait_connections(&self, n: usize, timeout: Duration) -> bool {
        crate::http::poll(timeout, || {
            self.with(|i| i.connections >= n && i.current.is_some())
                .then_some(())
        })
        .await
        .is_some()
    }

    pub async fn wait_ack(&self, envelope_id: &str, timeout: Duration) -> Option<Value> {
        crate::http::poll(timeout, || self.ack(envelope_id)).await
    }

    /// Sends an envelope on the current connection; returns its id (None without a connection).
    pub fn send_envelope(
        &self,
        kind: &str,
        payload: Value,
        accepts_response_payload: bool,
    ) -> Option<String> {
        self.with(|i| {
            i.counter += 1;
            let id = format!("env-{}-{}", i.counter, fastrand::u32(..));
            let msg = json!({
                "envelope_id": id, "type": kind, "payload": payload,
                "accepts_response_payload": accepts_response_payload,
                "retry_attempt": 0, "retry_reason": "",
            });
            let tx = i.current.as_ref()?;
            tx.send(Push::Text(msg.to_string())).ok()?;
            Some(id)
        })
    }

    /// A slash command as Socket Mode carries it: the form fields as a JSON object.
    pub fn send_slash_command(
        &self,
        team_id: &str,
        user_id: &str,
        command: &str,
        text: &str,
        response_url: &str,
        trigger_id: &str,
    ) -> Option<String> {
        self.send_envelope(
            "slash_commands",
            json!({
                "token": "deprecated", "team_id": team_id, "team_domain": "fake",
                "channel_id": "C0GENERAL", "channel_name": "general", "user_id": user_id,
                "user_name": user_id.to_lowercase(), "command": command, "text": text,
                "api_app_id": "A0KRD7HC3", "is_enterprise_install": "false",
                "response_url": response_url, "trigger_id": trigger_id,
            }),
            true,
        )
    }

    /// Asks the client to reconnect, as Slack does before refreshing a connection.
    pub fn send_disconnect(&self, reason: &str) {
        let msg = json!({"type": "disconnect", "reason": reason, "debug_info": {"host": "fake"}});
        self.with(|i| {
            if let Some(tx) = i.current.take() {
                let _ = tx.send(Push::Text(msg.to_string()));
            }
        });
    }

    /// Drops the current connection without a close frame (a network failure).
    pub fn drop_connection(&self) {
        self.with(|i| {
            if let Some(tx) = i.current.take() {
                let _ = tx.send(Push::Drop);
            }
        });
    }

    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        f(&mut self.inner.lock().expect("fake socket mode lock"))
    }
}

async fn open(State(st): State<Shared>, headers: HeaderMap) -> Response {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let body = if token.is_empty() {
        json!({"ok": false, "error": "not_authed"})
    } else if !token.starts_with("xapp-") {
        json!({"ok": false, "error": "not_allowed_token_type"})
    } else if token != APP_TOKEN {
        json!({"ok": false, "error": "invalid_auth"})
    } else {
        let mut i = st.lock().expect("lock");
        i.opens += 1;
        let ticket = format!("ticket-{}-{}", i.opens, fastrand::u64(..));
        i.tickets.insert(ticket.clone());
        let addr = i.ws_addr.map(|a| a.to_string()).unwrap_or_default();
        json!({"ok": true, "url": format!("ws://{addr}/link/?ticket={ticket}&app_id=A0KRD7HC3")})
    };
    axum::Json(body).into_response()
}

async fn relay_other(State(st): State<Shared>, call: ApiCall) -> Response {
    let relay = st.lock().expect("lock").relay.clone();
    match relay.forward(&call).await {
        Some(answer) => answer,
        None => axum::Json(json!({"ok": false, "error": "unknown_method"})).into_response(),
    }
}

// tungstenite's handshake callback type fixes the large error variant, not us.
#[allow(clippy::result_large_err)]
async fn serve_socket(st: Shared, tcp: tokio::net::TcpStream) {
    let mut path = String::new();
    let ws = tokio_tungstenite::accept_hdr_async(
        tcp,
        |req: &tokio_tungstenite::tungstenite::handshake::server::Request,
         resp: tokio_tungstenite::tungstenite::handshake::server::Response| {
            path = req.uri().to_string();
            Ok(resp)
        },
    )
    .await;
    let Ok(ws) = ws else { return };
    // A ticket is good for one connection.
    let ticket = path
        .split("ticket=")
        .nth(1)
        .and_then(|t| t.split('&').next())
        .unwrap_or_default()
        .to_string();
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let accepted = {
        let mut i = st.lock().expect("lock");
        if i.tickets.remove(&ticket) {
            i.connections += 1;
            i.current = Some(tx);
            true
        } else {
            false
        }
    };
    if !accepted {
        let _ = sink.close().await;
        return;
    }
    let hello = json!({"type": "hello", "num_connections": 1,
        "debug_info": {"host": "fake", "approximate_connection_time": 18060},
        "connection_info": {"app_id": "A0KRD7HC3"}});
    if sink
        .send(Message::Text(hello.to_string().into()))
        .await
        .is_err()
    {
        return;
    }
    loop {
        tokio::select! {
            push = rx.recv() => match push {
                Some(Push::Text(t)) => {
                    let disconnect = t.contains("\"type\":\"disconnect\"");
                    if sink.send(Message::Text(t.into())).await.is_err() {
                        return;
                    }
                    if disconnect {
                        // Slack closes shortly after asking; the client should beat it.
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        let _ = sink.close().await;
                        return;
                    }
                }
                Some(Push::Drop) | None => return,
            },
            msg = stream.next() => match msg {
                Some(Ok(Message::Text(t))) => {
                    if let Ok(v) = serde_json::from_str::<Value>(&t) {
                        st.lock().expect("lock").acks.push(v);
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                _ => {}
            },
        }
    }
}
