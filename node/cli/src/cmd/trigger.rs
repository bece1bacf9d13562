//! `jobserv trigger list|create`. Secrets are write-only: the server lists only their names.
use super::project::list;
use crate::args::{NewTrigger, TriggerCmd};
use crate::client::seg;
use crate::output::{cell, table};
use crate::{CliError, Ctx, Outcome};
use serde_json::{json, Value};
use std::io::Write;

pub async fn run(ctx: &Ctx, cmd: TriggerCmd, out: &mut dyn Write) -> Result<Outcome, CliError> {
    match cmd {
        TriggerCmd::List { project } => {
            let data = ctx
                .client
                .get(&format!("/projects/{}/triggers/", seg(&project)))
                .await?;
            ctx.emit(out, &data, render_list)
        }
        TriggerCmd::Create(t) => {
            let body = trigger_body(&t)?;
            let data = ctx
                .client
                .post(&format!("/projects/{}/triggers/", seg(&t.project)), &body)
                .await?;
            ctx.emit(out, &data, |d| {
                format!(
                    "created trigger {} ({}) of project {}\n",
                    cell(&d["id"]),
                    t.trigger_type,
                    t.project
                )
            })
        }
    }
}

fn trigger_body(t: &NewTrigger) -> Result<Value, CliError> {
    let secrets: Vec<Value> = super::secrets(&t.secrets, &t.secret_files)?
        .into_iter()
        .map(|(name, value)| json!({"name": name, "value": value}))
        .collect();
    let mut body = json!({"type": t.trigger_type, "secrets": secrets});
    let optional = [
        ("owner", t.owner.clone().map(Value::from)),
        (
            "definition_repo",
            t.definition_repo.clone().map(Value::from),
        ),
        (
            "definition_file",
            t.definition_file.clone().map(Value::from),
        ),
        ("queue_priority", t.queue_priority.map(Value::from)),
    ];
    for (key, value) in optional {
        if let Some(v) = value {
            body[key] = v;
        }
    }
    Ok(body)
}

fn render_list(data: &Value) -> String {
    let rows: Vec<Vec<String>> = list(data, "triggers")
        .iter()
        .map(|t| {
            vec![
                cell(&t["id"]),
                cell(&t["type"]),
                cell(&t["owner"]),
                cell(&t["definition_repo"]),
                cell(&t["definition_file"]),
                cell(&t["queue_priority"]),
                cell(&t["secrets"]),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "TYPE",
            "OWNER",
            "DEFINITION-REPO",
            "DEFINITION-FILE",
            "PRIORITY",
            "SECRETS",
        ],
        &rows,
    )
}
