//! Time as the model sees it: milliseconds since the Unix epoch, read through a port.

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

/// The clock port: the runtime reads time through it so tests can control it.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> Millis;
}
