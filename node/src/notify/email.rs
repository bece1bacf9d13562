//! Build emails through the configured SMTP relay (`[triggers.smtp]`), with lettre on tokio and rustls.
//! The subject and body follow JobServ's: project, build number, status, the build URL and every run.
use super::BuildSummary;
use crate::triggers::SmtpConfig;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use std::time::Duration;

pub fn subject(summary: &BuildSummary) -> String {
    format!(
        "jobserv: {} build #{} : {}",
        summary.project, summary.number, summary.status
    )
}

pub fn body(summary: &BuildSummary) -> String {
    let mut text = format!("Build URL: {}\nTrigger: {}\n", summary.url, summary.trigger);
    if let Some(reason) = &summary.reason {
        text.push_str(&format!("Reason: {reason}\n"));
    }
    text.push_str("\nRuns:\n");
    for (name, status, url) in &summary.runs {
        text.push_str(&format!("  {name}: {status}\n    {url}\n"));
    }
    text
}

pub async fn send(smtp: &SmtpConfig, to: &[String], summary: &BuildSummary) -> Result<(), String> {
    let builder = match smtp.tls.as_str() {
        "none" => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&smtp.host),
        "tls" => {
            AsyncSmtpTransport::<Tokio1Executor>::relay(&smtp.host).map_err(|e| e.to_string())?
        }
        _ => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&smtp.host)
            .map_err(|e| e.to_string())?,
    };
    let mut builder = builder
        .port(smtp.port)
        .timeout(Some(Duration::from_secs(20)));
    if let (Some(user), Some(password)) = (&smtp.username, &smtp.password) {
        builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
    }
    let mailer = builder.build();
    let mut message = Message::builder()
        .from(
            smtp.from
                .parse()
                .map_err(|e| format!("smtp.from {:?}: {e}", smtp.from))?,
        )
        .subject(subject(summary))
        .header(ContentType::TEXT_PLAIN);
    for address in to {
        message = message.to(address
            .parse()
            .map_err(|e| format!("email address {address:?}: {e}"))?);
    }
    let message = message.body(body(summary)).map_err(|e| e.to_string())?;
    mailer
        .send(message)
        .await
        .map(|_| ())
        .map_err(|e| format!("smtp {}:{}: {e}", smtp.host, smtp.port))
}
