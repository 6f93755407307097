//! The organisational data index: cyborg-data's `comprehensive_index_dump.json`, parsed once into
//! maps so every question asked afterwards is a couple of hash lookups.
//!
//! The subset of the format read here is written down in `docs/eligibility.md`. In short:
//! `lookups.employees` (people), `lookups.{teams,orgs,pillars,team_groups}` (entities and their
//! `parent`), `indexes.membership.membership_index` (uid → direct memberships),
//! `indexes.membership.relationship_index` (older dumps: precomputed ancestry) and
//! `indexes.slack_id_mappings.slack_uid_to_uid`. Everything else is skipped.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{MapAccess, Visitor};

/// Why a dump could not be turned into an index.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("org data is not valid JSON for the index format: {0}")]
    Json(#[from] serde_json::Error),
    /// Parsed, but lacks what membership needs (the same check cyborg-data makes).
    #[error("org data is incomplete: {0}")]
    Incomplete(&'static str),
}

/// One person of the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    /// The directory's own id (`uid`), the key of `lookups.employees`.
    pub uid: String,
    pub full_name: Option<String>,
    /// Lower-cased.
    pub email: Option<String>,
    pub slack_uid: Option<String>,
    /// Interned ids of every entity this person belongs to, directly or through the hierarchy;
    /// sorted, so membership is a binary search over a handful of numbers.
    groups: Box<[u32]>,
}

/// Figures about a loaded index, for logs, `/readyz` and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexStats {
    pub people: usize,
    pub people_with_slack_id: usize,
    pub people_with_email: usize,
    /// Distinct entity names (teams, orgs, pillars, team groups).
    pub groups: usize,
    /// E-mail addresses shared by several people: left out of the e-mail lookup, because
    /// answering for the wrong person is worse than not answering.
    pub ambiguous_emails: usize,
    /// `metadata.generated_at` (or `generation_timestamp`), as written by the generator.
    pub generated_at: Option<String>,
    pub data_version: Option<String>,
}

/// The parsed index. Immutable: a reload builds a new one and swaps it in whole.
pub struct OrgIndex {
    people: Vec<Person>,
    by_uid: HashMap<String, u32>,
    by_slack: HashMap<String, u32>,
    by_email: HashMap<String, u32>,
    group_ids: HashMap<String, u32>,
    group_names: Vec<String>,
    stats: IndexStats,
}

impl fmt::Debug for OrgIndex {
    // The index holds every person's e-mail: Debug shows its size, never its content.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OrgIndex")
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl OrgIndex {
    /// Parses a `comprehensive_index_dump.json` document.
    pub fn from_json(bytes: &[u8]) -> Result<Self, IndexError> {
        let raw: RawData<'_> = serde_json::from_slice(bytes)?;
        Self::build(raw)
    }

    pub fn stats(&self) -> &IndexStats {
        &self.stats
    }

    pub fn len(&self) -> usize {
        self.people.len()
    }

    pub fn is_empty(&self) -> bool {
        self.people.is_empty()
    }

    pub fn person_by_uid(&self, uid: &str) -> Option<&Person> {
        self.by_uid.get(uid).map(|&i| &self.people[i as usize])
    }

    pub fn person_by_slack_id(&self, slack_id: &str) -> Option<&Person> {
        self.by_slack
            .get(slack_id)
            .map(|&i| &self.people[i as usize])
    }

    /// Case-insensitive, as cyborg-data's `GetEmployeeByEmail`.
    pub fn person_by_email(&self, email: &str) -> Option<&Person> {
        let email = email.trim();
        let i = if email.bytes().any(|b| b.is_ascii_uppercase()) {
            self.by_email.get(&email.to_ascii_lowercase())
        } else {
            self.by_email.get(email)
        };
        i.map(|&i| &self.people[i as usize])
    }

    /// Is there a team, org, pillar or team group of this name?
    pub fn has_group(&self, name: &str) -> bool {
        self.group_ids.contains_key(name)
    }

    /// Does `person` belong to the entity `group` (a team, org, pillar or team group, matched by
    /// exact name), directly or because one of their teams sits under it?
    pub fn person_in_group(&self, person: &Person, group: &str) -> bool {
        match self.group_ids.get(group) {
            Some(id) => person.groups.binary_search(id).is_ok(),
            None => false,
        }
    }

    /// The GCP document's check: by Slack id first; when that does not confirm membership (an
    /// unknown id, as in a staging workspace whose ids differ), by e-mail.
    pub fn is_member(&self, slack_id: &str, email: Option<&str>, group: &str) -> bool {
        let Some(&gid) = self.group_ids.get(group) else {
            return false;
        };
        let holds = |p: &Person| p.groups.binary_search(&gid).is_ok();
        if self.person_by_slack_id(slack_id).is_some_and(holds) {
            return true;
        }
        email
            .and_then(|e| self.person_by_email(e))
            .is_some_and(holds)
    }

    /// Every entity `person` belongs to, directly or through the hierarchy, in no set order.
    pub fn groups_of<'a>(&'a self, person: &'a Person) -> impl Iterator<Item = &'a str> + 'a {
        person
            .groups
            .iter()
            .map(|&g| self.group_names[g as usize].as_str())
    }

