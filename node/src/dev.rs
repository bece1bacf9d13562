//! `jobserv-node dev --dir DIR`: the quickstart. One node and one local worker on this machine with a
//! self-signed CA, the `examples/` projects loaded, a first build triggered and followed to its end. The
//! node keeps serving in the foreground afterwards (Ctrl-C stops node and worker).
use anyhow::{bail, Context};
use jobserv_node::config::NodeConfig;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub struct DevOptions {
    pub dir: PathBuf,
    pub port: Option<u16>,
    pub examples: Option<PathBuf>,
    pub executor: String,
    /// Exit once the first build finished (for scripts and CI) instead of serving on.
    pub exit_after_build: bool,
}

const BUSYBOX_SCRIPT: &str = include_str!("../../worker/scripts/build-busybox-image.sh");
const FIRST_PROJECT: &str = "hello";

fn read_or_create(path: &Path, make: impl FnOnce() -> String) -> anyhow::Result<String> {
    if let Ok(existing) = std::fs::read_to_string(path) {
        return Ok(existing.trim().to_string());
    }
    let value = make();
    std::fs::write(path, &value).with_context(|| format!("writing {}", path.display()))?;
    Ok(value)
}

fn dev_config(opts: &DevOptions) -> anyhow::Result<NodeConfig> {
    let dir = &opts.dir;
    std::fs::create_dir_all(dir)?;
    let pki = jobserv_node::tls::ensure_dev_pki(&dir.join("pki"))?;
    let port: u16 = match opts.port {
        Some(p) => p,
        None => read_or_create(&dir.join("port"), || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .unwrap_or(8443)
                .to_string()
        })?
        .parse()
        .context("DIR/port")?,
    };
    Ok(NodeConfig::local(
        1,
        dir.join("node-1"),
        port,
        &pki,
        read_or_create(&dir.join("cluster-secret"), jobserv_node::auth::new_token)?,
        Some(read_or_create(
            &dir.join("admin-token"),
            jobserv_node::auth::new_token,
        )?),
    ))
}

fn examples_dir(opts: &DevOptions) -> Option<PathBuf> {
    let candidates = [
        opts.examples.clone(),
        Some(PathBuf::from("examples")),
        Some(PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../examples"
        ))),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|p| p.join(format!("{FIRST_PROJECT}.yml")).exists())
}

struct Api {
    client: reqwest::Client,
    url: String,
    token: String,
}

impl Api {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.url))
            .header("Authorization", format!("Token {}", self.token));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await?;
        Ok((r.status().as_u16(), r.json().await.unwrap_or(Value::Null)))
    }

    async fn text(&self, path: &str) -> anyhow::Result<String> {
        Ok(self
            .client
            .get(format!("{}{path}", self.url))
            .header("Authorization", format!("Token {}", self.token))
            .send()
            .await?
            .text()
            .await?)
    }
}

