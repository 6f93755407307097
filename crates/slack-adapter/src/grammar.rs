//! The command grammar, shared by `/access …`, `/vpn-access …` and direct messages to the bot.
//!
//! ```text
//! request <resource> [duration] <justification>   justification quoted ("…", “…”) or not;
//!                                                 <resource> may be a role: gcp-access:editor
//! request <resource> [duration] --emergency <justification>   break-glass (docs/break-glass.md)
//! status | list | help [manage]
//! revoke <resource>
//! extend <resource> [duration] [justification]
//! cancel <request id | resource>
//! admin grants [resource] | admin pending | admin revoke @user <resource> | admin audit @user
//! ```
//!
//! Parsing is a pure function: it never looks at configuration. Whether the resource exists, the
//! duration is allowed or the person is eligible is the engine's business; this module only makes
//! sure every malformed command gets a message that says exactly what to type instead.

use std::fmt;

/// Where a command was typed: decides how usage examples are spelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// `/access …`
    Access,
    /// `/vpn-access …` (the Cloud Connexa document's command)
    VpnAccess,
    /// A direct message to the bot (the GCP document's form: `request gcp-access "…"`).
    DirectMessage,
}

impl Surface {
    /// The slash command name (`/access`), if any.
    pub fn from_command(command: &str) -> Option<Surface> {
        match command.trim() {
            "/access" => Some(Surface::Access),
            "/vpn-access" => Some(Surface::VpnAccess),
            _ => None,
        }
    }

    /// What to put before a verb in examples: `/access `, `/vpn-access ` or nothing.
    pub fn prefix(self) -> &'static str {
        match self {
            Surface::Access => "/access ",
            Surface::VpnAccess => "/vpn-access ",
            Surface::DirectMessage => "",
        }
    }
}

/// A parsed command. Values are raw as typed; the engine validates them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Request {
        resource: String,
        duration: Option<String>,
        justification: String,
    },
    Status,
    List,
    Revoke {
        resource: String,
    },
    Extend {
        resource: String,
        duration: Option<String>,
        justification: Option<String>,
    },
    /// A request id, or a resource name meaning "my pending request for it".
    Cancel {
        target: String,
    },
    Help {
        topic: HelpTopic,
    },
    /// A slash command with no text: show the request form.
    OpenModal,
    /// `request <resource> [duration] --emergency <justification>`: break-glass access, granted
    /// at once without approval where the resource allows it.
    EmergencyRequest {
        resource: String,
        duration: Option<String>,
        justification: String,
    },
    /// `admin …`: the admin group's commands (docs/admin-commands.md).
    Admin(AdminCommand),
    /// `delegate @user until <date | duration>`: let `user` approve for me until then.
    Delegate {
        user: MentionedUser,
        until: String,
    },
    /// `delegate revoke @user` (alias `undelegate @user`).
    Undelegate {
        user: MentionedUser,
    },
    /// `delegations`: the active delegations I gave and received.
    Delegations,
}

/// A person named in a command by mention (`<@U123|name>`, as Slack escapes `@name`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MentionedUser {
    pub user_id: String,
    /// The name Slack put after `|`, if any.
    pub name: String,
}

/// `admin grants [resource]`, `admin revoke @user <resource>`, `admin pending`,
/// `admin audit @user`. Users are Slack user ids, read from a mention (`<@U…>`) or typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminCommand {
    Grants { resource: Option<String> },
    Revoke { user: String, resource: String },
    Pending,
    Audit { user: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HelpTopic {
    General,
    Manage,
    /// `help admin`, `admin` alone.
    Admin,
}

/// What was wrong with a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseErrorKind {
    /// `request` with nothing after it.
    MissingResource {
        verb: &'static str,
    },
    /// `request <resource>` or `request <resource> <duration>` with no justification.
    MissingJustification {
        resource: String,
    },
    /// `cancel` with nothing after it.
    MissingCancelTarget,
    UnknownCommand {
        word: String,
    },
    /// `request <resource> --emergency` without saying what the emergency is.
    MissingEmergencyJustification {
        resource: String,
    },
    /// A malformed `admin …` command; the text says what is wrong.
    AdminUsage {
        problem: String,
    },
    /// `delegate` without a mention, or with a bad one (`word` is what was there).
    DelegateUsage {
        word: Option<String>,
    },
    /// `delegate @user` without `until …`.
    MissingUntil,
    /// `delegate revoke` / `undelegate` without a mention.
    UndelegateUsage,
}

