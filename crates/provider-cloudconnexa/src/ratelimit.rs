//! Client-side throttling. Cloud Connexa limits each API credential with a token bucket
//! (historically a burst of 20, then one request per 15 s) and answers an excess with HTTP 429,
//! an empty body and no `Retry-After`. Finding the limit by hitting it costs a failed call and a
//! blind back-off each time, so the client keeps its own buckets, one for reads and one for writes
//! (as the official Go client does), and steers them with the headers every answer carries:
//! `X-RateLimit-Replenish-Rate` tokens per `X-RateLimit-Replenish-Time` seconds, and
//! `X-RateLimit-Remaining` (optionally `X-RateLimit-Burst-Capacity`).
//!
//! A caller takes a token when one is there and otherwise sleeps until the next one is due (or
//! until an answer changed the picture), then checks again; what the server reports after each
//! call resets the buckets. Concurrent callers therefore leave at the advertised rate instead of
//! all firing at once and stampeding the server.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use access_core::backoff::Backoff;
use reqwest::header::HeaderMap;
use tokio::time::Instant;

/// The slowest rate a bucket runs at, whatever the server advertises (one token a day).
pub(crate) const MIN_RATE: f64 = 1.0 / 86_400.0;
/// The fastest rate a bucket runs at (beyond it the throttle is moot anyway).
pub(crate) const MAX_RATE: f64 = 1_000_000.0;
/// The longest a caller sleeps before checking the buckets again.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(86_400);

tokio::task_local! {
    /// Set (by [`urgent`]) around calls that take access away.
    static URGENT: bool;
}

/// Runs `work` with its Cloud Connexa calls ahead of every other waiting call for the
/// credential's tokens. Revocations run this way: with the real limits (a burst of 20, then one
/// call per 15 s) a queue of grants would otherwise hold a due revocation back for minutes.
pub async fn urgent<F: std::future::Future>(work: F) -> F::Output {
    URGENT.scope(true, work).await
}

fn is_urgent() -> bool {
    URGENT.try_with(|u| *u).unwrap_or(false)
}

/// Counts an urgent caller as waiting until dropped.
struct UrgentWaiter<'a>(&'a AtomicUsize);

impl Drop for UrgentWaiter<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Reads (GET) and writes (everything else) are throttled separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallClass {
    Read,
    Write,
}

/// Limits assumed until the server advertises its own, and how 429 and 5xx are retried.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimitConfig {
    /// Reads per second before any header was seen (default 1).
    pub read_per_sec: f64,
    /// Writes per second before any header was seen (default 0.25: one per 4 s).
    pub write_per_sec: f64,
    /// Tokens each bucket may hold before any header was seen (default 1).
    pub initial_burst: f64,
    /// First back-off after a 429 or a retryable 5xx; doubles each attempt, with full jitter.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Attempts for one call that keeps getting 429 before giving up (transient error).
    pub max_attempts_429: u32,
    /// Attempts for an idempotent call that keeps getting 5xx or timing out.
    pub max_attempts_5xx: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            read_per_sec: 1.0,
            write_per_sec: 0.25,
            initial_burst: 1.0,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            max_attempts_429: 8,
            max_attempts_5xx: 3,
        }
    }
}

impl RateLimitConfig {
    /// Exponential back-off with jitter for attempt `n` (1-based), never less than half the
    /// step, so a 429 always actually waits.
    pub fn backoff(&self, attempt: u32) -> Duration {
        Backoff::new(self.backoff_base, self.backoff_max).jittered(attempt)
    }
}

/// What the server advertised on one answer.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RateHeaders {
    pub replenish_rate: Option<f64>,
    pub replenish_time: Option<f64>,
    pub remaining: Option<f64>,
    pub burst_capacity: Option<f64>,
}

