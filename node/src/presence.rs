//! Soft state about workers: when each last checked in on this node and the health it reported. Never
//! replicated through Raft (a check-in that hands out nothing is not a write); lost on restart, which is
//! why a restarted node gives every worker a fresh grace period.
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

#[derive(Clone, Debug, serde::Serialize)]
pub struct WorkerHealth {
    #[serde(skip)]
    pub last_seen: Instant,
    pub load_avg_1: Option<f64>,
    pub mem_free: Option<u64>,
    pub disk_free: Option<u64>,
    pub available_runners: u32,
}

pub struct Presence {
    started: Instant,
    workers: Mutex<HashMap<String, WorkerHealth>>,
}

impl Default for Presence {
    fn default() -> Self {
        Presence {
            started: Instant::now(),
            workers: Mutex::new(HashMap::new()),
        }
    }
}

impl Presence {
    pub fn seen(&self, name: &str, health: WorkerHealth) {
        if let Ok(mut map) = self.workers.lock() {
            map.insert(name.to_string(), health);
        }
    }

    pub fn get(&self, name: &str) -> Option<WorkerHealth> {
        self.workers.lock().ok()?.get(name).cloned()
    }

    /// Seconds since the worker was last seen (or since this node started, if never).
    pub fn silent_for(&self, name: &str) -> std::time::Duration {
        match self.get(name) {
            Some(h) => h.last_seen.elapsed(),
            None => self.started.elapsed(),
        }
    }

    /// Workers seen within `window`, with their last check-in in ms since the epoch (for gossip).
    pub fn seen_within(
        &self,
        window: std::time::Duration,
    ) -> std::collections::HashMap<String, u64> {
        let now_ms = jobserv_raft::state::now_ms();
        let Ok(map) = self.workers.lock() else {
            return Default::default();
        };
        map.iter()
            .filter(|(_, h)| h.last_seen.elapsed() < window)
            .map(|(name, h)| {
                (
                    name.clone(),
                    now_ms.saturating_sub(h.last_seen.elapsed().as_millis() as u64),
                )
            })
            .collect()
    }

    pub fn is_online(&self, name: &str, timeout: std::time::Duration) -> bool {
        self.get(name)
            .is_some_and(|h| h.last_seen.elapsed() < timeout)
    }
}
