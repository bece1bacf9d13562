//! The state machine's commits across SIGKILLs (`state/redo.rs`): a child process applies entries that each
//! append the same number of bytes to every one of 40 runs (one `Command::Batch` per entry, several entries
//! per apply, as a loaded node does) and never flushes, so what a kill leaves on disk ends wherever sled's
//! IO buffers happened to end: almost always in the middle of a commit. After every kill the store must
//! open with every run exactly as long as the entries applied say: all of a commit, or none of it.
mod common;

use jobserv_raft::command::RunUpdate;
use jobserv_raft::model::{RunRef, WorkerFacts};
use jobserv_raft::types::Entry;
use jobserv_raft::{Command, SledStateMachine};
use openraft::storage::RaftStateMachine;
use openraft::EntryPayload;
use std::path::PathBuf;
use std::time::Duration;

const CHILD_ENV: &str = "JOBSERV_COMMIT_CRASH_CHILD";
const RUNS: usize = 40;
/// Bytes each entry appends to each run: they stay in the tree (below `console_files::MIN_BYTES`), and a
/// group of `PER_APPLY` entries stays below the redo record's limit (`state/redo.rs`).
const CHUNK: u64 = 300;
/// Entries before the first append: project, worker, enlisting, build, assignment.
const SETUP: u64 = 5;
/// Entries per `apply` call (the state machine commits them as one group).
const PER_APPLY: u64 = 3;
// A group must take the redo-record path, not the pinned batch: each append writes a console piece and
// its run (about 450 bytes encoded), each under a key of about 40 bytes.
const _: () = assert!(
    (PER_APPLY as usize) * RUNS * (CHUNK as usize + 600) < jobserv_raft::state::REDO_MAX_BYTES
);

fn run_name(i: usize) -> String {
    format!("run-{i:02}")
}

fn run_ref(i: usize) -> RunRef {
    RunRef {
        project: "p".into(),
        build: 1,
        run: run_name(i),
    }
}

/// The command of entry `index` (from 1).
fn command(index: u64, sm: &SledStateMachine) -> Command {
    match index {
        1 => Command::CreateProject {
            name: "p".into(),
            synchronous_builds: false,
            now: 1,
        },
        2 => Command::RegisterWorker {
            name: "w".into(),
            key_hash: "k".into(),
            facts: WorkerFacts {
                host_tags: vec!["h".into()],
                concurrent_runs: RUNS as u32,
                ..Default::default()
            },
            now: 1,
        },
        3 => Command::UpdateWorker {
            name: "w".into(),
            enlisted: Some(true),
            facts: None,
        },
        4 => {
            let names: Vec<String> = (0..RUNS).map(run_name).collect();
            common::create_build(&names)
        }
        5 => Command::AssignRuns {
            worker: "w".into(),
            runs: (0..RUNS).map(run_ref).collect(),
            now: 2,
        },
        _ => {
            let state = sm.state();
            Command::Batch(
                (0..RUNS)
                    .map(|i| {
                        let run = state.run(&run_ref(i)).expect("read").expect("run");
                        Command::UpdateRun(Box::new(RunUpdate {
                            run: run_ref(i),
                            fence: run.fence,
                            offset: (index - SETUP - 1) * CHUNK,
                            console: vec![b'a' + (index % 26) as u8; CHUNK as usize],
                            status: None,
                            metadata: None,
                            failure_reason: None,
                            now: 3,
                        }))
                    })
                    .collect(),
            )
        }
    }
}

/// The child: applies entries from where the state is, `PER_APPLY` at a time, until it is killed. Nothing
/// flushes sled but sled itself. A no-op unless started by
/// `sigkill_in_the_middle_of_commits_leaves_each_commit_whole_or_absent`.
#[test]
fn commit_crash_child() {
    let Ok(work) = std::env::var(CHILD_ENV) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let (_log, mut sm) = common::try_open(&PathBuf::from(work).join("raft")).expect("open");
        let (applied, _) = sm.applied_state().await.expect("applied");
        let mut index = applied.map_or(1, |a| a.index + 1);
        loop {
            if index <= SETUP {
                // The appends read the fences the setup wrote: the setup goes one entry at a time.
                let entry = Entry {
                    log_id: common::lid(index),
                    payload: EntryPayload::Normal(command(index, &sm)),
                };
                sm.apply(vec![entry]).await.expect("apply");
                index += 1;
                continue;
            }
            let entries: Vec<Entry> = (index..index + PER_APPLY)
                .map(|i| Entry {
                    log_id: common::lid(i),
                    payload: EntryPayload::Normal(command(i, &sm)),
                })
                .collect();
            index += PER_APPLY;
            for result in sm.apply(entries).await.expect("apply") {
                if let jobserv_raft::CommandResult::Batch(results) = &result {
                    assert!(
                        results
                            .iter()
                            .all(|r| !matches!(r, jobserv_raft::CommandResult::Rejected(_))),
                        "{result:?}"
                    );
                }
            }
        }
    });
}

#[test]
fn sigkill_in_the_middle_of_commits_leaves_each_commit_whole_or_absent() {
    let work = tempfile::tempdir().expect("dir");
    let mut next = common::random("COMMIT_CRASH_SEED");
    let path = work.path().join("raft");
    let mut longest = 0;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for life in 0..8 {
        let delay = Duration::from_millis(400 + next() % 900);
        common::run_child_then_kill(
            "commit_crash_child",
            &[(CHILD_ENV, work.path().display().to_string())],
            delay,
            life,
        );
        let (log, mut sm) = common::try_open(&path).expect("open");
        let (applied, _) = rt.block_on(sm.applied_state()).expect("applied");
        let applied = applied.map_or(0, |a| a.index);
        if applied < SETUP {
            continue; // killed during the setup
        }
        let want = (applied - SETUP) * CHUNK;
        let state = sm.state();
        for i in 0..RUNS {
            let run = state.run(&run_ref(i)).expect("read").expect("run");
            let console = state
                .console(&run_ref(i), 0, usize::MAX)
                .expect("console")
                .expect("run");
            assert_eq!(
                console.bytes.len() as u64,
                want,
                "life {life}, killed after {delay:?}: the console of {} is {} bytes, but {applied} \
                 entries applied make {want}: a commit was kept in part",
                run.name,
                console.bytes.len()
            );
            assert_eq!(
                run.log_len, want,
                "life {life}, killed after {delay:?}: {} holds {} bytes, but {applied} entries applied \
                 make {want}: a commit was kept in part",
                run.name, run.log_len
            );
        }
        longest = longest.max(want);
        drop((log, sm));
    }
    // The kills must have come while there was something to lose.
    assert!(
        longest >= 100 * CHUNK,
        "only {longest} bytes per run after 8 lives"
    );
}
