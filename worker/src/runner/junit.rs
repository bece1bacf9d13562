//! Turns JUnit XML files (`/archive/junit.xml*`) into [`TestReport`]s: one report per `<testsuite>`, one result
//! per `<testcase>`. A file that does not parse becomes a FAILED report naming the file and the XML error, so a
//! broken report is visible rather than silently ignored.
use jobserv_protocol::api::{TestReport, TestResult};
use jobserv_protocol::RunStatus;
use std::path::Path;

/// The archive files JobServ treats as JUnit reports: `junit.xml`, `junit.xml.unit`, … at the archive root.
pub fn is_junit_file(name: &str) -> bool {
    name.starts_with("junit.xml")
}

pub fn parse_file(path: &Path) -> Vec<TestReport> {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "junit.xml".to_string());
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text, &file_name),
        Err(err) => vec![broken(&file_name, &format!("cannot read: {err}"))],
    }
}

/// `default_name` names a suite without a `name` attribute (and the report of an unparsable file).
pub fn parse(xml: &str, default_name: &str) -> Vec<TestReport> {
    let doc = match roxmltree::Document::parse(xml) {
        Ok(doc) => doc,
        Err(err) => return vec![broken(default_name, &format!("invalid JUnit XML: {err}"))],
    };
    let root = doc.root_element();
    let suites: Vec<roxmltree::Node> = if root.has_tag_name("testsuite") {
        vec![root]
    } else {
        root.descendants()
            .filter(|n| n.has_tag_name("testsuite"))
            .collect()
    };
    suites
        .into_iter()
        .map(|suite| {
            let name = suite
                .attribute("name")
                .filter(|n| !n.is_empty())
                .unwrap_or(default_name)
                .to_string();
            let results: Vec<TestResult> = suite
                .children()
                .filter(|n| n.has_tag_name("testcase"))
                .map(test_case)
                .collect();
            TestReport {
                name,
                status: overall(&results),
                results,
            }
        })
        .collect()
}

fn test_case(case: roxmltree::Node) -> TestResult {
    let name = match (case.attribute("classname"), case.attribute("name")) {
        (Some(class), Some(name)) if !class.is_empty() => format!("{class}.{name}"),
        (_, Some(name)) => name.to_string(),
        (Some(class), None) => class.to_string(),
        (None, None) => "unnamed".to_string(),
    };
    let mut status = "PASSED";
    let mut context = None;
    for child in case.children().filter(|n| n.is_element()) {
        match child.tag_name().name() {
            "failure" | "error" => {
                status = "FAILED";
                let message = child.attribute("message").unwrap_or_default();
                let text = child.text().unwrap_or_default().trim();
                let joined = [message, text]
                    .iter()
                    .filter(|s| !s.is_empty())
                    .copied()
                    .collect::<Vec<_>>()
                    .join("\n");
                context = (!joined.is_empty()).then_some(joined);
            }
            "skipped" if status != "FAILED" => status = "SKIPPED",
            _ => {}
        }
    }
    TestResult {
        name,
        status: status.to_string(),
        context,
    }
}

/// A report fails when any of its results failed (JobServ's rule).
pub fn overall(results: &[TestResult]) -> RunStatus {
    if results.iter().any(|r| r.status == "FAILED") {
        RunStatus::Failed
    } else {
        RunStatus::Passed
    }
}

fn broken(name: &str, message: &str) -> TestReport {
    TestReport {
        name: name.to_string(),
        status: RunStatus::Failed,
        results: vec![TestResult {
            name: name.to_string(),
            status: "FAILED".to_string(),
            context: Some(message.to_string()),
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suites_cases_failures_and_skips_are_read() {
        let xml = r#"<?xml version="1.0"?>
<testsuites>
  <testsuite name="unit" tests="3">
    <testcase classname="math" name="adds"/>
    <testcase classname="math" name="divides"><failure message="div by zero">trace</failure></testcase>
    <testcase name="later"><skipped/></testcase>
  </testsuite>
  <testsuite name="lint"><testcase name="fmt"/></testsuite>
</testsuites>"#;
        let reports = parse(xml, "junit.xml");
        assert_eq!(reports.len(), 2);
        assert_eq!(reports[0].name, "unit");
        assert_eq!(reports[0].status, RunStatus::Failed);
        assert_eq!(reports[0].results[0].name, "math.adds");
        assert_eq!(reports[0].results[0].status, "PASSED");
        assert_eq!(reports[0].results[1].status, "FAILED");
        assert_eq!(
            reports[0].results[1].context.as_deref(),
            Some("div by zero\ntrace")
        );
        assert_eq!(reports[0].results[2].status, "SKIPPED");
        assert_eq!(reports[1].status, RunStatus::Passed);
    }

    #[test]
    fn bare_testsuite_root_and_broken_xml() {
        let reports = parse(
            r#"<testsuite><testcase name="a"/></testsuite>"#,
            "junit.xml.x",
        );
        assert_eq!(reports[0].name, "junit.xml.x");
        let broken = parse("<testsuite>", "junit.xml");
        assert_eq!(broken[0].status, RunStatus::Failed);
        assert!(broken[0].results[0]
            .context
            .as_deref()
            .unwrap_or("")
            .contains("invalid JUnit XML"));
    }
}
