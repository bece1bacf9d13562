//! Linearizable reads on every node (ReadIndex, Raft thesis §6.4).
//!
//! Before a read is served from this node's applied state, this node learns a *read index* — a log index
//! that the leader, having just confirmed with a quorum that it still leads, knows to cover every write
//! acknowledged so far — and waits until it has applied that index. Then the local read sees every write
//! that completed before the read began, whichever node took the write.
//!
//! - On the leader the read index comes from `Raft::get_read_log_id` (one heartbeat round to a quorum).
//! - A follower asks the leader over `POST /raft/read-index` (cluster secret) and waits for its own apply.
//!
//! Both are **batched**: one round in flight at a time, and every read that arrives while a round is in
//! flight joins the *next* round (never the one in flight — that round's index may predate the read, which
//! would let it miss a write that completed just before it). With 64 concurrent readers a round serves
//! dozens of reads, so a read costs one quorum round trip amortised, not one each.
//!
//! No leader lease: openraft 0.9 has no lease read (0.10 does), and a lease is only safe when clock drift
//! and process pauses are bounded — on a loaded 2-core machine a paused leader is exactly what the chaos
//! suite produces. ReadIndex's price is one heartbeat round, shared by the batch.
//!
//! A read that cannot be linearized within `READ_TIMEOUT` (no leader reachable, no quorum) fails with 503,
//! as a write does; `?stale=1` skips all this and answers from the local applied state at once.
use crate::error::ApiError;
use jobserv_raft::network::CLUSTER_SECRET_HEADER;
use jobserv_raft::{codec, NodeId, Raft};
use openraft::error::{CheckIsLeaderError, RaftError};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};

/// How long a read may wait for a read index and for this node's apply before it answers 503.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// One round (a heartbeat round on the leader, or one RPC to it) is given up after this.
const ROUND_TIMEOUT: Duration = Duration::from_secs(2);

/// Reply of `POST /raft/read-index`, `codec`-encoded.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub enum ReadIndexReply {
    /// The leader confirmed its leadership after the request arrived: apply up to this index, then read.
    Index(u64),
    NotLeader {
        leader: Option<NodeId>,
    },
    Unavailable(String),
}

/// Where a read's consistency came from (a metrics label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadPath {
    Leader,
    Follower,
    Stale,
}

impl ReadPath {
    pub fn as_str(self) -> &'static str {
        match self {
            ReadPath::Leader => "leader",
            ReadPath::Follower => "follower",
            ReadPath::Stale => "stale",
        }
    }
}

type Round = Pin<Box<dyn Future<Output = ReadIndexReply> + Send>>;
type Waiter = oneshot::Sender<ReadIndexReply>;

/// Runs at most one round at a time; everyone who queued before a round starts shares its answer.
#[derive(Clone)]
struct Batcher {
    queue: mpsc::UnboundedSender<Waiter>,
}

impl Batcher {
    fn start<F>(round: F, rounds_counter: prometheus::IntCounter) -> Batcher
    where
        F: Fn() -> Round + Send + 'static,
    {
        let (queue, mut rx) = mpsc::unbounded_channel::<Waiter>();
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut waiters = vec![first];
                while let Ok(more) = rx.try_recv() {
                    waiters.push(more);
                }
                rounds_counter.inc();
                let reply = match tokio::time::timeout(ROUND_TIMEOUT, round()).await {
                    Ok(reply) => reply,
                    Err(_) => ReadIndexReply::Unavailable(format!(
                        "no read index within {ROUND_TIMEOUT:?}"
                    )),
                };
                for waiter in waiters {
                    let _ = waiter.send(reply.clone());
                }
            }
        });
        Batcher { queue }
    }

    async fn join(&self) -> ReadIndexReply {
        let (tx, rx) = oneshot::channel();
        if self.queue.send(tx).is_err() {
            return ReadIndexReply::Unavailable("read batcher stopped".into());
        }
        rx.await
            .unwrap_or_else(|_| ReadIndexReply::Unavailable("read batcher stopped".into()))
    }
}

/// This node's linearizable-read front door.
pub struct Reads {
    id: NodeId,
    raft: Raft,
    applied: watch::Receiver<u64>,
    leader_rounds: Batcher,
    forward_rounds: Batcher,
    /// Test-only (`JOBSERV_TEST_STALE_READS=1`): serve every read locally, so the chaos suite can show
    /// that its history checker catches stale reads. Never set in production.
    stale_for_tests: bool,
    metrics: Arc<crate::metrics::Metrics>,
}

