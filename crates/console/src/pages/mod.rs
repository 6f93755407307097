//! The console's routes, and the rendering helpers its pages share.
//!
//! One file per page: `session` (sign-in and the session check), `requests` (pending and
//! history), `grants`, `audit` (list, verification, export) and `operations` (Slack
//! installations, health, charts).
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

mod audit;
mod grants;
mod operations;
mod requests;
mod session;

use audit::*;
use grants::*;
use operations::*;
use requests::*;
use session::*;

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

/// The query of the list pages: a notice code after an action, and the paging cursor.
#[derive(Debug, Deserialize, Default)]
struct ListQuery {
    #[serde(default)]
    ok: Option<String>,
    #[serde(default)]
    before: Option<String>,
}
