//! The command line of `jobserv`, as clap derive types. Kept in the library (not the binary) so that tests
//! and docs can parse argument vectors without spawning a process; the binary only calls [`Cli::parse`].
//!
//! Connection settings come from flags, then the environment (`JOBSERV_URL`, `JOBSERV_TOKEN`, `JOBSERV_CA`),
//! then a `cluster.json` written by `jobserv-node dev` or `cluster-test up` (see [`super::connection`]).
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(name = "jobserv", version, about = "The JobServ user and admin CLI")]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Where the server is and how to talk to it; accepted before or after the subcommand.
#[derive(Debug, Clone, Default, Args)]
pub struct GlobalArgs {
    /// Server URL(s), comma-separated; the next one is tried when one cannot be reached.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "JOBSERV_URL",
        value_name = "URL[,URL…]"
    )]
    pub server: Option<String>,
    /// API token (admin or user), sent as `Authorization: Token …`.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "JOBSERV_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// PEM file of the CA that signed the servers' certificates (default: the public web PKI roots).
    #[arg(
        long = "ca-cert",
        global = true,
        help_heading = "Global options",
        env = "JOBSERV_CA",
        value_name = "PEM"
    )]
    pub ca_cert: Option<PathBuf>,
    /// A `cluster.json` (or the directory holding it) supplying URLs, admin token and CA not given otherwise.
    #[arg(
        long = "cluster-json",
        global = true,
        help_heading = "Global options",
        env = "JOBSERV_CLUSTER_JSON",
        value_name = "FILE"
    )]
    pub cluster_json: Option<PathBuf>,
    /// Print the server's JSON `data` instead of tables.
    #[arg(long, global = true, help_heading = "Global options")]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a project definition offline and summarize the runs each trigger creates.
    Validate {
        /// The project YAML file.
        file: PathBuf,
    },
    /// List, create, show and delete projects.
    #[command(subcommand)]
    Project(ProjectCmd),
    /// List and create a project's triggers.
    #[command(subcommand)]
    Trigger(TriggerCmd),
    /// Create, list, show, follow and promote builds.
    #[command(subcommand)]
    Build(BuildCmd),
    /// Console logs, status, rerun and cancel of one run.
    #[command(subcommand)]
    Run(RunCmd),
    /// List, enlist and delist workers (admin).
    #[command(subcommand)]
    Worker(WorkerCmd),
    /// The cluster as a node sees it.
    #[command(subcommand)]
    Cluster(ClusterCmd),
}

