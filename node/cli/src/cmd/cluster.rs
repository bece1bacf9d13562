//! `jobserv cluster status`: `GET /cluster/` (admin) as one node sees it.
use super::project::list;
use crate::args::ClusterCmd;
use crate::output::{cell, table};
use crate::{CliError, Ctx, Outcome};
use serde_json::Value;
use std::io::Write;

pub async fn run(ctx: &Ctx, cmd: ClusterCmd, out: &mut dyn Write) -> Result<Outcome, CliError> {
    match cmd {
        ClusterCmd::Status { stale } => {
            let path = if stale {
                "/cluster/?stale=1"
            } else {
                "/cluster/"
            };
            let data = ctx.client.get(path).await?;
            ctx.emit(out, &data, render_status)
        }
    }
}

fn render_status(data: &Value) -> String {
    let this = &data["this_node"];
    let rows: Vec<Vec<String>> = list(data, "nodes")
        .iter()
        .map(|n| {
            let me = if &n["id"] == this { "*" } else { "" };
            vec![
                format!("{}{me}", cell(&n["id"])),
                cell(&n["raft_role"]),
                cell(&n["gossip_state"]),
                cell(&n["generation"]),
                cell(&n["url"]),
            ]
        })
        .collect();
    let leader = if data["leader"].is_null() {
        "none".to_string()
    } else {
        cell(&data["leader"])
    };
    let head = format!(
        "leader: {leader}  term: {}  answered by: node {}\n",
        cell(&data["term"]),
        cell(this)
    );
    format!(
        "{head}{}",
        table(&["NODE", "ROLE", "GOSSIP", "GENERATION", "URL"], &rows)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn status_marks_the_answering_node_and_a_missing_leader() {
        let data = json!({"leader": null, "term": 4, "this_node": 2, "nodes": [
            {"id": 1, "url": "https://a", "raft_role": "follower", "gossip_state": "dead", "generation": null},
            {"id": 2, "url": "https://b", "raft_role": "follower", "gossip_state": "alive", "generation": 17}]});
        let text = render_status(&data);
        assert!(
            text.starts_with("leader: none  term: 4  answered by: node 2\n"),
            "{text}"
        );
        assert!(text.contains("2*    follower  alive"), "{text}");
    }
}
