//! One seeded fault injector shared by the fakes (Slack, Cloud Connexa, GCP IAM/CRM, BigQuery).
//!
//! A [`FaultPlan`] says how often a call fails (`rate`, 0.0–1.0), which kinds of failure may be
//! chosen and the seed of the pseudo-random sequence, so a failing run can be replayed. Each fake
//! consults the same [`FaultInjector`] once per call (through [`layer`], an axum middleware every
//! fake installs, plus the fake's own hooks for failures that need its state) and answers the way
//! the real service does (`external-apis.md`):
//!
//! | kind | Slack | Cloud Connexa | GCP IAM/CRM | BigQuery |
//! |---|---|---|---|---|
//! | `ServerError` | 503 HTML outage page | 500 `ErrorResponse` JSON | 503 `UNAVAILABLE` envelope | 503 `backendError` envelope |
//! | `RateLimited` | 429 + `Retry-After: 1`, `{"ok":false,"error":"ratelimited"}` | 429, empty body, no `Retry-After` (C.6) | 429 `RESOURCE_EXHAUSTED` | 429 `rateLimitExceeded` |
//! | `Timeout` | the call is served, then the answer is held back longer than the client waits | same | same | same |
//! | `Reset` | the socket is dropped, before or after the call is served (a coin toss) | same | same | same |
//! | `Conflict` | – | – | `setIamPolicy`: 409 `ABORTED` (stale etag) | – |
//! | `NotFoundAfterCreate` | – | – | a created service account stays invisible (404 / 400) for [`FaultPlan::not_found_window`] | – |
//! | `RowErrors` | – | – | – | `insertAll`: HTTP 200 with `insertErrors` (`backendError` on some rows, `stopped` on the rest): nothing inserted |
//!
//! A kind that does not apply to a call is never chosen for it; a call whose chosen share found
//! no applicable kind passes. A call-specific kind (409, not-found window, row errors) takes half
//! of its calls' faults. Every injected fault is counted by service and kind
//! ([`FaultInjector::counts`], [`FaultInjector::table`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// The service a fake stands in for (it picks the wire format of a failure).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Service {
    Slack,
    CloudConnexa,
    Gcp,
    BigQuery,
}

impl Service {
    pub fn name(self) -> &'static str {
        match self {
            Service::Slack => "slack",
            Service::CloudConnexa => "cloudconnexa",
            Service::Gcp => "gcp",
            Service::BigQuery => "bigquery",
        }
    }
}

/// A kind of failure (see the module table for how each service shows it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    ServerError,
    RateLimited,
    Timeout,
    Reset,
    Conflict,
    NotFoundAfterCreate,
    RowErrors,
}

impl FaultKind {
    pub const ALL: [FaultKind; 7] = [
        FaultKind::ServerError,
        FaultKind::RateLimited,
        FaultKind::Timeout,
        FaultKind::Reset,
        FaultKind::Conflict,
        FaultKind::NotFoundAfterCreate,
        FaultKind::RowErrors,
    ];

    /// Shown only by some calls of one service.
    pub fn call_specific(self) -> bool {
        matches!(
            self,
            FaultKind::Conflict | FaultKind::NotFoundAfterCreate | FaultKind::RowErrors
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::ServerError => "5xx",
            FaultKind::RateLimited => "429",
            FaultKind::Timeout => "timeout",
            FaultKind::Reset => "reset",
            FaultKind::Conflict => "409 etag",
            FaultKind::NotFoundAfterCreate => "not-found window",
            FaultKind::RowErrors => "insertErrors",
        }
    }
}

/// What to inject.
#[derive(Debug, Clone)]
pub struct FaultPlan {
    /// Share of calls that fail, 0.0–1.0.
    pub rate: f64,
    pub kinds: Vec<FaultKind>,
    pub seed: u64,
    /// How long a `Timeout` holds the answer back: longer than the client waits.
    pub hang: Duration,
    /// How long a created service account stays invisible under `NotFoundAfterCreate`.
    pub not_found_window: Duration,
    /// The first calls that can show a call-specific kind (409, not-found window, row errors)
    /// get it until it has been injected this often, whatever the rate: a short run sees every
    /// kind for sure (0: no such floor).
    pub at_least: u64,
}

