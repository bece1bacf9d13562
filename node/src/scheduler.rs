//! Which queued runs a worker may take, and why a queued run is still waiting. Pure functions over the
//! replicated state and this node's soft state, so they are cheap to test and to call on every check-in.
//!
//! Order: the queue index already sorts by `queue_priority` (higher first), then creation (build, run).
//! A run matches a worker when its `host-tag` glob (case-insensitive, `*` and `?`) matches the worker's
//! name or one of its tags. A synchronous project runs one build at a time: only runs of its oldest
//! unfinished build may start. `surges_only` workers take work only when the queue is long.
use jobserv_raft::model::{QueueReason, Run, Worker};
use std::collections::HashMap;

/// The matching rule and the surge threshold are the state machine's (it picks runs for `AssignNext`).
pub use jobserv_raft::state::{host_tag_matches, SURGE_QUEUE_LENGTH};

/// The oldest unfinished build of each synchronous project, from the queue and the running runs.
pub type SyncGate = HashMap<String, u64>;

/// Picks up to `slots` runs for `worker` from `queued` (in queue order).
pub fn pick_runs<'a>(
    queued: &'a [Run],
    worker: &Worker,
    slots: usize,
    sync_gate: &SyncGate,
) -> Vec<&'a Run> {
    if !worker.enlisted || slots == 0 {
        return Vec::new();
    }
    if worker.facts.surges_only && queued.len() < SURGE_QUEUE_LENGTH {
        return Vec::new();
    }
    queued
        .iter()
        .filter(|run| {
            sync_gate
                .get(&run.project)
                .is_none_or(|&oldest| run.build <= oldest)
        })
        .filter(|run| host_tag_matches(&run.host_tag, worker))
        .take(slots)
        .collect()
}

/// Why `run` is still queued, given the enlisted workers and which of them are online with free slots.
pub fn queue_reason(
    run: &Run,
    workers: &[(Worker, bool, u32)],
    sync_gate: &SyncGate,
) -> QueueReason {
    if sync_gate
        .get(&run.project)
        .is_some_and(|&oldest| run.build > oldest)
    {
        return QueueReason::SynchronousBuild;
    }
    let matching: Vec<_> = workers
        .iter()
        .filter(|(w, _, _)| w.enlisted && host_tag_matches(&run.host_tag, w))
        .collect();
    if matching.is_empty() {
        return QueueReason::NoMatchingWorker;
    }
    if matching.iter().all(|(w, _, _)| w.facts.surges_only) {
        return QueueReason::SurgeOnly;
    }
    QueueReason::AllMatchingBusy
}

#[cfg(test)]
mod tests {
    use super::*;
    use jobserv_raft::model::WorkerFacts;

    fn worker(name: &str, tags: &[&str], enlisted: bool) -> Worker {
        Worker {
            name: name.into(),
            key_hash: String::new(),
            facts: WorkerFacts {
                host_tags: tags.iter().map(|t| t.to_string()).collect(),
                concurrent_runs: 2,
                ..Default::default()
            },
            enlisted,
            created: 0,
        }
    }

    #[test]
    fn host_tags_match_globs_case_insensitively_on_name_and_tags() {
        let w = worker("lab-rpi3", &["ARM64", "rpi"], true);
        assert!(host_tag_matches("arm64", &w));
        assert!(host_tag_matches("lab-*", &w));
        assert!(host_tag_matches("r?i", &w));
        assert!(!host_tag_matches("amd64", &w));
        assert!(host_tag_matches("*", &w));
    }

    #[test]
    fn unenlisted_workers_get_nothing_and_reasons_say_why() {
        let w = worker("w1", &["amd64"], false);
        let run = Run {
            project: "p".into(),
            build: 1,
            name: "r".into(),
            status: jobserv_protocol::RunStatus::Queued,
            host_tag: "amd64".into(),
            queue_priority: 0,
            queue_seq: 0,
            definition: serde_json::from_value(serde_json::json!({
                "version": 1, "project": "p", "build": 1, "run": "r", "timeout": 5, "run_url": "", "frontend_url": "",
                "runner_url": "", "trigger_type": "simple", "container": "busybox", "host-tag": "amd64"
            }))
            .unwrap(),
            worker: None,
            fence: 0,
            log_len: 0,
            created: 0,
            started: None,
            completed: None,
            cancelled: false,
            failure_reason: None,
            metadata: None,
        };
        let queued = vec![run.clone()];
        assert!(pick_runs(&queued, &w, 2, &SyncGate::new()).is_empty());
        assert_eq!(
            queue_reason(&run, &[(w.clone(), true, 2)], &SyncGate::new()),
            QueueReason::NoMatchingWorker
        );
        let enlisted = worker("w1", &["amd64"], true);
        assert_eq!(pick_runs(&queued, &enlisted, 2, &SyncGate::new()).len(), 1);
        assert_eq!(
            queue_reason(&run, &[(enlisted.clone(), true, 0)], &SyncGate::new()),
            QueueReason::AllMatchingBusy
        );
        let gate: SyncGate = [("p".to_string(), 0u64)].into_iter().collect();
        assert!(pick_runs(&queued, &enlisted, 2, &gate).is_empty());
        assert_eq!(
            queue_reason(&run, &[(enlisted, true, 2)], &gate),
            QueueReason::SynchronousBuild
        );
    }
}
