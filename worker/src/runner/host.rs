//! The host executor: runs the script directly on this machine, in the run's workspace, for labs without Docker.
//! There is no isolation at all, and the console says so. Paths differ from the container layout, so the
//! script is told where things are through the environment:
//! `ARCHIVE` (the `/archive` equivalent), `SECRETS` (`/secrets`), `WORKSPACE`, `HOME`; persistent and shared
//! volumes are exposed as `VOLUME_<CONTAINER_PATH>` (non-alphanumerics as `_`), since the host cannot mount them
//! at their container paths.
//!
//! Invariant: the script runs in its own process group, and a kill takes the whole group down.
use super::{ExecOutput, ExecSpec};
use crate::error::{Result, WorkerError};
use bytes::Bytes;
use std::process::Stdio;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_util::sync::CancellationToken;

pub async fn run(spec: ExecSpec, out: ExecOutput, kill: CancellationToken) -> Result<i64> {
    let ws = &spec.workspace;
    let cwd = ws.repo_dir.clone().unwrap_or_else(|| ws.dir.join("work"));
    std::fs::create_dir_all(&cwd).map_err(WorkerError::io_path("creating", &cwd))?;

    let mut cmd = if ws.shebang {
        tokio::process::Command::new(&ws.script_file)
    } else {
        let mut c = tokio::process::Command::new("/bin/sh");
        c.arg(&ws.script_file);
        c
    };
    cmd.current_dir(&cwd)
        .env_clear()
        .env(
            "PATH",
            std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into()),
        )
        .env("HOME", &ws.home_dir)
        .env("WORKSPACE", &ws.dir)
        .env("ARCHIVE", &ws.archive_dir)
        .env("SECRETS", &ws.secrets_dir)
        .envs(&spec.rundef.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    for (host, container) in &ws.volumes {
        let key: String = container
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect();
        cmd.env(format!("VOLUME{key}"), host);
    }
    let mut child = cmd
        .spawn()
        .map_err(WorkerError::io("starting the script"))?;
    let pid = child.id();
    let readers = [
        child
            .stdout
            .take()
            .map(|s| tokio::spawn(pump(s, out.clone()))),
        child
            .stderr
            .take()
            .map(|s| tokio::spawn(pump(s, out.clone()))),
    ];
    drop(out);

    let status = tokio::select! {
        status = child.wait() => status.map_err(WorkerError::io("waiting for the script"))?,
        _ = kill.cancelled() => {
            if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
                // SAFETY: kill(2) with a negative pid signals the process group we created; no memory involved.
                unsafe { libc::kill(-pid, libc::SIGKILL) };
            }
            child.wait().await.map_err(WorkerError::io("waiting for the killed script"))?
        }
    };
    for reader in readers.into_iter().flatten() {
        // Background jobs of the script may keep the pipes open; do not wait for them forever.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), reader).await;
    }
    use std::os::unix::process::ExitStatusExt;
    Ok(match (status.code(), status.signal()) {
        (Some(code), _) => i64::from(code),
        (None, Some(signal)) => 128 + i64::from(signal),
        (None, None) => -1,
    })
}

async fn pump(mut reader: impl AsyncRead + Unpin, out: ExecOutput) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if out.send(Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                    return;
                }
            }
        }
    }
}