pub async fn run(opts: DevOptions) -> anyhow::Result<()> {
    let config = dev_config(&opts)?;
    if opts.executor == "docker" {
        println!(
            "• preparing the busybox:latest image (built locally from Debian's busybox-static)…"
        );
        let status = std::process::Command::new("bash")
            .arg("-c")
            .arg(BUSYBOX_SCRIPT)
            .status()
            .context("running bash")?;
        if !status.success() {
            bail!("could not build the busybox image: is Docker running? (or use --executor host)");
        }
    }
    let node = jobserv_node::node::start(config.clone())
        .await
        .context("starting the node")?;
    let api = Api {
        client: jobserv_node::tls::client(&config.ca_cert, Duration::from_secs(60))?,
        url: config.advertise_url.clone(),
        token: config.admin_token.clone().unwrap_or_default(),
    };
    println!("• node 1 serving at {}", config.advertise_url);

    let mut worker = start_worker(&opts, &config)?;
    let worker_name = "local-worker";
    if worker.is_some() {
        enlist(&api, worker_name).await?;
        println!(
            "• worker {worker_name} registered and enlisted (executor: {})",
            opts.executor
        );
    } else {
        println!("• no worker attached: jobserv-worker was not found next to this binary (build it with `cargo build --workspace`); runs will wait in the queue");
    }

    let first_build = load_examples(&api, &opts).await?;
    write_cluster_json(
        &opts.dir,
        &config,
        worker.as_ref().map(|w| (worker_name, w.id())),
    )?;
    let login_link = match api
        .call(reqwest::Method::POST, "/ui/login-links", None)
        .await
    {
        Ok((201, reply)) => reply["data"]["url"].as_str().unwrap_or("").to_string(),
        Ok((status, reply)) => format!("(no login link: HTTP {status} {reply})"),
        Err(e) => format!("(no login link: {e})"),
    };
    println!();
    println!("  web UI:       {}/ui/", config.advertise_url);
    println!("  log in once:  {login_link}");
    println!(
        "                (valid for one browser, 10 minutes; then log in with the admin token)"
    );
    println!("  URL:          {}", config.advertise_url);
    println!(
        "  admin token:  {}",
        config.admin_token.as_deref().unwrap_or("")
    );
    println!("  CA file:      {}", config.ca_cert.display());
    println!(
        "  cluster.json: {}",
        opts.dir.join("cluster.json").display()
    );
    println!(
        "  try:          curl --cacert {} -H 'Authorization: Token {}' {}/projects/",
        config.ca_cert.display(),
        config.admin_token.as_deref().unwrap_or(""),
        config.advertise_url
    );
    println!();

    let mut outcome = Ok(());
    if let Some(number) = first_build {
        if worker.is_some() {
            outcome = follow_build(&api, FIRST_PROJECT, number).await;
        }
    }
    if opts.exit_after_build {
        if let Some(w) = worker.as_mut() {
            let _ = w.kill();
            let _ = w.wait();
        }
        node.stop().await;
        return outcome;
    }
    if let Err(e) = &outcome {
        println!("! {e:#}");
    }
    println!("• serving until Ctrl-C");
    let served = node.wait().await;
    if let Some(mut w) = worker {
        let _ = w.kill();
        let _ = w.wait();
    }
    served.context("serving")
}

fn start_worker(
    opts: &DevOptions,
    config: &NodeConfig,
) -> anyhow::Result<Option<std::process::Child>> {
    let binary = std::env::current_exe()?.with_file_name("jobserv-worker");
    if !binary.exists() {
        return Ok(None);
    }
    let log = std::fs::File::create(opts.dir.join("worker.log"))?;
    let child = std::process::Command::new(&binary)
        .args([
            "run",
            "--server",
            &config.advertise_url,
            "--name",
            "local-worker",
            "--host-tag",
            "amd64",
            "--concurrency",
            "2",
            "--executor",
            &opts.executor,
        ])
        .arg("--data-dir")
        .arg(opts.dir.join("worker"))
        .arg("--ca-cert")
        .arg(&config.ca_cert)
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    Ok(Some(child))
}

