//! The runner's only way out: [`RunReporter`]. The HTTP client implements it against a node
//! ([`crate::client::HttpReporter`]), the simulator against the local disk ([`crate::simulate::LocalReporter`]),
//! tests against memory ([`MemoryReporter`]). Because the runner cannot tell them apart, a simulated run executes
//! exactly the same steps as a real one.
//!
//! Contract: console chunks arrive in order with contiguous offsets (`offset` = bytes of the log before this
//! chunk); a chunk is acknowledged when `append_console` returns `Ok`. A status travels with a chunk (possibly
//! empty). Secrets have already been masked.
use crate::error::Result;
use jobserv_protocol::api::TestReport;
use jobserv_protocol::RunStatus;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// One console POST.
#[derive(Clone, Copy, Debug)]
pub struct ConsoleChunk<'a> {
    pub offset: u64,
    pub bytes: &'a [u8],
    pub status: Option<RunStatus>,
    /// `X-RUN-METADATA`: the latest `console-progress` match (`current/total`).
    pub metadata: Option<&'a str>,
}

/// What the server said back about the run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ControlReply {
    /// `X-JOBSERV-CANCEL: 1`: stop the run, it was cancelled.
    pub cancel: bool,
}

/// A file of `/archive`, uploaded after the script.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Artifact {
    /// Relative to the archive, `/`-separated, never containing `..`.
    pub path: String,
    pub file: PathBuf,
    pub size: u64,
}

pub trait RunReporter: Send + Sync {
    fn append_console(
        &self,
        chunk: ConsoleChunk<'_>,
    ) -> impl Future<Output = Result<ControlReply>> + Send;
    fn report_tests(&self, tests: &[TestReport]) -> impl Future<Output = Result<()>> + Send;
    fn upload_artifacts(&self, artifacts: &[Artifact]) -> impl Future<Output = Result<()>> + Send;
}

/// Records everything in memory. Setting [`MemoryReporter::cancel`] makes the next console reply carry a cancel,
/// like a node whose run was cancelled.
#[derive(Debug, Default)]
pub struct MemoryReporter {
    pub cancel: AtomicBool,
    state: Mutex<MemoryState>,
}

#[derive(Clone, Debug, Default)]
pub struct MemoryState {
    pub console: Vec<u8>,
    /// Every chunk's (offset, length), to check that offsets are contiguous.
    pub chunks: Vec<(u64, usize)>,
    pub statuses: Vec<RunStatus>,
    pub metadata: Vec<String>,
    pub tests: Vec<TestReport>,
    /// Path and content of every uploaded artifact.
    pub artifacts: Vec<(String, Vec<u8>)>,
}

impl MemoryReporter {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn snapshot(&self) -> MemoryState {
        self.lock().clone()
    }

    pub fn console_text(&self) -> String {
        String::from_utf8_lossy(&self.lock().console).into_owned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        // A panic while holding the lock leaves plain data behind; keep using it.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl RunReporter for MemoryReporter {
    async fn append_console(&self, chunk: ConsoleChunk<'_>) -> Result<ControlReply> {
        let mut state = self.lock();
        if chunk.offset != state.console.len() as u64 {
            return Err(crate::WorkerError::Report(format!(
                "offset gap: chunk at {} but {} bytes stored",
                chunk.offset,
                state.console.len()
            )));
        }
        state.console.extend_from_slice(chunk.bytes);
        state.chunks.push((chunk.offset, chunk.bytes.len()));
        if let Some(status) = chunk.status {
            state.statuses.push(status);
        }
        if let Some(meta) = chunk.metadata {
            state.metadata.push(meta.to_string());
        }
        Ok(ControlReply {
            cancel: self.cancel.load(Ordering::SeqCst),
        })
    }

    async fn report_tests(&self, tests: &[TestReport]) -> Result<()> {
        self.lock().tests.extend_from_slice(tests);
        Ok(())
    }

    async fn upload_artifacts(&self, artifacts: &[Artifact]) -> Result<()> {
        let mut loaded = Vec::new();
        for a in artifacts {
            let bytes = tokio::fs::read(&a.file)
                .await
                .map_err(crate::WorkerError::io_path("reading artifact", &a.file))?;
            loaded.push((a.path.clone(), bytes));
        }
        self.lock().artifacts.extend(loaded);
        Ok(())
    }
}
