//! The web console in a real browser: headless Chromium driven through chromedriver (plain
//! WebDriver over HTTP, no client library). Signs in, approves a request, revokes a grant,
//! downloads the audit trail and verifies the chain; saves a screenshot of every step under
//! `target/console-screenshots/` and fails on any message the browser logged as an error (a
//! script error, a CSP violation, a missing asset).
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (Debian: `apt-get install -y chromium
//! chromium-driver`; `.ci/run` installs them). Without them the test prints that it skipped —
//! except under `CI=true`, where it fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testkit::db::backends;

use crate::helpers::*;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

struct Driver {
    child: Child,
    http: reqwest::Client,
    base: String,
    session: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Driver {
    async fn start(downloads: &Path) -> Driver {
        let port = free_port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = http.get(format!("{base}/status")).send().await {
                let v: Value = r.json().await.unwrap_or_default();
                if v["value"]["ready"] == true {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1400,1000"],
                "prefs": {"download.default_directory": downloads.to_str().unwrap(),
                          "download.prompt_for_download": false},
            },
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let r: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = r["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {r}"))
            .to_string();
        let d = Driver {
            child,
            http,
            base,
            session,
        };
        // Headless Chromium saves downloads only when told where (the DevTools protocol).
        d.cmd(
            "POST",
            "/goog/cdp/execute",
            json!({"cmd": "Browser.setDownloadBehavior",
                   "params": {"behavior": "allow", "downloadPath": downloads.to_str().unwrap()}}),
        )
        .await;
        d
    }

    async fn cmd(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let rb = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url).json(&body),
        };
        let r: Value = rb.send().await.unwrap().json().await.unwrap();
        if let Some(err) = r["value"]["error"].as_str() {
            panic!(
                "WebDriver {method} {path}: {err}: {}",
                r["value"]["message"]
            );
        }
        r["value"].clone()
    }

    async fn go(&self, url: &str) {
        self.cmd("POST", "/url", json!({"url": url})).await;
    }

    async fn find(&self, css: &str) -> String {
        // Pages render on the server; a short retry covers the navigation that just started.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let url = format!("{}/session/{}/element", self.base, self.session);
            let r: Value = self
                .http
                .post(url)
                .json(&json!({"using": "css selector", "value": css}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if let Some(id) = r["value"][ELEMENT].as_str() {
                return id.to_string();
            }
            assert!(Instant::now() < deadline, "no element {css}: {r}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn click(&self, css: &str) {
        let id = self.find(css).await;
        self.cmd("POST", &format!("/element/{id}/click"), json!({}))
            .await;
    }

    async fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css).await;
        self.cmd(
            "POST",
            &format!("/element/{id}/value"),
            json!({"text": text}),
        )
        .await;
    }

    async fn text(&self, css: &str) -> String {
        let id = self.find(css).await;
        self.cmd("GET", &format!("/element/{id}/text"), Value::Null)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    async fn screenshot(&self, dir: &Path, name: &str) {
        let png = self.cmd("GET", "/screenshot", Value::Null).await;
        let bytes = base64_decode(png.as_str().unwrap());
        std::fs::write(dir.join(format!("{name}.png")), bytes).unwrap();
    }

    /// Everything the browser logged since the last call.
    async fn browser_log(&self) -> Vec<Value> {
        self.cmd("POST", "/se/log", json!({"type": "browser"}))
            .await
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    async fn quit(&self) {
        let _ = self
            .http
            .delete(format!("{}/session/{}", self.base, self.session))
            .send()
            .await;
    }
}

/// Standard base64 (WebDriver screenshots), without another dependency.
fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            b'/' => 63,
            _ => 0,
        }
    };
    let bytes: Vec<u8> = s.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let pad = chunk.iter().filter(|&&c| c == b'=').count();
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= val(c) << (18 - 6 * i);
        }
        let b = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&b[..3 - pad.min(2)]);
    }
    out
}

