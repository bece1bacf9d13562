//! A human-readable overview of what a definition does, for `jobserv validate PROJECT.yml`: per trigger its
//! type, the runs it creates (after `loop-on`), and what each run and the trigger start when they pass.
use super::schema::{ProjectDefinition, TriggerType};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProjectSummary {
    pub timeout_minutes: u64,
    pub triggers: Vec<TriggerSummary>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TriggerSummary {
    pub name: String,
    pub trigger_type: TriggerType,
    pub runs: Vec<RunSummary>,
    /// Started when a build of this trigger completes and passed.
    pub on_build_complete: Vec<ChainSummary>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RunSummary {
    pub name: String,
    pub host_tag: String,
    pub container: String,
    /// Started when this run passes.
    pub on_pass: Vec<ChainSummary>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChainSummary {
    pub trigger: String,
    /// The names the started runs get.
    pub runs: Vec<String>,
}

impl ProjectDefinition {
    /// What each trigger creates. A definition from `parse_project` always expands; should a hand-edited one
    /// not, the trigger is listed without runs rather than failing.
    pub fn summarize(&self) -> ProjectSummary {
        let none = BTreeMap::new();
        let chain = |t: &super::TriggerRef| ChainSummary {
            trigger: t.name.clone(),
            runs: self
                .expand_triggered_runs(t, &none)
                .map(|runs| runs.into_iter().map(|r| r.name).collect())
                .unwrap_or_default(),
        };
        let triggers = self
            .triggers
            .iter()
            .map(|trigger| TriggerSummary {
                name: trigger.name.clone(),
                trigger_type: trigger.trigger_type,
                runs: self
                    .expand_trigger(&trigger.name, &none)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|run| RunSummary {
                        on_pass: run.triggers.iter().map(chain).collect(),
                        name: run.name,
                        host_tag: run.host_tag,
                        container: run.container,
                    })
                    .collect(),
                on_build_complete: trigger.triggers.iter().map(chain).collect(),
            })
            .collect();
        ProjectSummary {
            timeout_minutes: self.timeout,
            triggers,
        }
    }
}

impl fmt::Display for ProjectSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "timeout: {} minutes", self.timeout_minutes)?;
        for t in &self.triggers {
            let plural = if t.runs.len() == 1 { "" } else { "s" };
            writeln!(
                f,
                "trigger {} ({}): {} run{plural}",
                t.name,
                t.trigger_type,
                t.runs.len()
            )?;
            for run in &t.runs {
                writeln!(
                    f,
                    "  {} [host-tag {}] {}",
                    run.name, run.host_tag, run.container
                )?;
                for c in &run.on_pass {
                    writeln!(f, "    on pass -> {}: {}", c.trigger, c.runs.join(", "))?;
                }
            }
            for c in &t.on_build_complete {
                writeln!(f, "  on build pass -> {}: {}", c.trigger, c.runs.join(", "))?;
            }
        }
        Ok(())
    }
}
