//! Users of the fake Cloud Connexa API: create (validation, duplicates, the default group),
//! full-replacement update (omitted required fields refused, an omitted `secondaryGroupIds`
//! clears them) and delete.

use serde_json::Value;

use super::resources::FakeUser;
use super::routes::user_not_found;
use super::server::Reply;
use super::state::{St, default_group_id};

const ROLES: [&str; 3] = ["OWNER", "MEMBER", "ADMIN"];
const STATUSES: [&str; 4] = ["INVITED", "ACTIVE", "SUSPENDED", "SUSPENDED_IDP"];

fn str_field<'a>(b: &'a Value, k: &str) -> Option<&'a str> {
    b.get(k).and_then(|v| v.as_str())
}

fn group_list(st: &St, b: &Value) -> Result<Vec<String>, Reply> {
    let mut out: Vec<String> = Vec::new();
    match b.get("secondaryGroupIds") {
        None | Some(Value::Null) => {}
        Some(Value::Array(a)) => {
            for g in a {
                let Some(g) = g.as_str() else {
                    return Err(Reply::invalid_field(
                        "secondaryGroupIds",
                        "INVALID",
                        "must be strings",
                    ));
                };
                if !st.group_exists(g) {
                    return Err(Reply::invalid_field(
                        "secondaryGroupIds",
                        "NOT_FOUND",
                        &format!("User group {g} does not exist"),
                    ));
                }
                if !out.iter().any(|x| x == g) {
                    out.push(g.to_string());
                }
            }
        }
        Some(_) => {
            return Err(Reply::invalid_field(
                "secondaryGroupIds",
                "INVALID",
                "must be an array",
            ));
        }
    }
    Ok(out)
}

pub(super) fn create_user(st: &mut St, b: &Value) -> Reply {
    let email = str_field(b, "email").unwrap_or("").trim().to_string();
    if !email.contains('@') {
        return Reply::invalid_field("email", "INVALID", "must be a well-formed email address");
    }
    if st
        .users
        .iter()
        .any(|u| u.email.eq_ignore_ascii_case(&email))
    {
        return Reply::invalid_field("email", "DUPLICATE", "User with this email already exists");
    }
    let username = str_field(b, "username")
        .map(str::to_string)
        .unwrap_or_else(|| email.split('@').next().unwrap_or("").to_string());
    if st
        .users
        .iter()
        .any(|u| u.username.eq_ignore_ascii_case(&username))
    {
        return Reply::invalid_field("username", "DUPLICATE", "Username is already taken");
    }
    let role = str_field(b, "role").unwrap_or("MEMBER").to_string();
    if !ROLES.contains(&role.as_str()) {
        return Reply::invalid_field("role", "INVALID", "unknown role");
    }
    let group_id = match str_field(b, "groupId") {
        Some(g) if !st.group_exists(g) => {
            return Reply::invalid_field("groupId", "NOT_FOUND", "User group does not exist");
        }
        Some(g) => g.to_string(),
        None => default_group_id(st),
    };
    let secondary = match group_list(st, b) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let id = st.next_id();
    let u = FakeUser {
        id,
        first_name: str_field(b, "firstName").unwrap_or("").into(),
        last_name: str_field(b, "lastName").unwrap_or("").into(),
        username,
        email,
        group_id,
        secondary_group_ids: secondary,
        status: "INVITED".into(),
        role,
        auth_type: "INTERNAL".into(),
    };
    st.users.push(u.clone());
    Reply::json(201, serde_json::to_value(u).unwrap_or_default())
}

fn update_user(st: &mut St, id: &str, b: &Value) -> Reply {
    // A full replacement: the required fields must be there, the list is what was sent.
    for field in ["email", "groupId", "role", "status"] {
        if str_field(b, field).is_none() {
            return Reply::invalid_field(field, "NOT_NULL", "must not be null");
        }
    }
    let email = str_field(b, "email").unwrap_or("").trim().to_string();
    if st
        .users
        .iter()
        .any(|u| u.id != id && u.email.eq_ignore_ascii_case(&email))
    {
        return Reply::invalid_field("email", "DUPLICATE", "User with this email already exists");
    }
    let group_id = str_field(b, "groupId").unwrap_or("").to_string();
    if !st.group_exists(&group_id) {
        return Reply::invalid_field("groupId", "NOT_FOUND", "User group does not exist");
    }
    let role = str_field(b, "role").unwrap_or("").to_string();
    let status = str_field(b, "status").unwrap_or("").to_string();
    if !ROLES.contains(&role.as_str()) || !STATUSES.contains(&status.as_str()) {
        return Reply::invalid_field("role", "INVALID", "unknown role or status");
    }
    let secondary = match group_list(st, b) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let Some(u) = st.users.iter_mut().find(|u| u.id == id) else {
        return Reply::bad("User not found", None);
    };
    u.first_name = str_field(b, "firstName").unwrap_or("").into();
    u.last_name = str_field(b, "lastName").unwrap_or("").into();
    u.email = email;
    u.group_id = group_id;
    u.secondary_group_ids = secondary;
    u.role = role;
    u.status = status;
    Reply::json(200, serde_json::to_value(&*u).unwrap_or_default())
}

/// `PUT /users/{id}`: a full replacement of a user that exists.
pub(super) fn put_user(st: &mut St, id: &str, body: Result<&Value, ()>) -> Reply {
    let Ok(b) = body else {
        return Reply::bad("Malformed JSON request", None);
    };
    if !st.users.iter().any(|u| u.id == *id) {
        return user_not_found(st, id);
    }
    update_user(st, id, b)
}

pub(super) fn delete_user(st: &mut St, id: &str) -> Reply {
    if !st.users.iter().any(|u| u.id == *id) {
        return user_not_found(st, id);
    }
    st.users.retain(|u| u.id != *id);
    Reply::empty(204)
}
