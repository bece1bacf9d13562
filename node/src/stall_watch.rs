//! Runtime stall watch: a timer task on each of the node's event loops (the Raft thread's runtime and the
//! actix system's) that measures how late it wakes. A Raft thread busy with synchronous work, or a whole
//! machine starved of CPU, delays heartbeats and votes; past the election timeout (320–400 ms, `raft_config`)
//! a follower campaigns although nothing failed. The figure says which it was: the histogram
//! `jobserv_runtime_lateness_seconds{runtime}` and a warning per stall over `WARN_AFTER`, so that an
//! election nobody caused can be put beside the stalls of the same moment on every node.
use crate::metrics::Metrics;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often each watch wakes.
const TICK: Duration = Duration::from_millis(50);
/// A wake-up this late is logged: one heartbeat tick (openraft sends heartbeats every 1.5 intervals of
/// `raft_config`, 150 ms); a heartbeat 170 ms late starts an election.
const WARN_AFTER: Duration = Duration::from_millis(150);

/// Runs for ever on the current runtime: spawn it there.
pub async fn watch(runtime: &'static str, metrics: Arc<Metrics>) {
    let lateness = metrics.runtime_lateness.with_label_values(&[runtime]);
    loop {
        let asleep = Instant::now();
        tokio::time::sleep(TICK).await;
        let late = asleep.elapsed().saturating_sub(TICK);
        lateness.observe(late.as_secs_f64());
        if late >= WARN_AFTER {
            tracing::warn!(
                runtime,
                late_ms = late.as_millis() as u64,
                "runtime stalled: a timer woke late (synchronous work on this event loop, or no CPU)"
            );
        }
    }
}
