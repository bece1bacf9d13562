//! Which servers to call, with which token and CA. Precedence per setting: flag, environment (both through
//! clap), then `cluster.json` (the file `jobserv-node dev` and `cluster-test up` write; `shared/spec/cli.md`).
//! A relative `ca_cert` in `cluster.json` is taken relative to the file's directory.
use super::args::GlobalArgs;
use super::error::CliError;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Resolved settings; `servers` is never empty and holds base URLs without a trailing `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    pub servers: Vec<String>,
    pub token: Option<String>,
    pub ca_cert: Option<PathBuf>,
}

/// The part of `cluster.json` the CLI reads; other keys (pids, workers, data dirs) are ignored.
#[derive(Debug, Deserialize)]
struct ClusterJson {
    #[serde(default)]
    nodes: Vec<ClusterNode>,
    admin_token: Option<String>,
    ca_cert: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
struct ClusterNode {
    url: String,
}

impl Connection {
    pub fn resolve(args: &GlobalArgs) -> Result<Connection, CliError> {
        let cluster = match &args.cluster_json {
            Some(path) => Some(read_cluster_json(path)?),
            None => None,
        };
        let servers = match (&args.server, &cluster) {
            (Some(list), _) => parse_servers(list)?,
            (None, Some((c, _))) => parse_servers(
                &c.nodes
                    .iter()
                    .map(|n| n.url.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
            )?,
            (None, None) => return Err(CliError::NoServer),
        };
        let token = args
            .token
            .clone()
            .or_else(|| cluster.as_ref().and_then(|(c, _)| c.admin_token.clone()));
        let ca_cert = args.ca_cert.clone().or_else(|| {
            cluster
                .as_ref()
                .and_then(|(c, dir)| c.ca_cert.as_ref().map(|ca| dir.join(ca)))
        });
        Ok(Connection {
            servers,
            token,
            ca_cert,
        })
    }
}

/// Reads `cluster.json` (or `DIR/cluster.json` when given a directory); returns it with its directory.
fn read_cluster_json(path: &Path) -> Result<(ClusterJson, PathBuf), CliError> {
    let file = if path.is_dir() {
        path.join("cluster.json")
    } else {
        path.to_path_buf()
    };
    let text = std::fs::read_to_string(&file).map_err(|e| CliError::file(&file, e))?;
    let parsed: ClusterJson = serde_json::from_str(&text).map_err(|e| CliError::file(&file, e))?;
    let dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
    Ok((parsed, dir))
}

/// `URL[,URL…]` → base URLs; each must be http(s).
pub fn parse_servers(list: &str) -> Result<Vec<String>, CliError> {
    let servers: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_end_matches('/').to_string())
        .collect();
    if servers.is_empty() {
        return Err(CliError::NoServer);
    }
    if let Some(bad) = servers
        .iter()
        .find(|s| !(s.starts_with("https://") || s.starts_with("http://")))
    {
        return Err(CliError::Usage(format!(
            "--server: {bad:?} is not an http(s):// URL"
        )));
    }
    Ok(servers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_are_split_trimmed_and_checked() {
        let s = parse_servers(" https://a:1/, https://b:2 ,").map_err(|e| e.to_string());
        assert_eq!(
            s,
            Ok(vec!["https://a:1".to_string(), "https://b:2".to_string()])
        );
        assert!(matches!(
            parse_servers("a.example"),
            Err(CliError::Usage(_))
        ));
        assert!(matches!(parse_servers(" , "), Err(CliError::NoServer)));
    }

    #[test]
    fn cluster_json_fills_what_flags_leave_out() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let body = r#"{"nodes": [{"id": 1, "url": "https://127.0.0.1:1", "pid": 1, "data_dir": "x"},
                                 {"id": 2, "url": "https://127.0.0.1:2"}],
                       "workers": [], "admin_token": "tok", "ca_cert": "ca.pem"}"#;
        std::fs::write(dir.path().join("cluster.json"), body)?;
        let args = GlobalArgs {
            cluster_json: Some(dir.path().to_path_buf()),
            token: Some("mine".into()),
            ..Default::default()
        };
        let c = Connection::resolve(&args)?;
        assert_eq!(c.servers, ["https://127.0.0.1:1", "https://127.0.0.1:2"]);
        assert_eq!(c.token.as_deref(), Some("mine"));
        assert_eq!(c.ca_cert, Some(dir.path().join("ca.pem")));
        Ok(())
    }
}
