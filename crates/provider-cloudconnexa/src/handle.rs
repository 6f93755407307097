//! What a grant stores to be undone later ([`GrantHandle`]) and what it records before it
//! changes anything ([`GrantIntent`]). Both are stored as JSON by the engine; the tests pin it.

use std::fmt;

use access_core::ports::{ProviderError, decode_stored};
use serde::{Deserialize, Serialize};

/// What a grant did, stored by Gatehouse and handed back on revoke so revoke undoes exactly that.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantHandle {
    /// Handle format version.
    pub v: u32,
    /// The Cloud Connexa user given the membership.
    pub user_id: String,
    /// Their e-mail (the person's lock is keyed by it).
    pub email: String,
    /// The user group joined.
    pub group_id: String,
    /// Its name, for messages.
    pub group_name: String,
    /// The network the group gives access to.
    pub network: String,
    /// The Cloud Connexa user did not exist and this grant created it.
    pub user_created: bool,
    /// The group did not exist and this grant created it.
    pub group_created: bool,
    /// The user already had the group from outside Gatehouse (primary group, or a secondary
    /// membership no other live grant accounted for): revoke leaves it.
    pub group_was_present: bool,
    /// The membership was already there because another live grant added it: this grant shares
    /// it, and whichever revoke comes last removes it.
    #[serde(default)]
    pub shared: bool,
}

impl GrantHandle {
    /// The format version written into new handles.
    pub const VERSION: u32 = 1;

    /// Reads a stored handle that must be ours: `None` for null (a grant that never finished),
    /// an error for anything else that does not decode.
    pub fn decode(v: &serde_json::Value) -> Result<Option<Self>, ProviderError> {
        decode_stored("grant handle", v)
    }

    /// Reads a handle that may belong to another provider (the live grants of a person, whatever
    /// their resource): `None` when it is not one of ours.
    pub fn parse_if_ours(v: &serde_json::Value) -> Option<Self> {
        Self::deserialize(v).ok()
    }

    /// The JSON the engine stores.
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

/// What a grant is about to add, observed before it changes anything and recorded by the engine
/// (keyed by the grant) before the first grant call. A retried grant that finds the person in
/// the group adopts the membership as its own work when `member_before` is false; a revoke
/// without a handle removes the membership the intent names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantIntent {
    /// Intent format version.
    pub v: u32,
    /// The grant about to be provisioned.
    pub grant_id: access_core::GrantId,
    /// The person's e-mail.
    pub email: String,
    /// The group the grant will join.
    pub group_name: String,
    /// The network that group gives access to.
    pub network: String,
    /// A Cloud Connexa user with this e-mail existed before the grant.
    pub user_existed: bool,
    /// The user was already in the group before the grant (from outside, or another grant).
    pub member_before: bool,
}

impl GrantIntent {
    /// The format version written into new intents.
    pub const VERSION: u32 = 1;

    /// The JSON the engine stores.
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// Whether this intent is about this person and group.
    pub(crate) fn covers(&self, email: &str, group_name: &str) -> bool {
        self.email.eq_ignore_ascii_case(email) && self.group_name == group_name
    }
}

impl fmt::Display for GrantHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} in {} ({})",
            self.email, self.group_name, self.network
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle() -> GrantHandle {
        GrantHandle {
            v: 1,
            user_id: "u".into(),
            email: "a@b.co".into(),
            group_id: "g".into(),
            group_name: "n".into(),
            network: "net".into(),
            user_created: true,
            group_created: false,
            group_was_present: false,
            shared: false,
        }
    }

    #[test]
    fn handle_round_trips() {
        let h = handle();
        assert_eq!(GrantHandle::decode(&h.to_value()).unwrap(), Some(h.clone()));
        assert_eq!(GrantHandle::decode(&serde_json::Value::Null).unwrap(), None);
        assert_eq!(GrantHandle::parse_if_ours(&h.to_value()), Some(h));
        let gcp = serde_json::json!({"v": 1, "kind": "user_binding"});
        assert_eq!(GrantHandle::parse_if_ours(&gcp), None);
        let err = GrantHandle::decode(&gcp).unwrap_err();
        assert_eq!(err.code(), "provider_undecodable");
    }

    /// The stored JSON of handles and intents does not change with the code around them.
    #[test]
    fn stored_json_is_pinned() {
        assert_eq!(
            serde_json::to_string(&handle().to_value()).unwrap(),
            r#"{"email":"a@b.co","group_created":false,"group_id":"g","group_name":"n","group_was_present":false,"network":"net","shared":false,"user_created":true,"user_id":"u","v":1}"#
        );
        let grant_id: access_core::GrantId =
            serde_json::from_value(serde_json::json!("00000000-0000-0000-0000-000000000001"))
                .unwrap();
        let intent = GrantIntent {
            v: GrantIntent::VERSION,
            grant_id,
            email: "a@b.co".into(),
            group_name: "n".into(),
            network: "net".into(),
            user_existed: true,
            member_before: false,
        };
        assert_eq!(
            serde_json::to_string(&intent.to_value()).unwrap(),
            r#"{"email":"a@b.co","grant_id":"00000000-0000-0000-0000-000000000001","group_name":"n","member_before":false,"network":"net","user_existed":true,"v":1}"#
        );
    }
}
