//! Group commit: what concurrent callers write within the same instant goes to the database as
//! one transaction (docs/performance.md, "Group commit").
//!
//! Callers push their request onto a queue with a oneshot for its outcome. Whoever holds the
//! flush lock takes everything queued (up to a cap) and writes it as one batch; while a batch is
//! being written new requests accumulate and the next holder takes them all. There is no timer:
//! at low load a batch is one request (written as it always was), under load batches grow by
//! themselves, because a transaction's round trips are exactly the time others have to queue.
//!
//! Cancellation: the flush runs in a spawned task, never in the caller's future. A caller whose
//! future is dropped (a client that hung up, a time-out around a store call) leaves the batch
//! running: the others still get their outcomes, and the batch's transaction ends with a commit
//! or a rollback, never abandoned half way (the class of bug `db.rs` describes for a dropped
//! `BEGIN`). A caller that is gone simply does not read its outcome.

use std::future::Future;
use std::sync::{Arc, Mutex as StdMutex};

use tokio::sync::{Mutex, OwnedMutexGuard, oneshot};

/// One queued request and where its outcome goes.
type Entry<Req, Res> = (Req, oneshot::Sender<Res>);

/// A group-commit queue for requests `Req` with outcomes `Res`.
pub(crate) struct Group<Req, Res> {
    queue: StdMutex<Vec<Entry<Req, Res>>>,
    /// Held while a batch is written: one batch at a time, and the queue fills meanwhile.
    flush: Arc<Mutex<()>>,
    /// Most requests in one batch (bounds one transaction's size and statements' parameters).
    cap: usize,
}

impl<Req, Res> std::fmt::Debug for Group<Req, Res> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group").field("cap", &self.cap).finish()
    }
}

impl<Req, Res> Group<Req, Res>
where
    Req: Send + 'static,
    Res: Send + 'static,
{
    pub fn new(cap: usize) -> Self {
        Self {
            queue: StdMutex::new(Vec::new()),
            flush: Arc::new(Mutex::new(())),
            cap: cap.max(1),
        }
    }

    /// Requests waiting for a flush.
    pub fn queued(&self) -> usize {
        self.queue.lock().map(|q| q.len()).unwrap_or(0)
    }

    /// Holds the flush lock: nothing is written until the guard is dropped and requests queue
    /// up. For tests that need a batch of a known size without timing.
    pub async fn hold(&self) -> OwnedMutexGuard<()> {
        self.flush.clone().lock_owned().await
    }

    /// Queues `req` and waits for its outcome. `run` writes a batch (this request and whatever
    /// else is queued when the flush lock is taken) and returns one outcome per request, in
    /// order. `None` if the batch task ended without an outcome for it (it panicked).
    pub async fn submit<F, Fut>(self: &Arc<Self>, req: Req, run: F) -> Option<Res>
    where
        F: FnOnce(Vec<Req>) -> Fut + Send + 'static,
        Fut: Future<Output = Vec<Res>> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        match self.queue.lock() {
            Ok(mut q) => q.push((req, tx)),
            // A poisoned queue (a panic while pushing or draining, which holds no await) is
            // still a consistent Vec.
            Err(p) => p.into_inner().push((req, tx)),
        }
        // Every request brings a flusher; most find the queue already emptied by the flusher
        // before them (whose batch took their request) and end at once.
        let group = self.clone();
        tokio::spawn(async move {
            let _flushing = group.flush.clone().lock_owned().await;
            let batch = group.take();
            if batch.is_empty() {
                return;
            }
            let (reqs, senders): (Vec<Req>, Vec<oneshot::Sender<Res>>) = batch.into_iter().unzip();
            let outcomes = run(reqs).await;
            debug_assert_eq!(outcomes.len(), senders.len());
            for (tx, res) in senders.into_iter().zip(outcomes) {
                // A caller that gave up does not read its outcome.
                let _ = tx.send(res);
            }
        });
        rx.await.ok()
    }

    /// Takes up to `cap` queued requests, oldest first.
    fn take(&self) -> Vec<Entry<Req, Res>> {
        let mut q = match self.queue.lock() {
            Ok(q) => q,
            Err(p) => p.into_inner(),
        };
        let n = q.len().min(self.cap);
        q.drain(..n).collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Requests queued behind a held flush go out as one batch, each caller gets its own
    /// outcome, and a caller dropped before the flush does not strand the others.
    #[tokio::test]
    async fn queued_requests_go_out_as_one_batch_and_a_dropped_caller_strands_nobody() {
        let group: Arc<Group<u32, u32>> = Arc::new(Group::new(256));
        let batches = Arc::new(AtomicUsize::new(0));
        let held = group.hold().await;
        let mut handles = Vec::new();
        for i in 0..10u32 {
            let g = group.clone();
            let b = batches.clone();
            handles.push(tokio::spawn(async move {
                g.submit(i, move |reqs| async move {
                    b.fetch_add(1, Ordering::SeqCst);
                    reqs.into_iter().map(|r| r * 10).collect()
                })
                .await
            }));
        }
        while group.queued() < 10 {
            tokio::task::yield_now().await;
        }
        // The first caller gives up while its request waits.
        handles.remove(0).abort();
        drop(held);
        for (k, h) in handles.into_iter().enumerate() {
            assert_eq!(h.await.unwrap(), Some((k as u32 + 1) * 10));
        }
        assert_eq!(batches.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_batch_takes_at_most_cap_requests() {
        let group: Arc<Group<u32, usize>> = Arc::new(Group::new(4));
        let held = group.hold().await;
        let mut handles = Vec::new();
        for i in 0..10u32 {
            let g = group.clone();
            handles.push(tokio::spawn(async move {
                g.submit(i, |reqs| async move {
                    let n = reqs.len();
                    reqs.into_iter().map(|_| n).collect()
                })
                .await
            }));
        }
        while group.queued() < 10 {
            tokio::task::yield_now().await;
        }
        drop(held);
        let mut sizes: Vec<usize> = futures_join(handles).await;
        sizes.sort_unstable();
        assert_eq!(sizes, vec![2, 2, 4, 4, 4, 4, 4, 4, 4, 4]);
    }

    async fn futures_join(hs: Vec<tokio::task::JoinHandle<Option<usize>>>) -> Vec<usize> {
        let mut out = Vec::new();
        for h in hs {
            out.push(h.await.unwrap().unwrap());
        }
        out
    }
}
