//! A fake of Slack's installation methods: `oauth.v2.access` (code exchange and token refresh),
//! `auth.test` and `auth.revoke`, on 127.0.0.1, with the wire format of external-apis.md A.6/A.8:
//! form-encoded or query arguments only (these methods take no JSON), client credentials by
//! HTTP Basic or as parameters, HTTP 200 envelopes with `ok:false` and Slack's error codes,
//! single-use codes, refresh tokens revoked on use, and tokens that stop working once revoked.
//!
//! Codes are registered up front with [`FakeSlackOAuth::add_code`], as if a person had clicked
//! "Allow" in Slack and been redirected with that code.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use base64::Engine as _;
use serde_json::{Value, json};

use crate::slack_relay::{ApiCall, Relay};

pub const CLIENT_ID: &str = "1111.2222";
pub const CLIENT_SECRET: &str = "fake-client-secret";
pub const APP_ID: &str = "A0KRD7HC3";

/// What a person grants when they approve an install in Slack.
#[derive(Debug, Clone)]
pub struct Grant {
    pub team_id: String,
    pub team_name: String,
    /// `(id, name)` of the Enterprise Grid organisation.
    pub enterprise: Option<(String, String)>,
    /// Org-wide install: `team` is null in the answer.
    pub org_install: bool,
    /// Token rotation on: `expires_in` and `refresh_token` in the answer.
    pub rotation: bool,
    /// `expires_in` of rotating tokens in the code exchange (Slack: 43200, 12 hours). Shorter
    /// makes a token due for refresh at once.
    pub expires_in: u64,
    /// Also a user token for the installer.
    pub installer: Option<String>,
    pub bot_user_id: String,
}

impl Grant {
    pub fn workspace(team_id: &str, team_name: &str) -> Self {
        Self {
            team_id: team_id.into(),
            team_name: team_name.into(),
            enterprise: None,
            org_install: false,
            rotation: false,
            expires_in: 43200,
            installer: Some(format!("U{}INST", team_id.trim_start_matches('T'))),
            bot_user_id: format!("U{}BOT", team_id.trim_start_matches('T')),
        }
    }

    pub fn enterprise(mut self, id: &str, name: &str) -> Self {
        self.enterprise = Some((id.into(), name.into()));
        self
    }

    pub fn org_wide(mut self) -> Self {
        self.org_install = true;
        self
    }

    pub fn rotating(mut self) -> Self {
        self.rotation = true;
        self
    }

    /// Rotating tokens that expire after `secs` (see [`Grant::expires_in`]).
    pub fn expiring_in(mut self, secs: u64) -> Self {
        self.rotation = true;
        self.expires_in = secs;
        self
    }

    pub fn no_user_token(mut self) -> Self {
        self.installer = None;
        self
    }
}

/// A token the fake handed out.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub token: String,
    pub team_id: String,
    pub enterprise_id: Option<String>,
    pub user_id: String,
    pub is_bot: bool,
    pub revoked: bool,
    pub refresh_token: Option<String>,
}

/// One recorded call.
#[derive(Debug, Clone)]
pub struct OAuthCall {
    pub method: String,
    pub http_method: String,
    pub content_type: String,
    /// Query and form arguments merged.
    pub args: HashMap<String, String>,
    /// Client id from HTTP Basic, if sent that way.
    pub basic_client_id: Option<String>,
    pub bearer: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug, Default)]
struct Inner {
    codes: HashMap<String, Grant>,
    tokens: Vec<IssuedToken>,
    calls: Vec<OAuthCall>,
    /// method → error code for the next call.
    faults: HashMap<String, String>,
    counter: u64,
    redirect_uri: Option<String>,
    /// Other methods are relayed here (a `FakeSlack` API URL), so one base serves both.
    relay: Relay,
}

type Shared = Arc<Mutex<Inner>>;

/// The fake; dropping it stops the server.
#[derive(Debug)]
pub struct FakeSlackOAuth {
    addr: SocketAddr,
    inner: Shared,
    _task: crate::http::ServerTask,
}