/// A malformed command; its `Display` is the message shown to the person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub kind: ParseErrorKind,
    pub surface: Surface,
}

impl std::error::Error for ParseError {}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.surface.prefix();
        match &self.kind {
            ParseErrorKind::MissingResource { verb: "request" } => write!(
                f,
                "Invalid command format. Usage: `{p}request <resource> [duration] \"<business justification>\"`\n\
                 Example: `{p}request dev-network 4 Running database migration` or \
                 `{p}request gcp-access \"Need to debug CI infrastructure issues\"`.\n\
                 Use `{p}list` to see the resources you can request."
            ),
            ParseErrorKind::MissingResource { verb } => write!(
                f,
                "Say which resource: `{p}{verb} <resource>`, for example `{p}{verb} dev-network`. \
                 `{p}status` shows what you have."
            ),
            ParseErrorKind::MissingJustification { resource } => write!(
                f,
                "Please say why you need access to {resource}. Usage: `{p}request <resource> [duration] \"<business justification>\"`\n\
                 Example: `{p}request {resource} 4 Running database migration`."
            ),
            ParseErrorKind::MissingCancelTarget => write!(
                f,
                "Say which request to cancel: `{p}cancel <resource>` or `{p}cancel <request id>`. \
                 `{p}status` lists your pending requests."
            ),
            ParseErrorKind::UnknownCommand { word } => write!(
                f,
                "Unknown command `{word}`. Use `{p}help` for available commands."
            ),
            ParseErrorKind::MissingEmergencyJustification { resource } => write!(
                f,
                "Break-glass access needs a justification: say what the emergency is. Nothing was granted.\n\
                 Usage: `{p}request {resource} [duration] --emergency <justification>`, for example \
                 `{p}request {resource} --emergency Production outage, incident INC-1234`."
            ),
            ParseErrorKind::AdminUsage { problem } => {
                write!(f, "{problem}\n{}", admin_usage(self.surface))
            }
            ParseErrorKind::DelegateUsage { word } => {
                if let Some(w) = word {
                    write!(
                        f,
                        "I couldn't tell who `{w}` is: mention the person with @ and pick them from the list, so \
                         Slack links them (the app's `/access` command needs \"Escape channels, users, and links\" \
                         turned on; a direct message to the bot always works). "
                    )?;
                }
                write!(
                    f,
                    "Usage: `{p}delegate @user until <YYYY-MM-DD | duration>`, for example \
                     `{p}delegate @alex until 2026-12-01` or `{p}delegate @alex until 3d` (at most 90 days). \
                     `{p}delegate revoke @user` ends one; `{p}delegations` lists yours."
                )
            }
            ParseErrorKind::MissingUntil => write!(
                f,
                "Say until when: `{p}delegate @user until <YYYY-MM-DD | duration>`, for example \
                 `{p}delegate @alex until 2026-12-01` (through that day, UTC) or `{p}delegate @alex until 3d`."
            ),
            ParseErrorKind::UndelegateUsage => write!(
                f,
                "Say whose delegation to end: `{p}delegate revoke @user`. `{p}delegations` lists yours."
            ),
        }
    }
}