impl Reads {
    pub fn start(
        id: NodeId,
        raft: Raft,
        applied: watch::Receiver<u64>,
        client: reqwest::Client,
        secret: String,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Reads {
        let stale_for_tests = std::env::var("JOBSERV_TEST_STALE_READS").is_ok_and(|v| v == "1");
        if stale_for_tests {
            tracing::error!(
                "JOBSERV_TEST_STALE_READS=1: reads are NOT linearizable on this node (test-only switch)"
            );
        }
        let leader_raft = raft.clone();
        let leader_rounds = Batcher::start(
            move || {
                let raft = leader_raft.clone();
                Box::pin(async move { leader_read_index(&raft).await })
            },
            metrics.read_rounds.with_label_values(&["leader"]),
        );
        let forward_raft = raft.clone();
        let forward_rounds = Batcher::start(
            move || {
                let (raft, client, secret) = (forward_raft.clone(), client.clone(), secret.clone());
                Box::pin(async move { ask_leader(&raft, &client, &secret).await })
            },
            metrics.read_rounds.with_label_values(&["follower"]),
        );
        Reads {
            id,
            raft,
            applied,
            leader_rounds,
            forward_rounds,
            stale_for_tests,
            metrics,
        }
    }

    /// The read index for a follower's request (`POST /raft/read-index`): answered only if this node leads
    /// (never forwarded again, so two nodes that each think the other leads cannot bounce a request).
    pub async fn read_index_as_leader(&self) -> ReadIndexReply {
        self.leader_rounds.join().await
    }

    /// Returns once a read served from this node's state now is linearizable, or 503 after
    /// `READ_TIMEOUT`. `stale` (the caller's `?stale=1`) answers at once.
    pub async fn linearize(&self, stale: bool) -> Result<ReadPath, ApiError> {
        let started = Instant::now();
        if stale || self.stale_for_tests {
            self.observe(ReadPath::Stale, started);
            return Ok(ReadPath::Stale);
        }
        let deadline = started + READ_TIMEOUT;
        let mut last_error;
        let mut metrics = self.raft.metrics();
        loop {
            let leader = metrics.borrow_and_update().current_leader;
            let (path, reply) = if leader == Some(self.id) {
                (ReadPath::Leader, self.leader_rounds.join().await)
            } else {
                (ReadPath::Follower, self.forward_rounds.join().await)
            };
            match reply {
                ReadIndexReply::Index(index) => {
                    self.wait_applied(index, deadline).await?;
                    self.observe(path, started);
                    return Ok(path);
                }
                ReadIndexReply::NotLeader { leader: None } => {
                    last_error = "no leader elected yet".into()
                }
                ReadIndexReply::NotLeader { leader: Some(l) } => {
                    last_error = format!("node {l} is no longer the leader")
                }
                ReadIndexReply::Unavailable(e) => last_error = e,
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                break;
            }
            // Retry when this node learns of a (new) leader, or after a short pause.
            let pause = Duration::from_millis(100).min(remaining);
            let _ = tokio::time::timeout(pause, metrics.changed()).await;
            if Instant::now() >= deadline {
                break;
            }
        }
        self.metrics.read_failures.inc();
        Err(ApiError::Unavailable(format!(
            "read not linearizable within {READ_TIMEOUT:?}: {last_error}; the cluster may have no quorum reachable from this node (add ?stale=1 for this node's possibly stale view)"
        )))
    }

    async fn wait_applied(&self, index: u64, deadline: Instant) -> Result<(), ApiError> {
        let mut rx = self.applied.clone();
        let caught_up = async { rx.wait_for(|&a| a >= index).await.is_ok() };
        match tokio::time::timeout_at(deadline.into(), caught_up).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(ApiError::Unavailable("this node is shutting down".into())),
            Err(_) => {
                self.metrics.read_failures.inc();
                Err(ApiError::Unavailable(format!(
                    "this node has not applied the read index {index} within {READ_TIMEOUT:?} (applied {}); it is catching up (add ?stale=1 for its possibly stale view)",
                    *self.applied.borrow()
                )))
            }
        }
    }

    fn observe(&self, path: ReadPath, started: Instant) {
        self.metrics
            .read_seconds
            .with_label_values(&[path.as_str()])
            .observe(started.elapsed().as_secs_f64());
    }
}

