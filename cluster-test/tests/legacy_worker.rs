//! JobServ's own lab worker, unmodified (`jobserv_worker.py` from foundriesio/jobserv, used from
//! `shared/compat/jobserv-worker/`, never copied into this repository), against a real 3-node cluster:
//! it registers, is enlisted, checks in and runs a build to PASSED — console, tests and an artifact — through
//! the runner wheel the node serves it (whose handler runs our Rust runner). Then the nodes are restarted one
//! by one with `legacy_worker_upgrade = true`, the worker replaces itself with the hand-over script on its
//! next check-in, and our `jobserv-worker` carries on under the same name and key and runs the next build.
use cluster_test::harness::{bin_dir, repo_root, spawn_owned, OwnedChild};
use cluster_test::local_cluster::{ClusterOptions, LocalCluster};
use reqwest::Method;
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const PROJECT: &str = "legacy";
const DEFINITION: &str = r#"
timeout: 5
triggers:
  - name: hello
    type: simple
    runs:
      - name: hello
        container: busybox:latest
        host-tag: pylab
        script: hello
scripts:
  hello: |
    #!/bin/sh -e
    echo "hello from $H_WORKER, build $H_BUILD"
    echo "payload of build $H_BUILD" > /archive/hello.txt
    cat > /archive/junit.xml <<EOF
    <?xml version="1.0" encoding="UTF-8"?>
    <testsuite name="legacy" tests="2" failures="0">
      <testcase classname="legacy" name="first"/>
      <testcase classname="legacy" name="second"/>
    </testsuite>
    EOF
"#;

/// JobServ's worker script. `JOBSERV_LEGACY_WORKER_PY` overrides the path; a missing file fails the test.
fn jobserv_worker_py() -> PathBuf {
    let path = std::env::var_os("JOBSERV_LEGACY_WORKER_PY")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared/compat/jobserv-worker/jobserv_worker.py"));
    assert!(
        path.is_file(),
        "JobServ's jobserv_worker.py not found at {} (set JOBSERV_LEGACY_WORKER_PY)",
        path.display()
    );
    path
}

/// A python3 that has `requests` (the worker's only dependency): `JOBSERV_TEST_PYTHON` (`.ci/run` sets
/// its venv's), else `python3`. Without one the test fails, it does not skip.
fn python() -> String {
    let python = std::env::var("JOBSERV_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&python)
        .args(["-c", "import requests"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{python} cannot import requests: set JOBSERV_TEST_PYTHON to a python3 with requests installed"
    );
    python
}

struct PythonWorker {
    dir: PathBuf,
    python: String,
    ca_cert: PathBuf,
}

impl PythonWorker {
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.python);
        cmd.arg(self.dir.join("jobserv_worker.py"))
            .args(args)
            .current_dir(&self.dir)
            .env("REQUESTS_CA_BUNDLE", &self.ca_cert)
            .env("USER", "jobserv-test")
            .env("HOME", &self.dir);
        cmd
    }

    fn settings(&self) -> String {
        std::fs::read_to_string(self.dir.join("settings.conf")).expect("settings.conf")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("loop.log")).unwrap_or_default()
    }
}

fn setting(settings: &str, key: &str) -> String {
    settings
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("{key} in settings.conf:\n{settings}"))
        .to_string()
}

async fn worker_entry(cluster: &LocalCluster, name: &str) -> Value {
    let (s, b) = cluster
        .api(Method::GET, "/workers/", None)
        .await
        .expect("list workers");
    assert_eq!(s, 200, "{b}");
    b["data"]["workers"]
        .as_array()
        .and_then(|ws| ws.iter().find(|w| w["name"] == name))
        .cloned()
        .unwrap_or(Value::Null)
}

