//! Time limits around calls that leave the process. A provider or Slack call that hangs would
//! otherwise hold a worker (and its job claim) forever; with a limit it becomes an ordinary
//! transient failure that the queue retries with backoff.

use std::sync::Arc;
use std::time::Duration;

use access_core::notification::{DeliveredSecret, MessageRef, Notification, RequestSummary};
use access_core::ports::{
    GrantOutcome, GrantRequest, LiveAccess, Notifier, NotifyContext, NotifyError, Provider,
    ProviderError, RevokeOutcome, RevokeRequest,
};
use access_core::resource::Resource;
use async_trait::async_trait;

#[derive(Debug)]
pub struct TimeLimitedProvider {
    inner: Arc<dyn Provider>,
    limit: Duration,
}

impl TimeLimitedProvider {
    pub fn wrap(inner: Arc<dyn Provider>, limit: Duration) -> Arc<dyn Provider> {
        Arc::new(Self { inner, limit })
    }

    fn timed_out(&self, what: &str) -> ProviderError {
        ProviderError::transient(format!(
            "{} {what} did not answer within {:?}",
            self.inner.kind(),
            self.limit
        ))
    }
}

#[async_trait]
impl Provider for TimeLimitedProvider {
    fn kind(&self) -> access_core::ports::ProviderKind {
        self.inner.kind()
    }

    async fn intent(&self, req: &GrantRequest) -> Result<serde_json::Value, ProviderError> {
        tokio::time::timeout(self.limit, self.inner.intent(req))
            .await
            .map_err(|_| self.timed_out("intent"))?
    }

    fn reissues_on_request(&self, resource: &Resource) -> bool {
        self.inner.reissues_on_request(resource)
    }

    async fn grant(&self, req: &GrantRequest) -> Result<GrantOutcome, ProviderError> {
        tokio::time::timeout(self.limit, self.inner.grant(req))
            .await
            .map_err(|_| self.timed_out("grant"))?
    }

    async fn revoke(&self, req: &RevokeRequest) -> Result<RevokeOutcome, ProviderError> {
        tokio::time::timeout(self.limit, self.inner.revoke(req))
            .await
            .map_err(|_| self.timed_out("revoke"))?
    }

    async fn observe(&self, resource: &Resource) -> Result<Vec<LiveAccess>, ProviderError> {
        tokio::time::timeout(self.limit, self.inner.observe(resource))
            .await
            .map_err(|_| self.timed_out("observe"))?
    }

    fn refuses_subject(
        &self,
        resource: &Resource,
        subject: &access_core::Subject,
    ) -> Option<String> {
        self.inner.refuses_subject(resource, subject)
    }

    async fn validate(&self, resource: &Resource) -> Result<(), ProviderError> {
        tokio::time::timeout(self.limit, self.inner.validate(resource))
            .await
            .map_err(|_| self.timed_out("validate"))?
    }

    async fn unavailable_reason(
        &self,
        resource: &Resource,
    ) -> Result<Option<String>, ProviderError> {
        // Asked while a person waits for an answer: a short limit of its own.
        let limit = self.limit.min(Duration::from_secs(2));
        tokio::time::timeout(limit, self.inner.unavailable_reason(resource))
            .await
            .map_err(|_| self.timed_out("availability check"))?
    }
}

#[derive(Debug)]
pub struct TimeLimitedNotifier {
    inner: Arc<dyn Notifier>,
    limit: Duration,
}

impl TimeLimitedNotifier {
    pub fn wrap(inner: Arc<dyn Notifier>, limit: Duration) -> Arc<dyn Notifier> {
        Arc::new(Self { inner, limit })
    }
}

#[async_trait]
impl Notifier for TimeLimitedNotifier {
    async fn notify(
        &self,
        n: &Notification,
        ctx: &NotifyContext,
    ) -> Result<Vec<MessageRef>, NotifyError> {
        tokio::time::timeout(self.limit, self.inner.notify(n, ctx))
            .await
            .map_err(|_| {
                NotifyError::Transient(format!(
                    "notification did not finish within {:?}",
                    self.limit
                ))
            })?
    }

    // Forwarded: the trait's default (true) made the engine read a request's message refs
    // before every notification, two statements per `request` command that nothing used.
    fn reads_message_refs(&self, n: &Notification) -> bool {
        self.inner.reads_message_refs(n)
    }

    async fn deliver_secret(
        &self,
        request: &RequestSummary,
        secret: &DeliveredSecret,
    ) -> Result<(), NotifyError> {
        tokio::time::timeout(self.limit, self.inner.deliver_secret(request, secret))
            .await
            .map_err(|_| {
                NotifyError::Transient(format!(
                    "secret delivery did not finish within {:?}",
                    self.limit
                ))
            })?
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A notifier that reads no message refs, for the wrapper to report as such.
    #[derive(Debug)]
    struct ReadsNoRefs;

    #[async_trait]
    impl Notifier for ReadsNoRefs {
        async fn notify(
            &self,
            _n: &Notification,
            _ctx: &NotifyContext,
        ) -> Result<Vec<MessageRef>, NotifyError> {
            Ok(vec![])
        }

        fn reads_message_refs(&self, _n: &Notification) -> bool {
            false
        }

        async fn deliver_secret(
            &self,
            _request: &RequestSummary,
            _secret: &DeliveredSecret,
        ) -> Result<(), NotifyError> {
            Ok(())
        }
    }

    /// The time limit changes nothing but the time: what the wrapped notifier says about
    /// message refs is what the engine hears (it skips the store read when they are not used).
    #[test]
    fn the_time_limited_notifier_says_what_the_inner_one_reads() {
        let wrapped = TimeLimitedNotifier::wrap(Arc::new(ReadsNoRefs), Duration::from_secs(1));
        let delegate = access_core::subject::SubjectKey::new("T1", "U1");
        let n = Notification::DelegationChanged {
            delegate: delegate.subject("delegate"),
            delegator: delegate.actor("delegator"),
            until: chrono::Utc::now(),
            ended: false,
        };
        assert!(!wrapped.reads_message_refs(&n));
    }
}
