//! A provider tests can steer (succeed, fail transiently, fail for good, hang) and a clock tests
//! can move.

use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use access_core::GrantId;
use access_core::ports::{
    Clock, GrantOutcome, GrantRequest, Provider, ProviderError, ProviderEvent, RevokeOutcome,
    RevokeRequest,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};

/// What the next calls do.
#[derive(Debug, Clone, PartialEq)]
pub enum Behaviour {
    Succeed,
    /// A transient error (the queue retries).
    FailTransient(String),
    /// A permanent error (the request fails).
    FailPermanent(String),
    /// Never answers (until the call's time limit).
    Hang,
    /// Answers after a delay.
    Delay(Duration),
    /// Makes the change, then answers with a transient error (a write that landed but whose
    /// answer came after the caller's time limit).
    ApplyThenFail(String),
    /// Makes the change, then answers after a delay (a slow call that lands before it answers).
    ApplyThenDelay(Duration),
    /// Panics (a bug in an adapter): the engine must contain it.
    Panic(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub op: &'static str,
    pub grant_id: GrantId,
    pub user_id: String,
    pub resource: String,
    pub existing: bool,
}

/// A provider for tests, registered under any kind name.
#[derive(Debug)]
pub struct TestProvider {
    grant_behaviour: Mutex<Behaviour>,
    revoke_behaviour: Mutex<Behaviour>,
    calls: Mutex<Vec<Call>>,
    /// Users currently holding access, as the "backend" sees it.
    holders: Mutex<Vec<(String, String)>>,
    /// Resources the backend says cannot be requested now, with why.
    unavailable: Mutex<Vec<(String, String)>>,
    /// Hand out a secret (a key file) with every grant, as GCP's key mode does.
    secrets: std::sync::atomic::AtomicBool,
}

impl Default for TestProvider {
    fn default() -> Self {
        Self {
            grant_behaviour: Mutex::new(Behaviour::Succeed),
            revoke_behaviour: Mutex::new(Behaviour::Succeed),
            calls: Mutex::new(Vec::new()),
            holders: Mutex::new(Vec::new()),
            unavailable: Mutex::new(Vec::new()),
            secrets: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

impl TestProvider {
    pub const KIND: &'static str = "test";

    pub fn new() -> Self {
        Self::default()
    }

    pub fn on_grant(&self, b: Behaviour) {
        *self.grant_behaviour.lock().unwrap() = b;
    }

    pub fn on_revoke(&self, b: Behaviour) {
        *self.revoke_behaviour.lock().unwrap() = b;
    }

    /// Every grant from now on comes with a secret.
    pub fn hand_out_secrets(&self, on: bool) {
        self.secrets.store(on, Ordering::SeqCst);
    }

    /// Makes `resource` unavailable (None: available again).
    pub fn set_unavailable(&self, resource: &str, reason: Option<&str>) {
        let mut u = self.unavailable.lock().unwrap();
        u.retain(|(r, _)| r != resource);
        if let Some(why) = reason {
            u.push((resource.to_string(), why.to_string()));
        }
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    pub fn count(&self, op: &str) -> usize {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.op == op)
            .count()
    }

    /// (user, resource) pairs that currently hold access at this fake backend.
    pub fn holders(&self) -> Vec<(String, String)> {
        self.holders.lock().unwrap().clone()
    }

    async fn behave(b: Behaviour) -> Result<(), ProviderError> {
        match b {
            Behaviour::Succeed => Ok(()),
            Behaviour::FailTransient(m) => Err(ProviderError::transient(m)),
            Behaviour::FailPermanent(m) => Err(ProviderError::permanent(m)),
            Behaviour::Hang => {
                std::future::pending::<()>().await;
                Ok(())
            }
            Behaviour::Delay(d) => {
                tokio::time::sleep(d).await;
                Ok(())
            }
            // The change itself is made by the caller before `behave` (see `grant`).
            Behaviour::ApplyThenFail(m) => Err(ProviderError::transient(m)),
            Behaviour::ApplyThenDelay(d) => {
                tokio::time::sleep(d).await;
                Ok(())
            }
            Behaviour::Panic(m) => panic!("{m}"),
        }
    }

    fn applies_first(b: &Behaviour) -> bool {
        matches!(
            b,
            Behaviour::ApplyThenFail(_) | Behaviour::ApplyThenDelay(_)
        )
    }
}

#[async_trait]
impl Provider for TestProvider {
    fn kind(&self) -> access_core::ports::ProviderKind {
        Self::KIND.into()
    }

    async fn grant(&self, req: &GrantRequest) -> Result<GrantOutcome, ProviderError> {
        self.calls.lock().unwrap().push(Call {
            op: "grant",
            grant_id: req.grant_id,
            user_id: req.subject.user_id.clone(),
            resource: req.resource.id.to_string(),
            existing: req.existing.is_some(),
        });
        let b = self.grant_behaviour.lock().unwrap().clone();
        let key = (req.subject.user_id.clone(), req.resource.id.to_string());
        let add = || {
            let mut h = self.holders.lock().unwrap();
            if !h.contains(&key) {
                h.push(key.clone());
            }
        };
        if Self::applies_first(&b) {
            add();
        }
        Self::behave(b).await?;
        add();
        let secret = self.secrets.load(Ordering::SeqCst).then(|| {
            access_core::notification::DeliveredSecret {
                filename: "test-key.json".into(),
                content: br#"{"type":"test"}"#.to_vec(),
                warning: "keep it safe".into(),
            }
        });
        Ok(GrantOutcome {
            handle: serde_json::json!({"test": true, "user": req.subject.user_id}),
            instructions: format!("Test access to {} granted.", req.resource.id),
            secret,
            events: vec![ProviderEvent {
                name: "test_granted".into(),
                details: serde_json::json!({}),
            }],
            expires_at: None,
        })
    }

    async fn unavailable_reason(
        &self,
        resource: &access_core::Resource,
    ) -> Result<Option<String>, ProviderError> {
        let u = self.unavailable.lock().unwrap();
        Ok(u.iter()
            .find(|(r, _)| r == resource.id.as_str())
            .map(|(_, why)| why.clone()))
    }

    async fn revoke(&self, req: &RevokeRequest) -> Result<RevokeOutcome, ProviderError> {
        self.calls.lock().unwrap().push(Call {
            op: "revoke",
            grant_id: req.grant_id,
            user_id: req.subject.user_id.clone(),
            resource: req.resource.id.to_string(),
            existing: !req.handle.is_null(),
        });
        let b = self.revoke_behaviour.lock().unwrap().clone();
        let key = (req.subject.user_id.clone(), req.resource.id.to_string());
        let knows_what = !(req.handle.is_null() && req.intent.is_null());
        let applied_first = Self::applies_first(&b);
        if applied_first && knows_what {
            self.holders.lock().unwrap().retain(|h| *h != key);
        }
        Self::behave(b).await?;
        if applied_first {
            // The removal happened when the call started; only the answer was late.
            return Ok(RevokeOutcome::default());
        }
        // Like the real providers, revoke undoes what the grant reported it added: without a
        // handle or an intent there is nothing it knows to remove.
        // With only an intent (the grant call never answered), what the intent names is removed.
        if req.handle.is_null() && req.intent.is_null() {
            return Ok(RevokeOutcome {
                events: Vec::new(),
                note: Some("no handle: nothing to remove".into()),
            });
        }
        self.holders.lock().unwrap().retain(|h| *h != key);
        Ok(RevokeOutcome::default())
    }
}

/// A clock that only moves when told to.
#[derive(Debug)]
pub struct ManualClock {
    micros: AtomicI64,
}

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> Self {
        Self {
            micros: AtomicI64::new(start.timestamp_micros()),
        }
    }

    /// Starts at the real current time (so stores and logs look sensible).
    pub fn starting_now() -> Self {
        Self::new(Utc::now())
    }

    pub fn advance(&self, d: chrono::Duration) {
        self.micros.fetch_add(
            d.num_microseconds().unwrap_or(i64::MAX / 4),
            Ordering::SeqCst,
        );
    }

    pub fn set(&self, t: DateTime<Utc>) {
        self.micros.store(t.timestamp_micros(), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_micros(self.micros.load(Ordering::SeqCst)).unwrap_or_else(Utc::now)
    }
}

/// A notifier that remembers what it was asked to say, and can be told to fail.
#[derive(Debug, Default)]
pub struct RecordingNotifier {
    sent: Mutex<Vec<access_core::notification::Notification>>,
    /// Requests whose secret was handed to the person.
    secrets: Mutex<Vec<access_core::RequestId>>,
    /// Secret deliveries fail (Slack refused the file).
    fail_secrets: std::sync::atomic::AtomicBool,
    fail_transient: std::sync::atomic::AtomicUsize,
    /// The next N secret deliveries fail with a transient error (a 5xx, a rate limit).
    fail_secrets_transient: std::sync::atomic::AtomicUsize,
    /// Every delivery takes this long (ms), as with a slow Slack.
    delay_ms: std::sync::atomic::AtomicU64,
}

impl RecordingNotifier {
    pub fn new() -> Self {
        Self::default()
    }

    /// Names of the notifications delivered so far, in order.
    pub fn names(&self) -> Vec<&'static str> {
        self.sent.lock().unwrap().iter().map(|n| n.name()).collect()
    }

    pub fn sent(&self) -> Vec<access_core::notification::Notification> {
        self.sent.lock().unwrap().clone()
    }

    /// Secret deliveries fail from now on (or succeed again).
    pub fn fail_secrets(&self, on: bool) {
        self.fail_secrets.store(on, Ordering::SeqCst);
    }

    /// The next `n` secret deliveries fail with a transient error.
    pub fn fail_secrets_transiently(&self, n: usize) {
        self.fail_secrets_transient.store(n, Ordering::SeqCst);
    }

    /// Requests whose secret was delivered, in order.
    pub fn secrets(&self) -> Vec<access_core::RequestId> {
        self.secrets.lock().unwrap().clone()
    }

    /// The next `n` deliveries fail with a transient error.
    pub fn fail_next(&self, n: usize) {
        self.fail_transient.store(n, Ordering::SeqCst);
    }

    /// Every delivery from now on takes `d`, as with a slow Slack.
    pub fn delay_each(&self, d: std::time::Duration) {
        self.delay_ms.store(
            u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
            Ordering::SeqCst,
        );
    }
}

#[async_trait]
impl access_core::ports::Notifier for RecordingNotifier {
    async fn notify(
        &self,
        n: &access_core::notification::Notification,
        _ctx: &access_core::ports::NotifyContext,
    ) -> Result<Vec<access_core::notification::MessageRef>, access_core::ports::NotifyError> {
        let delay = self.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
        }
        let left = self.fail_transient.load(Ordering::SeqCst);
        if left > 0 {
            self.fail_transient.store(left - 1, Ordering::SeqCst);
            return Err(access_core::ports::NotifyError::Transient(
                "injected".into(),
            ));
        }
        self.sent.lock().unwrap().push(n.clone());
        Ok(vec![])
    }

    async fn deliver_secret(
        &self,
        request: &access_core::notification::RequestSummary,
        _secret: &access_core::notification::DeliveredSecret,
    ) -> Result<(), access_core::ports::NotifyError> {
        if self.fail_secrets.load(Ordering::SeqCst) {
            return Err(access_core::ports::NotifyError::Permanent(
                "injected: file upload refused".into(),
            ));
        }
        if self
            .fail_secrets_transient
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(access_core::ports::NotifyError::Transient(
                "injected: upload answered 503".into(),
            ));
        }
        self.secrets.lock().unwrap().push(request.id);
        Ok(())
    }
}
