//! The web UI over real HTTPS against real nodes: login and its cookie, every page with real data, the
//! console slices a page's script follows (long poll, offsets, resumable on another node), admin actions
//! with CSRF. A session made on one node is accepted by every node.
mod common;
use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const ADMIN: &str = "admin-token-0123456789abcdef0123456789abcdef";

/// A browser-like client: trusts the cluster CA, does not follow redirects (the tests look at them).
fn browser(node: &TestNode) -> reqwest::Client {
    let pem = std::fs::read(&node.config.ca_cert).expect("ca");
    reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("pem"))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// Logs in with `token`; returns the `Cookie` header value.
async fn login(node: &TestNode, token: &str) -> String {
    let r = browser(node)
        .post(node.u("/ui/login"))
        .form(&[("token", token), ("next", "/ui/queue/")])
        .send()
        .await
        .expect("login");
    assert_eq!(r.status().as_u16(), 303);
    assert_eq!(r.headers()["location"], "/ui/queue/");
    let set = r.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .to_string();
    for attr in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/ui"] {
        assert!(set.contains(attr), "{set}");
    }
    assert!(
        !set.contains(token),
        "the token itself never goes into the cookie"
    );
    set.split(';').next().expect("name=value").to_string()
}

async fn page(node: &TestNode, cookie: &str, path: &str) -> (u16, String) {
    let r = browser(node)
        .get(node.u(path))
        .header("Cookie", cookie)
        .send()
        .await
        .expect("GET page");
    (r.status().as_u16(), r.text().await.unwrap_or_default())
}

