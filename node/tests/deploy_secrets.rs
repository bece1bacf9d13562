//! What a deployment's init step makes (`jobserv-node init-secrets`), used the way compose, Kubernetes and
//! systemd use it: a node started with those files and with `cluster_secret_file` / `admin_token_file`
//! serves TLS for every host name given (wildcards included, nothing else), takes the admin token from its
//! file, and a second run of the command keeps every file. A config without any cluster secret is refused.
mod common;

use common::free_port;
use jobserv_node::config::NodeConfig;
use std::process::Command;
use std::time::{Duration, Instant};

fn init_secrets(dir: &std::path::Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_jobserv-node"))
        .args(["init-secrets", "--dir"])
        .arg(dir)
        .args(["--host", "node2.example", "--host", "*.jobserv.test"])
        .output()
        .expect("init-secrets");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn client_for(ca: &std::path::Path, host: &str, port: u16) -> reqwest::Client {
    let pem = std::fs::read(ca).expect("ca");
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("pem"))
        .resolve(host, ([127, 0, 0, 1], port).into())
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client")
}

#[tokio::test]
async fn init_secrets_make_a_node_that_serves_its_names_and_reads_its_secret_files() {
    let dir = common::tempdir();
    let secrets = dir.path().join("secrets");
    let first = init_secrets(&secrets);
    let names = [
        "ca.pem",
        "ca-key.pem",
        "node.pem",
        "node-key.pem",
        "cluster-secret",
        "admin-token",
    ];
    let before: Vec<Vec<u8>> = names
        .iter()
        .map(|n| std::fs::read(secrets.join(n)).unwrap_or_else(|e| panic!("{n}: {e}\n{first}")))
        .collect();
    assert!(first.lines().all(|l| l.starts_with("made")), "{first}");
    let second = init_secrets(&secrets);
    assert!(second.lines().all(|l| l.starts_with("kept")), "{second}");
    for (n, bytes) in names.iter().zip(&before) {
        assert_eq!(
            &std::fs::read(secrets.join(n)).expect("file"),
            bytes,
            "{n} kept"
        );
    }
    use std::os::unix::fs::PermissionsExt;
    for private in [
        "ca-key.pem",
        "node-key.pem",
        "cluster-secret",
        "admin-token",
    ] {
        let mode = std::fs::metadata(secrets.join(private))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{private} is private: {mode:o}");
    }

    // A node configured only with paths, as the container image's node.toml does.
    let port = free_port();
    let mut config = NodeConfig::local(
        1,
        dir.path().join("node-1"),
        port,
        &jobserv_node::tls::DevPki {
            ca_cert: secrets.join("ca.pem"),
            node_cert: secrets.join("node.pem"),
            node_key: secrets.join("node-key.pem"),
        },
        String::new(),
        None,
    );
    config.cluster_secret_file = Some(secrets.join("cluster-secret"));
    config.admin_token_file = Some(secrets.join("admin-token"));
    let config_path = dir.path().join("node.toml");
    std::fs::write(&config_path, config.to_toml()).expect("config");
    let log = std::fs::File::create(dir.path().join("node.log")).expect("log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_jobserv-node"))
        .args(["run", "--config"])
        .arg(&config_path)
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("node");
    let token = std::fs::read_to_string(secrets.join("admin-token")).expect("token");
    let ca = secrets.join("ca.pem");
    let named = client_for(&ca, "node2.example", port);
    let deadline = Instant::now() + Duration::from_secs(60);
    let view = loop {
        let r = named
            .get(format!("https://node2.example:{port}/cluster/?stale=1"))
            .header("Authorization", format!("Token {}", token.trim()))
            .send()
            .await;
        if let Ok(r) = r {
            if r.status() == 200 {
                let body: serde_json::Value = r.json().await.expect("json");
                if body["data"]["leader"].as_u64().is_some() {
                    break body;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "node not serving with the file's admin token: {}",
            std::fs::read_to_string(dir.path().join("node.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(view["data"]["this_node"], 1);
    let wildcard = client_for(&ca, "jobserv-1.jobserv.test", port);
    let r = wildcard
        .get(format!("https://jobserv-1.jobserv.test:{port}/healthz"))
        .send()
        .await
        .expect("the wildcard name is in the certificate");
    assert_eq!(r.status(), 200);
    let other = client_for(&ca, "other.example", port);
    let refused = other
        .get(format!("https://other.example:{port}/healthz"))
        .send()
        .await;
    assert!(
        refused.is_err(),
        "a name not given to init-secrets is refused by TLS"
    );
    let _ = child.kill();
    let _ = child.wait();

    // No secret at all: refused at load, naming the key.
    config.cluster_secret_file = None;
    std::fs::write(&config_path, config.to_toml()).expect("config");
    let out = Command::new(env!("CARGO_BIN_EXE_jobserv-node"))
        .args(["run", "--config"])
        .arg(&config_path)
        .output()
        .expect("node");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cluster_secret is missing"), "{stderr}");
}
