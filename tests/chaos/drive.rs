//! The lifecycles: request → approval click → grant → expiry, revocation or extension then
//! expiry, each by one person (a worker) at a time, as Slack would deliver them.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::Value;
use testkit::slack::{SlashCommand, block_actions_payload, interaction_body};

use crate::world::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    Expire,
    Revoke,
    Extend,
}

/// What one lifecycle did and saw.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    pub n: usize,
    pub worker: usize,
    pub resource: &'static str,
    pub plan: Plan,
    pub duration_s: u64,
    pub request_id: Option<String>,
    pub extend_request_id: Option<String>,
    pub grant_id: Option<String>,
    /// Final status of the grant (admin API).
    pub status: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub granted_seen: Option<DateTime<Utc>>,
    pub removed_seen: Option<DateTime<Utc>>,
    pub revoke_sent: Option<DateTime<Utc>>,
    /// Removal after the deadline (expiry or revocation), downtime not counted.
    pub lateness_ms: Option<i64>,
    /// How often the access appeared at the provider during this lifecycle (vpn/gcp).
    pub appeared: u32,
    /// The extension was refused (the grant ended before the command was handled).
    pub extension_refused: bool,
    pub problems: Vec<String>,
}

pub struct Plans {
    pub lifecycles: usize,
    pub min_kills: usize,
    pub next: AtomicUsize,
    pub kills: AtomicUsize,
}

impl Plans {
    /// The next lifecycle number, or `None` when the run has enough lifecycles and kills.
    fn take(&self) -> Option<usize> {
        let n = self.next.fetch_add(1, Ordering::SeqCst);
        if n < self.lifecycles || self.kills.load(Ordering::SeqCst) < self.min_kills {
            Some(n)
        } else {
            None
        }
    }
}

async fn slash(world: &World, user: &str, text: &str) -> String {
    let cmd = SlashCommand::new(
        "/access",
        user,
        text,
        &world.slack.response_url(),
        &world.slack.trigger_id(),
    );
    world
        .slack_post(
            "/slack/commands",
            "application/x-www-form-urlencoded",
            &cmd.body(),
        )
        .await
}

