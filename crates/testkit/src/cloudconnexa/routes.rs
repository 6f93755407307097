//! The resource routes of the fake Cloud Connexa API v1: networks (read only), users and user
//! groups, with its paging (`page` from 0, `size` 1–1000) and its not-found statuses (an unknown
//! user is a 400 by default, as the docs warn).

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::http::Method;
use serde::Serialize;
use serde_json::{Value, json};

use super::resources::new_group;
use super::server::{Reply, field_error};
use super::state::St;
use super::users;

/// One page of `items` as the API lists them.
fn page_of<T: Serialize>(items: &[T], query: &BTreeMap<String, String>) -> Reply {
    let page: i64 = match query.get("page").map(|p| p.parse()) {
        None => 0,
        Some(Ok(p)) if p >= 0 => p,
        _ => {
            return Reply::bad(
                "Invalid page",
                Some(field_error("page", "INVALID", "must be 0 or more")),
            );
        }
    };
    let size: i64 = match query.get("size").map(|p| p.parse()) {
        None => 10,
        Some(Ok(s)) if (1..=1000).contains(&s) => s,
        _ => {
            return Reply::bad(
                "Invalid size",
                Some(field_error("size", "INVALID", "must be between 1 and 1000")),
            );
        }
    };
    let total = items.len() as i64;
    let total_pages = (total + size - 1) / size;
    let start = (page * size).min(total) as usize;
    let end = ((page + 1) * size).min(total) as usize;
    let content: Vec<Value> = items[start..end]
        .iter()
        .map(|i| serde_json::to_value(i).unwrap_or(Value::Null))
        .collect();
    Reply::json(
        200,
        json!({"content": content, "totalElements": total, "totalPages": total_pages,
               "numberOfElements": end - start, "page": page, "size": size}),
    )
}

/// 200 with the resource, or `missing` when there is none.
fn found<T: Serialize>(item: Option<&T>, missing: impl FnOnce() -> Reply) -> Reply {
    match item {
        Some(v) => Reply::json(200, serde_json::to_value(v).unwrap_or_default()),
        None => missing(),
    }
}

/// The not-found answer with the configured status (`BAD_REQUEST` unless it is 404).
fn not_found_with(status: u16, message: &str) -> Reply {
    let status_error = if status == 404 {
        "NOT_FOUND"
    } else {
        "BAD_REQUEST"
    };
    Reply::error(status, status_error, message)
}

pub(super) fn user_not_found(st: &St, id: &str) -> Reply {
    not_found_with(
        st.cfg.user_not_found_status,
        &format!("User with id {id} not found"),
    )
}

fn group_not_found(st: &St, id: &str) -> Reply {
    not_found_with(
        st.cfg.group_not_found_status,
        &format!("User group with id {id} not found"),
    )
}

/// Answers an authenticated call to `/api/v1/{segs…}`.
pub(super) fn route(
    st: &mut St,
    method: &Method,
    segs: &[&str],
    query: &BTreeMap<String, String>,
    body: Option<&Value>,
    raw: &Bytes,
) -> Reply {
    // A body that is there but is not JSON.
    let body = if !raw.is_empty() && body.is_none() {
        Err(())
    } else {
        body.ok_or(())
    };
    match (method.clone(), segs) {
        (Method::GET, ["networks"]) => page_of(&st.networks, query),
        (Method::GET, ["networks", id]) => found(st.networks.iter().find(|n| n.id == *id), || {
            Reply::error(404, "NOT_FOUND", &format!("Network with id {id} not found"))
        }),
        (Method::GET, ["users"]) => page_of(&st.users, query),
        (Method::GET, ["users", id]) => found(st.users.iter().find(|u| u.id == *id), || {
            user_not_found(st, id)
        }),
        (Method::POST, ["users"]) => match body {
            Ok(b) => users::create_user(st, b),
            Err(()) => Reply::bad("Malformed JSON request", None),
        },
        (Method::PUT, ["users", id]) => users::put_user(st, id, body),
        (Method::DELETE, ["users", id]) => users::delete_user(st, id),
        (Method::GET, ["user-groups"]) => page_of(&st.groups, query),
        (Method::GET, ["user-groups", id]) => found(st.groups.iter().find(|g| g.id == *id), || {
            group_not_found(st, id)
        }),
        (Method::POST, ["user-groups"]) | (Method::PUT, ["user-groups", _]) => match body {
            Ok(b) => upsert_group(st, segs.get(1).map(|s| s.to_string()), b),
            Err(()) => Reply::bad("Malformed JSON request", None),
        },
        (Method::DELETE, ["user-groups", id]) => delete_group(st, id),
        (_, ["networks" | "users" | "user-groups", ..]) => {
            Reply::error(405, "METHOD_NOT_ALLOWED", "Request method not supported")
        }
        _ => Reply::error(404, "NOT_FOUND", "No such endpoint"),
    }
}

/// `POST /user-groups` (`existing_id` `None`) or `PUT /user-groups/{id}`: a full replacement.
fn upsert_group(st: &mut St, existing_id: Option<String>, b: &Value) -> Reply {
    let name = b
        .get("name")
        .and_then(|n| n.as_str())
        .unwrap_or("")
        .trim()
        .to_string();
    if name.is_empty() {
        return Reply::invalid_field("name", "NOT_BLANK", "must not be blank");
    }
    if let Some(id) = existing_id.as_ref().filter(|id| !st.group_exists(id)) {
        return group_not_found(st, id);
    }
    if st
        .groups
        .iter()
        .any(|g| g.name == name && Some(&g.id) != existing_id.as_ref())
    {
        return Reply::invalid_field(
            "name",
            "DUPLICATE",
            "A user group with this name already exists",
        );
    }
    let id = existing_id.clone().unwrap_or_else(|| st.next_id());
    let mut g = new_group(id.clone(), name);
    if let Some(v) = b.get("internetAccess").and_then(|v| v.as_str()) {
        g.internet_access = v.into();
    }
    if let Some(v) = b.get("maxDevice").and_then(|v| v.as_u64()) {
        g.max_device = v as u32;
    }
    if let Some(v) = b.get("connectAuth").and_then(|v| v.as_str()) {
        g.connect_auth = v.into();
    }
    if let Some(v) = b.get("allRegionsIncluded").and_then(|v| v.as_bool()) {
        g.all_regions_included = v;
    }
    st.groups.retain(|x| x.id != id);
    st.groups.push(g.clone());
    Reply::json(
        if existing_id.is_some() { 200 } else { 201 },
        serde_json::to_value(g).unwrap_or_default(),
    )
}

fn delete_group(st: &mut St, id: &str) -> Reply {
    if !st.group_exists(id) {
        return group_not_found(st, id);
    }
    if st.users.iter().any(|u| u.group_id == *id) {
        return Reply::bad("User group has users assigned as their primary group", None);
    }
    st.groups.retain(|g| g.id != *id);
    for u in &mut st.users {
        u.secondary_group_ids.retain(|g| g != id);
    }
    Reply::empty(204)
}
