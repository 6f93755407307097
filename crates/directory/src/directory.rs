//! [`OrgDirectory`]: the `Directory` port over the org index and Slack user groups.

use std::sync::Arc;

use access_core::ports::{Directory, DirectoryError};
use access_core::resource::EligibilityRule;
use access_core::subject::Subject;
use async_trait::async_trait;

use crate::org::OrgData;
use crate::slack_groups::SlackUserGroups;

/// Answers `org` rules from the org-data index and `slack_group` rules from Slack. A source that
/// is not configured, or an index that never loaded, answers [`DirectoryError::Unavailable`]
/// ("Organizational data service is not available"), so nothing is granted on a guess.
#[derive(Debug, Clone, Default)]
pub struct OrgDirectory {
    org: Option<Arc<OrgData>>,
    slack: Option<Arc<SlackUserGroups>>,
}

impl OrgDirectory {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_org_data(mut self, org: Arc<OrgData>) -> Self {
        self.org = Some(org);
        self
    }

    pub fn with_slack_groups(mut self, slack: Arc<SlackUserGroups>) -> Self {
        self.slack = Some(slack);
        self
    }

    pub fn org_data(&self) -> Option<&Arc<OrgData>> {
        self.org.as_ref()
    }

    pub fn slack_groups(&self) -> Option<&Arc<SlackUserGroups>> {
        self.slack.as_ref()
    }

    /// Membership of `org_or_team` (a team, org, pillar or team group of the index, by exact
    /// name, including the hierarchy): by Slack id, falling back to e-mail.
    pub fn is_member(
        &self,
        slack_id: &str,
        email: Option<&str>,
        org_or_team: &str,
    ) -> Result<bool, DirectoryError> {
        let org = self.org.as_ref().ok_or(DirectoryError::Unavailable)?;
        org.with_index(|idx| {
            let member = idx.is_member(slack_id, email, org_or_team);
            if !member && !idx.has_group(org_or_team) {
                // Almost always a typo in the resource's configuration: say so where operators look.
                tracing::warn!(
                    group = org_or_team,
                    "eligibility names a group the org data does not contain"
                );
            }
            member
        })
        .ok_or(DirectoryError::Unavailable)
    }
}

#[async_trait]
impl Directory for OrgDirectory {
    async fn satisfies(
        &self,
        subject: &Subject,
        rule: &EligibilityRule,
    ) -> Result<bool, DirectoryError> {
        match rule {
            EligibilityRule::Anyone => Ok(true),
            EligibilityRule::EmailDomain(domains) => Ok(subject.email.as_ref().is_some_and(|e| {
                domains
                    .iter()
                    .any(|d| d.trim_start_matches('@').eq_ignore_ascii_case(e.domain()))
            })),
            EligibilityRule::Org(name) => self.is_member(
                &subject.user_id,
                subject.email.as_ref().map(|e| e.as_str()),
                name,
            ),
            EligibilityRule::SlackGroup(group) => {
                let slack = self.slack.as_ref().ok_or(DirectoryError::Unavailable)?;
                slack
                    .is_member(group, &subject.user_id)
                    .await
                    .map_err(|e| DirectoryError::Failed(e.to_string()))
            }
        }
    }
}
