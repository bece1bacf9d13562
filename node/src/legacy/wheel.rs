//! The runner wheel: `jobserv_runner/handlers/<trigger type>.py` for every trigger type, each the same
//! handler (`python/rust_runner.py`) with the runner's sha256 written in, plus the `.dist-info` a wheel
//! carries (PEP 427: METADATA, WHEEL, RECORD with urlsafe-base64 sha256 digests).
use super::zip;
use base64::Engine;
use jobserv_protocol::project::TriggerType;
use sha2::{Digest, Sha256};

const HANDLER: &str = include_str!("python/rust_runner.py");
const DIST: &str = "jobserv_runner-0.0.0+jobserv.node.dist-info";

pub fn runner_wheel(runner_sha256: &str) -> Vec<u8> {
    let mut files: Vec<(String, Vec<u8>)> = vec![
        (
            "jobserv_runner/__init__.py".into(),
            b"\"\"\"jobserv-node's runner package for JobServ's Python worker.\"\"\"\n".to_vec(),
        ),
        ("jobserv_runner/handlers/__init__.py".into(), Vec::new()),
        (
            "jobserv_runner/handlers/rust_runner.py".into(),
            HANDLER
                .replace("@RUNNER_SHA256@", runner_sha256)
                .into_bytes(),
        ),
    ];
    for trigger in TriggerType::ALL {
        files.push((
            format!("jobserv_runner/handlers/{}.py", trigger.as_str()),
            b"from jobserv_runner.handlers.rust_runner import handler  # noqa: F401\n".to_vec(),
        ));
    }
    files.push((
        format!("{DIST}/METADATA"),
        b"Metadata-Version: 2.1\nName: jobserv_runner\nVersion: 0.0.0+jobserv.node\n\
Summary: Runs JobServ runs with jobserv-node's Rust runner\nRequires-Dist: requests\n"
            .to_vec(),
    ));
    files.push((
        format!("{DIST}/WHEEL"),
        b"Wheel-Version: 1.0\nGenerator: jobserv-node\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
            .to_vec(),
    ));
    let mut record = String::new();
    for (name, data) in &files {
        let digest = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(data));
        record.push_str(&format!("{name},sha256={digest},{}\n", data.len()));
    }
    record.push_str(&format!("{DIST}/RECORD,,\n"));
    files.push((format!("{DIST}/RECORD"), record.into_bytes()));
    zip::stored(&files)
}

#[cfg(test)]
mod tests {
    use super::runner_wheel;

    /// The wheel imports the way jobserv_worker.py imports it: the .whl on sys.path, then
    /// `jobserv_runner.handlers.<trigger_type>`, whose `handler` has `execute` and `RebootAndContinue`.
    #[test]
    fn python_imports_every_handler_from_the_wheel() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("runner.whl");
        std::fs::write(&path, runner_wheel(&"ab".repeat(32))).expect("write");
        let script = "import importlib, sys, types\n\
            sys.modules.setdefault('requests', types.ModuleType('requests'))\n\
            sys.path.insert(0, sys.argv[1])\n\
            for t in ['simple', 'git_poller', 'github_pr', 'gitlab_mr', 'lava', 'lava_pr', 'lava_mr']:\n\
            \x20   m = importlib.import_module('jobserv_runner.handlers.' + t)\n\
            \x20   assert callable(m.handler.execute) and issubclass(m.handler.RebootAndContinue, Exception)\n\
            from jobserv_runner.handlers import rust_runner\n\
            print(rust_runner.RUNNER_SHA256)\n";
        let out = std::process::Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(&path)
            .output()
            .expect("python3 runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ab".repeat(32));
    }
}
