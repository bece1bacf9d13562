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
        Machine::on(State::open(&db, "state", None).expect("state"))
    }

    /// A machine whose large console chunks go to console files in `dir` (segments of `segment_bytes`).
    pub fn with_console_files(dir: &std::path::Path, segment_bytes: u64) -> Machine {
        let db = sled::Config::new().temporary(true).open().expect("sled");
        let files =
            crate::console_files::ConsoleFiles::open_with(dir, segment_bytes).expect("files");
        Machine::on(State::open(&db, "state", Some(std::sync::Arc::new(files))).expect("state"))
    }

    fn on(state: State) -> Machine {
        let mut m = Machine { state, index: 0 };
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

    /// Entries applied as one group (one commit) give the results and leave the state that applying
    /// them one commit each gives: each entry sees the changes of the entries before it (a console body
    /// still pending, a project created earlier in the group), a refused entry is rolled back alone, and a
    /// refused command inside a batch entry is rolled back without its batch (nested savepoints).
    #[test]
    fn a_group_of_entries_applies_like_its_entries_one_by_one() {
        let dirs = [
            tempfile::tempdir().expect("dir"),
            tempfile::tempdir().expect("dir"),
        ];
        let mut one_by_one = Machine::with_console_files(dirs[0].path(), 1 << 20);
        let mut grouped = Machine::with_console_files(dirs[1].path(), 1 << 20);
        let mut leases = Vec::new();
        for m in [&mut one_by_one, &mut grouped] {
            m.apply(Command::CreateBuild(new_build(&["a", "b"])));
            leases.push((m.assign(1, "a"), m.assign(1, "b")));
        }
        assert_eq!(leases[0], leases[1]);
        let (fa, fb) = leases[0];
        let body = text(40_000, 3); // over `console_files::MIN_BYTES`: a console body
        let project = |name: &str| Command::CreateProject {
            name: name.into(),
            synchronous_builds: false,
            now: 4,
        };
        let commands = vec![
            append(1, "a", fa, 0, "hello "),
            append(1, "a", fa, 99, "gap"),
            Command::Batch(vec![
                append(1, "b", fb, 0, "other"),
                append(1, "b", fb, 50, "gap"),
                append(1, "b", fb, 5, " side"),
            ]),
            append(1, "a", fa, 6, &body),
            append(1, "a", fa, 6 + body.len() as u64, "after the body"),
            project("q"),
            project("q"),
        ];
        let expected: Vec<CommandResult> = commands
            .iter()
            .map(|c| one_by_one.apply(c.clone()))
            .collect();
        assert!(matches!(
            expected[1],
            CommandResult::Rejected(StateError::OffsetGap { .. })
        ));
        assert!(matches!(
            &expected[2],
            CommandResult::Batch(r) if matches!(r[1], CommandResult::Rejected(StateError::OffsetGap { .. }))
                && matches!(r[2], CommandResult::RunUpdated { log_len: 10, .. })
        ));
        assert!(matches!(
            expected[4],
            CommandResult::RunUpdated { log_len, .. } if log_len == 6 + body.len() as u64 + 14
        ));
        assert!(matches!(
            expected[6],
            CommandResult::Rejected(StateError::AlreadyExists(_))
        ));

        let mut group = grouped.state.group();
        for (n, c) in commands.iter().enumerate() {
            group
                .add(grouped.index + 1 + n as u64, Some(c), vec![])
                .expect("add");
        }
        let prepared = group.finish().expect("finish");
        assert!(prepared.needs_sync(), "the body went to the console files");
        grouped.state.sync_console_files().expect("sync");
        let results = grouped.state.commit(prepared).expect("commit");
        assert_eq!(results, expected);
        assert_eq!(contents(&grouped), contents(&one_by_one));
        let console = grouped
            .state
            .console(&run_ref(1, "a"), 0, 1 << 20)
            .expect("read")
            .expect("run");
        assert_eq!(
            console.bytes,
            format!("hello {body}after the body").as_bytes()
        );
    }

    /// A large append is stored in pieces (`console::CONSOLE_PIECE`, for sled's leaves) and reads back
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

    fn run_ref(build: u64, run: &str) -> crate::model::RunRef {
        crate::model::RunRef {
            project: "p".into(),
            build,
            run: run.into(),
        }
    }

    fn text(len: usize, seed: u8) -> String {
        (0..len)
            .map(|i| {
                if i % 80 == 79 {
                    '\n'
                } else {
                    (b'a' + ((i + seed as usize) % 26) as u8) as char
                }
            })
            .collect()
    }

    /// Console chunks of `console_files::MIN_BYTES` or more go to the console files (a ref in the tree),
    /// smaller ones stay in the tree; they read back exactly as on a node that keeps every chunk in the
    /// tree, and leave the node (snapshots, backups: `State::export`) as the very pairs that node holds.
    #[test]
    fn large_chunks_go_to_console_files_and_leave_the_node_as_the_same_pairs() {
        let dir = tempfile::tempdir().expect("dir");
        let mut plain = Machine::new();
        let mut files = Machine::with_console_files(dir.path(), 50_000);
        let a_text = text(70_000, 0);
        let b_text = text(20_100, 7);
        let mut results = Vec::new();
        for m in [&mut plain, &mut files] {
            m.apply(Command::CreateBuild(new_build(&["a", "b"])));
            let (fa, fb) = (m.assign(1, "a"), m.assign(1, "b"));
            results.push(vec![
                m.apply(append(1, "a", fa, 0, &a_text[..65_536])),
                // A retry that overlaps what is stored: only its 4,464 new bytes are new (they stay in the tree).
                m.apply(append(1, "a", fa, 60_000, &a_text[60_000..])),
                m.apply(append(1, "b", fb, 0, &b_text[..20_000])),
                m.apply(append(1, "b", fb, 20_000, &b_text[20_000..])),
                // A gap: refused, and its bytes are stored nowhere.
                m.apply(append(1, "b", fb, 900_000, &a_text[..30_000])),
            ]);
        }
        assert_eq!(results[0], results[1]);
        assert!(matches!(
            results[1][4],
            CommandResult::Rejected(StateError::OffsetGap { .. })
        ));
        let ref_keys: Vec<String> = contents(&files)
            .into_iter()
            .map(|(k, _)| String::from_utf8_lossy(&k).into_owned())
            .filter(|k| k.starts_with("l/") && k.ends_with('r'))
            .collect();
        assert_eq!(
            ref_keys,
            [
                "l/p/00000000000000000001/a/00000000000000000000r",
                "l/p/00000000000000000001/b/00000000000000000000r"
            ]
        );
        // 65,536 bytes filled the first 50,000-byte segment; the second body started segment 2.
        let console = files.state.console_files().expect("files").clone();
        assert_eq!(console.segment_numbers(), [1, 2]);
        for (run, full) in [("a", &a_text), ("b", &b_text)] {
            for offset in [
                0usize, 1, 6_144, 19_999, 20_000, 20_099, 65_535, 65_536, 69_999,
            ] {
                for max in [100usize, 1 << 20] {
                    let read = |m: &Machine| {
                        m.state
                            .console(&run_ref(1, run), offset as u64, max)
                            .expect("read")
                            .expect("run")
                            .bytes
                    };
                    let expected = full
                        .as_bytes()
                        .get(offset..(offset + max).min(full.len()))
                        .unwrap_or_default();
                    assert_eq!(read(&files), expected, "{run} from {offset}, {max}");
                    assert_eq!(read(&plain), expected, "{run} from {offset}, {max}");
                }
            }
        }
        let (leaving, _) = files.state.export().expect("export");
        assert!(
            leaving == contents(&plain),
            "pairs differ from a plain node's"
        );
    }

    /// A snapshot installed on a node with console files (`State::import`): the pieces an export made of a
    /// ref go back into the console files as one ref (consecutive refs of a run as one, at most
    /// `MAX_PIECES_PER_REF` pieces each); the pieces of small appends stay in the tree; every other pair is
    /// untouched; the console reads back the same; and the node exports the very pairs it imported.
    #[test]
    fn an_imported_snapshot_puts_exported_refs_back_into_console_files_and_exports_the_same_pairs()
    {
        let dir = tempfile::tempdir().expect("dir");
        let mut source = Machine::with_console_files(&dir.path().join("source"), 1 << 20);
        source.apply(Command::CreateBuild(new_build(&["a", "b", "c"])));
        let (fa, fb, fc) = (
            source.assign(1, "a"),
            source.assign(1, "b"),
            source.assign(1, "c"),
        );
        // a: a ref, two small pieces, a ref of exactly 3 pieces and a ref right after it.
        let a = text(128_432, 1);
        for (from, to) in [
            (0, 70_000),
            (70_000, 80_000),
            (80_000, 98_432),
            (98_432, 128_432),
        ] {
            source.apply(append(1, "a", fa, from as u64, &a[from..to]));
        }
        // b: only small appends (one piece each).
        let b = text(15_000, 2);
        for from in (0..15_000).step_by(3_000) {
            source.apply(append(1, "b", fb, from as u64, &b[from..from + 3_000]));
        }
        // c: 300 whole pieces in a row, more than one ref may stand for.
        let c = text(300 * 6_144, 3);
        for from in (0..c.len()).step_by(100 * 6_144) {
            source.apply(append(
                1,
                "c",
                fc,
                from as u64,
                &c[from..from + 100 * 6_144],
            ));
        }
        let (pairs, _) = source.state.export().expect("export");

        let db = sled::Config::new().temporary(true).open().expect("sled");
        let files =
            crate::console_files::ConsoleFiles::open_with(&dir.path().join("target"), 1 << 20)
                .expect("files");
        let target = crate::state::State::open(&db, "state", Some(std::sync::Arc::new(files)))
            .expect("state");
        let imported = target.import(pairs.clone()).expect("import");
        let mut batch = sled::Batch::default();
        for (k, v) in imported.clone() {
            batch.insert(k, v);
        }
        target.tree().apply_batch(batch).expect("apply");

        let refs: Vec<String> = imported
            .iter()
            .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
            .filter(|k| k.starts_with("l/") && k.ends_with('r'))
            .collect();
        assert_eq!(
            refs,
            [
                "l/p/00000000000000000001/a/00000000000000000000r",
                "l/p/00000000000000000001/a/00000000000000080000r",
                "l/p/00000000000000000001/c/00000000000000000000r",
                "l/p/00000000000000000001/c/00000000000001572864r",
            ]
        );
        let others = |pairs: &[(Vec<u8>, Vec<u8>)]| -> Vec<(Vec<u8>, Vec<u8>)> {
            pairs
                .iter()
                .filter(|(k, _)| !k.starts_with(b"l/"))
                .cloned()
                .collect()
        };
        assert!(
            others(&imported) == others(&pairs),
            "non-console pairs changed"
        );
        // b's five pieces and a's two small ones stayed in the tree as they were.
        let inline = imported
            .iter()
            .filter(|(k, _)| k.starts_with(b"l/") && !k.ends_with(b"r"))
            .count();
        assert_eq!(inline, 5 + 2);
        for (run, full) in [("a", &a), ("b", &b), ("c", &c)] {
            for offset in [
                0usize, 1, 6_144, 69_999, 70_000, 80_000, 98_431, 1_572_864, 1_843_199,
            ] {
                let read = target
                    .console(&run_ref(1, run), offset as u64, 100_000)
                    .expect("read")
                    .expect("run")
                    .bytes;
                let expected = full
                    .as_bytes()
                    .get(offset..(offset + 100_000).min(full.len()))
                    .unwrap_or_default();
                assert_eq!(read, expected, "{run} from {offset}");
            }
        }
        let (leaving, _) = target.export().expect("export");
        assert!(leaving == pairs, "the installed node exports other pairs");

        // A node without console files takes the pairs as they are.
        let plain = crate::state::State::open(&db, "plain", None).expect("state");
        assert!(plain.import(pairs.clone()).expect("import") == pairs);
    }

    /// Segments nobody refers to any more (deleted builds, reruns) are deleted by the sweep; a referenced
    /// one and the one being written are kept.
    #[test]
    fn the_sweep_deletes_console_files_once_no_run_refers_to_them() {
        let dir = tempfile::tempdir().expect("dir");
        let mut m = Machine::with_console_files(dir.path(), 30_000);
        m.apply(Command::CreateBuild(new_build(&["a"])));
        m.apply(Command::CreateBuild(new_build(&["b"])));
        let (fa, fb) = (m.assign(1, "a"), m.assign(2, "b"));
        let big = text(40_000, 3);
        m.apply(append(1, "a", fa, 0, &big)); // segment 1
        m.apply(append(2, "b", fb, 0, &big)); // segment 2
        m.apply(append(1, "a", fa, 40_000, &big)); // segment 3
        let console = m.state.console_files().expect("files").clone();
        assert_eq!(console.segment_numbers(), [1, 2, 3]);
        assert_eq!(m.state.sweep_console_files().expect("sweep"), 0);
        m.complete(1, "a", fa);
        assert_eq!(
            m.apply(Command::DeleteBuilds {
                project: "p".into(),
                numbers: vec![1],
            }),
            CommandResult::BuildsDeleted(vec![1])
        );
        // Build 1 held segments 1 and 3; 3 is being written, so only 1 goes.
        assert_eq!(m.state.sweep_console_files().expect("sweep"), 1);
        assert_eq!(console.segment_numbers(), [2, 3]);
        assert_eq!(
            m.state
                .console(&run_ref(2, "b"), 0, 1 << 20)
                .expect("read")
                .expect("run")
                .bytes,
            big.as_bytes()
        );
    }
}
