//! Bit-matrix helpers for the OT extension (PROTOCOL.md §6).
//!
//! A row of the extension matrix is `EXT_BLOCKS` 128-bit blocks; bit `j` of a
//! row is bit `j % 128` of block `j / 128` (LSB first, matching the
//! little-endian byte encoding of PROTOCOL.md §2.1).

use alloc::vec::Vec;

use crate::params::{EXT_COLUMNS, EXT_ROW_BYTES, LAMBDA_C, XI};

/// 128-bit blocks per extension-matrix row.
pub(crate) const EXT_BLOCKS: usize = EXT_COLUMNS / 128;

/// One extension-matrix row.
pub(crate) type Row = [u128; EXT_BLOCKS];

/// Decodes a row from its `EXT_ROW_BYTES`-byte encoding.
pub(crate) fn row_from_bytes(bytes: &[u8]) -> Row {
    core::array::from_fn(|u| {
        let mut block = [0u8; 16];
        block.copy_from_slice(&bytes[16 * u..16 * u + 16]);
        u128::from_le_bytes(block)
    })
}

/// Encodes a row as `EXT_ROW_BYTES` bytes.
pub(crate) fn row_to_bytes(row: &Row) -> [u8; EXT_ROW_BYTES] {
    let mut out = [0u8; EXT_ROW_BYTES];
    for (chunk, block) in out.chunks_exact_mut(16).zip(row) {
        chunk.copy_from_slice(&block.to_le_bytes());
    }
    out
}

/// Transposes a 128x128 bit matrix in place: afterwards bit `r` of
/// `m[c]` is what bit `c` of `m[r]` was.
pub(crate) fn transpose128(m: &mut [u128; 128]) {
    let mut width = 64;
    let mut mask: u128 = u128::from(u64::MAX);
    while width != 0 {
        let mut k = 0;
        while k < 128 {
            // Rows k (bit `width` of k clear) and k + width swap the
            // off-diagonal sub-blocks of each 2*width square.
            let t = ((m[k] >> width) ^ m[k + width]) & mask;
            m[k + width] ^= t;
            m[k] ^= t << width;
            k = (k + width + 1) & !width;
        }
        width >>= 1;
        mask ^= mask << width;
    }
}

/// The first `XI` columns of a `LAMBDA_C`-row matrix, each as a 128-bit
/// value whose bit `r` is row `r`'s bit.
pub(crate) fn columns(rows: &[Row]) -> Vec<u128> {
    debug_assert_eq!(rows.len(), LAMBDA_C);
    let mut out = Vec::with_capacity(XI.div_ceil(128) * 128);
    for block in 0..XI.div_ceil(128) {
        let mut tile = [0u128; 128];
        for (dst, row) in tile.iter_mut().zip(rows) {
            *dst = row[block];
        }
        transpose128(&mut tile);
        out.extend_from_slice(&tile);
        zeroize::Zeroize::zeroize(&mut tile);
    }
    out.truncate(XI);
    out
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation, clippy::needless_range_loop)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn transpose_matches_naive(m in proptest::array::uniform32(any::<u128>()), seed: u128) {
            let mut full = [0u128; 128];
            for (i, v) in full.iter_mut().enumerate() {
                *v = m[i % 32].rotate_left(i as u32) ^ seed.wrapping_mul(i as u128 + 1);
            }
            let mut t = full;
            transpose128(&mut t);
            for r in 0..128 {
                for c in 0..128 {
                    prop_assert_eq!((t[c] >> r) & 1, (full[r] >> c) & 1);
                }
            }
        }
    }

    #[test]
    fn row_bytes_round_trip_and_bit_order() {
        let mut bytes = [0u8; EXT_ROW_BYTES];
        bytes[17] = 0b100; // bit 8*17 + 2 = 138 -> block 1, bit 10
        let row = row_from_bytes(&bytes);
        assert_eq!(row[1], 1 << 10);
        assert_eq!(row_to_bytes(&row), bytes);
    }
}
