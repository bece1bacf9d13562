//! Applying one command to the state. Deterministic: it depends only on the state, the command and the
//! log index (used for fencing tokens and queue order), never on the clock or the node.
use super::keys;
use super::queue;
use super::txn::{Txn, Write};
use super::{validate_name, State, StateResult};
use crate::command::{Command, CommandResult, NewBuild, RunUpdate, StateError};
use crate::model::{ApiToken, Build, LoginLink, Project, Run, RunRef, Test, Trigger, Worker};
use jobserv_protocol::RunStatus;

type Outcome = Result<CommandResult, StateError>;

/// Entries' changes, computed but not yet in the tree (`Group::finish`).
pub struct Prepared {
    writes: Vec<Write>,
    results: Vec<CommandResult>,
    /// Console bodies were written to the console files and must be synced before `writes` are made.
    unsynced_bodies: bool,
}

impl Prepared {
    /// Whether `State::sync_console_files` must run before `State::commit`.
    pub fn needs_sync(&self) -> bool {
        self.unsynced_bodies
    }
}

/// Consecutive entries applied as one write set: each entry sees the changes of those before it, and
/// `finish` makes one write set of them all, committed at once (`redo.rs`): one commit per entry was too
/// much per-commit work on a loaded node. A refused entry is rolled back alone (a savepoint per entry).
/// Atomic as a whole: a crash keeps all of the group or none, and `last_applied` says which.
pub struct Group<'a> {
    txn: Txn<'a>,
    results: Vec<CommandResult>,
}

impl Group<'_> {
    /// Adds one entry: `command` (if any) and the `meta` writes (last applied log id, membership).
    pub fn add(
        &mut self,
        log_index: u64,
        command: Option<&Command>,
        meta: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> StateResult<()> {
        // A refused command changes nothing: its partial writes are dropped, only the meta writes stay.
        let result = match command {
            Some(cmd) => match self.txn.attempt(|txn| apply_command(txn, log_index, cmd))? {
                Ok(result) => result,
                Err(refusal) => CommandResult::Rejected(refusal),
            },
            None => CommandResult::Done,
        };
        for (k, v) in meta {
            self.txn.put_raw(k, v);
        }
        self.results.push(result);
        Ok(())
    }

    /// The group's changes as one write set, its console bodies written (not synced).
    pub fn finish(self) -> StateResult<Prepared> {
        let (writes, unsynced_bodies) = self.txn.into_writes()?;
        Ok(Prepared {
            writes,
            results: self.results,
            unsynced_bodies,
        })
    }
}

impl State {
    /// Applies `command` (if any) and the `meta` writes (last applied log id, membership) as one atomic commit.
    pub fn apply(
        &self,
        log_index: u64,
        command: Option<&Command>,
        meta: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> StateResult<CommandResult> {
        let mut group = self.group();
        group.add(log_index, command, meta)?;
        let prepared = group.finish()?;
        if prepared.needs_sync() {
            self.sync_console_files()?;
        }
        let mut results = self.commit(prepared)?;
        Ok(results.pop().unwrap_or(CommandResult::Done))
    }

    /// An empty group of entries to apply together (see `Group`). The caller syncs if `needs_sync` and
    /// commits the finished group before it starts the next, which must see these changes.
    pub fn group(&self) -> Group<'_> {
        Group {
            txn: Txn::with_console_files(&self.tree, self.console.as_deref()),
            results: Vec::new(),
        }
    }

    /// Makes the console bodies written so far durable.
    pub fn sync_console_files(&self) -> StateResult<()> {
        if let Some(files) = &self.console {
            files.sync()?;
        }
        Ok(())
    }

