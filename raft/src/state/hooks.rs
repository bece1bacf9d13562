//! Applying and reading the trigger records of `crate::hooks`: builds created with hooks (and a poller's
//! compare-and-set), chains fired into an existing build, duty markers, poller refs. Invariants are in
//! `crate::hooks`; this file only keeps them.
use super::apply::{create_build, put_run, refresh_build_status};
use super::keys;
use super::txn::Txn;
use super::{validate_name, State, StateResult};
use crate::codec;
use crate::command::{CommandResult, NewBuild, StateError};
use crate::hooks::{run_chain_marker, BuildHooks, PollAdvance, BUILD_CHAIN, FINAL};
use crate::model::{Build, Run};
use jobserv_protocol::project::TriggerRef;
use jobserv_protocol::{RunDef, RunStatus};
use std::collections::BTreeMap;

type Outcome = Result<CommandResult, StateError>;

pub(super) fn create_build_ext(
    txn: &mut Txn,
    log_index: u64,
    nb: &NewBuild,
    hooks: Option<&BuildHooks>,
    advance: Option<&PollAdvance>,
) -> StateResult<Outcome> {
    if let Some(adv) = advance {
        let key = keys::poller_refs(&adv.project, adv.trigger);
        let mut seen: BTreeMap<String, String> = txn.get(&key)?.unwrap_or_default();
        if seen.get(&adv.key) != adv.old.as_ref() {
            return Ok(Err(StateError::Invalid(format!(
                "{} moved already (seen {:?}, expected {:?})",
                adv.key,
                seen.get(&adv.key),
                adv.old
            ))));
        }
        seen.insert(adv.key.clone(), adv.new.clone());
        txn.put(key, &seen)?;
    }
    let outcome = create_build(txn, log_index, nb)?;
    let (Ok(CommandResult::BuildCreated { number }), Some(hooks)) = (&outcome, hooks) else {
        return Ok(outcome);
    };
    txn.put(keys::build_hooks(&nb.project, *number), hooks)?;
    txn.put(keys::open_hooks(&nb.project, *number), &())?;
    Ok(outcome)
}

#[allow(clippy::too_many_arguments)] // the fields of `Command::FireChain`, one to one
pub(super) fn fire_chain(
    txn: &mut Txn,
    log_index: u64,
    project: &str,
    number: u64,
    marker: &str,
    runs: &[RunDef],
    run_chains: &BTreeMap<String, Vec<TriggerRef>>,
    now: u64,
) -> StateResult<Outcome> {
    let hooks_key = keys::build_hooks(project, number);
    let Some(mut hooks) = txn.get::<BuildHooks>(&hooks_key)? else {
        return Ok(Err(StateError::NotFound(format!(
            "hooks of build {project}/{number}"
        ))));
    };
    if hooks.done.contains(marker) {
        return Ok(Ok(CommandResult::Done)); // fired already: proposing twice is harmless
    }
    let build_key = keys::build(project, number);
    let Some(mut build) = txn.get::<Build>(&build_key)? else {
        return Ok(Err(StateError::NotFound(format!(
            "build {project}/{number}"
        ))));
    };
    for (position, def) in runs.iter().enumerate() {
        if let Err(e) = validate_name("run", &def.run) {
            return Ok(Err(e));
        }
        let run_ref = crate::model::RunRef {
            project: project.into(),
            build: number,
            run: def.run.clone(),
        };
        if txn.get_raw(&keys::run(&run_ref))?.is_some() {
            continue; // JobServ would fail the whole chain; a started run is never replaced
        }
        let mut definition = def.clone();
        definition.build = number;
        definition.env.insert("H_BUILD".into(), number.to_string());
        let queue_seq = (log_index << 16) | position as u64;
        let run = Run {
            project: project.into(),
            build: number,
            name: def.run.clone(),
            status: RunStatus::Queued,
            host_tag: def.host_tag.clone(),
            queue_priority: build.queue_priority,
            queue_seq,
            definition,
            worker: None,
            fence: 0,
            log_len: 0,
            created: now,
            started: None,
            completed: None,
            cancelled: false,
            failure_reason: None,
            metadata: None,
        };
        super::queue::enqueue(txn, &run)?;
        put_run(txn, None, &run)?;
        build.run_names.push(def.run.clone());
        if let Some(chain) = run_chains.get(&def.run) {
            hooks.run_chains.insert(def.run.clone(), chain.clone());
        }
    }
    if !runs.is_empty() {
        build.completed = None;
        txn.put(build_key, &build)?;
    }
    hooks.done.insert(marker.to_string());
    txn.put(hooks_key, &hooks)?;
    refresh_build_status(txn, project, number, now)?;
    Ok(Ok(CommandResult::Done))
}

pub(super) fn mark_build(
    txn: &mut Txn,
    project: &str,
    number: u64,
    marker: &str,
) -> StateResult<Outcome> {
    let key = keys::build_hooks(project, number);
    let Some(mut hooks) = txn.get::<BuildHooks>(&key)? else {
        return Ok(Err(StateError::NotFound(format!(
            "hooks of build {project}/{number}"
        ))));
    };
    hooks.done.insert(marker.to_string());
    if marker == FINAL {
        txn.remove(keys::open_hooks(project, number));
    }
    txn.put(key, &hooks)?;
    Ok(Ok(CommandResult::Done))
}

