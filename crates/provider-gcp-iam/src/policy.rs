//! Project policy changes: pure edits, and the batching writer that applies them.
//!
//! `setIamPolicy` replaces the whole policy, and a stale etag is a 409 `ABORTED`. Fifty grants
//! each doing their own read-modify-write would mostly abort each other and retry in a storm. So
//! each project has at most one writer task at a time: callers queue their [`PolicyEdit`] and await
//! its outcome; the task takes *every* queued edit, reads the policy (version 3), applies them in
//! order, writes once with the etag it read, and on `ABORTED` redoes the whole
//! read-modify-write with backoff and jitter. Edits arriving meanwhile go out together in the next
//! write. Unrelated bindings, conditions and `auditConfigs` are never touched: edits only change
//! `Temp Access` bindings (and dead `deleted:` members in the sweep), and unknown fields are
//! round-tripped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use tokio::sync::oneshot;

use crate::api::{Binding, Expr, GcpClient, Policy};
use crate::condition::{self, TITLE};
use crate::error::GcpError;
use crate::naming;
use crate::retry::Backoff;

/// One change to a project's policy. Edits are idempotent: applying one twice changes nothing
/// the second time, which is what makes redoing a read-modify-write safe.
#[derive(Debug, Clone, PartialEq)]
pub enum PolicyEdit {
    /// `member` holds `role` under `condition` (a `Temp Access` condition). Another `Temp Access`
    /// binding of the same role and member with a different expression is replaced, so a member
    /// never piles up bindings (IAM allows 20 per role and principal).
    Grant {
        role: String,
        member: String,
        condition: Expr,
    },
    /// `member` (and its `deleted:` form) leaves every `Temp Access` binding of `role`.
    Revoke { role: String, member: String },
    /// Removes `Temp Access` bindings that expired at `now`, and dead `deleted:serviceAccount:`
    /// members (from `Temp Access` bindings, and of Gatehouse-named accounts anywhere).
    Sweep { now: DateTime<Utc> },
}

/// What an edit did.
#[derive(Debug, Clone, PartialEq)]
pub enum EditOutcome {
    Granted { changed: bool },
    Revoked { removed: bool },
    Swept(SweepChanges),
}

/// A binding the sweep found expired.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpiredBinding {
    pub role: String,
    pub member: String,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct SweepChanges {
    pub expired: Vec<ExpiredBinding>,
    /// `(role, member)` of dropped `deleted:serviceAccount:` members.
    pub dropped_deleted: Vec<(String, String)>,
}

fn is_deleted_form_of(candidate: &str, member: &str) -> bool {
    candidate
        .strip_prefix("deleted:")
        .and_then(|rest| rest.strip_prefix(member))
        .is_some_and(|tail| tail.is_empty() || tail.starts_with("?uid="))
}

/// Whether a `deleted:serviceAccount:{email}?uid=…` member names a Gatehouse account.
fn deleted_gatehouse_account(member: &str) -> bool {
    member
        .strip_prefix("deleted:serviceAccount:")
        .and_then(|rest| rest.split(['@', '?']).next())
        .is_some_and(naming::is_gatehouse_account_id)
}

