//! The secrets of an encoded key share, read from its public encoding
//! (PROTOCOL.md §13.5: postcard of the record, fields in spec order), so the
//! harnesses need no accessor into `mpc-core`'s private fields.

use core::ops::Range;

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// One 16-byte GGM leaf seed.
pub type Seed = [u8; 16];

/// The key share record, field for field as PROTOCOL.md §13.5 orders it.
/// Zeroized on drop like the shares it is read from, so that the
/// zeroization harness does not find its own copies.
#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct ShareSecrets {
    /// Format version.
    pub version: u16,
    /// Role byte (0 = A, 1 = B).
    pub role: u8,
    /// Key id.
    pub key_id: [u8; 32],
    /// Epoch.
    pub epoch: u64,
    /// `x_i`, 32 bytes big-endian.
    pub secret: [u8; 32],
    /// `X_A`.
    pub public_a: Vec<u8>,
    /// `X_B`.
    pub public_b: Vec<u8>,
    /// `PK`.
    pub public_key: Vec<u8>,
    /// Chain code.
    pub chain_code: [u8; 32],
    /// DKG transcript hash.
    pub transcript: [u8; 32],
    /// OT sender direction: setup fingerprint.
    pub sender_fingerprint: [u8; 32],
    /// OT sender direction: key context.
    pub sender_keyctx: [u8; 32],
    /// OT sender direction: punctured leaf per tree (`Delta`, 4 bits each).
    pub sender_punctured: [u8; 32],
    /// OT sender direction: all leaf seeds but the punctured ones.
    pub sender_seeds: Vec<Seed>,
    /// OT receiver direction: setup fingerprint.
    pub receiver_fingerprint: [u8; 32],
    /// OT receiver direction: key context.
    pub receiver_keyctx: [u8; 32],
    /// OT receiver direction: every leaf seed.
    pub receiver_seeds: Vec<Seed>,
    /// Burned flag.
    pub ot_burned: bool,
}

impl ShareSecrets {
    /// Reads a share's encoding ([`mpc_core::KeyShare::to_bytes`]).
    ///
    /// # Errors
    ///
    /// The postcard error if the bytes are not a share record.
    pub fn read(bytes: &[u8]) -> postcard::Result<Self> {
        postcard::from_bytes(bytes)
    }

    /// Where the secrets lie in this share's encoding: the byte ranges of
    /// `x_i`, the punctured indices and both directions' seeds.
    #[must_use]
    pub fn secret_ranges(&self) -> [Range<usize>; 4] {
        let secret = size(&(self.version, self.role, self.key_id, self.epoch));
        let punctured = secret
            + size(&(
                self.secret,
                &self.public_a,
                &self.public_b,
                &self.public_key,
                self.chain_code,
                self.transcript,
                self.sender_fingerprint,
                self.sender_keyctx,
            ));
        // A seed vector is its varint length, then the seeds.
        let seed_bytes = |seeds: &Vec<Seed>| 16 * seeds.len();
        let sender_seeds_end = punctured + 32 + size(&self.sender_seeds);
        let sender_seeds = sender_seeds_end - seed_bytes(&self.sender_seeds);
        let receiver_seeds_end = sender_seeds_end
            + size(&(
                self.receiver_fingerprint,
                self.receiver_keyctx,
                &self.receiver_seeds,
            ));
        let receiver_seeds = receiver_seeds_end - seed_bytes(&self.receiver_seeds);
        [
            secret..secret + 32,
            punctured..punctured + 32,
            sender_seeds..sender_seeds_end,
            receiver_seeds..receiver_seeds_end,
        ]
    }
}

/// The postcard size of `value`.
fn size<T: Serialize + ?Sized>(value: &T) -> usize {
    postcard::serialize_with_flavor(value, postcard::ser_flavors::Size::default()).unwrap_or(0)
}

/// A presignature record (PROTOCOL.md §14.3), field for field; zeroized on
/// drop.
#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct PresignatureSecrets {
    /// Format version.
    pub version: u16,
    /// Role byte.
    pub role: u8,
    /// Key id.
    pub key_id: [u8; 32],
    /// Epoch.
    pub epoch: u64,
    /// Session id.
    pub sid: [u8; 32],
    /// `R`.
    pub big_r: Vec<u8>,
    /// `phi_i`.
    pub phi: [u8; 32],
    /// `u_i`.
    pub u: [u8; 32],
    /// `v_i`.
    pub v: [u8; 32],
    /// The derivation tweak `t` (format version 2).
    pub tweak: [u8; 32],
    /// The verifying key.
    pub verifying_key: Vec<u8>,
}

impl PresignatureSecrets {
    /// Reads a presignature's encoding ([`mpc_core::Presignature::to_bytes`]).
    ///
    /// # Errors
    ///
    /// The postcard error if the bytes are not a presignature record.
    pub fn read(bytes: &[u8]) -> postcard::Result<Self> {
        let record: Self = postcard::from_bytes(bytes)?;
        // Another format version lays its fields out differently.
        if record.version == mpc_core::sign::PRESIGNATURE_VERSION {
            Ok(record)
        } else {
            Err(postcard::Error::DeserializeBadEncoding)
        }
    }
}
