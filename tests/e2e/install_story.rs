//! Slack installation into many workspaces through the real `gatehouse-server` (issue 8): the
//! OAuth install flow, tokens encrypted at rest (asserted on the raw `slack_installations` rows),
//! each workspace served with its own bot token (and an Enterprise Grid organisation's token for
//! its workspaces), refused states and failed exchanges, status, uninstall, lifecycle events,
//! Socket Mode with reconnects, and a rotating token refreshed when the server restarts.
//!
//! One server per database backend. `SLACK_API_URL` points at the Socket Mode fake, which relays
//! every other method to the OAuth fake (`oauth.v2.access`, `auth.test`, `auth.revoke`), which
//! relays the rest of the Web API to the main fake, so the one URL the server has reaches all
//! three, as the real `slack.com/api` does.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testkit::db::backends;
use testkit::slack::{self, FakeSlack, FakeUser, SlashCommand};
use testkit::slack_oauth::{self, FakeSlackOAuth, Grant};
use testkit::slack_socket::{self, FakeSocketMode};

use crate::helpers::*;
use crate::slack_helpers::SIGNING_SECRET;

/// 32 bytes, base64: what `GATEHOUSE_ENCRYPTION_KEY` holds.
const ENCRYPTION_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
/// Short, so the expired-state case costs two seconds rather than five minutes.
const STATE_TTL_SECS: u64 = 2;
const WAIT: Duration = Duration::from_secs(10);

const CONFIG: &str = r#"
[[resources]]
id = "dev-network"
description = "Development VPN network"
provider = "dry-run"
min_duration = "1s"
default_duration = "1h"
max_duration = "8h"
eligibility = ["anyone"]
approval = { mode = "auto" }
"#;

struct World {
    kind: String,
    db_url: String,
    slack: FakeSlack,
    oauth: FakeSlackOAuth,
    sock: FakeSocketMode,
    server: Server,
    http: reqwest::Client,
    config: std::path::PathBuf,
    dir: std::path::PathBuf,
    env: Vec<(&'static str, String)>,
}

impl World {
    async fn start(db_url: &str, kind: &str, dir: &std::path::Path) -> World {
        let slack = FakeSlack::start().await;
        // Each person's home workspace, as users.info reports it: a request from a workspace
        // that is not the person's home (nor in its organisation) is an external user's.
        for (u, team) in [
            ("UALICE", "TALPHA"),
            ("UBOB", "TBETA"),
            ("UCAROL", slack::TEAM_ID),
        ] {
            slack.add_user(
                FakeUser::new(u, &u.to_lowercase())
                    .email(&format!("{}@example.com", u.to_lowercase()))
                    .in_team(team),
            );
        }
        slack.add_channel("C0GENERAL", "general");
        let oauth = FakeSlackOAuth::start().await;
        oauth.relay_to(&slack.api_url());
        let sock = FakeSocketMode::start().await;
        sock.relay_to(&oauth.api_url());
        let config = write_config(dir, CONFIG);
        let env = vec![
            // Workspaces that are not installed fall back to this token.
            ("SLACK_BOT_TOKEN", slack.token().to_string()),
            ("SLACK_SIGNING_SECRET", SIGNING_SECRET.to_string()),
            ("SLACK_API_URL", sock.api_url()),
            ("SLACK_CLIENT_ID", slack_oauth::CLIENT_ID.to_string()),
            (
                "SLACK_CLIENT_SECRET",
                slack_oauth::CLIENT_SECRET.to_string(),
            ),
            ("GATEHOUSE_ENCRYPTION_KEY", ENCRYPTION_KEY.to_string()),
            ("SLACK_OAUTH_STATE_TTL_SECS", STATE_TTL_SECS.to_string()),
            ("SLACK_APP_TOKEN", slack_socket::APP_TOKEN.to_string()),
            ("APPROVAL_CHANNEL", "C0GENERAL".to_string()),
            ("RUST_LOG", "info,sqlx=warn,slack_adapter=debug".to_string()),
        ];
        let server = start_server(&config, db_url, &env, dir);
        World {
            kind: kind.to_string(),
            db_url: db_url.to_string(),
            slack,
            oauth,
            sock,
            server,
            http: reqwest::Client::new(),
            config,
            dir: dir.to_path_buf(),
            env,
        }
    }

    /// Stops the server (SIGTERM) and starts a new one on the same database and fakes.
    fn restart(self) -> World {
        let World {
            kind,
            db_url,
            slack,
            oauth,
            sock,
            server,
            http,
            config,
            dir,
            env,
        } = self;
        assert!(server.stop().success(), "{kind}: graceful stop");
        let server = start_server(&config, &db_url, &env, &dir);
        World {
            kind,
            db_url,
            slack,
            oauth,
            sock,
            server,
            http,
            config,
            dir,
            env,
        }
    }

