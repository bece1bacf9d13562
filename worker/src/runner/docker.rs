//! The docker executor: one container per run, through the local Docker engine (bollard).
//!
//! Invariants:
//! - Every container carries `jobserv.run=<project>/<build>/<run>`, `jobserv.worker=<worker>` and
//!   `jobserv.run-dir=<id>` labels, so a restarted worker finds (and kills) exactly its own orphans.
//! - The container is removed when the run ends, whatever happened (a kill included).
//! - The image is used when present; otherwise it is pulled, with `container-auth` credentials if set.
use super::workspace::{
    Workspace, CONTAINER_ARCHIVE, CONTAINER_REPO, CONTAINER_SCRIPT_DIR, CONTAINER_SECRETS,
};
use super::{ExecOutput, ExecSpec};
use crate::error::{Result, WorkerError};
use bollard::auth::DockerCredentials;
use bollard::container::LogOutput;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, CreateImageOptionsBuilder,
    KillContainerOptionsBuilder, RemoveContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use bollard::Docker;
use futures::StreamExt;
use jobserv_protocol::RunDef;
use std::collections::HashMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub const LABEL_RUN: &str = "jobserv.run";
pub const LABEL_WORKER: &str = "jobserv.worker";
pub const LABEL_RUN_DIR: &str = "jobserv.run-dir";
pub const LABEL_HOME: &str = "jobserv.worker-home";

/// Connects to the local engine and agrees on an API version (the engine here may be older than bollard).
pub async fn connect() -> Result<Docker> {
    let docker = Docker::connect_with_local_defaults()?;
    Ok(docker.negotiate_version().await?)
}

pub async fn run(spec: ExecSpec, out: ExecOutput, kill: CancellationToken) -> Result<i64> {
    let docker = connect().await?;
    let rundef = &spec.rundef;
    ensure_image(&docker, rundef, &out).await?;

    let name = format!("jobserv-{}-{:08x}", spec.run_id, rand::random::<u32>());
    let config = container_config(&spec);
    let created = docker
        .create_container(
            Some(CreateContainerOptionsBuilder::new().name(&name).build()),
            config,
        )
        .await?;
    let id = created.id;
    let result = run_created(&docker, &id, &out, &kill).await;
    if let Some(owner) = spec.file_owner {
        if let Err(err) = hand_back_files(&docker, &spec, owner).await {
            tracing::warn!("handing the run's files back to {owner:?} failed: {err}");
        }
    }
    // Removal is best effort: a leftover container is reaped by label on the next start.
    let remove = RemoveContainerOptionsBuilder::new()
        .force(true)
        .v(true)
        .build();
    if let Err(err) = docker.remove_container(&id, Some(remove)).await {
        tracing::warn!(container = %id, "removing container failed: {err}");
    }
    result
}

async fn run_created(
    docker: &Docker,
    id: &str,
    out: &ExecOutput,
    kill: &CancellationToken,
) -> Result<i64> {
    // Attach before starting so that no early output is lost. `logs` stays off: with logs=true Docker
    // replays the log file *and* streams, and output written while the replay runs arrives twice (the
    // chaos suite caught a duplicated first line). Attached before start, the stream alone has it all.
    let attach = AttachContainerOptionsBuilder::new()
        .stdout(true)
        .stderr(true)
        .stream(true)
        .logs(false)
        .build();
    let mut output = docker.attach_container(id, Some(attach)).await?.output;
    docker.start_container(id, None).await?;

    let mut killed = false;
    loop {
        tokio::select! {
            item = output.next() => match item {
                Some(Ok(LogOutput::StdOut { message } | LogOutput::StdErr { message } | LogOutput::Console { message })) => {
                    if out.send(message).await.is_err() {
                        // The runner is gone: nobody reads the output any more, stop the container.
                        kill.cancel();
                    }
                }
                Some(Ok(LogOutput::StdIn { .. })) => {}
                Some(Err(err)) => {
                    tracing::warn!(container = %id, "reading container output: {err}");
                    break;
                }
                None => break,
            },
            _ = kill.cancelled(), if !killed => {
                killed = true;
                let opts = KillContainerOptionsBuilder::new().signal("SIGKILL").build();
                if let Err(err) = docker.kill_container(id, Some(opts)).await {
                    tracing::warn!(container = %id, "killing container: {err}");
                }
            }
        }
    }
    wait_exit_code(docker, id).await
}

