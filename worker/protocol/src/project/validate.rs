//! Rules beyond the schema: references resolve, names are unique, templates and regexes are well formed,
//! trigger chains are bounded. Runs on a definition the schema walk accepted; collects every problem.
//!
//! Trigger chains follow JobServ's `_check_trigger_depth`: from any trigger, a chain of triggered triggers
//! may be at most [`MAX_TRIGGER_DEPTH`] long (A → B → C is fine, A → B → C → D is not). A cycle could never
//! satisfy that, and is reported as a cycle because that is what the user has to fix.
use super::error::{DefinitionError, Issue, LimitKind};
use super::expand::{loop_runs, render, run_path, LoopError, Mode};
use super::schema::{
    split_secret_names, Email, ProjectDefinition, RunScript, Trigger, TriggerRef,
    MAX_TRIGGER_DEPTH, MAX_TRIGGER_NAME,
};
use std::collections::{BTreeMap, BTreeSet};

pub(crate) fn validate(def: &ProjectDefinition) -> Result<(), DefinitionError> {
    let mut issues = Vec::new();
    let names: BTreeSet<&str> = def.triggers.iter().map(|t| t.name.as_str()).collect();

    if let Some(email) = &def.email {
        check_email(email, "email", &mut issues);
    }
    for (name, repo) in &def.script_repos {
        if let Some(token) = &repo.token {
            if split_secret_names(token).is_empty() {
                issues.push(Issue::at_path(
                    format!("script-repos/{name}/token"),
                    "must name at least one secret",
                ));
            }
        }
    }

    let mut seen = BTreeSet::new();
    for trigger in &def.triggers {
        let path = format!("triggers/{}", trigger.name);
        if trigger.name.chars().count() > MAX_TRIGGER_NAME {
            issues.push(Issue::at_path(
                format!("{path}/name"),
                format!("longer than {MAX_TRIGGER_NAME} characters"),
            ));
        }
        if !seen.insert(trigger.name.as_str()) {
            issues.push(Issue::at_path(
                format!("{path}/name"),
                format!("duplicate trigger name `{}`", trigger.name),
            ));
        }
        if let Some(email) = &trigger.email {
            check_email(email, &format!("{path}/email"), &mut issues);
        }
        for (i, hook) in trigger.webhooks.iter().enumerate() {
            if !(hook.url.starts_with("https://") || hook.url.starts_with("http://")) {
                issues.push(Issue::at_path(
                    format!("{path}/webhooks/{i}/url"),
                    "must be an http:// or https:// URL",
                ));
            }
        }
        for (j, t) in trigger.triggers.iter().enumerate() {
            let ref_path = format!("{path}/triggers/{j}");
            check_run_names(t, false, &ref_path, &mut issues);
            if !names.contains(t.name.as_str()) {
                issues.push(Issue::at_path(
                    format!("{ref_path}/name"),
                    format!("no trigger named `{}`", t.name),
                ));
            }
        }
        check_runs(def, trigger, &names, &mut issues)?;
    }

    if issues.is_empty() {
        // Chains are only meaningful once every name resolves.
        check_chains(def, &mut issues)?;
    }
    if issues.is_empty() {
        Ok(())
    } else {
        Err(DefinitionError::Invalid(issues))
    }
}

fn check_email(email: &Email, path: &str, issues: &mut Vec<Issue>) {
    let addresses = email.addresses();
    if addresses.is_empty() {
        issues.push(Issue::at_path(
            format!("{path}/users"),
            "must list at least one address",
        ));
    }
    for address in addresses {
        if !address.contains('@') || address.contains(char::is_whitespace) {
            issues.push(Issue::at_path(
                format!("{path}/users"),
                format!("`{address}` is not an email address"),
            ));
        }
    }
}

fn check_run_names(t: &TriggerRef, looped: bool, path: &str, issues: &mut Vec<Issue>) {
    let Some(format) = &t.run_names else {
        return;
    };
    let mut vars = vec![("name", "x")];
    if looped {
        vars.push(("loop", "x"));
    }
    if let Err(e) = render(format, &vars, Mode::Strict) {
        let hint = if !looped && format.contains("{loop}") {
            " (`{loop}` needs `loop-on` on the run)"
        } else {
            ""
        };
        issues.push(Issue::at_path(
            format!("{path}/run-names"),
            format!("{e}{hint}"),
        ));
    }
}

