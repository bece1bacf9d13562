//! Browser sessions for the web UI: a signed cookie, valid on every node, no session table.
//!
//! Cookie `jobserv_session` = `v1.<token sha256>.<expires, unix s>.<HMAC(cluster secret, …)>`. Every node
//! holds the cluster secret, so every node accepts it (a browser behind a load balancer moves between nodes
//! freely, and a node's death loses no session). The token's *hash* is in the cookie (the token itself never
//! is), and each request looks it up: deleting the token ends every session made with it, and the role is
//! always the token's current one. The cookie is `HttpOnly; Secure; SameSite=Strict; Path=/ui`.
//!
//! CSRF: every form that changes state carries `csrf` = HMAC(secret, "csrf", the cookie's MAC); a POST without
//! the right one is refused, on top of `SameSite=Strict`.
use crate::auth::{constant_time_eq, hash_token};
use actix_web::cookie::{Cookie, SameSite};
use actix_web::HttpRequest;
use hmac::{Hmac, Mac};
use jobserv_raft::model::Role;
use jobserv_raft::State;
use sha2::Sha256;

pub const COOKIE: &str = "jobserv_session";
/// How long a login lasts.
pub const SESSION_SECS: u64 = 12 * 3600;

/// A logged-in browser.
#[derive(Clone, Debug)]
pub struct Session {
    pub token_name: String,
    pub role: Role,
    /// The cookie's MAC: what the CSRF token is derived from.
    mac: String,
}

impl Session {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// The value forms must send back as `csrf`.
    pub fn csrf(&self, secret: &str) -> String {
        mac(secret, &format!("csrf\n{}", self.mac))[..32].to_string()
    }

    pub fn check_csrf(&self, secret: &str, sent: &str) -> bool {
        constant_time_eq(&self.csrf(secret), sent)
    }
}

fn mac(secret: &str, message: &str) -> String {
    let mut m =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    m.update(message.as_bytes());
    hex::encode(m.finalize().into_bytes())
}

fn signed_part(token_hash: &str, expires: u64) -> String {
    format!("jobserv-ui-session\nv1\n{token_hash}\n{expires}")
}

fn now_secs() -> u64 {
    jobserv_raft::state::now_ms() / 1000
}

/// The cookie for a login with `token` (already checked to be a user or admin token).
pub fn login_cookie(secret: &str, token: &str) -> Cookie<'static> {
    login_cookie_for_hash(secret, &hash_token(token))
}

/// The cookie for a session of the token whose sha256 is `hash` (a one-time login link names the hash).
pub fn login_cookie_for_hash(secret: &str, hash: &str) -> Cookie<'static> {
    let expires = now_secs() + SESSION_SECS;
    let value = format!(
        "v1.{hash}.{expires}.{}",
        mac(secret, &signed_part(hash, expires))
    );
    Cookie::build(COOKIE, value)
        .path("/ui")
        .http_only(true)
        .secure(true)
        .same_site(SameSite::Strict)
        .max_age(actix_web::cookie::time::Duration::seconds(
            SESSION_SECS as i64,
        ))
        .finish()
}

/// A cookie that makes the browser forget the session.
pub fn logout_cookie() -> Cookie<'static> {
    let mut c = Cookie::build(COOKIE, "")
        .path("/ui")
        .http_only(true)
        .secure(true)
        .same_site(SameSite::Strict)
        .finish();
    c.make_removal();
    c
}

/// The request's session, if its cookie is authentic, unexpired and its token still exists.
pub fn session(req: &HttpRequest, secret: &str, state: &State) -> Option<Session> {
    let cookie = req.cookie(COOKIE)?;
    let mut parts = cookie.value().split('.');
    let (version, hash, expires, sent_mac) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version != "v1" || parts.next().is_some() {
        return None;
    }
    let expires: u64 = expires.parse().ok()?;
    let expected = mac(secret, &signed_part(hash, expires));
    if !constant_time_eq(&expected, sent_mac) || expires < now_secs() {
        return None;
    }
    let token = state.token(hash).ok()??;
    Some(Session {
        token_name: token.name,
        role: token.role,
        mac: expected,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_attributes_and_forgery() {
        let c = login_cookie("secret", "tok");
        let text = c.to_string();
        for attr in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/ui"] {
            assert!(text.contains(attr), "{text}");
        }
        assert!(
            !text.contains("tok;") && !text.contains("=tok"),
            "the token itself is not in the cookie"
        );
        let value = c.value();
        let parts: Vec<&str> = value.split('.').collect();
        assert_eq!(parts.len(), 4);
        // Signed with another secret, or with a changed expiry: not authentic.
        let forged = mac(
            "other",
            &signed_part(parts[1], parts[2].parse().expect("expires")),
        );
        assert_ne!(forged, parts[3]);
        let later: u64 = parts[2].parse::<u64>().expect("expires") + 1;
        assert_ne!(mac("secret", &signed_part(parts[1], later)), parts[3]);
    }
}
