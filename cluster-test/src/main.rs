//! `cluster-test`: real JobServ processes on this machine — crash loops, benchmarks, and (with the
//! cluster work) `up` / `restart-node` and the chaos suite. See `shared/spec/cli.md`.
use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "cluster-test",
    version,
    about = "Real multi-process JobServ clusters on one machine"
)]
struct Cli {
    /// Where jobserv-node and jobserv-worker are (default: next to this binary).
    #[arg(long, global = true)]
    bin_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start N nodes and M workers, write DIR/cluster.json, stay in the foreground until SIGTERM/SIGINT.
    Up {
        #[arg(long, default_value_t = 3)]
        nodes: u64,
        #[arg(long, default_value_t = 2)]
        workers: usize,
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value = "docker", value_parser = ["docker", "host"])]
        executor: String,
    },
    /// The chaos scenarios (S3 S4 S6 S9 soak), each on a fresh 3-node cluster with 2 Docker workers.
    Chaos {
        /// Scenarios to run (default: all): s3, s4, s5, s6, s9, s10, soak.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        #[arg(long, default_value_t = 60)]
        soak_seconds: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Leader failover time over N kills, and how long a streaming worker needs to resume on another node.
    BenchFailover {
        #[arg(long, default_value_t = 10)]
        kills: usize,
        #[arg(long, default_value_t = 5)]
        resumes: usize,
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Start node N of the cluster in DIR again on the same data dir and port; rewrite its pid.
    RestartNode {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        id: u64,
    },
    /// SIGKILL a node in the middle of a stream of acknowledged writes, restart it, verify, repeat.
    CrashLoop {
        #[arg(long, default_value_t = 200)]
        iterations: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Working directory (default: a fresh temp dir).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// One-node commit and build-creation throughput/latency, memory and disk footprint.
    BenchNode {
        #[arg(long, default_value_t = 32)]
        clients: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 100_000)]
        footprint_writes: u64,
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Push -> build created through the git poller (at its poll interval) and through a GitHub webhook.
    BenchTriggers {
        #[arg(long, default_value_t = 30)]
        poll_interval_secs: u64,
        #[arg(long, default_value_t = 5)]
        poll_samples: usize,
        #[arg(long, default_value_t = 20)]
        webhook_samples: usize,
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// The whole-system benchmark on its own 3-node cluster: throughput, latency, fail-over, scaling.
    Bench {
        /// A scaled-down run (CI; under 5 minutes) that still emits every key.
        #[arg(long)]
        quick: bool,
        /// Write the figures as one JSON object (the keys of `cluster_test::bench::KEYS`).
        #[arg(long)]
        json: Option<PathBuf>,
        /// Working directory (default: a fresh temp dir).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Build created -> run RUNNING on an idle worker, and the runner's overhead against `docker run`.
    BenchWorker {
        #[arg(long, default_value_t = 20)]
        samples: usize,
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

fn work_dir(dir: Option<PathBuf>) -> anyhow::Result<(PathBuf, Option<tempfile_guard::Guard>)> {
    match dir {
        Some(d) => {
            std::fs::create_dir_all(&d)?;
            Ok((d, None))
        }
        None => {
            let guard = tempfile_guard::Guard::new()?;
            Ok((guard.path.clone(), Some(guard)))
        }
    }
}

/// A temp dir removed on drop (no extra dependency for one directory).
mod tempfile_guard {
    pub struct Guard {
        pub path: std::path::PathBuf,
    }
    impl Guard {
        pub fn new() -> std::io::Result<Guard> {
            let path = std::env::temp_dir().join(format!(
                "cluster-test-{}-{}",
                std::process::id(),
                jobserv_node::auth::new_token().get(..8).unwrap_or("x")
            ));
            std::fs::create_dir_all(&path)?;
            Ok(Guard { path })
        }
    }
    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let bin_dir = cluster_test::harness::bin_dir(cli.bin_dir.as_deref())?;
    match cli.command {
        Cmd::Up {
            nodes,
            workers,
            dir,
            executor,
        } => {
            let opts = cluster_test::local_cluster::ClusterOptions {
                nodes,
                workers,
                executor,
                ..Default::default()
            };
            let mut cluster =
                cluster_test::local_cluster::LocalCluster::up(&dir, &bin_dir, &opts).await?;
            println!(
                "cluster up: {} nodes, {} workers; {}",
                nodes,
                workers,
                dir.join("cluster.json").display()
            );
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            // Restarted nodes are not our children any more: stop by the pids cluster.json lists.
            cluster_test::local_cluster::stop_all_listed(&dir);
            cluster.kill_all();
        }
        Cmd::Chaos {
            only,
            soak_seconds,
            seed,
            dir,
        } => {
            let (dir, _guard) = work_dir(dir)?;
            let wanted = |s: &str| only.is_empty() || only.iter().any(|o| o == s);
            let mut failed = 0;
            for name in ["s3", "s4", "s5", "s6", "s9", "s10", "soak"] {
                if !wanted(name) {
                    continue;
                }
                let sub = dir.join(name);
                let result = match name {
                    "s3" => cluster_test::chaos::leader_killed(&sub, &bin_dir).await,
                    "s4" => cluster_test::chaos::rolling_restart(&sub, &bin_dir).await,
                    "s5" => cluster_test::chaos::partition(&sub, &bin_dir).await,
                    "s6" => cluster_test::chaos::worker_killed(&sub, &bin_dir).await,
                    "s9" => cluster_test::chaos::wiped_node_rejoins(&sub, &bin_dir).await,
                    "s10" => cluster_test::chaos::rolling_upgrade(&sub, &bin_dir).await,
                    _ => cluster_test::chaos::soak(&sub, &bin_dir, soak_seconds, seed).await,
                };
                match result {
                    Ok(report) => println!("{report}"),
                    Err(e) => {
                        failed += 1;
                        println!("{name}: FAIL — {e:#}");
                    }
                }
            }
            if failed > 0 {
                anyhow::bail!("{failed} scenario(s) failed");
            }
        }
        Cmd::BenchFailover {
            kills,
            resumes,
            json,
        } => {
            let (dir, _guard) = work_dir(None)?;
            let report = cluster_test::bench_failover::run(&dir, &bin_dir, kills, resumes).await?;
            report.print();
            if let Some(path) = json {
                std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
            }
        }
        Cmd::RestartNode { dir, id } => {
            let pid = cluster_test::local_cluster::restart_node(&dir, &bin_dir, id)?;
            println!("node {id} restarted, pid {pid}");
        }
        Cmd::CrashLoop {
            iterations,
            seed,
            dir,
        } => {
            let (dir, _guard) = work_dir(dir)?;
            let report = cluster_test::crash_loop::run(&dir, &bin_dir, iterations, seed)
                .await
                .context("crash loop")?;
            let mut ready = report.restart_ready.clone();
            println!(
                "crash loop: {} SIGKILL/restart cycles passed; {} acknowledged appends ({} bytes) and {} acknowledged builds all present, no byte duplicated, build numbers gapless; restart-to-ready p50 {:.0} ms, max {:.0} ms",
                report.iterations,
                report.acked_appends,
                report.acked_bytes,
                report.acked_builds,
                cluster_test::stats::ms(cluster_test::stats::percentile(&mut ready, 50.0)),
                cluster_test::stats::ms(cluster_test::stats::percentile(&mut ready, 100.0)),
            );
        }
        Cmd::BenchNode {
            clients,
            seconds,
            footprint_writes,
            json,
        } => {
            let (dir, _guard) = work_dir(None)?;
            let opts = cluster_test::bench_node::BenchOptions {
                clients,
                seconds,
                footprint_writes,
            };
            let report = cluster_test::bench_node::run(&dir, &bin_dir, &opts).await?;
            report.print();
            if let Some(path) = json {
                std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
            }
        }
        Cmd::BenchTriggers {
            poll_interval_secs,
            poll_samples,
            webhook_samples,
            json,
        } => {
            let (dir, _guard) = work_dir(None)?;
            let opts = cluster_test::bench_triggers::BenchTriggersOptions {
                poll_interval_secs,
                poll_samples,
                webhook_samples,
            };
            let report = cluster_test::bench_triggers::run(&dir, &bin_dir, &opts).await?;
            report.print();
            if let Some(path) = json {
                std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
            }
        }
        Cmd::Bench { quick, json, dir } => {
            let (dir, _guard) = work_dir(dir)?;
            let report = cluster_test::bench::run(
                &dir,
                &bin_dir,
                &cluster_test::bench::BenchOptions { quick },
            )
            .await?;
            report.print();
            if let Some(path) = json {
                std::fs::write(&path, serde_json::to_string_pretty(&report.to_json())?)?;
                println!("wrote {}", path.display());
            }
            anyhow::ensure!(
                report.missing().is_empty(),
                "missing figures: {:?}",
                report.missing()
            );
        }
        Cmd::BenchWorker { samples, json } => {
            let (dir, _guard) = work_dir(None)?;
            let report = cluster_test::bench_worker::run(&dir, &bin_dir, samples).await?;
            report.print();
            if let Some(path) = json {
                std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
            }
        }
    }
    Ok(())
}