impl FakeSlackOAuth {
    pub async fn start() -> FakeSlackOAuth {
        let inner: Shared = Arc::default();
        let app = Router::new()
            .route("/api/{method}", any(api))
            .with_state(inner.clone());
        let (addr, task) = crate::http::serve(app, "fake slack oauth").await;
        FakeSlackOAuth {
            addr,
            inner,
            _task: task,
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        f(&mut self.inner.lock().expect("fake slack oauth lock"))
    }

    /// `http://127.0.0.1:{port}/api`.
    pub fn api_url(&self) -> String {
        format!("http://{}/api", self.addr)
    }

    /// Relays every method this fake does not serve to `api_url` (e.g. `FakeSlack::api_url()`),
    /// so a server given one `SLACK_API_URL` reaches both fakes. Tokens this fake issues must be
    /// registered there (`FakeSlack::add_token`) to be accepted.
    pub fn relay_to(&self, api_url: &str) {
        self.with(|i| i.relay.set(api_url));
    }

    /// Makes `redirect_uri` required (and checked) on code exchanges, as Slack does when the
    /// authorize request carried one.
    pub fn require_redirect_uri(&self, uri: &str) {
        self.with(|i| i.redirect_uri = Some(uri.into()));
    }

    /// Registers a single-use code.
    pub fn add_code(&self, code: &str, grant: Grant) {
        self.with(|i| i.codes.insert(code.into(), grant));
    }

    /// The next call of `method` answers `{"ok":false,"error":error}`.
    pub fn fail_next(&self, method: &str, error: &str) {
        self.with(|i| i.faults.insert(method.into(), error.into()));
    }

    pub fn calls(&self) -> Vec<OAuthCall> {
        self.with(|i| i.calls.clone())
    }

    pub fn calls_to(&self, method: &str) -> Vec<OAuthCall> {
        self.with(|i| crate::http::cloned_where(&i.calls, |c| c.method == method))
    }

    pub fn tokens(&self) -> Vec<IssuedToken> {
        self.with(|i| i.tokens.clone())
    }

    /// Live bot token of `team_id` (the newest).
    pub fn bot_token(&self, team_id: &str) -> Option<String> {
        self.with(|i| {
            i.tokens
                .iter()
                .rev()
                .find(|t| t.is_bot && !t.revoked && t.team_id == team_id)
                .map(|t| t.token.clone())
        })
    }

    pub fn is_revoked(&self, token: &str) -> bool {
        self.with(|i| i.tokens.iter().any(|t| t.token == token && t.revoked))
    }

    pub fn revoked(&self) -> Vec<String> {
        self.with(|i| {
            i.tokens
                .iter()
                .filter(|t| t.revoked)
                .map(|t| t.token.clone())
                .collect()
        })
    }
}

fn ok(v: Value) -> Response {
    axum::Json(v).into_response()
}

fn err(code: &str) -> Response {
    ok(json!({"ok": false, "error": code}))
}

fn parse_pairs(s: &str) -> HashMap<String, String> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(s)
        .unwrap_or_default()
        .into_iter()
        .collect()
}

