//! The server party's side of each WebSocket operation: which key and
//! epoch, the protocol run, and what is stored when (PROTOCOL.md §18.1).
//!
//! Storage order is what makes a crash at any point safe:
//! - keygen stores the share (key `pending`) before the server's outcome
//!   tells the client that the key exists, and activates the key only when
//!   the client's outcome (or first signature) confirms it (§18.3);
//! - presign stores the presignature before the outcome;
//! - online sign claims (marks used, erases) the presignature before the
//!   server's only message leaves;
//! - refresh runs under the key's lease (one refresh per key across every
//!   server process), stores the new share as ready before round 4 leaves,
//!   as confirmed before round 5 leaves, and finalizes (deletes the old
//!   epoch) only after the peer's round 5.

use std::sync::Arc;

use mpc_core::derive::DerivationPath;
use mpc_core::wire::{Role, SessionId};
use mpc_core::{Dkg, KeyId, KeyShare, Prehash, Presign, Refresh, Sign};
use mpc_transport_ws::{Frames, Operation, Rejection, ServerSession, Traffic, TransportError};
use rand_core::OsRng;
use serde_json::json;
use tracing::{error, info, warn};

use crate::bans::BanHooks;
use crate::crash;
use crate::server::{now_ms, AppState};
use crate::vault::{
    ClaimedPresignature, Confirmation, Event, KeyRecord, KeyStatus, RefreshLease,
    StoredPresignature, StoredShare, VaultError,
};

/// Close codes (application range) this server sends, beyond the
/// transport's own (`mpc_transport_ws::CloseCode`).
pub mod codes {
    use mpc_transport_ws::Rejection;

    /// 4101: the key was revoked; nothing signs with it.
    pub const KEY_REVOKED: Rejection = Rejection::application(4101, "key revoked");
    /// 4102: a protocol check failed earlier with a ban-class error; the
    /// key signs again only after a refresh.
    pub const KEY_BANNED: Rejection = Rejection::application(4102, "key banned until refreshed");
    /// 4103: a rotation was requested; the next session must be a refresh.
    pub const ROTATION_REQUIRED: Rejection =
        Rejection::application(4103, "rotation required: refresh first");
    /// 4104: the server holds no share of the epoch the client named.
    pub const UNKNOWN_EPOCH: Rejection = Rejection::application(4104, "unknown epoch");
    /// 4105: the BIP32 path cannot be derived (an index with `IL >= n`).
    pub const INVALID_PATH: Rejection = Rejection::application(4105, "invalid derivation path");
    /// 4106: another refresh of this key is in progress.
    pub const REFRESH_IN_PROGRESS: Rejection =
        Rejection::application(4106, "refresh already in progress");
    /// 4107: the key's keygen is not confirmed yet (PROTOCOL.md §18.3): it
    /// signs (which confirms it) but is not refreshed.
    pub const KEY_PENDING: Rejection =
        Rejection::application(4107, "key pending: sign with it once first");
    /// 4108: the owner has `MPC_MAX_KEYS_PER_OWNER` keys that are not
    /// revoked (PROTOCOL.md §18.5); refused before any protocol work.
    pub const KEY_QUOTA_REACHED: Rejection = Rejection::application(4108, "key quota reached");
    /// 4109: the owner has `MPC_MAX_PRESIGNATURES_PER_OWNER` unused
    /// presignatures (§18.5); refused before any protocol work.
    pub const PRESIGNATURE_QUOTA_REACHED: Rejection =
        Rejection::application(4109, "presignature quota reached");
    /// 4111: the owner or the client's address has as many keygen or
    /// refresh sessions in progress as allowed (§18.5); refused before any
    /// protocol work.
    pub const KEYGENS_IN_PROGRESS: Rejection =
        Rejection::application(4111, "too many keygens in progress");
    /// 4110: the caller's rate limit for this operation is reached
    /// (PROTOCOL.md §18.5); the reason says how long to wait ("rate
    /// limited: retry in 1 s", "10 s", "1 min", "10 min" or "1 h").
    pub const RATE_LIMITED: Rejection = Rejection::application(4110, "rate limited");
}