impl FaultPlan {
    /// Every kind at `rate`, answers held 3 s on a time-out, 1.5 s not-found windows.
    pub fn new(rate: f64, seed: u64) -> Self {
        Self {
            rate,
            kinds: FaultKind::ALL.to_vec(),
            seed,
            hang: Duration::from_secs(3),
            not_found_window: Duration::from_millis(1500),
            at_least: 0,
        }
    }
}

#[derive(Debug)]
struct State_ {
    rng: u64,
    counts: BTreeMap<(Service, FaultKind), u64>,
    calls: BTreeMap<Service, u64>,
}

/// The shared, seeded injector. Clone the `Arc` into every fake.
#[derive(Debug)]
pub struct FaultInjector {
    plan: FaultPlan,
    on: AtomicBool,
    state: Mutex<State_>,
}

impl FaultInjector {
    pub fn new(plan: FaultPlan) -> Arc<Self> {
        // splitmix64 of the seed, so seed 0 works too.
        let rng = plan.seed ^ 0x9E37_79B9_7F4A_7C15;
        Arc::new(Self {
            plan,
            on: AtomicBool::new(true),
            state: Mutex::new(State_ {
                rng,
                counts: BTreeMap::new(),
                calls: BTreeMap::new(),
            }),
        })
    }

    pub fn plan(&self) -> &FaultPlan {
        &self.plan
    }

    /// Stops (or resumes) injecting, e.g. for a final clean pass that checks the end state.
    pub fn set_enabled(&self, on: bool) {
        self.on.store(on, Ordering::SeqCst);
    }

    fn next(st: &mut State_) -> u64 {
        st.rng = st.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = st.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A coin toss from the same sequence (for choices inside a fault, e.g. reset before/after).
    pub fn coin(&self) -> bool {
        let mut st = self.state.lock().unwrap();
        Self::next(&mut st) & 1 == 1
    }

    /// Decides whether this call fails and how; `applicable` lists what the call can show.
    /// The injected fault is counted.
    pub fn pick(&self, service: Service, applicable: &[FaultKind]) -> Option<FaultKind> {
        if !self.on.load(Ordering::SeqCst) {
            return None;
        }
        let mut st = self.state.lock().unwrap();
        *st.calls.entry(service).or_default() += 1;
        if let Some(k) = self.plan.kinds.iter().copied().find(|k| {
            k.call_specific()
                && applicable.contains(k)
                && st.counts.get(&(service, *k)).copied().unwrap_or(0) < self.plan.at_least
        }) {
            *st.counts.entry((service, k)).or_default() += 1;
            return Some(k);
        }
        let roll = (Self::next(&mut st) >> 11) as f64 / (1u64 << 53) as f64;
        if roll >= self.plan.rate {
            return None;
        }
        let choices: Vec<FaultKind> = self
            .plan
            .kinds
            .iter()
            .copied()
            .filter(|k| applicable.contains(k))
            .collect();
        if choices.is_empty() {
            return None;
        }
        // A kind only some calls can show (an etag conflict on setIamPolicy, a not-found window
        // after a create, row errors on insertAll) takes half of those calls' faults, so a short
        // run still sees it several times.
        let (special, common): (Vec<FaultKind>, Vec<FaultKind>) =
            choices.iter().partition(|k| k.call_specific());
        let pool = if !special.is_empty() && (common.is_empty() || Self::next(&mut st) & 1 == 1) {
            special
        } else {
            common
        };
        let k = pool[(Self::next(&mut st) % pool.len() as u64) as usize];
        *st.counts.entry((service, k)).or_default() += 1;
        Some(k)
    }

    /// Injected faults by service and kind.
    pub fn counts(&self) -> BTreeMap<(Service, FaultKind), u64> {
        self.state.lock().unwrap().counts.clone()
    }

    /// Injected faults of one kind, all services together.
    pub fn count_of(&self, kind: FaultKind) -> u64 {
        self.counts()
            .iter()
            .filter(|((_, k), _)| *k == kind)
            .map(|(_, n)| n)
            .sum()
    }

    /// Calls that consulted the injector, by service.
    pub fn calls(&self) -> BTreeMap<Service, u64> {
        self.state.lock().unwrap().calls.clone()
    }

    /// A plain-text table: calls and injected faults by service and kind.
    pub fn table(&self) -> String {
        let counts = self.counts();
        let calls = self.calls();
        let mut out = format!("{:<14}{:>7}", "service", "calls");
        for k in FaultKind::ALL {
            out.push_str(&format!("{:>18}", k.name()));
        }
        out.push('\n');
        for s in [
            Service::Slack,
            Service::CloudConnexa,
            Service::Gcp,
            Service::BigQuery,
        ] {
            out.push_str(&format!(
                "{:<14}{:>7}",
                s.name(),
                calls.get(&s).copied().unwrap_or(0)
            ));
            for k in FaultKind::ALL {
                out.push_str(&format!(
                    "{:>18}",
                    counts.get(&(s, k)).copied().unwrap_or(0)
                ));
            }
            out.push('\n');
        }
        out
    }
}

/// The injector a running fake consults; empty until the test sets a plan.
#[derive(Debug, Clone)]
pub struct FaultSlot {
    service: Service,
    injector: Arc<Mutex<Option<Arc<FaultInjector>>>>,
}

impl FaultSlot {
    pub fn new(service: Service) -> Self {
        Self {
            service,
            injector: Arc::new(Mutex::new(None)),
        }
    }