/// Runs a build and checks what the run left: PASSED on `worker`, its console (after the Python worker's own
/// first line when `python_first`), two passed tests, the artifact's bytes.
async fn build_passes_on(
    cluster: &LocalCluster,
    worker: &str,
    python_first: bool,
    log: impl Fn() -> String,
) -> u64 {
    let n = cluster
        .build(PROJECT, "hello", DEFINITION)
        .await
        .expect("build");
    let build = match cluster
        .wait_build(PROJECT, n, Duration::from_secs(240))
        .await
    {
        Ok(b) => b,
        Err(e) => panic!("{e}\nworker log:\n{}", log()),
    };
    let run_path = format!("/projects/{PROJECT}/builds/{n}/runs/hello/");
    let (_, run) = cluster
        .api(Method::GET, &run_path, None)
        .await
        .expect("run");
    let url = cluster.live_urls()[0].clone();
    let (_, console) = cluster
        .text(&url, &format!("{run_path}console.log"))
        .await
        .expect("console");
    let console = String::from_utf8_lossy(&console).to_string();
    assert_eq!(
        build["status"],
        "PASSED",
        "build {n}: {build}\nrun: {run}\nconsole:\n{console}\nworker log:\n{}",
        log()
    );
    assert_eq!(run["data"]["run"]["worker"], worker, "{run}");
    assert!(
        console.contains(&format!("hello from {worker}, build {n}")),
        "console of build {n}:\n{console}"
    );
    // Nothing the Python worker wrote is overwritten, nothing of the runner's is cut.
    assert!(
        console.contains("\n# To recreate this run locally with the simulator")
            || console.starts_with("# To recreate this run locally with the simulator"),
        "the runner's header is whole in build {n}:\n{console}"
    );
    if python_first {
        assert!(
            console.starts_with("== ")
                && console.contains(": Setting up runner on worker\n# To recreate"),
            "the Python worker's line, then the runner's, in build {n}:\n{console}"
        );
    }
    let (s, tests) = cluster
        .api(Method::GET, &format!("{run_path}tests/"), None)
        .await
        .expect("tests");
    assert_eq!(s, 200, "{tests}");
    let text = tests.to_string();
    assert!(
        text.contains("first") && text.contains("second") && !text.contains("FAILED"),
        "tests of build {n}: {tests}"
    );
    let (s, bytes) = cluster
        .text(&url, &format!("{run_path}hello.txt"))
        .await
        .expect("artifact");
    assert_eq!(s, 200);
    assert_eq!(bytes, format!("payload of build {n}\n").into_bytes());
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobserv_python_worker_runs_builds_and_hands_over_to_jobserv_worker() {
    let script = jobserv_worker_py();
    let python = python();
    let dir = tempfile::tempdir().expect("tempdir");
    let bins = bin_dir(None).expect("binaries built");
    let opts = ClusterOptions {
        workers: 0,
        ..Default::default()
    };
    let mut cluster = LocalCluster::up(&dir.path().join("cluster"), &bins, &opts)
        .await
        .expect("cluster up");
    cluster_test::harness::busybox_image(&repo_root()).expect("busybox image");

    // The worker lives in its own directory (it writes settings.conf beside itself, and replaces itself
    // when told to upgrade): a copy made at test time, byte for byte.
    let worker = PythonWorker {
        dir: dir.path().join("pyworker"),
        python,
        ca_cert: cluster.ca_cert.clone(),
    };
    std::fs::create_dir_all(&worker.dir).expect("worker dir");
    let installed = worker.dir.join("jobserv_worker.py");
    std::fs::copy(&script, &installed).expect("copy jobserv_worker.py");
    std::fs::set_permissions(&installed, std::fs::Permissions::from_mode(0o755)).expect("chmod");

    // 1. register, exactly as a lab admin does.
    let node1 = cluster.nodes[0].url().to_string();
    let out = worker
        .command(&[
            "register",
            "--hostname",
            "pyworker",
            &format!("{node1}/"),
            "pylab",
        ])
        .output()
        .expect("run jobserv_worker.py register");
    assert!(
        out.status.success(),
        "register: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let registered = worker_entry(&cluster, "pyworker").await;
    assert_eq!(registered["legacy"], true, "{registered}");
    assert_eq!(registered["host_tags"], json!(["pylab"]), "{registered}");
    assert_eq!(registered["enlisted"], false, "{registered}");
    cluster.write_json().expect("cluster.json");
    let list = Command::new(bins.join("jobserv"))
        .arg("--cluster-json")
        .arg(&cluster.dir)
        .args(["worker", "list"])
        .output()
        .expect("jobserv worker list");
    let list = String::from_utf8_lossy(&list.stdout).to_string();
    let row = list
        .lines()
        .find(|l| l.starts_with("pyworker"))
        .unwrap_or_else(|| panic!("pyworker in `jobserv worker list`:\n{list}"));
    assert!(row.contains("legacy"), "`jobserv worker list` row: {row}");

    // Its check-ins run through JobServ's worker-wrapper setting, so they use the same interpreter.
    let wrapper = worker.dir.join("worker-wrapper");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec {} {} \"$@\"\n",
            worker.python,
            installed.display()
        ),
    )
    .expect("wrapper");
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut settings = worker.settings();
    settings.push_str(&format!(
        "\n[tools]\nworker-wrapper = {}\n",
        wrapper.display()
    ));
    std::fs::write(worker.dir.join("settings.conf"), settings).expect("settings");
    let key = setting(&worker.settings(), "host_api_key");

    cluster_test::harness::enlist(
        &cluster.client,
        &node1,
        &cluster.token,
        "pyworker",
        Duration::from_secs(10),
    )
    .await
    .expect("enlist");

    // 2. `loop`, as its systemd unit runs it (every second instead of 20 s).
    let log = std::fs::File::create(worker.dir.join("loop.log")).expect("log");
    let mut cmd = worker.command(&["loop", "--every", "1"]);
    cmd.stdout(log.try_clone().expect("log")).stderr(log);
    let _loop: OwnedChild = spawn_owned(&mut cmd).expect("start the loop");
    let _cleanup = KillGroupOnDrop(worker.dir.clone());

    let first = build_passes_on(&cluster, "pyworker", true, || worker.log()).await;
    assert!(
        worker_entry(&cluster, "pyworker").await["legacy"] == true,
        "still the Python worker"
    );

    // The rest of what the worker's commands call: a debug upload (gzip PUT), an event (cronwrap), the
    // persistent-volume collection (volumes of projects that no longer exist).
    let out = worker
        .command(&["upload"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(b"debug output from the lab\n")?;
            child.wait_with_output()
        })
        .expect("jobserv_worker.py upload");
    assert!(
        out.status.success(),
        "upload: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let uploaded = uploaded_logs(
        &cluster.nodes[0]
            .config
            .data_dir
            .join("worker-logs/pyworker"),
    );
    assert!(
        uploaded.iter().any(|l| l == b"debug output from the lab\n"),
        "the upload is kept on the node that took it: {uploaded:?}"
    );
    let out = worker
        .command(&["cronwrap", "/bin/true"])
        .output()
        .expect("cronwrap");
    assert!(
        out.status.success(),
        "cronwrap: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for volume in ["leg", "gone-project"] {
        std::fs::create_dir_all(worker.dir.join("volumes").join(volume)).expect("volume");
    }
    let out = worker
        .command(&["gc-volumes", "--dryrun"])
        .output()
        .expect("gc-volumes");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "gc-volumes: {stderr}");
    let deletes = stderr
        .split("dryrun deletes:")
        .nth(1)
        .unwrap_or_else(|| panic!("gc-volumes printed no deletes: {stderr}"));
    assert!(
        deletes.contains("gone-project") && !deletes.contains(" leg"),
        "only the volume no project name starts with is deleted: {deletes}"
    );

    // 3. Hand-over: the operator turns `legacy_worker_upgrade` on and restarts the nodes one by one.
    for i in 0..cluster.nodes.len() {
        let node = &mut cluster.nodes[i];
        node.env = vec![("JOBSERV_LEGACY_WORKER_UPGRADE".into(), "true".into())];
        node.terminate();
        node.spawn().expect("restart node");
        node.wait_ready(Duration::from_secs(60))
            .await
            .expect("node ready");
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let entry = worker_entry(&cluster, "pyworker").await;
        if entry["legacy"] == false && entry["online"] == true {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pyworker was not handed over to jobserv-worker: {entry}\nworker log:\n{}",
            worker.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let replaced = std::fs::read_to_string(&installed).expect("jobserv_worker.py");
    assert!(
        replaced.contains("handing over")
            && replaced != std::fs::read_to_string(&script).expect("original"),
        "jobserv_worker.py replaced itself with the hand-over script"
    );
    assert_eq!(
        std::fs::read_to_string(worker.dir.join("jobserv-worker-data/worker.key")).expect("key"),
        key,
        "jobserv-worker took over the same key"
    );

    // 4. Our worker, same name, same host tag, runs the next build.
    let second = build_passes_on(&cluster, "pyworker", false, || worker.log()).await;
    assert!(second > first);

    // 5. `unregister` of another, fresh Python worker removes it.
    let other = PythonWorker {
        dir: dir.path().join("pyworker2"),
        python: worker.python.clone(),
        ca_cert: cluster.ca_cert.clone(),
    };
    std::fs::create_dir_all(&other.dir).expect("dir");
    std::fs::copy(&script, other.dir.join("jobserv_worker.py")).expect("copy");
    for args in [
        &["register", "--hostname", "pyworker2", &node1, "pylab"][..],
        &["unregister"][..],
    ] {
        let out = other.command(args).output().expect("jobserv_worker.py");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(worker_entry(&cluster, "pyworker2").await, Value::Null);
    cluster.kill_all();
}

/// The uploaded logs, gunzipped when kept compressed.
fn uploaded_logs(dir: &Path) -> Vec<Vec<u8>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| {
            let bytes = std::fs::read(e.path()).unwrap_or_default();
            if e.path().extension().is_some_and(|x| x == "gz") {
                let out = Command::new("gzip")
                    .arg("-dc")
                    .arg(e.path())
                    .output()
                    .expect("gzip -dc");
                out.stdout
            } else {
                bytes
            }
        })
        .collect()
}

/// The loop's `check` becomes `jobserv-worker run` (exec) on hand-over, and JobServ's worker forks its
/// runs: kill every process whose command line names this worker's directory.
struct KillGroupOnDrop(PathBuf);

impl Drop for KillGroupOnDrop {
    fn drop(&mut self) {
        kill_processes_under(&self.0);
    }
}

fn kill_processes_under(dir: &Path) {
    let needle = dir.to_string_lossy().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(&needle) {
            // SAFETY: plain kill(2) on a pid read from /proc.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}
