//! Cloud Resource Manager v1 project IAM policies of the fake Google Cloud: `getIamPolicy` (version
//! 1 views of conditional policies) and `setIamPolicy` (etags, 409 `ABORTED` when stale,
//! conditional bindings dropped by a write without `version: 3`, `auditConfigs` kept unless the
//! update mask names them, and the validation Google applies).

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use super::GcpOp;
use super::calls::{google_error, handle, invalid_argument, ok_json};
use super::service_accounts::no_project;
use super::state::{GcpState, Project, Shared};

fn is_conditional(b: &Value) -> bool {
    b.get("condition").is_some_and(|c| !c.is_null())
}

pub(super) fn render_policy(p: &Project, requested: i64) -> Value {
    let conditional = p.bindings.iter().any(is_conditional);
    let bindings: Vec<Value> = if requested >= 3 || !conditional {
        p.bindings.clone()
    } else {
        // What a version-1 reader of a conditional policy gets: conditions hidden behind
        // `_withcond_` role names.
        p.bindings
            .iter()
            .map(|b| {
                if is_conditional(b) {
                    let h = hex::encode(&Sha256::digest(b["condition"].to_string().as_bytes())[..8]);
                    json!({"role": format!("{}_withcond_{h}", b["role"].as_str().unwrap_or("")), "members": b["members"]})
                } else {
                    b.clone()
                }
            })
            .collect()
    };
    let mut out = json!({
        "version": if conditional && requested >= 3 { 3 } else { 1 },
        "etag": p.etag(),
        "bindings": bindings,
    });
    if let Some(a) = &p.audit_configs {
        out["auditConfigs"] = a.clone();
    }
    out
}

pub(super) async fn policy_call(
    State(state): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some((project, method)) = name.split_once(':') else {
        return google_error(404, "NOT_FOUND", "Method not found.");
    };
    let op = match method {
        "getIamPolicy" => GcpOp::GetIamPolicy,
        "setIamPolicy" => GcpOp::SetIamPolicy,
        _ => return google_error(404, "NOT_FOUND", "Method not found."),
    };
    handle(
        &state,
        op,
        &format!("/v1/projects/{name}"),
        &headers,
        |st| {
            let body: Value = serde_json::from_slice(&body).unwrap_or(json!({}));
            if op == GcpOp::GetIamPolicy {
                match st.projects.get(project) {
                    None => no_project(project),
                    Some(p) => ok_json(render_policy(
                        p,
                        body["options"]["requestedPolicyVersion"]
                            .as_i64()
                            .unwrap_or(0),
                    )),
                }
            } else {
                set_policy(st, project, &body)
            }
        },
    )
}

const BASIC_ROLES: [&str; 3] = ["roles/owner", "roles/editor", "roles/viewer"];
const MEMBER_PREFIXES: [&str; 8] = [
    "user:",
    "serviceAccount:",
    "group:",
    "domain:",
    "deleted:",
    "principal://",
    "principalSet://",
    "projectOwner:",
];

/// What a policy's members are checked against: whether each known service account is visible
/// yet, and the e-mail domains of the fake's projects (other accounts are not checked).
struct KnownAccounts {
    visible: HashMap<String, bool>,
    domains: Vec<String>,
}

impl KnownAccounts {
    fn of(st: &GcpState) -> Self {
        let window = st.not_found_window;
        Self {
            visible: st
                .projects
                .values()
                .flat_map(|p| {
                    p.accounts
                        .values()
                        .map(|a| (a.email.clone(), !a.hidden(window)))
                })
                .collect(),
            domains: st
                .projects
                .keys()
                .map(|p| format!("@{p}.iam.gserviceaccount.com"))
                .collect(),
        }
    }

    /// A service account of one of the fake's projects that does not exist (or is not visible).
    fn missing(&self, email: &str) -> bool {
        self.domains.iter().any(|d| email.ends_with(d.as_str()))
            && self.visible.get(email) != Some(&true)
    }
}