/// Parses what the person typed after the slash command (or the whole DM).
pub fn parse(text: &str, surface: Surface) -> Result<Command, ParseError> {
    let err = |kind| ParseError { kind, surface };
    let text = normalize(text);
    let text = strip_leading_mention(&text);
    let (verb, rest) = split_word(text);
    let verb_lc = verb.to_lowercase();
    match verb_lc.as_str() {
        // `/access` alone opens the form; `/vpn-access` alone shows help, as in the Cloud Connexa
        // document; an empty DM cannot happen but would get help too.
        "" => Ok(match surface {
            Surface::DirectMessage | Surface::VpnAccess => Command::Help {
                topic: HelpTopic::General,
            },
            Surface::Access => Command::OpenModal,
        }),
        "help" | "?" | "usage" => Ok(parse_help(rest)),
        "status" | "my" | "mine" => Ok(Command::Status),
        "list" | "resources" | "networks" => Ok(Command::List),
        "request" | "req" => parse_request(rest).map_err(err),
        "revoke" | "release" | "drop" => {
            let (resource, _) = split_word(rest);
            if resource.is_empty() {
                return Err(err(ParseErrorKind::MissingResource { verb: "revoke" }));
            }
            Ok(Command::Revoke {
                resource: resource.to_string(),
            })
        }
        "extend" | "renew" => {
            let (resource, rest) = split_word(rest);
            if resource.is_empty() {
                return Err(err(ParseErrorKind::MissingResource { verb: "extend" }));
            }
            let (duration, justification) = split_duration(rest);
            let justification = justification.trim();
            Ok(Command::Extend {
                resource: resource.to_string(),
                duration,
                justification: (!is_blank_justification(justification))
                    .then(|| justification.to_string()),
            })
        }
        "cancel" | "withdraw" => {
            let (target, _) = split_word(rest);
            if target.is_empty() {
                return Err(err(ParseErrorKind::MissingCancelTarget));
            }
            Ok(Command::Cancel {
                target: target.to_string(),
            })
        }
        "admin" => parse_admin(rest).map_err(|problem| err(ParseErrorKind::AdminUsage { problem })),
        "delegate" => parse_delegate(rest).map_err(err),
        "undelegate" => parse_undelegate(rest).map_err(err),
        "delegations" => Ok(Command::Delegations),
        _ => Err(err(ParseErrorKind::UnknownCommand {
            word: verb.chars().take(40).collect(),
        })),
    }
}

/// `help [manage|admin]`.
fn parse_help(rest: &str) -> Command {
    let (topic, _) = split_word(rest);
    Command::Help {
        topic: if topic.eq_ignore_ascii_case("manage") {
            HelpTopic::Manage
        } else if topic.eq_ignore_ascii_case("admin") {
            HelpTopic::Admin
        } else {
            HelpTopic::General
        },
    }
}

/// `request <resource> [duration] <justification>`, break-glass with `--emergency`.
fn parse_request(rest: &str) -> Result<Command, ParseErrorKind> {
    // `--emergency` may come first (`request --emergency prod …`), after the resource or
    // after the duration.
    let (flag_before, rest) = take_emergency_flag(rest);
    let (resource, rest) = split_word(rest);
    if resource.is_empty() {
        return Err(ParseErrorKind::MissingResource { verb: "request" });
    }
    let (flag_after_resource, rest) = take_emergency_flag(rest);
    let (duration, justification) = split_duration(rest);
    let (flag_after_duration, justification) = take_emergency_flag(justification);
    let (flag_at_end, justification) = take_trailing_emergency_flag(justification);
    if flag_before || flag_after_resource || flag_after_duration || flag_at_end {
        if is_blank_justification(justification) {
            return Err(ParseErrorKind::MissingEmergencyJustification {
                resource: resource.to_string(),
            });
        }
        return Ok(Command::EmergencyRequest {
            resource: resource.to_string(),
            duration,
            justification: justification.trim().to_string(),
        });
    }
    if is_blank_justification(justification) {
        return Err(ParseErrorKind::MissingJustification {
            resource: resource.to_string(),
        });
    }
    Ok(Command::Request {
        resource: resource.to_string(),
        duration,
        justification: justification.trim().to_string(),
    })
}

