//! BIP32 non-hardened derivation under a two-party key (PROTOCOL.md §15).
//!
//! The root extended public key is the joint public key with the chain code
//! both parties agreed on at key generation. A child public key is
//! `PK + t*G`, where `t` is the sum of the `IL` values along the path; when
//! signing under a path, party A adds `t` to its share (PROTOCOL.md §14). Only
//! non-hardened indices are possible: a hardened child needs the private key,
//! which never exists.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::str::FromStr;

use hmac::{Hmac, Mac};
use k256::elliptic_curve::ops::MulByGenerator;
use k256::elliptic_curve::PrimeField;
use k256::{ProjectivePoint, Scalar};
use ripemd::Ripemd160;
use sha2::{Digest, Sha256, Sha512};

use crate::error::{Error, Result};
use crate::wire::{decode_point, encode_point};

/// The first hardened index, `2^31`.
pub const HARDENED: u32 = 1 << 31;
/// BIP32 version bytes of a mainnet extended public key (`xpub`).
pub const XPUB_VERSION: [u8; 4] = [0x04, 0x88, 0xb2, 0x1e];
const XPUB_BYTES: usize = 78;

/// A path of non-hardened child indices, such as `m/44/60/0/0/5`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct DerivationPath(Vec<u32>);

impl DerivationPath {
    /// The root path `m`.
    #[must_use]
    pub fn root() -> Self {
        Self(Vec::new())
    }

    /// A path from child indices.
    ///
    /// # Errors
    ///
    /// [`Error::HardenedDerivation`] if an index is `>= 2^31`.
    pub fn from_indices(indices: &[u32]) -> Result<Self> {
        if indices.iter().any(|i| *i >= HARDENED) {
            return Err(Error::HardenedDerivation);
        }
        Ok(Self(indices.to_vec()))
    }

    /// The child indices, outermost first.
    #[must_use]
    pub fn indices(&self) -> &[u32] {
        &self.0
    }

    /// `u32_be(index)` for each index: the path's encoding in session ids.
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.iter().flat_map(|i| i.to_be_bytes()).collect()
    }
}

impl FromStr for DerivationPath {
    type Err = Error;

    /// Parses `m`, `m/0/5`, ... Hardened components (`0'`, `0h`, `0H`, or
    /// an index `>= 2^31`) are rejected with [`Error::HardenedDerivation`];
    /// anything else malformed with [`Error::InvalidDerivationPath`].
    fn from_str(s: &str) -> Result<Self> {
        let mut parts = s.split('/');
        if parts.next() != Some("m") {
            return Err(Error::InvalidDerivationPath);
        }
        let mut indices = Vec::new();
        for part in parts {
            if part.ends_with(['\'', 'h', 'H']) {
                return Err(Error::HardenedDerivation);
            }
            if part.is_empty()
                || !part.bytes().all(|b| b.is_ascii_digit())
                || (part.len() > 1 && part.starts_with('0'))
            {
                return Err(Error::InvalidDerivationPath);
            }
            let index: u32 = part.parse().map_err(|_| Error::InvalidDerivationPath)?;
            if index >= HARDENED {
                return Err(Error::HardenedDerivation);
            }
            indices.push(index);
        }
        Ok(Self(indices))
    }
}

impl fmt::Display for DerivationPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "m")?;
        for index in &self.0 {
            write!(f, "/{index}")?;
        }
        Ok(())
    }
}

/// A BIP32 extended public key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ExtendedPublicKey {
    public_key: k256::PublicKey,
    chain_code: [u8; 32],
    depth: u8,
    parent_fingerprint: [u8; 4],
    child_number: u32,
}

impl fmt::Debug for ExtendedPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ExtendedPublicKey({self})")
    }
}

fn hash160(bytes: &[u8]) -> [u8; 20] {
    Ripemd160::digest(Sha256::digest(bytes)).into()
}

fn checksum(bytes: &[u8]) -> [u8; 4] {
    let twice = Sha256::digest(Sha256::digest(bytes));
    [twice[0], twice[1], twice[2], twice[3]]
}

impl ExtendedPublicKey {
    /// A depth-0 extended key (the root of a two-party key).
    ///
    /// # Errors
    ///
    /// [`Error::IdentityPoint`] for the identity.
    pub fn root(public_key: &ProjectivePoint, chain_code: [u8; 32]) -> Result<Self> {
        let public_key = k256::PublicKey::from_affine(public_key.to_affine())
            .map_err(|_| Error::IdentityPoint)?;
        Ok(Self {
            public_key,
            chain_code,
            depth: 0,
            parent_fingerprint: [0; 4],
            child_number: 0,
        })
    }

    pub(crate) fn from_validated(public_key: k256::PublicKey, chain_code: [u8; 32]) -> Self {
        Self {
            public_key,
            chain_code,
            depth: 0,
            parent_fingerprint: [0; 4],
            child_number: 0,
        }
    }

    /// The public key.
    #[must_use]
    pub fn public_key(&self) -> k256::PublicKey {
        self.public_key
    }

