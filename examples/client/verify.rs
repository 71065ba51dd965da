//! `verify`: checks a signature with libsecp256k1, independently of the
//! k256 code the other commands sign and check with (see the crate
//! documentation).

use mpc_core::Prehash;
use secp256k1::ecdsa::Signature;
use secp256k1::{Message, PublicKey, Secp256k1};
use serde_json::{json, Value};

use crate::cli::PublicKeyBytes;

/// `{"valid": true}` if `signature` is a valid low-S signature of
/// `prehash` under `public_key`, else `{"valid": false, "reason"}`.
pub(crate) fn cmd_verify(
    public_key: &PublicKeyBytes,
    prehash: &Prehash,
    signature: &[u8; 64],
) -> Value {
    match check(&public_key.0, prehash, signature) {
        Ok(()) => json!({ "valid": true }),
        Err(reason) => json!({ "valid": false, "reason": reason }),
    }
}

/// Why the signature is not valid, if it is not.
fn check(public_key: &[u8], prehash: &Prehash, signature: &[u8; 64]) -> Result<(), &'static str> {
    let key = PublicKey::from_slice(public_key)
        .map_err(|_| "the public key is not a point of secp256k1")?;
    let signature = Signature::from_compact(signature)
        .map_err(|_| "the signature's r or s is not below the group order")?;
    let mut low_s = signature;
    low_s.normalize_s();
    if low_s != signature {
        return Err("the signature is not low-S (libsecp256k1 accepts only low-S signatures)");
    }
    let message = Message::from_digest(*prehash.as_bytes());
    Secp256k1::verification_only()
        .verify_ecdsa(&message, &signature, &key)
        .map_err(|_| "the signature does not verify under the public key for the prehash")
}
