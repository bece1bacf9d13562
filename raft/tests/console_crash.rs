//! Console files (`console_files.rs`) across SIGKILLs: a child process streams console output of several
//! runs at once — large chunks (written to the console files) and small ones (kept in sled) in shared
//! batch entries, builds created, completed and deleted, snapshots built (each sweeps the files nobody
//! refers to) and the log purged — until it is killed at a random point. After every kill the store must
//! open, and every run's console must read back whole, byte for byte, up to the length the state says:
//! no ref to bytes that are missing, torn or swept away.
mod common;

use jobserv_protocol::RunStatus;
use jobserv_raft::command::RunUpdate;
use jobserv_raft::model::{RunRef, WorkerFacts};
use jobserv_raft::types::{Entry, Vote};
use jobserv_raft::{Command, SledLogStore, SledStateMachine, State};
use openraft::storage::{RaftLogReaderExt, RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::{EntryPayload, LogIdOptionExt, RaftSnapshotBuilder};
use std::path::{Path, PathBuf};
use std::time::Duration;

const CHILD_ENV: &str = "JOBSERV_CONSOLE_CRASH_CHILD";
/// A run is completed once it holds this much console.
const RUN_BYTES: u64 = 400_000;
/// Sizes of the successive appends: above and below `console_files::MIN_BYTES`.
const SIZES: [usize; 6] = [70_000, 1_000, 16_384, 40_000, 5_000, 16_383];

/// The byte at `offset` of run `run` of build `build`: every run's console is known from its length alone.
fn byte(build: u64, run: &str, offset: u64) -> u8 {
    let x = offset
        .wrapping_mul(0x9E37_79B9)
        .wrapping_add(build.wrapping_mul(0x85EB_CA6B))
        .wrapping_add(run.len() as u64 * 131);
    b' ' + (x >> 7) as u8 % 90
}

fn console_bytes(build: u64, run: &str, from: u64, len: usize) -> Vec<u8> {
    (from..from + len as u64)
        .map(|o| byte(build, run, o))
        .collect()
}

fn open(path: &Path) -> (SledLogStore, SledStateMachine) {
    common::try_open(path)
        .unwrap_or_else(|e| panic!("opening the store at {}: {e}", path.display()))
}

/// The next commands the "cluster" commits, derived from the state alone (so a restarted child goes on
/// where the state is): appends to every running run, else completions, deletions or a new build.
fn next_commands(state: &State) -> Vec<Command> {
    if state.project("p").expect("read").is_none() {
        let facts = WorkerFacts {
            host_tags: vec!["h".into()],
            concurrent_runs: 8,
            ..Default::default()
        };
        return vec![
            Command::CreateProject {
                name: "p".into(),
                synchronous_builds: false,
                now: 1,
            },
            Command::RegisterWorker {
                name: "w".into(),
                key_hash: "k".into(),
                facts,
                now: 1,
            },
            Command::UpdateWorker {
                name: "w".into(),
                enlisted: Some(true),
                facts: None,
            },
        ];
    }
    let builds = state.build_numbers("p").expect("read");
    let mut updates = Vec::new();
    let mut queued = Vec::new();
    for &n in &builds {
        for run in state.runs_of_build("p", n).expect("read") {
            let r = RunRef {
                project: "p".into(),
                build: n,
                run: run.name.clone(),
            };
            if run.status == RunStatus::Queued {
                queued.push(r);
                continue;
            }
            if run.status.is_complete() {
                continue;
            }
            let (console, status) = if run.log_len < RUN_BYTES {
                let size = SIZES[((run.log_len / 1000 + n) % SIZES.len() as u64) as usize];
                let size = size.min((RUN_BYTES - run.log_len) as usize);
                (console_bytes(n, &run.name, run.log_len, size), None)
            } else {
                (Vec::new(), Some(RunStatus::Passed))
            };
            updates.push(Command::UpdateRun(Box::new(RunUpdate {
                run: r,
                fence: run.fence,
                offset: run.log_len,
                console,
                status,
                metadata: None,
                failure_reason: None,
                now: 3,
            })));
        }
    }
    if !queued.is_empty() {
        return vec![Command::AssignRuns {
            worker: "w".into(),
            runs: queued,
            now: 2,
        }];
    }
    if !updates.is_empty() {
        // One entry, as the node's batcher makes them: several bodies synced together.
        return vec![Command::Batch(updates)];
    }
    if builds.len() > 2 {
        return vec![Command::DeleteBuilds {
            project: "p".into(),
            numbers: builds[..builds.len() - 2].to_vec(),
        }];
    }
    vec![common::create_build(&["a", "bb", "ccc"])]
}

/// The child: appends and applies what `next_commands` says, one entry at a time, with a snapshot (and so
/// a sweep of the console files) and a purge every 25 entries, until it is killed. A no-op unless started
/// by `sigkill_while_streaming_console_leaves_every_console_whole`.
#[test]
fn console_crash_child() {
    let Ok(work) = std::env::var(CHILD_ENV) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let (mut log, mut sm) = open(&PathBuf::from(work).join("raft"));
        log.save_vote(&Vote::new_committed(1, 1)).await.unwrap();
        // What was appended but not applied before the kill is applied first, as openraft would.
        let (applied, _) = sm.applied_state().await.unwrap();
        let last = log.get_log_state().await.unwrap().last_log_id;
        if last.index() > applied.index() {
            let pending = log
                .get_log_entries(applied.next_index()..last.next_index())
                .await
                .unwrap();
            sm.apply(pending).await.unwrap();
        }
        let mut index = last.next_index().max(applied.next_index()).max(1);
        loop {
            for cmd in next_commands(&sm.state()) {
                let entry = Entry {
                    log_id: common::lid(index),
                    payload: EntryPayload::Normal(cmd),
                };
                log.blocking_append(vec![entry.clone()]).await.unwrap();
                sm.apply(vec![entry]).await.unwrap();
                if index % 25 == 0 {
                    sm.get_snapshot_builder()
                        .await
                        .build_snapshot()
                        .await
                        .unwrap();
                    log.purge(common::lid(index - 5)).await.unwrap();
                }
                index += 1;
            }
        }
    });
}

