//! Limits shared by every run of the process: concurrency limits and circuit breakers per
//! model. A fan-out of a hundred agents on one model waits for permits instead of setting off a
//! storm of 429s, and a provider that keeps failing is given time to recover.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// A process-wide concurrency limit for a key (a model), created on first use. The first
/// limit given for a key wins.
pub fn semaphore(key: &str, permits: usize) -> Arc<Semaphore> {
    static ALL: OnceLock<Mutex<HashMap<String, Arc<Semaphore>>>> = OnceLock::new();
    let mut map = ALL
        .get_or_init(|| Mutex::new(HashMap::new()))
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    map.entry(key.to_string())
        .or_insert_with(|| Arc::new(Semaphore::new(permits.max(1))))
        .clone()
}

/// The state of a circuit breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls fail at once until the cool-down ends.
    Open,
    /// One trial call goes through; its outcome closes or reopens the breaker.
    HalfOpen,
}

impl BreakerState {
    /// As written in events.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

#[derive(Debug)]
struct Inner {
    state: BreakerState,
    failures: u32,
    opened_at: Option<Instant>,
    trial_out: bool,
}

/// A circuit breaker: after `threshold` consecutive retryable failures it opens for `cooldown`.
#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    cooldown: Duration,
    inner: Mutex<Inner>,
}

/// What a breaker says about a call about to be made.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    /// Go ahead (a state change to report, if the breaker moved to half-open).
    Yes(Option<(BreakerState, BreakerState)>),
    /// Refused: the breaker is open.
    No,
}

impl Breaker {
    /// A process-wide breaker for a key, created on first use.
    pub fn shared(key: &str, threshold: u32, cooldown: Duration) -> Arc<Breaker> {
        static ALL: OnceLock<Mutex<HashMap<String, Arc<Breaker>>>> = OnceLock::new();
        let mut map = ALL
            .get_or_init(|| Mutex::new(HashMap::new()))
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        map.entry(key.to_string())
            .or_insert_with(|| Arc::new(Breaker::new(threshold, cooldown)))
            .clone()
    }

    /// A breaker of its own.
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Breaker {
            threshold: threshold.max(1),
            cooldown,
            inner: Mutex::new(Inner {
                state: BreakerState::Closed,
                failures: 0,
                opened_at: None,
                trial_out: false,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ask before a call.
    pub fn admit(&self) -> Admit {
        let mut i = self.lock();
        match i.state {
            BreakerState::Closed => Admit::Yes(None),
            BreakerState::Open => {
                if i.opened_at.is_some_and(|t| t.elapsed() >= self.cooldown) {
                    i.state = BreakerState::HalfOpen;
                    i.trial_out = true;
                    Admit::Yes(Some((BreakerState::Open, BreakerState::HalfOpen)))
                } else {
                    Admit::No
                }
            }
            BreakerState::HalfOpen => {
                if i.trial_out {
                    Admit::No
                } else {
                    i.trial_out = true;
                    Admit::Yes(None)
                }
            }
        }
    }

    /// Report a call's outcome; returns a state change, if any.
    pub fn record(&self, ok: bool) -> Option<(BreakerState, BreakerState)> {
        let mut i = self.lock();
        let before = i.state;
        i.trial_out = false;
        if ok {
            i.failures = 0;
            i.state = BreakerState::Closed;
            i.opened_at = None;
        } else {
            i.failures += 1;
            if before == BreakerState::HalfOpen || i.failures >= self.threshold {
                i.state = BreakerState::Open;
                i.opened_at = Some(Instant::now());
            }
        }
        (before != i.state).then_some((before, i.state))
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        self.lock().state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_and_half_opens_after_cooldown() {
        let b = Breaker::new(2, Duration::from_millis(20));
        assert_eq!(b.record(false), None);
        assert_eq!(
            b.record(false),
            Some((BreakerState::Closed, BreakerState::Open))
        );
        assert_eq!(b.admit(), Admit::No);
        std::thread::sleep(Duration::from_millis(25));
        assert_eq!(
            b.admit(),
            Admit::Yes(Some((BreakerState::Open, BreakerState::HalfOpen)))
        );
        assert_eq!(b.admit(), Admit::No, "one trial at a time");
        assert_eq!(
            b.record(true),
            Some((BreakerState::HalfOpen, BreakerState::Closed))
        );
        assert_eq!(b.admit(), Admit::Yes(None));
    }
}

/// A request-rate limit shared by every run of the process: a token bucket refilled at
/// `per_minute / 60` a second, holding at most ten seconds' worth (at least one).
#[derive(Debug)]
pub struct RateLimiter {
    per_sec: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    /// A process-wide limiter for a key, created on first use.
    pub fn shared(key: &str, per_minute: u32) -> Arc<RateLimiter> {
        static ALL: OnceLock<Mutex<HashMap<String, Arc<RateLimiter>>>> = OnceLock::new();
        let mut map = ALL
            .get_or_init(|| Mutex::new(HashMap::new()))
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        map.entry(key.to_string())
            .or_insert_with(|| Arc::new(RateLimiter::new(per_minute)))
            .clone()
    }

    /// A limiter of its own.
    pub fn new(per_minute: u32) -> Self {
        let per_sec = f64::from(per_minute.max(1)) / 60.0;
        let burst = (per_sec * 10.0).max(1.0);
        RateLimiter {
            per_sec,
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    /// Wait until a request may go.
    pub async fn acquire(&self) {
        loop {
            let wait = {
                let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
                let now = Instant::now();
                s.0 = (s.0 + now.duration_since(s.1).as_secs_f64() * self.per_sec).min(self.burst);
                s.1 = now;
                if s.0 >= 1.0 {
                    s.0 -= 1.0;
                    return;
                }
                Duration::from_secs_f64((1.0 - s.0) / self.per_sec)
            };
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod rate_tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn spaces_requests_past_the_burst() {
        let r = RateLimiter::new(60); // one a second, a burst of ten
        let t0 = tokio::time::Instant::now();
        for _ in 0..12 {
            r.acquire().await;
        }
        let waited = t0.elapsed();
        assert!(waited >= Duration::from_millis(1900), "{waited:?}");
    }
}
