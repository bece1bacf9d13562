//! Commands: every durable state change of the cluster is one of these, proposed through Raft and applied
//! by the state machine on every node in log order. A command carries everything it needs (including the
//! proposer's clock) so that applying it is deterministic.
//!
//! Domain refusals (unknown project, stale fencing token, log offset gap…) are not Raft errors: the entry
//! is committed and applied everywhere as a no-op, and the `CommandResult::Rejected` goes back to the caller.
use crate::model::{ArtifactMeta, Role, RunRef, Trigger, WorkerFacts};
use jobserv_protocol::api::TestReport;
use jobserv_protocol::{RunDef, RunStatus};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Command {
    CreateProject {
        name: String,
        synchronous_builds: bool,
        now: u64,
    },
    DeleteProject {
        name: String,
    },
    /// Stores the hash of an API token; the token itself never enters the log.
    AddToken {
        hash: String,
        name: String,
        role: Role,
    },
    CreateTrigger {
        trigger: Trigger,
    },
    UpdateTrigger {
        trigger: Trigger,
    },
    CreateBuild(Box<NewBuild>),
    RegisterWorker {
        name: String,
        key_hash: String,
        facts: WorkerFacts,
        now: u64,
    },
    UpdateWorker {
        name: String,
        enlisted: Option<bool>,
        facts: Option<WorkerFacts>,
    },
    /// Hands queued runs to a worker. A run that is no longer QUEUED (another node assigned it first) is
    /// skipped, which is what makes assignment exactly-once.
    AssignRuns {
        worker: String,
        runs: Vec<RunRef>,
        now: u64,
    },
    /// Appends console bytes at `offset` and/or changes the run's status, for the lease `fence`.
    UpdateRun(Box<RunUpdate>),
    CancelRun {
        run: RunRef,
        now: u64,
    },
    RerunRun {
        run: RunRef,
        now: u64,
    },
    /// Fails (or re-queues) every run a lost worker holds.
    ReleaseWorkerRuns {
        worker: String,
        reason: String,
        requeue: bool,
        now: u64,
    },
    ReportTests {
        run: RunRef,
        fence: u64,
        report: TestReport,
        now: u64,
    },
    PromoteBuild {
        project: String,
        build: u64,
        name: String,
        annotation: Option<String>,
    },
    /// Stores one artifact of a run in the replicated state (bounded in size by the node), so that it
    /// survives the loss of any minority of nodes and reads the same from every node.
    PutArtifact {
        run: RunRef,
        fence: u64,
        path: String,
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
    },
    /// A no-op: used by benchmarks and health checks to measure the commit path alone.
    Noop,
    /// `CreateBuild` plus what the build must do later (`hooks`: chains, forge status, notifications)
    /// and, for a git poller, the compare-and-set of the ref that moved (refused if it already moved).
    CreateBuildExt {
        build: Box<NewBuild>,
        hooks: Option<crate::hooks::BuildHooks>,
        advance: Option<crate::hooks::PollAdvance>,
    },
    /// Adds the runs a chain starts to the same build, once: refused as a no-op if `marker` is done.
    FireChain {
        project: String,
        build: u64,
        marker: String,
        runs: Vec<RunDef>,
        run_chains: BTreeMap<String, Vec<jobserv_protocol::project::TriggerRef>>,
        now: u64,
    },
    /// Records that a build's duty `marker` is done (`crate::hooks::FINAL` closes the build's hooks).
    MarkBuild {
        project: String,
        build: u64,
        marker: String,
    },
    /// Records refs a git poller saw without starting builds (its first look, or refs that vanished).
    PollerSeen {
        project: String,
        trigger: u64,
        seen: BTreeMap<String, String>,
        replace: bool,
    },
    /// Raises the storage/wire format every node writes (see `codec`). Proposed by the leader only once
    /// every member announced that it reads `version`.
    SetFormatVersion {
        version: u8,
    },
    /// Records an artifact whose bytes are already in the blob store (held by `holders`, a majority of the
    /// voters, or by the object store when empty): one reference to the blob more. Idempotent: the same
    /// path with the same hash again is a no-op, so a retried upload never duplicates anything.
    PutArtifactBlob {
        run: RunRef,
        fence: u64,
        artifact: ArtifactMeta,
        holders: Vec<u64>,
    },
    /// `node` verified that it holds the blobs `held` and lost (no longer holds) the blobs `lost`: the
    /// repair task's report, which keeps `BlobRecord::holders` true after a disk was wiped.
    BlobHolders {
        node: u64,
        held: Vec<String>,
        lost: Vec<String>,
    },
    /// Deletes completed, unpromoted builds of a project (retention) with their runs, logs, tests and
    /// artifacts; blobs left without a reference are removed. Builds still running or promoted are kept.
    DeleteBuilds {
        project: String,
        numbers: Vec<u64>,
    },
    /// Removes a worker that holds no run (JobServ's `DELETE /workers/<name>/`: `jobserv_worker.py
    /// unregister`). Its key stops working at once; registering again starts afresh, unenlisted.
    DeleteWorker {
        name: String,
    },
    /// A one-time UI login link (`hash`: sha256 of its code) for the token `token_hash`, until `expires`.
    /// Links already expired at `now` are removed in the same entry.
    AddLoginLink {
        hash: String,
        token_hash: String,
        expires: u64,
        now: u64,
    },
    /// Uses a login link: it is removed, so it works once, on whichever node takes it.
    UseLoginLink {
        hash: String,
        now: u64,
    },
    /// Hands up to `slots` queued runs to `worker`, chosen by the state machine itself from the heads of the
    /// host-tag queues the worker matches (`state::queue::pick`). Nodes proposing this never race each other
    /// for the same run, and concurrent check-ins batch into one Raft append. Written only once the cluster
    /// agreed on format 3 (a release that does not know it never receives it).
    AssignNext {
        worker: String,
        slots: u32,
        now: u64,
    },
    /// Several proposals in one log entry: concurrent writes of the hot path (console appends and status
    /// changes of many runs) batched by the proposing node (`node/src/batcher.rs`), so the per-entry cost
    /// (log write, replication, apply batch, `last_applied`) is paid once for all of them. Each command is
    /// applied in order with its own outcome: a refused one changes nothing and the others still apply
    /// (`CommandResult::Batch` holds one result per command). Only `batchable` commands may be inside: they
    /// neither nest nor use the log index (fences, queue order), which all commands of an entry share.
    /// Written only once the cluster agreed on format 4.
    Batch(Vec<Command>),
}

