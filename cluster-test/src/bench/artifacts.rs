//! `artifact_upload_mib_per_s` / `artifact_download_mib_per_s`: one artifact of `plan.artifact_mib`
//! through the real protocol (signed URL from `create_signed`, streamed `PUT`) into a 3-node cluster with
//! the local blob store: acknowledged once it is fsync'd on a majority (it streams to all three at once)
//! and its metadata committed. Then streamed back (`GET`) through each node; the download figure is the
//! median of the three. The client generates and discards the bytes (no disk, no hashing on its side), so
//! the figures are the nodes' path: TLS, sha256, disk write + fsync, replication.
use super::{single_run_definition, Figure, Plan};
use crate::harness::{call, hold_runs};
use crate::local_cluster::LocalCluster;
use anyhow::{ensure, Context};
use futures::StreamExt;
use serde_json::json;
use std::time::Instant;

pub async fn run(cluster: &LocalCluster, plan: &Plan) -> anyhow::Result<Vec<Figure>> {
    let node = &cluster.nodes[0];
    let runs = hold_runs(
        node,
        &cluster.token,
        "bench-artifacts",
        &single_run_definition("bench-art", "true"),
        "bench-art-w",
        "bench-art-key-0123456789abcdef0123",
        "bench-art",
        1,
    )
    .await?;
    let (run_url, key) = runs.into_iter().next().context("a held run")?;
    let (s, b) = call(
        &node.client,
        reqwest::Method::POST,
        &format!("{run_url}create_signed"),
        &key,
        Some(json!({"paths": ["big.bin"]})),
    )
    .await?;
    ensure!(s == 200, "create_signed: {s} {b}");
    let put_url = b["data"]["urls"]["big.bin"]
        .as_str()
        .context("signed URL")?
        .to_string();
    let size = plan.artifact_mib << 20;
    let block = bytes::Bytes::from(
        (0..1u64 << 20)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect::<Vec<u8>>(),
    );
    let chunks = plan.artifact_mib;
    let body = futures::stream::iter((0..chunks).map(move |i| {
        // Every MiB differs (its first bytes are its index), so the blob is not one repeated block.
        let mut b = block.to_vec();
        b[..8].copy_from_slice(&i.to_le_bytes());
        Ok::<_, std::io::Error>(bytes::Bytes::from(b))
    }));
    let started = Instant::now();
    let r = node
        .client
        .put(&put_url)
        .header("Content-Length", size.to_string())
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await?;
    let upload_s = started.elapsed().as_secs_f64();
    ensure!(
        r.status().is_success(),
        "upload: {} {}",
        r.status(),
        r.text().await.unwrap_or_default()
    );
    let holders = r.json::<serde_json::Value>().await?["data"]["holders"].clone();

    let path = run_url
        .find("/projects/")
        .map(|i| format!("{}big.bin", &run_url[i..]))
        .context("run path")?;
    let mut rates = Vec::new();
    for n in &cluster.nodes {
        let started = Instant::now();
        let resp = n
            .client
            .get(format!("{}{path}", n.url()))
            .header("Authorization", format!("Token {}", cluster.token))
            .send()
            .await?;
        ensure!(
            resp.status().is_success(),
            "download via node {}: {}",
            n.config.id,
            resp.status()
        );
        let mut got = 0u64;
        let mut stream = resp.bytes_stream();
        while let Some(c) = stream.next().await {
            got += c?.len() as u64;
        }
        ensure!(
            got == size,
            "download via node {}: {got} of {size} bytes",
            n.config.id
        );
        rates.push((
            n.config.id,
            plan.artifact_mib as f64 / started.elapsed().as_secs_f64(),
        ));
    }
    let mut sorted: Vec<f64> = rates.iter().map(|r| r.1).collect();
    sorted.sort_by(f64::total_cmp);
    let each: Vec<String> = rates
        .iter()
        .map(|(id, r)| format!("node {id} {r:.0}"))
        .collect();
    Ok(vec![
        Figure {
            key: "artifact_upload_mib_per_s",
            value: plan.artifact_mib as f64 / upload_s,
            workload: format!(
                "one {} MiB artifact PUT through node 1 (HTTPS, streamed), acknowledged once fsync'd on a majority (streamed to all 3 at once; holders {holders}) and its metadata committed; {:.1} s",
                plan.artifact_mib, upload_s
            ),
        },
        Figure {
            key: "artifact_download_mib_per_s",
            value: sorted[sorted.len() / 2],
            workload: format!(
                "the same artifact GET through each node (HTTPS, streamed from its own copy), median of 3; MiB/s: {}",
                each.join(", ")
            ),
        },
    ])
}