    async fn send(&self, method: reqwest::Method, path: &str, admin: bool) -> (u16, String) {
        let mut rb = self.http.request(method, self.server.url(path));
        if admin {
            rb = rb.bearer_auth(ADMIN_TOKEN);
        }
        let r = rb.send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    async fn get_json(&self, path: &str) -> Value {
        let (status, body) = self.send(reqwest::Method::GET, path, true).await;
        assert_eq!(status, 200, "{}: GET {path}: {body}", self.kind);
        serde_json::from_str(&body).unwrap()
    }

    /// `GET /api/slack/oauth/start`: a fresh state.
    async fn start_install(&self) -> String {
        let v = self.get_json("/api/slack/oauth/start").await;
        let url = v["authorize_url"].as_str().unwrap();
        let state = v["state"].as_str().unwrap().to_string();
        assert!(url.contains(&format!("state={state}")), "{url}");
        assert!(
            url.contains(&format!("client_id={}", slack_oauth::CLIENT_ID)),
            "{url}"
        );
        state
    }

    /// Slack's redirect back to `/slack/oauth/callback` with `query`.
    async fn callback(&self, query: &str) -> (u16, String) {
        self.send(
            reqwest::Method::GET,
            &format!("/slack/oauth/callback?{query}"),
            false,
        )
        .await
    }

    /// The whole install of `team` (code registered, start, callback); the main fake then
    /// accepts the new bot token. Returns the bot token.
    async fn install(&self, team: &str, name: &str) -> String {
        self.install_grant(Grant::workspace(team, name)).await
    }

    async fn install_grant(&self, grant: Grant) -> String {
        let (team, name) = (grant.team_id.clone(), grant.team_name.clone());
        let code = format!("code-{team}");
        self.oauth.add_code(&code, grant);
        let state = self.start_install().await;
        let (status, page) = self.callback(&format!("code={code}&state={state}")).await;
        assert_eq!(status, 200, "{}: install {team}: {page}", self.kind);
        assert!(
            page.contains("installed") && page.contains(&name),
            "{}: {page}",
            self.kind
        );
        let bot = self.oauth.bot_token(&team).unwrap();
        self.slack.add_token(&bot);
        bot
    }

    /// Every secret the OAuth fake handed out: access and refresh tokens.
    fn issued_secrets(&self) -> Vec<String> {
        self.oauth
            .tokens()
            .into_iter()
            .flat_map(|t| [Some(t.token), t.refresh_token])
            .flatten()
            .collect()
    }

    async fn installed(&self, team: &str) -> bool {
        let v = self
            .get_json(&format!("/api/slack/installation/{team}"))
            .await;
        v["installed"] == json!(true)
    }

    /// `/access <text>` from `user` of `team`, signed; returns the trigger id it carried.
    async fn slash(&self, team: &str, user: &str, text: &str) -> String {
        let trigger = self.slack.trigger_id();
        let mut cmd =
            SlashCommand::new("/access", user, text, &self.slack.response_url(), &trigger);
        cmd.team_id = team.into();
        let body = cmd.body();
        let r = self
            .post_signed(
                "/slack/commands",
                "application/x-www-form-urlencoded",
                &body,
            )
            .await;
        assert_eq!(r.0, 200, "{}: /access from {team}: {}", self.kind, r.1);
        trigger
    }

    async fn post_signed(&self, path: &str, content_type: &str, body: &str) -> (u16, String) {
        let mut rb = self
            .http
            .post(self.server.url(path))
            .header("content-type", content_type)
            .body(body.to_string());
        for (k, v) in slack::signed_headers(SIGNING_SECRET, body) {
            rb = rb.header(k.as_str(), v.as_str());
        }
        let r = rb.send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// An Events API callback from `team`.
    async fn event(&self, team: &str, event: Value) {
        let mut env = slack::event_callback(&format!("Ev{}", fastrand_id()), event);
        env["team_id"] = json!(team);
        env["authorizations"][0]["team_id"] = json!(team);
        let body = env.to_string();
        let r = self
            .post_signed("/slack/events", "application/json", &body)
            .await;
        assert_eq!(r.0, 200, "{}: event: {}", self.kind, r.1);
    }

    /// The token `views.open` was called with for `trigger` (the modal `/access` opens).
    async fn modal_token(&self, trigger: &str) -> String {
        let t = trigger.to_string();
        let ok = self
            .slack
            .wait_until(WAIT, |s| {
                s.calls_to("views.open")
                    .iter()
                    .any(|c| c.args["trigger_id"] == t.as_str())
            })
            .await;
        assert!(
            ok,
            "{}: no views.open for {trigger}\n{}",
            self.kind,
            self.dump()
        );
        self.slack
            .calls_to("views.open")
            .into_iter()
            .find(|c| c.args["trigger_id"] == trigger)
            .and_then(|c| c.token)
            .unwrap()
    }

    async fn wait_uninstalled(&self, team: &str) {
        let start = Instant::now();
        while self.installed(team).await {
            assert!(
                start.elapsed() < WAIT,
                "{}: {team} still installed\n{}",
                self.kind,
                self.dump()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn dump(&self) -> String {
        let log = self.server.log_text();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        let mut out = String::from("server log tail:\n");
        for l in tail.into_iter().rev() {
            out.push_str(l);
            out.push('\n');
        }
        out
    }
}

fn start_server(
    config: &std::path::Path,
    db_url: &str,
    env: &[(&'static str, String)],
    dir: &std::path::Path,
) -> Server {
    let opts = ServerOptions {
        config,
        database_url: db_url,
        admin_token: Some(ADMIN_TOKEN),
        extra_env: env.to_vec(),
    };
    Server::start(&opts, dir)
}

fn fastrand_id() -> String {
    format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

// ------------------------------------------------------------------------------------------------
// Raw rows

/// One raw row: column name and value as bytes.
type RawRow = Vec<(String, Vec<u8>)>;

fn column<'a>(row: &'a RawRow, name: &str) -> &'a [u8] {
    &row.iter().find(|c| c.0 == name).unwrap().1
}

/// Every column of every `slack_installations` row, as bytes, read straight from the database.
async fn raw_installations(db_url: &str) -> Vec<RawRow> {
    use sqlx::{Column, Connection, Row};
    let mut out = vec![];
    macro_rules! collect {
        ($rows:expr) => {
            for row in $rows {
                let mut cols = vec![];
                for i in 0..row.len() {
                    let bytes = if let Ok(v) = row.try_get::<Option<Vec<u8>>, _>(i) {
                        v.unwrap_or_default()
                    } else if let Ok(v) = row.try_get::<Option<String>, _>(i) {
                        v.unwrap_or_default().into_bytes()
                    } else if let Ok(v) = row.try_get::<Option<i64>, _>(i) {
                        v.map(|n| n.to_string()).unwrap_or_default().into_bytes()
                    } else if let Ok(v) = row.try_get::<Option<bool>, _>(i) {
                        v.map(|n| n.to_string()).unwrap_or_default().into_bytes()
                    } else {
                        panic!("column {i} of slack_installations has an unexpected type");
                    };
                    cols.push((row.column(i).name().to_string(), bytes));
                }
                out.push(cols);
            }
        };
    }
    if db_url.starts_with("sqlite:") {
        let mut c = sqlx::SqliteConnection::connect(db_url).await.unwrap();
        let rows = sqlx::query("SELECT * FROM slack_installations")
            .fetch_all(&mut c)
            .await
            .unwrap();
        collect!(rows);
        c.close().await.unwrap();
    } else {
        let mut c = sqlx::PgConnection::connect(db_url).await.unwrap();
        let rows = sqlx::query("SELECT * FROM slack_installations")
            .fetch_all(&mut c)
            .await
            .unwrap();
        collect!(rows);
        c.close().await.unwrap();
    }
    out
}

fn base64(bytes: &[u8], alphabet: &[u8; 64]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(alphabet[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// The forms a careless store might keep `token` in: clear, hex (either case), and base64
/// (standard and URL-safe) at each of the three byte alignments it could start at inside a
/// longer encoded value (the edge characters, which depend on neighbours, are cut off).
fn encodings(token: &str) -> Vec<String> {
    const STD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let hex: String = token.bytes().map(|b| format!("{b:02x}")).collect();
    let mut out = vec![token.to_string(), hex.to_uppercase(), hex];
    for alphabet in [STD, URL] {
        for pad in 0..3 {
            let mut bytes = vec![0u8; pad];
            bytes.extend_from_slice(token.as_bytes());
            let enc = base64(&bytes, alphabet);
            // Skip the characters that mix in the padding bytes and the last, partial group.
            let start = (pad * 8).div_ceil(6);
            let end = enc.len().saturating_sub(4);
            out.push(enc[start..end].to_string());
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// No token the OAuth fake ever issued appears in any column of any row, in any encoding.
fn assert_no_clear_tokens(kind: &str, rows: &[RawRow], tokens: &[String]) {
    for token in tokens {
        for enc in encodings(token) {
            for row in rows {
                for (name, col) in row {
                    assert!(
                        !contains(col, enc.as_bytes()),
                        "{kind}: column {name} of slack_installations holds a token as {enc:?}"
                    );
                }
            }
        }
    }
}

// ------------------------------------------------------------------------------------------------
// The story

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_story() {
    for db in backends().await {
        let dir = tempfile::tempdir().unwrap();
        let started = Instant::now();
        let w = World::start(&db.url, db.kind, dir.path()).await;
        let boot = started.elapsed();
        // Socket Mode comes up on its own from SLACK_APP_TOKEN.
        assert!(
            w.sock.wait_connections(1, WAIT).await,
            "{}: Socket Mode did not connect\n{}",
            w.kind,
            w.dump()
        );

        install_and_isolation(&w).await;
        refused_states(&w).await;
        status_uninstall_and_events(&w).await;
        socket_mode(&w).await;
        let w = refresh_after_restart(w).await;

        // Nothing Gatehouse sent was refused by the fake.
        for c in w.slack.calls() {
            assert!(
                c.status == 200 && c.error.is_none(),
                "{}: failed Slack call {} {:?}: {}",
                w.kind,
                c.method,
                c.error,
                c.body
            );
        }
        eprintln!(
            "{}: install story took {:?} (server up in {boot:?})",
            w.kind,
            started.elapsed()
        );
    }
}

/// Install → callback → encrypted at rest → each workspace's commands served with its token.
async fn install_and_isolation(w: &World) {
    // The start endpoint is for admins only.
    let (status, _) = w
        .send(reqwest::Method::GET, "/api/slack/oauth/start", false)
        .await;
    assert_eq!(status, 401, "{}: start without the admin token", w.kind);
    let alpha = w.install("TALPHA", "Alpha Corp").await;
    let beta = w.install("TBETA", "Beta Inc").await;
    assert_ne!(alpha, beta);

    // The exchange used Basic auth and a form body; the identity was read with the new token.
    for ex in w.oauth.calls_to("oauth.v2.access") {
        assert_eq!(
            ex.basic_client_id.as_deref(),
            Some(slack_oauth::CLIENT_ID),
            "{}",
            w.kind
        );
        assert!(!ex.args.contains_key("client_secret"), "{}", w.kind);
        assert!(
            ex.content_type
                .starts_with("application/x-www-form-urlencoded")
        );
    }
    let tested: Vec<_> = w
        .oauth
        .calls_to("auth.test")
        .into_iter()
        .filter_map(|c| c.bearer)
        .collect();
    assert!(
        tested.contains(&alpha) && tested.contains(&beta),
        "{}",
        w.kind
    );

    // At rest: two rows, ciphertext only (bot and user tokens, clear, hex or base64).
    let rows = raw_installations(&w.db_url).await;
    assert_eq!(rows.len(), 2, "{}: installation rows", w.kind);
    let issued = w.issued_secrets();
    assert_eq!(
        issued.len(),
        4,
        "{}: bot and user token per workspace",
        w.kind
    );
    assert_no_clear_tokens(&w.kind, &rows, &issued);
    for row in &rows {
        // Stored, as version-1 ciphertext (0x01, key id, nonce, at least a tag), not omitted.
        for name in ["bot_token_encrypted", "user_token_encrypted"] {
            let ct = column(row, name);
            assert!(
                ct.len() >= 1 + 8 + 12 + 16 && ct[0] == 1,
                "{}: {name} is not ciphertext ({} bytes)",
                w.kind,
                ct.len()
            );
        }
    }

    // Each workspace's command is answered with its own bot token; a workspace that is not
    // installed gets SLACK_BOT_TOKEN.
    let t_alpha = w.slash("TALPHA", "UALICE", "").await;
    let t_beta = w.slash("TBETA", "UBOB", "").await;
    let t_other = w.slash(slack::TEAM_ID, "UCAROL", "").await;
    assert_eq!(w.modal_token(&t_alpha).await, alpha, "{}: alpha", w.kind);
    assert_eq!(w.modal_token(&t_beta).await, beta, "{}: beta", w.kind);
    assert_eq!(
        w.modal_token(&t_other).await,
        slack::BOT_TOKEN,
        "{}: not installed",
        w.kind
    );

    // An Enterprise Grid organisation installed org-wide: a command from any of its workspaces
    // is served with the organisation's token.
    let org = w
        .install_grant(
            Grant::workspace("TORG", "")
                .enterprise("EGRID", "Grid Org")
                .org_wide(),
        )
        .await;
    let trigger = w.slack.trigger_id();
    let mut cmd = SlashCommand::new("/access", "UCAROL", "", &w.slack.response_url(), &trigger);
    cmd.team_id = "TGRIDWS1".into();
    let body = format!("{}&enterprise_id=EGRID", cmd.body());
    let (status, text) = w
        .post_signed(
            "/slack/commands",
            "application/x-www-form-urlencoded",
            &body,
        )
        .await;
    assert_eq!(status, 200, "{}: {text}", w.kind);
    assert_eq!(w.modal_token(&trigger).await, org, "{}: org-wide", w.kind);
    let v = w.get_json("/api/slack/installation/EGRID").await;
    assert_eq!(v["installed"], json!(true), "{}: {v}", w.kind);
    assert_eq!(v["is_enterprise_install"], json!(true), "{}: {v}", w.kind);
    assert_eq!(v["enterprise_name"], json!("Grid Org"), "{}: {v}", w.kind);
    let (status, body) = w
        .send(
            reqwest::Method::DELETE,
            "/api/slack/installation/EGRID",
            true,
        )
        .await;
    assert_eq!(status, 200, "{}: {body}", w.kind);
    assert!(w.oauth.is_revoked(&org), "{}", w.kind);
    assert_eq!(raw_installations(&w.db_url).await.len(), 2, "{}", w.kind);

    // A request typed in Alpha: every Slack call it causes (DM of the outcome) uses Alpha's
    // token, never Beta's or the default.
    let before = w.slack.calls().len();
    w.slash(
        "TALPHA",
        "UALICE",
        "request dev-network 1h e2e install story",
    )
    .await;
    let ok = w
        .slack
        .wait_until(WAIT, |s| {
            s.calls_to("chat.postMessage").iter().any(|c| {
                c.args["channel"] == "UALICE" || c.args["channel"] == slack::dm_id("UALICE")
            })
        })
        .await;
    assert!(ok, "{}: no DM to UALICE\n{}", w.kind, w.dump());
    // Opening a form reads the person's profile after the form is open (docs/slack-app.md), so
    // the profile reads of the forms opened above may land after `before`: they are not caused
    // by Alpha's request. (This assertion failed about one run in three once the ack got faster.)
    let caused: Vec<_> = w.slack.calls()[before..]
        .iter()
        .filter(|c| c.method != "response_url" && c.method != "upload")
        .filter(|c| c.method != "users.info" || c.args["user"] == "UALICE")
        .cloned()
        .collect();
    assert!(!caused.is_empty(), "{}", w.kind);
    for c in &caused {
        assert_eq!(
            c.token.as_deref(),
            Some(alpha.as_str()),
            "{}: {} for Alpha's request used another token",
            w.kind,
            c.method
        );
    }
}

/// Expired, reused, forged and missing states and a cancelled install: nothing exchanged, nothing
/// written, and the page says why.
async fn refused_states(w: &World) {
    let exchanges = w.oauth.calls_to("oauth.v2.access").len();
    let rows = raw_installations(&w.db_url).await.len();
    w.oauth
        .add_code("code-gamma", Grant::workspace("TGAMMA", "Gamma"));

    let used = w.start_install().await;
    w.oauth
        .add_code("code-used", Grant::workspace("TUSED", "Used"));
    let (s, _) = w.callback(&format!("code=code-used&state={used}")).await;
    assert_eq!(s, 200, "{}", w.kind);
    w.slack.add_token(&w.oauth.bot_token("TUSED").unwrap());
    let exchanges = exchanges + 1;
    let rows = rows + 1;

    let expired = w.start_install().await;
    tokio::time::sleep(Duration::from_millis(STATE_TTL_SECS * 1000 + 600)).await;
    let forged = "0b1f7e5c-3c1e-4b7a-9a55-6c1f0d2b9e11";
    let cases = [
        (format!("code=code-gamma&state={expired}"), 400, "expired"),
        (format!("code=code-gamma&state={used}"), 400, "already used"),
        (
            format!("code=code-gamma&state={forged}"),
            400,
            "not one Gatehouse issued",
        ),
        ("code=code-gamma".to_string(), 400, "no state"),
        (
            format!("error=access_denied&state={}", w.start_install().await),
            200,
            "cancelled",
        ),
    ];
    for (query, want, says) in cases {
        let (status, page) = w.callback(&query).await;
        assert_eq!(status, want, "{}: {query}: {page}", w.kind);
        assert!(page.contains(says), "{}: {query}: {page}", w.kind);
        assert!(!page.contains("xox"), "{}: {page}", w.kind);
    }
    assert_eq!(
        w.oauth.calls_to("oauth.v2.access").len(),
        exchanges,
        "{}: a refused state must not reach Slack",
        w.kind
    );
    assert_eq!(
        raw_installations(&w.db_url).await.len(),
        rows,
        "{}: nothing written",
        w.kind
    );
    assert!(!w.installed("TGAMMA").await, "{}", w.kind);

    // Slack refuses the code: the page says so, nothing is written.
    w.oauth.fail_next("oauth.v2.access", "invalid_code");
    let st = w.start_install().await;
    let (status, page) = w.callback(&format!("code=code-gamma&state={st}")).await;
    assert_eq!(status, 502, "{}: {page}", w.kind);
    assert!(page.contains("invalid_code"), "{}: {page}", w.kind);
    // A failure after the exchange (the identity check) revokes the tokens just obtained.
    w.oauth.fail_next("auth.test", "account_inactive");
    let st = w.start_install().await;
    let (status, page) = w.callback(&format!("code=code-gamma&state={st}")).await;
    assert_eq!(status, 502, "{}: {page}", w.kind);
    assert!(page.contains("revoked"), "{}: {page}", w.kind);
    let gamma: Vec<_> = w
        .oauth
        .tokens()
        .into_iter()
        .filter(|t| t.team_id == "TGAMMA")
        .collect();
    assert_eq!(gamma.len(), 2, "{}", w.kind);
    assert!(
        gamma.iter().all(|t| t.revoked),
        "{}: tokens of a failed install left live: {gamma:?}",
        w.kind
    );
    assert!(!w.installed("TGAMMA").await, "{}", w.kind);
    assert_eq!(raw_installations(&w.db_url).await.len(), rows, "{}", w.kind);

    // The expired state is cleaned up by the admin endpoint (the cancelled one is spent too).
    let (status, body) = w
        .send(
            reqwest::Method::POST,
            "/api/slack/cleanup-expired-states",
            true,
        )
        .await;
    assert_eq!(status, 200, "{}: {body}", w.kind);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert!(v["deleted"].as_u64().unwrap() >= 1, "{}: {v}", w.kind);
}

/// Status without tokens, uninstall revoking, and `app_uninstalled` / `tokens_revoked` events.
async fn status_uninstall_and_events(w: &World) {
    let alpha = w.oauth.bot_token("TALPHA").unwrap();
    let (status, body) = w
        .send(
            reqwest::Method::GET,
            "/api/slack/installation/TALPHA",
            false,
        )
        .await;
    assert_eq!(
        status, 401,
        "{}: status needs the admin token: {body}",
        w.kind
    );
    let v = w.get_json("/api/slack/installation/TALPHA").await;
    assert_eq!(v["installed"], json!(true), "{}: {v}", w.kind);
    assert_eq!(v["team_id"], json!("TALPHA"), "{}", w.kind);
    assert_eq!(v["team_name"], json!("Alpha Corp"), "{}", w.kind);
    assert_eq!(v["bot_user_id"], json!("UALPHABOT"), "{}", w.kind);
    assert_eq!(v["installer_user_id"], json!("UALPHAINST"), "{}", w.kind);
    let text = v.to_string();
    assert!(!text.contains("xox"), "{}: {text}", w.kind);
    for t in w.oauth.tokens() {
        assert!(
            !text.contains(&t.token),
            "{}: a token in the status",
            w.kind
        );
    }
    assert!(!w.installed("TNOPE").await, "{}", w.kind);

    // DELETE revokes the bot and user tokens at Slack, then removes the installation.
    let beta: Vec<String> = w
        .oauth
        .tokens()
        .into_iter()
        .filter(|t| t.team_id == "TBETA")
        .map(|t| t.token)
        .collect();
    assert_eq!(beta.len(), 2, "{}", w.kind);
    let (status, body) = w
        .send(
            reqwest::Method::DELETE,
            "/api/slack/installation/TBETA",
            false,
        )
        .await;
    assert_eq!(status, 401, "{}: {body}", w.kind);
    let (status, body) = w
        .send(
            reqwest::Method::DELETE,
            "/api/slack/installation/TBETA",
            true,
        )
        .await;
    assert_eq!(status, 200, "{}: {body}", w.kind);
    let revoked_with: Vec<_> = w
        .oauth
        .calls_to("auth.revoke")
        .into_iter()
        .filter_map(|c| c.bearer)
        .collect();
    for t in &beta {
        assert!(
            w.oauth.is_revoked(t),
            "{}: Beta's token not revoked",
            w.kind
        );
        assert!(revoked_with.contains(t), "{}", w.kind);
    }
    assert!(!w.oauth.is_revoked(&alpha), "{}: Alpha untouched", w.kind);
    assert!(!w.installed("TBETA").await, "{}", w.kind);
    let (status, _) = w
        .send(
            reqwest::Method::DELETE,
            "/api/slack/installation/TBETA",
            true,
        )
        .await;
    assert_eq!(status, 404, "{}: second uninstall", w.kind);

    // Events: app_uninstalled for one workspace, tokens_revoked (bot) for another; a user-only
    // tokens_revoked keeps the installation.
    w.install("TEPS", "Epsilon").await;
    w.install("TZETA", "Zeta").await;
    w.event(
        "TALPHA",
        json!({"type": "tokens_revoked", "tokens": {"oauth": ["UALPHAINST"]}}),
    )
    .await;
    w.event("TEPS", json!({"type": "app_uninstalled"})).await;
    w.event(
        "TZETA",
        json!({"type": "tokens_revoked", "tokens": {"bot": ["UZETABOT"]}}),
    )
    .await;
    w.wait_uninstalled("TEPS").await;
    w.wait_uninstalled("TZETA").await;
    // Slack sends both events on an uninstall, in either order: the second is a no-op.
    w.event("TZETA", json!({"type": "app_uninstalled"})).await;
    w.event(
        "TEPS",
        json!({"type": "tokens_revoked", "tokens": {"bot": ["UEPSBOT"]}}),
    )
    .await;
    assert!(w.installed("TALPHA").await, "{}: Alpha kept", w.kind);
    let left = raw_installations(&w.db_url).await;
    // Alpha and the workspace installed in `refused_states`.
    assert_eq!(left.len(), 2, "{}: rows left", w.kind);
    let alpha_row = left
        .iter()
        .find(|r| column(r, "team_id") == b"TALPHA")
        .unwrap();
    assert!(
        column(alpha_row, "user_token_encrypted").is_empty(),
        "{}: the revoked user token is forgotten",
        w.kind
    );
    assert!(
        !column(alpha_row, "bot_token_encrypted").is_empty(),
        "{}",
        w.kind
    );
}

/// Socket Mode: a slash command and an interaction through the WebSocket, served with the
/// workspace's token; the server reconnects after the fake drops the connection.
async fn socket_mode(w: &World) {
    let alpha = w.oauth.bot_token("TALPHA").unwrap();
    let id = w
        .sock
        .send_slash_command(
            "TALPHA",
            "UALICE",
            "/access",
            "help",
            &w.slack.response_url(),
            &w.slack.trigger_id(),
        )
        .unwrap();
    let ack = w.sock.wait_ack(&id, WAIT).await;
    let ack = ack.unwrap_or_else(|| panic!("{}: no ack\n{}", w.kind, w.dump()));
    let text = ack["payload"]["text"].as_str().unwrap_or_default();
    assert!(text.contains("request"), "{}: {ack}", w.kind);

    // `/access` with no text opens the modal with Alpha's token.
    let trigger = w.slack.trigger_id();
    let id = w
        .sock
        .send_slash_command(
            "TALPHA",
            "UALICE",
            "/access",
            "",
            &w.slack.response_url(),
            &trigger,
        )
        .unwrap();
    assert!(w.sock.wait_ack(&id, WAIT).await.is_some(), "{}", w.kind);
    assert_eq!(w.modal_token(&trigger).await, alpha, "{}", w.kind);

    // An interaction (the "request access" button) through the socket.
    let trigger = w.slack.trigger_id();
    let mut payload = slack::block_actions_payload(
        "UALICE",
        "gatehouse_open_request_modal",
        "",
        "C0GENERAL",
        "1.2",
        &w.slack.response_url(),
        &trigger,
    );
    payload["team"]["id"] = json!("TALPHA");
    payload["user"]["team_id"] = json!("TALPHA");
    let id = w.sock.send_envelope("interactive", payload, true).unwrap();
    assert!(w.sock.wait_ack(&id, WAIT).await.is_some(), "{}", w.kind);
    assert_eq!(w.modal_token(&trigger).await, alpha, "{}", w.kind);

    // Dropped without a close frame: the server opens a new connection by itself.
    let before = w.sock.connections();
    w.sock.drop_connection();
    let t = Instant::now();
    assert!(
        w.sock.wait_connections(before + 1, WAIT).await,
        "{}: no reconnect after a drop\n{}",
        w.kind,
        w.dump()
    );
    let reconnect = t.elapsed();
    let id = w
        .sock
        .send_slash_command(
            "TALPHA",
            "UALICE",
            "/access",
            "help",
            &w.slack.response_url(),
            &w.slack.trigger_id(),
        )
        .unwrap();
    assert!(
        w.sock.wait_ack(&id, WAIT).await.is_some(),
        "{}: no ack after reconnect",
        w.kind
    );

    // Slack's refresh hint: `disconnect`, then the socket closes; the server reconnects.
    let before = w.sock.connections();
    w.sock.send_disconnect("refresh_requested");
    assert!(
        w.sock.wait_connections(before + 1, WAIT).await,
        "{}: no reconnect after a disconnect hint\n{}",
        w.kind,
        w.dump()
    );
    let id = w
        .sock
        .send_slash_command(
            "TALPHA",
            "UALICE",
            "/access",
            "help",
            &w.slack.response_url(),
            &w.slack.trigger_id(),
        )
        .unwrap();
    assert!(w.sock.wait_ack(&id, WAIT).await.is_some(), "{}", w.kind);
    eprintln!("{}: Socket Mode reconnected in {reconnect:?}", w.kind);
}

/// A rotating token close to expiry is refreshed when the server starts (the maintenance round
/// runs at once); the new pair is stored encrypted and used, the old token is dead at Slack.
/// The restart also proves the stored tokens decrypt in a new process.
async fn refresh_after_restart(w: World) -> World {
    // One hour left: inside the two-hour refresh margin.
    let old = w
        .install_grant(Grant::workspace("TROT", "Rotor").expiring_in(3600))
        .await;
    let v = w.get_json("/api/slack/installation/TROT").await;
    let old_expiry = v["bot_token_expires_at"].clone();
    assert!(!old_expiry.is_null(), "{}: {v}", w.kind);
    let refreshes = |o: &FakeSlackOAuth| {
        o.calls_to("oauth.v2.access")
            .into_iter()
            .filter(|c| c.args.get("grant_type").map(String::as_str) == Some("refresh_token"))
            .count()
    };
    assert_eq!(refreshes(&w.oauth), 0, "{}: refreshed too early", w.kind);

    let t = Instant::now();
    let w = w.restart();
    let start = Instant::now();
    while refreshes(&w.oauth) == 0 {
        assert!(
            start.elapsed() < WAIT,
            "{}: no refresh after restart\n{}",
            w.kind,
            w.dump()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let start = Instant::now();
    let new = loop {
        let v = w.get_json("/api/slack/installation/TROT").await;
        if v["bot_token_expires_at"] != old_expiry {
            break w.oauth.bot_token("TROT").unwrap();
        }
        assert!(start.elapsed() < WAIT, "{}: refresh not saved: {v}", w.kind);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!(
        "{}: token refreshed {:?} after restart",
        w.kind,
        t.elapsed()
    );
    assert_ne!(new, old, "{}", w.kind);
    assert!(w.oauth.is_revoked(&old), "{}: old token still live", w.kind);
    w.slack.add_token(&new);
    let c = w.oauth.calls_to("oauth.v2.access").pop().unwrap();
    assert_eq!(
        c.basic_client_id.as_deref(),
        Some(slack_oauth::CLIENT_ID),
        "{}: refresh authenticates the client",
        w.kind
    );

    let rows = raw_installations(&w.db_url).await;
    assert_no_clear_tokens(&w.kind, &rows, &w.issued_secrets());
    let trigger = w.slash("TROT", "UALICE", "").await;
    assert_eq!(
        w.modal_token(&trigger).await,
        new,
        "{}: the new token",
        w.kind
    );
    let trigger = w.slash("TALPHA", "UALICE", "").await;
    assert_eq!(
        w.modal_token(&trigger).await,
        w.oauth.bot_token("TALPHA").unwrap(),
        "{}: Alpha after restart",
        w.kind
    );
    w
}

#[test]
fn encodings_find_a_token_inside_longer_values() {
    let token = "xoxb-T1-42-secret";
    const STD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for prefix in ["", "a", "ab", "abc"] {
        let clear = format!("{prefix}{token}-tail");
        let stored = [
            clear.clone(),
            base64(clear.as_bytes(), STD),
            clear.bytes().map(|b| format!("{b:02X}")).collect(),
        ];
        for value in stored {
            assert!(
                encodings(token)
                    .iter()
                    .any(|e| contains(value.as_bytes(), e.as_bytes())),
                "{value}"
            );
        }
    }
    assert!(
        !encodings(token)
            .iter()
            .any(|e| contains(b"unrelated ciphertext", e.as_bytes()))
    );
}
