//! The one error type of the HTTP layer. Every variant maps to a status code and a jsend error body
//! `{"status": "error", "message": …}` whose message names the field, line, limit or object at fault.
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use jobserv_raft::StateError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// A console chunk starts past the stored end; the reply carries the stored length in `X-OFFSET`.
    #[error(
        "offset {given} is past the end of the log ({stored} bytes stored): resend from {stored}"
    )]
    OffsetGap { given: u64, stored: u64 },
    #[error("{0}")]
    PayloadTooLarge(String),
    /// No leader, no quorum, or a timeout waiting for commit: the write was not acknowledged.
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<jobserv_raft::state::StateStoreError> for ApiError {
    fn from(e: jobserv_raft::state::StateStoreError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

impl From<StateError> for ApiError {
    fn from(e: StateError) -> Self {
        match e {
            StateError::NotFound(what) => ApiError::NotFound(what),
            StateError::AlreadyExists(_) => ApiError::Conflict(e.to_string()),
            StateError::Fenced { .. } => ApiError::Forbidden(e.to_string()),
            StateError::OffsetGap { given, stored } => ApiError::OffsetGap { given, stored },
            StateError::Invalid(msg) => ApiError::BadRequest(msg),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) | ApiError::OffsetGap { .. } => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut reply = HttpResponse::build(self.status_code());
        if let ApiError::OffsetGap { stored, .. } = self {
            reply.insert_header((jobserv_protocol::api::HEADER_OFFSET, stored.to_string()));
        }
        if matches!(self, ApiError::Unavailable(_)) {
            reply.insert_header(("Retry-After", "1"));
        }
        reply.json(serde_json::json!({"status": "error", "message": self.to_string()}))
    }
}

/// A jsend success body.
pub fn success<T: serde::Serialize>(data: T) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "success", "data": data}))
}

pub fn created<T: serde::Serialize>(data: T) -> HttpResponse {
    HttpResponse::Created().json(serde_json::json!({"status": "success", "data": data}))
}

pub type ApiResult = Result<HttpResponse, ApiError>;
