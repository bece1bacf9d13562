//! A graceful stop (SIGTERM, SIGINT): readiness turns false at once, a leader hands its leadership to a
//! caught-up follower, then the HTTP server drains and Raft shuts down. A rolling restart
//! (`kubectl rollout restart`, `systemctl restart`, `docker compose up -d` with a new image) then costs no
//! election timeout when it stops the leader.
//!
//! openraft 0.9 has no leader transfer (TimeoutNow). What it does have makes one: a follower asked to
//! `trigger().elect()` campaigns at once with a higher term, and the *leader* grants that vote when the
//! candidate's log is at least its own and the leader's own vote is older than the lease
//! (`election_timeout_max`; a leader's vote time is the moment it was elected). Candidate plus old leader
//! are a majority of three: the new leader is elected in one round trip, while the third node (which
//! refuses votes for a lease after its last heartbeat) simply follows the higher term. So the successor
//! must hold every entry the leader has when it asks (checked on the leader's replication metrics just
//! before), and a leader elected less than a lease ago cannot hand over this way (the candidate's
//! higher term then makes the old leader step down and the cluster elects normally, as after a crash).
use crate::cluster::Cluster;
use jobserv_raft::network::CLUSTER_SECRET_HEADER;
use jobserv_raft::types::NodeId;
use std::time::{Duration, Instant};

/// How long the leader waits for a follower to hold its whole log before it gives up handing over.
const CATCH_UP_WAIT: Duration = Duration::from_secs(3);
/// How long it waits for a successor's election to show in its metrics.
const ELECTION_WAIT: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    #[error(
        "no voter holds the leader's whole log (last index {last_index}) after {CATCH_UP_WAIT:?}"
    )]
    NoCaughtUpFollower { last_index: u64 },
    #[error("asking node {successor} to campaign: {message}")]
    Ask { successor: NodeId, message: String },
    #[error("node {successor} did not take over within {ELECTION_WAIT:?}")]
    NotElected { successor: NodeId },
}

/// What a hand-over did.
#[derive(Debug, PartialEq, Eq)]
pub enum Handover {
    /// This node was not the leader (or the only voter): nothing to hand over.
    NotLeader,
    /// `to` is the leader now.
    Done { to: NodeId, took: Duration },
}

/// Records when this node became leader, and in which term (`Cluster::leader_since`).
pub fn spawn_leader_clock(cluster: std::sync::Arc<Cluster>) {
    tokio::spawn(async move {
        let mut metrics = cluster.raft.metrics();
        loop {
            let (leader, term) = {
                let m = metrics.borrow_and_update();
                (m.current_leader, m.current_term)
            };
            if let Ok(mut since) = cluster.leader_since.lock() {
                *since = match (*since, leader == Some(cluster.id)) {
                    (Some((t, at)), true) if t == term => Some((t, at)),
                    (_, true) => Some((term, Instant::now())),
                    (_, false) => None,
                };
            }
            if metrics.changed().await.is_err() {
                return;
            }
        }
    });
}

/// Waits out the rest of the lease after this node's election: before that the leader refuses the
/// successor's vote (see the module comment).
async fn wait_for_own_lease(cluster: &Cluster) {
    let lease = Duration::from_millis(jobserv_raft::raft_config().election_timeout_max);
    let since = cluster.leader_since.lock().ok().and_then(|s| *s);
    if let Some((_, at)) = since {
        let ripe = at + lease + Duration::from_millis(50);
        if let Some(wait) = ripe.checked_duration_since(Instant::now()) {
            tracing::info!(
                wait_ms = wait.as_millis() as u64,
                "leader elected less than a lease ago: waiting before handing over"
            );
            tokio::time::sleep(wait).await;
        }
    }
}

/// Hands this node's leadership to the caught-up voter, trying each once. Returns once another node leads.
pub async fn hand_over(cluster: &Cluster) -> Result<Handover, HandoverError> {
    let start = Instant::now();
    if cluster.is_leader() {
        wait_for_own_lease(cluster).await;
    }
    let mut metrics = cluster.raft.metrics();
    let mut tried: Vec<NodeId> = Vec::new();
    let mut last_error = None;
    loop {
        let m = metrics.borrow().clone();
        if m.current_leader != Some(cluster.id) {
            return Ok(match m.current_leader {
                Some(to) if !tried.is_empty() => Handover::Done {
                    to,
                    took: start.elapsed(),
                },
                _ => Handover::NotLeader,
            });
        }
        let others: Vec<NodeId> = m
            .membership_config
            .membership()
            .voter_ids()
            .filter(|id| *id != cluster.id && !tried.contains(id))
            .collect();
        if others.is_empty() {
            return match last_error {
                Some(e) => Err(e),
                None if tried.is_empty() => Ok(Handover::NotLeader),
                None => Err(HandoverError::NotElected {
                    successor: tried[tried.len() - 1],
                }),
            };
        }
        let successor = match caught_up_voter(cluster, &others).await {
            Some(id) => id,
            None => {
                return Err(last_error.unwrap_or(HandoverError::NoCaughtUpFollower {
                    last_index: m.last_log_index.unwrap_or(0),
                }))
            }
        };
        tried.push(successor);
        tracing::info!(node = cluster.id, successor, "handing leadership over");
        if let Err(message) = ask_to_campaign(cluster, successor).await {
            last_error = Some(HandoverError::Ask { successor, message });
            continue;
        }
        let elected = tokio::time::timeout(
            ELECTION_WAIT,
            // Until another node is known to lead (right after stepping down this node knows none).
            metrics.wait_for(|m| m.current_leader.is_some_and(|l| l != cluster.id)),
        )
        .await;
        if !matches!(elected, Ok(Ok(_))) {
            last_error = Some(HandoverError::NotElected { successor });
        }
    }
}

/// A voter among `candidates` whose matched log index is this leader's last index, waiting for one up to
/// `CATCH_UP_WAIT` (heartbeats and the replication stream bring followers up within milliseconds).
async fn caught_up_voter(cluster: &Cluster, candidates: &[NodeId]) -> Option<NodeId> {
    let deadline = Instant::now() + CATCH_UP_WAIT;
    let live = cluster.gossip.live_ids_now();
    loop {
        let m = cluster.raft.metrics().borrow().clone();
        let last = m.last_log_index;
        if let Some(replication) = &m.replication {
            // Prefer a node gossip sees alive; among equals the lowest id, for a predictable successor.
            let mut caught_up: Vec<NodeId> = candidates
                .iter()
                .copied()
                .filter(|id| {
                    replication.get(id).copied().flatten().map(|l| l.index) == last
                        && last.is_some()
                })
                .collect();
            caught_up.sort_by_key(|id| (!live.contains(id), *id));
            if let Some(id) = caught_up.first() {
                return Some(*id);
            }
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn ask_to_campaign(cluster: &Cluster, successor: NodeId) -> Result<(), String> {
    let url = cluster
        .member_url(successor)
        .ok_or_else(|| format!("node {successor} has no URL in the membership"))?;
    let response = cluster
        .client
        .post(format!("{url}/raft/campaign"))
        .header(CLUSTER_SECRET_HEADER, &cluster.secret)
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("HTTP {}", response.status()))
    }
}

/// `POST /raft/campaign` on the successor: start an election now.
pub async fn campaign(cluster: &Cluster) -> Result<(), String> {
    tracing::info!(
        node = cluster.id,
        "campaigning at the leader's request (hand-over)"
    );
    cluster
        .metrics
        .handovers
        .with_label_values(&["campaigned"])
        .inc();
    cluster
        .raft
        .trigger()
        .elect()
        .await
        .map_err(|e| e.to_string())
}
