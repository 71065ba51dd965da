//! The server party's side of two-party BIP340 signing (PROTOCOL.md §20):
//! the same ownership, epoch, ban and key-status rules as ECDSA signing
//! (`session::sign`), with an audit row and metrics label that name the
//! scheme; and of presigned BIP340 signing (§20.5), stored and claimed as
//! ECDSA presignatures are (`session::presign`, `session::online_sign`).

use mpc_core::derive::DerivationPath;
use mpc_core::wire::SessionId;
use mpc_core::{
    KeyId, SchnorrPresign, SchnorrPresignature, SchnorrSignature, SignSchnorr, Taproot,
};
use mpc_transport_ws::{Frames, Rejection, ServerSession, Traffic, TransportError};
use rand_core::OsRng;
use serde_json::json;
use tracing::{error, warn};

use crate::bans::BanHooks;
use crate::crash;
use crate::server::{now_ms, AppState};
use crate::session::{
    claim_presignature, codes, finish, record_use, share_of, storage_failed, usable_key,
    usable_share, Purpose,
};
use crate::vault::Event;

/// What the client's opening asks to sign.
pub(crate) struct Request {
    pub(crate) key_id: KeyId,
    pub(crate) epoch: u64,
    pub(crate) message: [u8; 32],
    pub(crate) path: DerivationPath,
    pub(crate) taproot: Taproot,
}

/// The audit label of a Taproot mode, and its merkle root if any.
fn taproot_detail(taproot: Taproot) -> (&'static str, Option<String>) {
    match taproot {
        Taproot::Off => ("off", None),
        Taproot::KeyPathOnly => ("key-path", None),
        Taproot::MerkleRoot(root) => ("merkle-root", Some(hex::encode(root))),
    }
}

/// Runs one BIP340 signing session as party B.
///
/// # Errors
///
/// The session's [`TransportError`]; the socket is closed by then.
pub(crate) async fn sign<F: Frames>(
    state: &AppState,
    owner: &str,
    session: ServerSession<F>,
    request: Request,
) -> Result<Traffic, TransportError> {
    let Request {
        key_id,
        epoch,
        message,
        path,
        taproot,
    } = request;
    // Joined before the key's status is read, as for ECDSA: a ban on the
    // key from then on reaches this session too (PROTOCOL.md §18.2).
    let joined = state.key_guards.join(&key_id);
    let (record, stored, mut session) = usable_share(state, owner, &key_id, epoch, session).await?;
    let mut hooks = BanHooks::new(&state.key_guards, joined, epoch);
    let mut protocol = match SignSchnorr::new(&stored.share, &message, &path, taproot) {
        Ok(protocol) => protocol,
        // A stored share whose public shares do not add up: our fault, not
        // the request's.
        Err(mpc_core::Error::MalformedKeyShare) => {
            error!(%key_id, epoch, "stored share is inconsistent");
            return Err(session.reject(Rejection::INTERNAL).await);
        }
        // An underivable path, or a Taproot tweak BIP341 rejects.
        Err(_) => return Err(session.reject(codes::INVALID_PATH).await),
    };
    let signature = session
        .run_hooked(&mut protocol, &mut OsRng, &mut hooks)
        .await?;
    crash::point("sign-bip340:after-run");
    let event = sign_event(epoch, &path, taproot, &message, &signature, false);
    record_use(state, &record, epoch, event).await;
    finish(session).await
}

/// The audit row of a BIP340 signature, one-shot or presigned.
fn sign_event(
    epoch: u64,
    path: &DerivationPath,
    taproot: Taproot,
    message: &[u8; 32],
    signature: &SchnorrSignature,
    presigned: bool,
) -> Event<'static> {
    let (mode, merkle_root) = taproot_detail(taproot);
    Event {
        name: "sign",
        detail: json!({
            "scheme": "bip340",
            "presigned": presigned,
            "epoch": epoch,
            "path": path.to_string(),
            "taproot": mode,
            "merkle_root": merkle_root,
            "message": hex::encode(message),
            "public_key": hex::encode(signature.public_key),
        }),
    }
}

