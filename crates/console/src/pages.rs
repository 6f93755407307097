//! The console's routes and handlers.
//!
//! Every route but the sign-in page, the static files and the sign-in POST passes through
//! `require_session`: no valid session → a GET is sent to the sign-in page (303) and a POST is
//! refused (401); a POST whose `csrf` field is missing or wrong is refused (403) before any
//! handler runs, so no action can skip the check.

use std::fmt::Write as _;
use std::str::FromStr;

use access_core::audit::{AuditEvent, AuditKind};
use access_core::engine::{ChainWalk, EngineError};
use access_core::jobs::JobStatus;
use access_core::ports::{AuditFilter, JobFilter, PageCursor, PageQuery};
use access_core::request::RequestKind;
use access_core::submission::RawSubmission;
use access_core::{
    AccessRequest, Actor, Grant, GrantId, GrantStatus, JobId, RequestId, RequestStatus, ResourceId,
};
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use chrono::{DateTime, NaiveDate, Utc};
use minijinja::Value;
use serde::Deserialize;

use crate::auth::{LOGIN_COOKIE, SESSION_COOKIE, Session, csrf_matches};
use crate::{ConsoleState, Scope, charts, views};

/// Page size of every list.
const PAGE: u32 = 50;
/// Largest form body the console reads (the forms are a few fields).
const MAX_FORM: usize = 16 * 1024;
/// The Content-Security-Policy of every console response: nothing inline, nothing foreign.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The console under `/console`.
pub fn router(state: ConsoleState) -> Router {
    let protected = Router::new()
        .route(
            "/console",
            get(|| async { Redirect::to("/console/pending") }),
        )
        .route(
            "/console/",
            get(|| async { Redirect::to("/console/pending") }),
        )
        .route("/console/logout", post(logout))
        .route("/console/pending", get(pending))
        .route("/console/requests/{id}/approve", post(approve))
        .route("/console/requests/{id}/deny", post(deny))
        .route("/console/grants", get(grants))
        .route("/console/grants/{id}/revoke", post(revoke))
        .route("/console/grants/{id}/extend", post(extend))
        .route("/console/history", get(history))
        .route("/console/audit", get(audit))
        .route("/console/audit/export", get(audit_export))
        .route("/console/audit/verify", post(verify))
        .route("/console/slack", get(slack))
        .route("/console/slack/install", post(slack_install))
        .route("/console/slack/{id}/uninstall", post(slack_uninstall))
        .route("/console/health", get(health))
        .route("/console/jobs/{id}/retry", post(retry_job))
        .route("/console/charts", get(charts_page))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_session,
        ));
    Router::new()
        .route("/console/login", get(login_page).post(login))
        .route("/console/static/console.css", get(css))
        .route("/console/static/console.js", get(js))
        .route("/console/static/favicon.svg", get(favicon))
        .merge(protected)
        .layer(middleware::from_fn(security_headers))
        .with_state(state)
}

async fn security_headers(req: Request, next: Next) -> Response {
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    r
}

async fn css() -> Response {
    static_file("text/css; charset=utf-8", views::CSS)
}

async fn favicon() -> Response {
    static_file("image/svg+xml", views::FAVICON)
}

async fn js() -> Response {
    static_file("text/javascript; charset=utf-8", views::JS)
}

