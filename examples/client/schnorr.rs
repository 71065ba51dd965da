//! `sign --scheme bip340 [--taproot [--merkle-root HEX]]`: two-party BIP340
//! Schnorr signing (PROTOCOL.md §20), checked with libsecp256k1 before it is
//! printed.

use mpc_core::{DerivationPath, KeyId, Prehash, SchnorrSignature, Taproot};
use serde_json::{json, Value};

use crate::cli::Scheme;
use crate::commands::{block_on, key_hex, signing_failure, signing_share, Context};
use crate::output::Failure;

/// The Taproot mode of the `--taproot` and `--merkle-root` flags.
pub(crate) fn taproot_mode(taproot: bool, merkle_root: Option<[u8; 32]>) -> Taproot {
    match (taproot, merkle_root) {
        (false, _) => Taproot::Off,
        (true, None) => Taproot::KeyPathOnly,
        (true, Some(root)) => Taproot::MerkleRoot(root),
    }
}

/// Checks the signature with libsecp256k1's schnorrsig, independently of
/// the protocol's own check, under the x-only key it claims.
fn verify_bip340(message: &[u8; 32], signed: &SchnorrSignature) -> Result<(), Failure> {
    let bad = |what: &str| Failure::remote("verification_failed", format!("the signature {what}"));
    let secp = secp256k1::Secp256k1::verification_only();
    let key = secp256k1::XOnlyPublicKey::from_slice(&signed.public_key)
        .map_err(|_| bad("names an invalid x-only key"))?;
    let signature = secp256k1::schnorr::Signature::from_slice(&signed.signature)
        .map_err(|_| bad("is malformed"))?;
    secp.verify_schnorr(&signature, &secp256k1::Message::from_digest(*message), &key)
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
    let client = ctx.client()?;
    let mut share = signing_share(ctx, key_id)?;
    let root = DerivationPath::root();
    let path = path.unwrap_or(&root);
    let (public_key, _) = share
        .derive(path)
        .map_err(|e| Failure::usage(format!("--path {path}: {}", e.as_str())))?;
    let (internal, output) = mpc_core::schnorr::signing_keys(&share, path, taproot)
        .map_err(|e| Failure::usage(format!("--merkle-root: {}", e.as_str())))?;
    let message = *message.as_bytes();
    let result = block_on(client.sign_schnorr(&share, message, path, taproot))?;
    let signed = result.map_err(|err| signing_failure(ctx, &mut share, &err))?;
    if signed.public_key != output || signed.internal_key != internal {
        return Err(Failure::remote(
            "verification_failed",
            "the signature is for another key",
        ));
    }
    verify_bip340(&message, &signed)?;
    let taproot_output_key = (taproot != Taproot::Off).then(|| hex::encode(output));
    let merkle_root = match taproot {
        Taproot::MerkleRoot(root) => Some(hex::encode(root)),
        _ => None,
    };
    Ok(json!({
        "scheme": "bip340",
        "public_key": key_hex(&public_key),
        "x_only_public_key": hex::encode(internal),
        "taproot_output_key": taproot_output_key,
        "merkle_root": merkle_root,
        "message": hex::encode(message),
        "signature": hex::encode(signed.signature),
    }))
}
