//! The runner: executes one [`RunDef`] and reports everything through a [`RunReporter`]. The worker and the
//! simulator call the same [`execute_run`]; only the reporter differs.
//!
//! Steps: console stanza (how to recreate the run in the simulator) and RUNNING → workspace (secrets, script,
//! git checkout, volumes) → executor (docker or host) with the timeout and cancellation watched → tests
//! (`/archive/junit.xml*` and `test-grepping`) → UPLOADING and artifacts → PASSED or FAILED.
//!
//! Result rule: a run PASSES iff the script exited 0, it was neither cancelled nor timed out, nothing failed
//! in the runner, and no test result FAILED (JobServ's rule: a failing test fails the run).
//!
//! Invariant: any error that is not the reporter's own becomes a FAILED run with the error in the console; a
//! reporter error ([`WorkerError::Report`]) stops the run at once (the container is killed), since nobody can
//! receive its results any more.
pub mod console;
pub mod docker;
pub mod grep;
pub mod host;
pub mod junit;
pub mod mask;
pub mod report;
pub mod workspace;

pub use report::{Artifact, ConsoleChunk, ControlReply, MemoryReporter, RunReporter};

use crate::config::{ExecutorKind, RunnerOptions};
use crate::error::{Result, WorkerError};
use bytes::Bytes;
use console::Console;
use jobserv_protocol::api::TestReport;
use jobserv_protocol::rundef::RUNDEF_VERSION;
use jobserv_protocol::{RunDef, RunStatus};
use std::path::Path;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use workspace::Workspace;

/// Where an executor sends the script's raw output (stdout and stderr, interleaved as they come).
pub type ExecOutput = mpsc::Sender<Bytes>;