    fn build(raw: RawData<'_>) -> Result<Self, IndexError> {
        let RawData {
            metadata,
            lookups,
            indexes,
        } = raw;
        if lookups.employees.0.is_empty() {
            return Err(IndexError::Incomplete("missing lookups.employees"));
        }
        if indexes.membership.membership_index.0.is_empty() {
            return Err(IndexError::Incomplete(
                "missing indexes.membership.membership_index",
            ));
        }

        let mut b = Builder::default();
        b.add_entities(Kind::Team, &lookups.teams);
        b.add_entities(Kind::Org, &lookups.orgs);
        b.add_entities(Kind::Pillar, &lookups.pillars);
        b.add_entities(Kind::TeamGroup, &lookups.team_groups);
        if let Some(rel) = &indexes.membership.relationship_index {
            b.add_relationships(rel);
        }

        let capacity = lookups.employees.0.len();
        let mut people = People {
            people: Vec::with_capacity(capacity),
            by_uid: HashMap::with_capacity(capacity),
        };
        for (key, e) in &lookups.employees.0 {
            // The map key is the uid cyborg-data looks people up by; `uid` inside repeats it.
            let i = people.index(key.as_str()) as usize;
            let p = &mut people.people[i];
            p.full_name = text(&e.full_name).map(str::to_owned);
            p.email = text(&e.email).map(|s| {
                if s.bytes().any(|c| c.is_ascii_uppercase()) {
                    s.to_ascii_lowercase()
                } else {
                    s.to_owned()
                }
            });
            p.slack_uid = text(&e.slack_uid).map(str::to_owned);
        }

        let mut groups: Vec<u32> = Vec::new();
        for (uid, entries) in &indexes.membership.membership_index.0 {
            let i = people.index(uid.as_str()) as usize;
            groups.clear();
            for m in entries {
                let Some(name) = text(&m.name) else { continue };
                let id = b.intern(name);
                groups.push(id);
                let kind = text(&m.kind).map(Kind::parse).unwrap_or(Kind::Other);
                groups.extend_from_slice(b.ancestors(kind, id));
            }
            groups.sort_unstable();
            groups.dedup();
            people.people[i].groups = groups.as_slice().into();
        }

        let by_slack = people.slack_ids(indexes.slack_id_mappings.as_ref());
        let People { mut people, by_uid } = people;
        let by_slack = fill_slack_ids(&mut people, by_slack);
        let (by_email, ambiguous) = unique_emails(&people);

        let stats = IndexStats {
            people: people.len(),
            people_with_slack_id: by_slack.len(),
            people_with_email: people.iter().filter(|p| p.email.is_some()).count(),
            groups: b.names.len(),
            ambiguous_emails: ambiguous,
            generated_at: metadata
                .generated_at
                .or(metadata.generation_timestamp)
                .and_then(scalar_text),
            data_version: metadata.data_version.and_then(scalar_text),
        };
        Ok(Self {
            people,
            by_uid,
            by_slack,
            by_email,
            group_ids: b.ids,
            group_names: b.names,
            stats,
        })
    }
}

