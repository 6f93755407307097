//! Runs parsed commands against the engine and words the replies. Shared by slash commands, DMs,
//! buttons and the modal, so every surface says the same thing.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use access_core::engine::{Engine, Submission};
use access_core::grant::format_remaining;
use access_core::policy::EligibilityError;
use access_core::request::{Actor, RequestKind, RequestStatus};
use access_core::subject::{Email, Subject, SubjectKey};
use access_core::submission::RawSubmission;
use access_core::{RequestId, Resource};

use crate::api::{ApiError, SlackApi, SlackUser};
use crate::blocks::{escape, slack_date};
use crate::grammar::{self, Command, Surface};

/// Who typed or clicked, as Slack told us (before the profile is read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The identity scope: the workspace, or the organisation on an org-wide Enterprise Grid
    /// install (see the router's `for_team`).
    pub team_id: String,
    pub user_id: String,
    /// `user_name` / `user.name` from the payload: a fallback for messages only.
    pub user_name: String,
    /// The workspace the payload came from (`team_id` / `team.id`), whatever the scope.
    pub workspace: String,
    /// The payload's Enterprise Grid organisation, if any.
    pub enterprise_id: Option<String>,
}

/// What kind of member of this Slack the person is (A.11), for who may ask and who may decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Membership {
    /// A full member of the workspace (or of its organisation).
    Member,
    /// A multi- or single-channel guest (`is_restricted` / `is_ultra_restricted`).
    Guest,
    /// Somebody from another organisation: `is_stranger` (Slack Connect), or a home workspace
    /// that is neither the one asking nor in its Enterprise Grid organisation.
    External,
}

impl Membership {
    pub fn of(user: &SlackUser, caller: &Caller) -> Membership {
        if user.is_stranger {
            return Membership::External;
        }
        let home = user.team_id.as_str();
        if !home.is_empty() && !caller.workspace.is_empty() && home != caller.workspace {
            let same_org = user
                .enterprise_user
                .as_ref()
                .map(|e| e.enterprise_id.as_str())
                .filter(|e| !e.is_empty())
                .is_some_and(|e| caller.enterprise_id.as_deref() == Some(e));
            if !same_org {
                return Membership::External;
            }
        }
        if user.is_restricted || user.is_ultra_restricted {
            Membership::Guest
        } else {
            Membership::Member
        }
    }
}

/// Refuses a guest or external person asking for `resource` unless it allows them explicitly
/// (`allow_guests`, `allow_external`). No resource: the engine gives its own message.
pub fn admit_requester(
    engine: &Engine,
    resource: &str,
    membership: Membership,
) -> Result<(), String> {
    let Some(r) = engine
        .resources()
        .into_iter()
        .find(|r| r.id.as_str() == resource.trim())
    else {
        return Ok(());
    };
    match membership {
        Membership::Guest if !r.allow_guests => Err(format!(
            "Guest accounts cannot request '{}'. Ask a full member of the workspace, or an admin if guests should be allowed (allow_guests).",
            r.id
        )),
        Membership::External if !r.allow_external => Err(format!(
            "People from outside this organisation (Slack Connect) cannot request '{}'. Ask an admin if external users should be allowed (allow_external).",
            r.id
        )),
        _ => Ok(()),
    }
}

/// Guests and people from other organisations never approve or deny, whatever the resource
/// allows them to request: approving is a decision of the organisation that owns the resource.
pub const NOT_A_MEMBER_APPROVER: &str =
    "Guests and people from other organisations cannot approve or deny requests.";

impl Caller {
    /// Who the caller is to the engine (their identity scope and user id).
    pub fn key(&self) -> SubjectKey {
        SubjectKey::from(self)
    }

    /// The caller acting, shown by the name in the payload.
    pub fn actor(&self) -> Actor {
        self.key().actor(&self.user_name)
    }
}

impl From<&Caller> for SubjectKey {
    fn from(c: &Caller) -> Self {
        SubjectKey::new(&c.team_id, &c.user_id)
    }
}

impl Caller {
    /// A caller whose identity scope is its workspace (no Enterprise Grid org-wide install).
    pub fn in_workspace(team_id: &str, user_id: &str, user_name: &str) -> Self {
        Self {
            team_id: team_id.to_string(),
            user_id: user_id.to_string(),
            user_name: user_name.to_string(),
            workspace: team_id.to_string(),
            enterprise_id: None,
        }
    }
}

/// Profiles read from `users.info`, kept a few minutes so a burst of commands costs one call.
#[derive(Debug, Default)]
pub struct ProfileCache {
    entries: Mutex<HashMap<String, (SlackUser, Instant)>>,
}

