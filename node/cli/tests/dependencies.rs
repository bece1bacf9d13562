//! The CLI is what a laptop installs: it must not carry the server. `cargo tree` on this crate's normal
//! (non-dev) dependencies names no openraft, sled or actix package.
use std::process::Command;

#[test]
fn the_cli_links_no_raft_storage_or_actor_crate() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "tree",
            "--offline",
            "--package",
            "jobserv-cli",
            "--edges",
            "normal,build",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo tree");
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let names: Vec<&str> = tree
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(
        names.contains(&"jobserv-protocol") && names.contains(&"reqwest"),
        "the tree was read: {names:?}"
    );
    let server_side: Vec<&&str> = names
        .iter()
        .filter(|n| {
            [
                "openraft",
                "sled",
                "actix",
                "jobserv-raft",
                "jobserv-node",
                "bollard",
            ]
            .iter()
            .any(|bad| *n == bad || n.starts_with(&format!("{bad}-")))
        })
        .collect();
    assert!(
        server_side.is_empty(),
        "the CLI depends on server-side crates: {server_side:?}"
    );
}
