//! A state machine driven command by command, for the state's unit tests: project `p`, enlisted worker `w`
//! with host tag `h`.
use crate::command::{Command, CommandResult, NewBuild, RunUpdate};
use crate::model::{RunRef, WorkerFacts};
use crate::state::State;
use jobserv_protocol::{RunDef, RunStatus};
use std::collections::BTreeMap;

pub fn rundef(name: &str) -> RunDef {
    serde_json::from_value(serde_json::json!({"version": 1, "project": "p", "build": 0, "run": name, "timeout": 5,
        "run_url": "", "frontend_url": "", "runner_url": "", "trigger_type": "simple", "container": "c", "host-tag": "h"}))
    .expect("rundef")
}

pub fn new_build(runs: &[&str]) -> Box<NewBuild> {
    Box::new(NewBuild {
        project: "p".into(),
        trigger_name: "t".into(),
        trigger_type: "simple".into(),
        reason: None,
        params: BTreeMap::new(),
        secrets: BTreeMap::new(),
        queue_priority: 0,
        definition: String::new(),
        runs: runs.iter().map(|r| rundef(r)).collect(),
        now: 1,
    })
}

pub struct Machine {
    pub state: State,
    pub index: u64,
}

impl Machine {
    pub fn new() -> Machine {
        let db = sled::Config::new().temporary(true).open().expect("sled");
        let mut m = Machine {
            state: State::new(db.open_tree("state").expect("tree")),
            index: 0,
        };
        m.apply(Command::CreateProject {
            name: "p".into(),
            synchronous_builds: false,
            now: 1,
        });
        let facts = WorkerFacts {
            host_tags: vec!["h".into()],
            concurrent_runs: 4,
            ..Default::default()
        };
        m.apply(Command::RegisterWorker {
            name: "w".into(),
            key_hash: "k".into(),
            facts,
            now: 1,
        });
        m.apply(Command::UpdateWorker {
            name: "w".into(),
            enlisted: Some(true),
            facts: None,
        });
        m
    }

    pub fn apply(&mut self, cmd: Command) -> CommandResult {
        self.index += 1;
        self.state
            .apply(self.index, Some(&cmd), vec![])
            .expect("apply")
    }

    /// Hands run `run` of build `build` to worker `w`; returns the lease's fencing token.
    pub fn assign(&mut self, build: u64, run: &str) -> u64 {
        let r = RunRef {
            project: "p".into(),
            build,
            run: run.into(),
        };
        let CommandResult::Assigned(assigned) = self.apply(Command::AssignRuns {
            worker: "w".into(),
            runs: vec![r],
            now: 2,
        }) else {
            panic!("not assigned")
        };
        assigned[0].1
    }

    /// Completes an assigned run as PASSED.
    pub fn complete(&mut self, build: u64, run: &str, fence: u64) {
        let update = RunUpdate {
            run: RunRef {
                project: "p".into(),
                build,
                run: run.into(),
            },
            fence,
            offset: 0,
            console: vec![],
            status: Some(RunStatus::Passed),
            metadata: None,
            failure_reason: None,
            now: 3,
        };
        assert!(matches!(
            self.apply(Command::UpdateRun(Box::new(update))),
            CommandResult::RunUpdated { .. }
        ));
    }

    pub fn pass(&mut self, build: u64, run: &str) {
        let fence = self.assign(build, run);
        self.complete(build, run, fence);
    }

    pub fn status(&self, build: u64) -> RunStatus {
        self.state
            .build("p", build)
            .expect("read")
            .expect("build")
            .status
    }
}

#[cfg(test)]
mod tests {
    use super::{new_build, Machine};
    use crate::command::{Command, CommandResult, StateError};

    /// A worker is deleted only when it holds no run; afterwards its name can be registered afresh.
    #[test]
    fn delete_worker_refuses_while_it_holds_a_run() {
        let mut m = Machine::new();
        m.apply(Command::CreateBuild(new_build(&["a"])));
        let fence = m.assign(1, "a");
        let refused = m.apply(Command::DeleteWorker { name: "w".into() });
        assert!(
            matches!(&refused, CommandResult::Rejected(StateError::Invalid(msg)) if msg.contains("holds 1 run")),
            "{refused:?}"
        );
        assert!(m.state.worker("w").expect("read").is_some());
        m.complete(1, "a", fence);
        assert_eq!(
            m.apply(Command::DeleteWorker { name: "w".into() }),
            CommandResult::Done
        );
        assert!(m.state.worker("w").expect("read").is_none());
        assert!(matches!(
            m.apply(Command::DeleteWorker { name: "w".into() }),
            CommandResult::Rejected(StateError::NotFound(_))
        ));
    }

    fn append(build: u64, run: &str, fence: u64, offset: u64, text: &str) -> Command {
        Command::UpdateRun(Box::new(crate::command::RunUpdate {
            run: crate::model::RunRef {
                project: "p".into(),
                build,
                run: run.into(),
            },
            fence,
            offset,
            console: text.as_bytes().to_vec(),
            status: None,
            metadata: None,
            failure_reason: None,
            now: 3,
        }))
    }

    /// Every (key, value) of the state tree (`Machine::apply` writes no per-entry bookkeeping to compare).
    fn contents(m: &Machine) -> Vec<(Vec<u8>, Vec<u8>)> {
        m.state
            .tree()
            .iter()
            .map(|kv| kv.expect("read"))
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect()
    }