    /// The second half of `apply`: the writes into the tree, atomically, each entry's result in order. One
    /// committer at a time (the state machine's apply; `redo.rs` keeps one record).
    /// The bodies must be synced first: sled may persist the writes on its own at any time, and its refs
    /// must never point to bytes that are not on disk (`console_files.rs`).
    pub fn commit(&self, prepared: Prepared) -> StateResult<Vec<CommandResult>> {
        debug_assert!(!prepared.unsynced_bodies || self.console.is_some());
        self.write_atomically(prepared.writes)?;
        Ok(prepared.results)
    }
}

fn apply_command(txn: &mut Txn, log_index: u64, cmd: &Command) -> StateResult<Outcome> {
    match cmd {
        Command::CreateProject {
            name,
            synchronous_builds,
            now,
        } => {
            if let Err(e) = validate_name("project", name) {
                return Ok(Err(e));
            }
            if txn.get_raw(&keys::project(name))?.is_some() {
                return Ok(Err(StateError::AlreadyExists(format!("project {name}"))));
            }
            let project = Project {
                name: name.clone(),
                synchronous_builds: *synchronous_builds,
                next_build: 1,
                created: *now,
            };
            txn.put(keys::project(name), &project)?;
            Ok(Ok(CommandResult::Done))
        }
        Command::DeleteProject { name } => delete_project(txn, name),
        Command::AddToken { hash, name, role } => {
            txn.put(
                keys::token(hash),
                &ApiToken {
                    name: name.clone(),
                    role: *role,
                },
            )?;
            Ok(Ok(CommandResult::Done))
        }
        Command::CreateTrigger { trigger } => {
            if txn.get_raw(&keys::project(&trigger.project))?.is_none() {
                return Ok(Err(StateError::NotFound(format!(
                    "project {}",
                    trigger.project
                ))));
            }
            let id = txn.get::<u64>(keys::NEXT_TRIGGER_ID)?.unwrap_or(1);
            txn.put(keys::NEXT_TRIGGER_ID.to_vec(), &(id + 1))?;
            let stored = Trigger {
                id,
                ..trigger.clone()
            };
            txn.put(keys::trigger(&trigger.project, id), &stored)?;
            Ok(Ok(CommandResult::TriggerCreated { id }))
        }
        Command::UpdateTrigger { trigger } => {
            let key = keys::trigger(&trigger.project, trigger.id);
            if txn.get_raw(&key)?.is_none() {
                return Ok(Err(StateError::NotFound(format!(
                    "trigger {} of project {}",
                    trigger.id, trigger.project
                ))));
            }
            txn.put(key, trigger)?;
            Ok(Ok(CommandResult::Done))
        }
        Command::CreateBuild(new_build) => create_build(txn, log_index, new_build),
        Command::RegisterWorker {
            name,
            key_hash,
            facts,
            now,
        } => {
            if let Err(e) = validate_name("worker", name) {
                return Ok(Err(e));
            }
            let key = keys::worker(name);
            match txn.get::<Worker>(&key)? {
                // Re-registering with the same key (a restarted worker) refreshes its facts.
                Some(mut existing) if existing.key_hash == *key_hash => {
                    existing.facts = facts.clone();
                    txn.put(key, &existing)?;
                }
                Some(_) => {
                    return Ok(Err(StateError::AlreadyExists(format!(
                        "worker {name} (with another key)"
                    ))))
                }
                None => {
                    let worker = Worker {
                        name: name.clone(),
                        key_hash: key_hash.clone(),
                        facts: facts.clone(),
                        enlisted: false,
                        created: *now,
                    };
                    txn.put(key, &worker)?;
                }
            }
            Ok(Ok(CommandResult::Done))
        }
        Command::UpdateWorker {
            name,
            enlisted,
            facts,
        } => {
            let key = keys::worker(name);
            let Some(mut worker) = txn.get::<Worker>(&key)? else {
                return Ok(Err(StateError::NotFound(format!("worker {name}"))));
            };
            if let Some(enlisted) = enlisted {
                worker.enlisted = *enlisted;
            }
            if let Some(facts) = facts {
                worker.facts = facts.clone();
            }
            txn.put(key, &worker)?;
            Ok(Ok(CommandResult::Done))
        }
        Command::AssignRuns { worker, runs, now } => {
            assign_runs(txn, log_index, worker, runs, *now)
        }
        Command::AssignNext { worker, slots, now } => {
            assign_next(txn, log_index, worker, *slots, *now)
        }
        Command::UpdateRun(update) => update_run(txn, update),
        Command::CancelRun { run, now } => cancel_run(txn, run, *now),
        Command::RerunRun { run, now } => rerun_run(txn, log_index, run, *now),
        Command::ReleaseWorkerRuns {
            worker,
            reason,
            requeue,
            now,
        } => release_worker_runs(txn, log_index, worker, reason, *requeue, *now),
        Command::ReportTests {
            run,
            fence,
            report,
            now,
        } => {
            let Some(stored) = txn.get::<Run>(&keys::run(run))? else {
                return Ok(Err(StateError::NotFound(format!("run {run}"))));
            };
            if let Err(e) = check_fence(&stored, *fence) {
                return Ok(Err(e));
            }
            if let Err(e) = validate_name("test", &report.name) {
                return Ok(Err(e));
            }
            let test = Test {
                name: report.name.clone(),
                status: report.status,
                results: report.results.clone(),
                created: *now,
            };
            txn.put(keys::test(run, &report.name), &test)?;
            Ok(Ok(CommandResult::Done))
        }
        Command::PromoteBuild {
            project,
            build,
            name,
            annotation,
        } => {
            let key = keys::build(project, *build);
            let Some(mut stored) = txn.get::<Build>(&key)? else {
                return Ok(Err(StateError::NotFound(format!(
                    "build {project}/{build}"
                ))));
            };
            if !matches!(stored.status, RunStatus::Passed | RunStatus::Promoted) {
                return Ok(Err(StateError::Invalid(format!(
                    "build {project}/{build} is {}; only a PASSED build can be promoted",
                    stored.status
                ))));
            }
            stored.status = RunStatus::Promoted;
            stored.promoted = Some(crate::model::Promotion {
                name: name.clone(),
                annotation: annotation.clone(),
            });
            txn.put(key, &stored)?;
            Ok(Ok(CommandResult::Done))
        }
        Command::PutArtifact {
            run,
            fence,
            path,
            bytes,
        } => {
            let Some(stored) = txn.get::<Run>(&keys::run(run))? else {
                return Ok(Err(StateError::NotFound(format!("run {run}"))));
            };
            if let Err(e) = check_fence(&stored, *fence) {
                return Ok(Err(e));
            }
            if let Err(e) = validate_artifact_path(path) {
                return Ok(Err(e));
            }
            txn.put_raw(keys::artifact(run, path), bytes.clone());
            Ok(Ok(CommandResult::Done))
        }
        Command::PutArtifactBlob {
            run,
            fence,
            artifact,
            holders,
        } => super::artifacts::put_artifact_blob(txn, run, *fence, artifact, holders),
        Command::BlobHolders { node, held, lost } => {
            super::artifacts::blob_holders(txn, *node, held, lost)
        }
        Command::DeleteBuilds { project, numbers } => {
            super::artifacts::delete_builds(txn, project, numbers)
        }
        Command::DeleteWorker { name } => {
            let key = keys::worker(name);
            if txn.get::<Worker>(&key)?.is_none() {
                return Ok(Err(StateError::NotFound(format!("worker {name}"))));
            }
            let held = txn.scan_prefix(&keys::worker_runs_of(name))?.len();
            if held > 0 {
                return Ok(Err(StateError::Invalid(format!(
                    "worker {name} holds {held} run(s): delete it once they have ended"
                ))));
            }
            txn.remove(key);
            Ok(Ok(CommandResult::Done))
        }
        Command::AddLoginLink {
            hash,
            token_hash,
            expires,
            now,
        } => {
            for (key, value) in txn.scan_prefix(keys::LOGIN_LINKS)? {
                if crate::codec::decode::<LoginLink>(&value).is_ok_and(|l| l.expires < *now) {
                    txn.remove(key);
                }
            }
            txn.put(
                keys::login_link(hash),
                &LoginLink {
                    token_hash: token_hash.clone(),
                    expires: *expires,
                },
            )?;
            Ok(Ok(CommandResult::Done))
        }
        Command::UseLoginLink { hash, now } => {
            let key = keys::login_link(hash);
            let Some(link) = txn.get::<LoginLink>(&key)? else {
                return Ok(Err(StateError::NotFound(
                    "login link (unknown or already used)".into(),
                )));
            };
            // An expired link is refused (and removed by the next `AddLoginLink`: a refusal writes nothing).
            if link.expires < *now {
                return Ok(Err(StateError::Invalid("login link expired".into())));
            }
            txn.remove(key);
            Ok(Ok(CommandResult::LoginLink {
                token_hash: link.token_hash,
            }))
        }
        Command::Noop => Ok(Ok(CommandResult::Done)),
        Command::SetFormatVersion { version } => {
            let current = txn.get::<u8>(keys::FORMAT)?.unwrap_or(1);
            if *version > current {
                txn.put(keys::FORMAT.to_vec(), version)?;
            }
            Ok(Ok(CommandResult::Done))
        }
        Command::CreateBuildExt {
            build,
            hooks,
            advance,
        } => {
            super::hooks::create_build_ext(txn, log_index, build, hooks.as_ref(), advance.as_ref())
        }
        Command::FireChain {
            project,
            build,
            marker,
            runs,
            run_chains,
            now,
        } => super::hooks::fire_chain(
            txn, log_index, project, *build, marker, runs, run_chains, *now,
        ),
        Command::MarkBuild {
            project,
            build,
            marker,
        } => super::hooks::mark_build(txn, project, *build, marker),
        Command::PollerSeen {
            project,
            trigger,
            seen,
            replace,
        } => super::hooks::poller_seen(txn, project, *trigger, seen, *replace),
        Command::Batch(commands) => apply_batch(txn, log_index, commands),
    }
}

