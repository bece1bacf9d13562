//! A trigger's project definition read from a repository, as JobServ does: `definition_repo` (else the
//! repository that triggered) and `definition_file` (else `<project>.yml`), at the triggering commit.
use super::git;
use crate::app::App;
use crate::error::ApiError;
use jobserv_raft::model::Trigger;

/// Where the definition of `trigger` lives: the repository URL and the file in it.
pub fn definition_location(
    trigger: &Trigger,
    triggering_repo: Option<&str>,
) -> Option<(String, String)> {
    let repo = trigger
        .definition_repo
        .clone()
        .or_else(|| triggering_repo.map(str::to_string))?;
    let file = trigger
        .definition_file
        .clone()
        .unwrap_or_else(|| format!("{}.yml", trigger.project));
    Some((repo, file))
}

pub fn cache_dir(app: &App) -> std::path::PathBuf {
    app.config
        .triggers
        .git_cache_dir
        .clone()
        .unwrap_or_else(|| app.config.data_dir.join("git-cache"))
}

/// The definition text at `sha` of `repo` (`sha` may be a ref name for the definition repo's HEAD).
pub async fn read_definition(
    app: &App,
    repo: &str,
    file: &str,
    sha: &str,
) -> Result<String, ApiError> {
    match git::read_file_at(&cache_dir(app), repo, sha, file).await {
        Ok(Some(text)) => Ok(text),
        Ok(None) => Err(ApiError::BadRequest(format!(
            "definition_file: {file} does not exist at {sha} of {repo}"
        ))),
        Err(e) => Err(ApiError::Unavailable(format!(
            "reading the definition from {repo}: {e}"
        ))),
    }
}

/// The sha `HEAD` of `repo` points at.
pub async fn head_of(repo: &str) -> Result<String, ApiError> {
    let refs = git::ls_remote(repo)
        .await
        .map_err(|e| ApiError::Unavailable(format!("definition_repo {repo}: {e}")))?;
    refs.into_iter()
        .find(|(name, _)| name == "HEAD")
        .map(|(_, sha)| sha)
        .ok_or_else(|| ApiError::BadRequest(format!("definition_repo {repo} has no HEAD")))
}

/// The definition a build triggered by commit `sha` of `git_url` runs with: read at that commit when the
/// definition lives in the triggering repository, else at the definition repository's HEAD.
pub async fn definition_for_commit(
    app: &App,
    trigger: &Trigger,
    git_url: &str,
    sha: &str,
) -> Result<String, ApiError> {
    let (repo, file) = definition_location(trigger, Some(git_url)).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "trigger {}: definition_repo is not set",
            trigger.id
        ))
    })?;
    let at = if same_repo(&repo, git_url) {
        sha.to_string()
    } else {
        head_of(&repo).await?
    };
    read_definition(app, &repo, &file, &at).await
}

/// `https://host/o/r.git` and `https://host/o/r` name the same repository.
pub fn same_repo(a: &str, b: &str) -> bool {
    let norm = |s: &str| s.trim_end_matches('/').trim_end_matches(".git").to_string();
    norm(a) == norm(b)
}