const PROFILE_TTL: Duration = Duration::from_secs(300);

impl ProfileCache {
    fn get(&self, key: &str) -> Option<SlackUser> {
        let g = self.entries.lock().ok()?;
        g.get(key)
            .filter(|(_, at)| at.elapsed() < PROFILE_TTL)
            .map(|(s, _)| s.clone())
    }

    /// Whether `caller`'s profile is here and fresh: a command needing it then calls nobody
    /// before answering (the slash command handler answers in the acknowledgement then, and
    /// with a receipt otherwise).
    pub fn holds(&self, caller: &Caller) -> bool {
        self.get(&profile_key(caller)).is_some()
    }

    fn put(&self, key: String, s: SlackUser) {
        if let Ok(mut g) = self.entries.lock() {
            if g.len() > 10_000 {
                g.retain(|_, (_, at)| at.elapsed() < PROFILE_TTL);
            }
            g.insert(key, (s, Instant::now()));
        }
    }
}

/// Reads the caller's profile (`users.info`, which needs `users:read.email` for the e-mail) and
/// makes the [`Subject`]. A profile without an e-mail is refused with a message asking to add one:
/// every provider names accounts by e-mail.
pub async fn resolve_subject(
    api: &SlackApi,
    cache: &ProfileCache,
    caller: &Caller,
) -> Result<Subject, String> {
    lookup_subject(api, cache, caller)
        .await
        .map_err(ProfileError::into_message)
}

/// Why a profile could not be turned into a [`Subject`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProfileError {
    /// Slack could not be reached or rate limited us: worth retrying later.
    Transient(String),
    /// Asking again will not help (no e-mail, a bot, a missing scope); the text says why.
    Refused(String),
}

impl ProfileError {
    pub fn into_message(self) -> String {
        match self {
            ProfileError::Transient(m) | ProfileError::Refused(m) => m,
        }
    }
}

/// [`resolve_subject`], telling a transient failure apart (a stored inbox job retries those
/// instead of answering "try again").
pub async fn lookup_subject(
    api: &SlackApi,
    cache: &ProfileCache,
    caller: &Caller,
) -> Result<Subject, ProfileError> {
    person(api, cache, caller).await.map(|(s, _)| s)
}

/// The key of `caller`'s profile in the [`ProfileCache`].
fn profile_key(caller: &Caller) -> String {
    format!("{}/{}/{}", caller.team_id, caller.workspace, caller.user_id)
}

/// The caller's `users.info` profile (cached a few minutes).
async fn profile(
    api: &SlackApi,
    cache: &ProfileCache,
    caller: &Caller,
) -> Result<SlackUser, ProfileError> {
    let key = profile_key(caller);
    if let Some(u) = cache.get(&key) {
        return Ok(u);
    }
    let user = api.users_info(&caller.user_id).await.map_err(|e| {
        tracing::warn!(user = %caller.user_id, error = %e, "users.info failed");
        match e {
            ApiError::Slack { error, needed, .. } if error == "missing_scope" => ProfileError::Refused(format!(
                "Gatehouse cannot read your Slack profile (missing scope {}). Please ask an admin to reinstall the app.",
                needed.unwrap_or_else(|| "users:read.email".into())
            )),
            e if e.is_transient() => ProfileError::Transient(
                "I couldn't reach Slack to read your profile. Please try again in a minute.".to_string(),
            ),
            _ => ProfileError::Refused("I couldn't read your Slack profile. Please try again, or contact IT support if it keeps failing."
                .to_string()),
        }
    })?;
    cache.put(key, user.clone());
    Ok(user)
}

/// [`resolve_subject`], with what kind of member the person is.
pub async fn resolve_person(
    api: &SlackApi,
    cache: &ProfileCache,
    caller: &Caller,
) -> Result<(Subject, Membership), String> {
    person(api, cache, caller)
        .await
        .map_err(ProfileError::into_message)
}

/// [`resolve_person`], telling a transient failure apart (a stored form submission retries those
/// instead of refusing).
pub async fn lookup_person(
    api: &SlackApi,
    cache: &ProfileCache,
    caller: &Caller,
) -> Result<(Subject, Membership), ProfileError> {
    person(api, cache, caller).await
}