/// What an executor needs to start the script.
#[derive(Clone, Debug)]
pub struct ExecSpec {
    pub rundef: RunDef,
    pub workspace: Workspace,
    pub worker_name: String,
    /// The worker's (absolute) data dir: together with the name it identifies this worker on an engine that
    /// other workers — possibly of other clusters, with the same names — share.
    pub worker_home: String,
    /// [`run_id`] of the run: names the container and the worker's `runs/<id>` directory.
    pub run_id: String,
    /// `RunnerOptions::file_owner`.
    pub file_owner: Option<(u32, u32)>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RunOutcome {
    pub status: RunStatus,
    pub exit_code: Option<i64>,
    /// Why the run failed when the exit code does not say it (timeout, cancel, runner error).
    pub reason: Option<String>,
    pub tests: Vec<TestReport>,
    /// Paths of the uploaded artifacts.
    pub artifacts: Vec<String>,
}

/// A file-system and container-name safe id for the run: `<project>-<build>-<run>`.
pub fn run_id(rundef: &RunDef) -> String {
    workspace::sanitize(&format!(
        "{}-{}-{}",
        rundef.project, rundef.build, rundef.run
    ))
}

/// The first lines of every console log.
pub fn simulator_stanza(rundef: &RunDef) -> String {
    let url = format!("{}.rundef.json", rundef.run_url);
    format!(
        "# To recreate this run locally with the simulator (same script, container and environment):\n\
         #   curl -fsSL -H \"Authorization: Token $JOBSERV_TOKEN\" -o .rundef.json {url}\n\
         #   jobserv-worker simulate .rundef.json --workspace /tmp/{}\n\
         # Secret values are removed from the download: fill in \"secrets\" in .rundef.json first.\n",
        run_id(rundef)
    )
}

/// Executes `rundef` in `workspace_dir` (created if needed) and reports through `reporter`. Returns the outcome
/// after the final status was acknowledged; `Err` only when the reporter failed.
pub async fn execute_run<R: RunReporter>(
    rundef: &RunDef,
    reporter: &R,
    opts: &RunnerOptions,
    workspace_dir: &Path,
) -> Result<RunOutcome> {
    let span = tracing::info_span!("run", project = %rundef.project, build = rundef.build, run = %rundef.run,
        worker = %opts.worker_name);
    execute_inner(rundef, reporter, opts, workspace_dir)
        .instrument(span)
        .await
}

async fn execute_inner<R: RunReporter>(
    rundef: &RunDef,
    reporter: &R,
    opts: &RunnerOptions,
    workspace_dir: &Path,
) -> Result<RunOutcome> {
    let masker = mask::Masker::new(rundef.secrets.values().map(String::as_str));
    let mut console = Console::new(reporter, masker, opts.flush_bytes);
    console.write(simulator_stanza(rundef).as_bytes()).await?;
    match opts.executor {
        ExecutorKind::Docker => {
            console
                .note(&format!("== executor: docker, image {}", rundef.container))
                .await?
        }
        ExecutorKind::Host => {
            console
                .note("== executor: host (no container isolation)")
                .await?
        }
    }
    let mut failure: Option<String> = None;
    if let Some(progress) = &rundef.console_progress {
        match regex::Regex::new(&progress.progress_pattern) {
            Ok(re) => console = console.with_progress(Some(re)),
            Err(err) => {
                console
                    .note(&format!("== warning: invalid progress-pattern: {err}"))
                    .await?
            }
        }
    }
    if let Some(grepping) = &rundef.test_grepping {
        match grep::TestGrepper::new(grepping) {
            Ok(g) => console.grepper = Some(g),
            Err(err) => failure = Some(format!("invalid test-grepping pattern: {err}")),
        }
    }
    if rundef.version > RUNDEF_VERSION {
        failure = Some(format!(
            "run definition version {} is newer than this worker understands ({RUNDEF_VERSION}): upgrade the worker",
            rundef.version
        ));
    }
    console.flush(Some(RunStatus::Running)).await?;
    tracing::info!("run started");

    let mut exit_code = None;
    let mut archive_dir = None;
    if failure.is_none() {
        match prepare_and_supervise(rundef, opts, workspace_dir, &mut console).await {
            Ok((code, reason, archive)) => {
                exit_code = Some(code);
                failure = reason;
                archive_dir = Some(archive);
                console
                    .note(&format!("== script exited with code {code}"))
                    .await?;
            }
            Err(WorkerError::Report(msg)) => return Err(WorkerError::Report(msg)),
            Err(err) => failure = Some(err.to_string()),
        }
    }
    if let Some(reason) = &failure {
        console.note(&format!("== run failed: {reason}")).await?;
    }

    let mut tests = console
        .grepper
        .take()
        .map(grep::TestGrepper::into_reports)
        .unwrap_or_default();
    if let Some(archive) = &archive_dir {
        tests.extend(junit_reports(archive));
    }
    if !tests.is_empty() {
        if let Err(err) = reporter.report_tests(&tests).await {
            failure.get_or_insert_with(|| format!("reporting tests failed: {err}"));
            console
                .note(&format!("== reporting tests failed: {err}"))
                .await?;
        }
    }

    let mut uploaded = Vec::new();
    if let Some(archive) = &archive_dir {
        let artifacts = collect_artifacts(archive);
        if !artifacts.is_empty() {
            console
                .note(&format!("== uploading {} artifact(s)", artifacts.len()))
                .await?;
            console.flush(Some(RunStatus::Uploading)).await?;
            match reporter.upload_artifacts(&artifacts).await {
                Ok(()) => uploaded = artifacts.into_iter().map(|a| a.path).collect(),
                Err(err) => {
                    console
                        .note(&format!("== uploading artifacts failed: {err}"))
                        .await?;
                    failure.get_or_insert_with(|| format!("uploading artifacts failed: {err}"));
                }
            }
        }
    }

    let failed_tests = tests.iter().any(|t| t.status == RunStatus::Failed);
    let status = if exit_code == Some(0) && failure.is_none() && !failed_tests {
        RunStatus::Passed
    } else {
        RunStatus::Failed
    };
    if failed_tests && exit_code == Some(0) && failure.is_none() {
        console.note("== some tests failed").await?;
    }
    console.note(&format!("== result: {status}")).await?;
    console.finish(status).await?;
    tracing::info!(%status, "run finished");
    Ok(RunOutcome {
        status,
        exit_code,
        reason: failure,
        tests,
        artifacts: uploaded,
    })
}

/// Prepares the workspace and runs the script to its end. Returns the exit code, why the runner stopped it
/// (timeout, cancel) if it did, and the archive directory.
async fn prepare_and_supervise<R: RunReporter>(
    rundef: &RunDef,
    opts: &RunnerOptions,
    workspace_dir: &Path,
    console: &mut Console<'_, R>,
) -> Result<(i64, Option<String>, std::path::PathBuf)> {
    // Docker bind mounts need absolute paths.
    let workspace_dir =
        std::path::absolute(workspace_dir).map_err(WorkerError::io("resolving the workspace"))?;
    let mut opts = opts.clone();
    opts.data_dir =
        std::path::absolute(&opts.data_dir).map_err(WorkerError::io("resolving the data dir"))?;
    let ws = Workspace::prepare(rundef, &workspace_dir, &opts, console).await?;
    let archive = ws.archive_dir.clone();
    let spec = ExecSpec {
        rundef: rundef.clone(),
        workspace: ws,
        worker_name: opts.worker_name.clone(),
        worker_home: opts.data_dir.display().to_string(),
        run_id: run_id(rundef),
        file_owner: opts.file_owner,
    };
    let (tx, mut rx) = mpsc::channel::<Bytes>(64);
    let kill = CancellationToken::new();
    // If this future is dropped or returns early (reporter failure), the executor kills the script.
    let _kill_on_exit = kill.clone().drop_guard();
    let executor = opts.executor;
    let exec_kill = kill.clone();
    let task = tokio::spawn(
        async move {
            match executor {
                ExecutorKind::Docker => docker::run(spec, tx, exec_kill).await,
                ExecutorKind::Host => host::run(spec, tx, exec_kill).await,
            }
        }
        .in_current_span(),
    );

    let timeout = opts
        .timeout_override
        .unwrap_or_else(|| Duration::from_secs(rundef.timeout.saturating_mul(60)));
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut tick = tokio::time::interval(opts.flush_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stopped: Option<String> = None;
    loop {
        tokio::select! {
            chunk = rx.recv() => match chunk {
                Some(bytes) => console.write(&bytes).await?,
                None => break,
            },
            _ = tick.tick() => console.tick(opts.heartbeat).await?,
            _ = &mut deadline, if stopped.is_none() => {
                let reason = format!("timed out after {}", human(timeout));
                console.note(&format!("== {reason}: killing the script")).await?;
                tracing::warn!("{reason}");
                stopped = Some(reason);
                kill.cancel();
            }
        }
        if console.cancelled() && stopped.is_none() {
            console.note("== run cancelled: killing the script").await?;
            tracing::info!("run cancelled");
            stopped = Some("cancelled".to_string());
            kill.cancel();
        }
    }
    let code = task
        .await
        .map_err(|e| WorkerError::Config(format!("executor task failed: {e}")))??;
    Ok((code, stopped, archive))
}

fn human(d: Duration) -> String {
    let secs = d.as_secs();
    if secs >= 60 && secs.is_multiple_of(60) {
        format!("{} minute(s)", secs / 60)
    } else {
        format!("{secs} second(s)")
    }
}

fn junit_reports(archive: &Path) -> Vec<TestReport> {
    let Ok(entries) = std::fs::read_dir(archive) else {
        return Vec::new();
    };
    let mut files: Vec<_> = entries
        .flatten()
        .filter(|e| junit::is_junit_file(&e.file_name().to_string_lossy()))
        .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
        .map(|e| e.path())
        .collect();
    files.sort();
    files.iter().flat_map(|f| junit::parse_file(f)).collect()
}

/// Regular files under `archive`, sorted. Symlinks are skipped: a script must not make the worker upload a host
/// file the link points to.
pub fn collect_artifacts(archive: &Path) -> Vec<Artifact> {
    let mut found = Vec::new();
    let mut stack = vec![(archive.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let name = entry.file_name().to_string_lossy().into_owned();
            let rel = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            if kind.is_dir() {
                stack.push((entry.path(), rel));
            } else if kind.is_file() {
                let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
                found.push(Artifact {
                    path: rel,
                    file: entry.path(),
                    size,
                });
            }
        }
    }
    found.sort_by(|a, b| a.path.cmp(&b.path));
    found
}
