//! `test-grepping`: turns console lines into tests. `test-pattern` (optional) starts a new test named by its
//! `name` group; `result-pattern` records a result from its `name` and `result` groups; `fixupdict` maps the
//! printed result (`ok`, `FAIL`, …) to PASSED/FAILED/SKIPPED. Without a `test-pattern`, results go to one test
//! named `default`, as in JobServ. Lines are scanned after secret masking.
use super::junit::overall;
use jobserv_protocol::api::{TestReport, TestResult};
use jobserv_protocol::rundef::TestGrepping;
use regex::Regex;
use std::collections::BTreeMap;

pub struct TestGrepper {
    test_pattern: Option<Regex>,
    result_pattern: Regex,
    fixupdict: BTreeMap<String, String>,
    tests: Vec<(String, Vec<TestResult>)>,
}

impl TestGrepper {
    pub fn new(spec: &TestGrepping) -> Result<Self, regex::Error> {
        Ok(TestGrepper {
            test_pattern: spec.test_pattern.as_deref().map(Regex::new).transpose()?,
            result_pattern: Regex::new(&spec.result_pattern)?,
            fixupdict: spec.fixupdict.clone(),
            tests: Vec::new(),
        })
    }

    pub fn feed_line(&mut self, line: &str) {
        if let Some(caps) = self.test_pattern.as_ref().and_then(|p| p.captures(line)) {
            let name = caps.name("name").map_or("default", |m| m.as_str());
            self.tests.push((name.to_string(), Vec::new()));
            return;
        }
        let Some(caps) = self.result_pattern.captures(line) else {
            return;
        };
        let (Some(name), Some(result)) = (caps.name("name"), caps.name("result")) else {
            return;
        };
        let raw = result.as_str();
        let fixed = self.fixupdict.get(raw).map_or(raw, String::as_str);
        let result = TestResult {
            name: name.as_str().trim().to_string(),
            status: normalise(fixed),
            context: None,
        };
        match self.tests.last_mut() {
            Some((_, results)) => results.push(result),
            None => self.tests.push(("default".to_string(), vec![result])),
        }
    }

    pub fn into_reports(self) -> Vec<TestReport> {
        self.tests
            .into_iter()
            .map(|(name, results)| TestReport {
                name,
                status: overall(&results),
                results,
            })
            .collect()
    }
}

/// The names JobServ's examples print, mapped onto the three wire values. Anything unknown counts as FAILED:
/// an unrecognised result is more likely a crash than a success.
fn normalise(result: &str) -> String {
    match result.trim().to_ascii_uppercase().as_str() {
        "PASSED" | "PASS" | "OK" | "SUCCESS" => "PASSED",
        "SKIPPED" | "SKIP" | "XFAIL" => "SKIPPED",
        _ => "FAILED",
    }
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_group_under_tests_and_are_fixed_up() {
        let spec = TestGrepping {
            test_pattern: Some(r"^Starting suite (?P<name>\w+)".into()),
            result_pattern: r"^(?P<name>\S+): (?P<result>\w+)$".into(),
            fixupdict: [("good".to_string(), "PASSED".to_string())].into(),
        };
        let mut g = TestGrepper::new(&spec).unwrap();
        for line in [
            "t0: good",
            "Starting suite net",
            "t1: good",
            "t2: FAIL",
            "noise",
            "Starting suite io",
            "t3: skip",
        ] {
            g.feed_line(line);
        }
        let reports = g.into_reports();
        let names: Vec<_> = reports.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["default", "net", "io"]);
        assert_eq!(reports[1].status, jobserv_protocol::RunStatus::Failed);
        assert_eq!(reports[1].results[0].status, "PASSED");
        assert_eq!(reports[2].results[0].status, "SKIPPED");
    }
}
