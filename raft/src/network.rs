//! Raft RPCs between nodes over HTTPS (rustls, through reqwest). Bodies are `codec` blobs (versioned
//! bincode); every request carries the cluster secret, which the receiving node checks in constant time.
//! The server side lives in the node's HTTP layer (`/raft/*`); `RpcPath` names the routes both use.
use crate::codec;
use crate::types::{NodeId, TypeConfig};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;

pub const CLUSTER_SECRET_HEADER: &str = "X-JOBSERV-CLUSTER-SECRET";

pub enum RpcPath {
    AppendEntries,
    Vote,
    InstallSnapshot,
}

impl RpcPath {
    pub fn as_str(&self) -> &'static str {
        match self {
            RpcPath::AppendEntries => "raft/append",
            RpcPath::Vote => "raft/vote",
            RpcPath::InstallSnapshot => "raft/snapshot",
        }
    }
}

/// Creates one `HttpRaftClient` per peer; the reqwest client (connection pool, TLS roots) is shared.
#[derive(Clone)]
pub struct HttpRaftNetwork {
    client: reqwest::Client,
    secret: String,
}

impl HttpRaftNetwork {
    pub fn new(client: reqwest::Client, secret: String) -> Self {
        HttpRaftNetwork { client, secret }
    }
}

impl RaftNetworkFactory<TypeConfig> for HttpRaftNetwork {
    type Network = HttpRaftClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Self::Network {
        HttpRaftClient {
            client: self.client.clone(),
            secret: self.secret.clone(),
            target,
            base: node.addr.trim_end_matches('/').to_string(),
        }
    }
}

pub struct HttpRaftClient {
    client: reqwest::Client,
    secret: String,
    target: NodeId,
    base: String,
}

impl HttpRaftClient {
    async fn call<Req, Resp, E>(
        &self,
        path: RpcPath,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let body = codec::encode(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let url = format!("{}/{}", self.base, path.as_str());
        let reply = self
            .client
            .post(&url)
            .header(CLUSTER_SECRET_HEADER, &self.secret)
            .timeout(option.hard_ttl())
            .body(body)
            .send()
            .await
            .map_err(|e| {
                // A slow answer is not a dead node: openraft backs off from an `Unreachable` peer (see
                // `backoff`), and a pause in replication longer than the followers' election timeout
                // made a loaded but healthy cluster elect a new leader. A timeout is retried at once.
                if e.is_timeout() {
                    RPCError::Network(NetworkError::new(&e))
                } else {
                    RPCError::Unreachable(Unreachable::new(&e))
                }
            })?;
        let status = reply.status();
        let bytes = reply
            .bytes()
            .await
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        if !status.is_success() {
            let msg = format!("{url}: HTTP {status}: {}", String::from_utf8_lossy(&bytes));
            return Err(RPCError::Unreachable(Unreachable::new(
                &std::io::Error::other(msg),
            )));
        }
        let result: Result<Resp, E> =
            codec::decode(&bytes).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for HttpRaftClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(RpcPath::AppendEntries, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(RpcPath::InstallSnapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(RpcPath::Vote, &rpc, &option).await
    }

    /// How long replication to an unreachable peer (connection refused or reset, an error status) pauses
    /// between attempts. openraft's default is 500 ms flat, longer than a restarted node waits before it
    /// campaigns (its lease plus an election timeout, 320–400 ms from start-up): the leader reached it too
    /// late, it campaigned with a higher term and deposed a healthy leader. So at most 200 ms; a refused
    /// connection costs next to nothing.
    fn backoff(&self) -> openraft::network::Backoff {
        let steps = [50, 100].map(std::time::Duration::from_millis);
        openraft::network::Backoff::new(
            steps
                .into_iter()
                .chain(std::iter::repeat(std::time::Duration::from_millis(200))),
        )
    }
}
