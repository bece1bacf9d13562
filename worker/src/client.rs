//! HTTP(S) client for the cluster, with node fail-over, and [`HttpReporter`], the runner's reporter that speaks
//! the run protocol (console POST with `X-OFFSET`, tests, signed artifact uploads).
//!
//! Fail-over: every request that concerns a run may go to any node (`run_urls`, plus the run's path on every
//! node learned from check-ins). On a connection error or a 5xx the *same* request (same offset, same bytes) is
//! retried on the next URL with a growing pause; a run is never dropped for a node failure. Only a definite
//! answer (a 4xx) ends the retries.
//!
//! Invariant: a console offset is persisted (`runs/<id>/offset`) only after the node acknowledged the chunk, so
//! a restarted worker appends its last word at the right place.
use crate::config::WorkerConfig;
use crate::error::{Result, WorkerError};
use crate::runner::{Artifact, ConsoleChunk, ControlReply, RunReporter};
use jobserv_protocol::api::{
    CheckInEnvelope, CheckInReply, CreateSignedReply, CreateSignedRequest, Jsend, TestReport,
    WorkerRegistration, API_VERSION, HEADER_CANCEL, HEADER_OFFSET, HEADER_PROTOCOL,
    HEADER_RUN_METADATA, HEADER_RUN_STATUS,
};
use jobserv_protocol::RunDef;
use reqwest::StatusCode;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// A run request keeps being retried across nodes for this long before the run is given up.
const RUN_RETRY_LIMIT: Duration = Duration::from_secs(3600);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Shared by the check-in loop and every run's reporter; knows every node URL seen so far.
pub struct NodeClient {
    http: reqwest::Client,
    nodes: RwLock<Vec<String>>,
    worker_key: String,
}

/// What came back from a check-in.
pub enum CheckIn {
    Reply(CheckInReply),
    /// The node does not know this worker (e.g. its state was wiped): register again.
    NotRegistered,
}

