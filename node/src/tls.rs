//! TLS everywhere: the rustls server config for the node's listener, the reqwest client that trusts the
//! cluster CA (node-to-node calls, forwarding), and a small PKI for dev and test clusters (a CA plus
//! certificates for 127.0.0.1/localhost) made with rcgen.
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("rustls: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("http client: {0}")]
    Client(#[from] reqwest::Error),
}

fn file_err(path: &Path, message: impl ToString) -> TlsError {
    TlsError::File {
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

/// Installs ring as rustls' process-wide crypto provider (idempotent).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub fn server_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, TlsError> {
    install_crypto_provider();
    let cert_pem = std::fs::read(cert).map_err(|e| file_err(cert, e))?;
    let key_pem = std::fs::read(key).map_err(|e| file_err(key, e))?;
    let certs = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(cert, e))?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| file_err(key, e))?
        .ok_or_else(|| file_err(key, "no private key found"))?;
    Ok(rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)?)
}

/// An HTTPS client that trusts the cluster CA (and only it).
pub fn client(ca_cert: &Path, timeout: std::time::Duration) -> Result<reqwest::Client, TlsError> {
    client_from(ca_cert, timeout, None)
}

/// Like `client`, with outgoing connections bound to `local` when given.
pub fn client_from(
    ca_cert: &Path,
    timeout: std::time::Duration,
    local: Option<std::net::IpAddr>,
) -> Result<reqwest::Client, TlsError> {
    install_crypto_provider();
    let pem = std::fs::read(ca_cert).map_err(|e| file_err(ca_cert, e))?;
    let ca = reqwest::Certificate::from_pem(&pem)?;
    Ok(reqwest::Client::builder()
        .use_rustls_tls()
        // HTTP/1.1, as before `object_store` (S3) turned reqwest's http2 feature on for the whole workspace:
        // one connection per transfer, no HTTP/2 flow-control window throttling bulk bodies.
        .http1_only()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .timeout(timeout)
        .pool_max_idle_per_host(16)
        .local_address(local)
        .build()?)
}

/// Files of a generated PKI.
pub struct DevPki {
    pub ca_cert: PathBuf,
    pub node_cert: PathBuf,
    pub node_key: PathBuf,
}

/// Creates (once) a CA in `dir` and a certificate for 127.0.0.1 and localhost signed by it, shared by
/// every node started from the same dir. Existing files are reused so restarts keep their identity.
pub fn ensure_dev_pki(dir: &Path) -> Result<DevPki, TlsError> {
    let pki = DevPki {
        ca_cert: dir.join("ca.pem"),
        node_cert: dir.join("node.pem"),
        node_key: dir.join("node-key.pem"),
    };
    if pki.ca_cert.exists() && pki.node_cert.exists() && pki.node_key.exists() {
        return Ok(pki);
    }
    std::fs::create_dir_all(dir).map_err(|e| file_err(dir, e))?;
    let ca_key = rcgen::KeyPair::generate()?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "JobServ dev CA");
    let ca = ca_params.self_signed(&ca_key)?;

    let node_key = rcgen::KeyPair::generate()?;
    let mut node_params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])?;
    node_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "jobserv node");
    let node = node_params.signed_by(&node_key, &ca, &ca_key)?;

    write_private(&pki.node_key, node_key.serialize_pem().as_bytes())?;
    std::fs::write(&pki.node_cert, node.pem()).map_err(|e| file_err(&pki.node_cert, e))?;
    std::fs::write(&pki.ca_cert, ca.pem()).map_err(|e| file_err(&pki.ca_cert, e))?;
    Ok(pki)
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| file_err(path, e))?;
    f.write_all(bytes).map_err(|e| file_err(path, e))
}