    pub fn set(&self, injector: Option<Arc<FaultInjector>>) {
        *self.injector.lock().unwrap() = injector;
    }

    pub fn get(&self) -> Option<Arc<FaultInjector>> {
        self.injector.lock().unwrap().clone()
    }

    /// `app` behind [`layer`]: every call it serves consults this slot's injector first.
    pub fn wrap(&self, app: axum::Router) -> axum::Router {
        app.layer(axum::middleware::from_fn_with_state(self.clone(), layer))
    }
}

/// The request header by which [`layer`] hands a fault the fake itself must show
/// (`NotFoundAfterCreate`, `RowErrors`) to the fake's handler. Only the fakes read it.
pub const INJECTED_HEADER: &str = "x-testkit-injected-fault";

/// The fault [`layer`] handed to the fake's handler for this call, if any.
pub fn injected(headers: &axum::http::HeaderMap) -> Option<FaultKind> {
    let v = headers.get(INJECTED_HEADER)?.to_str().ok()?;
    FaultKind::ALL.into_iter().find(|k| k.name() == v)
}

/// The kinds a call can show.
fn applicable(service: Service, method: &str, path: &str) -> Vec<FaultKind> {
    let mut kinds = vec![
        FaultKind::ServerError,
        FaultKind::RateLimited,
        FaultKind::Timeout,
        FaultKind::Reset,
    ];
    match service {
        // The OAuth token endpoints are not the services under test; a token failure is the
        // token source's business.
        Service::Gcp | Service::CloudConnexa
            if path == "/token" || path.starts_with("/api/v1/oauth") =>
        {
            return vec![];
        }
        Service::Gcp if method == "POST" && path.ends_with(":setIamPolicy") => {
            kinds.push(FaultKind::Conflict);
        }
        Service::Gcp if method == "POST" && path.ends_with("/serviceAccounts") => {
            kinds.push(FaultKind::NotFoundAfterCreate);
        }
        Service::BigQuery if method == "POST" && path.ends_with("/insertAll") => {
            kinds.push(FaultKind::RowErrors);
        }
        _ => {}
    }
    kinds
}

/// The failure's response in the service's own wire format.
fn error_response(service: Service, kind: FaultKind) -> Response {
    let json = |status: StatusCode, body: serde_json::Value| {
        let mut r = (status, body.to_string()).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=UTF-8"),
        );
        r
    };
    let google = |code: u16, status: &str, reason: &str, message: &str| {
        json(
            StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            json!({"error": {"code": code, "message": message, "status": status,
                             "errors": [{"message": message, "domain": "global", "reason": reason}]}}),
        )
    };
    match (service, kind) {
        (Service::Slack, FaultKind::RateLimited) => {
            let mut r = json(
                StatusCode::TOO_MANY_REQUESTS,
                json!({"ok": false, "error": "ratelimited"}),
            );
            r.headers_mut()
                .insert("retry-after", HeaderValue::from_static("1"));
            r
        }
        (Service::Slack, _) => {
            let mut r = (
                StatusCode::SERVICE_UNAVAILABLE,
                "<!DOCTYPE html><html><head><title>Server Error | Slack</title></head><body>Slack is having trouble.</body></html>",
            )
                .into_response();
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
            r
        }
        // C.6: an empty body and no Retry-After.
        (Service::CloudConnexa, FaultKind::RateLimited) => {
            StatusCode::TOO_MANY_REQUESTS.into_response()
        }
        (Service::CloudConnexa, _) => json(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"errorMessage": "Internal server error", "statusError": "INTERNAL_SERVER_ERROR", "errorDetails": {}}),
        ),
        (Service::Gcp, FaultKind::RateLimited) => google(
            429,
            "RESOURCE_EXHAUSTED",
            "rateLimitExceeded",
            "Quota exceeded for quota metric 'Requests' and limit 'Requests per minute' of service.",
        ),
        (Service::Gcp, FaultKind::Conflict) => google(
            409,
            "ABORTED",
            "aborted",
            "There were concurrent policy changes. Please retry the whole read-modify-write with exponential backoff.",
        ),
        (Service::Gcp, _) => google(
            503,
            "UNAVAILABLE",
            "backendError",
            "The service is currently unavailable.",
        ),
        (Service::BigQuery, FaultKind::RateLimited) => google(
            429,
            "RESOURCE_EXHAUSTED",
            "rateLimitExceeded",
            "Exceeded rate limits: too many api requests per user per method for this user_method.",
        ),
        (Service::BigQuery, _) => google(
            503,
            "UNAVAILABLE",
            "backendError",
            "The service is currently unavailable.",
        ),
    }
}

