//! GitLab merge requests end to end: `X-Gitlab-Token` must equal the trigger's `webhook-key` (else 401 /
//! 403 and nothing changes); an `open` merge-request event starts a build from the definition in the
//! source repository at the MR's last commit, whose `pending` and `failed` statuses reach a local HTTPS
//! server speaking GitLab's commit-status API.
mod common;
mod triggers_support;
use common::*;
use serde_json::{json, Value};
use triggers_support::*;

const DEFINITION: &str = r#"
timeout: 5
triggers:
  - name: mr
    type: gitlab_mr
    runs:
      - name: mr-check
        container: busybox:latest
        host-tag: amd64
        script: check
scripts:
  check: |
    #!/bin/sh -e
    echo "checking $GIT_SHA"
"#;

async fn deliver(node: &TestNode, body: &Value, token: Option<&str>) -> (u16, Value) {
    let mut req = node
        .client
        .post(node.u("/gitlab/product/"))
        .header("X-Gitlab-Event", "Merge Request Hook")
        .json(body);
    if let Some(t) = token {
        req = req.header("X-Gitlab-Token", t);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[actix_web::test]
async fn a_merge_request_event_builds_and_reports_statuses_and_a_bad_token_changes_nothing() {
    let dir = tempdir();
    let repo = GitRepo::new(dir.path(), "product");
    repo.commit_and_push("main", &[("product.yml", DEFINITION)], "base");
    let head = repo.commit_and_push("feature", &[("code.c", "int main;")], "the change");
    let config = node_config(dir.path(), free_port());
    let gitlab = StandIn::start(Some((&config.tls_cert, &config.tls_key)));
    let node = TestNode::start_with(config).await;
    assert_eq!(
        node.post("/projects/", json!({"name": "product"})).await.0,
        201
    );
    let (s, body) = node
        .post("/projects/product/triggers/", json!({"type": "gitlab_mr", "secrets": [
            {"name": "webhook-key", "value": "gl-hook-key"}, {"name": "gitlabtok", "value": "gl-token"}]}))
        .await;
    assert_eq!(s, 201, "{body}");
    let event = json!({
        "object_kind": "merge_request",
        "project": {"web_url": format!("{}/octo/product", gitlab.url)},
        "object_attributes": {"action": "open", "iid": 3, "target_project_id": 42, "last_commit": {"id": head},
            "source": {"git_http_url": repo.url()}, "target": {"git_http_url": repo.url()}}
    });
    assert_eq!(deliver(&node, &event, None).await.0, 401);
    assert_eq!(deliver(&node, &event, Some("gl-hook-kez")).await.0, 403);
    assert!(builds(&node, "product").await.is_empty());

    let (s, reply) = deliver(&node, &event, Some("gl-hook-key")).await;
    assert_eq!(s, 201, "{reply}");
    let b = build(&node, "product", 1).await;
    assert_eq!(
        (
            b["trigger_type"].as_str(),
            b["params"]["GL_MR"].as_str(),
            b["params"]["GIT_SHA"].as_str()
        ),
        (Some("gitlab_mr"), Some("3"), Some(head.as_str()))
    );

    let path = format!("/api/v4/projects/42/statuses/{head}");
    let status = async |state: &str| {
        gitlab
            .requests()
            .into_iter()
            .find(|r| r.path == path && r.json()["state"] == state)
    };
    let pending = wait_for("the pending status", 20, async || status("pending").await).await;
    assert_eq!(pending.headers["private-token"], "gl-token");
    assert_eq!(pending.json()["target_url"], b["url"]);
    register_and_enlist(&node, "w1").await;
    let runs = take_runs(&node, "w1", &["mr-check"]).await;
    finish(&node, &runs[0], "FAILED").await;
    wait_for("the failed status", 20, async || status("failed").await).await;
    gitlab.stop().await;
}
