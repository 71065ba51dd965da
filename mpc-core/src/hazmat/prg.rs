//! The pseudorandom generator: AES-CTR keystream (PROTOCOL.md §2.3).
//!
//! `PRG(key, iv, n)` is the first `n` bytes of the AES-128-CTR keystream
//! under `key` with initial counter block `iv` (128-bit big-endian counter).
//! The `aes` crate uses AES-NI / ARMv8 AES when the CPU has them.

use aes::cipher::{KeyIvInit, StreamCipher};
use aes::Aes128;

use crate::params::LAMBDA_C_BYTES;

type Aes128Ctr = ctr::Ctr128BE<Aes128>;

/// A PRG seed: one AES-128 key.
pub type Seed = [u8; LAMBDA_C_BYTES];

/// Overwrites `out` with `PRG(key, iv, out.len())`.
pub fn fill(key: &Seed, iv: &[u8; 16], out: &mut [u8]) {
    out.fill(0);
    let mut cipher = Aes128Ctr::new(key.into(), iv.into());
    cipher.apply_keystream(out);
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation, clippy::needless_range_loop)]
mod tests {
    use super::*;

    #[test]
    fn nist_sp800_38a_ctr_aes128() {
        // SP 800-38A F.5.1: keystream = ciphertext XOR plaintext.
        let key: Seed = hex::decode("2b7e151628aed2a6abf7158809cf4f3c")
            .unwrap()
            .try_into()
            .unwrap();
        let iv: [u8; 16] = hex::decode("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff")
            .unwrap()
            .try_into()
            .unwrap();
        let plain = hex::decode("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51")
            .unwrap();
        let cipher =
            hex::decode("874d6191b620e3261bef6864990db6ce9806f66b7970fdff8617187bb9fffdff")
                .unwrap();
        let mut stream = [0u8; 32];
        fill(&key, &iv, &mut stream);
        let expected: alloc::vec::Vec<u8> = plain.iter().zip(&cipher).map(|(p, c)| p ^ c).collect();
        assert_eq!(stream.to_vec(), expected);
    }

    #[test]
    fn different_ivs_give_different_streams() {
        let key = [7u8; 16];
        let (mut a, mut b) = ([0u8; 80], [0u8; 80]);
        fill(&key, &[0u8; 16], &mut a);
        fill(&key, &[1u8; 16], &mut b);
        assert_ne!(a, b);
    }
}
