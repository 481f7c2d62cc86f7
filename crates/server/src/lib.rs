//! The sagaflow binary's commands, as a library so the test suite can drive them: the
//! demo, the bench, the saga commands and the crash drill.

pub mod bench;
pub mod config;
pub mod connections;
pub mod definition_files;
pub mod demo;
pub mod drill;
pub mod key_cmd;
pub mod participant_cmd;
pub mod saga_cmd;
pub mod serve;
pub mod store_url;
pub mod telemetry;
pub mod transport_url;
