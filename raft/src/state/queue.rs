//! The run queue and the choice of what a checking-in worker takes.
//!
//! Two indexes hold every QUEUED run, both ordered by priority (higher first), then creation:
//! - `q/<priority>/<seq>`: the whole queue (UI, metrics, queue reasons);
//! - `Q/<host-tag>\0<priority>/<seq>`: one queue per host-tag pattern, so that an assignment reads only the
//!   heads of the queues its worker matches (a merge of a few sorted cursors), however deep the queue is.
//!
//! `Q/` is derived from `q/` and the runs: `enqueue`/`dequeue` keep both in the same write set, and
//! `rebuild_tag_queues` recomputes it from scratch when a store is opened or a snapshot installed (a
//! snapshot or a store written by a release without `Q/` then still gets a true index).
//!
//! `pick` is deterministic (state and worker record only) because the state machine runs it when it
//! applies `AssignNext`; the node runs the same function on its applied state first, to skip proposing
//! when nothing would be assigned.
use super::keys;
use super::txn::Txn;
use super::{State, StateResult};
use crate::codec;
use crate::model::{Build, Project, Run, RunRef, Worker};
use std::collections::HashMap;

/// Queue length from which `surges_only` workers join in.
pub const SURGE_QUEUE_LENGTH: usize = 10;
/// At most this many queue entries are examined per pick (entries held back by a synchronous project's
/// older build are skipped, not taken): bounds the work of one check-in whatever the queue holds.
pub const MAX_EXAMINED: usize = 2_000;

/// Does the run's `host-tag` glob (case-insensitive, `*` and `?`) match the worker's name or a tag?
pub fn host_tag_matches(pattern: &str, worker: &Worker) -> bool {
    let pattern = pattern.to_lowercase();
    std::iter::once(&worker.name)
        .chain(worker.facts.host_tags.iter())
        .any(|candidate| glob_match::glob_match(&pattern, &candidate.to_lowercase()))
}

/// Puts a QUEUED run (its `queue_priority` and `queue_seq` set) into both indexes.
pub(super) fn enqueue(txn: &mut Txn, run: &Run) -> StateResult<()> {
    let run_ref = run.run_ref();
    txn.put(
        keys::queue_entry(run.queue_priority, run.queue_seq),
        &run_ref,
    )?;
    txn.put(
        keys::tag_queue_entry(&run.host_tag, run.queue_priority, run.queue_seq),
        &run_ref,
    )
}

/// Takes a run out of both indexes (it is assigned, cancelled or deleted).
pub(super) fn dequeue(txn: &mut Txn, run: &Run) {
    txn.remove(keys::queue_entry(run.queue_priority, run.queue_seq));
    txn.remove(keys::tag_queue_entry(
        &run.host_tag,
        run.queue_priority,
        run.queue_seq,
    ));
}

/// What `pick` reads: the applied state (a node's pre-check) or a write set (the state machine).
pub trait QueueSource {
    fn raw(&self, key: &[u8]) -> StateResult<Option<Vec<u8>>>;
    /// The first entry with a key `>= from` that starts with `prefix`.
    fn first_from(&self, from: &[u8], prefix: &[u8]) -> StateResult<Option<(Vec<u8>, Vec<u8>)>>;

    fn value<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> StateResult<Option<T>> {
        match self.raw(key)? {
            Some(bytes) => Ok(Some(codec::decode(&bytes)?)),
            None => Ok(None),
        }
    }
}

impl QueueSource for State {
    fn raw(&self, key: &[u8]) -> StateResult<Option<Vec<u8>>> {
        Ok(self.tree().get(key)?.map(|v| v.to_vec()))
    }

    fn first_from(&self, from: &[u8], prefix: &[u8]) -> StateResult<Option<(Vec<u8>, Vec<u8>)>> {
        match self.tree().range(from.to_vec()..).next() {
            Some(item) => {
                let (k, v) = item?;
                Ok(k.starts_with(prefix).then(|| (k.to_vec(), v.to_vec())))
            }
            None => Ok(None),
        }
    }
}

impl QueueSource for Txn<'_> {
    fn raw(&self, key: &[u8]) -> StateResult<Option<Vec<u8>>> {
        self.get_raw(key)
    }

    fn first_from(&self, from: &[u8], prefix: &[u8]) -> StateResult<Option<(Vec<u8>, Vec<u8>)>> {
        self.first_at_or_after(from, prefix)
    }
}

/// The smallest key after `key` in sled's (bytewise) order.
fn after(key: &[u8]) -> Vec<u8> {
    let mut next = key.to_vec();
    next.push(0);
    next
}

