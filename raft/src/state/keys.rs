//! The key layout of the state tree. One sled tree holds all replicated state so that one `Batch` per log
//! entry (state changes plus `last_applied`) is atomic. Names are validated before they reach here (no `/`),
//! numbers are zero-padded so that lexical order is numeric order.
use crate::model::RunRef;

pub const LAST_APPLIED: &[u8] = b"m/last_applied";
pub const MEMBERSHIP: &[u8] = b"m/membership";
pub const NEXT_TRIGGER_ID: &[u8] = b"m/next_trigger";
/// The storage/wire format the cluster agreed to write.
pub const FORMAT: &[u8] = b"m/format";

pub fn project(name: &str) -> Vec<u8> {
    format!("p/{name}").into_bytes()
}
pub const PROJECTS: &[u8] = b"p/";

pub fn trigger(project: &str, id: u64) -> Vec<u8> {
    format!("t/{project}/{id:020}").into_bytes()
}
pub fn triggers_of(project: &str) -> Vec<u8> {
    format!("t/{project}/").into_bytes()
}

pub fn build(project: &str, number: u64) -> Vec<u8> {
    format!("b/{project}/{number:020}").into_bytes()
}
pub fn builds_of(project: &str) -> Vec<u8> {
    format!("b/{project}/").into_bytes()
}

pub fn run(r: &RunRef) -> Vec<u8> {
    format!("r/{}/{:020}/{}", r.project, r.build, r.run).into_bytes()
}
pub fn runs_of_build(project: &str, number: u64) -> Vec<u8> {
    format!("r/{project}/{number:020}/").into_bytes()
}
pub fn runs_of_project(project: &str) -> Vec<u8> {
    format!("r/{project}/").into_bytes()
}

/// Console chunks are stored raw (the bytes the worker sent) under their starting offset, or as a
/// `ConsoleRef` to them in this node's console files under `console_chunk_ref`.
pub fn console_chunk(r: &RunRef, offset: u64) -> Vec<u8> {
    format!("l/{}/{:020}/{}/{offset:020}", r.project, r.build, r.run).into_bytes()
}
/// What a chunk key ends with when its value is a ref (a raw chunk's key ends with a digit).
pub const CONSOLE_REF_SUFFIX: u8 = b'r';
pub const CONSOLES: &[u8] = b"l/";
pub fn console_chunk_ref(chunk_key: &[u8]) -> Vec<u8> {
    let mut key = chunk_key.to_vec();
    key.push(CONSOLE_REF_SUFFIX);
    key
}
/// The chunk key of `key` if it is a console ref key.
pub fn console_ref_chunk(key: &[u8]) -> Option<&[u8]> {
    if key.starts_with(CONSOLES) {
        key.strip_suffix(&[CONSOLE_REF_SUFFIX])
    } else {
        None
    }
}
pub fn console_of(r: &RunRef) -> Vec<u8> {
    format!("l/{}/{:020}/{}/", r.project, r.build, r.run).into_bytes()
}
pub fn consoles_of_project(project: &str) -> Vec<u8> {
    format!("l/{project}/").into_bytes()
}

pub fn test(r: &RunRef, name: &str) -> Vec<u8> {
    format!("x/{}/{:020}/{}/{name}", r.project, r.build, r.run).into_bytes()
}
pub fn tests_of(r: &RunRef) -> Vec<u8> {
    format!("x/{}/{:020}/{}/", r.project, r.build, r.run).into_bytes()
}
pub fn tests_of_project(project: &str) -> Vec<u8> {
    format!("x/{project}/").into_bytes()
}

/// The queue index: higher priority first (inverted), then creation order.
pub fn queue_entry(priority: i32, seq: u64) -> Vec<u8> {
    let inverted = (i32::MAX as i64 - priority as i64) as u64;
    format!("q/{inverted:010}/{seq:020}").into_bytes()
}
pub const QUEUE: &[u8] = b"q/";

/// The per-host-tag queues (`state::queue`): the run's `host-tag` pattern, a 0 byte, then the same order
/// as `queue_entry`. Derived from `q/` and rebuilt on open, so it needs no format of its own.
pub fn tag_queue_entry(host_tag: &str, priority: i32, seq: u64) -> Vec<u8> {
    let inverted = (i32::MAX as i64 - priority as i64) as u64;
    let mut key = Vec::with_capacity(TAG_QUEUES.len() + host_tag.len() + 32);
    key.extend_from_slice(TAG_QUEUES);
    key.extend_from_slice(host_tag.as_bytes());
    key.push(0);
    key.extend_from_slice(format!("{inverted:010}/{seq:020}").as_bytes());
    key
}
pub const TAG_QUEUES: &[u8] = b"Q/";

