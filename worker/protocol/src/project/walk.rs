//! The strict schema: turns a loaded [`Node`] tree into the typed definition, reporting every unknown key,
//! missing key and wrongly typed value with its path.
//!
//! A hand walk rather than `#[serde(deny_unknown_fields)]` because it names triggers in paths
//! (`triggers/git/runs/1/scriptt`), keeps going after the first problem, and lets us apply PyYAML-compatible
//! leniency exactly where JobServ files need it:
//! * an explicit `null` (`params:` with nothing after it) counts as absent;
//! * booleans also accept PyYAML 1.1 spellings (`yes`/`no`/`on`/`off`), which YAML 1.2 reads as strings;
//! * environment values (`params`, `loop-on` values) also accept integers (`GIT_DEPTH: 1`) as their decimal
//!   text. Floats and booleans are refused with a hint to quote them, because their text would not survive
//!   (`3.10` would become `3.1`).
use super::error::Issue;
use super::limits::Node;
use super::schema::{
    Email, LoopOn, ProjectDefinition, Retention, Run, RunScript, ScriptRepoDef, Trigger,
    TriggerRef, TriggerType, Webhook, HOST_TAG_PARAM,
};
use crate::rundef::{ConsoleProgress, TestGrepping};
use std::collections::BTreeMap;

const TOP_KEYS: &[&str] = &[
    "description",
    "timeout",
    "params",
    "scripts",
    "script-repos",
    "email",
    "triggers",
    "retention",
];
const TRIGGER_KEYS: &[&str] = &[
    "name", "type", "params", "runs", "triggers", "email", "webhooks",
];
const RUN_KEYS: &[&str] = &[
    "name",
    "container",
    "container-auth",
    "container-user",
    "container-entrypoint",
    "privileged",
    "host-tag",
    "script",
    "script-repo",
    "params",
    "loop-on",
    "persistent-volumes",
    "shared-volumes",
    "console-progress",
    "test-grepping",
    "triggers",
];

/// Walks the whole document; `None` when there was any issue (they are in `issues`).
pub(crate) fn project(
    root: &Node,
    max_runs_per_trigger: usize,
    issues: &mut Vec<Issue>,
) -> Option<ProjectDefinition> {
    let mut w = Walker { issues };
    if matches!(root, Node::Null) {
        w.err("", "the document is empty");
        return None;
    }
    let top = w.fields(root, "", TOP_KEYS)?;
    let description = top
        .get("description")
        .and_then(|n| w.string(n, &top.sub("description")));
    let timeout = match top.get("timeout") {
        Some(node) => w.timeout(node, &top.sub("timeout")),
        None => {
            w.err(&top.sub("timeout"), "required key is missing");
            None
        }
    };
    let params = w.opt_env_map(&top, "params");
    let scripts = match top.get("scripts") {
        Some(node) => w.string_map(node, &top.sub("scripts")),
        None => BTreeMap::new(),
    };
    let script_repos = w.script_repos(&top);
    let email = top.get("email").and_then(|n| w.email(n, &top.sub("email")));
    let retention = top
        .get("retention")
        .and_then(|n| w.retention(n, &top.sub("retention")));
    let triggers = match top.get("triggers") {
        Some(node) => w.triggers(node, &top.sub("triggers")),
        None => {
            w.err(&top.sub("triggers"), "required key is missing");
            Vec::new()
        }
    };
    if !w.issues.is_empty() {
        return None;
    }
    Some(ProjectDefinition {
        description,
        timeout: timeout?,
        params,
        scripts,
        script_repos,
        email,
        triggers,
        retention,
        max_runs_per_trigger,
    })
}

/// The entries of a mapping whose keys were checked against an allow-list.
struct Fields<'n> {
    entries: &'n [(String, Node)],
    path: String,
}

impl<'n> Fields<'n> {
    /// The value of `key`; an explicit `null` counts as absent (PyYAML users write `params:` and mean none).
    fn get(&self, key: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, v)| k == key && !matches!(v, Node::Null))
            .map(|(_, v)| v)
    }

    fn sub(&self, key: &str) -> String {
        join(&self.path, key)
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}/{key}")
    }
}

struct Walker<'i> {
    issues: &'i mut Vec<Issue>,
}

