//! Signed JSON webhooks (*new*): a POST of the build summary to each of the trigger's `webhooks`, signed
//! like GitHub's: `X-JobServ-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>`, the secret being the
//! build's secret named by `secret_name`. A receiver verifies the header over the raw body.
use super::BuildSummary;
use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const SIGNATURE_HEADER: &str = "X-JobServ-Signature-256";

pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => return String::new(), // HMAC takes keys of any length
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

pub async fn send(
    client: &reqwest::Client,
    url: &str,
    secret: &str,
    summary: &BuildSummary,
) -> Result<(), String> {
    let body = serde_json::to_vec(&summary.to_json()).map_err(|e| e.to_string())?;
    let mut last = String::new();
    for attempt in 0..3u64 {
        if attempt > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(500 * attempt)).await;
        }
        let reply = client
            .post(url)
            .header("Content-Type", "application/json")
            .header(SIGNATURE_HEADER, sign(secret, &body))
            .header("X-JobServ-Event", "build-complete")
            .body(body.clone())
            .send()
            .await;
        match reply {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) => last = format!("HTTP {}", r.status()),
            Err(e) => last = e.to_string(),
        }
    }
    Err(format!("webhook {url}: {last}"))
}
