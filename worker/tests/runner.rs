//! The runner against the real Docker engine (busybox image built locally by scripts/build-busybox-image.sh).
//! Docker must be reachable: these tests fail, never skip, without it.
mod common;

use common::*;
use jobserv_protocol::rundef::{ConsoleProgress, ScriptRepo, TestGrepping};
use jobserv_protocol::RunStatus;
use jobserv_worker::{ExecutorKind, RunnerOptions};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

#[tokio::test]
async fn passing_script_passes_with_stanza_env_and_contiguous_chunks() {
    let dir = tmp();
    let rd = rundef(
        "pass",
        "#!/bin/sh -e\necho hello from $H_PROJECT/$H_RUN\nid -u\n",
    );
    let (outcome, reporter) = run_with(&rd, &options(dir.path(), ExecutorKind::Docker)).await;
    let log = reporter.console_text();
    assert_eq!(outcome.status, RunStatus::Passed, "{log}");
    assert_eq!(outcome.exit_code, Some(0));
    assert!(log.starts_with("# To recreate this run locally"), "{log}");
    assert!(
        log.contains("jobserv-worker simulate .rundef.json"),
        "{log}"
    );
    assert!(
        log.contains(&format!("{}.rundef.json", rd.run_url)),
        "{log}"
    );
    assert!(log.contains("hello from pass/unit"), "{log}");
    let state = reporter.snapshot();
    assert_eq!(state.statuses.first(), Some(&RunStatus::Running));
    assert_eq!(state.statuses.last(), Some(&RunStatus::Passed));
    let mut expected = 0;
    for (offset, len) in &state.chunks {
        assert_eq!(*offset, expected);
        expected += *len as u64;
    }
}

#[tokio::test]
async fn failing_script_fails_with_its_exit_code() {
    let dir = tmp();
    let (outcome, reporter) = run_with(
        &rundef("fail", "echo about to fail\nexit 3\n"),
        &options(dir.path(), ExecutorKind::Docker),
    )
    .await;
    assert_eq!(outcome.status, RunStatus::Failed);
    assert_eq!(outcome.exit_code, Some(3));
    assert!(reporter
        .console_text()
        .contains("script exited with code 3"));
    assert_eq!(
        reporter.snapshot().statuses.last(),
        Some(&RunStatus::Failed)
    );
}

#[tokio::test]
async fn container_user_and_cleared_entrypoint_are_applied() {
    let dir = tmp();
    let mut rd = rundef("user", "id -u\ntouch /archive/by-nobody\n");
    rd.container_user = Some("nobody".into());
    rd.container_entrypoint = Some(String::new());
    let (outcome, reporter) = run_with(&rd, &options(dir.path(), ExecutorKind::Docker)).await;
    let log = reporter.console_text();
    assert_eq!(outcome.status, RunStatus::Passed, "{log}");
    assert!(log.contains("\n65534\n"), "{log}");
    assert_eq!(outcome.artifacts, vec!["by-nobody".to_string()]);
}

#[tokio::test]
async fn timeout_kills_the_container_and_fails_the_run() {
    let dir = tmp();
    let mut opts = options(dir.path(), ExecutorKind::Docker);
    opts.timeout_override = Some(Duration::from_secs(2));
    let rd = rundef("timeout", "echo sleeping\nsleep 120\necho never\n");
    busybox_image(); // built (or waited for) before the clock starts
    let started = Instant::now();
    let (outcome, reporter) = run_with(&rd, &opts).await;
    let log = reporter.console_text();
    assert_eq!(outcome.status, RunStatus::Failed, "{log}");
    assert!(
        outcome
            .reason
            .as_deref()
            .unwrap_or("")
            .contains("timed out"),
        "{outcome:?}"
    );
    assert!(log.contains("timed out after 2 second(s)"), "{log}");
    assert!(!log.contains("never"));
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(
        containers_of("timeout/1/unit").await,
        0,
        "the container must be gone"
    );
}

