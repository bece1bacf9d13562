//! The web UI under `/ui/`, served by every node (`shared/spec/api.md`, "Web UI"): server-rendered HTML
//! (maud), our own CSS and a little JavaScript (`static/`), nothing loaded from outside the node.
//!
//! - `session.rs`: login with a user or admin token → a signed cookie every node accepts; CSRF tokens.
//!   `links.rs`: one-time login links (what `jobserv-node dev` prints).
//! - `builds.rs`: projects, a project's builds, a build's runs. `runs.rs`: a run, its live console (long-poll
//!   slices with offsets: resumable through any node), tests, artifacts. `system.rs`: workers, queue, cluster.
//!
//! Every page reads through the same linearizable read path as the API (the reads middleware runs first),
//! so a page served by any node shows everything acknowledged before it was asked for.
mod actions;
mod builds;
pub mod charts;
mod layout;
mod links;
mod runs;
pub mod session;
mod system;

use crate::app::App;
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use maud::{html, Markup};
use serde::Deserialize;
use session::Session;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/ui", web::get().to(to_root))
        .route("/ui/", web::get().to(builds::projects))
        .route("/ui/login", web::post().to(login))
        .route("/ui/login-links", web::post().to(links::create))
        .route("/ui/login/once", web::get().to(links::use_link))
        .route("/ui/logout", web::post().to(logout))
        .route("/ui/static/{file}", web::get().to(asset))
        .route("/ui/projects/{p}/", web::get().to(builds::project))
        .route("/ui/projects/{p}/builds/{n}/", web::get().to(builds::build))
        .route(
            "/ui/projects/{p}/builds/{n}/project.yml",
            web::get().to(builds::definition),
        )
        .route(
            "/ui/projects/{p}/builds/{n}/runs/{r}/console.log",
            web::get().to(runs::whole_log),
        )
        .route(
            "/ui/projects/{p}/builds/{n}/runs/{r}/",
            web::get().to(runs::run),
        )
        .route(
            "/ui/projects/{p}/builds/{n}/runs/{r}/console",
            web::get().to(runs::console),
        )
        .route(
            "/ui/projects/{p}/builds/{n}/runs/{r}/.rundef.json",
            web::get().to(runs::rundef),
        )
        .route(
            "/ui/projects/{p}/builds/{n}/runs/{r}/artifacts/{path:.*}",
            web::get().to(runs::artifact),
        )
        .route(
            "/ui/projects/{p}/builds/{n}/runs/{r}/{action}",
            web::post().to(actions::run),
        )
        .route(
            "/ui/projects/{p}/builds/{n}/{action}",
            web::post().to(actions::build),
        )
        .route("/ui/workers/{w}/{action}", web::post().to(actions::worker))
        .route("/ui/workers/", web::get().to(system::workers))
        .route("/ui/queue/", web::get().to(system::queue))
        .route("/ui/cluster/", web::get().to(system::cluster));
}

/// A logged-in viewer of a page, with the CSRF value its forms carry.
pub struct Viewer {
    pub session: Session,
    pub csrf: String,
}

impl Viewer {
    pub fn page(&self, title: &str, body: Markup) -> HttpResponse {
        html_response(layout::page(title, Some((&self.session, &self.csrf)), body))
    }
}

/// Every page takes its viewer as an extractor: without a session the handler never runs and the
/// browser gets the login form in place of the page (after logging in it comes back here).
impl actix_web::FromRequest for Viewer {
    type Error = LoginRequired;
    type Future = std::future::Ready<Result<Viewer, LoginRequired>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let next = || LoginRequired {
            next: req.path().to_string(),
        };
        let viewer = req
            .app_data::<web::Data<App>>()
            .ok_or_else(next)
            .and_then(|app| {
                let secret = &app.config.cluster_secret;
                let session = session::session(req, secret, app.state()).ok_or_else(next)?;
                Ok(Viewer {
                    csrf: session.csrf(secret),
                    session,
                })
            });
        std::future::ready(viewer)
    }
}

/// No session: answered with the login form (200, a page like any other), returning to `next`.
#[derive(Debug)]
pub struct LoginRequired {
    next: String,
}

