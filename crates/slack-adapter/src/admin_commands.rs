//! `/access admin …` (issue 17, docs/admin-commands.md): what the admin group may do from Slack.
//!
//! Who is an admin is the engine's decision ([`Engine::require_admin`]), made for every command;
//! this module only words the answers. Everything is scoped to the admin's identity scope (the
//! workspace, or the organisation on an org-wide Enterprise Grid install): an admin of one
//! workspace neither sees nor revokes another's grants. Answers are ephemeral (the slash
//! command's acknowledgement or `response_url`) or in the admin's own DM with the bot.

use access_core::audit::AuditEvent;
use access_core::engine::Engine;
use access_core::grant::format_remaining;
use access_core::subject::SubjectKey;
use access_core::{GrantStatus, RequestId};

use crate::blocks::{escape, slack_date};
use crate::commands::{Caller, Ctx};
use crate::grammar::{AdminCommand, Surface};

/// Rows shown in one answer; the rest are counted and pointed at the console and admin API.
pub const SHOWN: usize = 20;

/// Audit events shown by `admin audit @user`.
pub const AUDIT_SHOWN: u32 = 20;

/// Runs one admin command; the reply text (refusals included).
pub async fn execute(ctx: Ctx<'_>, caller: &Caller, surface: Surface, cmd: AdminCommand) -> String {
    let engine = ctx.engine;
    let admin = caller.actor();
    match cmd {
        AdminCommand::Grants { resource } => {
            match engine
                .admin_live_grants(&admin, &caller.team_id, resource.as_deref())
                .await
            {
                Ok(grants) => grants_text(engine, &grants, resource.as_deref()),
                Err(e) => e.to_string(),
            }
        }
        AdminCommand::Pending => match engine.admin_pending(&admin, &caller.team_id).await {
            Ok(mut pending) => {
                // Longest waiting first: those are the ones to chase.
                pending.sort_by_key(|r| (r.created_at, r.id.to_string()));
                pending_text(engine, &pending, surface)
            }
            Err(e) => e.to_string(),
        },
        AdminCommand::Revoke { user, resource } => {
            let subject = SubjectKey::new(&caller.team_id, &user);
            match engine.admin_revoke(&admin, &subject, &resource).await {
                Ok(g) => {
                    let done = match engine.grant(g.id).await {
                        Ok(Some(now)) => !now.status.is_live(),
                        _ => false,
                    };
                    if done {
                        format!(
                            ":lock: Revoked <@{user}>'s access to *{}*. They have been told, by direct message, that you revoked it.",
                            g.resource
                        )
                    } else {
                        format!(
                            ":lock: <@{user}>'s access to *{}* is being revoked. They will be told, by direct message, that you revoked it.",
                            g.resource
                        )
                    }
                }
                Err(access_core::EngineError::NoActiveGrant { resource }) => {
                    format!("<@{user}> has no active access to '{resource}'. Nothing was changed.")
                }
                Err(e) => e.to_string(),
            }
        }
        AdminCommand::Audit { user } => {
            let subject = SubjectKey::new(&caller.team_id, &user);
            match engine.admin_audit(&admin, &subject, AUDIT_SHOWN).await {
                Ok(events) => audit_text(&user, &events),
                Err(e) => e.to_string(),
            }
        }
    }
}

/// "…and N more" pointing at the places that list everything.
fn more_line(hidden: usize, read: usize, console: &str, api: &str) -> String {
    let n = if read >= access_core::engine::ADMIN_LIST_READ as usize {
        format!("more than {hidden}")
    } else {
        hidden.to_string()
    };
    format!("_…and {n} more — see the console (`{console}`) or the admin API (`{api}`)._")
}

fn grants_text(engine: &Engine, grants: &[access_core::Grant], resource: Option<&str>) -> String {
    let what = match resource {
        Some(r) => format!(" to *{}*", escape(r.trim())),
        None => String::new(),
    };
    if grants.is_empty() {
        return format!("No live grants{what} in this workspace.");
    }
    let now = engine.now();
    let mut out = format!("*Live grants{what} in this workspace* (newest first):\n");
    for g in grants.iter().take(SHOWN) {
        let state = match g.status {
            GrantStatus::Provisioning => " (being set up)",
            GrantStatus::Revoking => " (being revoked)",
            _ => "",
        };
        out.push_str(&format!(
            "• <@{}> — *{}*, expires in {} ({}){state}\n",
            g.subject.user_id,
            g.resource,
            format_remaining(g.remaining(now)),
            slack_date(g.expires_at)
        ));
    }
    if grants.len() > SHOWN {
        out.push_str(&more_line(
            grants.len() - SHOWN,
            grants.len(),
            "/console/grants",
            "GET /api/grants?status=active",
        ));
    }
    out.trim_end().to_string()
}

fn pending_text(
    engine: &Engine,
    pending: &[access_core::AccessRequest],
    surface: Surface,
) -> String {
    if pending.is_empty() {
        return "No requests are waiting for a decision in this workspace.".to_string();
    }
    let now = engine.now();
    let mut out = String::from("*Requests waiting for a decision* (longest waiting first):\n");
    for r in pending.iter().take(SHOWN) {
        out.push_str(&format!(
            "• <@{}> — *{}* for {}, waiting {} (request `{}`)\n",
            r.subject.user_id,
            r.resource,
            r.duration.human(),
            format_remaining(now - r.created_at),
            r.id
        ));
    }
    if pending.len() > SHOWN {
        out.push_str(&more_line(
            pending.len() - SHOWN,
            pending.len(),
            "/console/pending",
            "GET /api/requests?status=pending",
        ));
        out.push('\n');
    }
    out.push_str(&format!(
        "_Approve or deny from the approval messages; `{}admin revoke @user <resource>` ends live access._",
        surface.prefix()
    ));
    out
}

fn audit_text(user: &str, events: &[AuditEvent]) -> String {
    if events.is_empty() {
        return format!("No audit events about or by <@{user}>.");
    }
    let mut out =
        format!("*Recent audit events of <@{user}>* (newest first, at most {AUDIT_SHOWN}):\n");
    for e in events {
        let r = &e.record;
        let resource = r
            .resource
            .as_ref()
            .map(|r| format!(" *{r}*"))
            .unwrap_or_default();
        let about = match &r.subject {
            Some(s) if !s.ends_with(&format!("/{user}")) => {
                format!(" for <@{}>", s.rsplit('/').next().unwrap_or_default())
            }
            _ => String::new(),
        };
        let request = r
            .request_id
            .map(|id: RequestId| format!(" (request `{id}`)"))
            .unwrap_or_default();
        out.push_str(&format!(
            "• {} `{}`{resource}{about} by {}{request}\n",
            slack_date(r.at),
            r.kind,
            r.actor.mention(),
        ));
    }
    out.push_str(
        "_Older events: the console (`/console/audit?subject=…`) or the admin API (`GET /api/audit?subject=…`)._",
    );
    out
}
