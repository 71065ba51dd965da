//! Export: the full private key leaves the two-party setting, by the owner's
//! explicit choice (PROTOCOL.md §16).
//!
//! The share holder (normally the server) encrypts its share to a one-time
//! public key `E` chosen by the owner: ECDH on secp256k1, HKDF-SHA256, and
//! XChaCha20-Poly1305 whose associated data binds the format version, key id,
//! epoch, the sender's role, `E` and the ephemeral key. The owner decrypts,
//! adds its own share and returns the key only if `x*G` is the public key.

use alloc::vec::Vec;

use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use k256::elliptic_curve::ops::MulByGenerator;
use k256::elliptic_curve::point::AffineCoordinates;
use k256::{NonZeroScalar, ProjectivePoint};
use rand_core::CryptoRngCore;
use sha2::Sha256;
use zeroize::{Zeroize, Zeroizing};

use crate::error::{Error, Result};
use crate::keyshare::{KeyId, KeyShare};
use crate::wire::{
    decode_nonzero_scalar, encode_point, encode_scalar, Reader, Role, POINT_BYTES, SCALAR_BYTES,
};

/// Export ciphertext format version.
pub const EXPORT_VERSION: u8 = 1;
const DOMAIN: &[u8] = b"mpc/export/v1";
const NONCE_BYTES: usize = 24;
const TAG_BYTES: usize = 16;
/// Bytes of an encoded [`ExportCiphertext`].
pub const EXPORT_BYTES: usize =
    1 + 32 + 8 + 1 + POINT_BYTES + NONCE_BYTES + SCALAR_BYTES + TAG_BYTES;

/// One share encrypted to an owner's one-time key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportCiphertext {
    key_id: KeyId,
    epoch: u64,
    sender: Role,
    ephemeral: [u8; POINT_BYTES],
    nonce: [u8; NONCE_BYTES],
    ciphertext: Vec<u8>,
}

fn associated_data(
    key_id: &KeyId,
    epoch: u64,
    sender: Role,
    onetime: &[u8],
    ephemeral: &[u8],
) -> Vec<u8> {
    let mut ad = Vec::with_capacity(DOMAIN.len() + 1 + 32 + 8 + 1 + 2 * POINT_BYTES);
    ad.extend_from_slice(DOMAIN);
    ad.push(EXPORT_VERSION);
    ad.extend_from_slice(&key_id.0);
    ad.extend_from_slice(&epoch.to_be_bytes());
    ad.push(sender.as_u8());
    ad.extend_from_slice(onetime);
    ad.extend_from_slice(ephemeral);
    ad
}

/// The AEAD key from the ECDH x-coordinate; the associated data also salts
/// the derivation.
fn aead_key(shared: &ProjectivePoint, ad: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut x: [u8; 32] = shared.to_affine().x().into();
    let hkdf = Hkdf::<Sha256>::new(Some(DOMAIN), &x);
    x.zeroize();
    let mut key = Zeroizing::new([0u8; 32]);
    // 32 bytes is far below HKDF-SHA256's output limit.
    let _ = hkdf.expand(ad, key.as_mut());
    key
}

/// Encrypts `share`'s secret to the owner's one-time public key.
///
/// # Errors
///
/// [`Error::ExportFailed`] only if the AEAD refuses to encrypt (it does not
/// for 32-byte plaintexts).
pub fn export_share(
    rng: &mut impl CryptoRngCore,
    share: &KeyShare,
    onetime: &k256::PublicKey,
) -> Result<ExportCiphertext> {
    let mut ephemeral_secret = crate::ct::random_nonzero_scalar(rng);
    let ephemeral = encode_point(&ProjectivePoint::mul_by_generator(&ephemeral_secret));
    let onetime_bytes = encode_point(&onetime.to_projective());
    let shared = onetime.to_projective() * ephemeral_secret;
    ephemeral_secret.zeroize();
    let ad = associated_data(
        share.key_id(),
        share.epoch(),
        share.role(),
        &onetime_bytes,
        &ephemeral,
    );
    let key = aead_key(&shared, &ad);
    let mut nonce = [0u8; NONCE_BYTES];
    rng.fill_bytes(&mut nonce);
    let plaintext = Zeroizing::new(encode_scalar(&share.secret));
    let cipher = XChaCha20Poly1305::new(key.as_ref().into());
    let ciphertext = cipher
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: plaintext.as_ref(),
                aad: &ad,
            },
        )
        .map_err(|_| Error::ExportFailed)?;
    Ok(ExportCiphertext {
        key_id: *share.key_id(),
        epoch: share.epoch(),
        sender: share.role(),
        ephemeral,
        nonce,
        ciphertext,
    })
}

