//! Helpers of the crash tests (each test file that needs them has `mod common;`).
use jobserv_raft::{open_store, SledLogStore, SledStateMachine};
use std::path::Path;
use std::time::{Duration, Instant};

/// Opens the store, waiting for a killed or dropped process's handles to let go of sled's lock.
pub fn try_open(path: &Path) -> Result<(SledLogStore, SledStateMachine), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match open_store(path) {
            Ok(x) => return Ok(x),
            Err(e) if e.to_string().contains("lock") && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// A xorshift generator seeded from `$seed_env` or the clock; the seed is printed so a failing run can
/// be repeated.
pub fn random(seed_env: &str) -> impl FnMut() -> u64 {
    let mut seed: u64 = std::env::var(seed_env)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    eprintln!("{seed_env}={seed}");
    move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    }
}

/// Runs the test named `child` of this test binary as a child process with `env`, lets it work for
/// `delay`, then SIGKILLs it. Panics if it ended on its own (then it failed, or did not run at all).
pub fn run_child_then_kill(child: &str, env: &[(&str, String)], delay: Duration, life: u64) {
    let mut process = std::process::Command::new(std::env::current_exe().unwrap())
        .args([child, "--exact", "--nocapture", "--test-threads=1"])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(delay);
    if let Ok(Some(status)) = process.try_wait() {
        panic!("the child exited on its own ({status}) in life {life}");
    }
    process.kill().unwrap(); // SIGKILL
    process.wait().unwrap();
}

/// Log id `index` of term 1, node 1.
#[allow(dead_code)] // not every test file that has `mod common;` uses it
pub fn lid(index: u64) -> jobserv_raft::types::LogId {
    jobserv_raft::types::LogId::new(openraft::CommittedLeaderId::new(1, 1), index)
}

/// A run definition of project `p` for host tag `h`.
#[allow(dead_code)]
pub fn rundef(name: &str) -> jobserv_protocol::RunDef {
    serde_json::from_value(serde_json::json!({"version": 1, "project": "p", "build": 0, "run": name, "timeout": 5,
        "run_url": "", "frontend_url": "", "runner_url": "", "trigger_type": "simple", "container": "c", "host-tag": "h"}))
    .expect("rundef")
}

/// A build of project `p` with a run of each name.
#[allow(dead_code)]
pub fn create_build(runs: &[impl AsRef<str>]) -> jobserv_raft::Command {
    jobserv_raft::Command::CreateBuild(Box::new(jobserv_raft::command::NewBuild {
        project: "p".into(),
        trigger_name: "t".into(),
        trigger_type: "simple".into(),
        reason: None,
        params: Default::default(),
        secrets: Default::default(),
        queue_priority: 0,
        definition: String::new(),
        runs: runs.iter().map(|r| rundef(r.as_ref())).collect(),
        now: 1,
    }))
}
