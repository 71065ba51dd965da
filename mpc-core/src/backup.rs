//! Verifiable backup of a share to a recovery public key (PROTOCOL.md §17).
//!
//! Publicly verifiable encryption by cut-and-choose, with secp256k1 and
//! SHA-256 only. For each of 128 rows the share is split as
//! `x = x_0 + x_1`; `X_0 = x_0*G` is published and both halves are encrypted
//! with hashed ElGamal to the recovery key `Y`, deterministically from a
//! 32-byte seed per half. A Fiat-Shamir challenge over the label, `Q = x*G`,
//! `Y` and all rows picks one half per row, which is opened by revealing its
//! seed; anyone holding `Q` and `Y` checks that the opened half decrypts to
//! the discrete log of `X_0` (or `Q - X_0`). A prover that does not encrypt a
//! valid split in some row must guess that row's challenge bit, so all 128
//! rows give 128-bit soundness. Any one unopened half, decrypted with the
//! recovery secret `y`, completes the share, which is accepted only if
//! `x*G = Q`.

use alloc::vec::Vec;

use k256::elliptic_curve::ops::MulByGenerator;
use k256::{ProjectivePoint, Scalar};
use rand_core::CryptoRngCore;
use subtle::ConstantTimeEq;
use zeroize::Zeroize;

use crate::error::{Error, Result};
use crate::hazmat::ot::comb::CombTable;
use crate::keyshare::{KeyId, KeyShare};
use crate::transcript::{hash_to_scalar, tags, WideTranscript};
use crate::wire::{
    decode_point, decode_scalar, encode_point, encode_scalar, Reader, Role, POINT_BYTES,
    SCALAR_BYTES,
};

/// Backup format version.
pub const BACKUP_VERSION: u8 = 1;
/// Cut-and-choose rows: the soundness in bits.
pub const ROWS: usize = 128;
const SEED_BYTES: usize = 32;
const ROW_BYTES: usize = POINT_BYTES + 2 * SCALAR_BYTES + POINT_BYTES + SEED_BYTES;
const HEADER_BYTES: usize = 1 + 32 + 1 + 8 + 2 * POINT_BYTES + ROWS / 8;
/// Bytes of an encoded [`Backup`].
pub const BACKUP_BYTES: usize = HEADER_BYTES + ROWS * ROW_BYTES;

/// What a backup is of: bound into every hash of the proof.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackupLabel {
    /// The key.
    pub key_id: KeyId,
    /// Whose share.
    pub role: Role,
    /// The share's epoch.
    pub epoch: u64,
}

impl BackupLabel {
    fn bytes(&self) -> [u8; 1 + 32 + 1 + 8] {
        let mut out = [0u8; 42];
        out[0] = BACKUP_VERSION;
        out[1..33].copy_from_slice(&self.key_id.0);
        out[33] = self.role.as_u8();
        out[34..].copy_from_slice(&self.epoch.to_be_bytes());
        out
    }
}

/// One row: the public half, both ciphertexts, the unopened half's ElGamal
/// point and the opened half's seed.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Row {
    x0_point: ProjectivePoint,
    c: [Scalar; 2],
    unopened_r: ProjectivePoint,
    opened_seed: [u8; SEED_BYTES],
}

/// A verifiable backup of one share.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backup {
    label: BackupLabel,
    public_share: ProjectivePoint,
    recovery_key: ProjectivePoint,
    challenge: [u8; ROWS / 8],
    rows: Vec<Row>,
}

fn u32_of(row: usize) -> [u8; 4] {
    // row < ROWS.
    #[allow(clippy::cast_possible_truncation)]
    (row as u32).to_be_bytes()
}

/// The ElGamal randomness of one half, from its seed.
fn half_scalar(seed: &[u8; SEED_BYTES], label: &[u8], row: usize, half: u8) -> Scalar {
    hash_to_scalar(tags::BACKUP_R, &[seed, label, &u32_of(row), &[half]])
}

/// The pad of one half: `H2S(r*Y, R, label, row, half)`.
fn pad(shared: &ProjectivePoint, r_point: &[u8], label: &[u8], row: usize, half: u8) -> Scalar {
    hash_to_scalar(
        tags::BACKUP_PAD,
        &[&encode_point(shared), r_point, label, &u32_of(row), &[half]],
    )
}

fn challenge(
    label: &[u8],
    q: &ProjectivePoint,
    y: &ProjectivePoint,
    commitments: &[u8],
) -> [u8; ROWS / 8] {
    let mut hx = WideTranscript::<1>::new(tags::BACKUP_CHALLENGE);
    hx.append(label);
    hx.append(&encode_point(q));
    hx.append(&encode_point(y));
    hx.append(commitments);
    hx.finalize_array()
}

