//! The circuit breaker of one endpoint: after [`OPEN_AFTER`] failures in a row no calls are
//! made for a cool-down (1 s, doubling each time it opens again, at most 30 s); then one
//! probe call decides whether the endpoint is back.

use std::time::{Duration, Instant};

use sagaflow_core::CircuitState;

/// Failures in a row that open the circuit.
pub const OPEN_AFTER: u32 = 5;
const FIRST_COOL_DOWN: Duration = Duration::from_secs(1);
const LONGEST_COOL_DOWN: Duration = Duration::from_secs(30);

#[derive(Debug)]
enum State {
    Closed,
    Open { until: Instant },
    HalfOpen { probing: bool },
}

/// One endpoint's breaker.
#[derive(Debug)]
pub struct Breaker {
    state: State,
    /// Failures since the last success.
    pub consecutive: u32,
    /// How many times it opened since the last success (sets the cool-down).
    openings: u32,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker {
            state: State::Closed,
            consecutive: 0,
            openings: 0,
        }
    }
}

impl Breaker {
    /// May a call go out now? In the half-open state only one (the probe) may.
    pub fn admit(&mut self, now: Instant) -> bool {
        match &mut self.state {
            State::Closed => true,
            State::Open { until } => {
                if now >= *until {
                    self.state = State::HalfOpen { probing: true };
                    true
                } else {
                    false
                }
            }
            State::HalfOpen { probing } => {
                if *probing {
                    false
                } else {
                    *probing = true;
                    true
                }
            }
        }
    }

    /// Is the circuit open now (calls would be refused)?
    pub fn is_open(&self, now: Instant) -> bool {
        matches!(self.state, State::Open { until } if now < until)
    }

    /// The endpoint answered (any answer but a failure: 2xx, 202, 4xx).
    pub fn succeeded(&mut self) {
        self.state = State::Closed;
        self.consecutive = 0;
        self.openings = 0;
    }

    /// The endpoint failed (refused, timed out, 429, 5xx, an unreadable answer).
    pub fn failed(&mut self, now: Instant) {
        self.consecutive = self.consecutive.saturating_add(1);
        let open = match self.state {
            State::HalfOpen { .. } => true,
            State::Closed => self.consecutive >= OPEN_AFTER,
            State::Open { .. } => false,
        };
        if open {
            let cool_down = FIRST_COOL_DOWN
                .saturating_mul(1 << self.openings.min(5))
                .min(LONGEST_COOL_DOWN);
            self.openings = self.openings.saturating_add(1);
            self.state = State::Open {
                until: now + cool_down,
            };
        }
    }

    /// The state as operators see it.
    pub fn state(&self, now: Instant) -> CircuitState {
        match self.state {
            State::Closed => CircuitState::Closed,
            State::Open { until } if now < until => CircuitState::Open,
            State::Open { .. } | State::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_failures_in_a_row_then_probes_once() {
        let t0 = Instant::now();
        let mut b = Breaker::default();
        for _ in 0..OPEN_AFTER - 1 {
            assert!(b.admit(t0));
            b.failed(t0);
        }
        assert_eq!(b.state(t0), CircuitState::Closed);
        b.failed(t0);
        assert_eq!(b.state(t0), CircuitState::Open);
        assert!(!b.admit(t0 + Duration::from_millis(500)));
        let later = t0 + FIRST_COOL_DOWN;
        assert!(b.admit(later), "the probe");
        assert!(!b.admit(later), "only one probe at a time");
        b.failed(later);
        assert_eq!(b.state(later), CircuitState::Open);
        // The second cool-down is twice as long.
        assert!(!b.admit(later + FIRST_COOL_DOWN));
        assert!(b.admit(later + 2 * FIRST_COOL_DOWN));
        b.succeeded();
        assert_eq!(b.state(later), CircuitState::Closed);
        assert_eq!(b.consecutive, 0);
    }

    #[test]
    fn a_success_resets_the_count() {
        let t0 = Instant::now();
        let mut b = Breaker::default();
        for _ in 0..OPEN_AFTER - 1 {
            b.failed(t0);
        }
        b.succeeded();
        b.failed(t0);
        assert_eq!(b.state(t0), CircuitState::Closed);
    }
}
