//! What a restarted worker does about its previous life: every container labelled `jobserv.worker=<name>` is
//! killed and removed, and every run whose definition is still saved in `DATA_DIR/runs/<id>/rundef.json` is
//! reported FAILED with reason "worker restarted" (appended at the console offset last acknowledged), then its
//! directory is removed. Host-executor runs leave no container; their saved runs are reported the same way.
use crate::client::{HttpReporter, NodeClient};
use crate::error::Result;
use crate::runner::docker::{self, LABEL_HOME, LABEL_WORKER};
use crate::runner::{ConsoleChunk, RunReporter};
use bollard::query_parameters::{ListContainersOptionsBuilder, RemoveContainerOptionsBuilder};
use jobserv_protocol::{RunDef, RunStatus};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const RESTART_REASON: &str = "worker restarted";

/// Kills this worker's leftover containers. Returns how many there were.
/// A container is this worker's when both its name and its data dir match: two workers with the same name
/// (of two clusters on one engine) never reap each other's runs.
pub async fn reap_containers(worker_name: &str, data_dir: &Path) -> Result<usize> {
    let docker = docker::connect().await?;
    let home = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    let filters = HashMap::from([(
        "label".to_string(),
        vec![
            format!("{LABEL_WORKER}={worker_name}"),
            format!("{LABEL_HOME}={}", home.display()),
        ],
    )]);
    let list = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    let containers = docker.list_containers(Some(list)).await?;
    for c in &containers {
        let Some(id) = c.id.as_deref() else { continue };
        tracing::warn!(
            container = id,
            "removing a container left by a previous run of this worker"
        );
        let opts = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(true)
            .build();
        if let Err(err) = docker.remove_container(id, Some(opts)).await {
            tracing::warn!(container = id, "removing orphan container: {err}");
        }
    }
    Ok(containers.len())
}

/// Moves every saved run directory out of `runs/` (to `abandoned/`), so that new runs can start at once
/// without racing the slow reporting of the old ones. Returns the moved directories.
pub fn take_saved_runs(data_dir: &Path) -> Vec<PathBuf> {
    let abandoned = data_dir.join("abandoned");
    let Ok(entries) = std::fs::read_dir(data_dir.join("runs")) else {
        return Vec::new();
    };
    let mut moved = Vec::new();
    for entry in entries.flatten() {
        if let Err(err) = std::fs::create_dir_all(&abandoned) {
            tracing::warn!("creating {}: {err}", abandoned.display());
            break;
        }
        let target = abandoned.join(format!(
            "{}-{:08x}",
            entry.file_name().to_string_lossy(),
            rand::random::<u32>()
        ));
        match std::fs::rename(entry.path(), &target) {
            Ok(()) => moved.push(target),
            Err(err) => tracing::warn!("moving {}: {err}", entry.path().display()),
        }
    }
    moved
}

/// Reports each taken run as FAILED and removes its directory. Runs in the background of the check-in loop.
pub async fn fail_saved_runs(dirs: Vec<PathBuf>, client: Arc<NodeClient>) {
    for dir in dirs {
        let rundef = std::fs::read_to_string(dir.join("rundef.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<RunDef>(&t).ok());
        if let Some(rundef) = rundef {
            let reporter =
                HttpReporter::new(client.clone(), rundef.clone(), Some(dir.join("offset")));
            let offset = reporter.saved_offset();
            let text =
                format!("\n== run failed: {RESTART_REASON} (the worker died while running it)\n");
            let chunk = ConsoleChunk {
                offset,
                bytes: text.as_bytes(),
                status: Some(RunStatus::Failed),
                metadata: None,
            };
            match reporter.append_console(chunk).await {
                Ok(_) => {
                    tracing::info!(run = %rundef.run, project = %rundef.project, "reported interrupted run FAILED")
                }
                Err(err) => {
                    tracing::warn!(run = %rundef.run, "could not report interrupted run: {err}")
                }
            }
        }
        if let Err(err) = std::fs::remove_dir_all(&dir) {
            tracing::warn!(dir = %dir.display(), "removing run directory: {err}");
        }
    }
}