/// One leadership-confirming round on this node.
async fn leader_read_index(raft: &Raft) -> ReadIndexReply {
    match raft.get_read_log_id().await {
        Ok((read_log_id, _applied)) => ReadIndexReply::Index(read_log_id.map_or(0, |l| l.index)),
        Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
            ReadIndexReply::NotLeader {
                leader: f.leader_id,
            }
        }
        Err(e) => ReadIndexReply::Unavailable(e.to_string()),
    }
}

/// One round trip to the leader this node knows of.
async fn ask_leader(raft: &Raft, client: &reqwest::Client, secret: &str) -> ReadIndexReply {
    let (leader, me) = {
        let m = raft.metrics();
        let m = m.borrow();
        (m.current_leader, m.id)
    };
    let Some(leader) = leader else {
        return ReadIndexReply::NotLeader { leader: None };
    };
    if leader == me {
        // Became the leader since the read chose this path: confirm leadership here.
        return leader_read_index(raft).await;
    }
    let Some(url) = crate::cluster::member_url(raft, leader) else {
        return ReadIndexReply::Unavailable(format!("leader {leader} has no known address"));
    };
    let reply = client
        .post(format!("{}/raft/read-index", url.trim_end_matches('/')))
        .header(CLUSTER_SECRET_HEADER, secret)
        .timeout(ROUND_TIMEOUT)
        .send()
        .await;
    let reply = match reply {
        Ok(r) if r.status().is_success() => r,
        Ok(r) => return ReadIndexReply::Unavailable(format!("leader {url}: HTTP {}", r.status())),
        Err(e) => return ReadIndexReply::Unavailable(format!("leader {url}: {e}")),
    };
    match reply.bytes().await {
        Ok(bytes) => codec::decode(&bytes)
            .unwrap_or_else(|e| ReadIndexReply::Unavailable(format!("leader {url}: {e}"))),
        Err(e) => ReadIndexReply::Unavailable(format!("leader {url}: {e}")),
    }
}

/// The middleware (innermost, before any handler reads): linearizes every state read unless exempt or
/// `?stale=1`. Writes need nothing here: they are committed through the leader.
pub async fn linearize_reads(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody + 'static>,
) -> Result<actix_web::dev::ServiceResponse<actix_web::body::BoxBody>, actix_web::Error> {
    use actix_web::http::Method;
    let is_read = matches!(*req.method(), Method::GET | Method::HEAD) && !exempt(req.path());
    if is_read {
        let cluster = req
            .app_data::<actix_web::web::Data<crate::app::App>>()
            .map(|app| app.cluster.clone());
        if let Some(cluster) = cluster {
            let stale = wants_stale(req.query_string());
            if let Err(e) = cluster.reads.linearize(stale).await {
                tracing::warn!(path = %req.path(), "read refused: {e}");
                return Ok(req.error_response(e));
            }
        }
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}

/// Whether a query string asks for a possibly stale read (`stale=1` or `stale=true`).
pub fn wants_stale(query: &str) -> bool {
    query.split('&').any(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        k == "stale" && (v == "1" || v == "true")
    })
}

/// The routes whose reads are *not* linearized: node-to-node RPCs, liveness and monitoring that must answer
/// without a quorum, and the static worker binary. Every other GET/HEAD is.
pub fn exempt(path: &str) -> bool {
    path.starts_with("/raft/")
        || path == "/health"
        || path == "/healthz"
        // It linearizes by itself, with a short bound.
        || path == "/health/ready"
        || path.starts_with("/ui/static/")
        || path == "/metrics"
        || path == "/version"
        || path == "/worker"
        || path == "/runner"
        || path == crate::api::RUNNER_WHEEL_PATH
        || path == "/simulator"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_is_asked_only_explicitly() {
        assert!(wants_stale("stale=1"));
        assert!(wants_stale("limit=5&stale=true"));
        assert!(!wants_stale("stale=0"));
        assert!(!wants_stale("notstale=1"));
        assert!(!wants_stale(""));
    }

    #[test]
    fn state_reads_are_not_exempt() {
        for p in ["/projects/", "/cluster/", "/health/runs/", "/workers/w/"] {
            assert!(!exempt(p), "{p}");
        }
        for p in ["/raft/append", "/metrics", "/health"] {
            assert!(exempt(p), "{p}");
        }
    }
}
