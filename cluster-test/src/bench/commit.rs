//! `commit_writes_per_s`, `commit_p99_ms`: durable state changes through the API. Each write is a console
//! append (committed — fsync'd on a majority — before the 200; the nodes batch concurrent appends into
//! shared Raft entries, `node/src/batcher.rs`), from `commit_clients` concurrent clients
//! each owning one run and writing to a different node in turn (2 of 3 writes are forwarded to the leader,
//! as for workers spread over the nodes).
use super::sim::{append_retrying, complete_all, Fleet, SimWorker};
use super::{definition, ensure_project, Figure, Plan};
use crate::local_cluster::LocalCluster;
use crate::stats::{ms, percentile};
use anyhow::{bail, ensure};
use reqwest::Method;
use serde_json::json;
use std::time::{Duration, Instant};

pub async fn run(
    cluster: &LocalCluster,
    fleet: &Fleet,
    plan: &Plan,
    clients: usize,
    [writes_key, p99_key]: [&'static str; 2],
) -> anyhow::Result<Vec<Figure>> {
    let project = format!("bench-commit-{clients}");
    ensure_project(cluster, &project).await?;
    let (s, b) = cluster.api(Method::POST, &format!("/projects/{project}/builds/"), Some(json!({"trigger-name": "t", "project-definition": definition(&project, clients, "true")}))).await?;
    ensure!(s == 201, "create build: {s} {b}");
    let worker = SimWorker::new(&format!("commit-sim-{clients}"), 0, fleet.urls.len());
    fleet
        .register(
            std::slice::from_ref(&worker),
            clients as u32,
            &[project.as_str()],
            1,
        )
        .await?;
    let runs = fleet
        .take_runs(&worker, clients, Duration::from_secs(30))
        .await?;

    let term_before = super::term(cluster).await;
    let deadline = Instant::now() + Duration::from_secs(plan.commit_seconds);
    let chunk: Vec<u8> = [vec![b'x'; 99], vec![b'\n']].concat();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, run) in runs.iter().cloned().enumerate() {
        let (fleet, chunk) = (fleet.clone(), chunk.clone());
        tasks.spawn(async move {
            let urls = if run.run_urls.is_empty() {
                vec![run.run_url.clone()]
            } else {
                run.run_urls.clone()
            };
            let mut offset = 0;
            let mut lat = Vec::new();
            let mut n = i;
            let mut retries = 0;
            while Instant::now() < deadline {
                let t = Instant::now();
                let (len, r) = append_retrying(
                    fleet.client(i),
                    &urls[n % urls.len()],
                    &run.key,
                    offset,
                    &chunk,
                    None,
                )
                .await?;
                offset = len;
                retries += r;
                lat.push(t.elapsed());
                n += 1;
            }
            Ok::<_, anyhow::Error>((run, offset, lat, retries))
        });
    }
    let mut lat = Vec::new();
    let mut done = Vec::new();
    let mut retries = 0;
    while let Some(r) = tasks.join_next().await {
        let (run, offset, l, r) = r??;
        retries += r;
        lat.extend(l);
        done.push((run, offset));
    }
    let elections = super::term(cluster).await.saturating_sub(term_before);
    if lat.is_empty() {
        bail!("no write was acknowledged");
    }
    let per_s = lat.len() as f64 / plan.commit_seconds as f64;
    let p50 = ms(percentile(&mut lat, 50.0));
    let p99 = ms(percentile(&mut lat, 99.0));
    complete_all(fleet, done, 8).await?;
    let workload = format!("{clients} concurrent clients, 100-byte console appends (each acknowledged once fsync'd on 2 of 3; concurrent ones share Raft entries) round-robin over the 3 nodes, {} s", plan.commit_seconds);
    Ok(vec![
        Figure {
            key: writes_key,
            value: per_s,
            workload: workload.clone(),
        },
        Figure {
            key: p99_key,
            value: p99,
            workload: format!("same writes; p50 {p50:.1} ms; {retries} retried after an error, {elections} leader elections"),
        },
    ])
}
