//! The object-store backend (`[artifacts] store = "s3://…"`) against a real S3-protocol server running
//! locally: moto in server mode (from PyPI; `.ci/run` installs it and sets `MOTO_SERVER`). Three real nodes
//! share the bucket: the same artifact checks as the local store, nothing on the nodes' disks but the
//! upload spool, and an object no artifact refers to is collected.
mod common;
use common::artifacts::*;
use common::*;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Moto {
    child: Child,
    url: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const BUCKET: &str = "jobserv-test";

async fn start_moto(dir: &std::path::Path) -> Moto {
    let bin = std::env::var("MOTO_SERVER").unwrap_or_else(|_| "moto_server".into());
    let port = free_port();
    let log = std::fs::File::create(dir.join("moto.log")).expect("moto log");
    let child = Command::new(&bin)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::from(log.try_clone().expect("log")))
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "this test needs moto's S3 server ({bin:?}: {e}); install it with \
                 `pip install 'moto[server]'` (as .ci/run does) or set MOTO_SERVER to its path"
            )
        });
    let moto = Moto {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // Creating a bucket needs no signature on moto.
        match http.put(format!("{}/{BUCKET}", moto.url)).send().await {
            Ok(r) if r.status().is_success() => break,
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "moto did not start; see {}",
            dir.join("moto.log").display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    moto
}

async fn keys_in_bucket(moto: &Moto) -> String {
    reqwest::Client::new()
        .get(format!(
            "{}/{BUCKET}?list-type=2&prefix=artifacts/",
            moto.url
        ))
        .send()
        .await
        .expect("list")
        .text()
        .await
        .expect("list body")
}

#[tokio::test]
async fn the_s3_backend_passes_the_artifact_tests() {
    let dir = tempdir();
    let moto = start_moto(dir.path()).await;
    let endpoint = moto.url.clone();
    let nodes = three_nodes(dir.path(), |c| {
        c.max_artifact_bytes = 64 * MIB;
        c.artifacts.store = format!("s3://{BUCKET}/artifacts");
        for (k, v) in [
            ("aws_endpoint", endpoint.as_str()),
            ("aws_allow_http", "true"),
            ("aws_region", "us-east-1"),
            ("aws_access_key_id", "testing"),
            ("aws_secret_access_key", "testing"),
        ] {
            c.artifacts.options.insert(k.into(), v.into());
        }
        c.artifacts.repair_interval_secs = 1;
        c.artifacts.gc_grace_secs = 10;
    })
    .await;
    let (stored, bytes, _) = upload_and_read_everywhere(&nodes).await;
    let sha = sha256(&bytes);
    assert_eq!(
        stored["data"]["holders"],
        serde_json::json!([]),
        "the object store holds it for everyone"
    );
    assert!(keys_in_bucket(&moto)
        .await
        .contains(&format!("artifacts/{}/{sha}", &sha[..2])));
    for n in &nodes {
        assert!(!blob_file(n, &sha).exists(), "only the spool on {}", n.url);
        let (s, c) = n.get("/cluster/").await;
        assert_eq!(s, 200);
        assert_eq!(
            c["data"]["artifacts"]["store"],
            format!("s3://{BUCKET}/artifacts")
        );
    }
    // An object no artifact refers to (an upload whose metadata never committed) is collected by the leader.
    let orphan = format!("artifacts/aa/{}", "a".repeat(64));
    let r = reqwest::Client::new()
        .put(format!("{}/{BUCKET}/{orphan}", moto.url))
        .header("Content-Type", "application/octet-stream")
        .body(vec![1u8; 100])
        .send()
        .await
        .expect("put orphan");
    assert!(r.status().is_success());
    assert!(keys_in_bucket(&moto).await.contains(&orphan));
    let deadline = Instant::now() + Duration::from_secs(30);
    while keys_in_bucket(&moto).await.contains(&orphan) {
        assert!(Instant::now() < deadline, "orphan object not collected");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        keys_in_bucket(&moto).await.contains(&sha),
        "a referenced blob is kept"
    );
}