impl People {
    /// Slack ids from the explicit mapping, which is what cyborg-data uses.
    fn slack_ids(&mut self, mappings: Option<&RawSlackMappings<'_>>) -> HashMap<String, u32> {
        let mut by_slack: HashMap<String, u32> = HashMap::new();
        if let Some(m) = mappings {
            by_slack.reserve(m.slack_uid_to_uid.0.len());
            for (slack, uid) in &m.slack_uid_to_uid.0 {
                if slack.as_str().is_empty() || uid.as_str().is_empty() {
                    continue;
                }
                let i = self.index(uid.as_str());
                by_slack.insert(slack.as_str().to_owned(), i);
            }
        }
        by_slack
    }
}

/// An employee's own `slack_uid` fills in ids the mapping lacks; a person the mapping names gets
/// that id as theirs.
fn fill_slack_ids(
    people: &mut [Person],
    mut by_slack: HashMap<String, u32>,
) -> HashMap<String, u32> {
    for (i, p) in people.iter().enumerate() {
        if let Some(s) = p
            .slack_uid
            .as_ref()
            .filter(|s| !by_slack.contains_key(s.as_str()))
        {
            by_slack.insert(s.clone(), i as u32);
        }
    }
    for (slack, &i) in &by_slack {
        let p = &mut people[i as usize];
        if p.slack_uid.is_none() {
            p.slack_uid = Some(slack.clone());
        }
    }
    by_slack
}

/// People by e-mail, leaving out addresses several people share (and how many those are).
fn unique_emails(people: &[Person]) -> (HashMap<String, u32>, usize) {
    let mut by_email: HashMap<String, u32> = HashMap::with_capacity(people.len());
    let mut ambiguous: HashSet<String> = HashSet::new();
    for (i, p) in people.iter().enumerate() {
        let Some(e) = &p.email else { continue };
        if by_email.insert(e.clone(), i as u32).is_some() {
            ambiguous.insert(e.clone());
        }
    }
    for e in &ambiguous {
        by_email.remove(e);
    }
    if !ambiguous.is_empty() {
        tracing::warn!(
            count = ambiguous.len(),
            "org data: e-mail addresses shared by several people are not used for lookups"
        );
    }
    (by_email, ambiguous.len())
}

/// People by uid while building: people named only by the membership index or the Slack
/// mapping get a bare record, so they can still be answered for (as cyborg-data does).
struct People {
    people: Vec<Person>,
    by_uid: HashMap<String, u32>,
}

impl People {
    fn index(&mut self, uid: &str) -> u32 {
        if let Some(&i) = self.by_uid.get(uid) {
            return i;
        }
        let i = self.people.len() as u32;
        self.people.push(Person {
            uid: uid.to_owned(),
            full_name: None,
            email: None,
            slack_uid: None,
            groups: Box::new([]),
        });
        self.by_uid.insert(uid.to_owned(), i);
        i
    }
}

/// A present, non-blank string.
fn text<'a>(s: &'a Option<Str<'_>>) -> Option<&'a str> {
    s.as_ref()
        .map(|s| s.as_str().trim())
        .filter(|s| !s.is_empty())
}