#[test]
fn sigkill_while_streaming_console_leaves_every_console_whole() {
    let work = tempfile::tempdir().unwrap();
    let mut next = common::random("CONSOLE_CRASH_SEED");
    let path = work.path().join("raft");
    let mut verified_bytes = 0u64;
    let mut deleted_builds = false;
    for life in 0..10 {
        let delay = Duration::from_millis(300 + next() % 1200);
        common::run_child_then_kill(
            "console_crash_child",
            &[(CHILD_ENV, work.path().display().to_string())],
            delay,
            life,
        );
        let (log, sm) = open(&path);
        let state = sm.state();
        let builds = state.build_numbers("p").unwrap_or_default();
        deleted_builds |= builds.first().is_some_and(|&n| n > 1);
        for &n in &builds {
            for run in state.runs_of_build("p", n).unwrap() {
                let r = RunRef {
                    project: "p".into(),
                    build: n,
                    run: run.name.clone(),
                };
                let slice = state
                    .console(&r, 0, usize::MAX)
                    .unwrap_or_else(|e| {
                        panic!("life {life}, killed after {delay:?}: console of {r}: {e}")
                    })
                    .expect("run");
                assert_eq!(slice.bytes.len() as u64, run.log_len, "life {life}: {r}");
                assert!(
                    slice.bytes == console_bytes(n, &run.name, 0, run.log_len as usize),
                    "life {life}, killed after {delay:?}: the console of {r} differs"
                );
                verified_bytes += run.log_len;
            }
        }
        drop((log, sm));
    }
    // The kills must have come while there was something to lose.
    assert!(
        verified_bytes > 1_000_000,
        "only {verified_bytes} bytes verified"
    );
    assert!(
        deleted_builds,
        "no build was ever deleted: the sweep was not exercised"
    );
    let files = std::fs::read_dir(work.path().join("raft.console"))
        .unwrap()
        .count();
    eprintln!("{verified_bytes} bytes of console verified over 10 lives; {files} console segment files left");
}
