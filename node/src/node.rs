//! Starting a node: open the sled store, start Raft, bootstrap or join the cluster, start the actors and
//! the HTTPS server. `start` returns once the node is serving; `RunningNode` stops it.
use crate::actors::checkin::CheckInActor;
use crate::actors::project::ProjectActors;
use crate::actors::worker_monitor::WorkerMonitor;
use crate::app::App;
use crate::auth::hash_token;
use crate::cluster::Cluster;
use crate::config::NodeConfig;
use crate::metrics::Metrics;
use crate::presence::Presence;
use actix::Actor;
use actix_web::dev::{ServerHandle, Service};
use actix_web::http::StatusCode;
use actix_web::middleware::{ErrorHandlerResponse, ErrorHandlers};
use actix_web::{web, HttpServer};
use jobserv_raft::model::Role;
use jobserv_raft::network::HttpRaftNetwork;
use jobserv_raft::{open_store, raft_config, Command, Raft};
use openraft::BasicNode;
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

static GENERATION: OnceLock<u64> = OnceLock::new();

/// This process's generation id: its start time in ms, so a restarted node is told apart from its past.
pub fn generation() -> u64 {
    *GENERATION.get_or_init(jobserv_raft::state::now_ms)
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("store: {0}")]
    Store(#[from] jobserv_raft::OpenError),
    #[error("tls: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("raft: {0}")]
    Raft(String),
    #[error("listening on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("artifacts blob store: {0}")]
    Blobs(String),
    #[error("{0}")]
    Other(String),
}

pub struct RunningNode {
    pub cluster: Arc<Cluster>,
    pub server: ServerHandle,
    server_task: tokio::task::JoinHandle<std::io::Result<()>>,
    /// Set when openraft's core stopped on a fatal error: the node stops serving and `wait` fails.
    fatal: Arc<OnceLock<String>>,
}

impl RunningNode {
    /// Serves until the server stops: on SIGTERM or SIGINT, `graceful_stop` (readiness false, leadership
    /// handed over, requests drained), or when the Raft core fails.
    pub async fn wait(self) -> std::io::Result<()> {
        let result = self
            .server_task
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
        let _ = self.cluster.raft.shutdown().await;
        if let Some(reason) = self.fatal.get() {
            return Err(std::io::Error::other(format!(
                "raft core stopped ({reason}); exiting so that the supervisor restarts this node"
            )));
        }
        result
    }

    pub async fn stop(self) {
        self.cluster.begin_draining();
        self.server.stop(true).await;
        let _ = self.cluster.raft.shutdown().await;
    }
}

/// How long a starting node stays from campaigning (see `start_raft`); a whole cluster starting together
/// elects this much later.
const STARTUP_ELECTION_GRACE: Duration = Duration::from_secs(1);

