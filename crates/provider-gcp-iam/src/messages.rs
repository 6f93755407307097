//! What the person reads: the GCP document's messages, with its organisation-specific parts
//! (organisation, project, clean-up period) filled in from the resource.
//!
//! The expiry is written in UTC RFC 3339; the handle carries it as a timestamp so the Slack side
//! can render it in the requester's time zone.

use access_core::resource::EligibilityRule;
use chrono::{DateTime, Utc};

use crate::condition::rfc3339;

/// The document's reply to a successful `revoke`.
pub const REVOKED: &str = "Your GCP workspace access has been revoked successfully.";
/// The document's reply to `revoke` with nothing active.
pub const NOTHING_TO_REVOKE: &str = "You do not have any active GCP workspace access to revoke.";
/// Appended to the success message when the key file could not be uploaded.
pub const UPLOAD_FAILED: &str =
    "\n\n⚠️  Failed to upload key file. Please run the command again to retrieve your credentials.";

/// "7 days", "5 hours", "1 day", "30 minutes".
pub fn human_duration(d: chrono::Duration) -> String {
    let secs = d.num_seconds().max(0);
    let plural = |n: i64, unit: &str| {
        if n == 1 {
            format!("1 {unit}")
        } else {
            format!("{n} {unit}s")
        }
    };
    let minutes = (secs + 30) / 60;
    if minutes < 60 {
        return plural(minutes, "minute");
    }
    let hours = (secs + 1800) / 3600;
    if hours < 48 {
        return if hours % 24 == 0 {
            plural(hours / 24, "day")
        } else {
            plural(hours, "hour")
        };
    }
    plural((secs + 43_200) / 86_400, "day")
}

/// The facts a success message is made of.
#[derive(Debug, Clone)]
pub struct GrantMessage<'a> {
    pub project: &'a str,
    pub role: &'a str,
    pub eligibility: &'a [EligibilityRule],
    pub granted_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub now: DateTime<Utc>,
    pub justification: &'a str,
    pub resource_cleanup_days: Option<u32>,
    /// `Some(email)` for user bindings (no key); `None` for the key flow.
    pub user_binding: Option<&'a str>,
}

impl GrantMessage<'_> {
    pub fn render(&self) -> String {
        let mut out = String::new();
        // The provider runs only after eligibility passed, so the organisation rule held.
        if let Some(org) = self.eligibility.iter().find_map(|r| match r {
            EligibilityRule::Org(o) => Some(o.as_str()),
            _ => None,
        }) {
            out.push_str(&format!(
                "Confirmed you are a member of the {org} organization. "
            ));
        }
        let total = human_duration(self.expires_at - self.granted_at);
        let remaining = human_duration(self.expires_at - self.now);
        let until = rfc3339(self.expires_at);
        match self.user_binding {
            None => out.push_str(&format!("You have been granted access to project \"{}\".\n\n", self.project)),
            Some(email) => out.push_str(&format!(
                "You have been granted access to project \"{}\" (role {}) for your Google account {email}.\n\n",
                self.project, self.role
            )),
        }
        out.push_str(&format!("You will have access to the project for the next {total} (until {until}, {remaining} from now).\n\n"));
        match self.resource_cleanup_days {
            Some(days) => out.push_str(&format!(
                "You are responsible for deleting resources you create within this account, however, resources older than {days} days will be deleted automatically.\n\n"
            )),
            None => out.push_str("You are responsible for deleting resources you create within this account.\n\n"),
        }
        match self.user_binding {
            None => out.push_str(&format!(
                "To use the service account key:\n1. Download the JSON file from Slack\n2. Set environment variable: export GOOGLE_APPLICATION_CREDENTIALS=/path/to/key.json\n3. Access will expire in {remaining}\n\n"
            )),
            Some(email) => out.push_str(&format!(
                "To use it:\n1. Sign in with your own account: gcloud auth login {email}\n2. Select the project: gcloud config set project {}\n3. Access will expire in {remaining} (Google enforces the expiry itself)\n\n",
                self.project
            )),
        }
        out.push_str(&format!("Justification: {}", self.justification));
        out
    }
}

/// Shown next to the key file.
pub fn key_warning(service_account: &str, project: &str, expires_at: DateTime<Utc>) -> String {
    format!(
        "⚠️ Security warning: this file is a private key for {service_account}. Anyone holding it has your access to project \"{project}\" until {}. Do not share it, commit it or paste it anywhere; keep it out of shared folders and delete it when you are done. Revoking the access deletes the account and every key.",
        rfc3339(expires_at)
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn durations() {
        let h = chrono::Duration::hours;
        assert_eq!(
            human_duration(h(7 * 24) - chrono::Duration::milliseconds(5)),
            "7 days"
        );
        assert_eq!(human_duration(h(5 * 24)), "5 days");
        assert_eq!(human_duration(h(24)), "1 day");
        assert_eq!(human_duration(h(30)), "30 hours");
        assert_eq!(human_duration(h(4)), "4 hours");
        assert_eq!(human_duration(chrono::Duration::minutes(1)), "1 minute");
        assert_eq!(human_duration(chrono::Duration::seconds(-5)), "0 minutes");
    }

    #[test]
    fn the_documents_success_message() {
        let granted = DateTime::parse_from_rfc3339("2025-11-17T22:30:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let m = GrantMessage {
            project: "openshift-crt-ephemeral-access",
            role: "projects/openshift-crt-ephemeral-access/roles/chat_bot_user",
            eligibility: &[EligibilityRule::Org("Hybrid Platforms".into())],
            granted_at: granted,
            expires_at: granted + chrono::Duration::days(7),
            now: granted + chrono::Duration::days(2),
            justification: "Need to debug CI infrastructure issues",
            resource_cleanup_days: Some(7),
            user_binding: None,
        };
        assert_eq!(
            m.render(),
            "Confirmed you are a member of the Hybrid Platforms organization. You have been granted access to project \"openshift-crt-ephemeral-access\".\n\n\
             You will have access to the project for the next 7 days (until 2025-11-24T22:30:00Z, 5 days from now).\n\n\
             You are responsible for deleting resources you create within this account, however, resources older than 7 days will be deleted automatically.\n\n\
             To use the service account key:\n1. Download the JSON file from Slack\n2. Set environment variable: export GOOGLE_APPLICATION_CREDENTIALS=/path/to/key.json\n3. Access will expire in 5 days\n\n\
             Justification: Need to debug CI infrastructure issues"
        );
    }
}