/// Each command of a batch in order, each with its own outcome: a refused one is rolled back alone.
fn apply_batch(txn: &mut Txn, log_index: u64, commands: &[Command]) -> StateResult<Outcome> {
    let mut results = Vec::with_capacity(commands.len());
    for cmd in commands {
        if !cmd.batchable() {
            results.push(CommandResult::Rejected(StateError::Invalid(
                "this command cannot be part of a batch".into(),
            )));
            continue;
        }
        results.push(
            match txn.attempt(|txn| apply_command(txn, log_index, cmd))? {
                Ok(result) => result,
                Err(refusal) => CommandResult::Rejected(refusal),
            },
        );
    }
    Ok(Ok(CommandResult::Batch(results)))
}

/// Every run write goes through here so that the per-status counters stay exact.
pub(super) fn put_run(txn: &mut Txn, old: Option<RunStatus>, run: &Run) -> StateResult<()> {
    if old != Some(run.status) {
        if let Some(old) = old {
            bump_count(txn, old, -1)?;
        }
        bump_count(txn, run.status, 1)?;
        let key = keys::build_tally(&run.project, run.build);
        let mut tally = super::tally::build_tally(txn, &run.project, run.build)?;
        if let Some(old) = old {
            tally.count(old, -1);
        }
        tally.count(run.status, 1);
        txn.put(key, &tally)?;
    }
    txn.put(keys::run(&run.run_ref()), run)
}