/// One host-tag queue being merged: its prefix and its current head (order key, run).
struct Cursor {
    prefix: Vec<u8>,
    head: Option<(Vec<u8>, RunRef)>,
}

impl Cursor {
    fn advance_from(&mut self, src: &impl QueueSource, from: &[u8]) -> StateResult<()> {
        self.head = match src.first_from(from, &self.prefix)? {
            Some((k, v)) => Some((k, codec::decode(&v)?)),
            None => None,
        };
        Ok(())
    }

    /// The part of the key that orders runs across queues: `<inverted priority>/<seq>`.
    fn order(&self) -> Option<&[u8]> {
        self.head.as_ref().map(|(k, _)| &k[self.prefix.len()..])
    }
}

/// Up to `slots` queued runs for `worker`, in queue order, from the heads of the host-tag queues it
/// matches; runs of a synchronous project's later builds wait for its oldest unfinished build.
pub fn pick(src: &impl QueueSource, worker: &Worker, slots: usize) -> StateResult<Vec<RunRef>> {
    if !worker.enlisted || slots == 0 {
        return Ok(Vec::new());
    }
    if worker.facts.surges_only && queue_len_at_least(src, SURGE_QUEUE_LENGTH)? < SURGE_QUEUE_LENGTH
    {
        return Ok(Vec::new());
    }
    let mut cursors = matching_queues(src, worker)?;
    let mut gate = SyncGate::default();
    let mut picked = Vec::new();
    let mut examined = 0;
    while picked.len() < slots && examined < MAX_EXAMINED {
        // The cursor whose head comes first in queue order (few cursors: a linear scan beats a heap).
        let Some(best) = cursors
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.order().map(|o| (o, i)))
            .min()
            .map(|(_, i)| i)
        else {
            break;
        };
        let cursor = &mut cursors[best];
        let Some((key, run_ref)) = cursor.head.take() else {
            break;
        };
        examined += 1;
        if gate.admits(src, &run_ref)? {
            picked.push(run_ref);
        }
        cursor.advance_from(src, &after(&key))?;
    }
    Ok(picked)
}

/// How many runs are queued, counting no further than `limit`.
fn queue_len_at_least(src: &impl QueueSource, limit: usize) -> StateResult<usize> {
    let mut n = 0;
    let mut from = keys::QUEUE.to_vec();
    while n < limit {
        match src.first_from(&from, keys::QUEUE)? {
            Some((k, _)) => {
                n += 1;
                from = after(&k);
            }
            None => break,
        }
    }
    Ok(n)
}

/// A cursor at the head of every non-empty host-tag queue whose pattern matches `worker`. Skips from one
/// pattern to the next with one seek each, so the cost is the number of distinct patterns queued.
fn matching_queues(src: &impl QueueSource, worker: &Worker) -> StateResult<Vec<Cursor>> {
    let mut cursors = Vec::new();
    let mut from = keys::TAG_QUEUES.to_vec();
    while let Some((k, v)) = src.first_from(&from, keys::TAG_QUEUES)? {
        let rest = &k[keys::TAG_QUEUES.len()..];
        let Some(end) = rest.iter().position(|&b| b == 0) else {
            from = after(&k); // not ours: cannot happen, but never loop on it
            continue;
        };
        let prefix = k[..keys::TAG_QUEUES.len() + end + 1].to_vec();
        let pattern = String::from_utf8_lossy(&rest[..end]);
        // Past every key of this pattern: its prefix with the 0 separator raised to 1.
        let mut next = prefix.clone();
        if let Some(last) = next.last_mut() {
            *last = 1;
        }
        if host_tag_matches(&pattern, worker) {
            cursors.push(Cursor {
                prefix,
                head: Some((k.clone(), codec::decode(&v)?)),
            });
        }
        from = next;
    }
    Ok(cursors)
}

/// Synchronous projects run one build at a time: per project, the oldest build not yet complete (or none
/// for a project that is not synchronous), computed once per pick.
#[derive(Default)]
struct SyncGate {
    oldest: HashMap<String, Option<u64>>,
}

impl SyncGate {
    fn admits(&mut self, src: &impl QueueSource, run: &RunRef) -> StateResult<bool> {
        if !self.oldest.contains_key(&run.project) {
            let oldest = oldest_unfinished_build(src, run)?;
            self.oldest.insert(run.project.clone(), oldest);
        }
        Ok(self
            .oldest
            .get(&run.project)
            .copied()
            .flatten()
            .is_none_or(|oldest| run.build <= oldest))
    }
}

