//! One file per command group; each exposes `run(ctx, command, out)`.
pub mod build;
pub mod cluster;
pub mod project;
pub mod run;
pub mod trigger;
pub mod validate;
pub mod worker;

use super::error::CliError;
use std::collections::BTreeMap;
use std::path::Path;

/// A definition file's text, with the path in the error.
pub fn read_text(path: &Path) -> Result<String, CliError> {
    std::fs::read_to_string(path).map_err(|e| CliError::file(path, e))
}

/// `--secret K=V` and `--secret-file K=PATH` merged (a file wins over an inline value of the same name).
pub fn secrets(
    inline: &[(String, String)],
    files: &[(String, String)],
) -> Result<BTreeMap<String, String>, CliError> {
    let mut out: BTreeMap<String, String> = inline.iter().cloned().collect();
    for (name, path) in files {
        out.insert(name.clone(), read_text(Path::new(path))?);
    }
    Ok(out)
}
