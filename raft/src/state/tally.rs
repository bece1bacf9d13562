//! Per-build run tallies (`keys::build_tally`): how many of a build's runs started, completed and failed.
//! `apply::put_run` keeps them with every change of a run's status, so deriving the build's status costs
//! two reads however many runs the build has (before, every assignment of a 100-run build decoded all 100
//! runs). Like the host-tag queues the tallies are derived state: recomputed from the runs when a store is
//! opened or a snapshot installed, so a store or snapshot from a release without them is never trusted.
use super::keys;
use super::txn::Txn;
use super::{State, StateResult};
use crate::codec;
use crate::model::{BuildTally, Run};
use std::collections::BTreeMap;

/// A build's tally as kept, or counted from its runs where none is kept yet.
pub(super) fn build_tally(txn: &Txn, project: &str, number: u64) -> StateResult<BuildTally> {
    if let Some(tally) = txn.get::<BuildTally>(&keys::build_tally(project, number))? {
        return Ok(tally);
    }
    let mut tally = BuildTally::default();
    for (_, bytes) in txn.scan_prefix(&keys::runs_of_build(project, number))? {
        tally.count(codec::decode::<Run>(&bytes)?.status, 1);
    }
    Ok(tally)
}

impl State {
    /// Recomputes every build's tally from its runs. Returns how many builds have runs.
    pub fn rebuild_build_tallies(&self) -> StateResult<usize> {
        let tree = self.tree();
        let mut tallies: BTreeMap<Vec<u8>, BuildTally> = BTreeMap::new();
        for item in tree.scan_prefix(b"r/") {
            let (_, v) = item?;
            let run: Run = codec::decode(&v)?;
            tallies
                .entry(keys::build_tally(&run.project, run.build))
                .or_default()
                .count(run.status, 1);
        }
        let mut batch = sled::Batch::default();
        for k in tree.scan_prefix(keys::BUILD_TALLIES).keys() {
            let k = k?;
            if !tallies.contains_key(k.as_ref()) {
                batch.remove(k);
            }
        }
        for (k, tally) in &tallies {
            batch.insert(k.as_slice(), codec::encode(tally)?);
        }
        tree.apply_batch(batch)?;
        Ok(tallies.len())
    }

    /// Recomputes all derived indexes (host-tag queues, build tallies): on open and after a snapshot
    /// install.
    pub fn rebuild_derived(&self) -> StateResult<()> {
        self.rebuild_tag_queues()?;
        self.rebuild_build_tallies()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Command, CommandResult};
    use crate::model::RunRef;
    use crate::state::test_machine::{new_build, Machine};
    use jobserv_protocol::RunStatus;

    fn tallies(m: &Machine) -> Vec<(Vec<u8>, BuildTally)> {
        m.state
            .tree()
            .scan_prefix(keys::BUILD_TALLIES)
            .map(|kv| {
                let (k, v) = kv.expect("scan");
                (k.to_vec(), codec::decode(&v).expect("decode"))
            })
            .collect()
    }

    #[test]
    fn kept_tallies_equal_a_rebuild_and_drive_the_build_status() {
        let mut m = Machine::new();
        m.apply(Command::CreateBuild(new_build(&["a", "b", "c"])));
        m.apply(Command::CreateBuild(new_build(&["a", "b"])));
        let run = |build, name: &str| RunRef {
            project: "p".into(),
            build,
            run: name.into(),
        };
        m.apply(Command::CancelRun {
            run: run(1, "a"),
            now: 2,
        });
        let kept = tallies(&m);
        assert_eq!(kept.len(), 2);
        let first = kept[0].1;
        assert_eq!(
            (first.runs, first.started, first.complete, first.failed),
            (3, 1, 1, 1)
        );
        assert_eq!(
            m.state.build("p", 1).expect("read").expect("build").status,
            RunStatus::Running
        );
        m.apply(Command::RerunRun {
            run: run(1, "a"),
            now: 3,
        });
        assert_eq!(
            tallies(&m)[0].1,
            BuildTally {
                runs: 3,
                ..Default::default()
            }
        );
        for name in ["a", "b", "c"] {
            m.apply(Command::CancelRun {
                run: run(1, name),
                now: 4,
            });
        }
        assert_eq!(
            m.state.build("p", 1).expect("read").expect("build").status,
            RunStatus::Failed
        );

        // A rebuild (as on open) gives exactly what apply kept, and removes a stale leftover.
        let kept = tallies(&m);
        m.state
            .tree()
            .insert(
                keys::build_tally("p", 99),
                codec::encode(&BuildTally::default()).expect("encode"),
            )
            .expect("insert");
        m.state
            .tree()
            .remove(keys::build_tally("p", 2))
            .expect("remove");
        assert_eq!(m.state.rebuild_build_tallies().expect("rebuild"), 2);
        assert_eq!(tallies(&m), kept);

        // Deleting the build takes its tally with it.
        let deleted = m.apply(Command::DeleteBuilds {
            project: "p".into(),
            numbers: vec![1],
        });
        assert!(
            matches!(deleted, CommandResult::BuildsDeleted(ref d) if d == &[1]),
            "{deleted:?}"
        );
        assert_eq!(tallies(&m).len(), 1);
    }
}
