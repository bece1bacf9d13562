//! From a project definition to the runs of a build: parse and validate the YAML (the protocol crate
//! enforces size, depth and alias limits), expand the trigger, check that the secrets it needs exist, and
//! turn each `RunSpec` into the stored `RunDef` (without URLs, run key or secret values — those are added
//! when a worker is handed the run).
use crate::error::ApiError;
use jobserv_protocol::project::{parse_project, ProjectDefinition, RunSpec};
use jobserv_protocol::rundef::RUNDEF_VERSION;
use jobserv_protocol::RunDef;
use std::collections::{BTreeMap, BTreeSet};

/// A parsed, validated definition and the trigger a build starts, before secrets are known.
pub struct PreparedBuild {
    definition: ProjectDefinition,
    trigger_name: String,
    pub trigger_type: String,
}

pub fn prepare_build(yaml: &str, trigger_name: &str) -> Result<PreparedBuild, ApiError> {
    let definition = parse_project(yaml)
        .map_err(|e| ApiError::BadRequest(format!("project-definition: {e}")))?;
    let trigger = definition.trigger(trigger_name).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "trigger-name: the definition has no trigger named {trigger_name:?}"
        ))
    })?;
    let trigger_type = trigger.trigger_type.as_str().to_string();
    Ok(PreparedBuild {
        definition,
        trigger_name: trigger_name.to_string(),
        trigger_type,
    })
}

impl PreparedBuild {
    /// The parsed definition (for the build's hooks: chains and notifications).
    pub fn definition(&self) -> &ProjectDefinition {
        &self.definition
    }

    /// Checks that every secret the trigger (and its chain) needs is given, then expands the runs.
    pub fn runs(
        &self,
        project: &str,
        params: &BTreeMap<String, String>,
        secrets: &BTreeMap<String, String>,
    ) -> Result<Vec<RunDef>, ApiError> {
        let available: BTreeSet<String> = secrets.keys().cloned().collect();
        self.definition
            .check_trigger_secrets(&self.trigger_name, &available)
            .map_err(|e| ApiError::BadRequest(format!("secrets: {e}")))?;
        let specs = self
            .definition
            .expand_trigger(&self.trigger_name, params)
            .map_err(|e| ApiError::BadRequest(format!("project-definition: {e}")))?;
        Ok(specs
            .into_iter()
            .map(|spec| run_definition(project, spec))
            .collect())
    }
}

pub fn run_definition(project: &str, spec: RunSpec) -> RunDef {
    let mut env = spec.env;
    env.insert("H_PROJECT".into(), project.to_string());
    env.insert("H_RUN".into(), spec.name.clone());
    RunDef {
        version: RUNDEF_VERSION,
        project: project.to_string(),
        build: 0, // allocated by the state machine
        run: spec.name,
        timeout: spec.timeout_minutes,
        api_key: None,
        run_url: String::new(),
        run_urls: Vec::new(),
        frontend_url: String::new(),
        runner_url: String::new(),
        trigger_type: spec.trigger_type.as_str().to_string(),
        container: spec.container,
        container_auth: spec.container_auth,
        privileged: spec.privileged,
        container_user: spec.container_user,
        container_entrypoint: spec.container_entrypoint,
        env,
        secrets: BTreeMap::new(),
        script: spec.script,
        script_repo: spec.script_repo,
        test_grepping: spec.test_grepping,
        persistent_volumes: spec.persistent_volumes,
        shared_volumes: spec.shared_volumes,
        host_tag: spec.host_tag,
        console_progress: spec.console_progress,
        simulated: false,
    }
}
