//! The JobServ node: HTTPS API, actors and the glue to the replicated state (`jobserv-raft`).
//! `main.rs` (the `jobserv-node` binary) is a thin CLI over `node::start` and `dev::run`.
pub mod actors;
pub mod api;
pub mod app;
pub mod auth;
pub mod backup;
pub mod batcher;
pub mod blobs;
pub mod cluster;
pub mod config;
pub mod definition;
pub mod error;
pub mod gossip;
pub mod handover;
pub mod legacy;
pub mod metrics;
pub mod node;
pub mod notify;
pub mod presence;
pub mod reads;
pub mod scheduler;
pub mod stall_watch;
pub mod tls;
pub mod triggers;
pub mod ui;
