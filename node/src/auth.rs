//! Who is calling. Tokens are long random strings; the state stores only their sha256, so a lookup by
//! hash reveals nothing about a near-miss and costs one hash plus one read (JobServ spent ~220 ms of CPU on
//! bcrypt per check-in). Run keys are not stored at all: a run key is `<fence>.<HMAC(cluster secret, run,
//! fence)>`, so it is revoked the moment the run's lease (fencing token) moves on.
use crate::error::ApiError;
use actix_web::HttpRequest;
use hmac::{Hmac, Mac};
use jobserv_raft::model::{Role, RunRef};
use jobserv_raft::State;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A fresh random token (48 bytes of OS randomness, hex).
pub fn new_token() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 48];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

pub fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// The token of `Authorization: Token <t>` (JobServ's scheme) or `Bearer <t>`.
pub fn bearer(req: &HttpRequest) -> Option<&str> {
    let value = req.headers().get("Authorization")?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("token") || scheme.eq_ignore_ascii_case("bearer"))
        .then(|| token.trim())
}

/// Requires an admin or user token; returns its role.
pub fn require_user(req: &HttpRequest, state: &State) -> Result<Role, ApiError> {
    let token = bearer(req).ok_or(ApiError::Unauthorized(
        "missing Authorization: Token <token> header".into(),
    ))?;
    match state.token(&hash_token(token))? {
        Some(t) => Ok(t.role),
        None => Err(ApiError::Unauthorized("unknown or revoked token".into())),
    }
}

pub fn require_admin(req: &HttpRequest, state: &State) -> Result<(), ApiError> {
    match require_user(req, state)? {
        Role::Admin => Ok(()),
        Role::User => Err(ApiError::Forbidden("this needs an admin token".into())),
    }
}

/// Checks a worker's key against the stored hash.
pub fn require_worker(
    req: &HttpRequest,
    state: &State,
    name: &str,
) -> Result<jobserv_raft::model::Worker, ApiError> {
    let token = bearer(req).ok_or(ApiError::Unauthorized(
        "missing Authorization: Token <worker key> header".into(),
    ))?;
    let worker = state
        .worker(name)?
        .ok_or_else(|| ApiError::NotFound(format!("worker {name}")))?;
    if !constant_time_eq(&hash_token(token), &worker.key_hash) {
        return Err(ApiError::Unauthorized(format!(
            "wrong key for worker {name}"
        )));
    }
    Ok(worker)
}

fn run_mac(secret: &str, run: &RunRef, fence: u64, purpose: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(
        format!(
            "{purpose}\n{}\n{}\n{}\n{fence}",
            run.project, run.build, run.run
        )
        .as_bytes(),
    );
    hex::encode(mac.finalize().into_bytes())
}

/// The key a worker uses for one run under one lease.
pub fn run_key(secret: &str, run: &RunRef, fence: u64) -> String {
    format!("{fence}.{}", run_mac(secret, run, fence, "run-key"))
}

/// Verifies a run key for `run`; returns the lease (fence) it was minted for. Whether that lease is still
/// current is decided by the state machine when the write is applied.
pub fn verify_run_key(req: &HttpRequest, secret: &str, run: &RunRef) -> Result<u64, ApiError> {
    let token = bearer(req).ok_or(ApiError::Unauthorized(
        "missing Authorization: Token <run key> header".into(),
    ))?;
    let (fence, mac) = token
        .split_once('.')
        .ok_or(ApiError::Unauthorized("malformed run key".into()))?;
    let fence: u64 = fence
        .parse()
        .map_err(|_| ApiError::Unauthorized("malformed run key".into()))?;
    if !constant_time_eq(mac, &run_mac(secret, run, fence, "run-key")) {
        return Err(ApiError::Unauthorized(format!("not a key for run {run}")));
    }
    Ok(fence)
}

/// Signature of an artifact upload URL: binds run, lease, path and expiry.
pub fn artifact_signature(
    secret: &str,
    run: &RunRef,
    fence: u64,
    path: &str,
    expires: u64,
) -> String {
    run_mac(secret, run, fence, &format!("artifact\n{path}\n{expires}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_key_is_bound_to_run_and_lease() {
        let run = RunRef {
            project: "p".into(),
            build: 3,
            run: "unit".into(),
        };
        let other = RunRef {
            run: "other".into(),
            ..run.clone()
        };
        let key = run_key("s3cret", &run, 17);
        assert!(key.starts_with("17."));
        let mac = key.split_once('.').unwrap().1;
        assert_eq!(mac, run_mac("s3cret", &run, 17, "run-key"));
        assert_ne!(mac, run_mac("s3cret", &other, 17, "run-key"));
        assert_ne!(mac, run_mac("s3cret", &run, 18, "run-key"));
        assert_ne!(mac, run_mac("other", &run, 17, "run-key"));
    }

    #[test]
    fn tokens_are_long_and_compared_whole() {
        let t = new_token();
        assert_eq!(t.len(), 96);
        assert!(constant_time_eq(&t, &t.clone()));
        assert!(!constant_time_eq(&t, &t[..95]));
    }
}