/// Runs the operation the client's opening asks for, as `owner`. Returns
/// the session's traffic (for metrics).
///
/// # Errors
///
/// The session's [`TransportError`]; the socket is closed by then.
pub(crate) async fn handle<F: Frames>(
    state: Arc<AppState>,
    owner: String,
    session: ServerSession<F>,
) -> Result<Traffic, TransportError> {
    let operation = session.opening().operation.clone();
    if let Err(rejection) = crate::rate_limits::check_operation(&state, &owner, &operation).await {
        return Err(session.reject(rejection).await);
    }
    match operation {
        Operation::Keygen => keygen(&state, &owner, session).await,
        Operation::Sign {
            key_id,
            epoch,
            prehash,
            path,
        } => sign(&state, &owner, session, key_id, epoch, prehash, path).await,
        Operation::Presign {
            key_id,
            epoch,
            path,
        } => presign(&state, &owner, session, key_id, epoch, path).await,
        Operation::OnlineSign {
            key_id,
            presignature,
            prehash,
        } => online_sign(&state, &owner, session, key_id, presignature, prehash).await,
        Operation::Refresh { key_id, epoch } => {
            refresh(&state, &owner, session, key_id, epoch).await
        }
        Operation::SignSchnorr {
            key_id,
            epoch,
            message,
            path,
            taproot,
        } => {
            let request = crate::schnorr::Request {
                key_id,
                epoch,
                message,
                path,
                taproot,
            };
            crate::schnorr::sign(&state, &owner, session, request).await
        }
        Operation::PresignSchnorr {
            key_id,
            epoch,
            path,
            taproot,
        } => {
            let request = crate::schnorr::PresignRequest {
                key_id,
                epoch,
                path,
                taproot,
            };
            crate::schnorr::presign(&state, &owner, session, request).await
        }
        Operation::OnlineSignSchnorr {
            key_id,
            presignature,
            message,
            path,
            taproot,
        } => {
            let request = crate::schnorr::OnlineRequest {
                key_id,
                presignature,
                message,
                path,
                taproot,
            };
            crate::schnorr::online_sign(&state, &owner, session, request).await
        }
        _ => Err(session.reject(Rejection::UNSUPPORTED_OPERATION).await),
    }
}

/// Ends the session successfully; the protocol's traffic, for metrics.
pub(crate) async fn finish<F: Frames>(
    session: ServerSession<F>,
) -> Result<Traffic, TransportError> {
    let traffic = session.traffic();
    session.finish().await?;
    Ok(traffic)
}

/// Logs a storage failure (its text holds no secrets) and gives the
/// rejection to send.
///
/// A quota reached where the key or presignature is stored is no failure:
/// its close code (4108, 4109), not logged as an error.
///
/// A detected rollback (the vault has logged the incident) is refused as
/// not found: for the client the retired record does not exist
/// (PROTOCOL.md §18.3).
pub(crate) fn storage_failed(what: &str, error: &VaultError) -> Rejection {
    use crate::vault::Quota;
    match error {
        // Not a failure: a quota check at store time (PROTOCOL.md §18.5).
        VaultError::QuotaReached(Quota::Keys) => return codes::KEY_QUOTA_REACHED,
        VaultError::QuotaReached(Quota::Presignatures) => return codes::PRESIGNATURE_QUOTA_REACHED,
        _ => {}
    }
    error!(%error, "storage failed: {what}");
    if matches!(error, VaultError::RolledBack(_)) {
        return Rejection::NOT_FOUND;
    }
    Rejection::INTERNAL
}

async fn keygen<F: Frames>(
    state: &AppState,
    owner: &str,
    mut session: ServerSession<F>,
) -> Result<Traffic, TransportError> {
    let context = session.opening().context().to_vec();
    let mut dkg = Dkg::new(Role::B, &context);
    let share = match session.run(&mut dkg, &mut OsRng).await {
        Ok(share) => share,
        Err(e) => {
            count_pprf_failure(state, "keygen", owner, None, &e);
            return Err(e);
        }
    };
    crash::point("keygen:before-store");
    // Pending until the client confirms it holds the key too (§18.3): a
    // client that fails its last check or vanishes leaves no active key.
    let record = match state
        .vault
        .create_pending_key_within(
            owner,
            &share,
            state.admission.limits().max_keys_per_owner,
            now_ms(),
        )
        .await
    {
        Ok(record) => record,
        Err(e) => return Err(session.reject(storage_failed("create key", &e)).await),
    };
    crate::admission::stored();
    crash::point("keygen:after-store");
    info!(key_id = %record.key_id, owner, "key stored, pending the client's outcome");
    let traffic = session.traffic();
    session
        .finish_with(activate(state, &record, Confirmation::Outcome))
        .await?;
    Ok(traffic)
}

