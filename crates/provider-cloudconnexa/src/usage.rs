//! Who else needs a group membership. Gatehouse keeps at most one live grant per (person,
//! resource), but two resources may map to the same Cloud Connexa group; revoking one of them
//! must not take away the membership the other still grants. The provider asks a [`GroupUsage`]
//! before it removes a membership (and when it finds one already present at grant time).

use std::fmt;

use access_core::GrantId;
use access_core::Subject;
use access_core::ports::{GrantFilter, ProviderError, SharedStore};
use async_trait::async_trait;

use crate::handle::GrantHandle;

/// "Does a live grant other than `except` still need group `group_id` for user `user_id`?"
#[derive(Debug, Clone)]
pub struct GroupUsageQuery {
    /// The grant being granted or revoked (never counts as "another").
    pub except: GrantId,
    pub subject: Subject,
    /// Cloud Connexa user id.
    pub user_id: String,
    pub group_id: String,
    pub group_name: String,
}

#[async_trait]
pub trait GroupUsage: Send + Sync + fmt::Debug + 'static {
    async fn still_needed(&self, query: &GroupUsageQuery) -> Result<bool, ProviderError>;
}

/// The default: no other grant ever shares a group.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoOtherUsers;

#[async_trait]
impl GroupUsage for NoOtherUsers {
    async fn still_needed(&self, _query: &GroupUsageQuery) -> Result<bool, ProviderError> {
        Ok(false)
    }
}

/// Answers from the Gatehouse store: another live grant of the same person whose handle names
/// the same Cloud Connexa user and group.
///
/// A grant still provisioning has no handle yet and is not seen; the in-process lock per person
/// orders grants and revokes of one person within one server, and reconciliation repairs the
/// rare cross-replica race.
#[derive(Debug, Clone)]
pub struct StoreGroupUsage {
    store: SharedStore,
}

impl StoreGroupUsage {
    pub fn new(store: SharedStore) -> Self {
        Self { store }
    }
}

/// Whether any of `handles` (of live grants other than `except`) holds the queried membership.
pub fn handles_need_group<'a>(
    query: &GroupUsageQuery,
    handles: impl IntoIterator<Item = (GrantId, &'a serde_json::Value)>,
) -> bool {
    handles
        .into_iter()
        .filter(|(id, _)| *id != query.except)
        .any(|(_, v)| {
            GrantHandle::parse_if_ours(v)
                .is_some_and(|h| h.user_id == query.user_id && h.group_id == query.group_id)
        })
}

#[async_trait]
impl GroupUsage for StoreGroupUsage {
    async fn still_needed(&self, query: &GroupUsageQuery) -> Result<bool, ProviderError> {
        let filter = GrantFilter {
            live_only: true,
            subject: Some(query.subject.key()),
            limit: Some(1000),
            ..Default::default()
        };
        let grants = self.store.grants(&filter).await.map_err(|e| {
            ProviderError::transient(format!("cannot read live grants: {e}")).with_source(e)
        })?;
        Ok(handles_need_group(
            query,
            grants.iter().map(|g| (g.id, &g.provider_handle)),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_other_grants_with_the_same_membership_count() {
        let me = GrantId::new();
        let other = GrantId::new();
        let q = GroupUsageQuery {
            except: me,
            subject: Subject {
                team_id: "T".into(),
                user_id: "U".into(),
                email: None,
                name: String::new(),
            },
            user_id: "u1".into(),
            group_id: "g1".into(),
            group_name: "dev".into(),
        };
        let handle = |user: &str, group: &str| {
            serde_json::json!({"v": 1, "user_id": user, "email": "a@b.co", "group_id": group, "group_name": "dev",
                "network": "n", "user_created": false, "group_created": false, "group_was_present": false})
        };
        let same = handle("u1", "g1");
        let other_group = handle("u1", "g2");
        assert!(
            !handles_need_group(&q, [(me, &same)]),
            "the grant itself does not count"
        );
        assert!(handles_need_group(&q, [(me, &same), (other, &same)]));
        assert!(!handles_need_group(&q, [(other, &other_group)]));
        assert!(!handles_need_group(&q, [(other, &serde_json::Value::Null)]));
    }
}
