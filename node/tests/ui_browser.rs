//! The web UI in a real browser (headless Chromium over WebDriver) on a real 3-node cluster: log in, open a
//! running build, watch the console grow while the run streams — through a SIGKILL of the leader — see it
//! turn PASSED without a reload, rerun it, and a non-blank screenshot of every page, written under
//! `target/ui-screenshots/`.
mod common;
use common::webdriver::{is_non_blank, Browser};
use common::*;
use serde_json::{json, Value};
use std::path::PathBuf;

const ADMIN: &str = "admin-token-0123456789abcdef0123456789abcdef";

fn screenshots_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/ui-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshots dir");
    dir
}

async fn shoot(browser: &Browser, name: &str) {
    let png = browser.screenshot().await;
    std::fs::write(screenshots_dir().join(format!("{name}.png")), &png).expect("write screenshot");
    assert!(is_non_blank(&png), "the {name} page rendered blank");
}

/// Appends to the run's console (and sets its status) as the worker does, through the first node that
/// takes it.
async fn stream(
    nodes: &[TestNode],
    alive: &[bool],
    rundef: &Value,
    text: &str,
    status: Option<&str>,
) {
    let path = rundef["run_url"].as_str().expect("run_url");
    let path = &path[path.find("/projects/").expect("path")..];
    for (node, up) in nodes.iter().zip(alive) {
        if !*up {
            continue;
        }
        for _ in 0..100 {
            let mut req = node
                .client
                .post(node.u(path))
                .header(
                    "Authorization",
                    format!("Token {}", rundef["api_key"].as_str().expect("key")),
                )
                .body(text.to_string());
            if let Some(s) = status {
                req = req.header("X-RUN-STATUS", s);
            }
            match req.send().await {
                Ok(r) if r.status().as_u16() == 200 => return,
                _ => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
            }
        }
    }
    panic!("no node took the console append");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_follows_a_run_through_a_leader_kill() {
    let dir = tempdir();
    let mut nodes = three_nodes(dir.path(), |_| {}).await;
    let (s, _) = nodes[0].post("/projects/", json!({"name": "web"})).await;
    assert_eq!(s, 201);
    let (s, b) = nodes[0]
        .post(
            "/projects/web/builds/",
            json!({"trigger-name": "manual", "project-definition": UI_PROJECT}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    register_and_enlist_worker(&nodes[0], "w1", 1).await;
    let rundef = take_run(&nodes[0], "w1").await;
    let mut alive = [true, true, true];
    stream(&nodes, &alive, &rundef, "== starting\n", Some("RUNNING")).await;

    // The browser uses a follower; the leader is the node killed later.
    let leader = nodes[0].own_view().await["leader"]
        .as_u64()
        .expect("leader") as usize
        - 1;
    let follower = (leader + 1) % 3;
    let base = nodes[follower].url.clone();
    let ui = |path: &str| format!("{base}{path}");

    let browser = Browser::start().await;
    browser.goto(&ui("/ui/")).await;
    assert!(
        browser.find("input[name=token]").await.is_some(),
        "the login form"
    );
    shoot(&browser, "login").await;
    browser.type_into("input[name=token]", ADMIN).await;
    browser.click("form[action='/ui/login'] button").await;
    browser
        .wait_for(
            "logged in",
            20,
            "return document.body.innerText.includes('web')",
        )
        .await;
    shoot(&browser, "projects").await;
    browser.goto(&ui("/ui/projects/web/")).await;
    shoot(&browser, "project").await;
    browser.goto(&ui("/ui/projects/web/builds/1/")).await;
    browser
        .wait_for(
            "build page",
            10,
            "return document.body.innerText.includes('lint-a')",
        )
        .await;
    shoot(&browser, "build").await;

    // The run page: the console grows as the run streams, failure lines are marked.
    browser
        .goto(&ui("/ui/projects/web/builds/1/runs/unit/"))
        .await;
    browser
        .eval("window.__loaded_once = true; return true")
        .await;
    browser
        .wait_for(
            "first line",
            20,
            "return document.querySelector('pre.console').innerText.includes('== starting')",
        )
        .await;
    stream(
        &nodes,
        &alive,
        &rundef,
        "compiling\nerror: one warning treated as error\n",
        None,
    )
    .await;
    browser
        .wait_for(
            "the console grew",
            20,
            "return document.querySelector('pre.console').innerText.includes('treated as error')",
        )
        .await;
    assert_eq!(
        browser
            .eval("return document.querySelectorAll('pre.console span.fail').length")
            .await,
        json!(1),
        "the failure line is highlighted"
    );

    // SIGKILL the leader while the page follows the log; the page keeps following on its node.
    nodes[leader].kill();
    alive[leader] = false;
    stream(&nodes, &alive, &rundef, "after the leader died\n", None).await;
    browser
        .wait_for("the console went on after the kill", 60, "return document.querySelector('pre.console').innerText.includes('after the leader died')")
        .await;
    stream(&nodes, &alive, &rundef, "all done\n", Some("PASSED")).await;
    browser
        .wait_for("PASSED without a reload", 30, "return document.getElementById('run-status').textContent === 'PASSED' && window.__loaded_once === true")
        .await;
    let text = browser
        .eval("return document.querySelector('pre.console').innerText")
        .await;
    let text = text.as_str().unwrap_or("");
    for line in [
        "== starting",
        "compiling",
        "after the leader died",
        "all done",
    ] {
        assert_eq!(
            text.matches(line).count(),
            1,
            "{line:?} exactly once in:\n{text}"
        );
    }
    shoot(&browser, "run").await;

    // Rerun from the page (an admin action with its CSRF form value).
    browser.click("form[action$='/rerun'] button").await;
    browser
        .wait_for("rerun", 30, "return document.getElementById('run-status') && document.getElementById('run-status').textContent === 'QUEUED'")
        .await;
    assert!(browser
        .url()
        .await
        .ends_with("/ui/projects/web/builds/1/runs/unit/"));

    for (name, path, expected) in [
        ("workers", "/ui/workers/", "w1"),
        ("queue", "/ui/queue/", "lint-a"),
        ("cluster", "/ui/cluster/", "Leader"),
    ] {
        browser.goto(&ui(path)).await;
        browser
            .wait_for(
                name,
                20,
                &format!("return document.body.innerText.includes('{expected}')"),
            )
            .await;
        shoot(&browser, name).await;
    }
}
