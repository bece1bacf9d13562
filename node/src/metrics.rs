//! Prometheus metrics. Counters and histograms are updated on the hot paths; gauges that describe the
//! replicated state (queue depth and age by host tag, runs by state) are computed when `/metrics` is
//! scraped, from indexes and counters the state machine maintains, so the hot paths pay nothing for them.
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

pub struct Metrics {
    pub registry: Registry,
    pub http_requests: IntCounterVec,
    pub commit_seconds: Histogram,
    /// Commands per proposed batch (`batcher.rs`): 1 when the node is idle, more as it gets busy.
    pub proposal_batch_commands: Histogram,
    /// Time a write committed through the leader waited for this node to apply it (a follower learns of
    /// the commit one round after the leader); writes applied here already are not counted.
    pub apply_wait_seconds: Histogram,
    pub checkins: IntCounterVec,
    /// Read-index rounds run by this node (`leader`: heartbeat rounds; `follower`: RPCs to the leader).
    pub read_rounds: IntCounterVec,
    /// Time a read waited to be linearizable (read index obtained and applied here), by path.
    pub read_seconds: HistogramVec,
    /// Reads answered 503 because no read index could be obtained or applied in time.
    pub read_failures: IntCounter,
    /// Leadership hand-overs on a graceful stop (`handover.rs`), by outcome: `done` and `failed` on the
    /// stopping leader, `campaigned` on the successor.
    pub handovers: IntCounterVec,
    /// Artifact and blob figures (`blobs/`): bytes uploaded and downloaded through this node, blobs this
    /// node should hold but lacks, blobs with fewer holders than voters, repairs and collections.
    pub blobs: BlobMetrics,
    /// How late a 50 ms timer wakes on each event loop (`stall_watch.rs`): `raft` or `actix`.
    pub runtime_lateness: HistogramVec,
    queue_depth: IntGaugeVec,
    queue_oldest_seconds: IntGaugeVec,
    runs: IntGaugeVec,
    raft: IntGaugeVec,
}

