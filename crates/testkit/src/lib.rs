//! Test support shared by every sagaflow crate: the conformance suite each `Store` adapter
//! passes, and fixtures that build realistic decisions with the real decider.

pub mod fixture;
pub mod store_conformance;
