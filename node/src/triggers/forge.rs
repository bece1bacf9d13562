//! GitHub and GitLab: webhook events in (signature checks, event → build parameters) and commit
//! statuses out. The status URL comes from the event itself (`pull_request.statuses_url`, GitLab's
//! project API URL), as JobServ does, and is kept in the build's params (`GH_STATUS_URL`,
//! `GL_STATUS_URL`), so reporting needs nothing but the build; the token is the trigger's secret
//! (`githubtok`, `gitlabtok`), carried in the build's secrets.
use crate::auth::constant_time_eq;
use hmac::{Hmac, Mac};
use jobserv_protocol::RunStatus;
use jobserv_raft::model::Build;
use serde_json::Value;
use sha2::Sha256;
use std::collections::BTreeMap;

/// The secret holding the key GitHub signs with / GitLab sends in `X-Gitlab-Token`.
pub const WEBHOOK_KEY: &str = "webhook-key";
pub const GITHUB_TOKEN: &str = "githubtok";
pub const GITLAB_TOKEN: &str = "gitlabtok";

/// `X-Hub-Signature-256: sha256=<hex>` over the raw body, compared in constant time.
pub fn github_signature_ok(key: &str, body: &[u8], header: &str) -> bool {
    let Some(hex_sig) = header.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig.trim()) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key.as_bytes()) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

pub fn gitlab_token_ok(key: &str, header: &str) -> bool {
    constant_time_eq(key, header)
}

/// A pull/merge request at a commit: what a build gets.
#[derive(Debug, Clone)]
pub struct PrEvent {
    pub git_url: String,
    pub sha: String,
    pub params: BTreeMap<String, String>,
    pub reason: String,
}

/// What a webhook asks for.
#[derive(Debug)]
pub enum ForgeAction {
    Build(PrEvent),
    /// A comment asked to test the pull request again: its current head is at this API URL.
    Retest {
        pull_url: String,
    },
    Ignore(String),
}

fn s(v: &Value, path: &[&str]) -> Result<String, String> {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    match cur {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        _ => Err(format!("event field {} is missing", path.join("."))),
    }
}

/// Comments that ask for a re-run (JobServ answers `ci-retest`; `jobserv: retest` reads better).
fn asks_retest(comment: &str) -> bool {
    let c = comment.trim().to_lowercase();
    c.contains("ci-retest") || c.contains("jobserv: retest") || c.contains("jobserv retest")
}

/// A GitHub event (`X-GitHub-Event`) → what to do.
pub fn github_action(event: &str, body: &Value) -> Result<ForgeAction, String> {
    match event {
        "pull_request" => {
            let action = body["action"].as_str().unwrap_or_default();
            if !matches!(action, "opened" | "synchronize" | "reopened") {
                return Ok(ForgeAction::Ignore(format!(
                    "pull_request action {action:?}"
                )));
            }
            github_pr(&body["pull_request"], &format!("pull request {action}"))
                .map(ForgeAction::Build)
        }
        "issue_comment" => {
            let is_pr = !body["issue"]["pull_request"].is_null();
            if body["action"].as_str() != Some("created")
                || !is_pr
                || !asks_retest(body["comment"]["body"].as_str().unwrap_or_default())
            {
                return Ok(ForgeAction::Ignore(
                    "comment does not ask for a retest".into(),
                ));
            }
            Ok(ForgeAction::Retest {
                pull_url: s(body, &["issue", "pull_request", "url"])?,
            })
        }
        "ping" => Ok(ForgeAction::Ignore("ping".into())),
        other => Ok(ForgeAction::Ignore(format!("event {other:?}"))),
    }
}

/// A pull request object (from an event or `GET /repos/o/r/pulls/N`) → build parameters.
pub fn github_pr(pr: &Value, reason: &str) -> Result<PrEvent, String> {
    let sha = s(pr, &["head", "sha"])?;
    let git_url = s(pr, &["head", "repo", "clone_url"])?;
    let mut params = BTreeMap::new();
    params.insert(
        "GH_OWNER".into(),
        s(pr, &["base", "repo", "owner", "login"])?,
    );
    params.insert("GH_REPO".into(), s(pr, &["base", "repo", "name"])?);
    params.insert("GH_PRNUM".into(), s(pr, &["number"])?);
    params.insert("GH_STATUS_URL".into(), s(pr, &["statuses_url"])?);
    params.insert(
        "GH_TARGET_REPO".into(),
        s(pr, &["base", "repo", "clone_url"])?,
    );
    params.insert("GIT_URL".into(), git_url.clone());
    params.insert("GIT_SHA".into(), sha.clone());
    params.insert("GIT_OLD_SHA".into(), s(pr, &["base", "sha"])?);
    let reason = format!("GitHub PR #{}: {reason}", params["GH_PRNUM"]);
    Ok(PrEvent {
        git_url,
        sha,
        params,
        reason,
    })
}

/// A GitLab event (`X-Gitlab-Event`, `object_kind`) → what to do.
pub fn gitlab_action(body: &Value) -> Result<ForgeAction, String> {
    match body["object_kind"].as_str().unwrap_or_default() {
        "merge_request" => {
            let attrs = &body["object_attributes"];
            let action = attrs["action"].as_str().unwrap_or_default();
            // `update` also fires for title edits: only new commits (an `oldrev`) are worth a build.
            let builds = matches!(action, "open" | "reopen")
                || (action == "update" && attrs["oldrev"].is_string());
            if !builds {
                return Ok(ForgeAction::Ignore(format!(
                    "merge_request action {action:?}"
                )));
            }
            gitlab_mr(body, action).map(ForgeAction::Build)
        }
        "note" => Ok(ForgeAction::Ignore("notes are not handled yet".into())),
        other => Ok(ForgeAction::Ignore(format!("event {other:?}"))),
    }
}

