//! `deploy/compose/docker-compose.yml` driven for real: the images the Dockerfile builds, one compose
//! project per test (its own name, host ports and worker directory), `docker kill` and `docker-compose up -d`
//! as an operator types them. Torn down (`down -v`) when dropped.
use crate::harness::{free_port, repo_root};
use anyhow::{bail, Context};
use reqwest::Method;
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub struct ComposeStack {
    pub project: String,
    file: PathBuf,
    env: Vec<(String, String)>,
    pub ports: [u16; 3],
    pub worker_name: String,
    worker_dir: PathBuf,
    pub client: reqwest::Client,
    pub token: String,
    pub ca_file: PathBuf,
}

/// Fails clearly when the images are not there (`.ci/run` builds them with `deploy/build-images.sh`).
pub fn require_images(tag: &str) {
    for image in [
        format!("jobserv/node:{tag}"),
        format!("jobserv/worker:{tag}"),
    ] {
        let ok = Command::new("docker")
            .args(["image", "inspect", &image])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            ok,
            "image {image} not found: build it with `bash deploy/build-images.sh {tag}` (no registry is needed)"
        );
    }
}

fn run(cmd: &mut Command) -> anyhow::Result<Output> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    Ok(out)
}

impl ComposeStack {
    /// `docker-compose up -d` of the deployment with images `jobserv/{node,worker}:tag`; returns once every
    /// node is ready (caught up with a leader) and the worker is enlisted.
    pub async fn up(tag: &str, worker_host_tag: &str) -> anyhow::Result<ComposeStack> {
        let project = format!("jobservtest{}", std::process::id());
        let ports = [free_port()?, free_port()?, free_port()?];
        let worker_name = format!("compose-{}", std::process::id());
        let worker_dir =
            std::env::temp_dir().join(format!("jobserv-compose-{}", std::process::id()));
        std::fs::create_dir_all(&worker_dir)?;
        let env = vec![
            ("JOBSERV_TAG".to_string(), tag.to_string()),
            ("JOBSERV_PORT_1".into(), ports[0].to_string()),
            ("JOBSERV_PORT_2".into(), ports[1].to_string()),
            ("JOBSERV_PORT_3".into(), ports[2].to_string()),
            ("JOBSERV_WORKER_NAME".into(), worker_name.clone()),
            (
                "JOBSERV_WORKER_DIR".into(),
                worker_dir.display().to_string(),
            ),
            (
                "JOBSERV_WORKER_HOST_TAG".into(),
                worker_host_tag.to_string(),
            ),
        ];
        let mut stack = ComposeStack {
            project,
            file: repo_root().join("deploy/compose/docker-compose.yml"),
            env,
            ports,
            worker_name,
            worker_dir,
            client: reqwest::Client::new(),
            token: String::new(),
            ca_file: PathBuf::new(),
        };
        stack.compose_ok(&["up", "-d"])?;
        // The init service made the secrets; read them as an operator would.
        let deadline = Instant::now() + Duration::from_secs(60);
        let (token, ca) = loop {
            let token = stack.compose(&[
                "exec",
                "-T",
                "node1",
                "cat",
                "/etc/jobserv/secrets/admin-token",
            ])?;
            let ca =
                stack.compose(&["exec", "-T", "node1", "cat", "/etc/jobserv/secrets/ca.pem"])?;
            if token.status.success() && ca.status.success() {
                break (
                    String::from_utf8_lossy(&token.stdout).trim().to_string(),
                    ca.stdout,
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "secrets not readable in node1 after 60 s: {}\n{}",
                    String::from_utf8_lossy(&token.stderr),
                    stack.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        stack.token = token;
        stack.ca_file = stack.worker_dir.join("ca.pem");
        std::fs::write(&stack.ca_file, &ca)?;
        stack.client = jobserv_node::tls::client(&stack.ca_file, Duration::from_secs(30))?;
        for node in 1..=3 {
            stack.wait_ready(node, Duration::from_secs(120)).await?;
        }
        crate::harness::enlist(
            &stack.client,
            &stack.url(1),
            &stack.token,
            &stack.worker_name,
            Duration::from_secs(120),
        )
        .await
        .with_context(|| stack.logs())?;
        Ok(stack)
    }

    pub fn url(&self, node: usize) -> String {
        format!("https://127.0.0.1:{}", self.ports[node - 1])
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("docker-compose");
        cmd.args(["-p", &self.project, "-f"])
            .arg(&self.file)
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        cmd
    }

    pub fn compose(&self, args: &[&str]) -> anyhow::Result<Output> {
        run(&mut self.command(args))
    }

    pub fn compose_ok(&self, args: &[&str]) -> anyhow::Result<Output> {
        let out = self.compose(args)?;
        if !out.status.success() {
            bail!(
                "docker-compose {}: {}\n{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&out.stdout)
            );
        }
        Ok(out)
    }

    /// Like `compose_ok` with one variable changed (a new image tag for a rolling replace).
    pub fn compose_with(&self, var: &str, value: &str, args: &[&str]) -> anyhow::Result<()> {
        let mut cmd = self.command(args);
        cmd.env(var, value);
        let out = run(&mut cmd)?;
        if !out.status.success() {
            bail!(
                "{var}={value} docker-compose {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// The container of a service (`docker-compose ps -q`).
    pub fn container(&self, service: &str) -> anyhow::Result<String> {
        let out = self.compose_ok(&["ps", "-q", service])?;
        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if id.is_empty() {
            bail!("no container for {service}");
        }
        Ok(id)
    }

    /// The image id a service's container runs.
    pub fn image_of(&self, service: &str) -> anyhow::Result<String> {
        let id = self.container(service)?;
        let out = run(Command::new("docker").args(["inspect", "-f", "{{.Image}}", &id]))?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// `docker kill` (SIGKILL) of a service's container.
    pub fn kill(&self, service: &str) -> anyhow::Result<()> {
        let id = self.container(service)?;
        let out = run(Command::new("docker").args(["kill", &id]))?;
        if !out.status.success() {
            bail!(
                "docker kill {service}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Waits until node `node` answers `/health/ready` with 200 (caught up with the leader).
    pub async fn wait_ready(&self, node: usize, timeout: Duration) -> anyhow::Result<Duration> {
        let start = Instant::now();
        loop {
            let last = match self
                .client
                .get(format!("{}/health/ready", self.url(node)))
                .timeout(Duration::from_secs(5))
                .send()
                .await
            {
                Ok(r) if r.status().is_success() => return Ok(start.elapsed()),
                Ok(r) => format!("{}", r.status()),
                Err(e) => e.to_string(),
            };
            if start.elapsed() > timeout {
                bail!(
                    "node{node} not ready after {timeout:?}: {last}\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// A JSON call through whichever node answers (a node may be down or restarting).
    pub async fn api(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let urls: Vec<String> = (1..=3).map(|n| self.url(n)).collect();
        crate::harness::call_any(&self.client, &urls, &self.token, method, path, body, 60).await
    }

    /// The leader's node number, as node `asked` sees it.
    pub async fn leader(&self) -> anyhow::Result<usize> {
        let (s, b) = self.api(Method::GET, "/cluster/", None).await?;
        if s != 200 {
            bail!("GET /cluster/: {s} {b}");
        }
        b["data"]["leader"]
            .as_u64()
            .map(|l| l as usize)
            .with_context(|| format!("no leader: {b}"))
    }

    /// The last lines of every service's log, for failure messages.
    pub fn logs(&self) -> String {
        self.compose(&["logs", "--no-color", "--tail", "40"])
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default()
    }
}

impl Drop for ComposeStack {
    fn drop(&mut self) {
        let _ = self.compose(&["down", "-v", "--remove-orphans", "-t", "5"]);
        // Runs the worker was killed in the middle of leave their containers behind.
        if let Ok(out) = run(Command::new("docker").args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=jobserv.worker={}", self.worker_name),
        ])) {
            for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = run(Command::new("docker").args(["rm", "-f", id]));
            }
        }
        let _ = std::fs::remove_dir_all(&self.worker_dir);
    }
}
