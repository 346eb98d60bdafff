//! Retrying transient failures with exponential backoff and jitter.
//!
//! A failure is transient when no answer came (a refused or broken connection, a timeout) or
//! when the peer answered `429 Too Many Requests` or a `5xx` status: trying again later may
//! succeed. Everything else (a `4xx`, a bad name, a local file that cannot be read) fails at
//! once. The waits grow from [`Backoff::first`], doubling each time up to [`Backoff::max`],
//! and each is cut to a random point between half and all of it ("jitter"), so that clients
//! that failed together do not come back together.
//!
//! Used by the OCI connector (3 retries, as the S3 connector's `object_store` client does)
//! and by the `retry:` option of `invoke` requests and puts.

use std::future::Future;
use std::hash::{BuildHasher as _, Hasher as _};
use std::time::Duration;

use super::ConnectorError;

/// How often to retry and how long to wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Retries after the first attempt (so `retries + 1` attempts at most).
    pub retries: u32,
    /// The waits between attempts.
    pub backoff: Backoff,
    /// No retry starts when it would begin later than this after the first attempt began
    /// (as `object_store`'s `retry_timeout`); `None`: no such limit.
    pub within: Option<Duration>,
}

/// How long to wait between attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The wait before the first retry (before jitter).
    pub first: Duration,
    /// The longest wait (before jitter).
    pub max: Duration,
}

impl Backoff {
    /// The wait before retry number `retry` (1 for the first retry): `first × 2^(retry-1)`,
    /// at most `max`, then a random point between half and all of it.
    pub fn delay(&self, retry: u32) -> Duration {
        let factor = 2u32.saturating_pow(retry.saturating_sub(1));
        let full = self.first.saturating_mul(factor).min(self.max);
        full.mul_f64(0.5 + 0.5 * unit_random())
    }
}