/// A response whose body fails at once: the server drops the connection with nothing of the
/// answer delivered that a client could use.
fn reset() -> Response {
    let stream = futures::stream::once(async {
        Err::<axum::body::Bytes, std::io::Error>(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "injected connection reset",
        ))
    });
    Response::new(Body::from_stream(stream))
}

/// The middleware every fake installs: consults the injector once per call.
pub async fn layer(State(slot): State<FaultSlot>, req: Request, next: Next) -> Response {
    let Some(inj) = slot.get() else {
        return next.run(req).await;
    };
    let kinds = applicable(slot.service, req.method().as_str(), req.uri().path());
    match inj.pick(slot.service, &kinds) {
        None => next.run(req).await,
        Some(FaultKind::Timeout) => {
            // Served, but the answer comes too late: the client cannot know whether it landed.
            let resp = next.run(req).await;
            tokio::time::sleep(inj.plan().hang).await;
            resp
        }
        Some(FaultKind::Reset) => {
            if inj.coin() {
                let _ = next.run(req).await;
            }
            reset()
        }
        Some(kind @ (FaultKind::NotFoundAfterCreate | FaultKind::RowErrors)) => {
            let mut req = req;
            req.headers_mut()
                .insert(INJECTED_HEADER, HeaderValue::from_static(kind.name()));
            next.run(req).await
        }
        Some(kind) => error_response(slot.service, kind),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_replays_the_same_faults_at_about_the_rate() {
        let kinds = [
            FaultKind::ServerError,
            FaultKind::Timeout,
            FaultKind::Conflict,
        ];
        let run = |seed| {
            let inj = FaultInjector::new(FaultPlan::new(0.2, seed));
            (0..5000)
                .map(|_| inj.pick(Service::Gcp, &kinds))
                .collect::<Vec<_>>()
        };
        let a = run(7);
        assert_eq!(a, run(7));
        assert_ne!(a, run(8));
        let hit = a.iter().filter(|k| k.is_some()).count() as f64 / a.len() as f64;
        assert!((0.17..0.23).contains(&hit), "{hit}");
        // Only applicable kinds, and the call-specific one takes about half.
        assert!(a.iter().flatten().all(|k| kinds.contains(k)));
        let conflicts = a
            .iter()
            .flatten()
            .filter(|k| **k == FaultKind::Conflict)
            .count() as f64;
        let share = conflicts / a.iter().flatten().count() as f64;
        assert!((0.4..0.6).contains(&share), "{share}");
    }

    #[test]
    fn nothing_is_injected_when_disabled_or_not_applicable() {
        let inj = FaultInjector::new(FaultPlan::new(1.0, 1));
        assert_eq!(inj.pick(Service::Slack, &[]), None);
        inj.set_enabled(false);
        assert_eq!(inj.pick(Service::Slack, &[FaultKind::Reset]), None);
        assert!(inj.counts().is_empty());
    }

    #[test]
    fn a_floor_makes_each_call_specific_kind_appear() {
        let inj = FaultInjector::new(FaultPlan {
            at_least: 2,
            ..FaultPlan::new(0.0, 5)
        });
        let set_policy = [FaultKind::ServerError, FaultKind::Conflict];
        assert_eq!(
            inj.pick(Service::Gcp, &set_policy),
            Some(FaultKind::Conflict)
        );
        assert_eq!(
            inj.pick(Service::Gcp, &set_policy),
            Some(FaultKind::Conflict)
        );
        // Then the rate (0 here) decides again.
        assert_eq!(inj.pick(Service::Gcp, &set_policy), None);
        assert_eq!(inj.pick(Service::Gcp, &[FaultKind::ServerError]), None);
    }

    fn only(kind: FaultKind) -> Arc<FaultInjector> {
        FaultInjector::new(FaultPlan {
            kinds: vec![kind],
            ..FaultPlan::new(1.0, 3)
        })
    }

    /// The failures as a client sees them on the wire.
    #[tokio::test]
    async fn slack_and_cloud_connexa_answer_in_their_own_formats() {
        let slack = crate::slack::FakeSlack::start().await;
        let http = reqwest::Client::new();
        let call = || {
            http.post(format!("{}/chat.postMessage", slack.api_url()))
                .bearer_auth(slack.token())
                .form(&[("channel", "C1"), ("text", "hi")])
                .send()
        };
        let inj = only(FaultKind::RateLimited);
        slack.set_fault_injector(Some(inj.clone()));
        let r = call().await.unwrap();
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["retry-after"], "1");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body, json!({"ok": false, "error": "ratelimited"}));
        assert_eq!(inj.count_of(FaultKind::RateLimited), 1);

        // A reset: the client gets no usable answer (whether the post landed is a coin toss).
        slack.set_fault_injector(Some(only(FaultKind::Reset)));
        let outcome = match call().await {
            Err(_) => None,
            Ok(r) => r.bytes().await.ok(),
        };
        assert!(outcome.is_none(), "a reset delivered {outcome:?}");

        slack.set_fault_injector(None);
        let r = call().await.unwrap();
        assert_eq!(r.status(), 200);

        let cc =
            crate::cloudconnexa::FakeCloudConnexa::start(crate::cloudconnexa::FakeConfig::fast())
                .await;
        cc.set_fault_injector(Some(only(FaultKind::RateLimited)));
        let r = http
            .get(format!("{}/api/v1/users", cc.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 429);
        assert!(r.headers().get("retry-after").is_none());
        assert!(r.bytes().await.unwrap().is_empty(), "C.6: an empty body");
    }
}
