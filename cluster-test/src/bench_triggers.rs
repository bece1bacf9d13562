//! `cluster-test bench-triggers`: the delay from a push to the build being created, on one real node
//! process, (a) through the git poller at its poll interval (default: the node's default, 30 s) against a
//! real repository on a local path, and (b) through a signed GitHub `pull_request` webhook (the node
//! reads the definition from the repository at the pushed commit). Prints p50 and max of each.
use crate::harness::{call, cluster_configs, own_view, random_token, NodeProcess};
use crate::stats::{ms, percentile};
use anyhow::{bail, ensure, Context};
use reqwest::Method;
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

pub struct BenchTriggersOptions {
    pub poll_interval_secs: u64,
    pub poll_samples: usize,
    pub webhook_samples: usize,
}

#[derive(Debug, serde::Serialize)]
pub struct BenchTriggersReport {
    pub poll_interval_secs: u64,
    pub poll_samples: usize,
    pub poll_p50_ms: f64,
    pub poll_max_ms: f64,
    pub webhook_samples: usize,
    pub webhook_p50_ms: f64,
    pub webhook_max_ms: f64,
}

impl BenchTriggersReport {
    pub fn print(&self) {
        println!(
            "git poller (interval {} s): push -> build created p50 {:.0} ms, max {:.0} ms over {} pushes",
            self.poll_interval_secs, self.poll_p50_ms, self.poll_max_ms, self.poll_samples
        );
        println!(
            "github webhook: push -> build created p50 {:.0} ms, max {:.0} ms over {} events",
            self.webhook_p50_ms, self.webhook_max_ms, self.webhook_samples
        );
    }
}

fn git(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=Bench",
            "-c",
            "user.email=bench@example.com",
        ])
        .args(args)
        .output()
        .context("running git")?;
    ensure!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn definition(url: &str) -> String {
    format!(
        "timeout: 5\ntriggers:\n  - name: poll\n    type: git_poller\n    params:\n      GIT_URL: {url}\n      GIT_POLL_REFS: refs/heads/main\n    runs:\n      - {{name: build, container: busybox:latest, host-tag: bench, script: s}}\n  - name: pr\n    type: github_pr\n    runs:\n      - {{name: check, container: busybox:latest, host-tag: bench, script: s}}\nscripts:\n  s: |\n    #!/bin/sh\n    true\n"
    )
}

/// GitHub's `X-Hub-Signature-256` is the same HMAC-SHA256 `sha256=<hex>` the node signs its webhooks with.
fn sign(key: &str, body: &[u8]) -> String {
    jobserv_node::notify::webhook::sign(key, body)
}