/// `admin <subcommand> …`; `Err` is what is wrong (the usage follows it).
fn parse_admin(rest: &str) -> Result<Command, String> {
    let (sub, rest) = split_word(rest);
    let admin = |c| Ok(Command::Admin(c));
    match sub.to_lowercase().as_str() {
        "" | "help" => Ok(Command::Help {
            topic: HelpTopic::Admin,
        }),
        "grants" | "grant" | "access" => {
            let (resource, _) = split_word(rest);
            admin(AdminCommand::Grants {
                resource: Some(resource.to_string()).filter(|r| !r.is_empty()),
            })
        }
        "pending" | "requests" => admin(AdminCommand::Pending),
        "revoke" => {
            let (user, rest) = split_word(rest);
            if user.is_empty() {
                return Err("Say whose access to revoke, and which resource.".into());
            }
            let user = user_ref(user)?;
            let (resource, _) = split_word(rest);
            if resource.is_empty() {
                return Err(format!(
                    "Say which resource to revoke from <@{user}>: `admin revoke <@{user}> <resource>`."
                ));
            }
            admin(AdminCommand::Revoke {
                user,
                resource: resource.to_string(),
            })
        }
        "audit" | "history" => {
            let (user, _) = split_word(rest);
            if user.is_empty() {
                return Err("Say whose audit events to show.".into());
            }
            admin(AdminCommand::Audit {
                user: user_ref(user)?,
            })
        }
        other => Err(format!(
            "Unknown admin command `{}`.",
            other.chars().take(40).collect::<String>()
        )),
    }
}

/// A Slack user id from a mention as Slack sends it (`<@U123>`, `<@U123|name>`) or a typed id
/// (`U123ABC`, `W…` on Enterprise Grid). A plain `@name` carries no id: Slack sends mentions as
/// ids only when the command escapes users (`should_escape: true`, docs/slack-app.md).
fn user_ref(word: &str) -> Result<String, String> {
    let id = match word.strip_prefix("<@").and_then(|w| w.strip_suffix('>')) {
        Some(inner) => inner.split('|').next().unwrap_or_default(),
        None => word,
    };
    let looks_like_id = id.len() >= 3
        && id.len() <= 32
        && (id.starts_with('U') || id.starts_with('W'))
        && id
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
    if looks_like_id {
        Ok(id.to_string())
    } else {
        Err(format!(
            "I can't tell who `{}` is: I need a mention Slack sends as a user id (pick the person from \
             the autocomplete list) or their Slack user id (U…). If your mentions arrive as plain \
             names, ask whoever manages the Slack app to turn on \"Escape channels, users, and links\" \
             for the command.",
            word.chars().take(40).collect::<String>()
        ))
    }
}

/// The admin commands, for usage errors and `help admin`.
pub fn admin_usage(surface: Surface) -> String {
    let p = surface.prefix();
    format!(
        "*Admin commands* (for the Gatehouse admin group; answers only you can see):\n\
         • `{p}admin grants [resource]`: live grants in this workspace (person, resource, time left)\n\
         • `{p}admin pending`: requests waiting for a decision, with their age\n\
         • `{p}admin revoke @user <resource>`: revoke that person's access now (they are told)\n\
         • `{p}admin audit @user`: that person's recent audit events, newest first"
    )
}

/// `delegate @user until <end>`, `delegate revoke @user`, `delegate list`.
fn parse_delegate(rest: &str) -> Result<Command, ParseErrorKind> {
    let (first, after) = split_word(rest);
    match first.to_lowercase().as_str() {
        "" => return Err(ParseErrorKind::DelegateUsage { word: None }),
        "revoke" | "remove" | "end" => return parse_undelegate(after),
        "list" => return Ok(Command::Delegations),
        _ => {}
    }
    let user = mention(first).ok_or_else(|| ParseErrorKind::DelegateUsage {
        word: Some(first.chars().take(40).collect()),
    })?;
    let (word, end) = split_word(after);
    // `until` may be left out: `delegate @alex 3d`.
    let end = if word.eq_ignore_ascii_case("until") || word.eq_ignore_ascii_case("for") {
        end
    } else {
        after
    };
    let end = end.trim();
    if end.is_empty() {
        return Err(ParseErrorKind::MissingUntil);
    }
    Ok(Command::Delegate {
        user,
        until: end.to_string(),
    })
}

fn parse_undelegate(rest: &str) -> Result<Command, ParseErrorKind> {
    let (who, _) = split_word(rest);
    mention(who)
        .map(|user| Command::Undelegate { user })
        .ok_or(ParseErrorKind::UndelegateUsage)
}