async fn person(
    api: &SlackApi,
    cache: &ProfileCache,
    caller: &Caller,
) -> Result<(Subject, Membership), ProfileError> {
    let user = profile(api, cache, caller).await?;
    if user.deleted || user.is_bot {
        return Err(ProfileError::Refused(
            "Only active people (not bots or deactivated accounts) can request access.".into(),
        ));
    }
    let email = match user.profile.email.as_deref().map(Email::parse) {
        Some(Ok(e)) => e,
        _ => {
            return Err(ProfileError::Refused(
                EligibilityError::MissingEmail.to_string(),
            ));
        }
    };
    let name = Some(user.display_name())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| caller.user_name.clone());
    let subject = Subject::new(caller.key(), Some(email), name);
    Ok((subject, Membership::of(&user, caller)))
}

/// Whether the caller may approve or deny at all: full members only. A profile that cannot be
/// read refuses (fail closed), with the reason.
pub async fn admit_approver(
    api: &SlackApi,
    cache: &ProfileCache,
    caller: &Caller,
) -> Result<(), String> {
    check_approver(api, cache, caller)
        .await
        .map_err(ProfileError::into_message)
}

/// [`admit_approver`], telling a transient failure apart (a stored click retries those instead
/// of refusing the approver).
pub async fn check_approver(
    api: &SlackApi,
    cache: &ProfileCache,
    caller: &Caller,
) -> Result<(), ProfileError> {
    let user = profile(api, cache, caller).await?;
    match Membership::of(&user, caller) {
        Membership::Member => Ok(()),
        Membership::Guest | Membership::External => {
            Err(ProfileError::Refused(NOT_A_MEMBER_APPROVER.to_string()))
        }
    }
}

/// What a field of the request form is wrong about (the modal shows it under that field).
pub use access_core::submission::Field;

/// What to tell the person after a successful submission.
pub fn submitted_text(r: &access_core::AccessRequest, surface: Surface) -> String {
    match (r.kind, r.status) {
        (RequestKind::Extend, RequestStatus::Pending) => format!(
            "Extension request submitted for {} (+{}). You will be notified once approved or denied.",
            r.resource,
            r.duration.human()
        ),
        (_, RequestStatus::Pending) => format!(
            "Access request submitted for {} ({}). You will be notified once approved or denied. \
             `{}cancel {}` withdraws it.",
            r.resource,
            r.duration.human(),
            surface.prefix(),
            r.resource
        ),
        (RequestKind::Extend, _) => format!(
            ":white_check_mark: Extension of {} by {} approved. I'll message you when it is in place.",
            r.resource,
            r.duration.human()
        ),
        _ => format!(
            ":white_check_mark: Access to {} for {} approved automatically. Setting it up now; I'll message you \
             with how to use it.",
            r.resource,
            r.duration.human()
        ),
    }
}

/// What commands run against.
#[derive(Debug, Clone, Copy)]
pub struct Ctx<'a> {
    pub engine: &'a Engine,
    pub api: &'a SlackApi,
    pub profiles: &'a ProfileCache,
}

/// Runs one command and returns the reply text (errors included: they are replies too).
pub async fn execute(ctx: Ctx<'_>, caller: &Caller, surface: Surface, cmd: Command) -> String {
    let engine = ctx.engine;
    match cmd {
        Command::Help { topic } => grammar::help_text(surface, topic),
        Command::OpenModal => grammar::help_text(surface, grammar::HelpTopic::General),
        Command::Status => status_text(engine, caller, surface).await,
        Command::List => list_text(ctx, caller, surface).await,
        Command::Request {
            resource,
            duration,
            justification,
        } => {
            let raw = RawSubmission::new(resource, duration, justification);
            submit(ctx, caller, surface, &raw).await
        }
        Command::Extend {
            resource,
            duration,
            justification,
        } => {
            let raw = RawSubmission::new(resource, duration, justification.unwrap_or_default());
            submit(ctx, caller, surface, &raw.extension()).await
        }
        Command::Revoke { resource } => {
            let noun = engine.catalog().get(&resource).map(access_noun);
            match engine
                .revoke_resource(&caller.key(), &resource, caller.actor())
                .await
            {
                Ok(g) => {
                    let noun = noun.unwrap_or_else(|| format!("access to {}", g.resource));
                    // The revocation runs as a job right away; wait a little (inside Slack's
                    // acknowledgement budget) so the answer can say it is done, as the GCP
                    // document's does. Otherwise the DM confirms it later.
                    let deadline =
                        std::time::Instant::now() + std::time::Duration::from_millis(1500);
                    loop {
                        match engine.grant(g.id).await {
                            Ok(Some(now)) if !now.status.is_live() => {
                                return format!("Your {noun} has been revoked successfully.");
                            }
                            Err(_) => break,
                            _ if std::time::Instant::now() > deadline => break,
                            _ => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
                        }
                    }
                    format!(
                        "Your {noun} is being revoked. I'll confirm by direct message when it is done."
                    )
                }
                Err(access_core::EngineError::NoActiveGrant { .. }) => match noun {
                    Some(noun) => format!("You do not have any active {noun} to revoke."),
                    None => format!("You do not have any active access to '{resource}' to revoke."),
                },
                Err(e) => e.to_string(),
            }
        }
        Command::Cancel { target } => cancel(engine, caller, surface, &target).await,
        Command::EmergencyRequest {
            resource,
            duration,
            justification,
        } => {
            let raw = RawSubmission::new(resource, duration, justification);
            crate::emergency::submit(ctx, caller, &raw).await
        }
        Command::Admin(a) => crate::admin_commands::execute(ctx, caller, surface, a).await,
        Command::Delegate { user, until } => {
            crate::delegation_cmds::delegate(ctx, caller, surface, user, until).await
        }
        Command::Undelegate { user } => {
            crate::delegation_cmds::undelegate(ctx, caller, surface, user).await
        }
        Command::Delegations => crate::delegation_cmds::list(ctx, caller, surface).await,
    }
}

