//! `jobserv-node`: a JobServ server node. See `shared/spec/cli.md`.
use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "jobserv-node", version, about = "A JobServ server node")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a production node from a TOML config (every key has a JOBSERV_<KEY> environment override).
    Run {
        #[arg(long)]
        config: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Run { config } => {
            let config = jobserv_node::config::NodeConfig::load(&config)?;
            init_tracing(config.log_json);
            actix_web::rt::System::new().block_on(async move {
                let node = jobserv_node::node::start(config).await.context("starting the node")?;
                node.wait().await.context("serving")
            })
        }
    }
}

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,openraft=warn".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