/// Counts a failed GGM-tree proof of the client's OT setup (§5.3).
fn count_pprf_failure(
    state: &AppState,
    operation: &'static str,
    owner: &str,
    key: Option<&KeyId>,
    error: &TransportError,
) {
    let _ = state
        .pprf_failures
        .observe(&state.metrics, operation, owner, key, error);
}

/// Activates a pending key (§18.3). The keygen's client succeeds only on
/// the normal close that follows `Ok`; an `Err` closes its session with the
/// rejection's code instead, so that no client believes in a key that stays
/// pending (and is reaped). A key that is no longer pending (activated by a
/// concurrent first signature, or revoked by its owner) is not reaped: `Ok`.
async fn activate(
    state: &AppState,
    record: &KeyRecord,
    confirmed_by: Confirmation,
) -> Result<(), Rejection> {
    match state
        .vault
        .activate_key(&record.key_id, &record.owner, confirmed_by, now_ms())
        .await
    {
        Ok(true) => {
            info!(key_id = %record.key_id, owner = %record.owner, "key created");
            Ok(())
        }
        Ok(false) => Ok(()),
        Err(e) => Err(storage_failed("activate a pending key", &e)),
    }
}

/// The caller's key, if it exists, is theirs, and is in a state that allows
/// `purpose`.
pub(crate) async fn usable_key<F: Frames>(
    state: &AppState,
    owner: &str,
    key_id: &KeyId,
    purpose: Purpose,
    session: ServerSession<F>,
) -> Result<(KeyRecord, ServerSession<F>), TransportError> {
    or_reject(key_for(state, owner, key_id, purpose).await, session).await
}

/// `loaded` with the session, or the session's rejection when `loaded` is
/// one: the one way a loading step ends a session it refuses.
async fn or_reject<T, F: Frames>(
    loaded: Result<T, Rejection>,
    session: ServerSession<F>,
) -> Result<(T, ServerSession<F>), TransportError> {
    match loaded {
        Ok(value) => Ok((value, session)),
        Err(rejection) => Err(session.reject(rejection).await),
    }
}

/// The record of `key_id` if `owner` may use it for `purpose`, else the
/// rejection to send.
async fn key_for(
    state: &AppState,
    owner: &str,
    key_id: &KeyId,
    purpose: Purpose,
) -> Result<KeyRecord, Rejection> {
    let record = match state.vault.key(key_id).await {
        Ok(Some(record)) => record,
        Ok(None) => return Err(Rejection::NOT_FOUND),
        Err(e) => return Err(storage_failed("load key", &e)),
    };
    check_use(state, &record, owner, purpose)?;
    Ok(record)
}

/// Refuses `record` unless `owner` may use it for `purpose` now.
fn check_use(
    state: &AppState,
    record: &KeyRecord,
    owner: &str,
    purpose: Purpose,
) -> Result<(), Rejection> {
    // Another owner's key is reported exactly like a missing one.
    if record.owner != owner {
        return Err(Rejection::NOT_FOUND);
    }
    // A ban this process could not store yet refuses signing all the same
    // (fail closed); a refresh, which replaces the OT material, may run.
    let pending_ban =
        matches!(purpose, Purpose::Sign) && state.key_guards.is_pending(&record.key_id);
    let refused = if pending_ban {
        Some(codes::KEY_BANNED)
    } else {
        refusal(record.status, purpose)
    };
    refused.map_or(Ok(()), Err)
}

