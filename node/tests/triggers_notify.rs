//! Build notifications with `only_failures`: a local SMTP server (a minimal one written here, speaking
//! real SMTP to lettre) and a local webhook receiver record what arrives. A passing build sends neither the
//! email nor the `only_failures` webhook; a failed one sends one email to every address and one webhook
//! whose signature verifies. A second webhook without `only_failures`, listed last, is sent for every
//! build: a build's duties send the email, then the webhooks in order, so its arrival tells the test that
//! the build's other notifications were sent or skipped (no fixed wait before counting).
mod common;
mod triggers_support;
use common::*;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use triggers_support::*;

/// One received mail: envelope recipients and the DATA text.
#[derive(Clone, Debug)]
struct Mail {
    rcpt: Vec<String>,
    data: String,
}

/// A minimal SMTP server: greets, accepts EHLO/HELO, MAIL, RCPT, DATA (until `.`), RSET, NOOP, QUIT.
async fn smtp_server() -> (u16, Arc<Mutex<Vec<Mail>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mails = Arc::new(Mutex::new(Vec::new()));
    let store = mails.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let store = store.clone();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read).lines();
                write.write_all(b"220 stand-in ESMTP\r\n").await.unwrap();
                let mut rcpt = Vec::new();
                while let Ok(Some(line)) = lines.next_line().await {
                    let verb = line.split_whitespace().next().unwrap_or("").to_uppercase();
                    let reply: &[u8] = match verb.as_str() {
                        "EHLO" => b"250-stand-in\r\n250 HELP\r\n",
                        "HELO" | "MAIL" | "RSET" | "NOOP" => b"250 OK\r\n",
                        "RCPT" => {
                            rcpt.push(
                                line.split_once(':')
                                    .map(|(_, a)| a.trim().trim_matches(['<', '>']).to_string())
                                    .unwrap_or_default(),
                            );
                            b"250 OK\r\n"
                        }
                        "DATA" => {
                            write.write_all(b"354 go ahead\r\n").await.unwrap();
                            let mut data = String::new();
                            while let Ok(Some(l)) = lines.next_line().await {
                                if l == "." {
                                    break;
                                }
                                data.push_str(&l);
                                data.push('\n');
                            }
                            store.lock().unwrap().push(Mail {
                                rcpt: std::mem::take(&mut rcpt),
                                data,
                            });
                            b"250 queued\r\n"
                        }
                        "QUIT" => {
                            let _ = write.write_all(b"221 bye\r\n").await;
                            return;
                        }
                        _ => b"502 not implemented\r\n",
                    };
                    if write.write_all(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, mails)
}

fn definition(hook_url: &str, always_url: &str) -> String {
    format!(
        r#"
timeout: 5
email:
  users: "dev@example.com, qa@example.com"
  only_failures: true
triggers:
  - name: manual
    type: simple
    webhooks:
      - url: {hook_url}
        secret_name: hooksecret
        only_failures: true
      - url: {always_url}
        secret_name: hooksecret
    runs:
      - name: unit
        container: busybox:latest
        host-tag: amd64
        script: s
scripts:
  s: |
    #!/bin/sh
    true
"#
    )
}

#[actix_web::test]
async fn a_failed_build_sends_one_email_and_one_signed_webhook_and_a_passing_one_none() {
    let dir = tempdir();
    let (smtp_port, mails) = smtp_server().await;
    let receiver = StandIn::start(None);
    let mut config = node_config(dir.path(), free_port());
    config.triggers.smtp = Some(jobserv_node::triggers::SmtpConfig {
        host: "127.0.0.1".into(),
        port: smtp_port,
        tls: "none".into(),
        username: None,
        password: None,
        from: "JobServ <jobserv@example.com>".into(),
    });
    let node = TestNode::start_with(config).await;
    assert_eq!(
        node.post("/projects/", json!({"name": "notes"})).await.0,
        201
    );
    let yaml = definition(
        &format!("{}/hook", receiver.url),
        &format!("{}/always", receiver.url),
    );
    register_and_enlist(&node, "w1").await;

    // Build 1 passes, then build 2 fails.
    for (n, status) in [(1, "PASSED"), (2, "FAILED")] {
        let (s, body) = node
            .post("/projects/notes/builds/", json!({"trigger-name": "manual", "project-definition": yaml, "secrets": {"hooksecret": "hook-secret-789"}}))
            .await;
        assert_eq!(
            (s, body["data"]["build_id"].as_u64()),
            (201, Some(n)),
            "{body}"
        );
        let runs = take_runs(&node, "w1", &["unit"]).await;
        finish(&node, &runs[0], status).await;
        wait_for("the build to complete", 20, async || {
            (build(&node, "notes", n).await["status"] == status).then_some(())
        })
        .await;
    }

    // Both builds' unconditional webhooks arrived: their emails and `only_failures` webhooks were decided.
    let always = |n: u64| {
        receiver
            .requests()
            .into_iter()
            .filter(|r| r.path == "/always" && r.json()["build"] == n)
            .count()
    };
    wait_for(
        "the unconditional webhooks of builds 1 and 2",
        20,
        async || (always(1) > 0 && always(2) > 0).then_some(()),
    )
    .await;
    assert_eq!(
        (always(1), always(2)),
        (1, 1),
        "one unconditional webhook per build"
    );
    let sent = mails.lock().unwrap().clone();
    assert_eq!(sent.len(), 1, "only the failed build is mailed: {sent:?}");
    let mail = sent[0].clone();
    let hooks: Vec<_> = receiver
        .requests()
        .into_iter()
        .filter(|r| r.path == "/hook")
        .collect();
    assert_eq!(hooks.len(), 1, "only the failed build is posted: {hooks:?}");
    let hook = hooks[0].clone();

    let mut rcpt = mail.rcpt.clone();
    rcpt.sort();
    assert_eq!(rcpt, ["dev@example.com", "qa@example.com"]);
    assert!(
        mail.data
            .contains("Subject: jobserv: notes build #2 : FAILED"),
        "{}",
        mail.data
    );
    assert!(
        mail.data.contains("/projects/notes/builds/2/"),
        "{}",
        mail.data
    );

    assert_eq!(
        (hook.method.as_str(), hook.path.as_str()),
        ("POST", "/hook")
    );
    let payload = hook.json();
    assert_eq!(
        (
            payload["project"].as_str(),
            payload["build"].as_u64(),
            payload["status"].as_str()
        ),
        (Some("notes"), Some(2), Some("FAILED"))
    );
    assert_eq!(payload["runs"][0]["status"], "FAILED");
    let mut mac = Hmac::<Sha256>::new_from_slice(b"hook-secret-789").unwrap();
    mac.update(&hook.body);
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(hook.headers["x-jobserv-signature-256"], expected);
    receiver.stop().await;
}
