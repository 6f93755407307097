//! Signing in and out, and the session check every protected route passes through.

use super::*;

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Secure cookies when the browser reached us over HTTPS (a TLS terminator says so with
/// `X-Forwarded-Proto`) or when the operator insists.
fn secure(state: &ConsoleState, headers: &HeaderMap) -> bool {
    state.auth.force_secure
        || headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

fn set_cookie(name: &str, value: &str, max_age: i64, secure: bool) -> HeaderValue {
    let mut c = format!(
        "{name}={value}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={}",
        max_age.max(0)
    );
    if secure {
        c.push_str("; Secure");
    }
    HeaderValue::from_str(&c).unwrap_or_else(|_| HeaderValue::from_static("invalid=; Max-Age=0"))
}

/// The `csrf` field of an urlencoded form. CSRF tokens are hex, so no decoding is needed; a
/// token sent encoded differently simply does not match.
fn form_csrf(body: &[u8]) -> Option<&str> {
    std::str::from_utf8(body)
        .ok()?
        .split('&')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| *k == "csrf")
        .map(|(_, v)| v)
}

pub(super) async fn require_session(
    State(s): State<ConsoleState>,
    req: Request,
    next: Next,
) -> Response {
    let now = Utc::now();
    let session = cookie(req.headers(), SESSION_COOKIE).and_then(|c| s.auth.session(c, now));
    let Some(session) = session else {
        if req.method() == Method::GET || req.method() == Method::HEAD {
            return Redirect::to("/console/login").into_response();
        }
        return (
            StatusCode::UNAUTHORIZED,
            "Sign in to the console first (no valid session).",
        )
            .into_response();
    };
    let mut req = req;
    if req.method() == Method::POST {
        let (parts, body) = req.into_parts();
        let bytes = match axum::body::to_bytes(body, MAX_FORM).await {
            Ok(b) => b,
            Err(_) => return (StatusCode::PAYLOAD_TOO_LARGE, "Form too large.").into_response(),
        };
        if !form_csrf(&bytes).is_some_and(|t| csrf_matches(&session, t)) {
            tracing::warn!(path = %parts.uri.path(), "console POST refused: missing or wrong CSRF token");
            return (
                StatusCode::FORBIDDEN,
                "Missing or wrong CSRF token: reload the page and try again.",
            )
                .into_response();
        }
        req = Request::from_parts(parts, Body::from(bytes));
    }
    req.extensions_mut().insert(session);
    next.run(req).await
}

#[derive(Debug, Deserialize, Default)]
pub(super) struct LoginQuery {
    #[serde(default)]
    error: Option<String>,
}

pub(super) async fn login_page(
    State(s): State<ConsoleState>,
    headers: HeaderMap,
    Query(q): Query<LoginQuery>,
) -> Response {
    if !s.auth.is_enabled() {
        return (
            StatusCode::NOT_FOUND,
            "The console is disabled: set GATEHOUSE_ADMIN_TOKEN (or workspace/console tokens).",
        )
            .into_response();
    }
    let Some((nonce, token)) = s.auth.login_challenge() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let error = q.error.as_deref().map(|e| match e {
        "expired" => "The sign-in form expired; try again.",
        _ => "That token is not valid.",
    });
    let ctx = minijinja::context! {
        login_csrf => token,
        ttl_hours => s.auth.session_ttl.num_hours(),
        error => error,
    };
    let mut r = render(&s, "login.html", ctx);
    r.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(LOGIN_COOKIE, &nonce, 600, secure(&s, &headers)),
    );
    r
}

#[derive(Debug, Deserialize)]
pub(super) struct LoginForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    token: String,
}

pub(super) async fn login(
    State(s): State<ConsoleState>,
    headers: HeaderMap,
    axum::Form(f): axum::Form<LoginForm>,
) -> Response {
    let nonce = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if !s.auth.login_csrf_ok(nonce, &f.csrf) {
        return (
            StatusCode::FORBIDDEN,
            "Missing or wrong CSRF token on the sign-in form: reload it and try again.",
        )
            .into_response();
    }
    let Some(identity) = s.auth.identify(f.token.trim()) else {
        tracing::warn!("console sign-in refused: unknown token");
        return Redirect::to("/console/login?error=token").into_response();
    };
    let Some(value) = s.auth.issue(&identity, Utc::now()) else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    tracing::info!(actor = %identity.actor.id(), "console sign-in");
    let sec = secure(&s, &headers);
    let mut r = Redirect::to("/console/pending").into_response();
    r.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(
            SESSION_COOKIE,
            &value,
            s.auth.session_ttl.num_seconds(),
            sec,
        ),
    );
    r.headers_mut()
        .append(header::SET_COOKIE, set_cookie(LOGIN_COOKIE, "", 0, sec));
    r
}

pub(super) async fn logout(State(s): State<ConsoleState>, headers: HeaderMap) -> Response {
    let mut r = Redirect::to("/console/login").into_response();
    r.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(SESSION_COOKIE, "", 0, secure(&s, &headers)),
    );
    r
}