fn gitlab_mr(body: &Value, action: &str) -> Result<PrEvent, String> {
    let attrs = &body["object_attributes"];
    let sha = s(attrs, &["last_commit", "id"])?;
    let git_url = s(attrs, &["source", "git_http_url"])?;
    let web_url = s(body, &["project", "web_url"])?;
    let project_id = s(attrs, &["target_project_id"])?;
    // https://host/group/repo → https://host/api/v4/projects/<id>/statuses/<sha>
    let origin = match web_url.find("://").map(|i| i + 3) {
        Some(start) => match web_url[start..].find('/') {
            Some(end) => web_url[..start + end].to_string(),
            None => web_url.clone(),
        },
        None => return Err(format!("project.web_url {web_url:?} is not a URL")),
    };
    let mut params = BTreeMap::new();
    params.insert("GL_MR".into(), s(attrs, &["iid"])?);
    params.insert(
        "GL_STATUS_URL".into(),
        format!("{origin}/api/v4/projects/{project_id}/statuses/{sha}"),
    );
    params.insert(
        "GL_TARGET_REPO".into(),
        s(attrs, &["target", "git_http_url"])?,
    );
    params.insert("GIT_URL".into(), git_url.clone());
    params.insert("GIT_SHA".into(), sha.clone());
    params.insert(
        "GIT_OLD_SHA".into(),
        attrs["oldrev"].as_str().unwrap_or_default().to_string(),
    );
    let reason = format!("GitLab MR !{}: {action}", params["GL_MR"]);
    Ok(PrEvent {
        git_url,
        sha,
        params,
        reason,
    })
}

/// Where and how a build reports its commit status.
pub struct StatusTarget {
    gitlab: bool,
    url: String,
    token: Option<String>,
    context: String,
}

impl StatusTarget {
    pub fn of(build: &Build) -> Option<StatusTarget> {
        let context = format!("jobserv/{}", build.trigger_name);
        if let Some(url) = build.params.get("GH_STATUS_URL") {
            return Some(StatusTarget {
                gitlab: false,
                url: url.clone(),
                token: build.secrets.get(GITHUB_TOKEN).cloned(),
                context,
            });
        }
        let url = build.params.get("GL_STATUS_URL")?;
        Some(StatusTarget {
            gitlab: true,
            url: url.clone(),
            token: build.secrets.get(GITLAB_TOKEN).cloned(),
            context,
        })
    }

    /// Posts the status (`RUNNING`/`QUEUED` report as pending), retrying a little on failure.
    pub async fn report(
        &self,
        client: &reqwest::Client,
        status: RunStatus,
        build_url: &str,
    ) -> Result<(), String> {
        let (state, description) = match (status, self.gitlab) {
            (RunStatus::Passed | RunStatus::Promoted, false) => ("success", "build passed"),
            (RunStatus::Passed | RunStatus::Promoted, true) => ("success", "build passed"),
            (RunStatus::Failed, false) => ("failure", "build failed"),
            (RunStatus::Failed, true) => ("failed", "build failed"),
            _ => ("pending", "build in progress"),
        };
        let body = if self.gitlab {
            serde_json::json!({"state": state, "target_url": build_url, "description": description, "name": self.context})
        } else {
            serde_json::json!({"state": state, "target_url": build_url, "description": description, "context": self.context})
        };
        let mut last = String::new();
        for attempt in 0..3u64 {
            if attempt > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(500 * attempt)).await;
            }
            let mut req = client.post(&self.url).json(&body);
            if let Some(token) = &self.token {
                req = if self.gitlab {
                    req.header("PRIVATE-TOKEN", token)
                } else {
                    req.header("Authorization", format!("token {token}"))
                };
            }
            if !self.gitlab {
                req = req.header("Accept", "application/vnd.github+json");
            }
            match req.send().await {
                Ok(r) if r.status().is_success() => return Ok(()),
                Ok(r) => last = format!("HTTP {}", r.status()),
                Err(e) => last = e.to_string(),
            }
        }
        Err(format!("reporting {state} to {}: {last}", self.url))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn github_signature_is_checked_over_the_raw_body() {
        let body = br#"{"zen":"x"}"#;
        let mut mac = Hmac::<Sha256>::new_from_slice(b"key").unwrap();
        mac.update(body);
        let good = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert!(github_signature_ok("key", body, &good));
        assert!(!github_signature_ok("other", body, &good));
        assert!(!github_signature_ok("key", b"{}", &good));
        assert!(!github_signature_ok("key", body, "sha1=abc"));
    }

    #[test]
    fn gitlab_status_url_is_derived_from_the_project() {
        let body = serde_json::json!({
            "object_kind": "merge_request",
            "project": {"web_url": "https://gitlab.example.com/group/repo"},
            "object_attributes": {"action": "open", "iid": 7, "target_project_id": 42,
                "last_commit": {"id": "abc"}, "source": {"git_http_url": "https://g/s.git"},
                "target": {"git_http_url": "https://g/t.git"}}
        });
        let ForgeAction::Build(ev) = gitlab_action(&body).unwrap() else {
            panic!("expected a build")
        };
        assert_eq!(
            ev.params["GL_STATUS_URL"],
            "https://gitlab.example.com/api/v4/projects/42/statuses/abc"
        );
        assert_eq!(ev.params["GL_MR"], "7");
    }
}
