//! The crash loop: a stream of acknowledged writes (console appends with offsets, and build creations)
//! against a real node process, SIGKILLed at a random moment, restarted on the same data dir, over and
//! over. After every restart: the store reopens, every acknowledged byte is there exactly once (the log
//! is a prefix of what was sent, at least as long as what was acknowledged), and every acknowledged build
//! exists with gapless numbers.
use crate::harness::{call, hold_runs, single_node};
use anyhow::{bail, ensure, Context};
use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde_json::json;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct CrashLoopReport {
    pub iterations: usize,
    pub acked_appends: u64,
    pub acked_bytes: u64,
    pub acked_builds: u64,
    pub restart_ready: Vec<Duration>,
}

const PROJECT_YAML: &str = "timeout: 5\ntriggers:\n  - name: t\n    type: simple\n    runs:\n      - name: r\n        container: busybox:latest\n        host-tag: crash\n        script: s\nscripts:\n  s: |\n    #!/bin/sh\n    true\n";
const WORKER_KEY: &str = "crash-loop-worker-key-0123456789abcdef0123456789";

/// What the writer has sent and what the node acknowledged.
#[derive(Default)]
struct Ledger {
    /// Every byte sent to the log, in order (the last chunk possibly unacknowledged).
    sent: Vec<u8>,
    acked_len: u64,
    acked_appends: u64,
    acked_builds: Vec<u64>,
}

pub async fn run(
    dir: &Path,
    bin_dir: &Path,
    iterations: usize,
    seed: u64,
) -> anyhow::Result<CrashLoopReport> {
    let (mut node, token) = single_node(dir, bin_dir).await?;
    let url = node.url().to_string();
    let client = node.client.clone();

    // One run held by a worker: the target of the console appends.
    let (run_url, run_key) = hold_runs(
        &node,
        &token,
        "crash",
        PROJECT_YAML,
        "crasher",
        WORKER_KEY,
        "crash",
        1,
    )
    .await?
    .remove(0);

    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let ledger = Arc::new(Mutex::new(Ledger {
        acked_builds: vec![1],
        ..Default::default()
    }));
    let mut report = CrashLoopReport {
        iterations,
        acked_appends: 0,
        acked_bytes: 0,
        acked_builds: 0,
        restart_ready: Vec::new(),
    };

    for iteration in 0..iterations {
        let writer = tokio::spawn(write_until_error(
            client.clone(),
            url.clone(),
            run_url.clone(),
            run_key.clone(),
            token.clone(),
            ledger.clone(),
            iteration,
        ));
        tokio::time::sleep(Duration::from_millis(rng.gen_range(20..250))).await;
        node.kill();
        let _ = writer.await;
        node.spawn()?;
        report.restart_ready.push(
            node.wait_ready(Duration::from_secs(60))
                .await
                .with_context(|| format!("iteration {iteration}: restart"))?,
        );
        verify(&client, &url, &token, &ledger, iteration).await?;
    }
    let l = ledger
        .lock()
        .map_err(|_| anyhow::anyhow!("ledger poisoned"))?;
    report.acked_appends = l.acked_appends;
    report.acked_bytes = l.acked_len;
    report.acked_builds = l.acked_builds.len() as u64;
    Ok(report)
}