fn csrf_of(html: &str) -> String {
    let at = html
        .find("name=\"csrf\" value=\"")
        .expect("a form with csrf")
        + 19;
    html[at..at + 32].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_pages_console_and_actions_on_every_node() {
    let dir = tempdir();
    let nodes = three_nodes(dir.path(), |_| {}).await;
    let n1 = &nodes[0];

    // Without a session: the login form; a wrong token is refused.
    let (s, html) = page(n1, "", "/ui/").await;
    assert_eq!(s, 200);
    assert!(
        html.contains("name=\"token\"") && html.contains("action=\"/ui/login\""),
        "{html}"
    );
    assert!(
        !html.contains("href=\"http"),
        "nothing loaded from outside the node"
    );
    let r = browser(n1)
        .post(n1.u("/ui/login"))
        .form(&[("token", "not-a-token")])
        .send()
        .await
        .expect("login");
    assert_eq!(r.status().as_u16(), 401);
    assert!(r.text().await.unwrap_or_default().contains("not known"));

    // Data: a project, a build of 3 runs; `unit` taken by a worker and streaming.
    let (s, _) = n1.post("/projects/", json!({"name": "web"})).await;
    assert_eq!(s, 201);
    let (s, b) = n1
        .post(
            "/projects/web/builds/",
            json!({"trigger-name": "manual", "project-definition": UI_PROJECT}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    register_and_enlist_worker(n1, "w1", 1).await;
    let rundef = take_run(n1, "w1").await;
    assert_eq!(rundef["run"], "unit", "{rundef}");
    let post_console = |text: &'static str, status: Option<&'static str>| {
        let rundef = rundef.clone();
        let client = n1.client.clone();
        async move {
            let mut req = client
                .post(rundef["run_url"].as_str().expect("run_url"))
                .header(
                    "Authorization",
                    format!("Token {}", rundef["api_key"].as_str().expect("key")),
                )
                .body(text);
            if let Some(s) = status {
                req = req.header("X-RUN-STATUS", s);
            }
            assert_eq!(req.send().await.expect("post").status().as_u16(), 200);
        }
    };
    post_console("line one\nerror: something broke\n", Some("RUNNING")).await;

    // A session made on node 1 works on every node; the role is the token's.
    let cookie = login(n1, ADMIN).await;
    for node in &nodes {
        let (s, html) = page(node, &cookie, "/ui/").await;
        assert_eq!(s, 200);
        assert!(html.contains("href=\"/ui/projects/web/\""), "{html}");
        assert!(html.contains("(admin)"), "{html}");
    }
    let n2 = &nodes[1];
    let (s, html) = page(n2, &cookie, "/ui/projects/web/").await;
    assert_eq!(s, 200);
    assert!(
        html.contains("href=\"/ui/projects/web/builds/1/\""),
        "{html}"
    );
    let (s, html) = page(n2, &cookie, "/ui/projects/web/builds/1/").await;
    assert_eq!(s, 200);
    for expected in [
        "lint-a",
        "lint-b",
        "unit",
        "no_matching_worker",
        "w1",
        "s-RUNNING",
    ] {
        assert!(
            html.contains(expected),
            "build page lacks {expected}: {html}"
        );
    }
    let (s, html) = page(n2, &cookie, "/ui/projects/web/builds/1/runs/unit/").await;
    assert_eq!(s, 200);
    assert!(
        html.contains("data-console=\"/ui/projects/web/builds/1/runs/unit/console\""),
        "{html}"
    );
    assert!(
        html.contains("jobserv-worker simulate .rundef.json"),
        "{html}"
    );
    assert!(
        !html.contains(rundef["api_key"].as_str().expect("key")),
        "no run key on a page"
    );
    let csrf = csrf_of(&html);
    for (path, expected) in [
        ("/ui/workers/", "w1"),
        ("/ui/queue/", "lint-a"),
        ("/ui/cluster/", "leader"),
    ] {
        let (s, html) = page(&nodes[2], &cookie, path).await;
        assert_eq!(s, 200, "{path}");
        assert!(html.contains(expected), "{path} lacks {expected}: {html}");
    }
    let (s, def) = page(
        n2,
        &cookie,
        "/ui/projects/web/builds/1/runs/unit/.rundef.json",
    )
    .await;
    assert_eq!(s, 200);
    let def: Value = serde_json::from_str(&def).expect("rundef json");
    assert!(def["api_key"].is_null(), "{def}");

    // The console as the page's script reads it: slices with offsets; a long poll wakes on new bytes;
    // resuming on another node from the offset repeats nothing.
    let console = "/ui/projects/web/builds/1/runs/unit/console";
    let slice = |node: &TestNode, offset: u64, wait: u64| {
        let url = node.u(&format!("{console}?offset={offset}&wait={wait}"));
        let client = browser(node);
        let cookie = cookie.clone();
        async move {
            let r = client
                .get(url)
                .header("Cookie", cookie)
                .send()
                .await
                .expect("slice");
            assert_eq!(r.status().as_u16(), 200);
            let next: u64 = r.headers()["x-offset"]
                .to_str()
                .expect("offset")
                .parse()
                .expect("number");
            let status = r.headers()["x-run-status"]
                .to_str()
                .expect("status")
                .to_string();
            (next, status, r.text().await.expect("text"))
        }
    };
    let (offset, status, text) = slice(n2, 0, 0).await;
    assert_eq!(text, "line one\nerror: something broke\n");
    assert_eq!((offset, status.as_str()), (text.len() as u64, "RUNNING"));
    let started = Instant::now();
    let waiting = tokio::spawn(slice(&nodes[2], offset, 20));
    tokio::time::sleep(Duration::from_millis(300)).await;
    post_console("line three\n", None).await;
    let (next, _, text) = waiting.await.expect("poll");
    assert_eq!(text, "line three\n", "only the new bytes");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "woken by the append, not the timeout"
    );
    post_console("done\n", Some("PASSED")).await;
    let (end, status, text) = slice(n1, next, 5).await;
    assert_eq!((text.as_str(), status.as_str()), ("done\n", "PASSED"));
    let (again, _, text) = slice(n2, end, 5).await;
    assert_eq!(
        (again, text.as_str()),
        (end, ""),
        "a finished run answers at once with nothing new"
    );
    let (s, whole) = page(
        n2,
        &cookie,
        "/ui/projects/web/builds/1/runs/unit/console.log",
    )
    .await;
    assert_eq!(
        (s, whole.as_str()),
        (200, "line one\nerror: something broke\nline three\ndone\n")
    );
    let (s, yml) = page(n2, &cookie, "/ui/projects/web/builds/1/project.yml").await;
    assert_eq!(s, 200);
    assert!(yml.contains("lint-{loop}"), "{yml}");

    // Admin actions need the page's CSRF value.
    let rerun = n1.u("/ui/projects/web/builds/1/runs/unit/rerun");
    let r = browser(n1)
        .post(&rerun)
        .header("Cookie", &cookie)
        .form(&[("csrf", "forged")])
        .send()
        .await
        .expect("rerun");
    assert_eq!(r.status().as_u16(), 403);
    let r = browser(n1)
        .post(&rerun)
        .header("Cookie", &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .expect("rerun");
    assert_eq!(r.status().as_u16(), 303);
    let (_, run) = n1.get("/projects/web/builds/1/runs/unit/").await;
    assert_eq!(
        run["data"]["run"]["status"], "QUEUED",
        "rerun through the UI: {run}"
    );

    // Pictures: the project's builds and the queue by host tag, as inline SVG.
    let (_, html) = page(n1, &cookie, "/ui/projects/web/").await;
    assert!(
        html.contains("<svg") && html.contains("Build durations and results"),
        "{html}"
    );
    let (_, html) = page(n1, &cookie, "/ui/queue/").await;
    assert!(
        html.contains("<svg")
            && html.contains("Queue depth by host tag")
            && html.contains("nowhere"),
        "{html}"
    );

    // Cancel the build (every run still going) and delist the worker, from their pages' forms.
    let r = browser(n1)
        .post(n1.u("/ui/projects/web/builds/1/cancel"))
        .header("Cookie", &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .expect("cancel build");
    assert_eq!(r.status().as_u16(), 303);
    assert_eq!(r.headers()["location"], "/ui/projects/web/builds/1/");
    let (_, runs) = n1.get("/projects/web/builds/1/runs/").await;
    for run in runs["data"]["runs"].as_array().expect("runs") {
        assert_eq!(run["status"], "FAILED", "cancelled: {run}");
    }
    let r = browser(n1)
        .post(n1.u("/ui/workers/w1/delist"))
        .header("Cookie", &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .expect("delist");
    assert_eq!(r.status().as_u16(), 303);
    let (_, workers) = n1.get("/workers/").await;
    assert_eq!(
        workers["data"]["workers"][0]["enlisted"], false,
        "{workers}"
    );

    // A one-time login link (what `jobserv-node dev` prints) works once, on any node.
    let (s, link) = n1.post("/ui/login-links", json!({})).await;
    assert_eq!(s, 201, "{link}");
    let url = link["data"]["url"].as_str().expect("url").to_string();
    let path = &url[url.find("/ui/login/once").expect("path")..];
    let r = browser(n2).get(n2.u(path)).send().await.expect("link");
    assert_eq!(r.status().as_u16(), 303);
    let linked = r.headers()["set-cookie"].to_str().expect("cookie");
    let linked = linked.split(';').next().expect("cookie").to_string();
    let (s, html) = page(&nodes[2], &linked, "/ui/cluster/").await;
    assert_eq!(s, 200);
    assert!(html.contains("(admin)"), "{html}");
    let r = browser(&nodes[2])
        .get(nodes[2].u(path))
        .send()
        .await
        .expect("link");
    assert_eq!(r.status().as_u16(), 401, "a second use is refused");
    let r = browser(n1)
        .post(n1.u("/ui/login-links"))
        .send()
        .await
        .expect("no token");
    assert_eq!(r.status().as_u16(), 401, "only an admin makes links");

    // Logout clears the cookie; a cookie signed with another secret is not a session.
    let r = browser(n1)
        .post(n1.u("/ui/logout"))
        .header("Cookie", &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .expect("logout");
    assert_eq!(r.status().as_u16(), 303);
    assert!(r.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .contains("Max-Age=0"));
    let forged = cookie
        .rsplit_once('.')
        .map(|(head, _)| format!("{head}.{}", "0".repeat(64)))
        .expect("cookie");
    let (s, html) = page(n1, &forged, "/ui/workers/").await;
    assert_eq!(s, 200);
    assert!(
        html.contains("name=\"token\""),
        "a forged cookie gets the login form"
    );
}
