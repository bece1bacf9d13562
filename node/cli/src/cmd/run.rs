//! `jobserv run log|show|rerun|cancel|rundef`.
//!
//! `run log --follow` reads the node's live tail (`console.log?follow=1`), writing bytes as they arrive. If
//! the stream breaks (the node died or restarted) it resumes from the byte offset it reached on the next
//! reachable node, so nothing is printed twice or skipped. It exits 0 if the run passed, 1 if it did not.
use super::build::build_number;
use super::project::list;
use crate::args::{RunArgs, RunCmd};
use crate::client::{error_chain, seg, Call, STREAM_TIMEOUT};
use crate::output::{cell, duration, fields, table, time};
use crate::progress::GIVE_UP_AFTER;
use crate::{CliError, Client, Ctx, Outcome};
use jobserv_protocol::RunStatus;
use reqwest::Method;
use serde_json::Value;
use std::io::Write;
use std::time::{Duration, Instant};

/// Pause before resuming a broken live tail.
const RESUME_DELAY: Duration = Duration::from_millis(500);

pub async fn run(ctx: &Ctx, cmd: RunCmd, out: &mut dyn Write) -> Result<Outcome, CliError> {
    match cmd {
        RunCmd::Log { run, follow: false } => {
            let bytes = ctx
                .client
                .get_bytes(&format!(
                    "{}console.log",
                    run_path(&ctx.client, &run).await?
                ))
                .await?;
            out.write_all(&bytes)?;
            Ok(Outcome::Success)
        }
        RunCmd::Log { run, follow: true } => {
            follow_log(&ctx.client, &run_path(&ctx.client, &run).await?, out).await
        }
        RunCmd::Show(run) => {
            let data = ctx.client.get(&run_path(&ctx.client, &run).await?).await?;
            ctx.emit(out, &data, |d| render_run(&d["run"]))
        }
        RunCmd::Rerun(run) => action(ctx, &run, "rerun", out).await,
        RunCmd::Cancel(run) => action(ctx, &run, "cancel", out).await,
        RunCmd::Rundef(run) => {
            let bytes = ctx
                .client
                .get_bytes(&format!(
                    "{}.rundef.json",
                    run_path(&ctx.client, &run).await?
                ))
                .await?;
            let def: Value = serde_json::from_slice(&bytes).map_err(|e| CliError::Reply {
                url: ctx.client.current_server().to_string(),
                message: format!("run definition: {e}"),
            })?;
            out.write_all(crate::output::pretty(&def).as_bytes())?;
            Ok(Outcome::Success)
        }
    }
}

/// `/projects/<p>/builds/<n>/runs/<r>/`, with `latest` resolved to a number.
async fn run_path(client: &Client, run: &RunArgs) -> Result<String, CliError> {
    let number = build_number(client, &run.project, &run.build).await?;
    Ok(format!(
        "/projects/{}/builds/{number}/runs/{}/",
        seg(&run.project),
        seg(&run.run)
    ))
}

async fn action(
    ctx: &Ctx,
    run: &RunArgs,
    verb: &str,
    out: &mut dyn Write,
) -> Result<Outcome, CliError> {
    let path = format!("{}{verb}", run_path(&ctx.client, run).await?);
    let data = ctx.client.jsend(&Call::new(Method::POST, &path)).await?;
    ctx.emit(out, &data, |d| {
        format!(
            "{verb}: run {} is {}\n",
            cell(&d["run"]["name"]),
            cell(&d["run"]["status"])
        )
    })
}

/// Streams the log until the run is complete, resuming at the reached offset after a broken stream.
async fn follow_log(
    client: &Client,
    run_path: &str,
    out: &mut dyn Write,
) -> Result<Outcome, CliError> {
    let mut offset: u64 = 0;
    let mut failing_since: Option<Instant> = None;
    loop {
        match stream_from(client, run_path, &mut offset, out).await {
            Ok(()) => {
                failing_since = None;
                // The stream ends when the run completes, or when its node stops: ask which.
                if let Some(status) = run_status(client, run_path)
                    .await?
                    .filter(|s| s.is_complete())
                {
                    return Ok(if status == RunStatus::Failed {
                        Outcome::NotPassed
                    } else {
                        Outcome::Success
                    });
                }
            }
            Err(e @ (CliError::Unreachable { .. } | CliError::Transport { .. })) => {
                let since = *failing_since.get_or_insert_with(Instant::now);
                if since.elapsed() > GIVE_UP_AFTER {
                    return Err(e);
                }
                eprintln!("jobserv: {e} (resuming at byte {offset})");
            }
            Err(e) => return Err(e),
        }
        tokio::time::sleep(RESUME_DELAY).await;
    }
}

/// One live-tail request from `offset`, which it advances by the bytes written.
async fn stream_from(
    client: &Client,
    run_path: &str,
    offset: &mut u64,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let path = format!("{run_path}console.log?follow=1&offset={offset}");
    let call = Call {
        timeout: STREAM_TIMEOUT,
        ..Call::new(Method::GET, &path)
    };
    let mut reply = client.send(&call).await?;
    let url = reply.url().to_string();
    loop {
        match reply.chunk().await {
            Ok(Some(bytes)) => {
                out.write_all(&bytes)?;
                out.flush()?;
                *offset += bytes.len() as u64;
            }
            Ok(None) => return Ok(()),
            Err(e) => {
                return Err(CliError::Transport {
                    method: "GET".into(),
                    url,
                    message: error_chain(&e),
                })
            }
        }
    }
}

async fn run_status(client: &Client, run_path: &str) -> Result<Option<RunStatus>, CliError> {
    let data = client.get(run_path).await?;
    Ok(data["run"]["status"].as_str().and_then(|s| s.parse().ok()))
}

fn render_run(r: &Value) -> String {
    let head = fields(&[
        ("run", cell(&r["name"])),
        ("status", cell(&r["status"])),
        ("queue reason", cell(&r["queue_reason"])),
        ("failure", cell(&r["failure_reason"])),
        ("worker", cell(&r["worker"])),
        ("host-tag", cell(&r["host_tag"])),
        ("created", time(&r["created"])),
        ("started", time(&r["started"])),
        ("completed", time(&r["completed"])),
        ("took", duration(&r["started"], &r["completed"])),
        (
            "log",
            format!("{} ({} bytes)", cell(&r["log_url"]), cell(&r["log_bytes"])),
        ),
    ]);
    let tests: Vec<Vec<String>> = list(r, "tests")
        .iter()
        .map(|t| vec![cell(&t["name"]), cell(&t["status"]), cell(&t["results"])])
        .collect();
    let artifacts: Vec<Vec<String>> = list(r, "artifacts")
        .iter()
        .map(|a| vec![cell(&a["path"]), cell(&a["size"])])
        .collect();
    let mut text = head;
    if !tests.is_empty() {
        text.push('\n');
        text.push_str(&table(&["TEST", "STATUS", "RESULTS"], &tests));
    }
    if !artifacts.is_empty() {
        text.push('\n');
        text.push_str(&table(&["ARTIFACT", "BYTES"], &artifacts));
    }
    text
}
