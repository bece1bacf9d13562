//! A run's workspace on the host: the script, the secrets, `/archive`, the git checkout, and the persistent and
//! shared volumes, laid out before the executor starts:
//!
//! ```text
//! <dir>/.jobserv/script   the script (mode 0755), mounted read-only at /.jobserv
//! <dir>/secrets/<name>    one file per secret, mounted read-only at /secrets
//! <dir>/archive/          mounted at /archive; every file in it becomes an artifact
//! <dir>/repo/             the git checkout for git and PR triggers, mounted at /repo (the working directory)
//! <dir>/home/             $HOME for the host executor
//! <data_dir>/volumes/<n>  persistent volume n, kept between runs
//! ```
//!
//! Invariant: `archive/` starts empty, so artifacts are only what this run wrote.
use super::console::Console;
use super::report::RunReporter;
use crate::config::RunnerOptions;
use crate::error::{Result, WorkerError};
use jobserv_protocol::RunDef;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

pub const CONTAINER_SCRIPT_DIR: &str = "/.jobserv";
pub const CONTAINER_SECRETS: &str = "/secrets";
pub const CONTAINER_ARCHIVE: &str = "/archive";
pub const CONTAINER_REPO: &str = "/repo";

/// Trigger types whose runs get the code checked out (`GIT_URL` at `GIT_SHA`).
const GIT_TRIGGERS: &[&str] = &[
    "git_poller",
    "github_pr",
    "gitlab_mr",
    "git",
    "lava_pr",
    "lava_mr",
];

#[derive(Clone, Debug)]
pub struct Workspace {
    pub dir: PathBuf,
    pub script_dir: PathBuf,
    pub script_file: PathBuf,
    /// The script has a `#!` line: it is executed directly, otherwise with `/bin/sh`.
    pub shebang: bool,
    pub secrets_dir: PathBuf,
    pub archive_dir: PathBuf,
    pub repo_dir: Option<PathBuf>,
    pub home_dir: PathBuf,
    /// (host path, container path) for persistent and shared volumes.
    pub volumes: Vec<(PathBuf, String)>,
}

impl Workspace {
    pub async fn prepare<R: RunReporter>(
        rundef: &RunDef,
        dir: &Path,
        opts: &RunnerOptions,
        console: &mut Console<'_, R>,
    ) -> Result<Workspace> {
        let ws = Workspace {
            dir: dir.to_path_buf(),
            script_dir: dir.join(".jobserv"),
            script_file: dir.join(".jobserv").join("script"),
            shebang: false,
            secrets_dir: dir.join("secrets"),
            archive_dir: dir.join("archive"),
            repo_dir: None,
            home_dir: dir.join("home"),
            volumes: Vec::new(),
        };
        let mut ws = ws;
        for d in [&ws.script_dir, &ws.secrets_dir, &ws.home_dir] {
            mkdir(d, 0o755)?;
        }
        if ws.archive_dir.exists() {
            std::fs::remove_dir_all(&ws.archive_dir)
                .map_err(WorkerError::io_path("emptying", &ws.archive_dir))?;
        }
        // World-writable so that a `container-user` other than root can write artifacts.
        mkdir(&ws.archive_dir, 0o777)?;

        for (name, value) in &rundef.secrets {
            if !is_plain_name(name) {
                return Err(WorkerError::RunDef(format!(
                    "secret name {name:?} is not a plain file name"
                )));
            }
            if value.is_empty() {
                console
                    .note(&format!("== warning: secret {name} has no value (removed from a downloaded rundef?)"))
                    .await?;
            }
            let path = ws.secrets_dir.join(name);
            write_file(&path, value.as_bytes(), 0o444)?;
        }

        if let Some(repo) = git_checkout_target(rundef) {
            let repo_dir = dir.join("repo");
            console
                .note(&format!("== checking out {} at {}", repo.0, repo.1))
                .await?;
            clone(&repo.0, Some(&repo.1), &repo_dir, console).await?;
            ws.repo_dir = Some(repo_dir);
        }

        let script = match (&rundef.script, &rundef.script_repo) {
            (Some(script), _) => script.clone(),
            (None, Some(sr)) => {
                let target = dir.join("script-repo");
                let url = with_token(&sr.clone_url, sr.token.as_deref(), rundef);
                console
                    .note(&format!(
                        "== fetching script {} from {}",
                        sr.path, sr.clone_url
                    ))
                    .await?;
                clone(&url, sr.git_ref.as_deref(), &target, console).await?;
                let path = safe_join(&target, &sr.path).ok_or_else(|| {
                    WorkerError::RunDef(format!(
                        "script-repo path {:?} escapes the repository",
                        sr.path
                    ))
                })?;
                std::fs::read_to_string(&path)
                    .map_err(WorkerError::io_path("reading script", &path))?
            }
            (None, None) => {
                return Err(WorkerError::RunDef(
                    "neither script nor script-repo is set".into(),
                ))
            }
        };
        ws.shebang = script.starts_with("#!");
        write_file(&ws.script_file, script.as_bytes(), 0o755)?;

        for (name, container_path) in &rundef.persistent_volumes {
            if !is_plain_name(name) {
                return Err(WorkerError::RunDef(format!(
                    "persistent volume name {name:?} is not a plain name"
                )));
            }
            let host = opts.data_dir.join("volumes").join(name);
            mkdir(&host, 0o777)?;
            ws.volumes.push((host, container_path.clone()));
        }
        for (host, container_path) in &rundef.shared_volumes {
            ws.volumes
                .push((PathBuf::from(host), container_path.clone()));
        }
        Ok(ws)
    }
}

