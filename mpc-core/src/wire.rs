//! Wire format (PROTOCOL.md §3): the versioned envelope every message travels
//! in, and checked fixed-size encodings of points and scalars.
//!
//! Decoding never panics. Points are 33-byte SEC1 compressed encodings that
//! must lie on the curve and must not be the identity; scalars are 32-byte
//! big-endian values that must be canonical (`< q`), and non-zero where the
//! specification says so.

mod envelope;

pub use envelope::*;

use alloc::vec::Vec;
use k256::elliptic_curve::group::GroupEncoding;
use k256::elliptic_curve::subtle::Choice;
use k256::elliptic_curve::PrimeField;
use k256::{AffinePoint, ProjectivePoint, Scalar};

use crate::error::{Error, Result};

/// Lower-case hex of public bytes, for `Debug` output.
pub(crate) struct Hex<'a>(pub(crate) &'a [u8]);

impl core::fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.0.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
    }
}

/// Bytes of an encoded point (SEC1 compressed).
pub const POINT_BYTES: usize = 33;
/// Bytes of an encoded scalar (big-endian).
pub const SCALAR_BYTES: usize = 32;

/// Encodes a point as 33 bytes SEC1 compressed.
///
/// The identity has no such encoding; callers only encode points they have
/// checked to be non-identity, and an identity encodes as 33 zero bytes,
/// which [`decode_point`] rejects.
///
/// Constant time (PROTOCOL.md §10): no branch or index on the point, so it
/// also encodes secret points (Diffie-Hellman values hashed into keys).
#[must_use]
pub fn encode_point(point: &ProjectivePoint) -> [u8; POINT_BYTES] {
    compress(&point.to_affine())
}

/// SEC1 compressed encoding by masks: `0x02 | y_is_odd`, then `x`; 33 zero
/// bytes for the identity. (SEC1's own encoder branches on the tag byte,
/// that is on the parity of `y`.)
fn compress(point: &AffinePoint) -> [u8; POINT_BYTES] {
    use k256::elliptic_curve::group::prime::PrimeCurveAffine;
    use k256::elliptic_curve::point::AffineCoordinates;
    use k256::elliptic_curve::subtle::ConditionallySelectable;
    let identity = point.is_identity();
    let mut out = [0u8; POINT_BYTES];
    out[0] = u8::conditional_select(&(0x02 | point.y_is_odd().unwrap_u8()), &0, identity);
    for (dst, src) in out[1..].iter_mut().zip(point.x().iter()) {
        *dst = u8::conditional_select(src, &0, identity);
    }
    out
}

/// Bytes of an uncompressed point (SEC1 `0x04 || x || y`), used where the
/// receiver would otherwise pay a square root per point (PROTOCOL.md §3.1).
pub const UNCOMPRESSED_POINT_BYTES: usize = 65;

/// Encodes many points, compressed, with one field inversion (batch
/// normalization). The identity encodes as 33 zero bytes, as in
/// [`encode_point`]; constant time like it.
#[must_use]
pub fn encode_points(points: &[ProjectivePoint]) -> Vec<[u8; POINT_BYTES]> {
    use k256::elliptic_curve::BatchNormalize;
    let mut affine: Vec<AffinePoint> = ProjectivePoint::batch_normalize(points);
    let encoded = affine.iter().map(compress).collect();
    // The points may be secret (Diffie-Hellman values).
    zeroize::Zeroize::zeroize(&mut affine);
    encoded
}

/// Encodes many points uncompressed (65 bytes each), with one field
/// inversion. The identity encodes as 65 zero bytes.
///
/// For points that are sent, only: SEC1's encoder branches on whether the
/// point is the identity (PROTOCOL.md §10).
#[must_use]
pub fn encode_points_uncompressed(
    points: &[ProjectivePoint],
) -> Vec<[u8; UNCOMPRESSED_POINT_BYTES]> {
    use k256::elliptic_curve::sec1::ToEncodedPoint;
    use k256::elliptic_curve::BatchNormalize;
    let affine: Vec<AffinePoint> = ProjectivePoint::batch_normalize(points);
    affine
        .iter()
        .map(|p| {
            let mut out = [0u8; UNCOMPRESSED_POINT_BYTES];
            let encoded = p.to_encoded_point(false);
            if encoded.len() == UNCOMPRESSED_POINT_BYTES {
                out.copy_from_slice(encoded.as_bytes());
            }
            out
        })
        .collect()
}

