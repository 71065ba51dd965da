//! Constant-time multiplication of many scalars by one point, with a comb
//! table built once (PROTOCOL.md §4.2, the base-OT receiver's `a[t]*B`).

use alloc::vec::Vec;

use k256::elliptic_curve::subtle::{ConditionallySelectable, ConstantTimeEq};
use k256::elliptic_curve::BatchNormalize;
use k256::{AffinePoint, ProjectivePoint, Scalar};

const WINDOWS: usize = 64;
const WIDTH: usize = 16;

/// `table[w][j] = j * 16^w * P` for 4-bit windows `w` of a 256-bit scalar.
pub(crate) struct CombTable {
    table: Vec<AffinePoint>,
}

impl CombTable {
    pub(crate) fn new(point: &ProjectivePoint) -> Self {
        let mut projective = Vec::with_capacity(WINDOWS * WIDTH);
        let mut base = *point;
        for _ in 0..WINDOWS {
            let mut entry = ProjectivePoint::IDENTITY;
            for _ in 0..WIDTH {
                projective.push(entry);
                entry += base;
            }
            base = base.double().double().double().double();
        }
        Self {
            table: ProjectivePoint::batch_normalize(projective.as_slice()),
        }
    }

    /// `scalar * P`: one table entry per window, each selected by scanning
    /// the whole row under a mask.
    pub(crate) fn mul(&self, scalar: &Scalar) -> ProjectivePoint {
        let bytes = scalar.to_bytes();
        let mut acc = ProjectivePoint::IDENTITY;
        for (window, row) in self.table.chunks_exact(WIDTH).enumerate() {
            let byte = bytes[31 - window / 2];
            let digit = (byte >> (4 * (window % 2))) & 0x0f;
            let mut selected = AffinePoint::IDENTITY;
            for (j, entry) in row.iter().enumerate() {
                #[allow(clippy::cast_possible_truncation)]
                let hit = (j as u8).ct_eq(&digit);
                selected.conditional_assign(entry, hit);
            }
            acc += selected;
        }
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
        let mut scalars = vec![Scalar::ZERO, Scalar::ONE, -Scalar::ONE, Scalar::from(16u64)];
        scalars.extend((0..32).map(|_| Scalar::random(&mut rng)));
        for s in scalars {
            assert_eq!(table.mul(&s), point * s);
        }
    }
}