/// Applies one edit to `policy`.
pub fn apply_edit(policy: &mut Policy, edit: &PolicyEdit) -> EditOutcome {
    match edit {
        PolicyEdit::Grant {
            role,
            member,
            condition,
        } => {
            let mut present = false;
            let mut changed = false;
            for b in policy.bindings.iter_mut() {
                if &b.role != role
                    || !condition::is_temp_access(b.condition.as_ref())
                    || !b.members.contains(member)
                {
                    continue;
                }
                if b.condition
                    .as_ref()
                    .is_some_and(|c| c.expression == condition.expression)
                    && !present
                {
                    present = true;
                } else {
                    b.members.retain(|m| m != member);
                    changed = true;
                }
            }
            policy.bindings.retain(|b| !b.members.is_empty());
            if !present {
                policy.bindings.push(Binding {
                    role: role.clone(),
                    members: vec![member.clone()],
                    condition: Some(condition.clone()),
                    other: Default::default(),
                });
                changed = true;
            }
            EditOutcome::Granted { changed }
        }
        PolicyEdit::Revoke { role, member } => {
            let mut removed = false;
            for b in policy.bindings.iter_mut() {
                if &b.role != role || !condition::is_temp_access(b.condition.as_ref()) {
                    continue;
                }
                let before = b.members.len();
                b.members
                    .retain(|m| m != member && !is_deleted_form_of(m, member));
                removed |= b.members.len() != before;
            }
            policy.bindings.retain(|b| !b.members.is_empty());
            EditOutcome::Revoked { removed }
        }
        PolicyEdit::Sweep { now } => {
            let mut out = SweepChanges::default();
            policy.bindings.retain(|b| {
                if !condition::is_temp_access(b.condition.as_ref()) {
                    return true;
                }
                match b
                    .condition
                    .as_ref()
                    .and_then(|c| condition::parse_expiry(&c.expression))
                {
                    Some(expires_at) if expires_at <= *now => {
                        out.expired.extend(b.members.iter().map(|m| ExpiredBinding {
                            role: b.role.clone(),
                            member: m.clone(),
                            expires_at,
                        }));
                        false
                    }
                    _ => true,
                }
            });
            for b in policy.bindings.iter_mut() {
                let ours = condition::is_temp_access(b.condition.as_ref());
                let role = b.role.clone();
                b.members.retain(|m| {
                    let dead = m.starts_with("deleted:serviceAccount:")
                        && (ours || deleted_gatehouse_account(m));
                    if dead {
                        out.dropped_deleted.push((role.clone(), m.clone()));
                    }
                    !dead
                });
            }
            policy.bindings.retain(|b| !b.members.is_empty());
            EditOutcome::Swept(out)
        }
    }
}

type Reply = oneshot::Sender<Result<EditOutcome, GcpError>>;

#[derive(Default)]
struct ProjectQueue {
    pending: Vec<(PolicyEdit, Reply)>,
    running: bool,
}

/// Figures about the writer, for tests and metrics.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// `setIamPolicy` calls made (including ones that lost an etag race).
    pub writes: AtomicU64,
    /// Read-modify-write rounds (each batch is at least one).
    pub rounds: AtomicU64,
    /// 409 `ABORTED` answers absorbed.
    pub aborted: AtomicU64,
    /// Largest number of edits that went out in one write.
    pub largest_batch: AtomicU64,
}

/// The batching policy writer (one per provider; one worker task per project while work waits).
#[derive(Clone)]
pub struct PolicyWriter {
    client: GcpClient,
    retry: Backoff,
    queues: Arc<Mutex<HashMap<String, ProjectQueue>>>,
    stats: Arc<WriterStats>,
}

impl std::fmt::Debug for PolicyWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyWriter")
            .field("retry", &self.retry)
            .field("stats", &self.stats)
            .finish()
    }
}

/// The most edits one write carries; a policy holds about 100 conditional bindings anyway.
const MAX_BATCH: usize = 200;

impl PolicyWriter {
    pub fn new(client: GcpClient, retry: Backoff) -> Self {
        Self {
            client,
            retry,
            queues: Default::default(),
            stats: Default::default(),
        }
    }

