//! Expansion: from a trigger of a validated definition to the concrete runs a build gets.
//!
//! Semantics follow JobServ:
//! * `loop-on` is a cartesian product in declaration order (the last entry varies fastest, like Python's
//!   `itertools.product`); `{loop}` in the run name becomes the combination's values joined by `-`; each
//!   value is set in the environment under its param, except `host-tag`, which sets the run's host tag.
//!   A run without `loop-on` keeps its name literally (JobServ does not format it).
//! * In a looped run's `triggers`, `{loop}` in a trigger `name` and in `run-names` is replaced by the loop
//!   value; `{name}` in `run-names` is kept and becomes each started run's own name when the chained trigger
//!   is expanded ([`ProjectDefinition::expand_triggered_runs`]). So run `compile-{loop}` with BOARD=96b_nitrogen
//!   and `run-names: "{name}-{loop}"` starts `fake-test-96b_nitrogen`.
//! * Environment precedence, lowest to highest: project params, trigger params, run params, loop values,
//!   event params. `H_PROJECT`, `H_BUILD`, `H_RUN` (and `H_TRIGGER_URL`) are the server's to add on top: a
//!   [`RunSpec`] does not know the build.
//! * For a run-level chain JobServ passes the parent run's whole environment plus `H_TRIGGER_URL` as the event
//!   params ([`ProjectDefinition::expand_run_triggers`]); for a build-level chain the build's params plus
//!   `H_TRIGGER_URL` ([`ProjectDefinition::expand_build_triggers`]).
//!
//! Templates use Python `str.format` syntax restricted to the placeholders above: `{{` and `}}` are literal
//! braces, any other `{…}` is a validation error.
use super::error::{DefinitionError, Issue, LimitKind};
use super::schema::{
    ProjectDefinition, Run, RunScript, Trigger, TriggerRef, TriggerType, HOST_TAG_PARAM,
};
use crate::rundef::{ConsoleProgress, ScriptRepo, TestGrepping};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One concrete run of a build, everything resolved from the project definition. The server adds the build
/// specifics (`H_*` variables, secrets, URLs, run key) to make a [`crate::RunDef`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunSpec {
    pub name: String,
    /// The trigger this run belongs to (JobServ looks a completed run's own `triggers` up through it).
    pub trigger: String,
    pub trigger_type: TriggerType,
    pub container: String,
    pub container_auth: Option<String>,
    pub container_user: Option<String>,
    /// `Some("")` means "clear the image's entrypoint".
    pub container_entrypoint: Option<String>,
    pub privileged: bool,
    pub host_tag: String,
    pub env: BTreeMap<String, String>,
    /// The script text, when the run names one of `scripts`.
    pub script: Option<String>,
    /// The repository and path, when the run uses `script-repo`.
    pub script_repo: Option<ScriptRepo>,
    pub persistent_volumes: BTreeMap<String, String>,
    pub shared_volumes: BTreeMap<String, String>,
    pub console_progress: Option<ConsoleProgress>,
    pub test_grepping: Option<TestGrepping>,
    /// Triggers to start when this run passes; `{loop}` already replaced.
    pub triggers: Vec<TriggerRef>,
    pub timeout_minutes: u64,
}

/// Applies a run-level `run-names` format: `{name}` becomes `run_name`, `{loop}` becomes `loop_value` (left as
/// written when `None`), `{{`/`}}` become single braces. Lenient by design (unknown placeholders and stray
/// braces are kept as written): validation has already refused such formats in a parsed definition.
pub fn expand_run_names(format: &str, run_name: &str, loop_value: Option<&str>) -> String {
    let mut vars = vec![("name", run_name)];
    if let Some(value) = loop_value {
        vars.push(("loop", value));
    }
    render(format, &vars, Mode::Lenient).unwrap_or_else(|_| format.to_owned())
}

#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Mode {
    /// Unknown placeholders and stray braces are errors.
    Strict,
    /// Unknown placeholders are kept as written, escapes too (for a later second pass).
    Partial,
    /// Like `Strict` but anything that does not parse is kept as written.
    Lenient,
}