impl std::fmt::Display for LoginRequired {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "log in to see {}", self.next)
    }
}

impl actix_web::ResponseError for LoginRequired {
    fn status_code(&self) -> actix_web::http::StatusCode {
        actix_web::http::StatusCode::OK
    }

    fn error_response(&self) -> HttpResponse {
        login_page(actix_web::http::StatusCode::OK, &self.next, None)
    }
}

fn html_response(markup: Markup) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(markup.into_string())
}

/// An error as a page (the API's errors are JSON; a browser gets HTML).
pub fn error_page(viewer: &Viewer, err: crate::error::ApiError) -> HttpResponse {
    use actix_web::ResponseError;
    let status = err.status_code();
    let mut resp = viewer.page(
        "Error",
        html! { h1 { (status.as_u16()) " " (status.canonical_reason().unwrap_or("")) } p.error { (err.to_string()) } },
    );
    *resp.status_mut() = status;
    resp
}

fn login_page(
    status: actix_web::http::StatusCode,
    next: &str,
    error: Option<&str>,
) -> HttpResponse {
    let body = html! {
        div.login.card {
            h1 { "Log in" }
            p.muted { "Paste a JobServ user or admin token." }
            @if let Some(e) = error { p.error { (e) } }
            form method="post" action="/ui/login" {
                input type="hidden" name="next" value=(next);
                p { input type="password" name="token" autocomplete="current-password" autofocus placeholder="token"; }
                button type="submit" { "Log in" }
            }
        }
    };
    let mut resp = html_response(layout::page("Log in", None, body));
    *resp.status_mut() = status;
    resp
}

async fn to_root() -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/ui/"))
        .finish()
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
    next: Option<String>,
}

/// Only a path of this UI: never an open redirect.
fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n) if n.starts_with("/ui/") && !n.starts_with("//") && !n.contains("://") => n,
        _ => "/ui/",
    }
}

async fn login(app: web::Data<App>, form: web::Form<LoginForm>) -> HttpResponse {
    let token = form.token.trim();
    let known = app
        .state()
        .token(&crate::auth::hash_token(token))
        .ok()
        .flatten()
        .is_some();
    let next = safe_next(form.next.as_deref());
    if token.is_empty() || !known {
        return login_page(
            actix_web::http::StatusCode::UNAUTHORIZED,
            next,
            Some("That token is not known to this cluster."),
        );
    }
    HttpResponse::SeeOther()
        .cookie(session::login_cookie(&app.config.cluster_secret, token))
        .insert_header((header::LOCATION, next.to_string()))
        .finish()
}

#[derive(Deserialize)]
pub struct CsrfForm {
    pub csrf: String,
}

async fn logout(req: HttpRequest, app: web::Data<App>, form: web::Form<CsrfForm>) -> HttpResponse {
    let secret = &app.config.cluster_secret;
    if let Some(s) = session::session(&req, secret, app.state()) {
        if !s.check_csrf(secret, &form.csrf) {
            return HttpResponse::Forbidden().body("bad or missing csrf token");
        }
    }
    HttpResponse::SeeOther()
        .cookie(session::logout_cookie())
        .insert_header((header::LOCATION, "/ui/"))
        .finish()
}

const APP_CSS: &str = include_str!("static/app.css");
const APP_JS: &str = include_str!("static/app.js");

async fn asset(path: web::Path<String>) -> HttpResponse {
    let (body, kind) = match path.as_str() {
        "app.css" => (APP_CSS, "text/css; charset=utf-8"),
        "app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        _ => return HttpResponse::NotFound().body("no such file"),
    };
    HttpResponse::Ok()
        .content_type(kind)
        .insert_header((header::CACHE_CONTROL, "public, max-age=300"))
        .body(body)
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn next_is_a_ui_path_only() {
        assert_eq!(safe_next(Some("/ui/projects/p/")), "/ui/projects/p/");
        assert_eq!(safe_next(Some("https://evil/ui/")), "/ui/");
        assert_eq!(safe_next(Some("//evil/ui/")), "/ui/");
        assert_eq!(safe_next(Some("/ui/x?u=https://e")), "/ui/");
        assert_eq!(safe_next(None), "/ui/");
    }
}