/// Takes a run that is being deleted out of the status counters, the queue and its worker's index (the
/// run record itself goes with its prefix).
pub(super) fn forget_run_indexes(txn: &mut Txn, run: &Run) -> StateResult<()> {
    bump_count(txn, run.status, -1)?;
    queue::dequeue(txn, run);
    if let Some(worker) = &run.worker {
        txn.remove(keys::worker_run(worker, &run.run_ref()));
    }
    Ok(())
}

pub(super) fn bump_count(txn: &mut Txn, status: RunStatus, delta: i64) -> StateResult<()> {
    let key = keys::run_status_count(status);
    let current = txn.get::<u64>(&key)?.unwrap_or(0) as i64;
    txn.put(key, &((current + delta).max(0) as u64))
}

fn delete_project(txn: &mut Txn, name: &str) -> StateResult<Outcome> {
    if txn.get_raw(&keys::project(name))?.is_none() {
        return Ok(Err(StateError::NotFound(format!("project {name}"))));
    }
    for (_, bytes) in txn.scan_prefix(&keys::runs_of_project(name))? {
        forget_run_indexes(txn, &crate::codec::decode(&bytes)?)?;
    }
    super::artifacts::remove_artifacts_under(txn, &keys::artifact_metas_of_project(name))?;
    for prefix in [
        keys::runs_of_project(name),
        keys::builds_of(name),
        keys::build_tallies_of(name),
        keys::triggers_of(name),
        keys::consoles_of_project(name),
        keys::tests_of_project(name),
        keys::artifacts_of_project(name),
        keys::hooks_of_project(name),
        keys::open_hooks_of_project(name),
        keys::poller_refs_of_project(name),
    ] {
        txn.remove_prefix(&prefix)?;
    }
    txn.remove(keys::project(name));
    Ok(Ok(CommandResult::Done))
}