/// Polls `probe` every 100 ms for up to `secs`.
async fn until<T>(secs: u64, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = probe() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The approval message of a request of `user` not handled yet: (request id, message).
/// The approval message of the request whose justification carries `marker` (unique per
/// lifecycle and kind). Matching only on the person took a late approval message of an earlier
/// lifecycle's extension — one the driver had given up on — for the next request's, and approved
/// that instead (finding 11).
async fn new_approval(
    world: &World,
    user: &str,
    seen: &[String],
    marker: &str,
    secs: u64,
) -> Option<(String, testkit::slack::FakeMessage)> {
    let mention = format!("<@{user}>");
    until(secs, || {
        world
            .slack
            .messages_where(|m| {
                m.channel == APPROVALS_ID && {
                    let text = m.all_text();
                    text.contains(&mention) && text.contains(marker)
                }
            })
            .into_iter()
            .find_map(|m| {
                let v = m
                    .buttons()
                    .into_iter()
                    .find(|(a, v)| a == APPROVE && !seen.contains(v))?
                    .1;
                Some((v, m))
            })
    })
    .await
}

/// The justification of lifecycle `n`'s request; the final `.` keeps `… 5.` from matching `… 53.`.
fn request_marker(n: usize) -> String {
    format!("chaos lifecycle {n}.")
}

/// The justification of lifecycle `n`'s extension request.
fn extension_marker(n: usize) -> String {
    format!("chaos extension {n}.")
}

async fn approve(world: &World, m: &testkit::slack::FakeMessage, request_id: &str) {
    let payload = block_actions_payload(
        APPROVER,
        APPROVE,
        request_id,
        &m.channel,
        &m.ts,
        &world.slack.response_url(),
        &world.slack.trigger_id(),
    );
    world
        .slack_post(
            "/slack/interactions",
            "application/x-www-form-urlencoded",
            &interaction_body(&payload),
        )
        .await;
}

/// A lifecycle whose grant the person revoked before it ever became active (see `run_one`).
pub const REVOKED_UNPROVISIONED: &str = "revoked-unprovisioned";

pub fn granted_text(resource: &str) -> String {
    format!("Your access to {resource} is ready until")
}

pub fn is_ended(resource: &str, t: &str) -> bool {
    t == format!("Your access to {resource} has expired.")
        || t == format!("Your access to {resource} has been revoked.")
}

pub fn extended_text(resource: &str) -> String {
    format!("Your access to {resource} has been extended until")
}

/// The deadline moved past any downtime that overlaps `[deadline, removed]`: the clock restarts
/// when the server is back. "Back" is when the test saw the new server answer, which is after its
/// scheduler started (the scheduler starts before the listener): a removal the new server made
/// before that moment moves the deadline only to the removal itself, never past it (finding 14:
/// such removals were reported up to 1.5 s "before expiry" although they came after it).
pub fn effective_deadline(
    deadline: DateTime<Utc>,
    removed: DateTime<Utc>,
    downtimes: &[(DateTime<Utc>, DateTime<Utc>)],
) -> DateTime<Utc> {
    let mut base = deadline;
    for (killed, back) in downtimes {
        if *killed <= removed && *back >= base {
            base = base.max((*back).min(removed));
        }
    }
    base
}

/// One worker: one person, lifecycles one after another on random resources.
pub async fn worker(world: Arc<World>, plans: Arc<Plans>, w: usize, seed: u64) -> Vec<Lifecycle> {
    let mut rng = fastrand::Rng::with_seed(seed ^ (w as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let user = user_id(w);
    let mail = email(w);
    let mut seen: Vec<String> = vec![];
    let mut out = vec![];
    while let Some(n) = plans.take() {
        let resource = RESOURCES[rng.usize(..RESOURCES.len())];
        let plan = match rng.u32(0..100) {
            0..55 => Plan::Expire,
            55..85 => Plan::Revoke,
            // GCP access is not extendable (a re-request re-issues a key with the same expiry,
            // docs/providers/gcp-iam.md).
            _ if resource == GCP => Plan::Expire,
            _ => Plan::Extend,
        };
        // A few seconds: long enough that provisioning on a loaded machine (debug build, a
        // crash in between) usually beats the expiry; when it does not, the grant fails with
        // "ended before it could be provisioned" and the checks expect exactly that.
        let duration_s = match plan {
            Plan::Expire => rng.u64(4..=9),
            Plan::Revoke => rng.u64(8..=12),
            Plan::Extend => rng.u64(6..=9),
        };
        let mut lc = Lifecycle {
            n,
            worker: w,
            resource,
            plan,
            duration_s,
            request_id: None,
            extend_request_id: None,
            grant_id: None,
            status: String::new(),
            expires_at: None,
            granted_seen: None,
            removed_seen: None,
            revoke_sent: None,
            lateness_ms: None,
            appeared: 0,
            extension_refused: false,
            problems: vec![],
        };
        run_one(&world, &mut rng, &user, &mail, &mut seen, &mut lc).await;
        world.set_phase(&mail, resource, Phase::Idle);
        if !lc.problems.is_empty() {
            eprintln!(
                "chaos: lifecycle {n} ({user} {resource}): {:?}",
                lc.problems
            );
        }
        out.push(lc);
    }
    out
}

async fn run_one(
    world: &World,
    rng: &mut fastrand::Rng,
    user: &str,
    mail: &str,
    seen: &mut Vec<String>,
    lc: &mut Lifecycle,
) {
    let res = lc.resource;
    let appeared_before = world.appearances_of(mail, res);
    let granted_before = world.dms(user, |t| t.starts_with(&granted_text(res))).len();
    let ended_before = world.dms(user, |t| is_ended(res, t)).len();

    world.set_phase(mail, res, Phase::Requested);
    let ack = slash(
        world,
        user,
        &format!("request {res} {}s {}", lc.duration_s, request_marker(lc.n)),
    )
    .await;
    let Some((rid, msg)) = new_approval(world, user, seen, &request_marker(lc.n), 120).await else {
        // The command's own answer says why, if it was refused.
        let ack: String = ack.chars().take(300).collect();
        lc.problems.push(format!(
            "no approval message within 120 s (the command's answer: {ack})"
        ));
        return;
    };
    seen.push(rid.clone());
    lc.request_id = Some(rid.clone());
    world.set_phase(mail, res, Phase::Approved);
    approve(world, &msg, &rid).await;

    // Granted: the provider holds the access (the dry run has no provider state: its DM), or
    // the grant ended before it was provisioned.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut polls = 0u32;
    let granted = loop {
        let ok = match res {
            DRY => world.dms(user, |t| t.starts_with(&granted_text(res))).len() > granted_before,
            _ => world.present(res, mail),
        };
        if ok {
            break Some(Utc::now());
        }
        polls += 1;
        if polls.is_multiple_of(10)
            && grant_of(world, user, res, &rid)
                .await
                .is_some_and(|g| g["status"] == "failed")
        {
            break None;
        }
        if Instant::now() > deadline {
            lc.problems.push("access not granted within 120 s".into());
            // The grant is approved and may still land: wait for it to end (its expiry is a few
            // seconds) before this person's next lifecycle starts, so a late grant is not taken
            // for access without approval in the next one (finding 9), nor refuses its request.
            if let Some(g) = until_async_grant(world, user, res, &rid).await {
                lc.grant_id = g["id"].as_str().map(String::from);
                lc.status = if provisioning_failed(world, &rid).await {
                    "failed".into()
                } else {
                    // Landed late and ended: checked like any grant, but not timed.
                    lc.appeared = world.appearances_of(mail, res) - appeared_before;
                    g["status"].as_str().unwrap_or_default().to_string()
                };
            }
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let Some(granted) = granted else {
        // Failed before anything showed at the provider: nothing more to wait for but the end
        // state and the messages (checked after the run).
        if let Some(g) = until_async_grant(world, user, res, &rid).await {
            lc.grant_id = g["id"].as_str().map(String::from);
            lc.status = g["status"].as_str().unwrap_or_default().to_string();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        lc.appeared = world.appearances_of(mail, res) - appeared_before;
        return;
    };
    lc.granted_seen = Some(granted);
    world.set_phase(mail, res, Phase::Live);

    match lc.plan {
        Plan::Expire => {}
        Plan::Revoke => {
            tokio::time::sleep(Duration::from_millis(rng.u64(300..2_500))).await;
            world.set_phase(mail, res, Phase::Ending);
            lc.revoke_sent = Some(Utc::now());
            slash(world, user, &format!("revoke {res}")).await;
        }
        Plan::Extend => {
            slash(
                world,
                user,
                &format!("extend {res} 4s {}", extension_marker(lc.n)),
            )
            .await;
            match new_approval(world, user, seen, &extension_marker(lc.n), 45).await {
                Some((xid, xmsg)) => {
                    seen.push(xid.clone());
                    lc.extend_request_id = Some(xid.clone());
                    approve(world, &xmsg, &xid).await;
                }
                // Refused: the grant ended before the command was handled (checked below).
                None => lc.extension_refused = true,
            }
        }
    }

    // Gone: the provider no longer holds it.
    let removed = until(180, || {
        let gone = match res {
            DRY => world.dms(user, |t| is_ended(res, t)).len() > ended_before,
            _ => !world.present(res, mail),
        };
        gone.then(Utc::now)
    })
    .await;
    let Some(mut removed) = removed else {
        lc.problems.push("access still there 180 s later".into());
        return;
    };
    if res != DRY {
        // The sampler's moment of disappearance (every 50 ms) is closer than this worker's.
        tokio::time::sleep(Duration::from_millis(200)).await;
        if let Some(t) = world
            .disappeared
            .lock()
            .unwrap()
            .get(&(mail.to_string(), res))
            .copied()
            .filter(|t| *t >= granted && *t <= removed)
        {
            removed = t;
        }
        lc.appeared = world.appearances_of(mail, res) - appeared_before;
    }
    lc.removed_seen = Some(removed);
    world.set_phase(mail, res, Phase::Idle);

    // The grant as the server ended it.
    let grant = until_async_grant(world, user, res, &rid).await;
    let never_granted = grant.as_ref().is_some_and(|g| g["granted_at"].is_null());
    match grant {
        Some(g) => {
            lc.grant_id = g["id"].as_str().map(String::from);
            lc.status = g["status"].as_str().unwrap_or_default().to_string();
            lc.expires_at = g["expires_at"]
                .as_str()
                .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                .map(|t| t.with_timezone(&Utc));
        }
        None => {
            lc.problems
                .push("the grant did not reach an end state within 120 s".into());
            return;
        }
    }
    if res != DRY && lc.status != "failed" {
        let deadline = match lc.status.as_str() {
            "expired" => lc.expires_at,
            "revoked" => lc.revoke_sent,
            _ => None,
        };
        if let Some(d) = deadline {
            let downtimes = world.downtimes.lock().unwrap().clone();
            let base = effective_deadline(d, removed, &downtimes);
            lc.lateness_ms = Some((removed - base).num_milliseconds());
        }
    }

    // Revoked by the person while its provisioning was still running (the provider had added
    // the access, which the driver saw, but the grant never became active): one answer, the
    // revocation's (findings 5 and 13), and no "granted" message or event.
    if lc.status == "revoked" && never_granted {
        lc.status = REVOKED_UNPROVISIONED.into();
        let ended = until(120, || {
            (world.dms(user, |t| is_ended(res, t)).len() > ended_before).then_some(())
        })
        .await;
        if ended.is_none() {
            lc.problems
                .push("revoked message missing 120 s after the end".into());
        }
        return;
    }
    // A grant whose provisioning outran its expiry ("ended during provisioning") was never
    // granted: no granted message comes, the ended one may.
    if provisioning_failed(world, &rid).await {
        lc.status = "failed".into();
        lc.lateness_ms = None;
        return;
    }
    // Both messages arrive before the person asks again (so messages map to grants in order).
    let messages = until(120, || {
        let g = world.dms(user, |t| t.starts_with(&granted_text(res))).len();
        let e = world.dms(user, |t| is_ended(res, t)).len();
        (g > granted_before && e > ended_before).then_some(())
    })
    .await;
    if messages.is_none() {
        lc.problems
            .push("granted or ended message missing 120 s after the end".into());
    }
}

/// The grant of request `rid`, as the admin API has it now.
async fn grant_of(world: &World, user: &str, res: &str, rid: &str) -> Option<Value> {
    let grants = world
        .admin_get(&format!(
            "/api/grants?team_id=T0FAKE&user_id={user}&resource={res}&limit=1000"
        ))
        .await;
    grants
        .as_array()
        .into_iter()
        .flatten()
        .find(|g| g["request_id"] == rid)
        .cloned()
}

/// Whether the request's provisioning failed (its grant ended before it was provisioned).
async fn provisioning_failed(world: &World, rid: &str) -> bool {
    let audit = world
        .admin_get(&format!("/api/audit?request_id={rid}&limit=1000"))
        .await;
    audit["events"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|e| e["kind"] == "grant_failed")
}

/// Polls the admin API until the lifecycle's grant has ended (its status may lag the provider).
async fn until_async_grant(world: &World, user: &str, res: &str, rid: &str) -> Option<Value> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let g = grant_of(world, user, res, rid).await;
        if let Some(g) = &g
            && matches!(g["status"].as_str(), Some("expired" | "revoked" | "failed"))
        {
            return Some(g.clone());
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
