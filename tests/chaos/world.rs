//! The world a chaos run happens in: the fakes (Slack, Cloud Connexa, GCP), the servers as child
//! processes, a Slack-side client that resends a delivery when the server it went to died, and a
//! sampler that watches the fakes' state for access nobody holds a live grant for.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::Value;
use testkit::cloudconnexa::{FakeCloudConnexa, FakeConfig};
use testkit::gcp::FakeGcp;
use testkit::slack::{FakeMessage, FakeSlack, FakeUser, dm_id, signed_headers};

pub const SIGNING_SECRET: &str = "chaos-slack-signing-secret";
pub const ADMIN_TOKEN: &str = "chaos-admin-token";
pub const APPROVALS_ID: &str = "C0CHAOSAPPROVALS";
pub const APPROVALS_NAME: &str = "chaos-approvals";
pub const APPROVER: &str = "UAPPROVER";
pub const APPROVE: &str = "gatehouse_approve";
pub const NETWORK: &str = "chaos-net";
pub const GROUP: &str = "chaos-net-temp";
pub const PROJECT: &str = "chaos-proj";
pub const VPN: &str = "chaos-vpn";
pub const GCP: &str = "chaos-gcp";
pub const DRY: &str = "chaos-dry";
pub const RESOURCES: [&str; 3] = [VPN, GCP, DRY];

/// Short job leases (renewed every second by a live server) so that a job whose server was
/// SIGKILLed is taken again within 3 s; with the default 120 s a revocation claimed at the moment
/// of a crash waits two minutes (docs/operations.md, "Job leases"). Reconciliation as often as
/// the server allows (every 60 s; the first pass a minute after start) so drift repair races the
/// lifecycles of the longer runs.
pub const CONFIG: &str = r#"
[server]
max_idle_secs = 1
job_lease_secs = 3
reconcile_interval_secs = 60
call_timeout_secs = 10

# Each simulated person runs lifecycle after lifecycle, far faster than a person would:
# the per-person and per-workspace limits (docs/rate-limits.md) are not what this test is about.
[server.rate_limits]
requests_per_person = 0
pending_per_person = 0
workspace_burst = 0

[[resources]]
id = "chaos-vpn"
description = "Chaos VPN (Cloud Connexa)"
provider = "cloudconnexa"
min_duration = "1s"
default_duration = "1h"
max_duration = "1h"
approval = { mode = "approvers", approvers = { users = ["UAPPROVER"] } }

[resources.settings]
network = "chaos-net"

[[resources]]
id = "chaos-gcp"
description = "Chaos GCP project"
provider = "gcp-iam"
min_duration = "1s"
default_duration = "1h"
max_duration = "1h"
extendable = false
approval = { mode = "approvers", approvers = { users = ["UAPPROVER"] } }

[resources.settings]
project = "chaos-proj"
role = "projects/chaos-proj/roles/chaos_user"
email_domain = "example.com"
resource_cleanup_days = 7

[[resources]]
id = "chaos-dry"
description = "Chaos dry run"
provider = "dry-run"
min_duration = "1s"
default_duration = "1h"
max_duration = "1h"
approval = { mode = "approvers", approvers = { users = ["UAPPROVER"] } }
"#;

/// Where the server binary comes from: `CHAOS_SERVER_BIN`, else `target/release` for the long
/// form (`make chaos` builds it), else `target/debug` (`make test` builds it).
pub fn server_bin(long: bool) -> PathBuf {
    if let Ok(p) = std::env::var("CHAOS_SERVER_BIN") {
        return PathBuf::from(p);
    }
    let target = target_dir();
    let p = target
        .join(if long { "release" } else { "debug" })
        .join("gatehouse-server");
    if !p.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--bin", "gatehouse-server"]);
        if long {
            cmd.arg("--release");
        }
        assert!(cmd.status().unwrap().success(), "building gatehouse-server");
    }
    assert!(p.exists(), "{} not found", p.display());
    p
}