pub(super) fn create_build(txn: &mut Txn, log_index: u64, nb: &NewBuild) -> StateResult<Outcome> {
    let project_key = keys::project(&nb.project);
    let Some(mut project) = txn.get::<Project>(&project_key)? else {
        return Ok(Err(StateError::NotFound(format!("project {}", nb.project))));
    };
    if nb.runs.is_empty() {
        return Ok(Err(StateError::Invalid(format!(
            "trigger {} creates no runs",
            nb.trigger_name
        ))));
    }
    let mut names = std::collections::BTreeSet::new();
    for def in &nb.runs {
        if let Err(e) = validate_name("run", &def.run) {
            return Ok(Err(e));
        }
        if !names.insert(def.run.clone()) {
            return Ok(Err(StateError::Invalid(format!(
                "run name {} appears twice in the build",
                def.run
            ))));
        }
    }
    let number = project.next_build;
    project.next_build += 1;
    txn.put(project_key, &project)?;

    for (position, def) in nb.runs.iter().enumerate() {
        let mut definition = def.clone();
        definition.build = number;
        definition.env.insert("H_BUILD".into(), number.to_string());
        // Queue order: log index first (creation order across builds), then position in the build.
        let queue_seq = (log_index << 16) | position as u64;
        let run = Run {
            project: nb.project.clone(),
            build: number,
            name: def.run.clone(),
            status: RunStatus::Queued,
            host_tag: def.host_tag.clone(),
            queue_priority: nb.queue_priority,
            queue_seq,
            definition,
            worker: None,
            fence: 0,
            log_len: 0,
            created: nb.now,
            started: None,
            completed: None,
            cancelled: false,
            failure_reason: None,
            metadata: None,
        };
        queue::enqueue(txn, &run)?;
        put_run(txn, None, &run)?;
    }
    let build = Build {
        project: nb.project.clone(),
        number,
        status: RunStatus::Queued,
        trigger_name: nb.trigger_name.clone(),
        trigger_type: nb.trigger_type.clone(),
        reason: nb.reason.clone(),
        params: nb.params.clone(),
        secrets: nb.secrets.clone(),
        queue_priority: nb.queue_priority,
        definition: nb.definition.clone(),
        run_names: nb.runs.iter().map(|r| r.run.clone()).collect(),
        created: nb.now,
        completed: None,
        promoted: None,
    };
    txn.put(keys::build(&nb.project, number), &build)?;
    Ok(Ok(CommandResult::BuildCreated { number }))
}

