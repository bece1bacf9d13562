//! JobServ's own example projects (copied from `shared/compat/jobserv-projects/`) must parse, validate and
//! expand into the runs JobServ would create, with the same meaning.
use jobserv_protocol::project::{parse_project, ProjectDefinition, RunSpec, TriggerType};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/jobserv-projects")
}

fn load(file: &str) -> ProjectDefinition {
    let text = std::fs::read_to_string(dir().join(file)).expect("compat file is readable");
    match parse_project(&text) {
        Ok(def) => def,
        Err(e) => panic!("{file}: {e}"),
    }
}

fn expand(def: &ProjectDefinition, trigger: &str) -> Vec<RunSpec> {
    match def.expand_trigger(trigger, &BTreeMap::new()) {
        Ok(runs) => runs,
        Err(e) => panic!("trigger {trigger}: {e}"),
    }
}

fn names(runs: &[RunSpec]) -> Vec<&str> {
    runs.iter().map(|r| r.name.as_str()).collect()
}

/// (trigger, its type, the run names it expands to).
type Expected = Vec<(&'static str, TriggerType, Vec<&'static str>)>;

/// file → expected triggers, written out explicitly.
fn expected() -> Vec<(&'static str, Expected)> {
    use TriggerType::*;
    vec![
        (
            "console-progress.yml",
            vec![("git", GitPoller, vec!["progress-example"])],
        ),
        (
            "entrypoint.yml",
            vec![("git", GitPoller, vec!["docker-run-option"])],
        ),
        (
            "host-tag.yml",
            vec![(
                "git",
                GitPoller,
                vec![
                    "simple-for-aarch64-host",
                    "compile-aarch64",
                    "compile-ArmHf",
                ],
            )],
        ),
        (
            "lava.yml",
            vec![
                ("git", GitPoller, vec!["frdm_k64f"]),
                ("lava-test", Lava, vec!["frdm_k64f-test"]),
            ],
        ),
        (
            "multi-arch-compile.yml",
            vec![
                (
                    "git",
                    GitPoller,
                    vec!["compile-frdm_k64f", "compile-96b_nitrogen"],
                ),
                ("test", Simple, vec!["fake-test"]),
            ],
        ),
        ("parameters.yml", vec![("git", GitPoller, vec!["basic"])]),
        (
            "persistent-volume.yml",
            vec![("github", GithubPr, vec!["unit-test", "flake8"])],
        ),
        (
            "private-container.yml",
            vec![("git", GitPoller, vec!["simple-for-aarch64-host"])],
        ),
        (
            "privileged-container.yml",
            vec![("git", GitPoller, vec!["simple-for-aarch64-host"])],
        ),
        (
            "python-github.yml",
            vec![("github", GithubPr, vec!["unit-test", "flake8"])],
        ),
        (
            "run-as.yml",
            vec![("git", GitPoller, vec!["docker-run-option"])],
        ),
        (
            "script-repos.yml",
            vec![("github", GithubPr, vec!["unit-test", "flake8"])],
        ),
        (
            "shared-volume.yml",
            vec![("github", GithubPr, vec!["unit-test"])],
        ),
    ]
}

