//! `delegate @user until …`, `delegate revoke @user` and `delegations`
//! (docs/delegation-escalation.md). The rules live in the engine; this words the replies.

use access_core::delegation::Delegation;
use access_core::subject::SubjectKey;

use crate::blocks::slack_date;
use crate::commands::{self, Caller, Ctx, ProfileError};
use crate::grammar::{MentionedUser, Surface};

/// The delegate as a caller of the same workspace (for the membership check).
fn as_caller(caller: &Caller, user: &MentionedUser) -> Caller {
    Caller {
        team_id: caller.team_id.clone(),
        user_id: user.user_id.clone(),
        user_name: user.name.clone(),
        workspace: caller.workspace.clone(),
        enterprise_id: caller.enterprise_id.clone(),
    }
}

/// Full members only, on both ends: guests and people from other organisations never approve.
async fn admit(ctx: Ctx<'_>, who: &Caller, whose: &str) -> Result<(), String> {
    match commands::check_approver(ctx.api, ctx.profiles, who).await {
        Ok(()) => Ok(()),
        Err(ProfileError::Transient(m)) => Err(m),
        Err(ProfileError::Refused(m)) => Err(format!("{whose}: {m} Nothing was changed.")),
    }
}

pub async fn delegate(
    ctx: Ctx<'_>,
    caller: &Caller,
    surface: Surface,
    user: MentionedUser,
    until: String,
) -> String {
    if user.user_id == caller.user_id {
        return access_core::delegation::DelegationError::ToSelf.to_string();
    }
    if let Err(m) = admit(ctx, caller, "You").await {
        return m;
    }
    let to = as_caller(caller, &user);
    if let Err(m) = admit(ctx, &to, &format!("<@{}>", user.user_id)).await {
        return m;
    }
    let delegate = SubjectKey::new(&caller.team_id, &user.user_id).actor(if user.name.is_empty() {
        user.user_id.clone()
    } else {
        user.name.clone()
    });
    match ctx
        .engine
        .delegate(&caller.actor(), &delegate, &until)
        .await
    {
        Ok(d) => format!(
            ":handshake: <@{}> can now approve and deny requests for you (wherever you could) until {}. \
             Decisions are recorded as theirs on your behalf; they can never decide their own request or yours. \
             `{}delegate revoke <@{}>` ends it early.",
            d.delegate_id,
            slack_date(d.until),
            surface.prefix(),
            d.delegate_id
        ),
        Err(e) => e.to_string(),
    }
}

pub async fn undelegate(
    ctx: Ctx<'_>,
    caller: &Caller,
    surface: Surface,
    user: MentionedUser,
) -> String {
    match ctx.engine.undelegate(&caller.actor(), &user.user_id).await {
        Ok(d) => format!(
            "Ended your delegation to <@{}>: they can no longer approve or deny for you.",
            d.delegate_id
        ),
        Err(access_core::EngineError::Delegation(e)) => e.to_string().replace(
            "`delegations`",
            &format!("`{}delegations`", surface.prefix()),
        ),
        Err(e) => e.to_string(),
    }
}

fn line(d: &Delegation, other: &str) -> String {
    format!("• <@{other}> until {}", slack_date(d.until))
}

pub async fn list(ctx: Ctx<'_>, caller: &Caller, surface: Surface) -> String {
    let (given, received) = match ctx
        .engine
        .delegations_of(&caller.team_id, &caller.user_id)
        .await
    {
        Ok(x) => x,
        Err(e) => return e.to_string(),
    };
    if given.is_empty() && received.is_empty() {
        return format!(
            "You have no active delegations. Approvers can delegate with `{}delegate @user until <YYYY-MM-DD | duration>`.",
            surface.prefix()
        );
    }
    let mut out = String::new();
    if !given.is_empty() {
        out.push_str("*You let these people approve for you:*\n");
        for d in &given {
            out.push_str(&line(d, &d.delegate_id));
            out.push('\n');
        }
    }
    if !received.is_empty() {
        out.push_str("*You may approve on behalf of:*\n");
        for d in &received {
            out.push_str(&line(d, &d.delegator_id));
            out.push('\n');
        }
    }
    if !given.is_empty() {
        out.push_str(&format!(
            "`{}delegate revoke @user` ends one.",
            surface.prefix()
        ));
    }
    out.trim_end().to_string()
}
