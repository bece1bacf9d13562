//! `jobserv validate PROJECT.yml`: the server's own parser, offline. Prints the per-trigger run summary, or
//! fails with every problem found, each with its line/column or path.
use crate::error::CliError;
use crate::{output, Outcome};
use jobserv_protocol::project::parse_project;
use std::io::Write;
use std::path::Path;

pub fn run(path: &Path, json: bool, out: &mut dyn Write) -> Result<Outcome, CliError> {
    let text = super::read_text(path)?;
    let def = parse_project(&text).map_err(|e| CliError::Definition {
        path: path.display().to_string(),
        issues: e.issues(),
    })?;
    let summary = def.summarize();
    let rendered = if json {
        output::pretty(&serde_json::to_value(&summary).map_err(std::io::Error::other)?)
    } else {
        format!("{}: valid\n{summary}", path.display())
    };
    out.write_all(rendered.as_bytes())?;
    Ok(Outcome::Success)
}
