//! Retry math: how long to wait before the next attempt, and when to give up.

use serde::{Deserialize, Serialize};

use crate::clock::{Millis, MAX_SPAN_MS};

/// The largest growth factor a policy may name.
pub const MAX_MULTIPLIER: f64 = 1000.0;

/// How a step (or its compensation) is retried.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicy {
    /// Attempts in all, the first one included. At least 1.
    pub max_attempts: u32,
    /// Delay before the second attempt, in milliseconds.
    pub initial_delay_ms: u64,
    /// Each further delay is the previous one times this (at least 1.0).
    pub multiplier: f64,
    /// No delay is longer than this, in milliseconds.
    pub max_delay_ms: u64,
    /// Fraction (0.0..=1.0) of the delay that is randomised, to spread retries apart.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            initial_delay_ms: 100,
            multiplier: 2.0,
            max_delay_ms: 30_000,
            jitter: 0.2,
        }
    }
}

impl RetryPolicy {
    /// A policy that never retries: one attempt only.
    pub fn none() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        }
    }

    /// `max_attempts` attempts, `initial_delay_ms` apart, doubling, with the default jitter.
    pub fn attempts(max_attempts: u32, initial_delay_ms: u64) -> Self {
        RetryPolicy {
            max_attempts,
            initial_delay_ms,
            ..RetryPolicy::default()
        }
    }

    /// The delay before attempt `failed + 1`, after `failed` failed attempts (1-based).
    ///
    /// `random` is a number in `[0, 1)` supplied by the caller, so the result is
    /// deterministic for the same inputs.
    pub fn delay_ms(&self, failed: u32, random: f64) -> Millis {
        let exponent = failed.saturating_sub(1).min(64) as i32;
        let base = (self.initial_delay_ms as f64) * self.multiplier.max(1.0).powi(exponent);
        let capped = base.min(self.max_delay_ms as f64);
        let jitter = self.jitter.clamp(0.0, 1.0);
        let r = random.clamp(0.0, 1.0);
        let factor = 1.0 - jitter + 2.0 * jitter * r;
        (capped * factor).max(0.0).round() as Millis
    }

    /// Whether another attempt is allowed after `used` attempts of the current budget.
    pub fn allows_another(&self, used: u32) -> bool {
        used < self.max_attempts
    }

    /// Describes what is wrong with the policy, if anything.
    pub fn problem(&self) -> Option<String> {
        if self.max_attempts == 0 {
            return Some("max_attempts must be at least 1".into());
        }
        if !self.multiplier.is_finite() || self.multiplier < 1.0 {
            return Some(format!(
                "multiplier must be at least 1.0, got {}",
                self.multiplier
            ));
        }
        if !self.jitter.is_finite() || !(0.0..=1.0).contains(&self.jitter) {
            return Some(format!(
                "jitter must be between 0.0 and 1.0, got {}",
                self.jitter
            ));
        }
        if self.multiplier > MAX_MULTIPLIER {
            return Some(format!(
                "multiplier must be at most {MAX_MULTIPLIER}, got {}",
                self.multiplier
            ));
        }
        if self.max_delay_ms > MAX_SPAN_MS {
            return Some(format!(
                "max_delay_ms must be at most {MAX_SPAN_MS} (ten years), got {}",
                self.max_delay_ms
            ));
        }
        if self.max_delay_ms < self.initial_delay_ms {
            return Some(format!(
                "max_delay_ms ({}) is below initial_delay_ms ({})",
                self.max_delay_ms, self.initial_delay_ms
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_are_capped() {
        let p = RetryPolicy {
            max_attempts: 10,
            initial_delay_ms: 100,
            multiplier: 2.0,
            max_delay_ms: 500,
            jitter: 0.0,
        };
        let delays: Vec<_> = (1..=5).map(|n| p.delay_ms(n, 0.5)).collect();
        assert_eq!(delays, vec![100, 200, 400, 500, 500]);
    }

    #[test]
    fn jitter_stays_within_its_band() {
        let p = RetryPolicy {
            jitter: 0.5,
            ..RetryPolicy::attempts(3, 1000)
        };
        assert_eq!(p.delay_ms(1, 0.0), 500);
        assert_eq!(p.delay_ms(1, 0.5), 1000);
        assert!(p.delay_ms(1, 0.999) <= 1500);
    }

    #[test]
    fn bad_policies_are_named() {
        assert!(RetryPolicy::attempts(0, 10)
            .problem()
            .unwrap()
            .contains("max_attempts"));
        let p = RetryPolicy {
            multiplier: 0.5,
            ..RetryPolicy::default()
        };
        assert!(p.problem().unwrap().contains("multiplier"));
    }
}
