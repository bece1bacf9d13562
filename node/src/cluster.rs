//! This node's handle on the cluster: the Raft instance, the applied state, and `propose`, the only way a
//! handler or actor changes anything. A write that reaches a follower is forwarded to the leader over
//! HTTPS (bounded retries across a leader change); a write that cannot be committed within
//! `COMMIT_TIMEOUT` (no leader, no quorum — e.g. this node is cut off) fails with 503 instead of hanging.
use crate::error::ApiError;
use crate::metrics::Metrics;
use jobserv_raft::network::CLUSTER_SECRET_HEADER;
use jobserv_raft::{codec, Command, CommandResult, NodeId, Raft, SledStateMachine, State};
use openraft::error::{ClientWriteError, RaftError};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);
const FORWARD_ATTEMPTS: usize = 5;

pub struct Cluster {
    pub id: NodeId,
    pub raft: Raft,
    pub state: State,
    pub state_machine: SledStateMachine,
    pub advertise_url: String,
    pub secret: String,
    pub client: reqwest::Client,
    pub metrics: Arc<Metrics>,
    pub gossip: Arc<crate::gossip::Gossip>,
    /// Linearizable reads (read index from the leader, then this node's apply).
    pub reads: crate::reads::Reads,
    /// Set while this node, started on an empty store, catches up with a cluster that already committed
    /// entries (a wiped or replaced disk): it grants no votes until it has applied a read index.
    pub rejoining: std::sync::atomic::AtomicBool,
    /// Set once a graceful stop began (`begin_draining`): `/health/ready` answers 503, and this node no
    /// longer campaigns. Shared with the start-up grace in `node::start_raft`, which must not enable
    /// elections again on a node already stopping.
    pub draining: Arc<std::sync::atomic::AtomicBool>,
    /// The term in which this node became leader and when (`handover::spawn_leader_clock`): a leader
    /// grants a successor's vote only a lease after its own election.
    pub leader_since: std::sync::Mutex<Option<(u64, std::time::Instant)>>,
    /// Concurrent hot-path writes share a Raft entry and a forward (`batcher.rs`).
    pub batcher: crate::batcher::Batcher,
}

/// Reply of `GET /raft/status`, `codec`-encoded.
#[derive(Serialize, Deserialize, Debug)]
pub struct PeerStatus {
    pub initialized: bool,
    /// Some once the cluster committed anything on this node (it has had a leader).
    pub last_applied: Option<u64>,
}

/// A membership change, proposed on the leader (forwarded there by any node).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum MembershipChange {
    /// Add a node as a learner, wait until it caught up, then promote it to voter.
    AddNode { id: NodeId, url: String },
    /// Demote and remove a node.
    RemoveNode { id: NodeId },
}

/// Reply of `POST /raft/propose` (a forwarded write), `codec`-encoded.
#[derive(Serialize, Deserialize)]
pub enum ProposeReply {
    /// The result and the log index of the entry, so that the proposing node can wait until it applied
    /// it too (read-your-writes through any node).
    Committed(CommandResult, u64),
    NotLeader {
        leader_url: Option<String>,
    },
    Unavailable(String),
}

impl Cluster {
    /// A stop begins: readiness turns false, and this node campaigns no more. After a hand-over the new
    /// leader cannot reach it (its server accepts no new connections while it drains, up to 5 s), so it
    /// would time out and campaign, and win: a leader grants a higher-term vote once its lease is over (what
    /// the hand-over itself relies on). The cluster would then be led by a node about to exit. It still
    /// votes, so a majority stays a majority while it drains.
    pub fn begin_draining(&self) {
        self.draining
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.raft.runtime_config().elect(false);
    }

    /// Commits `cmd` through Raft (here or on the leader) and returns what applying it produced. A domain
    /// refusal (`CommandResult::Rejected`) becomes the matching 4xx error.
    pub async fn propose(&self, cmd: Command) -> Result<CommandResult, ApiError> {
        let started = Instant::now();
        let result = if crate::batcher::Batcher::accepts(&cmd) {
            self.batcher.submit(cmd).await
        } else {
            self.propose_anywhere(cmd).await
        };
        self.metrics
            .commit_seconds
            .observe(started.elapsed().as_secs_f64());
        match result? {
            CommandResult::Rejected(refusal) => Err(refusal.into()),
            ok => Ok(ok),
        }
    }

    pub(crate) async fn propose_anywhere(&self, cmd: Command) -> Result<CommandResult, ApiError> {
        let (result, index) = self.commit_anywhere(cmd).await?;
        Ok(self.applied_here(result, index).await)
    }