/// The state machine chooses the runs (`queue::pick` over this entry's view), then assigns them exactly as
/// `AssignRuns` does.
fn assign_next(
    txn: &mut Txn,
    log_index: u64,
    worker_name: &str,
    slots: u32,
    now: u64,
) -> StateResult<Outcome> {
    let Some(worker) = txn.get::<Worker>(&keys::worker(worker_name))? else {
        return Ok(Err(StateError::NotFound(format!("worker {worker_name}"))));
    };
    let runs = queue::pick(txn, &worker, slots as usize)?;
    assign_runs(txn, log_index, worker_name, &runs, now)
}

fn assign_runs(
    txn: &mut Txn,
    log_index: u64,
    worker_name: &str,
    runs: &[RunRef],
    now: u64,
) -> StateResult<Outcome> {
    let Some(worker) = txn.get::<Worker>(&keys::worker(worker_name))? else {
        return Ok(Err(StateError::NotFound(format!("worker {worker_name}"))));
    };
    if !worker.enlisted {
        return Ok(Err(StateError::Invalid(format!(
            "worker {worker_name} is not enlisted"
        ))));
    }
    let mut assigned = Vec::new();
    for run_ref in runs {
        let Some(mut run) = txn.get::<Run>(&keys::run(run_ref))? else {
            continue;
        };
        if run.status != RunStatus::Queued {
            continue; // another check-in got it first: exactly-once assignment
        }
        queue::dequeue(txn, &run);
        run.status = RunStatus::Running;
        run.worker = Some(worker_name.to_string());
        run.fence = log_index;
        run.started = Some(now);
        txn.put(keys::worker_run(worker_name, run_ref), &log_index)?;
        put_run(txn, Some(RunStatus::Queued), &run)?;
        assigned.push((run_ref.clone(), log_index));
        refresh_build_status(txn, &run.project, run.build, now)?;
    }
    Ok(Ok(CommandResult::Assigned(assigned)))
}

pub(super) fn check_fence(run: &Run, fence: u64) -> Result<(), StateError> {
    if run.worker.is_none() || run.fence != fence {
        return Err(StateError::Fenced {
            run: run.run_ref().to_string(),
            given: fence,
            current: run.fence,
        });
    }
    Ok(())
}

fn update_run(txn: &mut Txn, up: &RunUpdate) -> StateResult<Outcome> {
    let key = keys::run(&up.run);
    let Some(mut run) = txn.get::<Run>(&key)? else {
        return Ok(Err(StateError::NotFound(format!("run {}", up.run))));
    };
    if let Err(e) = check_fence(&run, up.fence) {
        return Ok(Err(e));
    }
    let end = up.offset + up.console.len() as u64;
    if up.offset > run.log_len {
        return Ok(Err(StateError::OffsetGap {
            given: up.offset,
            stored: run.log_len,
        }));
    }
    if run.status.is_complete() {
        // A retry of the last chunk (its acknowledgement was lost) must succeed; anything new must not.
        let same_status = up.status.is_none_or(|s| s == run.status || run.cancelled);
        if end <= run.log_len && same_status {
            return Ok(Ok(CommandResult::RunUpdated {
                log_len: run.log_len,
                cancel: run.cancelled,
            }));
        }
        return Ok(Err(StateError::Invalid(format!(
            "run {} is already {}",
            up.run, run.status
        ))));
    }
    let old_status = run.status;
    if end > run.log_len {
        // Only the part past what is stored is new: a retry through another node never duplicates bytes.
        let skip = (run.log_len - up.offset) as usize;
        let new = &up.console[skip..];
        if new.len() >= crate::console_files::MIN_BYTES && txn.has_console_files() {
            txn.put_console_body(keys::console_chunk(&up.run, run.log_len), new.to_vec());
        } else {
            let mut at = run.log_len;
            for piece in new.chunks(super::console::CONSOLE_PIECE) {
                txn.put_raw(keys::console_chunk(&up.run, at), piece.to_vec());
                at += piece.len() as u64;
            }
        }
        run.log_len = end;
    }
    if let Some(metadata) = &up.metadata {
        run.metadata = Some(metadata.clone());
    }
    if let Some(mut status) = up.status {
        if matches!(
            status,
            RunStatus::Queued | RunStatus::Cancelling | RunStatus::Promoted
        ) {
            return Ok(Err(StateError::Invalid(format!(
                "a worker may not set a run to {status}"
            ))));
        }
        if run.cancelled && status.is_complete() {
            status = RunStatus::Failed; // a cancelled run never passes
            run.failure_reason
                .get_or_insert_with(|| "cancelled".to_string());
        }
        if run.cancelled && !status.is_complete() {
            status = RunStatus::Cancelling;
        }
        if status == RunStatus::Failed {
            if let Some(reason) = &up.failure_reason {
                run.failure_reason = Some(reason.clone());
            }
        }
        run.status = status;
        if status.is_complete() {
            finish_run(txn, &mut run, up.now);
        }
    }
    put_run(txn, Some(old_status), &run)?;
    if run.status != old_status {
        refresh_build_status(txn, &run.project, run.build, up.now)?;
    }
    Ok(Ok(CommandResult::RunUpdated {
        log_len: run.log_len,
        cancel: run.cancelled,
    }))
}