/// Decodes a 65-byte uncompressed SEC1 point: prefix `0x04`, canonical
/// coordinates, on the curve. No square root is needed.
///
/// # Errors
///
/// [`Error::WrongLength`] if `bytes` is not 65 bytes long,
/// [`Error::IdentityPoint`] for 65 zero bytes, [`Error::InvalidPoint`] for
/// any other invalid encoding.
pub fn decode_point_uncompressed(bytes: &[u8]) -> Result<ProjectivePoint> {
    use k256::elliptic_curve::sec1::FromEncodedPoint;
    if bytes.len() != UNCOMPRESSED_POINT_BYTES {
        return Err(Error::WrongLength);
    }
    if bytes[0] != 0x04 {
        return Err(if bytes.iter().all(|b| *b == 0) {
            Error::IdentityPoint
        } else {
            Error::InvalidPoint
        });
    }
    let encoded = k256::EncodedPoint::from_bytes(bytes).map_err(|_| Error::InvalidPoint)?;
    let affine = Option::<AffinePoint>::from(AffinePoint::from_encoded_point(&encoded))
        .ok_or(Error::InvalidPoint)?;
    Ok(ProjectivePoint::from(affine))
}

/// Decodes a 33-byte SEC1 compressed point, rejecting the identity, every
/// other prefix than `0x02`/`0x03`, and `x` values with no curve point.
///
/// # Errors
///
/// [`Error::WrongLength`] if `bytes` is not 33 bytes long,
/// [`Error::IdentityPoint`] for the identity's encoding (33 zero bytes or a
/// lone `0x00`), [`Error::InvalidPoint`] for any other invalid encoding.
pub fn decode_point(bytes: &[u8]) -> Result<ProjectivePoint> {
    let array: &[u8; POINT_BYTES] = bytes.try_into().map_err(|_| Error::WrongLength)?;
    match array[0] {
        0x02 | 0x03 => {}
        0x00 if array.iter().all(|b| *b == 0) => return Err(Error::IdentityPoint),
        _ => return Err(Error::InvalidPoint),
    }
    let affine = Option::<AffinePoint>::from(AffinePoint::from_bytes(array.into()))
        .ok_or(Error::InvalidPoint)?;
    let point = ProjectivePoint::from(affine);
    // Unreachable for 0x02/0x03 prefixes, kept as the defining check.
    if bool::from(is_identity(&point)) {
        return Err(Error::IdentityPoint);
    }
    Ok(point)
}

fn is_identity(point: &ProjectivePoint) -> Choice {
    k256::elliptic_curve::group::Group::is_identity(point)
}

/// Encodes a scalar as 32 big-endian bytes.
#[must_use]
pub fn encode_scalar(scalar: &Scalar) -> [u8; SCALAR_BYTES] {
    scalar.to_bytes().into()
}

/// Decodes a canonical 32-byte big-endian scalar (`< q`); zero is allowed.
///
/// # Errors
///
/// [`Error::WrongLength`] if `bytes` is not 32 bytes long,
/// [`Error::NonCanonicalScalar`] if the value is `>= q`.
pub fn decode_scalar(bytes: &[u8]) -> Result<Scalar> {
    let array: [u8; SCALAR_BYTES] = bytes.try_into().map_err(|_| Error::WrongLength)?;
    Option::from(Scalar::from_repr(array.into())).ok_or(Error::NonCanonicalScalar)
}

/// Decodes a canonical, non-zero 32-byte big-endian scalar.
///
/// # Errors
///
/// As [`decode_scalar`], plus [`Error::ZeroScalar`] for zero.
pub fn decode_nonzero_scalar(bytes: &[u8]) -> Result<Scalar> {
    let scalar = decode_scalar(bytes)?;
    if bool::from(scalar.is_zero()) {
        return Err(Error::ZeroScalar);
    }
    Ok(scalar)
}

/// Reads a fixed-layout payload: its length is checked once up front, and
/// every field is decoded with the checks of this module.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over a payload that must be exactly `len` bytes long.
    pub(crate) fn exact(bytes: &'a [u8], len: usize) -> Result<Self> {
        if bytes.len() != len {
            return Err(Error::WrongLength);
        }
        Ok(Self { bytes })
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.bytes.len() < n {
            return Err(Error::WrongLength);
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        self.take(N)?.try_into().map_err(|_| Error::WrongLength)
    }

    pub(crate) fn point(&mut self) -> Result<ProjectivePoint> {
        decode_point(self.take(POINT_BYTES)?)
    }

    pub(crate) fn scalar(&mut self) -> Result<Scalar> {
        decode_scalar(self.take(SCALAR_BYTES)?)
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation, clippy::needless_range_loop)]
mod tests {
    use super::*;
    use k256::elliptic_curve::Field;
    use rand_chacha::rand_core::SeedableRng;

    const Q_BYTES: &str = "fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141";

