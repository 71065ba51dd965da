//! Sealing of stored blobs: XChaCha20-Poly1305 under the caller's 32-byte
//! storage key, with the entry name in the associated data, so a blob that
//! is changed, cut short, moved to another name (another key, epoch or
//! presignature) or sealed under another key does not open.
//!
//! Format: `u8(1) || nonce (24 random bytes) || ciphertext || tag`.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand_core::{OsRng, RngCore};
use zeroize::Zeroizing;

use crate::error::ClientError;

const VERSION: u8 = 1;
const NONCE_BYTES: usize = 24;
/// Domain separation of this library's associated data.
const AD_PREFIX: &[u8] = b"mpc-client/seal/v1\0";

fn associated_data(name: &str) -> Vec<u8> {
    let mut ad = Vec::with_capacity(AD_PREFIX.len() + name.len());
    ad.extend_from_slice(AD_PREFIX);
    ad.extend_from_slice(name.as_bytes());
    ad
}

/// Seals `plaintext` for the entry `name`.
///
/// # Errors
///
/// [`ClientError::Protocol`] if the cipher fails (it does not for inputs
/// of this library's sizes).
pub(crate) fn seal(key: &[u8; 32], name: &str, plaintext: &[u8]) -> Result<Vec<u8>, ClientError> {
    let cipher = XChaCha20Poly1305::new(key.into());
    let mut nonce = [0u8; NONCE_BYTES];
    OsRng.fill_bytes(&mut nonce);
    let ad = associated_data(name);
    let ciphertext = cipher
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad: &ad,
            },
        )
        .map_err(|_| ClientError::protocol("sealing failed"))?;
    let mut out = Vec::with_capacity(1 + NONCE_BYTES + ciphertext.len());
    out.push(VERSION);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ciphertext);
    Ok(out)
}

/// Opens the blob of the entry `name`.
///
/// # Errors
///
/// [`ClientError::Corrupt`] if it is of another version, too short,
/// changed, of another name or sealed under another key.
pub(crate) fn open(
    key: &[u8; 32],
    name: &str,
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, ClientError> {
    let corrupt = || ClientError::Corrupt {
        name: name.to_owned(),
    };
    let Some((&version, rest)) = sealed.split_first() else {
        return Err(corrupt());
    };
    if version != VERSION || rest.len() < NONCE_BYTES + 16 {
        return Err(corrupt());
    }
    let (nonce, ciphertext) = rest.split_at(NONCE_BYTES);
    let cipher = XChaCha20Poly1305::new(key.into());
    let ad = associated_data(name);
    cipher
        .decrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad: &ad,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| corrupt())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const KEY: [u8; 32] = [7; 32];

    #[test]
    fn round_trip_and_every_change_fails() {
        let sealed = seal(&KEY, "a.0.share", b"secret share").unwrap();
        assert_eq!(&*open(&KEY, "a.0.share", &sealed).unwrap(), b"secret share");
        // Another name (moved between keys or epochs), another key.
        assert!(
            matches!(open(&KEY, "b.0.share", &sealed), Err(ClientError::Corrupt { name }) if name == "b.0.share")
        );
        assert!(open(&[8; 32], "a.0.share", &sealed).is_err());
        // Every single-bit change and every truncation.
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert!(open(&KEY, "a.0.share", &bad).is_err(), "bit flip at {i}");
            assert!(open(&KEY, "a.0.share", &sealed[..i]).is_err(), "cut at {i}");
        }
        // Fresh nonces: sealing twice gives different blobs.
        assert_ne!(sealed, seal(&KEY, "a.0.share", b"secret share").unwrap());
    }
}