fn static_file(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

// ------------------------------------------------------------------------------------------------
// Sessions

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Secure cookies when the browser reached us over HTTPS (a TLS terminator says so with
/// `X-Forwarded-Proto`) or when the operator insists.
fn secure(state: &ConsoleState, headers: &HeaderMap) -> bool {
    state.auth.force_secure
        || headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

fn set_cookie(name: &str, value: &str, max_age: i64, secure: bool) -> HeaderValue {
    let mut c = format!(
        "{name}={value}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={}",
        max_age.max(0)
    );
    if secure {
        c.push_str("; Secure");
    }
    HeaderValue::from_str(&c).unwrap_or_else(|_| HeaderValue::from_static("invalid=; Max-Age=0"))
}

/// The `csrf` field of an urlencoded form. CSRF tokens are hex, so no decoding is needed; a
/// token sent encoded differently simply does not match.
fn form_csrf(body: &[u8]) -> Option<&str> {
    std::str::from_utf8(body)
        .ok()?
        .split('&')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| *k == "csrf")
        .map(|(_, v)| v)
}

async fn require_session(State(s): State<ConsoleState>, req: Request, next: Next) -> Response {
    let now = Utc::now();
    let session = cookie(req.headers(), SESSION_COOKIE).and_then(|c| s.auth.session(c, now));
    let Some(session) = session else {
        if req.method() == Method::GET || req.method() == Method::HEAD {
            return Redirect::to("/console/login").into_response();
        }
        return (
            StatusCode::UNAUTHORIZED,
            "Sign in to the console first (no valid session).",
        )
            .into_response();
    };
    let mut req = req;
    if req.method() == Method::POST {
        let (parts, body) = req.into_parts();
        let bytes = match axum::body::to_bytes(body, MAX_FORM).await {
            Ok(b) => b,
            Err(_) => return (StatusCode::PAYLOAD_TOO_LARGE, "Form too large.").into_response(),
        };
        if !form_csrf(&bytes).is_some_and(|t| csrf_matches(&session, t)) {
            tracing::warn!(path = %parts.uri.path(), "console POST refused: missing or wrong CSRF token");
            return (
                StatusCode::FORBIDDEN,
                "Missing or wrong CSRF token: reload the page and try again.",
            )
                .into_response();
        }
        req = Request::from_parts(parts, Body::from(bytes));
    }
    req.extensions_mut().insert(session);
    next.run(req).await
}

#[derive(Debug, Deserialize, Default)]
struct LoginQuery {
    #[serde(default)]
    error: Option<String>,
}

async fn login_page(
    State(s): State<ConsoleState>,
    headers: HeaderMap,
    Query(q): Query<LoginQuery>,
) -> Response {
    if !s.auth.is_enabled() {
        return (
            StatusCode::NOT_FOUND,
            "The console is disabled: set GATEHOUSE_ADMIN_TOKEN (or workspace/console tokens).",
        )
            .into_response();
    }
    let Some((nonce, token)) = s.auth.login_challenge() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let error = q.error.as_deref().map(|e| match e {
        "expired" => "The sign-in form expired; try again.",
        _ => "That token is not valid.",
    });
    let ctx = minijinja::context! {
        login_csrf => token,
        ttl_hours => s.auth.session_ttl.num_hours(),
        error => error,
    };
    let mut r = render(&s, "login.html", ctx);
    r.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(LOGIN_COOKIE, &nonce, 600, secure(&s, &headers)),
    );
    r
}

#[derive(Debug, Deserialize)]
struct LoginForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    token: String,
}

async fn login(
    State(s): State<ConsoleState>,
    headers: HeaderMap,
    axum::Form(f): axum::Form<LoginForm>,
) -> Response {
    let nonce = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if !s.auth.login_csrf_ok(nonce, &f.csrf) {
        return (
            StatusCode::FORBIDDEN,
            "Missing or wrong CSRF token on the sign-in form: reload it and try again.",
        )
            .into_response();
    }
    let Some(identity) = s.auth.identify(f.token.trim()) else {
        tracing::warn!("console sign-in refused: unknown token");
        return Redirect::to("/console/login?error=token").into_response();
    };
    let Some(value) = s.auth.issue(&identity, Utc::now()) else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    tracing::info!(actor = %identity.actor.id(), "console sign-in");
    let sec = secure(&s, &headers);
    let mut r = Redirect::to("/console/pending").into_response();
    r.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(
            SESSION_COOKIE,
            &value,
            s.auth.session_ttl.num_seconds(),
            sec,
        ),
    );
    r.headers_mut()
        .append(header::SET_COOKIE, set_cookie(LOGIN_COOKIE, "", 0, sec));
    r
}

async fn logout(State(s): State<ConsoleState>, headers: HeaderMap) -> Response {
    let mut r = Redirect::to("/console/login").into_response();
    r.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(SESSION_COOKIE, "", 0, secure(&s, &headers)),
    );
    r
}

// ------------------------------------------------------------------------------------------------
// Rendering helpers

/// Any serialisable value as a template value.
fn ser<T: serde::Serialize>(v: T) -> Value {
    Value::from(minijinja::value::Serde(v))
}

fn render(s: &ConsoleState, name: &str, ctx: Value) -> Response {
    match s.templates.get_template(name).and_then(|t| t.render(ctx)) {
        Ok(html) => ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response(),
        Err(e) => {
            tracing::error!(template = name, error = %e, "console template failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "The page could not be rendered.",
            )
                .into_response()
        }
    }
}

/// Context every page has: who is signed in, the form token, the page for the menu.
fn page_ctx(session: &Session, page: &str, notice: Option<&str>, error: Option<String>) -> Value {
    minijinja::context! {
        who => session.identity.display(),
        csrf => session.csrf.clone(),
        page => page,
        can_audit => session.identity.scope == Scope::All,
        notice => notice,
        error => error,
    }
}

fn merge(base: Value, extra: Value) -> Value {
    minijinja::context! { ..extra, ..base }
}

/// A refusal page for an action: the engine's (or our) message, with a link back.
fn refusal(
    s: &ConsoleState,
    session: &Session,
    status: StatusCode,
    msg: String,
    back: &str,
) -> Response {
    let ctx = merge(
        page_ctx(session, "", None, Some(msg)),
        minijinja::context! { heading => "Not done", back => back },
    );
    let mut r = render(s, "message.html", ctx);
    *r.status_mut() = status;
    r
}

