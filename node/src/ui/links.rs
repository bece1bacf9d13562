//! One-time login links: `jobserv-node dev` prints one instead of a token in a URL that would stay valid.
//!
//! `POST /ui/login-links` (admin token, API-style) records, through Raft, the sha256 of a fresh random code
//! with the caller's token hash and an expiry (10 min), and answers the link. `GET /ui/login/once?code=…`
//! proposes `UseLoginLink`, which removes the record in the same entry: the first browser to open the link,
//! on whichever node, gets a session for that token; every later attempt finds nothing.
use super::session;
use crate::app::App;
use crate::auth::{bearer, hash_token, new_token, require_admin};
use crate::error::{created, ApiResult};
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use jobserv_raft::{Command, CommandResult};
use serde::Deserialize;
use serde_json::json;

/// How long an unused link stays valid.
pub const LINK_LIFETIME_MS: u64 = 10 * 60 * 1000;

pub async fn create(req: HttpRequest, app: web::Data<App>) -> ApiResult {
    require_admin(&req, app.state())?;
    let token_hash = hash_token(bearer(&req).unwrap_or_default());
    let code = new_token();
    let now = jobserv_raft::state::now_ms();
    app.cluster
        .propose(Command::AddLoginLink {
            hash: hash_token(&code),
            token_hash,
            expires: now + LINK_LIFETIME_MS,
            now,
        })
        .await?;
    let url = format!(
        "{}/ui/login/once?code={code}",
        app.cluster.advertise_url.trim_end_matches('/')
    );
    Ok(created(
        json!({ "url": url, "expires_in_secs": LINK_LIFETIME_MS / 1000 }),
    ))
}

#[derive(Deserialize)]
pub struct Code {
    code: Option<String>,
}

pub async fn use_link(app: web::Data<App>, q: web::Query<Code>) -> HttpResponse {
    let Some(code) = q.code.as_deref().filter(|c| !c.is_empty()) else {
        return super::login_page(
            StatusCode::BAD_REQUEST,
            "/ui/",
            Some("The link has no code."),
        );
    };
    let used = app
        .cluster
        .propose(Command::UseLoginLink {
            hash: hash_token(code),
            now: jobserv_raft::state::now_ms(),
        })
        .await;
    match used {
        Ok(CommandResult::LoginLink { token_hash }) => HttpResponse::SeeOther()
            .cookie(session::login_cookie_for_hash(
                &app.config.cluster_secret,
                &token_hash,
            ))
            .insert_header((header::LOCATION, "/ui/"))
            .finish(),
        Ok(_) | Err(_) => super::login_page(
            StatusCode::UNAUTHORIZED,
            "/ui/",
            Some("This login link was already used or has expired: log in with a token."),
        ),
    }
}
