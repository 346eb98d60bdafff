//! `retry:` on an `invoke` request or put: try again after a transient failure.
//!
//! Off by default. `retry: {attempts: 3, backoff: 500ms}` makes up to 3 attempts in all,
//! waiting `backoff` before the second, twice that before the third, and so on (each wait
//! cut to a random point between half and all of it, and never above [`MAX_BACKOFF`]).
//! Only transient failures are retried: no answer (refused or broken connection, timeout)
//! and, for requests, `429` and `5xx` answers that are not `tolerate`d. A `4xx` (or any
//! tolerated status) is never retried. A retried request is one `request` event in the run,
//! with its `attempts`.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::compile::FlowCx;
use crate::connectors::retry::{Backoff, Policy};

/// Most attempts a step may ask for.
pub const MAX_ATTEMPTS: u32 = 10;
/// Longest wait between two attempts (and longest `backoff`).
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// `backoff` when none is given.
const DEFAULT_BACKOFF: Duration = Duration::from_secs(1);

/// Retries of a request or put after transient failures (connection errors, timeouts, and
/// for requests 429 and 5xx answers that are not tolerated). Never retries a 4xx.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetrySpec {
    /// Attempts in all, the first one included (1 to 10; 1 means no retry).
    pub attempts: u32,
    /// Wait before the second attempt, e.g. `500ms`, `2s`; it doubles for each further
    /// attempt, with jitter, up to 5 minutes (default `1s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<String>,
}

/// A checked `retry:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Attempts in all.
    pub attempts: u32,
    /// The first wait.
    pub backoff: Duration,
}

impl Retry {
    /// No retry: one attempt.
    pub const NONE: Retry = Retry {
        attempts: 1,
        backoff: DEFAULT_BACKOFF,
    };

    /// The connector-level policy with these settings.
    pub fn policy(&self) -> Policy {
        Policy {
            retries: self.attempts.saturating_sub(1),
            backoff: Backoff {
                first: self.backoff,
                max: MAX_BACKOFF,
            },
            within: None,
        }
    }
}

impl RetrySpec {
    /// Checks the bounds and parses `backoff`; reports problems at `ptr` (the `retry` key).
    pub fn compile(&self, cx: &mut FlowCx<'_>, ptr: &str) -> Retry {
        let mut attempts = self.attempts;
        if !(1..=MAX_ATTEMPTS).contains(&self.attempts) {
            cx.error_at(
                &format!("{ptr}/attempts"),
                "bad-value",
                format!(
                    "retry.attempts is {}; it must be between 1 and {MAX_ATTEMPTS}",
                    self.attempts
                ),
                None,
            );
            attempts = attempts.clamp(1, MAX_ATTEMPTS);
        }
        let backoff = match &self.backoff {
            None => DEFAULT_BACKOFF,
            Some(text) => match humantime::parse_duration(text.trim()) {
                Ok(d) if d <= MAX_BACKOFF => d,
                Ok(_) => {
                    cx.error_at(
                        &format!("{ptr}/backoff"),
                        "bad-value",
                        format!("retry.backoff '{text}' is longer than 5 minutes"),
                        None,
                    );
                    MAX_BACKOFF
                }
                Err(e) => {
                    cx.error_at(
                        &format!("{ptr}/backoff"),
                        "bad-value",
                        format!("retry.backoff '{text}' is not a duration: {e}"),
                        Some("write e.g. 500ms, 2s or 1m".into()),
                    );
                    DEFAULT_BACKOFF
                }
            },
        };
        Retry { attempts, backoff }
    }
}
