//! `jobserv project list|create|show|delete`.
use crate::args::ProjectCmd;
use crate::client::seg;
use crate::output::{cell, fields, table};
use crate::{CliError, Ctx, Outcome};
use serde_json::{json, Value};
use std::io::Write;

pub async fn run(ctx: &Ctx, cmd: ProjectCmd, out: &mut dyn Write) -> Result<Outcome, CliError> {
    match cmd {
        ProjectCmd::List => {
            let data = ctx.client.get("/projects/").await?;
            ctx.emit(out, &data, render_list)
        }
        ProjectCmd::Create { name, synchronous } => {
            let data = ctx
                .client
                .post(
                    "/projects/",
                    &json!({"name": name, "synchronous-builds": synchronous}),
                )
                .await?;
            ctx.emit(out, &data, |d| {
                format!("created project {name}\n{}", render_one(d))
            })
        }
        ProjectCmd::Show { name } => {
            let data = ctx
                .client
                .get(&format!("/projects/{}/", seg(&name)))
                .await?;
            ctx.emit(out, &data, render_one)
        }
        ProjectCmd::Delete { name } => {
            let data = ctx
                .client
                .delete(&format!("/projects/{}/", seg(&name)))
                .await?;
            ctx.emit(out, &data, |_| format!("deleted project {name}\n"))
        }
    }
}

fn render_list(data: &Value) -> String {
    let rows: Vec<Vec<String>> = list(data, "projects")
        .iter()
        .map(|p| {
            vec![
                cell(&p["name"]),
                cell(&p["synchronous-builds"]),
                cell(&p["url"]),
            ]
        })
        .collect();
    table(&["NAME", "SYNCHRONOUS", "URL"], &rows)
}

fn render_one(data: &Value) -> String {
    let p = &data["project"];
    fields(&[
        ("name", cell(&p["name"])),
        ("synchronous-builds", cell(&p["synchronous-builds"])),
        ("url", cell(&p["url"])),
        ("builds", cell(&p["builds_url"])),
    ])
}

/// `data[key]` as a slice; empty when absent.
pub fn list<'a>(data: &'a Value, key: &str) -> &'a [Value] {
    data.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}
