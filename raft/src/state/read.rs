//! Local reads of the applied state, for the node's handlers and actors. They see every entry this node
//! has applied; a caller that needs linearizability first asks Raft (`ensure_linearizable`).
use super::keys;
use super::{State, StateResult};
use crate::codec;
use crate::model::{
    ApiToken, ArtifactMeta, BlobRecord, Build, Project, Run, RunRef, Test, Trigger, Worker,
};
use jobserv_protocol::RunStatus;
use serde::de::DeserializeOwned;

pub struct BuildPage {
    pub builds: Vec<Build>,
    /// The number to pass as `before` for the next (older) page.
    pub next_before: Option<u64>,
}

pub struct ConsoleSlice {
    pub bytes: Vec<u8>,
    pub log_len: u64,
    pub status: RunStatus,
}

impl State {
    fn get<T: DeserializeOwned>(&self, key: &[u8]) -> StateResult<Option<T>> {
        match self.tree.get(key)? {
            Some(bytes) => Ok(Some(codec::decode(&bytes)?)),
            None => Ok(None),
        }
    }

    fn values_under<T: DeserializeOwned>(&self, prefix: &[u8]) -> StateResult<Vec<T>> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(prefix) {
            let (_, v) = item?;
            out.push(codec::decode(&v)?);
        }
        Ok(out)
    }

    pub fn project(&self, name: &str) -> StateResult<Option<Project>> {
        self.get(&keys::project(name))
    }

    pub fn projects(&self) -> StateResult<Vec<Project>> {
        self.values_under(keys::PROJECTS)
    }

    pub fn triggers(&self, project: &str) -> StateResult<Vec<Trigger>> {
        self.values_under(&keys::triggers_of(project))
    }

    pub fn trigger(&self, project: &str, id: u64) -> StateResult<Option<Trigger>> {
        self.get(&keys::trigger(project, id))
    }

    /// Triggers of every project with the given type (for pollers and webhooks).
    pub fn triggers_of_type(&self, trigger_type: &str) -> StateResult<Vec<Trigger>> {
        let all: Vec<Trigger> = self.values_under(b"t/")?;
        Ok(all
            .into_iter()
            .filter(|t| t.trigger_type == trigger_type)
            .collect())
    }

    pub fn build(&self, project: &str, number: u64) -> StateResult<Option<Build>> {
        self.get(&keys::build(project, number))
    }

    pub fn latest_build(&self, project: &str) -> StateResult<Option<Build>> {
        let prefix = keys::builds_of(project);
        match self.tree.scan_prefix(&prefix).next_back() {
            Some(item) => Ok(Some(codec::decode(&item?.1)?)),
            None => Ok(None),
        }
    }

    /// Builds newest first, `limit` per page, starting below `before` (exclusive) when given. Walks the
    /// index backwards, so a page costs `limit` reads however many builds the project has.
    pub fn builds_page(
        &self,
        project: &str,
        before: Option<u64>,
        limit: usize,
    ) -> StateResult<BuildPage> {
        let prefix = keys::builds_of(project);
        let end = match before {
            Some(n) => keys::build(project, n),
            None => keys::prefix_end(&prefix),
        };
        let mut builds = Vec::with_capacity(limit);
        for item in self.tree.range(prefix.clone()..end).rev().take(limit + 1) {
            let (_, v) = item?;
            builds.push(codec::decode::<Build>(&v)?);
        }
        let next_before = if builds.len() > limit {
            builds.truncate(limit);
            builds.last().map(|b| b.number)
        } else {
            None
        };
        Ok(BuildPage {
            builds,
            next_before,
        })
    }

    pub fn promoted_builds(&self, project: &str) -> StateResult<Vec<Build>> {
        let all: Vec<Build> = self.values_under(&keys::builds_of(project))?;
        Ok(all
            .into_iter()
            .rev()
            .filter(|b| b.promoted.is_some())
            .collect())
    }

    pub fn runs_of_build(&self, project: &str, number: u64) -> StateResult<Vec<Run>> {
        self.values_under(&keys::runs_of_build(project, number))
    }

    pub fn run(&self, run: &RunRef) -> StateResult<Option<Run>> {
        self.get(&keys::run(run))
    }

    /// A run's history across builds, newest first (bounded by `limit`).
    pub fn run_history(
        &self,
        project: &str,
        run_name: &str,
        limit: usize,
    ) -> StateResult<Vec<Run>> {
        let prefix = keys::builds_of(project);
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(&prefix).rev() {
            let build: Build = codec::decode(&item?.1)?;
            if let Some(run) = self.run(&RunRef {
                project: project.into(),
                build: build.number,
                run: run_name.into(),
            })? {
                out.push(run);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Console bytes from `offset` on (at most `max` bytes), with the run's status.
    pub fn console(
        &self,
        run_ref: &RunRef,
        offset: u64,
        max: usize,
    ) -> StateResult<Option<ConsoleSlice>> {
        let Some(run) = self.run(run_ref)? else {
            return Ok(None);
        };
        let mut bytes = Vec::new();
        let prefix = keys::console_of(run_ref);
        // Start from the chunk that contains `offset`: the last chunk key <= offset.
        let start_key = keys::console_chunk(run_ref, offset);
        let first = self
            .tree
            .range(prefix.clone()..=start_key.clone())
            .next_back()
            .transpose()?;
        let start_from = first.map(|(k, _)| k.to_vec()).unwrap_or(start_key);
        for item in self.tree.range(start_from..keys::prefix_end(&prefix)) {
            let (k, v) = item?;
            let (chunk_offset, chunk) = self.console_chunk(&prefix, &k, v)?;
            if chunk_offset + chunk.len() <= offset {
                continue;
            }
            let skip = offset.saturating_sub(chunk_offset) as usize;
            let chunk = self.chunk_bytes(chunk)?;
            bytes.extend_from_slice(chunk.get(skip..).unwrap_or_default());
            if bytes.len() >= max {
                bytes.truncate(max);
                break;
            }
        }
        Ok(Some(ConsoleSlice {
            bytes,
            log_len: run.log_len,
            status: run.status,
        }))
    }

    pub fn tests(&self, run: &RunRef) -> StateResult<Vec<Test>> {
        self.values_under(&keys::tests_of(run))
    }

    pub fn test(&self, run: &RunRef, name: &str) -> StateResult<Option<Test>> {
        self.get(&keys::test(run, name))
    }

    pub fn worker(&self, name: &str) -> StateResult<Option<Worker>> {
        self.get(&keys::worker(name))
    }

    pub fn workers(&self) -> StateResult<Vec<Worker>> {
        self.values_under(keys::WORKERS)
    }

    /// Runs a worker holds (not yet completed), with their fencing tokens.
    pub fn worker_runs(&self, worker: &str) -> StateResult<Vec<Run>> {
        let mut out = Vec::new();
        for r in self.worker_run_refs(worker)? {
            if let Some(run) = self.run(&r)? {
                out.push(run);
            }
        }
        Ok(out)
    }

    /// The runs `worker` holds, read from the keys of its index alone (a check-in's reply lists them on
    /// every check-in: decoding each run record made that cost grow with what the worker held).
    pub fn worker_run_refs(&self, worker: &str) -> StateResult<Vec<RunRef>> {
        let prefix = keys::worker_runs_of(worker);
        let mut out = Vec::new();
        for k in self.tree.scan_prefix(&prefix).keys() {
            let k = k?;
            let rest = String::from_utf8_lossy(&k[prefix.len()..]).to_string();
            let mut parts = rest.splitn(3, '/');
            let (Some(project), Some(build), Some(name)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let Ok(build) = build.parse::<u64>() else {
                continue;
            };
            out.push(RunRef {
                project: project.into(),
                build,
                run: name.into(),
            });
        }
        Ok(out)
    }

    /// Queued runs in scheduling order (priority, then creation), at most `limit`.
    pub fn queued_runs(&self, limit: usize) -> StateResult<Vec<Run>> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(keys::QUEUE) {
            let (_, v) = item?;
            let run_ref: RunRef = codec::decode(&v)?;
            if let Some(run) = self.run(&run_ref)? {
                out.push(run);
            }
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    pub fn artifact(&self, run: &RunRef, path: &str) -> StateResult<Option<Vec<u8>>> {
        Ok(self
            .tree
            .get(keys::artifact(run, path))?
            .map(|v| v.to_vec()))
    }

    /// The artifacts of a run, in path order: blob-store ones with their metadata, and those of before the
    /// blob store (inline in the state) with a size and no hash.
    pub fn artifacts(&self, run: &RunRef) -> StateResult<Vec<ArtifactMeta>> {
        let mut out: Vec<ArtifactMeta> = self.values_under(&keys::artifact_metas_of(run))?;
        let prefix = keys::artifacts_of(run);
        for item in self.tree.scan_prefix(&prefix) {
            let (k, v) = item?;
            let path = String::from_utf8_lossy(&k[prefix.len()..]).to_string();
            out.push(ArtifactMeta {
                path,
                size: v.len() as u64,
                sha256: String::new(),
                content_type: String::new(),
                created: 0,
            });
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    pub fn artifact_meta(&self, run: &RunRef, path: &str) -> StateResult<Option<ArtifactMeta>> {
        self.get(&keys::artifact_meta(run, path))
    }

    pub fn blob(&self, sha256: &str) -> StateResult<Option<BlobRecord>> {
        self.get(&keys::blob(sha256))
    }

    /// Up to `limit` blob records in hash order, after `after` (exclusive) when given: the repair task and
    /// the collector page through these.
    pub fn blobs_after(&self, after: Option<&str>, limit: usize) -> StateResult<Vec<BlobRecord>> {
        let start = match after {
            Some(sha) => {
                let mut k = keys::blob(sha);
                k.push(0);
                k
            }
            None => keys::BLOBS.to_vec(),
        };
        let mut out = Vec::new();
        for item in self
            .tree
            .range(start..keys::prefix_end(keys::BLOBS))
            .take(limit)
        {
            out.push(codec::decode(&item?.1)?);
        }
        Ok(out)
    }

    /// Numbers of a project's builds, oldest first (retention walks these).
    pub fn build_numbers(&self, project: &str) -> StateResult<Vec<u64>> {
        let prefix = keys::builds_of(project);
        let mut out = Vec::new();
        for key in self.tree.scan_prefix(&prefix).keys() {
            let key = key?;
            if let Some(n) = std::str::from_utf8(&key[prefix.len()..])
                .ok()
                .and_then(|s| s.parse().ok())
            {
                out.push(n);
            }
        }
        Ok(out)
    }

    /// The storage/wire format the cluster agreed to write (1 until raised).
    pub fn format_version(&self) -> StateResult<u8> {
        Ok(self.get::<u8>(keys::FORMAT)?.unwrap_or(1))
    }

    pub fn token(&self, hash: &str) -> StateResult<Option<ApiToken>> {
        self.get(&keys::token(hash))
    }

    /// Number of runs in each status, from counters maintained by `apply`.
    pub fn run_counts(&self) -> StateResult<Vec<(RunStatus, u64)>> {
        let mut out = Vec::new();
        for status in RunStatus::ALL {
            out.push((
                status,
                self.get::<u64>(&keys::run_status_count(status))?
                    .unwrap_or(0),
            ));
        }
        Ok(out)
    }
}
