//! Deliberately leaky functions: the negative controls. Each harness must
//! flag these, or it proves nothing about the real code.

use core::hint::black_box;

/// Counts the secret bytes with their top bit set by *branching* on each:
/// the classic timing leak. (`black_box` in the taken arm keeps the
/// compiler from turning the branch into a conditional move.)
#[inline(never)]
#[must_use]
pub fn branch_on_secret(secret: &[u8]) -> u32 {
    let mut count = 0u32;
    for byte in secret {
        if byte & 0x80 != 0 {
            count = black_box(count + 1);
        }
    }
    count
}

/// An S-box lookup indexed by secret bytes: the cache-timing leak of
/// table-based AES.
#[inline(never)]
#[must_use]
pub fn index_by_secret(secret: &[u8]) -> u8 {
    static TABLE: [u8; 256] = {
        let mut table = [0u8; 256];
        let mut i = 0;
        while i < 256 {
            // i < 256, so the cast is exact.
            #[allow(clippy::cast_possible_truncation)]
            let value = (i as u8).wrapping_mul(167).wrapping_add(13);
            table[i] = value;
            i += 1;
        }
        table
    };
    secret
        .iter()
        .fold(0u8, |acc, byte| acc ^ TABLE[usize::from(*byte)])
}