/// The caller's key, if it allows signing, and its share of `epoch`: both
/// loads on one database connection; the key's refusals come first, and
/// the share is opened only for a usable key.
pub(crate) async fn usable_share<F: Frames>(
    state: &AppState,
    owner: &str,
    key_id: &KeyId,
    epoch: u64,
    session: ServerSession<F>,
) -> Result<(KeyRecord, StoredShare, ServerSession<F>), TransportError> {
    let ((record, stored), session) =
        or_reject(key_and_share(state, owner, key_id, epoch).await, session).await?;
    Ok((record, stored, session))
}

async fn key_and_share(
    state: &AppState,
    owner: &str,
    key_id: &KeyId,
    epoch: u64,
) -> Result<(KeyRecord, StoredShare), Rejection> {
    let (record, row) = match state.vault.key_and_share_row(key_id, epoch).await {
        Ok(Some(loaded)) => loaded,
        Ok(None) => return Err(Rejection::NOT_FOUND),
        Err(e) => return Err(storage_failed("load key", &e)),
    };
    check_use(state, &record, owner, Purpose::Sign)?;
    let row = share_found(row)?;
    match state.vault.open_checked(&record, epoch, row).await {
        Ok(stored) => Ok((record, stored)),
        Err(e) => Err(storage_failed("load share", &e)),
    }
}

/// A share (or its row) that a load found, else the rejection to send: a
/// missing one is an epoch this key does not have.
fn share_found<T>(loaded: Result<Option<T>, VaultError>) -> Result<T, Rejection> {
    match loaded {
        Ok(Some(found)) => Ok(found),
        Ok(None) => Err(codes::UNKNOWN_EPOCH),
        Err(e) => Err(storage_failed("load share", &e)),
    }
}

/// Why a key in `status` may not be used for `purpose`, if it may not.
pub(crate) fn refusal(status: KeyStatus, purpose: Purpose) -> Option<Rejection> {
    match (status, purpose) {
        (KeyStatus::Revoked, _) => Some(codes::KEY_REVOKED),
        (KeyStatus::Pending, Purpose::Refresh) => Some(codes::KEY_PENDING),
        (KeyStatus::Active | KeyStatus::Pending, _) | (_, Purpose::Refresh) => None,
        (KeyStatus::Banned, Purpose::Sign) => Some(codes::KEY_BANNED),
        (KeyStatus::RotationRequired, Purpose::Sign) => Some(codes::ROTATION_REQUIRED),
    }
}

/// What a session uses a key for.
#[derive(Clone, Copy)]
pub(crate) enum Purpose {
    /// Sign, presign, online sign: the share's OT material is used.
    Sign,
    /// Refresh: allowed for a banned key (it replaces the OT material).
    Refresh,
}

/// Claims the stored presignature `id` of `record` for an online step
/// (marked used, ciphertext erased, tombstoned: PROTOCOL.md §14.3, §18.4);
/// refuses the session with 4006 if there is no usable one of scheme `P`
/// (unknown, used, another key's, or of the other scheme).
pub(crate) async fn claim_presignature<P: StoredPresignature, F: Frames>(
    state: &AppState,
    record: &KeyRecord,
    id: &SessionId,
    session: ServerSession<F>,
) -> Result<(ClaimedPresignature<P>, ServerSession<F>), TransportError> {
    match state
        .vault
        .claim_presignature::<P>(record, id, now_ms())
        .await
    {
        Ok(Some(claimed)) => Ok((claimed, session)),
        Ok(None) => Err(session.reject(Rejection::NOT_FOUND).await),
        Err(e) => Err(session
            .reject(storage_failed("take presignature", &e))
            .await),
    }
}

/// The server's share of `epoch`, or the session is rejected.
pub(crate) async fn share_of<F: Frames>(
    state: &AppState,
    record: &KeyRecord,
    epoch: u64,
    session: ServerSession<F>,
) -> Result<(StoredShare, ServerSession<F>), TransportError> {
    or_reject(stored_share(state, record, epoch).await, session).await
}

/// The share of `record` at `epoch`, else the rejection to send.
async fn stored_share(
    state: &AppState,
    record: &KeyRecord,
    epoch: u64,
) -> Result<StoredShare, Rejection> {
    share_found(state.vault.share(record, epoch).await)
}

