//! The install flow's HTTP endpoints: install page, callback, admin status / uninstall / cleanup.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use super::flow::{CallbackParams, InstallFailure, InstallFlow};
use crate::admin_auth::AdminTokens;
use crate::config::Secret;
use crate::installations::InstallError;

type Flow = Arc<InstallFlow>;

/// `GET /api/slack/oauth/start`, `GET /slack/install`, `GET /slack/oauth/callback`,
/// `GET|DELETE /api/slack/installation/{team_id}`, `POST /api/slack/cleanup-expired-states`.
pub fn oauth_router(flow: Arc<InstallFlow>) -> Router {
    let admin = Router::new()
        .route("/api/slack/oauth/start", get(start_endpoint))
        .route(
            "/api/slack/installation/{team_id}",
            get(status_endpoint).delete(uninstall_endpoint),
        )
        .route("/api/slack/cleanup-expired-states", post(cleanup_endpoint))
        .layer(middleware::from_fn_with_state(
            Arc::new(AdminTokens::new(
                flow.config().admin_token.clone(),
                flow.config().workspace_admin_tokens.clone(),
            )),
            crate::admin_auth::require_admin,
        ));
    Router::new()
        .route("/slack/install", get(install_page))
        .route("/slack/oauth/callback", get(callback_endpoint))
        .merge(admin)
        .with_state(flow)
}

fn json_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": code, "message": message})),
    )
        .into_response()
}

/// `T123=token,E456=token` → pairs; malformed entries are skipped with a warning (never logged
/// with their token).
pub fn parse_workspace_tokens(raw: &str) -> Vec<(String, Secret)> {
    raw.split(',')
        .filter(|e| !e.trim().is_empty())
        .filter_map(|entry| match entry.split_once('=') {
            Some((id, token)) if !id.trim().is_empty() && !token.trim().is_empty() => {
                Some((id.trim().to_string(), Secret::new(token.trim())))
            }
            _ => {
                tracing::warn!("ignoring a malformed GATEHOUSE_WORKSPACE_ADMIN_TOKENS entry");
                None
            }
        })
        .collect()
}

/// Whom an admin token speaks for (the one admin-auth layer's, [`crate::admin_auth`]).
pub use crate::admin_auth::AdminScope;

impl AdminScope {
    /// The refusal for a workspace admin acting on another workspace, if it is one.
    fn refusal(&self, team_or_enterprise: &str) -> Option<Response> {
        match self {
            AdminScope::Workspace(id) if id != team_or_enterprise => Some(json_error(
                StatusCode::FORBIDDEN,
                "forbidden",
                &format!("This admin token is limited to workspace {id}."),
            )),
            _ => None,
        }
    }
}

fn internal(e: InstallError) -> Response {
    tracing::error!(error = %e, "Slack installation store failed");
    json_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "store_error",
        "The installation store failed; see the server log.",
    )
}

async fn start_endpoint(
    State(flow): State<Flow>,
    Extension(scope): Extension<AdminScope>,
) -> Response {
    if !flow.config().is_configured() {
        return json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_configured",
            "Set SLACK_CLIENT_ID and SLACK_CLIENT_SECRET to install into workspaces.",
        );
    }
    let bound = match &scope {
        AdminScope::Workspace(id) => Some(id.as_str()),
        AdminScope::All => None,
    };
    match flow.start_for(bound).await {
        Ok((mut authorize_url, state)) => {
            // A workspace admin's link preselects their workspace.
            if let AdminScope::Workspace(id) = &scope {
                authorize_url.push_str(&format!("&team={id}"));
            }
            axum::Json(json!({"authorize_url": authorize_url, "state": state})).into_response()
        }
        Err(e) => internal(e),
    }
}