fn bit(challenge: &[u8; ROWS / 8], row: usize) -> u8 {
    (challenge[row / 8] >> (row % 8)) & 1
}

/// The bytes a row commits to: `X_0, R_0, c_0, R_1, c_1`.
fn commit_row(out: &mut Vec<u8>, x0: &ProjectivePoint, r: &[ProjectivePoint; 2], c: &[Scalar; 2]) {
    out.extend_from_slice(&encode_point(x0));
    for half in 0..2 {
        out.extend_from_slice(&encode_point(&r[half]));
        out.extend_from_slice(&encode_scalar(&c[half]));
    }
}

impl Backup {
    /// Backs up `share` to the recovery public key.
    #[must_use]
    pub fn create(
        rng: &mut impl CryptoRngCore,
        share: &KeyShare,
        recovery_key: &k256::PublicKey,
    ) -> Self {
        let label = BackupLabel {
            key_id: *share.key_id(),
            role: share.role(),
            epoch: share.epoch(),
        };
        let label_bytes = label.bytes();
        let y = recovery_key.to_projective();
        let y_table = CombTable::new(&y);
        let q = share.public_share(share.role());
        let mut seeds = Vec::with_capacity(ROWS);
        let mut points = Vec::with_capacity(ROWS);
        let mut commitments = Vec::with_capacity(ROWS * (POINT_BYTES * 3 + 2 * SCALAR_BYTES));
        for row in 0..ROWS {
            let mut x0 = crate::ct::random_scalar(rng);
            let mut halves = [x0, share.secret - x0];
            let mut row_seeds = [[0u8; SEED_BYTES]; 2];
            let mut r_points = [ProjectivePoint::IDENTITY; 2];
            let mut c = [Scalar::ZERO; 2];
            for half in 0..2u8 {
                let h = usize::from(half);
                rng.fill_bytes(&mut row_seeds[h]);
                let mut r = half_scalar(&row_seeds[h], &label_bytes, row, half);
                r_points[h] = ProjectivePoint::mul_by_generator(&r);
                let shared = y_table.mul(&r);
                c[h] = halves[h]
                    + pad(
                        &shared,
                        &encode_point(&r_points[h]),
                        &label_bytes,
                        row,
                        half,
                    );
                r.zeroize();
            }
            let x0_point = ProjectivePoint::mul_by_generator(&x0);
            x0.zeroize();
            halves.zeroize();
            commit_row(&mut commitments, &x0_point, &r_points, &c);
            seeds.push(row_seeds);
            points.push((x0_point, r_points, c));
        }
        let challenge = challenge(&label_bytes, &q, &y, &commitments);
        let rows = points
            .into_iter()
            .zip(seeds.iter_mut())
            .enumerate()
            .map(|(row, ((x0_point, r_points, c), row_seeds))| {
                let e = usize::from(bit(&challenge, row));
                let opened_seed = row_seeds[e];
                row_seeds.zeroize();
                Row {
                    x0_point,
                    c,
                    unopened_r: r_points[1 - e],
                    opened_seed,
                }
            })
            .collect();
        Self {
            label,
            public_share: q,
            recovery_key: y,
            challenge,
            rows,
        }
    }

    /// What this backup claims to be of.
    #[must_use]
    pub fn label(&self) -> &BackupLabel {
        &self.label
    }

    /// Checks the proof for the given public share and recovery key, without
    /// decrypting anything.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidBackup`] if the backup is not for this public share
    /// and recovery key, or any row or the challenge does not verify.
    pub fn verify(
        &self,
        public_share: &ProjectivePoint,
        recovery_key: &k256::PublicKey,
    ) -> Result<()> {
        let y = recovery_key.to_projective();
        if self.public_share != *public_share || self.recovery_key != y || self.rows.len() != ROWS {
            return Err(Error::InvalidBackup);
        }
        let label_bytes = self.label.bytes();
        let y_table = CombTable::new(&y);
        let mut commitments = Vec::with_capacity(ROWS * (POINT_BYTES * 3 + 2 * SCALAR_BYTES));
        let mut ok = true;
        for (row, r) in self.rows.iter().enumerate() {
            let e = bit(&self.challenge, row);
            let opened = usize::from(e);
            let r_scalar = half_scalar(&r.opened_seed, &label_bytes, row, e);
            let opened_r = ProjectivePoint::mul_by_generator(&r_scalar);
            let shared = y_table.mul(&r_scalar);
            let half = r.c[opened] - pad(&shared, &encode_point(&opened_r), &label_bytes, row, e);
            let expected = if e == 0 {
                r.x0_point
            } else {
                self.public_share - r.x0_point
            };
            ok &= ProjectivePoint::mul_by_generator(&half) == expected;
            let mut r_points = [opened_r; 2];
            r_points[1 - opened] = r.unopened_r;
            commit_row(&mut commitments, &r.x0_point, &r_points, &r.c);
        }
        let recomputed = challenge(&label_bytes, &self.public_share, &y, &commitments);
        ok &= bool::from(recomputed.ct_eq(&self.challenge));
        if ok {
            Ok(())
        } else {
            Err(Error::InvalidBackup)
        }
    }