/// Records a use of the key and, when the client used an epoch newer than
/// the finalized one, finalizes it: the client signs with a new epoch only
/// once confirmed, so it will never use the old one again (§18.1).
pub(crate) async fn record_use(state: &AppState, record: &KeyRecord, epoch: u64, event: Event<'_>) {
    let now = now_ms();
    let vault = &state.vault;
    if record.status == KeyStatus::Pending {
        // The client's keygen outcome was lost, but it holds the share: the
        // signature proves it (§18.3). A failure is logged; the key stays
        // pending and the owner's next signature tries again.
        let _ = activate(state, record, Confirmation::Signature).await;
    }
    let result = async {
        // Last-use time and audit entry in one transaction: one commit
        // (one fsync) per signature. Only the rare steps above and below
        // (a first signature that activates its key, a first use of a new
        // epoch) add their own.
        vault
            .record_use(&record.key_id, &record.owner, event, now)
            .await?;
        if epoch > record.epoch {
            let finalize = Event {
                name: "refresh.finalized_by_use",
                detail: json!({ "epoch": epoch }),
            };
            vault
                .finalize_epoch(&record.key_id, epoch, finalize, now)
                .await?;
        }
        Ok::<(), VaultError>(())
    }
    .await;
    if let Err(e) = result {
        // The signature already exists on the client's side: failing the
        // session now would not take it back.
        error!(key_id = %record.key_id, error = %e, "could not record a key use");
    }
}

async fn sign<F: Frames>(
    state: &AppState,
    owner: &str,
    session: ServerSession<F>,
    key_id: KeyId,
    epoch: u64,
    prehash: Prehash,
    path: DerivationPath,
) -> Result<Traffic, TransportError> {
    // Joined before the key's status is read: a ban from then on reaches
    // this session (PROTOCOL.md §18.2).
    let joined = state.key_guards.join(&key_id);
    let (record, stored, mut session) = usable_share(state, owner, &key_id, epoch, session).await?;
    let mut hooks = BanHooks::new(&state.key_guards, joined, epoch);
    let result = match Sign::with_path(&stored.share, prehash, &path) {
        Ok(mut protocol) => Some(
            session
                .run_hooked(&mut protocol, &mut OsRng, &mut hooks)
                .await,
        ),
        Err(_) => None,
    };
    match result {
        None => Err(session.reject(codes::INVALID_PATH).await),
        // A ban-class failure was stored by the hooks before the outcome.
        Some(Err(e)) => Err(e),
        Some(Ok(_signature)) => {
            crash::point("sign:after-run");
            let event = Event {
                name: "sign",
                detail: json!({
                    "epoch": epoch,
                    "path": path.to_string(),
                    "prehash": hex::encode(prehash.as_bytes()),
                }),
            };
            record_use(state, &record, epoch, event).await;
            finish(session).await
        }
    }
}

async fn presign<F: Frames>(
    state: &AppState,
    owner: &str,
    session: ServerSession<F>,
    key_id: KeyId,
    epoch: u64,
    path: DerivationPath,
) -> Result<Traffic, TransportError> {
    let joined = state.key_guards.join(&key_id);
    let (record, stored, mut session) = usable_share(state, owner, &key_id, epoch, session).await?;
    let mut hooks = BanHooks::new(&state.key_guards, joined, epoch);
    let result = match Presign::with_path(&stored.share, &path) {
        Ok(mut protocol) => Some(
            session
                .run_hooked(&mut protocol, &mut OsRng, &mut hooks)
                .await,
        ),
        Err(_) => None,
    };
    let presignature = match result {
        None => return Err(session.reject(codes::INVALID_PATH).await),
        Some(Err(e)) => return Err(e),
        Some(Ok(presignature)) => presignature,
    };
    crash::point("presign:before-store");
    if let Err(e) = state
        .vault
        .store_presignature_within(
            &record,
            &presignature,
            state.admission.limits().max_presignatures_per_owner,
            now_ms(),
        )
        .await
    {
        return Err(session
            .reject(storage_failed("store presignature", &e))
            .await);
    }
    crate::admission::stored();
    crash::point("presign:after-store");
    finish(session).await
}