async fn enlist(api: &Api, name: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = api
            .call(
                reqwest::Method::PATCH,
                &format!("/workers/{name}/"),
                Some(json!({"enlisted": true})),
            )
            .await?;
        if status == 200 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("worker {name} did not register within 60s (see worker.log): {body}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Creates a project per `examples/*.yml` (named after the file) and starts the first build of `hello`.
async fn load_examples(api: &Api, opts: &DevOptions) -> anyhow::Result<Option<u64>> {
    let Some(dir) = examples_dir(opts) else {
        println!("• no examples/ directory found (pass --examples DIR); nothing loaded");
        return Ok(None);
    };
    let mut files: Vec<_> = std::fs::read_dir(&dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yml"))
        .collect();
    files.sort();
    for file in &files {
        let Some(name) = file.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        let (status, body) = api
            .call(
                reqwest::Method::POST,
                "/projects/",
                Some(json!({"name": name})),
            )
            .await?;
        if status != 201 && status != 409 {
            bail!("creating project {name}: HTTP {status}: {body}");
        }
    }
    println!(
        "• loaded {} example projects from {}",
        files.len(),
        dir.display()
    );
    let definition = std::fs::read_to_string(dir.join(format!("{FIRST_PROJECT}.yml")))?;
    let body = json!({"trigger-name": "hello", "project-definition": definition, "reason": "jobserv-node dev quickstart"});
    let (status, reply) = api
        .call(
            reqwest::Method::POST,
            &format!("/projects/{FIRST_PROJECT}/builds/"),
            Some(body),
        )
        .await?;
    if status != 201 {
        bail!("triggering the first build: HTTP {status}: {reply}");
    }
    let number = reply["data"]["build_id"]
        .as_u64()
        .context("build_id in reply")?;
    println!(
        "• triggered build {FIRST_PROJECT}/{number}: {}",
        reply["data"]["url"].as_str().unwrap_or("")
    );
    Ok(Some(number))
}

async fn follow_build(api: &Api, project: &str, number: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut last = String::new();
    loop {
        let (_, body) = api
            .call(
                reqwest::Method::GET,
                &format!("/projects/{project}/builds/{number}/"),
                None,
            )
            .await?;
        let build = &body["data"]["build"];
        let runs: Vec<String> = build["runs"]
            .as_array()
            .map(|runs| {
                runs.iter()
                    .map(|r| {
                        format!(
                            "{}: {}",
                            r["name"].as_str().unwrap_or("?"),
                            r["status"].as_str().unwrap_or("?")
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let line = format!(
            "[build {number}] {} — {}",
            build["status"].as_str().unwrap_or("?"),
            runs.join(", ")
        );
        if line != last {
            println!("  {line}");
            last = line;
        }
        let status = build["status"].as_str().unwrap_or("");
        if status == "PASSED" || status == "FAILED" {
            for run in build["runs"].as_array().into_iter().flatten() {
                let name = run["name"].as_str().unwrap_or("");
                println!(
                    "\n--- console log of {project}/{number}/{name} ({}) ---",
                    run["log_url"].as_str().unwrap_or("")
                );
                print!(
                    "{}",
                    api.text(&format!(
                        "/projects/{project}/builds/{number}/runs/{name}/console.log"
                    ))
                    .await?
                );
                let (_, detail) = api
                    .call(
                        reqwest::Method::GET,
                        &format!("/projects/{project}/builds/{number}/runs/{name}/"),
                        None,
                    )
                    .await?;
                for a in detail["data"]["run"]["artifacts"]
                    .as_array()
                    .into_iter()
                    .flatten()
                {
                    println!("artifact: {}", a["url"].as_str().unwrap_or(""));
                }
            }
            println!("--- build {project}/{number} {status} ---");
            if status == "PASSED" {
                return Ok(());
            }
            bail!("build {project}/{number} FAILED");
        }
        if Instant::now() > deadline {
            bail!("build {project}/{number} did not finish in 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn write_cluster_json(
    dir: &Path,
    config: &NodeConfig,
    worker: Option<(&str, u32)>,
) -> anyhow::Result<()> {
    let workers: Vec<Value> = worker
        .into_iter()
        .map(|(name, pid)| json!({"name": name, "pid": pid}))
        .collect();
    let doc = json!({
        "nodes": [{"id": config.id, "url": config.advertise_url, "pid": std::process::id(), "data_dir": config.data_dir}],
        "workers": workers,
        "admin_token": config.admin_token,
        "ca_cert": config.ca_cert,
    });
    std::fs::write(
        dir.join("cluster.json"),
        serde_json::to_string_pretty(&doc)?,
    )?;
    Ok(())
}
