//! `jobserv build create|list|show|follow|promote`. A definition given to `create` is checked locally with the
//! server's parser first, so a typo is reported with its line/column before any build number is used up.
use super::project::list;
use crate::args::{BuildCmd, NewBuild};
use crate::client::seg;
use crate::output::{cell, duration, fields, table, time};
use crate::progress::{follow_build, run_states};
use crate::{CliError, Client, Ctx, Outcome};
use jobserv_protocol::project::parse_project;
use serde_json::{json, Value};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

pub async fn run(ctx: &Ctx, cmd: BuildCmd, out: &mut dyn Write) -> Result<Outcome, CliError> {
    match cmd {
        BuildCmd::Create(b) => create(ctx, b, out).await,
        BuildCmd::List { project, limit } => {
            let data = ctx
                .client
                .get(&format!(
                    "/projects/{}/builds/?limit={limit}",
                    seg(&project)
                ))
                .await?;
            ctx.emit(out, &data, render_list)
        }
        BuildCmd::Show { project, build } => {
            let data = ctx.client.get(&build_path(&project, &build)?).await?;
            ctx.emit(out, &data, |d| render_build(&d["build"]))
        }
        BuildCmd::Follow {
            project,
            build,
            interval,
        } => {
            let number = build_number(&ctx.client, &project, &build).await?;
            follow_build(&ctx.client, &project, number, poll_interval(interval)?, out).await
        }
        BuildCmd::Promote {
            project,
            build,
            name,
            annotation,
        } => {
            let path = format!(
                "/projects/{}/builds/{}/promote",
                seg(&project),
                build_ref(&build)?
            );
            let data = ctx
                .client
                .post(&path, &json!({"name": name, "annotation": annotation}))
                .await?;
            ctx.emit(out, &data, |d| {
                format!(
                    "promoted build {} of {project} as {name}\n",
                    cell(&d["build"]["build_id"])
                )
            })
        }
    }
}

async fn create(ctx: &Ctx, b: NewBuild, out: &mut dyn Write) -> Result<Outcome, CliError> {
    let definition = match &b.definition {
        Some(path) => Some(checked_definition(path, &b.trigger)?),
        None => None,
    };
    let mut body = json!({
        "trigger-name": b.trigger,
        "params": b.params.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
        "secrets": super::secrets(&b.secrets, &b.secret_files)?,
    });
    if let Some(d) = definition {
        body["project-definition"] = json!(d);
    }
    if let Some(r) = &b.reason {
        body["reason"] = json!(r);
    }
    if let Some(p) = b.queue_priority {
        body["queue-priority"] = json!(p);
    }
    let data = ctx
        .client
        .post(&format!("/projects/{}/builds/", seg(&b.project)), &body)
        .await?;
    let number = data["build_id"].as_u64().ok_or_else(|| CliError::Reply {
        url: ctx.client.current_server().to_string(),
        message: format!("no build_id in {data}"),
    })?;
    ctx.emit(out, &data, |d| {
        format!("build {number}: {}\n", cell(&d["url"]))
    })?;
    if !b.follow {
        return Ok(Outcome::Success);
    }
    out.flush()?;
    follow_build(&ctx.client, &b.project, number, Duration::from_secs(1), out).await
}

/// The file's text, once it parses and has the trigger asked for.
fn checked_definition(path: &Path, trigger: &str) -> Result<String, CliError> {
    let text = super::read_text(path)?;
    let def = parse_project(&text).map_err(|e| CliError::Definition {
        path: path.display().to_string(),
        issues: e.issues(),
    })?;
    if def.trigger(trigger).is_none() {
        let names: Vec<&str> = def.triggers.iter().map(|t| t.name.as_str()).collect();
        return Err(CliError::Usage(format!(
            "--trigger {trigger}: {} has no such trigger (it has: {})",
            path.display(),
            names.join(", ")
        )));
    }
    Ok(text)
}

