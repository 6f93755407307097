//! Acknowledgements still waiting for their stored job: a slash command or a form submission is
//! stored as an inbox job and run at once; while Slack's acknowledgement budget lasts, the job
//! hands its answer to the acknowledgement here instead of posting it.

use super::Shared;
use crate::commands::Field;

/// The answer the stored job hands over while the acknowledgement can still carry it, or
/// `None` when the budget ran out (the job then answers on its own).
pub(super) async fn await_answer(
    st: &Shared,
    key: &str,
    mut rx: tokio::sync::oneshot::Receiver<Answer>,
) -> Option<Answer> {
    match tokio::time::timeout(st.config.ack_budget, &mut rx).await {
        Ok(Ok(answer)) => Some(answer),
        _ => {
            // Too late: the job must not hand the answer to a closed channel.
            waiters().remove(key);
            rx.close();
            rx.try_recv().ok()
        }
    }
}

/// Slash commands being acknowledged by this process, by inbox key: the job hands its answer
/// here while the acknowledgement can still carry it.
pub(super) fn waiters() -> &'static Waiters {
    static W: std::sync::OnceLock<Waiters> = std::sync::OnceLock::new();
    W.get_or_init(Waiters::default)
}

/// What a stored delivery's job hands to the acknowledgement still waiting for it.
#[derive(Debug)]
pub(super) enum Answer {
    /// A slash command's answer.
    Text(String),
    /// A form submission's outcome: filed, or what is wrong with which field.
    Form(Result<(), (Field, String)>),
}

#[derive(Debug, Default)]
pub(super) struct Waiters(
    std::sync::Mutex<std::collections::HashMap<String, tokio::sync::oneshot::Sender<Answer>>>,
);

impl Waiters {
    /// Registered only for a delivery just stored (see `enqueue_and_run_answering`): its key is
    /// new, a replay never gets here.
    pub(super) fn insert(&self, key: String, tx: tokio::sync::oneshot::Sender<Answer>) {
        if let Ok(mut m) = self.0.lock() {
            m.insert(key, tx);
        }
    }

    pub(super) fn remove(&self, key: &str) -> Option<tokio::sync::oneshot::Sender<Answer>> {
        self.0.lock().ok()?.remove(key)
    }

    /// Gives `answer` to the acknowledgement waiting under `key`; returns it when none took it.
    pub(super) fn hand_over(&self, key: &str, answer: Answer) -> Option<Answer> {
        match self.remove(key) {
            Some(tx) => tx.send(answer).err(),
            None => Some(answer),
        }
    }
}