/// Bookkeeping when a run reaches PASSED or FAILED: it leaves its worker.
fn finish_run(txn: &mut Txn, run: &mut Run, now: u64) {
    run.completed = Some(now);
    if let Some(worker) = &run.worker {
        txn.remove(keys::worker_run(worker, &run.run_ref()));
    }
}

fn cancel_run(txn: &mut Txn, run_ref: &RunRef, now: u64) -> StateResult<Outcome> {
    let Some(mut run) = txn.get::<Run>(&keys::run(run_ref))? else {
        return Ok(Err(StateError::NotFound(format!("run {run_ref}"))));
    };
    let old = run.status;
    match run.status {
        RunStatus::Queued => {
            queue::dequeue(txn, &run);
            run.status = RunStatus::Failed;
            run.failure_reason = Some("cancelled while queued".into());
            run.cancelled = true;
            finish_run(txn, &mut run, now);
        }
        RunStatus::Running | RunStatus::Uploading | RunStatus::Cancelling => {
            run.status = RunStatus::Cancelling;
            run.cancelled = true;
        }
        done => {
            return Ok(Err(StateError::Invalid(format!(
                "run {run_ref} is already {done}"
            ))))
        }
    }
    put_run(txn, Some(old), &run)?;
    refresh_build_status(txn, &run.project, run.build, now)?;
    Ok(Ok(CommandResult::Done))
}

fn rerun_run(txn: &mut Txn, log_index: u64, run_ref: &RunRef, now: u64) -> StateResult<Outcome> {
    let Some(mut run) = txn.get::<Run>(&keys::run(run_ref))? else {
        return Ok(Err(StateError::NotFound(format!("run {run_ref}"))));
    };
    if !run.status.is_complete() {
        return Ok(Err(StateError::Invalid(format!(
            "run {run_ref} is {}; only a completed run can be rerun",
            run.status
        ))));
    }
    let old = run.status;
    txn.remove_prefix(&keys::console_of(run_ref))?;
    txn.remove_prefix(&keys::tests_of(run_ref))?;
    txn.remove_prefix(&keys::artifacts_of(run_ref))?;
    run.status = RunStatus::Queued;
    run.worker = None;
    run.fence = log_index; // any key of the previous attempt is now stale
    run.log_len = 0;
    run.started = None;
    run.completed = None;
    run.cancelled = false;
    run.failure_reason = None;
    run.metadata = None;
    run.queue_seq = log_index << 16;
    queue::enqueue(txn, &run)?;
    put_run(txn, Some(old), &run)?;
    let build_key = keys::build(&run.project, run.build);
    if let Some(mut build) = txn.get::<Build>(&build_key)? {
        build.completed = None;
        build.status = RunStatus::Queued;
        txn.put(build_key, &build)?;
    }
    refresh_build_status(txn, &run.project, run.build, now)?;
    Ok(Ok(CommandResult::Done))
}

