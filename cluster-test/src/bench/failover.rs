//! `failover_p50_ms`, `failover_max_ms`: SIGKILL the leader, then time until a write (create a project)
//! succeeds through a surviving node (`chaos::time_to_write`); restart the killed node, wait until it has
//! caught up, and repeat `failover_kills` times. A follower campaigns 320–400 ms after its last heartbeat
//! (`jobserv_raft::raft_config`).
use super::{Figure, Plan};
use crate::chaos::time_to_write;
use crate::harness::own_view;
use crate::local_cluster::LocalCluster;
use crate::stats::{ms, percentile};
use anyhow::ensure;
use std::time::{Duration, Instant};

pub async fn run(cluster: &mut LocalCluster, plan: &Plan) -> anyhow::Result<Vec<Figure>> {
    let mut samples = Vec::new();
    for i in 0..plan.failover_kills {
        let leader = agreed_leader(cluster).await?;
        cluster.node(leader)?.kill();
        samples.push(time_to_write(cluster, &format!("failover-probe-{i}")).await?);
        let node = cluster.node(leader)?;
        node.spawn()?;
        node.wait_ready(Duration::from_secs(60)).await?;
        let url = node.url().to_string();
        wait_caught_up(cluster, &url).await?;
    }
    cluster.write_json()?;
    let list: Vec<String> = samples.iter().map(|d| format!("{:.0}", ms(*d))).collect();
    let p50 = ms(percentile(&mut samples, 50.0));
    let max = ms(percentile(&mut samples, 100.0));
    let workload = format!("{} leader SIGKILLs (killed node restarted and caught up between kills), 2 Docker workers connected; ms: {}", plan.failover_kills, list.join(" "));
    Ok(vec![
        Figure {
            key: "failover_p50_ms",
            value: p50,
            workload: workload.clone(),
        },
        Figure {
            key: "failover_max_ms",
            value: max,
            workload: "same kills".into(),
        },
    ])
}

/// Waits until the node at `url` knows a leader and has applied what the leader had applied (the leader's
/// and the node's own views, `stale=1`: a linearizable read would wait for the very catch-up measured).
pub async fn wait_caught_up(cluster: &LocalCluster, url: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut target = None;
    loop {
        if target.is_none() {
            let leader = cluster.wait_leader(Duration::from_secs(30)).await?;
            let leader_url = cluster
                .nodes
                .iter()
                .find(|n| n.config.id == leader)
                .map(|n| n.url().to_string())
                .unwrap_or_default();
            if let Ok(view) = own_view(&cluster.client, &leader_url, &cluster.token).await {
                target = view["last_applied"].as_u64();
            }
        }
        if let (Some(t), Ok(view)) = (target, own_view(&cluster.client, url, &cluster.token).await)
        {
            if view["leader"].as_u64().is_some() && view["last_applied"].as_u64().unwrap_or(0) >= t
            {
                return Ok(());
            }
        }
        ensure!(Instant::now() < deadline, "{url} did not catch up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The leader every live node agrees on (each node's own view, `stale=1`), confirmed by the leader itself: a
/// node that just restarted may still name an old leader, and killing a follower by mistake would time
/// nothing.
async fn agreed_leader(cluster: &LocalCluster) -> anyhow::Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut views = Vec::new();
        for url in cluster.live_urls() {
            if let Ok(view) = own_view(&cluster.client, &url, &cluster.token).await {
                views.push((view["this_node"].as_u64(), view["leader"].as_u64()));
            }
        }
        if let Some((_, Some(leader))) = views.first().copied() {
            let all_agree = views.len() == cluster.live_urls().len()
                && views.iter().all(|(_, l)| *l == Some(leader));
            if all_agree && views.iter().any(|(me, _)| *me == Some(leader)) {
                return Ok(leader);
            }
        }
        ensure!(
            Instant::now() < deadline,
            "the live nodes do not agree on a leader: {views:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
