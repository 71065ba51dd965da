//! Errors as RFC 9457 problem details, with stable codes and no internals.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// An RFC 9457 problem: `type`, `title`, `status`, `detail`, plus the
/// stable machine-readable `code` clients branch on.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the problem type: `urn:mpc-server:problem:<code>`.
    #[serde(rename = "type")]
    pub problem_type: String,
    /// A short summary, the same for every occurrence of the code.
    pub title: &'static str,
    /// The HTTP status code.
    pub status: u16,
    /// What happened in this occurrence (never secrets or internals).
    pub detail: String,
    /// The stable code (see [`Code`]).
    pub code: &'static str,
    /// Seconds to wait before retrying (429 only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
}

/// The stable problem codes.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// 401: missing, malformed, expired or otherwise invalid bearer token.
    Unauthorized,
    /// 403: backup, export and revoke need a step-up token: a recent
    /// second factor and a `jti` (PROTOCOL.md §19).
    StepUpRequired,
    /// 403: the step-up token was already spent on an operation.
    StepUpTokenUsed,
    /// 403: the step-up token is bound (`mpc_op`, `mpc_key_id`) to another
    /// operation or key.
    StepUpBindingMismatch,
    /// 403: the request names a recovery key, which this server does not
    /// accept.
    RecoveryKeyNotAllowed,
    /// 404: no such key for this caller (another owner's key looks the same).
    KeyNotFound,
    /// 404: no such route.
    NotFound,
    /// 405: the route exists, the method does not.
    MethodNotAllowed,
    /// 409: the key is revoked.
    KeyRevoked,
    /// 409: the key is pending: its keygen is not confirmed (PROTOCOL.md
    /// §18.3).
    KeyPending,
    /// 409: the server holds no share of the requested epoch.
    EpochUnavailable,
    /// 409: no recovery key is configured and none may be given.
    RecoveryKeyNotConfigured,
    /// 400 / 415 / 422: the body or a parameter is malformed.
    InvalidRequest,
    /// 400: a listing's `cursor` is not a `next_cursor` of that listing.
    InvalidCursor,
    /// 413: the body is larger than allowed.
    PayloadTooLarge,
    /// 429: rate limited; see `Retry-After`.
    RateLimited,
    /// 500: an internal failure (logged with the request id).
    Internal,
    /// 503: the database is unavailable, or the request took too long.
    Unavailable,
}

impl Code {
    /// The code's text.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::StepUpRequired => "step_up_required",
            Self::StepUpTokenUsed => "step_up_token_used",
            Self::StepUpBindingMismatch => "step_up_binding_mismatch",
            Self::RecoveryKeyNotAllowed => "recovery_key_not_allowed",
            Self::KeyNotFound => "key_not_found",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::KeyRevoked => "key_revoked",
            Self::KeyPending => "key_pending",
            Self::EpochUnavailable => "epoch_unavailable",
            Self::RecoveryKeyNotConfigured => "recovery_key_not_configured",
            Self::InvalidRequest => "invalid_request",
            Self::InvalidCursor => "invalid_cursor",
            Self::PayloadTooLarge => "payload_too_large",
            Self::RateLimited => "rate_limited",
            Self::Internal => "internal",
            Self::Unavailable => "unavailable",
        }
    }

    /// The title of the code.
    #[must_use]
    pub const fn title(self) -> &'static str {
        match self {
            Self::Unauthorized => "Authentication required",
            Self::StepUpRequired => "Second factor required",
            Self::StepUpTokenUsed => "Step-up token already used",
            Self::StepUpBindingMismatch => "Step-up token bound to another operation or key",
            Self::RecoveryKeyNotAllowed => "Recovery key not allowed in the request",
            Self::KeyNotFound => "Key not found",
            Self::NotFound => "Not found",
            Self::MethodNotAllowed => "Method not allowed",
            Self::KeyRevoked => "Key revoked",
            Self::KeyPending => "Key pending",
            Self::EpochUnavailable => "Epoch unavailable",
            Self::RecoveryKeyNotConfigured => "No recovery key configured",
            Self::InvalidRequest => "Invalid request",
            Self::InvalidCursor => "Invalid cursor",
            Self::PayloadTooLarge => "Payload too large",
            Self::RateLimited => "Too many requests",
            Self::Internal => "Internal error",
            Self::Unavailable => "Service unavailable",
        }
    }

    /// The code's usual status.
    #[must_use]
    pub const fn status(self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::StepUpRequired
            | Self::StepUpTokenUsed
            | Self::StepUpBindingMismatch
            | Self::RecoveryKeyNotAllowed => StatusCode::FORBIDDEN,
            Self::KeyNotFound | Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::KeyRevoked
            | Self::KeyPending
            | Self::EpochUnavailable
            | Self::RecoveryKeyNotConfigured => StatusCode::CONFLICT,
            Self::InvalidRequest | Self::InvalidCursor => StatusCode::BAD_REQUEST,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl Problem {
    /// A problem of `code` with `detail`, at the code's usual status.
    #[must_use]
    pub fn new(code: Code, detail: impl Into<String>) -> Self {
        Self::with_status(code, code.status(), detail)
    }

    /// A problem of `code` at another status (e.g. 422 for
    /// [`Code::InvalidRequest`]).
    #[must_use]
    pub fn with_status(code: Code, status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            problem_type: format!("urn:mpc-server:problem:{}", code.as_str()),
            title: code.title(),
            status: status.as_u16(),
            detail: detail.into(),
            code: code.as_str(),
            retry_after: None,
        }
    }

    /// A 429 with its `Retry-After`.
    #[must_use]
    pub fn rate_limited(retry_after: u64, detail: impl Into<String>) -> Self {
        let mut problem = Self::new(Code::RateLimited, detail);
        problem.retry_after = Some(retry_after.max(1));
        problem
    }

    /// A 500 whose cause is logged (with no secrets) but not returned.
    #[must_use]
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(%cause, "internal error");
        Self::new(Code::Internal, "internal error; see the server log")
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(seconds) = self.retry_after {
            if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
                headers.insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}

impl From<crate::vault::VaultError> for Problem {
    fn from(error: crate::vault::VaultError) -> Self {
        use crate::vault::VaultError;
        match error {
            VaultError::NotFound => Self::new(Code::KeyNotFound, "no such key"),
            VaultError::Conflict("the key is revoked") => {
                Self::new(Code::KeyRevoked, "the key is revoked")
            }
            VaultError::TokenSpent => Self::new(
                Code::StepUpTokenUsed,
                "this step-up token was already used: authenticate again for a new one",
            ),
            VaultError::Database(_) => {
                tracing::error!(%error, "database error");
                Self::new(Code::Unavailable, "the database is unavailable")
            }
            other => Self::internal(&other),
        }
    }
}
