//! Gossip (chitchat: scuttlebutt anti-entropy with a phi-accrual failure detector, over UDP on the same
//! port number as the node's HTTPS listener). Each node publishes a few named keys:
//!
//! - `raft_id`, `advertise_url`: who it is and where to reach it;
//! - `workers`: JSON `{worker name: last check-in, ms since epoch}` for workers that checked in *here*;
//! - `load`: in-flight HTTP requests, for the status page and worker fail-over order.
//!
//! and a generation id (its start time) so a restarted node is told apart from its previous life.
//!
//! Gossip is **never trusted for a safety decision**: it decides which live node runs a poller (rendezvous
//! hashing — a wrong guess means a duplicated `git ls-remote`, never a duplicated build, because builds are
//! deduplicated by the replicated "last seen" state), which worker looks lost (the release itself is a Raft
//! command that fences the run), the order of node URLs a worker fails over across, and the status page.
use chitchat::transport::UdpTransport;
use chitchat::{spawn_chitchat, ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub const KEY_RAFT_ID: &str = "raft_id";
pub const KEY_URL: &str = "advertise_url";
pub const KEY_WORKERS: &str = "workers";
pub const KEY_LOAD: &str = "load";
/// The newest storage/wire format this node's binary reads (the upgrade gate).
pub const KEY_FORMAT_MAX: &str = "format_max";
/// This node's blob keeper: what it misses, repairs, repaired (`blobs::KeeperStatus`, JSON).
pub const KEY_BLOBS: &str = "blobs";

#[derive(Debug, thiserror::Error)]
pub enum GossipError {
    #[error("gossip address {0:?} is not host:port")]
    Address(String),
    #[error("gossip address {0:?} does not resolve: {1}")]
    Resolve(String, String),
    #[error("starting gossip: {0}")]
    Start(String),
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Member {
    pub raft_id: Option<u64>,
    pub url: Option<String>,
    pub generation: u64,
    /// `alive`, `suspect` (known but not confirmed live) or `dead` (failure detector gave up on it).
    pub state: &'static str,
    pub workers: BTreeMap<String, u64>,
    pub format_max: Option<u8>,
    pub blobs: Option<serde_json::Value>,
}

pub struct Gossip {
    handle: ChitchatHandle,
    /// The live raft ids, refreshed every 250 ms, for callers that cannot await (placement decisions).
    live: Arc<std::sync::RwLock<Vec<u64>>>,
}

/// The chitchat cluster id: derived from the cluster secret, so two clusters on one network never merge.
fn cluster_id(secret: &str) -> String {
    use sha2::{Digest, Sha256};
    format!(
        "jobserv-{}",
        &hex::encode(Sha256::digest(secret.as_bytes()))[..16]
    )
}

/// `https://host:port/…` → `host:port`.
pub fn host_port(url: &str) -> Option<String> {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let hp = rest.split('/').next()?;
    hp.contains(':').then(|| hp.to_string())
}

/// The gossip address peers reach this node at, as chitchat needs it: an IP and port. A host name (a
/// compose service, a StatefulSet pod's DNS name) is resolved, waiting up to a minute for its record: a
/// Kubernetes pod's name resolves only a moment after the pod starts.
async fn resolve_advertise(advertise: &str) -> Result<SocketAddr, GossipError> {
    if let Ok(addr) = advertise.parse() {
        return Ok(addr);
    }
    if advertise.rsplit_once(':').is_none() {
        return Err(GossipError::Address(advertise.to_string()));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match tokio::net::lookup_host(advertise).await {
            Ok(mut addrs) => {
                if let Some(addr) = addrs.next() {
                    return Ok(addr);
                }
            }
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(GossipError::Resolve(advertise.to_string(), e.to_string()));
            }
            Err(e) => tracing::info!(%advertise, error = %e, "gossip address does not resolve yet"),
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(GossipError::Resolve(
                advertise.to_string(),
                "no address".into(),
            ));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

impl Gossip {
    /// Gossips on UDP `listen`; peers reach it at `advertise` (`host:port`).
    pub async fn start(
        raft_id: u64,
        listen: &str,
        advertise: &str,
        advertise_url: &str,
        seeds: Vec<String>,
        secret: &str,
        generation: u64,
    ) -> Result<Gossip, GossipError> {
        let listen_addr: SocketAddr = listen
            .parse()
            .map_err(|_| GossipError::Address(listen.to_string()))?;
        let advertise = resolve_advertise(advertise).await?;
        let config = ChitchatConfig {
            chitchat_id: ChitchatId {
                node_id: format!("node-{raft_id}").into(),
                generation_id: generation,
                gossip_advertise_addr: advertise,
            },
            cluster_id: cluster_id(secret),
            gossip_interval: Duration::from_millis(200),
            listen_addr,
            seed_nodes: seeds,
            // phi 8 over 200 ms heartbeats: a dead node is noticed in about 2-3 s.
            failure_detector_config: FailureDetectorConfig::new(
                8.0,
                1000,
                Duration::from_secs(2),
                Duration::from_millis(200),
                Duration::from_secs(3600),
            ),
            marked_for_deletion_grace_period: Duration::from_secs(3600),
            catchup_callback: None,
            extra_liveness_predicate: None,
            protocol_version: chitchat::ProtocolVersion::V1,
        };
        let initial = vec![
            (KEY_RAFT_ID.to_string(), raft_id.to_string()),
            (KEY_URL.to_string(), advertise_url.to_string()),
            (
                KEY_FORMAT_MAX.to_string(),
                jobserv_raft::codec::max_readable().to_string(),
            ),
        ];
        let handle = spawn_chitchat(config, initial, &UdpTransport)
            .await
            .map_err(|e| GossipError::Start(e.to_string()))?;
        let live = Arc::new(std::sync::RwLock::new(vec![raft_id]));
        let chitchat = handle.chitchat();
        let refreshed = live.clone();
        tokio::spawn(async move {
            loop {
                let ids: Vec<u64> = {
                    let c = chitchat.lock().await;
                    c.live_nodes()
                        .filter_map(|id| c.node_state(id)?.get(KEY_RAFT_ID)?.parse().ok())
                        .collect()
                };
                if let Ok(mut slot) = refreshed.write() {
                    *slot = ids;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
        Ok(Gossip { handle, live })
    }

    /// Publishes this node's view of its workers and its load.
    pub async fn publish(&self, workers: &HashMap<String, u64>, load: u64) {
        let workers = serde_json::to_string(workers).unwrap_or_default();
        self.handle
            .with_chitchat(|c| {
                let me = c.self_node_state();
                me.set(KEY_WORKERS, &workers);
                me.set(KEY_LOAD, load);
            })
            .await;
    }

    /// Publishes this node's blob keeper status (soft state, for `/cluster/`).
    pub async fn publish_blobs(&self, status: &impl serde::Serialize) {
        let json = serde_json::to_string(status).unwrap_or_default();
        self.handle
            .with_chitchat(|c| c.self_node_state().set(KEY_BLOBS, &json))
            .await;
    }

    /// Every member gossip knows of (this node included), newest generation per node id.
    pub async fn members(&self) -> Vec<Member> {
        self.handle
            .with_chitchat(|c| {
                let live: Vec<ChitchatId> = c.live_nodes().cloned().collect();
                let dead: Vec<ChitchatId> = c.dead_nodes().cloned().collect();
                let mut newest: BTreeMap<String, Member> = BTreeMap::new();
                for (id, state) in c.node_states() {
                    let status = if live.contains(id) {
                        "alive"
                    } else if dead.contains(id) {
                        "dead"
                    } else {
                        "suspect"
                    };
                    let member = Member {
                        raft_id: state.get(KEY_RAFT_ID).and_then(|v| v.parse().ok()),
                        url: state.get(KEY_URL).map(str::to_string),
                        generation: id.generation_id,
                        state: status,
                        workers: state
                            .get(KEY_WORKERS)
                            .and_then(|w| serde_json::from_str(w).ok())
                            .unwrap_or_default(),
                        format_max: state.get(KEY_FORMAT_MAX).and_then(|v| v.parse().ok()),
                        blobs: state
                            .get(KEY_BLOBS)
                            .and_then(|v| serde_json::from_str(v).ok()),
                    };
                    match newest.get(id.node_id.as_ref()) {
                        Some(existing) if existing.generation >= member.generation => {}
                        _ => {
                            newest.insert(id.node_id.to_string(), member);
                        }
                    }
                }
                newest.into_values().collect()
            })
            .await
    }

    /// The live raft ids as of the last refresh (at most 250 ms old), without waiting.
    pub fn live_ids_now(&self) -> Vec<u64> {
        self.live.read().map(|v| v.clone()).unwrap_or_default()
    }

    /// The raft ids of the members gossip currently sees alive.
    pub async fn live_raft_ids(&self) -> Vec<u64> {
        self.members()
            .await
            .into_iter()
            .filter(|m| m.state == "alive")
            .filter_map(|m| m.raft_id)
            .collect()
    }

    /// The latest check-in of each worker as seen by any live node.
    pub async fn worker_last_seen(&self) -> HashMap<String, u64> {
        let mut out: HashMap<String, u64> = HashMap::new();
        for m in self
            .members()
            .await
            .into_iter()
            .filter(|m| m.state == "alive")
        {
            for (w, t) in m.workers {
                let e = out.entry(w).or_insert(0);
                *e = (*e).max(t);
            }
        }
        out
    }

    pub async fn shutdown(self) {
        let _ = self.handle.shutdown().await;
    }
}

/// Rendezvous (highest random weight) hashing: the live node that owns `key`. Every node computes the
/// same answer from the same live set; when the owner dies, only its keys move.
pub fn rendezvous_owner(key: &str, live: &[u64]) -> Option<u64> {
    use sha2::{Digest, Sha256};
    live.iter().copied().max_by_key(|node| {
        let digest = Sha256::digest(format!("{key}\n{node}").as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        (u64::from_be_bytes(first), *node)
    })
}

pub type SharedGossip = Arc<Gossip>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendezvous_is_stable_and_moves_only_the_dead_nodes_keys() {
        let all = [1, 2, 3];
        let keys: Vec<String> = (0..200).map(|i| format!("trigger-{i}")).collect();
        let owners: Vec<u64> = keys
            .iter()
            .map(|k| rendezvous_owner(k, &all).unwrap())
            .collect();
        for n in all {
            assert!(
                owners.iter().filter(|&&o| o == n).count() > 30,
                "keys spread over every node"
            );
        }
        let without_2 = [1, 3];
        for (k, owner) in keys.iter().zip(&owners) {
            let new_owner = rendezvous_owner(k, &without_2).unwrap();
            if *owner != 2 {
                assert_eq!(
                    new_owner, *owner,
                    "a key not owned by the dead node stays put"
                );
            } else {
                assert_ne!(new_owner, 2);
            }
        }
        assert_eq!(rendezvous_owner("x", &[]), None);
    }

    #[test]
    fn host_port_is_taken_from_urls() {
        assert_eq!(
            host_port("https://127.0.0.1:8443/").as_deref(),
            Some("127.0.0.1:8443")
        );
        assert_eq!(host_port("127.0.0.1:9"), Some("127.0.0.1:9".into()));
        assert_eq!(host_port("https://example"), None);
    }
}
