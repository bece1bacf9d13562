//! The simulator: executes a run definition on a laptop with every server call switched off. It runs the very
//! same [`execute_run`] as the worker; only the reporter differs: [`LocalReporter`] writes the console to stdout
//! and `WORKSPACE/console.log`, tests to `WORKSPACE/tests.json`, and leaves artifacts in `WORKSPACE/archive`.
use crate::config::RunnerOptions;
use crate::error::{Result, WorkerError};
use crate::runner::{execute_run, Artifact, ConsoleChunk, ControlReply, RunOutcome, RunReporter};
use jobserv_protocol::api::TestReport;
use jobserv_protocol::RunDef;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub struct LocalReporter {
    dir: PathBuf,
    echo: bool,
    console: Mutex<std::fs::File>,
    tests: Mutex<Vec<TestReport>>,
}

impl LocalReporter {
    /// Starts a fresh `dir/console.log`; `echo` also copies the console to stdout.
    pub fn new(dir: &Path, echo: bool) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(WorkerError::io_path("creating", dir))?;
        let path = dir.join("console.log");
        let file = std::fs::File::create(&path).map_err(WorkerError::io_path("creating", &path))?;
        Ok(LocalReporter {
            dir: dir.to_path_buf(),
            echo,
            console: Mutex::new(file),
            tests: Mutex::new(Vec::new()),
        })
    }
}

impl RunReporter for LocalReporter {
    async fn append_console(&self, chunk: ConsoleChunk<'_>) -> Result<ControlReply> {
        if chunk.bytes.is_empty() {
            return Ok(ControlReply::default());
        }
        let mut file = self.console.lock().unwrap_or_else(|p| p.into_inner());
        file.write_all(chunk.bytes)
            .map_err(WorkerError::io("writing console.log"))?;
        if self.echo {
            let mut stdout = std::io::stdout().lock();
            // A closed stdout (piped into `head`) must not fail the run.
            let _ = stdout.write_all(chunk.bytes).and_then(|_| stdout.flush());
        }
        Ok(ControlReply::default())
    }

    async fn report_tests(&self, tests: &[TestReport]) -> Result<()> {
        let mut all = self.tests.lock().unwrap_or_else(|p| p.into_inner());
        all.extend_from_slice(tests);
        let path = self.dir.join("tests.json");
        let json = serde_json::to_vec_pretty(&*all)?;
        std::fs::write(&path, json).map_err(WorkerError::io_path("writing", &path))
    }

    async fn upload_artifacts(&self, artifacts: &[Artifact]) -> Result<()> {
        let archive = self.dir.join("archive");
        for a in artifacts {
            let dest = archive.join(&a.path);
            if std::path::absolute(&dest).ok() == std::path::absolute(&a.file).ok() {
                // The simulator's workspace archive already is the destination.
                continue;
            }
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(WorkerError::io_path("creating", parent))?;
            }
            std::fs::copy(&a.file, &dest)
                .map_err(WorkerError::io_path("copying artifact to", &dest))?;
        }
        Ok(())
    }
}

/// `jobserv-worker simulate RUNDEF.json --workspace DIR` with the docker executor.
pub async fn simulate(rundef_path: &Path, workspace: &Path) -> Result<RunOutcome> {
    let text = std::fs::read_to_string(rundef_path)
        .map_err(WorkerError::io_path("reading", rundef_path))?;
    let rundef: RunDef = serde_json::from_str(&text)
        .map_err(|e| WorkerError::RunDef(format!("{}: {e}", rundef_path.display())))?;
    simulate_with(rundef, workspace, RunnerOptions::new(workspace), true).await
}

/// The simulator with a parsed run definition and explicit options (executor, timeout override). Persistent
/// volumes live under `opts.data_dir`. `echo` copies the console to stdout.
pub async fn simulate_with(
    mut rundef: RunDef,
    workspace: &Path,
    opts: RunnerOptions,
    echo: bool,
) -> Result<RunOutcome> {
    rundef.simulated = true;
    let reporter = LocalReporter::new(workspace, echo)?;
    execute_run(&rundef, &reporter, &opts, workspace).await
}

/// `jobserv-worker simulate-project PROJECT.yml --trigger T [--run R] [--param K=V…]`: what to simulate.
#[derive(Clone, Debug, Default)]
pub struct ProjectSimulation {
    pub trigger: String,
    /// Only the run with this name (after `loop-on` expansion); all runs of the trigger when `None`.
    pub run: Option<String>,
    /// Trigger-event parameters (`GIT_URL`, `GIT_SHA`, …), highest precedence as on the server.
    pub params: std::collections::BTreeMap<String, String>,
    pub secrets: std::collections::BTreeMap<String, String>,
}

/// Expands the trigger with the shared project parser (the server's own expansion) and simulates each run, one
/// after the other, in `workspace/<run>/`. Returns every run's name and outcome.
pub async fn simulate_project(
    project_yml: &Path,
    sim: &ProjectSimulation,
    workspace: &Path,
    opts: RunnerOptions,
    echo: bool,
) -> Result<Vec<(String, RunOutcome)>> {
    use jobserv_protocol::project::parse_project;
    let yaml = std::fs::read_to_string(project_yml)
        .map_err(WorkerError::io_path("reading", project_yml))?;
    let definition = parse_project(&yaml)
        .map_err(|e| WorkerError::RunDef(format!("{}: {e}", project_yml.display())))?;
    let specs = definition
        .expand_trigger(&sim.trigger, &sim.params)
        .map_err(|e| WorkerError::RunDef(format!("trigger {}: {e}", sim.trigger)))?;
    let project = project_yml
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "project".to_string());
    let selected: Vec<_> = specs
        .into_iter()
        .filter(|s| sim.run.as_deref().is_none_or(|r| r == s.name))
        .collect();
    if selected.is_empty() {
        return Err(WorkerError::RunDef(format!(
            "trigger {} has no run named {}",
            sim.trigger,
            sim.run.as_deref().unwrap_or("?")
        )));
    }
    let mut outcomes = Vec::new();
    for spec in selected {
        let mut env = spec.env.clone();
        env.insert("H_PROJECT".into(), project.clone());
        env.insert("H_BUILD".into(), "1".into());
        env.insert("H_RUN".into(), spec.name.clone());
        let rundef = RunDef {
            version: jobserv_protocol::rundef::RUNDEF_VERSION,
            project: project.clone(),
            build: 1,
            run: spec.name.clone(),
            timeout: spec.timeout_minutes,
            api_key: None,
            run_url: format!("simulated://{project}/builds/1/runs/{}/", spec.name),
            run_urls: Vec::new(),
            frontend_url: String::new(),
            runner_url: String::new(),
            trigger_type: spec.trigger_type.as_str().to_string(),
            container: spec.container.clone(),
            container_auth: spec.container_auth.clone(),
            privileged: spec.privileged,
            container_user: spec.container_user.clone(),
            container_entrypoint: spec.container_entrypoint.clone(),
            env,
            secrets: sim.secrets.clone(),
            script: spec.script.clone(),
            script_repo: spec.script_repo.clone(),
            test_grepping: spec.test_grepping.clone(),
            persistent_volumes: spec.persistent_volumes.clone(),
            shared_volumes: spec.shared_volumes.clone(),
            host_tag: spec.host_tag.clone(),
            console_progress: spec.console_progress.clone(),
            simulated: true,
        };
        let run_ws = workspace.join(crate::runner::workspace::sanitize(&spec.name));
        let outcome = simulate_with(rundef, &run_ws, opts.clone(), echo).await?;
        outcomes.push((spec.name, outcome));
    }
    Ok(outcomes)
}