fn scalar_text(v: serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Entity kinds of the hierarchy. Names are unique within a kind, not across kinds (a team and
/// its team group may share a name), so the hierarchy walk keys nodes by (kind, name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Team,
    Org,
    Pillar,
    TeamGroup,
    /// A type this crate does not know: resolved by name, as cyborg-data's `getEntityType`.
    Other,
}

impl Kind {
    fn parse(s: &str) -> Self {
        let s = s.trim();
        let is = |name: &str| s.eq_ignore_ascii_case(name);
        if is("team") || is("teams") {
            Kind::Team
        } else if is("org") || is("orgs") || is("organization") || is("organisation") {
            Kind::Org
        } else if is("pillar") || is("pillars") {
            Kind::Pillar
        } else if is("team_group") || is("team_groups") || is("teamgroup") || is("team-group") {
            Kind::TeamGroup
        } else {
            Kind::Other
        }
    }
}

const KIND_ORDER: [Kind; 4] = [Kind::Team, Kind::Org, Kind::Pillar, Kind::TeamGroup];

/// A node of the hierarchy: (kind, interned name).
type Node = (Kind, u32);

#[derive(Default)]
struct Builder {
    ids: HashMap<String, u32>,
    names: Vec<String>,
    /// Node → parent (kind as written, name).
    parents: HashMap<Node, Option<Node>>,
    /// Older dumps: node → ancestor names precomputed by the generator.
    ancestry: HashMap<Node, Vec<u32>>,
    /// Memoised closure: node → interned ancestors (not including the node itself).
    closure: HashMap<Node, Vec<u32>>,
}

impl Builder {
    fn intern(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = self.names.len() as u32;
        self.names.push(name.to_owned());
        self.ids.insert(name.to_owned(), id);
        id
    }

    fn add_entities(&mut self, kind: Kind, entities: &Pairs<Str<'_>, RawEntity<'_>>) {
        for (name, e) in &entities.0 {
            let id = self.intern(name.as_str());
            let parent = e.parent.as_ref().and_then(|p| {
                let pname = text(&p.name)?;
                Some((
                    text(&p.kind).map(Kind::parse).unwrap_or(Kind::Other),
                    self.intern(pname),
                ))
            });
            self.parents.insert((kind, id), parent);
        }
    }

    fn add_relationships(&mut self, rel: &HashMap<String, HashMap<String, RawRelationship>>) {
        for (category, entities) in rel {
            let kind = Kind::parse(category);
            for (name, r) in entities {
                let id = self.intern(name);
                let names: Vec<u32> = r
                    .ancestry
                    .values()
                    .flatten()
                    .filter(|n| !n.is_empty())
                    .map(|n| self.intern(n))
                    .collect();
                self.ancestry.entry((kind, id)).or_default().extend(names);
            }
        }
    }

    /// The node as the hierarchy knows it: `kind` if such an entity exists, else the first kind
    /// that has an entity of this name.
    fn resolve(&self, kind: Kind, id: u32) -> Option<Node> {
        let exists =
            |k: Kind| self.parents.contains_key(&(k, id)) || self.ancestry.contains_key(&(k, id));
        if kind != Kind::Other && exists(kind) {
            return Some((kind, id));
        }
        KIND_ORDER.into_iter().find(|&k| exists(k)).map(|k| (k, id))
    }

    /// Interned names of every ancestor of (kind, id), walking `parent` links to the root
    /// (cycle-safe) and adding any precomputed ancestry.
    fn ancestors(&mut self, kind: Kind, id: u32) -> &[u32] {
        let Some(node) = self.resolve(kind, id) else {
            return &[];
        };
        if !self.closure.contains_key(&node) {
            let mut out: Vec<u32> = Vec::new();
            let mut visited: HashSet<Node> = HashSet::new();
            visited.insert(node);
            let mut current = Some(node);
            while let Some(n) = current.take() {
                if let Some(names) = self.ancestry.get(&n) {
                    out.extend_from_slice(names);
                }
                let Some(Some((pkind, pid))) = self.parents.get(&n).copied() else {
                    continue;
                };
                out.push(pid);
                current = self
                    .resolve(pkind, pid)
                    .filter(|next| visited.insert(*next));
            }
            out.sort_unstable();
            out.dedup();
            self.closure.insert(node, out);
        }
        self.closure.get(&node).map(Vec::as_slice).unwrap_or(&[])
    }
}

// ------------------------------------------------------------------------------------------------
// The subset of the dump that is read. Unknown fields are skipped by serde. Strings borrow from
// the input where they can and the large maps are read as lists of pairs: a 100,000-person dump
// loads without a heap allocation per field it does not keep.

#[derive(Deserialize)]
struct RawData<'a> {
    #[serde(default)]
    metadata: RawMetadata,
    #[serde(default, borrow)]
    lookups: RawLookups<'a>,
    #[serde(default, borrow)]
    indexes: RawIndexes<'a>,
}