impl Command {
    /// Whether this command may share a log entry with others (`Command::Batch`).
    pub fn batchable(&self) -> bool {
        matches!(self, Command::UpdateRun(_))
    }

    /// The bytes this command weighs in an entry, roughly (a batch is bounded by it).
    pub fn weight(&self) -> usize {
        match self {
            Command::UpdateRun(u) => 128 + u.console.len(),
            Command::Batch(cmds) => cmds.iter().map(Command::weight).sum(),
            _ => 256,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewBuild {
    pub project: String,
    pub trigger_name: String,
    pub trigger_type: String,
    pub reason: Option<String>,
    pub params: BTreeMap<String, String>,
    pub secrets: BTreeMap<String, String>,
    pub queue_priority: i32,
    pub definition: String,
    /// Runs already expanded from the definition by the proposer (expansion is pure, but doing it once
    /// keeps the apply path cheap). `H_BUILD` is filled in by the state machine, which owns the number.
    pub runs: Vec<RunDef>,
    pub now: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunUpdate {
    pub run: RunRef,
    pub fence: u64,
    /// Where `console` starts in the run's log; a retry of bytes already stored is accepted idempotently.
    pub offset: u64,
    /// A byte string to serde (same encoding as a `Vec<u8>`, see `codec::byte_pairs`).
    #[serde(with = "serde_bytes")]
    pub console: Vec<u8>,
    pub status: Option<RunStatus>,
    pub metadata: Option<String>,
    pub failure_reason: Option<String>,
    pub now: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum CommandResult {
    Done,
    BuildCreated {
        number: u64,
    },
    TriggerCreated {
        id: u64,
    },
    /// The runs this worker now holds, each with its fencing token.
    Assigned(Vec<(RunRef, u64)>),
    RunUpdated {
        log_len: u64,
        cancel: bool,
    },
    Rejected(StateError),
    /// The builds `DeleteBuilds` removed (the others were running, promoted or already gone).
    BuildsDeleted(Vec<u64>),
    /// `UseLoginLink` succeeded: the session is for this token.
    LoginLink {
        token_hash: String,
    },
    /// The results of a `Command::Batch`, one per command, in order.
    Batch(Vec<CommandResult>),
}

/// Why the state machine refused a command. The node maps each to an HTTP status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum StateError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0} already exists")]
    AlreadyExists(String),
    #[error("stale lease on {run}: fencing token {given} but the run is held under {current}")]
    Fenced {
        run: String,
        given: u64,
        current: u64,
    },
    #[error("offset {given} is past the end of the log ({stored} bytes stored)")]
    OffsetGap { given: u64, stored: u64 },
    #[error("{0}")]
    Invalid(String),
}
