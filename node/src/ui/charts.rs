//! Pictures where people would rather look than read: inline SVG, drawn here (no chart library, no
//! script). A project's last 100 builds (bar height = duration, colour = result) and the queue depth per
//! host tag over the last hour (sampled by this node every 30 s, soft state: a restarted node starts a new
//! hour).
use jobserv_protocol::RunStatus;
use jobserv_raft::model::Build;
use maud::{html, Markup};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

const WIDTH: f64 = 800.0;
const HEIGHT: f64 = 140.0;

fn colour(s: RunStatus) -> &'static str {
    match s {
        RunStatus::Passed => "#1a7f37",
        RunStatus::Failed => "#cf222e",
        RunStatus::Queued => "#9a6700",
        _ => "#0969da",
    }
}

/// Bars of the builds' durations, oldest on the left; a running build's bar grows to now.
pub fn builds(builds: &[Build], now: u64) -> Markup {
    let mut list: Vec<&Build> = builds.iter().take(100).collect();
    list.reverse();
    let dur = |b: &Build| b.completed.unwrap_or(now).saturating_sub(b.created);
    let longest = list.iter().map(|b| dur(b)).max().unwrap_or(0).max(1000);
    let step = WIDTH / 100.0;
    html! {
        svg.chart width=(WIDTH) height=(HEIGHT + 20.0) viewBox={ "0 0 " (WIDTH) " " (HEIGHT + 20.0) }
            role="img" aria-label="Build durations and results" {
            @for (i, b) in list.iter().enumerate() {
                @let h = (dur(b) as f64 / longest as f64 * HEIGHT).max(2.0);
                rect x=(format!("{:.1}", i as f64 * step + 1.0)) y=(format!("{:.1}", HEIGHT - h))
                    width=(format!("{:.1}", step - 2.0)) height=(format!("{h:.1}")) fill=(colour(b.status)) {
                    title { "#" (b.number) " " (b.status.as_str()) " " (super::layout::duration(dur(b))) }
                }
            }
            text x="0" y=(HEIGHT + 15.0) font-size="11" fill="#667085" {
                "last " (list.len()) " builds; longest " (super::layout::duration(longest))
            }
        }
    }
}

/// Queue depth by host tag, one sample every [`QueueHistory::INTERVAL`], the last hour.
#[derive(Default)]
pub struct QueueHistory {
    samples: Mutex<VecDeque<(u64, BTreeMap<String, u64>)>>,
}

impl QueueHistory {
    pub const INTERVAL: Duration = Duration::from_secs(30);
    const KEEP: usize = 120;

    pub fn record(&self, at_ms: u64, depth: BTreeMap<String, u64>) {
        if let Ok(mut s) = self.samples.lock() {
            s.push_back((at_ms, depth));
            while s.len() > Self::KEEP {
                s.pop_front();
            }
        }
    }

    pub fn samples(&self) -> Vec<(u64, BTreeMap<String, u64>)> {
        self.samples
            .lock()
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// Queue depth by host tag now, from this node's applied state.
pub fn depth_now(state: &jobserv_raft::State) -> BTreeMap<String, u64> {
    let mut depth = BTreeMap::new();
    for run in state.queued_runs(100_000).unwrap_or_default() {
        *depth.entry(run.host_tag).or_insert(0) += 1;
    }
    depth
}

/// Samples this node's queue every [`QueueHistory::INTERVAL`] for as long as the process runs.
pub fn spawn_sampler(
    cluster: std::sync::Arc<crate::cluster::Cluster>,
    history: std::sync::Arc<QueueHistory>,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(QueueHistory::INTERVAL);
        loop {
            tick.tick().await;
            history.record(jobserv_raft::state::now_ms(), depth_now(&cluster.state));
        }
    });
}

const PALETTE: [&str; 6] = [
    "#0969da", "#9a6700", "#8250df", "#1a7f37", "#cf222e", "#57606a",
];

/// One line per host tag over the samples (oldest left), with a legend.
pub fn queue(samples: &[(u64, BTreeMap<String, u64>)]) -> Markup {
    let tags: Vec<String> = {
        let mut t: Vec<String> = samples
            .iter()
            .flat_map(|(_, d)| d.keys().cloned())
            .collect();
        t.sort();
        t.dedup();
        t
    };
    let top = samples
        .iter()
        .flat_map(|(_, d)| d.values().copied())
        .max()
        .unwrap_or(0)
        .max(1);
    let n = samples.len().max(2) - 1;
    let x = |i: usize| i as f64 / n as f64 * (WIDTH - 60.0);
    let y = |v: u64| HEIGHT - v as f64 / top as f64 * (HEIGHT - 10.0);
    html! {
        svg.chart width=(WIDTH) height=(HEIGHT + 20.0) viewBox={ "0 0 " (WIDTH) " " (HEIGHT + 20.0) }
            role="img" aria-label="Queue depth by host tag" {
            @for (k, tag) in tags.iter().enumerate() {
                @let points = samples.iter().enumerate()
                    .map(|(i, (_, d))| format!("{:.1},{:.1}", x(i), y(d.get(tag).copied().unwrap_or(0))))
                    .collect::<Vec<_>>().join(" ");
                polyline points=(points) fill="none" stroke=(PALETTE[k % PALETTE.len()]) stroke-width="2" {
                    title { (tag) }
                }
                text x=(WIDTH - 55.0) y=(14.0 + 14.0 * k as f64) font-size="11" fill=(PALETTE[k % PALETTE.len()]) { (tag) }
            }
            text x="0" y=(HEIGHT + 15.0) font-size="11" fill="#667085" {
                "queued runs by host tag, last " (samples.len()) " samples (every 30 s); peak " (top)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_keeps_the_last_hour() {
        let h = QueueHistory::default();
        for i in 0..200u64 {
            h.record(i, BTreeMap::from([("amd64".to_string(), i)]));
        }
        let s = h.samples();
        assert_eq!(s.len(), 120);
        assert_eq!(s[0].0, 80);
        let svg = queue(&s).into_string();
        assert!(svg.contains("<polyline") && svg.contains("amd64") && svg.contains("peak 199"));
    }
}
