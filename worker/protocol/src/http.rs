//! How long an idle HTTP/1.1 connection lives, on each side of the wire.
//!
//! A client must give up an idle pooled connection *before* the server closes it. When the server closes
//! first, a client that picks the connection from its pool in the same instant writes its request into a
//! socket whose FIN is already on the way and gets "connection closed before message completed" — a
//! failed call the server never saw. (CI hit exactly this: actix closed connections after its default 5 s
//! while reqwest kept them for its default 90 s.) So the node keeps idle connections for
//! [`SERVER_KEEP_ALIVE`] and every client of ours — worker, CLI, node-to-node forwards, benches — drops them
//! after [`CLIENT_POOL_IDLE`], well before.
use std::time::Duration;

/// The node's keep-alive for an idle client connection (nginx's default). Long enough that a worker
/// checking in every few seconds keeps its TLS session instead of shaking hands each time.
pub const SERVER_KEEP_ALIVE: Duration = Duration::from_secs(75);

/// How long our clients keep an idle connection in their pool.
pub const CLIENT_POOL_IDLE: Duration = Duration::from_secs(45);

// The ordering above is the whole point; a change that breaks it does not compile.
const _: () = assert!(CLIENT_POOL_IDLE.as_secs() + 10 <= SERVER_KEEP_ALIVE.as_secs());
