//! # gatehouse-server
//!
//! The HTTP face of Gatehouse: `/healthz`, `/readyz`, Prometheus `/metrics`, the JSON admin API
//! under `/api` (behind `Authorization: Bearer $GATEHOUSE_ADMIN_TOKEN`), and the Slack endpoints.
//! [`app`] builds the router so tests can drive it without a socket; `main.rs` only parses
//! arguments, binds, and shuts down gracefully.
//!
//! # Layout
//! - [`admin`]: the admin API handlers and their JSON error mapping.
//! - [`admin_emergency`]: break-glass grants in the admin API.
//! - [`observability`]: health, readiness and metrics.
//! - [`console_hooks`]: what the web console (`/console`, crate `console`) needs from the adapters.
//! - [`webhooks_api`]: event webhooks in the admin API and the metrics.

pub mod admin;
pub mod admin_emergency;
pub mod console_hooks;
pub mod observability;
pub mod webhooks_api;

use std::sync::Arc;

use axum::Router;
use gatehouse_runtime::App;

/// Shared state of every handler.
#[derive(Debug, Clone)]
pub struct AppState {
    pub app: App,
    /// The admin API's tokens (`GATEHOUSE_ADMIN_TOKEN`; workspace tokens do not open `/api`).
    pub admin_tokens: Arc<slack_adapter::admin_auth::AdminTokens>,
    pub metrics: observability::Metrics,
}

/// The whole HTTP application.
pub fn app(app: App) -> Router {
    let state = AppState {
        admin_tokens: Arc::new(slack_adapter::admin_auth::AdminTokens::all_only(
            app.env.admin_token.as_deref(),
        )),
        metrics: observability::Metrics::global(),
        app,
    };
    let slack = state.app.adapters.slack.clone().map(|cfg| {
        let max_body = cfg.max_body_bytes;
        let engine = state.app.engine.clone();
        match &state.app.adapters.slack_install {
            // Many workspaces: each answered with its own bot token; app_uninstalled and
            // tokens_revoked remove installations; the install flow's endpoints.
            Some(flow) => {
                let ins = flow.installations().clone();
                let events = slack_adapter::router::router_with_installations(engine, cfg, ins);
                slack_adapter::oauth::lifecycle_layer(events, flow.clone(), max_body)
                    .merge(slack_adapter::oauth::oauth_router(flow.clone()))
            }
            None => slack_adapter::router(engine, cfg),
        }
    });
    // The web console reads its tokens from the same variables as the admin API (plus
    // GATEHOUSE_CONSOLE_USERS); without any token it answers 404.
    let console_state = console::ConsoleState::new(
        state.app.engine.clone(),
        console::auth_from(state.app.env.lookup()),
        Arc::new(console_hooks::ServerHooks::new(state.app.clone())),
    );
    let mut router = Router::new()
        .merge(observability::routes())
        .nest("/api", admin::routes(state.clone()))
        .with_state(state)
        .merge(console::router(console_state));
    if let Some(slack) = slack {
        router = router.merge(slack);
    }
    router
        .layer(tower_http::limit::RequestBodyLimitLayer::new(256 * 1024))
        .layer(tower_http::trace::TraceLayer::new_for_http())
}
