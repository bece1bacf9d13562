//! Every process `cluster-test` starts dies with it: when it is interrupted (SIGINT, SIGTERM), when a phase
//! fails, and when it is SIGKILLed itself (`PR_SET_PDEATHSIG`). The real binary, real node processes, no
//! Docker (`up --workers 0`, and the crash loop's single node). Each check waits on a condition with a
//! deadline; the tests run one at a time (they would starve 2 cores together).
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

struct Run {
    child: Child,
    log: PathBuf,
}

impl Run {
    /// `cluster-test --bin-dir BIN_DIR ARGS…`, its output in `log`.
    fn start(bin_dir: &Path, log: PathBuf, args: &[&str]) -> Run {
        let out = std::fs::File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_cluster-test"))
            .arg("--bin-dir")
            .arg(bin_dir)
            .args(args)
            .stdout(out.try_clone().expect("log file"))
            .stderr(out)
            .spawn()
            .expect("start cluster-test");
        Run { child, log }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on our own (unreaped) child.
        assert_eq!(
            unsafe { libc::kill(self.child.id() as libc::pid_t, sig) },
            0
        );
    }

    /// Panics (with its output) if cluster-test has already exited.
    fn assert_running(&mut self, waiting_for: &str) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "cluster-test exited ({status}) while waiting for {waiting_for}:\n{}",
                self.output()
            );
        }
    }

    fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let what = "cluster-test to exit";
        let status = wait_until(what, timeout, || self.child.try_wait().ok().flatten());
        eprintln!(
            "cluster-test exited ({status}); its output:\n{}",
            self.output()
        );
        status
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `probe` every 50 ms until it gives a value; panics naming `what` after `timeout`.
fn wait_until<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether `pid` is a live process (not gone, not a zombie): the harness's own check.
fn alive(pid: u32) -> bool {
    cluster_test::local_cluster::alive(u64::from(pid))
}

/// Live processes (pid, command line) whose command line mentions `dir`: every node and worker of a cluster
/// under `dir` has its config or data dir there.
fn processes_under(dir: &Path) -> Vec<(u32, String)> {
    let needle = dir.to_string_lossy().to_string();
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() || !alive(pid) {
            continue;
        }
        let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
        if cmdline.contains(&needle) {
            found.push((pid, cmdline));
        }
    }
    found
}

fn wait_none_under(dir: &Path, why: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = processes_under(dir);
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{why}: still running 30 s later: {left:#?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn bin_dir() -> PathBuf {
    cluster_test::harness::bin_dir(None).expect("jobserv-node built")
}

/// The node pids of `dir/cluster.json`, once it lists `n` of them.
fn listed_node_pids(dir: &Path, n: usize) -> Option<Vec<u32>> {
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("cluster.json")).ok()?).ok()?;
    let pids: Vec<u32> = doc["nodes"]
        .as_array()?
        .iter()
        .filter_map(|node| node["pid"].as_u64().map(|p| p as u32))
        .collect();
    (pids.len() == n).then_some(pids)
}

#[test]
fn up_stops_every_node_on_sigint() {
    let _serial = serial();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("cluster");
    let dir_arg = dir.to_string_lossy().to_string();
    let mut run = Run::start(
        &bin_dir(),
        tmp.path().join("cluster-test.log"),
        &["up", "--nodes", "3", "--workers", "0", "--dir", &dir_arg],
    );
    let pids = wait_until(
        "cluster.json listing 3 nodes",
        Duration::from_secs(120),
        || {
            run.assert_running("cluster.json");
            listed_node_pids(&dir, 3)
        },
    );
    for pid in &pids {
        assert!(alive(*pid), "node pid {pid} of cluster.json is not running");
    }
    run.signal(libc::SIGINT);
    let status = run.wait_exit(Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "`up` ends normally on SIGINT");
    wait_until(
        &format!("the nodes of cluster.json ({pids:?}) to be gone"),
        Duration::from_secs(30),
        || pids.iter().all(|p| !alive(*p)).then_some(()),
    );
    wait_none_under(&dir, "after SIGINT to `up`");
}

/// Starts an endless `cluster-test crash-loop` working under `tmp/work` and waits until its node process
/// runs; returns the command and its work dir.
fn crash_loop_with_a_node(tmp: &Path) -> (Run, PathBuf) {
    let dir = tmp.join("work");
    let dir_arg = dir.to_string_lossy().to_string();
    let mut run = Run::start(
        &bin_dir(),
        tmp.join("cluster-test.log"),
        &["crash-loop", "--iterations", "1000000", "--dir", &dir_arg],
    );
    wait_until(
        "the crash loop's node process",
        Duration::from_secs(60),
        || {
            run.assert_running("its node");
            processes_under(&dir)
                .into_iter()
                .find(|(_, cmd)| cmd.contains("jobserv-node"))
        },
    );
    (run, dir)
}

/// A command other than `up`: SIGTERM stops what it started and exits 143.
#[test]
fn a_running_command_stops_its_processes_on_sigterm() {
    let _serial = serial();
    let tmp = tempfile::tempdir().expect("tempdir");
    let (mut run, dir) = crash_loop_with_a_node(tmp.path());
    run.signal(libc::SIGTERM);
    let status = run.wait_exit(Duration::from_secs(60));
    assert_eq!(status.code(), Some(143), "128 + SIGTERM");
    wait_none_under(&dir, "after SIGTERM to `crash-loop`");
}

/// cluster-test SIGKILLed: nothing can run in it, the kernel kills its children (PR_SET_PDEATHSIG).
#[test]
fn children_die_with_a_sigkilled_cluster_test() {
    let _serial = serial();
    let tmp = tempfile::tempdir().expect("tempdir");
    let (mut run, dir) = crash_loop_with_a_node(tmp.path());
    run.signal(libc::SIGKILL);
    let status = run.wait_exit(Duration::from_secs(30));
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
    wait_none_under(&dir, "after SIGKILL to cluster-test");
}

/// A phase fails after the nodes are up (no `jobserv-worker` binary to start): the error path stops the nodes
/// and the exit status is 1.
#[test]
fn a_failed_phase_stops_what_was_started() {
    let _serial = serial();
    let tmp = tempfile::tempdir().expect("tempdir");
    let bins = tmp.path().join("bin");
    std::fs::create_dir_all(&bins).expect("bin dir");
    std::os::unix::fs::symlink(bin_dir().join("jobserv-node"), bins.join("jobserv-node"))
        .expect("symlink jobserv-node");
    let dir = tmp.path().join("cluster");
    let dir_arg = dir.to_string_lossy().to_string();
    let mut run = Run::start(
        &bins,
        tmp.path().join("cluster-test.log"),
        &[
            "up",
            "--nodes",
            "3",
            "--workers",
            "1",
            "--executor",
            "host",
            "--dir",
            &dir_arg,
        ],
    );
    let status = run.wait_exit(Duration::from_secs(120));
    let output = run.output();
    assert_eq!(status.code(), Some(1), "an error exits 1");
    assert!(
        output.contains("jobserv-worker"),
        "the error names the missing worker binary: {output}"
    );
    // The workers are started once every node answered `wait_ready`: the nodes were serving.
    for id in 1..=3 {
        let log = std::fs::read_to_string(dir.join(format!("node-{id}.log"))).unwrap_or_default();
        assert!(
            log.contains("starting service"),
            "node {id} was started before the phase failed: {log}"
        );
    }
    wait_none_under(&dir, "after the failed phase");
}
