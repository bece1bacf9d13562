//! `log_ingest_mb_per_s`, `log_tail_lag_p99_ms`: `log_runs` runs stream console output at once, each
//! posting `log_chunk`-byte chunks back to back (a real worker flushes at 64 KiB) through a different node
//! in turn; a chunk counts when its append is acknowledged (committed on a majority). Meanwhile
//! `log_viewers` live viewers follow some of those runs (`console.log?follow=1`) through a node other than
//! the writer's; the lag of a chunk is from its acknowledgement to the moment the viewer has received it.
use super::sim::{append_retrying, Fleet, SimWorker};
use super::{definition, ensure_project, Figure, Plan};
use crate::local_cluster::LocalCluster;
use crate::stats::{ms, percentile};
use anyhow::{ensure, Context};
use reqwest::Method;
use serde_json::json;
use std::time::{Duration, Instant};

pub async fn run(
    cluster: &LocalCluster,
    fleet: &Fleet,
    plan: &Plan,
) -> anyhow::Result<Vec<Figure>> {
    let n = plan.log_runs;
    ensure_project(cluster, "bench-logs").await?;
    let (s, b) = cluster.api(Method::POST, "/projects/bench-logs/builds/", Some(json!({"trigger-name": "t", "project-definition": definition("bench-logs", n, "true")}))).await?;
    ensure!(s == 201, "create build: {s} {b}");
    let worker = SimWorker::new("logs-sim", 0, fleet.urls.len());
    fleet
        .register(std::slice::from_ref(&worker), n as u32, &["bench-logs"], 1)
        .await?;
    let runs = fleet.take_runs(&worker, n, Duration::from_secs(30)).await?;

    // Viewers first, each on the node after its writer's; the writers start once every viewer is connected.
    let mut viewers = tokio::task::JoinSet::new();
    let (connected_tx, mut connected) = tokio::sync::mpsc::unbounded_channel::<()>();
    for (i, run) in runs.iter().take(plan.log_viewers).enumerate() {
        let urls = if run.run_urls.is_empty() {
            vec![run.run_url.clone()]
        } else {
            run.run_urls.clone()
        };
        let url = format!("{}console.log?follow=1", urls[(i + 1) % urls.len()]);
        let (client, token) = (fleet.streaming.clone(), fleet.token.clone());
        let connected_tx = connected_tx.clone();
        viewers.spawn(async move {
            let mut seen: Vec<(u64, Instant)> = Vec::new();
            let mut resp = client
                .get(&url)
                .header("Authorization", format!("Token {token}"))
                .send()
                .await?;
            ensure!(resp.status().is_success(), "{url}: {}", resp.status());
            let _ = connected_tx.send(());
            let mut total = 0u64;
            while let Some(bytes) = tokio::time::timeout(Duration::from_secs(60), resp.chunk())
                .await
                .context("live tail stalled")??
            {
                total += bytes.len() as u64;
                seen.push((total, Instant::now()));
            }
            Ok::<_, anyhow::Error>((i, seen))
        });
    }
    drop(connected_tx);
    let expected = viewers.len();
    for n in 0..expected {
        if let Ok(Some(())) = tokio::time::timeout(Duration::from_secs(30), connected.recv()).await
        {
            continue;
        }
        // A viewer failed (its error says why) or hung: stop them all and report.
        viewers.abort_all();
        while let Some(r) = viewers.join_next().await {
            if let Ok(Err(e)) = r {
                return Err(e.context(format!("{n} of {expected} live viewers connected")));
            }
        }
        anyhow::bail!("only {n} of {expected} live viewers connected within 30 s");
    }

    let chunk: Vec<u8> = (0..plan.log_chunk)
        .map(|i| {
            if i % 100 == 99 {
                b'\n'
            } else {
                b'a' + (i % 26) as u8
            }
        })
        .collect();
    let term_before = super::term(cluster).await;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(plan.log_seconds);
    let mut writers = tokio::task::JoinSet::new();
    for (i, run) in runs.iter().cloned().enumerate() {
        let (fleet, chunk) = (fleet.clone(), chunk.clone());
        writers.spawn(async move {
            let urls = if run.run_urls.is_empty() {
                vec![run.run_url.clone()]
            } else {
                run.run_urls.clone()
            };
            let url = &urls[i % urls.len()];
            let mut acks: Vec<(u64, Instant)> = Vec::new();
            let mut offset = 0;
            let mut retries = 0;
            while Instant::now() < deadline {
                let (len, r) =
                    append_retrying(fleet.client(i), url, &run.key, offset, &chunk, None).await?;
                offset = len;
                retries += r;
                acks.push((offset, Instant::now()));
            }
            append_retrying(fleet.client(i), url, &run.key, offset, &[], Some("PASSED")).await?;
            Ok::<_, anyhow::Error>((i, acks, retries))
        });
    }
    let mut acks_of: Vec<Vec<(u64, Instant)>> = vec![Vec::new(); n];
    let mut acked_bytes = 0u64;
    let mut last_ack = started;
    let mut retries = 0;
    while let Some(r) = writers.join_next().await {
        let (i, acks, r) = r.context("writer")??;
        retries += r;
        if let Some(&(end, t)) = acks.last() {
            acked_bytes += end;
            last_ack = last_ack.max(t);
        }
        acks_of[i] = acks;
    }
    let elections = super::term(cluster).await.saturating_sub(term_before);
    let mut lags = Vec::new();
    while let Some(r) = viewers.join_next().await {
        let (i, seen) = r.context("viewer")??;
        for &(end, acked_at) in &acks_of[i] {
            let shown = seen
                .iter()
                .find(|(total, _)| *total >= end)
                .with_context(|| format!("the live viewer of run {i} never received byte {end}"))?;
            lags.push(shown.1.saturating_duration_since(acked_at));
        }
    }
    let elapsed = (last_ack - started).as_secs_f64().max(1e-9);
    let mib_per_s = acked_bytes as f64 / elapsed / (1024.0 * 1024.0);
    let p50 = ms(percentile(&mut lags, 50.0));
    let p99 = ms(percentile(&mut lags, 99.0));
    Ok(vec![
        Figure {
            key: "log_ingest_mb_per_s",
            value: mib_per_s,
            workload: format!("MiB/s acknowledged: {n} runs streaming at once, {} KiB chunks back to back, writers spread over the 3 nodes, {:.1} s, {:.0} MiB total, {retries} appends retried after an error, {elections} leader elections during the phase", plan.log_chunk / 1024, elapsed, acked_bytes as f64 / 1048576.0),
        },
        Figure { key: "log_tail_lag_p99_ms", value: p99, workload: format!("{} live viewers (follow=1) on a node other than the writer's, during that ingest; p50 {p50:.1} ms over {} chunks", plan.log_viewers, lags.len()) },
    ])
}