    /// A batch in one entry leaves exactly the state its commands leave one entry each, with the same
    /// results; a refused command inside changes nothing and the others still apply; a command that may
    /// not be batched is refused.
    #[test]
    fn a_batch_applies_like_its_commands_one_by_one() {
        let setup = |m: &mut Machine| {
            m.apply(Command::CreateBuild(new_build(&["a", "b"])));
            (m.assign(1, "a"), m.assign(1, "b"))
        };
        let commands = |fa: u64, fb: u64| {
            vec![
                append(1, "a", fa, 0, "hello "),
                append(1, "b", fb, 0, "other"),
                append(1, "a", fa, 99, "gap"), // refused: offset gap
                append(1, "a", fa + 1, 6, "fence"), // refused: stale fence
                append(1, "a", fa, 6, "world"),
                append(1, "a", fa, 0, "hello "), // a retry of stored bytes: accepted, nothing added
            ]
        };
        let mut one_by_one = Machine::new();
        let (fa, fb) = setup(&mut one_by_one);
        let expected: Vec<CommandResult> = commands(fa, fb)
            .into_iter()
            .map(|c| one_by_one.apply(c))
            .collect();
        assert!(matches!(
            expected[2],
            CommandResult::Rejected(StateError::OffsetGap { .. })
        ));
        assert!(matches!(
            expected[3],
            CommandResult::Rejected(StateError::Fenced { .. })
        ));

        let mut batched = Machine::new();
        assert_eq!(setup(&mut batched), (fa, fb));
        let mut cmds = commands(fa, fb);
        cmds.push(Command::Noop);
        let CommandResult::Batch(results) = batched.apply(Command::Batch(cmds)) else {
            panic!("not a batch result")
        };
        assert_eq!(results[..6], expected[..]);
        assert!(
            matches!(&results[6], CommandResult::Rejected(StateError::Invalid(m)) if m.contains("batch"))
        );
        assert_eq!(contents(&batched), contents(&one_by_one));
        let console = batched
            .state
            .console(
                &crate::model::RunRef {
                    project: "p".into(),
                    build: 1,
                    run: "a".into(),
                },
                0,
                1 << 20,
            )
            .expect("read")
            .expect("run");
        assert_eq!(console.bytes, b"hello world");
    }

    /// A large append is stored in pieces (`apply::CONSOLE_PIECE`, for sled's leaves) and reads back
    /// exactly from any offset, across pieces and across appends; a retry overlapping stored bytes adds
    /// only the new part.
    #[test]
    fn a_large_append_is_stored_in_pieces_and_reads_back_from_any_offset() {
        let mut m = Machine::new();
        m.apply(Command::CreateBuild(new_build(&["a"])));
        let fence = m.assign(1, "a");
        let text: String = (0..70_000u32)
            .map(|i| {
                if i % 80 == 79 {
                    '\n'
                } else {
                    (b'a' + (i % 26) as u8) as char
                }
            })
            .collect();
        for (offset, part) in [(0usize, &text[..65_536]), (60_000, &text[60_000..])] {
            assert!(matches!(
                m.apply(append(1, "a", fence, offset as u64, part)),
                CommandResult::RunUpdated { log_len, .. } if log_len == (offset + part.len()) as u64
            ));
        }
        let run = crate::model::RunRef {
            project: "p".into(),
            build: 1,
            run: "a".into(),
        };
        let pieces = m
            .state
            .tree()
            .scan_prefix(crate::state::keys::console_of(&run))
            .map(|kv| kv.expect("read").1.len())
            .collect::<Vec<_>>();
        assert!(pieces.iter().all(|&len| len <= 6 << 10), "{pieces:?}");
        assert_eq!(pieces.iter().sum::<usize>(), 70_000);
        assert_eq!(pieces.len(), 11 + 1, "{pieces:?}"); // 64 KiB in 11 pieces, then 4,464 new bytes
        for offset in [
            0usize, 1, 6143, 6144, 6145, 30_000, 65_535, 65_536, 69_999, 70_000,
        ] {
            let slice = m
                .state
                .console(&run, offset as u64, 1 << 20)
                .expect("read")
                .expect("run");
            assert_eq!(slice.bytes, text.as_bytes()[offset..], "from {offset}");
            let short = m
                .state
                .console(&run, offset as u64, 100)
                .expect("read")
                .expect("run");
            assert_eq!(
                short.bytes,
                text.as_bytes()[offset..(offset + 100).min(70_000)]
            );
        }
    }

    /// A login link works once, and not after it expired.
    #[test]
    fn login_links_work_once() {
        let mut m = Machine::new();
        let add = |hash: &str, expires| Command::AddLoginLink {
            hash: hash.into(),
            token_hash: "t".into(),
            expires,
            now: 10,
        };
        assert_eq!(m.apply(add("a", 100)), CommandResult::Done);
        let use_link = |hash: &str, now| Command::UseLoginLink {
            hash: hash.into(),
            now,
        };
        assert_eq!(
            m.apply(use_link("a", 50)),
            CommandResult::LoginLink {
                token_hash: "t".into()
            }
        );
        assert!(matches!(
            m.apply(use_link("a", 50)),
            CommandResult::Rejected(StateError::NotFound(_))
        ));
        assert_eq!(m.apply(add("b", 20)), CommandResult::Done);
        assert!(matches!(
            m.apply(use_link("b", 30)),
            CommandResult::Rejected(StateError::Invalid(_))
        ));
    }
}
