//! [`ResourceCatalog`]: the resources from configuration, looked up by name, and the refusal
//! (with the valid choices) for a name that is not offered.

use std::collections::BTreeMap;

use super::EngineError;
use crate::ids::ResourceId;
use crate::resource::Resource;

/// The resources from configuration.
#[derive(Debug, Clone, Default)]
pub struct ResourceCatalog {
    resources: BTreeMap<ResourceId, Resource>,
    /// Resources kept (`retired = true`) only so their remaining grants still end through
    /// their provider: never listed, never requestable.
    retired: BTreeMap<ResourceId, Resource>,
}

impl ResourceCatalog {
    /// A catalog offering `resources` (none retired).
    pub fn new(resources: impl IntoIterator<Item = Resource>) -> Self {
        Self {
            resources: resources.into_iter().map(|r| (r.id.clone(), r)).collect(),
            retired: BTreeMap::new(),
        }
    }

    /// Adds resources kept for revocation only.
    pub fn with_retired(mut self, retired: impl IntoIterator<Item = Resource>) -> Self {
        self.retired
            .extend(retired.into_iter().map(|r| (r.id.clone(), r)));
        self
    }

    /// The offered resource called `name`; `None` for an unknown, malformed or retired name.
    pub fn get(&self, name: &str) -> Option<&Resource> {
        let id = ResourceId::parse(name).ok()?;
        self.resources.get(&id)
    }

    /// A resource that may still end grants: an offered one or a retired one.
    pub fn get_for_revocation(&self, name: &str) -> Option<&Resource> {
        let id = ResourceId::parse(name).ok()?;
        self.resources.get(&id).or_else(|| self.retired.get(&id))
    }

    /// Every offered resource, sorted by name.
    pub fn all(&self) -> impl Iterator<Item = &Resource> {
        self.resources.values()
    }

    /// The names of the offered resources, sorted.
    pub fn names(&self) -> Vec<String> {
        self.resources.keys().map(|k| k.to_string()).collect()
    }

    /// The offered roles of resource `base` (`gcp-access` → `gcp-access:editor`,
    /// `gcp-access:viewer`); empty for a resource without roles.
    pub fn roles_of(&self, base: &str) -> Vec<String> {
        self.resources
            .keys()
            .filter(|k| k.role().is_some() && k.base() == base)
            .map(|k| k.to_string())
            .collect()
    }

    /// The refusal for a name that is not offered: when it names a resource with roles (bare,
    /// or with a role it does not have), the valid choices are that resource's roles.
    pub fn unknown(&self, name: &str) -> EngineError {
        let requested: String = name.trim().chars().take(64 * 2 + 1).collect();
        let base = requested
            .split_once(crate::ids::ROLE_SEPARATOR)
            .map_or(requested.as_str(), |(b, _)| b);
        let roles = self.roles_of(base);
        EngineError::UnknownResource {
            valid: if roles.is_empty() {
                self.names()
            } else {
                roles
            },
            requested,
        }
    }
}