impl Metrics {
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let http_requests = IntCounterVec::new(
            Opts::new(
                "jobserv_http_requests_total",
                "HTTP requests by route and status",
            ),
            &["method", "route", "status"],
        )?;
        let commit_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "jobserv_raft_commit_seconds",
                "Time from proposing a command to it being committed and applied",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
        )?;
        let proposal_batch_commands = Histogram::with_opts(
            HistogramOpts::new(
                "jobserv_proposal_batch_commands",
                "Commands per batch this node proposed (console appends and status changes share an entry)",
            )
            .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]),
        )?;
        let apply_wait_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "jobserv_apply_wait_seconds",
                "Time a write committed through the leader waited to be applied on this node",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
        )?;
        let checkins = IntCounterVec::new(
            Opts::new("jobserv_checkins_total", "Worker check-ins by outcome"),
            &["outcome"],
        )?;
        let read_rounds = IntCounterVec::new(
            Opts::new(
                "jobserv_read_index_rounds_total",
                "Read-index rounds (one serves every read queued before it started)",
            ),
            &["path"],
        )?;
        let read_seconds = HistogramVec::new(
            HistogramOpts::new(
                "jobserv_read_linearize_seconds",
                "Time a read waited for its read index and this node's apply (path: leader, follower, stale)",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
                10.0,
            ]),
            &["path"],
        )?;
        let read_failures = IntCounter::new(
            "jobserv_read_failures_total",
            "Reads answered 503: not linearizable within the read timeout",
        )?;
        let handovers = IntCounterVec::new(
            Opts::new(
                "jobserv_leader_handovers_total",
                "Leadership hand-overs on graceful stops (done, failed: on the leader; campaigned: on the successor)",
            ),
            &["outcome"],
        )?;
        let runtime_lateness = HistogramVec::new(
            HistogramOpts::new(
                "jobserv_runtime_lateness_seconds",
                "How late a 50 ms timer woke on this node's event loops (raft, actix): stalls delay heartbeats",
            )
            .buckets(vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6]),
            &["runtime"],
        )?;
        let queue_depth = IntGaugeVec::new(
            Opts::new("jobserv_queue_depth", "Queued runs by host tag"),
            &["host_tag"],
        )?;
        let queue_oldest_seconds = IntGaugeVec::new(
            Opts::new(
                "jobserv_queue_oldest_seconds",
                "Age of the oldest queued run by host tag",
            ),
            &["host_tag"],
        )?;
        let runs = IntGaugeVec::new(Opts::new("jobserv_runs", "Runs by state"), &["state"])?;
        let raft = IntGaugeVec::new(
            Opts::new("jobserv_raft", "Raft figures of this node"),
            &["figure"],
        )?;
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(commit_seconds.clone()))?;
        registry.register(Box::new(proposal_batch_commands.clone()))?;
        registry.register(Box::new(apply_wait_seconds.clone()))?;
        registry.register(Box::new(checkins.clone()))?;
        registry.register(Box::new(read_rounds.clone()))?;
        registry.register(Box::new(read_seconds.clone()))?;
        registry.register(Box::new(read_failures.clone()))?;
        registry.register(Box::new(handovers.clone()))?;
        registry.register(Box::new(runtime_lateness.clone()))?;
        registry.register(Box::new(queue_depth.clone()))?;
        registry.register(Box::new(queue_oldest_seconds.clone()))?;
        registry.register(Box::new(runs.clone()))?;
        registry.register(Box::new(raft.clone()))?;
        let blobs = BlobMetrics::new(&registry)?;
        Ok(Metrics {
            blobs,
            registry,
            http_requests,
            commit_seconds,
            proposal_batch_commands,
            apply_wait_seconds,
            checkins,
            read_rounds,
            read_seconds,
            read_failures,
            handovers,
            runtime_lateness,
            queue_depth,
            queue_oldest_seconds,
            runs,
            raft,
        })
    }

    /// Refreshes the state-derived gauges and renders the text exposition format.
    pub fn render(
        &self,
        cluster: &crate::cluster::Cluster,
        log_stats: &jobserv_raft::log_store::FlushStats,
    ) -> String {
        use std::sync::atomic::Ordering::Relaxed;
        let now = jobserv_raft::state::now_ms();
        self.queue_depth.reset();
        self.queue_oldest_seconds.reset();
        if let Ok(queued) = cluster.state.queued_runs(100_000) {
            for run in &queued {
                self.queue_depth.with_label_values(&[&run.host_tag]).inc();
                let age = (now.saturating_sub(run.created) / 1000) as i64;
                let gauge = self
                    .queue_oldest_seconds
                    .with_label_values(&[&run.host_tag]);
                if age > gauge.get() {
                    gauge.set(age);
                }
            }
        }
        if let Ok(counts) = cluster.state.run_counts() {
            for (status, count) in counts {
                self.runs
                    .with_label_values(&[status.as_str()])
                    .set(count as i64);
            }
        }
        let m = cluster.raft.metrics().borrow().clone();
        self.raft
            .with_label_values(&["term"])
            .set(m.current_term as i64);
        self.raft
            .with_label_values(&["last_applied"])
            .set(m.last_applied.map(|l| l.index as i64).unwrap_or(0));
        self.raft
            .with_label_values(&["is_leader"])
            .set((m.current_leader == Some(cluster.id)) as i64);
        self.raft
            .with_label_values(&["log_flushes"])
            .set(log_stats.flushes.load(Relaxed) as i64);
        self.raft
            .with_label_values(&["log_appends_flushed"])
            .set(log_stats.appends.load(Relaxed) as i64);
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }
}

pub struct BlobMetrics {
    pub upload_bytes: IntCounter,
    pub download_bytes: IntCounter,
    pub missing: prometheus::IntGauge,
    pub under_replicated: prometheus::IntGauge,
    pub repaired: IntCounter,
    pub repaired_bytes: IntCounter,
    pub repair_failures: IntCounter,
    pub collected: IntCounter,
}

impl BlobMetrics {
    fn new(registry: &Registry) -> Result<BlobMetrics, prometheus::Error> {
        let counter = |name: &str, help: &str| -> Result<IntCounter, prometheus::Error> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let gauge = |name: &str, help: &str| -> Result<prometheus::IntGauge, prometheus::Error> {
            let g = prometheus::IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        Ok(BlobMetrics {
            upload_bytes: counter(
                "jobserv_artifact_upload_bytes_total",
                "Artifact bytes received from workers by this node",
            )?,
            download_bytes: counter(
                "jobserv_artifact_download_bytes_total",
                "Artifact bytes sent to clients by this node",
            )?,
            missing: gauge(
                "jobserv_blobs_missing",
                "Blobs this node should hold but does not (yet): repair's backlog, at its last pass",
            )?,
            under_replicated: gauge(
                "jobserv_blobs_under_replicated",
                "Blobs held by fewer nodes than there are voters, at this node's last repair pass",
            )?,
            repaired: counter(
                "jobserv_blobs_repaired_total",
                "Blobs this node copied from a peer to restore their replication",
            )?,
            repaired_bytes: counter(
                "jobserv_blobs_repaired_bytes_total",
                "Bytes of the blobs this node copied from peers",
            )?,
            repair_failures: counter(
                "jobserv_blob_repair_failures_total",
                "Repairs that found no peer able to provide a blob",
            )?,
            collected: counter(
                "jobserv_blobs_collected_total",
                "Blobs (and partial uploads) deleted by this node's collector: no artifact refers to them",
            )?,
        })
    }
}