/// Starts openraft on a runtime and thread of its own. Its tasks (RaftCore, the state machine worker,
/// replication, the election tick) used to share actix's single-threaded runtime with every actor and leader
/// duty: synchronous work there (a new leader's build duties reading every open build, a snapshot copy)
/// delayed heartbeats, votes and the first commit of a new leader by hundreds of milliseconds, and with
/// 500 ms election timeouts that meant spurious elections. The thread ends when Raft has shut down.
async fn start_raft(
    id: jobserv_raft::NodeId,
    config: Arc<openraft::Config>,
    network: HttpRaftNetwork,
    log_store: jobserv_raft::SledLogStore,
    state_machine: jobserv_raft::SledStateMachine,
    metrics: Arc<Metrics>,
    draining: Arc<std::sync::atomic::AtomicBool>,
) -> Result<Raft, StartError> {
    let (started_tx, started) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(format!("raft-{id}"))
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    let _ = started_tx.send(Err(format!("raft runtime: {e}")));
                    return;
                }
            };
            runtime.block_on(async move {
                tokio::spawn(crate::stall_watch::watch("raft", metrics));
                // No campaign in the first `STARTUP_ELECTION_GRACE`: a restarted node waits only its lease
                // plus an election timeout (320-400 ms from start) and the leader may reach it later than
                // that (it backs off from a peer that was down; start-up itself takes a while), and its
                // higher term then deposed a healthy leader. (openraft's `current_leader` cannot tell: it
                // names the leader of the persisted vote at once.) A hand-over's campaign is not affected.
                let mut config = (*config).clone();
                config.enable_elect = false;
                match Raft::new(id, Arc::new(config), network, log_store, state_machine).await {
                    Ok(raft) => {
                        let mut metrics = raft.metrics();
                        let grace = raft.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(STARTUP_ELECTION_GRACE).await;
                            grace.runtime_config().elect(true);
                            // A stop that began meanwhile disabled elections for good
                            // (`Cluster::begin_draining` sets the flag first, then disables).
                            if draining.load(std::sync::atomic::Ordering::SeqCst) {
                                grace.runtime_config().elect(false);
                            }
                        });
                        let _ = started_tx.send(Ok(raft));
                        // RaftCore drops the metrics sender when it stops.
                        while metrics.changed().await.is_ok() {}
                    }
                    Err(e) => {
                        let _ = started_tx.send(Err(e.to_string()));
                    }
                }
            });
        })
        .map_err(|e| StartError::Raft(format!("raft thread: {e}")))?;
    started
        .await
        .map_err(|_| StartError::Raft("the raft thread stopped while starting".into()))?
        .map_err(StartError::Raft)
}

