//! Chat deliveries stored as jobs (`inbox`), and the fast path that runs such a job in the
//! process that received it, together with the notifications it causes, instead of waiting for a
//! scheduler's round.

use std::sync::Arc;

use super::{Engine, EngineError, JobResult, RunSummary};
use crate::ids::JobId;
use crate::jobs::{InboxItem, Job, JobKind, NewJob};
use crate::notification::MessageRef;

/// How long the process that stored an inbox job has to run it before schedulers may.
const INBOX_HEAD_START: chrono::Duration = chrono::Duration::seconds(3);

/// A job this process is running right after storing it ([`Engine::run_claimed`]): the
/// notifications its commits cause are written already claimed under the same token and run by
/// this process once the job is done, and all of them are marked done together, so one slash
/// command costs one write for its notifications instead of a scheduler round and a write each.
#[derive(Debug)]
pub(super) struct RunHere {
    /// The claim token of the job and of every follow-up written under it.
    pub(super) token: String,
    /// Notifications (and revocations) the job's commits wrote already claimed, to run here.
    pub(super) follow_ups: std::sync::Mutex<Vec<Job>>,
    /// Jobs of this claim already run inline (a revocation asked for from a chat command), to
    /// be settled with the rest.
    pub(super) finished: std::sync::Mutex<Vec<(Job, JobResult)>>,
}

/// Ordering keys of jobs this process wrote held back (see [`Engine::commit`]), so that
/// finishing a job of one of them here wakes the scheduler for the held-back job at once.
/// A key whose job ahead finished elsewhere (in a scheduler, which looks again by itself after a
/// job; on another replica) stays until a job of it finishes here or the set is full and
/// cleared: a stale key costs at most one needless wake-up, a dropped one a wait for the
/// scheduler's next look (`max_idle`).
#[derive(Debug, Default)]
pub(super) struct HeldBackKeys(std::sync::Mutex<std::collections::HashSet<String>>);

/// Keys kept at most (a few hundred KB).
const HELD_BACK_KEYS_MAX: usize = 10_000;

impl HeldBackKeys {
    pub(super) fn note(&self, key: Option<String>) {
        let Some(key) = key else { return };
        if let Ok(mut keys) = self.0.lock() {
            if keys.len() >= HELD_BACK_KEYS_MAX {
                keys.clear();
            }
            keys.insert(key);
        }
    }

    /// Forgets `finished`; whether any of them was noted.
    pub(super) fn released(&self, finished: Vec<String>) -> bool {
        let Ok(mut keys) = self.0.lock() else {
            return false;
        };
        let mut any = false;
        for k in finished {
            any |= keys.remove(&k);
        }
        any
    }
}

/// What running one follow-up of a claim (a job its commits wrote claimed) came to.
pub(super) struct FollowUp {
    pub(super) job: Job,
    pub(super) result: JobResult,
    /// The messages it posted, to be recorded with its completion.
    pub(super) posted: Vec<MessageRef>,
    /// It panicked (the attempt fails).
    pub(super) panicked: bool,
}

/// Follow-ups in lanes: the jobs of one ordering key in one lane, in the order they were
/// written (as a scheduler would run them); every other job a lane of its own.
pub(super) fn in_order(jobs: Vec<Job>) -> Vec<Vec<Job>> {
    let mut lanes: Vec<(Option<String>, Vec<Job>)> = Vec::new();
    for j in jobs {
        let key = j.kind.order_key();
        match lanes.iter_mut().find(|(k, _)| key.is_some() && *k == key) {
            Some((_, lane)) => lane.push(j),
            None => lanes.push((key, vec![j])),
        }
    }
    lanes.into_iter().map(|(_, lane)| lane).collect()
}

tokio::task_local! {
    /// The job this process runs right after storing it ([`Engine::run_claimed`]).
    pub(super) static RUN_HERE: Arc<RunHere>;
    /// The inbox job whose handler is running (see [`RequestId::for_inbox_job`]).
    pub(super) static INBOX_JOB: JobId;
}

impl Engine {
    /// Stores a received chat payload as a job, once per `item.key` (a replay is recognised
    /// and not stored again), and wakes the scheduler. Returns the job's id, or `None` for a
    /// replay. Call it before acknowledging the delivery: once it returns, a crash cannot lose it.
    pub async fn enqueue_inbox(&self, item: InboxItem) -> Result<Option<JobId>, EngineError> {
        let now = self.now();
        let key = format!("inbox:{}:{}", item.source, item.key);
        // The receiving process runs the job at once ([`Engine::run_job_now`] ignores `run_at`);
        // schedulers take it only after a head start, so a batch of theirs does not grab it first
        // (a command such as `revoke` waits for other jobs to run, which a scheduler busy with the
        // command's own batch would not). After a crash, a scheduler answers it then.
        let due = now + INBOX_HEAD_START;
        let job = NewJob::at(JobKind::Inbox { item }, due);
        let id = job.id;
        if self.store.enqueue_once(&key, job, now).await? {
            self.waker.job_enqueued(due);
            Ok(Some(id))
        } else {
            Ok(None)
        }
    }

