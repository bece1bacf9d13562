//! A tiny HTTP/1.1 server speaking the node's side of the worker protocol, for the client tests. It stands in
//! for a node because the real node is another crate (its own end-to-end tests drive the real thing).
//! It injects the failures the worker must survive: a 500 after storing a chunk (the worker resends the same
//! offset: accepted idempotently) and a partial store answered with 409 + `X-OFFSET`.
#![allow(dead_code)]
use jobserv_protocol::RunDef;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

#[derive(Default, Debug)]
pub struct NodeState {
    pub registered: Vec<serde_json::Value>,
    pub checkins: usize,
    pub checkin_queries: Vec<String>,
    pub pending_runs: Vec<RunDef>,
    pub console: Vec<u8>,
    pub statuses: Vec<String>,
    pub console_posts: usize,
    /// Console posts that carried new bytes, and the failures injected into them.
    pub new_data_posts: usize,
    pub injected_500: usize,
    pub injected_409: usize,
    pub tests: Vec<serde_json::Value>,
    pub uploads: BTreeMap<String, Vec<u8>>,
    pub auth_seen: Vec<String>,
    /// Reply `X-JOBSERV-CANCEL: 1` to console posts once this is set.
    pub cancel: bool,
    /// Inject the failures described in the module doc.
    pub inject_failures: bool,
    pub version: String,
}

pub struct FakeNode {
    pub url: String,
    pub state: Arc<Mutex<NodeState>>,
}

impl FakeNode {
    pub async fn start() -> FakeNode {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let state = Arc::new(Mutex::new(NodeState::default()));
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, shared.clone()));
            }
        });
        FakeNode { url, state }
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, NodeState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Polls until `cond` holds or panics after `secs`.
    pub async fn wait_for(&self, secs: u64, what: &str, cond: impl Fn(&NodeState) -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            if cond(&self.lock()) {
                return;
            }
            if std::time::Instant::now() > deadline {
                panic!("timed out waiting for {what}: {:#?}", self.lock());
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

struct Request {
    method: String,
    target: String,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

async fn read_request(reader: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> Option<Request> {
    let mut line = String::new();
    if reader.read_line(&mut line).await.ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).await.ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
    }
    let mut body = Vec::new();
    if let Some(len) = headers
        .get("content-length")
        .and_then(|l| l.parse::<usize>().ok())
    {
        body.resize(len, 0);
        reader.read_exact(&mut body).await.ok()?;
    } else if headers
        .get("transfer-encoding")
        .is_some_and(|t| t.contains("chunked"))
    {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).await.ok()?;
            let size = usize::from_str_radix(size.trim(), 16).ok()?;
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).await.ok()?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    }
    Some(Request {
        method,
        target,
        headers,
        body,
    })
}

async fn serve(stream: TcpStream, state: Arc<Mutex<NodeState>>) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    while let Some(req) = read_request(&mut reader).await {
        let (status, headers, body) = handle(&req, &state).await;
        let mut head = format!(
            "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nContent-Type: application/json\r\n",
            body.len()
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        if write.write_all(head.as_bytes()).await.is_err() || write.write_all(&body).await.is_err()
        {
            return;
        }
    }
}

fn ok(data: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({"status": "success", "data": data})).unwrap_or_default()
}

async fn handle(
    req: &Request,
    state: &Arc<Mutex<NodeState>>,
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let (path, query) = req.target.split_once('?').unwrap_or((&req.target, ""));
    if let Some(auth) = req.headers.get("authorization") {
        state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .auth_seen
            .push(auth.clone());
    }
    if path.starts_with("/workers/") && req.method == "POST" {
        let v: serde_json::Value = serde_json::from_slice(&req.body).unwrap_or_default();
        state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .registered
            .push(v);
        return (201, vec![], ok(serde_json::json!({})));
    }
    if path.starts_with("/workers/") && req.method == "GET" {
        let wait: u64 = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("wait="))
            .and_then(|w| w.parse().ok())
            .unwrap_or(0);
        // Long poll (shortened): hand out a pending run as soon as there is one.
        for _ in 0..(wait.min(2) * 20) {
            if !state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pending_runs
                .is_empty()
            {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
        s.checkins += 1;
        s.checkin_queries.push(query.to_string());
        let runs = std::mem::take(&mut s.pending_runs);
        let reply = serde_json::json!({"worker": {
            "name": "w", "enlisted": true, "run-defs": runs, "nodes": [], "version": s.version,
        }});
        return (200, vec![], ok(reply));
    }
    if path.ends_with("/create_signed") {
        let v: serde_json::Value = serde_json::from_slice(&req.body).unwrap_or_default();
        let urls: serde_json::Map<String, serde_json::Value> = v["paths"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p.as_str())
            .map(|p| {
                (
                    p.to_string(),
                    serde_json::Value::from(format!("/upload/{p}")),
                )
            })
            .collect();
        return (200, vec![], ok(serde_json::json!({"urls": urls})));
    }
    if let Some(p) = path.strip_prefix("/upload/") {
        state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .uploads
            .insert(p.to_string(), req.body.clone());
        return (200, vec![], ok(serde_json::json!({})));
    }
    if path.ends_with("/tests/") {
        let v: serde_json::Value = serde_json::from_slice(&req.body).unwrap_or_default();
        state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .tests
            .push(v);
        return (201, vec![], ok(serde_json::json!({})));
    }
    if path.contains("/runs/") && req.method == "POST" {
        let offset: usize = req
            .headers
            .get("x-offset")
            .and_then(|o| o.parse().ok())
            .unwrap_or(usize::MAX);
        let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
        s.console_posts += 1;
        let stored = s.console.len();
        if offset > stored {
            return (
                409,
                vec![("X-OFFSET".into(), stored.to_string())],
                b"{}".to_vec(),
            );
        }
        // Idempotent resend: only the part beyond what is stored is new.
        let new = &req.body[(stored - offset).min(req.body.len())..];
        let inject = s.inject_failures && !new.is_empty();
        if !new.is_empty() {
            s.new_data_posts += 1;
        }
        if inject && s.new_data_posts == 2 {
            s.injected_500 += 1;
            s.console.extend_from_slice(new);
            if let Some(st) = req.headers.get("x-run-status") {
                s.statuses.push(st.clone());
            }
            return (500, vec![], b"{}".to_vec());
        }
        if inject && s.new_data_posts == 4 && new.len() > 1 {
            s.injected_409 += 1;
            let half = new.len() / 2;
            s.console.extend_from_slice(&new[..half]);
            let stored = s.console.len();
            return (
                409,
                vec![("X-OFFSET".into(), stored.to_string())],
                b"{}".to_vec(),
            );
        }
        s.console.extend_from_slice(new);
        if let Some(st) = req.headers.get("x-run-status") {
            s.statuses.push(st.clone());
        }
        let mut headers = vec![];
        if s.cancel {
            headers.push(("X-JOBSERV-CANCEL".to_string(), "1".to_string()));
        }
        return (200, headers, ok(serde_json::json!({})));
    }
    (
        404,
        vec![],
        b"{\"status\":\"error\",\"message\":\"not found\"}".to_vec(),
    )
}
