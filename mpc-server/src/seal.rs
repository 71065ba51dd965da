//! Envelope encryption of records at rest.
//!
//! Every record is encrypted with its own fresh data-encryption key (DEK)
//! under XChaCha20-Poly1305 with a random 192-bit nonce; the DEK is wrapped
//! by a key-encryption key ([`Kek`]): the local master key ([`LocalKek`]) or,
//! behind the same trait, a cloud KMS. The caller's associated data (built
//! with [`share_aad`]) binds each record to its row, so a ciphertext moved
//! to another row, key, owner or epoch fails to open.
//!
//! Record layout (version 1):
//!
//! ```text
//! version (1 byte = 1) || wrapped DEK length (u16 big-endian) || wrapped DEK
//!   || nonce (24 bytes) || ciphertext || tag (16 bytes)
//! ```
//!
//! The data AEAD authenticates `version || aad`; the [`Kek`] authenticates
//! the wrapped DEK under `aad`.

use std::fmt;

use async_trait::async_trait;
use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use mpc_core::KeyId;
use rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// The record format version written by [`seal`].
pub const RECORD_VERSION: u8 = 1;

const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const HEADER_LEN: usize = 1 + 2;

const LOCAL_KEK_WRAP_TAG: &[u8] = b"mpc-server/local-kek/wrap/v1";
const LOCAL_KEK_ID_TAG: &[u8] = b"mpc-server/local-kek/id/v1";
const RECORD_AAD_TAG: &[u8] = b"mpc-server/record-aad/v1";

/// Errors of sealing and opening records.
///
/// No variant carries secret data.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The record is not a well-formed sealed record (wrong version,
    /// truncated, bad lengths).
    #[error("malformed sealed record")]
    Malformed,
    /// Authentication failed: the key-encryption key is not the one the
    /// record was sealed under, the associated data differs, or the record
    /// was tampered with.
    #[error("sealed record does not open (wrong key, wrong context or tampered)")]
    Decrypt,
    /// The key-encryption key backend failed (e.g. a KMS call).
    #[error("key-encryption key backend failed: {0}")]
    Kek(String),
    /// A master key given as text is not valid; the message says why
    /// without echoing the value.
    #[error("invalid master key: {0}")]
    InvalidMasterKey(&'static str),
    /// The operating system's random number generator failed.
    #[error("the operating system's random number generator failed")]
    Random,
}

/// A key-encryption key: wraps and unwraps 32-byte data-encryption keys.
///
/// The methods are `async` so that a remote key-management service (a cloud
/// KMS, an HSM behind a network call) can implement this trait; the local
/// implementation, [`LocalKek`], never awaits anything.
///
/// `aad` must be authenticated: unwrapping with other associated data than
/// the wrapping used must fail with [`SealError::Decrypt`].
#[async_trait]
pub trait Kek: Send + Sync + 'static {
    /// A stable, non-secret identifier of the key (safe to log).
    fn id(&self) -> &str;

    /// Wraps (encrypts and authenticates) `dek` bound to `aad`.
    ///
    /// # Errors
    ///
    /// [`SealError::Kek`] if the backend fails, [`SealError::Random`] if
    /// randomness is unavailable.
    async fn wrap(&self, dek: &[u8; 32], aad: &[u8]) -> Result<Vec<u8>, SealError>;

    /// Unwraps a DEK wrapped by [`wrap`](Self::wrap) with the same `aad`.
    ///
    /// # Errors
    ///
    /// [`SealError::Decrypt`] if this key did not wrap it under `aad` or it
    /// was altered, [`SealError::Malformed`] if it has the wrong shape,
    /// [`SealError::Kek`] if the backend fails.
    async fn unwrap(&self, wrapped: &[u8], aad: &[u8]) -> Result<Zeroizing<[u8; 32]>, SealError>;
}

/// A local 32-byte master key that wraps DEKs with XChaCha20-Poly1305.
///
/// Wrapped DEK layout: `nonce (24 bytes) || encrypted DEK (32) || tag (16)`.
/// The key is zeroized on drop and never printed by `Debug`.
pub struct LocalKek {
    key: Zeroizing<[u8; 32]>,
    id: String,
}