#[derive(Deserialize, Default)]
struct RawMetadata {
    #[serde(default)]
    generated_at: Option<serde_json::Value>,
    #[serde(default)]
    generation_timestamp: Option<serde_json::Value>,
    #[serde(default)]
    data_version: Option<serde_json::Value>,
}

#[derive(Deserialize, Default)]
struct RawLookups<'a> {
    #[serde(default, borrow)]
    employees: Pairs<Str<'a>, RawEmployee<'a>>,
    #[serde(default, borrow)]
    teams: Pairs<Str<'a>, RawEntity<'a>>,
    #[serde(default, borrow)]
    orgs: Pairs<Str<'a>, RawEntity<'a>>,
    #[serde(default, borrow)]
    pillars: Pairs<Str<'a>, RawEntity<'a>>,
    #[serde(default, borrow)]
    team_groups: Pairs<Str<'a>, RawEntity<'a>>,
}

#[derive(Deserialize)]
struct RawEmployee<'a> {
    #[serde(default, borrow)]
    full_name: Option<Str<'a>>,
    #[serde(default, borrow)]
    email: Option<Str<'a>>,
    #[serde(default, borrow)]
    slack_uid: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct RawEntity<'a> {
    #[serde(default, borrow)]
    parent: Option<RawParent<'a>>,
}

#[derive(Deserialize)]
struct RawParent<'a> {
    #[serde(default, borrow)]
    name: Option<Str<'a>>,
    #[serde(default, rename = "type", borrow)]
    kind: Option<Str<'a>>,
}

#[derive(Deserialize, Default)]
struct RawIndexes<'a> {
    #[serde(default, borrow)]
    membership: RawMembership<'a>,
    #[serde(default, borrow)]
    slack_id_mappings: Option<RawSlackMappings<'a>>,
}

#[derive(Deserialize, Default)]
struct RawMembership<'a> {
    #[serde(default, borrow)]
    membership_index: Pairs<Str<'a>, Vec<RawMembershipInfo<'a>>>,
    #[serde(default)]
    relationship_index: Option<HashMap<String, HashMap<String, RawRelationship>>>,
}

#[derive(Deserialize)]
struct RawMembershipInfo<'a> {
    #[serde(default, borrow)]
    name: Option<Str<'a>>,
    #[serde(default, rename = "type", borrow)]
    kind: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct RawRelationship {
    #[serde(default)]
    ancestry: HashMap<String, Vec<String>>,
}

#[derive(Deserialize)]
struct RawSlackMappings<'a> {
    #[serde(default, borrow)]
    slack_uid_to_uid: Pairs<Str<'a>, Str<'a>>,
}

/// A string borrowed from the input when it has no escapes, owned otherwise.
struct Str<'a>(Cow<'a, str>);

impl Str<'_> {
    fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Str<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: serde::de::Error>(
                self,
                v: &'de str,
            ) -> Result<Self::Value, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V(PhantomData))
    }
}

/// A JSON object read in document order into a vector (no hashing of keys we only iterate);
/// `null` reads as empty, as Python generators emit it for empty maps now and then.
struct Pairs<K, V>(Vec<(K, V)>);