    /// Decrypts the share with the recovery secret; returns it only if it
    /// matches the public share. (Verify the backup first: decryption tries
    /// rows until one gives the right share.)
    ///
    /// # Errors
    ///
    /// [`Error::BackupDecryptionFailed`] if no row decrypts to the share
    /// (wrong recovery secret, or an invalid backup).
    pub fn decrypt(&self, recovery_secret: &k256::SecretKey) -> Result<k256::SecretKey> {
        let y_secret = *recovery_secret.to_nonzero_scalar();
        let label_bytes = self.label.bytes();
        for (row, r) in self.rows.iter().enumerate() {
            let e = bit(&self.challenge, row);
            let opened = usize::from(e);
            let r_scalar = half_scalar(&r.opened_seed, &label_bytes, row, e);
            let opened_r = ProjectivePoint::mul_by_generator(&r_scalar);
            let shared_opened = self.recovery_key * r_scalar;
            let mut opened_half = r.c[opened]
                - pad(
                    &shared_opened,
                    &encode_point(&opened_r),
                    &label_bytes,
                    row,
                    e,
                );
            let hidden = 1 - e;
            let shared_hidden = r.unopened_r * y_secret;
            let mut hidden_half = r.c[1 - opened]
                - pad(
                    &shared_hidden,
                    &encode_point(&r.unopened_r),
                    &label_bytes,
                    row,
                    hidden,
                );
            let mut share = opened_half + hidden_half;
            opened_half.zeroize();
            hidden_half.zeroize();
            if ProjectivePoint::mul_by_generator(&share) == self.public_share {
                let key = Option::<k256::NonZeroScalar>::from(k256::NonZeroScalar::new(share))
                    .map(k256::SecretKey::from);
                share.zeroize();
                if let Some(key) = key {
                    return Ok(key);
                }
            }
            share.zeroize();
        }
        Err(Error::BackupDecryptionFailed)
    }

    /// Encodes the backup (`BACKUP_BYTES` bytes).
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(BACKUP_BYTES);
        out.extend_from_slice(&self.label.bytes());
        out.extend_from_slice(&encode_point(&self.public_share));
        out.extend_from_slice(&encode_point(&self.recovery_key));
        out.extend_from_slice(&self.challenge);
        for r in &self.rows {
            out.extend_from_slice(&encode_point(&r.x0_point));
            out.extend_from_slice(&encode_scalar(&r.c[0]));
            out.extend_from_slice(&encode_scalar(&r.c[1]));
            out.extend_from_slice(&encode_point(&r.unopened_r));
            out.extend_from_slice(&r.opened_seed);
        }
        out
    }

    /// Decodes a backup (points and scalars checked, §3.1).
    ///
    /// # Errors
    ///
    /// [`Error::WrongLength`], [`Error::UnsupportedShareVersion`] for another
    /// format version, or the point and scalar decoding errors.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let mut reader = Reader::exact(bytes, BACKUP_BYTES)?;
        let [version] = reader.array::<1>()?;
        if version != BACKUP_VERSION {
            return Err(Error::UnsupportedShareVersion);
        }
        let key_id = KeyId(reader.array()?);
        let [role] = reader.array::<1>()?;
        let role = Role::from_u8(role).ok_or(Error::MalformedPayload)?;
        let epoch = u64::from_be_bytes(reader.array()?);
        let public_share = reader.point()?;
        let recovery_key = reader.point()?;
        let challenge = reader.array()?;
        let mut rows = Vec::with_capacity(ROWS);
        for _ in 0..ROWS {
            let x0_point = reader.point()?;
            let c = [
                decode_scalar(reader.take(SCALAR_BYTES)?)?,
                decode_scalar(reader.take(SCALAR_BYTES)?)?,
            ];
            let unopened_r = decode_point(reader.take(POINT_BYTES)?)?;
            let opened_seed = reader.array()?;
            rows.push(Row {
                x0_point,
                c,
                unopened_r,
                opened_seed,
            });
        }
        Ok(Self {
            label: BackupLabel {
                key_id,
                role,
                epoch,
            },
            public_share,
            recovery_key,
            challenge,
            rows,
        })
    }
}