pub async fn start(config: NodeConfig) -> Result<RunningNode, StartError> {
    generation();
    crate::tls::install_crypto_provider();
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| StartError::Other(format!("{}: {e}", config.data_dir.display())))?;
    let (log_store, state_machine) = open_store(&config.data_dir.join("raft"))?;
    let log_stats = log_store.stats();
    let client =
        crate::tls::client_from(&config.ca_cert, Duration::from_secs(30), config.outbound_ip)?;
    // Raft's own connections (its tasks run on the Raft runtime, see `start_raft`).
    let raft_client =
        crate::tls::client_from(&config.ca_cert, Duration::from_secs(30), config.outbound_ip)?;
    let network = HttpRaftNetwork::new(raft_client, config.cluster_secret.clone());
    let raft_cfg = Arc::new(
        raft_config()
            .validate()
            .map_err(|e| StartError::Raft(e.to_string()))?,
    );
    let state = state_machine.state();
    let metrics = Arc::new(Metrics::new().map_err(|e| StartError::Other(e.to_string()))?);
    let draining = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let raft = start_raft(
        config.id,
        raft_cfg,
        network,
        log_store,
        state_machine.clone(),
        metrics.clone(),
        draining.clone(),
    )
    .await?;
    // The actix system's event loop (actors, leader duties); the Raft thread's has its own watch.
    tokio::spawn(crate::stall_watch::watch("actix", metrics.clone()));
    let seeds: Vec<String> = if config.gossip_seeds.is_empty() {
        config
            .peers
            .iter()
            .filter(|p| p.id != config.id)
            .map(|p| p.url.as_str())
            .chain(config.join.as_deref())
            .filter_map(crate::gossip::host_port)
            .collect()
    } else {
        config.gossip_seeds.clone()
    };
    let gossip_advertise = config.gossip_advertise.clone().unwrap_or_else(|| {
        let host = crate::gossip::host_port(&config.advertise_url)
            .and_then(|hp| hp.rsplit_once(':').map(|(h, _)| h.to_string()))
            .unwrap_or_else(|| "127.0.0.1".into());
        let port = config
            .listen
            .rsplit_once(':')
            .map(|(_, p)| p.to_string())
            .unwrap_or_default();
        format!("{host}:{port}")
    });
    let gossip = Arc::new(
        crate::gossip::Gossip::start(
            config.id,
            &config.listen,
            &gossip_advertise,
            &config.advertise_url,
            seeds,
            &config.cluster_secret,
            generation(),
        )
        .await
        .map_err(|e| StartError::Other(e.to_string()))?,
    );
    let reads = crate::reads::Reads::start(
        config.id,
        raft.clone(),
        state_machine.subscribe_applied(),
        client.clone(),
        config.cluster_secret.clone(),
        metrics.clone(),
    );
    // An empty store in a cluster of peers votes for nobody until `bootstrap` has told a new cluster from
    // one it is rejoining (a wiped or replaced disk).
    let undecided = config.join.is_none()
        && !config.peers.is_empty()
        && !raft
            .is_initialized()
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
    let cluster = Arc::new(Cluster {
        id: config.id,
        reads,
        rejoining: std::sync::atomic::AtomicBool::new(undecided),
        draining,
        leader_since: std::sync::Mutex::new(None),
        raft,
        state,
        state_machine,
        advertise_url: config.advertise_url.trim_end_matches('/').to_string(),
        secret: config.cluster_secret.clone(),
        client,
        metrics: metrics.clone(),
        gossip,
        batcher: Default::default(),
    });
    crate::batcher::Batcher::start(&cluster);

    let presence = Arc::new(Presence::default());
    spawn_gossip_publisher(
        cluster.clone(),
        presence.clone(),
        Duration::from_secs(config.worker_timeout_secs),
    );
    spawn_format_gate(cluster.clone());
    let checkin = CheckInActor::new(cluster.clone()).start();
    WorkerMonitor::new(
        cluster.clone(),
        presence.clone(),
        Duration::from_secs(config.worker_timeout_secs),
        config.requeue_lost_runs,
    )
    .start();
    crate::actors::retention::RetentionKeeper::new(
        cluster.clone(),
        Duration::from_secs(config.retention_interval_secs.max(1)),
    )
    .start();
    let project_arbiter = actix::Arbiter::new();
    let projects = ProjectActors::new(project_arbiter.handle(), cluster.clone());
    let blob_client = crate::tls::client_from(
        &config.ca_cert,
        Duration::from_secs(24 * 3600),
        config.outbound_ip,
    )?;
    let blobs = Arc::new(
        crate::blobs::BlobStore::open(&config.data_dir, &config.artifacts, blob_client)
            .map_err(|e| StartError::Blobs(e.to_string()))?,
    );
    crate::blobs::keeper::spawn(cluster.clone(), blobs.clone());
    let queue_history = Arc::new(crate::ui::charts::QueueHistory::default());
    crate::ui::charts::spawn_sampler(cluster.clone(), queue_history.clone());
    let app = web::Data::new(App {
        queue_history,
        blobs,
        cluster: cluster.clone(),
        presence,
        checkin,
        projects,
        config: config.clone(),
        log_stats,
    });
    // Triggers: git pollers and build duties (chains, forge statuses, notifications), where `runs_here`.
    crate::triggers::poller::start_supervisor(app.clone());
    crate::actors::build::start_supervisor(crate::actors::build::Duties {
        cluster: cluster.clone(),
        client: crate::triggers::outbound_client(&config.ca_cert),
        smtp: config.triggers.smtp.clone(),
    });

    let tls = crate::tls::server_config(&config.tls_cert, &config.tls_key)?;
    let server_app = app.clone();
    let server = HttpServer::new(move || {
        let metrics = server_app.cluster.metrics.clone();
        actix_web::App::new()
            .app_data(server_app.clone())
            .app_data(web::PayloadConfig::new(crate::api::MAX_JSON_BODY))
            .wrap(ErrorHandlers::new().default_handler(jsend_error_body))
            // Innermost: every read a user or worker makes is linearizable (`reads.rs`) unless it asks
            // for `?stale=1`; the barrier runs before the handler reads anything.
            .wrap(actix_web::middleware::from_fn(
                crate::reads::linearize_reads,
            ))
            .wrap_fn(move |req, srv| {
                let method = req.method().to_string();
                let span = tracing::debug_span!("http", %method, path = %req.path());
                let fut = srv.call(req);
                let metrics = metrics.clone();
                async move {
                    let _entered = span.enter();
                    let res = fut.await?;
                    let route = res
                        .request()
                        .match_pattern()
                        .unwrap_or_else(|| "unmatched".into());
                    metrics
                        .http_requests
                        .with_label_values(&[&method, &route, res.status().as_str()])
                        .inc();
                    Ok(res)
                }
            })
            .configure(crate::api::configure)
            .configure(crate::ui::configure)
            .default_service(web::to(|| async {
                Err::<actix_web::HttpResponse, _>(crate::error::ApiError::NotFound(
                    "no such endpoint".into(),
                ))
            }))
    })
    .shutdown_timeout(5)
    // Longer than every client's pool idle time (`jobserv_protocol::http`): the client lets go first.
    .keep_alive(jobserv_protocol::http::SERVER_KEEP_ALIVE)
    // Our own signal handling (`spawn_signal_handler`): the leader hands over before the server stops.
    .disable_signals()
    .bind_rustls_0_23(&config.listen, tls)
    .map_err(|source| StartError::Bind {
        addr: config.listen.clone(),
        source,
    })?
    .run();
    let handle = server.handle();
    let server_task = tokio::spawn(server);

    bootstrap(&cluster, &config).await?;
    if let Some(join) = config.join.clone() {
        spawn_join(cluster.clone(), join);
    }
    if let Some(token) = &config.admin_token {
        // Normally immediate. A node that cannot commit yet keeps serving and installs it in the background.
        if tokio::time::timeout(
            Duration::from_secs(30),
            install_admin_token(&cluster, token),
        )
        .await
        .is_err()
        {
            tracing::warn!("admin token not installed within 30 s; retrying in the background");
            let (cluster, token) = (cluster.clone(), token.clone());
            tokio::spawn(async move { install_admin_token(&cluster, &token).await });
        }
    }
    let fatal = Arc::new(OnceLock::new());
    spawn_raft_watchdog(cluster.clone(), handle.clone(), fatal.clone());
    spawn_signal_handler(cluster.clone(), handle.clone());
    crate::handover::spawn_leader_clock(cluster.clone());
    tracing::info!(node = config.id, url = %cluster.advertise_url, "node serving");
    Ok(RunningNode {
        cluster,
        server: handle,
        server_task,
        fatal,
    })
}