    /// Commits `cmd` here if this node leads, else through the leader; the result and the entry's log
    /// index. It may not be applied on this node yet (`applied_here`).
    pub(crate) async fn commit_anywhere(
        &self,
        cmd: Command,
    ) -> Result<(CommandResult, u64), ApiError> {
        let started = Instant::now();
        let deadline = started + COMMIT_TIMEOUT;
        let mut last_error = String::from("no leader known");
        for _ in 0..FORWARD_ATTEMPTS * 4 {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                break;
            }
            let leader_before = self.raft.metrics().borrow().current_leader;
            match self.propose_local(cmd.clone(), remaining).await {
                ProposeReply::Committed(result, index) => return Ok((result, index)),
                ProposeReply::Unavailable(e) => last_error = e,
                ProposeReply::NotLeader { leader_url: None } => {
                    last_error = "no leader elected yet".into()
                }
                ProposeReply::NotLeader {
                    leader_url: Some(url),
                } => match self.forward(&url, &cmd, remaining).await {
                    Ok(ProposeReply::Committed(result, index)) => {
                        tracing::debug!(
                            elapsed_ms = started.elapsed().as_millis() as u64,
                            index,
                            %url,
                            "forwarded write committed"
                        );
                        return Ok((result, index));
                    }
                    Ok(ProposeReply::NotLeader { .. }) => {
                        last_error = format!("{url} is no longer the leader")
                    }
                    Ok(ProposeReply::Unavailable(e)) => last_error = e,
                    Err(e) => last_error = format!("forwarding to leader {url}: {e}"),
                },
            }
            tracing::debug!(
                elapsed_ms = started.elapsed().as_millis() as u64,
                error = %last_error,
                "write not committed yet: waiting for a leader change"
            );
            // Retry as soon as this node learns of another leader (an election after a leader died), rather
            // than after a fixed pause: that is most of the fail-over time a client sees.
            self.wait_leader_change(
                leader_before,
                Duration::from_millis(1000).min(deadline.saturating_duration_since(Instant::now())),
            )
            .await;
        }
        Err(ApiError::Unavailable(format!("write not committed: {last_error}; the cluster may have no quorum reachable from this node")))
    }

    /// Returns `result` once this node has applied log index `index`, so that a read on this node right
    /// after a write through it sees the write. Bounded: after 5 s the result is returned anyway (the write
    /// is committed; only this node's view lags).
    pub(crate) async fn applied_here(&self, result: CommandResult, index: u64) -> CommandResult {
        let mut rx = self.state_machine.subscribe_applied();
        if *rx.borrow() >= index {
            return result;
        }
        let started = Instant::now();
        let _ = tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|&a| a >= index)).await;
        self.metrics
            .apply_wait_seconds
            .observe(started.elapsed().as_secs_f64());
        result
    }

    /// Waits until this node knows a leader other than `previous` (or `timeout`); at least a short pause,
    /// so a node that keeps the same leader does not spin.
    async fn wait_leader_change(&self, previous: Option<NodeId>, timeout: Duration) {
        let mut metrics = self.raft.metrics();
        let changed = async {
            loop {
                let leader = metrics.borrow_and_update().current_leader;
                if leader.is_some() && leader != previous {
                    return;
                }
                if metrics.changed().await.is_err() {
                    return;
                }
            }
        };
        let started = Instant::now();
        let _ = tokio::time::timeout(timeout, changed).await;
        let min_pause = Duration::from_millis(50);
        if started.elapsed() < min_pause {
            tokio::time::sleep(min_pause - started.elapsed()).await;
        }
    }

    /// Proposes on this node if it is the leader.
    pub async fn propose_local(&self, cmd: Command, timeout: Duration) -> ProposeReply {
        match tokio::time::timeout(timeout, self.raft.client_write(cmd)).await {
            Err(_) => ProposeReply::Unavailable(format!("not committed within {timeout:?}")),
            Ok(Ok(resp)) => ProposeReply::Committed(resp.data, resp.log_id.index),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                ProposeReply::NotLeader {
                    leader_url: f.leader_node.map(|n| n.addr),
                }
            }
            Ok(Err(e)) => ProposeReply::Unavailable(e.to_string()),
        }
    }

    async fn forward(
        &self,
        leader_url: &str,
        cmd: &Command,
        timeout: Duration,
    ) -> Result<ProposeReply, String> {
        let body = codec::encode(cmd).map_err(|e| e.to_string())?;
        let reply = self
            .client
            .post(format!("{}/raft/propose", leader_url.trim_end_matches('/')))
            .header(CLUSTER_SECRET_HEADER, &self.secret)
            .timeout(timeout)
            .body(body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !reply.status().is_success() {
            return Err(format!("HTTP {}", reply.status()));
        }
        let bytes = reply.bytes().await.map_err(|e| e.to_string())?;
        codec::decode(&bytes).map_err(|e| e.to_string())
    }

    /// Applies a membership change here if this node leads, else forwards it to the leader.
    pub async fn change_membership(&self, change: MembershipChange) -> Result<(), ApiError> {
        for attempt in 0..FORWARD_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 * attempt as u64)).await;
            }
            let leader = self.raft.metrics().borrow().current_leader;
            match leader {
                Some(id) if id == self.id => return self.change_membership_here(change).await,
                Some(id) => {
                    let Some(url) = self.member_url(id) else {
                        continue;
                    };
                    match self.forward_membership(&url, &change).await {
                        Ok(Ok(())) => return Ok(()),
                        Ok(Err(message)) => return Err(ApiError::BadRequest(message)),
                        Err(e) => tracing::warn!("forwarding membership change to {url}: {e}"),
                    }
                }
                None => {}
            }
        }
        Err(ApiError::Unavailable(
            "no leader reachable for the membership change".into(),
        ))
    }

    async fn change_membership_here(&self, change: MembershipChange) -> Result<(), ApiError> {
        use openraft::ChangeMembers;
        use std::collections::BTreeSet;
        let unavailable = |e: String| ApiError::Unavailable(format!("membership change: {e}"));
        match change {
            MembershipChange::AddNode { id, url } => {
                let voters: BTreeSet<NodeId> = self.voter_ids().into_iter().collect();
                if voters.contains(&id) {
                    return Ok(()); // already a voter: joining again after a restart is a no-op
                }
                tracing::info!(node = id, %url, "adding node as learner");
                self.raft
                    .add_learner(
                        id,
                        openraft::BasicNode {
                            addr: url.trim_end_matches('/').to_string(),
                        },
                        true,
                    )
                    .await
                    .map_err(|e| unavailable(e.to_string()))?;
                tracing::info!(node = id, "promoting node to voter");
                self.raft
                    .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                    .await
                    .map_err(|e| unavailable(e.to_string()))?;
                Ok(())
            }
            MembershipChange::RemoveNode { id } => {
                tracing::info!(node = id, "removing node");
                self.raft
                    .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
                    .await
                    .map_err(|e| unavailable(e.to_string()))?;
                Ok(())
            }
        }
    }

    async fn forward_membership(
        &self,
        leader_url: &str,
        change: &MembershipChange,
    ) -> Result<Result<(), String>, String> {
        let body = codec::encode(change).map_err(|e| e.to_string())?;
        let reply = self
            .client
            .post(format!(
                "{}/raft/membership",
                leader_url.trim_end_matches('/')
            ))
            .header(CLUSTER_SECRET_HEADER, &self.secret)
            .timeout(Duration::from_secs(120))
            .body(body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !reply.status().is_success() {
            return Err(format!("HTTP {}", reply.status()));
        }
        let bytes = reply.bytes().await.map_err(|e| e.to_string())?;
        codec::decode(&bytes).map_err(|e| e.to_string())
    }

    /// The voters of the current membership.
    pub fn voter_ids(&self) -> Vec<NodeId> {
        self.raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .collect()
    }

    /// The advertised URL of a member.
    pub fn member_url(&self, id: NodeId) -> Option<String> {
        member_url(&self.raft, id)
    }

    /// Every member's advertised URL (voters and learners), this node first.
    pub fn node_urls(&self) -> Vec<String> {
        let metrics = self.raft.metrics().borrow().clone();
        let mut urls = vec![self.advertise_url.clone()];
        for (_, node) in metrics.membership_config.membership().nodes() {
            if !urls.contains(&node.addr) {
                urls.push(node.addr.clone());
            }
        }
        urls
    }

    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().current_leader == Some(self.id)
    }

    /// Waits until this node has applied something newer than `seen`, or `timeout` passes.
    pub async fn wait_applied(&self, seen: u64, timeout: Duration) -> u64 {
        let mut rx = self.state_machine.subscribe_applied();
        let newer = tokio::time::timeout(timeout, async {
            rx.wait_for(|&a| a > seen).await.map(|applied| *applied)
        })
        .await;
        match newer {
            Ok(Ok(applied)) => applied,
            // The state machine is gone (shutting down): what it had applied last.
            Ok(Err(_)) => *rx.borrow(),
            Err(_) => seen,
        }
    }

    pub fn applied_index(&self) -> u64 {
        *self.state_machine.subscribe_applied().borrow()
    }
}

/// The advertised URL of member `id` in `raft`'s current membership.
pub fn member_url(raft: &Raft, id: NodeId) -> Option<String> {
    raft.metrics()
        .borrow()
        .membership_config
        .membership()
        .get_node(&id)
        .map(|n| n.addr.clone())
}