fn set_policy(st: &mut GcpState, project: &str, body: &Value) -> Response {
    let known = KnownAccounts::of(st);
    let Some(p) = st.projects.get_mut(project) else {
        return no_project(project);
    };
    let policy = &body["policy"];
    if !policy.is_object() {
        return invalid_argument("Request contains an invalid argument: policy is required.");
    }
    if let Some(etag) = policy.get("etag").and_then(Value::as_str)
        && etag != p.etag()
    {
        return google_error(
            409,
            "ABORTED",
            &format!(
                "There were concurrent policy changes. Please retry the whole read-modify-write with exponential backoff. The request's ETag '{etag}' did not match the current policy's ETag '{}'.",
                p.etag()
            ),
        );
    }
    let version = policy.get("version").and_then(Value::as_i64).unwrap_or(1);
    let mut bindings: Vec<Value> = Vec::new();
    let mut principals = 0usize;
    for b in policy["bindings"].as_array().cloned().unwrap_or_default() {
        match check_binding(b, version, &known) {
            Err(refused) => return refused,
            Ok(None) => {}
            Ok(Some(kept)) => {
                principals += kept["members"].as_array().map_or(0, Vec::len);
                bindings.push(kept);
            }
        }
    }
    if principals > 1500 {
        return invalid_argument(
            "The number of members in the policy (> 1,500) is larger than the maximum allowed size 1,500.",
        );
    }
    let mask = body
        .get("updateMask")
        .and_then(Value::as_str)
        .unwrap_or("bindings,etag");
    p.bindings = bindings;
    if mask.split(',').any(|f| f.trim() == "auditConfigs") {
        p.audit_configs = policy.get("auditConfigs").cloned();
    }
    p.etag_n += 1;
    ok_json(render_policy(p, 3))
}

/// Checks one binding of a written policy: `Ok(None)` drops it (a conditional binding written
/// without version 3, or no members), `Err` refuses the whole write.
// A test fake answering one request at a time: the size of the error response does not matter.
#[allow(clippy::result_large_err)]
fn check_binding(b: Value, version: i64, known: &KnownAccounts) -> Result<Option<Value>, Response> {
    let role = b["role"].as_str().unwrap_or_default().to_string();
    if role.is_empty() {
        return Err(invalid_argument("Role must be set."));
    }
    // The classic bug this fake exists to catch: a write without version 3 loses every
    // conditional binding (and `_withcond_` roles are conditional bindings a v1 read
    // disguised).
    if version < 3 && (is_conditional(&b) || role.contains("_withcond_")) {
        return Ok(None);
    }
    if is_conditional(&b) {
        if BASIC_ROLES.contains(&role.as_str()) {
            return Err(invalid_argument(&format!(
                "Conditions are not supported for role {role}."
            )));
        }
        let c = &b["condition"];
        if c["title"].as_str().is_none_or(str::is_empty)
            || c["expression"].as_str().is_none_or(str::is_empty)
        {
            return Err(invalid_argument(
                "Condition title and expression are required.",
            ));
        }
    }
    let members: Vec<Value> = b["members"].as_array().cloned().unwrap_or_default();
    for m in &members {
        check_member(m.as_str().unwrap_or_default(), known)?;
    }
    Ok((!members.is_empty()).then_some(b))
}

#[allow(clippy::result_large_err)]
fn check_member(m: &str, known: &KnownAccounts) -> Result<(), Response> {
    if m == "allUsers" || m == "allAuthenticatedUsers" {
        return Err(invalid_argument(&format!(
            "Principal {m} is not allowed on projects."
        )));
    }
    if !MEMBER_PREFIXES.iter().any(|pre| m.starts_with(pre)) {
        return Err(invalid_argument(&format!("Invalid principal: {m}")));
    }
    if let Some(email) = m.strip_prefix("serviceAccount:")
        && known.missing(email)
    {
        return Err(invalid_argument(&format!(
            "Service account {email} does not exist."
        )));
    }
    Ok(())
}