    /// The chain code.
    #[must_use]
    pub fn chain_code(&self) -> &[u8; 32] {
        &self.chain_code
    }

    /// The depth in the tree (0 for the root).
    #[must_use]
    pub fn depth(&self) -> u8 {
        self.depth
    }

    /// `CKDpub` for one non-hardened index: the child and its `IL` tweak.
    ///
    /// # Errors
    ///
    /// [`Error::HardenedDerivation`] for `index >= 2^31`;
    /// [`Error::InvalidDerivation`] if `IL >= n` or the child is the identity
    /// (BIP32 says to skip to the next index; we leave that choice to the
    /// caller); [`Error::InvalidDerivationPath`] past depth 255.
    pub fn derive_child(&self, index: u32) -> Result<(Self, Scalar)> {
        if index >= HARDENED {
            return Err(Error::HardenedDerivation);
        }
        let depth = self
            .depth
            .checked_add(1)
            .ok_or(Error::InvalidDerivationPath)?;
        let parent = encode_point(&self.public_key.to_projective());
        let mut mac = Hmac::<Sha512>::new_from_slice(&self.chain_code)
            .map_err(|_| Error::InvalidDerivation)?;
        mac.update(&parent);
        mac.update(&index.to_be_bytes());
        let digest = mac.finalize().into_bytes();
        let (il, ir) = digest.split_at(32);
        let il_bytes: [u8; 32] = il.try_into().map_err(|_| Error::InvalidDerivation)?;
        let tweak = Option::<Scalar>::from(Scalar::from_repr(il_bytes.into()))
            .ok_or(Error::InvalidDerivation)?;
        let child = self.public_key.to_projective() + ProjectivePoint::mul_by_generator(&tweak);
        let child = k256::PublicKey::from_affine(child.to_affine())
            .map_err(|_| Error::InvalidDerivation)?;
        let fingerprint = hash160(&parent);
        let child = Self {
            public_key: child,
            chain_code: ir.try_into().map_err(|_| Error::InvalidDerivation)?,
            depth,
            parent_fingerprint: [
                fingerprint[0],
                fingerprint[1],
                fingerprint[2],
                fingerprint[3],
            ],
            child_number: index,
        };
        Ok((child, tweak))
    }

    /// Derives along `path`; returns the descendant and the sum of the
    /// `IL` tweaks (so that `descendant = self + tweak*G`).
    ///
    /// # Errors
    ///
    /// As [`ExtendedPublicKey::derive_child`].
    pub fn derive_path(&self, path: &DerivationPath) -> Result<(Self, Scalar)> {
        let mut key = *self;
        let mut tweak = Scalar::ZERO;
        for index in path.indices() {
            let (child, il) = key.derive_child(*index)?;
            key = child;
            tweak += il;
        }
        Ok((key, tweak))
    }

    fn to_raw(self) -> [u8; XPUB_BYTES] {
        let mut raw = [0u8; XPUB_BYTES];
        raw[..4].copy_from_slice(&XPUB_VERSION);
        raw[4] = self.depth;
        raw[5..9].copy_from_slice(&self.parent_fingerprint);
        raw[9..13].copy_from_slice(&self.child_number.to_be_bytes());
        raw[13..45].copy_from_slice(&self.chain_code);
        raw[45..].copy_from_slice(&encode_point(&self.public_key.to_projective()));
        raw
    }
}

impl fmt::Display for ExtendedPublicKey {
    /// Base58Check `xpub...` encoding.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let raw = self.to_raw();
        let mut with_checksum = Vec::with_capacity(XPUB_BYTES + 4);
        with_checksum.extend_from_slice(&raw);
        with_checksum.extend_from_slice(&checksum(&raw));
        let encoded: String = bs58::encode(with_checksum).into_string();
        f.write_str(&encoded)
    }
}

impl FromStr for ExtendedPublicKey {
    type Err = Error;

    /// Parses a Base58Check `xpub...` string.
    fn from_str(s: &str) -> Result<Self> {
        let bytes = bs58::decode(s)
            .into_vec()
            .map_err(|_| Error::InvalidExtendedKey)?;
        if bytes.len() != XPUB_BYTES + 4 {
            return Err(Error::InvalidExtendedKey);
        }
        let (raw, check) = bytes.split_at(XPUB_BYTES);
        if checksum(raw) != check || raw[..4] != XPUB_VERSION {
            return Err(Error::InvalidExtendedKey);
        }
        let point = decode_point(&raw[45..]).map_err(|_| Error::InvalidExtendedKey)?;
        let public_key = k256::PublicKey::from_affine(point.to_affine())
            .map_err(|_| Error::InvalidExtendedKey)?;
        let mut key = Self {
            public_key,
            chain_code: [0; 32],
            depth: raw[4],
            parent_fingerprint: [raw[5], raw[6], raw[7], raw[8]],
            child_number: u32::from_be_bytes([raw[9], raw[10], raw[11], raw[12]]),
        };
        key.chain_code.copy_from_slice(&raw[13..45]);
        Ok(key)
    }
}

#[cfg(test)]
mod tests;
