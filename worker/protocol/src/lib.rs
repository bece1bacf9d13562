//! Wire types shared by the node (server) and the worker (lab agent).
//!
//! This crate is deliberately light: serde, serde_json, serde_yaml, regex. The worker links it without
//! pulling in openraft, sled or actix. Everything that crosses the wire or is stored carries a version.
pub mod api;
pub mod http;
pub mod project;
pub mod rundef;
pub mod status;
pub mod time;

pub use rundef::RunDef;
pub use status::RunStatus;
