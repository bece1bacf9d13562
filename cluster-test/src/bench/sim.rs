//! Simulated workers: each is a name, a key and a home node; what it does is a tokio task's business. They
//! speak the real worker protocol over HTTPS (register, admin enlist, check-in, console appends with
//! offsets and status) through a few shared `reqwest` clients, so thousands cost a few MiB, not processes.
use crate::local_cluster::LocalCluster;
use anyhow::{bail, Context};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct SimWorker {
    pub name: String,
    pub key: String,
    /// Index into the fleet's node URLs: the node this worker checks in with.
    pub node: usize,
}

impl SimWorker {
    pub fn new(prefix: &str, i: usize, nodes: usize) -> SimWorker {
        let name = format!("{prefix}-{i}");
        SimWorker {
            key: format!("sim-key-{name}-0123456789abcdef0123456789abcdef"),
            name,
            node: i % nodes.max(1),
        }
    }
}

/// A run handed to a simulated worker.
#[derive(Clone, Debug)]
pub struct SimRun {
    pub run_url: String,
    /// The same run on every node (`run_urls` of the run definition).
    pub run_urls: Vec<String>,
    pub key: String,
}

#[derive(Clone)]
pub struct Fleet {
    pub clients: Arc<Vec<reqwest::Client>>,
    /// For long-lived streaming reads (live tails): no short overall timeout.
    pub streaming: reqwest::Client,
    pub urls: Vec<String>,
    pub token: String,
}

impl Fleet {
    /// `pools` clients (connection pools) shared by every simulated worker.
    pub fn new(cluster: &LocalCluster, pools: usize) -> anyhow::Result<Fleet> {
        let clients = (0..pools.max(1))
            .map(|_| jobserv_node::tls::client(&cluster.ca_cert, Duration::from_secs(60)))
            .collect::<Result<Vec<_>, _>>()?;
        let streaming = jobserv_node::tls::client(&cluster.ca_cert, Duration::from_secs(3600))?;
        Ok(Fleet {
            clients: Arc::new(clients),
            streaming,
            urls: cluster.live_urls(),
            token: cluster.token.clone(),
        })
    }

    pub fn client(&self, i: usize) -> &reqwest::Client {
        &self.clients[i % self.clients.len()]
    }

    pub fn workers(&self, prefix: &str, range: std::ops::Range<usize>) -> Vec<SimWorker> {
        range
            .map(|i| SimWorker::new(prefix, i, self.urls.len()))
            .collect()
    }

