//! The `/v1/keys` routes, health, and the OpenAPI document generated from
//! these handlers.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use k256::elliptic_curve::sec1::ToEncodedPoint;
use mpc_api::{BackupRequest, ExportRequest, RevokeRequest};
use mpc_core::backup::Backup;
use mpc_core::export::export_share;
use mpc_core::{ExtendedPublicKey, KeyId};
use rand_core::OsRng;
use serde::Serialize;
use serde_json::json;
use utoipa::{OpenApi, ToSchema};

use super::page::{AuditPosition, Page, PageParams};
use super::problem::{Code, Problem};
use super::{Caller, JsonBody};
use crate::auth::{StepUpError, StepUpOp, StepUpPolicy, StepUpUse, SPENT_TOKEN_MARGIN_SECONDS};
use crate::server::{now_ms, AppState};
use crate::vault::{AuditEntry, Event, KeyPosition, KeyRecord, KeyStatus, NewBackup};

/// A key as its owner sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyView {
    /// The key id (64 hex characters).
    pub key_id: String,
    /// The owner (the token subject that created it).
    pub owner: String,
    /// SEC1 compressed public key, hex.
    pub public_key: String,
    /// The root extended public key (`xpub...`), for BIP32 derivation.
    pub xpub: String,
    /// The current (finalized) share epoch.
    pub epoch: u64,
    /// `pending`, `active`, `rotation_required`, `banned` or `revoked`.
    pub status: String,
    /// Creation time, unix milliseconds.
    pub created_at: i64,
    /// Last signature, unix milliseconds.
    pub last_used_at: Option<i64>,
    /// Whether the server share was ever exported.
    pub exported: bool,
    /// Last export, unix milliseconds.
    pub exported_at: Option<i64>,
    /// Whether a backup of the server share exists.
    pub backed_up: bool,
    /// Last backup, unix milliseconds.
    pub backed_up_at: Option<i64>,
}

impl KeyView {
    fn of(record: &KeyRecord) -> Self {
        let xpub = k256::PublicKey::from_sec1_bytes(&record.public_key)
            .ok()
            .and_then(|pk| ExtendedPublicKey::root(&pk.to_projective(), record.chain_code).ok())
            .map(|xpub| xpub.to_string())
            .unwrap_or_default();
        Self {
            key_id: record.key_id.to_string(),
            owner: record.owner.clone(),
            public_key: hex::encode(record.public_key),
            xpub,
            epoch: record.epoch,
            status: record.status.as_str().to_owned(),
            created_at: record.created_at,
            last_used_at: record.last_used_at,
            exported: record.exported_at.is_some(),
            exported_at: record.exported_at,
            backed_up: record.backed_up_at.is_some(),
            backed_up_at: record.backed_up_at,
        }
    }
}

/// A page of the caller's keys.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyList {
    /// Oldest first (by creation time, then key id).
    pub keys: Vec<KeyView>,
    /// The `cursor` of the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// A verifiable backup of the server share (PROTOCOL.md §17).
#[derive(Debug, Serialize, ToSchema)]
pub struct BackupView {
    /// The key id.
    pub key_id: String,
    /// The share's epoch.
    pub epoch: u64,
    /// Whose share: `b` (the server).
    pub role: String,
    /// The server's public share `X_B`, SEC1 compressed hex.
    pub public_share: String,
    /// The recovery public key, SEC1 compressed hex.
    pub recovery_public_key: String,
    /// The backup (`Backup::to_bytes`), hex.
    pub backup: String,
    /// Unix milliseconds.
    pub created_at: i64,
}

/// The server share encrypted to the one-time key (PROTOCOL.md §16).
#[derive(Debug, Serialize, ToSchema)]
pub struct ExportView {
    /// The key id.
    pub key_id: String,
    /// The share's epoch.
    pub epoch: u64,
    /// `ExportCiphertext::to_bytes`, hex.
    pub ciphertext: String,
}

/// A page of the key's audit log.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditLog {
    /// Oldest first.
    pub entries: Vec<AuditView>,
    /// The `cursor` of the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// One audit entry.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditView {
    /// Sequence number.
    pub id: i64,
    /// Unix milliseconds.
    pub at: i64,
    /// What happened (`key.created`, `sign`, `key.refreshed`, ...).
    pub event: String,
    /// Details (no secrets).
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

