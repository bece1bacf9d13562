//! `jobserv`: the JobServ user and admin CLI. A thin binary over the `jobserv_cli` library (see its docs for the
//! commands, connection settings and exit codes).
use anyhow::Context;
use clap::Parser;
use jobserv_cli::{run, Cli};
use std::process::ExitCode;

fn main() -> ExitCode {
    match try_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("jobserv: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn try_main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let mut stdout = std::io::stdout().lock();
    match runtime.block_on(run(cli, &mut stdout)) {
        Ok(outcome) => Ok(ExitCode::from(outcome.exit_code())),
        Err(e) => {
            // One problem per line (a definition can have several), each prefixed so it greps well.
            for line in e.to_string().lines() {
                eprintln!("jobserv: {line}");
            }
            Ok(ExitCode::from(e.exit_code()))
        }
    }
}