async fn online_sign<F: Frames>(
    state: &AppState,
    owner: &str,
    session: ServerSession<F>,
    key_id: KeyId,
    presignature: SessionId,
    prehash: Prehash,
) -> Result<Traffic, TransportError> {
    let joined = state.key_guards.join(&key_id);
    let (record, session) = usable_key(state, owner, &key_id, Purpose::Sign, session).await?;
    // Claimed (marked used, ciphertext erased) before anything is sent: a
    // crash from here on loses the presignature, never reuses it. The claim
    // is what OnlineSign::new asks for (§14.3).
    let (claimed, session) =
        claim_presignature::<mpc_core::Presignature, F>(state, &record, &presignature, session)
            .await?;
    crash::point("online:after-take");
    let epoch = claimed.epoch();
    // The share of the presignature's epoch: OnlineSign refuses a burned
    // one (a ban this process stored) and any other key or epoch.
    let (stored, mut session) = share_of(state, &record, epoch, session).await?;
    let mut protocol = match claimed.into_online_sign(&stored.share, prehash) {
        Ok(protocol) => protocol,
        Err(mpc_core::Error::OtMaterialBurned) => {
            return Err(session.reject(codes::KEY_BANNED).await)
        }
        Err(e) => {
            error!(key_id = %key_id, error = %e, "a claimed presignature does not match its share");
            return Err(session.reject(Rejection::INTERNAL).await);
        }
    };
    // A failed final verification is ban-class: the online step uses no OT
    // material, but the key's is burned all the same (§8), by the hooks.
    let mut hooks = BanHooks::new(&state.key_guards, joined, epoch);
    match session
        .run_hooked(&mut protocol, &mut OsRng, &mut hooks)
        .await
    {
        Ok(_signature) => {
            let event = Event {
                name: "sign",
                detail: json!({
                    "epoch": epoch,
                    "presigned": true,
                    "prehash": hex::encode(prehash.as_bytes()),
                }),
            };
            record_use(state, &record, epoch, event).await;
            finish(session).await
        }
        Err(e) => Err(e),
    }
}

async fn refresh<F: Frames>(
    state: &AppState,
    owner: &str,
    session: ServerSession<F>,
    key_id: KeyId,
    epoch: u64,
) -> Result<Traffic, TransportError> {
    // Ownership first: another owner gets 4006 exactly as for a missing
    // key, never 4106, which would tell that the key exists and is busy.
    let (_, session) = usable_key(state, owner, &key_id, Purpose::Refresh, session).await?;
    let lease = match state
        .vault
        .take_refresh_lease(&key_id, state.refresh_lease, now_ms())
        .await
    {
        Ok(Some(lease)) => lease,
        Ok(None) => return Err(session.reject(codes::REFRESH_IN_PROGRESS).await),
        Err(e) => {
            return Err(session
                .reject(storage_failed("take refresh lease", &e))
                .await)
        }
    };
    leased_refresh(state, owner, session, epoch, lease).await
}

/// The refresh proper, under the key's lease (PROTOCOL.md §18.1).
///
/// The lease is given back before the device hears how the session ended
/// (its outcome or a refusal): a device told "unknown epoch" retries at
/// once from its newer share, and a device whose refresh finished may
/// start the next one; neither may find its own lease still held (4106).
async fn leased_refresh<F: Frames>(
    state: &AppState,
    owner: &str,
    session: ServerSession<F>,
    epoch: u64,
    lease: RefreshLease,
) -> Result<Traffic, TransportError> {
    let key_id = *lease.key_id();
    // Read again under the lease: a refresh that finalized meanwhile has
    // deleted the epoch this one would start from.
    let start = match key_for(state, owner, &key_id, Purpose::Refresh).await {
        Ok(record) => stored_share(state, &record, epoch)
            .await
            .map(|stored| (record, stored)),
        Err(rejection) => Err(rejection),
    };
    let (record, stored) = match start {
        Ok(start) => start,
        Err(rejection) => {
            release(lease).await;
            return Err(session.reject(rejection).await);
        }
    };
    let mut session = session;
    let context = session.opening().context().to_vec();
    let mut protocol = Refresh::new(&stored.share, &context);
    let mut hook = DurableRefresh::new(state, &record, &lease);
    let run = session.run_with(&mut protocol, &mut OsRng, &mut hook).await;
    drop(protocol);
    drop(hook);
    let new_share = match run {
        Ok(share) => share,
        Err(e) => {
            // The transport has closed the session already.
            release(lease).await;
            count_pprf_failure(state, "refresh", owner, Some(&key_id), &e);
            return Err(e);
        }
    };
    crash::point("refresh:before-finalize");
    let event = Event {
        name: "key.refreshed",
        detail: json!({ "from_epoch": epoch, "epoch": new_share.epoch() }),
    };
    let finalized = state
        .vault
        .finalize_refreshed(&lease, &new_share, event, now_ms())
        .await;
    release(lease).await;
    if let Err(e) = finalized {
        return Err(session.reject(storage_failed("finalize epoch", &e)).await);
    }
    crash::point("refresh:after-finalize");
    info!(%key_id, epoch = new_share.epoch(), "key refreshed");
    finish(session).await
}