impl From<AuditEntry> for AuditView {
    fn from(entry: AuditEntry) -> Self {
        Self {
            id: entry.id,
            at: entry.at,
            event: entry.event,
            detail: entry.detail,
        }
    }
}

/// Health or readiness.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok` or `ready`.
    pub status: &'static str,
}

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/keys", get(list_keys))
        .route("/v1/keys/{key_id}", get(get_key).delete(revoke_key))
        .route("/v1/keys/{key_id}/backup", post(backup_key))
        .route("/v1/keys/{key_id}/export", post(export_key))
        .route("/v1/keys/{key_id}/rotate", post(rotate_key))
        .route("/v1/keys/{key_id}/audit", get(audit_log))
}

fn parse_key_id(text: &str) -> Result<KeyId, Problem> {
    mpc_api::parse_key_id(text).ok_or_else(|| Problem::new(Code::KeyNotFound, "no such key"))
}

/// The caller's key: another owner's key is reported as missing.
async fn owned_key(state: &AppState, caller: &Caller, key_id: &str) -> Result<KeyRecord, Problem> {
    let key_id = parse_key_id(key_id)?;
    match state.vault.key(&key_id).await? {
        Some(record) if record.owner == caller.0.subject => Ok(record),
        _ => Err(Problem::new(Code::KeyNotFound, "no such key")),
    }
}

/// Refuses revoked keys.
fn not_revoked(record: &KeyRecord) -> Result<(), Problem> {
    match record.status {
        KeyStatus::Revoked => Err(Problem::new(Code::KeyRevoked, "the key is revoked")),
        _ => Ok(()),
    }
}

/// Refuses revoked keys, and pending ones (PROTOCOL.md §18.3): a key whose
/// client may not hold its share is not exported (to anyone but the
/// configured recovery key) or rotated; its owner's first signature
/// confirms it. A backup to the configured recovery key is allowed: it
/// keeps the server share recoverable should the reaper delete the key.
fn not_revoked_or_pending(record: &KeyRecord) -> Result<(), Problem> {
    not_revoked(record)?;
    match record.status {
        KeyStatus::Pending => Err(Problem::new(
            Code::KeyPending,
            "the key is pending: its keygen is not confirmed (sign with it once)",
        )),
        _ => Ok(()),
    }
}

/// Backup, export and revoke: a step-up token for this operation on this
/// key (PROTOCOL.md §19), and the stricter limit. The returned use is spent
/// by the vault in the operation's own transaction.
async fn step_up(
    state: &Arc<AppState>,
    caller: &Caller,
    operation: StepUpOp,
    record: &KeyRecord,
) -> Result<StepUpUse, Problem> {
    let now = now_ms() / 1000;
    let max_age = state.rest.step_up_max_age.as_secs();
    let policy = StepUpPolicy {
        max_age_seconds: max_age,
        require_binding: state.rest.step_up_require_binding,
        retention_seconds: state
            .auth
            .leeway_seconds()
            .saturating_add(SPENT_TOKEN_MARGIN_SECONDS),
    };
    let spend = caller
        .0
        .step_up(&policy, operation, &record.key_id, now)
        .map_err(|e| match e {
            StepUpError::WrongBinding => Problem::new(
                Code::StepUpBindingMismatch,
                format!(
                    "the token's mpc_op or mpc_key_id names another operation or key than \
                     {operation} of this key"
                ),
            ),
            StepUpError::MissingTokenId => Problem::new(
                Code::StepUpRequired,
                "this operation needs a single-use step-up token: the token has no jti",
            ),
            StepUpError::Unbound => Problem::new(
                Code::StepUpRequired,
                format!(
                    "this server needs step-up tokens bound to one operation and key: \
                     mpc_op \"{operation}\" and mpc_key_id"
                ),
            ),
            _ => Problem::new(
                Code::StepUpRequired,
                format!(
                    "this operation needs a token with amr containing otp or mfa, auth_time \
                     within {max_age} s, and a jti"
                ),
            ),
        })?;
    crate::rate_limits::check_sensitive(state, &caller.0.subject).await?;
    Ok(spend)
}

fn parse_point(text: &str, what: &str) -> Result<k256::PublicKey, Problem> {
    mpc_api::parse_point(text).ok_or_else(|| {
        Problem::with_status(
            Code::InvalidRequest,
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("{what} is not a SEC1 compressed secp256k1 point in hex"),
        )
    })
}

/// Liveness.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process serves requests", body = Health)))]
pub(crate) async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Readiness: the database answers.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready", body = Health),
        (status = 503, description = "The database is unavailable", body = Problem,
            content_type = "application/problem+json"),
    ))]
