//! The one admin bearer-token layer: the server's JSON admin API (`/api/…`) and the Slack
//! install flow's admin endpoints (`/api/slack/…`) both sit behind [`require_admin`]. It lives
//! in this crate because it is the innermost one with HTTP routes that both the install flow
//! and the server use; neither has to depend on the other.
//!
//! - No token configured: the admin API does not exist, **404** `admin_api_disabled`
//!   (docs/security.md, "Admin API").
//! - Missing or wrong token: **401** `unauthorized` with `WWW-Authenticate: Bearer`.
//! - Otherwise the request carries the caller's [`AdminScope`] as an extension.
//!
//! Tokens are compared in constant time, every workspace token included, so the time taken
//! does not say which one (if any) matched.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::config::Secret;

/// Whom an admin token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminScope {
    /// `GATEHOUSE_ADMIN_TOKEN`: every workspace.
    All,
    /// A workspace admin token: this team (or Enterprise Grid organisation) only.
    Workspace(String),
}

/// Why a request was refused before reaching an admin handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AdminRefusal {
    /// No admin token is configured: the admin API is off.
    #[error("The admin API is disabled: set GATEHOUSE_ADMIN_TOKEN to enable it.")]
    Disabled,
    /// The `Authorization` header is missing or holds no configured token.
    #[error("Missing or wrong admin token.")]
    Unauthorized,
}

impl AdminRefusal {
    /// The stable `error` code of the JSON answer.
    pub fn code(&self) -> &'static str {
        match self {
            AdminRefusal::Disabled => "admin_api_disabled",
            AdminRefusal::Unauthorized => "unauthorized",
        }
    }

    /// The HTTP status: 404 when the API is disabled (it does not exist), 401 otherwise.
    pub fn status(&self) -> StatusCode {
        match self {
            AdminRefusal::Disabled => StatusCode::NOT_FOUND,
            AdminRefusal::Unauthorized => StatusCode::UNAUTHORIZED,
        }
    }
}

impl IntoResponse for AdminRefusal {
    fn into_response(self) -> Response {
        let body = json!({"error": self.code(), "message": self.to_string()});
        let mut r = (self.status(), axum::Json(body)).into_response();
        if self == AdminRefusal::Unauthorized {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        r
    }
}

/// The tokens an admin endpoint accepts: `GATEHOUSE_ADMIN_TOKEN` (every workspace) and, where
/// the endpoint is scoped by workspace, `GATEHOUSE_WORKSPACE_ADMIN_TOKENS`.
#[derive(Clone, Default)]
pub struct AdminTokens {
    all: Secret,
    workspaces: Vec<(String, Secret)>,
}

impl std::fmt::Debug for AdminTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminTokens")
            .field("all", &!self.all.is_empty())
            .field(
                "workspaces",
                &self.workspaces.iter().map(|(id, _)| id).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl AdminTokens {
    /// `all` speaks for every workspace (empty: none does); `workspaces` pairs a team or
    /// organisation id with a token limited to it.
    pub fn new(all: Secret, workspaces: Vec<(String, Secret)>) -> Self {
        Self { all, workspaces }
    }

    /// Only `GATEHOUSE_ADMIN_TOKEN` (`None` or blank: the admin API is disabled).
    pub fn all_only(token: Option<&str>) -> Self {
        Self::new(token.map(Secret::new).unwrap_or_default(), Vec::new())
    }

    /// Whether any token is configured (otherwise every request is [`AdminRefusal::Disabled`]).
    pub fn is_enabled(&self) -> bool {
        !self.all.is_empty() || self.workspaces.iter().any(|(_, t)| !t.is_empty())
    }

    /// The scope of the bearer token in an `Authorization` header value.
    pub fn authorize(&self, authorization: Option<&str>) -> Result<AdminScope, AdminRefusal> {
        if !self.is_enabled() {
            return Err(AdminRefusal::Disabled);
        }
        let given = authorization
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        let matches = |t: &Secret| {
            !given.is_empty()
                && !t.is_empty()
                && bool::from(given.as_bytes().ct_eq(t.expose().as_bytes()))
        };
        if matches(&self.all) {
            return Ok(AdminScope::All);
        }
        let mut found = None;
        for (id, t) in &self.workspaces {
            if matches(t) && found.is_none() {
                found = Some(AdminScope::Workspace(id.clone()));
            }
        }
        found.ok_or(AdminRefusal::Unauthorized)
    }
}

/// Middleware (`axum::middleware::from_fn_with_state(tokens, require_admin)`): refuses as the
/// module says, else runs the handler with the caller's [`AdminScope`] in the request's
/// extensions.
pub async fn require_admin(
    State(tokens): State<Arc<AdminTokens>>,
    mut req: Request,
    next: Next,
) -> Response {
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match tokens.authorize(header) {
        Ok(scope) => {
            req.extensions_mut().insert(scope);
            next.run(req).await
        }
        Err(refusal) => refusal.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> AdminTokens {
        AdminTokens::new(
            Secret::new("root"),
            vec![("T1".into(), Secret::new("team-one"))],
        )
    }

    #[test]
    fn the_token_decides_the_scope() {
        let t = tokens();
        assert_eq!(t.authorize(Some("Bearer root")), Ok(AdminScope::All));
        assert_eq!(
            t.authorize(Some("Bearer team-one")),
            Ok(AdminScope::Workspace("T1".into()))
        );
        for bad in [
            None,
            Some(""),
            Some("Bearer "),
            Some("root"),
            Some("Bearer roo"),
        ] {
            assert_eq!(t.authorize(bad), Err(AdminRefusal::Unauthorized), "{bad:?}");
        }
    }

    #[test]
    fn without_a_token_the_api_is_disabled_with_404() {
        for t in [
            AdminTokens::default(),
            AdminTokens::all_only(None),
            AdminTokens::all_only(Some("")),
        ] {
            assert!(!t.is_enabled());
            let refusal = t.authorize(Some("Bearer anything")).unwrap_err();
            assert_eq!(refusal, AdminRefusal::Disabled);
            let r = refusal.into_response();
            assert_eq!(r.status(), StatusCode::NOT_FOUND);
            assert!(r.headers().get(header::WWW_AUTHENTICATE).is_none());
        }
        let r = AdminRefusal::Unauthorized.into_response();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(r.headers()[header::WWW_AUTHENTICATE], "Bearer");
    }

    #[test]
    fn debug_never_shows_a_token() {
        let d = format!("{:?}", tokens());
        assert!(!d.contains("root") && !d.contains("team-one"), "{d}");
    }
}