/// Decrypts the peer's exported share with the one-time secret, adds the
/// owner's own share and checks the result against the public key.
///
/// # Errors
///
/// [`Error::KeyMismatch`] if the ciphertext names another key, epoch or the
/// owner's own role; [`Error::ExportFailed`] if it does not decrypt (tampered,
/// or for another one-time key); [`Error::ExportMismatch`] if the combined key
/// is not the public key's.
pub fn import_export(
    own: &KeyShare,
    onetime_secret: &k256::SecretKey,
    export: &ExportCiphertext,
) -> Result<k256::SecretKey> {
    if export.key_id != *own.key_id()
        || export.epoch != own.epoch()
        || export.sender != own.role().peer()
    {
        return Err(Error::KeyMismatch);
    }
    let ephemeral =
        crate::wire::decode_point(&export.ephemeral).map_err(|_| Error::ExportFailed)?;
    let onetime_bytes = encode_point(&onetime_secret.public_key().to_projective());
    let shared = ephemeral * *onetime_secret.to_nonzero_scalar();
    let ad = associated_data(
        &export.key_id,
        export.epoch,
        export.sender,
        &onetime_bytes,
        &export.ephemeral,
    );
    let key = aead_key(&shared, &ad);
    let cipher = XChaCha20Poly1305::new(key.as_ref().into());
    let plaintext = Zeroizing::new(
        cipher
            .decrypt(
                XNonce::from_slice(&export.nonce),
                Payload {
                    msg: &export.ciphertext,
                    aad: &ad,
                },
            )
            .map_err(|_| Error::ExportFailed)?,
    );
    let mut peer_share = decode_nonzero_scalar(&plaintext).map_err(|_| Error::ExportFailed)?;
    let mut full = own.secret + peer_share;
    peer_share.zeroize();
    let result = if ProjectivePoint::mul_by_generator(&full) == own.public_key_point() {
        Option::<NonZeroScalar>::from(NonZeroScalar::new(full))
            .map(k256::SecretKey::from)
            .ok_or(Error::ExportMismatch)
    } else {
        Err(Error::ExportMismatch)
    };
    full.zeroize();
    result
}

impl ExportCiphertext {
    /// The key this ciphertext belongs to.
    #[must_use]
    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    /// Encodes: version, key id, epoch, sender role, ephemeral key, nonce,
    /// ciphertext with tag (`EXPORT_BYTES` bytes).
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(EXPORT_BYTES);
        out.push(EXPORT_VERSION);
        out.extend_from_slice(&self.key_id.0);
        out.extend_from_slice(&self.epoch.to_be_bytes());
        out.push(self.sender.as_u8());
        out.extend_from_slice(&self.ephemeral);
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&self.ciphertext);
        out
    }

    /// Decodes an export ciphertext.
    ///
    /// # Errors
    ///
    /// [`Error::WrongLength`], [`Error::UnsupportedShareVersion`] or
    /// [`Error::MalformedPayload`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let mut reader = Reader::exact(bytes, EXPORT_BYTES)?;
        let [version] = reader.array::<1>()?;
        if version != EXPORT_VERSION {
            return Err(Error::UnsupportedShareVersion);
        }
        let key_id = KeyId(reader.array()?);
        let epoch = u64::from_be_bytes(reader.array()?);
        let [role] = reader.array::<1>()?;
        let sender = Role::from_u8(role).ok_or(Error::MalformedPayload)?;
        let ephemeral = reader.array()?;
        let nonce = reader.array()?;
        let ciphertext = reader.take(SCALAR_BYTES + TAG_BYTES)?.to_vec();
        Ok(Self {
            key_id,
            epoch,
            sender,
            ephemeral,
            nonce,
            ciphertext,
        })
    }
}