pub(crate) async fn readyz(State(state): State<Arc<AppState>>) -> Result<Json<Health>, Problem> {
    state.vault.ping().await.map_err(|e| {
        tracing::warn!(error = %e, "readiness check failed");
        Problem::new(Code::Unavailable, "the database is unavailable")
    })?;
    Ok(Json(Health { status: "ready" }))
}

/// The caller's keys, a page at a time: follow `next_cursor` until it is
/// `null`. Every key that exists throughout the paging appears exactly
/// once; a key created meanwhile may or may not appear.
#[utoipa::path(get, path = "/v1/keys", tag = "keys", security(("bearer" = [])),
    params(PageParams),
    responses(
        (status = 200, description = "A page of the caller's keys", body = KeyList),
        (status = 400, description = "`limit` out of range (`invalid_request`) or a malformed cursor (`invalid_cursor`)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn list_keys(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    page: Page<KeyPosition>,
) -> Result<Json<KeyList>, Problem> {
    let mut keys = state
        .vault
        .keys_page(&caller.0.subject, page.after.as_ref(), page.fetch())
        .await?;
    let next_cursor = page.finish(&mut keys, KeyPosition::of);
    Ok(Json(KeyList {
        keys: keys.iter().map(KeyView::of).collect(),
        next_cursor,
    }))
}

/// One key's status.
#[utoipa::path(get, path = "/v1/keys/{key_id}", tag = "keys", security(("bearer" = [])),
    params(("key_id" = String, Path, description = "Key id, 64 hex characters")),
    responses(
        (status = 200, description = "The key", body = KeyView),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such key for this caller", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn get_key(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(key_id): Path<String>,
) -> Result<Json<KeyView>, Problem> {
    let record = owned_key(&state, &caller, &key_id).await?;
    Ok(Json(KeyView::of(&record)))
}

/// Revokes the key: its shares and presignatures are destroyed; nothing
/// signs with it again, and the funds are lost unless the owner holds an
/// export or backup. Needs a single-use step-up token (`amr` array with
/// `otp` or `mfa`, recent `auth_time`, `jti`; optionally `mpc_op`
/// `"revoke"` and `mpc_key_id`) and the body `{"confirm": "<key_id>"}`.
/// Repeating it on a revoked key changes nothing (and spends no token).
#[utoipa::path(delete, path = "/v1/keys/{key_id}", tag = "keys", security(("bearer" = [])),
    params(("key_id" = String, Path, description = "Key id, 64 hex characters")),
    request_body(content = RevokeRequest, description = "`confirm` must be the key id"),
    responses(
        (status = 200, description = "The revoked key", body = KeyView),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "No step-up token for this operation and key (`step_up_required`, `step_up_binding_mismatch`), or the token was already used (`step_up_token_used`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such key for this caller", body = Problem, content_type = "application/problem+json"),
        (status = 400, description = "Body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body is not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "No `confirm`, or it is not this key's id", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn revoke_key(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(key_id): Path<String>,
    JsonBody(request): JsonBody<RevokeRequest>,
) -> Result<Json<KeyView>, Problem> {
    let record = owned_key(&state, &caller, &key_id).await?;
    let spend = step_up(&state, &caller, StepUpOp::Revoke, &record).await?;
    if mpc_api::parse_key_id(&request.confirm) != Some(record.key_id) {
        return Err(Problem::with_status(
            Code::InvalidRequest,
            StatusCode::UNPROCESSABLE_ENTITY,
            "confirm must be the id of the key to revoke",
        ));
    }
    let event = Event {
        name: "key.revoked",
        detail: json!({ "via": "rest" }),
    };
    state
        .vault
        .revoke_spending(&record.key_id, event, now_ms(), Some(&spend))
        .await?;
    let record = owned_key(&state, &caller, &key_id).await?;
    Ok(Json(KeyView::of(&record)))
}

/// Requires the key's next WebSocket session to be a refresh; signing is
/// refused until then.
#[utoipa::path(post, path = "/v1/keys/{key_id}/rotate", tag = "keys", security(("bearer" = [])),
    params(("key_id" = String, Path, description = "Key id, 64 hex characters")),
    responses(
        (status = 200, description = "The key, now rotation_required", body = KeyView),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such key for this caller", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The key is revoked or pending", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn rotate_key(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(key_id): Path<String>,
) -> Result<Json<KeyView>, Problem> {
    let record = owned_key(&state, &caller, &key_id).await?;
    not_revoked_or_pending(&record)?;
    // A banned key stays banned: it needs the refresh all the same.
    if record.status == KeyStatus::Active {
        let event = Event {
            name: "key.rotation_requested",
            detail: json!({ "epoch": record.epoch }),
        };
        state
            .vault
            .set_status(&record.key_id, KeyStatus::RotationRequired, event, now_ms())
            .await?;
    }
    let record = owned_key(&state, &caller, &key_id).await?;
    Ok(Json(KeyView::of(&record)))
}

/// The key's audit log, a page at a time (follow `next_cursor`).
#[utoipa::path(get, path = "/v1/keys/{key_id}/audit", tag = "keys", security(("bearer" = [])),
    params(("key_id" = String, Path, description = "Key id, 64 hex characters"), PageParams),
    responses(
        (status = 200, description = "Oldest entry first", body = AuditLog),
        (status = 400, description = "`limit` out of range (`invalid_request`) or a malformed cursor (`invalid_cursor`)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such key for this caller", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn audit_log(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(key_id): Path<String>,
    page: Page<AuditPosition>,
) -> Result<Json<AuditLog>, Problem> {
    let record = owned_key(&state, &caller, &key_id).await?;
    let after = page.after.map(|AuditPosition(id)| id);
    let mut entries = state
        .vault
        .audit_page(&record.key_id, after, page.fetch())
        .await?;
    let next_cursor = page.finish(&mut entries, |entry| AuditPosition(entry.id));
    Ok(Json(AuditLog {
        entries: entries.into_iter().map(AuditView::from).collect(),
        next_cursor,
    }))
}

/// A verifiable backup of the server share to the recovery key; recorded.
/// Needs a single-use step-up token (as for revoke, `mpc_op` `"backup"`).
/// A backup to a recovery key named in the request (where allowed) counts
/// as an export: the key is marked exported and `key.exported` is emitted.
/// A pending key (PROTOCOL.md §18.3) is backed up to the configured
/// recovery key only.
#[utoipa::path(post, path = "/v1/keys/{key_id}/backup", tag = "keys", security(("bearer" = [])),
    params(("key_id" = String, Path, description = "Key id, 64 hex characters")),
    request_body(content = BackupRequest, description = "Optional; `{}` uses the configured recovery key"),
    responses(
        (status = 200, description = "The backup", body = BackupView),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "No step-up token for this operation and key (`step_up_required`, `step_up_binding_mismatch`), the token was already used (`step_up_token_used`), or a recovery key in the request where not allowed", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such key for this caller", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Revoked, pending with a recovery key in the request, or no recovery key configured", body = Problem, content_type = "application/problem+json"),
        (status = 400, description = "Body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body is not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Body has the wrong shape or values", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn backup_key(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(key_id): Path<String>,
    JsonBody(request): JsonBody<BackupRequest>,
) -> Result<Json<BackupView>, Problem> {
    let record = owned_key(&state, &caller, &key_id).await?;
    let spend = step_up(&state, &caller, StepUpOp::Backup, &record).await?;
    if request.recovery_public_key.is_some() {
        // A backup to a key the request names counts as an export.
        not_revoked_or_pending(&record)?;
    } else {
        not_revoked(&record)?;
    }
    let recovery_key = match (
        &request.recovery_public_key,
        state.rest.allow_request_recovery_key,
    ) {
        (Some(_), false) => {
            return Err(Problem::new(
                Code::RecoveryKeyNotAllowed,
                "this server backs up to its configured recovery key only",
            ))
        }
        (Some(text), true) => parse_point(text, "recovery_public_key")?,
        (None, _) => state.rest.recovery_key.ok_or_else(|| {
            Problem::new(
                Code::RecoveryKeyNotConfigured,
                "no recovery key is configured (MPC_BACKUP_RECOVERY_KEY)",
            )
        })?,
    };
    let stored = state
        .vault
        .share(&record, record.epoch)
        .await?
        .ok_or_else(|| Problem::new(Code::EpochUnavailable, "the key's share is unavailable"))?;
    let share = stored.share;
    let public_share = share.public_share(mpc_core::wire::Role::B);
    // About 25 ms of curve arithmetic: off the async workers.
    let backup =
        tokio::task::spawn_blocking(move || Backup::create(&mut OsRng, &share, &recovery_key))
            .await
            .map_err(|e| Problem::internal(&e))?;
    let bytes = backup.to_bytes();
    let recovery_bytes: [u8; 33] = recovery_key
        .to_encoded_point(true)
        .as_bytes()
        .try_into()
        .map_err(|_| Problem::internal(&"recovery key encoding"))?;
    let now = now_ms();
    let new = NewBackup {
        epoch: record.epoch,
        recovery_key: &recovery_bytes,
        backup: &bytes,
        counts_as_export: request.recovery_public_key.is_some(),
    };
    state
        .vault
        .record_backup_spending(&record, &new, now, Some(&spend))
        .await?;
    Ok(Json(BackupView {
        key_id: record.key_id.to_string(),
        epoch: record.epoch,
        role: "b".to_owned(),
        public_share: hex::encode(mpc_core::wire::encode_point(&public_share)),
        recovery_public_key: hex::encode(recovery_bytes),
        backup: hex::encode(bytes),
        created_at: now,
    }))
}

/// The server share encrypted to the owner's one-time key; the key is
/// marked exported. Needs a single-use step-up token (as for revoke,
/// `mpc_op` `"export"`).
#[utoipa::path(post, path = "/v1/keys/{key_id}/export", tag = "keys", security(("bearer" = [])),
    params(("key_id" = String, Path, description = "Key id, 64 hex characters")),
    request_body = ExportRequest,
    responses(
        (status = 200, description = "The encrypted server share", body = ExportView),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "No step-up token for this operation and key (`step_up_required`, `step_up_binding_mismatch`), or the token was already used (`step_up_token_used`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such key for this caller", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Revoked, pending, or no share of that epoch", body = Problem, content_type = "application/problem+json"),
        (status = 400, description = "Body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body is not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Body has the wrong shape or values", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn export_key(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(key_id): Path<String>,
    JsonBody(request): JsonBody<ExportRequest>,
) -> Result<Json<ExportView>, Problem> {
    let record = owned_key(&state, &caller, &key_id).await?;
    let spend = step_up(&state, &caller, StepUpOp::Export, &record).await?;
    not_revoked_or_pending(&record)?;
    let onetime = parse_point(&request.onetime_public_key, "onetime_public_key")?;
    let epoch = request.epoch.unwrap_or(record.epoch);
    let stored = state.vault.share(&record, epoch).await?.ok_or_else(|| {
        Problem::new(
            Code::EpochUnavailable,
            format!("no server share of epoch {epoch}"),
        )
    })?;
    let ciphertext =
        export_share(&mut OsRng, &stored.share, &onetime).map_err(|e| Problem::internal(&e))?;
    let event = Event {
        name: "key.exported",
        detail: json!({ "epoch": epoch }),
    };
    state
        .vault
        .mark_exported_spending(&record.key_id, event, now_ms(), Some(&spend))
        .await?;
    Ok(Json(ExportView {
        key_id: record.key_id.to_string(),
        epoch,
        ciphertext: hex::encode(ciphertext.to_bytes()),
    }))
}

/// The OpenAPI document of this service.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "mpc-server REST API",
        description = "Key status, backup, export, rotation and audit for two-party ECDSA keys \
                       (the server's share P2). Errors are RFC 9457 problem details with a stable `code`. \
                       Backup, export and revoke need a step-up token: a JWT whose `amr` (a JSON array) \
                       contains `otp` or `mfa`, whose `auth_time` is recent, and which carries a `jti`; \
                       each token is spent by the first successful use (a second use gets 403 \
                       `step_up_token_used`, on any replica). Optional claims `mpc_op` (`backup`, `export` \
                       or `revoke`) and `mpc_key_id` (64 hex) bind the token to one operation and key."
    ),
    paths(healthz, readyz, list_keys, get_key, revoke_key, rotate_key, audit_log, backup_key, export_key),
    components(schemas(Problem, KeyView, KeyList, BackupRequest, BackupView, ExportRequest, ExportView, RevokeRequest, AuditLog, AuditView, Health)),
    modifiers(&BearerAuth),
    tags(
        (name = "keys", description = "The caller's keys"),
        (name = "operations", description = "Health and readiness (also GET /metrics: Prometheus text)")
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// The OpenAPI document as pretty JSON (what `GET /openapi.json` serves and
/// `docs/openapi.json` holds).
#[must_use]
pub fn openapi_json() -> String {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc.to_pretty_json().unwrap_or_default()
}
