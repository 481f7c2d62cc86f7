//! Test support shared by every sagaflow crate: the conformance suites each `Store` and
//! `Transport` adapter passes, and fixtures that build realistic decisions with the real decider.

#![warn(missing_docs)]

pub mod brokers;
pub mod fault_proxy;
pub mod fixture;
pub mod store_conformance;
pub mod transport_conformance;