/// A random number in `[0, 1)`, good enough for jitter (not for secrets): every
/// [`std::hash::RandomState`] is seeded afresh.
fn unit_random() -> f64 {
    let mut hasher = std::hash::RandomState::new().build_hasher();
    hasher.write_u64(0x9E37_79B9_7F4A_7C15);
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// Whether an HTTP status is worth retrying: 429 and every 5xx.
pub fn is_transient_status(status: u16) -> bool {
    status == 429 || (500..600).contains(&status)
}

/// Whether a connector error is worth retrying: no answer came (connect errors, broken
/// connections, timeouts).
pub fn is_transient_error(e: &ConnectorError) -> bool {
    matches!(e, ConnectorError::Connect(_) | ConnectorError::Timeout(_))
}

/// How one attempt failed.
#[derive(Debug)]
pub enum Failure {
    /// Worth another attempt.
    Transient(ConnectorError),
    /// Not worth another attempt.
    Permanent(ConnectorError),
}

impl Failure {
    /// Classifies a connector error with [`is_transient_error`].
    pub fn classify(e: ConnectorError) -> Failure {
        if is_transient_error(&e) {
            Failure::Transient(e)
        } else {
            Failure::Permanent(e)
        }
    }
}

impl From<ConnectorError> for Failure {
    fn from(e: ConnectorError) -> Failure {
        Failure::classify(e)
    }
}

/// Runs `attempt` (given the attempt number, from 1) until it succeeds, fails permanently,
/// or the policy allows no further attempt. Returns the value and the number of attempts
/// made. When several attempts were made, the error says so: `… (gave up after 4
/// attempts)`. `what` names the connection in the warning logged before each retry.
pub async fn run<T, F, Fut>(
    what: &str,
    policy: Policy,
    mut attempt: F,
) -> Result<(T, u32), ConnectorError>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, Failure>>,
{
    let started = tokio::time::Instant::now();
    let mut n: u32 = 1;
    loop {
        match attempt(n).await {
            Ok(value) => return Ok((value, n)),
            Err(Failure::Permanent(e)) => return Err(after_attempts(e, n)),
            Err(Failure::Transient(e)) => {
                let wait = policy.backoff.delay(n);
                let too_late = policy
                    .within
                    .is_some_and(|limit| started.elapsed() + wait > limit);
                if n > policy.retries || too_late {
                    return Err(after_attempts(e, n));
                }
                tracing::warn!(connection = %what, attempt = n, error = %e,
                    wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                    "transient failure; retrying");
                tokio::time::sleep(wait).await;
                n += 1;
            }
        }
    }
}

/// `e` with ` (gave up after N attempts)` added to its message when `attempts > 1`.
pub fn after_attempts(e: ConnectorError, attempts: u32) -> ConnectorError {
    if attempts <= 1 {
        return e;
    }
    let note = format!(" (gave up after {attempts} attempts)");
    match e {
        ConnectorError::NotFound(m) => ConnectorError::NotFound(m + &note),
        ConnectorError::Config(m) => ConnectorError::Config(m + &note),
        ConnectorError::Auth(m) => ConnectorError::Auth(m + &note),
        ConnectorError::Timeout(m) => ConnectorError::Timeout(m + &note),
        ConnectorError::Connect(m) => ConnectorError::Connect(m + &note),
        ConnectorError::Protocol(m) => ConnectorError::Protocol(m + &note),
        other @ (ConnectorError::Io { .. }
        | ConnectorError::HostileName { .. }
        | ConnectorError::NameRefused { .. }) => other,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_max_with_jitter() {
        let b = Backoff {
            first: Duration::from_millis(100),
            max: Duration::from_millis(1000),
        };
        for _ in 0..50 {
            let d1 = b.delay(1);
            assert!(d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(100));
            let d3 = b.delay(3);
            assert!(d3 >= Duration::from_millis(200) && d3 <= Duration::from_millis(400));
            let d9 = b.delay(9);
            assert!(d9 >= Duration::from_millis(500) && d9 <= Duration::from_millis(1000));
        }
        // Jitter: not every draw is the same.
        let draws: std::collections::HashSet<Duration> = (0..20).map(|_| b.delay(1)).collect();
        assert!(draws.len() > 1);
    }

    #[test]
    fn transient_statuses() {
        for s in [429, 500, 502, 503, 504] {
            assert!(is_transient_status(s), "{s}");
        }
        for s in [200, 400, 401, 403, 404, 409, 412] {
            assert!(!is_transient_status(s), "{s}");
        }
    }

    #[tokio::test]
    async fn stops_at_a_permanent_failure_and_after_the_budget() {
        let b = Policy {
            retries: 3,
            backoff: Backoff {
                first: Duration::from_millis(10),
                max: Duration::from_millis(20),
            },
            within: None,
        };
        let mut calls = 0;
        let err = run("t", b, |_| {
            calls += 1;
            async { Err::<(), _>(Failure::Transient(ConnectorError::Connect("down".into()))) }
        })
        .await
        .unwrap_err();
        assert_eq!(calls, 4);
        assert_eq!(
            err.to_string(),
            "connection failed: down (gave up after 4 attempts)"
        );

        let mut calls = 0;
        let err = run("t", b, |_| {
            calls += 1;
            async { Err::<(), _>(Failure::Permanent(ConnectorError::Protocol("400".into()))) }
        })
        .await
        .unwrap_err();
        assert_eq!(calls, 1);
        assert_eq!(err.to_string(), "400");

        let (value, attempts) = run("t", b, |n| async move {
            if n < 3 {
                Err(Failure::Transient(ConnectorError::Timeout("slow".into())))
            } else {
                Ok(n * 10)
            }
        })
        .await
        .unwrap();
        assert_eq!((value, attempts), (30, 3));

        // No retry starts after `within`.
        let mut calls = 0;
        let within = Policy {
            within: Some(Duration::from_millis(5)),
            ..b
        };
        run("t", within, |_| {
            calls += 1;
            async { Err::<(), _>(Failure::Transient(ConnectorError::Connect("down".into()))) }
        })
        .await
        .unwrap_err();
        assert_eq!(calls, 1);
    }
}