fn release_worker_runs(
    txn: &mut Txn,
    log_index: u64,
    worker: &str,
    reason: &str,
    requeue: bool,
    now: u64,
) -> StateResult<Outcome> {
    for (key, _) in txn.scan_prefix(&keys::worker_runs_of(worker))? {
        txn.remove(key.clone());
        let rest = String::from_utf8_lossy(&key[keys::worker_runs_of(worker).len()..]).to_string();
        let mut parts = rest.splitn(3, '/');
        let (Some(project), Some(build), Some(name)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let Ok(build) = build.parse::<u64>() else {
            continue;
        };
        let run_ref = RunRef {
            project: project.into(),
            build,
            run: name.into(),
        };
        let Some(mut run) = txn.get::<Run>(&keys::run(&run_ref))? else {
            continue;
        };
        if run.status.is_complete() {
            continue;
        }
        let old = run.status;
        // Fencing: bump the token so that the lost worker's key for this run is refused from now on.
        run.fence = log_index;
        run.worker = None;
        if requeue && !run.cancelled {
            run.status = RunStatus::Queued;
            run.started = None;
            run.queue_seq = log_index << 16;
            queue::enqueue(txn, &run)?;
        } else {
            run.status = RunStatus::Failed;
            run.failure_reason = Some(reason.to_string());
            run.completed = Some(now);
        }
        put_run(txn, Some(old), &run)?;
        refresh_build_status(txn, &run.project, run.build, now)?;
    }
    Ok(Ok(CommandResult::Done))
}

/// A build's status is derived from its runs: PASSED when all passed, FAILED when all completed and one
/// failed, RUNNING once any run left the queue, QUEUED before.
pub(super) fn refresh_build_status(
    txn: &mut Txn,
    project: &str,
    number: u64,
    now: u64,
) -> StateResult<()> {
    let key = keys::build(project, number);
    let Some(mut build) = txn.get::<Build>(&key)? else {
        return Ok(());
    };
    if build.status == RunStatus::Promoted {
        return Ok(());
    }
    let tally = super::tally::build_tally(txn, project, number)?;
    let mut all_complete = tally.complete == tally.runs;
    let any_failed = tally.failed > 0;
    let mut any_started = tally.started > 0;
    // A passed run (or build) whose chain has not started yet keeps the build RUNNING (see `crate::hooks`).
    if all_complete && super::hooks::chain_pending(txn, project, number)? {
        all_complete = false;
        any_started = true;
    }
    let status = match (all_complete, any_failed, any_started) {
        (true, true, _) => RunStatus::Failed,
        (true, false, _) => RunStatus::Passed,
        (false, _, true) => RunStatus::Running,
        (false, _, false) => RunStatus::Queued,
    };
    if status != build.status {
        build.status = status;
        build.completed = all_complete.then_some(now);
        txn.put(key, &build)?;
    }
    Ok(())
}

/// Artifact paths are relative, `/`-separated, without `..`, empty or absolute parts.
pub fn validate_artifact_path(path: &str) -> Result<(), StateError> {
    if path.is_empty() || path.len() > 1024 {
        return Err(StateError::Invalid(
            "artifact path must be 1 to 1024 characters".into(),
        ));
    }
    if path.starts_with('/')
        || path
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Err(StateError::Invalid(format!(
            "artifact path {path:?} must be relative without empty, . or .. parts"
        )));
    }
    if path.chars().any(|c| c.is_control()) {
        return Err(StateError::Invalid(format!(
            "artifact path {path:?} contains a control character"
        )));
    }
    Ok(())
}
