//! The server party's side of two-party BIP340 signing (PROTOCOL.md §20):
//! the same ownership, epoch, ban and key-status rules as ECDSA signing
//! (`session::sign`), with an audit row and metrics label that name the
//! scheme.

use mpc_core::derive::DerivationPath;
use mpc_core::{KeyId, SignSchnorr, Taproot};
use mpc_transport_ws::{Frames, Rejection, ServerSession, Traffic, TransportError};
use rand_core::OsRng;
use serde_json::json;
use tracing::error;

use crate::bans::BanHooks;
use crate::crash;
use crate::server::AppState;
use crate::session::{codes, finish, record_use, share_of, usable_key, Purpose};
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
    let (record, session) = usable_key(state, owner, &key_id, Purpose::Sign, session).await?;
    let (stored, mut session) = share_of(state, &record, epoch, session).await?;
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
    let (mode, merkle_root) = taproot_detail(taproot);
    let event = Event {
        name: "sign",
        detail: json!({
            "scheme": "bip340",
            "epoch": epoch,
            "path": path.to_string(),
            "taproot": mode,
            "merkle_root": merkle_root,
            "message": hex::encode(message),
            "public_key": hex::encode(signature.public_key),
        }),
    };
    record_use(state, &record, epoch, event).await;
    finish(session).await
}