/// Files what was typed for the caller: refused without any I/O when it does not validate,
/// then the profile is read and guests and external people are held to the resource's rules.
async fn submit(ctx: Ctx<'_>, caller: &Caller, surface: Surface, raw: &RawSubmission) -> String {
    let valid = match ctx.engine.validate(raw) {
        Ok(v) => v,
        Err(e) => return e.to_string(),
    };
    let (subject, membership) = match resolve_person(ctx.api, ctx.profiles, caller).await {
        Ok(s) => s,
        Err(msg) => return msg,
    };
    if let Err(msg) = admit_requester(ctx.engine, valid.resource().as_str(), membership) {
        return msg;
    }
    match ctx.engine.submit(Submission::new(subject, valid)).await {
        Ok(r) => submitted_text(&r, surface),
        Err(e) => e.to_string(),
    }
}

async fn cancel(engine: &Engine, caller: &Caller, surface: Surface, target: &str) -> String {
    let id = match target.parse::<RequestId>() {
        Ok(id) => id,
        Err(_) => {
            // `cancel dev-network`: my pending request for that resource.
            let status = match engine.status(&caller.key()).await {
                Ok(s) => s,
                Err(e) => return e.to_string(),
            };
            match status
                .pending
                .iter()
                .find(|r| r.resource.as_str() == target.trim().to_lowercase())
            {
                Some(r) => r.id,
                None => {
                    return format!(
                        "You have no pending request for '{}'. `{}status` lists your requests.",
                        escape(target),
                        surface.prefix()
                    );
                }
            }
        }
    };
    match engine.cancel(id, caller.actor()).await {
        Ok(r) => format!("Cancelled your request for {}.", r.resource),
        Err(e) => e.to_string(),
    }
}

/// `status`: live grants with time left, pending requests.
pub async fn status_text(engine: &Engine, caller: &Caller, surface: Surface) -> String {
    let status = match engine.status(&caller.key()).await {
        Ok(s) => s,
        Err(e) => return e.to_string(),
    };
    if status.grants.is_empty() && status.pending.is_empty() {
        return format!(
            "You don't have any active access grants or pending requests. `{}list` shows what you can request.",
            surface.prefix()
        );
    }
    let now = engine.now();
    let mut out = String::new();
    let network_of = |resource: &access_core::ResourceId| {
        engine
            .catalog()
            .get(resource.as_str())
            .filter(|r| r.provider == "cloudconnexa")
            .map(|r| {
                let network = r
                    .settings
                    .get("network")
                    .and_then(|n| n.as_str())
                    .unwrap_or(r.id.as_str());
                match r.id.role() {
                    Some(role) => format!("{network} ({role})"),
                    None => network.to_string(),
                }
            })
    };
    if !status.grants.is_empty() && surface == Surface::VpnAccess {
        // The Cloud Connexa document's `status`.
        out.push_str("Your active VPN access grants:\n");
        for g in &status.grants {
            let remaining = format_remaining(g.remaining(now));
            match network_of(&g.resource) {
                Some(network) => out.push_str(&format!(
                    "• *Network:* {network} - *Expires in:* {remaining}\n"
                )),
                None => out.push_str(&format!("• *{}* - *Expires in:* {remaining}\n", g.resource)),
            }
        }
    } else if !status.grants.is_empty() {
        out.push_str("*Your active access grants:*\n");
        for g in &status.grants {
            let state = match g.status {
                access_core::GrantStatus::Provisioning => " (being set up)",
                access_core::GrantStatus::Revoking => " (being revoked)",
                _ => "",
            };
            out.push_str(&format!(
                "• *{}*: expires in {} ({}){state}\n",
                g.resource,
                format_remaining(g.remaining(now)),
                slack_date(g.expires_at)
            ));
        }
    }
    if !status.pending.is_empty() {
        out.push_str("*Your pending requests:*\n");
        for r in &status.pending {
            out.push_str(&format!(
                "• *{}* for {}, asked {}: waiting for approval (`{}cancel {}`)\n",
                r.resource,
                r.duration.human(),
                slack_date(r.created_at),
                surface.prefix(),
                r.resource
            ));
        }
    }
    out.trim_end().to_string()
}

