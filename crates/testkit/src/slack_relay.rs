//! Forwarding the Web API methods a Slack fake does not serve to another fake's API URL, so a
//! server given one `SLACK_API_URL` reaches the OAuth, Socket Mode and Web API fakes alike.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::{HeaderMap, Method, header};
use axum::response::{IntoResponse, Response};

/// Where a fake relays the methods it does not serve: nowhere until [`Relay::set`].
#[derive(Debug, Clone, Default)]
pub(crate) struct Relay(Arc<Mutex<Option<String>>>);

/// A Web API call as it arrived at `/api/{method}`, kept whole to serve or to forward unchanged.
#[derive(Debug)]
pub(crate) struct ApiCall {
    pub(crate) method: String,
    pub(crate) http_method: Method,
    pub(crate) headers: HeaderMap,
    pub(crate) query: Option<String>,
    pub(crate) body: Bytes,
}

impl<S: Send + Sync> FromRequest<S> for ApiCall {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let Path(method) = Path::<String>::from_request_parts(&mut parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let http_method = parts.method.clone();
        let headers = parts.headers.clone();
        let query = parts.uri.query().map(str::to_string);
        let body = Bytes::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(Self {
            method,
            http_method,
            headers,
            query,
            body,
        })
    }
}

impl Relay {
    /// Relays to `api_url` (e.g. another fake's `api_url()`) from now on.
    pub(crate) fn set(&self, api_url: &str) {
        *self.0.lock().expect("relay lock") = Some(api_url.trim_end_matches('/').to_string());
    }

    /// The answer of the fake the call was relayed to; `None` when there is nowhere to relay.
    pub(crate) async fn forward(&self, call: &ApiCall) -> Option<Response> {
        let base = self.0.lock().expect("relay lock").clone()?;
        Some(
            relay(
                &base,
                &call.method,
                &call.http_method,
                &call.headers,
                call.query.as_deref(),
                call.body.clone(),
            )
            .await,
        )
    }
}

/// Forwards one Web API call to `base` (another fake's API URL).
async fn relay(
    base: &str,
    method: &str,
    http_method: &Method,
    headers: &HeaderMap,
    query: Option<&str>,
    body: Bytes,
) -> Response {
    let mut url = format!("{base}/{method}");
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        url.push('?');
        url.push_str(q);
    }
    let client = reqwest::Client::new();
    let m = reqwest::Method::from_bytes(http_method.as_str().as_bytes())
        .unwrap_or(reqwest::Method::POST);
    let mut req = client.request(m, url).body(body.to_vec());
    for name in [header::AUTHORIZATION, header::CONTENT_TYPE] {
        if let Some(v) = headers.get(&name).and_then(|v| v.to_str().ok()) {
            req = req.header(name.as_str(), v);
        }
    }
    match req.send().await {
        Ok(resp) => {
            let status = axum::http::StatusCode::from_u16(resp.status().as_u16())
                .unwrap_or(axum::http::StatusCode::BAD_GATEWAY);
            let mut out = axum::http::HeaderMap::new();
            for (k, v) in resp.headers() {
                if (k.as_str() == "content-type" || k.as_str() == "retry-after")
                    && let (Ok(k), Ok(v)) = (
                        axum::http::HeaderName::from_bytes(k.as_str().as_bytes()),
                        axum::http::HeaderValue::from_bytes(v.as_bytes()),
                    )
                {
                    out.insert(k, v);
                }
            }
            let bytes = resp.bytes().await.unwrap_or_default();
            (status, out, bytes.to_vec()).into_response()
        }
        Err(_) => (axum::http::StatusCode::BAD_GATEWAY, "relay failed").into_response(),
    }
}