/// For a synchronous project: walking back from `run`'s build, the oldest build that is not complete.
fn oldest_unfinished_build(src: &impl QueueSource, run: &RunRef) -> StateResult<Option<u64>> {
    let Some(project) = src.value::<Project>(&keys::project(&run.project))? else {
        return Ok(None);
    };
    if !project.synchronous_builds {
        return Ok(None);
    }
    let mut oldest = run.build;
    let mut n = run.build;
    while n > 1 {
        n -= 1;
        match src.value::<Build>(&keys::build(&run.project, n))? {
            Some(b) if !b.status.is_complete() => oldest = n,
            _ => break,
        }
    }
    Ok(Some(oldest))
}

impl State {
    /// Recomputes the host-tag queues from the whole queue: on open and after a snapshot is installed.
    /// Returns how many runs are queued.
    pub fn rebuild_tag_queues(&self) -> StateResult<usize> {
        let tree = self.tree();
        let mut batch = sled::Batch::default();
        for k in tree.scan_prefix(keys::TAG_QUEUES).keys() {
            batch.remove(k?);
        }
        let mut queued = 0;
        for item in tree.scan_prefix(keys::QUEUE) {
            let (_, v) = item?;
            let run_ref: RunRef = codec::decode(&v)?;
            if let Some(run) = self.value::<Run>(&keys::run(&run_ref))? {
                batch.insert(
                    keys::tag_queue_entry(&run.host_tag, run.queue_priority, run.queue_seq),
                    v.to_vec(),
                );
                queued += 1;
            }
        }
        tree.apply_batch(batch)?;
        Ok(queued)
    }

    /// What `worker` would be given now (the node's pre-check before proposing `AssignNext`).
    pub fn pick_for(&self, worker: &Worker, slots: usize) -> StateResult<Vec<RunRef>> {
        pick(self, worker, slots)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Command, CommandResult, NewBuild};
    use crate::model::WorkerFacts;
    use crate::state::test_machine::{new_build, rundef, Machine};

    fn build_with(m: &mut Machine, priority: i32, runs: &[(&str, &str)]) -> u64 {
        let mut nb: Box<NewBuild> = new_build(&[]);
        nb.queue_priority = priority;
        nb.runs = runs
            .iter()
            .map(|(name, tag)| {
                let mut def = rundef(name);
                def.host_tag = tag.to_string();
                def
            })
            .collect();
        match m.apply(Command::CreateBuild(nb)) {
            CommandResult::BuildCreated { number } => number,
            other => panic!("{other:?}"),
        }
    }

    fn worker(m: &mut Machine, name: &str, tags: &[&str], surges_only: bool) -> Worker {
        let facts = WorkerFacts {
            host_tags: tags.iter().map(|t| t.to_string()).collect(),
            concurrent_runs: 4,
            surges_only,
            ..Default::default()
        };
        m.apply(Command::RegisterWorker {
            name: name.into(),
            key_hash: "k".into(),
            facts,
            now: 1,
        });
        m.apply(Command::UpdateWorker {
            name: name.into(),
            enlisted: Some(true),
            facts: None,
        });
        m.state.worker(name).expect("read").expect("worker")
    }

    fn names(picked: &[RunRef]) -> Vec<String> {
        picked
            .iter()
            .map(|r| format!("{}/{}", r.build, r.run))
            .collect()
    }

    fn tag_index(m: &Machine) -> Vec<(Vec<u8>, Vec<u8>)> {
        m.state
            .tree()
            .scan_prefix(keys::TAG_QUEUES)
            .map(|i| i.map(|(k, v)| (k.to_vec(), v.to_vec())).expect("scan"))
            .collect()
    }

    #[test]
    fn picks_merge_the_matching_queues_by_priority_then_age() {
        let mut m = Machine::new();
        build_with(
            &mut m,
            0,
            &[("a1", "amd64"), ("r1", "rpi*"), ("x1", "other")],
        );
        build_with(&mut m, 5, &[("a2", "AMD64"), ("r2", "rpi3")]);
        let w = worker(&mut m, "lab-1", &["amd64", "rpi3"], false);
        // Priority 5 first (both of its tags match), then build 1's matching runs in order; "other" never.
        assert_eq!(
            names(&m.state.pick_for(&w, 10).expect("pick")),
            ["2/a2", "2/r2", "1/a1", "1/r1"]
        );
        assert_eq!(names(&m.state.pick_for(&w, 1).expect("pick")), ["2/a2"]);
        let other = worker(&mut m, "other-box", &[], false);
        assert!(m.state.pick_for(&other, 5).expect("pick").is_empty());
        let by_name = worker(&mut m, "other", &[], false);
        assert_eq!(
            names(&m.state.pick_for(&by_name, 5).expect("pick")),
            ["1/x1"]
        );
    }