pub fn target_dir() -> PathBuf {
    std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// A running `gatehouse-server`; SIGKILLed when dropped.
pub struct Proc {
    pub child: Child,
    pub base: String,
    pub log: PathBuf,
}

impl Proc {
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for the exit (a graceful stop finishes its running batch).
    pub fn term(&mut self) -> Option<std::process::ExitStatus> {
        // kill(1) keeps the crate free of `unsafe` (the workspace forbids it).
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Everything needed to start one more server.
#[derive(Clone)]
pub struct Launch {
    pub bin: PathBuf,
    pub config: PathBuf,
    pub database_url: String,
    pub env: Vec<(String, String)>,
    pub log_dir: PathBuf,
}

impl Launch {
    /// Starts a server and waits for its "listening" line (blocking: call from spawn_blocking).
    pub fn spawn(&self, name: &str) -> Proc {
        let log = self.log_dir.join(format!("{name}.log"));
        let stderr = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--config")
            .arg(&self.config)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .env("DATABASE_URL", &self.database_url)
            .env(
                "RUST_LOG",
                std::env::var("CHAOS_RUST_LOG").unwrap_or_else(|_| "info,sqlx=warn".into()),
            )
            .env("GATEHOUSE_ADMIN_TOKEN", ADMIN_TOKEN)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr));
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let base = line
            .trim()
            .strip_prefix("gatehouse-server listening on ")
            .unwrap_or_else(|| {
                panic!(
                    "{name} did not start: {line:?}; log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            })
            .to_string();
        std::thread::spawn(move || for _ in reader.lines() {});
        Proc { child, base, log }
    }

    pub async fn start(&self, name: String) -> Proc {
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.spawn(&name))
            .await
            .unwrap()
    }
}

/// Where one person's lifecycle on one resource is, as the driver knows it. The sampler flags
/// provider-side access seen outside `Approved..=Ending`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Idle,
    Requested,
    Approved,
    Live,
    Ending,
}

/// The shared state of one run.
pub struct World {
    pub slack: FakeSlack,
    pub cc: FakeCloudConnexa,
    pub gcp: FakeGcp,
    pub http: reqwest::Client,
    /// Base URL of each server slot; `None` while it is down.
    pub slots: RwLock<Vec<Option<String>>>,
    rr: AtomicUsize,
    /// (killed at, back at) of every crash.
    pub downtimes: Mutex<Vec<(DateTime<Utc>, DateTime<Utc>)>>,
    pub phases: Mutex<HashMap<(String, &'static str), Phase>>,
    /// Access seen at a provider while its lifecycle was not between approval and removal.
    pub violations: Mutex<Vec<String>>,
    /// Two memberships, service accounts or bindings of one person at the same moment.
    pub duplicates: Mutex<Vec<String>>,
    /// How often access of (email, resource) appeared at the provider.
    pub appearances: Mutex<HashMap<(String, &'static str), u32>>,
    /// When access of (email, resource) was last seen to disappear.
    pub disappeared: Mutex<HashMap<(String, &'static str), DateTime<Utc>>>,
    /// Service-account e-mail → the person (its display name), for attributing bindings.
    pub sa_owner: Mutex<HashMap<String, String>>,
    pub samples: AtomicUsize,
    pub stop: AtomicBool,
}

pub fn user_id(w: usize) -> String {
    format!("UCHAOS{w:03}")
}

pub fn email(w: usize) -> String {
    format!("chaos.w{w:03}@example.com")
}

impl World {
    pub async fn new(workers: usize, slots: usize) -> Arc<World> {
        let slack = FakeSlack::start().await;
        for w in 0..workers {
            slack.add_user(FakeUser::new(&user_id(w), &format!("chaos{w}")).email(&email(w)));
        }
        slack.add_user(FakeUser::new(APPROVER, "approver").email("approver@example.com"));
        slack.add_channel(APPROVALS_ID, APPROVALS_NAME);
        // The real API's rate-limit shape (headers on every answer, 429 beyond them) at test
        // speed. A fake that sent no headers held our client at its cautious no-header default
        // of one write per 4 s: every Cloud Connexa grant queued behind the others, most
        // outran their few-second expiry and some took over 120 s (finding 10).
        let cc = FakeCloudConnexa::start(FakeConfig::fast()).await;
        cc.seed_network(NETWORK);
        let gcp = FakeGcp::start().await;
        gcp.add_project(PROJECT);
        Arc::new(World {
            slack,
            cc,
            gcp,
            http: reqwest::Client::new(),
            slots: RwLock::new(vec![None; slots]),
            rr: AtomicUsize::new(0),
            downtimes: Mutex::new(vec![]),
            phases: Mutex::new(HashMap::new()),
            violations: Mutex::new(vec![]),
            duplicates: Mutex::new(vec![]),
            appearances: Mutex::new(HashMap::new()),
            disappeared: Mutex::new(HashMap::new()),
            sa_owner: Mutex::new(HashMap::new()),
            samples: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        })
    }

    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("SLACK_BOT_TOKEN", self.slack.token().to_string()),
            ("SLACK_SIGNING_SECRET", SIGNING_SECRET.to_string()),
            ("SLACK_API_URL", self.slack.api_url()),
            ("APPROVAL_CHANNEL", APPROVALS_NAME.to_string()),
            ("CLOUDCONNEXA_API_URL", self.cc.url()),
            ("CLOUDCONNEXA_CLIENT_ID", self.cc.client_id()),
            ("CLOUDCONNEXA_CLIENT_SECRET", self.cc.client_secret()),
            (
                "NETWORK_GROUP_MAPPING",
                format!(r#"{{"{NETWORK}": "{GROUP}"}}"#),
            ),
            (
                "GCP_SERVICE_ACCOUNT_JSON",
                self.gcp.service_account_key_json(),
            ),
            ("GCP_IAM_API_URL", self.gcp.url()),
            ("GCP_CRM_API_URL", self.gcp.url()),
            // A keyed audit chain, as in production.
            (
                "GATEHOUSE_AUDIT_KEY",
                "Y2hhb3MtdGVzdC1hdWRpdC1rZXktMzItYnl0ZXMhISE=".to_string(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    pub fn set_slot(&self, i: usize, base: Option<String>) {
        self.slots.write().unwrap()[i] = base;
    }

    /// The next live server, round-robin.
    pub fn pick(&self) -> Option<String> {
        let slots = self.slots.read().unwrap();
        let live: Vec<&String> = slots.iter().flatten().collect();
        if live.is_empty() {
            return None;
        }
        let n = self.rr.fetch_add(1, Ordering::Relaxed);
        Some(live[n % live.len()].clone())
    }

    pub fn appearances_of(&self, email: &str, resource: &'static str) -> u32 {
        self.appearances
            .lock()
            .unwrap()
            .get(&(email.to_string(), resource))
            .copied()
            .unwrap_or(0)
    }

    pub fn set_phase(&self, email: &str, resource: &'static str, p: Phase) {
        self.phases
            .lock()
            .unwrap()
            .insert((email.to_string(), resource), p);
    }

    /// POSTs a Slack delivery, signed now, to a live server; resends the same delivery (same
    /// `trigger_id` / `action_ts`, so the server's inbox deduplicates it) while servers are down
    /// or answer 5xx. Returns the answer's body.
    pub async fn slack_post(&self, path: &str, content_type: &str, body: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(180);
        let mut last = String::from("no server up");
        loop {
            if let Some(base) = self.pick() {
                let mut rb = self
                    .http
                    .post(format!("{base}{path}"))
                    .header("content-type", content_type)
                    .timeout(Duration::from_secs(20))
                    .body(body.to_string());
                for (k, v) in signed_headers(SIGNING_SECRET, body) {
                    rb = rb.header(k, v);
                }
                match rb.send().await {
                    Ok(r) => {
                        let status = r.status();
                        if let Ok(text) = r.text().await {
                            if status.is_success() {
                                return text;
                            }
                            assert!(status.is_server_error(), "{path} answered {status}: {text}");
                            last = format!("{base}: {status} {text}");
                        }
                    }
                    Err(e) => last = format!("{base}: {e}"),
                }
            }
            assert!(
                Instant::now() < deadline,
                "no server took a Slack delivery to {path} for 180 s; last: {last}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// GET on the admin API of a live server, retried while servers are down.
    pub async fn admin_get(&self, path: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            if let Some(base) = self.pick() {
                let r = self
                    .http
                    .get(format!("{base}{path}"))
                    .bearer_auth(ADMIN_TOKEN)
                    .timeout(Duration::from_secs(60))
                    .send()
                    .await;
                if let Ok(r) = r {
                    let status = r.status();
                    if let Ok(text) = r.text().await {
                        if status.is_success() {
                            return serde_json::from_str(&text).unwrap();
                        }
                        assert!(status.is_server_error(), "{path}: {status} {text}");
                    }
                }
            }
            assert!(Instant::now() < deadline, "admin API {path} unreachable");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// DMs to `user` whose fallback text satisfies `pred`.
    pub fn dms(&self, user: &str, pred: impl Fn(&str) -> bool) -> Vec<FakeMessage> {
        let ch = dm_id(user);
        self.slack
            .messages_where(|m| m.channel == ch && pred(&m.text))
    }

    pub fn vpn_present(&self, email: &str) -> bool {
        let Some(g) = self.cc.group_by_name(GROUP) else {
            return false;
        };
        self.cc
            .user_by_email(email)
            .is_some_and(|u| u.secondary_group_ids.contains(&g.id))
    }

    /// A service account of the person, or a binding of one of their accounts.
    pub fn gcp_present(&self, email: &str) -> bool {
        if self
            .gcp
            .service_accounts(PROJECT)
            .iter()
            .any(|sa| sa.display_name == email)
        {
            return true;
        }
        let owners = self.sa_owner.lock().unwrap().clone();
        gcp_members(&self.gcp.policy(PROJECT))
            .iter()
            .any(|(_, m)| owners.get(m).is_some_and(|o| o == email))
    }

    pub fn present(&self, resource: &str, email: &str) -> bool {
        match resource {
            VPN => self.vpn_present(email),
            GCP => self.gcp_present(email),
            _ => false,
        }
    }

    /// One look at the fakes: what access exists now, by (email, resource), and duplicates.
    fn snapshot(&self) -> HashSet<(String, &'static str)> {
        let mut live = HashSet::new();
        if let Some(g) = self.cc.group_by_name(GROUP) {
            for u in self.cc.users() {
                let n = u.secondary_group_ids.iter().filter(|x| **x == g.id).count();
                if n > 0 {
                    live.insert((u.email.clone(), VPN));
                }
                if n > 1 {
                    self.duplicate(format!("{} is in {GROUP} {n} times", u.email));
                }
            }
        }
        let mut per_owner: HashMap<String, usize> = HashMap::new();
        {
            let mut owners = self.sa_owner.lock().unwrap();
            for sa in self.gcp.service_accounts(PROJECT) {
                owners.insert(sa.email.clone(), sa.display_name.clone());
                *per_owner.entry(sa.display_name.clone()).or_default() += 1;
                live.insert((sa.display_name.clone(), GCP));
                if sa.keys.len() > 1 {
                    self.duplicate(format!("{} has {} keys", sa.email, sa.keys.len()));
                }
            }
        }
        for (owner, n) in per_owner {
            if n > 1 {
                self.duplicate(format!("{owner} has {n} service accounts at once"));
            }
        }
        let owners = self.sa_owner.lock().unwrap().clone();
        let mut seen: HashMap<(String, String), usize> = HashMap::new();
        for (role, m) in gcp_members(&self.gcp.policy(PROJECT)) {
            if let Some(o) = owners.get(&m) {
                live.insert((o.clone(), GCP));
                *seen.entry((role, m)).or_default() += 1;
            }
        }
        for ((role, m), n) in seen {
            if n > 1 {
                self.duplicate(format!("{m} bound to {role} {n} times"));
            }
        }
        live
    }

    fn duplicate(&self, what: String) {
        let mut d = self.duplicates.lock().unwrap();
        if !d.contains(&what) {
            d.push(what);
        }
    }

    /// Samples the fakes every 50 ms until `stop`: counts each appearance of access and flags
    /// access seen while its lifecycle is not between the approval click and the removal.
    pub async fn sample(self: Arc<Self>) {
        let mut prev: HashSet<(String, &'static str)> = HashSet::new();
        let mut flagged: HashSet<(String, &'static str)> = HashSet::new();
        while !self.stop.load(Ordering::Relaxed) {
            let live = self.snapshot();
            self.samples.fetch_add(1, Ordering::Relaxed);
            let phases = self.phases.lock().unwrap().clone();
            for k in &live {
                if !prev.contains(k) {
                    *self
                        .appearances
                        .lock()
                        .unwrap()
                        .entry(k.clone())
                        .or_default() += 1;
                }
                let p = phases.get(k).copied().unwrap_or(Phase::Idle);
                if !matches!(p, Phase::Approved | Phase::Live | Phase::Ending) {
                    // Re-check: the driver may have moved on between the two reads.
                    if self.present(k.1, &k.0)
                        && self.phases.lock().unwrap().get(k).is_none_or(|p| {
                            !matches!(p, Phase::Approved | Phase::Live | Phase::Ending)
                        })
                        && flagged.insert(k.clone())
                    {
                        self.violations.lock().unwrap().push(format!(
                            "{} on {} at {} while the lifecycle was {p:?}",
                            k.0,
                            k.1,
                            Utc::now().format("%H:%M:%S%.3f")
                        ));
                    }
                } else {
                    flagged.remove(k);
                }
            }
            let now = Utc::now();
            for k in prev.difference(&live) {
                self.disappeared.lock().unwrap().insert(k.clone(), now);
            }
            prev = live;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// (role, member e-mail) of every `serviceAccount:` member of the policy's bindings.
pub fn gcp_members(policy: &Value) -> Vec<(String, String)> {
    let mut out = vec![];
    for b in policy["bindings"].as_array().into_iter().flatten() {
        let role = b["role"].as_str().unwrap_or_default().to_string();
        for m in b["members"].as_array().into_iter().flatten() {
            if let Some(sa) = m.as_str().and_then(|m| m.strip_prefix("serviceAccount:")) {
                out.push((role.clone(), sa.to_string()));
            }
        }
    }
    out
}
