//! Drift between what Gatehouse believes (active grants) and what Cloud Connexa shows (group
//! members). Computing drift is pure; repairing it is
//! [`CloudConnexaProvider::remove_stray`](crate::CloudConnexaProvider::remove_stray) and
//! [`CloudConnexaProvider::restore_missing`](crate::CloudConnexaProvider::restore_missing),
//! which return the [`ProviderEvent`](access_core::ports::ProviderEvent)s to audit.

use std::collections::BTreeSet;

use access_core::ResourceId;
use access_core::ports::LiveAccess;
use serde::{Deserialize, Serialize};

/// What differs for one resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Drift {
    pub resource: ResourceId,
    pub group_name: String,
    /// Secondary memberships nobody holds an active grant for (and not listed as unmanaged).
    pub stray: Vec<LiveAccess>,
    /// E-mails of active grant holders who are not in the group.
    pub missing: Vec<String>,
}

impl Drift {
    pub fn is_clean(&self) -> bool {
        self.stray.is_empty() && self.missing.is_empty()
    }
}

fn norm(s: &str) -> String {
    s.trim().to_ascii_lowercase()
}

/// Compares. Members whose *primary* group is the managed group were put there by an
/// administrator, not by Gatehouse: they are never stray, and they count as present.
pub fn compute_drift(
    resource: ResourceId,
    group_name: String,
    active_holders: &[String],
    observed: &[LiveAccess],
    unmanaged: &[String],
) -> Drift {
    let active: BTreeSet<String> = active_holders
        .iter()
        .map(|h| norm(h))
        .filter(|h| !h.is_empty())
        .collect();
    let unmanaged: BTreeSet<String> = unmanaged.iter().map(|h| norm(h)).collect();
    let present: BTreeSet<String> = observed.iter().map(|o| norm(&o.holder)).collect();
    let stray = observed
        .iter()
        .filter(|o| {
            let h = norm(&o.holder);
            let primary = o
                .details
                .get("primary")
                .and_then(|p| p.as_bool())
                .unwrap_or(false);
            !primary && !active.contains(&h) && !unmanaged.contains(&h)
        })
        .cloned()
        .collect();
    let missing = active
        .iter()
        .filter(|h| !present.contains(*h))
        .cloned()
        .collect();
    Drift {
        resource,
        group_name,
        stray,
        missing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn member(email: &str, primary: bool) -> LiveAccess {
        LiveAccess {
            holder: email.into(),
            details: json!({"primary": primary, "user_id": email}),
        }
    }

    #[test]
    fn finds_stray_and_missing() {
        let observed = vec![
            member("held@x.io", false),
            member("stray@x.io", false),
            member("admin@x.io", true),
            member("permanent@x.io", false),
        ];
        let d = compute_drift(
            ResourceId::parse("dev").unwrap(),
            "dev-users".into(),
            &["Held@X.io".into(), "gone@x.io".into(), "admin@x.io".into()],
            &observed,
            &["PERMANENT@x.io".into()],
        );
        assert_eq!(
            d.stray
                .iter()
                .map(|s| s.holder.as_str())
                .collect::<Vec<_>>(),
            vec!["stray@x.io"]
        );
        assert_eq!(d.missing, vec!["gone@x.io".to_string()]);
        assert!(!d.is_clean());
    }
}
