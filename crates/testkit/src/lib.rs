//! Test support shared by every sagaflow crate: the conformance suite each `Store` adapter
//! passes, and fixtures that build realistic decisions with the real decider.

#![warn(missing_docs)]

pub mod fixture;
pub mod store_conformance;