/// `<@U123>` or `<@U123|name>` (Slack's escaped mention).
fn mention(token: &str) -> Option<MentionedUser> {
    let inner = token.strip_prefix("<@")?.strip_suffix('>')?;
    let (id, name) = match inner.split_once('|') {
        Some((id, name)) => (id, name),
        None => (inner, ""),
    };
    let valid = id.len() >= 2
        && (id.starts_with('U') || id.starts_with('W'))
        && id
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
    valid.then(|| MentionedUser {
        user_id: id.to_string(),
        name: name.to_string(),
    })
}

/// Slack escapes `&`, `<` and `>` in command text; non-breaking spaces come from some keyboards.
fn normalize(text: &str) -> String {
    text.replace('\u{a0}', " ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
        .trim()
        .to_string()
}

/// `<@U0BOT> request …` in a DM or a mention: drop the mention.
fn strip_leading_mention(text: &str) -> &str {
    if text.starts_with("<@")
        && let Some(end) = text.find('>')
    {
        return text[end + 1..].trim_start();
    }
    text
}

fn split_word(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    match s.find(char::is_whitespace) {
        Some(i) => (&s[..i], s[i..].trim_start()),
        None => (s, ""),
    }
}

/// Unit words that may follow a bare number as a separate word: `2 hours`, `90 min`.
const UNIT_WORDS: [&str; 21] = [
    "s", "sec", "secs", "second", "seconds", "m", "min", "mins", "minute", "minutes", "h", "hr",
    "hrs", "hour", "hours", "d", "day", "days", "w", "week", "weeks",
];

/// Splits an optional leading duration off the rest: `4 Running migration`, `30m "why"`,
/// `2 hours why`. A quoted rest has no duration.
fn split_duration(rest: &str) -> (Option<String>, &str) {
    let (first, after) = split_word(rest);
    if first.is_empty() || !looks_like_duration(first) {
        return (None, rest);
    }
    // `2 hours …`: a bare number followed by a unit word is one duration.
    if first.chars().all(|c| c.is_ascii_digit()) {
        let (unit, after_unit) = split_word(after);
        let unit_lc = unit.to_lowercase();
        if UNIT_WORDS.contains(&unit_lc.as_str()) {
            return (Some(format!("{first}{unit_lc}")), after_unit);
        }
    }
    (Some(first.to_string()), after)
}

/// A token that is a duration, or is plainly meant as one: digits only (`0`, `999`) or
/// number-and-unit groups (`0h`, `400d`, `99999999999999h`), which the engine then refuses with a
/// message (zero, too long, out of bounds) rather than the person silently getting the default
/// duration with the token as the first word of their justification.
fn looks_like_duration(token: &str) -> bool {
    if token.chars().all(|c| c.is_ascii_digit()) {
        return true;
    }
    if token.parse::<access_core::AccessDuration>().is_ok() {
        return true;
    }
    // `<digits><unit>` repeated, units as the duration parser spells them.
    let mut rest = token;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let after = &rest[digits..];
        let letters = after.len()
            - after
                .trim_start_matches(|c: char| c.is_ascii_alphabetic())
                .len();
        if digits == 0 || letters == 0 {
            return false;
        }
        if !UNIT_WORDS.contains(&after[..letters].to_ascii_lowercase().as_str()) {
            return false;
        }
        rest = &after[letters..];
    }
    true
}

/// Strips a leading `--emergency` (or `—emergency`/`–emergency`: phones and macOS turn `--` into
/// a dash) and says whether it was there.
fn take_emergency_flag(rest: &str) -> (bool, &str) {
    let (word, after) = split_word(rest);
    let flag = word.trim_start_matches(['-', '\u{2014}', '\u{2013}']);
    let dashed = flag.len() < word.len();
    if dashed
        && (flag.eq_ignore_ascii_case("emergency") || flag.eq_ignore_ascii_case("break-glass"))
    {
        (true, after)
    } else {
        (false, rest)
    }
}

