//! `read_p99_ms_leader`, `read_p99_ms_follower`, `reads_per_s`: the price of linearizable reads. A read
//! through the leader waits for one leadership-confirming heartbeat round; a read through a follower also
//! asks the leader for the read index (one RPC) and waits for its own apply. Both are batched, so many
//! concurrent readers share a round. Measured with one sequential client per path (latency), then with
//! `read_clients` concurrent clients spread over the three nodes (throughput); the `?stale=1` local read
//! of the same resource is measured beside them as the floor.
use super::{definition, ensure_project, Figure, Plan};
use crate::harness::call;
use crate::local_cluster::LocalCluster;
use crate::stats::{ms, percentile};
use anyhow::{ensure, Context};
use reqwest::Method;
use serde_json::json;
use std::time::{Duration, Instant};

const PROJECT: &str = "bench-reads";

pub async fn run(cluster: &LocalCluster, plan: &Plan) -> anyhow::Result<Vec<Figure>> {
    ensure_project(cluster, PROJECT).await?;
    // One build whose runs nobody serves (it stays QUEUED): the resource every read fetches.
    let (s, b) = cluster
        .api(
            Method::POST,
            &format!("/projects/{PROJECT}/builds/"),
            Some(json!({"trigger-name": "t", "project-definition": definition("nobody-serves-this", 2, "true")})),
        )
        .await?;
    ensure!(s == 201, "create build: {s} {b}");
    let n = b["data"]["build_id"].as_u64().context("build_id")?;
    let path = format!("/projects/{PROJECT}/builds/{n}/");
    let leader = cluster.wait_leader(Duration::from_secs(30)).await?;
    let follower = (1..=3).find(|id| *id != leader).context("a follower")?;
    let url_of = |id: u64| {
        cluster
            .nodes
            .iter()
            .find(|n| n.config.id == id)
            .map(|n| n.url().to_string())
            .context("node url")
    };
    let (leader_url, follower_url) = (url_of(leader)?, url_of(follower)?);

    let samples = plan.read_samples;
    let mut leader_lat = sequential(cluster, &leader_url, &path, samples).await?;
    let mut follower_lat = sequential(cluster, &follower_url, &path, samples).await?;
    let stale_path = format!("{path}?stale=1");
    let mut stale_lat = sequential(cluster, &follower_url, &stale_path, samples).await?;

    // Throughput: `read_clients` clients, each reading through the nodes in turn, for `read_seconds`.
    let clients = plan.read_clients;
    let urls = cluster.live_urls();
    let deadline = Instant::now() + Duration::from_secs(plan.read_seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..clients {
        let (client, token, urls, path) = (
            cluster.client.clone(),
            cluster.token.clone(),
            urls.clone(),
            path.clone(),
        );
        tasks.spawn(async move {
            let mut lat = Vec::new();
            let mut k = i;
            while Instant::now() < deadline {
                let t = Instant::now();
                let (s, b) = call(
                    &client,
                    Method::GET,
                    &format!("{}{path}", urls[k % urls.len()]),
                    &token,
                    None,
                )
                .await?;
                ensure!(s == 200, "read: {s} {b}");
                lat.push(t.elapsed());
                k += 1;
            }
            Ok::<_, anyhow::Error>(lat)
        });
    }
    let mut all = Vec::new();
    while let Some(r) = tasks.join_next().await {
        all.extend(r??);
    }
    ensure!(!all.is_empty(), "no read completed");
    let per_s = all.len() as f64 / plan.read_seconds as f64;
    let load_p50 = ms(percentile(&mut all, 50.0));
    let load_p99 = ms(percentile(&mut all, 99.0));

    let (lp50, lp99) = (
        ms(percentile(&mut leader_lat, 50.0)),
        ms(percentile(&mut leader_lat, 99.0)),
    );
    let (fp50, fp99) = (
        ms(percentile(&mut follower_lat, 50.0)),
        ms(percentile(&mut follower_lat, 99.0)),
    );
    let (sp50, sp99) = (
        ms(percentile(&mut stale_lat, 50.0)),
        ms(percentile(&mut stale_lat, 99.0)),
    );
    Ok(vec![
        Figure {
            key: "read_p99_ms_leader",
            value: lp99,
            workload: format!("GET of one build through the leader (node {leader}), 1 client, {samples} sequential reads, whole HTTPS request; p50 {lp50:.2} ms"),
        },
        Figure {
            key: "read_p99_ms_follower",
            value: fp99,
            workload: format!("same through a follower (node {follower}: read index from the leader, then its own apply); p50 {fp50:.2} ms; the same read with ?stale=1 (local, not linearizable): p50 {sp50:.2} / p99 {sp99:.2} ms"),
        },
        Figure {
            key: "reads_per_s",
            value: per_s,
            workload: format!("{clients} concurrent clients reading one build, each through the 3 nodes in turn, {} s, all linearizable; p50 {load_p50:.1} / p99 {load_p99:.1} ms", plan.read_seconds),
        },
    ])
}

async fn sequential(
    cluster: &LocalCluster,
    url: &str,
    path: &str,
    samples: usize,
) -> anyhow::Result<Vec<Duration>> {
    let mut lat = Vec::with_capacity(samples);
    for _ in 0..samples {
        let t = Instant::now();
        let (s, b) = call(
            &cluster.client,
            Method::GET,
            &format!("{url}{path}"),
            &cluster.token,
            None,
        )
        .await?;
        ensure!(s == 200, "{url}{path}: {s} {b}");
        lat.push(t.elapsed());
    }
    Ok(lat)
}