pub(super) fn poller_seen(
    txn: &mut Txn,
    project: &str,
    trigger: u64,
    seen: &BTreeMap<String, String>,
    replace: bool,
) -> StateResult<Outcome> {
    if txn.get_raw(&keys::project(project))?.is_none() {
        return Ok(Err(StateError::NotFound(format!("project {project}"))));
    }
    let key = keys::poller_refs(project, trigger);
    let mut stored: BTreeMap<String, String> = txn.get(&key)?.unwrap_or_default();
    for (k, v) in seen {
        if replace {
            stored.insert(k.clone(), v.clone());
        } else {
            stored.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    txn.put(key, &stored)?;
    Ok(Ok(CommandResult::Done))
}

/// Whether a completed build still has a chain to start: a passed run whose chain has not fired, or every
/// run passed and the build's own chain has not fired. The build then stays RUNNING.
pub(super) fn chain_pending(txn: &Txn, project: &str, number: u64) -> StateResult<bool> {
    let Some(hooks) = txn.get::<BuildHooks>(&keys::build_hooks(project, number))? else {
        return Ok(false);
    };
    let mut all_passed = true;
    for (_, bytes) in txn.scan_prefix(&keys::runs_of_build(project, number))? {
        let run: Run = codec::decode(&bytes)?;
        let passed = run.status == RunStatus::Passed;
        all_passed &= passed;
        if passed
            && hooks.run_chains.contains_key(&run.name)
            && !hooks.done.contains(&run_chain_marker(&run.name))
        {
            return Ok(true);
        }
    }
    Ok(all_passed && !hooks.build_chain.is_empty() && !hooks.done.contains(BUILD_CHAIN))
}

impl State {
    pub fn build_hooks(&self, project: &str, number: u64) -> StateResult<Option<BuildHooks>> {
        match self.tree.get(keys::build_hooks(project, number))? {
            Some(bytes) => Ok(Some(codec::decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Builds whose hooks still have work to do, oldest first.
    pub fn open_hook_builds(&self) -> StateResult<Vec<(String, u64)>> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(keys::OPEN_HOOKS) {
            let (k, _) = item?;
            let rest = String::from_utf8_lossy(&k[keys::OPEN_HOOKS.len()..]).to_string();
            if let Some((project, number)) = rest.rsplit_once('/') {
                if let Ok(number) = number.parse() {
                    out.push((project.to_string(), number));
                }
            }
        }
        Ok(out)
    }

    /// The refs a git poller trigger last saw; `None` before its first look.
    pub fn poller_refs(
        &self,
        project: &str,
        trigger: u64,
    ) -> StateResult<Option<BTreeMap<String, String>>> {
        match self.tree.get(keys::poller_refs(project, trigger))? {
            Some(bytes) => Ok(Some(codec::decode(&bytes)?)),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Command;
    use crate::state::test_machine::{new_build, rundef, Machine};

    #[test]
    fn a_pending_chain_keeps_the_build_running_and_fires_once() {
        let mut m = Machine::new();
        let chain = vec![TriggerRef {
            name: "test".into(),
            run_names: None,
        }];
        let hooks = BuildHooks {
            run_chains: BTreeMap::from([("a".to_string(), chain)]),
            ..Default::default()
        };
        assert_eq!(
            m.apply(Command::CreateBuildExt {
                build: new_build(&["a"]),
                hooks: Some(hooks),
                advance: None
            }),
            CommandResult::BuildCreated { number: 1 }
        );
        assert_eq!(m.state.open_hook_builds().unwrap(), [("p".to_string(), 1)]);
        m.pass(1, "a");
        assert_eq!(
            m.status(1),
            RunStatus::Running,
            "a passed run with an unfired chain keeps the build running"
        );

        let fire = Command::FireChain {
            project: "p".into(),
            build: 1,
            marker: run_chain_marker("a"),
            runs: vec![rundef("a-test")],
            run_chains: BTreeMap::new(),
            now: 4,
        };
        assert_eq!(m.apply(fire.clone()), CommandResult::Done);
        assert_eq!(m.apply(fire), CommandResult::Done); // a second proposal adds nothing
        let runs = m.state.runs_of_build("p", 1).unwrap();
        assert_eq!(
            runs.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
            ["a", "a-test"]
        );
        assert_eq!(runs[1].definition.env["H_BUILD"], "1");
        m.pass(1, "a-test");
        assert_eq!(m.status(1), RunStatus::Passed);
        m.apply(Command::MarkBuild {
            project: "p".into(),
            build: 1,
            marker: FINAL.into(),
        });
        assert!(m.state.open_hook_builds().unwrap().is_empty());
    }

    #[test]
    fn a_polled_build_is_created_only_if_the_ref_still_moves_from_what_the_poller_saw() {
        let mut m = Machine::new();
        m.apply(Command::PollerSeen {
            project: "p".into(),
            trigger: 1,
            seen: BTreeMap::from([("k".to_string(), "old".to_string())]),
            replace: false,
        });
        let advance = |old: &str, new: &str| PollAdvance {
            project: "p".into(),
            trigger: 1,
            key: "k".into(),
            old: Some(old.into()),
            new: new.into(),
        };
        let first = Command::CreateBuildExt {
            build: new_build(&["a"]),
            hooks: None,
            advance: Some(advance("old", "new")),
        };
        assert_eq!(
            m.apply(first.clone()),
            CommandResult::BuildCreated { number: 1 }
        );
        // The same move proposed again (a retry, or a second poller) is refused and creates nothing.
        assert!(matches!(
            m.apply(first),
            CommandResult::Rejected(StateError::Invalid(_))
        ));
        assert!(m.state.build("p", 2).unwrap().is_none());
        assert_eq!(m.state.poller_refs("p", 1).unwrap().unwrap()["k"], "new");
        // `PollerSeen` without replace never moves a ref it already knows.
        m.apply(Command::PollerSeen {
            project: "p".into(),
            trigger: 1,
            seen: BTreeMap::from([("k".to_string(), "other".to_string())]),
            replace: false,
        });
        assert_eq!(m.state.poller_refs("p", 1).unwrap().unwrap()["k"], "new");
    }
}
