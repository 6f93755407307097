//! IAM v1 service accounts of the fake Google Cloud: create (`accountId` rules, 409, the
//! per-project quota, the eventual-consistency window), get, delete (members of policies turn
//! into `deleted:` members) and paged listings.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use super::GcpOp;
use super::calls::{google_error, google_error_details, handle, invalid_argument, ok_json};
use super::state::{GcpState, Project, Sa, Shared};

fn valid_account_id(id: &str) -> bool {
    let b = id.as_bytes();
    (6..=30).contains(&b.len())
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[b.len() - 1] != b'-'
}

pub(super) fn no_project(project: &str) -> Response {
    google_error(
        403,
        "PERMISSION_DENIED",
        &format!("Permission denied on resource project {project} (or it may not exist)."),
    )
}

fn sa_json(project: &str, sa: &Sa) -> Value {
    json!({
        "name": format!("projects/{project}/serviceAccounts/{}", sa.email),
        "projectId": project,
        "uniqueId": sa.unique_id,
        "email": sa.email,
        "displayName": sa.display_name,
        "description": sa.description,
        "etag": "MDEwMjE5MjA=",
        "oauth2ClientId": sa.unique_id,
    })
}

/// Finds a visible account by e-mail or unique id.
pub(super) fn find_sa<'a>(p: &'a mut Project, sa: &str, window: Duration) -> Option<&'a mut Sa> {
    let key = p
        .accounts
        .iter()
        .find(|(e, a)| *e == sa || a.unique_id == sa)
        .map(|(e, _)| e.clone())?;
    let acc = p.accounts.get_mut(&key)?;
    if acc.hidden(window) { None } else { Some(acc) }
}

pub(super) fn sa_missing(sa: &str) -> Response {
    google_error(
        404,
        "NOT_FOUND",
        &format!("Service account projects/-/serviceAccounts/{sa} not found."),
    )
}

pub(super) async fn create_sa(
    State(state): State<Shared>,
    Path(project): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/v1/projects/{project}/serviceAccounts");
    handle(&state, GcpOp::CreateServiceAccount, &path, &headers, |st| {
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        create(st, &project, &body, &headers)
    })
}

fn create(st: &mut GcpState, project: &str, body: &Value, headers: &HeaderMap) -> Response {
    let id = body["accountId"].as_str().unwrap_or_default().to_string();
    let text = |k: &str| {
        body["serviceAccount"][k]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let (display, description) = (text("displayName"), text("description"));
    if !valid_account_id(&id) {
        return invalid_argument(&format!(
            "Invalid account id {id}: must be 6-30 characters and match [a-z]([-a-z0-9]*[a-z0-9])."
        ));
    }
    if display.len() > 100 || description.len() > 256 {
        return invalid_argument("displayName or description too long.");
    }
    let quota = st.account_quota;
    let hidden_for = match (crate::faults::injected(headers), st.fault_slot.get()) {
        (Some(crate::faults::FaultKind::NotFoundAfterCreate), Some(inj)) => {
            inj.plan().not_found_window
        }
        _ => Duration::ZERO,
    };
    st.next_unique += 1;
    let unique_id = st.next_unique.to_string();
    let Some(p) = st.projects.get_mut(project) else {
        return no_project(project);
    };
    let email = format!("{id}@{project}.iam.gserviceaccount.com");
    if p.accounts.contains_key(&email) {
        return google_error(
            409,
            "ALREADY_EXISTS",
            &format!("Service account {id} already exists within project projects/{project}."),
        );
    }
    if p.accounts.len() >= quota {
        return google_error_details(
            429,
            "RESOURCE_EXHAUSTED",
            "Maximum number of service accounts on project reached.",
            json!([{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "86401s"}]),
        );
    }
    let sa = Sa {
        account_id: id,
        email: email.clone(),
        unique_id,
        display_name: display,
        description,
        created: Instant::now(),
        hidden_for,
        keys: vec![],
    };
    let out = sa_json(project, &sa);
    p.accounts.insert(email, sa);
    ok_json(out)
}

pub(super) async fn get_sa(
    State(state): State<Shared>,
    Path((project, sa)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let path = format!("/v1/projects/{project}/serviceAccounts/{sa}");
    handle(&state, GcpOp::GetServiceAccount, &path, &headers, |st| {
        let window = st.not_found_window;
        match st.projects.get_mut(&project) {
            None => no_project(&project),
            Some(p) => match find_sa(p, &sa, window) {
                Some(acc) => ok_json(sa_json(&project, acc)),
                None => sa_missing(&sa),
            },
        }
    })
}

pub(super) async fn delete_sa(
    State(state): State<Shared>,
    Path((project, sa)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let path = format!("/v1/projects/{project}/serviceAccounts/{sa}");
    handle(&state, GcpOp::DeleteServiceAccount, &path, &headers, |st| {
        delete(st, &project, &sa)
    })
}

fn delete(st: &mut GcpState, project: &str, sa: &str) -> Response {
    let Some(p) = st.projects.get_mut(project) else {
        return no_project(project);
    };
    // Deletion is a write: sequentially consistent, so no not-found window here.
    let Some(key) = p
        .accounts
        .iter()
        .find(|(e, a)| *e == sa || a.unique_id == sa)
        .map(|(e, _)| e.clone())
    else {
        return sa_missing(sa);
    };
    let removed = p.accounts.remove(&key).expect("present");
    st.signing_keys.remove(&removed.email);
    // Policies keep referring to the account, under its deleted name.
    let old = format!("serviceAccount:{}", removed.email);
    let new = format!(
        "deleted:serviceAccount:{}?uid={}",
        removed.email, removed.unique_id
    );
    for proj in st.projects.values_mut() {
        let mut touched = false;
        for b in proj.bindings.iter_mut() {
            if let Some(ms) = b["members"].as_array_mut() {
                for m in ms.iter_mut() {
                    if m.as_str() == Some(old.as_str()) {
                        *m = json!(new);
                        touched = true;
                    }
                }
            }
        }
        if touched {
            proj.etag_n += 1;
        }
    }
    ok_json(json!({}))
}

pub(super) async fn list_sa(
    State(state): State<Shared>,
    Path(project): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    let path = format!("/v1/projects/{project}/serviceAccounts");
    handle(&state, GcpOp::ListServiceAccounts, &path, &headers, |st| {
        let q: HashMap<String, String> =
            serde_urlencoded::from_str(q.as_deref().unwrap_or("")).unwrap_or_default();
        list(st, &project, &q)
    })
}

fn list(st: &GcpState, project: &str, q: &HashMap<String, String>) -> Response {
    let size = q
        .get("pageSize")
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(20)
        .clamp(1, 100);
    let start = q
        .get("pageToken")
        .and_then(|s| STANDARD.decode(s).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(0);
    let window = st.not_found_window;
    let Some(p) = st.projects.get(project) else {
        return no_project(project);
    };
    // Reads are eventually consistent: brand-new accounts may be missing from a listing.
    let visible: Vec<&Sa> = p.accounts.values().filter(|a| !a.hidden(window)).collect();
    let page: Vec<Value> = visible
        .iter()
        .skip(start)
        .take(size)
        .map(|a| sa_json(project, a))
        .collect();
    let mut out = json!({ "accounts": page });
    if start + size < visible.len() {
        out["nextPageToken"] = json!(STANDARD.encode((start + size).to_string()));
    }
    ok_json(out)
}
