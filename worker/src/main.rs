//! `jobserv-worker`: thin CLI over the `jobserv_worker` library (see `lib.rs`).
use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use jobserv_worker::{ExecutorKind, RunnerOptions, WorkerConfig};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "jobserv-worker",
    version,
    about = "JobServ lab worker: runs CI jobs in containers"
)]
struct Cli {
    /// Log as JSON lines.
    #[arg(long, global = true, env = "JOBSERV_LOG_JSON")]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Register with the cluster and execute the runs it assigns.
    Run {
        /// Node URLs, comma-separated (more are learned from the cluster).
        #[arg(long, env = "JOBSERV_SERVER", value_delimiter = ',', required = true)]
        server: Vec<String>,
        #[arg(long, env = "JOBSERV_WORKER_NAME")]
        name: String,
        /// Host tags runs can select this worker by (repeatable).
        #[arg(long = "host-tag")]
        host_tags: Vec<String>,
        #[arg(long, default_value_t = 1)]
        concurrency: u32,
        #[arg(long, default_value = "docker")]
        executor: ExecutorKind,
        /// Holds the worker key, active runs and persistent volumes.
        #[arg(long, env = "JOBSERV_WORKER_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// PEM CA certificate of the cluster (added to the trusted roots).
        #[arg(long, env = "JOBSERV_CA_CERT")]
        ca_cert: Option<PathBuf>,
        /// Accept any TLS certificate (development only).
        #[arg(long)]
        insecure: bool,
        /// Only take runs when the queue is long.
        #[arg(long)]
        surges_only: bool,
        /// Never replace this binary with a newer one from the cluster.
        #[arg(long)]
        no_self_update: bool,
        /// Kill every run after this many seconds instead of its definition's timeout (testing).
        #[arg(long, env = "JOBSERV_RUN_TIMEOUT_SECONDS", hide = true)]
        run_timeout_seconds: Option<u64>,
    },
    /// Re-run one run definition locally, without any server.
    Simulate {
        rundef: PathBuf,
        /// Where the console log, artifacts and volumes go (default: ./simulate-workspace).
        #[arg(long)]
        workspace: Option<PathBuf>,
        #[arg(long, default_value = "docker")]
        executor: ExecutorKind,
        #[arg(long, env = "JOBSERV_RUN_TIMEOUT_SECONDS", hide = true)]
        run_timeout_seconds: Option<u64>,
    },
    /// Execute one assigned run definition against the cluster (what JobServ's Python worker calls through
    /// the runner package a node serves it). Exits 0 once the run's final status was acknowledged.
    Execute {
        rundef: PathBuf,
        /// The run's working directory (created).
        #[arg(long)]
        workspace: PathBuf,
        /// Persistent volumes live under DATA_DIR/volumes/<name>.
        #[arg(long)]
        data_dir: PathBuf,
        /// The worker's name (labels the run's containers).
        #[arg(long, default_value = "legacy")]
        name: String,
        #[arg(long, default_value = "docker")]
        executor: ExecutorKind,
        #[arg(long, env = "JOBSERV_CA_CERT")]
        ca_cert: Option<PathBuf>,
        #[arg(long)]
        insecure: bool,
        #[arg(long, env = "JOBSERV_RUN_TIMEOUT_SECONDS", hide = true)]
        run_timeout_seconds: Option<u64>,
    },
    /// Develop a project definition: expand a trigger and simulate its runs locally.
    SimulateProject {
        project: PathBuf,
        #[arg(long)]
        trigger: String,
        /// Only this run (after loop-on expansion).
        #[arg(long)]
        run: Option<String>,
        /// Trigger parameters, e.g. --param GIT_SHA=abc (repeatable).
        #[arg(long = "param", value_parser = key_value)]
        params: Vec<(String, String)>,
        /// Secret values, e.g. --secret githubtok=… (repeatable).
        #[arg(long = "secret", value_parser = key_value)]
        secrets: Vec<(String, String)>,
        /// Each run gets WORKSPACE/<run>/ (default: ./simulate-workspace).
        #[arg(long)]
        workspace: Option<PathBuf>,
        #[arg(long, default_value = "docker")]
        executor: ExecutorKind,
    },
}

fn key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))
}

