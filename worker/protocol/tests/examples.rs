//! Our own example projects (`/examples`, loaded by the quickstart) validate, expand, and together use every
//! key of the schema. All but git.yml must run on a bare machine: busybox image, host tag `amd64` or `*`.
use jobserv_protocol::project::{parse_project, ProjectDefinition};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

fn examples() -> Vec<(String, String)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("examples dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "yml") {
            let name = path
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            out.push((name, std::fs::read_to_string(&path).expect("readable")));
        }
    }
    out.sort();
    out
}

fn parse(name: &str, text: &str) -> ProjectDefinition {
    parse_project(text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn every_example_validates_and_expands() {
    let all = examples();
    assert!(all.len() >= 6, "at least six examples");
    let none = BTreeMap::new();
    for (name, text) in &all {
        let def = parse(name, text);
        assert_eq!(def.timeout, 5, "{name}");
        for trigger in &def.triggers {
            let runs = def
                .expand_trigger(&trigger.name, &none)
                .unwrap_or_else(|e| panic!("{name}/{}: {e}", trigger.name));
            assert!(!runs.is_empty());
            for run in &runs {
                def.expand_run_triggers(run, &none)
                    .unwrap_or_else(|e| panic!("{name}/{}: {e}", run.name));
                if name != "git.yml" {
                    assert_eq!(run.container, "busybox:latest", "{name}/{}", run.name);
                    assert!(
                        ["amd64", "*"].contains(&run.host_tag.as_str()),
                        "{name}/{}",
                        run.name
                    );
                    let script = run
                        .script
                        .as_deref()
                        .expect("runnable examples use inline scripts");
                    assert!(script.starts_with("#!/bin/sh"), "{name}/{}", run.name);
                }
            }
            def.expand_build_triggers(&trigger.name, &none)
                .unwrap_or_else(|e| panic!("{name}/{}: {e}", trigger.name));
        }
    }
}

#[test]
fn examples_expand_to_the_documented_runs() {
    let all: BTreeMap<String, String> = examples().into_iter().collect();
    let none = BTreeMap::new();
    let runs = |file: &str, trigger: &str| -> Vec<String> {
        let def = parse(file, &all[file]);
        def.expand_trigger(trigger, &none)
            .expect("expands")
            .into_iter()
            .map(|r| r.name)
            .collect()
    };
    assert_eq!(
        runs("matrix.yml", "matrix"),
        [
            "build-arm-gcc",
            "build-arm-clang",
            "build-x86-gcc",
            "build-x86-clang",
            "any-host-amd64",
        ]
    );
    assert_eq!(
        runs("chain.yml", "compile"),
        ["compile-alpha", "compile-beta"]
    );
    assert_eq!(runs("hello.yml", "hello"), ["hello"]);

    let chain = parse("chain.yml", &all["chain.yml"]);
    let compile = chain.expand_trigger("compile", &none).expect("expands");
    let tests = chain
        .expand_run_triggers(&compile[1], &none)
        .expect("chain");
    assert_eq!(tests[0].name, "unit-test-beta");
    assert_eq!(tests[0].env["BOARD"], "beta");
    let report = chain
        .expand_build_triggers("compile", &none)
        .expect("report");
    assert_eq!(report[0].name, "summary-final");
    assert_eq!(report[0].host_tag, "*");

    let matrix = parse("matrix.yml", &all["matrix.yml"]);
    let m = matrix.expand_trigger("matrix", &none).expect("expands");
    assert_eq!(m[2].env["ARCH"], "x86");
    assert_eq!(m[2].env["TOOLCHAIN"], "gcc");
    assert_eq!(m[2].env["OPTIMIZE"], "2");
    assert_eq!(m[4].host_tag, "amd64");
    assert_eq!(m[4].env["ARCH"], "any");
    assert!(!m[4].env.contains_key("host-tag"));
}

/// Every key of `shared/spec/project-yaml.md`.
const SCHEMA_KEYS: &[&str] = &[
    // top level
    "description",
    "timeout",
    "params",
    "scripts",
    "script-repos",
    "email",
    "triggers",
    // script-repos entries, email
    "clone-url",
    "git-ref",
    "token",
    "users",
    "only_failures",
    // trigger
    "name",
    "type",
    "runs",
    "webhooks",
    "url",
    "secret_name",
    "run-names",
    // run
    "container",
    "container-auth",
    "container-user",
    "container-entrypoint",
    "privileged",
    "host-tag",
    "script",
    "script-repo",
    "path",
    "loop-on",
    "param",
    "values",
    "persistent-volumes",
    "shared-volumes",
    "console-progress",
    "progress-pattern",
    "test-grepping",
    "test-pattern",
    "result-pattern",
    "fixupdict",
];

fn keys(value: &serde_yaml::Value, out: &mut BTreeSet<String>) {
    match value {
        serde_yaml::Value::Mapping(map) => {
            for (k, v) in map {
                if let Some(k) = k.as_str() {
                    out.insert(k.to_owned());
                }
                keys(v, out);
            }
        }
        serde_yaml::Value::Sequence(items) => items.iter().for_each(|v| keys(v, out)),
        _ => {}
    }
}

#[test]
fn examples_together_use_every_key_and_trigger_type() {
    let mut used = BTreeSet::new();
    let mut types = BTreeSet::new();
    for (name, text) in examples() {
        let value: serde_yaml::Value = serde_yaml::from_str(&text).expect("plain YAML");
        keys(&value, &mut used);
        for t in parse(&name, &text).triggers {
            types.insert(t.trigger_type.as_str());
        }
    }
    let missing: Vec<&&str> = SCHEMA_KEYS.iter().filter(|k| !used.contains(**k)).collect();
    assert!(missing.is_empty(), "keys no example uses: {missing:?}");
    for t in ["git_poller", "github_pr", "gitlab_mr", "simple"] {
        assert!(types.contains(t), "no example uses trigger type {t}");
    }
}
