//! Plumbing every fake server shares: serving a router on a free 127.0.0.1 port, stopping it when
//! the fake is dropped, reading the headers each fake checks, Google's error envelope, and
//! polling a fake until a test's condition holds.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use serde_json::{Value, json};

/// The task serving a fake; aborting it when the fake is dropped stops the server at once.
#[derive(Debug)]
pub(crate) struct ServerTask(tokio::task::JoinHandle<()>);

impl Drop for ServerTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl From<tokio::task::JoinHandle<()>> for ServerTask {
    fn from(handle: tokio::task::JoinHandle<()>) -> Self {
        Self(handle)
    }
}

/// Binds 127.0.0.1 on a free port (`what` names the fake in the panic if it cannot).
pub(crate) async fn bind(what: &str) -> (tokio::net::TcpListener, SocketAddr) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind {what}: {e}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("local addr of {what}: {e}"));
    (listener, addr)
}

/// Serves `app` on a free 127.0.0.1 port until the returned task is dropped.
pub(crate) async fn serve(app: Router, what: &str) -> (SocketAddr, ServerTask) {
    let (listener, addr) = bind(what).await;
    (addr, serve_on(listener, app))
}

/// Serves `app` on a listener bound earlier (when the app must know its own address).
pub(crate) fn serve_on(listener: tokio::net::TcpListener, app: Router) -> ServerTask {
    ServerTask(tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    }))
}

/// A header's value as text (empty when absent or not text).
pub(crate) fn header_str(headers: &HeaderMap, name: impl header::AsHeaderName) -> &str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

/// The token of `Authorization: Bearer <token>`, if the call carried one.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    header_str(headers, header::AUTHORIZATION).strip_prefix("Bearer ")
}

/// The `error` object of Google's JSON error envelope (IAM, Resource Manager, BigQuery): `code`,
/// `message`, canonical `status` and one `errors` entry with the legacy `reason`.
pub(crate) fn google_error_object(
    status: StatusCode,
    status_name: &str,
    reason: &str,
    message: &str,
) -> Value {
    json!({
        "code": status.as_u16(), "message": message, "status": status_name,
        "errors": [{"message": message, "domain": "global", "reason": reason}],
    })
}

/// Calls `probe` every 10 ms until it yields something or `timeout` has passed.
pub(crate) async fn poll<T>(timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(found) = probe() {
            return Some(found);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Clones of the recorded items `keep` accepts (what a fake's `calls_to` and friends return).
pub(crate) fn cloned_where<T: Clone>(items: &[T], keep: impl Fn(&T) -> bool) -> Vec<T> {
    items.iter().filter(|x| keep(x)).cloned().collect()
}