impl RateHeaders {
    pub fn parse(h: &HeaderMap) -> Self {
        let num = |name: &str| {
            h.get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|s| s.trim().parse::<f64>().ok())
                .filter(|n| n.is_finite() && *n >= 0.0)
        };
        Self {
            replenish_rate: num("x-ratelimit-replenish-rate"),
            replenish_time: num("x-ratelimit-replenish-time"),
            remaining: num("x-ratelimit-remaining"),
            burst_capacity: num("x-ratelimit-burst-capacity"),
        }
    }

    /// Tokens per second, when both halves are present and sane.
    /// The quotient is clamped: the headers are the server's numbers, and `1e-200 / 1e200`
    /// underflows to 0 (a wait of infinity), `1e308 / 1e-308` overflows to infinity.
    pub fn rate_per_sec(&self) -> Option<f64> {
        let rate = match (self.replenish_rate, self.replenish_time) {
            (Some(r), Some(t)) if r > 0.0 && t > 0.0 => r / t,
            (Some(r), None) if r > 0.0 => r,
            _ => return None,
        };
        Some(if rate.is_finite() {
            rate.clamp(MIN_RATE, MAX_RATE)
        } else {
            MAX_RATE
        })
    }
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    capacity: f64,
    rate: f64,
    last: Instant,
    /// Sent and not yet answered: the server may not have counted these yet.
    in_flight: u32,
    /// The rate the server advertised (`rate` may be a share of it).
    advertised: f64,
    /// Our estimated share of the credential's budget (server mirror only).
    share: f64,
}

impl Bucket {
    fn new(rate: f64, burst: f64) -> Self {
        let burst = burst.max(1.0);
        Self {
            tokens: burst,
            capacity: burst,
            rate: rate.max(1e-6),
            last: Instant::now(),
            in_flight: 0,
            advertised: rate.max(1e-6),
            share: 1.0,
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate).min(self.capacity);
        self.last = now;
    }

    /// How long until one whole token is there (zero: now).
    fn wait_for_one(&self) -> Duration {
        if self.tokens >= 1.0 {
            Duration::ZERO
        } else {
            // At least a millisecond, so float rounding cannot spin the loop; at most MAX_WAIT,
            // and never a panic: `try_from_secs_f64` refuses what `from_secs_f64` panics on
            // (infinity, NaN, beyond `Duration::MAX`).
            let secs = ((1.0 - self.tokens) / self.rate).max(0.001);
            Duration::try_from_secs_f64(secs).map_or(MAX_WAIT, |d| d.min(MAX_WAIT))
        }
    }

    fn take(&mut self) {
        self.tokens -= 1.0;
        self.in_flight += 1;
    }
}

/// The buckets: one per class, plus a mirror of the server's own bucket. The server counts
/// reads and writes against one bucket per credential, so once it has advertised its limits every
/// call also takes a token from the mirror; without that, reads and writes each running at the
/// advertised rate would together send twice as much as the server allows.
#[derive(Debug)]
pub struct RateLimiter {
    read: Mutex<Bucket>,
    write: Mutex<Bucket>,
    /// `None` until the first answer with rate-limit headers.
    server: Mutex<Option<Bucket>>,
    /// Signalled when an answer changed the buckets, to wake waiters early.
    changed: tokio::sync::Notify,
    /// Urgent callers ([`urgent`]) waiting for a token; while there are any, others wait.
    urgent_waiting: AtomicUsize,
}

/// A reserved slot; hand it back with [`RateLimiter::observe`] once the answer arrived (or
/// [`RateLimiter::release`] when no answer came).
#[derive(Debug)]
#[must_use]
pub struct Permit {
    class: CallClass,
    /// Whether a server-mirror token was taken too.
    mirrored: bool,
}

impl RateLimiter {
    pub fn new(cfg: &RateLimitConfig) -> Self {
        Self {
            read: Mutex::new(Bucket::new(cfg.read_per_sec, cfg.initial_burst)),
            write: Mutex::new(Bucket::new(cfg.write_per_sec, cfg.initial_burst)),
            server: Mutex::new(None),
            changed: tokio::sync::Notify::new(),
            urgent_waiting: AtomicUsize::new(0),
        }
    }