fn default_data_dir() -> PathBuf {
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".jobserv-worker"),
        None => PathBuf::from("jobserv-worker-data"),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The simulators print the console on stdout; keep their own logging to warnings unless asked.
    let default_level = if matches!(cli.command, Command::Run { .. } | Command::Execute { .. }) {
        "info"
    } else {
        "warn"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if cli.log_json {
        builder.json().init();
    } else {
        builder.init();
    }

    match cli.command {
        Command::Run {
            server,
            name,
            host_tags,
            concurrency,
            executor,
            data_dir,
            ca_cert,
            insecure,
            surges_only,
            no_self_update,
            run_timeout_seconds,
        } => {
            if concurrency == 0 {
                bail!("--concurrency must be at least 1");
            }
            let mut config =
                WorkerConfig::new(server, name, data_dir.unwrap_or_else(default_data_dir));
            config.host_tags = host_tags;
            config.concurrency = concurrency;
            config.executor = executor;
            config.ca_cert = ca_cert;
            config.insecure = insecure;
            config.surges_only = surges_only;
            config.self_update = !no_self_update;
            config.run_timeout_override = run_timeout_seconds.map(Duration::from_secs);
            let shutdown = tokio_util::sync::CancellationToken::new();
            let on_signal = shutdown.clone();
            tokio::spawn(async move {
                wait_for_termination().await;
                on_signal.cancel();
            });
            jobserv_worker::run_worker_until(config, shutdown)
                .await
                .context("worker failed")?;
        }
        Command::Execute {
            rundef,
            workspace,
            data_dir,
            name,
            executor,
            ca_cert,
            insecure,
            run_timeout_seconds,
        } => {
            let text = std::fs::read_to_string(&rundef)
                .with_context(|| format!("reading {}", rundef.display()))?;
            let parsed: jobserv_protocol::RunDef = serde_json::from_str(&text)
                .with_context(|| format!("parsing {}", rundef.display()))?;
            let mut runner = RunnerOptions::new(data_dir);
            runner.executor = executor;
            runner.worker_name = name;
            runner.timeout_override = run_timeout_seconds.map(Duration::from_secs);
            let opts = jobserv_worker::execute::ExecuteOptions {
                runner,
                ca_cert,
                insecure,
            };
            let outcome = jobserv_worker::execute::execute_assigned(parsed, &workspace, opts)
                .await
                .context("the run could not be reported")?;
            eprintln!("run {}", outcome.status);
        }
        Command::SimulateProject {
            project,
            trigger,
            run,
            params,
            secrets,
            workspace,
            executor,
        } => {
            let workspace = workspace.unwrap_or_else(|| PathBuf::from("simulate-workspace"));
            let mut opts = RunnerOptions::new(workspace.clone());
            opts.executor = executor;
            let sim = jobserv_worker::ProjectSimulation {
                trigger,
                run,
                params: params.into_iter().collect(),
                secrets: secrets.into_iter().collect(),
            };
            let outcomes =
                jobserv_worker::simulate_project(&project, &sim, &workspace, opts, true).await?;
            let mut all_passed = true;
            for (name, outcome) in &outcomes {
                eprintln!("run {name}: {}", outcome.status);
                all_passed &= outcome.status == jobserv_protocol::RunStatus::Passed;
            }
            if !all_passed {
                std::process::exit(1);
            }
        }
        Command::Simulate {
            rundef,
            workspace,
            executor,
            run_timeout_seconds,
        } => {
            let workspace = workspace.unwrap_or_else(|| PathBuf::from("simulate-workspace"));
            let text = std::fs::read_to_string(&rundef)
                .with_context(|| format!("reading {}", rundef.display()))?;
            let parsed = serde_json::from_str(&text)
                .with_context(|| format!("parsing {}", rundef.display()))?;
            let mut opts = RunnerOptions::new(workspace.clone());
            opts.executor = executor;
            opts.timeout_override = run_timeout_seconds.map(Duration::from_secs);
            let outcome = jobserv_worker::simulate_with(parsed, &workspace, opts, true).await?;
            eprintln!(
                "simulated run {}: console in {}, artifacts in {}",
                outcome.status,
                workspace.join("console.log").display(),
                workspace.join("archive").display()
            );
            if outcome.status != jobserv_protocol::RunStatus::Passed {
                std::process::exit(1);
            }
        }
    }
    Ok(())
}

async fn wait_for_termination() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