impl Walker<'_> {
    fn err(&mut self, path: &str, message: impl Into<String>) {
        let path = if path.is_empty() { "/" } else { path };
        self.issues.push(Issue::at_path(path, message));
    }

    fn expected(&mut self, path: &str, what: &str, found: &Node) {
        self.err(path, format!("expected {what}, found {}", found.kind()));
    }

    fn map<'n>(&mut self, node: &'n Node, path: &str) -> Option<&'n [(String, Node)]> {
        match node {
            Node::Map(entries) => Some(entries),
            other => {
                self.expected(path, "a mapping", other);
                None
            }
        }
    }

    fn seq<'n>(&mut self, node: &'n Node, path: &str) -> Option<&'n [Node]> {
        match node {
            Node::Seq(items) => Some(items),
            other => {
                self.expected(path, "a list", other);
                None
            }
        }
    }

    /// A mapping with only `allowed` keys; every other key is reported as unknown (and otherwise ignored so
    /// the walk can report more).
    fn fields<'n>(&mut self, node: &'n Node, path: &str, allowed: &[&str]) -> Option<Fields<'n>> {
        let entries = self.map(node, path)?;
        for (key, _) in entries {
            if !allowed.contains(&key.as_str()) {
                self.err(&join(path, key), "unknown key");
            }
        }
        Some(Fields {
            entries,
            path: path.to_owned(),
        })
    }

    fn string(&mut self, node: &Node, path: &str) -> Option<String> {
        match node {
            Node::Str(s) => Some(s.clone()),
            other => {
                self.expected(path, "a string", other);
                None
            }
        }
    }

    /// A string that must be present and not blank.
    fn req_string(&mut self, fields: &Fields<'_>, key: &str) -> Option<String> {
        let path = fields.sub(key);
        match fields.get(key) {
            Some(node) => {
                let s = self.string(node, &path)?;
                if s.trim().is_empty() {
                    self.err(&path, "must not be empty");
                    return None;
                }
                Some(s)
            }
            None => {
                self.err(&path, "required key is missing");
                None
            }
        }
    }

    fn opt_string(&mut self, fields: &Fields<'_>, key: &str) -> Option<String> {
        let node = fields.get(key)?;
        self.string(node, &fields.sub(key))
    }

    fn boolean(&mut self, fields: &Fields<'_>, key: &str) -> bool {
        let path = fields.sub(key);
        match fields.get(key) {
            None => false,
            Some(Node::Bool(b)) => *b,
            // YAML 1.1 booleans, which PyYAML (and so JobServ) reads as booleans but YAML 1.2 as strings.
            Some(Node::Str(s)) => match s.as_str() {
                "yes" | "Yes" | "YES" | "on" | "On" | "ON" => true,
                "no" | "No" | "NO" | "off" | "Off" | "OFF" => false,
                _ => {
                    self.err(&path, format!("expected a boolean, found the string `{s}`"));
                    false
                }
            },
            Some(other) => {
                self.expected(&path, "a boolean", other);
                false
            }
        }
    }

    fn timeout(&mut self, node: &Node, path: &str) -> Option<u64> {
        match node {
            Node::Int(i) => match u64::try_from(*i) {
                Ok(minutes) if minutes > 0 => Some(minutes),
                _ => {
                    self.err(path, "must be a positive number of minutes");
                    None
                }
            },
            other => {
                self.expected(path, "an integer (minutes)", other);
                None
            }
        }
    }

    /// An environment value: a string, or an integer taken as its decimal text.
    fn env_value(&mut self, node: &Node, path: &str) -> Option<String> {
        match node {
            Node::Str(s) => Some(s.clone()),
            Node::Int(i) => Some(i.to_string()),
            Node::Float(_) | Node::Bool(_) | Node::Null => {
                self.err(
                    path,
                    format!(
                        "expected a string, found {} (quote it to keep its exact text)",
                        node.kind()
                    ),
                );
                None
            }
            other => {
                self.expected(path, "a string", other);
                None
            }
        }
    }

    fn opt_env_map(&mut self, fields: &Fields<'_>, key: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let Some(node) = fields.get(key) else {
            return out;
        };
        let path = fields.sub(key);
        if let Some(entries) = self.map(node, &path) {
            for (k, v) in entries {
                if let Some(v) = self.env_value(v, &join(&path, k)) {
                    out.insert(k.clone(), v);
                }
            }
        }
        out
    }

    fn string_map(&mut self, node: &Node, path: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        if let Some(entries) = self.map(node, path) {
            for (k, v) in entries {
                if let Some(v) = self.string(v, &join(path, k)) {
                    out.insert(k.clone(), v);
                }
            }
        }
        out
    }

    fn opt_string_map(&mut self, fields: &Fields<'_>, key: &str) -> BTreeMap<String, String> {
        match fields.get(key) {
            Some(node) => self.string_map(node, &fields.sub(key)),
            None => BTreeMap::new(),
        }
    }

    fn script_repos(&mut self, top: &Fields<'_>) -> BTreeMap<String, ScriptRepoDef> {
        let mut out = BTreeMap::new();
        let Some(node) = top.get("script-repos") else {
            return out;
        };
        let path = top.sub("script-repos");
        let Some(entries) = self.map(node, &path) else {
            return out;
        };
        for (name, repo) in entries {
            let repo_path = join(&path, name);
            let Some(f) = self.fields(repo, &repo_path, &["clone-url", "git-ref", "token"]) else {
                continue;
            };
            let clone_url = self.req_string(&f, "clone-url");
            let git_ref = self.opt_string(&f, "git-ref");
            let token = self.opt_string(&f, "token");
            if let Some(clone_url) = clone_url {
                out.insert(
                    name.clone(),
                    ScriptRepoDef {
                        clone_url,
                        git_ref,
                        token,
                    },
                );
            }
        }
        out
    }

    fn retention(&mut self, node: &Node, path: &str) -> Option<Retention> {
        let f = self.fields(node, path, &["builds", "days"])?;
        let mut count = |key: &str| -> Option<u64> {
            let path = f.sub(key);
            match f.get(key)? {
                Node::Int(i) => match u64::try_from(*i) {
                    Ok(n) if n > 0 => Some(n),
                    _ => {
                        self.err(&path, "must be a positive integer");
                        None
                    }
                },
                other => {
                    self.expected(&path, "a positive integer", other);
                    None
                }
            }
        };
        let retention = Retention {
            builds: count("builds"),
            days: count("days"),
        };
        if retention.builds.is_none() && retention.days.is_none() {
            self.err(
                path,
                "set `builds`, `days` or both (or leave `retention` out to keep every build)",
            );
            return None;
        }
        Some(retention)
    }

    fn email(&mut self, node: &Node, path: &str) -> Option<Email> {
        let f = self.fields(node, path, &["users", "only_failures"])?;
        let users = self.req_string(&f, "users");
        let only_failures = self.boolean(&f, "only_failures");
        Some(Email {
            users: users?,
            only_failures,
        })
    }

    fn triggers(&mut self, node: &Node, path: &str) -> Vec<Trigger> {
        let Some(items) = self.seq(node, path) else {
            return Vec::new();
        };
        if items.is_empty() {
            self.err(path, "must list at least one trigger");
        }
        let mut out = Vec::new();
        for (index, item) in items.iter().enumerate() {
            if let Some(trigger) = self.trigger(item, &join(path, &label(item, index))) {
                out.push(trigger);
            }
        }
        out
    }

    fn trigger(&mut self, node: &Node, path: &str) -> Option<Trigger> {
        let f = self.fields(node, path, TRIGGER_KEYS)?;
        let name = self.req_string(&f, "name");
        let trigger_type = match self.req_string(&f, "type") {
            Some(t) => match TriggerType::from_name(&t) {
                Some(t) => Some(t),
                None => {
                    let known: Vec<&str> = TriggerType::ALL.iter().map(|t| t.as_str()).collect();
                    self.err(
                        &f.sub("type"),
                        format!("unknown trigger type `{t}` (known: {})", known.join(", ")),
                    );
                    None
                }
            },
            None => None,
        };
        let params = self.opt_env_map(&f, "params");
        let runs = match f.get("runs") {
            Some(node) => self.runs(node, &f.sub("runs")),
            None => {
                self.err(&f.sub("runs"), "required key is missing");
                Vec::new()
            }
        };
        let triggers = self.trigger_refs(&f, "triggers");
        let email = f.get("email").and_then(|n| self.email(n, &f.sub("email")));
        let webhooks = self.webhooks(&f);
        Some(Trigger {
            name: name?,
            trigger_type: trigger_type?,
            params,
            runs,
            triggers,
            email,
            webhooks,
        })
    }

    fn webhooks(&mut self, trigger: &Fields<'_>) -> Vec<Webhook> {
        let mut out = Vec::new();
        let Some(node) = trigger.get("webhooks") else {
            return out;
        };
        let path = trigger.sub("webhooks");
        let Some(items) = self.seq(node, &path) else {
            return out;
        };
        for (index, item) in items.iter().enumerate() {
            let item_path = join(&path, &index.to_string());
            let Some(f) = self.fields(item, &item_path, &["url", "secret_name", "only_failures"])
            else {
                continue;
            };
            let url = self.req_string(&f, "url");
            let secret_name = self.req_string(&f, "secret_name");
            let only_failures = self.boolean(&f, "only_failures");
            if let (Some(url), Some(secret_name)) = (url, secret_name) {
                out.push(Webhook {
                    url,
                    secret_name,
                    only_failures,
                });
            }
        }
        out
    }

    fn trigger_refs(&mut self, parent: &Fields<'_>, key: &str) -> Vec<TriggerRef> {
        let mut out = Vec::new();
        let Some(node) = parent.get(key) else {
            return out;
        };
        let path = parent.sub(key);
        let Some(items) = self.seq(node, &path) else {
            return out;
        };
        for (index, item) in items.iter().enumerate() {
            let item_path = join(&path, &index.to_string());
            let Some(f) = self.fields(item, &item_path, &["name", "run-names"]) else {
                continue;
            };
            let name = self.req_string(&f, "name");
            let run_names = self.opt_string(&f, "run-names");
            if let Some(name) = name {
                out.push(TriggerRef { name, run_names });
            }
        }
        out
    }

    fn runs(&mut self, node: &Node, path: &str) -> Vec<Run> {
        let Some(items) = self.seq(node, path) else {
            return Vec::new();
        };
        if items.is_empty() {
            self.err(path, "must list at least one run");
        }
        let mut out = Vec::new();
        for (index, item) in items.iter().enumerate() {
            if let Some(run) = self.run(item, &join(path, &index.to_string())) {
                out.push(run);
            }
        }
        out
    }

    fn run(&mut self, node: &Node, path: &str) -> Option<Run> {
        let f = self.fields(node, path, RUN_KEYS)?;
        let name = self.req_string(&f, "name");
        let container = self.req_string(&f, "container");
        let container_auth = self.opt_string(&f, "container-auth");
        let container_user = self.opt_string(&f, "container-user");
        let container_entrypoint = self.opt_string(&f, "container-entrypoint");
        let privileged = self.boolean(&f, "privileged");
        let loop_on = self.loop_on(&f);
        let host_tag = match f.get("host-tag") {
            Some(_) => self.req_string(&f, "host-tag"),
            None => {
                if !loop_on.iter().any(|l| l.param == HOST_TAG_PARAM) {
                    self.err(
                        &f.sub("host-tag"),
                        "required key is missing (or give a `loop-on` entry with `param: host-tag`)",
                    );
                }
                None
            }
        };
        let script = self.run_script(&f);
        let params = self.opt_env_map(&f, "params");
        let persistent_volumes = self.opt_string_map(&f, "persistent-volumes");
        let shared_volumes = self.opt_string_map(&f, "shared-volumes");
        let console_progress = match f.get("console-progress") {
            Some(node) => {
                let cp = self.fields(node, &f.sub("console-progress"), &["progress-pattern"]);
                cp.and_then(|cp| self.req_string(&cp, "progress-pattern"))
                    .map(|progress_pattern| ConsoleProgress { progress_pattern })
            }
            None => None,
        };
        let test_grepping = match f.get("test-grepping") {
            Some(node) => self.test_grepping(node, &f.sub("test-grepping")),
            None => None,
        };
        let triggers = self.trigger_refs(&f, "triggers");
        Some(Run {
            name: name?,
            container: container?,
            container_auth,
            container_user,
            container_entrypoint,
            privileged,
            host_tag,
            script: script?,
            params,
            loop_on,
            persistent_volumes,
            shared_volumes,
            console_progress,
            test_grepping,
            triggers,
        })
    }

    fn run_script(&mut self, run: &Fields<'_>) -> Option<RunScript> {
        match (run.get("script"), run.get("script-repo")) {
            (Some(_), Some(_)) => {
                self.err(
                    &run.path,
                    "`script` and `script-repo` are mutually exclusive",
                );
                None
            }
            (None, None) => {
                self.err(&run.path, "one of `script` or `script-repo` is required");
                None
            }
            (Some(_), None) => self.req_string(run, "script").map(RunScript::Script),
            (None, Some(node)) => {
                let f = self.fields(node, &run.sub("script-repo"), &["name", "path"])?;
                let name = self.req_string(&f, "name");
                let path = self.req_string(&f, "path");
                Some(RunScript::Repo {
                    name: name?,
                    path: path?,
                })
            }
        }
    }

    fn loop_on(&mut self, run: &Fields<'_>) -> Vec<LoopOn> {
        let mut out = Vec::new();
        let Some(node) = run.get("loop-on") else {
            return out;
        };
        let path = run.sub("loop-on");
        let Some(items) = self.seq(node, &path) else {
            return out;
        };
        for (index, item) in items.iter().enumerate() {
            let item_path = join(&path, &index.to_string());
            let Some(f) = self.fields(item, &item_path, &["param", "values"]) else {
                continue;
            };
            let param = self.req_string(&f, "param");
            let values = match f.get("values") {
                Some(node) => {
                    let values_path = f.sub("values");
                    let items = self.seq(node, &values_path).unwrap_or_default();
                    if items.is_empty() && matches!(node, Node::Seq(_)) {
                        self.err(&values_path, "must list at least one value");
                    }
                    let mut values = Vec::new();
                    for (i, v) in items.iter().enumerate() {
                        if let Some(v) = self.env_value(v, &join(&values_path, &i.to_string())) {
                            values.push(v);
                        }
                    }
                    values
                }
                None => {
                    self.err(&f.sub("values"), "required key is missing");
                    Vec::new()
                }
            };
            if let Some(param) = param {
                out.push(LoopOn { param, values });
            }
        }
        out
    }

    fn test_grepping(&mut self, node: &Node, path: &str) -> Option<TestGrepping> {
        let f = self.fields(node, path, &["test-pattern", "result-pattern", "fixupdict"])?;
        let test_pattern = self.opt_string(&f, "test-pattern");
        let result_pattern = self.req_string(&f, "result-pattern");
        let fixupdict = self.opt_string_map(&f, "fixupdict");
        Some(TestGrepping {
            test_pattern,
            result_pattern: result_pattern?,
            fixupdict,
        })
    }
}