impl LocalKek {
    /// A key from its 32 bytes.
    #[must_use]
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self::from_key(Zeroizing::new(bytes))
    }

    fn from_key(key: Zeroizing<[u8; 32]>) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(LOCAL_KEK_ID_TAG);
        hasher.update(key.as_slice());
        let digest = hasher.finalize();
        let id = format!("local:{}", hex::encode(&digest[..4]));
        Self { key, id }
    }

    /// A key from 64 hexadecimal characters (either case); surrounding
    /// whitespace (e.g. a trailing newline from a file) is ignored.
    ///
    /// # Errors
    ///
    /// [`SealError::InvalidMasterKey`] if the trimmed text is not exactly 64
    /// hex characters. The error never contains the text.
    pub fn from_hex(text: &str) -> Result<Self, SealError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(SealError::InvalidMasterKey("it is empty"));
        }
        if text.len() != 64 {
            return Err(SealError::InvalidMasterKey(
                "it must be exactly 64 hexadecimal characters (32 bytes)",
            ));
        }
        let mut bytes = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(text, bytes.as_mut_slice()).map_err(|_| {
            SealError::InvalidMasterKey("it contains a character that is not hexadecimal")
        })?;
        Ok(Self::from_key(bytes))
    }

    /// A fresh random key.
    ///
    /// # Errors
    ///
    /// [`SealError::Random`] if the operating system's RNG fails.
    pub fn generate() -> Result<Self, SealError> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        random(bytes.as_mut_slice())?;
        Ok(Self::from_key(bytes))
    }

    /// The key as 64 lowercase hex characters, for showing a freshly
    /// generated key to an operator once. Treat the result as the secret it
    /// is.
    #[must_use]
    pub fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(self.key.as_slice()))
    }

    fn cipher(&self) -> Result<XChaCha20Poly1305, SealError> {
        XChaCha20Poly1305::new_from_slice(self.key.as_slice())
            .map_err(|_| SealError::Kek("invalid local key length".into()))
    }
}

impl fmt::Debug for LocalKek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalKek")
            .field("id", &self.id)
            .field("key", &"<redacted>")
            .finish()
    }
}

fn local_wrap_aad(aad: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(LOCAL_KEK_WRAP_TAG.len() + aad.len());
    out.extend_from_slice(LOCAL_KEK_WRAP_TAG);
    out.extend_from_slice(aad);
    out
}

#[async_trait]
impl Kek for LocalKek {
    fn id(&self) -> &str {
        &self.id
    }

    async fn wrap(&self, dek: &[u8; 32], aad: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        random(&mut nonce)?;
        let aad = local_wrap_aad(aad);
        let ciphertext = self
            .cipher()?
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: dek,
                    aad: &aad,
                },
            )
            .map_err(|_| SealError::Kek("local key wrap failed".into()))?;
        let mut out = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        Ok(out)
    }

    async fn unwrap(&self, wrapped: &[u8], aad: &[u8]) -> Result<Zeroizing<[u8; 32]>, SealError> {
        if wrapped.len() != NONCE_LEN + 32 + TAG_LEN {
            return Err(SealError::Malformed);
        }
        let (nonce, ciphertext) = wrapped.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| SealError::Malformed)?;
        let aad = local_wrap_aad(aad);
        let plain = Zeroizing::new(
            self.cipher()?
                .decrypt(
                    &XNonce::from(nonce),
                    Payload {
                        msg: ciphertext,
                        aad: &aad,
                    },
                )
                .map_err(|_| SealError::Decrypt)?,
        );
        let mut dek = Zeroizing::new([0u8; 32]);
        if plain.len() != dek.len() {
            return Err(SealError::Malformed);
        }
        dek.copy_from_slice(&plain);
        Ok(dek)
    }
}

fn random(out: &mut [u8]) -> Result<(), SealError> {
    OsRng.try_fill_bytes(out).map_err(|_| SealError::Random)
}

fn data_aad(aad: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + aad.len());
    out.push(RECORD_VERSION);
    out.extend_from_slice(aad);
    out
}