/// Gives `lease` back before the session's last message. Bounded: a
/// release that cannot finish in time goes on in the background (the
/// lease's drop) rather than hold up the outcome; a failure is logged, and
/// the lease then expires.
async fn release(lease: RefreshLease) {
    crash::stall("refresh:release").await;
    let key_id = *lease.key_id();
    match tokio::time::timeout(RELEASE_WAIT, lease.release()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            warn!(%key_id, error = %e, "could not release the refresh lease; retrying in the background");
        }
        Err(_) => warn!(%key_id, "releasing the refresh lease is slow; going on in the background"),
    }
}

/// How long a refresh session waits for its lease's release before it
/// sends its outcome anyway.
const RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The refresh's [`BeforeSend`](mpc_transport_ws::BeforeSend) hook: stores
/// the new share when it first exists and its confirmation when it first
/// holds, each before the next message leaves and each under the session's
/// lease (PROTOCOL.md §18.1).
struct DurableRefresh<'l> {
    vault: crate::vault::Vault,
    record: KeyRecord,
    lease: &'l RefreshLease,
    /// The new share, once stored as ready.
    ready: Option<Arc<KeyShare>>,
    confirmed: bool,
}

impl<'l> DurableRefresh<'l> {
    fn new(state: &AppState, record: &KeyRecord, lease: &'l RefreshLease) -> Self {
        Self {
            vault: state.vault.clone(),
            record: record.clone(),
            lease,
            ready: None,
            confirmed: false,
        }
    }
}

impl<'a> mpc_transport_ws::BeforeSend<Refresh<'a>> for DurableRefresh<'_> {
    fn before_send(
        &mut self,
        protocol: &Refresh<'a>,
    ) -> impl std::future::Future<Output = Result<(), Rejection>> + Send {
        enum Action {
            None,
            Ready(Arc<KeyShare>),
            Confirm(Arc<KeyShare>),
            Failed,
        }
        let action = match (&self.ready, protocol.ready_share()) {
            // The share is not `Clone`: copy it through its encoding.
            (None, Some(share)) => match KeyShare::from_bytes(&share.to_bytes()) {
                Ok(copy) => {
                    let copy = Arc::new(copy);
                    self.ready = Some(Arc::clone(&copy));
                    Action::Ready(copy)
                }
                Err(_) => Action::Failed,
            },
            (Some(ready), Some(_)) if !self.confirmed && protocol.is_confirmed() => {
                self.confirmed = true;
                Action::Confirm(Arc::clone(ready))
            }
            _ => Action::None,
        };
        let vault = self.vault.clone();
        let record = self.record.clone();
        let lease = self.lease;
        async move {
            match action {
                Action::None => Ok(()),
                Action::Failed => Err(Rejection::INTERNAL),
                Action::Ready(share) => {
                    crash::point("refresh:before-ready");
                    vault
                        .store_refreshed(lease, &record, &share, now_ms())
                        .await
                        .map_err(|e| storage_failed("store refreshed share", &e))?;
                    crash::point("refresh:after-ready");
                    Ok(())
                }
                Action::Confirm(share) => {
                    vault
                        .confirm_refreshed(lease, &share, now_ms())
                        .await
                        .map_err(|e| storage_failed("confirm refreshed share", &e))?;
                    crash::point("refresh:after-confirm");
                    Ok(())
                }
            }
        }
    }
}