/// Waits until `cond` holds on the node's own view, or fails saying `what` after `timeout`.
async fn wait_own_view(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    what: &str,
    timeout: Duration,
    cond: impl Fn(&serde_json::Value) -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let view = own_view(client, url, token).await?;
        if cond(&view) {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "{what}: not within {timeout:?} (/cluster/: {view})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn build_count(client: &reqwest::Client, url: &str, token: &str) -> anyhow::Result<usize> {
    let (s, b) = call(
        client,
        Method::GET,
        &format!("{url}/projects/bench/builds/?limit=1000"),
        token,
        None,
    )
    .await?;
    ensure!(s == 200, "{s} {b}");
    Ok(b["data"]["builds"].as_array().map(Vec::len).unwrap_or(0))
}

pub async fn run(
    dir: &Path,
    bin_dir: &Path,
    opts: &BenchTriggersOptions,
) -> anyhow::Result<BenchTriggersReport> {
    let bare = dir.join("product.git");
    let work = dir.join("product-work");
    std::fs::create_dir_all(&bare)?;
    std::fs::create_dir_all(&work)?;
    git(&bare, &["init", "--bare", "--quiet", "-b", "main"])?;
    git(&work, &["init", "--quiet", "-b", "main"])?;
    let url = bare.to_string_lossy().to_string();
    git(&work, &["remote", "add", "origin", &url])?;
    std::fs::write(work.join("bench.yml"), definition(&url))?;
    git(&work, &["add", "-A"])?;
    git(&work, &["commit", "--quiet", "-m", "definition"])?;
    git(&work, &["push", "--quiet", "origin", "main"])?;
    let push = |branch: &str| -> anyhow::Result<String> {
        git(
            &work,
            &["commit", "--quiet", "--allow-empty", "-m", "change"],
        )?;
        git(
            &work,
            &[
                "push",
                "--quiet",
                "origin",
                &format!("HEAD:refs/heads/{branch}"),
            ],
        )?;
        git(&work, &["rev-parse", "HEAD"])
    };

    let token = random_token();
    let mut config = cluster_configs(dir, 1, &token, &random_token())?.remove(0);
    config.triggers.poll_interval_secs = opts.poll_interval_secs;
    let mut node = NodeProcess::new(config, bin_dir)?;
    node.spawn()?;
    node.wait_ready(Duration::from_secs(60)).await?;
    let node_url = node.url().to_string();
    let client = node.client.clone();
    // The leader raises the storage format (1 to the newest this binary reads) a few seconds after start
    // (one Raft entry): let that happen first, so that the only entry after the triggers below is the
    // poller's first look. (`storage_format_written` is what is written *now*: 1 until the raise.)
    wait_own_view(
        &client,
        &node_url,
        &token,
        "storage format raised",
        Duration::from_secs(60),
        |v| v["storage_format"] == v["storage_format_readable"],
    )
    .await?;
    let (s, b) = call(
        &client,
        Method::POST,
        &format!("{node_url}/projects/"),
        &token,
        Some(json!({"name": "bench"})),
    )
    .await?;
    ensure!(s == 201, "{s} {b}");
    for trigger in [
        json!({"type": "git_poller", "definition_repo": url, "definition_file": "bench.yml"}),
        json!({"type": "github_pr", "definition_file": "bench.yml", "secrets": [{"name": "webhook-key", "value": "bench-key"}]}),
    ] {
        let (s, b) = call(
            &client,
            Method::POST,
            &format!("{node_url}/projects/bench/triggers/"),
            &token,
            Some(trigger),
        )
        .await?;
        ensure!(s == 201, "{s} {b}");
    }

    // (a) Poller: wait for its first look (it records the refs and builds nothing), then push and wait for
    // each build. The first look is one Raft entry (`PollerSeen`), and on this node with no worker and no
    // build it is the only entry after the triggers: the node's applied index moving past them is it.
    let after_triggers = own_view(&client, &node_url, &token).await?["last_applied"]
        .as_u64()
        .context("last_applied")?;
    wait_own_view(
        &client,
        &node_url,
        &token,
        "the git poller's first look (its PollerSeen entry)",
        Duration::from_secs(opts.poll_interval_secs * 3 + 30),
        |v| v["last_applied"].as_u64().unwrap_or(0) > after_triggers,
    )
    .await?;
    let mut poll_delays = Vec::new();
    for _ in 0..opts.poll_samples {
        // A push lands at a random phase of the poll cycle, as real pushes do.
        tokio::time::sleep(Duration::from_secs_f64(
            rand::random::<f64>() * opts.poll_interval_secs as f64,
        ))
        .await;
        let before = build_count(&client, &node_url, &token).await?;
        push("main")?;
        let pushed = Instant::now();
        loop {
            if build_count(&client, &node_url, &token).await? > before {
                poll_delays.push(pushed.elapsed());
                break;
            }
            if pushed.elapsed() > Duration::from_secs(opts.poll_interval_secs * 3 + 30) {
                bail!(
                    "no build {:?} after a push; see {}",
                    pushed.elapsed(),
                    node.log_path().display()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // (b) Webhook: push a PR branch, deliver the signed event, wait for the build.
    let mut hook_delays = Vec::new();
    for i in 0..opts.webhook_samples {
        let before = build_count(&client, &node_url, &token).await?;
        let sha = push(&format!("pr-{i}"))?;
        let pushed = Instant::now();
        let pr = json!({"number": i + 1, "statuses_url": "http://127.0.0.1:9/statuses", "head": {"sha": sha, "repo": {"clone_url": url}},
            "base": {"sha": sha, "repo": {"name": "product", "owner": {"login": "bench"}, "clone_url": url}}});
        let body = serde_json::to_vec(&json!({"action": "synchronize", "pull_request": pr}))?;
        let r = client
            .post(format!("{node_url}/github/bench/"))
            .header("X-GitHub-Event", "pull_request")
            .header("X-Hub-Signature-256", sign("bench-key", &body))
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await?;
        ensure!(
            r.status().as_u16() == 201,
            "webhook: {} {}",
            r.status(),
            r.text().await.unwrap_or_default()
        );
        ensure!(
            build_count(&client, &node_url, &token).await? > before,
            "the webhook reply came before the build existed"
        );
        hook_delays.push(pushed.elapsed());
    }
    node.terminate();
    Ok(BenchTriggersReport {
        poll_interval_secs: opts.poll_interval_secs,
        poll_samples: poll_delays.len(),
        poll_p50_ms: ms(percentile(&mut poll_delays, 50.0)),
        poll_max_ms: ms(percentile(&mut poll_delays, 100.0)),
        webhook_samples: hook_delays.len(),
        webhook_p50_ms: ms(percentile(&mut hook_delays, 50.0)),
        webhook_max_ms: ms(percentile(&mut hook_delays, 100.0)),
    })
}