    pub fn stats(&self) -> &WriterStats {
        &self.stats
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, ProjectQueue>> {
        // The map holds no invariant a panicking holder could break halfway.
        self.queues.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `edit` for `project`'s policy and waits until it is written (or failed).
    pub async fn apply(&self, project: &str, edit: PolicyEdit) -> Result<EditOutcome, GcpError> {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut q = self.lock();
            let entry = q.entry(project.to_string()).or_default();
            entry.pending.push((edit, tx));
            !std::mem::replace(&mut entry.running, true)
        };
        if start {
            let me = self.clone();
            let project = project.to_string();
            tokio::spawn(async move { me.work(project).await });
        }
        rx.await.map_err(|_| {
            GcpError::Unavailable("the policy writer stopped before answering".into())
        })?
    }

    async fn work(self, project: String) {
        // If this task dies (panic, runtime shutdown), waiting callers get an error instead of
        // hanging, and the next edit starts a fresh worker.
        struct Guard<'a> {
            w: &'a PolicyWriter,
            project: &'a str,
            armed: bool,
        }
        impl Drop for Guard<'_> {
            fn drop(&mut self) {
                if self.armed {
                    // Dropping the pending replies tells their callers the write failed.
                    self.w.lock().remove(self.project);
                }
            }
        }
        let mut guard = Guard {
            w: &self,
            project: &project,
            armed: true,
        };
        loop {
            let batch: Vec<(PolicyEdit, Reply)> = {
                let mut q = self.lock();
                let Some(entry) = q.get_mut(&project) else {
                    guard.armed = false;
                    return;
                };
                if entry.pending.is_empty() {
                    // Under the same lock a caller checks `running`, so nobody can queue an edit
                    // that no worker will pick up.
                    q.remove(&project);
                    guard.armed = false;
                    return;
                }
                let n = entry.pending.len().min(MAX_BATCH);
                entry.pending.drain(..n).collect()
            };
            self.run_batch(&project, batch).await;
        }
    }

    async fn run_batch(&self, project: &str, batch: Vec<(PolicyEdit, Reply)>) {
        let edits: Vec<&PolicyEdit> = batch.iter().map(|(e, _)| e).collect();
        match self.read_modify_write(project, &edits).await {
            Ok(outcomes) => {
                for ((_, tx), o) in batch.into_iter().zip(outcomes) {
                    let _ = tx.send(Ok(o));
                }
            }
            // One bad edit (a member IAM does not know yet) must not sink the others: write them
            // one by one instead.
            Err(e) if batch.len() > 1 && !e.is_transient() => {
                tracing::warn!(project, error = %e, edits = batch.len(), "batched policy write refused; retrying edits one by one");
                for (edit, tx) in batch {
                    let r = self
                        .read_modify_write(project, &[&edit])
                        .await
                        .and_then(|mut v| {
                            v.pop().ok_or_else(|| {
                                GcpError::Unavailable("no outcome for the edit".into())
                            })
                        });
                    let _ = tx.send(r);
                }
            }
            Err(e) => {
                for (_, tx) in batch {
                    let _ = tx.send(Err(e.clone()));
                }
            }
        }
    }

    async fn read_modify_write(
        &self,
        project: &str,
        edits: &[&PolicyEdit],
    ) -> Result<Vec<EditOutcome>, GcpError> {
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            self.stats.rounds.fetch_add(1, Ordering::Relaxed);
            let round = async {
                let mut policy = self.client.get_iam_policy(project).await?;
                let before = policy.bindings.clone();
                let outcomes: Vec<EditOutcome> =
                    edits.iter().map(|e| apply_edit(&mut policy, e)).collect();
                if policy.bindings != before {
                    self.stats.writes.fetch_add(1, Ordering::Relaxed);
                    self.stats
                        .largest_batch
                        .fetch_max(edits.len() as u64, Ordering::Relaxed);
                    self.client.set_iam_policy(project, &policy).await?;
                }
                Ok::<_, GcpError>(outcomes)
            }
            .await;
            match round {
                Err(e) if e.is_transient() && attempt < self.retry.max_attempts => {
                    if matches!(e, GcpError::Aborted(_)) {
                        self.stats.aborted.fetch_add(1, Ordering::Relaxed);
                    }
                    let wait = self.retry.jittered(attempt);
                    tracing::debug!(project, attempt, error = %e, wait_ms = wait.as_millis() as u64, "policy write raced; redoing the read-modify-write");
                    tokio::time::sleep(wait).await;
                }
                other => return other,
            }
        }
    }
}