    #[test]
    fn points_round_trip() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
        for _ in 0..32 {
            let p = ProjectivePoint::GENERATOR * Scalar::random(&mut rng);
            assert_eq!(decode_point(&encode_point(&p)).unwrap(), p);
        }
    }

    #[test]
    fn masked_encoding_matches_sec1() {
        // The constant-time encoder is byte for byte SEC1's, both parities
        // and the identity (33 zero bytes) included.
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(4);
        let mut parities = [false; 2];
        for _ in 0..32 {
            let p = ProjectivePoint::GENERATOR * Scalar::random(&mut rng);
            let sec1 = p.to_affine().to_bytes();
            assert_eq!(encode_point(&p)[..], sec1[..]);
            parities[usize::from(sec1[0] & 1)] = true;
        }
        assert_eq!(parities, [true, true]);
        assert_eq!(encode_point(&ProjectivePoint::IDENTITY), [0u8; POINT_BYTES]);
        assert_eq!(
            encode_points(&[ProjectivePoint::IDENTITY, ProjectivePoint::GENERATOR])[0],
            [0u8; POINT_BYTES]
        );
    }

    #[test]
    fn batch_encoding_matches_single() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(2);
        let points: Vec<ProjectivePoint> = (0..9)
            .map(|_| ProjectivePoint::GENERATOR * Scalar::random(&mut rng))
            .collect();
        let batch = encode_points(&points);
        for (p, e) in points.iter().zip(&batch) {
            assert_eq!(*e, encode_point(p));
        }
    }

    #[test]
    fn uncompressed_points_round_trip_and_reject_bad_encodings() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(3);
        let points: Vec<ProjectivePoint> = (0..5)
            .map(|_| ProjectivePoint::GENERATOR * Scalar::random(&mut rng))
            .collect();
        for (p, e) in points.iter().zip(encode_points_uncompressed(&points)) {
            assert_eq!(decode_point_uncompressed(&e).unwrap(), *p);
            let mut off_curve = e;
            off_curve[64] ^= 1;
            assert_eq!(
                decode_point_uncompressed(&off_curve),
                Err(Error::InvalidPoint)
            );
            let mut compressed_prefix = e;
            compressed_prefix[0] = 0x02;
            assert_eq!(
                decode_point_uncompressed(&compressed_prefix),
                Err(Error::InvalidPoint)
            );
            assert_eq!(decode_point_uncompressed(&e[..64]), Err(Error::WrongLength));
        }
        assert_eq!(
            decode_point_uncompressed(&[0u8; 65]),
            Err(Error::IdentityPoint)
        );
        // x = p: not a canonical coordinate.
        let mut big = [0xffu8; 65];
        big[0] = 0x04;
        assert_eq!(decode_point_uncompressed(&big), Err(Error::InvalidPoint));
    }

    #[test]
    fn bad_points_rejected() {
        let g = encode_point(&ProjectivePoint::GENERATOR);
        assert_eq!(decode_point(&[0u8; 33]), Err(Error::IdentityPoint));
        assert_eq!(decode_point(&g[..32]), Err(Error::WrongLength));
        let mut uncompressed_prefix = g;
        uncompressed_prefix[0] = 0x04;
        assert_eq!(decode_point(&uncompressed_prefix), Err(Error::InvalidPoint));
        // The identity's prefix over a curve point's x: not the identity,
        // only an invalid encoding.
        let mut zero_prefix = g;
        zero_prefix[0] = 0x00;
        assert_eq!(decode_point(&zero_prefix), Err(Error::InvalidPoint));
        // x = p (the field modulus) is not a canonical field element.
        let mut x_too_large = [0xffu8; 33];
        x_too_large[0] = 0x02;
        x_too_large[29..].copy_from_slice(&[0xfe, 0xff, 0xfc, 0x2f]);
        assert_eq!(decode_point(&x_too_large), Err(Error::InvalidPoint));
        // x = 5: x^3 + 7 = 132 is not a square mod p.
        let mut off_curve = [0u8; 33];
        off_curve[0] = 0x02;
        off_curve[32] = 5;
        assert_eq!(decode_point(&off_curve), Err(Error::InvalidPoint));
    }

    #[test]
    fn scalars_canonical_only() {
        let q: [u8; 32] = hex::decode(Q_BYTES).unwrap().try_into().unwrap();
        assert_eq!(decode_scalar(&q), Err(Error::NonCanonicalScalar));
        assert_eq!(decode_scalar(&[0xff; 32]), Err(Error::NonCanonicalScalar));
        let mut q_minus_one = q;
        q_minus_one[31] -= 1;
        assert_eq!(decode_scalar(&q_minus_one).unwrap(), -Scalar::ONE);
        assert_eq!(decode_scalar(&[0u8; 32]).unwrap(), Scalar::ZERO);
        assert_eq!(decode_nonzero_scalar(&[0u8; 32]), Err(Error::ZeroScalar));
        assert_eq!(decode_scalar(&[0u8; 31]), Err(Error::WrongLength));
    }
}
