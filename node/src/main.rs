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
    /// Make a deployment's secrets in DIR, only those missing: CA (ca.pem, ca-key.pem), a node
    /// certificate for every --host plus localhost and 127.0.0.1 (node.pem, node-key.pem), cluster-secret
    /// and admin-token. Safe to run at every start (compose's init service, an init container).
    InitSecrets {
        #[arg(long)]
        dir: PathBuf,
        /// A name the nodes are reached by (repeatable; wildcards like *.jobserv.ns.svc.cluster.local).
        #[arg(long = "host")]
        hosts: Vec<String>,
    },
    /// Save a consistent copy of the whole cluster state (builds, runs, logs, tests, artifact metadata,
    /// projects, workers, tokens), cut at one Raft index on a running cluster, into FILE.
    Backup {
        /// Any node's URL.
        #[arg(long, env = "JOBSERV_URL")]
        url: String,
        /// The cluster CA (PEM).
        #[arg(long, env = "JOBSERV_CA_CERT")]
        ca: PathBuf,
        /// A file holding an admin token.
        #[arg(long, env = "JOBSERV_TOKEN_FILE")]
        token_file: PathBuf,
        #[arg(long)]
        to: PathBuf,
        /// Include every artifact's bytes (not needed when artifacts live in an object store).
        #[arg(long)]
        with_blobs: bool,
    },
    /// Restore a backup into the EMPTY data dir of a new cluster's first node (the lowest id of `peers`),
    /// before its first start; then start every node as usual.
    Restore {
        #[arg(long)]
        from: PathBuf,
        /// The node's config (`jobserv-node run --config`), environment overrides included.
        #[arg(long)]
        config: PathBuf,
    },
}

/// mimalloc instead of glibc's malloc: the write path allocates per request, per entry and per apply on
/// every node, and glibc's arenas spent about a tenth of the CPU under `cluster-test bench-commit`.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
        Cmd::InitSecrets { dir, hosts } => {
            let written = jobserv_node::tls::init_secrets(&dir, &hosts)
                .with_context(|| format!("making secrets in {}", dir.display()))?;
            for (path, made) in written {
                let what = if made { "made " } else { "kept " };
                println!("{what} {}", path.display());
            }
            Ok(())
        }
        Cmd::Backup {
            url,
            ca,
            token_file,
            to,
            with_blobs,
        } => {
            let token = std::fs::read_to_string(&token_file)
                .with_context(|| format!("reading {}", token_file.display()))?;
            let client = jobserv_node::tls::client(&ca, std::time::Duration::from_secs(24 * 3600))?;
            let summary = tokio::runtime::Runtime::new()?.block_on(
                jobserv_node::backup::backup(&url, &client, token.trim(), &to, with_blobs),
            )?;
            println!(
                "backup of node {} at index {}: {} pairs, {} blobs, {} bytes in {:.1} s -> {}",
                summary.header.source_node,
                summary.header.applied_index,
                summary.pairs,
                summary.blobs,
                summary.bytes,
                summary.took.as_secs_f64(),
                to.display()
            );
            Ok(())
        }
        Cmd::Restore { from, config } => {
            let config = jobserv_node::config::NodeConfig::load(&config)?;
            let summary = tokio::runtime::Runtime::new()?
                .block_on(jobserv_node::backup::restore(&from, &config))?;
            println!(
                "restored index {} of node {}: {} pairs, {} blobs into {} in {:.1} s; now start every node",
                summary.header.applied_index,
                summary.header.source_node,
                summary.pairs,
                summary.blobs,
                config.data_dir.display(),
                summary.took.as_secs_f64()
            );
            Ok(())
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