    /// Registers and enlists `workers` (each through its home node), `parallel` at a time; returns the time
    /// taken. Both are Raft writes.
    pub async fn register(
        &self,
        workers: &[SimWorker],
        concurrent_runs: u32,
        host_tags: &[&str],
        parallel: usize,
    ) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let queue = Arc::new(std::sync::Mutex::new(workers.to_vec()));
        let tags: Vec<String> = host_tags.iter().map(|t| t.to_string()).collect();
        let mut tasks = tokio::task::JoinSet::new();
        for lane in 0..parallel.max(1) {
            let (fleet, queue, tags) = (self.clone(), queue.clone(), tags.clone());
            tasks.spawn(async move {
                loop {
                    let Some(w) = queue.lock().ok().and_then(|mut q| q.pop()) else {
                        return Ok::<_, anyhow::Error>(());
                    };
                    fleet.register_one(&w, concurrent_runs, &tags, lane).await?;
                }
            });
        }
        while let Some(r) = tasks.join_next().await {
            r??;
        }
        Ok(started.elapsed())
    }

    async fn register_one(
        &self,
        w: &SimWorker,
        concurrent_runs: u32,
        tags: &[String],
        lane: usize,
    ) -> anyhow::Result<()> {
        let url = &self.urls[w.node];
        let client = self.client(lane);
        let reg = json!({"api_key": w.key, "distro": "sim", "mem_total": 8u64 << 30, "cpu_total": 4, "cpu_type": "x86_64", "concurrent_runs": concurrent_runs, "host_tags": tags});
        for attempt in 0..5 {
            let r = client
                .post(format!("{url}/workers/{}/", w.name))
                .json(&reg)
                .send()
                .await;
            match r {
                Ok(r) if r.status().as_u16() == 201 => break,
                Ok(r) if attempt == 4 => bail!(
                    "register {}: {} {}",
                    w.name,
                    r.status(),
                    r.text().await.unwrap_or_default()
                ),
                Err(e) if attempt == 4 => bail!("register {}: {e}", w.name),
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        for attempt in 0..5 {
            let r = client
                .patch(format!("{url}/workers/{}/", w.name))
                .header("Authorization", format!("Token {}", self.token))
                .json(&json!({"enlisted": true}))
                .send()
                .await;
            match r {
                Ok(r) if r.status().is_success() => return Ok(()),
                Ok(r) if attempt == 4 => bail!(
                    "enlist {}: {} {}",
                    w.name,
                    r.status(),
                    r.text().await.unwrap_or_default()
                ),
                Err(e) if attempt == 4 => bail!("enlist {}: {e}", w.name),
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        Ok(())
    }

    /// One check-in; returns the runs handed out.
    pub async fn check_in(
        &self,
        w: &SimWorker,
        lane: usize,
        slots: u32,
        wait_s: u64,
    ) -> anyhow::Result<Vec<SimRun>> {
        let url = format!("{}/workers/{}/?available_runners={slots}&load_avg_1=0.25&mem_free=4000000000&disk_free=50000000000&wait={wait_s}", self.urls[w.node], w.name);
        let r = self
            .client(lane)
            .get(url)
            .header("Authorization", format!("Token {}", w.key))
            .send()
            .await?;
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        if status != 200 {
            bail!("check-in of {}: {status} {body}", w.name);
        }
        let defs = body["data"]["worker"]["run-defs"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        defs.iter()
            .map(|d| {
                Ok(SimRun {
                    run_url: d["run_url"].as_str().context("run_url")?.to_string(),
                    run_urls: d["run_urls"]
                        .as_array()
                        .map(|u| {
                            u.iter()
                                .filter_map(|x| x.as_str().map(str::to_string))
                                .collect()
                        })
                        .unwrap_or_default(),
                    key: d["api_key"].as_str().context("api_key")?.to_string(),
                })
            })
            .collect()
    }

    /// Checks in until `want` runs were handed out (or `timeout`).
    pub async fn take_runs(
        &self,
        w: &SimWorker,
        want: usize,
        timeout: Duration,
    ) -> anyhow::Result<Vec<SimRun>> {
        let deadline = Instant::now() + timeout;
        let mut runs = Vec::new();
        while runs.len() < want {
            runs.extend(self.check_in(w, 0, (want - runs.len()) as u32, 1).await?);
            if Instant::now() > deadline {
                bail!(
                    "{} got {} of {want} runs within {timeout:?}",
                    w.name,
                    runs.len()
                );
            }
        }
        Ok(runs)
    }
}

/// Appends `bytes` at `offset` (and/or sets `status`) through `url`; returns the log length acknowledged.
pub async fn append(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    offset: u64,
    bytes: Vec<u8>,
    status: Option<&str>,
) -> anyhow::Result<u64> {
    let mut req = client
        .post(url)
        .header("Authorization", format!("Token {key}"))
        .header("X-OFFSET", offset.to_string())
        .body(bytes);
    if let Some(s) = status {
        req = req.header("X-RUN-STATUS", s);
    }
    let r = req.send().await?;
    let code = r.status().as_u16();
    let acked = r
        .headers()
        .get("X-OFFSET")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    if code != 200 {
        bail!(
            "append to {url}: {code} {}",
            r.text().await.unwrap_or_default()
        );
    }
    acked.context("no X-OFFSET in the append reply")
}

/// [`append`], retried with the same offset on an error (as a real worker does, e.g. after a 503 while the
/// cluster is saturated or electing); the offset makes the retry idempotent. Returns the log length and the
/// number of retries.
pub async fn append_retrying(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    offset: u64,
    bytes: &[u8],
    status: Option<&str>,
) -> anyhow::Result<(u64, u32)> {
    let give_up = Instant::now() + Duration::from_secs(60);
    let mut retries = 0;
    loop {
        match append(client, url, key, offset, bytes.to_vec(), status).await {
            Ok(len) => return Ok((len, retries)),
            Err(e) if Instant::now() > give_up => {
                return Err(e.context(format!("still failing after {retries} retries")))
            }
            Err(_) => {
                retries += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Marks every run PASSED, `parallel` at a time (clean-up: leaves no run held by a silent worker).
pub async fn complete_all(
    fleet: &Fleet,
    runs: Vec<(SimRun, u64)>,
    parallel: usize,
) -> anyhow::Result<()> {
    let queue = Arc::new(std::sync::Mutex::new(runs));
    let mut tasks = tokio::task::JoinSet::new();
    for lane in 0..parallel.max(1) {
        let (fleet, queue) = (fleet.clone(), queue.clone());
        tasks.spawn(async move {
            loop {
                let Some((run, offset)) = queue.lock().ok().and_then(|mut q| q.pop()) else {
                    return Ok::<_, anyhow::Error>(());
                };
                append(
                    fleet.client(lane),
                    &run.run_url,
                    &run.key,
                    offset,
                    Vec::new(),
                    Some("PASSED"),
                )
                .await?;
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(())
}