/// SIGTERM or SIGINT: `graceful_stop`. A second signal while it runs stops at once.
fn spawn_signal_handler(cluster: Arc<Cluster>, server: ServerHandle) {
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot install SIGTERM/SIGINT handlers");
            return;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: stopping gracefully"),
            _ = int.recv() => tracing::info!("SIGINT: stopping gracefully"),
        }
        tokio::select! {
            _ = graceful_stop(&cluster, &server) => {}
            _ = term.recv() => server.stop(false).await,
            _ = int.recv() => server.stop(false).await,
        }
    });
}

/// Stops this node the way a rolling restart wants it: `/health/ready` answers 503 from now on (load
/// balancers and Kubernetes stop sending), a leader hands its leadership to a caught-up follower
/// (`handover.rs`: no election timeout for the cluster), then the server finishes the requests it has
/// (up to 5 s) and `wait` shuts Raft down.
pub async fn graceful_stop(cluster: &Cluster, server: &ServerHandle) {
    cluster.begin_draining();
    match crate::handover::hand_over(cluster).await {
        Ok(crate::handover::Handover::NotLeader) => {}
        Ok(crate::handover::Handover::Done { to, took }) => {
            cluster.metrics.handovers.with_label_values(&["done"]).inc();
            tracing::info!(
                node = cluster.id,
                to,
                took_ms = took.as_millis() as u64,
                "leadership handed over"
            );
        }
        Err(e) => {
            cluster
                .metrics
                .handovers
                .with_label_values(&["failed"])
                .inc();
            tracing::warn!(node = cluster.id, error = %e, "leadership not handed over; the cluster will elect after the lease");
        }
    }
    server.stop(true).await;
}

