//! `jobserv-worker execute RUNDEF`: executes one run that somebody else was assigned, against the cluster,
//! exactly as the check-in loop would (console with offsets, status, tests, artifacts, masked secrets). It is
//! what the runner package served to JobServ's Python workers calls (`node/src/legacy/`): their check-in
//! hands out the run, this process runs it. The run key in the run definition is the only credential needed.
use crate::client::{HttpReporter, NodeClient};
use crate::config::{RunnerOptions, WorkerConfig};
use crate::error::{Result, WorkerError};
use crate::runner::{execute_run, RunOutcome};
use jobserv_protocol::RunDef;
use std::path::Path;
use std::sync::Arc;

/// Where to run and how to reach the cluster.
pub struct ExecuteOptions {
    pub runner: RunnerOptions,
    pub ca_cert: Option<std::path::PathBuf>,
    pub insecure: bool,
}

/// Runs `rundef` in `workspace` and reports to the nodes named in the definition (`run_url`, `run_urls`).
/// `Ok` once the final status was acknowledged, whatever that status is.
pub async fn execute_assigned(
    rundef: RunDef,
    workspace: &Path,
    opts: ExecuteOptions,
) -> Result<RunOutcome> {
    let servers: Vec<String> = std::iter::once(&rundef.run_url)
        .chain(rundef.run_urls.iter())
        .filter_map(|u| node_base(u))
        .collect();
    if servers.is_empty() {
        return Err(WorkerError::Config(format!(
            "run_url {:?}: not an http(s) URL",
            rundef.run_url
        )));
    }
    let mut config = WorkerConfig::new(
        servers,
        opts.runner.worker_name.clone(),
        opts.runner.data_dir.clone(),
    );
    config.ca_cert = opts.ca_cert;
    config.insecure = opts.insecure;
    // No worker key: every call of the run protocol is authorised by the run key alone.
    let client = Arc::new(NodeClient::new(&config, String::new())?);
    let reporter = HttpReporter::new(client, rundef.clone(), None);
    // The caller may have written to the console already ("Setting up runner on worker"): continue after it.
    let base = reporter.console_length().await?;
    let reporter = reporter.with_console_base(base);
    execute_run(&rundef, &reporter, &opts.runner, workspace).await
}

/// `https://host:port` of a node URL.
fn node_base(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("https://")
        .map(|r| ("https", r))
        .or_else(|| url.strip_prefix("http://").map(|r| ("http", r)))?;
    let host = rest.1.split('/').next().filter(|h| !h.is_empty())?;
    Some(format!("{}://{host}", rest.0))
}

#[cfg(test)]
mod tests {
    use super::node_base;

    #[test]
    fn node_base_keeps_scheme_host_and_port() {
        assert_eq!(
            node_base("https://n1:8443/projects/p/builds/1/runs/r/").as_deref(),
            Some("https://n1:8443")
        );
        assert_eq!(node_base("http://h").as_deref(), Some("http://h"));
        assert_eq!(node_base("ftp://h/x"), None);
        assert_eq!(node_base("https:///x"), None);
    }
}