/// Seals `plaintext` bound to `aad` under a fresh data-encryption key wrapped
/// by `kek`. The DEK is zeroized when done.
///
/// # Errors
///
/// Errors of [`Kek::wrap`]; [`SealError::Kek`] if the wrapped DEK is longer
/// than 65535 bytes; [`SealError::Random`] if randomness is unavailable.
pub async fn seal(kek: &dyn Kek, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, SealError> {
    let mut dek = Zeroizing::new([0u8; 32]);
    random(dek.as_mut_slice())?;
    let wrapped = kek.wrap(&dek, aad).await?;
    let wrapped_len = u16::try_from(wrapped.len())
        .map_err(|_| SealError::Kek("wrapped key longer than 65535 bytes".into()))?;
    let mut nonce = [0u8; NONCE_LEN];
    random(&mut nonce)?;
    let cipher =
        XChaCha20Poly1305::new_from_slice(dek.as_slice()).map_err(|_| SealError::Malformed)?;
    let aad = data_aad(aad);
    let ciphertext = cipher
        .encrypt(
            &XNonce::from(nonce),
            Payload {
                msg: plaintext,
                aad: &aad,
            },
        )
        .map_err(|_| SealError::Malformed)?;
    let mut record = Vec::with_capacity(HEADER_LEN + wrapped.len() + NONCE_LEN + ciphertext.len());
    record.push(RECORD_VERSION);
    record.extend_from_slice(&wrapped_len.to_be_bytes());
    record.extend_from_slice(&wrapped);
    record.extend_from_slice(&nonce);
    record.extend_from_slice(&ciphertext);
    Ok(record)
}

/// Opens a record made by [`seal`] with the same `aad`. Never panics, on
/// any input.
///
/// # Errors
///
/// [`SealError::Malformed`] if the record does not parse;
/// [`SealError::Decrypt`] if `kek` is not the key it was sealed under, `aad`
/// differs, or any byte was changed; [`SealError::Kek`] if the backend fails.
pub async fn open(
    kek: &dyn Kek,
    record: &[u8],
    aad: &[u8],
) -> Result<Zeroizing<Vec<u8>>, SealError> {
    let (&version, rest) = record.split_first().ok_or(SealError::Malformed)?;
    if version != RECORD_VERSION {
        return Err(SealError::Malformed);
    }
    let (len, rest) = split(rest, 2)?;
    let wrapped_len = usize::from(u16::from_be_bytes([len[0], len[1]]));
    let (wrapped, rest) = split(rest, wrapped_len)?;
    let (nonce, ciphertext) = split(rest, NONCE_LEN)?;
    if ciphertext.len() < TAG_LEN {
        return Err(SealError::Malformed);
    }
    let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| SealError::Malformed)?;
    let dek = kek.unwrap(wrapped, aad).await?;
    let cipher =
        XChaCha20Poly1305::new_from_slice(dek.as_slice()).map_err(|_| SealError::Malformed)?;
    let aad = data_aad(aad);
    let plaintext = cipher
        .decrypt(
            &XNonce::from(nonce),
            Payload {
                msg: ciphertext,
                aad: &aad,
            },
        )
        .map_err(|_| SealError::Decrypt)?;
    Ok(Zeroizing::new(plaintext))
}

fn split(bytes: &[u8], at: usize) -> Result<(&[u8], &[u8]), SealError> {
    if bytes.len() < at {
        return Err(SealError::Malformed);
    }
    Ok(bytes.split_at(at))
}

/// What a sealed record holds; part of its associated data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RecordKind {
    /// A key share.
    Share,
    /// An ECDSA presignature.
    Presignature,
    /// A BIP340 (Schnorr) presignature (PROTOCOL.md §20.5).
    SchnorrPresignature,
    /// The check value that tells whether the master key is the right one.
    KekCheck,
}

impl RecordKind {
    fn code(self) -> u8 {
        match self {
            Self::Share => 1,
            Self::Presignature => 2,
            Self::KekCheck => 3,
            Self::SchnorrPresignature => 4,
        }
    }
}

/// The associated data of a sealed record: a versioned domain tag, the
/// record kind, then `key_id`, `owner`, `epoch` and `extra` (presignatures:
/// their 32-byte session id), each length-prefixed, so distinct inputs never
/// give the same bytes.
#[must_use]
pub fn share_aad(
    kind: RecordKind,
    key_id: &KeyId,
    owner: &str,
    epoch: u64,
    extra: &[u8],
) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(RECORD_AAD_TAG.len() + 1 + 5 * 4 + 32 + owner.len() + 8 + extra.len());
    push_field(&mut out, RECORD_AAD_TAG);
    push_field(&mut out, &[kind.code()]);
    push_field(&mut out, &key_id.0);
    push_field(&mut out, owner.as_bytes());
    push_field(&mut out, &epoch.to_be_bytes());
    push_field(&mut out, extra);
    out
}