impl NodeClient {
    pub fn new(config: &WorkerConfig, worker_key: String) -> Result<Self> {
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            // HTTP/1.1, as before `object_store` (S3) turned reqwest's http2 feature on for the whole workspace:
            // one connection per transfer, no HTTP/2 flow-control window throttling bulk bodies.
            .http1_only()
            .user_agent(concat!("jobserv-worker/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(jobserv_protocol::http::CLIENT_POOL_IDLE);
        if let Some(ca) = &config.ca_cert {
            let pem =
                std::fs::read(ca).map_err(WorkerError::io_path("reading CA certificate", ca))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                WorkerError::Config(format!("CA certificate {}: {e}", ca.display()))
            })?;
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        if config.insecure {
            builder = builder.danger_accept_invalid_certs(true);
        }
        let http = builder
            .build()
            .map_err(|e| WorkerError::Config(format!("HTTP client: {e}")))?;
        let nodes = config
            .servers
            .iter()
            .map(|s| s.trim_end_matches('/').to_string())
            .collect();
        Ok(NodeClient {
            http,
            nodes: RwLock::new(nodes),
            worker_key,
        })
    }

    pub fn nodes(&self) -> Vec<String> {
        self.nodes.read().map(|n| n.clone()).unwrap_or_default()
    }

    /// Adds node URLs announced by a check-in reply (never removes: a node that is down now may be back later).
    pub fn learn_nodes(&self, announced: &[String]) {
        if let Ok(mut nodes) = self.nodes.write() {
            for url in announced {
                let url = url.trim_end_matches('/').to_string();
                if !url.is_empty() && !nodes.contains(&url) {
                    tracing::info!(node = %url, "learned node");
                    nodes.push(url);
                }
            }
        }
    }

    /// Sends the request built by `build` to each URL in turn until one gives a definite answer (not a
    /// connection error, not a 5xx). Gives up after `limit`.
    async fn send_failover(
        &self,
        urls: &[String],
        limit: Duration,
        build: impl Fn(&str) -> reqwest::RequestBuilder,
    ) -> Result<(String, reqwest::Response)> {
        if urls.is_empty() {
            return Err(WorkerError::Config("no server URL".into()));
        }
        let started = Instant::now();
        let mut attempt: u32 = 0;
        loop {
            let url = &urls[attempt as usize % urls.len()];
            let error = match build(url).send().await {
                Ok(resp) if !resp.status().is_server_error() => return Ok((url.clone(), resp)),
                Ok(resp) => format!("HTTP {}", resp.status()),
                Err(err) => err.to_string(),
            };
            tracing::warn!(%url, attempt, "request failed, trying the next node: {error}");
            if started.elapsed() >= limit {
                return Err(WorkerError::Http {
                    url: url.clone(),
                    message: error,
                });
            }
            attempt += 1;
            // A quick round over all nodes first, then back off (up to 5 s) while the cluster recovers.
            let round = attempt / urls.len() as u32;
            let pause = Duration::from_millis(100u64.saturating_mul(1 << round.min(6)))
                .min(Duration::from_secs(5));
            tokio::time::sleep(pause).await;
        }
    }

    fn worker_urls(&self, name: &str) -> Vec<String> {
        self.nodes()
            .iter()
            .map(|n| format!("{n}/workers/{name}/"))
            .collect()
    }

    /// `POST /workers/<name>/`. A 409 means the name is taken; checking in then proves (or disproves) the key.
    pub async fn register(&self, name: &str, registration: &WorkerRegistration) -> Result<()> {
        let urls = self.worker_urls(name);
        let (url, resp) = self
            .send_failover(&urls, Duration::from_secs(30), |url| {
                self.http
                    .post(url)
                    .timeout(REQUEST_TIMEOUT)
                    .header(HEADER_PROTOCOL, API_VERSION)
                    .json(registration)
            })
            .await?;
        match resp.status() {
            s if s.is_success() => Ok(()),
            StatusCode::CONFLICT => Ok(()),
            status => Err(rejected(&url, status, resp).await),
        }
    }

    /// `GET /workers/<name>/?available_runners=…&wait=…` (a long poll when `wait` > 0).
    pub async fn check_in(
        &self,
        name: &str,
        query: &[(&str, String)],
        wait: Duration,
    ) -> Result<CheckIn> {
        let urls = self.worker_urls(name);
        let auth = format!("Token {}", self.worker_key);
        let (url, resp) = self
            .send_failover(&urls, Duration::from_secs(20), |url| {
                self.http
                    .get(url)
                    .query(query)
                    .timeout(wait + Duration::from_secs(20))
                    .header("Authorization", &auth)
                    .header(HEADER_PROTOCOL, API_VERSION)
            })
            .await?;
        match resp.status() {
            s if s.is_success() => Ok(CheckIn::Reply(
                parse_jsend::<CheckInEnvelope>(&url, resp).await?.worker,
            )),
            StatusCode::NOT_FOUND => Ok(CheckIn::NotRegistered),
            status => Err(rejected(&url, status, resp).await),
        }
    }

    /// `GET {server}/worker`: the current worker binary.
    pub async fn download_worker(&self) -> Result<Vec<u8>> {
        let urls: Vec<String> = self.nodes().iter().map(|n| format!("{n}/worker")).collect();
        let (url, resp) = self
            .send_failover(&urls, Duration::from_secs(30), |url| {
                self.http.get(url).timeout(Duration::from_secs(600))
            })
            .await?;
        if !resp.status().is_success() {
            return Err(rejected(&url, resp.status(), resp).await);
        }
        let bytes = resp.bytes().await.map_err(|e| WorkerError::Http {
            url,
            message: e.to_string(),
        })?;
        Ok(bytes.to_vec())
    }
}

/// The run protocol against the cluster, for one run.
pub struct HttpReporter {
    client: Arc<NodeClient>,
    rundef: RunDef,
    token: String,
    /// Where the acknowledged console length is kept for a restarted worker (`None`: not kept).
    offset_file: Option<PathBuf>,
    /// Where this runner's console starts in the run's log: 0, unless somebody wrote before it (JobServ's
    /// Python worker posts its own lines before it hands the run to `jobserv-worker execute`).
    console_base: u64,
}

impl HttpReporter {
    pub fn new(client: Arc<NodeClient>, rundef: RunDef, offset_file: Option<PathBuf>) -> Self {
        let token = format!("Token {}", rundef.api_key.clone().unwrap_or_default());
        HttpReporter {
            client,
            rundef,
            token,
            offset_file,
            console_base: 0,
        }
    }

    /// Appends this runner's console after the `base` bytes already in the run's log.
    pub fn with_console_base(mut self, base: u64) -> Self {
        self.console_base = base;
        self
    }

    /// A `POST` of the run protocol to `url`: the run key, the protocol version, the request timeout.
    fn run_post(&self, url: &str) -> reqwest::RequestBuilder {
        self.client
            .http
            .post(url)
            .timeout(REQUEST_TIMEOUT)
            .header("Authorization", &self.token)
            .header(HEADER_PROTOCOL, API_VERSION)
    }