async fn status_endpoint(
    State(flow): State<Flow>,
    Extension(scope): Extension<AdminScope>,
    Path(team_id): Path<String>,
) -> Response {
    if let Some(r) = scope.refusal(&team_id) {
        return r;
    }
    match flow.status(&team_id).await {
        Ok(Some(info)) => {
            let mut v = serde_json::to_value(&info).unwrap_or_else(|_| json!({}));
            if let Some(o) = v.as_object_mut() {
                o.insert("installed".into(), json!(true));
            }
            axum::Json(v).into_response()
        }
        Ok(None) => axum::Json(json!({
            "installed": false,
            "message": "Slack is not installed for this workspace",
        }))
        .into_response(),
        Err(e) => internal(e),
    }
}

async fn uninstall_endpoint(
    State(flow): State<Flow>,
    Extension(scope): Extension<AdminScope>,
    Path(team_id): Path<String>,
) -> Response {
    if let Some(r) = scope.refusal(&team_id) {
        return r;
    }
    match flow.uninstall(&team_id).await {
        Ok(true) => axum::Json(json!({"uninstalled": true, "team_id": team_id})).into_response(),
        Ok(false) => json_error(
            StatusCode::NOT_FOUND,
            "not_installed",
            "Slack is not installed for this workspace.",
        ),
        Err(e) => internal(e),
    }
}

async fn cleanup_endpoint(
    State(flow): State<Flow>,
    Extension(scope): Extension<AdminScope>,
) -> Response {
    if scope != AdminScope::All {
        return json_error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Cleaning up OAuth states needs the global admin token.",
        );
    }
    match flow.cleanup_expired_states().await {
        Ok(n) => axum::Json(json!({"deleted": n})).into_response(),
        Err(e) => internal(e),
    }
}

use access_core::text::escape_html as escape;

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title></head>\
         <body style=\"font-family:sans-serif;max-width:40em;margin:3em auto\"><h1>{t}</h1>{body}</body></html>",
        t = escape(title)
    )
}

/// The page has no state of its own: the admin pastes the admin token, the page calls
/// `/api/slack/oauth/start` with it and shows the "Add to Slack" link it gets back. Nobody
/// without the token obtains a valid state.
async fn install_page() -> Response {
    let body = r#"<p>Administrators only: enter the Gatehouse admin token to get an install link.</p>
<form id="f"><input id="t" type="password" placeholder="admin token" size="40">
<button type="submit">Get link</button></form>
<p id="out"></p>
<script>
document.getElementById('f').onsubmit = async (e) => {
  e.preventDefault();
  const out = document.getElementById('out');
  const r = await fetch('/api/slack/oauth/start', {headers: {'Authorization': 'Bearer ' + document.getElementById('t').value}});
  if (!r.ok) { out.textContent = 'Refused (' + r.status + ').'; return; }
  const j = await r.json();
  const a = document.createElement('a');
  a.href = j.authorize_url;
  a.innerHTML = '<img alt="Add to Slack" height="40" width="139" src="https://platform.slack-edge.com/img/add_to_slack.png">';
  out.replaceChildren(a);
};
</script>"#;
    (
        [(header::CACHE_CONTROL, "no-store")],
        Html(page("Install Gatehouse into Slack", body)),
    )
        .into_response()
}

async fn callback_endpoint(State(flow): State<Flow>, Query(p): Query<CallbackParams>) -> Response {
    match flow.callback(&p).await {
        Ok(i) => {
            let name = i
                .info
                .team_name
                .clone()
                .or(i.info.enterprise_name.clone())
                .or(i.info.team_id.clone())
                .or(i.info.enterprise_id.clone())
                .unwrap_or_default();
            let body = format!(
                "<p>Gatehouse is installed in <b>{}</b>. Invite the bot to your approval channel and try <code>/access help</code>.</p>",
                escape(&name)
            );
            (StatusCode::OK, Html(page("Gatehouse installed", &body))).into_response()
        }
        Err(f) => {
            let title = if f == InstallFailure::Cancelled {
                "Installation cancelled"
            } else {
                "Installation failed"
            };
            tracing::info!(reason = %f, "Slack install callback did not install");
            let body = format!("<p>{}</p>", escape(&f.to_string()));
            (f.status(), Html(page(title, &body))).into_response()
        }
    }
}