/// The title every Gatehouse binding carries (re-exported for callers that inspect policies).
pub const TEMP_ACCESS_TITLE: &str = TITLE;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn policy(v: serde_json::Value) -> Policy {
        serde_json::from_value(v).unwrap()
    }

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn grant_is_idempotent_and_replaces_an_older_expiry() {
        let mut p = policy(
            json!({"bindings": [{"role": "roles/browser", "members": ["user:x@example.com"]}],
                                   "auditConfigs": [{"service": "allServices"}]}),
        );
        let c1 = condition::temp_access(t("2030-01-01T00:00:00Z"), "j");
        let e1 = PolicyEdit::Grant {
            role: "roles/run.invoker".into(),
            member: "user:a@example.com".into(),
            condition: c1,
        };
        assert_eq!(
            apply_edit(&mut p, &e1),
            EditOutcome::Granted { changed: true }
        );
        assert_eq!(
            apply_edit(&mut p, &e1),
            EditOutcome::Granted { changed: false }
        );
        assert_eq!(p.bindings.len(), 2);
        let c2 = condition::temp_access(t("2031-01-01T00:00:00Z"), "j");
        let e2 = PolicyEdit::Grant {
            role: "roles/run.invoker".into(),
            member: "user:a@example.com".into(),
            condition: c2,
        };
        assert_eq!(
            apply_edit(&mut p, &e2),
            EditOutcome::Granted { changed: true }
        );
        assert_eq!(
            p.bindings.len(),
            2,
            "the old binding was replaced, not stacked"
        );
        let out = serde_json::to_value(&p).unwrap();
        assert_eq!(out["auditConfigs"][0]["service"], "allServices");
    }

    #[test]
    fn revoke_and_sweep_touch_only_temp_access() {
        let mut p = policy(json!({"bindings": [
            {"role": "roles/run.invoker", "members": ["user:a@example.com"]},
            {"role": "roles/run.invoker", "members": ["user:a@example.com", "deleted:serviceAccount:jane-dot-doe-1700000000@p.iam.gserviceaccount.com?uid=1"],
             "condition": {"title": "Temp Access", "expression": "request.time < timestamp('2020-01-01T00:00:00Z')"}},
            {"role": "roles/run.invoker", "members": ["serviceAccount:jsmith-1700000000@p.iam.gserviceaccount.com"],
             "condition": {"title": "Temp Access", "expression": "request.time < timestamp(\"2099-01-01T00:00:00Z\")"}},
            {"role": "roles/storage.admin", "members": ["deleted:serviceAccount:jsmith-1600000000@p.iam.gserviceaccount.com?uid=2",
                                                        "deleted:serviceAccount:terraform@p.iam.gserviceaccount.com?uid=3"]},
            {"role": "roles/run.invoker", "members": ["user:b@example.com"],
             "condition": {"title": "Other team", "expression": "request.time < timestamp('2020-01-01T00:00:00Z')"}}
        ]}));
        let EditOutcome::Swept(s) = apply_edit(
            &mut p,
            &PolicyEdit::Sweep {
                now: t("2026-01-01T00:00:00Z"),
            },
        ) else {
            panic!()
        };
        assert_eq!(s.expired.len(), 2);
        assert_eq!(s.dropped_deleted.len(), 1, "{s:?}");
        assert_eq!(p.bindings.len(), 4);
        assert!(p.bindings.iter().any(|b| b.members.contains(
            &"deleted:serviceAccount:terraform@p.iam.gserviceaccount.com?uid=3".to_string()
        )));
        let r = PolicyEdit::Revoke {
            role: "roles/run.invoker".into(),
            member: "serviceAccount:jsmith-1700000000@p.iam.gserviceaccount.com".into(),
        };
        assert_eq!(
            apply_edit(&mut p, &r),
            EditOutcome::Revoked { removed: true }
        );
        assert_eq!(
            apply_edit(&mut p, &r),
            EditOutcome::Revoked { removed: false }
        );
        assert_eq!(p.bindings.len(), 3);
        assert_eq!(
            p.bindings[0].members,
            vec!["user:a@example.com".to_string()],
            "the unconditional binding stays"
        );
    }
}