#[tokio::test]
async fn cancel_from_the_server_stops_the_container() {
    let dir = tmp();
    let opts = options(dir.path(), ExecutorKind::Docker);
    let rd = rundef("cancel", "echo started\nsleep 120\necho never\n");
    busybox_image();
    let reporter = Arc::new(jobserv_worker::runner::MemoryReporter::new());
    let canceller = reporter.clone();
    let cancelled_at = Arc::new(std::sync::OnceLock::<Instant>::new());
    let at = cancelled_at.clone();
    tokio::spawn(async move {
        // Like a node whose run was cancelled: once the script runs, every console reply says cancel.
        while !canceller.console_text().contains("started") {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = at.set(Instant::now());
        canceller.cancel.store(true, Ordering::SeqCst);
    });
    let outcome = jobserv_worker::execute_run(&rd, &*reporter, &opts, &dir.path().join("ws"))
        .await
        .expect("run");
    let cancelled = *cancelled_at
        .get()
        .expect("the script printed `started` and was cancelled");
    assert_eq!(outcome.status, RunStatus::Failed);
    assert_eq!(outcome.reason.as_deref(), Some("cancelled"));
    // The script sleeps 120 s: ending well before that is the cancel's doing (measured from the cancel, so
    // a slow container start does not count).
    assert!(
        cancelled.elapsed() < Duration::from_secs(30),
        "the run ended {:?} after the cancel",
        cancelled.elapsed()
    );
    assert!(reporter.console_text().contains("run cancelled"));
    assert_eq!(containers_of("cancel/1/unit").await, 0);
}

#[tokio::test]
async fn secrets_are_files_and_never_appear_in_the_log() {
    let dir = tmp();
    // The script prints the first half of a secret, then waits (on /sync/go) until the runner has posted
    // the bytes before it — so the secret really arrives in two reads, whatever the machine's speed. The
    // masker holds back the last (longest secret - 1 = 26) bytes, so the marker is followed by more.
    let mut rd = rundef(
        "secrets",
        "[ \"$(cat /secrets/single)\" = s3cr3t-value ] && echo FILE-OK\n\
         cat /secrets/single; echo\n\
         cat /secrets/multi\n\
         grep two /secrets/multi\n\
         printf 'SPLIT-MARKER ........................................\\nsplit: s3cr3'\n\
         while [ ! -e /sync/go ]; do sleep 0.05; done\n\
         printf 't-value done\\n'\n",
    );
    rd.secrets.insert("single".into(), "s3cr3t-value".into());
    rd.secrets
        .insert("multi".into(), "line-one-AAAA\nline-two-BBBB\n".into());
    let sync = dir.path().join("sync");
    std::fs::create_dir_all(&sync).expect("mkdir sync");
    rd.shared_volumes
        .insert(sync.display().to_string(), "/sync".into());
    busybox_image();
    let opts = options(dir.path(), ExecutorKind::Docker);
    let reporter = Arc::new(jobserv_worker::runner::MemoryReporter::new());
    let watcher = reporter.clone();
    let go = sync.join("go");
    let released = tokio::spawn(async move {
        let deadline = Instant::now() + Duration::from_secs(60);
        let seen = loop {
            if watcher.console_text().contains("SPLIT-MARKER") {
                break true;
            }
            if Instant::now() > deadline {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        std::fs::write(&go, b"").expect("write /sync/go");
        seen
    });
    let outcome = jobserv_worker::execute_run(&rd, &*reporter, &opts, &dir.path().join("ws"))
        .await
        .expect("run");
    assert!(
        released.await.expect("watcher"),
        "the marker before the split secret was never posted within 60 s:\n{}",
        reporter.console_text()
    );
    let log = reporter.console_text();
    assert_eq!(outcome.status, RunStatus::Passed, "{log}");
    assert!(log.contains("FILE-OK"), "{log}");
    for leaked in ["s3cr3t-value", "s3cr3t", "line-one-AAAA", "line-two-BBBB"] {
        assert!(!log.contains(leaked), "{leaked} leaked:\n{log}");
    }
    assert!(log.contains("split: *** done"), "{log}");
    // The split value really spanned more than one console chunk: the RUNNING one, the one with the marker
    // (posted before the script went on), and the rest.
    assert!(reporter.snapshot().chunks.len() >= 3);
}

#[tokio::test]
async fn archive_files_become_artifacts_and_junit_becomes_tests() {
    let dir = tmp();
    let script = r#"
echo result > /archive/out.txt
mkdir -p /archive/sub && echo nested > /archive/sub/b.txt
cat > /archive/junit.xml <<XML
<testsuite name="unit"><testcase name="ok"/><testcase name="bad"><failure message="boom"/></testcase></testsuite>
XML
"#;
    let (outcome, reporter) = run_with(
        &rundef("archive", script),
        &options(dir.path(), ExecutorKind::Docker),
    )
    .await;
    let state = reporter.snapshot();
    let mut paths: Vec<_> = state.artifacts.iter().map(|(p, _)| p.as_str()).collect();
    paths.sort();
    assert_eq!(paths, ["junit.xml", "out.txt", "sub/b.txt"]);
    assert!(state
        .artifacts
        .iter()
        .any(|(p, b)| p == "out.txt" && b == b"result\n"));
    assert_eq!(state.tests.len(), 1);
    assert_eq!(state.tests[0].name, "unit");
    assert_eq!(state.tests[0].results.len(), 2);
    assert!(state.statuses.contains(&RunStatus::Uploading));
    // Exit code 0, but a failed test fails the run (JobServ's rule).
    assert_eq!(outcome.exit_code, Some(0));
    assert_eq!(outcome.status, RunStatus::Failed);
}

#[tokio::test]
async fn test_grepping_and_console_progress_read_the_console() {
    let dir = tmp();
    let mut rd = rundef(
        "grep",
        "echo 'progress 1/2'\necho 'test-a: ok'\necho 'test-b: ok'\necho 'progress 2/2'\n",
    );
    rd.test_grepping = Some(TestGrepping {
        test_pattern: None,
        result_pattern: r"^(?P<name>test-\w+): (?P<result>\w+)$".into(),
        fixupdict: [("ok".to_string(), "PASSED".to_string())].into(),
    });
    rd.console_progress = Some(ConsoleProgress {
        progress_pattern: r"progress (?P<current>\d+)/(?P<total>\d+)".into(),
    });
    let (outcome, reporter) = run_with(&rd, &options(dir.path(), ExecutorKind::Docker)).await;
    assert_eq!(
        outcome.status,
        RunStatus::Passed,
        "{}",
        reporter.console_text()
    );
    assert_eq!(outcome.tests.len(), 1);
    assert_eq!(outcome.tests[0].name, "default");
    assert_eq!(outcome.tests[0].results.len(), 2);
    assert_eq!(
        reporter.snapshot().metadata.last().map(String::as_str),
        Some("2/2")
    );
}

#[tokio::test]
async fn persistent_volume_keeps_data_between_runs() {
    let dir = tmp();
    let opts = options(dir.path(), ExecutorKind::Docker);
    let mut first = rundef("volume", "echo kept > /cache/data\n");
    first
        .persistent_volumes
        .insert("cache".into(), "/cache".into());
    let (o1, _) = run_with(&first, &opts).await;
    assert_eq!(o1.status, RunStatus::Passed);
    let mut second = rundef("volume", "cat /cache/data\n");
    second.build = 2;
    second.persistent_volumes = first.persistent_volumes.clone();
    let (o2, reporter) = run_with(&second, &opts).await;
    assert_eq!(o2.status, RunStatus::Passed);
    assert!(
        reporter.console_text().contains("\nkept\n"),
        "{}",
        reporter.console_text()
    );
    assert!(dir.path().join("volumes/cache/data").exists());
}

/// A worker that is not root (a systemd unit's dedicated user) gets back what a root container wrote: the
/// run's files are handed to `file_owner` once the run is over, so it can read and delete them.
#[tokio::test]
async fn files_a_root_container_wrote_are_handed_back_to_the_worker_user() {
    use std::os::unix::fs::MetadataExt;
    let dir = tmp();
    let mut opts = options(dir.path(), ExecutorKind::Docker);
    opts.file_owner = Some((65534, 65533));
    let mut rd = rundef(
        "owner",
        "id -u\nmkdir -p /cache/sub\necho kept > /cache/sub/data\n",
    );
    rd.persistent_volumes
        .insert("cache".into(), "/cache".into());
    let (outcome, reporter) = run_with(&rd, &opts).await;
    assert_eq!(
        outcome.status,
        RunStatus::Passed,
        "{}",
        reporter.console_text()
    );
    assert!(
        reporter.console_text().contains("\n0\n"),
        "the run ran as root: {}",
        reporter.console_text()
    );
    for path in ["volumes/cache/sub", "volumes/cache/sub/data"] {
        let meta = std::fs::metadata(dir.path().join(path)).expect(path);
        assert_eq!((meta.uid(), meta.gid()), (65534, 65533), "{path}");
    }
}

#[tokio::test]
async fn simulator_output_equals_what_the_reporter_saw() {
    let dir = tmp();
    let opts = options(dir.path(), ExecutorKind::Docker);
    let mut rd = rundef(
        "simulate",
        "echo simulated output\necho art > /archive/a.txt\nseq 1 5\n",
    );
    rd.secrets.insert("tok".into(), "hidden-token".into());
    rd.script = Some(format!(
        "{}cat /secrets/tok\n",
        rd.script.unwrap_or_default()
    ));
    let (outcome, reporter) = run_with(&rd, &opts).await;
    assert_eq!(outcome.status, RunStatus::Passed);

    let sim_ws = dir.path().join("sim");
    let sim_opts = RunnerOptions {
        data_dir: sim_ws.clone(),
        ..opts.clone()
    };
    let sim = jobserv_worker::simulate_with(rd.clone(), &sim_ws, sim_opts, false)
        .await
        .expect("simulate");
    assert_eq!(sim.status, RunStatus::Passed);
    let console = std::fs::read(sim_ws.join("console.log")).expect("console.log");
    assert_eq!(String::from_utf8_lossy(&console), reporter.console_text());
    assert_eq!(
        std::fs::read_to_string(sim_ws.join("archive/a.txt")).expect("artifact"),
        "art\n"
    );
}

#[tokio::test]
async fn simulate_reads_a_rundef_file() {
    let dir = tmp();
    let rd = rundef("simfile", "echo from file\n");
    let path = dir.path().join(".rundef.json");
    std::fs::write(&path, serde_json::to_vec(&rd).expect("json")).expect("write");
    busybox_image();
    let ws = dir.path().join("ws");
    let outcome = jobserv_worker::simulate(&path, &ws)
        .await
        .expect("simulate");
    assert_eq!(outcome.status, RunStatus::Passed);
    assert!(std::fs::read_to_string(ws.join("console.log"))
        .expect("log")
        .contains("from file"));
}

#[tokio::test]
async fn host_executor_passes_a_simple_script() {
    let dir = tmp();
    let rd = rundef(
        "host",
        "echo on host $H_RUN\necho data > \"$ARCHIVE/h.txt\"\ncat \"$SECRETS/s\"\n",
    );
    let mut rd = rd;
    rd.secrets.insert("s".into(), "host-secret".into());
    let (outcome, reporter) = run_with(&rd, &options(dir.path(), ExecutorKind::Host)).await;
    let log = reporter.console_text();
    assert_eq!(outcome.status, RunStatus::Passed, "{log}");
    assert!(
        log.contains("executor: host (no container isolation)"),
        "{log}"
    );
    assert!(log.contains("on host unit"), "{log}");
    assert!(!log.contains("host-secret"), "{log}");
    assert_eq!(outcome.artifacts, vec!["h.txt".to_string()]);
}

#[tokio::test]
async fn host_executor_timeout_kills_the_process_group() {
    let dir = tmp();
    let mut opts = options(dir.path(), ExecutorKind::Host);
    opts.timeout_override = Some(Duration::from_secs(1));
    let (outcome, _) = run_with(&rundef("hosttimeout", "sleep 60 &\nsleep 60\n"), &opts).await;
    assert_eq!(outcome.status, RunStatus::Failed);
    assert!(outcome.reason.unwrap_or_default().contains("timed out"));
}

fn git(dir: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn local_repo(dir: &std::path::Path) -> (std::path::PathBuf, String) {
    let repo = dir.join("origin");
    std::fs::create_dir_all(repo.join("ci")).expect("mkdir");
    git(&repo, &["init", "-q"]);
    std::fs::write(repo.join("README"), "first\n").expect("write");
    std::fs::write(
        repo.join("ci/build.sh"),
        "#!/bin/sh\necho from script repo $H_RUN\n",
    )
    .expect("write");
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-qm", "one"]);
    let first = git(&repo, &["rev-parse", "HEAD"]);
    std::fs::write(repo.join("README"), "second\n").expect("write");
    git(&repo, &["commit", "-qam", "two"]);
    (repo, first)
}

#[tokio::test]
async fn git_trigger_checks_out_the_sha_into_repo() {
    let dir = tmp();
    let (repo, first) = local_repo(dir.path());
    let mut rd = rundef("gitrun", "pwd\ncat README\n");
    rd.trigger_type = "git_poller".into();
    rd.env.insert("GIT_URL".into(), repo.display().to_string());
    rd.env.insert("GIT_SHA".into(), first);
    let (outcome, reporter) = run_with(&rd, &options(dir.path(), ExecutorKind::Docker)).await;
    let log = reporter.console_text();
    assert_eq!(outcome.status, RunStatus::Passed, "{log}");
    assert!(log.contains("/repo\nfirst\n"), "{log}");
}

#[tokio::test]
async fn script_repo_script_is_fetched_and_run() {
    let dir = tmp();
    let (repo, _) = local_repo(dir.path());
    let mut rd = rundef("scriptrepo", "");
    rd.script = None;
    rd.script_repo = Some(ScriptRepo {
        clone_url: format!("file://{}", repo.display()),
        git_ref: Some("HEAD".into()),
        token: None,
        path: "ci/build.sh".into(),
    });
    let (outcome, reporter) = run_with(&rd, &options(dir.path(), ExecutorKind::Docker)).await;
    let log = reporter.console_text();
    assert_eq!(outcome.status, RunStatus::Passed, "{log}");
    assert!(log.contains("from script repo unit"), "{log}");
}

#[tokio::test]
async fn missing_image_that_cannot_be_pulled_fails_the_run_clearly() {
    let dir = tmp();
    let mut rd = rundef("noimage", "true\n");
    rd.container = "jobserv-test/does-not-exist:1".into();
    let (outcome, reporter) = run_with(&rd, &options(dir.path(), ExecutorKind::Docker)).await;
    assert_eq!(outcome.status, RunStatus::Failed);
    assert!(
        reporter.console_text().contains("run failed"),
        "{}",
        reporter.console_text()
    );
}

#[tokio::test]
async fn simulate_project_runs_an_example_trigger() {
    busybox_image();
    let dir = tmp();
    let yml = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/hello.yml");
    let sim = jobserv_worker::ProjectSimulation {
        trigger: "hello".into(),
        ..Default::default()
    };
    let opts = options(dir.path(), ExecutorKind::Docker);
    let outcomes = jobserv_worker::simulate_project(&yml, &sim, dir.path(), opts, false)
        .await
        .expect("simulate");
    assert_eq!(outcomes.len(), 1);
    let (name, outcome) = &outcomes[0];
    assert_eq!(outcome.status, RunStatus::Passed);
    assert_eq!(outcome.tests.len(), 1);
    let log = std::fs::read_to_string(dir.path().join(name).join("console.log")).expect("log");
    assert!(
        log.contains("hello, world from run hello of build 1 (hello)"),
        "{log}"
    );
    assert!(dir.path().join(name).join("archive/hello.txt").exists());
}
