//! IAM v1 service-account keys of the fake Google Cloud: create (a key file usable against the
//! fake's token endpoint, the 10-keys quota, the organisation policy that forbids keys), list
//! (with the system-managed key unless filtered) and delete.

use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use super::GcpOp;
use super::calls::{google_error, google_error_details, handle, ok_json};
use super::keys::{OTHER_KEY_PEM, key_file_json, key_name, public_key_der};
use super::service_accounts::{find_sa, no_project, sa_missing};
use super::state::{GcpState, Key, Shared};

/// `validAfterTime` and friends: RFC 3339 with milliseconds, as IAM writes them.
fn millis(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub(super) async fn create_key(
    State(state): State<Shared>,
    Path((project, sa)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let path = format!("/v1/projects/{project}/serviceAccounts/{sa}/keys");
    handle(&state, GcpOp::CreateKey, &path, &headers, |st| {
        create(st, &project, &sa)
    })
}

fn create(st: &mut GcpState, project: &str, sa: &str) -> Response {
    let window = st.not_found_window;
    let forbid = st.forbid_keys;
    let quota = st.key_quota;
    let token_uri = format!("{}/token", st.base_url);
    let Some(p) = st.projects.get_mut(project) else {
        return no_project(project);
    };
    let Some(acc) = find_sa(p, sa, window) else {
        return sa_missing(sa);
    };
    if forbid {
        return google_error_details(
            400,
            "FAILED_PRECONDITION",
            "Key creation is not allowed on this service account.",
            json!([{"@type": "type.googleapis.com/google.rpc.PreconditionFailure",
                    "violations": [{"type": "constraints/iam.disableServiceAccountKeyCreation",
                                    "subject": format!("projects/{project}"),
                                    "description": "Key creation is not allowed on this service account."}]}]),
        );
    }
    if acc.keys.len() >= quota {
        return google_error(400, "FAILED_PRECONDITION", "Precondition check failed.");
    }
    let id = hex::encode(&uuid::Uuid::new_v4().as_bytes()[..])
        + &hex::encode(&uuid::Uuid::new_v4().as_bytes()[..4]);
    let now = chrono::Utc::now();
    let file = key_file_json(&acc.email, &id, OTHER_KEY_PEM, &token_uri);
    acc.keys.push(Key {
        id: id.clone(),
        valid_after: now,
    });
    let email = acc.email.clone();
    let out = json!({
        "name": key_name(project, &email, &id),
        "privateKeyType": "TYPE_GOOGLE_CREDENTIALS_FILE",
        "privateKeyData": STANDARD.encode(file),
        "validAfterTime": millis(&now),
        "validBeforeTime": "9999-12-31T23:59:59Z",
        "keyAlgorithm": "KEY_ALG_RSA_2048",
        "keyOrigin": "GOOGLE_PROVIDED",
        "keyType": "USER_MANAGED",
    });
    st.signing_keys
        .entry(email)
        .or_default()
        .push((id, public_key_der(OTHER_KEY_PEM)));
    ok_json(out)
}

pub(super) async fn list_keys(
    State(state): State<Shared>,
    Path((project, sa)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    let path = format!("/v1/projects/{project}/serviceAccounts/{sa}/keys");
    handle(&state, GcpOp::ListKeys, &path, &headers, |st| {
        let q = q.unwrap_or_default();
        let types: Vec<&str> = q
            .split('&')
            .filter_map(|kv| kv.strip_prefix("keyTypes="))
            .collect();
        list(st, &project, &sa, &types)
    })
}

fn list(st: &mut GcpState, project: &str, sa: &str, types: &[&str]) -> Response {
    let window = st.not_found_window;
    let Some(p) = st.projects.get_mut(project) else {
        return no_project(project);
    };
    let Some(acc) = find_sa(p, sa, window) else {
        return sa_missing(sa);
    };
    let mut keys: Vec<Value> = Vec::new();
    if types.is_empty() || types.contains(&"SYSTEM_MANAGED") {
        keys.push(json!({
            "name": key_name(project, &acc.email, "ffffffffffffffffffffffffffffffffffffff00"),
            "validAfterTime": "2026-01-01T00:00:00Z", "validBeforeTime": "2026-01-17T00:00:00Z",
            "keyAlgorithm": "KEY_ALG_RSA_2048", "keyOrigin": "GOOGLE_PROVIDED", "keyType": "SYSTEM_MANAGED"
        }));
    }
    if types.is_empty() || types.contains(&"USER_MANAGED") {
        for k in &acc.keys {
            keys.push(json!({
                "name": key_name(project, &acc.email, &k.id),
                "validAfterTime": millis(&k.valid_after),
                "validBeforeTime": "9999-12-31T23:59:59Z",
                "keyAlgorithm": "KEY_ALG_RSA_2048", "keyOrigin": "GOOGLE_PROVIDED", "keyType": "USER_MANAGED"
            }));
        }
    }
    ok_json(json!({ "keys": keys }))
}

pub(super) async fn delete_key(
    State(state): State<Shared>,
    Path((project, sa, key)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let path = format!("/v1/projects/{project}/serviceAccounts/{sa}/keys/{key}");
    handle(&state, GcpOp::DeleteKey, &path, &headers, |st| {
        delete(st, &project, &sa, &key)
    })
}

fn delete(st: &mut GcpState, project: &str, sa: &str, key: &str) -> Response {
    let Some(p) = st.projects.get_mut(project) else {
        return no_project(project);
    };
    let Some(acc) = p
        .accounts
        .values_mut()
        .find(|a| a.email == sa || a.unique_id == sa)
    else {
        return sa_missing(sa);
    };
    let Some(i) = acc.keys.iter().position(|k| k.id == key) else {
        return google_error(
            404,
            "NOT_FOUND",
            &format!("Service account key {key} does not exist."),
        );
    };
    acc.keys.remove(i);
    let email = acc.email.clone();
    if let Some(v) = st.signing_keys.get_mut(&email) {
        v.retain(|(id, _)| id != key);
    }
    ok_json(json!({}))
}
