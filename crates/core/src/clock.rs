//! Time as the model sees it: milliseconds since the Unix epoch, read through a port.

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

/// The longest span a definition may name (a retry delay, a timeout, a deadline): ten years
/// in milliseconds. Longer ones are refused at registration.
pub const MAX_SPAN_MS: u64 = 10 * 365 * 24 * 3600 * 1000;

/// `ms` after `at`, saturating: a span too large for the clock is the end of time, never a
/// wrap into the past.
pub fn after(at: Millis, ms: u64) -> Millis {
    at.saturating_add(Millis::try_from(ms).unwrap_or(Millis::MAX))
}

/// The clock port: the runtime reads time through it so tests can control it.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> Millis;
}
