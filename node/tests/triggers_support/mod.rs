//! Shared by the `triggers_*` tests: a worker spoken by hand over the real protocol (no Docker), real git
//! repositories driven with the git CLI, and waiting on conditions.
#![allow(dead_code)]
use super::common::TestNode;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use super::common::WORKER_KEY;

pub async fn register_and_enlist(node: &TestNode, name: &str) {
    super::common::register_and_enlist_worker(node, name, 8).await;
}

/// Checks in with `slots` free slots, long-polling up to `wait` seconds; returns the run definitions.
pub async fn check_in(node: &TestNode, name: &str, slots: u32, wait: u32) -> Vec<Value> {
    let r = node
        .client
        .get(node.u(&format!("/workers/{name}/?available_runners={slots}&load_avg_1=0.5&mem_free=1000&disk_free=1000&wait={wait}")))
        .header("Authorization", format!("Token {WORKER_KEY}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let body: Value = r.json().await.unwrap();
    body["data"]["worker"]["run-defs"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Takes runs until `names` are all handed out (they may come over several check-ins).
pub async fn take_runs(node: &TestNode, worker: &str, names: &[&str]) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut got: Vec<Value> = Vec::new();
    while got.len() < names.len() {
        assert!(
            Instant::now() < deadline,
            "runs {names:?} not handed out; got {:?}",
            got.iter().map(|d| d["run"].clone()).collect::<Vec<_>>()
        );
        got.extend(check_in(node, worker, 8, 2).await);
    }
    let mut taken: Vec<&str> = got.iter().map(|d| d["run"].as_str().unwrap()).collect();
    taken.sort();
    let mut want = names.to_vec();
    want.sort();
    assert_eq!(taken, want);
    got
}

/// Reports a run's end (`PASSED`/`FAILED`) with one console line, as a worker does.
pub async fn finish(node: &TestNode, rundef: &Value, status: &str) {
    let r = node
        .client
        .post(rundef["run_url"].as_str().unwrap())
        .header(
            "Authorization",
            format!("Token {}", rundef["api_key"].as_str().unwrap()),
        )
        .header("X-OFFSET", "0")
        .header("X-RUN-STATUS", status)
        .body(format!("{status}\n"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status().as_u16(),
        200,
        "{}",
        r.text().await.unwrap_or_default()
    );
}

pub async fn wait_for<T>(what: &str, secs: u64, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The leader, once agreed on: it names itself and a majority of `cluster_size` nodes (counting it) name it,
/// each in its own view (`GET /cluster/?stale=1`, answered at once even without a quorum). `nodes` are the
/// live ones. One node's word is not enough: a restarted node may name an old leader, a deposed one may not
/// know yet; no majority can name a deposed leader (its successor needed a majority's votes).
pub async fn agreed_leader(nodes: &[&TestNode], cluster_size: usize) -> u64 {
    let majority = cluster_size / 2 + 1;
    wait_for("a leader agreed on by a majority", 30, async || {
        let mut views = Vec::new();
        for n in nodes {
            let (s, body) = n.get("/cluster/?stale=1").await;
            if s == 200 {
                views.push((n.config.id, body["data"]["leader"].as_u64()));
            }
        }
        views.iter().find_map(|&(me, leader)| {
            let leader = leader.filter(|l| *l == me)?;
            let named = views.iter().filter(|v| v.1 == Some(leader)).count();
            (named >= majority).then_some(leader)
        })
    })
    .await
}

/// This node's applied Raft index after a linearizable read (`GET /cluster/`): it covers every entry
/// committed before the call.
pub async fn applied_index(node: &TestNode) -> u64 {
    let (s, body) = node.get("/cluster/").await;
    assert_eq!(s, 200, "GET /cluster/: {body}");
    body["data"]["last_applied"].as_u64().expect("last_applied")
}

/// Waits until the node has applied the storage-format raise (format 1 to the newest every member reads)
/// that the leader proposes a few seconds after start, once gossip shows every member (one Raft entry).
/// After it, a node with no worker, no build and no poller writes nothing on its own.
pub async fn wait_format_raised(node: &TestNode) {
    wait_for("the storage format to be raised", 30, async || {
        let v = node.own_view().await;
        (v["storage_format"] == v["storage_format_readable"]).then_some(())
    })
    .await
}

/// Creates a `git_poller` trigger through `node` and waits for its first look, which records the refs and
/// builds nothing. The first look has no trace outside the node but its one Raft entry (`PollerSeen`)
/// right after the trigger's: `node`'s applied index reaching the index before the trigger + 2 is it.
/// Sound only while nothing else writes: no worker, no build, the format already raised
/// ([`wait_format_raised`]).
pub async fn create_poller_and_wait_first_look(node: &TestNode, project: &str, trigger: Value) {
    let before = applied_index(node).await;
    let (s, body) = node
        .post(&format!("/projects/{project}/triggers/"), trigger)
        .await;
    assert_eq!(s, 201, "{body}");
    wait_for(
        "the git poller's first look (its PollerSeen entry after the trigger's)",
        30,
        async || {
            let applied = node.own_view().await["last_applied"].as_u64().unwrap_or(0);
            (applied >= before + 2).then_some(())
        },
    )
    .await
}

pub async fn build(node: &TestNode, project: &str, n: u64) -> Value {
    let (_, body) = node.get(&format!("/projects/{project}/builds/{n}/")).await;
    body["data"]["build"].clone()
}

pub async fn builds(node: &TestNode, project: &str) -> Vec<Value> {
    let (_, body) = node.get(&format!("/projects/{project}/builds/")).await;
    body["data"]["builds"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

pub fn run_names(build: &Value) -> Vec<String> {
    let mut names: Vec<String> = build["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

/// A bare repository (what the poller and the forge stand-ins point at) and a work clone that pushes to it.
pub struct GitRepo {
    pub bare: PathBuf,
    pub work: PathBuf,
}

pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=Test",
            "-c",
            "user.email=test@example.com",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl GitRepo {
    pub fn new(dir: &Path, name: &str) -> GitRepo {
        let bare = dir.join(format!("{name}.git"));
        let work = dir.join(format!("{name}-work"));
        std::fs::create_dir_all(&bare).unwrap();
        std::fs::create_dir_all(&work).unwrap();
        git(&bare, &["init", "--bare", "--quiet", "-b", "main"]);
        git(&work, &["init", "--quiet", "-b", "main"]);
        git(&work, &["remote", "add", "origin", bare.to_str().unwrap()]);
        GitRepo { bare, work }
    }

    pub fn url(&self) -> String {
        self.bare.to_str().unwrap().to_string()
    }

    /// Writes `files`, commits on `branch` and pushes; returns the new sha.
    pub fn commit_and_push(&self, branch: &str, files: &[(&str, &str)], message: &str) -> String {
        let current = git(&self.work, &["symbolic-ref", "--short", "HEAD"]);
        if current != branch {
            let exists = std::process::Command::new("git")
                .arg("-C")
                .arg(&self.work)
                .args(["rev-parse", "--verify", "--quiet", branch])
                .output()
                .unwrap()
                .status
                .success();
            if exists {
                git(&self.work, &["checkout", "--quiet", branch]);
            } else {
                git(&self.work, &["checkout", "--quiet", "-b", branch]);
            }
        }
        for (path, text) in files {
            std::fs::write(self.work.join(path), text).unwrap();
        }
        git(&self.work, &["add", "-A"]);
        git(
            &self.work,
            &["commit", "--quiet", "--allow-empty", "-m", message],
        );
        git(&self.work, &["push", "--quiet", "origin", branch]);
        git(&self.work, &["rev-parse", "HEAD"])
    }
}

/// What a stand-in server received.
#[derive(Clone, Debug)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub headers: std::collections::BTreeMap<String, String>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// A local HTTP(S) server that stands in for GitHub's / GitLab's API or a webhook receiver: it records
/// every request and answers GETs from `replies` (404 otherwise) and anything else with 201 `{}`.
pub struct StandIn {
    pub url: String,
    pub received: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
    pub replies: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, Value>>>,
    handle: actix_web::dev::ServerHandle,
}

impl StandIn {
    /// HTTPS with the test PKI's certificate (trusted by the node through the cluster CA) when `tls` is
    /// given, plain HTTP otherwise. Must run on an actix system (`#[actix_web::test]`).
    pub fn start(tls: Option<(&Path, &Path)>) -> StandIn {
        use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
        let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let replies = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
        let (r, p) = (received.clone(), replies.clone());
        let server = HttpServer::new(move || {
            let (r, p) = (r.clone(), p.clone());
            App::new().default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
                let (r, p) = (r.clone(), p.clone());
                async move {
                    let headers = req
                        .headers()
                        .iter()
                        .map(|(k, v)| {
                            (
                                k.as_str().to_lowercase(),
                                v.to_str().unwrap_or("").to_string(),
                            )
                        })
                        .collect();
                    r.lock().unwrap().push(Received {
                        method: req.method().to_string(),
                        path: req.path().to_string(),
                        headers,
                        body: body.to_vec(),
                    });
                    if req.method() == actix_web::http::Method::GET {
                        return match p.lock().unwrap().get(req.path()) {
                            Some(v) => HttpResponse::Ok().json(v),
                            None => HttpResponse::NotFound().finish(),
                        };
                    }
                    HttpResponse::Created().json(json!({}))
                }
            }))
        })
        .workers(1);
        let port = super::common::free_port();
        let (server, scheme) = match tls {
            Some((cert, key)) => {
                let config = jobserv_node::tls::server_config(cert, key).unwrap();
                (
                    server
                        .bind_rustls_0_23(("127.0.0.1", port), config)
                        .unwrap(),
                    "https",
                )
            }
            None => (server.bind(("127.0.0.1", port)).unwrap(), "http"),
        };
        let server = server.run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        StandIn {
            url: format!("{scheme}://127.0.0.1:{port}"),
            received,
            replies,
            handle,
        }
    }

    pub fn requests(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    pub async fn stop(self) {
        self.handle.stop(false).await;
    }
}
