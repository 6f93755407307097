//! The fake Cloud Connexa's token endpoint, `POST /api/v1/oauth/token`: client credentials as
//! query parameters, HTTP Basic, a JSON or a form body; tokens that expire after `expires_in`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method};
use base64::Engine;
use serde_json::{Value, json};

use super::server::{Reply, parse_pairs};
use super::state::{St, Token};

pub(super) fn token(
    st: &mut St,
    method: &Method,
    headers: &HeaderMap,
    query: &BTreeMap<String, String>,
    raw: &Bytes,
    json_body: Option<&Value>,
) -> (Reply, String) {
    if method != Method::POST {
        return (
            Reply::error(405, "METHOD_NOT_ALLOWED", "Use POST"),
            String::new(),
        );
    }
    let form = if json_body.is_none() {
        parse_pairs(std::str::from_utf8(raw).unwrap_or(""))
    } else {
        BTreeMap::new()
    };
    let from_json = |k: &str| {
        json_body
            .and_then(|j| j.get(k))
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    let basic = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| {
            s.split_once(':')
                .map(|(a, b)| (a.to_string(), b.to_string()))
        });

    let (creds, via) = if let (Some(id), Some(secret)) =
        (query.get("client_id"), query.get("client_secret"))
    {
        (Some((id.clone(), secret.clone())), "query")
    } else if let Some(c) = basic {
        (Some(c), "basic")
    } else if let (Some(id), Some(secret)) = (from_json("client_id"), from_json("client_secret")) {
        (Some((id, secret)), "json")
    } else if let (Some(id), Some(secret)) = (form.get("client_id"), form.get("client_secret")) {
        (Some((id.clone(), secret.clone())), "form")
    } else {
        (None, "")
    };
    let grant_type = query
        .get("grant_type")
        .cloned()
        .or_else(|| from_json("grant_type"))
        .or_else(|| form.get("grant_type").cloned());
    if grant_type
        .as_deref()
        .is_some_and(|g| g != "client_credentials")
    {
        return (Reply::bad("Unsupported grant type", None), via.into());
    }
    match creds {
        Some((id, secret)) if id == st.cfg.client_id && secret == st.cfg.client_secret => {
            let token = format!("fake-cc-token-{}", uuid::Uuid::new_v4().simple());
            let expires_in = st.cfg.expires_in;
            st.tokens.insert(
                token.clone(),
                Token {
                    client_id: id,
                    expires_at: Instant::now() + Duration::from_secs(expires_in),
                },
            );
            let body = json!({"access_token": token, "token_type": "bearer", "expires_in": expires_in, "scope": "read write"});
            (Reply::json(200, body), via.into())
        }
        _ => (
            Reply::error(401, "UNAUTHORIZED", "Bad credentials"),
            via.into(),
        ),
    }
}