/// How a trigger appears in paths: its name when it has a usable one, else its index.
fn label(trigger: &Node, index: usize) -> String {
    if let Node::Map(entries) = trigger {
        for (k, v) in entries {
            if let (true, Node::Str(name)) = (k == "name", v) {
                if !name.trim().is_empty() {
                    return name.clone();
                }
            }
        }
    }
    index.to_string()
}

#[cfg(test)]
mod tests {
    use crate::project::{parse_project, RunScript};

    const BASE: &str = "timeout: 3\nscripts: {s: x}\ntriggers:\n  - name: t\n    type: simple\n    runs:\n      - name: r\n        container: c\n        host-tag: h\n        script: s\n";

    #[test]
    fn pyyaml_booleans_nulls_and_integer_params_are_accepted() {
        let yaml = format!("{BASE}        privileged: yes\n        params:\n          DEPTH: 1\n        persistent-volumes:\nemail:\n  users: a@b.c\n  only_failures: off\n");
        let def = parse_project(&yaml).expect("valid");
        let run = &def.triggers[0].runs[0];
        assert!(run.privileged);
        assert_eq!(run.params["DEPTH"], "1");
        assert!(run.persistent_volumes.is_empty());
        assert_eq!(def.email.as_ref().map(|e| e.only_failures), Some(false));
        assert_eq!(run.script, RunScript::Script("s".into()));
    }

    #[test]
    fn every_problem_is_reported_not_just_the_first() {
        let yaml = format!(
            "{BASE}        colour: red\n        privileged: maybe\n      - name: r2\nextra: 1\n"
        );
        let err = parse_project(&yaml).expect_err("invalid");
        let paths: Vec<String> = err
            .issues()
            .iter()
            .map(|i| i.location.to_string())
            .collect();
        for want in [
            "triggers/t/runs/0/colour",
            "triggers/t/runs/0/privileged",
            "triggers/t/runs/1/container",
            "extra",
        ] {
            assert!(
                paths.iter().any(|p| p == want),
                "{want} missing from {paths:?}"
            );
        }
    }

    #[test]
    fn trigger_paths_fall_back_to_the_index() {
        let err = parse_project("timeout: 1\ntriggers:\n  - type: simple\n    runs: []\n")
            .expect_err("invalid");
        let text = err.to_string();
        assert!(
            text.contains("triggers/0/name: required key is missing"),
            "{text}"
        );
        assert!(
            text.contains("triggers/0/runs: must list at least one run"),
            "{text}"
        );
    }
}
