//! What the provider is configured with: [`ProviderConfig`] (client, network → group mapping,
//! cache lifetimes) and each resource's [`ResourceSettings`].

use std::collections::HashMap;
use std::time::Duration;

use access_core::Resource;
use access_core::ports::ProviderError;
use serde::{Deserialize, Serialize};

use crate::client::ClientConfig;
use crate::error::CloudConnexaError;
use crate::models::Role;

/// The environment variable holding the JSON object `{"network": "group name", …}`.
pub const ENV_NETWORK_GROUP_MAPPING: &str = "NETWORK_GROUP_MAPPING";

/// Everything the provider needs besides the resources.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    pub client: ClientConfig,
    /// `NETWORK_GROUP_MAPPING`: network name → user group name, used when a resource has no
    /// `group` setting. Unmapped networks use `{network}-users`.
    pub network_group_mapping: HashMap<String, String>,
    /// Role of users this provider creates when the resource sets none (default `MEMBER`).
    pub default_role: Role,
    /// How long the e-mail → user index from a full user scan is trusted (default 5 min). A miss
    /// always rescans, so a stale index can only cost a call, never a wrong answer.
    pub user_cache_ttl: Duration,
    /// How long the group-name → group index is trusted (default 10 min).
    pub group_cache_ttl: Duration,
    /// How long the network list is reused (default 60 s): `/vpn-access list` and `request`
    /// read it on every command, and the API allows very few calls.
    pub network_cache_ttl: Duration,
}

impl ProviderConfig {
    /// The defaults around `client`: no mapping, role `MEMBER`, the default cache TTLs.
    pub fn new(client: ClientConfig) -> Self {
        Self {
            client,
            network_group_mapping: HashMap::new(),
            default_role: Role::Member,
            user_cache_ttl: Duration::from_secs(300),
            group_cache_ttl: Duration::from_secs(600),
            network_cache_ttl: Duration::from_secs(60),
        }
    }

    /// Client settings from `CLOUDCONNEXA_*`, mapping from `NETWORK_GROUP_MAPPING` (optional),
    /// read through `get` (see [`ClientConfig::from_lookup`]).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, CloudConnexaError> {
        let mut cfg = Self::new(ClientConfig::from_lookup(&get)?);
        if let Some(raw) = get(ENV_NETWORK_GROUP_MAPPING) {
            cfg.network_group_mapping = parse_mapping(&raw)?;
        }
        Ok(cfg)
    }
}

/// Parses `NETWORK_GROUP_MAPPING` (a JSON object of strings; empty means none).
pub fn parse_mapping(raw: &str) -> Result<HashMap<String, String>, CloudConnexaError> {
    if raw.trim().is_empty() {
        return Ok(HashMap::new());
    }
    serde_json::from_str(raw).map_err(|e| {
        CloudConnexaError::Config(format!(
            "{ENV_NETWORK_GROUP_MAPPING} must be a JSON object of network name to group name: {e}"
        ))
    })
}

/// A resource's `settings` for this provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceSettings {
    /// The Cloud Connexa network name (required).
    pub network: String,
    /// The user group whose membership grants the access. Default:
    /// `NETWORK_GROUP_MAPPING[network]`, else `{network}-users`.
    #[serde(default)]
    pub group: Option<String>,
    /// Role of users created by a grant (`MEMBER`, `ADMIN`, `OWNER`; default `MEMBER`).
    #[serde(default)]
    pub role: Option<String>,
    /// E-mails that belong in the group without a grant (permanent members): never reported as
    /// drift, never removed by a repair.
    #[serde(default)]
    pub unmanaged_members: Vec<String>,
}

impl ResourceSettings {
    /// Decodes and checks a resource's settings (the provider does this once per resource).
    pub fn parse(resource: &Resource) -> Result<Self, ProviderError> {
        let s: ResourceSettings = serde_json::from_value(resource.settings.clone()).map_err(|e| {
            ProviderError::invalid_settings(format!(
                "resource '{}' has invalid Cloud Connexa settings (expected {{\"network\": \"…\", \"group\"?: \"…\", \"role\"?: \"MEMBER\"}}): {e}",
                resource.id
            ))
            .with_source(e)
        })?;
        if s.network.trim().is_empty() {
            return Err(ProviderError::invalid_settings(format!(
                "resource '{}': settings.network is empty",
                resource.id
            )));
        }
        if s.group.as_deref().is_some_and(|g| g.trim().is_empty()) {
            return Err(ProviderError::invalid_settings(format!(
                "resource '{}': settings.group is empty",
                resource.id
            )));
        }
        s.role()?;
        Ok(s)
    }

    /// The role of users a grant creates, if the resource sets one.
    pub fn role(&self) -> Result<Option<Role>, ProviderError> {
        match self.role.as_deref().map(|r| r.trim().to_ascii_uppercase()) {
            None => Ok(None),
            Some(r) if r == "MEMBER" => Ok(Some(Role::Member)),
            Some(r) if r == "ADMIN" => Ok(Some(Role::Admin)),
            Some(r) if r == "OWNER" => Ok(Some(Role::Owner)),
            Some(r) => Err(ProviderError::invalid_settings(format!(
                "unknown Cloud Connexa role '{r}' (MEMBER, ADMIN, OWNER)"
            ))),
        }
    }

    /// The group this resource manages.
    pub fn group_name(&self, mapping: &HashMap<String, String>) -> String {
        if let Some(g) = &self.group {
            return g.trim().to_string();
        }
        mapping
            .get(&self.network)
            .cloned()
            .unwrap_or_else(|| format!("{}-users", self.network))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_name_precedence() {
        let mut mapping = HashMap::new();
        mapping.insert("prod".to_string(), "prod-oncall".to_string());
        let s = |network: &str, group: Option<&str>| ResourceSettings {
            network: network.into(),
            group: group.map(Into::into),
            role: None,
            unmanaged_members: vec![],
        };
        assert_eq!(s("prod", Some("explicit")).group_name(&mapping), "explicit");
        assert_eq!(s("prod", None).group_name(&mapping), "prod-oncall");
        assert_eq!(
            s("dev-network", None).group_name(&mapping),
            "dev-network-users"
        );
    }

    #[test]
    fn mapping_parses() {
        assert_eq!(parse_mapping("").unwrap().len(), 0);
        assert_eq!(
            parse_mapping(r#"{"dev-network": "devs"}"#).unwrap()["dev-network"],
            "devs"
        );
        assert!(parse_mapping("[1]").is_err());
    }
}