fn describe(r: &Resource) -> String {
    let approval = match &r.approval {
        access_core::ApprovalPolicy::Auto => "no approval needed".to_string(),
        p => match p.required_approvals() {
            1 => "needs 1 approval".to_string(),
            n => format!("needs {n} approvals"),
        },
    };
    format!(
        "• *{}*{}: default {}, at most {}; {approval}",
        r.id,
        if r.description.is_empty() {
            String::new()
        } else {
            format!(" ({})", escape(&r.description))
        },
        r.durations.default,
        r.durations.max
    )
}

/// `list`: the resources this person may request. When the profile cannot be read, everything is
/// listed (eligibility is checked again on request anyway).
/// How messages name what a resource gives: the GCP document's "GCP workspace access", the Cloud
/// Connexa document's "VPN access to `network`", or "access to `resource`".
pub fn access_noun(r: &access_core::Resource) -> String {
    // A role of a resource (docs/roles.md) says which role, so holding two stays readable.
    let role =
        r.id.role()
            .map(|role| format!(" ({role})"))
            .unwrap_or_default();
    match r.provider.as_str() {
        "gcp-iam" => format!("GCP workspace access{role}"),
        "cloudconnexa" => {
            let network = r
                .settings
                .get("network")
                .and_then(|n| n.as_str())
                .unwrap_or(r.id.as_str());
            format!("VPN access to {network}{role}")
        }
        _ => format!("access to {}", r.id),
    }
}

pub async fn list_text(ctx: Ctx<'_>, caller: &Caller, surface: Surface) -> String {
    let engine = ctx.engine;
    let resources = engine.resources();
    if resources.is_empty() {
        return "No resources are configured.".to_string();
    }
    let subject = resolve_subject(ctx.api, ctx.profiles, caller).await.ok();
    let mut eligible = vec![];
    let mut networks = vec![];
    let mut hidden = 0;
    for r in &resources {
        let eligible_here = match &subject {
            Some(s) => engine.eligibility(s, r).await.is_ok(),
            None => true,
        };
        // Cloud Connexa resources whose network does not exist are not offered (the document's
        // `list` shows the networks the API has).
        let ok = eligible_here && engine.unavailable_reason(r).await.is_none();
        if !ok {
            hidden += 1;
        } else if surface == Surface::VpnAccess && r.provider == "cloudconnexa" {
            // The Cloud Connexa document's `list`: the networks (that exist) by name.
            let network = r
                .settings
                .get("network")
                .and_then(|n| n.as_str())
                .unwrap_or(r.id.as_str());
            networks.push(if network == r.id.as_str() {
                format!("• {network}")
            } else {
                format!("• {network} (request it as `{}`)", r.id)
            });
        } else {
            eligible.push(describe(r));
        }
    }
    if !networks.is_empty() {
        let mut out = format!("Available networks:\n{}", networks.join("\n"));
        if !eligible.is_empty() {
            out.push_str(&format!("\n*Other resources:*\n{}", eligible.join("\n")));
        }
        out.push_str(&format!(
            "\nRequest access with `{}request <network> [duration in hours] <reason>`.",
            surface.prefix()
        ));
        return out;
    }
    if eligible.is_empty() {
        return "None of the configured resources is available to you.".to_string();
    }
    let mut out = format!("*Available resources:*\n{}", eligible.join("\n"));
    if hidden > 0 {
        out.push_str(&format!("\n_{hidden} more you are not eligible for._"));
    }
    out.push_str(&format!(
        "\nRequest one with `{}request <resource> [duration] <reason>`.",
        surface.prefix()
    ));
    out
}
