//! The fake Google OAuth token endpoint: verifies the RS256 JWT assertion of a service-account
//! key against the registered public keys and hands out bearer tokens (`external-apis.md` B).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use super::calls::ok_json;
use super::state::{GcpState, Shared};
use super::{GcpCall, GcpFault, GcpOp};

fn b64url_lenient(s: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).ok()
}

fn invalid_grant(desc: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({"error": "invalid_grant", "error_description": desc})),
    )
        .into_response()
}

pub(super) async fn token(State(state): State<Shared>, body: Bytes) -> Response {
    let mut st = state.lock().unwrap();
    let form: HashMap<String, String> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    let resp = check_assertion(&mut st, &form);
    st.calls.push(GcpCall {
        op: GcpOp::Token,
        path: "/token".into(),
        status: resp.status().as_u16(),
    });
    resp
}

fn check_assertion(st: &mut GcpState, form: &HashMap<String, String>) -> Response {
    if let Some(i) = st.faults.iter().position(|(o, _)| *o == GcpOp::Token) {
        let (_, f) = st.faults.remove(i).expect("index exists");
        if let GcpFault::Status { code, .. } = f {
            let sc = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return (sc, axum::Json(json!({"error": "internal_failure"}))).into_response();
        }
    }
    if form.get("grant_type").map(String::as_str)
        != Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
    {
        return (StatusCode::BAD_REQUEST, axum::Json(json!({"error": "unsupported_grant_type", "error_description": "Invalid grant_type"}))).into_response();
    }
    let Some(assertion) = form.get("assertion") else {
        return invalid_grant("Missing required parameter: assertion");
    };
    let parts: Vec<&str> = assertion.split('.').collect();
    if parts.len() != 3 {
        return invalid_grant(
            "Invalid JWT: Token must be a short-lived token and in a reasonable timeframe",
        );
    }
    let (Some(h), Some(c), Some(sig)) = (
        b64url_lenient(parts[0]),
        b64url_lenient(parts[1]),
        b64url_lenient(parts[2]),
    ) else {
        return invalid_grant("Invalid JWT: bad base64");
    };
    let (Ok(header), Ok(claims)) = (
        serde_json::from_slice::<Value>(&h),
        serde_json::from_slice::<Value>(&c),
    ) else {
        return invalid_grant("Invalid JWT: bad JSON");
    };
    if header["alg"] != "RS256" {
        return invalid_grant("Invalid JWT: unsupported alg");
    }
    let iss = claims["iss"].as_str().unwrap_or_default().to_string();
    if claims["aud"].as_str() != Some(&format!("{}/token", st.base_url)) {
        return invalid_grant("Invalid JWT: audience is not the token endpoint");
    }
    if !(claims["sub"].is_null() || claims["sub"].is_string()) {
        return invalid_grant("Invalid JWT: bad sub");
    }
    if claims["scope"].as_str().is_none_or(|s| s.trim().is_empty()) {
        return invalid_grant("Invalid JWT: no scope");
    }
    let now = chrono::Utc::now().timestamp();
    let (Some(iat), Some(exp)) = (claims["iat"].as_i64(), claims["exp"].as_i64()) else {
        return invalid_grant("Invalid JWT: iat/exp missing");
    };
    if iat > now + 300 || exp <= now || exp - iat > 3600 {
        return invalid_grant(
            "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.",
        );
    }
    let signed = format!("{}.{}", parts[0], parts[1]);
    let verified = st.signing_keys.get(&iss).is_some_and(|keys| {
        keys.iter().any(|(_, der)| {
            ring::signature::UnparsedPublicKey::new(
                &ring::signature::RSA_PKCS1_2048_8192_SHA256,
                der,
            )
            .verify(signed.as_bytes(), &sig)
            .is_ok()
        })
    });
    if !verified {
        return invalid_grant("Invalid JWT Signature.");
    }
    let t = format!("ya29.fake-{}", uuid::Uuid::new_v4().simple());
    st.tokens
        .insert(t.clone(), (iss, Instant::now() + Duration::from_secs(3600)));
    ok_json(json!({"access_token": t, "expires_in": 3599, "token_type": "Bearer"}))
}
