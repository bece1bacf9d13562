//! Helpers shared by the worker's integration tests: the locally built busybox image, run definitions, options.
#![allow(dead_code)]
pub mod fake_node;
use jobserv_protocol::rundef::RUNDEF_VERSION;
use jobserv_protocol::RunDef;
use jobserv_worker::runner::MemoryReporter;
use jobserv_worker::{execute_run, ExecutorKind, RunOutcome, RunnerOptions};
use std::path::Path;
use std::sync::Once;
use std::time::Duration;

static IMAGE: Once = Once::new();

/// Builds `busybox:latest` from the Debian package once per test binary. Docker must work: no skipping.
pub fn busybox_image() {
    IMAGE.call_once(|| {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/build-busybox-image.sh"
        );
        let status = std::process::Command::new("sh").arg(script).status();
        match status {
            Ok(s) if s.success() => {}
            other => {
                panic!("{script} failed ({other:?}): Docker must be reachable for these tests")
            }
        }
    });
}

pub fn rundef(project: &str, script: &str) -> RunDef {
    RunDef {
        version: RUNDEF_VERSION,
        project: project.to_string(),
        build: 1,
        run: "unit".to_string(),
        timeout: 5,
        api_key: Some("run-key".into()),
        run_url: format!("https://node-1.example:8443/projects/{project}/builds/1/runs/unit/"),
        run_urls: Vec::new(),
        frontend_url: String::new(),
        runner_url: String::new(),
        trigger_type: "simple".into(),
        container: "busybox:latest".into(),
        container_auth: None,
        privileged: false,
        container_user: None,
        container_entrypoint: None,
        env: [
            ("H_PROJECT".to_string(), project.to_string()),
            ("H_BUILD".to_string(), "1".to_string()),
            ("H_RUN".to_string(), "unit".to_string()),
        ]
        .into(),
        secrets: Default::default(),
        script: Some(script.to_string()),
        script_repo: None,
        test_grepping: None,
        persistent_volumes: Default::default(),
        shared_volumes: Default::default(),
        host_tag: "*".into(),
        console_progress: None,
        simulated: false,
    }
}

pub fn options(data_dir: &Path, executor: ExecutorKind) -> RunnerOptions {
    let mut opts = RunnerOptions::new(data_dir);
    opts.executor = executor;
    opts.worker_name = "worker-tests".into();
    // Small chunks and a quick heartbeat, so that chunking, masking across chunks and cancel are exercised.
    opts.flush_interval = Duration::from_millis(200);
    opts.heartbeat = Duration::from_millis(500);
    opts
}

/// Runs `rundef` with a [`MemoryReporter`] in a fresh workspace under `data_dir`.
pub async fn run_with(rundef: &RunDef, opts: &RunnerOptions) -> (RunOutcome, MemoryReporter) {
    busybox_image();
    let reporter = MemoryReporter::new();
    let ws = opts
        .data_dir
        .join(format!("ws-{}-{}", rundef.project, rand_suffix()));
    let outcome = execute_run(rundef, &reporter, opts, &ws)
        .await
        .expect("the memory reporter never fails");
    (outcome, reporter)
}

pub fn rand_suffix() -> u32 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
}

/// Containers still carrying this worker label and run (by `jobserv.run`).
pub async fn containers_of(run_label: &str) -> usize {
    use bollard::query_parameters::ListContainersOptionsBuilder;
    let docker = jobserv_worker::runner::docker::connect()
        .await
        .expect("docker");
    let filters = std::collections::HashMap::from([(
        "label".to_string(),
        vec![format!("jobserv.run={run_label}")],
    )]);
    let opts = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    docker
        .list_containers(Some(opts))
        .await
        .expect("list containers")
        .len()
}
