//! Workers, the queue by host tag, and the cluster as this node sees it.
use super::builds::run_href;
use super::layout::{age, duration};
use super::{error_page, Viewer};
use crate::app::App;
use crate::error::ApiError;
use actix_web::{web, HttpResponse};
use maud::{html, Markup};
use std::collections::BTreeMap;
use std::time::Duration;

pub async fn workers(v: Viewer, app: web::Data<App>) -> HttpResponse {
    match workers_body(&app, &v) {
        Ok(body) => v.page("Workers", body),
        Err(e) => error_page(&v, e),
    }
}

fn workers_body(app: &App, v: &Viewer) -> Result<Markup, ApiError> {
    let timeout = Duration::from_secs(app.config.worker_timeout_secs);
    let workers = app.state().workers()?;
    let mut rows = Vec::new();
    for w in &workers {
        let runs = app.state().worker_runs(&w.name)?;
        rows.push((w, runs, app.presence.get(&w.name)));
    }
    Ok(html! {
        h1 { "Workers (" (workers.len()) ")" }
        table {
            thead { tr { th { "Worker" } th { "Online" } th { "Enlisted" } th { "Load" } th { "Runs" } th { "Last check-in" } th { "Host tags" } th { "Version" } } }
            tbody {
                @for (w, runs, health) in &rows {
                    tr data-worker=(w.name) {
                        td { (w.name) }
                        td { @if app.presence.is_online(&w.name, timeout) { "online" } @else { span.muted { "offline" } } }
                        td {
                            (if w.enlisted { "yes" } else { "no" })
                            @if v.session.is_admin() {
                                form method="post" action={ "/ui/workers/" (super::layout::seg(&w.name)) "/" (if w.enlisted { "delist" } else { "enlist" }) } {
                                    input type="hidden" name="csrf" value=(v.csrf);
                                    button type="submit" { (if w.enlisted { "Delist" } else { "Enlist" }) }
                                }
                            }
                        }
                        td { (health.as_ref().and_then(|h| h.load_avg_1).map(|l| format!("{l:.2}")).unwrap_or_else(|| "-".into())) }
                        td {
                            (runs.len()) " / " (w.facts.concurrent_runs)
                            @for r in runs { br; a href=(run_href(r)) { (r.project) " #" (r.build) " " (r.name) } }
                        }
                        td { (health.as_ref().map(|h| format!("{} ago", duration(h.last_seen.elapsed().as_millis() as u64))).unwrap_or_else(|| "not here".into())) }
                        td { (w.facts.host_tags.join(", ")) }
                        td { (w.facts.version) }
                    }
                }
            }
        }
        p.muted { "Online and check-in times are this node's view: a worker checks in with one node at a time." }
    })
}

pub async fn queue(v: Viewer, app: web::Data<App>) -> HttpResponse {
    match queue_body(&app) {
        Ok(body) => v.page("Queue", body),
        Err(e) => error_page(&v, e),
    }
}

/// At most this many queued runs are listed (the counts cover all of them).
const QUEUE_LISTED: usize = 500;

fn queue_body(app: &App) -> Result<Markup, ApiError> {
    let queued = app.state().queued_runs(100_000)?;
    let explainer = crate::api::QueueExplainer::new(app, &queued)?;
    let mut by_tag: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &queued {
        *by_tag.entry(r.host_tag.as_str()).or_default() += 1;
    }
    let mut samples = app.queue_history.samples();
    samples.push((
        jobserv_raft::state::now_ms(),
        super::charts::depth_now(app.state()),
    ));
    Ok(html! {
        h1 { "Queue (" (queued.len()) ")" }
        (super::charts::queue(&samples))
        @if queued.is_empty() { p.muted { "Nothing is waiting." } } @else {
            div.card { @for (tag, n) in &by_tag { span { strong { (tag) } ": " (n) } "  " } }
            table {
                thead { tr { th { "Run" } th { "Host tag" } th { "Why it waits" } th { "Age" } } }
                tbody {
                    @for r in queued.iter().take(QUEUE_LISTED) {
                        tr {
                            td { a href=(run_href(r)) { (r.project) " #" (r.build) " " (r.name) } }
                            td { (r.host_tag) }
                            td { (explainer.reason(r).as_str()) }
                            td { (age(r.created)) }
                        }
                    }
                }
            }
        }
    })
}

pub async fn cluster(v: Viewer, app: web::Data<App>) -> HttpResponse {
    match crate::api::cluster_view(&app).await {
        Ok(c) => v.page("Cluster", cluster_body(&c)),
        Err(e) => error_page(&v, e),
    }
}

fn cell(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "-".into(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn cluster_body(c: &serde_json::Value) -> Markup {
    let empty = Vec::new();
    let nodes = c["nodes"].as_array().unwrap_or(&empty);
    html! {
        h1 { "Cluster" }
        div.card {
            dl.facts {
                dt { "Leader" } dd { (cell(&c["leader"])) }
                dt { "Term" } dd { (cell(&c["term"])) }
                dt { "This node" } dd { (cell(&c["this_node"])) }
                dt { "Raft core" } dd { (cell(&c["health"])) }
                dt { "Last log index" } dd { (cell(&c["last_log_index"])) }
                dt { "Applied index" } dd { (cell(&c["last_applied"])) }
                dt { "Snapshot at" } dd { (cell(&c["snapshot"])) }
                dt { "Storage format" } dd { "v" (cell(&c["storage_format"])) }
                dt { "Artifacts" } dd { (cell(&c["artifacts"]["store"])) ", " (cell(&c["artifacts"]["blobs"])) " blobs, "
                    (cell(&c["artifacts"]["under_replicated"])) " under-replicated" }
            }
        }
        table {
            thead { tr { th { "Node" } th { "URL" } th { "Raft role" } th { "Gossip" } th { "Generation" } th.num { "Log matched" } } }
            tbody {
                @for n in nodes {
                    tr data-node=(cell(&n["id"])) {
                        td { (cell(&n["id"])) }
                        td { (cell(&n["url"])) }
                        td { (cell(&n["raft_role"])) }
                        td { (cell(&n["gossip_state"])) }
                        td { (cell(&n["generation"])) }
                        td.num { (cell(&c["replication"][cell(&n["id"])])) }
                    }
                }
            }
        }
    }
}
