//! `jobserv`, the user and admin CLI, as a library: the binary (`src/main.rs`) parses [`Cli`] and calls
//! [`run`]; everything else lives here so that it can be tested without a process.
//!
//! A crate of its own so that a laptop installs the CLI without the server: it depends on the wire types
//! (`jobserv-protocol`), reqwest (rustls) and clap — never on openraft, sled or actix (checked by
//! `tests/dependencies.rs`). `cargo install --path node/cli`.
//!
//! ```text
//! args (clap) ─▶ Connection (flags > env > cluster.json) ─▶ Client (fail-over over URLs) ─▶ cmd/<group>.rs
//! ```
//! * One file per command group under `cmd/`, each a thin mapping from arguments to API calls
//!   (`shared/spec/api.md`) and from the jsend `data` to text (or, with `--json`, to the data itself).
//! * `validate` is offline: it uses the same parser the server uses (`jobserv_protocol::project`).
//! * Exit status: 0 success; 1 when the thing asked about is bad (an invalid definition, a build that did not
//!   pass); 2 when the CLI could not find out (usage, connection, or a server error, printed with its jsend
//!   message and HTTP status).
use std::io::Write;

pub mod args;
pub mod client;
mod cmd;
pub mod connection;
pub mod error;
pub mod output;
pub mod progress;
mod tls;

pub use args::Cli;
pub use client::Client;
pub use connection::Connection;
pub use error::CliError;

/// How a command that ran to completion ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// A followed build (or run) completed without passing.
    NotPassed,
}

impl Outcome {
    pub fn exit_code(self) -> u8 {
        match self {
            Outcome::Success => 0,
            Outcome::NotPassed => 1,
        }
    }
}

/// What every server command gets: the client and the output format.
pub struct Ctx {
    pub client: Client,
    pub json: bool,
}

impl Ctx {
    /// Writes `data` as JSON under `--json`, else as `render` makes it.
    pub fn emit(
        &self,
        out: &mut dyn Write,
        data: &serde_json::Value,
        render: impl FnOnce(&serde_json::Value) -> String,
    ) -> Result<Outcome, CliError> {
        let text = if self.json {
            output::pretty(data)
        } else {
            render(data)
        };
        out.write_all(text.as_bytes())?;
        Ok(Outcome::Success)
    }
}

/// Runs one command, writing its output to `out` (stdout in the binary; warnings go to stderr).
pub async fn run(cli: Cli, out: &mut dyn Write) -> Result<Outcome, CliError> {
    let json = cli.global.json;
    let outcome = match cli.command {
        // Offline: no server settings needed, so none are resolved.
        args::Command::Validate { file } => cmd::validate::run(&file, json, out)?,
        command => {
            let ctx = Ctx {
                client: Client::new(&Connection::resolve(&cli.global)?)?,
                json,
            };
            dispatch(&ctx, command, out).await?
        }
    };
    out.flush()?;
    Ok(outcome)
}

async fn dispatch(
    ctx: &Ctx,
    command: args::Command,
    out: &mut dyn Write,
) -> Result<Outcome, CliError> {
    use args::Command;
    match command {
        Command::Validate { file } => cmd::validate::run(&file, ctx.json, out),
        Command::Project(c) => cmd::project::run(ctx, c, out).await,
        Command::Trigger(c) => cmd::trigger::run(ctx, c, out).await,
        Command::Build(c) => cmd::build::run(ctx, c, out).await,
        Command::Run(c) => cmd::run::run(ctx, c, out).await,
        Command::Worker(c) => cmd::worker::run(ctx, c, out).await,
        Command::Cluster(c) => cmd::cluster::run(ctx, c, out).await,
    }
}
