//! The presignature (PROTOCOL.md §14.3) and its storage encoding.

use alloc::vec::Vec;
use core::fmt;

use k256::{ProjectivePoint, Scalar};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::{Error, Result};
use crate::keyshare::{decode_stored_record, KeyId};
use crate::wire::{
    decode_point, decode_scalar, encode_point, encode_scalar, Role, SessionId, POINT_BYTES,
};

/// Format version of [`Presignature::to_bytes`]. Version 2 added the
/// derivation tweak, which the round-4 nonce offset hashes (§14.3); a
/// version-1 presignature does not load and must be discarded.
pub const PRESIGNATURE_VERSION: u16 = 2;

/// The message-independent result of rounds 1-3 (PROTOCOL.md §14.3).
///
/// Consumed by value by [`OnlineSign::new`](crate::OnlineSign::new): the API
/// cannot use one value twice. Using one presignature for two prehashes
/// reveals the key, so it is not `Clone`. A storage layer may persist it
/// with [`to_bytes`](Self::to_bytes); `OnlineSign::new` then refuses it
/// unless the storage layer's
/// [`PresignatureGuard`](crate::sign::PresignatureGuard) claims it, which
/// the guard's contract allows once per session id (§14.3).
pub struct Presignature {
    pub(crate) role: Role,
    pub(crate) key_id: KeyId,
    pub(crate) epoch: u64,
    pub(crate) sid: [u8; 32],
    /// `R = R_A + R_B`, before the round-4 offset.
    pub(crate) big_r: ProjectivePoint,
    pub(crate) phi: Scalar,
    pub(crate) u: Scalar,
    pub(crate) v: Scalar,
    /// The additive derivation tweak `t` (zero for the root key).
    pub(crate) tweak: Scalar,
    /// `PK' = PK + t*G`.
    pub(crate) verifying_key: ProjectivePoint,
    /// `enc33(PK')`, kept so the online step hashes it without an affine
    /// conversion.
    pub(crate) verifying_key_bytes: [u8; POINT_BYTES],
}

impl Drop for Presignature {
    fn drop(&mut self) {
        self.phi.zeroize();
        self.u.zeroize();
        self.v.zeroize();
    }
}

impl ZeroizeOnDrop for Presignature {}

impl fmt::Debug for Presignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Presignature")
            .field("role", &self.role)
            .field("key_id", &self.key_id)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
struct PresignatureRecord {
    version: u16,
    role: u8,
    key_id: [u8; 32],
    epoch: u64,
    sid: [u8; 32],
    big_r: Vec<u8>,
    phi: [u8; 32],
    u: [u8; 32],
    v: [u8; 32],
    tweak: [u8; 32],
    verifying_key: Vec<u8>,
}

impl Presignature {
    /// The key this presignature signs for.
    #[must_use]
    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    /// The epoch of the shares it was made with.
    #[must_use]
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// This party's role.
    #[must_use]
    pub fn role(&self) -> Role {
        self.role
    }

    /// The presigning session id; both parties hold the same value, so a
    /// storage layer can pair presignatures by it.
    #[must_use]
    pub fn session_id(&self) -> SessionId {
        SessionId(self.sid)
    }

    /// Encodes the presignature (format version [`PRESIGNATURE_VERSION`],
    /// postcard). The bytes hold secret values: store them encrypted, and
    /// never give the same bytes to two online steps.
    #[must_use]
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let record = PresignatureRecord {
            version: PRESIGNATURE_VERSION,
            role: self.role.as_u8(),
            key_id: self.key_id.0,
            epoch: self.epoch,
            sid: self.sid,
            big_r: encode_point(&self.big_r).to_vec(),
            phi: encode_scalar(&self.phi),
            u: encode_scalar(&self.u),
            v: encode_scalar(&self.v),
            tweak: encode_scalar(&self.tweak),
            verifying_key: self.verifying_key_bytes.to_vec(),
        };
        // Sized once, so no partial copy is freed while the buffer grows;
        // serializing this record cannot fail.
        crate::keyshare::to_zeroizing_vec(&record).unwrap_or_default()
    }

    /// Copies a boxed presignature out of its box. Moving out (`*boxed`)
    /// would free the box's memory with the secret scalars still in it,
    /// since `Drop` does not run on a moved-from box; here the box is
    /// dropped normally and wipes its copy.
    pub(crate) fn unbox(boxed: alloc::boxed::Box<Self>) -> Self {
        Self {
            role: boxed.role,
            key_id: boxed.key_id,
            epoch: boxed.epoch,
            sid: boxed.sid,
            big_r: boxed.big_r,
            phi: boxed.phi,
            u: boxed.u,
            v: boxed.v,
            tweak: boxed.tweak,
            verifying_key: boxed.verifying_key,
            verifying_key_bytes: boxed.verifying_key_bytes,
        }
    }

    /// Decodes and checks a presignature.
    ///
    /// # Errors
    ///
    /// [`Error::UnsupportedShareVersion`] for another format version;
    /// [`Error::MalformedKeyShare`] if the bytes are not a canonical
    /// encoding, a point is invalid or the identity, or a scalar is not
    /// canonical.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let record: PresignatureRecord = decode_stored_record(bytes, PRESIGNATURE_VERSION)?;
        let malformed = |_| Error::MalformedKeyShare;
        let role = Role::from_u8(record.role).ok_or(Error::MalformedKeyShare)?;
        let big_r = decode_point(&record.big_r).map_err(malformed)?;
        let verifying_key = decode_point(&record.verifying_key).map_err(malformed)?;
        // A decoded point has exactly one compressed encoding, these bytes.
        let verifying_key_bytes: [u8; POINT_BYTES] = record
            .verifying_key
            .as_slice()
            .try_into()
            .map_err(|_| Error::MalformedKeyShare)?;
        Ok(Self {
            role,
            key_id: KeyId(record.key_id),
            epoch: record.epoch,
            sid: record.sid,
            big_r,
            phi: decode_scalar(&record.phi).map_err(malformed)?,
            u: decode_scalar(&record.u).map_err(malformed)?,
            v: decode_scalar(&record.v).map_err(malformed)?,
            // Zero is a valid tweak (the root key).
            tweak: decode_scalar(&record.tweak).map_err(malformed)?,
            verifying_key,
            verifying_key_bytes,
        })
    }
}
