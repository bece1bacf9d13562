//! Shared by the artifact tests of every blob store (`tests/artifacts.rs`, `tests/artifacts_s3.rs`).
use super::*;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};

pub const MIB: usize = 1024 * 1024;

pub fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    use rand::{RngCore, SeedableRng};
    let mut v = vec![0u8; n];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

pub fn sha256(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// A project with a one-run build, a worker holding that run; returns the run definition (with run key).
pub async fn held_run(node: &TestNode) -> Value {
    let (s, _) = node.post("/projects/", json!({"name": "big"})).await;
    assert_eq!(s, 201);
    let definition = SIMPLE_PROJECT;
    let (s, body) = node
        .post(
            "/projects/big/builds/",
            json!({"trigger-name": "manual", "project-definition": definition}),
        )
        .await;
    assert_eq!(s, 201, "{body}");
    register_and_enlist_worker(node, "w1", 1).await;
    take_run(node, "w1").await
}

pub async fn signed_urls(node: &TestNode, rundef: &Value, paths: &[&str]) -> Value {
    let run_url = rundef["run_url"]
        .as_str()
        .unwrap()
        .replace(&rundef_base(rundef), &node.url);
    let r = node
        .client
        .post(format!("{run_url}create_signed"))
        .header(
            "Authorization",
            format!("Token {}", rundef["api_key"].as_str().unwrap()),
        )
        .json(&json!({ "paths": paths }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    r.json::<Value>().await.unwrap()["data"]["urls"].clone()
}

fn rundef_base(rundef: &Value) -> String {
    let url = rundef["run_url"].as_str().unwrap();
    let after = url.find("://").unwrap() + 3;
    let slash = url[after..].find('/').unwrap() + after;
    url[..slash].to_string()
}

pub async fn download(node: &TestNode, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = node
        .client
        .get(node.u(path))
        .header("Authorization", format!("Token {}", node.token));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

pub fn blob_file(node: &TestNode, sha: &str) -> std::path::PathBuf {
    node.config.data_dir.join("blobs").join(&sha[..2]).join(sha)
}

pub async fn wait_for(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {secs} s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What every blob store must do, on three nodes: a 20 MiB upload through node 2 acknowledged with its
/// hash; an idempotent retry; listing, full, ranged, conditional and HEAD downloads from every node; 413
/// over the limit; a cut-off upload leaves neither metadata nor a partial file. Returns the upload's reply,
/// the bytes and the download path.
pub async fn upload_and_read_everywhere(nodes: &[TestNode]) -> (Value, Vec<u8>, String) {
    let rundef = held_run(&nodes[0]).await;
    let artifact = "out/image.bin";
    // Bigger than the old 16 MiB in-state limit.
    let bytes = random_bytes(20 * MIB + 123, 7);
    let sha = sha256(&bytes);
    let urls = signed_urls(&nodes[1], &rundef, &[artifact, "small.txt"]).await;
    let put_url = urls[artifact].as_str().unwrap().to_string();

    let r = nodes[1]
        .client
        .put(&put_url)
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let stored: Value = r.json().await.unwrap();
    assert_eq!(stored["data"]["sha256"], sha);
    assert_eq!(stored["data"]["size"], bytes.len() as u64);
    // Retried (the worker lost the reply): idempotent, still one artifact.
    let r = nodes[1]
        .client
        .put(&put_url)
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let small = urls["small.txt"].as_str().unwrap();
    let r = nodes[1]
        .client
        .put(small)
        .body("hello\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);

    let run_path = "/projects/big/builds/1/runs/unit/";
    let dl = format!("{run_path}{artifact}");
    for n in nodes {
        let (s, run) = n.get(run_path).await;
        assert_eq!(s, 200);
        let listed = run["data"]["run"]["artifacts"].as_array().unwrap().clone();
        assert_eq!(listed.len(), 2, "{listed:?}");
        assert_eq!(listed[0]["path"], artifact);
        assert_eq!(listed[0]["sha256"], sha);

        let r = download(n, &dl, &[]).await;
        assert_eq!(r.status().as_u16(), 200);
        assert_eq!(
            r.headers()["content-length"],
            bytes.len().to_string().as_str()
        );
        assert_eq!(r.headers()["etag"], format!("\"{sha}\"").as_str());
        assert_eq!(r.headers()["accept-ranges"], "bytes");
        assert_eq!(r.headers()["content-type"], "application/octet-stream");
        assert_eq!(sha256(&r.bytes().await.unwrap()), sha);

        let r = download(n, &format!("{run_path}small.txt"), &[]).await;
        assert_eq!(r.headers()["content-type"], "text/plain; charset=utf-8");
        assert_eq!(r.text().await.unwrap(), "hello\n");

        // A resumed download (`curl -C -`): the rest from an offset.
        let r = download(n, &dl, &[("Range", "bytes=1000000-")]).await;
        assert_eq!(r.status().as_u16(), 206);
        assert_eq!(
            r.headers()["content-range"],
            format!("bytes 1000000-{}/{}", bytes.len() - 1, bytes.len()).as_str()
        );
        assert_eq!(&r.bytes().await.unwrap()[..], &bytes[1_000_000..]);
        let r = download(n, &dl, &[("Range", "bytes=-10")]).await;
        assert_eq!(&r.bytes().await.unwrap()[..], &bytes[bytes.len() - 10..]);
        let r = download(n, &dl, &[("Range", &format!("bytes={}-", bytes.len()))]).await;
        assert_eq!(r.status().as_u16(), 416);
        assert_eq!(
            r.headers()["content-range"],
            format!("bytes */{}", bytes.len()).as_str()
        );
        let r = download(n, &dl, &[("If-None-Match", &format!("\"{sha}\""))]).await;
        assert_eq!(r.status().as_u16(), 304);
        let r = n
            .client
            .head(n.u(&dl))
            .header("Authorization", format!("Token {}", n.token))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        assert_eq!(
            r.headers()["content-length"],
            bytes.len().to_string().as_str()
        );
        // Downloads need a user token.
        let r = n.client.get(n.u(&dl)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 401);
    }

    // Over the limit: refused from Content-Length before a byte is stored.
    let too_big = signed_urls(&nodes[0], &rundef, &["too-big.bin"]).await;
    let r = nodes[0]
        .client
        .put(too_big["too-big.bin"].as_str().unwrap())
        .body(vec![0u8; 64 * MIB + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);
    assert!(r.text().await.unwrap().contains("limit of 67108864 bytes"));

    // Cut off mid-body: no metadata, no partial file on any node.
    let cut = signed_urls(&nodes[0], &rundef, &["cut.bin"]).await;
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![
        Ok(vec![1u8; 4 * MIB]),
        Err(std::io::Error::other("worker died")),
    ];
    let r = nodes[0]
        .client
        .put(cut["cut.bin"].as_str().unwrap())
        .header("Content-Length", (8 * MIB).to_string())
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await;
    assert!(r.is_err() || !r.unwrap().status().is_success());
    let r = download(&nodes[2], &format!("{run_path}cut.bin"), &[]).await;
    assert_eq!(r.status().as_u16(), 404);
    for n in nodes {
        let tmp = n.config.data_dir.join("blobs/tmp");
        wait_for("partial upload removed", 10, || {
            std::fs::read_dir(&tmp).map(|d| d.count()).unwrap_or(0) == 0
        })
        .await;
    }

    (stored, bytes, dl)
}