fn screenshots_dir() -> PathBuf {
    // tests/ → the workspace's target/ (CARGO_TARGET_DIR when set).
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Errors the browser logged (SEVERE: script errors, CSP violations, failed loads).
fn errors(log: &[Value]) -> Vec<String> {
    log.iter()
        .filter(|e| e["level"] == "SEVERE")
        .map(|e| e["message"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_in_a_real_browser() {
    if !Path::new(CHROMIUM).exists() || !Path::new(CHROMEDRIVER).exists() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI: {CHROMIUM} or {CHROMEDRIVER} is missing (.ci/run installs them)"
        );
        eprintln!(
            "SKIPPED console_in_a_real_browser: {CHROMIUM} or {CHROMEDRIVER} not installed \
             (apt-get install -y chromium chromium-driver)"
        );
        return;
    }
    // One backend is enough for the browser's part: the console's SQL runs on both in
    // `console::console_actions_need_a_session_and_the_form_token`.
    let db = backends().await.into_iter().next().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let downloads = dir.path().join("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    let shots = screenshots_dir();
    let config = write_config(dir.path(), DRY_RUN_CONFIG);
    let opts = ServerOptions {
        config: &config,
        database_url: &db.url,
        admin_token: Some(ADMIN_TOKEN),
        extra_env: vec![],
    };
    let server = Server::start(&opts, dir.path());
    let api = Api::new(&server, Some(ADMIN_TOKEN));
    let (s, pending) = api
        .post("/api/requests", Some(request_body("U1", "guarded", "2h")))
        .await;
    assert_eq!(s, 201, "{pending}");
    let request_id = pending["id"].as_str().unwrap().to_string();

    let d = Driver::start(&downloads).await;
    let mut browser_errors = Vec::new();

    // Sign in.
    d.go(&server.url("/console/pending")).await;
    d.find("#token").await;
    d.screenshot(&shots, "01-sign-in").await;
    d.type_into("#token", ADMIN_TOKEN).await;
    d.click("#sign-in").await;
    d.find("#pending").await;
    assert!(d.text("#who").await.contains("console"));
    d.screenshot(&shots, "02-pending").await;
    browser_errors.extend(errors(&d.browser_log().await));

    // Approve the request: granted by the scheduler, shown on the grants page.
    d.click(&format!("tr[data-request=\"{request_id}\"] button.approve"))
        .await;
    assert_eq!(d.text("#notice").await, "Approved.");
    d.screenshot(&shots, "03-approved").await;
    let (grants, _) = api
        .wait_for("/api/grants?status=active", Duration::from_secs(60), |b| {
            b.as_array().is_some_and(|a| a.len() == 1)
        })
        .await;
    let grant_id = grants[0]["id"].as_str().unwrap().to_string();
    let (_, req) = api.get(&format!("/api/requests/{request_id}")).await;
    assert!(
        req["request"]["decided_by"].to_string().contains("console"),
        "{req}"
    );

    // Revoke the grant.
    d.go(&server.url("/console/grants")).await;
    d.find(&format!("tr[data-grant=\"{grant_id}\"]")).await;
    // The countdown script ran (the server wrote "1h 59m"; the script rewrites it each second).
    d.screenshot(&shots, "04-grants").await;
    d.click(&format!("tr[data-grant=\"{grant_id}\"] button.revoke"))
        .await;
    assert!(d.text("#notice").await.starts_with("Revocation requested"));
    d.screenshot(&shots, "05-revoked").await;
    api.wait_for(
        &format!("/api/grants/{grant_id}"),
        Duration::from_secs(60),
        |g| g["status"] == "revoked",
    )
    .await;

    // The other pages render without browser errors.
    for (page, marker, shot) in [
        ("/console/history", "#history", "06-history"),
        ("/console/health", "#job-stats", "07-health"),
        ("/console/charts", "#chart-active svg", "08-charts"),
        ("/console/slack", "#empty", "09-slack"),
    ] {
        d.go(&server.url(page)).await;
        d.find(marker).await;
        d.screenshot(&shots, shot).await;
    }
    browser_errors.extend(errors(&d.browser_log().await));

    // Download the audit trail (JSONL) and verify the chain.
    d.go(&server.url("/console/audit")).await;
    d.find("#audit").await;
    d.click("#download-jsonl").await;
    let file = downloads.join("gatehouse-audit.jsonl");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !file.exists() {
        assert!(
            Instant::now() < deadline,
            "the audit download did not arrive"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Chromium writes the whole file before renaming it from .crdownload.
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let (_, api_audit) = api.get("/api/audit?limit=1000").await;
    let api_events = api_audit["events"].as_array().unwrap();
    assert_eq!(
        lines.len(),
        api_events.len(),
        "the download holds every event"
    );
    for (i, (got, want)) in lines.iter().zip(api_events).enumerate() {
        assert_eq!(got["hash"], want["hash"], "event {i}");
        if i > 0 {
            assert_eq!(
                got["prev_hash"],
                lines[i - 1]["hash"],
                "the chain links at {i}"
            );
        }
    }
    d.click("#verify-chain").await;
    let result = d.text("#verify-result").await;
    assert!(result.starts_with("Chain intact"), "{result}");
    d.screenshot(&shots, "10-audit-verified").await;
    browser_errors.extend(errors(&d.browser_log().await));

    d.quit().await;
    assert!(
        browser_errors.is_empty(),
        "the browser logged errors: {browser_errors:#?}"
    );
    for n in ["01-sign-in", "05-revoked", "10-audit-verified"] {
        let p = shots.join(format!("{n}.png"));
        let bytes = std::fs::read(&p).unwrap();
        assert!(bytes.starts_with(b"\x89PNG"), "{} is a PNG", p.display());
    }
    eprintln!("console screenshots in {}", shots.display());
}
