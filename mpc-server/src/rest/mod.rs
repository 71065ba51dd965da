//! The REST service: key status, backup, export, rotation, revocation and
//! audit for the key's owner; health, readiness, metrics and the OpenAPI
//! document for operators.
//!
//! Every error is an RFC 9457 problem ([`problem::Problem`]) with a stable
//! code. Each request gets an id (`x-request-id`, taken from the request
//! when well-formed, else generated), echoed in the response and in every
//! log line of the request. Limits: request body 16 KiB, request timeout
//! (default 30 s), rate limits per client IP (before authentication) and
//! per token subject, stricter for backup, export and revoke
//! ([`limits`]).

pub mod keys;
pub mod limits;
pub mod metrics;
pub mod page;
pub mod problem;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{
    ConnectInfo, DefaultBodyLimit, FromRequest, FromRequestParts, MatchedPath, Request, State,
};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::de::DeserializeOwned;
use tracing::{debug, info, Instrument};

use crate::auth::Claims;
use crate::server::AppState;
use problem::{Code, Problem};

pub use limits::RateLimits;

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// REST settings.
#[derive(Debug, Clone)]
pub struct RestConfig {
    /// How recent the second factor (`auth_time`) must be for backup,
    /// export and revoke.
    pub step_up_max_age: Duration,
    /// Whether step-up tokens must be bound to one operation and key
    /// (`mpc_op` and `mpc_key_id` claims; PROTOCOL.md §19).
    pub step_up_require_binding: bool,
    /// The recovery public key backups are made to, if configured.
    pub recovery_key: Option<k256::PublicKey>,
    /// Whether a request may name its own recovery key.
    pub allow_request_recovery_key: bool,
    /// Rate limits.
    pub limits: RateLimits,
    /// The longest a request may take.
    pub request_timeout: Duration,
}

impl Default for RestConfig {
    fn default() -> Self {
        Self {
            step_up_max_age: Duration::from_secs(300),
            step_up_require_binding: false,
            recovery_key: None,
            allow_request_recovery_key: false,
            limits: RateLimits::default(),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// The REST router with its middleware, state attached.
pub(crate) fn router(state: Arc<AppState>) -> Router {
    let v1 = keys::routes().layer(middleware::from_fn_with_state(Arc::clone(&state), limit_ip));
    Router::new()
        .route("/healthz", get(keys::healthz))
        .route("/readyz", get(keys::readyz))
        .route("/metrics", get(metrics_text))
        .route("/openapi.json", get(openapi_json))
        .merge(v1)
        .fallback(|| async { Problem::new(Code::NotFound, "no such route") })
        .method_not_allowed_fallback(|| async {
            Problem::new(Code::MethodNotAllowed, "method not allowed on this route")
        })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(Arc::clone(&state), observe))
        .with_state(state)
}

async fn metrics_text(State(state): State<Arc<AppState>>) -> Response {
    let stats = state
        .webhook_stats
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    if let Some(stats) = stats {
        use std::sync::atomic::Ordering::Relaxed;
        state
            .metrics
            .webhooks(stats.delivered.load(Relaxed), stats.failed.load(Relaxed));
        state.metrics.webhook_backlog(
            stats.backlog.load(Relaxed),
            stats.oldest_event_age_seconds(crate::server::now_ms()),
            stats.in_flight.load(Relaxed),
        );
    }
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )],
        state.metrics.render(),
    )
        .into_response()
}

async fn openapi_json() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        keys::openapi_json(),
    )
        .into_response()
}

/// The request's id: the client's `x-request-id` if it is 1-64 characters
/// of `[A-Za-z0-9._-]`, else a fresh random one.
fn request_id(request: &Request) -> String {
    let given = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            (1..=64).contains(&v.len())
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        });
    match given {
        Some(id) => id.to_owned(),
        None => {
            use rand_core::{OsRng, RngCore};
            let mut bytes = [0u8; 12];
            OsRng.fill_bytes(&mut bytes);
            hex::encode(bytes)
        }
    }
}