fn check_runs(
    def: &ProjectDefinition,
    trigger: &Trigger,
    names: &BTreeSet<&str>,
    issues: &mut Vec<Issue>,
) -> Result<(), DefinitionError> {
    for (i, run) in trigger.runs.iter().enumerate() {
        let path = run_path(trigger, i);
        match &run.script {
            RunScript::Script(name) if !def.scripts.contains_key(name) => {
                issues.push(Issue::at_path(
                    format!("{path}/script"),
                    format!("script `{name}` is not defined in `scripts`"),
                ))
            }
            RunScript::Repo { name, .. } if !def.script_repos.contains_key(name) => {
                issues.push(Issue::at_path(
                    format!("{path}/script-repo/name"),
                    format!("script repo `{name}` is not defined in `script-repos`"),
                ))
            }
            _ => {}
        }
        if let Some(auth) = &run.container_auth {
            if auth.trim().is_empty() {
                issues.push(Issue::at_path(
                    format!("{path}/container-auth"),
                    "must name a secret",
                ));
            }
        }
        let mut params = BTreeSet::new();
        for (j, l) in run.loop_on.iter().enumerate() {
            if !params.insert(l.param.as_str()) {
                issues.push(Issue::at_path(
                    format!("{path}/loop-on/{j}/param"),
                    format!("`{}` is looped on twice", l.param),
                ));
            }
        }
        let looped = !run.loop_on.is_empty();
        if looped {
            if let Err(e) = render(&run.name, &[("loop", "x")], Mode::Strict) {
                issues.push(Issue::at_path(format!("{path}/name"), e));
            }
        }
        for (j, t) in run.triggers.iter().enumerate() {
            let ref_path = format!("{path}/triggers/{j}");
            check_run_names(t, looped, &ref_path, issues);
            if looped {
                if let Err(e) = render(&t.name, &[("loop", "x")], Mode::Strict) {
                    issues.push(Issue::at_path(format!("{ref_path}/name"), e));
                }
            }
        }
        for (volume, target) in &run.persistent_volumes {
            let ok = volume
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
            if !ok || volume.is_empty() {
                issues.push(Issue::at_path(
                    format!("{path}/persistent-volumes/{volume}"),
                    "volume names may only use letters, digits, `_`, `.` and `-`",
                ));
            }
            check_container_path(
                target,
                &format!("{path}/persistent-volumes/{volume}"),
                issues,
            );
        }
        for (source, target) in &run.shared_volumes {
            if source.trim().is_empty() {
                issues.push(Issue::at_path(
                    format!("{path}/shared-volumes"),
                    "empty volume source",
                ));
            }
            check_container_path(target, &format!("{path}/shared-volumes/{source}"), issues);
        }
        if let Some(cp) = &run.console_progress {
            check_regex(
                &cp.progress_pattern,
                &["current", "total"],
                &format!("{path}/console-progress/progress-pattern"),
                issues,
            );
        }
        if let Some(tg) = &run.test_grepping {
            if let Some(p) = &tg.test_pattern {
                check_regex(
                    p,
                    &["name"],
                    &format!("{path}/test-grepping/test-pattern"),
                    issues,
                );
            }
            check_regex(
                &tg.result_pattern,
                &["name", "result"],
                &format!("{path}/test-grepping/result-pattern"),
                issues,
            );
        }
    }

    // Names after expansion: unique in the trigger, and the triggers they start exist.
    let looped = match loop_runs(trigger, def.max_runs_per_trigger) {
        Ok(looped) => looped,
        Err(LoopError::TooMany(message)) => {
            return Err(DefinitionError::limit(LimitKind::RunCount, message))
        }
        Err(LoopError::Invalid(errors)) => {
            // Already reported above as template errors; add only what is new.
            for (i, message) in errors {
                let issue = Issue::at_path(run_path(trigger, i), message);
                if !issues.iter().any(|x| x.location == issue.location) {
                    issues.push(issue);
                }
            }
            return Ok(());
        }
    };
    let mut run_names: BTreeMap<&str, usize> = BTreeMap::new();
    let mut reported = BTreeSet::new();
    for l in &looped {
        let index = l.index;
        if let Some(first) = run_names.insert(l.name.as_str(), index) {
            if reported.insert(l.name.clone()) {
                let also = if first == index {
                    "by its own loop (is `{loop}` missing from the name?)".to_owned()
                } else {
                    format!("by run {first}")
                };
                issues.push(Issue::at_path(
                    format!("{}/name", run_path(trigger, index)),
                    format!("run name `{}` is also created {also}", l.name),
                ));
            }
        }
        for (j, t) in l.triggers.iter().enumerate() {
            if !names.contains(t.name.as_str()) {
                let issue = Issue::at_path(
                    format!("{}/triggers/{j}/name", run_path(trigger, index)),
                    format!("no trigger named `{}`", t.name),
                );
                if !issues.contains(&issue) {
                    issues.push(issue);
                }
            }
        }
    }
    Ok(())
}