    /// Runs one job now if it is still pending (the receiving process runs the inbox job it just
    /// stored, so the answer does not wait for the scheduler's next round). A failure is settled
    /// like any job's: retried with backoff by whichever scheduler claims it next.
    pub async fn run_job_now(&self, id: JobId) -> Result<RunSummary, EngineError> {
        let Some(job) = self
            .store
            .claim_job(id, self.now(), self.settings.job_lease)
            .await?
        else {
            return Ok(RunSummary::default());
        };
        let result = self.run_job(&job).await;
        let mut summary = self.settle(&job, result).await?;
        summary.claimed = 1;
        Ok(summary)
    }

    /// [`Self::enqueue_inbox`], with the job written already claimed by this process, which
    /// must then run it with [`Self::run_claimed`] (one write instead of a write and a claim;
    /// should the process die first, the lease lapses and a scheduler answers it). `None` for a
    /// replay.
    pub async fn enqueue_inbox_claimed(&self, item: InboxItem) -> Result<Option<Job>, EngineError> {
        let now = self.now();
        let key = format!("inbox:{}:{}", item.source, item.key);
        let mut job = NewJob::at(JobKind::Inbox { item }, now + INBOX_HEAD_START);
        job.id = JobId::for_key(&key);
        Ok(self
            .store
            .enqueue_claimed_once(&key, job, now, self.settings.job_lease)
            .await?)
    }

    /// Runs a job this process holds the claim of (from [`Self::enqueue_inbox_claimed`]), then
    /// the notifications its commits caused, and settles them all: the successes together in
    /// one write with the messages they posted. Leases are renewed while it runs.
    ///
    /// At most `inbox_concurrency` such jobs run at once, each with its notifications; the others
    /// wait here for a slot, in the order they came. Under a burst larger than the process can
    /// handle, each waiting job costs a few hundred bytes instead of a running handler's buffers
    /// and Slack connection (unbounded, 2,000 commands a second grew the server to 1.8 GB;
    /// docs/performance.md, "Ninth session"). The delivery is stored already, so waiting loses
    /// nothing: should the process die, the lease lapses and a scheduler runs it. A job that
    /// waited a third of its lease renews it before it starts, and leaves the job to the scheduler
    /// that took it over if the lease has lapsed.
    pub async fn run_claimed(&self, job: Job) -> Result<RunSummary, EngineError> {
        let waiting = std::time::Instant::now();
        // Closed never: an error would only mean running without the bound.
        let slot = self.inbox_slots.acquire().await.ok();
        let beat = (self.settings.job_lease / 3).to_std().unwrap_or_default();
        if waiting.elapsed() >= beat {
            let token = job.claim_token.as_deref().unwrap_or_default();
            if self
                .store
                .renew_lease(token, self.settings.job_lease)
                .await?
                == 0
            {
                tracing::warn!(job = %job.id, waited_ms = waiting.elapsed().as_millis() as u64,
                    "a stored chat delivery waited past its lease for a slot; a scheduler runs it");
                return Ok(RunSummary::default());
            }
        }
        // Boxed: the future of a running job is about 10 KB, and only the jobs holding a slot
        // need one.
        Box::pin(self.run_claimed_now(job, slot)).await
    }