impl<K, V> Default for Pairs<K, V> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<'de, K: Deserialize<'de>, V: Deserialize<'de>> Deserialize<'de> for Pairs<K, V> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Map<K, V>(PhantomData<(K, V)>);
        impl<'de, K: Deserialize<'de>, V: Deserialize<'de>> Visitor<'de> for Map<K, V> {
            type Value = Pairs<K, V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
                Ok(Pairs::default())
            }
            fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
                Ok(Pairs::default())
            }
            fn visit_some<D2: serde::Deserializer<'de>>(
                self,
                d: D2,
            ) -> Result<Self::Value, D2::Error> {
                d.deserialize_map(self)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut v = Vec::with_capacity(map.size_hint().unwrap_or(0).min(1 << 20));
                while let Some(entry) = map.next_entry()? {
                    v.push(entry);
                }
                Ok(Pairs(v))
            }
        }
        d.deserialize_option(Map(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn name_collision_between_team_and_team_group_still_reaches_the_org() {
        // cyborg-data's regression: keying the walk by name alone stops at the team group that
        // shares the team's name and never reaches the org.
        let doc = serde_json::json!({
            "lookups": {
                "employees": {"euser": {"uid": "euser", "email": "e@example.com"}},
                "teams": {"shared": {"name": "shared", "parent": {"name": "shared", "type": "team_group"}}},
                "team_groups": {"shared": {"name": "shared", "parent": {"name": "acme", "type": "org"}}},
                "orgs": {"acme": {"name": "acme"}}
            },
            "indexes": {"membership": {"membership_index": {"euser": [{"name": "shared", "type": "team"}]}}}
        });
        let idx = OrgIndex::from_json(doc.to_string().as_bytes()).unwrap();
        assert!(idx.is_member("nobody", Some("E@example.com"), "acme"));
    }

    #[test]
    fn parent_cycles_terminate() {
        let doc = serde_json::json!({
            "lookups": {
                "employees": {"a": {"uid": "a"}},
                "teams": {"t": {"parent": {"name": "o1", "type": "org"}}},
                "orgs": {"o1": {"parent": {"name": "o2", "type": "org"}}, "o2": {"parent": {"name": "o1", "type": "org"}}}
            },
            "indexes": {
                "membership": {"membership_index": {"a": [{"name": "t", "type": "team"}]}},
                "slack_id_mappings": {"slack_uid_to_uid": {"U1": "a"}}
            }
        });
        let idx = OrgIndex::from_json(doc.to_string().as_bytes()).unwrap();
        assert!(idx.is_member("U1", None, "o2"));
        assert!(idx.is_member("U1", None, "o1"));
        assert!(!idx.is_member("U1", None, "elsewhere"));
    }

    #[test]
    fn escaped_strings_and_null_maps() {
        // Python's json.dump escapes non-ASCII by default: such strings cannot be borrowed.
        let doc = r#"{
            "lookups": {
                "employees": {"j\u00f8rn": {"full_name": "J\u00f8rn \"JJ\" Berg", "email": "J\u00F8rn@Example.com", "slack_uid": null}},
                "teams": {"R\u0026D": {"parent": {"name": "Acme \u0026 Co", "type": "Organization"}}},
                "orgs": {"Acme & Co": {"parent": null}},
                "pillars": null
            },
            "indexes": {
                "membership": {"membership_index": {"jørn": [{"name": "R&D", "type": "team"}]}},
                "slack_id_mappings": {"slack_uid_to_uid": null}
            }
        }"#;
        let idx = OrgIndex::from_json(doc.as_bytes()).unwrap();
        let p = idx.person_by_uid("jørn").unwrap();
        assert_eq!(p.full_name.as_deref(), Some("Jørn \"JJ\" Berg"));
        assert!(idx.is_member("U0", Some("j\u{f8}rn@example.com"), "Acme & Co"));
        assert_eq!(idx.stats().people_with_slack_id, 0);
    }

    #[test]
    fn empty_documents_are_refused() {
        assert!(matches!(
            OrgIndex::from_json(b"{}"),
            Err(IndexError::Incomplete(_))
        ));
        assert!(matches!(
            OrgIndex::from_json(b"<html>"),
            Err(IndexError::Json(_))
        ));
    }
}
