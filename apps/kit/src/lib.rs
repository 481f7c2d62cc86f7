//! What sagaflow's reference apps share, so each app is only its own domain: passwords and
//! tokens ([`auth`]), SQL helpers over the participant transaction ([`sql`]), and HTTP
//! helpers ([`http`]). Built on sagaflow's public API only.

#![warn(missing_docs)]

pub mod auth;
pub mod http;
pub mod sql;
