//! Proposal batching: the hot path's writes (console appends and status changes of many runs at once,
//! `Command::batchable`) that reach this node while its previous batches are still being committed share
//! one Raft entry, `Command::Batch`, and — on a follower — one forward to the leader.
//!
//! Without it every append paid the whole per-entry price on all three nodes (a log write and its share of
//! an fsync, replication, an apply batch with its `last_applied`, and a forward request when it arrived at
//! a follower). The batcher adds no timer and so no latency when the cluster is idle: a write is proposed
//! at once if fewer than `BATCHES_IN_FLIGHT` batches are being committed; otherwise it waits for one of
//! them to finish (or stall, `STALLED_AFTER`) and leaves with everything that queued meanwhile, up to
//! `MAX_BATCH_COMMANDS` commands or `MAX_BATCH_BYTES` of console. The busier the node, the bigger the
//! batches.
//!
//! Each command keeps its own result (a refused append is refused alone); a batch that cannot be committed
//! at all fails every command in it with the same 503, exactly as each would have failed alone. Used only
//! once the cluster agreed on format 4 (`codec`): an older member could not read a batch.
use crate::cluster::Cluster;
use crate::error::ApiError;
use jobserv_raft::{Command, CommandResult};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

/// Batches of one node being committed at a time; more writes wait and form the next batch. One gives the
/// biggest batches, and so the most writes per CPU second (`cluster-test bench-commit`: 3,014 writes/s at
/// 32 clients and 4,559 at 256 with one; 2,627 and 4,195 with two; 2,367 and 4,248 with four).
pub const BATCHES_IN_FLIGHT: usize = 1;
/// A batch not committed after this long (its leader died or is cut off and no new one is known yet) stops
/// holding back the next one: a stalled proposal never stalls the node's writes behind it.
pub const STALLED_AFTER: Duration = Duration::from_millis(200);
/// At most this many commands in one entry.
pub const MAX_BATCH_COMMANDS: usize = 256;
/// At most about this many bytes of commands in one entry. With one batch in flight this bounds a node's
/// console throughput per commit round: 256 KiB held a 50-run log flood to 25 MiB/s (`cluster-test
/// bench-logs`), 1 MiB gave 37 (2 MiB: 32). An entry above `log_store::MAX_APPEND_BYTES` travels alone in
/// its AppendEntries.
pub const MAX_BATCH_BYTES: usize = 1024 * 1024;

/// The format from which `Command::Batch` may be written.
const BATCH_FORMAT: u8 = 4;

type Reply = oneshot::Sender<Result<CommandResult, ApiError>>;

struct Pending {
    cmd: Command,
    reply: Reply,
}

pub struct Batcher {
    tx: mpsc::UnboundedSender<Pending>,
    /// Taken by `start`.
    rx: Mutex<Option<mpsc::UnboundedReceiver<Pending>>>,
}

impl Default for Batcher {
    fn default() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Batcher {
            tx,
            rx: Mutex::new(Some(rx)),
        }
    }
}

impl Batcher {
    /// Whether `cmd` goes through the batcher.
    pub fn accepts(cmd: &Command) -> bool {
        cmd.batchable() && jobserv_raft::codec::write_version() >= BATCH_FORMAT
    }

    /// Commits `cmd` in the next batch of this node; the command's own result.
    pub async fn submit(&self, cmd: Command) -> Result<CommandResult, ApiError> {
        let (reply, result) = oneshot::channel();
        self.tx
            .send(Pending { cmd, reply })
            .map_err(|_| ApiError::Unavailable("this node is shutting down".into()))?;
        result
            .await
            .map_err(|_| ApiError::Unavailable("this node is shutting down".into()))?
    }

    /// Starts the loop that forms and proposes batches. It holds the cluster weakly, so it ends with it.
    pub fn start(cluster: &Arc<Cluster>) {
        let Some(rx) = cluster.batcher.rx.lock().ok().and_then(|mut rx| rx.take()) else {
            return; // already started
        };
        tokio::spawn(batch_loop(Arc::downgrade(cluster), rx));
    }
}

async fn batch_loop(cluster: Weak<Cluster>, mut rx: mpsc::UnboundedReceiver<Pending>) {
    let in_flight = Arc::new(Semaphore::new(BATCHES_IN_FLIGHT));
    let mut carried: Option<Pending> = None;
    loop {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let first = match carried.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let mut bytes = first.cmd.weight();
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH_COMMANDS {
            let Ok(next) = rx.try_recv() else { break };
            bytes += next.cmd.weight();
            if bytes > MAX_BATCH_BYTES {
                carried = Some(next); // opens the next batch
                break;
            }
            batch.push(next);
        }
        let Some(cluster) = cluster.upgrade() else {
            return;
        };
        tokio::spawn(commit_batch(cluster, batch, permit));
    }
}

/// Proposes `batch` (a lone command as itself) and hands every caller its result once this node has
/// applied it. `permit` (the batch's place among those in flight) is given back as soon as the batch is
/// committed, or once it has stalled: the wait for this node's apply (a follower learns of a commit one
/// round after the leader) holds back none of the next batch's writes. So a follower whose apply lags no
/// longer slows its own writes down to its apply rate; a write not applied here within 5 s is answered
/// anyway (`Cluster::applied_here`), and `jobserv_apply_wait_seconds` shows the lag.
async fn commit_batch(cluster: Arc<Cluster>, batch: Vec<Pending>, permit: OwnedSemaphorePermit) {
    cluster
        .metrics
        .proposal_batch_commands
        .observe(batch.len() as f64);
    let (commands, replies): (Vec<Command>, Vec<Reply>) =
        batch.into_iter().map(|p| (p.cmd, p.reply)).unzip();
    let count = commands.len();
    let cmd = if count == 1 {
        commands.into_iter().next().expect("one command")
    } else {
        Command::Batch(commands)
    };
    let commit = cluster.commit_anywhere(cmd);
    tokio::pin!(commit);
    let mut permit = Some(permit);
    let committed = tokio::select! {
        committed = &mut commit => committed,
        _ = tokio::time::sleep(STALLED_AFTER) => {
            permit = None;
            commit.await
        }
    };
    drop(permit);
    let committed = match committed {
        Ok((result, index)) => Ok(cluster.applied_here(result, index).await),
        Err(e) => Err(e),
    };
    let results: Vec<Result<CommandResult, ApiError>> = match committed {
        Err(e) => {
            let message = e.to_string();
            (0..count)
                .map(|_| Err(ApiError::Unavailable(message.clone())))
                .collect()
        }
        Ok(CommandResult::Batch(results)) if results.len() == count => {
            results.into_iter().map(Ok).collect()
        }
        Ok(result) if count == 1 => vec![Ok(result)],
        // A whole batch refused (it is not, today: each command has its own outcome).
        Ok(CommandResult::Rejected(refusal)) => (0..count)
            .map(|_| Ok(CommandResult::Rejected(refusal.clone())))
            .collect(),
        Ok(other) => (0..count)
            .map(|_| {
                Err(ApiError::Internal(format!(
                    "a batch of {count} commands got the reply {other:?}"
                )))
            })
            .collect(),
    };
    for (reply, result) in replies.into_iter().zip(results) {
        let _ = reply.send(result); // the caller may have gone (its request was dropped)
    }
}
