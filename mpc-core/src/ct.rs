//! Declassification: the one place where a secret-derived value that the
//! protocol publishes anyway (a verdict, a point about to go on the wire)
//! becomes a plain value the code may branch on (PROTOCOL.md §10).
//!
//! Every other branch and memory index in this crate is on public data.
//! The ctgrind harness (`audit/tests/ctgrind.rs`) runs the protocols under
//! valgrind with their secrets marked undefined and accepts a branch on
//! them only inside [`declassify`] (its suppression file names exactly that
//! function), so every call below is a reviewable claim that the value is
//! public.

use k256::Scalar;
use rand_core::CryptoRngCore;
use subtle::{Choice, ConditionallySelectable};
use zeroize::Zeroize;

use crate::transcript::reduce_wide;

/// The verdict `verdict` as a `bool`, produced by a branch: each arm returns
/// a constant, so the result no longer depends on the secret data it was
/// computed from, for memcheck as for the compiler. Call it only on values
/// the protocol reveals (check outcomes, published encodings).
#[inline(never)]
pub(crate) fn declassify(verdict: Choice) -> bool {
    let mut public = false;
    // `black_box` is an opaque side effect: the compiler cannot hoist it out
    // of the arm, so the branch stays a branch and `public` a constant.
    if verdict.unwrap_u8() == 1 {
        public = core::hint::black_box(true);
    }
    public
}

/// `bytes`, bit by bit through [`declassify`]: for a value about to be
/// published (a random point's encoding), so that what is computed from it
/// afterwards is public data too.
pub(crate) fn declassify_bytes<const N: usize>(bytes: &[u8; N]) -> [u8; N] {
    core::array::from_fn(|i| {
        (0..8).fold(0u8, |acc, bit| {
            let set = declassify(Choice::from((bytes[i] >> bit) & 1));
            acc | (u8::from(set) << bit)
        })
    })
}

/// A uniform scalar (statistical distance 2^-256): 64 random bytes reduced
/// modulo `q`. Unlike `Scalar::random` (rejection sampling, a loop that
/// branches on the candidate) it runs the same way for every draw.
pub(crate) fn random_scalar(rng: &mut impl CryptoRngCore) -> Scalar {
    let mut wide = [0u8; 64];
    rng.fill_bytes(&mut wide);
    let scalar = reduce_wide(&wide);
    wide.zeroize();
    scalar
}

/// A uniform non-zero scalar: [`random_scalar`], with zero (probability
/// 2^-256) replaced by one under a mask rather than redrawn in a loop.
pub(crate) fn random_nonzero_scalar(rng: &mut impl CryptoRngCore) -> Scalar {
    let scalar = random_scalar(rng);
    Scalar::conditional_select(&scalar, &Scalar::ONE, scalar.is_zero())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declassification_keeps_values() {
        assert!(declassify(Choice::from(1)));
        assert!(!declassify(Choice::from(0)));
        let bytes: [u8; 4] = [0x00, 0xff, 0x5a, 0x81];
        assert_eq!(declassify_bytes(&bytes), bytes);
    }
}
