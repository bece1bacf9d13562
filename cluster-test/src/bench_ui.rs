//! `cluster-test bench-ui`: what the web UI's heaviest pages cost on a warm node — the build page of a
//! 200-run matrix build, and the run page of a run whose console log is 50 MiB (the page plus the first
//! console slice its script fetches: what a browser needs to show the log). Server time of whole
//! responses over HTTPS, p50 and max of N loads, and the bytes sent; timings are printed, never asserted.
use crate::harness::{hold_runs, single_node};
use crate::stats::percentile;
use anyhow::{ensure, Context};
use std::path::Path;
use std::time::{Duration, Instant};

pub struct UiBenchOptions {
    pub runs: usize,
    pub log_mib: u64,
    pub samples: usize,
}

fn definition(runs: usize) -> String {
    let values: Vec<String> = (1..runs).map(|i| format!("v{i:03}")).collect();
    format!(
        "timeout: 5\ntriggers:\n  - name: t\n    type: simple\n    runs:\n      - name: log\n        container: busybox:latest\n        host-tag: bench-ui\n        script: s\n      - name: m-{{loop}}\n        container: busybox:latest\n        host-tag: nowhere\n        script: s\n        loop-on:\n          - param: V\n            values: [{}]\nscripts:\n  s: |\n    #!/bin/sh\n    true\n",
        values.join(", ")
    )
}

pub async fn run(dir: &Path, bin_dir: &Path, opts: &UiBenchOptions) -> anyhow::Result<String> {
    let (node, token) = single_node(dir, bin_dir).await?;
    let held = hold_runs(
        &node,
        &token,
        "ui",
        &definition(opts.runs),
        "ui-w",
        "ui-bench-key-0123456789abcdef0123",
        "bench-ui",
        1,
    )
    .await?;
    let (run_url, key) = held.into_iter().next().context("held run")?;
    let line = b"bench-ui console line: the quick brown fox jumps over the lazy dog 0123456789\n";
    let chunk: Vec<u8> = line.iter().copied().cycle().take(1 << 20).collect();
    for i in 0..opts.log_mib {
        let r = node
            .client
            .post(&run_url)
            .header("Authorization", format!("Token {key}"))
            .header("X-OFFSET", (i << 20).to_string())
            .body(chunk.clone())
            .send()
            .await?;
        ensure!(r.status().is_success(), "append {i}: {}", r.status());
    }

    // A browser session, from a client that keeps its connection (as a browser does).
    let pem = std::fs::read(&node.config.ca_cert)?;
    let browser = reqwest::Client::builder()
        .use_rustls_tls()
        .http1_only()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem)?)
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let r = browser
        .post(format!("{}/ui/login", node.url()))
        .form(&[("token", token.as_str())])
        .send()
        .await?;
    ensure!(r.status().as_u16() == 303, "login: {}", r.status());
    let cookie = r
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .context("session cookie")?
        .to_string();
    let get = |path: String| {
        let (browser, cookie, url) = (browser.clone(), cookie.clone(), node.url().to_string());
        async move {
            let t = Instant::now();
            let r = browser
                .get(format!("{url}{path}"))
                .header("Cookie", cookie)
                .send()
                .await?;
            ensure!(r.status().is_success(), "{path}: {}", r.status());
            let body = r.bytes().await?;
            Ok::<_, anyhow::Error>((t.elapsed(), body))
        }
    };
    let build_page = "/ui/projects/ui/builds/1/".to_string();
    let run_page = "/ui/projects/ui/builds/1/runs/log/".to_string();
    let (_, html) = get(build_page.clone()).await?;
    let html = String::from_utf8_lossy(&html);
    ensure!(
        html.matches("data-run=").count() == opts.runs,
        "the build page lists every run"
    );
    let (_, html) = get(run_page.clone()).await?;
    let html = String::from_utf8_lossy(&html).to_string();
    let start: u64 = html
        .split("data-start=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .and_then(|s| s.parse().ok())
        .context("data-start on the run page")?;
    ensure!(
        start + (256 << 10) == opts.log_mib << 20,
        "the run page starts its console at the last 256 KiB of the {} MiB log (data-start {start})",
        opts.log_mib
    );
    let slice = format!("{run_page}console?offset={start}");

    let mut build_ms = Vec::new();
    let mut run_ms = Vec::new();
    let (mut build_bytes, mut run_bytes, mut slice_bytes) = (0, 0, 0);
    for _ in 0..opts.samples {
        let (t, body) = get(build_page.clone()).await?;
        build_ms.push(t);
        build_bytes = body.len();
        let (t1, page) = get(run_page.clone()).await?;
        let (t2, first) = get(slice.clone()).await?;
        run_ms.push(t1 + t2);
        run_bytes = page.len();
        slice_bytes = first.len();
    }
    let max = |v: &[Duration]| ms(v.iter().copied().max().unwrap_or_default());
    Ok(format!(
        "build page, {} runs: p50 {:.1} ms, max {:.1} ms, {} KiB\n\
         run page with a {} MiB log (page + first console slice): p50 {:.1} ms, max {:.1} ms, {} KiB + {} KiB (the whole log is never sent)\n\
         ({} loads each, one warm node, fsync on, HTTPS)",
        opts.runs,
        ms(percentile(&mut build_ms, 50.0)),
        max(&build_ms),
        build_bytes / 1024,
        opts.log_mib,
        ms(percentile(&mut run_ms, 50.0)),
        max(&run_ms),
        run_bytes / 1024,
        slice_bytes / 1024,
        opts.samples
    ))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
