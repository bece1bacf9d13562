//! Self-update: when a check-in reply announces a newer worker version and no run is active, download
//! `GET {server}/worker` next to the running binary, check that it runs (`--version`), rename it over the
//! current binary and re-exec with the same arguments. Any failure leaves the running worker as it is.
use crate::client::NodeClient;
use crate::error::{Result, WorkerError};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

/// `1.2.10` > `1.2.9`; a pre-release/build suffix is ignored. Unparsable versions are never newer.
pub fn is_newer(candidate: &str, current: &str) -> bool {
    fn parse(v: &str) -> Option<Vec<u64>> {
        let core = v.trim().trim_start_matches('v').split(['-', '+']).next()?;
        core.split('.').map(|p| p.parse().ok()).collect()
    }
    match (parse(candidate), parse(current)) {
        (Some(a), Some(b)) => a > b,
        _ => false,
    }
}

/// Downloads, verifies and installs the new binary, then replaces this process. Returns only on failure.
pub async fn self_update(client: &NodeClient, version: &str) -> Result<()> {
    let current =
        std::env::current_exe().map_err(WorkerError::io("locating the running binary"))?;
    let dir = current
        .parent()
        .ok_or_else(|| WorkerError::Update("the running binary has no directory".into()))?;
    // Same directory as the binary, so the rename below is atomic.
    let staged = dir.join(format!(".jobserv-worker-{version}.new"));
    let bytes = client.download_worker().await?;
    std::fs::write(&staged, &bytes).map_err(WorkerError::io_path("writing", &staged))?;
    std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o755))
        .map_err(WorkerError::io_path("making executable", &staged))?;
    let check = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::process::Command::new(&staged)
            .arg("--version")
            .kill_on_drop(true)
            .output(),
    )
    .await;
    let ok = matches!(&check, Ok(Ok(out)) if out.status.success());
    if !ok {
        let _ = std::fs::remove_file(&staged);
        return Err(WorkerError::Update(format!(
            "the downloaded worker {version} does not run"
        )));
    }
    std::fs::rename(&staged, &current).map_err(WorkerError::io_path("replacing", &current))?;
    tracing::info!(version, "worker updated, restarting");
    use std::os::unix::process::CommandExt;
    let err = std::process::Command::new(&current)
        .args(std::env::args_os().skip(1))
        .exec();
    Err(WorkerError::Update(format!("re-exec failed: {err}")))
}

#[cfg(test)]
mod tests {
    use super::is_newer;

    #[test]
    fn versions_compare_numerically() {
        assert!(is_newer("0.1.10", "0.1.9"));
        assert!(is_newer("1.0.0", "0.9.9"));
        assert!(!is_newer("0.1.0", "0.1.0"));
        assert!(!is_newer("", "0.1.0"));
        assert!(!is_newer("0.1.0-rc1", "0.1.0"));
    }
}
