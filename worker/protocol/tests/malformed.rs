//! Bad input gets a clear error that says where, quickly and in bounded memory.
use jobserv_protocol::project::{
    parse_project, parse_project_with_limits, DefinitionError, LimitKind, Limits, Location,
};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const GOOD: &str = "\
timeout: 5
triggers:
  - name: git
    type: git_poller
    runs:
      - name: one
        container: busybox
        host-tag: amd64
        script: s
      - name: two
        container: busybox
        host-tag: amd64
        script: s
scripts:
  s: |
    #!/bin/sh
    true
";

fn invalid(yaml: &str) -> Vec<(String, String)> {
    match parse_project(yaml) {
        Err(DefinitionError::Invalid(issues)) => issues
            .into_iter()
            .map(|i| (i.location.to_string(), i.message))
            .collect(),
        other => panic!("expected a validation error, got {other:?}"),
    }
}

fn has(issues: &[(String, String)], path: &str, needle: &str) -> bool {
    issues.iter().any(|(p, m)| p == path && m.contains(needle))
}

#[test]
fn the_base_document_is_valid() {
    let def = parse_project(GOOD).expect("valid");
    assert_eq!(def.triggers[0].runs.len(), 2);
}

#[test]
fn syntax_error_names_line_and_column() {
    let yaml = "timeout: 5\ntriggers:\n  - name: git\n   type: [unclosed\n";
    let err = parse_project(yaml).expect_err("syntax error");
    match &err {
        DefinitionError::Syntax { line, column, .. } => {
            assert_eq!(*line, 4, "{err}");
            assert!(*column >= 1, "{err}");
        }
        other => panic!("expected a syntax error, got {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.starts_with("YAML syntax error at line 4, column"),
        "{text}"
    );
    assert!(matches!(err.location(), Location::Position { line: 4, .. }));
}

#[test]
fn unknown_key_names_its_path() {
    let yaml = GOOD.replacen(
        "        script: s\n      - name: two",
        "        script: s\n      - name: two\n        scriptt: s",
        1,
    );
    let issues = invalid(&yaml);
    assert!(
        has(&issues, "triggers/git/runs/1/scriptt", "unknown key"),
        "{issues:?}"
    );
    let err = parse_project(&yaml).expect_err("invalid");
    assert!(
        err.to_string()
            .contains("triggers/git/runs/1/scriptt: unknown key"),
        "{err}"
    );
    assert_eq!(
        err.location(),
        Location::Path {
            path: "triggers/git/runs/1/scriptt".into()
        }
    );

    let issues = invalid(&format!("{GOOD}colour: red\n"));
    assert!(has(&issues, "colour", "unknown key"), "{issues:?}");
}

#[test]
fn wrong_types_name_their_path() {
    let issues = invalid(&GOOD.replace("timeout: 5", "timeout: five"));
    assert!(has(&issues, "timeout", "expected an integer"), "{issues:?}");
    let issues = invalid(&GOOD.replacen("container: busybox", "container: [a, b]", 1));
    assert!(
        has(
            &issues,
            "triggers/git/runs/0/container",
            "expected a string, found a list"
        ),
        "{issues:?}"
    );
    let issues = invalid(&GOOD.replace("timeout: 5\n", "timeout: 5\nparams:\n  V: 3.10\n"));
    assert!(has(&issues, "params/V", "quote it"), "{issues:?}");
}

#[test]
fn required_keys_are_required() {
    let issues = invalid("triggers:\n  - name: x\n    type: simple\n    runs:\n      - name: r\n");
    assert!(has(&issues, "timeout", "required"), "{issues:?}");
    assert!(
        has(&issues, "triggers/x/runs/0/container", "required"),
        "{issues:?}"
    );
    assert!(
        has(&issues, "triggers/x/runs/0/host-tag", "required"),
        "{issues:?}"
    );
    assert!(
        has(
            &issues,
            "triggers/x/runs/0",
            "one of `script` or `script-repo`"
        ),
        "{issues:?}"
    );
    let issues = invalid("timeout: 5\ntriggers:\n  - type: simple\n");
    assert!(has(&issues, "triggers/0/name", "required"), "{issues:?}");
    assert!(has(&issues, "triggers/0/runs", "required"), "{issues:?}");
}

#[test]
fn script_and_script_repo_are_exclusive() {
    let yaml = GOOD.replacen(
        "        script: s\n",
        "        script: s\n        script-repo: {name: r, path: p}\n",
        1,
    );
    let issues = invalid(&yaml);
    assert!(
        has(&issues, "triggers/git/runs/0", "mutually exclusive"),
        "{issues:?}"
    );
}

#[test]
fn missing_script_names_it() {
    let yaml = GOOD.replacen("script: s", "script: compile", 1);
    let issues = invalid(&yaml);
    assert!(
        has(&issues, "triggers/git/runs/0/script", "`compile`"),
        "{issues:?}"
    );
    let yaml = GOOD.replacen("script: s", "script-repo: {name: tools, path: x.sh}", 1);
    let issues = invalid(&yaml);
    assert!(
        has(&issues, "triggers/git/runs/0/script-repo/name", "`tools`"),
        "{issues:?}"
    );
}

#[test]
fn unknown_trigger_type_is_an_error() {
    let issues = invalid(&GOOD.replace("git_poller", "jenkins"));
    assert!(
        has(
            &issues,
            "triggers/git/type",
            "unknown trigger type `jenkins`"
        ),
        "{issues:?}"
    );
}

#[test]
fn trigger_names_are_unique_and_short() {
    let second = "  - name: git\n    type: simple\n    runs:\n      - {name: x, container: c, host-tag: h, script: s}\n";
    let yaml = GOOD.replace("scripts:", &format!("{second}scripts:"));
    let issues = invalid(&yaml);
    assert!(
        has(&issues, "triggers/git/name", "duplicate trigger name"),
        "{issues:?}"
    );
    let long = "n".repeat(81);
    let issues = invalid(&GOOD.replace("name: git", &format!("name: {long}")));
    assert!(
        has(&issues, &format!("triggers/{long}/name"), "longer than 80"),
        "{issues:?}"
    );
    assert!(
        parse_project(&GOOD.replace("name: git", &format!("name: {}", "n".repeat(80)))).is_ok()
    );
}

#[test]
fn run_names_must_be_unique_after_expansion() {
    let issues = invalid(&GOOD.replace("name: two", "name: one"));
    assert!(
        has(&issues, "triggers/git/runs/1/name", "`one`"),
        "{issues:?}"
    );
    // A loop whose name lacks {loop} makes the same name twice.
    let yaml = GOOD.replacen(
        "        script: s\n",
        "        script: s\n        loop-on:\n          - param: A\n            values: [x, y]\n",
        1,
    );
    let issues = invalid(&yaml);
    assert!(
        has(&issues, "triggers/git/runs/0/name", "{loop}"),
        "{issues:?}"
    );
}

#[test]
fn triggers_must_exist_and_chains_are_bounded() {
    let chain = |edges: &[(&str, &str)]| {
        let mut yaml = String::from("timeout: 5\nscripts: {s: x}\ntriggers:\n");
        for name in ["a", "b", "c", "d"] {
            yaml += &format!("  - name: {name}\n    type: simple\n    runs:\n      - {{name: {name}-run, container: c, host-tag: h, script: s}}\n");
            let kids: Vec<&str> = edges
                .iter()
                .filter(|(f, _)| *f == name)
                .map(|(_, t)| *t)
                .collect();
            if !kids.is_empty() {
                yaml += "    triggers:\n";
                for k in kids {
                    yaml += &format!("      - name: {k}\n");
                }
            }
        }
        yaml
    };
    assert!(
        parse_project(&chain(&[("a", "b"), ("b", "c")])).is_ok(),
        "depth 2 is allowed"
    );
    let issues = invalid(&chain(&[("a", "b"), ("b", "c"), ("c", "d")]));
    assert!(
        has(&issues, "triggers/a/triggers", "deeper than 2"),
        "{issues:?}"
    );
    let issues = invalid(&chain(&[("a", "b"), ("b", "a")]));
    assert!(
        has(&issues, "triggers/a/triggers", "trigger cycle: a → b → a"),
        "{issues:?}"
    );
    let issues = invalid(&chain(&[("a", "a")]));
    assert!(has(&issues, "triggers/a/triggers", "cycle"), "{issues:?}");
    let issues = invalid(&chain(&[("a", "zz")]));
    assert!(
        has(
            &issues,
            "triggers/a/triggers/0/name",
            "no trigger named `zz`"
        ),
        "{issues:?}"
    );
}

#[test]
fn run_names_format_only_knows_name_and_loop() {
    let base = "timeout: 5\nscripts: {s: x}\ntriggers:\n  - name: t\n    type: simple\n    runs:\n      - {name: r, container: c, host-tag: h, script: s}\n  - name: a\n    type: simple\n    runs:\n      - name: r\n        container: c\n        host-tag: h\n        script: s\n        triggers:\n          - name: t\n            run-names: \"FMT\"\n";
    let issues = invalid(&base.replace("FMT", "{name}-{board}"));
    assert!(
        has(&issues, "triggers/a/runs/0/triggers/0/run-names", "{board}"),
        "{issues:?}"
    );
    let issues = invalid(&base.replace("FMT", "{name}-{loop}"));
    assert!(
        has(&issues, "triggers/a/runs/0/triggers/0/run-names", "loop-on"),
        "{issues:?}"
    );
    assert!(parse_project(&base.replace("FMT", "{name}-after")).is_ok());
}

#[test]
fn regexes_must_compile_and_have_their_groups() {
    let yaml = GOOD.replacen(
        "        script: s\n",
        "        script: s\n        test-grepping:\n          result-pattern: \"(?P<name>[\"\n        console-progress:\n          progress-pattern: \"(?P<current>\\\\d+)\"\n",
        1,
    );
    let issues = invalid(&yaml);
    assert!(
        has(
            &issues,
            "triggers/git/runs/0/test-grepping/result-pattern",
            "invalid regular expression"
        ),
        "{issues:?}"
    );
    assert!(
        has(
            &issues,
            "triggers/git/runs/0/console-progress/progress-pattern",
            "`(?P<total>...)`"
        ),
        "{issues:?}"
    );
}

#[test]
fn email_needs_users() {
    let issues = invalid(&format!("{GOOD}email:\n  only_failures: true\n"));
    assert!(has(&issues, "email/users", "required"), "{issues:?}");
    let issues = invalid(&format!("{GOOD}email:\n  users: not-an-address\n"));
    assert!(
        has(&issues, "email/users", "not an email address"),
        "{issues:?}"
    );
}

#[test]
fn webhooks_are_checked() {
    let hooks =
        |list: &str| GOOD.replace("    runs:\n", &format!("    webhooks:\n{list}    runs:\n"));
    let issues = invalid(&hooks("      - url: https://x\n"));
    assert!(
        has(&issues, "triggers/git/webhooks/0/secret_name", "required"),
        "{issues:?}"
    );
    let issues = invalid(&hooks("      - url: https://x\n        secret_name: k\n      - url: ftp://x\n        secret_name: k\n"));
    assert!(
        has(&issues, "triggers/git/webhooks/1/url", "http"),
        "{issues:?}"
    );
    let def = parse_project(&hooks(
        "      - url: https://x\n        secret_name: k\n        only_failures: yes\n",
    ))
    .expect("valid");
    assert!(
        def.triggers[0].webhooks[0].only_failures,
        "PyYAML `yes` is true"
    );
    assert!(def.required_secrets().contains("k"));
}

#[test]
fn yaml_bomb_is_rejected_quickly() {
    // Nine levels of nine aliases: 9^9 (387 million) strings if expanded.
    let mut yaml = String::from("a0: &a0 [\"lol\"]\n");
    for level in 1..=9 {
        let refs = vec![format!("*a{}", level - 1); 9].join(", ");
        yaml += &format!("a{level}: &a{level} [{refs}]\n");
    }
    yaml += "timeout: 5\ntriggers: *a9\n";
    let start = Instant::now();
    let err = parse_project(&yaml).expect_err("bomb");
    let took = start.elapsed();
    assert!(
        matches!(
            err,
            DefinitionError::Limit {
                kind: LimitKind::AliasExpansion,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(took < Duration::from_secs(2), "took {took:?}");
}

#[test]
fn a_wide_alias_repeated_is_bounded_by_our_node_budget() {
    // Few alias jumps (so serde_yaml's own jump counter does not fire) but a million nodes once expanded.
    let wide = vec!["1"; 5000].join(", ");
    let yaml = format!("a: &a [{wide}]\nb: [{}]\n", vec!["*a"; 200].join(", "));
    let start = Instant::now();
    let err = parse_project(&yaml).expect_err("a million nodes");
    assert!(
        matches!(
            err,
            DefinitionError::Limit {
                kind: LimitKind::AliasExpansion,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("more than 200000 values"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[test]
fn a_big_alias_string_repeated_is_bounded_by_bytes() {
    let big = "x".repeat(200_000);
    let mut yaml = format!("s: &s \"{big}\"\nl: [");
    yaml += &vec!["*s"; 100].join(", ");
    yaml += "]\n";
    let err = parse_project(&yaml).expect_err("20 MB of expansion");
    assert!(
        matches!(
            err,
            DefinitionError::Limit {
                kind: LimitKind::AliasExpansion,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn oversized_document_is_rejected_before_parsing() {
    let yaml = format!("{GOOD}description: \"{}\"\n", "x".repeat(1024 * 1024));
    let err = parse_project(&yaml).expect_err("too big");
    assert!(
        matches!(
            err,
            DefinitionError::Limit {
                kind: LimitKind::DocumentSize,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.location(), Location::Document);
    // A smaller limit applies too; an unparseable body proves nothing was parsed.
    let limits = Limits {
        max_document_bytes: 10,
        ..Limits::default()
    };
    let err = parse_project_with_limits("{{{{{{{{{{{{{{{{{{{{", &limits).expect_err("too big");
    assert!(
        matches!(
            err,
            DefinitionError::Limit {
                kind: LimitKind::DocumentSize,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn deep_nesting_is_rejected() {
    let yaml = format!("timeout: 5\nx: {}{}\n", "[".repeat(100), "]".repeat(100));
    let err = parse_project(&yaml).expect_err("too deep");
    match err {
        DefinitionError::Limit {
            kind: LimitKind::NestingDepth,
            line,
            ..
        } => assert_eq!(line, Some(2)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn runaway_matrix_is_rejected() {
    let mut loops = String::from("        loop-on:\n");
    for p in 0..8 {
        loops += &format!(
            "          - param: P{p}\n            values: [a, b, c, d, e, f, g, h, i, j]\n"
        );
    }
    let yaml = GOOD.replacen("name: one", "name: one-{loop}", 1).replacen(
        "        script: s\n",
        &format!("        script: s\n{loops}"),
        1,
    );
    let start = Instant::now();
    let err = parse_project(&yaml).expect_err("10^8 runs");
    assert!(
        matches!(
            err,
            DefinitionError::Limit {
                kind: LimitKind::RunCount,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[test]
fn empty_and_multi_document_inputs_are_errors() {
    assert!(parse_project("").is_err());
    assert!(parse_project("# only a comment\n").is_err());
    let err = parse_project(&format!("{GOOD}---\ntimeout: 1\n")).expect_err("two documents");
    assert!(matches!(err, DefinitionError::Syntax { .. }), "{err:?}");
    let err = parse_project("- a\n- b\n").expect_err("not a mapping");
    assert!(err.to_string().contains("expected a mapping"), "{err}");
}

#[test]
fn unknown_trigger_in_expand_is_an_error() {
    let def = parse_project(GOOD).expect("valid");
    let err = def
        .expand_trigger("nope", &BTreeMap::new())
        .expect_err("no such trigger");
    assert_eq!(err, DefinitionError::UnknownTrigger("nope".into()));
}

#[test]
fn errors_serialize_for_an_http_layer() {
    let err = parse_project("timeout: 5\ntriggers: [\n").expect_err("syntax");
    let json = serde_json::to_value(err.issues()).expect("json");
    assert_eq!(json[0]["location"]["kind"], "position");
    assert!(json[0]["location"]["line"].as_u64().is_some());
    let err = parse_project(&format!("{GOOD}colour: red\n")).expect_err("unknown");
    let json = serde_json::to_value(err.issues()).expect("json");
    assert_eq!(
        json[0]["location"],
        serde_json::json!({"kind": "path", "path": "colour"})
    );
    assert_eq!(json[0]["message"], "unknown key");
}

#[test]
fn retention_is_checked_and_named() {
    let with = |r: &str| GOOD.replacen("timeout: 5\n", &format!("timeout: 5\nretention:\n{r}"), 1);
    let def = parse_project(&with("  builds: 100\n  days: 30\n")).expect("valid retention");
    let retention = def.retention.expect("retention");
    assert_eq!((retention.builds, retention.days), (Some(100), Some(30)));
    assert!(
        parse_project(GOOD).expect("valid").retention.is_none(),
        "absent: keep every build"
    );
    let issues = invalid(&with("  builds: 0\n"));
    assert!(
        has(&issues, "retention/builds", "positive integer"),
        "{issues:?}"
    );
    let issues = invalid(&with("  days: ten\n"));
    assert!(
        has(&issues, "retention/days", "positive integer"),
        "{issues:?}"
    );
    let issues = invalid(&with("  keep: 3\n"));
    assert!(has(&issues, "retention/keep", "unknown key"), "{issues:?}");
    assert!(
        has(&issues, "retention", "set `builds`, `days` or both"),
        "{issues:?}"
    );
}