fn engine_refusal(s: &ConsoleState, session: &Session, e: EngineError, back: &str) -> Response {
    let status = match &e {
        EngineError::RequestNotFound(_) | EngineError::GrantNotFound(_) => StatusCode::NOT_FOUND,
        EngineError::NotEligible(_) | EngineError::NotApprover(_) | EngineError::NotYours => {
            StatusCode::FORBIDDEN
        }
        EngineError::UnknownResource { .. }
        | EngineError::InvalidDuration(_)
        | EngineError::InvalidJustification(_) => StatusCode::BAD_REQUEST,
        EngineError::Busy | EngineError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        EngineError::NoProvider(_) | EngineError::Store(_) => {
            tracing::error!(error = ?e, "console action failed");
            return refusal(
                s,
                session,
                StatusCode::INTERNAL_SERVER_ERROR,
                "Gatehouse could not do that; see the server log.".into(),
                back,
            );
        }
        _ => StatusCode::CONFLICT,
    };
    refusal(s, session, status, e.to_string(), back)
}

fn store_failure(s: &ConsoleState, session: &Session, e: impl std::fmt::Debug) -> Response {
    tracing::error!(error = ?e, "console read failed");
    refusal(
        s,
        session,
        StatusCode::INTERNAL_SERVER_ERROR,
        "The store could not be read; see the server log.".into(),
        "/console/pending",
    )
}

fn short(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M").to_string()
}

fn left(until: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let s = (until - now).num_seconds();
    if s <= 0 {
        return "due".into();
    }
    let (d, h, m) = (s / 86_400, (s % 86_400) / 3600, (s % 3600) / 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else {
        format!("{m}m {}s", s % 60)
    }
}

fn person(s: &access_core::Subject) -> String {
    let who = if s.name.is_empty() {
        s.user_id.clone()
    } else {
        format!("{} ({})", s.name, s.user_id)
    };
    match &s.email {
        Some(e) => format!("{who} <{}>", e.as_str()),
        None => who,
    }
}

fn actor_name(a: &Option<Actor>) -> String {
    a.as_ref().map(Actor::id).unwrap_or_default()
}

fn notice_for(code: Option<&str>) -> Option<&'static str> {
    Some(match code? {
        "approved" => "Approved.",
        "approval-recorded" => "Your approval is recorded; more approvals are needed.",
        "denied" => "Denied.",
        "revoked" => "Revocation requested: the provider call runs now.",
        "extended" => "Extension requested.",
        "retried" => "The job is queued again.",
        "uninstalled" => "Uninstalled.",
        _ => return None,
    })
}

/// `before` cursor: `<created_at micros>_<id>`.
fn parse_cursor(raw: Option<&str>) -> Option<PageCursor> {
    let (t, id) = raw?.split_once('_')?;
    Some(PageCursor {
        created_at: DateTime::from_timestamp_micros(t.parse().ok()?)?,
        id: id.to_string(),
    })
}

fn cursor_of(created_at: DateTime<Utc>, id: &str) -> String {
    format!("{}_{id}", created_at.timestamp_micros())
}

/// The cursor of the page after `rows` (keyed by each row's creation time and id), or `None`
/// when `rows` is not a full page: there is nothing after it.
fn next_cursor<T>(rows: &[T], key: impl Fn(&T) -> (DateTime<Utc>, String)) -> Option<String> {
    if rows.len() as u32 != PAGE {
        return None;
    }
    let (created_at, id) = key(rows.last()?);
    Some(cursor_of(created_at, &id))
}

