//! `jobserv worker list|enlist|delist`. Enlisting is an admin `PATCH /workers/<name>/ {"enlisted": …}`.
use super::project::list;
use crate::args::WorkerCmd;
use crate::client::seg;
use crate::output::{cell, table};
use crate::{CliError, Ctx, Outcome};
use serde_json::{json, Value};
use std::io::Write;

pub async fn run(ctx: &Ctx, cmd: WorkerCmd, out: &mut dyn Write) -> Result<Outcome, CliError> {
    match cmd {
        WorkerCmd::List => {
            let data = ctx.client.get("/workers/").await?;
            ctx.emit(out, &data, render_list)
        }
        WorkerCmd::Enlist { name } => set_enlisted(ctx, &name, true, out).await,
        WorkerCmd::Delist { name } => set_enlisted(ctx, &name, false, out).await,
    }
}

async fn set_enlisted(
    ctx: &Ctx,
    name: &str,
    enlisted: bool,
    out: &mut dyn Write,
) -> Result<Outcome, CliError> {
    let data = ctx
        .client
        .patch(
            &format!("/workers/{}/", seg(name)),
            &json!({ "enlisted": enlisted }),
        )
        .await?;
    let verb = if enlisted { "enlisted" } else { "delisted" };
    ctx.emit(out, &data, |_| format!("{verb} worker {name}\n"))
}

fn render_list(data: &Value) -> String {
    let rows: Vec<Vec<String>> = list(data, "workers")
        .iter()
        .map(|w| {
            let h = &w["health"];
            let free = if h.is_null() {
                "-".to_string()
            } else {
                format!(
                    "{}/{}",
                    cell(&h["available_runners"]),
                    cell(&w["concurrent_runs"])
                )
            };
            vec![
                cell(&w["name"]),
                cell(&w["enlisted"]),
                cell(&w["online"]),
                free,
                cell(&h["load_avg_1"]),
                cell(&w["host_tags"]),
                cell(&w["distro"]),
                cell(&w["version"]),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "ENLISTED",
            "ONLINE",
            "FREE",
            "LOAD",
            "HOST-TAGS",
            "DISTRO",
            "VERSION",
        ],
        &rows,
    )
}
