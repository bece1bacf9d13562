//! The node's HTTPS API against a real single-node cluster (sled in a temp dir, rustls on 127.0.0.1).
mod common;
use common::*;
use serde_json::json;

async fn project_with_build(node: &TestNode, name: &str) -> u64 {
    let (s, body) = node.post("/projects/", json!({"name": name})).await;
    assert_eq!(s, 201, "{body}");
    let (s, body) = node
        .post(
            &format!("/projects/{name}/builds/"),
            json!({"trigger-name": "manual", "project-definition": SIMPLE_PROJECT}),
        )
        .await;
    assert_eq!(s, 201, "{body}");
    body["data"]["build_id"].as_u64().expect("build_id")
}

#[tokio::test]
async fn projects_and_builds_round_trip_with_queue_reasons() {
    let dir = tempdir();
    let node = TestNode::start(dir.path()).await;
    assert_eq!(project_with_build(&node, "demo").await, 1);

    let (s, body) = node.get("/projects/").await;
    assert_eq!(s, 200);
    assert_eq!(body["data"]["projects"][0]["name"], "demo");

    let (s, body) = node.get("/projects/demo/builds/1/").await;
    assert_eq!(s, 200, "{body}");
    let build = &body["data"]["build"];
    assert_eq!(build["status"], "QUEUED");
    let mut names: Vec<_> = build["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["lint-a", "lint-b", "unit"]);
    // No worker at all: each queued run says so.
    assert!(build["runs"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["queue_reason"] == "no_matching_worker"));
    let (s, text) = node
        .get_text("/projects/demo/builds/1/runs/unit/console.log")
        .await;
    assert_eq!(s, 200);
    assert!(
        text.contains("Waiting for worker with tag: amd64"),
        "{text}"
    );

    let (s, yml) = node
        // `latest` alone is JobServ's newest PASSED build; `?all=1` the newest whatever its status.
        .get_text("/projects/demo/builds/latest/project.yml?all=1")
        .await;
    assert_eq!(s, 200);
    assert!(yml.contains("lint-{loop}"));
    let (_, health) = node.get("/health/runs/").await;
    assert_eq!(health["data"]["QUEUED"]["amd64"], 3);
}

#[tokio::test]
async fn concurrent_build_creation_gives_gapless_unique_numbers() {
    let dir = tempdir();
    let node = TestNode::start(dir.path()).await;
    assert_eq!(project_with_build(&node, "p").await, 1);
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let client = node.client.clone();
        let url = node.u("/projects/p/builds/");
        let token = node.token.clone();
        tasks.push(tokio::spawn(async move {
            let r = client
                .post(url)
                .header("Authorization", format!("Token {token}"))
                .json(&json!({"trigger-name": "manual"}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 201);
            r.json::<serde_json::Value>().await.unwrap()["data"]["build_id"]
                .as_u64()
                .unwrap()
        }));
    }
    let mut numbers = Vec::new();
    for t in tasks {
        numbers.push(t.await.unwrap());
    }
    numbers.sort();
    assert_eq!(numbers, (2..=21).collect::<Vec<u64>>());
    let (_, page) = node.get("/projects/p/builds/?limit=5").await;
    let listed: Vec<u64> = page["data"]["builds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["build_id"].as_u64().unwrap())
        .collect();
    assert_eq!(listed, vec![21, 20, 19, 18, 17]);
    let next = page["data"]["next"].as_str().unwrap().to_string();
    assert!(next.ends_with("before=17"), "{next}");
}

#[tokio::test]
async fn bad_input_gets_clear_errors_and_changes_nothing() {
    let dir = tempdir();
    let node = TestNode::start(dir.path()).await;
    // No token, wrong token.
    let r = node.client.get(node.u("/projects/")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = node
        .client
        .get(node.u("/projects/"))
        .header("Authorization", "Token nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["status"], "error");
    // Unknown field, bad name, malformed JSON.
    let (s, body) = node
        .post("/projects/", json!({"name": "x", "colour": "red"}))
        .await;
    assert_eq!(s, 400);
    assert!(
        body["message"].as_str().unwrap().contains("colour"),
        "{body}"
    );
    let (s, body) = node.post("/projects/", json!({"name": "../etc"})).await;
    assert_eq!(s, 400);
    assert!(body["message"].as_str().unwrap().contains("name"), "{body}");
    assert_eq!(project_with_build(&node, "ok").await, 1);
    // Syntax error in the YAML names line and column; unknown trigger; YAML bomb.
    let (s, body) = node.post("/projects/ok/builds/", json!({"trigger-name": "manual", "project-definition": "timeout: 5\ntriggers: [\n  - name: x\n"})).await;
    assert_eq!(s, 400);
    assert!(body["message"].as_str().unwrap().contains("line"), "{body}");
    let (s, body) = node
        .post(
            "/projects/ok/builds/",
            json!({"trigger-name": "nope", "project-definition": SIMPLE_PROJECT}),
        )
        .await;
    assert_eq!(s, 400);
    assert!(body["message"].as_str().unwrap().contains("nope"), "{body}");
    let mut bomb = String::from(
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    for i in 1..9 {
        let prev = (b'a' + i - 1) as char;
        let cur = (b'a' + i) as char;
        bomb.push_str(&format!("{cur}: &{cur} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"));
    }
    let started = std::time::Instant::now();
    let (s, body) = node
        .post(
            "/projects/ok/builds/",
            json!({"trigger-name": "manual", "project-definition": bomb}),
        )
        .await;
    assert_eq!(s, 400, "{body}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    // Oversized body: 413 with a jsend body.
    let big = "x".repeat(3 * 1024 * 1024);
    let (s, body) = node
        .post(
            "/projects/ok/builds/",
            json!({"trigger-name": "manual", "project-definition": big}),
        )
        .await;
    assert_eq!(s, 413, "{body}");
    assert_eq!(body["status"], "error");
    // Nothing of that reached the state.
    let (_, page) = node.get("/projects/ok/builds/").await;
    assert_eq!(page["data"]["builds"].as_array().unwrap().len(), 1);
    let (_, projects) = node.get("/projects/").await;
    assert_eq!(projects["data"]["projects"].as_array().unwrap().len(), 1);
}

/// One HTTP/1.1 request on an open TLS stream; returns the status code, or why there was no reply.
fn request_on(
    tls: &mut rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>,
    host: &str,
) -> Result<u16, String> {
    use std::io::{Read, Write};
    write!(tls, "GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n").map_err(|e| e.to_string())?;
    tls.flush().map_err(|e| e.to_string())?;
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    while !reply.ends_with(b"\r\n\r\n") {
        match tls.read(&mut byte) {
            Ok(0) => return Err(format!("connection closed after {} bytes", reply.len())),
            Ok(_) => reply.push(byte[0]),
            Err(e) => return Err(e.to_string()),
        }
    }
    let head = String::from_utf8_lossy(&reply).to_string();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().to_string())
        })
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("no content-length in {head}"))?;
    let mut body = vec![0u8; length];
    tls.read_exact(&mut body).map_err(|e| e.to_string())?;
    head.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status in {head}"))
}

/// An idle connection stays open longer than actix's default keep-alive of 5 s: our clients drop idle
/// pooled connections first (`jobserv_protocol::http`), so none ever writes into one the server is closing
/// (CI once failed on "connection closed before message completed" with the 5 s default).
#[tokio::test]
async fn an_idle_connection_outlives_the_five_second_default_keep_alive() {
    let dir = tempdir();
    let node = TestNode::start(dir.path()).await;
    let host = node
        .url
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_string();
    let ca = node.config.ca_cert.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        jobserv_node::tls::install_crypto_provider();
        let pem = std::fs::read(&ca).expect("CA file");
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            roots.add(cert.expect("CA pem")).expect("CA cert");
        }
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("server name");
        let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).expect("tls");
        let sock = std::net::TcpStream::connect(&host).expect("connect");
        sock.set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .expect("read timeout");
        let mut tls = rustls::StreamOwned::new(conn, sock);
        let first = request_on(&mut tls, &host);
        std::thread::sleep(std::time::Duration::from_secs(7));
        let second = request_on(&mut tls, &host);
        (first, second)
    })
    .await
    .expect("client thread");
    assert_eq!(outcome.0, Ok(200), "first request");
    assert_eq!(outcome.1, Ok(200), "the same connection after 7 s idle");
}
