//! Wire models of the Cloud Connexa v1 API (the fields Gatehouse uses; unknown fields are kept
//! where a read-modify-write must not lose them).

use serde::{Deserialize, Serialize};

/// One page of a list endpoint: `page` counts from 0, `size` is 1–1000.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    #[serde(default = "Vec::new")]
    pub content: Vec<T>,
    #[serde(default)]
    pub total_elements: u64,
    #[serde(default)]
    pub total_pages: u32,
    #[serde(default)]
    pub number_of_elements: u32,
    #[serde(default)]
    pub page: u32,
    #[serde(default)]
    pub size: u32,
}

/// A network (`NetworkResponse`, trimmed to what Gatehouse shows or checks).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Network {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub internet_access: Option<String>,
    #[serde(default)]
    pub egress: Option<bool>,
}

/// `OWNER | MEMBER | ADMIN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Role {
    Owner,
    #[default]
    Member,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "OWNER",
            Role::Member => "MEMBER",
            Role::Admin => "ADMIN",
        }
    }
}

/// `INVITED | ACTIVE | SUSPENDED | SUSPENDED_IDP`, plus anything newer the API may add (kept
/// verbatim so a PUT sends back exactly what was read).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum UserStatus {
    Invited,
    Active,
    Suspended,
    SuspendedIdp,
    Other(String),
}

impl From<String> for UserStatus {
    fn from(s: String) -> Self {
        match s.as_str() {
            "INVITED" => UserStatus::Invited,
            "ACTIVE" => UserStatus::Active,
            "SUSPENDED" => UserStatus::Suspended,
            "SUSPENDED_IDP" => UserStatus::SuspendedIdp,
            _ => UserStatus::Other(s),
        }
    }
}

impl From<UserStatus> for String {
    fn from(s: UserStatus) -> Self {
        match s {
            UserStatus::Invited => "INVITED".into(),
            UserStatus::Active => "ACTIVE".into(),
            UserStatus::Suspended => "SUSPENDED".into(),
            UserStatus::SuspendedIdp => "SUSPENDED_IDP".into(),
            UserStatus::Other(s) => s,
        }
    }
}

/// A user (`UserResponse`). `groupId` is the single primary group; `secondaryGroupIds` (API
/// v1.1.3+) is where Gatehouse adds and removes temporary memberships.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub id: String,
    #[serde(default)]
    pub first_name: Option<String>,
    #[serde(default)]
    pub last_name: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub group_id: Option<String>,
    #[serde(default)]
    pub secondary_group_ids: Vec<String>,
    #[serde(default)]
    pub status: Option<UserStatus>,
    #[serde(default)]
    pub role: Option<Role>,
    #[serde(default)]
    pub auth_type: Option<String>,
}

impl User {
    /// Case-insensitive e-mail match (the API keeps the case it was given).
    pub fn has_email(&self, email: &str) -> bool {
        self.email
            .as_deref()
            .is_some_and(|e| e.trim().eq_ignore_ascii_case(email.trim()))
    }

    /// Member of `group_id`, as primary or secondary group.
    pub fn in_group(&self, group_id: &str) -> bool {
        self.group_id.as_deref() == Some(group_id) || self.in_secondary_group(group_id)
    }

    pub fn in_secondary_group(&self, group_id: &str) -> bool {
        self.secondary_group_ids.iter().any(|g| g == group_id)
    }

    /// The full update body for this user as read, so a PUT changes nothing but what the caller
    /// then edits (whether the API clears omitted fields is unverified; never find out).
    pub fn to_update(&self) -> UserUpdate {
        UserUpdate {
            first_name: self.first_name.clone(),
            last_name: self.last_name.clone(),
            email: self.email.clone(),
            group_id: self.group_id.clone(),
            secondary_group_ids: self.secondary_group_ids.clone(),
            status: self.status.clone(),
            role: self.role,
        }
    }
}

/// `UserCreateRequest`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserCreate {
    pub first_name: String,
    pub last_name: String,
    pub username: String,
    pub email: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_id: Option<String>,
    #[serde(default)]
    pub secondary_group_ids: Vec<String>,
    pub role: Role,
}

/// `UserUpdateRequest` (no `username`; carries `status`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserUpdate {
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub email: Option<String>,
    pub group_id: Option<String>,
    pub secondary_group_ids: Vec<String>,
    pub status: Option<UserStatus>,
    pub role: Option<Role>,
}

/// A user group (`UserGroupResponse`); fields Gatehouse does not set are kept as read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserGroup {
    pub id: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internet_access: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_device: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_auth: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all_regions_included: Option<bool>,
    #[serde(default)]
    pub vpn_region_ids: Vec<String>,
    #[serde(default)]
    pub gateways_ids: Vec<String>,
}

/// `UserGroupRequest`. Only `name` is required by Gatehouse; the rest take Cloud Connexa's
/// defaults unless set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserGroupRequest {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub internet_access: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_device: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_auth: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub all_regions_included: Option<bool>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub vpn_region_ids: Vec<String>,
}

/// The token endpoint's answer (`OAuthResponse`).
#[derive(Clone, Deserialize)]
pub(crate) struct TokenResponse {
    pub access_token: String,
    #[serde(default)]
    pub expires_in: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_round_trips_and_update_keeps_everything() {
        let u: User = serde_json::from_value(serde_json::json!({
            "id": "u1", "firstName": "Jane", "lastName": "Doe", "username": "jane", "email": "Jane@Example.com",
            "groupId": "g0", "secondaryGroupIds": ["g1", "g2"], "status": "SUSPENDED_IDP", "role": "ADMIN",
            "authType": "SAML", "devices": [], "connectionStatus": "OFFLINE", "licensed": true
        }))
        .unwrap();
        assert!(u.has_email("jane@example.com"));
        assert!(u.in_group("g0") && u.in_secondary_group("g2") && !u.in_secondary_group("g0"));
        let body = serde_json::to_value(u.to_update()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"firstName": "Jane", "lastName": "Doe", "email": "Jane@Example.com",
                "groupId": "g0", "secondaryGroupIds": ["g1", "g2"], "status": "SUSPENDED_IDP", "role": "ADMIN"})
        );
        let odd: User =
            serde_json::from_value(serde_json::json!({"id": "u2", "status": "PENDING_SOMETHING"}))
                .unwrap();
        assert_eq!(
            odd.status,
            Some(UserStatus::Other("PENDING_SOMETHING".into()))
        );
        assert!(odd.secondary_group_ids.is_empty());
    }
}
