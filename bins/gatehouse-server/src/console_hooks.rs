//! What the web console needs from adapters it does not depend on: Slack installations
//! (through the OAuth install flow) and the org-data index's status.

use std::sync::Arc;

use async_trait::async_trait;
use console::{ConsoleHooks, InstallationRow, Scope, StatusLine};
use gatehouse_runtime::App;
use slack_adapter::oauth::InstallFlow;

#[derive(Debug)]
pub struct ServerHooks {
    flow: Option<Arc<InstallFlow>>,
    app: App,
}

impl ServerHooks {
    pub fn new(app: App) -> Self {
        Self {
            flow: app.adapters.slack_install.clone(),
            app,
        }
    }
}

#[async_trait]
impl ConsoleHooks for ServerHooks {
    fn slack_install_configured(&self) -> bool {
        self.flow
            .as_ref()
            .is_some_and(|f| f.config().is_configured())
    }

    async fn installations(&self, scope: &Scope) -> Result<Vec<InstallationRow>, String> {
        let Some(flow) = &self.flow else {
            return Ok(Vec::new());
        };
        let all = flow.installations().store().all().await.map_err(|e| {
            tracing::error!(error = %e, "listing Slack installations failed");
            "The installation store could not be read; see the server log.".to_string()
        })?;
        Ok(all
            .into_iter()
            .map(|s| s.info)
            .filter_map(|i| {
                let id = if i.is_enterprise_install {
                    i.enterprise_id.clone()
                } else {
                    i.team_id.clone()
                }?;
                let visible = scope.covers(&id)
                    || i.enterprise_id.as_deref().is_some_and(|e| scope.covers(e));
                visible.then(|| InstallationRow {
                    id,
                    team_name: i
                        .team_name
                        .clone()
                        .or(i.enterprise_name.clone())
                        .unwrap_or_default(),
                    enterprise: i.enterprise_name.clone().or(i.enterprise_id.clone()),
                    installed_at: i.installed_at,
                    bot_token_expires_at: i.bot_token_expires_at,
                    scopes: i.bot_scopes.clone().unwrap_or_default(),
                })
            })
            .collect())
    }

    async fn install_link(&self, scope: &Scope) -> Result<String, String> {
        let Some(flow) = self.flow.as_ref().filter(|f| f.config().is_configured()) else {
            return Err(
                "Slack OAuth is not configured (SLACK_CLIENT_ID, SLACK_CLIENT_SECRET).".into(),
            );
        };
        // The same flow as GET /api/slack/oauth/start: a workspace token's link is bound to
        // its workspace.
        let (mut url, _state) = flow.start_for(scope.team()).await.map_err(|e| {
            tracing::error!(error = %e, "starting a Slack install failed");
            "The install could not be started; see the server log.".to_string()
        })?;
        if let Some(team) = scope.team() {
            url.push_str(&format!("&team={team}"));
        }
        Ok(url)
    }

    async fn uninstall(&self, id: &str) -> Result<bool, String> {
        let Some(flow) = &self.flow else {
            return Ok(false);
        };
        flow.uninstall(id).await.map_err(|e| {
            tracing::error!(error = %e, "Slack uninstall failed");
            "The uninstall failed; see the server log.".to_string()
        })
    }

    async fn status_lines(&self) -> Vec<StatusLine> {
        let mut out = Vec::new();
        if let Some(org) = self
            .app
            .adapters
            .directory
            .as_ref()
            .and_then(|(dir, _)| dir.org_data().cloned())
        {
            let st = org.status();
            out.push(StatusLine {
                name: format!("org data ({})", st.source),
                ok: st.loaded && st.last_error.is_none(),
                detail: match (&st.last_error, st.loaded) {
                    (Some(e), _) => format!("{} people; last reload failed: {e}", st.people),
                    (None, true) => format!("{} people loaded", st.people),
                    (None, false) => "not loaded yet".into(),
                },
            });
        }
        if self.app.adapters.slack.is_some() {
            out.push(StatusLine {
                name: "Slack".into(),
                ok: true,
                detail: if self.slack_install_configured() {
                    "OAuth installations (see the Slack page)".into()
                } else {
                    "one workspace (SLACK_BOT_TOKEN)".into()
                },
            });
        }
        out
    }
}
