//! HTTPS clients for the CLI: one trusting only a cluster's own CA (`--ca`, `cluster.json`), one trusting the
//! public roots (a cluster behind a publicly certified load balancer). rustls with ring, HTTP/1.1.
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("http client: {0}")]
    Client(#[from] reqwest::Error),
}

/// Installs ring as rustls' process-wide crypto provider (idempotent).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A client that trusts the cluster CA in `ca_cert` (PEM) and only it.
pub fn cluster_client(
    ca_cert: &Path,
    timeout: std::time::Duration,
) -> Result<reqwest::Client, TlsError> {
    install_crypto_provider();
    let pem = std::fs::read(ca_cert).map_err(|e| TlsError::File {
        path: ca_cert.display().to_string(),
        message: e.to_string(),
    })?;
    let ca = reqwest::Certificate::from_pem(&pem)?;
    Ok(reqwest::Client::builder()
        .use_rustls_tls()
        .http1_only()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .timeout(timeout)
        .pool_idle_timeout(jobserv_protocol::http::CLIENT_POOL_IDLE)
        .build()?)
}
