//! Compatibility with JobServ's own lab worker (`jobserv_worker.py` from foundriesio/jobserv), so a site's
//! existing workers keep running builds on a cluster unchanged. What differs from our own worker:
//!
//! - **Registration and host facts** come as JobServ's JSON (`host_tags` a comma-separated string, `name`,
//!   `api_key` repeated in every PATCH). Such a worker is recorded with the version [`LEGACY_VERSION`], which
//!   is how the node knows to answer it in JobServ's shapes and how `jobserv worker list` shows it as legacy.
//! - **Check-in replies** carry `run-defs` as JSON *strings* and the worker-script `version` JobServ uses
//!   (an md5): see [`LegacyPackages::announced_version`].
//! - **The run** is executed by the runner package the rundef's `runner_url` points at: a wheel built here
//!   ([`wheel`]) whose handler downloads our Rust runner (`GET /runner`, checked against the sha256 written
//!   into the wheel) and runs `jobserv-worker execute`, so the run behaves exactly like one on our worker.
//! - **Hand-over** (opt-in, `legacy_worker_upgrade = true`): JobServ's worker replaces itself with what
//!   `GET /worker` serves when the announced version differs; we then serve `python/migrate_worker.py`, which
//!   installs `jobserv-worker` under the same name, key, host tags and concurrency and hands over.
//!
//! `docs/jobserv-compat.md` lists every JobServ route and how it is served here.
mod wheel;
mod zip;

use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::OnceLock;

/// `WorkerFacts::version` of a worker that registered with JobServ's JSON.
pub const LEGACY_VERSION: &str = "legacy (jobserv_worker.py)";

/// md5 of `jobserv_worker.py` at foundriesio/jobserv fd65674: the version such a worker has after
/// `register`. Announced when nothing else is configured, so that worker is not told to upgrade itself to
/// a script this node does not have.
pub const JOBSERV_WORKER_FD65674_MD5: &str = "b4115d43bc756112b5706dae11f6af0a";

const MIGRATE_TEMPLATE: &str = include_str!("python/migrate_worker.py");

pub fn is_legacy(facts: &jobserv_raft::model::WorkerFacts) -> bool {
    facts.version == LEGACY_VERSION
}

/// JobServ's `host_tags`: a comma-separated string (our own workers send a list).
pub fn split_host_tags(tags: &str) -> Vec<String> {
    tags.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

/// What a node serves JobServ's workers, derived from the `jobserv-worker` binary it serves at `/runner`
/// (built on first use: hashing the binary is the only cost).
pub struct LegacyPackages {
    /// sha256 of the runner binary the wheel and the hand-over script accept.
    pub runner_sha256: String,
    /// The runner wheel (`GET /runner/jobserv_runner.whl`).
    pub wheel: Vec<u8>,
    /// The hand-over script (`GET /worker` for a legacy worker, with `legacy_worker_upgrade`).
    pub migrate_script: String,
}

impl LegacyPackages {
    pub fn build(runner_binary: &Path) -> std::io::Result<LegacyPackages> {
        let mut file = std::fs::File::open(runner_binary)?;
        let mut hasher = Sha256::new();
        std::io::copy(&mut file, &mut hasher)?;
        let runner_sha256 = hex::encode(hasher.finalize());
        Ok(LegacyPackages {
            wheel: wheel::runner_wheel(&runner_sha256),
            migrate_script: MIGRATE_TEMPLATE.replace("@RUNNER_SHA256@", &runner_sha256),
            runner_sha256,
        })
    }

    /// The `version` a legacy worker's check-in reply announces. `jobserv_worker.py` replaces itself with
    /// `GET /worker` whenever it differs from its own, so: with the hand-over on, a version of the hand-over
    /// script; else the md5 of the site's own script when configured (`legacy_worker_script`, as JobServ
    /// announces the script it serves), else the md5 of JobServ's released worker (nothing to upgrade to).
    pub fn announced_version(&self, upgrade: bool, site_script: Option<&[u8]>) -> String {
        if upgrade {
            format!("jobserv-node-handover-{}", &self.runner_sha256[..16])
        } else if let Some(script) = site_script {
            format!("{:x}", md5::Md5::digest(script))
        } else {
            JOBSERV_WORKER_FD65674_MD5.to_string()
        }
    }
}

/// Built once per process on first use; `Err` (no runner binary) is retried on the next call.
pub fn packages(runner_binary: &Path) -> std::io::Result<&'static LegacyPackages> {
    static PACKAGES: OnceLock<LegacyPackages> = OnceLock::new();
    if let Some(p) = PACKAGES.get() {
        return Ok(p);
    }
    let built = LegacyPackages::build(runner_binary)?;
    Ok(PACKAGES.get_or_init(|| built))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_tags_are_split_like_jobserv() {
        assert_eq!(split_host_tags("amd64, lab1,,"), vec!["amd64", "lab1"]);
        assert!(split_host_tags("").is_empty());
    }

    #[test]
    fn announced_versions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = dir.path().join("jobserv-worker");
        std::fs::write(&bin, b"binary").expect("write");
        let p = LegacyPackages::build(&bin).expect("build");
        assert_eq!(p.runner_sha256, hex::encode(Sha256::digest(b"binary")));
        assert!(p.migrate_script.contains(&p.runner_sha256));
        assert!(!p.migrate_script.contains("@RUNNER_SHA256@"));
        assert_eq!(p.announced_version(false, None), JOBSERV_WORKER_FD65674_MD5);
        // md5("hello") as Python's hashlib computes it.
        assert_eq!(
            p.announced_version(false, Some(b"hello")),
            "5d41402abc4b2a76b9719d911017c592"
        );
        assert!(p
            .announced_version(true, Some(b"hello"))
            .starts_with("jobserv-node-handover-"));
    }
}