/// Strips a trailing `--emergency` (`request prod-db outage --emergency`).
fn take_trailing_emergency_flag(rest: &str) -> (bool, &str) {
    let trimmed = rest.trim_end();
    let start = trimmed
        .rfind(char::is_whitespace)
        .map(|i| i + 1)
        .unwrap_or(0);
    match take_emergency_flag(&trimmed[start..]) {
        (true, _) => (true, trimmed[..start].trim_end()),
        (false, _) => (false, rest),
    }
}

fn is_blank_justification(s: &str) -> bool {
    access_core::resource::strip_quotes(s.trim())
        .trim()
        .is_empty()
}

/// The help text for `help` (and `help manage`).
pub fn help_text(surface: Surface, topic: HelpTopic) -> String {
    if topic == HelpTopic::Admin {
        return admin_usage(surface);
    }
    let p = surface.prefix();
    let mut s = format!(
        "*Gatehouse: temporary access on request*\n\
         • `{p}request <resource> [duration] <reason>`: request temporary access, e.g. `{p}request dev-network 4 Running database migration` or `{p}request gcp-access \"Need to debug CI infrastructure issues\"` (duration like 30m, 4h, 2d; a bare number means hours); a resource with several roles is requested as `<resource>:<role>`, e.g. `{p}request gcp-access:editor 4h Deploying the fix`\n\
         • `{p}status`: your active access with time left, and your pending requests\n\
         • `{p}list`: resources (and their roles) you can request\n\
         • `{p}revoke <resource>`: give access back early\n\
         • `{p}extend <resource> [duration]`: ask for more time on active access\n\
         • `{p}cancel <resource>`: withdraw a pending request\n\
         • `{p}request <resource> [duration] --emergency <reason>`: break-glass access at once, where a resource allows it (approvers and security are told, and review it)\n\
         • `{p}delegate @user until <YYYY-MM-DD | duration>`: approvers: let someone approve for you for a while (at most 90 days); `{p}delegate revoke @user` ends it, `{p}delegations` lists yours\n\
         • `{p}help`: show this message\n\
         • `{p}help admin`: commands for Gatehouse admins"
    );
    if surface == Surface::Access {
        s.push_str(&format!(
            "\n• `{}` with nothing after it opens a form",
            p.trim_end()
        ));
    }
    if topic == HelpTopic::Manage {
        s.push_str(
            "\n\n*Managing access*\n\
             • Requests for resources with approvers are posted to the approvers' channel with Approve and Deny buttons; \
             you cannot approve your own request, and some resources need more than one approval.\n\
             • You get a direct message when your request is approved, denied, granted (with how to use it), \
             shortly before it expires (with an Extend button where allowed) and when it ends.\n\
             • The App Home tab lists your access with Revoke and Extend buttons.\n\
             • Approvers can delegate: while `delegate @user until …` is active, that person may approve and deny \
             wherever you could (recorded as on your behalf), never their own request. \
             A request nobody decides within its escalation delay is shown to a second set of approvers, and you are told.",
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(resource: &str, duration: Option<&str>, justification: &str) -> Command {
        Command::Request {
            resource: resource.into(),
            duration: duration.map(Into::into),
            justification: justification.into(),
        }
    }

    #[test]
    fn document_examples() {
        assert_eq!(
            parse(
                "request dev-network 4 Running database migration",
                Surface::VpnAccess
            ),
            Ok(req("dev-network", Some("4"), "Running database migration"))
        );
        assert_eq!(
            parse(
                "request gcp-access \"Need to debug CI infrastructure issues\"",
                Surface::DirectMessage
            ),
            Ok(req(
                "gcp-access",
                None,
                "\"Need to debug CI infrastructure issues\""
            ))
        );
    }

    #[test]
    fn empty_means_modal_or_help() {
        assert_eq!(parse("", Surface::Access), Ok(Command::OpenModal));
        assert_eq!(
            parse("   ", Surface::VpnAccess),
            Ok(Command::Help {
                topic: HelpTopic::General
            })
        );
        assert_eq!(
            parse("", Surface::DirectMessage),
            Ok(Command::Help {
                topic: HelpTopic::General
            })
        );
    }
}