#[derive(Debug, Subcommand)]
pub enum ProjectCmd {
    List,
    Create {
        name: String,
        /// Run this project's builds one at a time.
        #[arg(long)]
        synchronous: bool,
    },
    Show {
        name: String,
    },
    Delete {
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum TriggerCmd {
    List { project: String },
    Create(NewTrigger),
}

#[derive(Debug, Args)]
pub struct NewTrigger {
    pub project: String,
    /// git_poller, github_pr, gitlab_mr, simple, lava, lava_pr or lava_mr.
    #[arg(long = "type", value_name = "TYPE")]
    pub trigger_type: String,
    #[arg(long)]
    pub owner: Option<String>,
    /// A secret the trigger's builds get; repeatable. Values are write-only on the server.
    #[arg(long = "secret", value_name = "NAME=VALUE", value_parser = parse_key_value)]
    pub secrets: Vec<(String, String)>,
    /// A secret whose value is read from a file (keeps it out of the process list); repeatable.
    #[arg(long = "secret-file", value_name = "NAME=PATH", value_parser = parse_key_value)]
    pub secret_files: Vec<(String, String)>,
    #[arg(long = "definition-repo", value_name = "URL")]
    pub definition_repo: Option<String>,
    #[arg(long = "definition-file", value_name = "PATH")]
    pub definition_file: Option<String>,
    /// Higher runs first.
    #[arg(long = "queue-priority", value_name = "N", allow_hyphen_values = true)]
    pub queue_priority: Option<i32>,
}

#[derive(Debug, Subcommand)]
pub enum BuildCmd {
    /// Trigger a build; prints its number and URL.
    Create(NewBuild),
    /// The project's builds, newest first.
    List {
        project: String,
        #[arg(long, default_value_t = 25)]
        limit: usize,
    },
    /// A build and its runs.
    Show {
        project: String,
        /// A build number or `latest` (the newest build, whatever its status).
        build: String,
    },
    /// Wait for a build to complete, printing run status changes; exit 0 only if it passed.
    Follow {
        project: String,
        build: String,
        /// Seconds between polls.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
    },
    /// Mark a build PROMOTED under a name.
    Promote {
        project: String,
        build: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        annotation: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct NewBuild {
    pub project: String,
    /// The trigger (of the project definition) to build.
    #[arg(long)]
    pub trigger: String,
    /// The project YAML; checked locally first. Without it the server reuses the latest build's.
    #[arg(long, value_name = "FILE.yml")]
    pub definition: Option<PathBuf>,
    /// A build parameter (overrides the definition's `params`); repeatable.
    #[arg(long = "param", value_name = "K=V", value_parser = parse_key_value)]
    pub params: Vec<(String, String)>,
    /// A secret for this build's runs; repeatable.
    #[arg(long = "secret", value_name = "K=V", value_parser = parse_key_value)]
    pub secrets: Vec<(String, String)>,
    /// A secret whose value is read from a file; repeatable.
    #[arg(long = "secret-file", value_name = "K=PATH", value_parser = parse_key_value)]
    pub secret_files: Vec<(String, String)>,
    /// Why the build was started (shown in `build list`).
    #[arg(long)]
    pub reason: Option<String>,
    /// Higher runs first.
    #[arg(long = "queue-priority", value_name = "N", allow_hyphen_values = true)]
    pub queue_priority: Option<i32>,
    /// Wait for the build and show its progress; exit 0 only if it passed.
    #[arg(long)]
    pub follow: bool,
}

#[derive(Debug, Subcommand)]
pub enum RunCmd {
    /// Print the console log; `--follow` streams it until the run ends.
    Log {
        #[command(flatten)]
        run: RunArgs,
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// Status, worker, timings, tests and artifacts.
    Show(RunArgs),
    /// Queue the run again (admin).
    Rerun(RunArgs),
    Cancel(RunArgs),
    /// Print the run definition (`.rundef.json`) for the simulator; secrets are blanked.
    Rundef(RunArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    pub project: String,
    /// A build number or `latest`.
    pub build: String,
    pub run: String,
}

#[derive(Debug, Subcommand)]
pub enum WorkerCmd {
    List,
    /// Let a registered worker take runs (admin).
    Enlist {
        name: String,
    },
    /// Stop handing runs to a worker (admin); its current runs finish.
    Delist {
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClusterCmd {
    /// Leader, term, and each node's Raft role and gossip state.
    Status {
        /// The answering node's own view at once, even without a quorum (`?stale=1`); by default the
        /// read is linearizable and a node cut off from the majority answers 503.
        #[arg(long)]
        stale: bool,
    },
}

/// `NAME=VALUE`; the value may be empty or contain `=`, the name may not be empty.
pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected NAME=VALUE, got {s:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_value_keeps_equals_signs_in_the_value() {
        assert_eq!(parse_key_value("A=b=c"), Ok(("A".into(), "b=c".into())));
        assert_eq!(parse_key_value("A="), Ok(("A".into(), String::new())));
        assert!(parse_key_value("=x").is_err());
        assert!(parse_key_value("novalue").is_err());
    }

    #[test]
    fn global_flags_are_accepted_after_the_subcommand() {
        let cli = Cli::try_parse_from([
            "jobserv",
            "project",
            "list",
            "--server",
            "https://a,https://b",
            "--json",
        ]);
        let cli = cli.map_err(|e| e.to_string());
        assert!(
            cli.as_ref().is_ok_and(
                |c| c.global.json && c.global.server.as_deref() == Some("https://a,https://b")
            ),
            "{cli:?}"
        );
    }

    #[test]
    fn build_create_takes_repeated_params() {
        let cli = Cli::try_parse_from([
            "jobserv",
            "build",
            "create",
            "p",
            "--trigger",
            "t",
            "--param",
            "A=1",
            "--param",
            "B=2",
        ]);
        match cli.map(|c| c.command) {
            Ok(Command::Build(BuildCmd::Create(b))) => assert_eq!(b.params.len(), 2),
            other => panic!("unexpected parse: {other:?}"),
        }
    }
}