fn push_field(out: &mut Vec<u8>, field: &[u8]) {
    // Fields longer than 4 GiB cannot occur (owners and ids are short);
    // saturating keeps the function total.
    let len = u32::try_from(field.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(field);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kek() -> LocalKek {
        LocalKek::from_bytes([7u8; 32])
    }

    fn aad() -> Vec<u8> {
        share_aad(RecordKind::Share, &KeyId([1; 32]), "alice", 3, b"")
    }

    #[tokio::test]
    async fn round_trip() {
        let kek = kek();
        for len in [0usize, 1, 31, 32, 33, 1000, 70_000] {
            let plain: Vec<u8> = (0..len).map(|i| u8::try_from(i % 251).unwrap()).collect();
            let record = seal(&kek, &plain, &aad()).await.unwrap();
            assert_eq!(record[0], RECORD_VERSION);
            assert_eq!(
                open(&kek, &record, &aad()).await.unwrap().as_slice(),
                &plain[..]
            );
        }
    }

    #[tokio::test]
    async fn fresh_randomness_per_record() {
        let kek = kek();
        let a = seal(&kek, b"same", &aad()).await.unwrap();
        let b = seal(&kek, b"same", &aad()).await.unwrap();
        assert_ne!(a, b);
    }

    #[tokio::test]
    async fn wrong_key_or_context_fails() {
        let record = seal(&kek(), b"secret", &aad()).await.unwrap();
        let other = LocalKek::from_bytes([8u8; 32]);
        assert!(matches!(
            open(&other, &record, &aad()).await,
            Err(SealError::Decrypt)
        ));
        for other_aad in [
            share_aad(RecordKind::Presignature, &KeyId([1; 32]), "alice", 3, b""),
            share_aad(RecordKind::Share, &KeyId([2; 32]), "alice", 3, b""),
            share_aad(RecordKind::Share, &KeyId([1; 32]), "bob", 3, b""),
            share_aad(RecordKind::Share, &KeyId([1; 32]), "alice", 4, b""),
            share_aad(RecordKind::Share, &KeyId([1; 32]), "alice", 3, b"x"),
        ] {
            assert!(matches!(
                open(&kek(), &record, &other_aad).await,
                Err(SealError::Decrypt)
            ));
        }
    }

    #[tokio::test]
    async fn every_truncation_and_bit_flip_fails_without_panic() {
        let kek = kek();
        let record = seal(&kek, b"some secret bytes", &aad()).await.unwrap();
        for len in 0..record.len() {
            assert!(
                open(&kek, &record[..len], &aad()).await.is_err(),
                "len {len}"
            );
        }
        for i in 0..record.len() {
            let mut bad = record.clone();
            bad[i] ^= 0x01;
            assert!(open(&kek, &bad, &aad()).await.is_err(), "byte {i}");
        }
        let mut longer = record.clone();
        longer.push(0);
        assert!(open(&kek, &longer, &aad()).await.is_err());
    }

    #[tokio::test]
    async fn random_bytes_never_panic() {
        let kek = kek();
        let mut buf = [0u8; 300];
        for round in 0..2000usize {
            let len = round % buf.len();
            OsRng.fill_bytes(&mut buf[..len]);
            // Half of the inputs get a plausible header to reach deeper.
            if round % 2 == 0 && len >= 3 {
                buf[0] = RECORD_VERSION;
                buf[1] = 0;
                buf[2] %= 80;
            }
            assert!(open(&kek, &buf[..len], &aad()).await.is_err());
        }
    }

    #[test]
    fn from_hex_rules() {
        let hex64 = "0f".repeat(32);
        let a = LocalKek::from_hex(&hex64).unwrap();
        let b = LocalKek::from_hex(&format!("  {}\n", hex64.to_uppercase())).unwrap();
        assert_eq!(a.id(), b.id());
        assert_eq!(a.to_hex().as_str(), hex64);
        let secretish = "ab".repeat(31) + "zz";
        for bad in ["", "  \n", &hex64[..62], &format!("{hex64}00"), &secretish] {
            let err = LocalKek::from_hex(bad).unwrap_err().to_string();
            assert!(matches!(
                LocalKek::from_hex(bad),
                Err(SealError::InvalidMasterKey(_))
            ));
            assert!(!err.contains("abab"), "error echoes the value: {err}");
        }
    }

    #[test]
    fn id_is_a_fingerprint_and_debug_is_redacted() {
        let kek = kek();
        let id = kek.id().to_owned();
        assert!(id.starts_with("local:"));
        assert_eq!(id.len(), "local:".len() + 8);
        assert!(id["local:".len()..].chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(id, LocalKek::from_bytes([8; 32]).id());
        let debug = format!("{kek:?}");
        assert!(debug.contains("redacted") && debug.contains(&id));
        assert!(!debug.contains("0707"), "{debug}");
        let generated = LocalKek::generate().unwrap();
        assert_ne!(generated.id(), LocalKek::generate().unwrap().id());
    }

    #[test]
    fn aad_is_injective_across_field_boundaries() {
        let id = KeyId([9; 32]);
        let a = share_aad(RecordKind::Share, &id, "ab", 1, b"");
        let b = share_aad(RecordKind::Share, &id, "a", 1, b"b");
        assert_ne!(a, b);
        assert_ne!(
            share_aad(RecordKind::Share, &id, "", 0, b""),
            share_aad(RecordKind::KekCheck, &id, "", 0, b"")
        );
    }
}