/// A build number or `latest`, as the API takes it.
pub fn build_ref(s: &str) -> Result<&str, CliError> {
    if s == "latest" || s.parse::<u64>().is_ok() {
        Ok(s)
    } else {
        Err(CliError::Usage(format!(
            "build {s:?}: expected a build number or \"latest\""
        )))
    }
}

/// `GET` path of build `s`. On the CLI `latest` is the newest build whatever its status (`?all=1`); the
/// API's bare `latest` is JobServ's newest PASSED build.
fn build_path(project: &str, s: &str) -> Result<String, CliError> {
    let b = build_ref(s)?;
    let query = if b == "latest" { "?all=1" } else { "" };
    Ok(format!("/projects/{}/builds/{b}/{query}", seg(project)))
}

/// The number of build `s`, asking the server what `latest` is.
pub async fn build_number(client: &Client, project: &str, s: &str) -> Result<u64, CliError> {
    if let Ok(n) = s.parse::<u64>() {
        return Ok(n);
    }
    let data = client.get(&build_path(project, s)?).await?;
    data["build"]["build_id"]
        .as_u64()
        .ok_or_else(|| CliError::Reply {
            url: client.current_server().to_string(),
            message: format!("no build_id in {data}"),
        })
}

fn poll_interval(seconds: f64) -> Result<Duration, CliError> {
    if !(0.05..=3600.0).contains(&seconds) {
        return Err(CliError::Usage(format!(
            "--interval {seconds}: must be 0.05 to 3600 seconds"
        )));
    }
    Ok(Duration::from_secs_f64(seconds))
}

fn render_list(data: &Value) -> String {
    let rows: Vec<Vec<String>> = list(data, "builds")
        .iter()
        .map(|b| {
            vec![
                cell(&b["build_id"]),
                cell(&b["status"]),
                cell(&b["trigger_name"]),
                time(&b["created"]),
                duration(&b["created"], &b["completed"]),
                cell(&b["reason"]),
            ]
        })
        .collect();
    table(
        &["BUILD", "STATUS", "TRIGGER", "CREATED", "TOOK", "REASON"],
        &rows,
    )
}

fn render_build(b: &Value) -> String {
    let mut head = vec![
        ("build", cell(&b["build_id"])),
        ("project", cell(&b["project"])),
        ("status", cell(&b["status"])),
        (
            "trigger",
            format!(
                "{} ({})",
                cell(&b["trigger_name"]),
                cell(&b["trigger_type"])
            ),
        ),
        ("reason", cell(&b["reason"])),
        ("created", time(&b["created"])),
        ("completed", time(&b["completed"])),
        ("url", cell(&b["url"])),
    ];
    if !b["name"].is_null() {
        head.push((
            "promoted",
            format!("{} {}", cell(&b["name"]), cell(&b["annotation"])),
        ));
    }
    let runs = list(b, "runs");
    let details = run_states(b);
    let rows: Vec<Vec<String>> = runs
        .iter()
        .zip(details)
        .map(|(r, s)| {
            vec![
                s.name,
                s.status,
                cell(&r["worker"]),
                cell(&r["host_tag"]),
                duration(&r["started"], &r["completed"]),
                s.detail.unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    format!(
        "{}\n{}",
        fields(&head),
        table(
            &["RUN", "STATUS", "WORKER", "HOST-TAG", "TOOK", "DETAIL"],
            &rows
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_refs_are_numbers_or_latest() {
        assert!(build_ref("12").is_ok());
        assert!(build_ref("latest").is_ok());
        assert!(matches!(build_ref("../x"), Err(CliError::Usage(_))));
    }

    #[test]
    fn build_view_lists_runs_with_reasons() {
        let b = json!({"build_id": 1, "status": "QUEUED", "trigger_name": "manual", "trigger_type": "simple",
                       "runs": [{"name": "unit", "status": "QUEUED", "host_tag": "amd64", "queue_reason": "no_matching_worker"}]});
        let text = render_build(&b);
        assert!(text.contains("unit  QUEUED  -       amd64"), "{text}");
        assert!(text.contains("no_matching_worker"), "{text}");
    }
}