    fn bucket(&self, class: CallClass) -> &Mutex<Bucket> {
        match class {
            CallClass::Read => &self.read,
            CallClass::Write => &self.write,
        }
    }

    /// Waits for a token of `class` (and of the server mirror, once known). Waiters hold no
    /// reservation: they sleep until the next token is due, or until an answer changed what the
    /// server allows, and check again. So the first headers (which usually lift the cautious
    /// defaults) release calls queued before them at once, and a correction (another replica
    /// spent tokens of the same credential) slows calls that are already waiting.
    ///
    /// Inside [`urgent`], a caller goes before every waiting caller that is not: those let the
    /// tokens pass while an urgent one waits.
    pub async fn acquire(&self, class: CallClass) -> Permit {
        let urgent = is_urgent();
        let _waiting = urgent.then(|| {
            self.urgent_waiting.fetch_add(1, Ordering::SeqCst);
            UrgentWaiter(&self.urgent_waiting)
        });
        let permit = self.acquire_in_turn(class, urgent).await;
        if urgent {
            // The others may go again once no urgent caller waits (the guard is dropped on
            // return, before they look).
            self.changed.notify_waiters();
        }
        permit
    }

    async fn acquire_in_turn(&self, class: CallClass, urgent: bool) -> Permit {
        loop {
            // Created before the check, so a change signalled right after it is not missed.
            let changed = self.changed.notified();
            if !urgent && self.urgent_waiting.load(Ordering::SeqCst) > 0 {
                // Not our turn: wake when the urgent caller got its token (or check again soon).
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                    _ = changed => {}
                }
                continue;
            }
            let wait = {
                let now = Instant::now();
                let (Ok(mut own), Ok(mut server)) = (self.bucket(class).lock(), self.server.lock())
                else {
                    return Permit {
                        class,
                        mirrored: false,
                    };
                };
                own.refill(now);
                let own_wait = own.wait_for_one();
                let server_wait = match server.as_mut() {
                    Some(b) => {
                        b.refill(now);
                        b.wait_for_one()
                    }
                    None => Duration::ZERO,
                };
                if own_wait.is_zero() && server_wait.is_zero() {
                    own.take();
                    let mirrored = server.as_mut().map(Bucket::take).is_some();
                    return Permit { class, mirrored };
                }
                own_wait.max(server_wait)
            };
            tracing::trace!(
                ?class,
                wait_ms = wait.as_millis() as u64,
                "throttling Cloud Connexa call"
            );
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = changed => {}
            }
        }
    }

    /// The call got no answer (transport error): it may or may not have counted at the server.
    pub fn release(&self, permit: Permit) {
        if let Ok(mut b) = self.bucket(permit.class).lock() {
            b.in_flight = b.in_flight.saturating_sub(1);
        }
        if permit.mirrored {
            if let Ok(mut s) = self.server.lock() {
                if let Some(b) = s.as_mut() {
                    b.in_flight = b.in_flight.saturating_sub(1);
                }
            }
        }
    }

    /// Feeds the answer's headers back. `throttled` is true for a 429.
    pub fn observe(&self, permit: Permit, headers: &RateHeaders, throttled: bool) {
        self.update(permit, headers, throttled);
        if headers.rate_per_sec().is_some() || headers.remaining.is_some() {
            self.changed.notify_waiters();
        }
    }

    fn update(&self, permit: Permit, headers: &RateHeaders, throttled: bool) {
        let now = Instant::now();
        if let Ok(mut b) = self.bucket(permit.class).lock() {
            b.refill(now);
            b.in_flight = b.in_flight.saturating_sub(1);
            if let Some(rate) = headers.rate_per_sec() {
                b.rate = rate;
            }
            if let Some(cap) = headers.burst_capacity.filter(|c| *c >= 1.0) {
                b.capacity = cap;
            } else if let Some(rem) = headers.remaining {
                // The server evidently holds at least this many: let the bucket grow to use it.
                b.capacity = b.capacity.max(rem + 1.0);
            }
            // Once the server has spoken, the class bucket follows its count (the mirror below
            // keeps reads and writes together within it).
            if let Some(rem) = headers.remaining {
                b.tokens = (rem - f64::from(b.in_flight)).min(b.capacity);
            }
            if throttled {
                b.tokens = b.tokens.min(0.0);
            }
        }
        let Ok(mut s) = self.server.lock() else {
            return;
        };
        if s.is_none() {
            match headers.rate_per_sec() {
                Some(rate) => {
                    *s = Some(Bucket {
                        in_flight: 0,
                        ..Bucket::new(rate, 1.0)
                    })
                }
                None => return,
            }
        }
        let Some(b) = s.as_mut() else { return };
        b.refill(now);
        if permit.mirrored {
            b.in_flight = b.in_flight.saturating_sub(1);
        }
        // Other clients may spend the same credential (another replica, a script): a 429 means
        // our share of it is smaller than we assumed. Halve the share on each 429 and win it
        // back slowly with every answer that was not one.
        b.share = if throttled {
            (b.share * 0.5).max(0.1)
        } else {
            (b.share + 0.005).min(1.0)
        };
        if let Some(rate) = headers.rate_per_sec() {
            b.advertised = rate;
        }
        b.rate = (b.advertised * b.share).max(1e-6);
        if let Some(cap) = headers.burst_capacity.filter(|c| *c >= 1.0) {
            b.capacity = cap;
        } else if let Some(rem) = headers.remaining {
            b.capacity = b.capacity.max(rem + 1.0);
        }
        // What the server says is left (our share of it), minus what we sent that it has not
        // counted yet.
        if let Some(rem) = headers.remaining {
            b.tokens = (rem * b.share - f64::from(b.in_flight)).min(b.capacity);
        }
        if throttled {
            b.tokens = b.tokens.min(0.0);
        }
    }

    /// Current (rate per second, capacity) of a class bucket, for tests and metrics.
    pub fn snapshot(&self, class: CallClass) -> (f64, f64) {
        self.bucket(class)
            .lock()
            .map(|b| (b.rate, b.capacity))
            .unwrap_or((0.0, 0.0))
    }

    /// The server mirror's (rate per second, capacity), once the server advertised its limits.
    pub fn server_snapshot(&self) -> Option<(f64, f64)> {
        self.server
            .lock()
            .ok()
            .and_then(|s| s.as_ref().map(|b| (b.rate, b.capacity)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn headers_parse() {
        let mut h = HeaderMap::new();
        h.insert("X-RateLimit-Replenish-Rate", HeaderValue::from_static("1"));
        h.insert("X-RateLimit-Replenish-Time", HeaderValue::from_static("15"));
        h.insert("X-RateLimit-Remaining", HeaderValue::from_static("19"));
        let r = RateHeaders::parse(&h);
        assert_eq!(r.remaining, Some(19.0));
        assert!((r.rate_per_sec().unwrap() - 1.0 / 15.0).abs() < 1e-9);
        assert_eq!(RateHeaders::parse(&HeaderMap::new()).rate_per_sec(), None);
    }

    /// Chaos finding 4/10: a revocation queued behind grants for the credential's write tokens
    /// goes first. Ten grants wait for tokens at 10 per second; a revocation arriving after
    /// them takes the next token.
    #[tokio::test]
    async fn an_urgent_call_takes_the_next_token() {
        let lim = std::sync::Arc::new(RateLimiter::new(&RateLimitConfig {
            write_per_sec: 10.0,
            ..Default::default()
        }));
        let order = std::sync::Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for n in 0..10 {
            let (lim, order) = (lim.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let p = lim.acquire(CallClass::Write).await;
                order.lock().unwrap().push(format!("grant {n}"));
                lim.release(p);
            }));
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        let (l, o) = (lim.clone(), order.clone());
        tasks.push(tokio::spawn(urgent(async move {
            let p = l.acquire(CallClass::Write).await;
            o.lock().unwrap().push("revoke".to_string());
            l.release(p);
        })));
        for t in tasks {
            t.await.unwrap();
        }
        let order = order.lock().unwrap().clone();
        // The first grant had the initial token; the revocation the next one.
        assert_eq!(
            order.get(1).map(String::as_str),
            Some("revoke"),
            "{order:?}"
        );
        assert_eq!(order.len(), 11);
    }

    #[tokio::test]
    async fn reservations_queue_at_the_rate() {
        let lim = RateLimiter::new(&RateLimitConfig {
            read_per_sec: 20.0,
            ..Default::default()
        });
        let start = Instant::now();
        let mut permits = Vec::new();
        for _ in 0..5 {
            permits.push(lim.acquire(CallClass::Read).await);
        }
        // One token in the initial burst, then 4 more at 20/s.
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(195) && took <= Duration::from_millis(400),
            "{took:?}"
        );
        for p in permits {
            lim.release(p);
        }
    }

    #[tokio::test]
    async fn headers_raise_the_rate_and_burst() {
        let lim = RateLimiter::new(&RateLimitConfig::default());
        let p = lim.acquire(CallClass::Write).await;
        let h = RateHeaders {
            replenish_rate: Some(10.0),
            replenish_time: Some(1.0),
            remaining: Some(9.0),
            burst_capacity: None,
        };
        lim.observe(p, &h, false);
        assert_eq!(lim.snapshot(CallClass::Write), (10.0, 10.0));
        let start = Instant::now();
        for _ in 0..9 {
            let p = lim.acquire(CallClass::Write).await;
            lim.release(p);
        }
        assert!(
            start.elapsed() < Duration::from_millis(10),
            "the advertised burst is usable at once"
        );
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let cfg = RateLimitConfig {
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_millis(800),
            ..Default::default()
        };
        let b1 = cfg.backoff(1);
        assert!(b1 >= Duration::from_millis(50) && b1 <= Duration::from_millis(100));
        let b10 = cfg.backoff(10);
        assert!(b10 >= Duration::from_millis(400) && b10 <= Duration::from_millis(800));
    }

    /// Hostile or absurd rate headers (a rate that underflows to 0, a rate of 1e-300, a huge
    /// replenish time) neither panic (`Duration::from_secs_f64` of infinity or of a value
    /// beyond `Duration::MAX`) nor stall the client for ever: the wait is bounded.
    #[tokio::test]
    async fn hostile_rate_headers_do_not_panic() {
        for (rate, time) in [
            ("1e-200", "1e200"),
            ("1e-300", "1"),
            ("1", "1e308"),
            ("5e-324", "1"),
            ("1e308", "1e-308"),
        ] {
            let lim = RateLimiter::new(&RateLimitConfig::default());
            let p = lim.acquire(CallClass::Write).await;
            let mut h = HeaderMap::new();
            h.insert(
                "X-RateLimit-Replenish-Rate",
                HeaderValue::from_str(rate).unwrap(),
            );
            h.insert(
                "X-RateLimit-Replenish-Time",
                HeaderValue::from_str(time).unwrap(),
            );
            h.insert("X-RateLimit-Remaining", HeaderValue::from_static("0"));
            lim.observe(p, &RateHeaders::parse(&h), true);
            let (r, _) = lim.snapshot(CallClass::Write);
            assert!(r.is_finite() && r >= MIN_RATE, "{rate}/{time}: {r}");
            // The next call (it waits or not, depending on the rate) does not panic, and the
            // wait it computes is bounded.
            let _ = tokio::time::timeout(Duration::from_millis(20), lim.acquire(CallClass::Write))
                .await;
            for b in [&lim.read, &lim.write] {
                let w = b.lock().unwrap().wait_for_one();
                assert!(w <= MAX_WAIT, "{rate}/{time}: {w:?}");
            }
        }
    }
}
