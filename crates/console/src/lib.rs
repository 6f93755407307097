//! # console
//!
//! The Gatehouse web console, served under `/console`: server-rendered HTML (minijinja templates
//! embedded in the binary, HTML-escaped by the engine), one small embedded script, a strict
//! Content-Security-Policy. Every action goes through the same [`access_core::Engine`] calls as
//! Slack, with the signed-in token's identity as the actor, so the same policy applies (no
//! self-approval, approver eligibility, only admins revoke other people's access).
//!
//! # Layout
//! - [`auth`]: identities, signed session cookies, CSRF tokens.
//! - [`pages`]: the handlers.
//! - [`charts`]: server-side SVG.
//!
//! Wiring: the server builds a [`ConsoleState`] and merges [`router`]; what lives outside the
//! engine (Slack installations, org-data status) comes through [`ConsoleHooks`].

pub mod auth;
pub mod charts;
pub mod pages;
mod views;

use std::fmt::Debug;
use std::sync::Arc;

use access_core::Engine;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

pub use auth::{Auth, ConsoleIdentity, Scope};
pub use pages::router;

/// A Slack installation as the console shows it (nothing secret).
#[derive(Debug, Clone, Serialize)]
pub struct InstallationRow {
    /// What uninstall takes: the team id, or the enterprise id of an org-wide install.
    pub id: String,
    pub team_name: String,
    pub enterprise: Option<String>,
    pub installed_at: DateTime<Utc>,
    pub bot_token_expires_at: Option<DateTime<Utc>>,
    pub scopes: String,
}

/// One line of the health page about something outside the engine (org data, Slack, …).
#[derive(Debug, Clone, Serialize)]
pub struct StatusLine {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

/// What the console needs from adapters it does not depend on. Errors are messages safe to
/// show (no secrets).
#[async_trait]
pub trait ConsoleHooks: Send + Sync + Debug + 'static {
    /// `None`: Slack OAuth is not configured (single-workspace or no Slack).
    fn slack_install_configured(&self) -> bool;
    async fn installations(&self, scope: &Scope) -> Result<Vec<InstallationRow>, String>;
    /// A fresh authorize URL (a new OAuth state) for the scope's workspace, or any.
    async fn install_link(&self, scope: &Scope) -> Result<String, String>;
    /// `Ok(false)`: nothing installed under `id`.
    async fn uninstall(&self, id: &str) -> Result<bool, String>;
    async fn status_lines(&self) -> Vec<StatusLine>;
}

/// No Slack OAuth, nothing else to report.
#[derive(Debug, Default)]
pub struct NoHooks;

#[async_trait]
impl ConsoleHooks for NoHooks {
    fn slack_install_configured(&self) -> bool {
        false
    }
    async fn installations(&self, _: &Scope) -> Result<Vec<InstallationRow>, String> {
        Ok(Vec::new())
    }
    async fn install_link(&self, _: &Scope) -> Result<String, String> {
        Err("Slack OAuth is not configured (SLACK_CLIENT_ID, SLACK_CLIENT_SECRET).".into())
    }
    async fn uninstall(&self, _: &str) -> Result<bool, String> {
        Ok(false)
    }
    async fn status_lines(&self) -> Vec<StatusLine> {
        Vec::new()
    }
}

/// Everything the console's handlers share.
#[derive(Debug, Clone)]
pub struct ConsoleState {
    pub engine: Arc<Engine>,
    pub auth: Auth,
    pub hooks: Arc<dyn ConsoleHooks>,
    templates: Arc<minijinja::Environment<'static>>,
}

impl ConsoleState {
    pub fn new(engine: Arc<Engine>, auth: Auth, hooks: Arc<dyn ConsoleHooks>) -> Self {
        Self {
            engine,
            auth,
            hooks,
            templates: Arc::new(views::environment()),
        }
    }
}