fn check_container_path(target: &str, path: &str, issues: &mut Vec<Issue>) {
    if !target.starts_with('/') {
        issues.push(Issue::at_path(path, "the container path must be absolute"));
    }
}

fn check_regex(pattern: &str, groups: &[&str], path: &str, issues: &mut Vec<Issue>) {
    // A size limit keeps a hostile pattern from costing the server much memory to compile.
    match regex::RegexBuilder::new(pattern)
        .size_limit(1 << 20)
        .build()
    {
        Ok(re) => {
            let names: BTreeSet<&str> = re.capture_names().flatten().collect();
            for group in groups {
                if !names.contains(group) {
                    issues.push(Issue::at_path(
                        path,
                        format!("the pattern needs a named group `(?P<{group}>...)`"),
                    ));
                }
            }
        }
        Err(e) => issues.push(Issue::at_path(
            path,
            format!("invalid regular expression: {e}"),
        )),
    }
}

/// Trigger → the triggers it can start (its runs' `triggers`, after loop expansion, and its own).
pub(crate) fn trigger_edges(def: &ProjectDefinition) -> BTreeMap<&str, BTreeSet<String>> {
    let mut edges: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for trigger in &def.triggers {
        let children = edges.entry(trigger.name.as_str()).or_default();
        children.extend(trigger.triggers.iter().map(|t| t.name.clone()));
        if let Ok(looped) = loop_runs(trigger, def.max_runs_per_trigger) {
            for l in looped {
                children.extend(l.triggers.into_iter().map(|t| t.name));
            }
        }
    }
    edges
}

fn check_chains(def: &ProjectDefinition, issues: &mut Vec<Issue>) -> Result<(), DefinitionError> {
    let edges = trigger_edges(def);
    let mut reported = BTreeSet::new();
    for trigger in &def.triggers {
        let mut chain = vec![trigger.name.clone()];
        if let Some(problem) = walk_chain(&edges, &mut chain) {
            if reported.insert(problem.clone()) {
                issues.push(Issue::at_path(
                    format!("triggers/{}/triggers", trigger.name),
                    problem,
                ));
            }
        }
    }
    if issues.is_empty() {
        check_build_run_names(def, issues)?;
    }
    Ok(())
}

/// Depth-first along `chain`'s last trigger; the first cycle or over-long chain found, as a message.
fn walk_chain(edges: &BTreeMap<&str, BTreeSet<String>>, chain: &mut Vec<String>) -> Option<String> {
    let last = chain.last()?.clone();
    for child in edges.get(last.as_str()).into_iter().flatten() {
        if let Some(start) = chain.iter().position(|n| n == child) {
            let cycle: Vec<&str> = chain[start..].iter().map(String::as_str).collect();
            return Some(format!("trigger cycle: {} → {child}", cycle.join(" → ")));
        }
        if chain.len() > MAX_TRIGGER_DEPTH {
            return Some(format!(
                "trigger chain {} → {child} is deeper than {MAX_TRIGGER_DEPTH} (JobServ's limit)",
                chain.join(" → ")
            ));
        }
        chain.push(child.clone());
        let found = walk_chain(edges, chain);
        chain.pop();
        if found.is_some() {
            return found;
        }
    }
    None
}

/// Run names are unique in a build: a trigger's runs and the runs its runs (and the trigger itself) start
/// directly must not collide. Deeper links of a chain are not simulated.
fn check_build_run_names(
    def: &ProjectDefinition,
    issues: &mut Vec<Issue>,
) -> Result<(), DefinitionError> {
    let none = BTreeMap::new();
    for trigger in &def.triggers {
        let runs = def.expand_trigger(&trigger.name, &none)?;
        let mut names: BTreeMap<String, String> = BTreeMap::new();
        for run in &runs {
            names.insert(run.name.clone(), format!("run `{}`", run.name));
        }
        let mut started: Vec<(String, String)> = Vec::new();
        for run in &runs {
            for t in &run.triggers {
                for child in def.expand_triggered_runs(t, &none)? {
                    started.push((
                        child.name,
                        format!("trigger `{}` started by run `{}`", t.name, run.name),
                    ));
                }
            }
        }
        for t in &trigger.triggers {
            for child in def.expand_triggered_runs(t, &none)? {
                started.push((
                    child.name,
                    format!("trigger `{}` started when the build completes", t.name),
                ));
            }
        }
        for (name, origin) in started {
            if let Some(first) = names.get(&name) {
                issues.push(Issue::at_path(
                    format!("triggers/{}", trigger.name),
                    format!("a build would get two runs named `{name}`: from {first} and from {origin} (use `run-names`)"),
                ));
            } else {
                names.insert(name, origin);
            }
        }
    }
    Ok(())
}
