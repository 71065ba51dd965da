//! Single-party BIP340/BIP341 arithmetic: tagged hashes, x-only keys,
//! verification, and the key tweaks of two-party signing (PROTOCOL.md §20.1).
//!
//! Nothing here touches a secret: inputs are public keys, tweaks and
//! signatures, so data-dependent branches are fine.

use k256::elliptic_curve::group::Group;
use k256::elliptic_curve::ops::{LinearCombination, MulByGenerator, Reduce};
use k256::elliptic_curve::point::AffineCoordinates;
use k256::elliptic_curve::PrimeField;
use k256::{ProjectivePoint, Scalar, U256};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::wire::decode_point;

/// BIP340 tag of the challenge hash.
pub const CHALLENGE_TAG: &[u8] = b"BIP0340/challenge";
/// BIP341 tag of the output-key tweak.
pub const TAP_TWEAK_TAG: &[u8] = b"TapTweak";

/// `SHA256(SHA256(tag) || SHA256(tag) || parts...)` (BIP340 "tagged hash").
#[must_use]
pub fn tagged_hash(tag: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let tag_hash = Sha256::digest(tag);
    let mut hasher = Sha256::new();
    hasher.update(tag_hash);
    hasher.update(tag_hash);
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize().into()
}

/// The 32-byte x coordinate of a non-identity point.
#[must_use]
pub fn x_only(point: &ProjectivePoint) -> [u8; 32] {
    point.to_affine().x().into()
}

/// Whether a point's `y` is even (BIP340 `has_even_y`). The identity counts
/// as even; callers reject it first.
#[must_use]
pub fn has_even_y(point: &ProjectivePoint) -> bool {
    !bool::from(point.to_affine().y_is_odd())
}

/// `+1` for an even-`y` point, `-1` otherwise.
pub(crate) fn parity_sign(point: &ProjectivePoint) -> Scalar {
    if has_even_y(point) {
        Scalar::ONE
    } else {
        -Scalar::ONE
    }
}

/// BIP340 `lift_x`: the even-`y` point with this x coordinate.
///
/// # Errors
///
/// [`Error::InvalidPoint`] if `x >= p` or no curve point has this `x`.
pub fn lift_x(x: &[u8; 32]) -> Result<ProjectivePoint> {
    let mut sec1 = [0u8; 33];
    sec1[0] = 0x02;
    sec1[1..].copy_from_slice(x);
    decode_point(&sec1).map_err(|_| Error::InvalidPoint)
}

/// The BIP340 challenge `int(hash_challenge(r || x(P) || m)) mod n`.
pub(crate) fn challenge(r: &[u8; 32], public_key: &[u8; 32], message: &[u8]) -> Scalar {
    let digest = tagged_hash(CHALLENGE_TAG, &[r, public_key, message]);
    <Scalar as Reduce<U256>>::reduce_bytes(&digest.into())
}

/// BIP340 verification of a 64-byte signature on `message` (any length)
/// under the x-only `public_key`.
#[must_use]
pub fn verify(public_key: &[u8; 32], message: &[u8], signature: &[u8; 64]) -> bool {
    let Ok(p) = lift_x(public_key) else {
        return false;
    };
    let mut r = [0u8; 32];
    r.copy_from_slice(&signature[..32]);
    let mut s_bytes = [0u8; 32];
    s_bytes.copy_from_slice(&signature[32..]);
    let Some(s) = Option::<Scalar>::from(Scalar::from_repr(s_bytes.into())) else {
        return false;
    };
    // `r >= p` has no point: lift_x rejects it, so r is checked by the final
    // comparison of x coordinates (x(R) < p always).
    let e = challenge(&r, public_key, message);
    let big_r = ProjectivePoint::lincomb(&ProjectivePoint::GENERATOR, &s, &p, &-e);
    if bool::from(big_r.is_identity()) || !has_even_y(&big_r) {
        return false;
    }
    x_only(&big_r) == r
}

/// The key-path output of two-party BIP340 signing (PROTOCOL.md §20.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Taproot {
    /// Plain BIP340 under the (derived) key, no output tweak.
    Off,
    /// BIP341/BIP86 key-path output with no script tree:
    /// `t = H_TapTweak(x(P))`.
    KeyPathOnly,
    /// BIP341 key-path spend of an output with this script-tree merkle root:
    /// `t = H_TapTweak(x(P) || merkle_root)`.
    MerkleRoot([u8; 32]),
}