/// What a BIP340 presigning opening asks for.
pub(crate) struct PresignRequest {
    pub(crate) key_id: KeyId,
    pub(crate) epoch: u64,
    pub(crate) path: DerivationPath,
    pub(crate) taproot: Taproot,
}

/// Runs the BIP340 nonce round as party B and stores the presignature,
/// sealed, before the outcome (PROTOCOL.md §18.1, §20.5).
///
/// # Errors
///
/// The session's [`TransportError`]; the socket is closed by then.
pub(crate) async fn presign<F: Frames>(
    state: &AppState,
    owner: &str,
    session: ServerSession<F>,
    request: PresignRequest,
) -> Result<Traffic, TransportError> {
    let PresignRequest {
        key_id,
        epoch,
        path,
        taproot,
    } = request;
    let joined = state.key_guards.join(&key_id);
    let (record, stored, mut session) = usable_share(state, owner, &key_id, epoch, session).await?;
    let mut hooks = BanHooks::new(&state.key_guards, joined, epoch);
    let mut protocol = match SchnorrPresign::new(&stored.share, &path, taproot) {
        Ok(protocol) => protocol,
        Err(mpc_core::Error::MalformedKeyShare) => {
            error!(%key_id, epoch, "stored share is inconsistent");
            return Err(session.reject(Rejection::INTERNAL).await);
        }
        Err(_) => return Err(session.reject(codes::INVALID_PATH).await),
    };
    let presignature: SchnorrPresignature = session
        .run_hooked(&mut protocol, &mut OsRng, &mut hooks)
        .await?;
    crash::point("presign-bip340:before-store");
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
    finish(session).await
}

/// What a BIP340 online opening asks for.
pub(crate) struct OnlineRequest {
    pub(crate) key_id: KeyId,
    pub(crate) presignature: SessionId,
    pub(crate) message: [u8; 32],
    pub(crate) path: DerivationPath,
    pub(crate) taproot: Taproot,
}

/// Runs the online round of a stored BIP340 presignature as party B: the
/// row is claimed (marked used, erased, tombstoned) before anything is
/// sent, and only a claim of a `bip340` row is accepted (PROTOCOL.md
/// §14.3, §20.5).
///
/// # Errors
///
/// The session's [`TransportError`]; the socket is closed by then.
pub(crate) async fn online_sign<F: Frames>(
    state: &AppState,
    owner: &str,
    session: ServerSession<F>,
    request: OnlineRequest,
) -> Result<Traffic, TransportError> {
    let OnlineRequest {
        key_id,
        presignature,
        message,
        path,
        taproot,
    } = request;
    let joined = state.key_guards.join(&key_id);
    let (record, session) = usable_key(state, owner, &key_id, Purpose::Sign, session).await?;
    // An ECDSA presignature's id is refused as unknown.
    let (claimed, session) =
        claim_presignature::<SchnorrPresignature, F>(state, &record, &presignature, session)
            .await?;
    crash::point("online-bip340:after-take");
    let epoch = claimed.epoch();
    let (stored, mut session) = share_of(state, &record, epoch, session).await?;
    let mut protocol = match claimed.into_online_schnorr(&stored.share, &message, &path, taproot) {
        Ok(protocol) => protocol,
        Err(mpc_core::Error::OtMaterialBurned) => {
            return Err(session.reject(codes::KEY_BANNED).await)
        }
        // The opening names another path or Taproot setting than the
        // presignature's (an honest client's SchnorrOnline refuses that
        // before connecting); the presignature stays spent.
        Err(mpc_core::Error::KeyMismatch) => {
            warn!(%key_id, "online opening does not match its presignature's path or tweak");
            return Err(session.reject(codes::INVALID_PATH).await);
        }
        Err(e) => {
            error!(%key_id, error = %e, "a claimed presignature does not match its share");
            return Err(session.reject(Rejection::INTERNAL).await);
        }
    };
    let mut hooks = BanHooks::new(&state.key_guards, joined, epoch);
    let signature = session
        .run_hooked(&mut protocol, &mut OsRng, &mut hooks)
        .await?;
    let event = sign_event(epoch, &path, taproot, &message, &signature, true);
    record_use(state, &record, epoch, event).await;
    finish(session).await
}
