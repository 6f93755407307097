//! A fake webhook receiver (a SIEM, a ticketing bridge, Splunk HEC) on 127.0.0.1, as
//! docs/webhooks.md tells receivers to behave: it verifies `X-Gatehouse-Signature` with its own
//! code (not the `webhooks` crate's signer, so a signer bug cannot verify itself), refuses a bad
//! or stale signature with 401, deduplicates nothing (tests look at what arrived), and records
//! every attempt. It can be told to fail the next calls: a status (5xx, 4xx), 429 with
//! `Retry-After`, or a hang longer than the client's time limit.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How the receiver answers one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this status (and a short text body).
    Status(u16),
    /// 429 with `Retry-After: <secs>`.
    RateLimited { retry_after_secs: u64 },
    /// Wait this long, then answer 503 (the client should have given up before).
    Hang(Duration),
}

/// One event as the receiver read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedEvent {
    pub id: String,
    pub seq: i64,
    pub kind: String,
}

/// One call, whatever its outcome.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The `t=` of the signature header, if it parsed.
    pub timestamp: Option<i64>,
    /// The MAC matched the body with the receiver's secret (timestamp not considered).
    pub signature_ok: bool,
    /// What the receiver answered.
    pub status: u16,
    /// The events in the body (empty if it did not parse).
    pub events: Vec<ReceivedEvent>,
}

#[derive(Debug, Default)]
struct Inner {
    faults: VecDeque<Fault>,
    attempts: Vec<Attempt>,
    /// When set, signatures older (or newer) than this many seconds from the receiver's clock
    /// are refused.
    tolerance_secs: Option<i64>,
    /// Splunk HEC mode: the token `Authorization: Splunk <token>` must carry.
    hec_token: Option<String>,
}

#[derive(Debug, Clone)]
struct Shared {
    secret: Vec<u8>,
    inner: Arc<Mutex<Inner>>,
}

/// The running receiver. Dropping it leaves the server task running until the test ends.
#[derive(Debug, Clone)]
pub struct FakeWebhookReceiver {
    /// `http://127.0.0.1:<port>/hook`.
    pub url: String,
    shared: Shared,
}

/// The receiver's own signature check: HMAC-SHA256(secret, "<t>." + body) in hex, compared
/// with every `v1=` of the header.
fn signature_matches(secret: &[u8], header: &str, body: &[u8]) -> (Option<i64>, bool) {
    let mut t: Option<i64> = None;
    let mut v1: Vec<&str> = Vec::new();
    for kv in header.split(',') {
        if let Some(v) = kv.trim().strip_prefix("t=") {
            t = v.parse().ok();
        } else if let Some(v) = kv.trim().strip_prefix("v1=") {
            v1.push(v);
        }
    }
    let Some(ts) = t else {
        return (None, false);
    };
    let Ok(mut m) = Hmac::<Sha256>::new_from_slice(secret) else {
        return (Some(ts), false);
    };
    let mut signed = ts.to_string().into_bytes();
    signed.push(b'.');
    signed.extend_from_slice(body);
    m.update(&signed);
    let expected = hex::encode(m.finalize().into_bytes());
    (Some(ts), v1.iter().any(|v| *v == expected))
}

fn events_of(body: &[u8]) -> Vec<ReceivedEvent> {
    let one = |v: &serde_json::Value| ReceivedEvent {
        id: v["id"].as_str().unwrap_or_default().to_string(),
        seq: v["seq"].as_i64().unwrap_or_default(),
        kind: v["kind"].as_str().unwrap_or_default().to_string(),
    };
    // The gatehouse envelope, or HEC's concatenated objects with the event under "event".
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body)
        && let Some(list) = v["events"].as_array()
    {
        return list.iter().map(one).collect();
    }
    serde_json::Deserializer::from_slice(body)
        .into_iter::<serde_json::Value>()
        .filter_map(Result::ok)
        .map(|v| one(&v["event"]))
        .collect()
}