    /// The run's console length now: an empty append without an offset (JobServ's way: at the end), whose
    /// reply carries the length.
    pub async fn console_length(&self) -> Result<u64> {
        let urls = self.run_urls("");
        let (url, resp) = self
            .client
            .send_failover(&urls, RUN_RETRY_LIMIT, |url| self.run_post(url))
            .await
            .map_err(|e| WorkerError::Report(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(WorkerError::Report(
                rejected(&url, resp.status(), resp).await.to_string(),
            ));
        }
        resp.headers()
            .get(HEADER_OFFSET)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or_else(|| WorkerError::Report(format!("{url}: no valid {HEADER_OFFSET} header")))
    }

    /// The run's URL on every node we know: the rundef's own, then its path on each learned node.
    fn run_urls(&self, suffix: &str) -> Vec<String> {
        let mut urls: Vec<String> = Vec::new();
        let mut push = |u: String| {
            if !urls.contains(&u) {
                urls.push(u);
            }
        };
        push(format!("{}{suffix}", self.rundef.run_url));
        for u in &self.rundef.run_urls {
            push(format!("{u}{suffix}"));
        }
        if let Some(path) = url_path(&self.rundef.run_url) {
            for node in self.client.nodes() {
                push(format!("{node}{path}{suffix}"));
            }
        }
        urls
    }

    /// The console length the worker last saw acknowledged (restart recovery).
    pub fn saved_offset(&self) -> u64 {
        self.offset_file
            .as_ref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    fn save_offset(&self, offset: u64) {
        if let Some(file) = &self.offset_file {
            if let Err(err) = std::fs::write(file, offset.to_string()) {
                tracing::warn!("saving console offset: {err}");
            }
        }
    }
}

impl RunReporter for HttpReporter {
    async fn append_console(&self, chunk: ConsoleChunk<'_>) -> Result<ControlReply> {
        let urls = self.run_urls("");
        let mut offset = self.console_base + chunk.offset;
        let mut bytes = chunk.bytes;
        // A 409 moves the offset forward; a well-behaved node needs at most two rounds.
        for _ in 0..8 {
            let (url, resp) = self
                .client
                .send_failover(&urls, RUN_RETRY_LIMIT, |url| {
                    let mut req = self
                        .run_post(url)
                        .header(HEADER_OFFSET, offset.to_string())
                        .body(bytes.to_vec());
                    if let Some(status) = chunk.status {
                        req = req.header(HEADER_RUN_STATUS, status.as_str());
                    }
                    if let Some(meta) = chunk.metadata {
                        req = req.header(HEADER_RUN_METADATA, meta);
                    }
                    req
                })
                .await
                .map_err(|e| WorkerError::Report(e.to_string()))?;
            let status = resp.status();
            if status.is_success() {
                let cancel = resp
                    .headers()
                    .get(HEADER_CANCEL)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.trim() == "1");
                self.save_offset(offset + bytes.len() as u64);
                return Ok(ControlReply { cancel });
            }
            if status != StatusCode::CONFLICT {
                return Err(WorkerError::Report(
                    rejected(&url, status, resp).await.to_string(),
                ));
            }
            let stored = resp
                .headers()
                .get(HEADER_OFFSET)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    WorkerError::Report(format!(
                        "{url}: 409 without a valid {HEADER_OFFSET} header"
                    ))
                })?;
            let end = offset + bytes.len() as u64;
            if stored < offset {
                return Err(WorkerError::Report(format!(
                    "{url} holds {stored} bytes of the console but {offset} were acknowledged"
                )));
            }
            if stored >= end && bytes.is_empty() {
                return Ok(ControlReply::default());
            }
            tracing::info!(
                offset,
                stored,
                "console offset gap: resending from the stored length"
            );
            bytes = &bytes[(stored.min(end) - offset) as usize..];
            offset = stored.min(end);
        }
        Err(WorkerError::Report(
            "console offset did not converge after repeated 409 replies".into(),
        ))
    }

    async fn report_tests(&self, tests: &[TestReport]) -> Result<()> {
        let urls = self.run_urls("tests/");
        for test in tests {
            let (url, resp) = self
                .client
                .send_failover(&urls, RUN_RETRY_LIMIT, |url| self.run_post(url).json(test))
                .await?;
            // 409: the test is already stored (a retry after a node failed mid-request).
            if !resp.status().is_success() && resp.status() != StatusCode::CONFLICT {
                return Err(rejected(&url, resp.status(), resp).await);
            }
        }
        Ok(())
    }