async fn write_until_error(
    client: reqwest::Client,
    url: String,
    run_url: String,
    run_key: String,
    token: String,
    ledger: Arc<Mutex<Ledger>>,
    iteration: usize,
) {
    let mut n = 0u64;
    let mut last_check_in = Instant::now();
    loop {
        n += 1;
        // Keep the worker's lease alive: it checks in like a real worker.
        if last_check_in.elapsed() > Duration::from_secs(5) {
            last_check_in = Instant::now();
            if call(
                &client,
                Method::GET,
                &format!("{url}/workers/crasher/?available_runners=0"),
                WORKER_KEY,
                None,
            )
            .await
            .is_err()
            {
                return;
            }
        }
        // On the first request of every life too: a life of 20-250 ms may not get to an eighth one.
        if n % 8 == 1 {
            match call(
                &client,
                Method::POST,
                &format!("{url}/projects/crash/builds/"),
                &token,
                Some(json!({"trigger-name": "t"})),
            )
            .await
            {
                Ok((201, b)) => match b["data"]["build_id"].as_u64() {
                    Some(id) => {
                        if let Ok(mut l) = ledger.lock() {
                            l.acked_builds.push(id)
                        }
                    }
                    None => return,
                },
                _ => return,
            }
            continue;
        }
        let (offset, chunk) = {
            let Ok(mut l) = ledger.lock() else { return };
            let chunk = format!("iteration {iteration:04} write {n:08} ......................\n")
                .into_bytes();
            let offset = l.sent.len() as u64;
            l.sent.extend_from_slice(&chunk);
            (offset, chunk)
        };
        let reply = client
            .post(&run_url)
            .header("Authorization", format!("Token {run_key}"))
            .header("X-OFFSET", offset.to_string())
            .body(chunk.clone())
            .send()
            .await;
        match reply {
            Ok(r) if r.status().is_success() => {
                let Ok(mut l) = ledger.lock() else { return };
                l.acked_len = offset + chunk.len() as u64;
                l.acked_appends += 1;
            }
            _ => return,
        }
    }
}

async fn verify(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    ledger: &Mutex<Ledger>,
    iteration: usize,
) -> anyhow::Result<()> {
    let r = client
        .get(format!("{url}/projects/crash/builds/1/runs/r/console.log"))
        .header("Authorization", format!("Token {token}"))
        .send()
        .await?;
    ensure!(
        r.status().is_success(),
        "iteration {iteration}: console.log: {}",
        r.status()
    );
    let log = r.bytes().await?.to_vec();
    let mut l = ledger
        .lock()
        .map_err(|_| anyhow::anyhow!("ledger poisoned"))?;
    if (log.len() as u64) < l.acked_len {
        bail!("iteration {iteration}: LOST acknowledged bytes: log has {} bytes, {} were acknowledged", log.len(), l.acked_len);
    }
    if !l.sent.starts_with(&log) {
        bail!("iteration {iteration}: the log is not a prefix of what was sent (duplicated or corrupted bytes)");
    }
    // The unacknowledged last chunk may or may not have been committed: continue from what is stored.
    l.sent.truncate(log.len());
    l.acked_len = log.len() as u64;
    let max = l.acked_builds.iter().copied().max().unwrap_or(0);
    drop(l);
    verify_build_numbers(client, url, token, max, iteration).await?;
    Ok(())
}

/// Every acknowledged build exists and numbers run 1..=latest with no gap and no duplicate.
async fn verify_build_numbers(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    acked_max: u64,
    iteration: usize,
) -> anyhow::Result<()> {
    let mut numbers = Vec::new();
    let mut next = Some(format!("{url}/projects/crash/builds/?limit=1000"));
    while let Some(page_url) = next {
        let (s, b) = call(client, Method::GET, &page_url, token, None).await?;
        ensure!(s == 200, "iteration {iteration}: listing builds: HTTP {s}");
        for build in b["data"]["builds"].as_array().context("builds list")? {
            numbers.push(build["build_id"].as_u64().context("build_id")?);
        }
        next = b["data"]["next"].as_str().map(str::to_string);
    }
    let latest = numbers.first().copied().unwrap_or(0);
    if latest < acked_max {
        bail!("iteration {iteration}: LOST builds: latest is {latest}, build {acked_max} was acknowledged");
    }
    let expected: Vec<u64> = (1..=latest).rev().collect();
    if numbers != expected {
        bail!("iteration {iteration}: build numbers are not gapless and unique: {} listed for latest {latest}", numbers.len());
    }
    Ok(())
}