async fn wait_exit_code(docker: &Docker, id: &str) -> Result<i64> {
    let opts = WaitContainerOptionsBuilder::new()
        .condition("not-running")
        .build();
    let mut wait = docker.wait_container(id, Some(opts));
    let waited = tokio::time::timeout(Duration::from_secs(30), wait.next()).await;
    match waited {
        Ok(Some(Ok(resp))) => Ok(resp.status_code),
        // bollard reports a non-zero exit as an error carrying the code.
        Ok(Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. }))) => Ok(code),
        Ok(Some(Err(err))) => Err(err.into()),
        Ok(None) | Err(_) => {
            let inspect = docker.inspect_container(id, None).await?;
            Ok(inspect.state.and_then(|s| s.exit_code).unwrap_or(-1))
        }
    }
}

/// `chown -R uid:gid` of every directory the run's container could write (archive, repository, volumes),
/// as root in a container of the run's image: what a root container wrote, a non-root worker can then
/// read and delete.
async fn hand_back_files(docker: &Docker, spec: &ExecSpec, (uid, gid): (u32, u32)) -> Result<()> {
    let writable: Vec<String> = container_config(spec)
        .host_config
        .and_then(|h| h.binds)
        .unwrap_or_default()
        .into_iter()
        .filter(|b| !b.ends_with(":ro"))
        .collect();
    let mut cmd = vec!["-R".to_string(), format!("{uid}:{gid}")];
    cmd.extend(
        writable
            .iter()
            .filter_map(|b| b.rsplit_once(':').map(|(_, c)| c.to_string())),
    );
    let config = ContainerCreateBody {
        image: Some(spec.rundef.container.clone()),
        entrypoint: Some(vec!["chown".to_string()]),
        cmd: Some(cmd),
        user: Some("0".to_string()),
        labels: Some(HashMap::from([
            (LABEL_WORKER.to_string(), spec.worker_name.clone()),
            (LABEL_HOME.to_string(), spec.worker_home.clone()),
            (LABEL_RUN_DIR.to_string(), spec.run_id.clone()),
        ])),
        host_config: Some(HostConfig {
            binds: Some(writable),
            ..Default::default()
        }),
        ..Default::default()
    };
    let name = format!(
        "jobserv-{}-chown-{:08x}",
        spec.run_id,
        rand::random::<u32>()
    );
    let created = docker
        .create_container(
            Some(CreateContainerOptionsBuilder::new().name(&name).build()),
            config,
        )
        .await?;
    let result = async {
        docker.start_container(&created.id, None).await?;
        wait_exit_code(docker, &created.id).await
    }
    .await;
    let remove = RemoveContainerOptionsBuilder::new()
        .force(true)
        .v(true)
        .build();
    let _ = docker.remove_container(&created.id, Some(remove)).await;
    match result? {
        0 => Ok(()),
        code => Err(WorkerError::HandBack(format!("chown exited with {code}"))),
    }
}

