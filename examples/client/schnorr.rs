//! `sign --scheme bip340 [--taproot [--merkle-root HEX]]`: two-party BIP340
//! Schnorr signing (PROTOCOL.md §20), checked with libsecp256k1 before it is
//! printed.

use mpc_client::{SchnorrSignature, Taproot};
use mpc_core::{DerivationPath, KeyId, Prehash};
use serde_json::{json, Value};

use crate::cli::Scheme;
use crate::commands::{block_on, Context};
use crate::output::{client_failure, Failure};

/// The Taproot mode of the `--taproot` and `--merkle-root` flags.
pub(crate) fn taproot_mode(taproot: bool, merkle_root: Option<[u8; 32]>) -> Taproot {
    match (taproot, merkle_root) {
        (false, _) => Taproot::Off,
        (true, None) => Taproot::KeyPathOnly,
        (true, Some(root)) => Taproot::MerkleRoot(root),
    }
}

/// Checks the signature with libsecp256k1's schnorrsig, independently of
/// the protocol's and the wallet's own checks, under the x-only key it
/// claims.
fn verify_bip340(signed: &SchnorrSignature) -> Result<(), Failure> {
    let bad = |what: &str| Failure::remote("verification_failed", format!("the signature {what}"));
    let secp = secp256k1::Secp256k1::verification_only();
    let key = secp256k1::XOnlyPublicKey::from_slice(&signed.output_key)
        .map_err(|_| bad("names an invalid x-only key"))?;
    let signature = secp256k1::schnorr::Signature::from_slice(&signed.signature)
        .map_err(|_| bad("is malformed"))?;
    let message = secp256k1::Message::from_digest(signed.message);
    secp.verify_schnorr(&signature, &message, &key)
        .map_err(|_| bad("does not verify under the key"))
}

pub(crate) fn cmd_sign_bip340(
    ctx: &Context,
    key_id: &KeyId,
    message: Prehash,
    path: Option<&DerivationPath>,
    scheme: Scheme,
    taproot: Taproot,
) -> Result<Value, Failure> {
    if scheme != Scheme::Bip340 {
        return Err(Failure::usage(
            "--taproot and --merkle-root need --scheme bip340",
        ));
    }
    let wallet = ctx.wallet(true, None)?;
    let key = ctx.held(&wallet, key_id)?;
    let path = path.map(ToString::to_string);
    let signed =
        block_on(wallet.sign_schnorr(&key.key_id, *message.as_bytes(), path.as_deref(), taproot))?
            .map_err(|e| client_failure(&e))?;
    verify_bip340(&signed)?;
    let taproot_output_key = (taproot != Taproot::Off).then(|| hex::encode(signed.output_key));
    let merkle_root = match taproot {
        Taproot::MerkleRoot(root) => Some(hex::encode(root)),
        _ => None,
    };
    Ok(json!({
        "scheme": "bip340",
        "public_key": hex::encode(signed.public_key),
        "x_only_public_key": hex::encode(signed.internal_key),
        "taproot_output_key": taproot_output_key,
        "merkle_root": merkle_root,
        "message": hex::encode(signed.message),
        "signature": hex::encode(signed.signature),
    }))
}