/// `(GIT_URL, GIT_SHA)` when the trigger checks out code.
fn git_checkout_target(rundef: &RunDef) -> Option<(String, String)> {
    if !GIT_TRIGGERS.contains(&rundef.trigger_type.as_str()) {
        return None;
    }
    let url = rundef.env.get("GIT_URL")?;
    let sha = rundef
        .env
        .get("GIT_SHA")
        .cloned()
        .unwrap_or_else(|| "HEAD".to_string());
    Some((url.clone(), sha))
}

/// Puts the first secret named in `token` (`:`-separated names) into an https clone URL.
fn with_token(url: &str, token_names: Option<&str>, rundef: &RunDef) -> String {
    let token = token_names
        .into_iter()
        .flat_map(|names| names.split(':'))
        .find_map(|name| rundef.secrets.get(name.trim()).filter(|v| !v.is_empty()));
    match (token, url.strip_prefix("https://")) {
        (Some(token), Some(rest)) => format!("https://{}@{rest}", token.trim()),
        _ => url.to_string(),
    }
}

/// `git clone` then `git checkout <rev>` (fetching the revision explicitly when the clone lacks it, as for a
/// pull request's head). Output goes to the console, where tokens are masked like every secret.
async fn clone<R: RunReporter>(
    url: &str,
    rev: Option<&str>,
    dest: &Path,
    console: &mut Console<'_, R>,
) -> Result<()> {
    if dest.exists() {
        std::fs::remove_dir_all(dest).map_err(WorkerError::io_path("removing", dest))?;
    }
    let dest_str = dest.to_string_lossy().into_owned();
    git(&["clone", "--quiet", url, &dest_str], None, console).await?;
    if let Some(rev) = rev.filter(|r| !r.is_empty() && *r != "HEAD") {
        if git(&["checkout", "--quiet", rev], Some(dest), console)
            .await
            .is_err()
        {
            git(&["fetch", "--quiet", "origin", rev], Some(dest), console).await?;
            git(&["checkout", "--quiet", "FETCH_HEAD"], Some(dest), console).await?;
        }
    }
    // A container user other than root must be able to build in the checkout.
    make_world_writable(dest);
    Ok(())
}

async fn git<R: RunReporter>(
    args: &[&str],
    cwd: Option<&Path>,
    console: &mut Console<'_, R>,
) -> Result<()> {
    let mut cmd = tokio::process::Command::new("git");
    cmd.args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .kill_on_drop(true);
    if let Some(cwd) = cwd {
        cmd.current_dir(cwd);
    }
    let out = cmd.output().await.map_err(WorkerError::io("running git"))?;
    console.write(&out.stdout).await?;
    console.write(&out.stderr).await?;
    if out.status.success() {
        Ok(())
    } else {
        Err(WorkerError::Git(format!(
            "git {} failed ({})",
            args[0], out.status
        )))
    }
}

fn make_world_writable(dir: &Path) {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let _ = std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777));
        if let Ok(entries) = std::fs::read_dir(&d) {
            for e in entries.flatten() {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    stack.push(e.path());
                }
            }
        }
    }
}

/// A single path component without separators or dots, safe to use as a file or directory name.
pub fn is_plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/') && !name.contains('\0')
}

/// A file-name safe version of a run name (`build-{loop}` values may hold anything).
pub fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// `base/rel` if `rel` stays inside `base` (no absolute path, no `..`).
pub fn safe_join(base: &Path, rel: &str) -> Option<PathBuf> {
    let rel = Path::new(rel);
    if rel.components().all(|c| {
        matches!(
            c,
            std::path::Component::Normal(_) | std::path::Component::CurDir
        )
    }) {
        Some(base.join(rel))
    } else {
        None
    }
}

fn mkdir(path: &Path, mode: u32) -> Result<()> {
    std::fs::create_dir_all(path).map_err(WorkerError::io_path("creating", path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(WorkerError::io_path("setting permissions of", path))
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    if path.exists() {
        // A read-only file left by a previous simulation must not stop us.
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    }
    std::fs::write(path, bytes).map_err(WorkerError::io_path("writing", path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(WorkerError::io_path("setting permissions of", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_joins_are_confined() {
        assert!(is_plain_name("token"));
        assert!(!is_plain_name("../x"));
        assert!(!is_plain_name(".."));
        assert!(safe_join(Path::new("/a"), "ci/build.sh").is_some());
        assert!(safe_join(Path::new("/a"), "../etc/passwd").is_none());
        assert!(safe_join(Path::new("/a"), "/etc/passwd").is_none());
    }
}