/// A tiny `str.format`: substitutes `{var}` for the given vars.
pub(crate) fn render(template: &str, vars: &[(&str, &str)], mode: Mode) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(at) = rest.find(['{', '}']) {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("{{") {
            out.push_str(if mode == Mode::Partial { "{{" } else { "{" });
            rest = after;
        } else if let Some(after) = tail.strip_prefix("}}") {
            out.push_str(if mode == Mode::Partial { "}}" } else { "}" });
            rest = after;
        } else if let Some(body) = tail.strip_prefix('{') {
            let Some(end) = body.find('}') else {
                if mode == Mode::Strict {
                    return Err("`{` without a closing `}` (write `{{` for a literal brace)".into());
                }
                out.push_str(tail);
                rest = "";
                continue;
            };
            let var = &body[..end];
            match vars.iter().find(|(k, _)| *k == var) {
                Some((_, value)) => out.push_str(value),
                None if mode == Mode::Strict => {
                    let known: Vec<String> = vars.iter().map(|(k, _)| format!("{{{k}}}")).collect();
                    return Err(format!(
                        "unknown placeholder `{{{var}}}` (allowed here: {})",
                        if known.is_empty() {
                            "none".to_owned()
                        } else {
                            known.join(", ")
                        }
                    ));
                }
                None => {
                    out.push('{');
                    out.push_str(var);
                    out.push('}');
                }
            }
            rest = &body[end + 1..];
        } else {
            // A lone `}`.
            if mode == Mode::Strict {
                return Err("`}` without an opening `{` (write `}}` for a literal brace)".into());
            }
            out.push('}');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Escapes braces so a value survives a later formatting pass unchanged.
fn escape(value: &str) -> String {
    value.replace('{', "{{").replace('}', "}}")
}

/// One run entry after `loop-on` expansion, before it is resolved into a [`RunSpec`].
pub(crate) struct LoopedRun<'d> {
    pub(crate) run: &'d Run,
    /// The run's index in the trigger's `runs`, for paths.
    pub(crate) index: usize,
    pub(crate) name: String,
    /// Loop params in declaration order (including `host-tag`).
    pub(crate) loop_params: Vec<(String, String)>,
    pub(crate) host_tag: Option<String>,
    pub(crate) triggers: Vec<TriggerRef>,
}

/// Why `loop-on` expansion failed.
pub(crate) enum LoopError {
    /// More runs than the limit; nothing was built.
    TooMany(String),
    /// (run index, message) for runs whose templates do not render.
    Invalid(Vec<(usize, String)>),
}

/// Expands `loop-on` for every run of `trigger`.
pub(crate) fn loop_runs(
    trigger: &Trigger,
    max_runs: usize,
) -> Result<Vec<LoopedRun<'_>>, LoopError> {
    // Bound the product before building it: ten params of ten values would be 10^10 runs.
    let mut total: usize = 0;
    for (index, run) in trigger.runs.iter().enumerate() {
        let mut count: usize = 1;
        for l in &run.loop_on {
            count = count.saturating_mul(l.values.len());
        }
        total = total.saturating_add(count);
        if total > max_runs {
            return Err(LoopError::TooMany(format!(
                "{}: the trigger would create more than {max_runs} runs",
                run_path(trigger, index)
            )));
        }
    }
    let mut out = Vec::with_capacity(total);
    let mut errors = Vec::new();
    for (index, run) in trigger.runs.iter().enumerate() {
        if run.loop_on.is_empty() {
            out.push(LoopedRun {
                run,
                index,
                name: run.name.clone(),
                loop_params: Vec::new(),
                host_tag: run.host_tag.clone(),
                triggers: run.triggers.clone(),
            });
            continue;
        }
        for combo in product(run) {
            let loop_value = combo.iter().map(|(_, v)| *v).collect::<Vec<_>>().join("-");
            match looped(run, index, &combo, &loop_value) {
                Ok(looped) => out.push(looped),
                Err(message) => {
                    errors.push((index, message));
                    break;
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(LoopError::Invalid(errors))
    }
}

fn looped<'d>(
    run: &'d Run,
    index: usize,
    combo: &[(&str, &str)],
    loop_value: &str,
) -> Result<LoopedRun<'d>, String> {
    let loop_var = [("loop", loop_value)];
    let name = render(&run.name, &loop_var, Mode::Strict).map_err(|e| format!("name: {e}"))?;
    let mut host_tag = run.host_tag.clone();
    let mut loop_params = Vec::new();
    for (param, value) in combo {
        if *param == HOST_TAG_PARAM {
            host_tag = Some((*value).to_owned());
        }
        loop_params.push(((*param).to_owned(), (*value).to_owned()));
    }
    let escaped = escape(loop_value);
    let mut triggers = Vec::new();
    for t in &run.triggers {
        let tname =
            render(&t.name, &loop_var, Mode::Strict).map_err(|e| format!("triggers: {e}"))?;
        let run_names = match &t.run_names {
            Some(fmt) => Some(
                render(fmt, &[("loop", escaped.as_str())], Mode::Partial)
                    .map_err(|e| format!("run-names: {e}"))?,
            ),
            None => None,
        };
        triggers.push(TriggerRef {
            name: tname,
            run_names,
        });
    }
    Ok(LoopedRun {
        run,
        index,
        name,
        loop_params,
        host_tag,
        triggers,
    })
}

/// Every combination of the run's loop values, in declaration order (last param varies fastest).
fn product(run: &Run) -> Vec<Vec<(&str, &str)>> {
    let mut combos: Vec<Vec<(&str, &str)>> = vec![Vec::new()];
    for l in &run.loop_on {
        let mut next = Vec::with_capacity(combos.len() * l.values.len());
        for combo in &combos {
            for value in &l.values {
                let mut c = combo.clone();
                c.push((l.param.as_str(), value.as_str()));
                next.push(c);
            }
        }
        combos = next;
    }
    combos
}

pub(crate) fn run_path(trigger: &Trigger, index: usize) -> String {
    format!("triggers/{}/runs/{index}", trigger.name)
}

impl ProjectDefinition {
    /// The runs a build started by `trigger_name` gets, with `event_params` (e.g. `GIT_SHA`, `GH_PRNUM`) at the
    /// top of the environment.
    pub fn expand_trigger(
        &self,
        trigger_name: &str,
        event_params: &BTreeMap<String, String>,
    ) -> Result<Vec<RunSpec>, DefinitionError> {
        let trigger = self
            .trigger(trigger_name)
            .ok_or_else(|| DefinitionError::UnknownTrigger(trigger_name.to_owned()))?;
        let looped = loop_runs(trigger, self.max_runs_per_trigger).map_err(|err| match err {
            LoopError::TooMany(message) => DefinitionError::limit(LimitKind::RunCount, message),
            LoopError::Invalid(errors) => DefinitionError::Invalid(
                errors
                    .into_iter()
                    .map(|(i, m)| Issue::at_path(run_path(trigger, i), m))
                    .collect(),
            ),
        })?;
        let mut specs = Vec::with_capacity(looped.len());
        let mut issues = Vec::new();
        for (index, l) in looped.into_iter().enumerate() {
            match self.resolve(trigger, l, event_params) {
                Ok(spec) => specs.push(spec),
                Err(message) => issues.push(Issue::at_path(
                    format!("triggers/{}/runs", trigger.name),
                    format!("expanded run {index}: {message}"),
                )),
            }
        }
        if issues.is_empty() {
            Ok(specs)
        } else {
            Err(DefinitionError::Invalid(issues))
        }
    }

    fn resolve(
        &self,
        trigger: &Trigger,
        l: LoopedRun<'_>,
        event_params: &BTreeMap<String, String>,
    ) -> Result<RunSpec, String> {
        let run = l.run;
        let mut env = self.params.clone();
        env.extend(trigger.params.iter().map(|(k, v)| (k.clone(), v.clone())));
        env.extend(run.params.iter().map(|(k, v)| (k.clone(), v.clone())));
        env.extend(
            l.loop_params
                .into_iter()
                .filter(|(param, _)| param != HOST_TAG_PARAM),
        );
        env.extend(event_params.iter().map(|(k, v)| (k.clone(), v.clone())));
        let (script, script_repo) = match &run.script {
            RunScript::Script(name) => match self.scripts.get(name) {
                Some(text) => (Some(text.clone()), None),
                None => return Err(format!("script `{name}` does not exist")),
            },
            RunScript::Repo { name, path } => match self.script_repos.get(name) {
                Some(repo) => (
                    None,
                    Some(ScriptRepo {
                        clone_url: repo.clone_url.clone(),
                        git_ref: repo.git_ref.clone(),
                        token: repo.token.clone(),
                        path: path.clone(),
                    }),
                ),
                None => return Err(format!("script repo `{name}` does not exist")),
            },
        };
        let host_tag = l
            .host_tag
            .ok_or_else(|| format!("run `{}` has no host-tag", l.name))?;
        Ok(RunSpec {
            name: l.name,
            trigger: trigger.name.clone(),
            trigger_type: trigger.trigger_type,
            container: run.container.clone(),
            container_auth: run.container_auth.clone(),
            container_user: run.container_user.clone(),
            container_entrypoint: run.container_entrypoint.clone(),
            privileged: run.privileged,
            host_tag,
            env,
            script,
            script_repo,
            persistent_volumes: run.persistent_volumes.clone(),
            shared_volumes: run.shared_volumes.clone(),
            console_progress: run.console_progress.clone(),
            test_grepping: run.test_grepping.clone(),
            triggers: l.triggers,
            timeout_minutes: self.timeout,
        })
    }

    /// The runs a chained trigger starts: [`Self::expand_trigger`] for `trigger.name`, each run renamed by
    /// `trigger.run_names` (`{name}` = the started run's own name).
    pub fn expand_triggered_runs(
        &self,
        trigger: &TriggerRef,
        params: &BTreeMap<String, String>,
    ) -> Result<Vec<RunSpec>, DefinitionError> {
        let mut runs = self.expand_trigger(&trigger.name, params)?;
        if let Some(format) = &trigger.run_names {
            for run in &mut runs {
                run.name = expand_run_names(format, &run.name, None);
            }
        }
        Ok(runs)
    }

    /// The runs started when `parent` passes: every trigger in its `triggers`, with the parent's environment
    /// plus `extra_params` (the server's `H_TRIGGER_URL`, …) as event params, as JobServ does.
    pub fn expand_run_triggers(
        &self,
        parent: &RunSpec,
        extra_params: &BTreeMap<String, String>,
    ) -> Result<Vec<RunSpec>, DefinitionError> {
        let mut params = parent.env.clone();
        params.extend(extra_params.iter().map(|(k, v)| (k.clone(), v.clone())));
        let mut runs = Vec::new();
        for t in &parent.triggers {
            runs.extend(self.expand_triggered_runs(t, &params)?);
        }
        Ok(runs)
    }

    /// The runs started when a build started by `trigger_name` completed and passed: the trigger's own
    /// `triggers`, with `build_params` (the build's params plus `H_TRIGGER_URL`) as event params.
    pub fn expand_build_triggers(
        &self,
        trigger_name: &str,
        build_params: &BTreeMap<String, String>,
    ) -> Result<Vec<RunSpec>, DefinitionError> {
        let trigger = self
            .trigger(trigger_name)
            .ok_or_else(|| DefinitionError::UnknownTrigger(trigger_name.to_owned()))?;
        let mut runs = Vec::new();
        for t in &trigger.triggers {
            runs.extend(self.expand_triggered_runs(t, build_params)?);
        }
        Ok(runs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_names_helper_matches_jobserv() {
        assert_eq!(
            expand_run_names("{name}-{loop}", "fake-test", Some("96b_nitrogen")),
            "fake-test-96b_nitrogen"
        );
        assert_eq!(expand_run_names("{name}-x", "t", None), "t-x");
        assert_eq!(
            expand_run_names("{{literal}}-{name}", "t", None),
            "{literal}-t"
        );
        // Lenient: what validation would refuse is left as written.
        assert_eq!(expand_run_names("{name}-{loop}", "t", None), "t-{loop}");
        assert_eq!(expand_run_names("{name}-{", "t", None), "t-{");
    }

    #[test]
    fn strict_render_refuses_unknown_placeholders_and_stray_braces() {
        let vars = [("loop", "a-b")];
        assert_eq!(
            render("c-{loop}", &vars, Mode::Strict),
            Ok("c-a-b".to_owned())
        );
        assert!(render("c-{board}", &vars, Mode::Strict)
            .expect_err("unknown")
            .contains("{board}"));
        assert!(render("c-{loop", &vars, Mode::Strict).is_err());
        assert!(render("c-}", &vars, Mode::Strict).is_err());
        assert_eq!(render("{{x}}", &vars, Mode::Strict), Ok("{x}".to_owned()));
    }

    #[test]
    fn partial_render_then_final_render_round_trips_braces_in_loop_values() {
        // A loop value with braces must come out literally, not be taken for a placeholder.
        let partial = render(
            "{name}-{loop}",
            &[("loop", &escape("a{name}b"))],
            Mode::Partial,
        )
        .expect("partial");
        assert_eq!(partial, "{name}-a{{name}}b");
        assert_eq!(expand_run_names(&partial, "t", None), "t-a{name}b");
    }

    #[test]
    fn product_is_in_declaration_order_last_fastest() {
        let def = crate::project::parse_project(
            "timeout: 1\nscripts: {s: x}\ntriggers:\n  - name: t\n    type: simple\n    runs:\n      - name: r-{loop}\n        container: c\n        host-tag: h\n        script: s\n        loop-on:\n          - {param: A, values: [a1, a2]}\n          - {param: B, values: [b1, b2, b3]}\n",
        )
        .expect("valid");
        let runs = def.expand_trigger("t", &BTreeMap::new()).expect("expands");
        let names: Vec<&str> = runs.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            ["r-a1-b1", "r-a1-b2", "r-a1-b3", "r-a2-b1", "r-a2-b2", "r-a2-b3"]
        );
        assert_eq!(runs[4].env["A"], "a2");
        assert_eq!(runs[4].env["B"], "b2");
    }

    #[test]
    fn env_precedence_is_project_trigger_run_loop_event() {
        let yaml = "\
timeout: 1
params: {P: project, T: project, R: project, L: project, E: project}
scripts: {s: x}
triggers:
  - name: t
    type: simple
    params: {T: trigger, R: trigger, L: trigger, E: trigger}
    runs:
      - name: r-{loop}
        container: c
        host-tag: h
        script: s
        params: {R: run, L: run, E: run}
        loop-on:
          - {param: L, values: [loop]}
          - {param: E, values: [loop]}
";
        let def = crate::project::parse_project(yaml).expect("valid");
        let event = BTreeMap::from([("E".to_owned(), "event".to_owned())]);
        let run = &def.expand_trigger("t", &event).expect("expands")[0];
        let got: Vec<(&str, &str)> = run
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("E", "event"),
                ("L", "loop"),
                ("P", "project"),
                ("R", "run"),
                ("T", "trigger")
            ]
        );
        assert_eq!(run.name, "r-loop-loop");
    }

    #[test]
    fn loop_value_in_trigger_name_selects_the_trigger() {
        let yaml = "\
timeout: 1
scripts: {s: x}
triggers:
  - name: build
    type: simple
    runs:
      - name: b-{loop}
        container: c
        host-tag: h
        script: s
        loop-on: [{param: K, values: [x, y]}]
        triggers: [{name: 'test-{loop}'}]
  - name: test-x
    type: simple
    runs: [{name: tx, container: c, host-tag: h, script: s}]
  - name: test-y
    type: simple
    runs: [{name: ty, container: c, host-tag: h, script: s}]
";
        let def = crate::project::parse_project(yaml).expect("valid");
        let runs = def
            .expand_trigger("build", &BTreeMap::new())
            .expect("expands");
        let started = def
            .expand_run_triggers(&runs[1], &BTreeMap::new())
            .expect("chain");
        assert_eq!(started[0].name, "ty");
        // And a missing one is caught at validation.
        let err = crate::project::parse_project(&yaml.replace("name: test-y", "name: test-z"))
            .expect_err("test-y missing");
        assert!(
            err.to_string().contains("no trigger named `test-y`"),
            "{err}"
        );
    }
}
