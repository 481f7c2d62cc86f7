//! The shared Store conformance suite, against PostgreSQL (a fresh schema per check).

mod support;

sagaflow_testkit::store_conformance_tests!(support::fresh_dyn().await);
