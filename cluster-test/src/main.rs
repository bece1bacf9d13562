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
        /// Scenarios to run (default: all): s3, s4, s5, s6, s9, s10, uploads, soak.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        #[arg(long, default_value_t = 60)]
        soak_seconds: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Dispatch from a deep queue alone (the bench's dispatch phase): runs handed out per second, for each
    /// `--queued` depth, on a 3-node cluster with simulated workers.
    BenchDispatch {
        #[arg(long, num_args = 1.., default_values_t = vec![2000, 20000])]
        queued: Vec<usize>,
        #[arg(long, default_value_t = 30)]
        workers: usize,
        /// Nodes read at most format 2 (`JOBSERV_MAX_FORMAT=2`): check-ins take the path from before
        /// `AssignNext` (the before figure of issue 13).
        #[arg(long)]
        before_assign_next: bool,
    },
    /// Durable writes alone (the bench's commit phase): console appends per second and p99, for each
    /// `--clients` count, on a 3-node cluster.
    BenchCommit {
        #[arg(long, num_args = 1.., default_values_t = vec![32, 256])]
        clients: Vec<usize>,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Log ingest and live-tail lag alone (the bench's log phase): 50 runs streaming CHUNK_KIB chunks.
    BenchLogs {
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 64)]
        chunk_kib: usize,
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Artifact upload/download throughput alone (the bench's artifact phase) for an artifact of MIB.
    BenchArtifacts {
        #[arg(long, default_value_t = 1024)]
        mib: u64,
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// The web UI's heaviest pages on a warm node: a RUNS-run build page, a run page with a LOG_MIB log.
    BenchUi {
        #[arg(long, default_value_t = 200)]
        runs: usize,
        #[arg(long, default_value_t = 50)]
        log_mib: u64,
        #[arg(long, default_value_t = 20)]
        samples: usize,
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// A console log of MIB through 3 nodes: ingest, read back whole and from offsets, snapshot cost.
    BigLog {
        #[arg(long, default_value_t = 200)]
        mib: u64,
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Backup of a 3-node cluster with BUILDS completed builds taken while builds run (`jobserv-node backup
    /// --with-blobs`), restored into a fresh 3-node cluster (`jobserv-node restore`): times and size;
    /// `--compare` also reads every build back from both and requires them identical.
    BenchBackup {
        #[arg(long, default_value_t = 10000)]
        builds: usize,
        #[arg(long)]
        compare: bool,
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Disk use of 3 nodes with BUILDS completed builds (log + artifact each), and after retention deleted 90 %.
    RetentionDisk {
        #[arg(long, default_value_t = 10000)]
        builds: usize,
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// A Docker run archives a SIZE MiB file on 3 nodes (fsync on): it must PASS and download with its hash
    /// from every node, also after SIGKILL of the node that took the upload and a wipe of another; peak RSS.
    BigArtifact {
        #[arg(long, default_value_t = 2048)]
        size_mib: u64,
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Leader failover time over N kills, and how long a streaming worker needs to resume on another node.
    BenchFailover {
        #[arg(long, default_value_t = 10)]
        kills: usize,
        /// Leader SIGTERMs (graceful stop with hand-over), measured like the kills.
        #[arg(long, default_value_t = 10)]
        graceful: usize,
        #[arg(long, default_value_t = 5)]
        resumes: usize,
        #[arg(long)]
        json: Option<PathBuf>,
        /// Keep the cluster's data dirs and node logs here (default: a temporary directory).
        #[arg(long)]
        dir: Option<PathBuf>,
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
    /// S9 at scale: a state of BUILDS builds, then CYCLES times: snapshot+purge, wipe a follower, restart
    /// it, wait until it installed a snapshot and caught up, read and write through it.
    RejoinLoop {
        #[arg(long, default_value_t = 10_000)]
        builds: usize,
        #[arg(long, default_value_t = 10)]
        runs_per_build: usize,
        #[arg(long, default_value_t = 30)]
        cycles: usize,
        /// Builds created through the rejoined node after each cycle.
        #[arg(long, default_value_t = 20)]
        builds_between: usize,
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

/// Set once `up` has its cluster up: from then on a signal is its normal end (exit 0).
static UP_SERVING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// SIGINT, SIGTERM and SIGHUP, listened to from the start (before anything is spawned).
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

impl Signals {
    fn listen() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }

    /// The next signal's number.
    async fn next(&mut self) -> i32 {
        tokio::select! {
            _ = self.interrupt.recv() => libc::SIGINT,
            _ = self.terminate.recv() => libc::SIGTERM,
            _ = self.hangup.recv() => libc::SIGHUP,
        }
    }
}

/// Every command stops every process it started — nodes, workers, in-process simulated workers and proxies
/// — whether it ends, fails, or is interrupted:
/// - ends or fails: the command's values are dropped (each `OwnedChild` SIGKILLs and reaps its process),
///   then whatever is still registered is killed (`harness::kill_all_children`);
/// - SIGINT/SIGTERM/SIGHUP: everything registered is SIGKILLed and reaped, the command is dropped (its temp
///   dir removed), and the exit status is 128 + the signal (130, 143, 129). For `up` a signal is the normal
///   end: it first stops what `cluster.json` lists (SIGTERM, SIGKILL after 10 s; that includes nodes that
///   `restart-node` started, which are not its children), then exits 0 — or 128 + the signal if the
///   cluster was not up yet. A second signal skips the grace.
/// - SIGKILLed itself: every child has `PR_SET_PDEATHSIG(SIGKILL)` and is killed by the kernel.
#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let mut signals = match Signals::listen() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("Error: listening for signals: {e}");
            std::process::exit(1);
        }
    };
    let up_dir = match &cli.command {
        Cmd::Up { dir, .. } => Some(dir.clone()),
        _ => None,
    };
    let mut work = Box::pin(run(cli));
    let interrupted = tokio::select! {
        result = &mut work => Err(result),
        sig = signals.next() => Ok(sig),
    };
    match interrupted {
        Err(result) => {
            drop(work);
            let leftovers = cluster_test::harness::kill_all_children();
            if !leftovers.is_empty() {
                eprintln!(
                    "cluster-test: killed {} process(es) the command left running: {leftovers:?}",
                    leftovers.len()
                );
            }
            if let Err(e) = result {
                eprintln!("Error: {e:?}");
                std::process::exit(1);
            }
            std::process::exit(0);
        }
        Ok(sig) => {
            if let Some(dir) = up_dir {
                eprintln!("cluster-test up: signal {sig}: stopping the cluster");
                let graceful = tokio::task::spawn_blocking(move || {
                    cluster_test::local_cluster::stop_all_listed(&dir)
                });
                tokio::select! {
                    _ = graceful => {}
                    again = signals.next() => eprintln!("cluster-test up: signal {again}: killing at once"),
                }
                cluster_test::harness::kill_all_children();
                drop(work);
                let serving = UP_SERVING.load(std::sync::atomic::Ordering::SeqCst);
                std::process::exit(if serving { 0 } else { 128 + sig });
            }
            let killed = cluster_test::harness::kill_all_children();
            eprintln!(
                "cluster-test: signal {sig}: killed the {} process(es) it had started",
                killed.len()
            );
            drop(work);
            std::process::exit(128 + sig);
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
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
            let _cluster =
                cluster_test::local_cluster::LocalCluster::up(&dir, &bin_dir, &opts).await?;
            println!(
                "cluster up: {} nodes, {} workers; {}",
                nodes,
                workers,
                dir.join("cluster.json").display()
            );
            // Until SIGTERM/SIGINT: `main` then stops what cluster.json lists, and everything registered.
            UP_SERVING.store(true, std::sync::atomic::Ordering::SeqCst);
            std::future::pending::<()>().await;
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
            for name in ["s3", "s4", "s5", "s6", "s9", "s10", "uploads", "soak"] {
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
                    "uploads" => {
                        // Its own report (not the workload verdict of the others).
                        match cluster_test::artifacts::uploads_under_kills(&sub, &bin_dir, 20, 64)
                            .await
                        {
                            Ok(r) => {
                                println!("{r}");
                                continue;
                            }
                            Err(e) => Err(e),
                        }
                    }
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
        Cmd::BenchDispatch {
            queued,
            workers,
            before_assign_next,
        } => {
            let node_env = if before_assign_next {
                vec![("JOBSERV_MAX_FORMAT".into(), "2".into())]
            } else {
                Vec::new()
            };
            let mut b = PhaseBench::start(None, &bin_dir, node_env).await?;
            b.plan.dispatch_workers = workers;
            for (i, n) in queued.into_iter().enumerate() {
                let key = "dispatch_runs_per_s";
                let tag = format!("dispatch-{i}");
                let f = cluster_test::bench::dispatch::drain(
                    &b.cluster, &b.fleet, &b.plan, key, n, &tag,
                )
                .await?;
                print_figures(&[f], "");
            }
        }
        Cmd::BenchCommit {
            clients,
            seconds,
            dir,
        } => {
            let mut b = PhaseBench::start(dir, &bin_dir, Vec::new()).await?;
            b.plan.commit_seconds = seconds;
            for n in clients {
                let keys = ["commit_writes_per_s", "commit_p99_ms"];
                let figures =
                    cluster_test::bench::commit::run(&b.cluster, &b.fleet, &b.plan, n, keys)
                        .await?;
                print_figures(&figures, &format!("{n} clients; "));
            }
        }
        Cmd::BenchLogs {
            seconds,
            chunk_kib,
            dir,
        } => {
            let mut b = PhaseBench::start(dir, &bin_dir, Vec::new()).await?;
            b.plan.log_seconds = seconds;
            b.plan.log_chunk = chunk_kib * 1024;
            print_figures(
                &cluster_test::bench::logs::run(&b.cluster, &b.fleet, &b.plan).await?,
                "",
            );
        }
        Cmd::BenchArtifacts { mib, dir } => {
            let mut b = PhaseBench::start(dir, &bin_dir, Vec::new()).await?;
            b.plan.artifact_mib = mib;
            print_figures(
                &cluster_test::bench::artifacts::run(&b.cluster, &b.plan).await?,
                "",
            );
        }
        Cmd::BenchUi {
            runs,
            log_mib,
            samples,
            dir,
        } => {
            let (dir, _guard) = work_dir(dir)?;
            let opts = cluster_test::bench_ui::UiBenchOptions {
                runs,
                log_mib,
                samples,
            };
            println!(
                "{}",
                cluster_test::bench_ui::run(&dir, &bin_dir, &opts).await?
            );
        }
        Cmd::BigLog { mib, dir } => {
            let (dir, _guard) = work_dir(dir)?;
            println!("{}", cluster_test::big_log::run(&dir, &bin_dir, mib).await?);
        }
        Cmd::BenchBackup {
            builds,
            compare,
            dir,
        } => {
            let (dir, _guard) = work_dir(dir)?;
            let report = cluster_test::backup::run(&dir, &bin_dir, builds, compare).await?;
            println!("{report}");
        }
        Cmd::RetentionDisk { builds, dir } => {
            let (dir, _guard) = work_dir(dir)?;
            println!(
                "{}",
                cluster_test::retention_disk::run(&dir, &bin_dir, builds).await?
            );
        }
        Cmd::BigArtifact { size_mib, dir } => {
            let (dir, _guard) = work_dir(dir)?;
            let report = cluster_test::artifacts::big_artifact(&dir, &bin_dir, size_mib).await?;
            println!("{report}");
        }
        Cmd::BenchFailover {
            kills,
            graceful,
            resumes,
            json,
            dir,
        } => {
            let (dir, _guard) = work_dir(dir)?;
            let report =
                cluster_test::bench_failover::run(&dir, &bin_dir, kills, graceful, resumes).await?;
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
        Cmd::RejoinLoop {
            builds,
            runs_per_build,
            cycles,
            builds_between,
            dir,
        } => {
            let (dir, _guard) = work_dir(dir)?;
            let started = std::time::Instant::now();
            let say = |what: &str| println!("[{:>6.1}s] {what}", started.elapsed().as_secs_f64());
            let opts = cluster_test::rejoin::LoopOptions {
                builds,
                runs_per_build,
                cycles,
                builds_between,
            };
            let report = cluster_test::rejoin::rejoin_loop(&dir, &bin_dir, &opts, &say).await?;
            println!("{report}");
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

/// A 3-node cluster in `dir/cluster` with no real worker (the benches that simulate their own).
/// What every single-phase bench (`bench-dispatch`, `-commit`, `-logs`, `-artifacts`) starts from: a
/// workerless 3-node cluster, a simulated fleet on it and the full bench's plan.
struct PhaseBench {
    cluster: cluster_test::local_cluster::LocalCluster,
    fleet: cluster_test::bench::sim::Fleet,
    plan: cluster_test::bench::Plan,
    /// Last: fields drop in order, and the nodes must be gone before their directory.
    _dir: Option<tempfile_guard::Guard>,
}

impl PhaseBench {
    async fn start(
        dir: Option<PathBuf>,
        bin_dir: &std::path::Path,
        node_env: Vec<(String, String)>,
    ) -> anyhow::Result<PhaseBench> {
        let (dir, guard) = work_dir(dir)?;
        let cluster = workerless_cluster(&dir, bin_dir, node_env).await?;
        let fleet = cluster_test::bench::sim::Fleet::new(&cluster, 4)?;
        Ok(PhaseBench {
            cluster,
            fleet,
            plan: cluster_test::bench::Plan::new(false),
            _dir: guard,
        })
    }
}

fn print_figures(figures: &[cluster_test::bench::Figure], prefix: &str) {
    for f in figures {
        println!("{} = {:.1}  ({prefix}{})", f.key, f.value, f.workload);
    }
}

async fn workerless_cluster(
    dir: &std::path::Path,
    bin_dir: &std::path::Path,
    node_env: Vec<(String, String)>,
) -> anyhow::Result<cluster_test::local_cluster::LocalCluster> {
    let opts = cluster_test::local_cluster::ClusterOptions {
        node_env,
        ..cluster_test::local_cluster::ClusterOptions::workerless()
    };
    cluster_test::local_cluster::LocalCluster::up(&dir.join("cluster"), bin_dir, &opts).await
}