pub fn worker(name: &str) -> Vec<u8> {
    format!("w/{name}").into_bytes()
}
pub const WORKERS: &[u8] = b"w/";

/// Runs a worker holds, so that a lost worker's runs are found without a scan.
pub fn worker_run(worker: &str, r: &RunRef) -> Vec<u8> {
    format!("y/{worker}/{}/{:020}/{}", r.project, r.build, r.run).into_bytes()
}
pub fn worker_runs_of(worker: &str) -> Vec<u8> {
    format!("y/{worker}/").into_bytes()
}

pub fn token(hash: &str) -> Vec<u8> {
    format!("k/{hash}").into_bytes()
}

/// Count of runs per status, maintained on every run write so metrics never scan.
pub fn run_status_count(status: jobserv_protocol::RunStatus) -> Vec<u8> {
    format!("c/runs/{}", status.as_str()).into_bytes()
}

/// A build's `model::BuildTally` (how many of its runs started, completed, failed), kept by every run write so
/// that a run's change of status never rereads the build's other runs. Derived: rebuilt on open and after a
/// snapshot install, so it needs no format of its own.
pub fn build_tally(project: &str, number: u64) -> Vec<u8> {
    format!("T/{project}/{number:020}").into_bytes()
}
pub fn build_tallies_of(project: &str) -> Vec<u8> {
    format!("T/{project}/").into_bytes()
}
pub const BUILD_TALLIES: &[u8] = b"T/";

/// The next byte after a prefix, for `range(prefix..prefix_end)` reverse scans.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end;
        }
    }
    vec![u8::MAX]
}

pub fn artifact(r: &RunRef, path: &str) -> Vec<u8> {
    format!("a/{}/{:020}/{}/{path}", r.project, r.build, r.run).into_bytes()
}
pub fn artifacts_of(r: &RunRef) -> Vec<u8> {
    format!("a/{}/{:020}/{}/", r.project, r.build, r.run).into_bytes()
}
pub fn artifacts_of_project(project: &str) -> Vec<u8> {
    format!("a/{project}/").into_bytes()
}

/// A build's hooks (`crate::hooks::BuildHooks`): chains, forge status and notification markers.
pub fn build_hooks(project: &str, number: u64) -> Vec<u8> {
    format!("h/{project}/{number:020}").into_bytes()
}
pub fn hooks_of_project(project: &str) -> Vec<u8> {
    format!("h/{project}/").into_bytes()
}
/// Builds whose hooks still have work to do (removed when `FINAL` is marked), so the build actors never scan.
pub fn open_hooks(project: &str, number: u64) -> Vec<u8> {
    format!("j/{project}/{number:020}").into_bytes()
}
pub fn open_hooks_of_project(project: &str) -> Vec<u8> {
    format!("j/{project}/").into_bytes()
}
pub const OPEN_HOOKS: &[u8] = b"j/";
/// What a git poller trigger last saw: key (trigger name, repository, ref) → sha.
pub fn poller_refs(project: &str, trigger: u64) -> Vec<u8> {
    format!("g/{project}/{trigger:020}").into_bytes()
}
pub fn poller_refs_of_project(project: &str) -> Vec<u8> {
    format!("g/{project}/").into_bytes()
}

/// An artifact's metadata (`model::ArtifactMeta`); its bytes are a blob. (`a/` holds the artifacts of
/// before the blob store, stored inline; they are still served.)
pub fn artifact_meta(r: &RunRef, path: &str) -> Vec<u8> {
    format!("A/{}/{:020}/{}/{path}", r.project, r.build, r.run).into_bytes()
}
pub fn artifact_metas_of(r: &RunRef) -> Vec<u8> {
    format!("A/{}/{:020}/{}/", r.project, r.build, r.run).into_bytes()
}
pub fn artifact_metas_of_project(project: &str) -> Vec<u8> {
    format!("A/{project}/").into_bytes()
}

/// A blob of the content-addressed store (`model::BlobRecord`).
pub fn blob(sha256: &str) -> Vec<u8> {
    format!("B/{sha256}").into_bytes()
}
pub const BLOBS: &[u8] = b"B/";

/// Everything a build owns under the per-run prefixes (runs, console chunks, tests, artifacts), by tag.
pub fn of_build(tag: char, project: &str, number: u64) -> Vec<u8> {
    format!("{tag}/{project}/{number:020}/").into_bytes()
}

/// One-time UI login links (`L/<sha256 of the link's code>`).
pub fn login_link(hash: &str) -> Vec<u8> {
    format!("L/{hash}").into_bytes()
}
pub const LOGIN_LINKS: &[u8] = b"L/";
