//! Starting the binaries and talking to them.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const ADMIN_TOKEN: &str = "e2e-admin-token";

/// `target/debug/<name>`, building the binaries first if they are missing (`make test` builds
/// them before running the tests).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
    let path = dir.join(name);
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--bins"])
            .status()
            .unwrap();
        assert!(status.success(), "cargo build --bins failed");
    }
    assert!(
        path.exists(),
        "{} not found; run `cargo build --bins`",
        path.display()
    );
    path
}

/// A running `gatehouse-server`; killed when dropped.
pub struct Server {
    pub child: Child,
    pub base: String,
    pub log: PathBuf,
    pub started: Instant,
}

pub struct ServerOptions<'a> {
    pub config: &'a Path,
    pub database_url: &'a str,
    pub admin_token: Option<&'a str>,
    pub extra_env: Vec<(&'a str, String)>,
}

impl Server {
    pub fn start(opts: &ServerOptions<'_>, log_dir: &Path) -> Server {
        let log = log_dir.join(format!("server-{}.log", fastrand_suffix()));
        let stderr = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(binary("gatehouse-server"));
        cmd.arg("--config")
            .arg(opts.config)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .env("DATABASE_URL", opts.database_url)
            .env("RUST_LOG", "info,sqlx=warn")
            .env_remove("GATEHOUSE_ADMIN_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr));
        if let Some(t) = opts.admin_token {
            cmd.env("GATEHOUSE_ADMIN_TOKEN", t);
        }
        for (k, v) in &opts.extra_env {
            cmd.env(k, v);
        }
        let started = Instant::now();
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        let mut reader = BufReader::new(stdout);
        reader.read_line(&mut line).unwrap();
        let base = line
            .trim()
            .strip_prefix("gatehouse-server listening on ")
            .unwrap_or_else(|| {
                panic!(
                    "server did not start: {line:?}; log: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            })
            .to_string();
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in reader.lines() {});
        Server {
            child,
            base,
            log,
            started,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// SIGKILL: no chance to clean up, as in a crash.
    pub fn crash(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM and wait for a graceful exit.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id() as i32;
        send_sigterm(pid);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "server did not stop after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn send_sigterm(pid: i32) {
    // The kill(1) command keeps this crate free of `unsafe` (the workspace forbids it).
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
}

fn fastrand_suffix() -> String {
    format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

/// A small admin-API client.
pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
    pub token: Option<String>,
}

impl Api {
    pub fn new(server: &Server, token: Option<&str>) -> Api {
        Api {
            http: reqwest::Client::new(),
            base: server.base.clone(),
            token: token.map(String::from),
        }
    }

    fn auth(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .auth(self.http.get(format!("{}{path}", self.base)))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn post(&self, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut rb = self.auth(self.http.post(format!("{}{path}", self.base)));
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn post_raw(
        &self,
        path: &str,
        content_type: &str,
        body: &'static str,
    ) -> (u16, Value) {
        let r = self
            .auth(self.http.post(format!("{}{path}", self.base)))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Polls `GET path` until `pred` holds; returns the body and how long it took.
    pub async fn wait_for(
        &self,
        path: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> (Value, Duration) {
        let start = Instant::now();
        loop {
            let (status, body) = self.get(path).await;
            if status == 200 && pred(&body) {
                return (body, start.elapsed());
            }
            assert!(
                start.elapsed() < timeout,
                "timed out waiting on {path}: last {status} {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Writes a config file into `dir`.
pub fn write_config(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("gatehouse.toml");
    std::fs::write(&p, text).unwrap();
    p
}

pub const DRY_RUN_CONFIG: &str = r#"
[[resources]]
id = "crashy"
provider = "dry-run"
min_duration = "1s"
default_duration = "1h"
max_duration = "8h"
approval = { mode = "auto" }

[[resources]]
id = "guarded"
provider = "dry-run"
min_duration = "1s"
default_duration = "1h"
max_duration = "8h"
approval = { mode = "approvers", approvers = { users = ["UAPPROVER"] } }
"#;

pub fn request_body(user: &str, resource: &str, duration: &str) -> Value {
    serde_json::json!({
        "team_id": "T1", "user_id": user, "email": format!("{}@example.com", user.to_lowercase()),
        "resource": resource, "duration": duration, "justification": "e2e test",
    })
}

/// Kinds of the audit events, in chain order.
pub async fn audit_kinds(api: &Api) -> Vec<String> {
    let (_, body) = api.get("/api/audit?limit=1000").await;
    body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect()
}