async fn api(State(st): State<Shared>, call: ApiCall) -> Response {
    if !matches!(
        call.method.as_str(),
        "oauth.v2.access" | "auth.test" | "auth.revoke"
    ) {
        let relay = st.lock().expect("fake slack oauth lock").relay.clone();
        if let Some(answer) = relay.forward(&call).await {
            return answer;
        }
    }
    let ApiCall {
        method,
        http_method,
        headers,
        query,
        body,
    } = call;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let mut args = parse_pairs(query.as_deref().unwrap_or_default());
    let body_s = String::from_utf8_lossy(&body).to_string();
    let json_body = content_type.starts_with("application/json");
    if content_type.starts_with("application/x-www-form-urlencoded") {
        args.extend(parse_pairs(&body_s));
    }
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let bearer = auth
        .strip_prefix("Bearer ")
        .map(str::to_string)
        .or_else(|| args.get("token").cloned());
    let basic = auth.strip_prefix("Basic ").and_then(|b| {
        let raw = base64::engine::general_purpose::STANDARD.decode(b).ok()?;
        let s = String::from_utf8(raw).ok()?;
        let (id, secret) = s.split_once(':')?;
        Some((id.to_string(), secret.to_string()))
    });
    let mut i = st.lock().expect("fake slack oauth lock");
    let fault = i.faults.remove(&method);
    let (resp, error) = if let Some(code) = fault {
        (err(&code), Some(code))
    } else if json_body && !body.is_empty() {
        // None of these methods accepts JSON (external-apis.md A.6).
        (err("invalid_form_data"), Some("invalid_form_data".into()))
    } else {
        match method.as_str() {
            "oauth.v2.access" => oauth_access(&mut i, &args, basic.clone()),
            "auth.test" => auth_test(&i, bearer.as_deref()),
            "auth.revoke" => auth_revoke(&mut i, bearer.as_deref(), &args),
            _ => (err("unknown_method"), Some("unknown_method".into())),
        }
    };
    i.calls.push(OAuthCall {
        method,
        http_method: http_method.to_string(),
        content_type,
        args,
        basic_client_id: basic.map(|b| b.0),
        bearer,
        error,
    });
    resp
}

fn fail(code: &str) -> (Response, Option<String>) {
    (err(code), Some(code.to_string()))
}

fn oauth_access(
    i: &mut Inner,
    args: &HashMap<String, String>,
    basic: Option<(String, String)>,
) -> (Response, Option<String>) {
    let (id, secret) = match basic {
        Some(b) => b,
        None => (
            args.get("client_id").cloned().unwrap_or_default(),
            args.get("client_secret").cloned().unwrap_or_default(),
        ),
    };
    if id != CLIENT_ID {
        return fail("invalid_client_id");
    }
    if secret != CLIENT_SECRET {
        return fail("bad_client_secret");
    }
    match args.get("grant_type").map(String::as_str) {
        Some("refresh_token") => refresh(i, args),
        None | Some("authorization_code") => exchange_code(i, args),
        Some(_) => fail("invalid_grant_type"),
    }
}

/// A token refresh: each refresh revokes the old pair and hands out a new one.
fn refresh(i: &mut Inner, args: &HashMap<String, String>) -> (Response, Option<String>) {
    let rt = args.get("refresh_token").cloned().unwrap_or_default();
    let Some(pos) = i
        .tokens
        .iter()
        .position(|t| !t.revoked && t.refresh_token.as_deref() == Some(rt.as_str()))
    else {
        return fail("invalid_refresh_token");
    };
    i.tokens[pos].revoked = true;
    let old = i.tokens[pos].clone();
    i.counter += 1;
    let n = i.counter;
    let kind = if old.is_bot { "xoxb" } else { "xoxp" };
    let tok = IssuedToken {
        token: format!("xoxe.{kind}-{}-{n}", old.team_id),
        refresh_token: Some(format!("xoxe-1-{}-{n}", old.team_id)),
        revoked: false,
        ..old
    };
    i.tokens.push(tok.clone());
    (
        ok(json!({
            "ok": true, "app_id": APP_ID, "access_token": tok.token,
            "token_type": if tok.is_bot { "bot" } else { "user" },
            "expires_in": 43200, "refresh_token": tok.refresh_token,
            "team": {"id": tok.team_id}, "enterprise": null, "is_enterprise_install": false,
        })),
        None,
    )
}

