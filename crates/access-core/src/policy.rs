//! Policy evaluation: is this person eligible for this resource, and may this person approve this
//! request. Decisions that need membership facts ask a [`Directory`].

use crate::ports::{Directory, DirectoryError};
use crate::request::{AccessRequest, Actor};
use crate::resource::{ApprovalPolicy, ApproverSet, EligibilityRule, Resource};
use crate::subject::Subject;

/// Why someone is not eligible. The message names the rule that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EligibilityError {
    /// A rule does not hold; the message says which.
    #[error("{message}")]
    RuleFailed {
        /// The rule.
        rule: EligibilityRule,
        /// The text shown to the person.
        message: String,
    },
    /// The directory could not answer.
    #[error("Organizational data service is not available")]
    DirectoryUnavailable,
    /// A rule needs the person's e-mail and their profile has none.
    #[error(
        "Your Slack profile has no e-mail address. Please add one to your profile and try again."
    )]
    MissingEmail,
}

/// The text shown when `rule` does not hold, worded as the GCP document words the org case.
pub fn rule_failure_message(rule: &EligibilityRule, resource: &Resource) -> String {
    match rule {
        EligibilityRule::Anyone => String::new(),
        EligibilityRule::Org(org) => format!(
            "You are not a member of the '{org}' organization. Access can only be granted to {org} members."
        ),
        EligibilityRule::SlackGroup(group) => format!(
            "You are not a member of the Slack user group <!subteam^{group}>. Access to '{}' is limited to that group.",
            resource.id
        ),
        EligibilityRule::EmailDomain(domains) => format!(
            "Access to '{}' is limited to e-mail addresses in {}. Your Slack profile's e-mail is not.",
            resource.id,
            domains
                .iter()
                .map(|d| format!("@{d}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Checks every eligibility rule of `resource` for `subject`; all must hold.
pub async fn check_eligibility(
    resource: &Resource,
    subject: &Subject,
    directory: &dyn Directory,
) -> Result<(), EligibilityError> {
    for rule in &resource.eligibility {
        let holds = match rule {
            EligibilityRule::Anyone => true,
            EligibilityRule::EmailDomain(domains) => {
                let email = subject
                    .email
                    .as_ref()
                    .ok_or(EligibilityError::MissingEmail)?;
                domains.iter().any(|d| {
                    d.trim_start_matches('@')
                        .eq_ignore_ascii_case(email.domain())
                })
            }
            EligibilityRule::Org(_) | EligibilityRule::SlackGroup(_) => {
                match directory.satisfies(subject, rule).await {
                    Ok(b) => b,
                    Err(DirectoryError::Unavailable) => {
                        return Err(EligibilityError::DirectoryUnavailable);
                    }
                    Err(DirectoryError::Failed(e)) => {
                        tracing::warn!(error = %e, "directory lookup failed");
                        return Err(EligibilityError::DirectoryUnavailable);
                    }
                }
            }
        };
        if !holds {
            return Err(EligibilityError::RuleFailed {
                rule: rule.clone(),
                message: rule_failure_message(rule, resource),
            });
        }
    }
    Ok(())
}

/// Why a click on Approve/Deny does not count.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApproverError {
    /// Nobody decides their own request.
    #[error("You cannot approve or deny your own request.")]
    SelfApproval,
    /// The actor is not in the approver set (the resource named).
    #[error("You are not an approver for '{0}'.")]
    NotAnApprover(String),
    /// The resource needs no approval (the resource named).
    #[error("'{0}' is approved automatically; there is nothing to decide.")]
    NoApprovalNeeded(String),
    /// The directory could not answer.
    #[error("Organizational data service is not available")]
    DirectoryUnavailable,
    /// The clicker's only claim was a delegation that is over.
    #[error(
        "Your delegation from {delegator} {ended}, so you can no longer approve or deny for them. You are not an approver for '{resource}'."
    )]
    DelegationEnded {
        /// The delegator (a mention).
        delegator: String,
        /// How it ended, for people ("ended at …", "was revoked at …").
        ended: String,
        /// The resource.
        resource: String,
    },
    /// The delegator already decided; their delegate cannot add a second vote for them.
    #[error(
        "{delegator} has already decided on this request; you cannot decide again on their behalf."
    )]
    DelegatorAlreadyDecided {
        /// The delegator (a mention).
        delegator: String,
    },
}

/// May `actor` decide on `request`? Admins (the admin API) always may; Slack users must be in the
/// resource's approver set and may never decide on their own request.
pub async fn check_approver(
    resource: &Resource,
    request: &AccessRequest,
    actor: &Actor,
    directory: &dyn Directory,
) -> Result<(), ApproverError> {
    if actor.is_subject(&request.subject) {
        return Err(ApproverError::SelfApproval);
    }
    let approvers = match &resource.approval {
        ApprovalPolicy::Auto => {
            return Err(ApproverError::NoApprovalNeeded(resource.id.to_string()));
        }
        ApprovalPolicy::Approvers { approvers, .. } => approvers,
    };
    match actor {
        Actor::Admin { .. } => return Ok(()),
        Actor::System => return Err(ApproverError::NotAnApprover(resource.id.to_string())),
        Actor::User { .. } => {}
    }
    match in_set(approvers, actor, directory).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(ApproverError::NotAnApprover(resource.id.to_string())),
        Err(_) => Err(ApproverError::DirectoryUnavailable),
    }
}

/// Whether `actor` is a Slack user in `set`: listed by user id, or a member of one of its Slack
/// user groups or directory groups. Anyone else (an admin API caller, Gatehouse) is not. When
/// no group says yes and the directory could not answer for one of them, its (last) error.
pub async fn in_set(
    set: &ApproverSet,
    actor: &Actor,
    directory: &dyn Directory,
) -> Result<bool, DirectoryError> {
    let Some(as_subject) = actor.as_subject() else {
        return Ok(false);
    };
    if set.users.contains(&as_subject.user_id) {
        return Ok(true);
    }
    let rules = set
        .slack_groups
        .iter()
        .map(|g| EligibilityRule::SlackGroup(g.clone()))
        .chain(set.groups.iter().map(|g| EligibilityRule::Org(g.clone())));
    let mut unavailable = None;
    for rule in rules {
        match directory.satisfies(&as_subject, &rule).await {
            Ok(true) => return Ok(true),
            Ok(false) => {}
            Err(e) => unavailable = Some(e),
        }
    }
    match unavailable {
        Some(e) => Err(e),
        None => Ok(false),
    }
}