/// A node whose Raft core has quit (a storage error, a violated invariant) must not go on answering as if
/// healthy: `/health` fails at once with the reason, and the server stops so the process exits non-zero
/// and its supervisor restarts it (a restart re-opens and re-checks the store).
fn spawn_raft_watchdog(cluster: Arc<Cluster>, server: ServerHandle, fatal: Arc<OnceLock<String>>) {
    tokio::spawn(async move {
        let mut metrics = cluster.raft.metrics();
        loop {
            let state = metrics.borrow_and_update().running_state.clone();
            if cluster.draining.load(std::sync::atomic::Ordering::SeqCst) {
                // A stop we asked for (`graceful_stop`, `stop`): Raft is shut down on purpose.
                return;
            }
            if let Err(e) = state {
                let reason = e.to_string();
                tracing::error!(node = cluster.id, %reason, "raft core stopped; stopping the node");
                let _ = fatal.set(reason);
                // A moment for monitoring to see the failing /health, then stop.
                tokio::time::sleep(Duration::from_millis(500)).await;
                server.stop(false).await;
                return;
            }
            if metrics.changed().await.is_err() {
                // The core is gone without a fatal error recorded (shutdown): nothing to watch.
                return;
            }
        }
    });
}

/// Errors that actix produces itself (payload too large, bad path parameters…) get a jsend body too.
fn jsend_error_body<B: actix_web::body::MessageBody + 'static>(
    res: actix_web::dev::ServiceResponse<B>,
) -> actix_web::Result<ErrorHandlerResponse<B>> {
    // JSON already (the API's errors) or a page (the UI's error and login pages): left as they are.
    let written = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json") || v.starts_with("text/html"));
    let status = res.status();
    if written || !(status.is_client_error() || status.is_server_error()) {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let message = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "request body too large".to_string(),
        StatusCode::RANGE_NOT_SATISFIABLE => "range not satisfiable".to_string(),
        s => format!("{}", s.canonical_reason().unwrap_or("error")),
    };
    let (req, original) = res.into_parts();
    let mut builder = actix_web::HttpResponse::build(status);
    // Keep what the handler said besides its body (`Content-Range` of a 416, `ETag`…).
    for (name, value) in original.headers() {
        if name != actix_web::http::header::CONTENT_TYPE
            && name != actix_web::http::header::CONTENT_LENGTH
        {
            builder.append_header((name.clone(), value.clone()));
        }
    }
    let body = builder.json(serde_json::json!({"status": "error", "message": message}));
    Ok(ErrorHandlerResponse::Response(
        actix_web::dev::ServiceResponse::new(req, body).map_into_right_body(),
    ))
}

