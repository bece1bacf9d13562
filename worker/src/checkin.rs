//! The worker's main loop: register once, then check in forever. Each check-in reports free slots and load and
//! long-polls (`wait=`) so that an idle worker gets a run within a fraction of a second; every run definition in
//! the reply starts a run task, up to `concurrency` at once.
//!
//! Invariants:
//! - A run definition is saved in `DATA_DIR/runs/<id>/rundef.json` before its run starts and removed when the
//!   final status was acknowledged, so a restarted worker knows which runs it abandoned ([`crate::recover`]).
//! - A run the worker already executes is never started twice (a node may re-send it after a fail-over).
//! - The worker key is generated once and kept in `DATA_DIR/worker.key` (mode 0600).
use crate::client::{CheckIn, HttpReporter, NodeClient};
use crate::config::{ExecutorKind, WorkerConfig};
use crate::error::{Result, WorkerError};
use crate::runner::{execute_run, run_id};
use crate::{facts, recover, update};
use jobserv_protocol::api::WorkerRegistration;
use jobserv_protocol::RunDef;
use std::collections::HashSet;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Runs the worker until the process ends.
pub async fn run_worker(config: WorkerConfig) -> Result<()> {
    run_worker_until(config, CancellationToken::new()).await
}

/// Runs the worker until `shutdown` is cancelled; active runs are then stopped (their containers killed).
pub async fn run_worker_until(config: WorkerConfig, shutdown: CancellationToken) -> Result<()> {
    let span = tracing::info_span!("worker", worker = %config.name);
    worker_loop(config, shutdown).instrument(span).await
}

/// Loads `DATA_DIR/worker.key`, creating it (48 random hex characters, mode 0600) on first start.
pub fn load_or_create_key(data_dir: &Path) -> Result<String> {
    let path = data_dir.join("worker.key");
    if let Ok(existing) = std::fs::read_to_string(&path) {
        let key = existing.trim().to_string();
        if !key.is_empty() {
            return Ok(key);
        }
    }
    let key = hex::encode(rand::random::<[u8; 24]>());
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .map_err(WorkerError::io_path("creating", &path))?;
    file.write_all(key.as_bytes())
        .map_err(WorkerError::io_path("writing", &path))?;
    Ok(key)
}

struct Slots {
    active: Mutex<HashSet<String>>,
    freed: Notify,
}

impl Slots {
    fn count(&self) -> usize {
        self.active.lock().map(|a| a.len()).unwrap_or(0)
    }
}

async fn worker_loop(config: WorkerConfig, shutdown: CancellationToken) -> Result<()> {
    if config.servers.is_empty() {
        return Err(WorkerError::Config(
            "at least one --server URL is needed".into(),
        ));
    }
    std::fs::create_dir_all(config.data_dir.join("runs"))
        .map_err(WorkerError::io_path("creating", &config.data_dir))?;
    let key = load_or_create_key(&config.data_dir)?;
    let client = Arc::new(NodeClient::new(&config, key.clone())?);

    if config.executor == ExecutorKind::Docker {
        match recover::reap_containers(&config.name, &config.data_dir).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::warn!("removed {n} container(s) left by a previous run of this worker")
            }
            Err(err) => tracing::error!("docker is not usable: {err}"),
        }
    }
    // Reported in the background: nodes may be unreachable right now, and that must not delay new work.
    let abandoned = recover::take_saved_runs(&config.data_dir);
    tokio::spawn(recover::fail_saved_runs(abandoned, client.clone()).in_current_span());

    let registration = WorkerRegistration {
        api_key: key,
        distro: facts::distro(),
        mem_total: facts::mem_total(),
        cpu_total: facts::cpu_total(),
        cpu_type: facts::cpu_type(),
        concurrent_runs: config.concurrency,
        host_tags: config.host_tags.clone(),
        surges_only: config.surges_only,
        version: crate::VERSION.to_string(),
    };
    register_until_done(&config, &client, &registration, &shutdown).await;

    let slots = Arc::new(Slots {
        active: Mutex::new(HashSet::new()),
        freed: Notify::new(),
    });
    let mut runs = JoinSet::new();
    let mut refused_update: Option<String> = None;
    while !shutdown.is_cancelled() {
        while runs.try_join_next().is_some() {}
        let free = (config.concurrency as usize).saturating_sub(slots.count());
        // With no free slot the check-in is only a heartbeat: do not ask the node to hold it.
        let wait = if free > 0 {
            config.checkin_wait
        } else {
            Duration::ZERO
        };
        let query = vec![
            ("available_runners", free.to_string()),
            ("load_avg_1", format!("{:.2}", facts::load_avg_1())),
            ("mem_free", facts::mem_free().to_string()),
            ("disk_free", facts::disk_free(&config.data_dir).to_string()),
            ("wait", wait.as_secs().to_string()),
        ];
        let asked = std::time::Instant::now();
        let result = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = client.check_in(&config.name, &query, wait) => r,
        };
        let pause = match result {
            Ok(CheckIn::Reply(reply)) => {
                client.learn_nodes(&reply.nodes);
                let got_runs = !reply.run_defs.is_empty();
                for rundef in reply.run_defs {
                    start_run(&config, &client, &slots, &mut runs, rundef);
                }
                if config.self_update
                    && slots.count() == 0
                    && update::is_newer(&reply.version, crate::VERSION)
                    && refused_update.as_deref() != Some(reply.version.as_str())
                {
                    tracing::info!(version = %reply.version, "a newer worker is available: updating");
                    if let Err(err) = update::self_update(&client, &reply.version).await {
                        tracing::error!("self-update failed, keeping this version: {err}");
                        refused_update = Some(reply.version.clone());
                    }
                }
                if !reply.enlisted {
                    tracing::debug!("not enlisted yet");
                    Some(config.checkin_pause)
                } else if (config.concurrency as usize) <= slots.count() {
                    Some(config.checkin_pause)
                } else if !got_runs && asked.elapsed() < wait / 2 {
                    // The node answered at once with nothing (no long-poll): do not hammer it.
                    Some(config.checkin_pause)
                } else {
                    None
                }
            }
            Ok(CheckIn::NotRegistered) => {
                tracing::warn!("the cluster does not know this worker: registering again");
                register_until_done(&config, &client, &registration, &shutdown).await;
                None
            }
            Err(err) => {
                tracing::warn!("check-in failed: {err}");
                Some(config.checkin_pause)
            }
        };
        if let Some(pause) = pause {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(pause) => {}
                _ = slots.freed.notified() => {}
            }
        }
    }
    // Dropping the run futures kills their scripts (see runner::prepare_and_supervise).
    runs.shutdown().await;
    tracing::info!("worker stopped");
    Ok(())
}

