//! GitHub pull requests end to end: a real node, a real repository holding the project definition, and a
//! local HTTPS server speaking GitHub's status API that records what it receives. A webhook with a bad
//! (or no) signature changes nothing; a signed `pull_request` event starts a build with the PR's params,
//! whose `pending` and then `success` statuses (with the build URL and the trigger's token) reach the
//! stand-in; a `ci-retest` comment builds the PR's current head again.
mod common;
mod triggers_support;
use common::*;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use triggers_support::*;

const DEFINITION: &str = r#"
timeout: 5
triggers:
  - name: pr
    type: github_pr
    runs:
      - name: pr-check
        container: busybox:latest
        host-tag: amd64
        script: check
scripts:
  check: |
    #!/bin/sh -e
    echo "checking $GIT_SHA of PR $GH_PRNUM"
"#;

fn sign(key: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn pull_request(api: &str, repo: &str, head: &str, base: &str) -> Value {
    json!({
        "number": 7,
        "statuses_url": format!("{api}/repos/octo/product/statuses/{head}"),
        "url": format!("{api}/repos/octo/product/pulls/7"),
        "head": {"sha": head, "repo": {"clone_url": repo}},
        "base": {"sha": base, "repo": {"name": "product", "owner": {"login": "octo"}, "clone_url": repo}},
    })
}

async fn deliver(
    node: &TestNode,
    event: &str,
    body: &Value,
    signature: Option<String>,
) -> (u16, Value) {
    let bytes = serde_json::to_vec(body).unwrap();
    let mut req = node
        .client
        .post(node.u("/github/product/"))
        .header("X-GitHub-Event", event)
        .header("Content-Type", "application/json");
    if let Some(sig) = signature {
        req = req.header("X-Hub-Signature-256", sig);
    }
    let r = req.body(bytes).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[actix_web::test]
async fn a_signed_pr_event_builds_and_reports_statuses_and_a_bad_signature_changes_nothing() {
    let dir = tempdir();
    let repo = GitRepo::new(dir.path(), "product");
    let base = repo.commit_and_push("main", &[("product.yml", DEFINITION)], "base");
    let head = repo.commit_and_push("feature", &[("code.c", "int main;")], "the change");
    let config = node_config(dir.path(), free_port());
    let github = StandIn::start(Some((&config.tls_cert, &config.tls_key)));
    let node = TestNode::start_with(config).await;
    assert_eq!(
        node.post("/projects/", json!({"name": "product"})).await.0,
        201
    );
    let (s, body) = node
        .post("/projects/product/triggers/", json!({"type": "github_pr", "secrets": [
            {"name": "webhook-key", "value": "hook-key-123"}, {"name": "githubtok", "value": "gh-token-456"}]}))
        .await;
    assert_eq!(s, 201, "{body}");
    let event = json!({"action": "opened", "pull_request": pull_request(&github.url, &repo.url(), &head, &base)});
    let bytes = serde_json::to_vec(&event).unwrap();

    // Unsigned, wrongly signed, signed over another body: refused, nothing created.
    assert_eq!(deliver(&node, "pull_request", &event, None).await.0, 401);
    assert_eq!(
        deliver(
            &node,
            "pull_request",
            &event,
            Some(sign("wrong-key", &bytes))
        )
        .await
        .0,
        403
    );
    assert_eq!(
        deliver(
            &node,
            "pull_request",
            &event,
            Some(sign("hook-key-123", b"{}"))
        )
        .await
        .0,
        403
    );
    assert_eq!(
        deliver(&node, "pull_request", &event, Some("sha256=zz".into()))
            .await
            .0,
        403
    );
    assert!(builds(&node, "product").await.is_empty());

    // Properly signed: build 1 from the definition in the PR's repository at its head.
    let (s, reply) = deliver(
        &node,
        "pull_request",
        &event,
        Some(sign("hook-key-123", &bytes)),
    )
    .await;
    assert_eq!(s, 201, "{reply}");
    let b = build(&node, "product", 1).await;
    assert_eq!(b["trigger_type"], "github_pr");
    for (k, v) in [
        ("GH_OWNER", "octo"),
        ("GH_REPO", "product"),
        ("GH_PRNUM", "7"),
        ("GIT_SHA", &head),
        ("GIT_OLD_SHA", &base),
    ] {
        assert_eq!(b["params"][k], v, "{k}");
    }
    assert_eq!(b["params"]["GIT_URL"], repo.url());
    assert_eq!(
        b["params"]["GH_STATUS_URL"],
        format!("{}/repos/octo/product/statuses/{head}", github.url)
    );
    let build_url = b["url"].as_str().unwrap().to_string();

    let status_path = format!("/repos/octo/product/statuses/{head}");
    let statuses = async |state: &str| {
        github
            .requests()
            .into_iter()
            .filter(|r| r.method == "POST" && r.path == status_path && r.json()["state"] == state)
            .collect::<Vec<_>>()
    };
    let pending = wait_for("the pending status", 20, async || {
        statuses("pending").await.into_iter().next()
    })
    .await;
    assert_eq!(pending.json()["target_url"], build_url.as_str());
    assert_eq!(pending.headers["authorization"], "token gh-token-456");

    register_and_enlist(&node, "w1").await;
    let runs = take_runs(&node, "w1", &["pr-check"]).await;
    assert_eq!(runs[0]["env"]["GH_PRNUM"], "7");
    finish(&node, &runs[0], "PASSED").await;
    let success = wait_for("the success status", 20, async || {
        statuses("success").await.into_iter().next()
    })
    .await;
    assert_eq!(success.json()["target_url"], build_url.as_str());
    assert_eq!(statuses("pending").await.len(), 1, "pending reported once");

    // A comment asking for a retest builds the PR's current head again (read from the API stand-in).
    github.replies.lock().unwrap().insert(
        "/repos/octo/product/pulls/7".into(),
        pull_request(&github.url, &repo.url(), &head, &base),
    );
    let comment = json!({"action": "created", "comment": {"body": "ci-retest please"},
        "issue": {"number": 7, "pull_request": {"url": format!("{}/repos/octo/product/pulls/7", github.url)}}});
    let cbytes = serde_json::to_vec(&comment).unwrap();
    let (s, reply) = deliver(
        &node,
        "issue_comment",
        &comment,
        Some(sign("hook-key-123", &cbytes)),
    )
    .await;
    assert_eq!(s, 201, "{reply}");
    assert_eq!(
        build(&node, "product", 2).await["params"]["GIT_SHA"],
        head.as_str()
    );
    // Other events are acknowledged and ignored.
    let closed = json!({"action": "closed", "pull_request": pull_request(&github.url, &repo.url(), &head, &base)});
    let closed_bytes = serde_json::to_vec(&closed).unwrap();
    assert_eq!(
        deliver(
            &node,
            "pull_request",
            &closed,
            Some(sign("hook-key-123", &closed_bytes))
        )
        .await
        .0,
        200
    );
    assert_eq!(builds(&node, "product").await.len(), 2);
    github.stop().await;
}
