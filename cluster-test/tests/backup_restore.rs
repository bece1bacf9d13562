//! Backup and restore (issue 14): a cluster with 1,000 completed builds is backed up with
//! `jobserv-node backup --with-blobs` while builds go on being made, restored with `jobserv-node restore`
//! into node 1 of a fresh 3-node cluster, and every one of the 1,000 builds — build, runs, console log,
//! tests, and every tenth artifact — reads back identical from the restored cluster
//! (`cluster_test::backup`). A damaged backup file is refused before anything is written.
use cluster_test::harness::bin_dir;
use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_builds_run_restores_into_a_new_cluster_identically() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bins = bin_dir(None).expect("binaries");
    let report = cluster_test::backup::run(dir.path(), &bins, 1000, true)
        .await
        .expect("backup and restore");
    println!("{report}");
    assert_eq!(report.builds_compared, 1000);
    assert!(
        report.builds_during_backup > 0,
        "builds were made while the backup ran"
    );

    // The same file cut short, and with one byte changed: restore refuses both and leaves the data dir empty.
    let file = dir.path().join("cluster.backup");
    let bytes = std::fs::read(&file).expect("backup file");
    for (name, damaged) in [
        ("cut", bytes[..bytes.len() / 2].to_vec()),
        ("flipped", {
            let mut b = bytes.clone();
            let i = b.len() / 3;
            b[i] ^= 0x55;
            b
        }),
    ] {
        let bad = dir.path().join(format!("{name}.backup"));
        std::fs::write(&bad, &damaged).expect("write");
        let data_dir = dir.path().join(format!("{name}-node"));
        let config = dir.path().join(format!("{name}.toml"));
        let pki = jobserv_node::tls::ensure_dev_pki(&dir.path().join("pki")).expect("pki");
        let node = jobserv_node::config::NodeConfig::local(
            1,
            data_dir.clone(),
            1,
            &pki,
            "s".repeat(32),
            None,
        );
        std::fs::write(&config, node.to_toml()).expect("config");
        let out = Command::new(bins.join("jobserv-node"))
            .args(["restore", "--from"])
            .arg(&bad)
            .arg("--config")
            .arg(&config)
            .output()
            .expect("restore");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "a {name} backup was restored");
        assert!(stderr.contains("damaged or cut off"), "{name}: {stderr}");
        assert!(!data_dir.join("raft").exists(), "{name}: nothing written");
    }
}