async fn receive(State(s): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let header = headers
        .get("x-gatehouse-signature")
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let (timestamp, signature_ok) = signature_matches(&s.secret, &header, &body);
    let (fault, tolerance, hec_token) = {
        let mut g = s.inner.lock().unwrap();
        (g.faults.pop_front(), g.tolerance_secs, g.hec_token.clone())
    };
    let fresh = match (tolerance, timestamp) {
        (Some(tol), Some(t)) => (chrono::Utc::now().timestamp() - t).abs() <= tol,
        _ => true,
    };
    let hec_ok = hec_token.is_none_or(|token| {
        headers
            .get("authorization")
            .and_then(|h| h.to_str().ok())
            .is_some_and(|h| h == format!("Splunk {token}"))
    });
    let response = if !signature_ok || !fresh {
        (StatusCode::UNAUTHORIZED, "bad signature").into_response()
    } else if !hec_ok {
        (
            StatusCode::UNAUTHORIZED,
            r#"{"text":"Invalid token","code":4}"#,
        )
            .into_response()
    } else {
        match &fault {
            None => (StatusCode::OK, r#"{"text":"Success","code":0}"#).into_response(),
            Some(Fault::Status(code)) => (
                StatusCode::from_u16(*code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                "receiver failure",
            )
                .into_response(),
            Some(Fault::RateLimited { retry_after_secs }) => (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", retry_after_secs.to_string())],
                "slow down",
            )
                .into_response(),
            Some(Fault::Hang(d)) => {
                tokio::time::sleep(*d).await;
                (StatusCode::SERVICE_UNAVAILABLE, "too late").into_response()
            }
        }
    };
    s.inner.lock().unwrap().attempts.push(Attempt {
        headers,
        events: events_of(&body),
        body,
        timestamp,
        signature_ok,
        status: response.status().as_u16(),
    });
    response
}

impl FakeWebhookReceiver {
    /// Starts a receiver that verifies signatures with `secret`.
    pub async fn start(secret: &str) -> Self {
        let shared = Shared {
            secret: secret.as_bytes().to_vec(),
            inner: Arc::default(),
        };
        let app = Router::new()
            .route("/hook", post(receive))
            .route("/services/collector/event", post(receive))
            .with_state(shared.clone());
        let (listener, addr) = crate::http::bind("webhook receiver").await;
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url: format!("http://{addr}/hook"),
            shared,
        }
    }

    /// The Splunk HEC endpoint of this receiver, which then also requires
    /// `Authorization: Splunk <token>`.
    pub fn hec_url(&self, token: &str) -> String {
        self.shared.inner.lock().unwrap().hec_token = Some(token.to_string());
        self.url.replace("/hook", "/services/collector/event")
    }

    /// Refuses signatures more than `secs` away from the receiver's clock.
    pub fn enforce_replay_window(&self, secs: i64) {
        self.shared.inner.lock().unwrap().tolerance_secs = Some(secs);
    }

    /// The next `n` calls (with a good signature) get `fault`.
    pub fn fail_next(&self, n: usize, fault: Fault) {
        let mut g = self.shared.inner.lock().unwrap();
        for _ in 0..n {
            g.faults.push_back(fault.clone());
        }
    }

    /// Forgets the faults still queued.
    pub fn heal(&self) {
        self.shared.inner.lock().unwrap().faults.clear();
    }

    /// Every call so far.
    pub fn attempts(&self) -> Vec<Attempt> {
        self.shared.inner.lock().unwrap().attempts.clone()
    }

    /// The events of the calls answered 2xx, in arrival order (duplicates kept).
    pub fn accepted_events(&self) -> Vec<ReceivedEvent> {
        self.attempts()
            .into_iter()
            .filter(|a| (200..300).contains(&a.status))
            .flat_map(|a| a.events)
            .collect()
    }

    /// Checks a body and header as this receiver would (for tampering tests).
    pub fn would_accept(&self, header: &str, body: &[u8]) -> bool {
        signature_matches(&self.shared.secret, header, body).1
    }
}