    #[test]
    fn assign_next_takes_each_run_once_and_keeps_the_index_true() {
        let mut m = Machine::new();
        build_with(&mut m, 0, &[("a", "h"), ("b", "h"), ("c", "h")]);
        let second = worker(&mut m, "w2", &["h"], false);
        let assign = |m: &mut Machine, w: &str, slots| match m.apply(Command::AssignNext {
            worker: w.into(),
            slots,
            now: 2,
        }) {
            CommandResult::Assigned(a) => a.into_iter().map(|(r, _)| r).collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        };
        assert_eq!(names(&assign(&mut m, "w", 2)), ["1/a", "1/b"]);
        assert_eq!(names(&assign(&mut m, "w2", 2)), ["1/c"]);
        assert!(assign(&mut m, "w", 2).is_empty());
        assert!(m.state.pick_for(&second, 2).expect("pick").is_empty());
        // Requeue (rerun) and cancel keep the per-tag index equal to a rebuild from the whole queue.
        build_with(&mut m, 0, &[("d", "h"), ("e", "h")]);
        m.apply(Command::CancelRun {
            run: RunRef {
                project: "p".into(),
                build: 2,
                run: "d".into(),
            },
            now: 3,
        });
        let maintained = tag_index(&m);
        assert_eq!(maintained.len(), 1, "only 2/e is queued");
        assert_eq!(m.state.rebuild_tag_queues().expect("rebuild"), 1);
        assert_eq!(tag_index(&m), maintained);
        assert_eq!(names(&assign(&mut m, "w2", 4)), ["2/e"]);
        assert!(tag_index(&m).is_empty());
    }

    #[test]
    fn a_stale_or_missing_index_is_rebuilt() {
        let mut m = Machine::new();
        build_with(&mut m, 0, &[("a", "h"), ("b", "x")]);
        let w = worker(&mut m, "w3", &["h", "x"], false);
        let before = tag_index(&m);
        // As a release without `Q/` would leave it: gone, plus a leftover entry for a run not queued.
        for (k, _) in &before {
            m.state.tree().remove(k).expect("remove");
        }
        m.state
            .tree()
            .insert(keys::tag_queue_entry("h", 0, 1), before[0].1.clone())
            .expect("insert");
        assert_eq!(m.state.rebuild_tag_queues().expect("rebuild"), 2);
        assert_eq!(tag_index(&m), before);
        assert_eq!(
            names(&m.state.pick_for(&w, 5).expect("pick")),
            ["1/a", "1/b"]
        );
    }

    #[test]
    fn synchronous_projects_and_surge_workers_wait() {
        let mut m = Machine::new();
        m.apply(Command::CreateProject {
            name: "s".into(),
            synchronous_builds: true,
            now: 1,
        });
        for _ in 0..2 {
            let mut nb = new_build(&["a", "b"]);
            nb.project = "s".into();
            m.apply(Command::CreateBuild(nb));
        }
        let w = m.state.worker("w").expect("read").expect("w");
        // Build 2 of the synchronous project waits while build 1 is unfinished.
        assert_eq!(
            names(&m.state.pick_for(&w, 4).expect("pick")),
            ["1/a", "1/b"]
        );
        let surge = worker(&mut m, "surge", &["h"], true);
        assert!(
            m.state.pick_for(&surge, 4).expect("pick").is_empty(),
            "4 queued < {SURGE_QUEUE_LENGTH}"
        );
        for _ in 0..3 {
            build_with(&mut m, 0, &[("a", "h"), ("b", "h")]);
        }
        assert_eq!(m.state.pick_for(&surge, 1).expect("pick").len(), 1);
    }

    #[test]
    fn a_write_set_sees_its_own_removals_and_inserts() {
        let m = Machine::new();
        let tree = m.state.tree();
        for k in ["z/1", "z/2", "z/3"] {
            tree.insert(k, k.as_bytes()).expect("insert");
        }
        let mut txn = Txn::new(tree);
        txn.remove(b"z/1".to_vec());
        let first = |txn: &Txn, from: &[u8]| {
            txn.first_at_or_after(from, b"z/")
                .expect("read")
                .map(|(k, _)| String::from_utf8(k).expect("utf8"))
        };
        assert_eq!(first(&txn, b"z/").as_deref(), Some("z/2"));
        txn.put_raw(b"z/0".to_vec(), vec![1]);
        assert_eq!(first(&txn, b"z/").as_deref(), Some("z/0"));
        assert_eq!(first(&txn, b"z/2\0").as_deref(), Some("z/3"));
        txn.remove(b"z/3".to_vec());
        assert_eq!(first(&txn, b"z/2\0"), None);
    }
}