/// Console identities from the environment:
/// - `GATEHOUSE_ADMIN_TOKEN`: every workspace, recorded as `admin:<GATEHOUSE_CONSOLE_ADMIN_NAME>`
///   (default `console`);
/// - `GATEHOUSE_WORKSPACE_ADMIN_TOKENS` (`T123=token,…`): one workspace, recorded as
///   `admin:workspace-T123`;
/// - `GATEHOUSE_CONSOLE_USERS` (`T123/U456=token,…`): a Slack person, one workspace, recorded
///   as that person — approvals are checked exactly as if they clicked Approve in Slack.
pub fn identities_from(get: impl Fn(&str) -> Option<String>) -> Vec<ConsoleIdentity> {
    let mut out = Vec::new();
    let nonempty = |k: &str| get(k).filter(|v| !v.trim().is_empty());
    if let Some(t) = nonempty("GATEHOUSE_ADMIN_TOKEN") {
        let name = nonempty("GATEHOUSE_CONSOLE_ADMIN_NAME").unwrap_or_else(|| "console".into());
        out.push(ConsoleIdentity::new(
            t.trim(),
            access_core::Actor::Admin {
                name: name.trim().to_string(),
            },
            Scope::All,
        ));
    }
    for (id, token) in pairs(nonempty("GATEHOUSE_WORKSPACE_ADMIN_TOKENS")) {
        out.push(ConsoleIdentity::new(
            token,
            access_core::Actor::Admin {
                name: format!("workspace-{id}"),
            },
            Scope::Workspace(id),
        ));
    }
    for (who, token) in pairs(nonempty("GATEHOUSE_CONSOLE_USERS")) {
        let Some((team, user)) = who
            .split_once('/')
            .filter(|(t, u)| !t.is_empty() && !u.is_empty())
        else {
            tracing::warn!("ignoring a GATEHOUSE_CONSOLE_USERS entry that is not TEAM/USER=token");
            continue;
        };
        out.push(ConsoleIdentity::new(
            token,
            access_core::subject::SubjectKey::new(team, user).actor(user),
            Scope::Workspace(team.to_string()),
        ));
    }
    out
}

/// `a=x,b=y` → pairs, skipping malformed entries (never logging their token).
fn pairs(raw: Option<String>) -> Vec<(String, String)> {
    raw.unwrap_or_default()
        .split(',')
        .filter_map(|e| {
            let (k, v) = e.split_once('=')?;
            let (k, v) = (k.trim(), v.trim());
            (!k.is_empty() && !v.is_empty()).then(|| (k.to_string(), v.to_string()))
        })
        .collect()
}

/// The console's [`Auth`] from the environment (identities above; `GATEHOUSE_CONSOLE_SESSION_KEY`,
/// `GATEHOUSE_CONSOLE_SESSION_HOURS` (default 8), `GATEHOUSE_CONSOLE_SECURE_COOKIES=true`).
pub fn auth_from(get: impl Fn(&str) -> Option<String>) -> Auth {
    let identities = identities_from(&get);
    let hours = get("GATEHOUSE_CONSOLE_SESSION_HOURS")
        .and_then(|v| v.trim().parse::<i64>().ok())
        .filter(|h| (1..=24 * 7).contains(h))
        .unwrap_or(8);
    let key = get("GATEHOUSE_CONSOLE_SESSION_KEY").filter(|k| !k.trim().is_empty());
    let mut auth = Auth::new(identities, key.as_deref(), chrono::Duration::hours(hours));
    auth.force_secure = get("GATEHOUSE_CONSOLE_SECURE_COOKIES").is_some_and(|v| v.trim() == "true");
    auth
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_come_from_the_three_variables() {
        let env = |k: &str| match k {
            "GATEHOUSE_ADMIN_TOKEN" => Some("a".to_string()),
            "GATEHOUSE_WORKSPACE_ADMIN_TOKENS" => Some("T1=w, bad,=x".to_string()),
            "GATEHOUSE_CONSOLE_USERS" => Some("T1/U9=u,nouser=z".to_string()),
            _ => None,
        };
        let ids = identities_from(env);
        let actors: Vec<String> = ids.iter().map(|i| i.actor.id()).collect();
        assert_eq!(
            actors,
            vec!["admin:console", "admin:workspace-T1", "slack:T1/U9"]
        );
        assert_eq!(ids[2].scope, Scope::Workspace("T1".into()));
    }
}