#[test]
fn every_compat_file_is_covered() {
    let mut on_disk: Vec<String> = std::fs::read_dir(dir())
        .expect("compat dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = expected().iter().map(|(f, _)| f.to_string()).collect();
    listed.sort();
    assert_eq!(
        on_disk, listed,
        "every compat file needs its expected runs written out"
    );
}

#[test]
fn every_compat_file_parses_validates_and_expands_to_the_expected_runs() {
    for (file, triggers) in expected() {
        let def = load(file);
        let declared: Vec<&str> = def.triggers.iter().map(|t| t.name.as_str()).collect();
        let wanted: Vec<&str> = triggers.iter().map(|(t, _, _)| *t).collect();
        assert_eq!(declared, wanted, "{file}: triggers");
        for (trigger, kind, runs) in triggers {
            let specs = expand(&def, trigger);
            assert_eq!(names(&specs), runs, "{file}: runs of {trigger}");
            for spec in &specs {
                assert_eq!(spec.trigger_type, kind, "{file}: {}", spec.name);
                assert_eq!(spec.timeout_minutes, 5, "{file}: {}", spec.name);
                assert!(
                    spec.script.is_some() != spec.script_repo.is_some(),
                    "{file}: {} has exactly one script source",
                    spec.name
                );
                assert!(!spec.host_tag.is_empty());
            }
        }
        // `summarize` (for `jobserv validate`) names every trigger and run.
        let summary = def.summarize().to_string();
        for t in &def.triggers {
            assert!(summary.contains(&t.name), "{file}: summary {summary}");
        }
    }
}

#[test]
fn multi_arch_compile_loops_and_chains_like_jobserv() {
    let def = load("multi-arch-compile.yml");
    let runs = expand(&def, "git");
    let nitrogen = &runs[1];
    assert_eq!(nitrogen.name, "compile-96b_nitrogen");
    assert_eq!(
        nitrogen.env.get("BOARD").map(String::as_str),
        Some("96b_nitrogen")
    );
    assert_eq!(
        runs[0].env.get("BOARD").map(String::as_str),
        Some("frdm_k64f")
    );
    // Trigger params reach the runs.
    assert_eq!(
        nitrogen.env.get("GIT_POLL_REFS").map(String::as_str),
        Some("refs/heads/master, refs/heads/v1.7*")
    );
    assert_eq!(nitrogen.triggers.len(), 1);
    assert_eq!(nitrogen.triggers[0].name, "test");
    assert_eq!(
        nitrogen.triggers[0].run_names.as_deref(),
        Some("{name}-96b_nitrogen")
    );

    // The server starts the chained runs with the parent's environment (plus H_TRIGGER_URL) as event params.
    let extra = BTreeMap::from([("H_TRIGGER_URL".to_owned(), "https://n/runs/x/".to_owned())]);
    let chained = def
        .expand_run_triggers(nitrogen, &extra)
        .expect("chain expands");
    assert_eq!(names(&chained), ["fake-test-96b_nitrogen"]);
    let test = &chained[0];
    assert_eq!(test.trigger, "test");
    assert_eq!(test.trigger_type, TriggerType::Simple);
    assert_eq!(test.container, "linarotechnologies/python-builder");
    assert_eq!(
        test.env.get("BOARD").map(String::as_str),
        Some("96b_nitrogen")
    );
    assert_eq!(
        test.env.get("H_TRIGGER_URL").map(String::as_str),
        Some("https://n/runs/x/")
    );
    assert_eq!(test.script.as_deref(), Some("#!/bin/sh -ex\nenv | sort\n"));

    let summary = def.summarize();
    let git = &summary.triggers[0];
    assert_eq!(git.runs[1].on_pass[0].runs, ["fake-test-96b_nitrogen"]);
    assert_eq!(git.runs[0].on_pass[0].runs, ["fake-test-frdm_k64f"]);
}

#[test]
fn host_tag_loop_sets_the_host_tag_not_the_env() {
    let def = load("host-tag.yml");
    let runs = expand(&def, "git");
    let tags: Vec<&str> = runs.iter().map(|r| r.host_tag.as_str()).collect();
    assert_eq!(tags, ["Aarch6*", "aarch64", "ArmHf"]);
    assert!(runs.iter().all(|r| !r.env.contains_key("host-tag")));
}

#[test]
fn parameters_follow_precedence() {
    let def = load("parameters.yml");
    let event = BTreeMap::from([("GIT_SHA".to_owned(), "abc".to_owned())]);
    let runs = def.expand_trigger("git", &event).expect("expands");
    let env = &runs[0].env;
    let expected: BTreeMap<String, String> = [
        ("GLOBAL_PARAM", "GLOBAL"),
        ("TRIGGER_PARAM", "TRIGGER"),
        ("RUN_PARAM", "RUN"),
        ("GIT_SHA", "abc"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(env, &expected);
}

#[test]
fn run_options_keep_their_meaning() {
    let entry = &expand(&load("entrypoint.yml"), "git")[0];
    assert_eq!(
        entry.container_entrypoint.as_deref(),
        Some(""),
        "\"\" clears the entrypoint"
    );
    assert_eq!(entry.host_tag, "amd643");

    let user = &expand(&load("run-as.yml"), "git")[0];
    assert_eq!(user.container_user.as_deref(), Some("nobody"));
    assert_eq!(user.container_entrypoint, None);

    let privileged = &expand(&load("privileged-container.yml"), "git")[0];
    assert!(privileged.privileged);
    assert!(!user.privileged);

    let private = load("private-container.yml");
    assert_eq!(
        expand(&private, "git")[0].container_auth.as_deref(),
        Some("example.com-token")
    );
    assert_eq!(
        private.required_secrets(),
        BTreeSet::from(["example.com-token".to_owned()])
    );
    let err = private
        .check_secrets(&BTreeSet::new())
        .expect_err("secret missing");
    let text = err.to_string();
    assert!(
        text.contains("triggers/git/runs/0/container-auth"),
        "{text}"
    );
    assert!(text.contains("example.com-token"), "{text}");
    assert!(private
        .check_secrets(&BTreeSet::from(["example.com-token".to_owned()]))
        .is_ok());

    let progress = &expand(&load("console-progress.yml"), "git")[0];
    assert_eq!(
        progress
            .console_progress
            .as_ref()
            .map(|c| c.progress_pattern.as_str()),
        Some(r"^NOTE: Running task (?P<current>\d+) of (?P<total>\d+)")
    );

    let shared = &expand(&load("shared-volume.yml"), "github")[0];
    assert_eq!(
        shared
            .shared_volumes
            .get("venv_cache-foo.12")
            .map(String::as_str),
        Some("/var/cache-venv")
    );
}

#[test]
fn duplicate_keys_keep_the_last_value_like_pyyaml() {
    // persistent-volume.yml's flake8 run says `script: unit-test` then `script: flake8`.
    let def = load("persistent-volume.yml");
    let runs = expand(&def, "github");
    assert!(runs[1]
        .script
        .as_deref()
        .is_some_and(|s| s.contains("flake8 --exclude")));
    assert_eq!(
        runs[0]
            .persistent_volumes
            .get("venv_cache-foo.12")
            .map(String::as_str),
        Some("/var/cache-venv")
    );
    let email = def.email_for("github").expect("trigger email");
    assert!(email.only_failures);
    assert_eq!(
        email.addresses(),
        ["andy.doan@linaro.org", "tyler.baker@linaro.org"]
    );
}

#[test]
fn script_repos_resolve() {
    let def = load("script-repos.yml");
    let runs = expand(&def, "github");
    let repo = runs[1].script_repo.as_ref().expect("script repo");
    assert_eq!(repo.clone_url, "https://github.com/foo.git");
    assert_eq!(repo.path, "flake8.sh");
    assert_eq!(repo.git_ref, None);
    assert_eq!(repo.token, None);
    assert!(def.required_secrets().is_empty());
}

#[test]
fn lava_chain_starts_the_lava_trigger() {
    let def = load("lava.yml");
    let runs = expand(&def, "git");
    assert_eq!(
        runs[0].env.get("DEVICE_TYPE").map(String::as_str),
        Some("frdm-k64f")
    );
    let chained = def
        .expand_run_triggers(&runs[0], &BTreeMap::new())
        .expect("chain");
    assert_eq!(names(&chained), ["frdm_k64f-test"]);
    assert_eq!(chained[0].trigger_type, TriggerType::Lava);
    // The child sees the parent's environment, as in JobServ.
    assert_eq!(
        chained[0].env.get("BOARD").map(String::as_str),
        Some("frdm_k64f")
    );
}
