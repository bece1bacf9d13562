//! The git CLI, with timeouts, no prompts and no shell: `ls-remote` for polling, and a bare cache
//! repository per remote from which a file is read at a commit (`git show <sha>:<path>`). The cache is
//! soft state: losing it costs one fetch.
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::process::Command;

const GIT_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("git {args}: {message}")]
    Failed { args: String, message: String },
    #[error("git {0}: timed out")]
    Timeout(String),
}

/// Serialises fetches into the cache: concurrent `git fetch` into one repository fight over its locks.
static CACHE_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn git(dir: Option<&Path>, args: &[&str]) -> Result<Vec<u8>, GitError> {
    let mut cmd = Command::new("git");
    if let Some(dir) = dir {
        cmd.arg("-C").arg(dir);
    }
    cmd.args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "true")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let shown = args.join(" ");
    let out = tokio::time::timeout(GIT_TIMEOUT, cmd.output())
        .await
        .map_err(|_| GitError::Timeout(shown.clone()))?
        .map_err(|e| GitError::Failed {
            args: shown.clone(),
            message: e.to_string(),
        })?;
    if !out.status.success() {
        let message = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(GitError::Failed {
            args: shown,
            message,
        });
    }
    Ok(out.stdout)
}

/// `git ls-remote <url>`: every ref of the remote with its sha (peeled tags `^{}` left out).
pub async fn ls_remote(url: &str) -> Result<Vec<(String, String)>, GitError> {
    let out = git(None, &["ls-remote", "--", url]).await?;
    Ok(String::from_utf8_lossy(&out)
        .lines()
        .filter_map(|line| {
            let (sha, name) = line.split_once('\t')?;
            (!name.ends_with("^{}")).then(|| (name.trim().to_string(), sha.trim().to_string()))
        })
        .collect())
}

fn cache_repo(cache_dir: &Path, url: &str) -> PathBuf {
    let digest = hex::encode(Sha256::digest(url.as_bytes()));
    cache_dir.join(format!("{}.git", &digest[..24]))
}

/// The contents of `path` at commit `sha` of the repository at `url`, or `None` if the commit has no
/// such file. Fetches the commit into the cache when it is not there yet.
pub async fn read_file_at(
    cache_dir: &Path,
    url: &str,
    sha: &str,
    path: &str,
) -> Result<Option<String>, GitError> {
    if sha.is_empty() || sha.starts_with('-') || path.starts_with('-') {
        return Err(GitError::Failed {
            args: "show".into(),
            message: format!("bad revision {sha:?} or path {path:?}"),
        });
    }
    let _guard = CACHE_LOCK.lock().await;
    let repo = cache_repo(cache_dir, url);
    if !repo.join("HEAD").exists() {
        std::fs::create_dir_all(&repo).map_err(|e| GitError::Failed {
            args: "init".into(),
            message: e.to_string(),
        })?;
        git(Some(&repo), &["init", "--bare", "--quiet"]).await?;
    }
    let object = format!("{sha}^{{commit}}");
    if git(Some(&repo), &["cat-file", "-e", &object])
        .await
        .is_err()
    {
        // By sha first (protocol v2 serves any reachable commit); else every ref (older servers).
        if git(
            Some(&repo),
            &["fetch", "--quiet", "--no-tags", "--", url, sha],
        )
        .await
        .is_err()
        {
            git(
                Some(&repo),
                &[
                    "fetch",
                    "--quiet",
                    "--no-tags",
                    "--",
                    url,
                    "+refs/*:refs/cache/*",
                ],
            )
            .await?;
        }
    }
    match git(Some(&repo), &["show", &format!("{sha}:{path}")]).await {
        Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
        Err(GitError::Failed { message, .. })
            if message.contains("does not exist")
                || message.contains("exists on disk, but not in") =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Does `name` match one of the comma/space separated globs of `GIT_POLL_REFS`?
pub fn ref_matches(globs: &str, name: &str) -> bool {
    globs
        .split([',', ' ', '\n'])
        .map(str::trim)
        .filter(|g| !g.is_empty())
        .any(|g| glob_match::glob_match(g, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_refs_globs_as_jobserv_writes_them() {
        let globs = "refs/heads/master, refs/heads/v1.7*";
        assert!(ref_matches(globs, "refs/heads/master"));
        assert!(ref_matches(globs, "refs/heads/v1.7-branch"));
        assert!(!ref_matches(globs, "refs/heads/v1.8"));
        assert!(!ref_matches(globs, "refs/tags/master"));
    }
}
