//! The SoftSpokenOT consistency-check hash over GF(2^128) (PROTOCOL.md §5.3).
//!
//! The field is POLYVAL's (RFC 8452: `x^128 + x^127 + x^126 + x^121 + 1`, with
//! the product `a . b = a * b * x^-128`), computed by the RustCrypto `polyval`
//! crate, which uses carry-less multiplication (PCLMULQDQ / PMULL) when the CPU
//! has it and a constant-time portable fallback otherwise.
//!
//! The check hash of `m` blocks under a challenge `h` is
//! `POLYVAL(h; X_0..X_{m-1}) + X_m`. For fixed `h` it is GF(2)-linear in the
//! blocks, which is all the check's correctness needs; a non-zero difference
//! passes for at most `m` of the 2^128 values of `h`.

use polyval::universal_hash::{KeyInit, UniversalHash};
use polyval::Polyval;

use crate::params::CHECK_BLOCKS;

/// A GF(2^128) element: 16 bytes, POLYVAL's little-endian convention.
pub type FieldBytes = [u8; 16];

/// `POLYVAL(h; blocks[0..m]) XOR blocks[m]`: the check hash of one row.
#[must_use]
pub fn check_hash(challenge: &FieldBytes, blocks: &[FieldBytes; CHECK_BLOCKS + 1]) -> FieldBytes {
    let mut hasher = Polyval::new(challenge.into());
    let mut wide = [polyval::Block::default(); CHECK_BLOCKS];
    for (dst, src) in wide.iter_mut().zip(blocks.iter()) {
        dst.copy_from_slice(src);
    }
    hasher.update(&wide);
    let digest: FieldBytes = hasher.finalize().into();
    xor16(&digest, &blocks[CHECK_BLOCKS])
}

/// Byte-wise XOR of two 16-byte values.
#[must_use]
pub fn xor16(a: &FieldBytes, b: &FieldBytes) -> FieldBytes {
    (u128::from_le_bytes(*a) ^ u128::from_le_bytes(*b)).to_le_bytes()
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation, clippy::needless_range_loop)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Bitwise reference of RFC 8452's POLYVAL, written from the RFC's
    /// definitions, independent of the `polyval` crate.
    mod reference {
        const REDUCE: u128 = (1 << 127) | (1 << 126) | (1 << 121) | 1;

        fn mul_mod(mut a: u128, b: u128) -> u128 {
            let mut acc = 0u128;
            for bit in 0..128 {
                if (b >> bit) & 1 == 1 {
                    acc ^= a;
                }
                let carry = a >> 127;
                a <<= 1;
                if carry == 1 {
                    a ^= REDUCE;
                }
            }
            acc
        }

        fn div_x(v: u128) -> u128 {
            // (v + p) / x when the constant term is set.
            if v & 1 == 1 {
                (v >> 1) ^ ((1 << 127) | (1 << 126) | (1 << 125) | (1 << 120))
            } else {
                v >> 1
            }
        }

        pub(super) fn dot(a: u128, b: u128) -> u128 {
            let mut v = mul_mod(a, b);
            for _ in 0..128 {
                v = div_x(v);
            }
            v
        }

        pub(super) fn polyval(h: u128, blocks: &[u128]) -> u128 {
            blocks.iter().fold(0, |s, x| dot(s ^ x, h))
        }
    }

    fn le(hex_str: &str) -> u128 {
        u128::from_le_bytes(hex::decode(hex_str).unwrap().try_into().unwrap())
    }

    #[test]
    fn reference_matches_rfc8452_vector() {
        // RFC 8452 Appendix A.
        let h = le("25629347589242761d31f826ba4b757b");
        let x1 = le("4f4f95668c83dfb6401762bb2d01a262");
        let x2 = le("d1a24ddd2721d006bbe45f20d3c9f362");
        assert_eq!(
            reference::polyval(h, &[x1, x2]),
            le("f7a3b47b846119fae5b7866cf5e5b77e")
        );
    }

    proptest! {
        #[test]
        fn matches_reference(h: u128, blocks: [u128; CHECK_BLOCKS + 1]) {
            let bytes = blocks.map(u128::to_le_bytes);
            let ours = u128::from_le_bytes(check_hash(&h.to_le_bytes(), &bytes));
            let expected = reference::polyval(h, &blocks[..CHECK_BLOCKS]) ^ blocks[CHECK_BLOCKS];
            prop_assert_eq!(ours, expected);
        }

        #[test]
        fn linear_in_blocks(h: u128, a: [u128; CHECK_BLOCKS + 1], b: [u128; CHECK_BLOCKS + 1]) {
            let key = h.to_le_bytes();
            let sum: [u128; CHECK_BLOCKS + 1] = core::array::from_fn(|i| a[i] ^ b[i]);
            let lhs = check_hash(&key, &sum.map(u128::to_le_bytes));
            let rhs = xor16(&check_hash(&key, &a.map(u128::to_le_bytes)), &check_hash(&key, &b.map(u128::to_le_bytes)));
            prop_assert_eq!(lhs, rhs);
        }
    }
}