    async fn upload_artifacts(&self, artifacts: &[Artifact]) -> Result<()> {
        let mut remaining: Vec<&Artifact> = artifacts.iter().collect();
        let mut last_error = String::new();
        // A signed URL points at one node; if it dies mid-upload, new URLs are asked from another node.
        for round in 0..5u32 {
            if remaining.is_empty() {
                return Ok(());
            }
            if round > 0 {
                tokio::time::sleep(Duration::from_secs(1 << round)).await;
            }
            let request = CreateSignedRequest {
                paths: remaining.iter().map(|a| a.path.clone()).collect(),
            };
            let urls = self.run_urls("create_signed");
            let (url, resp) = self
                .client
                .send_failover(&urls, RUN_RETRY_LIMIT, |url| {
                    self.run_post(url).json(&request)
                })
                .await?;
            if !resp.status().is_success() {
                return Err(rejected(&url, resp.status(), resp).await);
            }
            let signed: CreateSignedReply = parse_jsend(&url, resp).await?;
            let base = url_base(&url).unwrap_or_default();
            let mut failed = Vec::new();
            for artifact in remaining {
                let Some(target) = signed.urls.get(&artifact.path) else {
                    return Err(WorkerError::Report(format!(
                        "{url} gave no upload URL for {}",
                        artifact.path
                    )));
                };
                let target = if target.starts_with('/') {
                    format!("{base}{target}")
                } else {
                    target.clone()
                };
                match self.put_file(&target, artifact).await {
                    Ok(()) => {}
                    Err(err) => {
                        last_error = err.to_string();
                        tracing::warn!(path = %artifact.path, "artifact upload failed: {err}");
                        failed.push(artifact);
                    }
                }
            }
            remaining = failed;
        }
        if remaining.is_empty() {
            Ok(())
        } else {
            Err(WorkerError::Http {
                url: self.rundef.run_url.clone(),
                message: last_error,
            })
        }
    }
}

impl HttpReporter {
    async fn put_file(&self, url: &str, artifact: &Artifact) -> Result<()> {
        let file = tokio::fs::File::open(&artifact.file)
            .await
            .map_err(WorkerError::io_path("opening artifact", &artifact.file))?;
        // 1 MiB reads: the default 4 KiB makes a 2 GiB upload half a million blocking file reads.
        let body =
            reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(file, 1 << 20));
        let resp = self
            .client
            .http
            .put(url)
            .timeout(Duration::from_secs(3600))
            .header(reqwest::header::CONTENT_LENGTH, artifact.size)
            .body(body)
            .send()
            .await
            .map_err(|e| WorkerError::Http {
                url: url.to_string(),
                message: e.to_string(),
            })?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(rejected(url, resp.status(), resp).await)
        }
    }
}

async fn parse_jsend<T: serde::de::DeserializeOwned>(
    url: &str,
    resp: reqwest::Response,
) -> Result<T> {
    let bytes = resp.bytes().await.map_err(|e| WorkerError::Http {
        url: url.to_string(),
        message: e.to_string(),
    })?;
    match serde_json::from_slice::<Jsend<T>>(&bytes) {
        Ok(Jsend::Success { data }) => Ok(data),
        Ok(Jsend::Error { message }) => Err(WorkerError::Http {
            url: url.to_string(),
            message,
        }),
        Err(err) => Err(WorkerError::Http {
            url: url.to_string(),
            message: format!("unexpected reply: {err}"),
        }),
    }
}

async fn rejected(url: &str, status: StatusCode, resp: reqwest::Response) -> WorkerError {
    let mut body = resp.text().await.unwrap_or_default();
    body.truncate(500);
    WorkerError::Rejected {
        url: url.to_string(),
        status: status.as_u16(),
        body,
    }
}

/// `https://host:port/a/b/` → `/a/b/`.
fn url_path(url: &str) -> Option<&str> {
    let after_scheme = url.find("://")? + 3;
    let slash = url[after_scheme..].find('/')? + after_scheme;
    Some(&url[slash..])
}

/// `https://host:port/a/b/` → `https://host:port`.
fn url_base(url: &str) -> Option<&str> {
    let after_scheme = url.find("://")? + 3;
    match url[after_scheme..].find('/') {
        Some(i) => Some(&url[..after_scheme + i]),
        None => Some(url),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_parts() {
        assert_eq!(
            url_path("https://n1:8443/projects/p/builds/1/runs/r/"),
            Some("/projects/p/builds/1/runs/r/")
        );
        assert_eq!(
            url_base("https://n1:8443/projects/p/"),
            Some("https://n1:8443")
        );
        assert_eq!(url_base("http://n1"), Some("http://n1"));
    }
}