/// A code exchange: the code's grant becomes a bot token (and the installer's user token).
fn exchange_code(i: &mut Inner, args: &HashMap<String, String>) -> (Response, Option<String>) {
    if let Some(want) = &i.redirect_uri
        && args.get("redirect_uri") != Some(want)
    {
        return fail("bad_redirect_uri");
    }
    let code = args.get("code").cloned().unwrap_or_default();
    let Some(g) = i.codes.remove(&code) else {
        return fail("invalid_code");
    };
    i.counter += 1;
    let n = i.counter;
    let issue = |kind: &str, user_id: &str, is_bot: bool| IssuedToken {
        token: if g.rotation {
            format!("xoxe.{kind}-{}-{n}", g.team_id)
        } else {
            format!("{kind}-{}-{n}-{}", g.team_id, fastrand::u64(..))
        },
        team_id: g.team_id.clone(),
        enterprise_id: g.enterprise.as_ref().map(|e| e.0.clone()),
        user_id: user_id.to_string(),
        is_bot,
        revoked: false,
        refresh_token: g.rotation.then(|| {
            let who = if is_bot { "bot" } else { "user" };
            format!("xoxe-1-{}-{n}-{who}", g.team_id)
        }),
    };
    let bot = issue("xoxb", &g.bot_user_id, true);
    i.tokens.push(bot.clone());
    let user = g.installer.as_ref().map(|u| issue("xoxp", u, false));
    if let Some(u) = &user {
        i.tokens.push(u.clone());
    }
    (ok(exchange_answer(&g, &bot, user.as_ref())), None)
}

/// The `oauth.v2.access` answer of a code exchange.
fn exchange_answer(g: &Grant, bot: &IssuedToken, user: Option<&IssuedToken>) -> Value {
    let mut v = json!({
        "ok": true, "access_token": bot.token, "token_type": "bot",
        "scope": "commands,chat:write,im:write,users:read",
        "bot_user_id": g.bot_user_id, "app_id": APP_ID,
        "team": if g.org_install { Value::Null } else { json!({"name": g.team_name, "id": g.team_id}) },
        "enterprise": match &g.enterprise { Some((id, name)) => json!({"name": name, "id": id}), None => Value::Null },
        "is_enterprise_install": g.org_install,
    });
    if let Some(u) = user {
        let mut au = json!({"id": u.user_id, "scope": "users:read", "access_token": u.token, "token_type": "user"});
        if g.rotation {
            au["expires_in"] = json!(g.expires_in);
            au["refresh_token"] = json!(u.refresh_token);
        }
        v["authed_user"] = au;
    } else {
        v["authed_user"] = json!({"id": "", "scope": null, "token_type": null});
    }
    if g.rotation {
        v["expires_in"] = json!(g.expires_in);
        v["refresh_token"] = json!(bot.refresh_token);
    }
    v
}

fn find<'a>(i: &'a Inner, token: Option<&str>) -> Result<&'a IssuedToken, &'static str> {
    let Some(t) = token.filter(|t| !t.is_empty()) else {
        return Err("not_authed");
    };
    match i.tokens.iter().find(|x| x.token == t) {
        None => Err("invalid_auth"),
        Some(x) if x.revoked => Err(if x.is_bot {
            "invalid_auth"
        } else {
            "token_revoked"
        }),
        Some(x) => Ok(x),
    }
}

fn auth_test(i: &Inner, token: Option<&str>) -> (Response, Option<String>) {
    match find(i, token) {
        Err(e) => fail(e),
        Ok(t) => {
            let mut v = json!({
                "ok": true, "url": format!("https://{}.slack.com/", t.team_id.to_lowercase()),
                "team": format!("Team {}", t.team_id), "user": if t.is_bot { "gatehouse" } else { "installer" },
                "team_id": t.team_id, "user_id": t.user_id, "is_enterprise_install": false,
                "app_id": APP_ID, "app_name": "Gatehouse",
            });
            if t.is_bot {
                v["bot_id"] = json!(format!("B{}", t.team_id.trim_start_matches('T')));
            }
            if let Some(e) = &t.enterprise_id {
                v["enterprise_id"] = json!(e);
            }
            (ok(v), None)
        }
    }
}

fn auth_revoke(
    i: &mut Inner,
    token: Option<&str>,
    args: &HashMap<String, String>,
) -> (Response, Option<String>) {
    let token = match find(i, token) {
        Err(e) => return fail(e),
        Ok(t) => t.token.clone(),
    };
    let dry = args.get("test").is_some_and(|v| v == "true" || v == "1");
    if !dry && let Some(t) = i.tokens.iter_mut().find(|t| t.token == token) {
        t.revoked = true;
    }
    (ok(json!({"ok": true, "revoked": !dry})), None)
}
