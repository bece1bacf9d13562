//! `RetentionKeeper` (one per node, active on the leader): every `retention_interval_secs`, for each
//! project whose newest build's definition sets `retention`, deletes the builds it no longer keeps —
//! through Raft (`Command::DeleteBuilds`), so every node drops the same runs, logs, tests and artifact
//! records; blobs left without a reference are then deleted by every node's blob keeper. The state
//! machine refuses to delete running or promoted builds (and builds whose duties are still owed), so a
//! retention decision made on a stale view can never remove one of those.
use crate::cluster::Cluster;
use actix::prelude::*;
use jobserv_protocol::project::{parse_project, Retention};
use jobserv_raft::Command;
use std::sync::Arc;
use std::time::Duration;

/// Builds deleted per Raft entry: bounded entries, and other writes interleave.
const DELETE_BATCH: usize = 100;
const DAY_MS: u64 = 24 * 3600 * 1000;

pub struct RetentionKeeper {
    pub cluster: Arc<Cluster>,
    pub interval: Duration,
    running: bool,
}

impl RetentionKeeper {
    pub fn new(cluster: Arc<Cluster>, interval: Duration) -> Self {
        RetentionKeeper {
            cluster,
            interval,
            running: false,
        }
    }
}

/// The builds `retention` no longer keeps, from `(number, created ms)` oldest first. With both limits a
/// build goes only when both allow it.
pub fn builds_to_delete(builds: &[(u64, u64)], retention: Retention, now: u64) -> Vec<u64> {
    let beyond_count = |i: usize| {
        retention
            .builds
            .is_none_or(|keep| (builds.len() - i) as u64 > keep)
    };
    let too_old = |created: u64| {
        retention
            .days
            .is_none_or(|days| now.saturating_sub(created) > days * DAY_MS)
    };
    builds
        .iter()
        .enumerate()
        .filter(|(i, (_, created))| beyond_count(*i) && too_old(*created))
        .map(|(_, (number, _))| *number)
        .collect()
}

/// One pass over every project; returns how many builds were deleted.
pub async fn apply_retention(cluster: &Cluster) -> Result<usize, String> {
    let now = jobserv_raft::state::now_ms();
    let mut deleted = 0;
    for project in cluster.state.projects().map_err(|e| e.to_string())? {
        let Some(latest) = cluster
            .state
            .latest_build(&project.name)
            .map_err(|e| e.to_string())?
        else {
            continue;
        };
        // The newest build's definition is the project's current word on retention.
        let Some(retention) = parse_project(&latest.definition)
            .ok()
            .and_then(|d| d.retention)
        else {
            continue;
        };
        let mut builds = Vec::new();
        for number in cluster
            .state
            .build_numbers(&project.name)
            .map_err(|e| e.to_string())?
        {
            if let Some(b) = cluster
                .state
                .build(&project.name, number)
                .map_err(|e| e.to_string())?
            {
                if b.status.is_complete() && b.promoted.is_none() {
                    builds.push((number, b.created));
                } else {
                    builds.push((number, u64::MAX)); // kept, but counts toward the newest N
                }
            }
        }
        let doomed: Vec<u64> = builds_to_delete(&builds, retention, now)
            .into_iter()
            .filter(|n| builds.iter().any(|(b, c)| b == n && *c != u64::MAX))
            .collect();
        for batch in doomed.chunks(DELETE_BATCH) {
            let result = cluster
                .propose(Command::DeleteBuilds {
                    project: project.name.clone(),
                    numbers: batch.to_vec(),
                })
                .await
                .map_err(|e| e.to_string())?;
            if let jobserv_raft::CommandResult::BuildsDeleted(numbers) = result {
                deleted += numbers.len();
                tracing::info!(project = %project.name, builds = numbers.len(), "retention deleted builds");
            }
        }
    }
    Ok(deleted)
}

impl Actor for RetentionKeeper {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.interval, |keeper, ctx| {
            if !keeper.cluster.is_leader() || keeper.running {
                return;
            }
            keeper.running = true;
            let cluster = keeper.cluster.clone();
            let work = async move { apply_retention(&cluster).await };
            ctx.spawn(work.into_actor(keeper).map(|result, keeper, _| {
                keeper.running = false;
                if let Err(e) = result {
                    tracing::warn!("retention pass: {e}");
                }
            }));
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_n_and_the_young() {
        let now = 100 * DAY_MS;
        let builds: Vec<(u64, u64)> = (1..=10).map(|n| (n, n * 10 * DAY_MS)).collect();
        let count = Retention {
            builds: Some(3),
            days: None,
        };
        assert_eq!(
            builds_to_delete(&builds, count, now),
            (1..=7).collect::<Vec<_>>()
        );
        // Younger than 25 days: created after day 75 → builds 8, 9, 10 kept.
        let days = Retention {
            builds: None,
            days: Some(25),
        };
        assert_eq!(
            builds_to_delete(&builds, days, now),
            (1..=7).collect::<Vec<_>>()
        );
        // Both: a build goes only when beyond the newest 5 *and* older than 25 days.
        let both = Retention {
            builds: Some(5),
            days: Some(25),
        };
        assert_eq!(
            builds_to_delete(&builds, both, now),
            (1..=5).collect::<Vec<_>>()
        );
        let keep_all = Retention {
            builds: Some(20),
            days: None,
        };
        assert!(builds_to_delete(&builds, keep_all, now).is_empty());
    }
}
