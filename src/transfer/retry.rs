//! Retry policy: repeat only retryable failures, with full-jitter exponential backoff and a
//! bounded number of attempts; stop early when the run is cancelled. Each attempt runs with its
//! number announced to the store layer ([`crate::store::reqlog::attempt_scope`]), so store
//! wrappers (the request log, a volume's status) can tell a first request from a repeat.

use std::future::Future;
use std::time::Duration;

use super::Cancel;
use super::stats::Stats;
use crate::error::{Error, Result};

/// How often and how patiently to retry.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts per request, including the first.
    pub max_attempts: u32,
    /// First backoff ceiling.
    pub base_delay: Duration,
    /// Largest backoff ceiling.
    pub max_delay: Duration,
}

impl RetryPolicy {
    /// The policy for a number of attempts, with the default delays (0.2 s doubling to 20 s).
    pub fn with_attempts(max_attempts: u32) -> Self {
        RetryPolicy {
            max_attempts: max_attempts.max(1),
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(20),
        }
    }

    /// The ceiling of the delay after `attempt` failures (1-based); the delay is uniform in
    /// `[0, ceiling]` ("full jitter"), so many clients do not retry in lockstep.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        exp.min(self.max_delay)
    }

    /// Runs `f` until it succeeds, fails permanently, runs out of attempts, or the run is
    /// cancelled. Each repeat is counted in `stats`.
    pub async fn run<T, F, Fut>(&self, stats: &Stats, cancel: &Cancel, mut f: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut attempt = 1;
        loop {
            if cancel.is_cancelled() {
                return Err(Error::Interrupted);
            }
            match crate::store::reqlog::attempt_scope(attempt, f()).await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_retryable() && attempt < self.max_attempts => {
                    let ceiling = self.ceiling(attempt);
                    let delay = ceiling.mul_f64(rand::random::<f64>());
                    tracing::debug!(attempt, ?delay, error = %e.one_line(), "retrying");
                    stats.retry();
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = cancel.cancelled() => return Err(Error::Interrupted),
                    }
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::StoreFailure;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn failure(retryable: bool) -> Error {
        Error::Store(StoreFailure {
            op: "GetObject",
            key: "k".into(),
            status: Some(if retryable { 503 } else { 403 }),
            code: None,
            message: "m".into(),
            retryable,
        })
    }

    fn fast(n: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts: n,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
        }
    }

    #[tokio::test]
    async fn retries_retryable_until_success_and_counts() {
        let stats = Stats::default();
        let calls = AtomicU32::new(0);
        let r = fast(5)
            .run(&stats, &Cancel::default(), || async {
                if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                    Err(failure(true))
                } else {
                    Ok(7)
                }
            })
            .await;
        assert_eq!(r.expect("succeeds"), 7);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!(stats.snapshot().retries, 2);
    }

    #[tokio::test]
    async fn permanent_errors_fail_fast() {
        let stats = Stats::default();
        let calls = AtomicU32::new(0);
        let r: Result<()> = fast(5)
            .run(&stats, &Cancel::default(), || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(failure(false))
            })
            .await;
        assert!(r.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn attempts_are_bounded() {
        let stats = Stats::default();
        let calls = AtomicU32::new(0);
        let r: Result<()> = fast(3)
            .run(&stats, &Cancel::default(), || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(failure(true))
            })
            .await;
        assert!(r.expect_err("gives up").is_retryable());
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn each_attempt_is_announced_with_its_number() {
        use crate::store::reqlog::current_attempt;
        let seen = std::sync::Mutex::new(Vec::new());
        let _ = fast(3)
            .run(&Stats::default(), &Cancel::default(), || async {
                seen.lock().expect("lock").push(current_attempt());
                Err::<(), _>(failure(true))
            })
            .await;
        assert_eq!(*seen.lock().expect("lock"), [Some(1), Some(2), Some(3)]);
        assert_eq!(current_attempt(), None);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy::with_attempts(10);
        assert_eq!(p.ceiling(1), Duration::from_millis(200));
        assert_eq!(p.ceiling(2), Duration::from_millis(400));
        assert_eq!(p.ceiling(30), Duration::from_secs(20));
    }
}
