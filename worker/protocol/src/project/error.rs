//! Errors of parsing, validating and expanding a project definition.
//!
//! Every error says *where*: a line and column for YAML syntax (and for limits that the loader hits at a known
//! position), a slash-separated path such as `triggers/git/runs/1/script` for schema and validation problems.
//! Paths name triggers by their `name` (or their index when the name is missing) and runs by their 0-based
//! index in the trigger's `runs` list. Validation collects every problem it finds rather than stopping at the
//! first, so a user fixes a file in one round trip; [`DefinitionError::issues`] gives them as data for an HTTP
//! layer to put in a JSON message.
use serde::{Deserialize, Serialize};
use std::fmt;

/// Where a problem is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Location {
    /// The document as a whole (e.g. its size).
    Document,
    /// A position in the YAML text; both 1-based.
    Position { line: usize, column: usize },
    /// A path in the document, e.g. `triggers/git/runs/1/script`.
    Path { path: String },
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Document => f.write_str("document"),
            Location::Position { line, column } => write!(f, "line {line}, column {column}"),
            Location::Path { path } => f.write_str(path),
        }
    }
}

/// One problem found in a project definition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Issue {
    pub location: Location,
    pub message: String,
}

impl Issue {
    pub fn at_path(path: impl Into<String>, message: impl Into<String>) -> Issue {
        Issue {
            location: Location::Path { path: path.into() },
            message: message.into(),
        }
    }
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

/// Which bound of [`super::Limits`] a document broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitKind {
    DocumentSize,
    NestingDepth,
    /// Too many nodes or scalar bytes once aliases are expanded (a "billion laughs" document).
    AliasExpansion,
    /// A trigger would create more runs than allowed (a runaway `loop-on` matrix).
    RunCount,
}

/// Everything that can go wrong with a project definition.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DefinitionError {
    /// A bound that keeps parsing cheap was exceeded; checked before or while loading, never after.
    #[error("{}{message}", position_prefix(*line, *column))]
    Limit {
        kind: LimitKind,
        message: String,
        line: Option<usize>,
        column: Option<usize>,
    },
    /// The text is not valid YAML (or not a single document).
    #[error("YAML syntax error at line {line}, column {column}: {message}")]
    Syntax {
        line: usize,
        column: usize,
        message: String,
    },
    /// The YAML is well formed but does not follow the schema or its rules.
    #[error("invalid project definition: {}", join_issues(.0))]
    Invalid(Vec<Issue>),
    /// `expand_trigger` (or a chained trigger) named a trigger the project does not have.
    #[error("no trigger named `{0}` in the project definition")]
    UnknownTrigger(String),
}

fn position_prefix(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(line), Some(column)) => format!("line {line}, column {column}: "),
        _ => String::new(),
    }
}

fn join_issues(issues: &[Issue]) -> String {
    issues
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl DefinitionError {
    /// The problems as data, one per location, whatever the variant (for a JSON error body).
    pub fn issues(&self) -> Vec<Issue> {
        match self {
            DefinitionError::Limit {
                message,
                line,
                column,
                ..
            } => vec![Issue {
                location: match (line, column) {
                    (Some(line), Some(column)) => Location::Position {
                        line: *line,
                        column: *column,
                    },
                    _ => Location::Document,
                },
                message: message.clone(),
            }],
            DefinitionError::Syntax {
                line,
                column,
                message,
            } => vec![Issue {
                location: Location::Position {
                    line: *line,
                    column: *column,
                },
                message: message.clone(),
            }],
            DefinitionError::Invalid(issues) => issues.clone(),
            DefinitionError::UnknownTrigger(name) => vec![Issue::at_path(
                "triggers",
                format!("no trigger named `{name}`"),
            )],
        }
    }

    /// Where the (first) problem is.
    pub fn location(&self) -> Location {
        self.issues()
            .into_iter()
            .next()
            .map(|issue| issue.location)
            .unwrap_or(Location::Document)
    }

    pub(crate) fn limit(kind: LimitKind, message: impl Into<String>) -> DefinitionError {
        DefinitionError::Limit {
            kind,
            message: message.into(),
            line: None,
            column: None,
        }
    }
}
