//! `jobserv-node`: a JobServ server node. See `shared/spec/cli.md`.
use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

mod dev;

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
    /// The quickstart: one node, one local worker, self-signed TLS, examples loaded, a first build run.
    Dev {
        #[arg(long, default_value = "jobserv-dev")]
        dir: PathBuf,
        /// Port to listen on (default: a free one, remembered in DIR/port).
        #[arg(long)]
        port: Option<u16>,
        /// Project definitions to load (default: ./examples).
        #[arg(long)]
        examples: Option<PathBuf>,
        #[arg(long, default_value = "docker", value_parser = ["docker", "host"])]
        executor: String,
        /// Stop once the first build finished; exit non-zero unless it passed.
        #[arg(long)]
        exit_after_build: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Run { config } => {
            let config = jobserv_node::config::NodeConfig::load(&config)?;
            init_tracing(config.log_json, "info,openraft=warn");
            actix_web::rt::System::new().block_on(async move {
                let node = jobserv_node::node::start(config)
                    .await
                    .context("starting the node")?;
                node.wait().await.context("serving")
            })
        }
        Cmd::Dev {
            dir,
            port,
            examples,
            executor,
            exit_after_build,
        } => {
            init_tracing(false, "warn");
            let opts = dev::DevOptions {
                dir,
                port,
                examples,
                executor,
                exit_after_build,
            };
            actix_web::rt::System::new().block_on(dev::run(opts))
        }
    }
}

fn init_tracing(json: bool, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| default_filter.into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
