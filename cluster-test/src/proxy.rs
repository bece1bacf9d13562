//! A fault-injecting TCP proxy, one in front of each node of a partitionable cluster. Nodes bind their
//! outgoing connections to their own loopback address (127.0.1.<id>), so a proxy can tell who connects
//! and refuse (and cut) connections by source: that is how the harness partitions a node from the others
//! and from the workers, and heals it again.
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

#[derive(Default)]
struct Rules {
    deny_all: bool,
    deny: HashSet<IpAddr>,
}

impl Rules {
    fn refuses(&self, source: IpAddr) -> bool {
        self.deny_all || self.deny.contains(&source)
    }
}

type Connections = Arc<Mutex<Vec<(IpAddr, AbortHandle)>>>;

pub struct FaultProxy {
    pub listen: SocketAddr,
    rules: Arc<Mutex<Rules>>,
    connections: Connections,
    accept: AbortHandle,
}

impl FaultProxy {
    /// Listens on 127.0.0.1 (a free port) and forwards to `target`.
    pub async fn start(target: SocketAddr) -> anyhow::Result<FaultProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let listen = listener.local_addr()?;
        let rules = Arc::new(Mutex::new(Rules::default()));
        let connections: Connections = Arc::new(Mutex::new(Vec::new()));
        let (r, c) = (rules.clone(), connections.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, peer)) = listener.accept().await {
                let refused = r
                    .lock()
                    .map(|rules| rules.refuses(peer.ip()))
                    .unwrap_or(true);
                if refused {
                    drop(inbound);
                    continue;
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                if let Ok(mut list) = c.lock() {
                    list.retain(|(_, h)| !h.is_finished());
                    list.push((peer.ip(), task.abort_handle()));
                }
            }
        })
        .abort_handle();
        Ok(FaultProxy {
            listen,
            rules,
            connections,
            accept,
        })
    }

    fn apply(&self, change: impl FnOnce(&mut Rules)) {
        if let Ok(mut rules) = self.rules.lock() {
            change(&mut rules);
            // Cut the open connections the new rules refuse (pooled HTTP connections would survive otherwise).
            if let Ok(list) = self.connections.lock() {
                for (source, handle) in list.iter() {
                    if rules.refuses(*source) {
                        handle.abort();
                    }
                }
            }
        }
    }

    /// Refuse everybody.
    pub fn isolate(&self) {
        self.apply(|r| r.deny_all = true);
    }

    /// Refuse these sources.
    pub fn deny(&self, sources: &[IpAddr]) {
        self.apply(|r| r.deny.extend(sources.iter().copied()));
    }

    pub fn heal(&self) {
        self.apply(|r| {
            r.deny_all = false;
            r.deny.clear();
        });
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        if let Ok(list) = self.connections.lock() {
            for (_, h) in list.iter() {
                h.abort();
            }
        }
    }
}

/// The loopback address node `id` sends from in a partitionable cluster.
pub fn node_source(id: u64) -> IpAddr {
    IpAddr::from([127, 0, 1, id as u8])
}