impl Taproot {
    /// Bytes bound into the signing setup id: a mode byte and the root.
    pub(crate) fn to_bytes(self) -> alloc::vec::Vec<u8> {
        match self {
            Self::Off => alloc::vec![0],
            Self::KeyPathOnly => alloc::vec![1],
            Self::MerkleRoot(root) => {
                let mut out = alloc::vec![2];
                out.extend_from_slice(&root);
                out
            }
        }
    }
}

/// The BIP341 tweak scalar `t = int(H_TapTweak(x(P) || root))`.
fn tap_tweak(internal_x: &[u8; 32], merkle_root: Option<&[u8; 32]>) -> Result<Scalar> {
    let digest = match merkle_root {
        Some(root) => tagged_hash(TAP_TWEAK_TAG, &[internal_x, root]),
        None => tagged_hash(TAP_TWEAK_TAG, &[internal_x]),
    };
    // BIP341 fails (rather than reduces) when t >= n.
    Option::<Scalar>::from(Scalar::from_repr(digest.into())).ok_or(Error::InvalidTweak)
}

/// The BIP341 output key `x(Q)` of an x-only internal key, with no script
/// tree (`None`, as BIP86) or with a merkle root.
///
/// # Errors
///
/// [`Error::InvalidPoint`] for an internal key that is not an x coordinate;
/// [`Error::InvalidTweak`] if the tweak is `>= n` or `Q` is the identity.
pub fn taproot_output_key(
    internal_key: &[u8; 32],
    merkle_root: Option<&[u8; 32]>,
) -> Result<[u8; 32]> {
    let taproot = match merkle_root {
        Some(root) => Taproot::MerkleRoot(*root),
        None => Taproot::KeyPathOnly,
    };
    let key = KeyTweaks::new(lift_x(internal_key)?, Scalar::ZERO, taproot)?;
    Ok(x_only(&key.output))
}

/// The accumulated tweaks of a signing key, as BIP327 (MuSig2) tracks them:
/// `output = gacc * root + tacc * G`, with `gacc = +-1`.
#[derive(Clone, Copy)]
pub(crate) struct KeyTweaks {
    /// `P'`: the root key plus the BIP32 tweak (the Taproot internal key).
    pub(crate) internal: ProjectivePoint,
    /// `Q`: the key the signature verifies under (before its own even-`y`
    /// normalisation; its x coordinate is the BIP340 public key).
    pub(crate) output: ProjectivePoint,
    pub(crate) gacc: Scalar,
    pub(crate) tacc: Scalar,
}

impl KeyTweaks {
    /// Applies the BIP32 tweak (a plain tweak) to `root`, then the Taproot
    /// tweak (an x-only tweak) if asked.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidDerivation`] if `P'` is the identity;
    /// [`Error::InvalidTweak`] if the Taproot tweak is `>= n` or `Q` is the
    /// identity.
    pub(crate) fn new(root: ProjectivePoint, bip32: Scalar, taproot: Taproot) -> Result<Self> {
        // Plain tweak (BIP327 ApplyTweak, is_xonly = false): g = 1.
        let internal = root + ProjectivePoint::mul_by_generator(&bip32);
        if bool::from(internal.is_identity()) {
            return Err(Error::InvalidDerivation);
        }
        let mut key = Self {
            internal,
            output: internal,
            gacc: Scalar::ONE,
            tacc: bip32,
        };
        let merkle_root = match &taproot {
            Taproot::Off => return Ok(key),
            Taproot::KeyPathOnly => None,
            Taproot::MerkleRoot(root) => Some(root),
        };
        // X-only tweak (BIP327 ApplyTweak, is_xonly = true): the internal key
        // is taken with even y, so negate everything accumulated if it is odd.
        let g = parity_sign(&internal);
        let t = tap_tweak(&x_only(&internal), merkle_root)?;
        key.output = internal * g + ProjectivePoint::mul_by_generator(&t);
        if bool::from(key.output.is_identity()) {
            return Err(Error::InvalidTweak);
        }
        key.gacc *= g;
        key.tacc = t + g * key.tacc;
        Ok(key)
    }

    /// `g * gacc`: the factor each party's secret share is signed with,
    /// where `g` makes the output key's y even.
    pub(crate) fn share_factor(&self) -> Scalar {
        parity_sign(&self.output) * self.gacc
    }

    /// `g * tacc`: the tweak part of the secret, added once at aggregation.
    pub(crate) fn tweak_term(&self) -> Scalar {
        parity_sign(&self.output) * self.tacc
    }
}