    /// `slot` is held until the job's notifications are sent too: given back before them, the
    /// jobs waiting for a notification slot were bounded by nothing, and 2,000 commands a
    /// second grew the server to 430 MB (docs/performance.md, "Ninth session").
    async fn run_claimed_now(
        &self,
        job: Job,
        slot: Option<tokio::sync::SemaphorePermit<'_>>,
    ) -> Result<RunSummary, EngineError> {
        let token = job.claim_token.clone().unwrap_or_default();
        let here = Arc::new(RunHere {
            token: token.clone(),
            follow_ups: std::sync::Mutex::new(Vec::new()),
            finished: std::sync::Mutex::new(Vec::new()),
        });
        let work = async {
            let (result, panicked) = RUN_HERE
                .scope(here.clone(), self.run_job_caught(&job))
                .await;
            let follow_ups = here
                .follow_ups
                .lock()
                .map(|mut f| std::mem::take(&mut *f))
                .unwrap_or_default();
            // Closed never: an error would only mean running without the bound.
            let _slot = if follow_ups.is_empty() {
                None
            } else {
                self.follow_up_slots.acquire().await.ok()
            };
            let results: Vec<FollowUp> = futures::future::join_all(
                in_order(follow_ups)
                    .into_iter()
                    .map(|lane| self.run_follow_ups(lane)),
            )
            .await
            .into_iter()
            .flatten()
            .collect();
            let mut summary = RunSummary {
                claimed: 1 + results.len(),
                ..Default::default()
            };
            let inline = here
                .finished
                .lock()
                .map(|mut f| std::mem::take(&mut *f))
                .unwrap_or_default();
            summary.claimed += inline.len();
            let first = FollowUp {
                job: job.clone(),
                result,
                posted: Vec::new(),
                panicked,
            };
            let ran: Vec<FollowUp> = std::iter::once(first)
                .chain(results)
                .chain(inline.into_iter().map(|(job, result)| FollowUp {
                    job,
                    result,
                    posted: Vec::new(),
                    panicked: false,
                }))
                .collect();
            let failed = self.settle_claimed(&token, ran, &mut summary).await?;
            if failed {
                // A retry is for a scheduler, which must learn when it is due (it was not woken
                // for jobs this process ran itself).
                self.waker.job_enqueued(self.now());
            }
            drop(slot);
            Ok::<_, EngineError>(summary)
        };
        self.with_heartbeat(std::slice::from_ref(&token), work)
            .await
    }

    /// Runs one lane of follow-ups ([`in_order`]) one after the other, each notification
    /// seeing the messages the earlier ones posted (recorded only when all are settled). After
    /// a failure the rest wait: they go back to the queue behind the failed job, as a
    /// scheduler would have kept them there.
    pub(super) async fn run_follow_ups(&self, lane: Vec<Job>) -> Vec<FollowUp> {
        let mut out: Vec<FollowUp> = Vec::with_capacity(lane.len());
        let mut posted: Vec<MessageRef> = Vec::new();
        let mut failed = false;
        for job in lane {
            let (result, refs, panicked) = if failed {
                let wait = "waiting for an earlier notification of its request".to_string();
                (JobResult::RetryAt(wait, self.now()), Vec::new(), false)
            } else {
                self.run_follow_up(&job, &posted).await
            };
            failed |= panicked || !matches!(result, JobResult::Done { .. });
            posted.extend(refs.iter().cloned());
            out.push(FollowUp {
                job,
                result,
                posted: refs,
                panicked,
            });
        }
        out
    }

    /// Settles the jobs a claim ran: the successes marked done in one write with the messages
    /// they posted, then each failure alone (retry with backoff, or bury). Whether any failed.
    pub(super) async fn settle_claimed(
        &self,
        token: &str,
        ran: Vec<FollowUp>,
        summary: &mut RunSummary,
    ) -> Result<bool, EngineError> {
        let finished: Vec<String> = ran.iter().filter_map(|f| f.job.kind.order_key()).collect();
        let mut done: Vec<(JobId, String)> = Vec::new();
        let mut refs: Vec<MessageRef> = Vec::new();
        let mut rest: Vec<(Job, JobResult, bool)> = Vec::new();
        for f in ran {
            match f.result {
                JobResult::Done { revocation_lag } if !f.panicked => {
                    done.push((f.job.id, token.to_string()));
                    refs.extend(f.posted);
                    *summary
                        .done
                        .entry(f.job.kind.name().to_string())
                        .or_default() += 1;
                    summary.revocation_lag_secs.extend(revocation_lag);
                }
                // A failed notification posted nothing worth keeping, or it is posted again on
                // the retry.
                other => rest.push((f.job, other, f.panicked)),
            }
        }
        if !done.is_empty() {
            self.store
                .complete_jobs_with_refs(&done, &refs, self.now())
                .await?;
        }
        self.release_held_back(finished);
        let failed = !rest.is_empty();
        for (j, r, panicked) in rest {
            summary.merge(self.settle(&j, r).await?);
            if panicked {
                *summary
                    .panicked
                    .entry(j.kind.name().to_string())
                    .or_default() += 1;
            }
        }
        Ok(failed)
    }

    /// Wakes the scheduler if a job of one of `finished` (order keys of jobs just marked done)
    /// was holding back another this process wrote (see [`HeldBackKeys`]).
    pub(super) fn release_held_back(&self, finished: Vec<String>) {
        if self.held_back.released(finished) {
            self.waker.job_enqueued(self.now());
        }
    }
}