/// A fresh cluster is initialised by exactly one node: the only one (no peers), or the lowest peer id —
/// and only once a majority of the members (itself included) said *definitely* that they belong to no
/// cluster, and none said it does. A peer that does not answer (busy, slow, down) counts for nothing:
/// a wiped lowest-id node whose peers run the cluster must wait to be caught up, never found a second
/// cluster because a status request timed out. So the check runs in the background until decided, and a
/// leader reaching this node first ends it. A node started with `join` is added by the leader instead.
///
/// A node on an empty store that finds a peer which has applied entries is *rejoining* (its disk was
/// wiped or replaced): it may have acknowledged entries it no longer holds, so it refuses to vote until
/// it has applied a read index from the leader (`Cluster::rejoining`, checked by the vote RPC).
async fn bootstrap(cluster: &Arc<Cluster>, config: &NodeConfig) -> Result<(), StartError> {
    if cluster
        .raft
        .is_initialized()
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?
    {
        return Ok(());
    }
    if config.join.is_some() {
        return Ok(());
    }
    let mut members = BTreeMap::new();
    if config.peers.is_empty() {
        members.insert(
            config.id,
            BasicNode {
                addr: cluster.advertise_url.clone(),
            },
        );
        return cluster
            .raft
            .initialize(members)
            .await
            .map_err(|e| StartError::Raft(e.to_string()));
    }
    for peer in &config.peers {
        members.insert(
            peer.id,
            BasicNode {
                addr: peer.url.trim_end_matches('/').to_string(),
            },
        );
    }
    let lowest = config.peers.iter().map(|p| p.id).min() == Some(config.id);
    let (cluster, config) = (cluster.clone(), config.clone());
    use std::sync::atomic::Ordering::SeqCst;
    // Until the first answers tell a fresh cluster from one that committed entries before this node came
    // up, an empty store votes for nobody (`Cluster::rejoining` starts true for it, see `start`).
    tokio::spawn(async move {
        let majority = members.len() / 2 + 1;
        let mut fresh = false;
        let rejoining = loop {
            let mut uninitialised = 1; // this node
            let mut running = false;
            let mut committed = false;
            for peer in config.peers.iter().filter(|p| p.id != config.id) {
                match peer_status(&cluster, &peer.url).await {
                    Some(st) if st.initialized => {
                        running = true;
                        committed |= st.last_applied.is_some();
                    }
                    Some(_) => uninitialised += 1,
                    None => {}
                }
            }
            if !fresh {
                if committed {
                    break true;
                }
                if uninitialised >= majority {
                    // A majority holds nothing, so nothing can have been committed before this node came
                    // up: whatever the cluster commits from now on, this node takes part in (or is sent).
                    // Deciding this once matters: seen a moment later, the new cluster's first entries
                    // would look like a wiped node's lost past, and two such "rejoining" followers would
                    // refuse every vote once the leader is gone — a cluster that can never elect again.
                    fresh = true;
                    cluster.rejoining.store(false, SeqCst);
                    tracing::info!("a new cluster: voting");
                }
            }
            let here = cluster.raft.is_initialized().await.unwrap_or(true);
            if here && fresh {
                break false; // a leader of the fresh cluster reached this node
            }
            if lowest && fresh && !running && uninitialised >= majority {
                match cluster.raft.initialize(members.clone()).await {
                    Ok(()) => tracing::info!("initialised a new cluster"),
                    // A leader's first message won the race: this node is a member, nothing to do.
                    Err(e) => tracing::info!("not initialising: {e}"),
                }
                break false;
            }
            tokio::time::sleep(Duration::from_millis(if fresh { 500 } else { 100 })).await;
        };
        if !rejoining {
            return;
        }
        cluster.rejoining.store(true, SeqCst);
        tracing::warn!("empty store, and the cluster has committed entries: rejoining; not voting until caught up");
        loop {
            if cluster.reads.linearize(false).await.is_ok() {
                cluster.rejoining.store(false, SeqCst);
                tracing::info!(
                    applied = cluster.applied_index(),
                    "rejoined: caught up with the leader; voting again"
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    Ok(())
}

/// `Some(status)` from a peer that answered, `None` if it could not be asked.
async fn peer_status(cluster: &Cluster, url: &str) -> Option<crate::cluster::PeerStatus> {
    let reply = cluster
        .client
        .get(format!("{}/raft/status", url.trim_end_matches('/')))
        .header(
            jobserv_raft::network::CLUSTER_SECRET_HEADER,
            &cluster.secret,
        )
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    match reply {
        Ok(r) if r.status().is_success() => r
            .bytes()
            .await
            .ok()
            .and_then(|b| jobserv_raft::codec::decode(&b).ok()),
        _ => None,
    }
}

/// Asks the cluster (through `join`, forwarded to the leader) to add this node, until it is a member.
fn spawn_join(cluster: Arc<Cluster>, join: String) {
    tokio::spawn(async move {
        let change = crate::cluster::MembershipChange::AddNode {
            id: cluster.id,
            url: cluster.advertise_url.clone(),
        };
        let Ok(body) = jobserv_raft::codec::encode(&change) else {
            return;
        };
        loop {
            let voters = cluster.voter_ids();
            if voters.contains(&cluster.id) {
                tracing::info!(node = cluster.id, "joined the cluster as a voter");
                return;
            }
            let reply = cluster
                .client
                .post(format!("{}/raft/membership", join.trim_end_matches('/')))
                .header(
                    jobserv_raft::network::CLUSTER_SECRET_HEADER,
                    &cluster.secret,
                )
                .timeout(Duration::from_secs(120))
                .body(body.clone())
                .send()
                .await;
            match reply {
                Ok(r) if r.status().is_success() => {}
                Ok(r) => tracing::warn!("joining through {join}: HTTP {}", r.status()),
                Err(e) => tracing::warn!("joining through {join}: {e}"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
}

/// On the leader, every 2 s: raise the cluster's storage/wire format to the newest one that *every* member
/// (voters and learners, each seen alive by gossip with its current generation) reads. A member gossip
/// does not see holds the format back: an old node that is merely down must still read the log when it
/// comes back.
fn spawn_format_gate(cluster: Arc<Cluster>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        loop {
            tick.tick().await;
            if !cluster.is_leader() {
                continue;
            }
            let Ok(current) = cluster.state.format_version() else {
                continue;
            };
            if current >= jobserv_raft::codec::FORMAT_VERSION {
                continue;
            }
            let members: Vec<u64> = cluster
                .raft
                .metrics()
                .borrow()
                .membership_config
                .membership()
                .nodes()
                .map(|(id, _)| *id)
                .collect();
            let gossip = cluster.gossip.members().await;
            let readable = members
                .iter()
                .map(|id| {
                    gossip
                        .iter()
                        .find(|m| m.raft_id == Some(*id) && m.state == "alive")
                        .and_then(|m| m.format_max)
                })
                .collect::<Option<Vec<u8>>>();
            let Some(agreed) = readable.and_then(|v| v.into_iter().min()) else {
                continue;
            };
            if agreed > current {
                tracing::info!(
                    from = current,
                    to = agreed,
                    "every member reads the newer storage format: raising it"
                );
                if let Err(e) = cluster
                    .propose(Command::SetFormatVersion { version: agreed })
                    .await
                {
                    tracing::warn!("raising the storage format: {e}");
                }
            }
        }
    });
}

/// Every second: publish the workers that checked in here (and when) to gossip.
fn spawn_gossip_publisher(cluster: Arc<Cluster>, presence: Arc<Presence>, window: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let workers = presence.seen_within(window);
            let load = workers.len() as u64;
            cluster.gossip.publish(&workers, load).await;
        }
    });
}

/// Installs the configured admin token (its hash) once a leader exists. Retries until it is in the state:
/// a node that cannot commit right now (no quorum yet, or catching up from a snapshot) keeps serving.
async fn install_admin_token(cluster: &Cluster, token: &str) {
    let hash = hash_token(token);
    let mut pause = Duration::from_millis(100);
    loop {
        match cluster.state.token(&hash) {
            Ok(Some(_)) => return,
            Ok(None) => {}
            Err(e) => tracing::warn!("reading tokens: {e}"),
        }
        match cluster
            .propose(Command::AddToken {
                hash: hash.clone(),
                name: "admin (config)".into(),
                role: Role::Admin,
            })
            .await
        {
            Ok(_) => return,
            Err(e) => tracing::debug!("admin token not installed yet: {e}"),
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}