fn container_config(spec: &ExecSpec) -> ContainerCreateBody {
    let rundef = &spec.rundef;
    let ws: &Workspace = &spec.workspace;
    let script_in_container = format!("{CONTAINER_SCRIPT_DIR}/script");
    let cmd = if ws.shebang {
        vec![script_in_container]
    } else {
        vec!["/bin/sh".to_string(), script_in_container]
    };
    let mut binds = vec![
        format!("{}:{CONTAINER_SCRIPT_DIR}:ro", ws.script_dir.display()),
        format!("{}:{CONTAINER_SECRETS}:ro", ws.secrets_dir.display()),
        format!("{}:{CONTAINER_ARCHIVE}", ws.archive_dir.display()),
    ];
    if let Some(repo) = &ws.repo_dir {
        binds.push(format!("{}:{CONTAINER_REPO}", repo.display()));
    }
    for (host, container) in &ws.volumes {
        binds.push(format!("{}:{container}", host.display()));
    }
    let labels = HashMap::from([
        (
            LABEL_RUN.to_string(),
            format!("{}/{}/{}", rundef.project, rundef.build, rundef.run),
        ),
        (LABEL_WORKER.to_string(), spec.worker_name.clone()),
        (LABEL_HOME.to_string(), spec.worker_home.clone()),
        (LABEL_RUN_DIR.to_string(), spec.run_id.clone()),
    ]);
    let entrypoint = rundef.container_entrypoint.as_ref().map(|e| {
        let parts: Vec<String> = e.split_whitespace().map(str::to_string).collect();
        // Docker resets the image's entrypoint when given exactly [""].
        if parts.is_empty() {
            vec![String::new()]
        } else {
            parts
        }
    });
    ContainerCreateBody {
        image: Some(rundef.container.clone()),
        cmd: Some(cmd),
        entrypoint,
        user: rundef.container_user.clone().filter(|u| !u.is_empty()),
        env: Some(rundef.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        working_dir: ws.repo_dir.as_ref().map(|_| CONTAINER_REPO.to_string()),
        labels: Some(labels),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        tty: Some(false),
        open_stdin: Some(false),
        host_config: Some(HostConfig {
            binds: Some(binds),
            privileged: Some(rundef.privileged),
            // Reaps zombies and forwards signals: scripts start background jobs.
            init: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn ensure_image(docker: &Docker, rundef: &RunDef, out: &ExecOutput) -> Result<()> {
    if docker.inspect_image(&rundef.container).await.is_ok() {
        return Ok(());
    }
    let reference = with_default_tag(&rundef.container);
    let _ = out
        .send(
            format!("== pulling image {reference}\n")
                .into_bytes()
                .into(),
        )
        .await;
    let credentials = match &rundef.container_auth {
        Some(secret_name) => Some(credentials(rundef, secret_name)?),
        None => None,
    };
    let opts = CreateImageOptionsBuilder::new()
        .from_image(&reference)
        .build();
    let mut progress = docker.create_image(Some(opts), None, credentials);
    while let Some(item) = progress.next().await {
        let info = item?;
        if let Some(err) = info.error_detail.and_then(|d| d.message) {
            return Err(WorkerError::Config(format!("pulling {reference}: {err}")));
        }
    }
    Ok(())
}

/// Without a tag, the engine would pull every tag of the repository.
fn with_default_tag(image: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    if last.contains(':') || last.contains('@') {
        image.to_string()
    } else {
        format!("{image}:latest")
    }
}

/// Registry credentials from the secret named by `container-auth`: JSON (`{"username", "password",
/// "serveraddress"}`, or a docker `config.json` with `auths`), or `user:password`.
fn credentials(rundef: &RunDef, secret_name: &str) -> Result<DockerCredentials> {
    let value = rundef
        .secrets
        .get(secret_name)
        .ok_or_else(|| {
            WorkerError::RunDef(format!(
                "container-auth names secret {secret_name:?}, which is not set"
            ))
        })?
        .trim();
    if let Ok(json) = serde_json::from_str::<serde_json::Value>(value) {
        let entry = match json.get("auths").and_then(|a| a.as_object()) {
            Some(auths) => auths.iter().next().map(|(server, v)| {
                let mut v = v.clone();
                if let Some(obj) = v.as_object_mut() {
                    obj.entry("serveraddress")
                        .or_insert_with(|| server.clone().into());
                }
                v
            }),
            None => Some(json),
        };
        let field = |name: &str| {
            entry
                .as_ref()
                .and_then(|e| e.get(name))
                .and_then(|v| v.as_str())
                .map(str::to_string)
        };
        return Ok(DockerCredentials {
            username: field("username"),
            password: field("password"),
            auth: field("auth"),
            serveraddress: field("serveraddress"),
            ..Default::default()
        });
    }
    match value.split_once(':') {
        Some((user, password)) => Ok(DockerCredentials {
            username: Some(user.to_string()),
            password: Some(password.to_string()),
            ..Default::default()
        }),
        None => Err(WorkerError::RunDef(format!(
            "secret {secret_name:?} is neither JSON credentials nor user:password"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_tag_is_added_only_when_missing() {
        assert_eq!(with_default_tag("busybox"), "busybox:latest");
        assert_eq!(with_default_tag("busybox:1.36"), "busybox:1.36");
        assert_eq!(
            with_default_tag("localhost:5000/x"),
            "localhost:5000/x:latest"
        );
        assert_eq!(with_default_tag("x@sha256:ab"), "x@sha256:ab");
    }
}