/// A query string from pairs, percent-encoding values.
fn query_string(pairs: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (k, v) in pairs.iter().filter(|(_, v)| !v.is_empty()) {
        out.push(if out.is_empty() { '?' } else { '&' });
        out.push_str(k);
        out.push('=');
        for b in v.bytes() {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                out.push(b as char);
            } else {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

fn parse_day(raw: &str) -> Option<DateTime<Utc>> {
    raw.parse::<NaiveDate>()
        .ok()
        .map(|d| d.and_time(chrono::NaiveTime::MIN).and_utc())
}

// ------------------------------------------------------------------------------------------------
// Pending requests

#[derive(Debug, Deserialize, Default)]
struct ListQuery {
    #[serde(default)]
    ok: Option<String>,
    #[serde(default)]
    before: Option<String>,
}

fn request_row(r: &AccessRequest, now: DateTime<Utc>) -> Value {
    minijinja::context! {
        id => r.id.to_string(),
        created_at => r.created_at.to_rfc3339(),
        created_at_short => short(r.created_at),
        person => person(&r.subject),
        resource => r.resource.to_string(),
        kind => match r.kind { RequestKind::New => "new", RequestKind::Extend => "extend" },
        duration => r.duration.to_string(),
        justification => r.justification.to_string(),
        pending_until => r.pending_until.map(|t| t.to_rfc3339()),
        pending_left => r.pending_until.map(|t| left(t, now)),
        status => r.status.as_str(),
        decided_by => actor_name(&r.decided_by),
    }
}

async fn pending(
    State(s): State<ConsoleState>,
    axum::Extension(session): axum::Extension<Session>,
    Query(q): Query<ListQuery>,
) -> Response {
    let query = PageQuery {
        status: Some(RequestStatus::Pending),
        team_id: session.identity.scope.team().map(str::to_string),
        before: parse_cursor(q.before.as_deref()),
        limit: PAGE,
        ..PageQuery::default()
    };
    let rows = match s.engine.requests_page(&query).await {
        Ok(r) => r,
        Err(e) => return store_failure(&s, &session, e),
    };
    let now = s.engine.now();
    let next = next_cursor(&rows, |r| (r.created_at, r.id.to_string()))
        .map(|c| format!("/console/pending?before={c}"));
    let ctx = merge(
        page_ctx(&session, "pending", notice_for(q.ok.as_deref()), None),
        minijinja::context! {
            rows => rows.iter().map(|r| request_row(r, now)).collect::<Vec<_>>(),
            next => next,
            actor => session.identity.actor.id(),
        },
    );
    render(&s, "pending.html", ctx)
}

/// The request, if the session's scope covers it (a request outside it does not exist here).
async fn scoped_request(
    s: &ConsoleState,
    session: &Session,
    raw: &str,
) -> Result<RequestId, Response> {
    let back = "/console/pending";
    let Ok(id) = raw.parse::<RequestId>() else {
        return Err(refusal(
            s,
            session,
            StatusCode::NOT_FOUND,
            format!("'{raw}' is not a request id."),
            back,
        ));
    };
    match s.engine.request(id).await {
        Ok(Some(r)) if session.identity.scope.covers(&r.subject.team_id) => Ok(id),
        Ok(_) => Err(engine_refusal(
            s,
            session,
            EngineError::RequestNotFound(id),
            back,
        )),
        Err(e) => Err(store_failure(s, session, e)),
    }
}

#[derive(Debug, Deserialize, Default)]
struct DenyForm {
    #[serde(default)]
    reason: String,
}

async fn approve(
    State(s): State<ConsoleState>,
    axum::Extension(session): axum::Extension<Session>,
    Path(id): Path<String>,
) -> Response {
    let back = "/console/pending";
    let id = match scoped_request(&s, &session, &id).await {
        Ok(id) => id,
        Err(r) => return r,
    };
    match s.engine.approve(id, session.identity.actor.clone()).await {
        Ok(r) if r.status == RequestStatus::Pending => {
            Redirect::to("/console/pending?ok=approval-recorded").into_response()
        }
        Ok(_) => Redirect::to("/console/pending?ok=approved").into_response(),
        Err(e) => engine_refusal(&s, &session, e, back),
    }
}

async fn deny(
    State(s): State<ConsoleState>,
    axum::Extension(session): axum::Extension<Session>,
    Path(id): Path<String>,
    axum::Form(f): axum::Form<DenyForm>,
) -> Response {
    let back = "/console/pending";
    let id = match scoped_request(&s, &session, &id).await {
        Ok(id) => id,
        Err(r) => return r,
    };
    let reason =
        Some(f.reason.trim().chars().take(500).collect::<String>()).filter(|r| !r.is_empty());
    match s
        .engine
        .deny(id, session.identity.actor.clone(), reason)
        .await
    {
        Ok(_) => Redirect::to("/console/pending?ok=denied").into_response(),
        Err(e) => engine_refusal(&s, &session, e, back),
    }
}

// ------------------------------------------------------------------------------------------------
// Active grants

fn grant_row(g: &Grant, now: DateTime<Utc>) -> Value {
    minijinja::context! {
        id => g.id.to_string(),
        person => person(&g.subject),
        resource => g.resource.to_string(),
        status => g.status.as_str(),
        granted_at_short => g.granted_at.map(short).unwrap_or_default(),
        expires_at => g.expires_at.to_rfc3339(),
        time_left => left(g.expires_at, now),
    }
}

async fn grants(
    State(s): State<ConsoleState>,
    axum::Extension(session): axum::Extension<Session>,
    Query(q): Query<ListQuery>,
) -> Response {
    let query = PageQuery {
        live_only: true,
        team_id: session.identity.scope.team().map(str::to_string),
        before: parse_cursor(q.before.as_deref()),
        limit: PAGE,
        ..PageQuery::<GrantStatus>::default()
    };
    let rows = match s.engine.grants_page(&query).await {
        Ok(r) => r,
        Err(e) => return store_failure(&s, &session, e),
    };
    let now = s.engine.now();
    let next = next_cursor(&rows, |g| (g.created_at, g.id.to_string()))
        .map(|c| format!("/console/grants?before={c}"));
    let ctx = merge(
        page_ctx(&session, "grants", notice_for(q.ok.as_deref()), None),
        minijinja::context! {
            rows => rows.iter().map(|g| grant_row(g, now)).collect::<Vec<_>>(),
            next => next,
        },
    );
    render(&s, "grants.html", ctx)
}

async fn scoped_grant(s: &ConsoleState, session: &Session, raw: &str) -> Result<Grant, Response> {
    let back = "/console/grants";
    let Ok(id) = raw.parse::<GrantId>() else {
        return Err(refusal(
            s,
            session,
            StatusCode::NOT_FOUND,
            format!("'{raw}' is not a grant id."),
            back,
        ));
    };
    match s.engine.grant(id).await {
        Ok(Some(g)) if session.identity.scope.covers(&g.subject.team_id) => Ok(g),
        Ok(_) => Err(engine_refusal(
            s,
            session,
            EngineError::GrantNotFound(id),
            back,
        )),
        Err(e) => Err(store_failure(s, session, e)),
    }
}

async fn revoke(
    State(s): State<ConsoleState>,
    axum::Extension(session): axum::Extension<Session>,
    Path(id): Path<String>,
) -> Response {
    let back = "/console/grants";
    let g = match scoped_grant(&s, &session, &id).await {
        Ok(g) => g,
        Err(r) => return r,
    };
    match s
        .engine
        .revoke_grant(g.id, session.identity.actor.clone())
        .await
    {
        Ok(_) => Redirect::to("/console/grants?ok=revoked").into_response(),
        Err(e) => engine_refusal(&s, &session, e, back),
    }
}

#[derive(Debug, Deserialize, Default)]
struct ExtendForm {
    #[serde(default)]
    duration: String,
}

/// An extension is a request of kind `extend` for the holder, like `/access request … extend`
/// in Slack: the resource's approval policy decides (an auto-approved resource extends at once,
/// another waits on the pending page). The justification names who asked, from the session.
async fn extend(
    State(s): State<ConsoleState>,
    axum::Extension(session): axum::Extension<Session>,
    Path(id): Path<String>,
    axum::Form(f): axum::Form<ExtendForm>,
) -> Response {
    let back = "/console/grants";
    let g = match scoped_grant(&s, &session, &id).await {
        Ok(g) => g,
        Err(r) => return r,
    };
    let raw = RawSubmission::new(
        g.resource.to_string(),
        Some(f.duration),
        format!(
            "Extension asked for in the web console by {}",
            session.identity.actor.id()
        ),
    )
    .extension();
    match s.engine.submit_raw(g.subject.clone(), &raw).await {
        Ok(_) => Redirect::to("/console/grants?ok=extended").into_response(),
        Err(e) => engine_refusal(&s, &session, e, back),
    }
}

// ------------------------------------------------------------------------------------------------
// History

#[derive(Debug, Deserialize, Default, serde::Serialize)]
struct HistoryQuery {
    #[serde(default)]
    person: String,
    #[serde(default)]
    resource: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    #[serde(default)]
    before: Option<String>,
}

async fn history(
    State(s): State<ConsoleState>,
    axum::Extension(session): axum::Extension<Session>,
    Query(q): Query<HistoryQuery>,
) -> Response {
    let bad = |m: String| Some(m);
    let mut error = None;
    let status = if q.status.is_empty() {
        None
    } else {
        match RequestStatus::from_str(&q.status) {
            Ok(s) => Some(s),
            Err(e) => {
                error = bad(e);
                None
            }
        }
    };
    let resource = if q.resource.is_empty() {
        None
    } else {
        match ResourceId::parse(&q.resource) {
            Ok(r) => Some(r),
            Err(e) => {
                error = bad(e.to_string());
                None
            }
        }
    };
    let mut day = |raw: &str, what: &str| -> Option<DateTime<Utc>> {
        if raw.is_empty() {
            return None;
        }
        let d = parse_day(raw);
        if d.is_none() {
            error = Some(format!("{what} must be a date (YYYY-MM-DD), got '{raw}'"));
        }
        d
    };
    let since = day(&q.since, "From");
    // "To" is inclusive: up to the end of that day.
    let until = day(&q.until, "To").map(|t| t + chrono::Duration::days(1));
    let rows = if error.is_some() {
        Vec::new()
    } else {
        let query = PageQuery {
            status,
            resource,
            team_id: session.identity.scope.team().map(str::to_string),
            person: Some(q.person.trim().to_string()).filter(|p| !p.is_empty()),
            since,
            until,
            before: parse_cursor(q.before.as_deref()),
            limit: PAGE,
            ..PageQuery::default()
        };
        match s.engine.requests_page(&query).await {
            Ok(r) => r,
            Err(e) => return store_failure(&s, &session, e),
        }
    };
    let now = s.engine.now();
    let next = next_cursor(&rows, |r| (r.created_at, r.id.to_string())).map(|c| {
        format!(
            "/console/history{}",
            query_string(&[
                ("person", &q.person),
                ("resource", &q.resource),
                ("status", &q.status),
                ("since", &q.since),
                ("until", &q.until),
                ("before", &c),
            ])
        )
    });
    let ctx = merge(
        page_ctx(&session, "history", None, error),
        minijinja::context! {
            rows => rows.iter().map(|r| request_row(r, now)).collect::<Vec<_>>(),
            next => next,
            f => ser(&q),
            resources => s.engine.resources().iter().map(|r| r.id.to_string()).collect::<Vec<_>>(),
            statuses => RequestStatus::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        },
    );
    render(&s, "history.html", ctx)
}

// ------------------------------------------------------------------------------------------------
// Audit

#[derive(Debug, Deserialize, Default, serde::Serialize)]
struct AuditQuery {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    resource: String,
    #[serde(default)]
    subject: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    #[serde(default)]
    after: Option<i64>,
    #[serde(default)]
    format: String,
}

impl AuditQuery {
    fn filter(&self) -> Result<AuditFilter, String> {
        let kind = match self.kind.as_str() {
            "" => None,
            k => Some(AuditKind::parse(k).ok_or_else(|| format!("unknown kind '{k}'"))?),
        };
        let resource = match self.resource.as_str() {
            "" => None,
            r => Some(ResourceId::parse(r).map_err(|e| e.to_string())?),
        };
        let day = |raw: &str, what: &str| -> Result<Option<DateTime<Utc>>, String> {
            if raw.is_empty() {
                return Ok(None);
            }
            parse_day(raw)
                .map(Some)
                .ok_or_else(|| format!("{what} must be a date (YYYY-MM-DD), got '{raw}'"))
        };
        Ok(AuditFilter {
            after_seq: self.after,
            since: day(&self.since, "From")?,
            until: day(&self.until, "To")?.map(|t| t + chrono::Duration::days(1)),
            kind,
            resource,
            subject: Some(self.subject.trim().to_string()).filter(|s| !s.is_empty()),
            request_id: None,
            limit: Some(PAGE),
        })
    }

    fn url(&self, path: &str, extra: &[(&str, &str)]) -> String {
        let mut pairs = vec![
            ("kind", self.kind.as_str()),
            ("resource", self.resource.as_str()),
            ("subject", self.subject.as_str()),
            ("since", self.since.as_str()),
            ("until", self.until.as_str()),
        ];
        pairs.extend_from_slice(extra);
        format!("{path}{}", query_string(&pairs))
    }
}

fn audit_row(e: &AuditEvent) -> Value {
    minijinja::context! {
        seq => e.seq,
        at => e.record.at.format("%Y-%m-%d %H:%M:%S").to_string(),
        kind => e.record.kind.as_str(),
        actor => e.record.actor.id(),
        subject => e.record.subject.clone().unwrap_or_default(),
        resource => e.record.resource.as_ref().map(|r| r.to_string()).unwrap_or_default(),
        details => e.record.details.to_string(),
    }
}

/// The audit trail spans every workspace: only an all-workspace identity reads it.
fn audit_refusal(s: &ConsoleState, session: &Session) -> Option<Response> {
    if session.identity.scope == Scope::All {
        None
    } else {
        Some(refusal(
            s,
            session,
            StatusCode::FORBIDDEN,
            "The audit trail covers every workspace: sign in with the admin token to read it."
                .into(),
            "/console/pending",
        ))
    }
}

async fn audit(
    State(s): State<ConsoleState>,
    axum::Extension(session): axum::Extension<Session>,
    Query(q): Query<AuditQuery>,
) -> Response {
    audit_page(&s, &session, q, None).await
}

async fn audit_page(
    s: &ConsoleState,
    session: &Session,
    q: AuditQuery,
    verification: Option<access_core::audit::ChainVerification>,
) -> Response {
    if let Some(r) = audit_refusal(s, session) {
        return r;
    }
    let (rows, error) = match q.filter() {
        Ok(f) => match s.engine.audit_events(&f).await {
            Ok(r) => (r, None),
            Err(e) => return store_failure(s, session, e),
        },
        Err(e) => (Vec::new(), Some(e)),
    };
    let next = (rows.len() as u32 == PAGE)
        .then(|| rows.last())
        .flatten()
        .map(|e| q.url("/console/audit", &[("after", &e.seq.to_string())]));
    let ctx = merge(
        page_ctx(session, "audit", None, error),
        minijinja::context! {
            rows => rows.iter().map(audit_row).collect::<Vec<_>>(),
            next => next,
            f => ser(&q),
            kinds => AuditKind::ALL.iter().map(|k| k.as_str()).collect::<Vec<_>>(),
            resources => s.engine.resources().iter().map(|r| r.id.to_string()).collect::<Vec<_>>(),
            csv_url => q.url("/console/audit/export", &[("format", "csv")]),
            jsonl_url => q.url("/console/audit/export", &[("format", "jsonl")]),
            verification => verification.map(|v| ser(&v)),
        },
    );
    render(s, "audit.html", ctx)
}

#[derive(Debug, Deserialize, Default)]
struct VerifyForm {
    #[serde(default)]
    full: Option<String>,
}

async fn verify(
    State(s): State<ConsoleState>,
    axum::Extension(session): axum::Extension<Session>,
    axum::Form(f): axum::Form<VerifyForm>,
) -> Response {
    if let Some(r) = audit_refusal(&s, &session) {
        return r;
    }
    let walk = if f.full.as_deref() == Some("true") {
        ChainWalk::Full
    } else {
        ChainWalk::FromCheckpoint
    };
    match s.engine.verify_audit_chain(walk).await {
        Ok(v) => audit_page(&s, &session, AuditQuery::default(), Some(v)).await,
        Err(e) => store_failure(&s, &session, e),
    }
}

/// A CSV cell: quoted, quotes doubled; a cell a spreadsheet would run as a formula gets a
/// leading apostrophe (the JSONL download is the exact record).
fn csv_cell(out: &mut String, v: &str) {
    out.push('"');
    if v.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        out.push('\'');
    }
    out.push_str(&v.replace('"', "\"\""));
    out.push('"');
}

/// Every matching event (not one page), read 1,000 at a time by sequence number.
async fn audit_export(
    State(s): State<ConsoleState>,
    axum::Extension(session): axum::Extension<Session>,
    Query(q): Query<AuditQuery>,
) -> Response {
    if let Some(r) = audit_refusal(&s, &session) {
        return r;
    }
    let csv = match q.format.as_str() {
        "csv" => true,
        "jsonl" => false,
        other => {
            return refusal(
                &s,
                &session,
                StatusCode::BAD_REQUEST,
                format!("format must be csv or jsonl, got '{other}'"),
                "/console/audit",
            );
        }
    };
    let mut filter = match q.filter() {
        Ok(f) => f,
        Err(e) => return refusal(&s, &session, StatusCode::BAD_REQUEST, e, "/console/audit"),
    };
    filter.limit = Some(1000);
    let mut out = String::new();
    if csv {
        out.push_str(
            "seq,id,at,kind,actor,subject,resource,request_id,grant_id,details,prev_hash,hash\n",
        );
    }
    loop {
        let page = match s.engine.audit_events(&filter).await {
            Ok(p) => p,
            Err(e) => return store_failure(&s, &session, e),
        };
        for e in &page {
            if csv {
                let r = &e.record;
                let cells = [
                    e.seq.to_string(),
                    r.id.to_string(),
                    r.at.to_rfc3339(),
                    r.kind.as_str().to_string(),
                    r.actor.id(),
                    r.subject.clone().unwrap_or_default(),
                    r.resource
                        .as_ref()
                        .map(|x| x.to_string())
                        .unwrap_or_default(),
                    r.request_id.map(|x| x.to_string()).unwrap_or_default(),
                    r.grant_id.map(|x| x.to_string()).unwrap_or_default(),
                    r.details.to_string(),
                    e.prev_hash.clone(),
                    e.hash.clone(),
                ];
                for (i, c) in cells.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    csv_cell(&mut out, c);
                }
                out.push('\n');
            } else {
                match serde_json::to_string(e) {
                    Ok(line) => {
                        out.push_str(&line);
                        out.push('\n');
                    }
                    Err(err) => return store_failure(&s, &session, err),
                }
            }
        }
        match page.last() {
            Some(last) if page.len() == 1000 => filter.after_seq = Some(last.seq),
            _ => break,
        }
    }
    let (kind, name) = if csv {
        ("text/csv; charset=utf-8", "gatehouse-audit.csv")
    } else {
        ("application/x-ndjson", "gatehouse-audit.jsonl")
    };
    (
        [
            (header::CONTENT_TYPE, kind.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        out,
    )
        .into_response()
}

// ------------------------------------------------------------------------------------------------
// Slack installations

async fn slack(
    State(s): State<ConsoleState>,
    axum::Extension(session): axum::Extension<Session>,
    Query(q): Query<ListQuery>,
) -> Response {
    let configured = s.hooks.slack_install_configured();
    let (rows, error) = if configured {
        match s.hooks.installations(&session.identity.scope).await {
            Ok(r) => (r, None),
            Err(e) => (Vec::new(), Some(e)),
        }
    } else {
        (Vec::new(), None)
    };
    let ctx = merge(
        page_ctx(&session, "slack", notice_for(q.ok.as_deref()), error),
        minijinja::context! { configured => configured, rows => ser(rows) },
    );
    render(&s, "slack.html", ctx)
}

async fn slack_install(
    State(s): State<ConsoleState>,
    axum::Extension(session): axum::Extension<Session>,
) -> Response {
    match s.hooks.install_link(&session.identity.scope).await {
        Ok(url) => Redirect::to(&url).into_response(),
        Err(e) => refusal(
            &s,
            &session,
            StatusCode::SERVICE_UNAVAILABLE,
            e,
            "/console/slack",
        ),
    }
}

async fn slack_uninstall(
    State(s): State<ConsoleState>,
    axum::Extension(session): axum::Extension<Session>,
    Path(id): Path<String>,
) -> Response {
    if !session.identity.scope.covers(&id) {
        return refusal(
            &s,
            &session,
            StatusCode::FORBIDDEN,
            "That workspace is outside this token's scope.".into(),
            "/console/slack",
        );
    }
    match s.hooks.uninstall(&id).await {
        Ok(true) => Redirect::to("/console/slack?ok=uninstalled").into_response(),
        Ok(false) => refusal(
            &s,
            &session,
            StatusCode::NOT_FOUND,
            format!("Nothing is installed for {id}."),
            "/console/slack",
        ),
        Err(e) => refusal(
            &s,
            &session,
            StatusCode::INTERNAL_SERVER_ERROR,
            e,
            "/console/slack",
        ),
    }
}

// ------------------------------------------------------------------------------------------------
// Health

fn secs(v: Option<i64>) -> String {
    match v {
        None => "none".into(),
        Some(s) if s < 120 => format!("{s} s"),
        Some(s) if s < 7200 => format!("{} min", s / 60),
        Some(s) => format!("{} h", s / 3600),
    }
}

async fn health(
    State(s): State<ConsoleState>,
    axum::Extension(session): axum::Extension<Session>,
    Query(q): Query<ListQuery>,
) -> Response {
    let stats = match s.engine.job_stats(None).await {
        Ok(v) => v,
        Err(e) => return store_failure(&s, &session, e),
    };
    // Revocation lag: how long the oldest due take-back has waited.
    let mut lag: Option<i64> = None;
    for kind in ["expire", "revoke"] {
        match s.engine.job_stats(Some(kind)).await {
            Ok(k) => lag = lag.max(k.oldest_due_secs),
            Err(e) => return store_failure(&s, &session, e),
        }
    }
    let dead = match s
        .engine
        .jobs(&JobFilter {
            status: Some(JobStatus::Dead),
            kind: None,
            limit: Some(100),
        })
        .await
    {
        Ok(v) => v,
        Err(e) => return store_failure(&s, &session, e),
    };
    let mut lines = Vec::new();
    for r in s.engine.resources() {
        let reason = s.engine.unavailable_reason(&r).await;
        lines.push(crate::StatusLine {
            name: format!("resource {} ({})", r.id, r.provider),
            ok: reason.is_none(),
            detail: reason.unwrap_or_default(),
        });
    }
    lines.extend(s.hooks.status_lines().await);
    let ctx = merge(
        page_ctx(&session, "health", notice_for(q.ok.as_deref()), None),
        minijinja::context! {
            stats => ser(&stats),
            oldest_due => secs(stats.oldest_due_secs),
            revocation_lag => secs(lag),
            dead => dead.iter().map(|j| minijinja::context! {
                id => j.id.to_string(),
                kind => j.kind.name(),
                attempts => j.attempts,
                last_error => j.last_error.clone().unwrap_or_default(),
                created_at => short(j.created_at),
            }).collect::<Vec<_>>(),
            lines => ser(lines),
        },
    );
    render(&s, "health.html", ctx)
}

async fn retry_job(
    State(s): State<ConsoleState>,
    axum::Extension(session): axum::Extension<Session>,
    Path(id): Path<String>,
) -> Response {
    // Jobs are not per workspace: only an all-workspace identity retries them.
    if session.identity.scope != Scope::All {
        return refusal(
            &s,
            &session,
            StatusCode::FORBIDDEN,
            "Retrying jobs needs the admin token.".into(),
            "/console/health",
        );
    }
    let Ok(id) = id.parse::<JobId>() else {
        return refusal(
            &s,
            &session,
            StatusCode::NOT_FOUND,
            "No such job.".into(),
            "/console/health",
        );
    };
    match s.engine.revive_job(id).await {
        Ok(true) => {
            tracing::info!(job = %id, actor = %session.identity.actor.id(), "dead job retried from the console");
            Redirect::to("/console/health?ok=retried").into_response()
        }
        Ok(false) => refusal(
            &s,
            &session,
            StatusCode::CONFLICT,
            "That job is not dead (already retried?).".into(),
            "/console/health",
        ),
        Err(e) => store_failure(&s, &session, e),
    }
}

// ------------------------------------------------------------------------------------------------
// Charts

async fn charts_page(
    State(s): State<ConsoleState>,
    axum::Extension(session): axum::Extension<Session>,
) -> Response {
    const DAYS: u32 = 30;
    let stats = match s
        .engine
        .daily_stats(DAYS, session.identity.scope.team())
        .await
    {
        Ok(v) => v,
        Err(e) => return store_failure(&s, &session, e),
    };
    let days: Vec<NaiveDate> = stats.active_at_end_of_day.iter().map(|(d, _)| *d).collect();
    let approve: Vec<(NaiveDate, f64)> = stats
        .approve_secs
        .iter()
        .map(|(d, _, mean)| (*d, (mean / 60.0 * 10.0).round() / 10.0))
        .collect();
    let active: Vec<(NaiveDate, f64)> = stats
        .active_at_end_of_day
        .iter()
        .map(|(d, n)| (*d, *n as f64))
        .collect();
    let ctx = merge(
        page_ctx(&session, "charts", None, None),
        minijinja::context! {
            days => DAYS,
            grants_svg => Value::from_safe_string(charts::stacked_bars(&days, &stats.grants_per_day)),
            approve_svg => Value::from_safe_string(charts::bars("mean minutes to approve", &days, &approve, "#d0652f")),
            active_svg => Value::from_safe_string(charts::bars("active grants", &days, &active, "#1f7a3a")),
        },
    );
    render(&s, "charts.html", ctx)
}
