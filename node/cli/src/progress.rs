//! The progress view of a build being waited for (`build follow`, `build create --follow`): the build is
//! polled, and a line such as `[build 3] unit: RUNNING, lint-a: QUEUED (no_matching_worker)` is printed
//! whenever any run's status (or the reason it waits or failed) changes. The view ends when the build reaches
//! a terminal state; PASSED and PROMOTED count as passed.
//!
//! Polling survives the loss of a node: the client fails over to the next URL, and if none answers the
//! view keeps retrying (with a note on stderr) for [`GIVE_UP_AFTER`] before giving up.
use super::client::{seg, Client};
use super::error::CliError;
use super::Outcome;
use jobserv_protocol::RunStatus;
use serde_json::Value;
use std::io::Write;
use std::time::{Duration, Instant};

/// How long the whole cluster may be unreachable while following before the CLI gives up.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(120);

/// The part of a run that the progress line shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunState {
    pub name: String,
    pub status: String,
    /// Why a QUEUED run waits, or why a FAILED one failed.
    pub detail: Option<String>,
}

/// The runs of a build's JSON (`GET …/builds/<n>/`, `data.build`), in the server's order.
pub fn run_states(build: &Value) -> Vec<RunState> {
    let runs = build
        .get("runs")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    runs.iter().map(run_state).collect()
}

fn run_state(run: &Value) -> RunState {
    let text = |key: &str| run.get(key).and_then(Value::as_str).map(str::to_string);
    let status = text("status").unwrap_or_else(|| "?".to_string());
    let detail = match status.as_str() {
        "QUEUED" => text("queue_reason"),
        "FAILED" => text("failure_reason"),
        _ => None,
    };
    RunState {
        name: text("name").unwrap_or_else(|| "?".to_string()),
        status,
        detail,
    }
}

pub fn progress_line(number: u64, runs: &[RunState]) -> String {
    let parts: Vec<String> = runs
        .iter()
        .map(|r| match &r.detail {
            Some(d) => format!("{}: {} ({d})", r.name, r.status),
            None => format!("{}: {}", r.name, r.status),
        })
        .collect();
    if parts.is_empty() {
        return format!("[build {number}] no runs yet");
    }
    format!("[build {number}] {}", parts.join(", "))
}

/// The build's status once it is terminal.
pub fn terminal_status(build: &Value) -> Option<RunStatus> {
    let status: RunStatus = build.get("status")?.as_str()?.parse().ok()?;
    status.is_complete().then_some(status)
}

/// Remembers the last line printed so that only changes are shown.
#[derive(Debug, Default)]
pub struct Tracker {
    last: Option<String>,
}

impl Tracker {
    /// The line to print for this poll, if anything changed since the last one.
    pub fn update(&mut self, number: u64, build: &Value) -> Option<String> {
        let line = progress_line(number, &run_states(build));
        if self.last.as_ref() == Some(&line) {
            return None;
        }
        self.last = Some(line.clone());
        Some(line)
    }
}

/// Polls the build every `interval` until it completes; [`Outcome::Success`] only if it passed.
pub async fn follow_build(
    client: &Client,
    project: &str,
    number: u64,
    interval: Duration,
    out: &mut dyn Write,
) -> Result<Outcome, CliError> {
    let path = format!("/projects/{}/builds/{number}/", seg(project));
    let mut tracker = Tracker::default();
    let mut unreachable_since: Option<Instant> = None;
    loop {
        match client.get(&path).await {
            Ok(data) => {
                unreachable_since = None;
                let build = &data["build"];
                if let Some(line) = tracker.update(number, build) {
                    writeln!(out, "{line}")?;
                    out.flush()?;
                }
                if let Some(status) = terminal_status(build) {
                    writeln!(out, "[build {number}] {status}")?;
                    let passed = matches!(status, RunStatus::Passed | RunStatus::Promoted);
                    return Ok(if passed {
                        Outcome::Success
                    } else {
                        Outcome::NotPassed
                    });
                }
            }
            Err(e @ (CliError::Unreachable { .. } | CliError::Transport { .. })) => {
                let since = *unreachable_since.get_or_insert_with(Instant::now);
                if since.elapsed() > GIVE_UP_AFTER {
                    return Err(e);
                }
                eprintln!("jobserv: {e} (retrying)");
            }
            Err(e) => return Err(e),
        }
        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn build(runs: Value, status: &str) -> Value {
        json!({"build_id": 3, "status": status, "runs": runs})
    }

    #[test]
    fn line_shows_queue_and_failure_reasons() {
        let b = build(
            json!([{"name": "unit", "status": "RUNNING"}, {"name": "lint-a", "status": "QUEUED", "queue_reason": "no_matching_worker"},
                   {"name": "lint-b", "status": "FAILED", "failure_reason": "worker lost"}]),
            "RUNNING",
        );
        assert_eq!(progress_line(3, &run_states(&b)), "[build 3] unit: RUNNING, lint-a: QUEUED (no_matching_worker), lint-b: FAILED (worker lost)");
    }

    #[test]
    fn tracker_prints_only_changes() {
        let mut t = Tracker::default();
        let queued = build(json!([{"name": "unit", "status": "QUEUED"}]), "QUEUED");
        let running = build(json!([{"name": "unit", "status": "RUNNING"}]), "RUNNING");
        assert!(t.update(3, &queued).is_some());
        assert!(t.update(3, &queued).is_none());
        assert_eq!(
            t.update(3, &running).as_deref(),
            Some("[build 3] unit: RUNNING")
        );
    }

    #[test]
    fn only_terminal_statuses_end_the_view() {
        assert_eq!(terminal_status(&build(json!([]), "RUNNING")), None);
        assert_eq!(
            terminal_status(&build(json!([]), "FAILED")),
            Some(RunStatus::Failed)
        );
        assert_eq!(
            terminal_status(&build(json!([]), "PROMOTED")),
            Some(RunStatus::Promoted)
        );
        assert_eq!(terminal_status(&json!({})), None);
    }
}