async fn register_until_done(
    config: &WorkerConfig,
    client: &NodeClient,
    registration: &WorkerRegistration,
    shutdown: &CancellationToken,
) {
    loop {
        match client.register(&config.name, registration).await {
            Ok(()) => return,
            Err(err) => tracing::warn!("registration failed: {err}"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(config.checkin_pause) => {}
        }
    }
}

fn start_run(
    config: &WorkerConfig,
    client: &Arc<NodeClient>,
    slots: &Arc<Slots>,
    runs: &mut JoinSet<()>,
    mut rundef: RunDef,
) {
    // As JobServ's worker does: a script can tell which worker runs it.
    rundef
        .env
        .entry("H_WORKER".to_string())
        .or_insert_with(|| config.name.clone());
    let id = run_id(&rundef);
    let newly_added = slots
        .active
        .lock()
        .map(|mut a| a.insert(id.clone()))
        .unwrap_or(false);
    if !newly_added {
        tracing::info!(run = %id, "run already active here: ignoring the repeated assignment");
        return;
    }
    let run_dir = config.data_dir.join("runs").join(&id);
    let opts = config.runner_options();
    let client = client.clone();
    let slots = slots.clone();
    let span = tracing::info_span!("run", project = %rundef.project, build = rundef.build, run = %rundef.run);
    runs.spawn(
        async move {
            if let Err(err) = save_rundef(&run_dir, &rundef) {
                tracing::error!(
                    "cannot save the run definition (a restart would not report this run): {err}"
                );
            }
            let reporter = HttpReporter::new(client, rundef.clone(), Some(run_dir.join("offset")));
            match execute_run(&rundef, &reporter, &opts, &run_dir.join("ws")).await {
                Ok(outcome) => tracing::info!(status = %outcome.status, "run complete"),
                Err(err) => tracing::error!("run abandoned: {err}"),
            }
            if let Err(err) = std::fs::remove_dir_all(&run_dir) {
                tracing::warn!("removing {}: {err}", run_dir.display());
            }
            if let Ok(mut active) = slots.active.lock() {
                active.remove(&id);
            }
            slots.freed.notify_one();
        }
        .instrument(span),
    );
}

fn save_rundef(run_dir: &Path, rundef: &RunDef) -> Result<()> {
    std::fs::create_dir_all(run_dir).map_err(WorkerError::io_path("creating", run_dir))?;
    let path = run_dir.join("rundef.json");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        // It holds the run key and the secrets.
        .mode(0o600)
        .open(&path)
        .map_err(WorkerError::io_path("creating", &path))?;
    file.write_all(&serde_json::to_vec(rundef)?)
        .map_err(WorkerError::io_path("writing", &path))
}
