//! The resources of the fake Cloud Connexa API as it stores and serialises them (users, user
//! groups, networks) and the record of a call.

use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FakeUser {
    pub id: String,
    pub first_name: String,
    pub last_name: String,
    pub username: String,
    pub email: String,
    pub group_id: String,
    pub secondary_group_ids: Vec<String>,
    pub status: String,
    pub role: String,
    pub auth_type: String,
}

/// A user group (serialised as `UserGroupResponse`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FakeGroup {
    pub id: String,
    pub name: String,
    pub internet_access: String,
    pub max_device: u32,
    pub connect_auth: String,
    pub all_regions_included: bool,
    pub vpn_region_ids: Vec<String>,
    pub gateways_ids: Vec<String>,
    pub system_subnets: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FakeNetwork {
    pub id: String,
    pub name: String,
    pub description: String,
    pub egress: bool,
    pub internet_access: String,
    pub routes: Vec<Value>,
    pub connectors: Vec<Value>,
    pub system_subnets: Vec<String>,
    pub tunneling_protocol: String,
    pub gateways_ids: Vec<String>,
}

/// One call the fake answered.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub method: String,
    pub path: String,
    /// The query string with `client_secret` masked.
    pub query: String,
    pub status: u16,
    pub at: Instant,
    /// The JSON body, when there was one.
    pub body: Option<Value>,
    /// How a token call sent its credentials: `query`, `basic`, `json`, `form`, or empty.
    pub credentials_via: String,
}

pub(super) fn new_group(id: String, name: String) -> FakeGroup {
    FakeGroup {
        id,
        name,
        internet_access: "SPLIT_TUNNEL_ON".into(),
        max_device: 3,
        connect_auth: "NO_AUTH".into(),
        all_regions_included: true,
        vpn_region_ids: Vec::new(),
        gateways_ids: Vec::new(),
        system_subnets: Vec::new(),
    }
}
