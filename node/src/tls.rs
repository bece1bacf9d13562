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
        .pool_idle_timeout(jobserv_protocol::http::CLIENT_POOL_IDLE)
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
    let (ca, ca_key) = new_ca("JobServ dev CA")?;
    write_node_cert(&pki, &ca, &ca_key, &[])?;
    std::fs::write(&pki.ca_cert, ca.pem()).map_err(|e| file_err(&pki.ca_cert, e))?;
    Ok(pki)
}

/// What `jobserv-node init-secrets` wrote (`true`) or found already there (`false`), by file name.
pub type Written = Vec<(PathBuf, bool)>;

/// A deployment's secrets in `dir` (`jobserv-node init-secrets`): a CA (`ca.pem`, `ca-key.pem`), one node
/// certificate for every name in `hosts` plus localhost and 127.0.0.1 (`node.pem`, `node-key.pem`; wildcards
/// such as `*.jobserv.ns.svc.cluster.local` are allowed), a random `cluster-secret` and `admin-token`.
/// Only missing files are made, so the command is safe to run at every start of a compose stack or
/// an init container: an existing CA keeps signing, an existing secret is never replaced.
pub fn init_secrets(dir: &Path, hosts: &[String]) -> Result<Written, TlsError> {
    use rand::RngCore;
    std::fs::create_dir_all(dir).map_err(|e| file_err(dir, e))?;
    let pki = DevPki {
        ca_cert: dir.join("ca.pem"),
        node_cert: dir.join("node.pem"),
        node_key: dir.join("node-key.pem"),
    };
    let ca_key_file = dir.join("ca-key.pem");
    let mut written = Vec::new();
    let (ca, ca_key) = if pki.ca_cert.exists() && ca_key_file.exists() {
        let key_pem =
            std::fs::read_to_string(&ca_key_file).map_err(|e| file_err(&ca_key_file, e))?;
        let ca_key = rcgen::KeyPair::from_pem(&key_pem)?;
        // The CA's parameters again with its key: an issuer with the file's subject and key (and so its
        // key identifier), which is all that signing a node certificate needs. Hence only CAs this command
        // made (subject `CLUSTER_CA_NAME`) can sign here.
        let ca = ca_params(CLUSTER_CA_NAME)?.self_signed(&ca_key)?;
        written.push((pki.ca_cert.clone(), false));
        (ca, ca_key)
    } else if pki.ca_cert.exists() {
        return Err(file_err(
            &ca_key_file,
            "ca.pem exists without its key: cannot sign a node certificate (remove ca.pem or add ca-key.pem)",
        ));
    } else {
        let (ca, ca_key) = new_ca(CLUSTER_CA_NAME)?;
        write_private(&ca_key_file, ca_key.serialize_pem().as_bytes())?;
        std::fs::write(&pki.ca_cert, ca.pem()).map_err(|e| file_err(&pki.ca_cert, e))?;
        written.push((pki.ca_cert.clone(), true));
        (ca, ca_key)
    };
    let have_cert = pki.node_cert.exists() && pki.node_key.exists();
    if !have_cert {
        write_node_cert(&pki, &ca, &ca_key, hosts)?;
    }
    written.push((pki.node_cert.clone(), !have_cert));
    for name in ["cluster-secret", "admin-token"] {
        let path = dir.join(name);
        let exists = path.exists();
        if !exists {
            let mut bytes = [0u8; 32];
            rand::thread_rng().fill_bytes(&mut bytes);
            write_private(&path, format!("{}\n", hex::encode(bytes)).as_bytes())?;
        }
        written.push((path, !exists));
    }
    Ok(written)
}

const CLUSTER_CA_NAME: &str = "JobServ cluster CA";

fn new_ca(name: &str) -> Result<(rcgen::Certificate, rcgen::KeyPair), TlsError> {
    let ca_key = rcgen::KeyPair::generate()?;
    Ok((ca_params(name)?.self_signed(&ca_key)?, ca_key))
}

fn ca_params(name: &str) -> Result<rcgen::CertificateParams, TlsError> {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    // Ten years: rotating the CA means restarting every node and worker with a new one (docs/operations.md).
    ca_params.not_after = rcgen::date_time_ymd(2036, 1, 1);
    Ok(ca_params)
}

/// A node certificate for `hosts` plus localhost and 127.0.0.1, signed by the CA.
fn write_node_cert(
    pki: &DevPki,
    ca: &rcgen::Certificate,
    ca_key: &rcgen::KeyPair,
    hosts: &[String],
) -> Result<(), TlsError> {
    let mut names: Vec<String> = hosts.to_vec();
    for local in ["localhost", "127.0.0.1"] {
        if !names.iter().any(|n| n == local) {
            names.push(local.to_string());
        }
    }
    let node_key = rcgen::KeyPair::generate()?;
    let mut node_params = rcgen::CertificateParams::new(names)?;
    node_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "jobserv node");
    let node = node_params.signed_by(&node_key, ca, ca_key)?;
    write_private(&pki.node_key, node_key.serialize_pem().as_bytes())?;
    std::fs::write(&pki.node_cert, node.pem()).map_err(|e| file_err(&pki.node_cert, e))
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
