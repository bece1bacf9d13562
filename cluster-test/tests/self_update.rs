//! Worker self-update, end to end: the node announces a newer worker version in its check-in reply and
//! serves the new binary at `GET /worker`; the (real) worker downloads it, checks that it runs, replaces
//! its own binary and re-executes itself with the same arguments. The "new release" here is a small
//! script standing in for a newer jobserv-worker: it answers `--version` and records how it was started.
use cluster_test::harness::{bin_dir, cluster_configs, random_token, spawn_owned, NodeProcess};
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_worker_downloads_the_new_binary_and_reexecutes_itself() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bins = bin_dir(None).expect("binaries built");
    let marker = dir.path().join("new-release-started");
    let new_release = dir.path().join("served-worker");
    std::fs::write(
        &new_release,
        format!("#!/bin/sh\nif [ \"$1\" = --version ]; then echo jobserv-worker 99.0.0; exit 0; fi\necho \"$@\" > {}\nexec sleep 30\n", marker.display()),
    )
    .expect("write new release");
    std::fs::set_permissions(&new_release, std::fs::Permissions::from_mode(0o755)).expect("chmod");

    let token = random_token();
    let mut config = cluster_configs(dir.path(), 1, &token, &random_token())
        .expect("config")
        .remove(0);
    config.worker_version = Some("99.0.0".into());
    config.worker_binary = Some(new_release.clone());
    let mut node = NodeProcess::new(config.clone(), &bins).expect("node");
    node.spawn().expect("spawn");
    node.wait_ready(Duration::from_secs(60))
        .await
        .expect("ready");

    // The worker runs from its own copy, which it will replace.
    let installed = dir.path().join("bin/jobserv-worker");
    std::fs::create_dir_all(installed.parent().expect("dir")).expect("mkdir");
    std::fs::copy(bins.join("jobserv-worker"), &installed).expect("install worker");
    // Killed (SIGKILL) when the test ends, whether it passed or not, or if the test process dies.
    let _worker = spawn_owned(
        std::process::Command::new(&installed)
            .args([
                "run",
                "--server",
                node.url(),
                "--name",
                "updating",
                "--executor",
                "host",
            ])
            .arg("--data-dir")
            .arg(dir.path().join("worker"))
            .arg("--ca-cert")
            .arg(&config.ca_cert),
    )
    .expect("start worker");

    let deadline = Instant::now() + Duration::from_secs(60);
    while !marker.exists() {
        assert!(
            Instant::now() < deadline,
            "the worker never re-executed into the new release"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let args = std::fs::read_to_string(&marker).expect("marker");
    assert!(
        args.starts_with("run --server") && args.contains("--name updating"),
        "re-executed with the same arguments: {args}"
    );
    assert_eq!(
        std::fs::read(&installed).expect("installed"),
        std::fs::read(&new_release).expect("served"),
        "the binary was replaced in place"
    );
}
