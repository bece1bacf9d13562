//! The worker library's error type. Binaries wrap it in `anyhow`; the runner turns every error that is not the
//! reporter's own into a FAILED run with the message in the console log.
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("docker: {0}")]
    Docker(#[from] bollard::errors::Error),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("invalid run definition: {0}")]
    RunDef(String),
    #[error("git: {0}")]
    Git(String),
    #[error("configuration: {0}")]
    Config(String),
    #[error("HTTP request to {url} failed: {message}")]
    Http { url: String, message: String },
    #[error("server refused {url}: HTTP {status}: {body}")]
    Rejected {
        url: String,
        status: u16,
        body: String,
    },
    /// The reporter could not deliver (the run key was refused, or the server lost acknowledged bytes). The runner
    /// stops the run without trying to report further: nobody would receive it.
    #[error("reporting failed: {0}")]
    Report(String),
    #[error("self-update: {0}")]
    Update(String),
    #[error("handing files back: {0}")]
    HandBack(String),
}

pub type Result<T, E = WorkerError> = std::result::Result<T, E>;

impl WorkerError {
    /// `map_err(WorkerError::io("reading x"))` keeps the context next to the call.
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> WorkerError {
        let context = context.into();
        move |source| WorkerError::Io { context, source }
    }

    pub fn io_path(action: &str, path: &Path) -> impl FnOnce(std::io::Error) -> WorkerError {
        Self::io(format!("{action} {}", path.display()))
    }
}
