//! The CLI library's one error type. Every variant says what failed in terms a user can act on: the server's
//! jsend message with the HTTP status and the request, the file and line/column or path of a bad definition,
//! or which servers were tried. [`CliError::exit_code`] maps it to the process exit status.
use jobserv_protocol::project::Issue;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The server answered with an error status; `message` is its jsend `message` (or the start of the body).
    #[error("{method} {url}: HTTP {status}: {message}")]
    Api {
        method: String,
        url: String,
        status: u16,
        message: String,
    },
    /// Every server URL failed at the connection level.
    #[error("no server could be reached (tried {tried}): {last}")]
    Unreachable { tried: String, last: String },
    /// A request failed after it may have reached the server (a timeout, a broken stream): not retried.
    #[error("{method} {url}: {message}")]
    Transport {
        method: String,
        url: String,
        message: String,
    },
    /// The server answered 2xx with something that is not the expected JSON.
    #[error("unexpected reply from {url}: {message}")]
    Reply { url: String, message: String },
    #[error("no server given: use --server URL[,URL…], JOBSERV_URL, or --cluster-json")]
    NoServer,
    #[error("{0}")]
    Usage(String),
    #[error("{path}: {message}")]
    File { path: String, message: String },
    /// A project definition that does not parse or validate; one issue per line.
    #[error("{}", render_issues(path, issues))]
    Definition { path: String, issues: Vec<Issue> },
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("writing output: {0}")]
    Output(#[from] std::io::Error),
}

fn render_issues(path: &str, issues: &[Issue]) -> String {
    let lines: Vec<String> = issues.iter().map(|i| format!("{path}: {i}")).collect();
    lines.join("\n")
}

impl CliError {
    pub fn file(path: &Path, message: impl ToString) -> CliError {
        CliError::File {
            path: path.display().to_string(),
            message: message.to_string(),
        }
    }

    /// 1 for "the thing checked is bad" (an invalid definition), 2 for everything that kept the CLI from
    /// finding out (usage, connection, server errors). A build that did not pass is exit 1 too, but that is
    /// an [`super::Outcome`], not an error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Definition { .. } => 1,
            _ => 2,
        }
    }
}
