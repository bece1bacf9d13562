//! Project definitions: parsing, validating and expanding a project's YAML (`shared/spec/project-yaml.md`).
//!
//! ```text
//! text ──limits::load──▶ Node tree ──walk (schema)──▶ ProjectDefinition ──validate──▶ ok
//!                                                        │
//!                                   expand_trigger ◀─────┘──▶ Vec<RunSpec> (one per concrete run)
//! ```
//!
//! * [`parse_project`] is the only way to get a [`ProjectDefinition`]; it returns one only if the document
//!   passed the limits, the strict schema and every validation rule. Invariants callers may rely on: every
//!   `script`/`script-repo`/trigger reference resolves, trigger names are unique, run names are unique within
//!   a trigger after `loop-on` expansion, trigger chains are acyclic and at most [`MAX_TRIGGER_DEPTH`] deep,
//!   regexes compile, and each trigger expands to at most [`Limits::max_runs_per_trigger`] runs.
//! * **Limits** come first (see [`limits`]): the size of the text is checked before parsing; nesting depth
//!   and alias expansion are bounded by a node / byte budget charged while the tree is built, so a
//!   "billion laughs" alias bomb fails within the budget (milliseconds, a few MB) instead of expanding. We
//!   chose that over counting `&`/`*` tokens in the text, which cannot tell YAML from shell `&&` in a script.
//! * **Compatibility**: every JobServ project file means the same here (PyYAML's last-wins duplicate keys,
//!   merge keys and `yes`/`no` booleans included); our extensions (`webhooks`) are additive.
//! * **Errors** ([`DefinitionError`]) give a line and column for syntax errors and a path such as
//!   `triggers/git/runs/1/scriptt: unknown key` for everything else; runs are numbered from 0.
//! * Secrets are referenced by name only; [`ProjectDefinition::check_secrets`] and
//!   [`ProjectDefinition::check_trigger_secrets`] compare them with what a trigger provides.
mod error;
mod expand;
pub mod limits;
mod schema;
mod secrets;
mod summary;
mod validate;
mod walk;

pub use error::{DefinitionError, Issue, LimitKind, Location};
pub use expand::{expand_run_names, RunSpec};
pub use limits::Limits;
pub use schema::{
    Email, LoopOn, ProjectDefinition, Retention, Run, RunScript, ScriptRepoDef, Trigger,
    TriggerRef, TriggerType, Webhook, HOST_TAG_PARAM, MAX_TRIGGER_DEPTH, MAX_TRIGGER_NAME,
};
pub use secrets::SecretUse;
pub use summary::{ChainSummary, ProjectSummary, RunSummary, TriggerSummary};

/// Parses and validates a project definition with the default [`Limits`].
pub fn parse_project(yaml: &str) -> Result<ProjectDefinition, DefinitionError> {
    parse_project_with_limits(yaml, &Limits::default())
}

/// Parses and validates a project definition within `limits`.
pub fn parse_project_with_limits(
    yaml: &str,
    limits: &Limits,
) -> Result<ProjectDefinition, DefinitionError> {
    let root = limits::load(yaml, limits)?;
    let mut issues = Vec::new();
    let def = walk::project(&root, limits.max_runs_per_trigger, &mut issues);
    let def = match def {
        Some(def) if issues.is_empty() => def,
        _ => return Err(DefinitionError::Invalid(issues)),
    };
    validate::validate(&def)?;
    Ok(def)
}
