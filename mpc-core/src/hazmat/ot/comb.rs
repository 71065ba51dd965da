//! Constant-time multiplication of many scalars by one point, with a comb
//! table built once (PROTOCOL.md §4.2, the base-OT receiver's `a[t]*B`).

use alloc::vec::Vec;

use k256::elliptic_curve::subtle::{Choice, ConditionallySelectable, ConstantTimeEq};
use k256::elliptic_curve::BatchNormalize;
use k256::{AffinePoint, ProjectivePoint, Scalar};
use zeroize::Zeroize;

/// Signed radix-16 digits of a 256-bit scalar: 64 nibbles plus a carry.
const WINDOWS: usize = 65;
/// Entries per window: `0..=8` times the window's base.
const ENTRIES: usize = 9;

/// `table[w][j] = j * 16^w * P` for `j` in `0..=8`.
pub(crate) struct CombTable {
    table: Vec<AffinePoint>,
}

impl CombTable {
    pub(crate) fn new(point: &ProjectivePoint) -> Self {
        let mut projective = Vec::with_capacity(WINDOWS * ENTRIES);
        let mut base = *point;
        for _ in 0..WINDOWS {
            let mut entry = ProjectivePoint::IDENTITY;
            for _ in 0..ENTRIES {
                projective.push(entry);
                entry += base;
            }
            base = base.double().double().double().double();
        }
        Self {
            table: ProjectivePoint::batch_normalize(projective.as_slice()),
        }
    }

    /// `scalar * P`. The scalar is recoded into digits in `[-8, 8)` without
    /// branches; each window's entry is found by scanning its whole row
    /// under a mask and negated under a mask. The scalar's bytes and the
    /// selected entries are wiped.
    pub(crate) fn mul(&self, scalar: &Scalar) -> ProjectivePoint {
        let mut bytes: [u8; 32] = scalar.to_bytes().into();
        let mut acc = ProjectivePoint::IDENTITY;
        let mut carry = 0i8;
        for (window, row) in self.table.chunks_exact(ENTRIES).enumerate() {
            let nibble = if window < 64 {
                let byte = bytes[31 - window / 2];
                // In 0..16, so the cast is exact.
                #[allow(clippy::cast_possible_wrap)]
                let n = ((byte >> (4 * (window % 2))) & 0x0f) as i8;
                n
            } else {
                0
            };
            let mut digit = nibble + carry; // 0..=16
            carry = (digit + 8) >> 4; // 1 iff digit >= 8
            digit -= carry << 4; // -8..8
                                 // Sign and magnitude by arithmetic, not comparisons.
            let sign = digit >> 7; // 0 or -1
            #[allow(clippy::cast_sign_loss)]
            let negative = Choice::from((sign & 1) as u8);
            #[allow(clippy::cast_sign_loss)]
            let magnitude = ((digit ^ sign) - sign) as u8;
            let mut selected = AffinePoint::IDENTITY;
            for (j, entry) in row.iter().enumerate() {
                #[allow(clippy::cast_possible_truncation)]
                let hit = (j as u8).ct_eq(&magnitude);
                selected.conditional_assign(entry, hit);
            }
            let mut negated = -selected;
            selected.conditional_assign(&negated, negative);
            acc += selected;
            selected.zeroize();
            negated.zeroize();
        }
        bytes.zeroize();
        acc
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use k256::elliptic_curve::Field;
    use rand_chacha::rand_core::SeedableRng;

    #[test]
    fn matches_variable_base_multiplication() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
        let point = ProjectivePoint::GENERATOR * Scalar::random(&mut rng);
        let table = CombTable::new(&point);
        let mut scalars = vec![
            Scalar::ZERO,
            Scalar::ONE,
            -Scalar::ONE,
            Scalar::from(8u64),
            Scalar::from(16u64),
            Scalar::from(0x8888_8888u64),
        ];
        scalars.extend((0..32).map(|_| Scalar::random(&mut rng)));
        for s in scalars {
            assert_eq!(table.mul(&s), point * s);
        }
    }
}