/// The method as a metric and log label: one of a closed set, so that
/// clients cannot create label values (`other` for any method not listed).
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// The route as a metric and log label: the matched route's template
/// (e.g. `/v1/keys/{key_id}`), or `unmatched`; never the request's path.
fn route_label(request: &Request) -> String {
    request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned())
}

/// Operator routes (and unmatched requests) are logged at debug level:
/// probes and scrapes, or a scanner's misses, come at request rate.
fn is_quiet(route: &str) -> bool {
    matches!(route, "/healthz" | "/readyz" | "/metrics" | "unmatched")
}

/// Request id, timeout, one log line and a metric per request.
async fn observe(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let id = request_id(&request);
    let method = method_label(request.method());
    let route = route_label(&request);
    let span = tracing::info_span!("request", request_id = %id, method, %route);
    let started = Instant::now();
    let limit = state.rest.request_timeout;
    let mut response =
        match tokio::time::timeout(limit, next.run(request).instrument(span.clone())).await {
            Ok(response) => response,
            Err(_) => Problem::new(Code::Unavailable, "the request took too long").into_response(),
        };
    let status = response.status().as_u16();
    state.metrics.request(method, &route, status);
    let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    span.in_scope(|| {
        if is_quiet(&route) {
            debug!(status, elapsed_ms, "request");
        } else {
            info!(status, elapsed_ms, "request");
        }
    });
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

/// The per-IP limit, before authentication.
async fn limit_ip(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let peer = request.extensions().get::<ConnectInfo<SocketAddr>>();
    if let Some(ConnectInfo(addr)) = peer {
        let client = crate::client_addr::client_ip(&state, *addr, request.headers());
        if let Err(problem) = state.limiters.check_ip(client) {
            return problem.into_response();
        }
    }
    next.run(request).await
}

/// The authenticated caller (bearer JWT), within the per-subject limit.
#[derive(Debug, Clone)]
pub struct Caller(pub Claims);

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        // One answer for every failure: which check failed (expired, wrong
        // issuer, lifetime, ...) would help whoever forges or replays
        // tokens; the reason goes to the log only.
        let refused = || Problem::new(Code::Unauthorized, "a valid bearer token is required");
        let token = mpc_transport_ws::server::bearer_token(&parts.headers).ok_or_else(refused)?;
        let claims = state.auth.verify(token).map_err(|e| {
            tracing::info!(reason = e.code(), "bearer token refused");
            refused()
        })?;
        state.limiters.check_subject(&claims.subject)?;
        Ok(Self(claims))
    }
}

/// A JSON body parsed with [`mpc_api::parse_body`] (the parsing the
/// `rest_bodies` fuzz target exercises), whose rejections are problems: 415
/// without a JSON content type, 413 over [`MAX_BODY_BYTES`], 400 for bytes
/// that are not JSON, 422 for JSON of the wrong shape.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

fn is_json(content_type: Option<&HeaderValue>) -> bool {
    let Some(value) = content_type.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    kind.eq_ignore_ascii_case("application")
        && (subtype.eq_ignore_ascii_case("json") || subtype.to_ascii_lowercase().ends_with("+json"))
}

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(request.headers().get(header::CONTENT_TYPE)) {
            return Err(Problem::with_status(
                Code::InvalidRequest,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "the body must be application/json",
            ));
        }
        let bytes = axum::body::Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    Problem::new(
                        Code::PayloadTooLarge,
                        format!("the body is larger than {MAX_BODY_BYTES} bytes"),
                    )
                } else {
                    Problem::with_status(
                        Code::InvalidRequest,
                        rejection.status(),
                        rejection.body_text(),
                    )
                }
            })?;
        match mpc_api::parse_body(&bytes) {
            Ok(value) => Ok(Self(value)),
            Err(error @ mpc_api::BodyError::Syntax(_)) => {
                Err(Problem::new(Code::InvalidRequest, error.to_string()))
            }
            Err(error @ mpc_api::BodyError::Shape(_)) => Err(Problem::with_status(
                Code::InvalidRequest,
                StatusCode::UNPROCESSABLE_ENTITY,
                error.to_string(),
            )),
        }
    }
}
