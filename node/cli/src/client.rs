//! An HTTPS client for the node API with fail-over across the cluster's URLs.
//!
//! Fail-over rule: a request moves on to the next URL only when it cannot have had an effect: the connection
//! failed (refused, reset before sending, TLS handshake), or, for a read, the node answered 502/503 (no
//! leader, no quorum) or timed out. A write that timed out is reported, not repeated, because it may have
//! committed (a second `build create` would make a second build). The URL that answered last is tried first
//! next time, so a session sticks to a healthy node.
use super::connection::Connection;
use super::error::CliError;
use reqwest::{Method, Response, StatusCode};
use serde_json::Value;
use std::cell::Cell;
use std::time::Duration;

/// Whole-request timeout for ordinary calls; streams (`--follow`) set their own.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// A live log can stay open as long as a run lasts.
pub const STREAM_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);
/// Longest excerpt of a non-JSON error body quoted in a message.
const MAX_ERROR_BODY: usize = 300;

pub struct Client {
    http: reqwest::Client,
    servers: Vec<String>,
    preferred: Cell<usize>,
    token: Option<String>,
}

/// One request, rebuilt for each URL tried.
#[derive(Clone, Debug)]
pub struct Call<'a> {
    pub method: Method,
    pub path: &'a str,
    pub body: Option<&'a Value>,
    pub headers: Vec<(&'static str, String)>,
    pub timeout: Duration,
}

impl<'a> Call<'a> {
    pub fn new(method: Method, path: &'a str) -> Call<'a> {
        Call {
            method,
            path,
            body: None,
            headers: Vec::new(),
            timeout: REQUEST_TIMEOUT,
        }
    }

    fn is_read(&self) -> bool {
        self.method == Method::GET || self.method == Method::HEAD
    }
}

impl Client {
    pub fn new(conn: &Connection) -> Result<Client, CliError> {
        let http = match &conn.ca_cert {
            Some(ca) => crate::tls::cluster_client(ca, REQUEST_TIMEOUT)?,
            None => public_roots_client()?,
        };
        Ok(Client {
            http,
            servers: conn.servers.clone(),
            preferred: Cell::new(0),
            token: conn.token.clone(),
        })
    }

    /// The URL the next request goes to first (for messages).
    pub fn current_server(&self) -> &str {
        &self.servers[self.preferred.get() % self.servers.len()]
    }

    /// Sends `call` to each server in turn (see the module docs); returns the first answer with a 2xx status.
    pub async fn send(&self, call: &Call<'_>) -> Result<Response, CliError> {
        let start = self.preferred.get();
        let mut last = String::new();
        for i in 0..self.servers.len() {
            let index = (start + i) % self.servers.len();
            let url = format!("{}{}", self.servers[index], call.path);
            match self.request(call, &url).send().await {
                Ok(reply) if call.is_read() && is_unavailable(reply.status()) => {
                    last = format!("{url}: HTTP {}", reply.status());
                }
                Ok(reply) => {
                    self.preferred.set(index);
                    return check_status(call, &url, reply).await;
                }
                Err(e) if e.is_connect() || (call.is_read() && e.is_timeout()) => {
                    last = format!("{url}: {}", error_chain(&e))
                }
                Err(e) => {
                    return Err(CliError::Transport {
                        method: call.method.to_string(),
                        url,
                        message: error_chain(&e),
                    })
                }
            }
        }
        Err(CliError::Unreachable {
            tried: self.servers.join(", "),
            last,
        })
    }

    fn request(&self, call: &Call<'_>, url: &str) -> reqwest::RequestBuilder {
        let mut req = self
            .http
            .request(call.method.clone(), url)
            .timeout(call.timeout);
        if let Some(token) = &self.token {
            req = req.header("Authorization", format!("Token {token}"));
        }
        for (name, value) in &call.headers {
            req = req.header(*name, value);
        }
        match call.body {
            Some(body) => req.json(body),
            None => req,
        }
    }

    /// A jsend call: returns `data`.
    pub async fn jsend(&self, call: &Call<'_>) -> Result<Value, CliError> {
        let reply = self.send(call).await?;
        let url = reply.url().to_string();
        let body: Value = reply.json().await.map_err(|e| CliError::Reply {
            url: url.clone(),
            message: error_chain(&e),
        })?;
        match body.get("status").and_then(Value::as_str) {
            Some("success") => Ok(body.get("data").cloned().unwrap_or(Value::Null)),
            _ => Err(CliError::Reply {
                url,
                message: format!("not a jsend success: {body}"),
            }),
        }
    }

    pub async fn get(&self, path: &str) -> Result<Value, CliError> {
        self.jsend(&Call::new(Method::GET, path)).await
    }

    pub async fn delete(&self, path: &str) -> Result<Value, CliError> {
        self.jsend(&Call::new(Method::DELETE, path)).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, CliError> {
        self.jsend(&Call {
            body: Some(body),
            ..Call::new(Method::POST, path)
        })
        .await
    }

    pub async fn patch(&self, path: &str, body: &Value) -> Result<Value, CliError> {
        self.jsend(&Call {
            body: Some(body),
            ..Call::new(Method::PATCH, path)
        })
        .await
    }

    /// A GET whose body is not jsend (a console log, a run definition).
    pub async fn get_bytes(&self, path: &str) -> Result<bytes::Bytes, CliError> {
        let reply = self.send(&Call::new(Method::GET, path)).await?;
        let url = reply.url().to_string();
        reply.bytes().await.map_err(|e| CliError::Transport {
            method: "GET".into(),
            url,
            message: error_chain(&e),
        })
    }
}

fn public_roots_client() -> Result<reqwest::Client, CliError> {
    crate::tls::install_crypto_provider();
    reqwest::Client::builder()
        .use_rustls_tls()
        // HTTP/1.1, as before `object_store` (S3) turned reqwest's http2 feature on for the whole workspace:
        // one connection per transfer, no HTTP/2 flow-control window throttling bulk bodies.
        .http1_only()
        .timeout(REQUEST_TIMEOUT)
        .pool_idle_timeout(jobserv_protocol::http::CLIENT_POOL_IDLE)
        .build()
        .map_err(|e| CliError::Tls(crate::tls::TlsError::Client(e)))
}

fn is_unavailable(status: StatusCode) -> bool {
    status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::BAD_GATEWAY
}

/// Turns a non-2xx reply into [`CliError::Api`] with the jsend message (or the start of the body).
async fn check_status(call: &Call<'_>, url: &str, reply: Response) -> Result<Response, CliError> {
    let status = reply.status();
    if status.is_success() {
        return Ok(reply);
    }
    let text = reply.text().await.unwrap_or_default();
    let message = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| excerpt(&text, status));
    Err(CliError::Api {
        method: call.method.to_string(),
        url: url.to_string(),
        status: status.as_u16(),
        message,
    })
}

fn excerpt(text: &str, status: StatusCode) -> String {
    let text = text.trim();
    if text.is_empty() {
        return status
            .canonical_reason()
            .unwrap_or("no message")
            .to_string();
    }
    match text.char_indices().nth(MAX_ERROR_BODY) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// reqwest's top-level message ("error sending request for url (…)") repeats the URL that callers already
/// name; the causes say why, so they are shown instead when there are any.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let Some(first) = e.source() else {
        return e.to_string();
    };
    let mut message = first.to_string();
    let mut source = first.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !message.contains(&text) {
            message = format!("{message}: {text}");
        }
        source = s.source();
    }
    message
}

/// One path segment, percent-encoded so that names cannot change the path's shape.
pub fn seg(s: &str) -> std::borrow::Cow<'_, str> {
    urlencoding::encode(s)
}
