//! Plain-text rendering: aligned tables, timestamps, and JSON for `--json`. Pure functions over strings so
//! that every command's output can be unit tested without a server.
use serde_json::Value;

/// Columns padded to their widest cell; the last column is not padded.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i == last {
                    c.to_string()
                } else {
                    format!("{c:<w$}", w = widths[i])
                }
            })
            .collect();
        padded.join("  ").trim_end().to_string()
    };
    let mut out = line(header.to_vec());
    out.push('\n');
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

/// A JSON value as a table cell: strings bare, null as `-`, arrays comma-joined.
pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".to_string(),
        Value::String(s) if s.is_empty() => "-".to_string(),
        Value::String(s) => s.clone(),
        Value::Array(items) if items.is_empty() => "-".to_string(),
        Value::Array(items) => items.iter().map(cell).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// A timestamp of the API (JobServ's ISO 8601 string; milliseconds since the epoch from older nodes).
fn millis(v: &Value) -> Option<u64> {
    v.as_u64()
        .or_else(|| v.as_str().and_then(jobserv_protocol::time::ms_from_iso))
}

/// An API timestamp as `YYYY-MM-DD HH:MM:SS` UTC; `-` when absent.
pub fn time(v: &Value) -> String {
    match millis(v) {
        Some(ms) => jobserv_protocol::time::utc_text(ms),
        None => "-".to_string(),
    }
}

/// Seconds between two millisecond timestamps, e.g. `42s`; `-` when either is missing.
pub fn duration(start: &Value, end: &Value) -> String {
    match (millis(start), millis(end)) {
        (Some(s), Some(e)) if e >= s => format!("{}s", (e - s) / 1000),
        _ => "-".to_string(),
    }
}

pub fn pretty(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string());
    s.push('\n');
    s
}

/// `key: value` lines, keys aligned.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    pairs
        .iter()
        .map(|(k, v)| format!("{:<width$} {v}\n", format!("{k}:"), width = width))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn table_aligns_columns() {
        let t = table(
            &["NAME", "STATUS"],
            &[
                vec!["unit".into(), "PASSED".into()],
                vec!["lint-abc".into(), "QUEUED".into()],
            ],
        );
        assert_eq!(t, "NAME      STATUS\nunit      PASSED\nlint-abc  QUEUED\n");
    }

    #[test]
    fn timestamps_render_in_utc() {
        assert_eq!(time(&json!(0)), "1970-01-01 00:00:00");
        assert_eq!(time(&json!(1_709_210_096_000u64)), "2024-02-29 12:34:56");
        assert_eq!(time(&Value::Null), "-");
        assert_eq!(
            time(&json!("2024-02-29T12:34:56.000000+00:00")),
            "2024-02-29 12:34:56"
        );
        assert_eq!(
            duration(
                &json!("2024-02-29T12:34:56.000000+00:00"),
                &json!("2024-02-29T12:35:38.500000+00:00")
            ),
            "42s"
        );
    }

    #[test]
    fn cells_show_absent_values_as_dashes() {
        assert_eq!(cell(&json!(null)), "-");
        assert_eq!(cell(&json!(["a", "b"])), "a,b");
        assert_eq!(cell(&json!(3)), "3");
    }
}
