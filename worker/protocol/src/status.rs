//! Run and build states, as JobServ names them on the wire.
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// `QUEUED → RUNNING → UPLOADING → PASSED | FAILED`, plus `CANCELLING`; `PROMOTED` is a build-only state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RunStatus {
    Queued,
    Running,
    Uploading,
    Passed,
    Failed,
    Cancelling,
    Promoted,
}

impl RunStatus {
    pub const ALL: [RunStatus; 7] = [
        RunStatus::Queued,
        RunStatus::Running,
        RunStatus::Uploading,
        RunStatus::Passed,
        RunStatus::Failed,
        RunStatus::Cancelling,
        RunStatus::Promoted,
    ];

    /// A terminal state never changes again (except by an explicit rerun).
    pub fn is_complete(self) -> bool {
        matches!(
            self,
            RunStatus::Passed | RunStatus::Failed | RunStatus::Promoted
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "QUEUED",
            RunStatus::Running => "RUNNING",
            RunStatus::Uploading => "UPLOADING",
            RunStatus::Passed => "PASSED",
            RunStatus::Failed => "FAILED",
            RunStatus::Cancelling => "CANCELLING",
            RunStatus::Promoted => "PROMOTED",
        }
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RunStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RunStatus::ALL
            .into_iter()
            .find(|st| st.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| format!("unknown run status {s:?}; expected one of QUEUED, RUNNING, UPLOADING, PASSED, FAILED, CANCELLING"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn status_round_trips_through_its_wire_name() {
        for st in RunStatus::ALL {
            assert_eq!(st.as_str().parse::<RunStatus>().unwrap(), st);
            assert_eq!(
                serde_json::to_string(&st).unwrap(),
                format!("\"{}\"", st.as_str())
            );
        }
        assert!("BOGUS".parse::<RunStatus>().is_err());
    }
}
